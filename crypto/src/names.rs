//! Encrypted blob names: deterministic encryption of one path component, bound to its parent
//! directory, under a name key derived from the DEK (`docs/format.md`, "Encrypted names").
//!
//! * The [`NameKey`] is HKDF-SHA-256 of the DEK under three labels of its own: an AES-256-GCM-SIV
//!   key for the components, an HMAC-SHA-256 key for directory identities, and a public check
//!   value that tells a wrong key from a right one (the store's marker blob holds it).
//! * A directory's identity ([`DirId`]) is HMAC-SHA-256 under the directory key of its plaintext
//!   path from the container root (`""` for the root, else `a/b`, no slashes at either end):
//!   computable from the path alone, so a lookup needs no listing, and different for `a/x` and
//!   `b/x`. Its first 12 bytes are the AES-256-GCM-SIV nonce and all 32 its associated data.
//! * AES-256-GCM-SIV (RFC 8452) is nonce-misuse resistant: the fixed nonce of a directory
//!   reveals only which names of that directory are equal, which deterministic name encryption
//!   must reveal anyway (a lookup recomputes the name). The tag authenticates the name and its
//!   directory: a name moved to another directory or edited fails to decrypt.
//! * The component is padded to a multiple of 16 bytes (PKCS#7: 1 to 16 bytes of value n), so
//!   the length of a name shows only to within 16 bytes, then sealed (ciphertext ‖ 16-byte tag)
//!   and written in unpadded base64url: at least 43 characters, only `A–Z a–z 0–9 - _`, so never
//!   empty, never `.` or `..`, never containing `/`.
//! * A component whose encoded form is longer than [`LONG_NAME_THRESHOLD`] characters is stored
//!   in its long form [`long_form`]: `~` and the base64url of the SHA-256 of the encoded form (44
//!   characters); the full encoded form is kept where a listing finds it (the store wrapper's
//!   business).

use aws_lc_rs::aead::{AES_256_GCM_SIV, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::{digest, hkdf, hmac};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use zeroize::Zeroizing;

use crate::keys::Len;
use crate::{DataKey, Error, Result};

/// HKDF label of the AES-256-GCM-SIV key that encrypts name components.
const NAME_CIPHER_INFO: &[u8] = b"encfs/v1/names/cipher";
/// HKDF label of the HMAC-SHA-256 key of directory identities.
const NAME_DIR_INFO: &[u8] = b"encfs/v1/names/directory";
/// HKDF label of the public check value recorded in a store's marker.
const NAME_CHECK_INFO: &[u8] = b"encfs/v1/names/check";

/// Padding block of a plaintext component, in bytes.
pub const NAME_BLOCK: usize = 16;
/// Length of the AES-256-GCM-SIV tag appended to a component.
const TAG_LEN: usize = 16;
/// Longest encoded component stored as it is; longer ones take their [`long_form`].
pub const LONG_NAME_THRESHOLD: usize = 128;
/// First character of a long form (base64url never produces it).
pub const LONG_NAME_MARK: char = '~';
/// Length of a public check value.
pub const CHECK_LEN: usize = 16;

/// The identity of a directory: the nonce and associated data of its children's names.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DirId([u8; 32]);

impl DirId {
    fn nonce(&self) -> Nonce {
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&self.0[..NONCE_LEN]);
        Nonce::assume_unique_for_key(nonce)
    }
}

impl std::fmt::Debug for DirId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DirId(…)")
    }
}

/// The keys of encrypted names, derived from a DEK. `Debug` shows nothing of them.
pub struct NameKey {
    cipher: LessSafeKey,
    directory: hmac::Key,
    check: [u8; CHECK_LEN],
}

impl std::fmt::Debug for NameKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NameKey(…)")
    }
}

