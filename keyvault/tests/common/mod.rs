//! Shared fixtures of the key vault's integration tests: a test attestation authority (its own
//! CA, an RSA token-signing key, an HTTPS OpenID/JWKS endpoint publishing the key MAA-style as
//! `kid` + `x5c`), token signing, a running vault with a registered client, and ports from the
//! vault developer's range (21100–21199).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use encfs_crypto::kek::{KekPrivateKey, KekSize};
use encfs_governance::server::{RunningServer, ServerIdentity, ServerLimits};
use encfs_keyvault::client::KeyVaultClient;
use encfs_keyvault::identity::Credential;
use encfs_keyvault::server::{RunningVault, Vault};
use serde_json::{Value, json};

/// The first port this test binary tries; each binary takes its own slice of the range.
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

pub fn next_port(base: u16) -> u16 {
    let offset = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
    base + offset % 25
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A test attestation authority.
pub struct TestAuthority {
    pub url: String,
    pub ca_pem: String,
    signing_key: jsonwebtoken::EncodingKey,
    pub kid: String,
    _server: RunningServer,
}

impl TestAuthority {
    pub async fn start(port_base: u16) -> Self {
        let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test attestation authority CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let tls_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let tls_params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .unwrap();
        let tls_cert = tls_params.signed_by(&tls_key, &issuer).unwrap();

        let rsa = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
        let rsa_der = rsa.to_pkcs8_der().unwrap();
        let rsa_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &rustls_pki_types_pkcs8(&rsa_der),
            &rcgen::PKCS_RSA_SHA256,
        )
        .unwrap();
        let mut signing_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        signing_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test attestation token signing");
        let signing_cert = signing_params.signed_by(&rsa_pair, &issuer).unwrap();
        let kid = encfs_keyvault::vault_dir::sha256_hex(signing_cert.der());
        let jwks = json!({"keys": [{"kid": kid, "kty": "RSA",
            "x5c": [STANDARD.encode(signing_cert.der()), STANDARD.encode(ca_cert.der())]}]});

        let mut last_error = None;
        for _ in 0..25 {
            let port = next_port(port_base);
            let url = format!("https://127.0.0.1:{port}");
            let configuration = json!({"issuer": url, "jwks_uri": format!("{url}/certs")});
            let jwks = jwks.clone();
            let router = Router::new()
                .route(
                    "/.well-known/openid-configuration",
                    get(move || async move { axum::Json(configuration) }),
                )
                .route("/certs", get(move || async move { axum::Json(jwks) }));
            let identity = ServerIdentity::from_pem(
                &(tls_cert.pem() + &ca_cert.pem()),
                &tls_key.serialize_pem(),
            )
            .unwrap();
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            match RunningServer::bind(addr, identity, router, ServerLimits::default()).await {
                Ok(server) => {
                    return Self {
                        url,
                        ca_pem: ca_cert.pem(),
                        signing_key: jsonwebtoken::EncodingKey::from_rsa_pem(
                            rsa.to_pem().unwrap().as_bytes(),
                        )
                        .unwrap(),
                        kid,
                        _server: server,
                    };
                }
                Err(e) => last_error = Some(e),
            }
        }
        panic!("no free port for the test authority: {last_error:?}");
    }

    /// MAA-shaped claims for a clean room with `hostdata`, carrying `runtime` as the runtime key.
    pub fn claims(&self, hostdata: &str, runtime: &KekPrivateKey) -> Value {
        let mut runtime_jwk = serde_json::to_value(
            encfs_keyvault::rsa_jwk::public_jwk(&runtime.public_key()).unwrap(),
        )
        .unwrap();
        runtime_jwk["kid"] = json!("runtime-key");
        runtime_jwk["key_ops"] = json!(["encrypt"]);
        let now = now();
        json!({
            "iss": self.url,
            "iat": now, "nbf": now, "exp": now + 600,
            "nonce": "1234",
            "x-ms-attestation-type": "sevsnpvm",
            "x-ms-compliance-status": "azure-compliant-uvm",
            "x-ms-sevsnpvm-hostdata": hostdata,
            "x-ms-sevsnpvm-is-debuggable": false,
            "x-ms-sevsnpvm-guestsvn": 4,
            "x-ms-runtime": {"keys": [runtime_jwk]},
            "x-ms-ver": "1.0",
        })
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.signing_key).unwrap()
    }
}

fn rustls_pki_types_pkcs8(der: &[u8]) -> rustls::pki_types::PrivatePkcs8KeyDer<'_> {
    rustls::pki_types::PrivatePkcs8KeyDer::from(der)
}

/// The reference's release policy for `hostdata` under `authority`.
pub fn reference_policy(authority: &str, hostdata: &str) -> Value {
    json!({"anyOf":[{"allOf":[
        {"claim":"x-ms-sevsnpvm-hostdata","equals":hostdata},
        {"claim":"x-ms-compliance-status","equals":"azure-compliant-uvm"},
        {"claim":"x-ms-attestation-type","equals":"sevsnpvm"}],
        "authority": authority}],
        "version":"1.0.0"})
}

/// A running vault with one registered client.
pub struct TestVault {
    pub dir: tempfile::TempDir,
    pub vault: Vault,
    pub running: RunningVault,
    pub credential: Credential,
    pub ca_pem: String,
}

impl TestVault {
    pub async fn start(port_base: u16, trust: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(dir.path(), trust.iter().map(|s| s.as_bytes())).unwrap();
        let credential = Credential::create(vault.dir(), "tester").unwrap();
        let ca_pem = vault.dir().ca_pem().unwrap();
        for _ in 0..25 {
            let port = next_port(port_base);
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            if let Ok(running) = vault.serve(addr).await {
                return Self {
                    dir,
                    vault,
                    running,
                    credential,
                    ca_pem,
                };
            }
        }
        panic!("no free port for the vault");
    }

    pub fn client(&self) -> KeyVaultClient {
        KeyVaultClient::new(
            &self.running.url(),
            [self.ca_pem.as_bytes()],
            self.credential.clone(),
        )
        .unwrap()
    }

    /// A plain HTTPS client trusting the vault's CA, for raw requests.
    pub fn raw(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .build()
            .unwrap()
    }

    pub fn bearer(&self) -> String {
        self.credential
            .mint(encfs_keyvault::identity::VAULT_RESOURCE)
            .unwrap()
            .token
    }
}

/// base64url of `bytes`.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}
