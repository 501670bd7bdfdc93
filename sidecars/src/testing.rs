//! Unit-test stand-ins for what the sidecars call: an attestation provider, an attester and a
//! Key Vault + identity endpoint (a small axum server on loopback). They follow the wire shapes
//! of the real services (ref §9, §11; helpers' contracts 1 and 2) but check nothing of
//! attestation: the real pieces are exercised in `tests/release_chain.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use encfs_attestation::provider::{AttestationProvider, Evidence, ProviderError, REPORT_DATA_LEN};
use encfs_crypto::kek::{KekPrivateKey, KekPublicKey, KekSize, OaepHash};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::release::tests::TestSigner;
use crate::server::RunningSidecar;
use crate::skr::{AttesterError, TokenAttester};

/// The ports this developer's tests may listen on.
const TEST_PORTS: std::ops::Range<u16> = 21200..21300;

/// A loopback listener on the first free port of the test range.
pub async fn listener() -> TcpListener {
    for port in TEST_PORTS {
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)).await {
            return listener;
        }
    }
    panic!("no free port in {TEST_PORTS:?}");
}

/// Serves `router` on a test port.
pub async fn serve(router: Router) -> RunningSidecar {
    crate::server::spawn(listener().await, router).unwrap()
}

/// A plain HTTP client.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Reports `report_data ‖ "REPORT"`.
pub struct FakeProvider;

#[async_trait]
impl AttestationProvider for FakeProvider {
    fn name(&self) -> &str {
        "fake"
    }
    fn platform(&self) -> &str {
        "snp-caci"
    }
    async fn report(&self, report_data: &[u8; REPORT_DATA_LEN]) -> Result<Evidence, ProviderError> {
        let mut report = report_data.to_vec();
        report.extend_from_slice(b"REPORT");
        Ok(Evidence {
            report,
            endorsements: b"-----BEGIN CERTIFICATE-----\n".to_vec(),
            uvm_endorsements: Vec::new(),
            endorsed_tcb: "0000000000000000".into(),
        })
    }
}

/// Tokens `fake.<b64url(runtime data)>`; `fail.example` fails.
pub struct FakeAttester;

#[async_trait]
impl TokenAttester for FakeAttester {
    async fn attest_snp(
        &self,
        maa_endpoint: &str,
        evidence: &Evidence,
        runtime_data_json: &[u8],
        _nonce: u64,
    ) -> Result<String, AttesterError> {
        if maa_endpoint == "fail.example" {
            return Err("the fake attestation service refuses".into());
        }
        assert_eq!(
            evidence.report[..64],
            crate::skr::report_data_for(runtime_data_json)
        );
        Ok(format!(
            "fake.{}",
            URL_SAFE_NO_PAD.encode(runtime_data_json)
        ))
    }
}

/// A Key Vault + identity endpoint stand-in on plain loopback HTTP.
///
/// Keys: `kek` releases its KEK; `refused` 403s; `untrusted` is signed by an unknown CA;
/// `stranger` is wrapped to a key that is not the runtime key. Secrets: `wrapped-dek` (the DEK
/// wrapped with the KEK), `wrapped-other` (wrapped with another key). Bearer `good-token` only.
pub struct FakeVault {
    /// Signs releases; its CA is what the sidecar must trust.
    pub signer: Arc<TestSigner>,
    /// The KEK it releases.
    pub kek: Arc<KekPrivateKey>,
    /// The DEK in `wrapped-dek`.
    pub dek: Vec<u8>,
    state: Arc<VaultState>,
    server: RunningSidecar,
}

struct VaultState {
    signer: Arc<TestSigner>,
    untrusted: TestSigner,
    kek: Arc<KekPrivateKey>,
    wrapped_dek: String,
    wrapped_other: String,
    imds_calls: AtomicUsize,
    scope_calls: AtomicUsize,
}

