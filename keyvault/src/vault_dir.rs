//! The vault's data directory (`DIR`) and its certificate authority.
//!
//! `DIR/ca.pem` is the vault's self-signed root (ECDSA P-256) that every client pins; it issues
//! the TLS certificate (SAN 127.0.0.1 and localhost), the RSA release-signing certificate whose
//! chain goes into each release JWS (`x5c`), and the identity certificates of registered clients.
//! `DIR/vault.json` holds the tenant id, `DIR/clients.json` the registered clients.
//!
//! Private keys (`*-key.pem`) are written with mode 0600 and are in clear at rest: the local
//! vault's protection of key material is the file mode, where Azure's is an HSM.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::durable_file::{PRIVATE_MODE, PUBLIC_MODE, create_private_dir, write_atomic};

/// File name of the vault's root certificate.
pub const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca-key.pem";
const TLS_CERT_FILE: &str = "tls.pem";
const TLS_KEY_FILE: &str = "tls-key.pem";
const SIGNING_CERT_FILE: &str = "release-signing.pem";
const SIGNING_KEY_FILE: &str = "release-signing-key.pem";
const VAULT_FILE: &str = "vault.json";
const CLIENTS_FILE: &str = "clients.json";

/// How long issued certificates are valid.
const CERT_VALIDITY_DAYS: i64 = 3650;

/// Errors reading or initialising the data directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultDirError {
    /// A file of the directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file of the directory holds something unreadable.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A certificate or key could not be generated.
    #[error("certificate generation failed: {0}")]
    Certificate(String),
    /// A client of that name is already registered.
    #[error("a client named {0:?} is already registered in this vault")]
    ClientExists(String),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> VaultDirError + '_ {
    move |source| VaultDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn cert_error(error: impl std::fmt::Display) -> VaultDirError {
    VaultDirError::Certificate(error.to_string())
}

/// A PEM certificate and its PKCS#8 PEM private key (which zeroizes on drop).
pub struct IssuedCertificate {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// The private key, PKCS#8 PEM.
    pub private_key_pem: Zeroizing<String>,
}

impl std::fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("certificate_pem", &self.certificate_pem)
            .field("private_key_pem", &"<redacted>")
            .finish()
    }
}

/// A client registered in the vault (`DIR/clients.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegisteredClient {
    /// The name given at `identity create`.
    pub name: String,
    /// The client (application) id, the certificate's CN.
    pub client_id: String,
    /// The tenant id.
    pub tenant_id: String,
    /// Hex SHA-256 of the client's certificate DER.
    pub certificate_sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ClientsFile {
    clients: Vec<RegisteredClient>,
}

#[derive(Debug, Serialize, Deserialize)]
struct VaultFile {
    tenant_id: String,
}

/// The opened data directory.
#[derive(Debug, Clone)]
pub struct VaultDir {
    root: PathBuf,
    tenant_id: String,
}

