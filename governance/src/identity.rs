//! Identities: members (P-384 key + self-signed certificate, optional RSA encryption key pair),
//! and the service (a self-signed P-384 CA, "service") with its node ("node", a key + certificate
//! issued by the service CA, used for TLS and for signing the ledger's signature transactions).
//!
//! This is how CCF shapes them: a member id is the lower-case hex SHA-256 of the member's DER
//! certificate; the service certificate is what clients pin and what endorses node certificates;
//! receipts carry the node certificate, which a verifier checks against the service certificate.
//! Files follow CCF's `keygenerator.sh` names (`NAME_privk.pem`, `NAME_cert.pem`,
//! `NAME_enc_privk.pem`, `NAME_enc_pubk.pem`); private keys are PKCS#8 PEM, written 0600 and never
//! over an existing file. Private key bytes live in `Zeroizing` buffers; the aws-lc-rs key objects
//! free (and cleanse) their own copies.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _};
use x509_parser::prelude::FromDer;
use zeroize::Zeroizing;

use crate::cose::{self, CoseError, GovernanceMessage};

/// Why an identity could not be made, read, written or checked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Key or certificate generation failed.
    #[error("generating {what}: {reason}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// The library's reason.
        reason: String,
    },
    /// A file already exists where a key or certificate would be written.
    #[error("{} already exists; refusing to overwrite it", .0.display())]
    Exists(PathBuf),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{}: {reason}", path.display())]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate does not parse or has the wrong kind of key.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The private key is not the key of the certificate.
    #[error("the private key in {} does not match the certificate in {}", key.display(), cert.display())]
    KeyCertificateMismatch {
        /// The key file (or a description of the key).
        key: PathBuf,
        /// The certificate file (or a description of it).
        cert: PathBuf,
    },
    /// The endorsee's certificate is not signed by the endorser's key.
    #[error("certificate {endorsee} is not endorsed by {endorser}")]
    NotEndorsed {
        /// Subject of the endorsee (node) certificate.
        endorsee: String,
        /// Subject of the endorser (service) certificate.
        endorser: String,
    },
}

/// Lower-case hexadecimal of bytes (member ids, digests).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

/// Bytes from hexadecimal (either case); `None` on odd length or a non-hex digit.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// A member id: lower-case hex SHA-256 of the DER certificate (CCF).
pub fn member_id(cert_der: &[u8]) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert_der).as_ref())
}

/// CCF's node id: lower-case hex SHA-256 of the DER SubjectPublicKeyInfo of the node's key.
///
/// # Errors
/// [`IdentityError::Certificate`] when the certificate does not parse.
pub fn node_id(cert_der: &[u8]) -> Result<String, IdentityError> {
    let cert = parse_cert(cert_der)?;
    Ok(hex(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        cert.public_key().raw,
    )
    .as_ref()))
}

/// The DER of the first `CERTIFICATE` block of a PEM text.
///
/// # Errors
/// A reason when there is none.
pub fn cert_der_from_pem(pem_text: &str) -> Result<Vec<u8>, String> {
    pem::parse_many(pem_text)
        .map_err(|e| format!("not PEM: {e}"))?
        .into_iter()
        .find(|p| p.tag() == "CERTIFICATE")
        .map(|p| p.into_contents())
        .ok_or_else(|| "no CERTIFICATE block".to_string())
}

/// PEM text of a DER certificate.
pub fn cert_pem_from_der(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

fn parse_cert(der: &[u8]) -> Result<x509_parser::certificate::X509Certificate<'_>, IdentityError> {
    let (rest, cert) = x509_parser::certificate::X509Certificate::from_der(der)
        .map_err(|e| IdentityError::Certificate(format!("not a DER X.509 certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(IdentityError::Certificate(
            "trailing bytes after the certificate".into(),
        ));
    }
    Ok(cert)
}