impl FakeVault {
    /// Starts it on a test port.
    pub async fn start() -> Self {
        let signer = Arc::new(TestSigner::new(&["127.0.0.1", "localhost"]));
        let kek = Arc::new(KekPrivateKey::generate(KekSize::Rsa2048).unwrap());
        let other = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
        let dek = b"0123456789abcdef0123456789abcdef".to_vec();
        let wrap =
            |key: &KekPublicKey| STANDARD.encode(key.encrypt_oaep(OaepHash::Sha256, &dek).unwrap());
        let state = Arc::new(VaultState {
            signer: signer.clone(),
            untrusted: TestSigner::new(&["127.0.0.1"]),
            kek: kek.clone(),
            wrapped_dek: wrap(&kek.public_key()),
            wrapped_other: wrap(&other.public_key()),
            imds_calls: AtomicUsize::new(0),
            scope_calls: AtomicUsize::new(0),
        });
        let router = Router::new()
            .route("/keys/{name}/release", post(release))
            .route("/secrets/{name}", get(secret))
            .route("/metadata/identity/oauth2/token", get(token))
            .with_state(state.clone());
        let server = serve(router).await;
        Self {
            signer,
            kek,
            dek,
            state,
            server,
        }
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// How many IMDS-form token requests it answered.
    pub fn imds_calls(&self) -> usize {
        self.state.imds_calls.load(Ordering::SeqCst)
    }

    /// How many scope-form token requests it answered.
    pub fn scope_calls(&self) -> usize {
        self.state.scope_calls.load(Ordering::SeqCst)
    }

    /// Stops it.
    pub async fn stop(self) {
        self.server.shutdown().await.unwrap();
    }
}

fn kv_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "Bearer good-token")
}

async fn release(
    State(state): State<Arc<VaultState>>,
    Path(name): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    assert_eq!(query.get("api-version").map(String::as_str), Some("7.4"));
    if !authorized(&headers) {
        return kv_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "AKV10000: bad bearer token",
        );
    }
    if name == "refused" {
        return kv_error(
            StatusCode::FORBIDDEN,
            "PolicyNotSatisfied",
            "Target environment attestation statement cannot be verified.",
        );
    }
    let target = body["target"].as_str().unwrap();
    let runtime: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(target.strip_prefix("fake.").unwrap())
            .unwrap(),
    )
    .unwrap();
    let recipient =
        KekPublicKey::from_der(&crate::jwk::spki_der_from_jwk(&runtime["keys"][0]).unwrap())
            .unwrap();
    let jws = match name.as_str() {
        "untrusted" => state
            .untrusted
            .release(&recipient, &state.kek, "RSA_AES_KEY_WRAP_256"),
        "stranger" => {
            let stranger = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
            state
                .signer
                .release(&stranger.public_key(), &state.kek, "RSA_AES_KEY_WRAP_256")
        }
        _ => state
            .signer
            .release(&recipient, &state.kek, "CKM_RSA_AES_KEY_WRAP"),
    };
    axum::Json(json!({ "value": jws })).into_response()
}

async fn secret(
    State(state): State<Arc<VaultState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers) {
        return kv_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "AKV10000: bad bearer token",
        );
    }
    let value = match name.as_str() {
        "wrapped-dek" => &state.wrapped_dek,
        "wrapped-other" => &state.wrapped_other,
        _ => {
            return kv_error(
                StatusCode::NOT_FOUND,
                "SecretNotFound",
                &format!("A secret with (name/id) {name} was not found in this key vault."),
            );
        }
    };
    axum::Json(json!({"value": value, "id": format!("https://v/secrets/{name}/1")})).into_response()
}

async fn token(
    State(state): State<Arc<VaultState>>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(resource) = query.get("resource") {
        assert_eq!(headers.get("metadata").unwrap(), "true");
        assert_eq!(resource, "https://vault.azure.net");
        state.imds_calls.fetch_add(1, Ordering::SeqCst);
        return axum::Json(json!({"access_token": "good-token", "token_type": "Bearer"}))
            .into_response();
    }
    assert_eq!(query["scope"], "https://vault.azure.net/.default");
    assert_eq!(query["clientId"], "client-1");
    assert_eq!(query["tenantId"], "tenant-1");
    assert_eq!(query["apiVersion"], "2018-02-01");
    state.scope_calls.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({"token": "good-token"})).into_response()
}
