//! RSA key-encryption keys (KEKs) and DEK wrapping with RSA-OAEP.
//!
//! The parameters are those of the reference system's `wrap-deks` step and of
//! `openssl pkeyutl -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256
//! -pkeyopt rsa_mgf1_md:sha256`: OAEP with SHA-256, MGF1 with SHA-256, empty label. A wrapped key
//! is the bare RSA ciphertext (as many bytes as the modulus), exactly what `openssl pkeyutl`
//! writes, so keys move between the two tools in both directions.
//!
//! Keys are 3072-bit by default; 2048-bit keys are accepted (the reference system makes them),
//! anything smaller is refused. Private keys are PKCS#8 PEM (`BEGIN PRIVATE KEY`, what
//! `openssl genpkey` writes); public keys are SubjectPublicKeyInfo PEM (`BEGIN PUBLIC KEY`).

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OAEP_SHA384_MGF1SHA384, OaepAlgorithm,
    OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey,
};
use zeroize::Zeroizing;

use crate::{DataKey, Error, Result};

/// PEM label of a PKCS#8 private key.
const PRIVATE_PEM_TAG: &str = "PRIVATE KEY";
/// PEM label of a SubjectPublicKeyInfo public key.
const PUBLIC_PEM_TAG: &str = "PUBLIC KEY";
/// Smallest modulus accepted, for compatibility with the reference system.
pub const MIN_KEK_BITS: usize = 2048;

/// RSA modulus sizes encfs generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KekSize {
    /// 2048 bits: only for compatibility with the reference system.
    Rsa2048,
    /// 3072 bits: the default (128-bit security).
    #[default]
    Rsa3072,
    /// 4096 bits.
    Rsa4096,
}

impl KekSize {
    /// Parses a bit count (2048, 3072 or 4096).
    pub fn from_bits(bits: usize) -> Option<Self> {
        match bits {
            2048 => Some(Self::Rsa2048),
            3072 => Some(Self::Rsa3072),
            4096 => Some(Self::Rsa4096),
            _ => None,
        }
    }
}

/// The hash of an RSA-OAEP operation (MGF1 uses the same hash; the label is empty).
///
/// Azure Key Vault's `CKM_RSA_AES_KEY_WRAP` is SHA-1, `RSA_AES_KEY_WRAP_256` SHA-256 and
/// `RSA_AES_KEY_WRAP_384` SHA-384; the reference's DEK wrapping and CCF's `RSA-OAEP-AES-KWP`
/// are SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OaepHash {
    /// SHA-1 (only for Key Vault's `CKM_RSA_AES_KEY_WRAP`).
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
}

impl OaepHash {
    fn algorithm(self) -> &'static OaepAlgorithm {
        match self {
            Self::Sha1 => &OAEP_SHA1_MGF1SHA1,
            Self::Sha256 => &OAEP_SHA256_MGF1SHA256,
            Self::Sha384 => &OAEP_SHA384_MGF1SHA384,
        }
    }
}

/// The private half of a KEK: unwraps DEKs.
pub struct KekPrivateKey(PrivateDecryptingKey);

/// The public half of a KEK: wraps DEKs.
#[derive(Clone)]
pub struct KekPublicKey(PublicEncryptingKey);

impl std::fmt::Debug for KekPrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KekPrivateKey({} bits)", self.0.key_size_bits())
    }
}

impl std::fmt::Debug for KekPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KekPublicKey({} bits)", self.0.key_size_bits())
    }
}

fn kek_error(what: &str) -> impl FnOnce(aws_lc_rs::error::Unspecified) -> Error + '_ {
    move |_| Error::Kek(what.to_owned())
}

fn check_size(bits: usize) -> Result<()> {
    if bits < MIN_KEK_BITS {
        return Err(Error::Kek(format!(
            "{bits}-bit RSA key is too small (minimum {MIN_KEK_BITS})"
        )));
    }
    Ok(())
}