/// Checks that `endorsee_der` is signed by the key of `endorser_der` (the endorser signs the
/// endorsee's TBSCertificate, as CCF's service key signs node certificates). ECDSA only, with
/// SHA-256/384/512 on P-256/P-384/P-521. Validity dates are not checked (as `ccf.receipt`).
///
/// # Errors
/// [`IdentityError::Certificate`] for unparsable certificates or unsupported algorithms,
/// [`IdentityError::NotEndorsed`] when the signature does not verify.
pub fn verify_endorsement(endorsee_der: &[u8], endorser_der: &[u8]) -> Result<(), IdentityError> {
    use x509_parser::oid_registry::{
        OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ECDSA_WITH_SHA512,
    };
    let endorsee = parse_cert(endorsee_der)?;
    let endorser = parse_cert(endorser_der)?;
    let (cose_alg, _) = cose::ecdsa_for_spki(endorser.public_key())
        .map_err(|e: CoseError| IdentityError::Certificate(e.to_string()))?;
    let sig_oid = &endorsee.signature_algorithm.algorithm;
    let hash = if *sig_oid == OID_SIG_ECDSA_WITH_SHA256 {
        256
    } else if *sig_oid == OID_SIG_ECDSA_WITH_SHA384 {
        384
    } else if *sig_oid == OID_SIG_ECDSA_WITH_SHA512 {
        512
    } else {
        return Err(IdentityError::Certificate(format!(
            "unsupported certificate signature algorithm {sig_oid}"
        )));
    };
    let verification: &'static signature::EcdsaVerificationAlgorithm = match (cose_alg, hash) {
        (cose::ALG_ES256, 256) => &signature::ECDSA_P256_SHA256_ASN1,
        (cose::ALG_ES256, 384) => &signature::ECDSA_P256_SHA384_ASN1,
        (cose::ALG_ES256, _) => &signature::ECDSA_P256_SHA512_ASN1,
        (cose::ALG_ES384, 256) => &signature::ECDSA_P384_SHA256_ASN1,
        (cose::ALG_ES384, 384) => &signature::ECDSA_P384_SHA384_ASN1,
        (cose::ALG_ES384, _) => &signature::ECDSA_P384_SHA512_ASN1,
        (_, 256) => &signature::ECDSA_P521_SHA256_ASN1,
        (_, 384) => &signature::ECDSA_P521_SHA384_ASN1,
        (_, _) => &signature::ECDSA_P521_SHA512_ASN1,
    };
    signature::UnparsedPublicKey::new(verification, &endorser.public_key().subject_public_key.data)
        .verify(
            endorsee.tbs_certificate.as_ref(),
            &endorsee.signature_value.data,
        )
        .map_err(|_| IdentityError::NotEndorsed {
            endorsee: endorsee.subject().to_string(),
            endorser: endorser.subject().to_string(),
        })
}

/// PEM (`PRIVATE KEY`) of PKCS#8 DER, built in zeroizing buffers (the `pem` crate's encoder
/// would leave a copy of the key in freed memory).
fn private_key_pem(pkcs8: &[u8]) -> Zeroizing<String> {
    use base64::Engine as _;
    let mut b64 = Zeroizing::new(String::with_capacity(pkcs8.len() * 4 / 3 + 4));
    base64::engine::general_purpose::STANDARD.encode_string(pkcs8, &mut b64);
    let mut out = Zeroizing::new(String::with_capacity(b64.len() + b64.len() / 64 + 64));
    out.push_str("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    out
}

/// A P-384 private key with its PKCS#8 encoding kept (zeroized on drop) for writing.
pub struct P384Key {
    pkcs8: Zeroizing<Vec<u8>>,
    signing: EcdsaKeyPair,
}

impl std::fmt::Debug for P384Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("P384Key(..)")
    }
}

impl P384Key {
    /// A new key, generated by aws-lc-rs (whose PKCS#8 document zeroizes on drop). Certificates
    /// are signed through [`rcgen::SigningKey`] on this key, so rcgen never holds a copy of it.
    fn generate() -> Result<Self, IdentityError> {
        let failed = |reason: String| IdentityError::Generate {
            what: "a P-384 key",
            reason,
        };
        let document = EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .map_err(|e| failed(e.to_string()))?;
        Self::from_pkcs8(Zeroizing::new(document.as_ref().to_vec())).map_err(failed)
    }