fn expand(key: &DataKey, info: &[u8], out: &mut [u8]) {
    hkdf::Salt::new(hkdf::HKDF_SHA256, &[])
        .extract(key.dangerous_bytes())
        .expand(&[info], Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .expect("HKDF-SHA-256 can always produce 32 bytes");
}

impl NameKey {
    /// The name keys of a DEK (HKDF-SHA-256, empty salt, one label per key).
    pub fn derive(key: &DataKey) -> Self {
        let mut cipher = Zeroizing::new([0u8; 32]);
        let mut directory = Zeroizing::new([0u8; 32]);
        let mut check = [0u8; CHECK_LEN];
        expand(key, NAME_CIPHER_INFO, &mut cipher[..]);
        expand(key, NAME_DIR_INFO, &mut directory[..]);
        expand(key, NAME_CHECK_INFO, &mut check);
        Self {
            cipher: LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM_SIV, &cipher[..]).expect("a 32-byte key"),
            ),
            directory: hmac::Key::new(hmac::HMAC_SHA256, &directory[..]),
            check,
        }
    }

    /// The public check value of these keys (safe to store: one-way, its own label).
    pub fn check_value(&self) -> [u8; CHECK_LEN] {
        self.check
    }

    /// The identity of the directory at plaintext path `parent` (`""`: the container root).
    pub fn dir_id(&self, parent: &str) -> DirId {
        let tag = hmac::sign(&self.directory, parent.as_bytes());
        DirId(tag.as_ref().try_into().expect("HMAC-SHA-256 is 32 bytes"))
    }

    /// The full encoded ciphertext of component `name` in directory `dir`.
    pub fn encrypt(&self, dir: &DirId, name: &str) -> String {
        let pad = NAME_BLOCK - name.len() % NAME_BLOCK;
        let mut buffer = Vec::with_capacity(name.len() + pad + TAG_LEN);
        buffer.extend_from_slice(name.as_bytes());
        buffer.resize(name.len() + pad, pad as u8);
        self.cipher
            .seal_in_place_append_tag(dir.nonce(), Aad::from(&dir.0), &mut buffer)
            .expect("AES-256-GCM-SIV seals any short input");
        BASE64URL.encode(&buffer)
    }

    /// The plaintext of a full encoded component of directory `dir`; an error naming `encoded`
    /// if it was edited, moved from another directory or sealed under another key.
    pub fn decrypt(&self, dir: &DirId, encoded: &str) -> Result<String> {
        let invalid = || Error::InvalidName(encoded.to_owned());
        let mut buffer = BASE64URL.decode(encoded).map_err(|_| invalid())?;
        if buffer.len() < NAME_BLOCK + TAG_LEN || !buffer.len().is_multiple_of(NAME_BLOCK) {
            return Err(invalid());
        }
        let plain = self
            .cipher
            .open_in_place(dir.nonce(), Aad::from(&dir.0), &mut buffer)
            .map_err(|_| invalid())?;
        let pad = usize::from(*plain.last().expect("at least one block"));
        if pad == 0
            || pad > NAME_BLOCK
            || plain[plain.len() - pad..]
                .iter()
                .any(|&b| b as usize != pad)
        {
            return Err(invalid());
        }
        let len = plain.len() - pad;
        String::from_utf8(plain[..len].to_vec()).map_err(|_| invalid())
    }
}

/// Whether a stored component is a long form.
pub fn is_long_form(stored: &str) -> bool {
    stored.starts_with(LONG_NAME_MARK)
}

/// The long form of a full encoded component: `~` and base64url(SHA-256(encoded)).
pub fn long_form(encoded: &str) -> String {
    let hash = digest::digest(&digest::SHA256, encoded.as_bytes());
    format!("{LONG_NAME_MARK}{}", BASE64URL.encode(hash.as_ref()))
}

/// How a full encoded component is stored: itself, or its long form when it is longer than
/// [`LONG_NAME_THRESHOLD`].
pub fn stored_form(encoded: &str) -> Option<String> {
    (encoded.len() > LONG_NAME_THRESHOLD).then(|| long_form(encoded))
}

