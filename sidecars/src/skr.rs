//! The secure key release (skr) sidecar: the routes of the confidential sidecar containers'
//! `skr` (ref §11), on plain HTTP on loopback as inside the reference's container group.
//!
//! | route | request | success | errors |
//! |---|---|---|---|
//! | `GET /status` | — | `{"message":"STATUS OK"}` | |
//! | `POST /attest/raw` | `{runtime_data: b64}` | `{"report": hex}` | 400 / 403 `{"error"}` |
//! | `POST /attest/combined` | `{runtime_data: b64}` | `{endorsed_tcb, endorsements, evidence, uvm_endorsements}` | 400 / 500 |
//! | `POST /attest/maa` | `{maa_endpoint, runtime_data: b64}` | `{"token"}` | 400 / 403 |
//! | `POST /key/release` | `{maa_endpoint, akv_endpoint, kid, access_token?}` | `{"key": "<JWK JSON text>"}` | 400 / 403 |
//!
//! report_data is SHA-256(runtime_data bytes) ‖ 32 zero bytes. At start the sidecar generates an
//! RSA-2048 runtime key in memory (never written anywhere; aws-lc clears it when freed); its
//! runtime data is the JWKS `{"keys":[<public JWK>]}`. A key release attests with that runtime
//! data (report, then an MAA-shaped token), asks Key Vault to release the key to the token
//! (`POST {akv}/keys/{kid}/release?api-version=7.4`, `{"target": token}`, the request's bearer
//! token or one from the identity endpoint), verifies the JWS ([`crate::release`]) and unwraps
//! the key with the runtime key. Errors name what failed; no body, log line or error holds a key
//! or a token.

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use encfs_attestation::provider::{AttestationProvider, Evidence, REPORT_DATA_LEN};
use encfs_crypto::kek::{KekPrivateKey, KekSize};
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::endpoint::Endpoint;
use crate::release::ReleaseVerifier;
use crate::upstream::{self, IdentityEndpoint, UpstreamError};

/// The api-version of the release request (the reference's).
pub const RELEASE_API_VERSION: &str = "7.4";

/// An error from the attestation service, as its client reports it.
pub type AttesterError = Box<dyn std::error::Error + Send + Sync>;

/// Turns evidence and runtime data into an MAA-shaped token: the contract of
/// `encfs_attestation::maa::MaaClient::attest_snp` (MAA's `attest/SevSnpVm`, or the virtual
/// authority that speaks it).
#[async_trait]
pub trait TokenAttester: Send + Sync {
    /// Posts the evidence and `runtime_data_json` to `maa_endpoint` (host or URL) and returns
    /// the token.
    async fn attest_snp(
        &self,
        maa_endpoint: &str,
        evidence: &Evidence,
        runtime_data_json: &[u8],
        nonce: u64,
    ) -> Result<String, AttesterError>;
}

/// The MAA client of `encfs-attestation` is the attester of real use (MAA, or the virtual
/// authority's MAA routes).
#[async_trait]
impl TokenAttester for encfs_attestation::maa::MaaClient {
    async fn attest_snp(
        &self,
        maa_endpoint: &str,
        evidence: &Evidence,
        runtime_data_json: &[u8],
        nonce: u64,
    ) -> Result<String, AttesterError> {
        encfs_attestation::maa::MaaClient::attest_snp(
            self,
            maa_endpoint,
            evidence,
            runtime_data_json,
            nonce,
        )
        .await
        .map_err(Into::into)
    }
}

/// What the skr sidecar needs.
pub struct SkrConfig {
    /// Where reports come from (virtual authority or `/dev/sev-guest`).
    pub provider: Arc<dyn AttestationProvider>,
    /// Where tokens come from.
    pub attester: Arc<dyn TokenAttester>,
    /// Extra roots (label, PEM) for Key Vault's TLS and its release certificates, on top of the
    /// web PKI roots.
    pub trusted_cas: Vec<(String, Vec<u8>)>,
    /// Where a bearer token comes from when a release names none.
    pub identity_endpoint: Option<String>,
}

