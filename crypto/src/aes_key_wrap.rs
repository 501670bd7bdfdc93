//! AES key wrap with padding (KWP, RFC 5649 / NIST SP 800-38F).
//!
//! The secure-key-release sidecar receives keys wrapped this way (Azure Key Vault's
//! `CKM_RSA_AES_KEY_WRAP` ends in a KWP layer). The mode comes from RustCrypto's `aes-kw`; this
//! module only chooses the AES variant by key length and maps errors. 128-, 192- and 256-bit
//! wrapping keys are accepted.

use aes_kw::{KekAes128, KekAes192, KekAes256};
use zeroize::Zeroizing;

use crate::{Error, Result};

/// Wraps `key_material` (any non-empty length) under the AES key `kek` (16, 24 or 32 bytes).
pub fn wrap(kek: &[u8], key_material: &[u8]) -> Result<Vec<u8>> {
    let wrapped = match kek.len() {
        16 => KekAes128::try_from(kek)
            .ok()
            .map(|k| k.wrap_with_padding_vec(key_material)),
        24 => KekAes192::try_from(kek)
            .ok()
            .map(|k| k.wrap_with_padding_vec(key_material)),
        32 => KekAes256::try_from(kek)
            .ok()
            .map(|k| k.wrap_with_padding_vec(key_material)),
        _ => None,
    };
    match wrapped {
        None => Err(Error::Kek(format!(
            "an AES wrapping key is 16, 24 or 32 bytes, not {}",
            kek.len()
        ))),
        Some(result) => result.map_err(|e| Error::Kek(format!("AES-KWP wrap failed: {e}"))),
    }
}

/// Unwraps KWP output; fails with [`Error::UnwrapFailed`] on a wrong key or damaged input.
pub fn unwrap(kek: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let unwrapped = match kek.len() {
        16 => KekAes128::try_from(kek)
            .ok()
            .map(|k| k.unwrap_with_padding_vec(wrapped)),
        24 => KekAes192::try_from(kek)
            .ok()
            .map(|k| k.unwrap_with_padding_vec(wrapped)),
        32 => KekAes256::try_from(kek)
            .ok()
            .map(|k| k.unwrap_with_padding_vec(wrapped)),
        _ => None,
    };
    match unwrapped {
        None => Err(Error::Kek(format!(
            "an AES wrapping key is 16, 24 or 32 bytes, not {}",
            kek.len()
        ))),
        Some(result) => result.map(Zeroizing::new).map_err(|_| Error::UnwrapFailed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::decode_hex;

    fn hex(text: &str) -> Vec<u8> {
        decode_hex(&text.replace(' ', "")).unwrap()
    }

    /// RFC 5649 section 6, both examples (192-bit KEK).
    #[test]
    fn rfc5649_vectors() {
        let kek = hex("5840df6e29b02af1 ab493b705bf16ea1 ae8338f4dcc176a8");
        let cases = [
            (
                "c37b7e6492584340 bed1220780894115 5068f738",
                "138bdeaa9b8fa7fc 61f97742e72248ee 5ae6ae5360d1ae6a 5f54f373fa543b6a",
            ),
            ("466f7250617369", "afbeb0f07dfbf541 9200f2ccb50bb24f"),
        ];
        for (key, expected) in cases {
            assert_eq!(wrap(&kek, &hex(key)).unwrap(), hex(expected));
            assert_eq!(*unwrap(&kek, &hex(expected)).unwrap(), hex(key));
        }
    }

    #[test]
    fn tamper_and_wrong_key_fail() {
        let kek = [3u8; 32];
        let mut wrapped = wrap(&kek, &[5; 32]).unwrap();
        assert!(matches!(
            unwrap(&[4; 32], &wrapped),
            Err(Error::UnwrapFailed)
        ));
        wrapped[0] ^= 1;
        assert!(matches!(unwrap(&kek, &wrapped), Err(Error::UnwrapFailed)));
        assert!(wrap(&[0; 20], b"x").is_err());
        assert_eq!(
            *unwrap(&[1; 16], &wrap(&[1; 16], b"abc").unwrap()).unwrap(),
            b"abc"
        );
    }
}
