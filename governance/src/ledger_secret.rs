//! The ledger secret: encrypts the private maps of each transaction before it reaches the ledger.
//!
//! CCF keeps every map without the `public:` prefix (here `secrets-<contractId>`) encrypted in
//! its ledger under the ledger secret; so does encfs. A write set with no private writes is
//! stored as its canonical encoding ([`WriteSet::to_bytes`], magic `EGWS`). One with private
//! writes is stored *sealed* (all integers big-endian):
//!
//! ```text
//! "EGWE" ‖ 0x01 ‖ u32 public_len ‖ public part (EGWS encoding) ‖ nonce [12] ‖
//! AES-256-GCM(private part (EGWS encoding)) ‖ tag [16]
//! ```
//!
//! The associated data is every byte before the ciphertext (magic to nonce), so the public part
//! cannot be changed or moved under another private part without the open failing. The nonce is
//! random (a fresh 96-bit value per transaction; one key seals far fewer than 2³² of them before
//! a restart could rotate it). The ledger's Merkle leaf hashes the stored bytes, so `ledger
//! verify` and receipts need no secret, and the ledger directory can be handed to an auditor
//! without revealing a secret.
//!
//! The secret is 32 random bytes in `DIR/ledger_secret.key` (mode 0600, beside the node's key,
//! outside `DIR/ledger/`), created at the first start. Departure from CCF: CCF shares the ledger
//! secret among the recovery members (recovery shares); a one-node encfs service keeps it in its
//! data directory as it keeps its node key.

use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::kv::WriteSet;

/// The secret's file name inside the service's data directory.
pub const LEDGER_SECRET_FILE: &str = "ledger_secret.key";
/// The first bytes of a sealed write set.
const SEALED_MAGIC: &[u8; 4] = b"EGWE";
/// The sealed format's version byte.
const SEALED_FORMAT: u8 = 1;
/// Magic, version and the public part's length.
const SEALED_HEAD_LEN: usize = 4 + 1 + 4;
/// The AES-GCM tag.
const TAG_LEN: usize = 16;
/// The secret's length.
const SECRET_LEN: usize = 32;

