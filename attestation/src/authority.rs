//! The **insecure virtual attestation authority**: on a machine without SEV-SNP it plays both the
//! AMD secure processor (it signs SNP-shaped reports with a "virtual VCEK") and Microsoft Azure
//! Attestation (it verifies those reports and signs MAA-shaped tokens). Like the reference's
//! "insecure-virtual" mode it proves the *flow*, not the hardware: anyone who can reach it gets a
//! report for any security policy they declare. Every party that uses it pins its root,
//! `DIR/authority-ca.pem`, and nothing else.
//!
//! Keys and certificates live in `DIR`, created at first start and kept after (private keys
//! 0600): the root (ECDSA P-384, self-signed) issues the TLS certificate (SAN 127.0.0.1 and
//! localhost), the virtual VCEK (P-384, signs reports) and the token-signing certificate
//! (RSA-2048, RS256 tokens, published as a JWKS with `x5c`).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest::{SHA256, SHA384, SHA512, digest};
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD as BASE64URL};
use serde_json::{Map, Value, json};
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

use crate::provider::{Evidence, REPORT_DATA_LEN};
use crate::snp::{POLICY_DEBUG, POLICY_RESERVED_ONE, POLICY_SMT, SnpReport, TcbVersion, hex};
use crate::verify::{TrustedRoots, VerifiedReport, VerifyError, verify_report};

/// The root certificate every party pins.
pub const AUTHORITY_CA_FILE: &str = "authority-ca.pem";
const AUTHORITY_CA_KEY_FILE: &str = "authority-ca.key";
/// The TLS certificate chain (leaf, then the root).
pub const TLS_CERT_FILE: &str = "tls.pem";
const TLS_KEY_FILE: &str = "tls.key";
/// The virtual VCEK certificate.
pub const VCEK_CERT_FILE: &str = "vcek.pem";
const VCEK_KEY_FILE: &str = "vcek.key";
/// The token-signing certificate.
pub const TOKEN_CERT_FILE: &str = "token-signing.pem";
const TOKEN_KEY_FILE: &str = "token-signing.key";

/// How long a token is valid (MAA's default is 8 hours).
pub const TOKEN_LIFETIME_SECS: u64 = 8 * 3600;
/// The TCB the virtual reports claim (a Milan-like boot loader 3, TEE 0, SNP 8, microcode 115).
pub const VIRTUAL_TCB: TcbVersion = TcbVersion(0x7308_0000_0000_0003);
/// The guest policy of the virtual reports (ABI 0.31, SMT allowed, bit 17), plus bit 19 when
/// debuggable.
pub const VIRTUAL_POLICY: u64 = 0x1f | POLICY_SMT | POLICY_RESERVED_ONE;

