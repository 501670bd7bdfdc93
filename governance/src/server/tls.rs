//! The governance service's TLS configuration: rustls over the ring provider, the node certificate
//! chain the caller hands in, TLS 1.2 and 1.3, and client certificates as CCF takes them.
//!
//! CCF asks every client for a certificate but does not require one, and accepts any certificate at
//! the TLS layer (members' certificates are self-signed, so there is no CA to chain them to). What
//! TLS still proves is possession: the client signed the handshake with the key of the certificate
//! it presented. The application then looks the certificate up (member id = SHA-256 of its DER)
//! and decides. [`AnyClientCertificate`] is that verifier; the handler sees the certificate through
//! [`crate::server::PeerCertificate`].
//!
//! The provider is chosen explicitly (`builder_with_provider`) because a process that links both
//! rustls providers has no default one and `ServerConfig::builder()` would fail at run time.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use zeroize::Zeroizing;

/// Errors building the server's TLS configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// The certificate chain PEM held no `CERTIFICATE` block, or one that is not valid PEM.
    #[error("the TLS certificate chain ({what}) holds no readable CERTIFICATE block")]
    NoCertificate {
        /// Which input was read (a file name or "certificate chain").
        what: String,
    },
    /// The private key PEM held no PKCS#8, SEC1 or PKCS#1 private key block.
    #[error("the TLS private key ({what}) holds no readable private key block")]
    NoPrivateKey {
        /// Which input was read (a file name or "private key").
        what: String,
    },
    /// rustls refused the configuration (key does not match the certificate, unsupported key type).
    #[error("rustls refused the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The certificate chain (leaf first: the node certificate, then the service certificate that
/// issued it) and the private key of the leaf, as the server presents them.
pub struct ServerIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("chain_len", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Drop for ServerIdentity {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl ServerIdentity {
    /// Reads a chain of PEM `CERTIFICATE` blocks (leaf first) and a PEM private key
    /// (`PRIVATE KEY`, `EC PRIVATE KEY` or `RSA PRIVATE KEY`).
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Self, TlsSetupError> {
        let chain =
            certificates_from_pem(chain_pem).ok_or_else(|| TlsSetupError::NoCertificate {
                what: "certificate chain".into(),
            })?;
        let key = private_key_from_pem(key_pem).ok_or_else(|| TlsSetupError::NoPrivateKey {
            what: "private key".into(),
        })?;
        Ok(Self { chain, key })
    }

    /// Takes DER certificates (leaf first) and a PKCS#8 DER private key.
    pub fn from_der(
        chain_der: Vec<Vec<u8>>,
        pkcs8_key_der: Vec<u8>,
    ) -> Result<Self, TlsSetupError> {
        if chain_der.is_empty() {
            return Err(TlsSetupError::NoCertificate {
                what: "certificate chain".into(),
            });
        }
        Ok(Self {
            chain: chain_der.into_iter().map(CertificateDer::from).collect(),
            key: PrivateKeyDer::Pkcs8(pkcs8_key_der.into()),
        })
    }

    /// The DER of the leaf certificate.
    pub fn leaf_der(&self) -> &[u8] {
        self.chain[0].as_ref()
    }
}

/// Every PEM `CERTIFICATE` block of `pem_text`, in order; `None` if there is none or the PEM is
/// unreadable.
pub(crate) fn certificates_from_pem(pem_text: &str) -> Option<Vec<CertificateDer<'static>>> {
    let blocks = pem::parse_many(pem_text).ok()?;
    let chain: Vec<_> = blocks
        .into_iter()
        .filter(|block| block.tag() == "CERTIFICATE")
        .map(|block| CertificateDer::from(block.into_contents()))
        .collect();
    (!chain.is_empty()).then_some(chain)
}

/// The first private key block of `pem_text`.
pub(crate) fn private_key_from_pem(pem_text: &str) -> Option<PrivateKeyDer<'static>> {
    let blocks = pem::parse_many(pem_text).ok()?;
    blocks.into_iter().find_map(|block| {
        let tag = block.tag().to_owned();
        let contents = Zeroizing::new(block.into_contents());
        let der = contents.to_vec();
        match tag.as_str() {
            "PRIVATE KEY" => Some(PrivateKeyDer::Pkcs8(der.into())),
            "EC PRIVATE KEY" => Some(PrivateKeyDer::Sec1(der.into())),
            "RSA PRIVATE KEY" => Some(PrivateKeyDer::Pkcs1(der.into())),
            _ => None,
        }
    })
}