    fn from_pkcs8(pkcs8: Zeroizing<Vec<u8>>) -> Result<Self, String> {
        let signing = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &pkcs8)
            .map_err(|e| format!("not a P-384 PKCS#8 key: {e}"))?;
        Ok(Self { pkcs8, signing })
    }

    /// Reads a PEM private key: PKCS#8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`, what
    /// `openssl ecparam -genkey` and CCF's keygenerator.sh write).
    fn from_pem(pem_text: &str) -> Result<Self, String> {
        let blocks = pem::parse_many(pem_text).map_err(|e| format!("not PEM: {e}"))?;
        for block in blocks {
            let tag = block.tag().to_string();
            let der = Zeroizing::new(block.into_contents());
            match tag.as_str() {
                "PRIVATE KEY" => return Self::from_pkcs8(der),
                "EC PRIVATE KEY" => {
                    let key = EcdsaKeyPair::from_private_key_der(
                        &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                        &der,
                    )
                    .map_err(|e| format!("not a P-384 EC key: {e}"))?;
                    let pkcs8 = key
                        .to_pkcs8v1()
                        .map_err(|e| format!("re-encoding the key: {e}"))?;
                    return Self::from_pkcs8(Zeroizing::new(pkcs8.as_ref().to_vec()));
                }
                _ => {}
            }
        }
        Err("no PRIVATE KEY or EC PRIVATE KEY block".into())
    }

    /// The aws-lc-rs signing key (ES384, fixed r‖s).
    pub fn signing_key(&self) -> &EcdsaKeyPair {
        &self.signing
    }

    /// The uncompressed public point.
    pub fn public_point(&self) -> &[u8] {
        self.signing.public_key().as_ref()
    }

    /// PKCS#8 PEM of the key (zeroized on drop).
    pub fn to_pem(&self) -> Zeroizing<String> {
        private_key_pem(&self.pkcs8)
    }

    /// PKCS#8 DER of the key (zeroized on drop).
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    #[cfg(test)]
    fn rcgen_key(&self) -> Result<rcgen::KeyPair, IdentityError> {
        rcgen::KeyPair::try_from(self.pkcs8.as_slice()).map_err(|e| IdentityError::Generate {
            what: "a certificate",
            reason: e.to_string(),
        })
    }
}

impl rcgen::PublicKeyData for P384Key {
    fn der_bytes(&self) -> &[u8] {
        self.public_point()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P384_SHA384
    }
}

impl rcgen::SigningKey for P384Key {
    /// An X.509 signature: ECDSA P-384 with SHA-384, ASN.1 DER (the key's own signer writes
    /// COSE's fixed r ‖ s, so a DER signer is made from the same PKCS#8 for the call).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let signer =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_ASN1_SIGNING, &self.pkcs8)
                .map_err(|_| rcgen::Error::RemoteKeyError)?;
        signer
            .sign(&aws_lc_rs::rand::SystemRandom::new(), message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

/// Checks that `key` is the private key of the certificate `cert_der`.
fn key_matches_cert(key: &P384Key, cert_der: &[u8]) -> Result<bool, IdentityError> {
    let cert = parse_cert(cert_der)?;
    Ok(cert.public_key().subject_public_key.data.as_ref() == key.public_point())
}

pub(crate) fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), IdentityError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                IdentityError::Exists(path.to_path_buf())
            } else {
                IdentityError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|source| IdentityError::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn read_text(path: &Path) -> Result<Zeroizing<String>, IdentityError> {
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|source| IdentityError::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn refuse_existing(paths: &[&Path]) -> Result<(), IdentityError> {
    match paths.iter().find(|p| p.exists()) {
        Some(p) => Err(IdentityError::Exists(p.to_path_buf())),
        None => Ok(()),
    }
}

/// A member's signing identity: a P-384 key and its self-signed certificate (CN = the name).
#[derive(Debug)]
pub struct MemberIdentity {
    name: String,
    cert_der: Vec<u8>,
    key: P384Key,
}

impl MemberIdentity {
    /// Generates a key and a self-signed certificate with `CN=name`.
    ///
    /// # Errors
    /// [`IdentityError::Generate`].
    pub fn generate(name: &str) -> Result<Self, IdentityError> {
        let key = P384Key::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| {
            IdentityError::Generate {
                what: "a certificate",
                reason: e.to_string(),
            }
        })?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params
            .self_signed(&key)
            .map_err(|e| IdentityError::Generate {
                what: "a certificate",
                reason: e.to_string(),
            })?;
        Ok(Self {
            name: name.to_string(),
            cert_der: cert.der().to_vec(),
            key,
        })
    }

    /// The file names for `name` in `dir`: (`NAME_privk.pem`, `NAME_cert.pem`).
    pub fn file_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        (
            dir.join(format!("{name}_privk.pem")),
            dir.join(format!("{name}_cert.pem")),
        )
    }

    /// Writes `NAME_privk.pem` (0600) and `NAME_cert.pem` (0644) into `dir`; refuses to overwrite.
    ///
    /// # Errors
    /// [`IdentityError::Exists`] or [`IdentityError::Io`].
    pub fn write_pems(&self, dir: &Path) -> Result<(PathBuf, PathBuf), IdentityError> {
        let (key_path, cert_path) = Self::file_paths(dir, &self.name);
        refuse_existing(&[&key_path, &cert_path])?;
        write_new_file(&key_path, self.key.to_pem().as_bytes(), 0o600)?;
        write_new_file(&cert_path, self.cert_pem().as_bytes(), 0o644)?;
        Ok((key_path, cert_path))
    }

    /// Loads a certificate and its private key, checking that they belong together.
    ///
    /// # Errors
    /// [`IdentityError::Io`], [`IdentityError::BadPem`] or
    /// [`IdentityError::KeyCertificateMismatch`].
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, IdentityError> {
        let cert_text = read_text(cert_path)?;
        let key_text = read_text(key_path)?;
        let bad = |path: &Path, reason: String| IdentityError::BadPem {
            path: path.into(),
            reason,
        };
        let cert_der = cert_der_from_pem(&cert_text).map_err(|r| bad(cert_path, r))?;
        let key = P384Key::from_pem(&key_text).map_err(|r| bad(key_path, r))?;
        if !key_matches_cert(&key, &cert_der).map_err(|e| bad(cert_path, e.to_string()))? {
            return Err(IdentityError::KeyCertificateMismatch {
                key: key_path.into(),
                cert: cert_path.into(),
            });
        }
        let name = parse_cert(&cert_der)?
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok(Self {
            name,
            cert_der,
            key,
        })
    }

    /// The certificate's common name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The member id (hex SHA-256 of the DER certificate).
    pub fn member_id(&self) -> String {
        member_id(&self.cert_der)
    }

    /// The DER certificate.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The PEM certificate.
    pub fn cert_pem(&self) -> String {
        cert_pem_from_der(&self.cert_der)
    }

    /// The private key.
    pub fn key(&self) -> &P384Key {
        &self.key
    }

    /// Signs a governance message as this member (tagged COSE_Sign1, ES384, kid = member id).
    ///
    /// # Errors
    /// As [`cose::sign`].
    pub fn sign(&self, message: &GovernanceMessage<'_>) -> Result<Vec<u8>, CoseError> {
        cose::sign(self.key.signing_key(), &self.member_id(), message)
    }
}