/// Why the sidecar cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SkrStartError {
    /// The runtime key could not be generated or encoded.
    #[error("cannot make the runtime key: {0}")]
    RuntimeKey(String),
    /// A trusted CA is unusable.
    #[error(transparent)]
    TrustedCa(#[from] crate::release::ReleaseError),
    /// The HTTP client could not be built.
    #[error("{0}")]
    Http(String),
    /// The identity endpoint is not a URL.
    #[error(transparent)]
    IdentityEndpoint(#[from] crate::endpoint::EndpointError),
}

/// A running skr sidecar's state: the runtime key and what it talks to.
pub struct SkrSidecar {
    runtime_key: KekPrivateKey,
    runtime_data: Vec<u8>,
    provider: Arc<dyn AttestationProvider>,
    attester: Arc<dyn TokenAttester>,
    verifier: ReleaseVerifier,
    http: reqwest::Client,
    identity: Option<IdentityEndpoint>,
}

impl std::fmt::Debug for SkrSidecar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SkrSidecar")
            .field("provider", &self.provider.name())
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl SkrSidecar {
    /// Generates the runtime key and readies the clients.
    pub fn new(config: SkrConfig) -> Result<Self, SkrStartError> {
        let runtime_key = KekPrivateKey::generate(KekSize::Rsa2048)
            .map_err(|e| SkrStartError::RuntimeKey(e.to_string()))?;
        let spki = runtime_key
            .public_key()
            .to_der()
            .map_err(|e| SkrStartError::RuntimeKey(e.to_string()))?;
        let jwk =
            crate::jwk::public_jwk(&spki).map_err(|e| SkrStartError::RuntimeKey(e.to_string()))?;
        let runtime_data = json!({ "keys": [jwk] }).to_string().into_bytes();
        let verifier = ReleaseVerifier::new(&config.trusted_cas)?;
        let http = upstream::http_client(&config.trusted_cas).map_err(SkrStartError::Http)?;
        let identity = config
            .identity_endpoint
            .as_deref()
            .map(IdentityEndpoint::parse)
            .transpose()?;
        Ok(Self {
            runtime_key,
            runtime_data,
            provider: config.provider,
            attester: config.attester,
            verifier,
            http,
            identity,
        })
    }

    /// The runtime data a release attests with: the JWKS of the runtime public key.
    pub fn runtime_data(&self) -> &[u8] {
        &self.runtime_data
    }

    /// The routes, served from this state.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/status", get(status))
            .route("/attest/raw", post(attest_raw))
            .route("/attest/combined", post(attest_combined))
            .route("/attest/maa", post(attest_maa))
            .route("/key/release", post(key_release))
            .with_state(self)
    }

    /// A report whose report_data binds `runtime_data`.
    async fn evidence_for(&self, runtime_data: &[u8]) -> Result<Evidence, SkrError> {
        self.provider
            .report(&report_data_for(runtime_data))
            .await
            .map_err(|e| SkrError::Attestation(e.to_string()))
    }

    async fn token_for(&self, maa_endpoint: &str, runtime_data: &[u8]) -> Result<String, SkrError> {
        let evidence = self.evidence_for(runtime_data).await?;
        let nonce = random_nonce();
        self.attester
            .attest_snp(maa_endpoint, &evidence, runtime_data, nonce)
            .await
            .map_err(|e| SkrError::Attestation(format!("attestation at {maa_endpoint}: {e}")))
    }

    /// The whole release: token, Key Vault, JWS, unwrap → the private JWK text.
    async fn release(&self, request: &KeyReleaseRequest) -> Result<Zeroizing<String>, SkrError> {
        let akv = Endpoint::parse("akv_endpoint", &request.akv_endpoint)
            .map_err(|e| SkrError::BadRequest(e.to_string()))?;
        let token = self
            .token_for(&request.maa_endpoint, &self.runtime_data)
            .await
            .map_err(|e| SkrError::Release(e.to_string()))?;
        let bearer = match request.access_token.as_deref().filter(|t| !t.is_empty()) {
            Some(token) => Zeroizing::new(token.to_owned()),
            None => {
                let identity = self.identity.as_ref().ok_or_else(|| {
                    SkrError::Release(
                        "the request has no access_token and no identity endpoint is configured"
                            .into(),
                    )
                })?;
                identity
                    .imds_token(&self.http, akv.vault_resource())
                    .await
                    .map_err(|e| SkrError::Release(e.to_string()))?
            }
        };
        let url = format!(
            "{}/keys/{}/release?api-version={RELEASE_API_VERSION}",
            akv.base(),
            request.kid
        );
        let call = self
            .http
            .post(&url)
            .bearer_auth(bearer.as_str())
            .json(&json!({ "target": token }));
        let answer = upstream::call_json("key vault", &url, call)
            .await
            .map_err(|e: UpstreamError| SkrError::Release(e.to_string()))?;
        let jws = upstream::take_string("key vault", &url, answer, "value")
            .map_err(|e| SkrError::Release(e.to_string()))?;
        let payload = self
            .verifier
            .verify(&jws, akv.host())
            .map_err(|e| SkrError::Release(e.to_string()))?;
        crate::release::released_key_jwk(&payload, &self.runtime_key)
            .map_err(|e| SkrError::Release(e.to_string()))
    }
}

