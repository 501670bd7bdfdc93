//! The ccr-governance sidecar (ref §5; the reference's `src/governance/sidecar` on :8300): the
//! clean room's one door to governance. Its callers inside the clean room (the code launcher,
//! mount launchers) speak plain HTTP on loopback and hold no key; the sidecar holds the clean
//! room's attested identity and turns each call into the attested CGS request.
//!
//! At start it generates an RSA-2048 key pair in memory (aws-lc clears it when freed; the PKCS#8
//! bytes used to build the signer zeroize) and asks the skr sidecar for a report that binds the
//! public key: `POST {skr}/attest/combined {"runtime_data": b64(public PEM)}`, so report_data =
//! SHA-256(PEM) ‖ 32 zero bytes, what governance checks. One key and one report serve the
//! sidecar's lifetime.
//!
//! | route | upstream (under `/{prefix}`, `prefix` = `app/contracts/<id>`) | answer |
//! |---|---|---|
//! | `POST /consentcheck/{execution\|logging\|telemetry}` | `POST /runtimeoptions/{opt}/status` `{platform, attestation}` | CGS JSON as is (`{status, reason?}`) |
//! | `PUT /events[?id=&scope=]` (any JSON object) | `PUT /events?…` `{data: b64(JSON), timestamp, sign:{signature, publicKey}, encrypt:{publicKey}, platform, attestation}` | 200, empty, once governance committed (it answers after the fsync) |
//! | `POST /secrets/{secretId}` | `POST /secrets/{secretId}` `{encrypt:{publicKey}, platform, attestation}` | `{"value": <UTF-8 of the unwrapped secret>}` (RSA-OAEP-SHA-256 ‖ AES-KWP) |
//! | `PUT /secrets/{name}` (JSON, e.g. `{"value"}`) | `PUT /secrets/{name}`, signed-data form | CGS JSON (`{secretId}`) |
//!
//! The prefix comes from the configuration and may be overridden per request with the header
//! `x-ms-ccr-governance-api-path-prefix`. Errors are `{"error":{"code","message"}}`; an upstream
//! failure keeps its status and code (`VerifySnpAttestationFailed`, `SecretNotFound`, …), an
//! unreachable governance is 502. Signatures are RSA-PSS with SHA-256 and a 32-byte salt over the
//! `data` bytes (the JSON text, before base64). No answer, log line or error holds the key or a
//! secret's value.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use encfs_crypto::kek::{KekPrivateKey, KekSize, OaepHash};
use serde::Deserialize;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::endpoint::{Endpoint, EndpointError};
use crate::upstream::{self, UpstreamError};

/// The header that overrides the API path prefix for one request (the reference's).
pub const PATH_PREFIX_HEADER: &str = "x-ms-ccr-governance-api-path-prefix";

/// The platform the attestation is for.
const PLATFORM: &str = "snp-caci";

/// What the governance sidecar needs.
#[derive(Debug, Clone)]
pub struct GovernanceConfig {
    /// The CGS endpoint (`https://host:port`).
    pub cgs_endpoint: String,
    /// The governance service's certificate (PEM), the only root its TLS is checked against.
    pub service_cert_pem: Vec<u8>,
    /// The API path prefix, `app/contracts/<contractId>`.
    pub api_path_prefix: String,
    /// The skr sidecar (`http://127.0.0.1:8284`) the report comes from.
    pub skr: String,
}

/// Why the sidecar cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GovernanceStartError {
    /// An endpoint is not a loopback http or an https URL.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The CGS endpoint is not https.
    #[error("the governance endpoint '{0}' must be https")]
    NotHttps(String),
    /// The API path prefix is malformed.
    #[error("the API path prefix '{0}' is not a path like app/contracts/<contractId>")]
    PathPrefix(String),
    /// The service certificate is not a PEM certificate.
    #[error("the governance service certificate is not a PEM certificate: {0}")]
    ServiceCert(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    /// The key pair could not be made.
    #[error("cannot make the clean room's key pair: {0}")]
    Key(String),
    /// The skr sidecar gave no report.
    #[error("cannot get an attestation report from the skr sidecar: {0}")]
    Attestation(UpstreamError),
}

/// What a route failed with; [`GovernanceError::status_and_code`] is the one mapping to the
/// answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GovernanceError {
    /// The request is malformed (400 `BadRequest`).
    #[error("{0}")]
    BadRequest(String),
    /// Governance refused or could not be reached (its status and code; 502 when unreachable).
    #[error(transparent)]
    Upstream(UpstreamError),
    /// Governance's answer could not be unwrapped with the sidecar's key (500 `UnwrapFailed`).
    #[error("cannot unwrap secret '{secret}': {reason}")]
    Unwrap {
        /// The secret's id.
        secret: String,
        /// Why (never the bytes).
        reason: String,
    },
    /// Signing failed (500 `SigningFailed`).
    #[error("cannot sign the request: {0}")]
    Signing(String),
}