impl KekPrivateKey {
    /// Generates a new RSA key pair.
    pub fn generate(size: KekSize) -> Result<Self> {
        let size = match size {
            KekSize::Rsa2048 => KeySize::Rsa2048,
            KekSize::Rsa3072 => KeySize::Rsa3072,
            KekSize::Rsa4096 => KeySize::Rsa4096,
        };
        PrivateDecryptingKey::generate(size)
            .map(Self)
            .map_err(kek_error("RSA key generation failed"))
    }

    /// Parses a PKCS#8 PEM private key.
    pub fn from_pem(pem_text: &[u8]) -> Result<Self> {
        let parsed =
            pem::parse(pem_text).map_err(|e| Error::Kek(format!("not a PEM private key: {e}")))?;
        if parsed.tag() != PRIVATE_PEM_TAG {
            return Err(Error::Kek(format!(
                "expected a PEM '{PRIVATE_PEM_TAG}' (PKCS#8) block, found '{}'{}",
                parsed.tag(),
                if parsed.tag() == "RSA PRIVATE KEY" {
                    " (convert with: openssl pkcs8 -topk8 -nocrypt)"
                } else {
                    ""
                }
            )));
        }
        let der = Zeroizing::new(parsed.into_contents());
        let key = PrivateDecryptingKey::from_pkcs8(&der)
            .map_err(|e| Error::Kek(format!("not an RSA PKCS#8 private key: {e}")))?;
        check_size(key.key_size_bits())?;
        Ok(Self(key))
    }

    /// Serializes to PKCS#8 PEM. The returned text is secret and zeroizes on drop.
    pub fn to_pem(&self) -> Result<Zeroizing<String>> {
        let der = self
            .0
            .as_der()
            .map_err(kek_error("cannot encode private key"))?;
        let der = Zeroizing::new(der.as_ref().to_vec());
        Ok(Zeroizing::new(pem::encode(&pem::Pem::new(
            PRIVATE_PEM_TAG,
            der.to_vec(),
        ))))
    }

    /// Parses a PKCS#8 DER private key (what a released Key Vault key holds).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self> {
        let key = PrivateDecryptingKey::from_pkcs8(der)
            .map_err(|e| Error::Kek(format!("not an RSA PKCS#8 private key: {e}")))?;
        check_size(key.key_size_bits())?;
        Ok(Self(key))
    }

    /// Serializes to PKCS#8 DER. The returned bytes are secret and zeroize on drop.
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>> {
        let der = self
            .0
            .as_der()
            .map_err(kek_error("cannot encode private key"))?;
        Ok(Zeroizing::new(der.as_ref().to_vec()))
    }

    /// RSA-OAEP decryption of `ciphertext` with `hash`; [`Error::UnwrapFailed`] on a wrong key or
    /// damaged input. The plaintext zeroizes on drop.
    pub fn decrypt_oaep(&self, hash: OaepHash, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let key = OaepPrivateDecryptingKey::new(self.0.clone())
            .map_err(kek_error("key unusable for OAEP"))?;
        let mut out = Zeroizing::new(vec![0u8; key.min_output_size()]);
        let len = key
            .decrypt(hash.algorithm(), ciphertext, &mut out, None)
            .map_err(|_| Error::UnwrapFailed)?
            .len();
        out.truncate(len);
        Ok(out)
    }

    /// The matching public key.
    pub fn public_key(&self) -> KekPublicKey {
        KekPublicKey(self.0.public_key())
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.0.key_size_bits()
    }

    /// Unwraps a DEK wrapped with [`KekPublicKey::wrap`] or `openssl pkeyutl` (OAEP-SHA-256).
    pub fn unwrap(&self, wrapped: &[u8]) -> Result<DataKey> {
        let plain = self.decrypt_oaep(OaepHash::Sha256, wrapped)?;
        DataKey::from_slice(&plain).map_err(|_| {
            Error::Kek(format!(
                "unwrapped {} bytes, but a data key is 32 bytes",
                plain.len()
            ))
        })
    }
}