/// A member's RSA encryption key pair (CCF's recovery-share encryption key; `--gen-enc-key`).
pub struct EncryptionKeyPair {
    private_pkcs8: Zeroizing<Vec<u8>>,
    public_spki: Vec<u8>,
}

impl std::fmt::Debug for EncryptionKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptionKeyPair(..)")
    }
}

impl EncryptionKeyPair {
    /// Generates an RSA-2048 key pair with aws-lc-rs (CCF's keygenerator default is 2048 bits).
    ///
    /// # Errors
    /// [`IdentityError::Generate`].
    pub fn generate() -> Result<Self, IdentityError> {
        let err = |e: aws_lc_rs::error::Unspecified| IdentityError::Generate {
            what: "an RSA-2048 key",
            reason: e.to_string(),
        };
        let key =
            aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(err)?;
        let private: Pkcs8V1Der<'static> = key.as_der().map_err(err)?;
        let public: PublicKeyX509Der<'static> = key.public_key().as_der().map_err(err)?;
        Ok(Self {
            private_pkcs8: Zeroizing::new(private.as_ref().to_vec()),
            public_spki: public.as_ref().to_vec(),
        })
    }

    /// The file names for `name` in `dir`: (`NAME_enc_privk.pem`, `NAME_enc_pubk.pem`).
    pub fn file_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        (
            dir.join(format!("{name}_enc_privk.pem")),
            dir.join(format!("{name}_enc_pubk.pem")),
        )
    }

    /// PEM (`PUBLIC KEY`, SPKI) of the public key, as `publicEncryptionKey` carries it.
    pub fn public_pem(&self) -> String {
        pem::encode(&pem::Pem::new("PUBLIC KEY", self.public_spki.clone()))
    }

    /// Writes `NAME_enc_privk.pem` (0600) and `NAME_enc_pubk.pem` (0644); refuses to overwrite.
    ///
    /// # Errors
    /// [`IdentityError::Exists`] or [`IdentityError::Io`].
    pub fn write_pems(&self, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), IdentityError> {
        let (private_path, public_path) = Self::file_paths(dir, name);
        refuse_existing(&[&private_path, &public_path])?;
        let private_pem = private_key_pem(&self.private_pkcs8);
        write_new_file(&private_path, private_pem.as_bytes(), 0o600)?;
        write_new_file(&public_path, self.public_pem().as_bytes(), 0o644)?;
        Ok((private_path, public_path))
    }

    /// The public key's modulus size in bits.
    pub fn modulus_bits(&self) -> usize {
        aws_lc_rs::rsa::PublicEncryptingKey::from_der(&self.public_spki)
            .map(|k| k.key_size_bits())
            .unwrap_or(0)
    }
}

