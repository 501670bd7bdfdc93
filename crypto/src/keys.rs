//! The data encryption key (DEK) type and its public key id.
//!
//! A [`DataKey`] is 32 random bytes used as the input keying material for AES-256-GCM subkeys. It
//! zeroizes on drop, does not implement `Clone` implicitly into logs (`Debug` prints only the id),
//! and never exposes its bytes except through [`DataKey::dangerous_bytes`], whose name says what it
//! is.
//!
//! The [`KeyId`] lets a blob say "you have the wrong key" before any decryption is attempted. It is
//! *not* SHA-256 of the key (Azure CPK sends that value in the clear as a request header, so reusing
//! it would link our blobs to CPK traffic); it is HKDF-SHA-256 of the key with a dedicated label,
//! truncated to 128 bits.

use std::fmt;

use aws_lc_rs::{hkdf, rand};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{Error, Result};

/// Length of a [`DataKey`] in bytes (AES-256).
pub const DATA_KEY_LEN: usize = 32;
/// Length of a [`KeyId`] in bytes.
pub const KEY_ID_LEN: usize = 16;

/// HKDF label for key ids; changing it changes every key id.
const KEY_ID_INFO: &[u8] = b"encfs/v1/key-id";
/// HKDF label for the Azure customer-provided key derived from a DEK ([`DataKey::customer_key`]);
/// changing it makes every `cpk` blob unreadable.
const CUSTOMER_KEY_INFO: &[u8] = b"encfs/v1/cpk-key";

/// A 256-bit data encryption key. Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop, PartialEq, Eq)]
pub struct DataKey([u8; DATA_KEY_LEN]);

impl DataKey {
    /// A fresh key from the operating system's random number generator.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; DATA_KEY_LEN];
        rand::fill(&mut bytes).map_err(|_| Error::Io(std::io::Error::other("OS RNG failed")))?;
        Ok(Self(bytes))
    }

    /// Wraps existing key bytes (for example a reference-system `<datastore>.bin` file).
    pub fn from_bytes(bytes: [u8; DATA_KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Wraps key bytes from a slice, which must be exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let array: [u8; DATA_KEY_LEN] = bytes.try_into().map_err(|_| {
            Error::MalformedKeyFile(format!("a data key is 32 bytes, found {}", bytes.len()))
        })?;
        Ok(Self(array))
    }

    /// The raw key bytes. Only for wrapping, serializing to a key file, or handing to a
    /// primitive; never log or persist them unencrypted without the user asking for it.
    pub fn dangerous_bytes(&self) -> &[u8; DATA_KEY_LEN] {
        &self.0
    }

    /// The Azure customer-provided key (`cpk` mode) for this DEK: HKDF-SHA-256 of the DEK with
    /// its own label, never the DEK itself. CPK sends its key to the service in every request, so
    /// sending the DEK would hand the service the key of every client-side encrypted blob too; a
    /// key has one purpose. The derivation is one-way: the service learns nothing of the DEK.
    pub fn customer_key(&self) -> CustomerKeyBytes {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(&self.0);
        let mut key = [0u8; DATA_KEY_LEN];
        prk.expand(&[CUSTOMER_KEY_INFO], Len(DATA_KEY_LEN))
            .and_then(|okm| okm.fill(&mut key))
            .expect("HKDF-SHA-256 can always produce 32 bytes");
        CustomerKeyBytes(key)
    }

    /// The key's public identifier.
    pub fn id(&self) -> KeyId {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(&self.0);
        let mut id = [0u8; KEY_ID_LEN];
        prk.expand(&[KEY_ID_INFO], Len(KEY_ID_LEN))
            .and_then(|okm| okm.fill(&mut id))
            .expect("HKDF-SHA-256 can always produce 16 bytes");
        KeyId(id)
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataKey(id={})", self.id())
    }
}

/// An AES-256 key for Azure's customer-provided-key mode, derived from a [`DataKey`] by
/// [`DataKey::customer_key`]. Zeroized on drop; `Debug` shows nothing of it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct CustomerKeyBytes([u8; DATA_KEY_LEN]);

impl CustomerKeyBytes {
    /// The raw key bytes, for the store client that sends them (base64) to the service.
    pub fn dangerous_bytes(&self) -> &[u8; DATA_KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for CustomerKeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CustomerKeyBytes(…)")
    }
}

/// The public identifier of a [`DataKey`]: safe to print, store and compare.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl KeyId {
    /// Parses the 32-hex-digit form printed by `Display`.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = decode_hex(text)?;
        Some(Self(bytes.try_into().ok()?))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Lower-case hex decoding, used for key ids and test vectors.
pub(crate) fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Output length adaptor for `aws_lc_rs::hkdf`.
#[derive(Clone, Copy)]
pub(crate) struct Len(pub usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_differ_and_ids_are_stable() {
        let a = DataKey::generate().unwrap();
        let b = DataKey::generate().unwrap();
        assert_ne!(a.dangerous_bytes(), b.dangerous_bytes());
        assert_ne!(a.id(), b.id());
        assert_eq!(a.id(), a.clone().id());
    }

    #[test]
    fn key_id_is_not_the_cpk_sha256() {
        let key = DataKey::from_bytes([7; 32]);
        let sha = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &[7; 32]);
        assert_ne!(&sha.as_ref()[..16], &key.id().0);
    }

    /// Expected value computed independently (Python `hmac`: HKDF-Extract with an all-zero salt,
    /// then one HKDF-Expand block with info `encfs/v1/cpk-key`).
    #[test]
    fn customer_key_is_derived_not_the_dek() {
        let key = DataKey::from_bytes([7; 32]);
        let cpk = key.customer_key();
        assert_ne!(cpk.dangerous_bytes(), key.dangerous_bytes());
        let hex: String = cpk
            .dangerous_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "90a967fd45049abbac6e2fe58f733ba24139e8af6cc33a4053b37f3074ecc194"
        );
        assert!(!format!("{cpk:?}").contains("90a9"));
    }

    #[test]
    fn debug_does_not_show_key_bytes() {
        let key = DataKey::from_bytes([0xab; 32]);
        let shown = format!("{key:?}");
        assert!(!shown.contains("abab"), "{shown}");
        assert!(shown.contains(&key.id().to_string()));
    }

    #[test]
    fn key_id_hex_round_trip() {
        let id = DataKey::from_bytes([1; 32]).id();
        assert_eq!(KeyId::from_hex(&id.to_string()), Some(id));
        assert_eq!(KeyId::from_hex("zz"), None);
    }

    #[test]
    fn from_slice_rejects_wrong_length() {
        assert!(DataKey::from_slice(&[0; 31]).is_err());
        assert!(DataKey::from_slice(&[0; 32]).is_ok());
    }
}