/// Why the ledger secret could not be loaded or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerSecretError {
    /// Reading, creating or parsing the secret's file failed.
    #[error("ledger secret {}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A sealed write set does not open: another secret, or changed bytes.
    #[error("the private part does not decrypt with the ledger secret {}: {reason}", path.display())]
    Open {
        /// The secret's file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// The AES-256-GCM key that seals the private part of each write set.
pub struct LedgerSecret {
    key: LessSafeKey,
    path: PathBuf,
    random: SystemRandom,
}

impl std::fmt::Debug for LedgerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerSecret")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl LedgerSecret {
    /// Loads `DIR/ledger_secret.key`, or creates it (32 random bytes, mode 0600, fsynced) when
    /// it is missing.
    ///
    /// # Errors
    /// [`LedgerSecretError::File`] naming the file: unreadable, not 32 bytes, or not creatable.
    pub fn load_or_create(dir: &Path) -> Result<Self, LedgerSecretError> {
        let path = dir.join(LEDGER_SECRET_FILE);
        let fail = |reason: String| LedgerSecretError::File {
            path: path.clone(),
            reason,
        };
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut fresh = Zeroizing::new(vec![0; SECRET_LEN]);
                SystemRandom::new()
                    .fill(&mut fresh)
                    .map_err(|_| fail("no randomness".into()))?;
                crate::identity::write_new_file(&path, &fresh, 0o600)
                    .map_err(|e| fail(e.to_string()))?;
                fresh
            }
            Err(e) => return Err(fail(e.to_string())),
        };
        if bytes.len() != SECRET_LEN {
            return Err(fail(format!(
                "holds {} bytes, a ledger secret is {SECRET_LEN}",
                bytes.len()
            )));
        }
        Self::from_bytes(path.clone(), &bytes).ok_or_else(|| fail("not an AES-256 key".into()))
    }

    fn from_bytes(path: PathBuf, bytes: &[u8]) -> Option<Self> {
        let key = UnboundKey::new(&AES_256_GCM, bytes).ok()?;
        Some(Self {
            key: LessSafeKey::new(key),
            path,
            random: SystemRandom::new(),
        })
    }

    /// The bytes the ledger stores for `write_set`: its canonical encoding when it writes no
    /// private map, else the sealed form (module documentation).
    ///
    /// # Errors
    /// [`LedgerSecretError::File`] when no nonce could be drawn or sealing failed.
    pub fn seal(&self, write_set: &WriteSet) -> Result<Vec<u8>, LedgerSecretError> {
        let private = write_set.private_part();
        if private.is_empty() {
            return Ok(write_set.to_bytes());
        }
        let fail = |reason: &str| LedgerSecretError::File {
            path: self.path.clone(),
            reason: reason.into(),
        };
        let public = write_set.public_part().to_bytes();
        let mut plain = Zeroizing::new(private.to_bytes());
        let public_len = u32::try_from(public.len()).map_err(|_| fail("write set too large"))?;
        let mut out =
            Vec::with_capacity(SEALED_HEAD_LEN + public.len() + NONCE_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(SEALED_MAGIC);
        out.push(SEALED_FORMAT);
        out.extend_from_slice(&public_len.to_be_bytes());
        out.extend_from_slice(&public);
        let mut nonce = [0; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| fail("no randomness for a nonce"))?;
        out.extend_from_slice(&nonce);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&out[..]),
                &mut plain,
            )
            .map_err(|_| fail("AES-GCM sealing failed"))?;
        out.extend_from_slice(&plain);
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// The write set of stored bytes: the canonical encoding as it is, or a sealed one opened
    /// and merged back (public and private writes).
    ///
    /// # Errors
    /// [`LedgerSecretError::Open`] when the bytes are sealed but do not open or decode.
    pub fn open(&self, stored: &[u8]) -> Result<WriteSet, LedgerSecretError> {
        let fail = |reason: String| LedgerSecretError::Open {
            path: self.path.clone(),
            reason,
        };
        if !is_sealed(stored) {
            return WriteSet::from_bytes(stored).map_err(|e| fail(e.to_string()));
        }
        let (public, nonce, body) = split_sealed(stored).map_err(fail)?;
        let aad_len = stored.len() - body.len();
        let mut body = Zeroizing::new(body.to_vec());
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&stored[..aad_len]),
                &mut body,
            )
            .map_err(|_| fail("authentication failed (another secret, or changed bytes)".into()))?;
        let private = WriteSet::from_bytes(plain).map_err(|e| fail(e.to_string()))?;
        let public = WriteSet::from_bytes(public).map_err(|e| fail(e.to_string()))?;
        if !public.private_part().is_empty() || !private.public_part().is_empty() {
            return Err(fail("a map is in the wrong part".into()));
        }
        Ok(public.merged(&private))
    }
}

/// Whether stored write-set bytes are sealed (they hold private writes).
pub fn is_sealed(stored: &[u8]) -> bool {
    stored.starts_with(SEALED_MAGIC)
}

/// The public part of stored write-set bytes, readable without the secret (what an auditor
/// without the secret can decode).
///
/// # Errors
/// A message when the bytes are neither encoding.
pub fn public_part(stored: &[u8]) -> Result<WriteSet, String> {
    if !is_sealed(stored) {
        return WriteSet::from_bytes(stored)
            .map(|ws| ws.public_part())
            .map_err(|e| e.to_string());
    }
    let (public, ..) = split_sealed(stored)?;
    WriteSet::from_bytes(public).map_err(|e| e.to_string())
}

/// The hook the `ledger_read` fuzz target calls: stored write-set bytes opened with a fixed
/// secret and read for their public part; must never panic.
#[doc(hidden)]
pub fn fuzz_open(stored: &[u8]) {
    if let Some(secret) = LedgerSecret::from_bytes(PathBuf::from("fuzz"), &[7; SECRET_LEN]) {
        let _ = secret.open(stored);
    }
    let _ = public_part(stored);
}

/// A sealed write set's public part, nonce, and ciphertext ‖ tag.
type SealedParts<'a> = (&'a [u8], [u8; NONCE_LEN], &'a [u8]);