/// Why the authority cannot start or answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityError {
    /// A file in the data directory cannot be read or written.
    #[error("attestation authority file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A key or certificate in the data directory is unusable.
    #[error("attestation authority key or certificate {path}: {reason}")]
    Material {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Generating keys or certificates failed.
    #[error("cannot generate {what}: {reason}")]
    Generate {
        /// What.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A report to be attested does not verify.
    #[error("the attestation report does not verify: {0}")]
    Report(#[from] VerifyError),
    /// A request is malformed (names the field).
    #[error("invalid attestation request: {0}")]
    Request(String),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(String),
}

/// The authority's keys and certificates (see the module comment).
pub struct VirtualAuthority {
    dir: PathBuf,
    ca_pem: String,
    tls_chain_pem: String,
    tls_key_pem: Zeroizing<String>,
    vcek_pem: String,
    vcek_key: EcdsaKeyPair,
    token_cert_pem: String,
    token_cert_der: Vec<u8>,
    token_key: jsonwebtoken::EncodingKey,
    token_jwk: Value,
    kid: String,
    roots: TrustedRoots,
}

impl std::fmt::Debug for VirtualAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualAuthority")
            .field("dir", &self.dir)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<String, AuthorityError> {
    std::fs::read_to_string(path).map_err(|source| AuthorityError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes a new file; private ones get mode 0600 from the start.
fn write_new(path: &Path, contents: &str, private: bool) -> Result<(), AuthorityError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| AuthorityError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    if private {
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

fn generate_error(what: &'static str) -> impl Fn(rcgen::Error) -> AuthorityError {
    move |e| AuthorityError::Generate {
        what,
        reason: e.to_string(),
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl VirtualAuthority {
    /// Opens the authority in `dir`, creating its keys and certificates on first start.
    ///
    /// # Errors
    /// [`AuthorityError`] naming the file.
    pub fn open(dir: &Path) -> Result<Self, AuthorityError> {
        std::fs::create_dir_all(dir).map_err(|source| AuthorityError::Io {
            path: dir.to_owned(),
            source,
        })?;
        if !dir.join(AUTHORITY_CA_FILE).exists() {
            Self::generate(dir)?;
        }
        Self::load(dir)
    }

    fn generate(dir: &Path) -> Result<(), AuthorityError> {
        use rcgen::{
            BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
            IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256, SanType,
        };
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)
            .map_err(generate_error("the authority root key"))?;
        let mut ca = CertificateParams::new(Vec::<String>::new())
            .map_err(generate_error("the authority root"))?;
        ca.distinguished_name = DistinguishedName::new();
        ca.distinguished_name.push(
            DnType::CommonName,
            "encfs virtual attestation authority (INSECURE)",
        );
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca
            .self_signed(&ca_key)
            .map_err(generate_error("the authority root"))?;
        let issuer = Issuer::new(ca, &ca_key);

        let leaf = |cn: &str, sans: Vec<String>| -> Result<CertificateParams, AuthorityError> {
            let mut params =
                CertificateParams::new(sans).map_err(generate_error("a leaf certificate"))?;
            params.distinguished_name = DistinguishedName::new();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.use_authority_key_identifier_extension = true;
            Ok(params)
        };

        let tls_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)
            .map_err(generate_error("the TLS key"))?;
        let mut tls = leaf("encfs virtual attestation authority TLS", vec!["localhost".into()])?;
        tls.subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        tls.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let tls_cert = tls
            .signed_by(&tls_key, &issuer)
            .map_err(generate_error("the TLS certificate"))?;

        let vcek_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)
            .map_err(generate_error("the virtual VCEK key"))?;
        let vcek = leaf("SEV-VCEK (encfs virtual, INSECURE)", Vec::new())?;
        let vcek_cert = vcek
            .signed_by(&vcek_key, &issuer)
            .map_err(generate_error("the virtual VCEK certificate"))?;

        let rsa = encfs_crypto::kek::KekPrivateKey::generate(encfs_crypto::kek::KekSize::Rsa2048)
            .map_err(|e| AuthorityError::Generate {
                what: "the token-signing key",
                reason: e.to_string(),
            })?;
        let rsa_pem = rsa.to_pem().map_err(|e| AuthorityError::Generate {
            what: "the token-signing key",
            reason: e.to_string(),
        })?;
        let token_key = KeyPair::from_pkcs8_pem_and_sign_algo(&rsa_pem, &PKCS_RSA_SHA256)
            .map_err(generate_error("the token-signing key"))?;
        let token = leaf("encfs virtual attestation token signing", Vec::new())?;
        let token_cert = token
            .signed_by(&token_key, &issuer)
            .map_err(generate_error("the token-signing certificate"))?;

        // Keys first, the root certificate last: its presence marks a complete directory.
        write_new(&dir.join(AUTHORITY_CA_KEY_FILE), &ca_key.serialize_pem(), true)?;
        write_new(&dir.join(TLS_KEY_FILE), &tls_key.serialize_pem(), true)?;
        write_new(&dir.join(VCEK_KEY_FILE), &vcek_key.serialize_pem(), true)?;
        write_new(&dir.join(TOKEN_KEY_FILE), &rsa_pem, true)?;
        write_new(
            &dir.join(TLS_CERT_FILE),
            &format!("{}{}", tls_cert.pem(), ca_cert.pem()),
            false,
        )?;
        write_new(&dir.join(VCEK_CERT_FILE), &vcek_cert.pem(), false)?;
        write_new(&dir.join(TOKEN_CERT_FILE), &token_cert.pem(), false)?;
        write_new(&dir.join(AUTHORITY_CA_FILE), &ca_cert.pem(), false)
    }

    fn load(dir: &Path) -> Result<Self, AuthorityError> {
        let material = |file: &str, reason: String| AuthorityError::Material {
            path: dir.join(file),
            reason,
        };
        let ca_pem = read(&dir.join(AUTHORITY_CA_FILE))?;
        let roots = TrustedRoots::from_pems([ca_pem.as_bytes()])
            .map_err(|e| material(AUTHORITY_CA_FILE, e.to_string()))?;
        let tls_chain_pem = read(&dir.join(TLS_CERT_FILE))?;
        let tls_key_pem = Zeroizing::new(read(&dir.join(TLS_KEY_FILE))?);
        let vcek_pem = read(&dir.join(VCEK_CERT_FILE))?;
        let vcek_key_pem = Zeroizing::new(read(&dir.join(VCEK_KEY_FILE))?);
        let vcek_der = pem::parse(vcek_key_pem.as_bytes())
            .map_err(|e| material(VCEK_KEY_FILE, e.to_string()))?;
        let vcek_key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, vcek_der.contents())
                .map_err(|e| material(VCEK_KEY_FILE, e.to_string()))?;
        let token_cert_pem = read(&dir.join(TOKEN_CERT_FILE))?;
        let token_cert_der = pem::parse(token_cert_pem.as_bytes())
            .map_err(|e| material(TOKEN_CERT_FILE, e.to_string()))?
            .into_contents();
        let token_key_pem = Zeroizing::new(read(&dir.join(TOKEN_KEY_FILE))?);
        let token_key = jsonwebtoken::EncodingKey::from_rsa_pem(token_key_pem.as_bytes())
            .map_err(|e| material(TOKEN_KEY_FILE, e.to_string()))?;
        let kid = BASE64URL.encode(digest(&SHA256, &token_cert_der));
        let ca_der = pem::parse(ca_pem.as_bytes())
            .map_err(|e| material(AUTHORITY_CA_FILE, e.to_string()))?
            .into_contents();
        let token_jwk = rsa_jwk(&token_cert_der, &ca_der, &kid)
            .map_err(|reason| material(TOKEN_CERT_FILE, reason))?;
        Ok(Self {
            dir: dir.to_owned(),
            ca_pem,
            tls_chain_pem,
            tls_key_pem,
            vcek_pem,
            vcek_key,
            token_cert_pem,
            token_cert_der,
            token_key,
            token_jwk,
            kid,
            roots,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The root certificate (PEM) every party pins.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The roots that verify this authority's reports: its root certificate.
    pub fn trusted_roots(&self) -> &TrustedRoots {
        &self.roots
    }

    /// The TLS certificate chain (PEM, leaf first).
    pub fn tls_chain_pem(&self) -> &str {
        &self.tls_chain_pem
    }

    /// The TLS private key (PEM).
    pub fn tls_key_pem(&self) -> &str {
        &self.tls_key_pem
    }

    /// The virtual VCEK certificate (PEM).
    pub fn vcek_pem(&self) -> &str {
        &self.vcek_pem
    }

    /// The token-signing certificate (PEM).
    pub fn token_cert_pem(&self) -> &str {
        &self.token_cert_pem
    }

    /// The token-signing key's id (`kid`): base64url SHA-256 of its certificate.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWKS the authority publishes at `/certs`.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.token_jwk.clone()] })
    }

    /// An SNP report for `report_data` whose `HOST_DATA` is SHA-256 of `security_policy`, with
    /// the debug bit as asked, signed by the virtual VCEK; endorsements = the VCEK then the root.
    ///
    /// # Errors
    /// [`AuthorityError::Sign`].
    pub fn report(
        &self,
        report_data: &[u8; REPORT_DATA_LEN],
        security_policy: &[u8],
        debuggable: bool,
    ) -> Result<Evidence, AuthorityError> {
        let mut report = SnpReport::template();
        report.version = 2;
        report.guest_svn = 1;
        report.policy = VIRTUAL_POLICY | if debuggable { POLICY_DEBUG } else { 0 };
        report.current_tcb = VIRTUAL_TCB;
        report.reported_tcb = VIRTUAL_TCB;
        report.committed_tcb = VIRTUAL_TCB;
        report.launch_tcb = VIRTUAL_TCB;
        report.platform_info = 1;
        report.report_data = *report_data;
        report
            .measurement
            .copy_from_slice(digest(&SHA384, b"encfs virtual SNP launch measurement").as_ref());
        report
            .host_data
            .copy_from_slice(digest(&SHA256, security_policy).as_ref());
        let chip = digest(&SHA512, self.vcek_key.public_key().as_ref());
        report.chip_id.copy_from_slice(chip.as_ref());
        report
            .report_id
            .copy_from_slice(&digest(&SHA256, report_data).as_ref()[..32]);
        let bytes = report.to_bytes();
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let signature = self
            .vcek_key
            .sign(&rng, &bytes[..crate::snp::SIGNED_LEN])
            .map_err(|e| AuthorityError::Sign(e.to_string()))?;
        let fixed: &[u8; 96] = signature
            .as_ref()
            .try_into()
            .map_err(|_| AuthorityError::Sign("P-384 signature is not 96 bytes".into()))?;
        report.set_signature_fixed(fixed);
        Ok(Evidence {
            report: report.to_bytes(),
            endorsements: format!("{}{}", self.vcek_pem, self.ca_pem).into_bytes(),
            uvm_endorsements: Vec::new(),
            endorsed_tcb: VIRTUAL_TCB.to_hex(),
        })
    }

    /// What MAA does for `attest/SevSnpVm`: verifies the report and its chain against this
    /// authority's root, checks that `report_data[0..32]` = SHA-256(`runtime_data`), and signs a
    /// token with the claims of [`maa_claims`] (`runtime_data` parsed as JSON into
    /// `x-ms-runtime`).
    ///
    /// # Errors
    /// [`AuthorityError::Report`] when the report does not verify; [`AuthorityError::Request`]
    /// when the report data does not bind the runtime data or it is not JSON.
    pub fn attest(
        &self,
        issuer: &str,
        report: &[u8],
        endorsements: &[u8],
        runtime_data: &[u8],
        nonce: Option<&str>,
    ) -> Result<String, AuthorityError> {
        let verified = verify_report(report, endorsements, &self.roots)?;
        if verified.report_data[..32] != *digest(&SHA256, runtime_data).as_ref() {
            return Err(AuthorityError::Request(
                "report_data[0..32] is not SHA-256 of runtimeData".into(),
            ));
        }
        let runtime: Value = serde_json::from_slice(runtime_data)
            .map_err(|e| AuthorityError::Request(format!("runtimeData is not JSON: {e}")))?;
        let now = unix_now();
        let mut claims = maa_claims(&verified);
        claims.insert("iss".into(), issuer.into());
        claims.insert("iat".into(), now.into());
        claims.insert("nbf".into(), now.into());
        claims.insert("exp".into(), (now + TOKEN_LIFETIME_SECS).into());
        claims.insert("jti".into(), hex(&verified.report.report_id).into());
        if let Some(nonce) = nonce {
            claims.insert("nonce".into(), nonce.into());
        }
        claims.insert("x-ms-runtime".into(), runtime);
        self.sign_token(issuer, &claims)
    }

    /// Signs any claims as a token of this authority (RS256, header `kid` and `jku` =
    /// `{issuer}/certs`). Tests use it for expired or otherwise odd tokens; [`Self::attest`]
    /// is the checked path.
    ///
    /// # Errors
    /// [`AuthorityError::Sign`].
    pub fn sign_token(
        &self,
        issuer: &str,
        claims: &Map<String, Value>,
    ) -> Result<String, AuthorityError> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        header.jku = Some(format!("{}/certs", issuer.trim_end_matches('/')));
        jsonwebtoken::encode(&header, claims, &self.token_key)
            .map_err(|e| AuthorityError::Sign(e.to_string()))
    }

    /// The token-signing certificate (DER).
    pub fn token_cert_der(&self) -> &[u8] {
        &self.token_cert_der
    }
}

/// The claims of an MAA `SevSnpVm` token that come from a verified report: the fixed
/// `x-ms-attestation-type: sevsnpvm`, `x-ms-compliance-status: azure-compliant-uvm`, `x-ms-ver`
/// "1.0", every `x-ms-sevsnpvm-*` claim CGS derives ([`SnpReport::claims`]) and MAA's TCB ones
/// (`-bootloader-svn`, `-tee-svn`, `-snpfw-svn`, `-microcode-svn`, `-migration-allowed`,
/// `-chipid`).
pub fn maa_claims(verified: &VerifiedReport) -> Map<String, Value> {
    let report = &verified.report;
    let mut claims: Map<String, Value> = verified
        .claims
        .iter()
        .filter(|(name, _)| name.starts_with("x-ms-sevsnpvm-"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let tcb = report.reported_tcb;
    claims.insert("x-ms-attestation-type".into(), "sevsnpvm".into());
    claims.insert(
        "x-ms-compliance-status".into(),
        "azure-compliant-uvm".into(),
    );
    claims.insert("x-ms-ver".into(), "1.0".into());
    claims.insert("x-ms-sevsnpvm-bootloader-svn".into(), tcb.bootloader().into());
    claims.insert("x-ms-sevsnpvm-tee-svn".into(), tcb.tee().into());
    claims.insert("x-ms-sevsnpvm-snpfw-svn".into(), tcb.snp().into());
    claims.insert("x-ms-sevsnpvm-microcode-svn".into(), tcb.microcode().into());
    claims.insert(
        "x-ms-sevsnpvm-migration-allowed".into(),
        (report.policy & crate::snp::POLICY_MIGRATE_MA != 0).into(),
    );
    claims.insert("x-ms-sevsnpvm-chipid".into(), hex(&report.chip_id).into());
    claims
}

/// The public JWK of an RSA certificate, with `x5c` = [the certificate, the root].
fn rsa_jwk(cert_der: &[u8], ca_der: &[u8], kid: &str) -> Result<Value, String> {
    let (_, cert) = X509Certificate::from_der(cert_der).map_err(|e| e.to_string())?;
    let parsed = cert.public_key().parsed().map_err(|e| e.to_string())?;
    let x509_parser::public_key::PublicKey::RSA(rsa) = parsed else {
        return Err("the token-signing key is not RSA".into());
    };
    let trim = |bytes: &[u8]| -> Vec<u8> {
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        bytes[start..].to_vec()
    };
    Ok(json!({
        "kty": "RSA",
        "use": "sig",
        "alg": "RS256",
        "kid": kid,
        "n": BASE64URL.encode(trim(rsa.modulus)),
        "e": BASE64URL.encode(trim(rsa.exponent)),
        "x5c": [BASE64.encode(cert_der), BASE64.encode(ca_der)],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_are_created_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = VirtualAuthority::open(dir.path()).unwrap();
        for key in [
            AUTHORITY_CA_KEY_FILE,
            TLS_KEY_FILE,
            VCEK_KEY_FILE,
            TOKEN_KEY_FILE,
        ] {
            let mode = std::fs::metadata(dir.path().join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        let again = VirtualAuthority::open(dir.path()).unwrap();
        assert_eq!(first.ca_pem(), again.ca_pem());
        assert_eq!(first.kid(), again.kid());
        assert!(format!("{first:?}").contains("VirtualAuthority"));
        assert!(!format!("{first:?}").contains("PRIVATE"));
    }

    #[test]
    fn a_virtual_report_verifies_against_the_root_with_its_policy_hash() {
        let dir = tempfile::tempdir().unwrap();
        let authority = VirtualAuthority::open(dir.path()).unwrap();
        let report_data = [7u8; 64];
        let evidence = authority.report(&report_data, b"allow all", false).unwrap();
        let verified = verify_report(
            &evidence.report,
            &evidence.endorsements,
            authority.trusted_roots(),
        )
        .unwrap();
        assert_eq!(verified.report_data, report_data);
        assert_eq!(
            verified.claims["x-ms-sevsnpvm-hostdata"],
            hex(digest(&SHA256, b"allow all").as_ref())
        );
        assert_eq!(verified.claims["x-ms-sevsnpvm-is-debuggable"], false);
        assert_eq!(evidence.endorsed_tcb, "0300000000000873");
        let debug = authority.report(&report_data, b"allow all", true).unwrap();
        let verified =
            verify_report(&debug.report, &debug.endorsements, authority.trusted_roots()).unwrap();
        assert_eq!(verified.claims["x-ms-sevsnpvm-is-debuggable"], true);

        // Another authority's root does not verify it.
        let other_dir = tempfile::tempdir().unwrap();
        let other = VirtualAuthority::open(other_dir.path()).unwrap();
        assert!(matches!(
            verify_report(&evidence.report, &evidence.endorsements, other.trusted_roots()),
            Err(VerifyError::UntrustedRoot { .. })
        ));
    }

    #[test]
    fn a_token_carries_the_maa_claims_and_binds_the_runtime_data() {
        let dir = tempfile::tempdir().unwrap();
        let authority = VirtualAuthority::open(dir.path()).unwrap();
        let runtime = br#"{"keys":[{"kty":"RSA","kid":"k","n":"AQAB","e":"AQAB"}]}"#;
        let mut report_data = [0u8; 64];
        report_data[..32].copy_from_slice(digest(&SHA256, runtime).as_ref());
        let evidence = authority.report(&report_data, b"policy", false).unwrap();
        let issuer = "https://127.0.0.1:1";
        let token = authority
            .attest(
                issuer,
                &evidence.report,
                &evidence.endorsements,
                runtime,
                Some("42"),
            )
            .unwrap();
        let claims =
            crate::maa::verify_token_with_jwks(&token, &authority.jwks(), issuer).unwrap();
        assert_eq!(claims["x-ms-attestation-type"], "sevsnpvm");
        assert_eq!(claims["x-ms-compliance-status"], "azure-compliant-uvm");
        assert_eq!(claims["nonce"], "42");
        assert_eq!(claims["x-ms-runtime"]["keys"][0]["kid"], "k");
        assert_eq!(
            claims["x-ms-sevsnpvm-hostdata"],
            hex(digest(&SHA256, b"policy").as_ref())
        );
        assert!(claims["exp"].as_u64().unwrap() > claims["iat"].as_u64().unwrap());
        // Runtime data the report does not bind.
        assert!(matches!(
            authority.attest(
                issuer,
                &evidence.report,
                &evidence.endorsements,
                b"{}",
                None
            ),
            Err(AuthorityError::Request(_))
        ));
    }
}