/// A key and the certificate that carries its public half.
#[derive(Debug)]
pub struct CertifiedKey {
    /// The DER certificate.
    pub cert_der: Vec<u8>,
    /// The private key.
    pub key: P384Key,
}

impl CertifiedKey {
    /// The PEM certificate.
    pub fn cert_pem(&self) -> String {
        cert_pem_from_der(&self.cert_der)
    }
}

/// The service identity: the self-signed "service" CA (what clients pin) and the "node"
/// certificate it issued (TLS server certificate, ledger signing key).
#[derive(Debug)]
pub struct ServiceIdentity {
    /// The service CA.
    pub service: CertifiedKey,
    /// The node, endorsed by the service CA.
    pub node: CertifiedKey,
}

/// File names of a service identity in its data directory.
pub const SERVICE_CERT_FILE: &str = "service_cert.pem";
/// The service CA's private key.
pub const SERVICE_KEY_FILE: &str = "service_privk.pem";
/// The node certificate.
pub const NODE_CERT_FILE: &str = "node_cert.pem";
/// The node's private key.
pub const NODE_KEY_FILE: &str = "node_privk.pem";

impl ServiceIdentity {
    /// Generates the service CA (`CN=service`, CA) and a node certificate (`CN=node`, SAN
    /// IP 127.0.0.1 and DNS localhost, server and client auth) signed by it.
    ///
    /// # Errors
    /// [`IdentityError::Generate`].
    pub fn generate() -> Result<Self, IdentityError> {
        let gen_err = |e: rcgen::Error| IdentityError::Generate {
            what: "the service certificates",
            reason: e.to_string(),
        };
        let service_key = P384Key::generate()?;
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
        ca.distinguished_name = rcgen::DistinguishedName::new();
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "service");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let service_cert = ca.self_signed(&service_key).map_err(gen_err)?;
        let issuer = rcgen::Issuer::new(ca, &service_key);

