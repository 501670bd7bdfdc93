//! The real clean-room attestation check of the governance service: SEV-SNP reports of platform
//! `snp-caci` verified by [`encfs_attestation::verify`] up to the trusted roots the operator
//! configures (`--attestation-authority-ca`: AMD's ARK, or a virtual authority's
//! `authority-ca.pem`), and the secrets wrapped for the clean room's key with CCF's
//! RSA-OAEP-AES-KWP (OAEP SHA-256, AES-256 KWP: [`encfs_crypto::rsa_aes_wrap`]).
//!
//! A service without a verifier fails closed: every attested route is refused.

use encfs_attestation::provider::Evidence;
use encfs_attestation::verify::{TrustedRoots, VerifyError, verify_report};
use encfs_crypto::kek::{KekPublicKey, OaepHash};
use serde_json::Value;

use crate::app::{AttestationVerifier, KeyWrapper, VerifiedAttestation};

/// The one platform the verifier reads (the reference's default); `snp-cvm` reports (vTPM
/// quotes) are 400 `UnsupportedPlatform`.
pub const SNP_CACI: &str = "snp-caci";

/// What the attested routes need: a verifier and a wrapper, shared by the service's handlers.
pub trait CleanRoomAttestation: AttestationVerifier + KeyWrapper + Send + Sync {}

impl<T: AttestationVerifier + KeyWrapper + Send + Sync> CleanRoomAttestation for T {}

/// SEV-SNP (`snp-caci`) verification against trusted roots, and RSA-OAEP-AES-KWP wrapping.
#[derive(Clone, Debug)]
pub struct SnpAttestationVerifier {
    roots: TrustedRoots,
}

impl SnpAttestationVerifier {
    /// A verifier trusting `roots`.
    pub fn new(roots: TrustedRoots) -> Self {
        Self { roots }
    }

    /// A verifier trusting the certificates of PEM texts.
    ///
    /// # Errors
    /// [`VerifyError`] when a text holds no certificate.
    pub fn from_pems<I, P>(pems: I) -> Result<Self, VerifyError>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        Ok(Self::new(TrustedRoots::from_pems(pems)?))
    }
}

impl AttestationVerifier for SnpAttestationVerifier {
    fn supports_platform(&self, platform: &str) -> bool {
        platform == SNP_CACI
    }

    fn verify(&self, platform: &str, attestation: &Value) -> Result<VerifiedAttestation, String> {
        if platform != SNP_CACI {
            return Err(format!("platform '{platform}' is not verified here"));
        }
        let evidence = Evidence::from_wire_json(attestation).map_err(|e| e.to_string())?;
        let verified = verify_report(&evidence.report, &evidence.endorsements, &self.roots)
            .map_err(|e| e.to_string())?;
        Ok(VerifiedAttestation {
            claims: verified.claims,
            report_data: verified.report_data.to_vec(),
        })
    }
}

impl KeyWrapper for SnpAttestationVerifier {
    fn wrap(&self, public_key_pem: &str, plaintext: &[u8]) -> Result<Vec<u8>, String> {
        let key = KekPublicKey::from_pem(public_key_pem.as_bytes()).map_err(|e| e.to_string())?;
        encfs_crypto::rsa_aes_wrap::wrap(&key, OaepHash::Sha256, plaintext)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::test_support::CleanRoomKey;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use encfs_attestation::authority::VirtualAuthority;

    #[test]
    fn a_virtual_report_verifies_and_others_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let authority = VirtualAuthority::open(dir.path()).unwrap();
        let verifier = SnpAttestationVerifier::from_pems([authority.ca_pem()]).unwrap();
        let evidence = authority.report(&[5; 64], b"policy", false).unwrap();
        let verified = verifier.verify(SNP_CACI, &evidence.to_wire_json()).unwrap();
        assert_eq!(verified.report_data, vec![5; 64]);
        assert!(verifier.supports_platform("snp-caci"));
        assert!(!verifier.supports_platform("snp-cvm"));
        assert!(verifier.verify("snp-cvm", &evidence.to_wire_json()).is_err());
        let error = verifier
            .verify(SNP_CACI, &serde_json::json!({"evidence": "AA=="}))
            .unwrap_err();
        assert!(error.contains("endorsements"), "{error}");
    }

    #[test]
    fn the_wrapper_wraps_for_the_clean_rooms_key() {
        let key = CleanRoomKey::new();
        let pem_text = String::from_utf8(BASE64.decode(&key.public_pem_b64).unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let authority = VirtualAuthority::open(dir.path()).unwrap();
        let verifier = SnpAttestationVerifier::from_pems([authority.ca_pem()]).unwrap();
        let wrapped = verifier.wrap(&pem_text, b"secret").unwrap();
        assert!(wrapped.len() > 256);
        assert!(verifier.wrap("junk", b"secret").is_err());
    }
}