impl GovernanceError {
    /// The status and code of this error.
    pub fn status_and_code(&self) -> (u16, String) {
        match self {
            Self::BadRequest(_) => (400, "BadRequest".into()),
            Self::Upstream(UpstreamError::Status { status, code, .. }) => (*status, code.clone()),
            Self::Upstream(other) => (other.status(), "GovernanceUnreachable".into()),
            Self::Unwrap { .. } => (500, "UnwrapFailed".into()),
            Self::Signing(_) => (500, "SigningFailed".into()),
        }
    }
}

impl IntoResponse for GovernanceError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        eprintln!(
            "encfs sidecar governance: {} {code}: {self}",
            status.as_u16()
        );
        (
            status,
            axum::Json(json!({ "error": { "code": code, "message": self.to_string() } })),
        )
            .into_response()
    }
}

/// The sidecar's state: the clean room's key, its report and the governance client.
pub struct GovernanceSidecar {
    key: KekPrivateKey,
    signer: aws_lc_rs::rsa::KeyPair,
    public_pem_b64: String,
    attestation: Value,
    cgs: Endpoint,
    prefix: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for GovernanceSidecar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GovernanceSidecar")
            .field("cgs", &self.cgs)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A path prefix without its slashes, if it is one: non-empty segments of letters, digits,
/// `-`, `_`, `.` (not `.`/`..`).
fn normalized_prefix(text: &str) -> Option<String> {
    let trimmed = text.trim().trim_matches('/');
    if trimmed.is_empty() {
        return None;
    }
    trimmed
        .split('/')
        .all(is_segment)
        .then(|| trimmed.to_owned())
}

/// One URL path segment the sidecar forwards: letters, digits, `-`, `_`, `.`; not `.`/`..`.
fn is_segment(text: &str) -> bool {
    !text.is_empty()
        && text != "."
        && text != ".."
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl GovernanceSidecar {
    /// Generates the key pair and gets the report that binds it.
    pub async fn start(config: GovernanceConfig) -> Result<Self, GovernanceStartError> {
        let cgs = Endpoint::parse("governance endpoint", &config.cgs_endpoint)?;
        if !cgs.base().starts_with("https://") {
            return Err(GovernanceStartError::NotHttps(config.cgs_endpoint));
        }
        let prefix = normalized_prefix(&config.api_path_prefix)
            .ok_or_else(|| GovernanceStartError::PathPrefix(config.api_path_prefix.clone()))?;
        let skr = Endpoint::parse("skr sidecar", &config.skr)?;
        let cert = reqwest::Certificate::from_pem(&config.service_cert_pem)
            .map_err(|e| GovernanceStartError::ServiceCert(e.to_string()))?;
        if pem::parse(&config.service_cert_pem).is_err() {
            return Err(GovernanceStartError::ServiceCert(
                "no PEM block found".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .tls_built_in_root_certs(false)
            .add_root_certificate(cert)
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| GovernanceStartError::Http(e.to_string()))?;

        let key = KekPrivateKey::generate(KekSize::Rsa2048)
            .map_err(|e| GovernanceStartError::Key(e.to_string()))?;
        let signer = {
            let der = key
                .to_pkcs8_der()
                .map_err(|e| GovernanceStartError::Key(e.to_string()))?;
            aws_lc_rs::rsa::KeyPair::from_pkcs8(&der)
                .map_err(|e| GovernanceStartError::Key(e.to_string()))?
        };
        let public_pem = key
            .public_key()
            .to_pem()
            .map_err(|e| GovernanceStartError::Key(e.to_string()))?;
        let public_pem_b64 = STANDARD.encode(public_pem.as_bytes());

        let url = format!("{}/attest/combined", skr.base());
        let request = http
            .post(&url)
            .json(&json!({ "runtime_data": public_pem_b64 }));
        let attestation = upstream::call_json("skr sidecar", &url, request)
            .await
            .map_err(GovernanceStartError::Attestation)?;
        if attestation
            .get("evidence")
            .and_then(Value::as_str)
            .is_none()
        {
            return Err(GovernanceStartError::Attestation(
                UpstreamError::Malformed {
                    service: "skr sidecar",
                    url,
                    member: "evidence",
                },
            ));
        }
        Ok(Self {
            key,
            signer,
            public_pem_b64,
            attestation,
            cgs,
            prefix,
            http,
        })
    }

    /// The routes, served from this state.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/consentcheck/{option}", post(consent_check))
            .route("/events", put(put_event))
            .route("/secrets/{secret}", post(get_secret).put(put_secret))
            .with_state(self)
    }

    /// The clean room's public key, base64 of its PEM (what `sign.publicKey` carries).
    pub fn public_key_pem_b64(&self) -> &str {
        &self.public_pem_b64
    }

    /// The upstream URL of `path` under the request's prefix.
    fn url(&self, headers: &HeaderMap, path: &str) -> Result<String, GovernanceError> {
        let prefix = match headers.get(PATH_PREFIX_HEADER) {
            Some(value) => {
                let text = value.to_str().unwrap_or("");
                normalized_prefix(text).ok_or_else(|| {
                    GovernanceError::BadRequest(format!(
                        "header {PATH_PREFIX_HEADER} '{text}' is not a path like app/contracts/<contractId>"
                    ))
                })?
            }
            None => self.prefix.clone(),
        };
        Ok(format!("{}/{prefix}/{path}", self.cgs.base()))
    }

    fn sign(&self, data: &[u8]) -> Result<String, GovernanceError> {
        let mut signature = vec![0; self.signer.public_modulus_len()];
        self.signer
            .sign(
                &aws_lc_rs::signature::RSA_PSS_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                data,
                &mut signature,
            )
            .map_err(|e| GovernanceError::Signing(e.to_string()))?;
        Ok(STANDARD.encode(signature))
    }

    /// The signed-data form of `data` (events, secret PUT).
    fn signed_body(&self, data: &[u8]) -> Result<Value, GovernanceError> {
        Ok(json!({
            "data": STANDARD.encode(data),
            "timestamp": now_ms().to_string(),
            "sign": {"signature": self.sign(data)?, "publicKey": self.public_pem_b64},
            "encrypt": {"publicKey": self.public_pem_b64},
            "platform": PLATFORM,
            "attestation": self.attestation,
        }))
    }

    /// Sends `body` with `method` to `url`; the status and body of a success.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        query: &[(&str, &str)],
        body: &Value,
    ) -> Result<(u16, Zeroizing<Vec<u8>>), GovernanceError> {
        let unreachable = |reason: String| {
            GovernanceError::Upstream(UpstreamError::Unreachable {
                service: "governance",
                url: url.to_owned(),
                reason,
            })
        };
        let response = self
            .http
            .request(method, url)
            .query(query)
            .json(body)
            .send()
            .await
            .map_err(|e| unreachable(e.without_url().to_string()))?;
        let status = response.status().as_u16();
        let bytes = Zeroizing::new(
            response
                .bytes()
                .await
                .map_err(|e| unreachable(e.without_url().to_string()))?
                .to_vec(),
        );
        if !(200..300).contains(&status) {
            let (code, message) = upstream::error_summary(status, &bytes);
            return Err(GovernanceError::Upstream(UpstreamError::Status {
                service: "governance",
                url: url.to_owned(),
                status,
                code,
                message,
            }));
        }
        Ok((status, bytes))
    }

    async fn send_json(
        &self,
        method: reqwest::Method,
        url: &str,
        body: &Value,
    ) -> Result<Value, GovernanceError> {
        let (_, bytes) = self.send(method, url, &[], body).await?;
        serde_json::from_slice(&bytes).map_err(|_| {
            GovernanceError::Upstream(UpstreamError::Malformed {
                service: "governance",
                url: url.to_owned(),
                member: "a JSON body",
            })
        })
    }
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

fn checked_segment<'a>(what: &str, text: &'a str) -> Result<&'a str, GovernanceError> {
    if is_segment(text) {
        Ok(text)
    } else {
        Err(GovernanceError::BadRequest(format!(
            "{what} '{text}' is not a name (letters, digits, '-', '_', '.')"
        )))
    }
}

fn json_object(body: &[u8], what: &str) -> Result<Value, GovernanceError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err(GovernanceError::BadRequest(format!(
            "the {what} must be a JSON object"
        ))),
        Err(e) => Err(GovernanceError::BadRequest(format!(
            "the {what} is not JSON: {}",
            upstream::describe_json_error(&e)
        ))),
    }
}