/// report_data for runtime data: SHA-256(runtime_data) ‖ 32 zero bytes (the reference's
/// `GenerateMAAReportData`).
pub fn report_data_for(runtime_data: &[u8]) -> [u8; REPORT_DATA_LEN] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, runtime_data);
    let mut report_data = [0u8; REPORT_DATA_LEN];
    report_data[..32].copy_from_slice(digest.as_ref());
    report_data
}

fn random_nonce() -> u64 {
    let mut bytes = [0u8; 8];
    // A nonce only needs to differ between requests; fall back to the clock if the RNG fails.
    if aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut bytes)
        .is_err()
    {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return now.as_nanos() as u64;
    }
    u64::from_le_bytes(bytes)
}

/// What a route failed with; one function (`RouteError::with`, per route) maps it to status + body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SkrError {
    /// The request is not what the route takes (400).
    #[error("{0}")]
    BadRequest(String),
    /// No report or token could be had (403 on `/attest/raw`, `/attest/maa`; 500 on combined).
    #[error("{0}")]
    Attestation(String),
    /// The release failed (403).
    #[error("secure key release failed: {0}")]
    Release(String),
}

/// An error with the status of its route.
struct RouteError(StatusCode, SkrError);

impl IntoResponse for RouteError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1.to_string() }))).into_response()
    }
}

impl RouteError {
    /// The reference's statuses: 400 for a bad request, else `failure`.
    fn with(failure: StatusCode) -> impl Fn(SkrError) -> Self {
        move |error| match error {
            SkrError::BadRequest(_) => Self(StatusCode::BAD_REQUEST, error),
            _ => Self(failure, error),
        }
    }
}

/// Parses a JSON body, requiring each of `required` to be a non-empty string (gin's
/// `binding:"required"`).
fn parse_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    required: &[&str],
) -> Result<T, SkrError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        SkrError::BadRequest(format!(
            "the body is not JSON: {}",
            upstream::describe_json_error(&e)
        ))
    })?;
    for field in required {
        if value
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(SkrError::BadRequest(format!(
                "required field '{field}' is missing or empty"
            )));
        }
    }
    serde_json::from_value(value).map_err(|e| {
        SkrError::BadRequest(format!(
            "bad request: {}",
            upstream::describe_json_error(&e)
        ))
    })
}