/// Characters of the stored form of a plaintext component of `len` bytes.
pub fn stored_len(len: usize) -> usize {
    let sealed = (len / NAME_BLOCK + 1) * NAME_BLOCK + TAG_LEN;
    let encoded = (sealed * 4).div_ceil(3);
    if encoded > LONG_NAME_THRESHOLD {
        1 + 43
    } else {
        encoded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> NameKey {
        NameKey::derive(&DataKey::from_bytes([7; 32]))
    }

    /// Fixed key, fixed output: the format cannot drift silently. Checked independently with
    /// Python's `cryptography` (`AESGCMSIV`) and `hmac`: the script is in `docs/format.md`.
    #[test]
    fn vectors() {
        let key = key();
        let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(hex(&key.check_value()), VECTOR_CHECK);
        assert_eq!(hex(&key.dir_id("").0), VECTOR_ROOT_ID);
        assert_eq!(key.encrypt(&key.dir_id(""), "2025"), VECTOR_ROOT_2025);
        assert_eq!(
            key.encrypt(&key.dir_id("2025"), "sales-01.csv"),
            VECTOR_SALES
        );
        assert_eq!(key.encrypt(&key.dir_id(""), ""), VECTOR_EMPTY);
    }

    const VECTOR_CHECK: &str = "ddee3df0b6bffb5835326df850301e4e";
    const VECTOR_ROOT_ID: &str = "0144ec5c8baf0ccdeeb03754bd0d339084ea42c9fc9bdbf87a1a1dbb58ac9335";
    const VECTOR_ROOT_2025: &str = "a3ELMxpIznuHtmExZiz-J0Z83FX4tOh3smkF7kmYonQ";
    const VECTOR_SALES: &str = "iNcTB4VeH7ZSHbJwqaXKDUZLWDwfjx0J8vxRP0Ux-7o";
    const VECTOR_EMPTY: &str = "xmLxXq1b8ZFE45aEiqf8V6pfbh1Q6t0EUDYeHUhunhI";

    #[test]
    fn round_trip_and_lengths() {
        let key = key();
        let dir = key.dir_id("a/b");
        for len in [0, 1, 15, 16, 17, 31, 32, 100, 255, 1000] {
            let name = "é".repeat(len / 2) + &"x".repeat(len % 2);
            let encoded = key.encrypt(&dir, &name);
            assert_eq!(key.decrypt(&dir, &encoded).unwrap(), name);
            assert!(encoded.len() >= 43);
            assert!(
                encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{encoded}"
            );
            match stored_form(&encoded) {
                Some(long) => {
                    assert!(is_long_form(&long));
                    assert_eq!(long.len(), 44);
                    assert_eq!(stored_len(name.len()), 44);
                }
                None => assert_eq!(stored_len(name.len()), encoded.len()),
            }
            assert!(!is_long_form(&encoded));
        }
        // Equal names in one directory are equal; padding hides lengths within a block.
        assert_eq!(key.encrypt(&dir, "x"), key.encrypt(&dir, "x"));
        assert_eq!(
            key.encrypt(&dir, "a").len(),
            key.encrypt(&dir, "abcdefghijklmno").len()
        );
        assert!(stored_form(&key.encrypt(&dir, &"n".repeat(255))).is_some());
        assert!(stored_form(&key.encrypt(&dir, &"n".repeat(80))).is_some());
        assert!(stored_form(&key.encrypt(&dir, &"n".repeat(79))).is_none());
    }

    #[test]
    fn parents_and_keys_separate_names() {
        let key = key();
        let (a, b) = (key.dir_id("a"), key.dir_id("b"));
        let in_a = key.encrypt(&a, "x");
        assert_ne!(in_a, key.encrypt(&b, "x"));
        assert!(
            key.decrypt(&b, &in_a).is_err(),
            "moved to another directory"
        );
        let other = NameKey::derive(&DataKey::from_bytes([8; 32]));
        assert_ne!(other.check_value(), key.check_value());
        assert!(other.decrypt(&other.dir_id("a"), &in_a).is_err());
        assert!(!format!("{key:?}{a:?}").contains('7'));
    }

    #[test]
    fn tampered_or_foreign_names_are_refused() {
        let key = key();
        let dir = key.dir_id("");
        let encoded = key.encrypt(&dir, "secret.csv");
        let mut bytes = BASE64URL.decode(&encoded).unwrap();
        bytes[3] ^= 1;
        let error = key.decrypt(&dir, &BASE64URL.encode(&bytes)).unwrap_err();
        assert!(matches!(error, Error::InvalidName(_)));
        for foreign in [
            "",
            ".",
            "..",
            "plain.txt",
            "a/b",
            &encoded[..encoded.len() - 1],
        ] {
            assert!(key.decrypt(&dir, foreign).is_err(), "{foreign:?}");
        }
    }
}