impl KekPublicKey {
    /// Parses a SubjectPublicKeyInfo PEM public key (`openssl pkey -pubout`).
    pub fn from_pem(pem_text: &[u8]) -> Result<Self> {
        let parsed =
            pem::parse(pem_text).map_err(|e| Error::Kek(format!("not a PEM public key: {e}")))?;
        if parsed.tag() != PUBLIC_PEM_TAG {
            return Err(Error::Kek(format!(
                "expected a PEM '{PUBLIC_PEM_TAG}' block, found '{}'",
                parsed.tag()
            )));
        }
        let key = PublicEncryptingKey::from_der(parsed.contents())
            .map_err(|e| Error::Kek(format!("not an RSA public key: {e}")))?;
        check_size(key.key_size_bits())?;
        Ok(Self(key))
    }

    /// Parses a SubjectPublicKeyInfo DER public key.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let key = PublicEncryptingKey::from_der(der)
            .map_err(|e| Error::Kek(format!("not an RSA public key: {e}")))?;
        check_size(key.key_size_bits())?;
        Ok(Self(key))
    }

    /// Serializes to SubjectPublicKeyInfo DER.
    pub fn to_der(&self) -> Result<Vec<u8>> {
        let der = self
            .0
            .as_der()
            .map_err(kek_error("cannot encode public key"))?;
        Ok(der.as_ref().to_vec())
    }

    /// RSA-OAEP encryption of `plaintext` with `hash` (at most the modulus size less
    /// 2 × hash length + 2 bytes).
    pub fn encrypt_oaep(&self, hash: OaepHash, plaintext: &[u8]) -> Result<Vec<u8>> {
        let public = OaepPublicEncryptingKey::new(self.0.clone())
            .map_err(kek_error("key unusable for OAEP"))?;
        let mut out = vec![0u8; public.ciphertext_size()];
        let len = public
            .encrypt(hash.algorithm(), plaintext, &mut out, None)
            .map_err(kek_error(
                "RSA-OAEP encryption failed (plaintext too long?)",
            ))?
            .len();
        out.truncate(len);
        Ok(out)
    }

    /// Serializes to SubjectPublicKeyInfo PEM.
    pub fn to_pem(&self) -> Result<String> {
        let der = self
            .0
            .as_der()
            .map_err(kek_error("cannot encode public key"))?;
        Ok(pem::encode(&pem::Pem::new(
            PUBLIC_PEM_TAG,
            der.as_ref().to_vec(),
        )))
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.0.key_size_bits()
    }

    /// Wraps a DEK with RSA-OAEP (SHA-256, MGF1-SHA-256, empty label).
    pub fn wrap(&self, key: &DataKey) -> Result<Vec<u8>> {
        self.encrypt_oaep(OaepHash::Sha256, key.dangerous_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_round_trip_and_pem() {
        let kek = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
        let public = KekPublicKey::from_pem(kek.public_key().to_pem().unwrap().as_bytes()).unwrap();
        let reloaded = KekPrivateKey::from_pem(kek.to_pem().unwrap().as_bytes()).unwrap();
        let dek = DataKey::generate().unwrap();
        let wrapped = public.wrap(&dek).unwrap();
        assert_eq!(wrapped.len(), 256);
        assert_eq!(reloaded.unwrap(&wrapped).unwrap(), dek);
        // OAEP is randomized.
        assert_ne!(public.wrap(&dek).unwrap(), wrapped);
    }

    #[test]
    fn wrong_kek_and_damaged_input_fail() {
        let kek = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
        let other = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
        let dek = DataKey::generate().unwrap();
        let mut wrapped = kek.public_key().wrap(&dek).unwrap();
        assert!(matches!(other.unwrap(&wrapped), Err(Error::UnwrapFailed)));
        wrapped[10] ^= 1;
        assert!(matches!(kek.unwrap(&wrapped), Err(Error::UnwrapFailed)));
        assert!(kek.unwrap(&[]).is_err());
    }

    #[test]
    fn pem_kind_confusion_rejected() {
        let kek = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
        let public_pem = kek.public_key().to_pem().unwrap();
        assert!(KekPrivateKey::from_pem(public_pem.as_bytes()).is_err());
        assert!(KekPublicKey::from_pem(kek.to_pem().unwrap().as_bytes()).is_err());
        assert!(KekPublicKey::from_pem(b"garbage").is_err());
        let debug = format!("{kek:?}");
        assert_eq!(debug, "KekPrivateKey(2048 bits)");
    }
}