fn decode_runtime_data(text: &str) -> Result<Vec<u8>, SkrError> {
    STANDARD
        .decode(text)
        .or_else(|_| STANDARD_NO_PAD.decode(text))
        .map_err(|_| SkrError::BadRequest("runtime_data is not base64".into()))
}

#[derive(Deserialize)]
struct RuntimeDataRequest {
    runtime_data: String,
}

#[derive(Deserialize)]
struct MaaRequest {
    maa_endpoint: String,
    runtime_data: String,
}

#[derive(Deserialize)]
struct KeyReleaseRequest {
    maa_endpoint: String,
    akv_endpoint: String,
    kid: String,
    #[serde(default)]
    access_token: Option<String>,
}

impl Drop for KeyReleaseRequest {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.access_token);
    }
}

async fn status() -> impl IntoResponse {
    axum::Json(json!({ "message": "STATUS OK" }))
}

async fn attest_raw(State(skr): State<Arc<SkrSidecar>>, body: Bytes) -> Response {
    let failed = RouteError::with(StatusCode::FORBIDDEN);
    let result = async {
        let request: RuntimeDataRequest = parse_body(&body, &["runtime_data"])?;
        let runtime_data = decode_runtime_data(&request.runtime_data)?;
        skr.evidence_for(&runtime_data).await
    }
    .await;
    match result {
        Ok(evidence) => axum::Json(json!({ "report": hex(&evidence.report) })).into_response(),
        Err(error) => log_failure("/attest/raw", failed(error)),
    }
}

async fn attest_combined(State(skr): State<Arc<SkrSidecar>>, body: Bytes) -> Response {
    let failed = RouteError::with(StatusCode::INTERNAL_SERVER_ERROR);
    let result = async {
        let request: RuntimeDataRequest = parse_body(&body, &["runtime_data"])?;
        let runtime_data = decode_runtime_data(&request.runtime_data)?;
        skr.evidence_for(&runtime_data).await
    }
    .await;
    match result {
        Ok(evidence) => axum::Json(json!({
            "endorsed_tcb": evidence.endorsed_tcb,
            "endorsements": STANDARD.encode(&evidence.endorsements),
            "evidence": STANDARD.encode(&evidence.report),
            "uvm_endorsements": STANDARD.encode(&evidence.uvm_endorsements),
        }))
        .into_response(),
        Err(error) => log_failure("/attest/combined", failed(error)),
    }
}

async fn attest_maa(State(skr): State<Arc<SkrSidecar>>, body: Bytes) -> Response {
    let failed = RouteError::with(StatusCode::FORBIDDEN);
    let result = async {
        let request: MaaRequest = parse_body(&body, &["maa_endpoint", "runtime_data"])?;
        let runtime_data = decode_runtime_data(&request.runtime_data)?;
        skr.token_for(&request.maa_endpoint, &runtime_data).await
    }
    .await;
    match result {
        Ok(token) => axum::Json(json!({ "token": token })).into_response(),
        Err(error) => log_failure("/attest/maa", failed(error)),
    }
}

async fn key_release(State(skr): State<Arc<SkrSidecar>>, body: Bytes) -> Response {
    let failed = RouteError::with(StatusCode::FORBIDDEN);
    let body = Zeroizing::new(body.to_vec());
    let request: KeyReleaseRequest =
        match parse_body(&body, &["maa_endpoint", "akv_endpoint", "kid"]) {
            Ok(request) => request,
            Err(error) => return log_failure("/key/release", failed(error)),
        };
    if !request
        .kid
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '/')
    {
        return log_failure(
            "/key/release",
            failed(SkrError::BadRequest(format!(
                "kid '{}' is not a key name (letters, digits, '-', optionally /version)",
                request.kid
            ))),
        );
    }
    match skr.release(&request).await {
        Ok(jwk) => {
            // The body is JSON `{"key": "<JWK text>"}`; built in a buffer that zeroizes.
            let body = Zeroizing::new(json!({ "key": jwk.as_str() }).to_string());
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body.as_bytes().to_vec(),
            )
                .into_response()
        }
        Err(error) => log_failure(&format!("/key/release of '{}'", request.kid), failed(error)),
    }
}