/// Public part, nonce, and ciphertext ‖ tag of a sealed write set.
fn split_sealed(stored: &[u8]) -> Result<SealedParts<'_>, String> {
    if stored.len() < SEALED_HEAD_LEN || stored[4] != SEALED_FORMAT {
        return Err("a sealed write set of an unknown format".into());
    }
    let public_len = u32::from_be_bytes(stored[5..9].try_into().expect("4 bytes")) as usize;
    let rest = &stored[SEALED_HEAD_LEN..];
    if rest.len() < public_len + NONCE_LEN + TAG_LEN {
        return Err("a sealed write set cut short".into());
    }
    let (public, rest) = rest.split_at(public_len);
    let (nonce, body) = rest.split_at(NONCE_LEN);
    Ok((public, nonce.try_into().expect("12 bytes"), body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Store;
    use serde_json::json;

    fn write_set(private: bool) -> WriteSet {
        let store = Store::new(1);
        let mut tx = store.transaction();
        tx.put("public:contracts", "c1", json!({"state": "Draft"}));
        if private {
            tx.put("secrets-c1", "token", json!({"value": "s3cr3t-value"}));
        }
        tx.into_write_set()
    }

    #[test]
    fn private_writes_are_sealed_and_public_ones_stay_readable() {
        let dir = tempfile::tempdir().unwrap();
        let secret = LedgerSecret::load_or_create(dir.path()).unwrap();
        let ws = write_set(true);
        let stored = secret.seal(&ws).unwrap();
        assert!(is_sealed(&stored));
        let text = String::from_utf8_lossy(&stored);
        assert!(!text.contains("s3cr3t-value") && !text.contains("token"));
        assert!(
            text.contains("public:contracts"),
            "the public part is in the clear"
        );
        assert_eq!(secret.open(&stored).unwrap(), ws);
        assert_eq!(public_part(&stored).unwrap(), ws.public_part());
        // Reloaded from its file, the secret opens what it sealed; the file is 0600.
        let again = LedgerSecret::load_or_create(dir.path()).unwrap();
        assert_eq!(again.open(&stored).unwrap(), ws);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(LEDGER_SECRET_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_public_write_set_is_stored_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let secret = LedgerSecret::load_or_create(dir.path()).unwrap();
        let ws = write_set(false);
        let stored = secret.seal(&ws).unwrap();
        assert_eq!(stored, ws.to_bytes());
        assert_eq!(secret.open(&stored).unwrap(), ws);
    }

    #[test]
    fn every_changed_byte_and_another_secret_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let secret = LedgerSecret::load_or_create(dir.path()).unwrap();
        let stored = secret.seal(&write_set(true)).unwrap();
        for i in 0..stored.len() {
            let mut bad = stored.clone();
            bad[i] ^= 0x01;
            assert!(secret.open(&bad).is_err(), "byte {i} changed and accepted");
        }
        for cut in 0..stored.len() {
            assert!(secret.open(&stored[..cut]).is_err(), "cut at {cut}");
        }
        let other_dir = tempfile::tempdir().unwrap();
        let other = LedgerSecret::load_or_create(other_dir.path()).unwrap();
        let error = other.open(&stored).unwrap_err().to_string();
        assert!(error.contains(LEDGER_SECRET_FILE), "{error}");
    }

    #[test]
    fn the_fuzz_hook_takes_cut_and_oversized_sealed_bytes() {
        let secret = LedgerSecret::from_bytes(PathBuf::from("fuzz"), &[7; SECRET_LEN]).unwrap();
        let stored = secret.seal(&write_set(true)).unwrap();
        assert_eq!(secret.open(&stored).unwrap(), write_set(true));
        for cut in 0..stored.len() {
            fuzz_open(&stored[..cut]);
        }
        let mut huge = stored.clone();
        huge[5..9].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(public_part(&huge).is_err());
        fuzz_open(&huge);
    }

    #[test]
    fn a_secret_file_of_the_wrong_size_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LEDGER_SECRET_FILE), b"short").unwrap();
        let error = LedgerSecret::load_or_create(dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(LEDGER_SECRET_FILE) && error.contains("5 bytes"),
            "{error}"
        );
    }
}