        let node_key = P384Key::generate()?;
        let mut node =
            rcgen::CertificateParams::new(vec!["localhost".to_string()]).map_err(gen_err)?;
        node.subject_alt_names
            .push(rcgen::SanType::IpAddress(std::net::IpAddr::from([
                127, 0, 0, 1,
            ])));
        node.distinguished_name = rcgen::DistinguishedName::new();
        node.distinguished_name
            .push(rcgen::DnType::CommonName, "node");
        node.is_ca = rcgen::IsCa::ExplicitNoCa;
        node.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        node.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        node.use_authority_key_identifier_extension = true;
        let node_cert = node.signed_by(&node_key, &issuer).map_err(gen_err)?;
        Ok(Self {
            service: CertifiedKey {
                cert_der: service_cert.der().to_vec(),
                key: service_key,
            },
            node: CertifiedKey {
                cert_der: node_cert.der().to_vec(),
                key: node_key,
            },
        })
    }

    /// Writes the four PEM files into `dir` (keys 0600); refuses to overwrite any.
    ///
    /// # Errors
    /// [`IdentityError::Exists`] or [`IdentityError::Io`].
    pub fn write_to_dir(&self, dir: &Path) -> Result<(), IdentityError> {
        let paths = [
            SERVICE_CERT_FILE,
            SERVICE_KEY_FILE,
            NODE_CERT_FILE,
            NODE_KEY_FILE,
        ]
        .map(|f| dir.join(f));
        refuse_existing(&paths.iter().map(PathBuf::as_path).collect::<Vec<_>>())?;
        write_new_file(&paths[1], self.service.key.to_pem().as_bytes(), 0o600)?;
        write_new_file(&paths[3], self.node.key.to_pem().as_bytes(), 0o600)?;
        write_new_file(&paths[2], self.node.cert_pem().as_bytes(), 0o644)?;
        write_new_file(&paths[0], self.service.cert_pem().as_bytes(), 0o644)?;
        Ok(())
    }

    /// Reads the four PEM files from `dir` and checks that each key matches its certificate and
    /// that the service certificate endorses the node certificate.
    ///
    /// # Errors
    /// Any [`IdentityError`] naming the file at fault.
    pub fn load_from_dir(dir: &Path) -> Result<Self, IdentityError> {
        let load = |cert_file: &str, key_file: &str| -> Result<CertifiedKey, IdentityError> {
            let (cert_path, key_path) = (dir.join(cert_file), dir.join(key_file));
            let bad = |path: &Path, reason: String| IdentityError::BadPem {
                path: path.into(),
                reason,
            };
            let cert_der =
                cert_der_from_pem(&read_text(&cert_path)?).map_err(|r| bad(&cert_path, r))?;
            let key = P384Key::from_pem(&read_text(&key_path)?).map_err(|r| bad(&key_path, r))?;
            if !key_matches_cert(&key, &cert_der).map_err(|e| bad(&cert_path, e.to_string()))? {
                return Err(IdentityError::KeyCertificateMismatch {
                    key: key_path,
                    cert: cert_path,
                });
            }
            Ok(CertifiedKey { cert_der, key })
        };
        let service = load(SERVICE_CERT_FILE, SERVICE_KEY_FILE)?;
        let node = load(NODE_CERT_FILE, NODE_KEY_FILE)?;
        verify_endorsement(&node.cert_der, &service.cert_der)?;
        Ok(Self { service, node })
    }

    /// Whether the identity files exist in `dir` (the service certificate is written last).
    pub fn exists_in(dir: &Path) -> bool {
        dir.join(SERVICE_CERT_FILE).exists()
    }

    /// The node key as rcgen/rustls DER (PKCS#8), for building a TLS server config.
    pub fn node_key_pkcs8(&self) -> &[u8] {
        self.node.key.pkcs8_der()
    }

    #[cfg(test)]
    fn rcgen_node_key(&self) -> rcgen::KeyPair {
        self.node.key.rcgen_key().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cose::GovMessageType;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn member_id_is_sha256_of_der() {
        let m = MemberIdentity::generate("alice").unwrap();
        let id = m.member_id();
        assert_eq!(id.len(), 64);
        assert!(
            id.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        let expected = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, m.cert_der());
        assert_eq!(from_hex(&id).unwrap(), expected.as_ref());
        assert_eq!(m.name(), "alice");
    }

    #[test]
    fn hex_round_trips_and_rejects_junk() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(from_hex("00ABff").unwrap(), vec![0, 0xab, 0xff]);
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
    }

    #[test]
    fn write_load_sign_verify() {
        let dir = tempfile::tempdir().unwrap();
        let m = MemberIdentity::generate("bob").unwrap();
        let (key_path, cert_path) = m.write_pems(dir.path()).unwrap();
        assert_eq!(key_path.file_name().unwrap(), "bob_privk.pem");
        assert_eq!(cert_path.file_name().unwrap(), "bob_cert.pem");
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            m.write_pems(dir.path()),
            Err(IdentityError::Exists(_))
        ));

        let loaded = MemberIdentity::load(&cert_path, &key_path).unwrap();
        assert_eq!(loaded.member_id(), m.member_id());
        assert_eq!(loaded.name(), "bob");
        let body = loaded
            .sign(&GovernanceMessage {
                msg_type: GovMessageType::Proposal,
                created_at: 1,
                proposal_id: None,
                payload: b"{}",
            })
            .unwrap();
        let env = cose::parse(&body).unwrap();
        assert_eq!(env.kid, m.member_id());
        env.verify_signature(m.cert_der()).unwrap();
    }

    #[test]
    fn a_key_that_does_not_match_its_certificate_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let a = MemberIdentity::generate("a").unwrap();
        let b = MemberIdentity::generate("b").unwrap();
        let (a_key, _) = a.write_pems(dir.path()).unwrap();
        let (_, b_cert) = b.write_pems(dir.path()).unwrap();
        let err = MemberIdentity::load(&b_cert, &a_key).unwrap_err();
        assert!(matches!(err, IdentityError::KeyCertificateMismatch { .. }));
        let text = err.to_string();
        assert!(
            text.contains("a_privk.pem") && text.contains("b_cert.pem"),
            "{text}"
        );
        // A certificate file given as the key is a clear error too.
        assert!(matches!(
            MemberIdentity::load(&b_cert, &b_cert),
            Err(IdentityError::BadPem { .. })
        ));
    }

    #[test]
    fn sec1_keys_from_openssl_load() {
        let m = MemberIdentity::generate("c").unwrap();
        // Re-encode the key as SEC1 ("EC PRIVATE KEY"), as `openssl ecparam -genkey` writes it.
        let rc = m.key.rcgen_key().unwrap();
        let sec1 = sec1_from_pkcs8(&rc.serialize_der());
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("c_privk.pem");
        std::fs::write(
            &key_path,
            pem::encode(&pem::Pem::new("EC PRIVATE KEY", sec1)),
        )
        .unwrap();
        let cert_path = dir.path().join("c_cert.pem");
        std::fs::write(&cert_path, m.cert_pem()).unwrap();
        assert_eq!(
            MemberIdentity::load(&cert_path, &key_path)
                .unwrap()
                .member_id(),
            m.member_id()
        );
    }

    /// Extracts the SEC1 ECPrivateKey from a PKCS#8 PrivateKeyInfo (test helper: the OCTET
    /// STRING that is the PrivateKeyInfo's third element).
    fn sec1_from_pkcs8(pkcs8: &[u8]) -> Vec<u8> {
        use x509_parser::der_parser::der::parse_der;
        let (_, obj) = parse_der(pkcs8).unwrap();
        let seq = obj.as_sequence().unwrap();
        seq[2].as_slice().unwrap().to_vec()
    }

    #[test]
    fn encryption_key_pair() {
        let dir = tempfile::tempdir().unwrap();
        let k = EncryptionKeyPair::generate().unwrap();
        assert!(k.modulus_bits() >= 2048);
        let (private, public) = k.write_pems(dir.path(), "alice").unwrap();
        assert_eq!(private.file_name().unwrap(), "alice_enc_privk.pem");
        assert_eq!(public.file_name().unwrap(), "alice_enc_pubk.pem");
        let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(
            std::fs::read_to_string(&public)
                .unwrap()
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
        assert!(matches!(
            k.write_pems(dir.path(), "alice"),
            Err(IdentityError::Exists(_))
        ));
    }

    #[test]
    fn service_identity_endorses_its_node() {
        let s = ServiceIdentity::generate().unwrap();
        verify_endorsement(&s.node.cert_der, &s.service.cert_der).unwrap();
        // The node does not endorse the service, and another service does not endorse this node.
        assert!(matches!(
            verify_endorsement(&s.service.cert_der, &s.node.cert_der),
            Err(IdentityError::NotEndorsed { .. })
        ));
        let other = ServiceIdentity::generate().unwrap();
        assert!(verify_endorsement(&s.node.cert_der, &other.service.cert_der).is_err());

        let node = parse_cert(&s.node.cert_der).unwrap();
        let sans = node
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .clone();
        let text = format!("{sans:?}");
        assert!(text.contains("localhost") && text.contains("127"), "{text}");
        let service = parse_cert(&s.service.cert_der).unwrap();
        assert!(service.is_ca());
        assert_eq!(node_id(&s.node.cert_der).unwrap().len(), 64);

        let dir = tempfile::tempdir().unwrap();
        s.write_to_dir(dir.path()).unwrap();
        assert!(ServiceIdentity::exists_in(dir.path()));
        let loaded = ServiceIdentity::load_from_dir(dir.path()).unwrap();
        assert_eq!(loaded.node.cert_der, s.node.cert_der);
        assert!(matches!(
            s.write_to_dir(dir.path()),
            Err(IdentityError::Exists(_))
        ));
        let _ = s.rcgen_node_key();
        // A swapped node key is refused with the file names.
        std::fs::remove_file(dir.path().join(NODE_KEY_FILE)).unwrap();
        std::fs::write(
            dir.path().join(NODE_KEY_FILE),
            other.node.key.to_pem().as_bytes(),
        )
        .unwrap();
        assert!(matches!(
            ServiceIdentity::load_from_dir(dir.path()),
            Err(IdentityError::KeyCertificateMismatch { .. })
        ));
    }
}
