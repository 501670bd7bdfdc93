//! RSA-OAEP ‖ AES key wrap with padding: the hybrid wrapping of Azure Key Vault's key release
//! (`key_hsm`, `enc` = `CKM_RSA_AES_KEY_WRAP` / `RSA_AES_KEY_WRAP_256` / `RSA_AES_KEY_WRAP_384`)
//! and of CCF's `RSA-OAEP-AES-KWP` (what the governance app wraps secrets with).
//!
//! Wrapping draws a fresh AES-256 key, encrypts it with RSA-OAEP under the recipient's public key
//! and wraps the material with that AES key (RFC 5649). The output is the RSA ciphertext (as many
//! bytes as the modulus: 256 for RSA-2048) followed by the KWP output. Nothing here is a primitive
//! of its own: OAEP is aws-lc-rs's, KWP is [`crate::aes_key_wrap`].

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::kek::{KekPrivateKey, KekPublicKey, OaepHash};
use crate::{Error, Result, aes_key_wrap};

/// Size of the transient AES key.
const AES_KEY_LEN: usize = 32;

/// Wraps `material` (any non-empty length) for `recipient`.
pub fn wrap(recipient: &KekPublicKey, hash: OaepHash, material: &[u8]) -> Result<Vec<u8>> {
    let mut aes_key = Zeroizing::new([0u8; AES_KEY_LEN]);
    SystemRandom::new()
        .fill(aes_key.as_mut())
        .map_err(|_| Error::Kek("no randomness for the transient AES key".into()))?;
    let mut out = recipient.encrypt_oaep(hash, aes_key.as_ref())?;
    out.extend_from_slice(&aes_key_wrap::wrap(aes_key.as_ref(), material)?);
    Ok(out)
}

/// Unwraps [`wrap`]'s output with the recipient's private key. A wrong key, a wrong hash or any
/// damaged byte is [`Error::UnwrapFailed`]. The material zeroizes on drop.
pub fn unwrap(
    recipient: &KekPrivateKey,
    hash: OaepHash,
    wrapped: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let rsa_len = recipient.bits().div_ceil(8);
    if wrapped.len() <= rsa_len {
        return Err(Error::Kek(format!(
            "a wrapped key for a {}-bit RSA key is longer than {rsa_len} bytes, not {}",
            recipient.bits(),
            wrapped.len()
        )));
    }
    let (rsa_part, kwp_part) = wrapped.split_at(rsa_len);
    let aes_key = recipient.decrypt_oaep(hash, rsa_part)?;
    if aes_key.len() != AES_KEY_LEN && aes_key.len() != 16 && aes_key.len() != 24 {
        return Err(Error::UnwrapFailed);
    }
    aes_key_wrap::unwrap(&aes_key, kwp_part)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kek::KekSize;

    #[test]
    fn round_trip_for_each_hash_and_layout() {
        let key = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
        let material = b"a PKCS#8 private key or any secret bytes".to_vec();
        for hash in [OaepHash::Sha1, OaepHash::Sha256, OaepHash::Sha384] {
            let wrapped = wrap(&key.public_key(), hash, &material).unwrap();
            // 256 bytes of RSA, then KWP: the material padded to 8 bytes plus the 8-byte block.
            assert_eq!(wrapped.len(), 256 + material.len().div_ceil(8) * 8 + 8);
            assert_eq!(
                unwrap(&key, hash, &wrapped).unwrap().as_slice(),
                &material[..]
            );
        }
    }

    #[test]
    fn wrong_key_hash_or_byte_fails() {
        let key = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
        let other = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
        let mut wrapped = wrap(&key.public_key(), OaepHash::Sha256, b"secret").unwrap();
        assert!(matches!(
            unwrap(&other, OaepHash::Sha256, &wrapped),
            Err(Error::UnwrapFailed)
        ));
        assert!(matches!(
            unwrap(&key, OaepHash::Sha1, &wrapped),
            Err(Error::UnwrapFailed)
        ));
        assert!(unwrap(&key, OaepHash::Sha256, &wrapped[..256]).is_err());
        let last = wrapped.len() - 1;
        wrapped[last] ^= 1;
        assert!(matches!(
            unwrap(&key, OaepHash::Sha256, &wrapped),
            Err(Error::UnwrapFailed)
        ));
    }

    #[test]
    fn kek_der_round_trip() {
        let key = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
        let again = KekPrivateKey::from_pkcs8_der(&key.to_pkcs8_der().unwrap()).unwrap();
        let public = KekPublicKey::from_der(&key.public_key().to_der().unwrap()).unwrap();
        let wrapped = wrap(&public, OaepHash::Sha256, b"x").unwrap();
        assert_eq!(
            unwrap(&again, OaepHash::Sha256, &wrapped)
                .unwrap()
                .as_slice(),
            b"x"
        );
    }
}