fn json_response(value: &Value) -> Response {
    axum::Json(value).into_response()
}

async fn consent_check(
    State(sidecar): State<Arc<GovernanceSidecar>>,
    Path(option): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let option = checked_segment("option", &option)?;
        let url = sidecar.url(&headers, &format!("runtimeoptions/{option}/status"))?;
        let body = json!({ "platform": PLATFORM, "attestation": sidecar.attestation });
        sidecar.send_json(reqwest::Method::POST, &url, &body).await
    }
    .await;
    match result {
        Ok(answer) => json_response(&answer),
        Err(error) => error.into_response(),
    }
}

#[derive(Deserialize)]
struct EventQuery {
    id: Option<String>,
    scope: Option<String>,
}

async fn put_event(
    State(sidecar): State<Arc<GovernanceSidecar>>,
    Query(query): Query<EventQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let event = json_object(&body, "event")?;
        let data =
            serde_json::to_vec(&event).map_err(|e| GovernanceError::Signing(e.to_string()))?;
        let url = sidecar.url(&headers, "events")?;
        let mut params = Vec::new();
        if let Some(id) = query.id.as_deref() {
            params.push(("id", id));
        }
        if let Some(scope) = query.scope.as_deref() {
            params.push(("scope", scope));
        }
        let signed = sidecar.signed_body(&data)?;
        sidecar
            .send(reqwest::Method::PUT, &url, &params, &signed)
            .await
    }
    .await;
    match result {
        Ok(_) => StatusCode::OK.into_response(),
        Err(error) => error.into_response(),
    }
}