/// A random UUID (version 4) in its usual text form.
pub fn random_uuid() -> String {
    let mut bytes = [0u8; 16];
    // Randomness failure is not recoverable here; aws-lc's RNG does not fail on Linux.
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn validity(params: &mut rcgen::CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(CERT_VALIDITY_DAYS);
}

/// The CA's parameters (its distinguished name, constraints and usages; validity set at creation).
fn ca_params() -> Result<rcgen::CertificateParams, VaultDirError> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "encfs local key vault CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

impl VaultDir {
    /// Opens `root`, creating it with a new CA, TLS and release-signing certificate and tenant id
    /// if it holds no vault yet.
    pub fn open_or_init(root: &Path) -> Result<Self, VaultDirError> {
        create_private_dir(root).map_err(io_error(root))?;
        let ca_path = root.join(CA_CERT_FILE);
        if !ca_path.exists() {
            Self::init(root)?;
        }
        let vault_path = root.join(VAULT_FILE);
        let text = fs::read(&vault_path).map_err(io_error(&vault_path))?;
        let vault: VaultFile =
            serde_json::from_slice(&text).map_err(|e| VaultDirError::Corrupt {
                path: vault_path.clone(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            root: root.to_path_buf(),
            tenant_id: vault.tenant_id,
        })
    }

    fn init(root: &Path) -> Result<(), VaultDirError> {
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(cert_error)?;
        let mut params = ca_params()?;
        validity(&mut params);
        let ca_cert = params.self_signed(&ca_key).map_err(cert_error)?;
        let write = |name: &str, bytes: &[u8], mode: u32| {
            let path = root.join(name);
            write_atomic(&path, bytes, mode).map_err(io_error(&path))
        };
        // Keys first, the CA certificate last: its presence marks an initialised directory.
        write(CA_KEY_FILE, Zeroizing::new(ca_key.serialize_pem()).as_bytes(), PRIVATE_MODE)?;
        let vault = VaultFile {
            tenant_id: random_uuid(),
        };
        write(
            VAULT_FILE,
            &serde_json::to_vec_pretty(&vault).expect("serialisable"),
            PUBLIC_MODE,
        )?;
        let issuer = rcgen::Issuer::new(params, ca_key);

        let tls_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(cert_error)?;
        let mut tls_params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .map_err(cert_error)?;
        tls_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "encfs local key vault");
        tls_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        validity(&mut tls_params);
        let tls_cert = tls_params.signed_by(&tls_key, &issuer).map_err(cert_error)?;
        write(TLS_KEY_FILE, Zeroizing::new(tls_key.serialize_pem()).as_bytes(), PRIVATE_MODE)?;
        write(TLS_CERT_FILE, tls_cert.pem().as_bytes(), PUBLIC_MODE)?;

        let signing = encfs_crypto::kek::KekPrivateKey::generate(encfs_crypto::kek::KekSize::Rsa2048)
            .map_err(cert_error)?;
        let signing_der = signing.to_pkcs8_der().map_err(cert_error)?;
        let signing_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &rustls::pki_types::PrivatePkcs8KeyDer::from(signing_der.as_slice()),
            &rcgen::PKCS_RSA_SHA256,
        )
        .map_err(cert_error)?;
        let mut signing_params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).map_err(cert_error)?;
        signing_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "encfs local key vault release signing");
        signing_params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        validity(&mut signing_params);
        let signing_cert = signing_params
            .signed_by(&signing_pair, &issuer)
            .map_err(cert_error)?;
        write(
            SIGNING_KEY_FILE,
            signing.to_pem().map_err(cert_error)?.as_bytes(),
            PRIVATE_MODE,
        )?;
        write(SIGNING_CERT_FILE, signing_cert.pem().as_bytes(), PUBLIC_MODE)?;
        write(CA_CERT_FILE, ca_cert.pem().as_bytes(), PUBLIC_MODE)
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The vault's tenant id.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    fn read_text(&self, name: &str) -> Result<String, VaultDirError> {
        let path = self.root.join(name);
        fs::read_to_string(&path).map_err(io_error(&path))
    }

    /// The root certificate, PEM.
    pub fn ca_pem(&self) -> Result<String, VaultDirError> {
        self.read_text(CA_CERT_FILE)
    }

    /// The TLS certificate chain (leaf, then the CA) and key, PEM.
    pub fn tls_identity(&self) -> Result<(String, Zeroizing<String>), VaultDirError> {
        let chain = self.read_text(TLS_CERT_FILE)? + &self.ca_pem()?;
        Ok((chain, Zeroizing::new(self.read_text(TLS_KEY_FILE)?)))
    }

    /// The release-signing certificate (PEM) and its RSA private key (PKCS#8 PEM).
    pub fn release_signing(&self) -> Result<(String, Zeroizing<String>), VaultDirError> {
        Ok((
            self.read_text(SIGNING_CERT_FILE)?,
            Zeroizing::new(self.read_text(SIGNING_KEY_FILE)?),
        ))
    }

    fn issuer(&self) -> Result<rcgen::Issuer<'static, rcgen::KeyPair>, VaultDirError> {
        let key_pem = Zeroizing::new(self.read_text(CA_KEY_FILE)?);
        let key = rcgen::KeyPair::from_pem(&key_pem).map_err(|e| VaultDirError::Corrupt {
            path: self.root.join(CA_KEY_FILE),
            reason: e.to_string(),
        })?;
        // The issuer is named by the CA's distinguished name, which `ca_params` reproduces.
        Ok(rcgen::Issuer::new(ca_params()?, key))
    }

    /// Issues an identity certificate (ECDSA P-256, CN = `client_id`) signed by the CA.
    pub fn issue_client_certificate(
        &self,
        client_id: &str,
    ) -> Result<IssuedCertificate, VaultDirError> {
        let issuer = self.issuer()?;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(cert_error)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, client_id);
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut params);
        let cert = params.signed_by(&key, &issuer).map_err(cert_error)?;
        Ok(IssuedCertificate {
            certificate_pem: cert.pem(),
            private_key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }

    /// The registered clients.
    pub fn clients(&self) -> Result<Vec<RegisteredClient>, VaultDirError> {
        let path = self.root.join(CLIENTS_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<ClientsFile>(&bytes)
                .map(|file| file.clients)
                .map_err(|e| VaultDirError::Corrupt {
                    path,
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(VaultDirError::Io { path, source }),
        }
    }

    /// Adds a client to `DIR/clients.json`; a name already there is refused.
    pub fn register_client(&self, client: RegisteredClient) -> Result<(), VaultDirError> {
        let mut clients = self.clients()?;
        if clients.iter().any(|c| c.name == client.name) {
            return Err(VaultDirError::ClientExists(client.name));
        }
        clients.push(client);
        let path = self.root.join(CLIENTS_FILE);
        let bytes = serde_json::to_vec_pretty(&ClientsFile { clients }).expect("serialisable");
        write_atomic(&path, &bytes, PUBLIC_MODE).map_err(io_error(&path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initialises_once_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let first = VaultDir::open_or_init(dir.path()).unwrap();
        let ca = first.ca_pem().unwrap();
        let again = VaultDir::open_or_init(dir.path()).unwrap();
        assert_eq!(again.ca_pem().unwrap(), ca);
        assert_eq!(again.tenant_id(), first.tenant_id());
        let (chain, _key) = again.tls_identity().unwrap();
        assert_eq!(pem::parse_many(&chain).unwrap().len(), 2);
    }

    #[test]
    fn uuids_are_version_4() {
        let id = random_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(id, random_uuid());
    }
}