/// The chain with a signing key loaded from `key` by the ring provider, checked to match the leaf.
/// The key DER is only borrowed, so the caller's copy is the only one and zeroizes on drop.
pub(crate) fn certified_key(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
) -> Result<rustls::sign::CertifiedKey, rustls::Error> {
    let signing_key = rustls::crypto::ring::sign::any_supported_type(key)?;
    let certified = rustls::sign::CertifiedKey::new(chain.to_vec(), signing_key);
    certified.keys_match()?;
    Ok(certified)
}

/// The ring provider, which is the only one this crate links into rustls.
pub fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the server configuration: ring provider, TLS 1.2 and 1.3, optional client certificates
/// accepted as [`AnyClientCertificate`] does, ALPN `http/1.1`.
pub fn server_config(identity: &ServerIdentity) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let provider = ring_provider();
    let verifier = Arc::new(AnyClientCertificate::new(
        provider.signature_verification_algorithms,
    ));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
            certified_key(&identity.chain, &identity.key)?,
        )));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client-certificate verifier that asks for a certificate, does not require one, accepts any
/// well-formed X.509 end-entity certificate (self-signed included, validity dates not checked) and
/// verifies the handshake signature with the provider's algorithms — CCF's behaviour. Deciding
/// whether the certificate belongs to a member is the application's job.
#[derive(Debug)]
pub struct AnyClientCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AnyClientCertificate {
    /// A verifier over the given signature algorithms (normally the provider's).
    pub fn new(algorithms: WebPkiSupportedAlgorithms) -> Self {
        Self { algorithms }
    }
}

impl ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Only a syntactic check: the handshake signature (verified below) proves possession,
        // and membership is decided by the application from the certificate's hash.
        match x509_parser::parse_x509_certificate(end_entity.as_ref()) {
            Ok(([], _)) => Ok(ClientCertVerified::assertion()),
            _ => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed() -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn builds_a_config_from_pem() {
        let (cert, key) = self_signed();
        let identity = ServerIdentity::from_pem(&cert, &key).unwrap();
        assert!(!identity.leaf_der().is_empty());
        let config = server_config(&identity).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn refuses_a_key_that_does_not_match_the_certificate() {
        let (cert, _) = self_signed();
        let (_, other_key) = self_signed();
        let identity = ServerIdentity::from_pem(&cert, &other_key).unwrap();
        assert!(matches!(
            server_config(&identity),
            Err(TlsSetupError::Rustls(_))
        ));
    }

    #[test]
    fn refuses_pem_without_the_blocks() {
        let (cert, key) = self_signed();
        assert!(matches!(
            ServerIdentity::from_pem(&key, &key),
            Err(TlsSetupError::NoCertificate { .. })
        ));
        assert!(matches!(
            ServerIdentity::from_pem(&cert, &cert),
            Err(TlsSetupError::NoPrivateKey { .. })
        ));
        assert!(matches!(
            ServerIdentity::from_pem("garbage", "garbage"),
            Err(TlsSetupError::NoCertificate { .. })
        ));
    }

    #[test]
    fn the_verifier_accepts_any_certificate_but_not_garbage() {
        let verifier = AnyClientCertificate::new(ring_provider().signature_verification_algorithms);
        assert!(verifier.offer_client_auth());
        assert!(!verifier.client_auth_mandatory());
        let (cert, _) = self_signed();
        let der = certificates_from_pem(&cert).unwrap().remove(0);
        assert!(
            verifier
                .verify_client_cert(&der, &[], UnixTime::now())
                .is_ok()
        );
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x01, 0x01, 0xff]);
        assert!(
            verifier
                .verify_client_cert(&garbage, &[], UnixTime::now())
                .is_err()
        );
    }
}