/// Writes one line about a failed request to stderr (the message only: it never holds a key or
/// a token) and answers it.
fn log_failure(route: &str, error: RouteError) -> Response {
    eprintln!(
        "encfs sidecar skr: {route}: {} {}",
        error.0.as_u16(),
        error.1
    );
    error.into_response()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testing::{FakeAttester, FakeProvider, FakeVault, http};

    pub(crate) fn skr_with(vault: &FakeVault, identity: Option<String>) -> Arc<SkrSidecar> {
        Arc::new(
            SkrSidecar::new(SkrConfig {
                provider: Arc::new(FakeProvider),
                attester: Arc::new(FakeAttester),
                trusted_cas: vec![("vault-ca".into(), vault.signer.ca_pem.clone().into_bytes())],
                identity_endpoint: identity,
            })
            .unwrap(),
        )
    }

    #[tokio::test]
    async fn status_and_attestation_routes() {
        let vault = FakeVault::start().await;
        let skr = crate::testing::serve(skr_with(&vault, None).router()).await;
        let base = format!("http://{}", skr.local_addr());
        let client = http();

        let status = client.get(format!("{base}/status")).send().await.unwrap();
        assert_eq!(status.status(), 200);
        assert_eq!(
            status.json::<Value>().await.unwrap(),
            json!({"message": "STATUS OK"})
        );

        let runtime_data = b"{\"keys\":[]}";
        let expected = report_data_for(runtime_data);
        assert_eq!(&expected[32..], &[0u8; 32]);
        let body = json!({ "runtime_data": STANDARD.encode(runtime_data) });
        let raw: Value = client
            .post(format!("{base}/attest/raw"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        // The fake report is report_data ‖ "REPORT".
        assert_eq!(
            raw["report"],
            json!(format!("{}{}", hex(&expected), hex(b"REPORT")))
        );

        let combined: Value = client
            .post(format!("{base}/attest/combined"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut keys: Vec<_> = combined.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "endorsed_tcb",
                "endorsements",
                "evidence",
                "uvm_endorsements"
            ]
        );
        assert_eq!(
            STANDARD
                .decode(combined["evidence"].as_str().unwrap())
                .unwrap()[..64],
            expected
        );

        let maa: Value = client
            .post(format!("{base}/attest/maa"))
            .json(&json!({"maa_endpoint": "maa.example", "runtime_data": STANDARD.encode(runtime_data)}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(maa["token"].as_str().unwrap().starts_with("fake."));

        for (route, body, status) in [
            ("/attest/raw", json!({}), 400),
            ("/attest/raw", json!({"runtime_data": "!!"}), 400),
            ("/attest/combined", json!({"runtime_data": ""}), 400),
            ("/attest/maa", json!({"runtime_data": "e30="}), 400),
            (
                "/attest/maa",
                json!({"maa_endpoint": "fail.example", "runtime_data": "e30="}),
                403,
            ),
            (
                "/key/release",
                json!({"maa_endpoint": "m", "akv_endpoint": "a"}),
                400,
            ),
            (
                "/key/release",
                json!({"maa_endpoint": "m", "akv_endpoint": "a", "kid": "../x"}),
                400,
            ),
            (
                "/key/release",
                json!({"maa_endpoint": "m", "akv_endpoint": "http://vault.example", "kid": "k"}),
                400,
            ),
        ] {
            let response = client
                .post(format!("{base}{route}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), status, "{route} {body}");
            let error: Value = response.json().await.unwrap();
            assert!(error["error"].is_string(), "{route}: {error}");
        }
        let response = client
            .post(format!("{base}/attest/raw"))
            .body("not json")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        skr.shutdown().await.unwrap();
        vault.stop().await;
    }

    #[tokio::test]
    async fn key_release_returns_the_key_as_a_jwk_string() {
        let vault = FakeVault::start().await;
        let skr = crate::testing::serve(skr_with(&vault, None).router()).await;
        let base = format!("http://{}", skr.local_addr());
        let response = http()
            .post(format!("{base}/key/release"))
            .json(&json!({
                "maa_endpoint": "maa.example",
                "akv_endpoint": vault.url(),
                "kid": "kek",
                "access_token": "good-token",
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        let jwk_text = body["key"].as_str().expect("key is a JSON string");
        let jwk: Value = serde_json::from_str(jwk_text).unwrap();
        for member in [
            "kty", "n", "e", "d", "p", "q", "dp", "dq", "qi", "kid", "key_ops",
        ] {
            assert!(jwk.get(member).is_some(), "{member}");
        }
        let opened =
            KekPrivateKey::from_pkcs8_der(&crate::jwk::pkcs8_from_private_jwk(jwk_text).unwrap())
                .unwrap();
        let ciphertext = vault
            .kek
            .public_key()
            .encrypt_oaep(encfs_crypto::kek::OaepHash::Sha256, b"dek")
            .unwrap();
        assert_eq!(
            opened
                .decrypt_oaep(encfs_crypto::kek::OaepHash::Sha256, &ciphertext)
                .unwrap()
                .as_slice(),
            b"dek"
        );
        skr.shutdown().await.unwrap();
        vault.stop().await;
    }

    #[tokio::test]
    async fn refusals_are_403_without_key_material() {
        let vault = FakeVault::start().await;
        let skr_state = skr_with(&vault, None);
        let skr = crate::testing::serve(skr_state.router()).await;
        let base = format!("http://{}", skr.local_addr());
        let cases = [
            // The vault refuses the token (its policy does not hold).
            (json!({"kid": "refused"}), "PolicyNotSatisfied"),
            // Bad bearer token.
            (json!({"kid": "kek", "access_token": "bad"}), "Unauthorized"),
            // No token and no identity endpoint.
            (json!({"kid": "kek"}), "no access_token"),
            // The JWS is signed by a CA the sidecar does not trust.
            (json!({"kid": "untrusted"}), "not trusted"),
            // The JWS wraps the key to another runtime key.
            (json!({"kid": "stranger"}), "does not unwrap"),
            // The attestation service fails.
            (
                json!({"kid": "kek", "maa_endpoint": "fail.example"}),
                "attestation",
            ),
        ];
        for (overrides, expected) in cases {
            let mut request = json!({
                "maa_endpoint": "maa.example",
                "akv_endpoint": vault.url(),
                "access_token": "good-token",
            });
            for (k, v) in overrides.as_object().unwrap() {
                request[k] = v.clone();
            }
            if overrides.get("access_token").is_none() && expected == "no access_token" {
                request.as_object_mut().unwrap().remove("access_token");
            }
            let response = http()
                .post(format!("{base}/key/release"))
                .json(&request)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 403, "{request}");
            let text = response.text().await.unwrap();
            let body: Value = serde_json::from_str(&text).unwrap();
            let message = body["error"].as_str().unwrap();
            assert!(
                message.starts_with("secure key release failed"),
                "{message}"
            );
            assert!(message.contains(expected), "{message} lacks {expected}");
            assert!(
                !text.contains("\"d\"") && !text.contains("good-token"),
                "{text}"
            );
        }
        skr.shutdown().await.unwrap();
        vault.stop().await;
    }

    #[tokio::test]
    async fn a_release_without_token_asks_the_identity_endpoint() {
        let vault = FakeVault::start().await;
        let skr = crate::testing::serve(skr_with(&vault, Some(vault.url())).router()).await;
        let response = http()
            .post(format!("http://{}/key/release", skr.local_addr()))
            .json(
                &json!({"maa_endpoint": "maa.example", "akv_endpoint": vault.url(), "kid": "kek"}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(vault.imds_calls(), 1);
        skr.shutdown().await.unwrap();
        vault.stop().await;
    }
}