async fn get_secret(
    State(sidecar): State<Arc<GovernanceSidecar>>,
    Path(secret): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        let secret = checked_segment("secret id", &secret)?;
        let url = sidecar.url(&headers, &format!("secrets/{secret}"))?;
        let body = json!({
            "encrypt": {"publicKey": sidecar.public_pem_b64},
            "platform": PLATFORM,
            "attestation": sidecar.attestation,
        });
        let answer = sidecar
            .send_json(reqwest::Method::POST, &url, &body)
            .await?;
        let unwrap_error = |reason: &str| GovernanceError::Unwrap {
            secret: secret.to_owned(),
            reason: reason.to_owned(),
        };
        let wrapped = answer
            .get("value")
            .and_then(Value::as_str)
            .ok_or_else(|| unwrap_error("governance answered without value"))?;
        let wrapped = STANDARD
            .decode(wrapped)
            .map_err(|_| unwrap_error("the value is not base64"))?;
        let plain = encfs_crypto::rsa_aes_wrap::unwrap(&sidecar.key, OaepHash::Sha256, &wrapped)
            .map_err(|_| unwrap_error("RSA-OAEP-SHA-256 ‖ AES-KWP unwrap failed"))?;
        let text = std::str::from_utf8(&plain)
            .map_err(|_| unwrap_error("the secret is not UTF-8 text"))?;
        Ok::<_, GovernanceError>(Zeroizing::new(json!({ "value": text }).to_string()))
    }
    .await;
    match result {
        Ok(body) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body.as_bytes().to_vec(),
        )
            .into_response(),
        Err(error) => error.into_response(),
    }
}

async fn put_secret(
    State(sidecar): State<Arc<GovernanceSidecar>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = Zeroizing::new(body.to_vec());
    let result = async {
        let name = checked_segment("secret name", &name)?;
        let value = json_object(&body, "secret")?;
        let data = Zeroizing::new(
            serde_json::to_vec(&value).map_err(|e| GovernanceError::Signing(e.to_string()))?,
        );
        drop(value);
        let url = sidecar.url(&headers, &format!("secrets/{name}"))?;
        let signed = sidecar.signed_body(&data)?;
        sidecar.send_json(reqwest::Method::PUT, &url, &signed).await
    }
    .await;
    match result {
        Ok(answer) => json_response(&answer),
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_segments() {
        assert_eq!(
            normalized_prefix("/app/contracts/collab/").as_deref(),
            Some("app/contracts/collab")
        );
        for bad in ["", "/", "app/../x", "app//x", "app/contracts/a?b", "a b"] {
            assert!(normalized_prefix(bad).is_none(), "{bad}");
        }
        assert!(is_segment("isv_s1"));
        assert!(!is_segment(".."));
        assert!(!is_segment("a/b"));
    }

    #[test]
    fn upstream_errors_keep_status_and_code() {
        let error = GovernanceError::Upstream(UpstreamError::Status {
            service: "governance",
            url: "https://x/app".into(),
            status: 404,
            code: "SecretNotFound".into(),
            message: "m".into(),
        });
        assert_eq!(error.status_and_code(), (404, "SecretNotFound".into()));
        let error = GovernanceError::Upstream(UpstreamError::Unreachable {
            service: "governance",
            url: "https://x/app".into(),
            reason: "refused".into(),
        });
        assert_eq!(error.status_and_code().0, 502);
    }
}
