//! Dataset manifests: the signed list of exactly which blobs, in exactly which versions, make up a
//! dataset (a datastore prefix).
//!
//! EBF authenticates every segment of a blob, but nothing in a blob binds it to its *name* or to
//! the *set* of blobs the publisher meant: whoever can write to the storage account can swap two
//! blobs, put an older version back or delete one, and every blob still opens. A manifest closes
//! that gap. It lists, for each blob under the prefix, its name, its 76-byte EBF header (the
//! per-blob salt names the version: a re-upload of the same file has another salt), its size, and
//! the SHA-256 of its segment tags in order (which pins every ciphertext byte, since each tag
//! authenticates its segment). The publisher signs it as a COSE_Sign1 with a member identity key
//! (ES384, the P-384 governance identity), and it is stored beside the data as the blob
//! [`MANIFEST_BLOB`] under the prefix. Byte layout: `docs/format.md`, "Dataset manifest".
//!
//! * [`manifest`] — [`Manifest`] and [`Entry`], their canonical JSON payload, parse and checks.
//! * [`tags`] — the segment-tag digest, from a whole blob or streamed as a blob is written.
//! * [`signed`] — sealing and verifying the COSE_Sign1 envelope ([`SignedManifest`], [`Trust`],
//!   [`ManifestSigner`], [`P384Signer`]).
//! * [`streaming`] — [`StreamingSeal`]: sealing as an upload's entries arrive.
//! * [`check`] — against a store: [`entry_of`] one blob, [`build`] a prefix's manifest,
//!   [`verify_store`] a store against a manifest ([`Report`]).
//!
//! Nothing here reads a key of the data: a manifest is checked without the DEK, so an auditor
//! who holds no key can run `encfs dataset verify`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod check;
mod error;
pub mod manifest;
pub mod signed;
pub mod streaming;
pub mod tags;

pub use check::{Finding, Problem, Report, build, build_from, entry_of, verify_store};
pub use error::Error;
pub use manifest::{Entry, FORMAT, Manifest};
pub use signed::{ManifestSigner, P384Signer, SignedManifest, Trust};
pub use streaming::{Streamed, StreamingSeal};

/// Name of the manifest blob beside the data: `PREFIX.encfs-manifest` when the prefix is empty or
/// ends in `/` (a "directory"), `PREFIX/.encfs-manifest` otherwise ([`manifest_blob_name`]). The
/// leading dot keeps it out of most listings of the mounted tree; [`build`] never lists it.
pub const MANIFEST_BLOB: &str = ".encfs-manifest";

/// The blob name of the manifest of `prefix` (see [`MANIFEST_BLOB`]).
pub fn manifest_blob_name(prefix: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        format!("{prefix}{MANIFEST_BLOB}")
    } else {
        format!("{prefix}/{MANIFEST_BLOB}")
    }
}

/// Whether a blob name (or a path below a prefix) is a dataset manifest: its last component is
/// [`MANIFEST_BLOB`]. Downloads and mounts skip these (they are not EBF blobs of the data).
pub fn is_manifest_blob(name: &str) -> bool {
    name.rsplit('/').next() == Some(MANIFEST_BLOB)
}

/// Lower-case hex of `bytes` (a table, not `format!` per byte: a manifest of 100,000 entries
/// encodes 10.8 MB of hex).
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Bytes of lower-case hex (upper case and odd lengths refused: the canonical form is lower case).
pub(crate) fn from_hex(text: &str) -> Option<Vec<u8>> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some((digit(pair[0])? << 4) | digit(pair[1])?))
        .collect()
}

/// `sha256:<64 hex>` of `bytes`: how a manifest (or any pinned document) is named.
pub fn sha256_digest(bytes: &[u8]) -> String {
    digest_name(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

/// `sha256:<64 hex>` of a SHA-256 already taken.
pub(crate) fn digest_name(sha256: &[u8]) -> String {
    format!("sha256:{}", hex(sha256))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_blob_beside_the_data() {
        assert_eq!(manifest_blob_name(""), ".encfs-manifest");
        assert_eq!(manifest_blob_name("sales/"), "sales/.encfs-manifest");
        assert_eq!(manifest_blob_name("sales"), "sales/.encfs-manifest");
    }

    #[test]
    fn hex_round_trips_and_refuses_upper_case() {
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(from_hex("00ab10"), Some(vec![0, 0xab, 0x10]));
        assert_eq!(from_hex("00AB10"), None);
        assert_eq!(from_hex("0"), None);
        assert!(sha256_digest(b"").starts_with("sha256:e3b0c442"));
    }
}
