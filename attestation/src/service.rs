//! The virtual authority over HTTPS (rustls, ring provider; the certificate chain of
//! `DIR/tls.pem`): four routes, each a thin adapter to [`VirtualAuthority`].
//!
//! - `POST /virtual/snp/report` `{report_data: 128 hex, security_policy: base64 text,
//!   debuggable}` → the `/attest/combined` shape (`{evidence, endorsements, uvm_endorsements,
//!   endorsed_tcb}`);
//! - `POST /attest/SevSnpVm?api-version=2022-08-01|2020-10-01`: MAA's request → `{token}`;
//! - `GET /.well-known/openid-configuration` → `{issuer, jwks_uri}`;
//! - `GET /certs` → the JWKS.
//!
//! Errors are MAA's shape, `{"error": {"code", "message"}}`, one mapping in [`AuthorityError`]'s
//! `IntoResponse`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{
    STANDARD as BASE64, URL_SAFE_NO_PAD as BASE64URL_NO_PAD,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::authority::{AuthorityError, VirtualAuthority};
use crate::provider::REPORT_DATA_LEN;
use crate::snp::from_hex;

/// The api-versions `attest/SevSnpVm` accepts.
pub const MAA_API_VERSIONS: &[&str] = &["2022-08-01", "2020-10-01"];
/// Largest request body (an MAA request with UVM endorsements is ~30 KiB).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the service cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The TLS material is unusable.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// An error answer: status, MAA-style code, message.
struct ErrorAnswer {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl IntoResponse for ErrorAnswer {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

fn invalid(message: impl Into<String>) -> ErrorAnswer {
    ErrorAnswer {
        status: StatusCode::BAD_REQUEST,
        code: "InvalidParameter",
        message: message.into(),
    }
}

impl From<AuthorityError> for ErrorAnswer {
    fn from(error: AuthorityError) -> Self {
        match error {
            AuthorityError::Report(_) | AuthorityError::Request(_) => ErrorAnswer {
                status: StatusCode::BAD_REQUEST,
                code: "InvalidParameter",
                message: error.to_string(),
            },
            other => ErrorAnswer {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                code: "InternalError",
                message: other.to_string(),
            },
        }
    }
}

struct AppState {
    authority: VirtualAuthority,
    issuer: String,
}

type Shared = State<Arc<AppState>>;

/// The routes, for an authority reachable at `issuer` (`https://127.0.0.1:P`).
pub fn router(authority: VirtualAuthority, issuer: String) -> Router {
    let state = Arc::new(AppState { authority, issuer });
    Router::new()
        .route("/virtual/snp/report", post(virtual_report))
        .route("/attest/SevSnpVm", post(attest_sev_snp_vm))
        .route("/.well-known/openid-configuration", get(openid_configuration))
        .route("/certs", get(certs))
        .fallback(|| async {
            ErrorAnswer {
                status: StatusCode::NOT_FOUND,
                code: "NotFound",
                message: "no such route".into(),
            }
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn json_body(bytes: &[u8]) -> Result<Value, ErrorAnswer> {
    serde_json::from_slice(bytes).map_err(|e| invalid(format!("the body is not JSON: {e}")))
}

async fn virtual_report(State(state): Shared, body: axum::body::Bytes) -> Response {
    match virtual_report_answer(&state, &body) {
        Ok(value) => axum::Json(value).into_response(),
        Err(error) => error.into_response(),
    }
}

fn virtual_report_answer(state: &AppState, body: &[u8]) -> Result<Value, ErrorAnswer> {
    let body = json_body(body)?;
    let report_data_hex = body
        .get("report_data")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("report_data (128 hex digits) is required"))?;
    let report_data: [u8; REPORT_DATA_LEN] = from_hex(report_data_hex)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| invalid("report_data must be 128 hex digits (64 bytes)"))?;
    let policy_b64 = body
        .get("security_policy")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("security_policy (base64 of the policy text) is required"))?;
    let policy = BASE64
        .decode(policy_b64.trim())
        .map_err(|_| invalid("security_policy is not base64"))?;
    let debuggable = match body.get("debuggable") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("debuggable must be a boolean")),
    };
    let evidence = state.authority.report(&report_data, &policy, debuggable)?;
    Ok(evidence.to_wire_json())
}

#[derive(Deserialize)]
struct ApiVersionQuery {
    #[serde(rename = "api-version")]
    api_version: Option<String>,
}

async fn attest_sev_snp_vm(
    State(state): Shared,
    Query(query): Query<ApiVersionQuery>,
    body: axum::body::Bytes,
) -> Response {
    match attest_answer(&state, query.api_version.as_deref(), &body) {
        Ok(token) => axum::Json(json!({ "token": token })).into_response(),
        Err(error) => error.into_response(),
    }
}

/// base64url with or without padding (MAA accepts both; so do we).
fn decode_base64url(field: &str, text: &str) -> Result<Vec<u8>, ErrorAnswer> {
    BASE64URL_NO_PAD
        .decode(text.trim().trim_end_matches('='))
        .map_err(|_| invalid(format!("{field} is not base64url")))
}

fn attest_answer(
    state: &AppState,
    api_version: Option<&str>,
    body: &[u8],
) -> Result<String, ErrorAnswer> {
    match api_version {
        Some(v) if MAA_API_VERSIONS.contains(&v) => {}
        Some(v) => {
            return Err(invalid(format!(
                "api-version '{v}' is not supported ({})",
                MAA_API_VERSIONS.join(", ")
            )));
        }
        None => return Err(invalid("the api-version query parameter is required")),
    }
    let body = json_body(body)?;
    let report_field = body
        .get("report")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("report is required"))?;
    let report_json: Value = serde_json::from_slice(&decode_base64url("report", report_field)?)
        .map_err(|e| invalid(format!("report is not base64url JSON: {e}")))?;
    let snp_report = report_json
        .get("SnpReport")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("report.SnpReport is required"))?;
    let snp_report = decode_base64url("report.SnpReport", snp_report)?;
    let chain = report_json
        .get("VcekCertChain")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("report.VcekCertChain is required"))?;
    let chain = decode_base64url("report.VcekCertChain", chain)?;
    let runtime = body
        .get("runtimeData")
        .ok_or_else(|| invalid("runtimeData is required"))?;
    match runtime.get("dataType").and_then(Value::as_str) {
        Some("JSON") => {}
        other => {
            return Err(invalid(format!(
                "runtimeData.dataType must be JSON, not {other:?}"
            )));
        }
    }
    let runtime_data = runtime
        .get("data")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("runtimeData.data is required"))?;
    let runtime_data = decode_base64url("runtimeData.data", runtime_data)?;
    let nonce = match body.get("nonce") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(invalid("nonce must be a number")),
    };
    Ok(state.authority.attest(
        &state.issuer,
        &snp_report,
        &chain,
        &runtime_data,
        nonce.as_deref(),
    )?)
}

async fn openid_configuration(State(state): Shared) -> Response {
    axum::Json(json!({
        "issuer": state.issuer,
        "jwks_uri": format!("{}/certs", state.issuer),
        "id_token_signing_alg_values_supported": ["RS256"],
        "claims_supported": ["x-ms-attestation-type", "x-ms-compliance-status", "x-ms-sevsnpvm-hostdata"],
    }))
    .into_response()
}

async fn certs(State(state): Shared) -> Response {
    axum::Json(state.authority.jwks()).into_response()
}

/// A running authority: its address, and a handle that stops it.
pub struct RunningAuthority {
    local_addr: SocketAddr,
    ca_pem: String,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RunningAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningAuthority")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl RunningAuthority {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `https://127.0.0.1:P`: the token issuer and the base of every route.
    pub fn url(&self) -> String {
        format!("https://{}", self.local_addr)
    }

    /// The root certificate (PEM) to pin.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Stops accepting and waits for the accept loop to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

fn tls_config(authority: &VirtualAuthority) -> Result<rustls::ServerConfig, ServeError> {
    let tls = |m: String| ServeError::Tls(m);
    let chain: Vec<rustls::pki_types::CertificateDer<'static>> =
        pem::parse_many(authority.tls_chain_pem())
            .map_err(|e| tls(e.to_string()))?
            .into_iter()
            .filter(|b| b.tag() == "CERTIFICATE")
            .map(|b| rustls::pki_types::CertificateDer::from(b.into_contents()))
            .collect();
    let key = pem::parse(authority.tls_key_pem()).map_err(|e| tls(e.to_string()))?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.into_contents().into());
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| tls(e.to_string()))
}

/// Serves `authority` on `listen` over HTTPS. The issuer is `https://` + the bound address (with
/// port 0, the port the system chose).
///
/// # Errors
/// [`ServeError`].
pub async fn serve(
    authority: VirtualAuthority,
    listen: SocketAddr,
) -> Result<RunningAuthority, ServeError> {
    let config = Arc::new(tls_config(&authority)?);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: listen,
        source,
    })?;
    let ca_pem = authority.ca_pem().to_owned();
    let app = router(authority, format!("https://{local_addr}"));
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stopped.changed() => return,
            };
            let Ok((stream, _peer)) = accepted else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(Ok(tls)) =
                    tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok(RunningAuthority {
        local_addr,
        ca_pem,
        stop,
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> (tempfile::TempDir, AppState) {
        let dir = tempfile::tempdir().unwrap();
        let authority = VirtualAuthority::open(dir.path()).unwrap();
        (
            dir,
            AppState {
                authority,
                issuer: "https://127.0.0.1:1".into(),
            },
        )
    }

    #[test]
    fn report_requests_are_checked_field_by_field() {
        let (_dir, state) = state();
        let ok = json!({"report_data": "00".repeat(64), "security_policy": BASE64.encode("p")});
        assert!(virtual_report_answer(&state, ok.to_string().as_bytes()).is_ok());
        for (body, needle) in [
            (json!({}), "report_data"),
            (json!({"report_data": "00"}), "128 hex"),
            (json!({"report_data": "00".repeat(64)}), "security_policy"),
            (
                json!({"report_data": "00".repeat(64), "security_policy": "!"}),
                "base64",
            ),
            (
                json!({"report_data": "00".repeat(64), "security_policy": "", "debuggable": 1}),
                "boolean",
            ),
        ] {
            let error = virtual_report_answer(&state, body.to_string().as_bytes()).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST);
            assert!(error.message.contains(needle), "{}", error.message);
        }
        assert!(virtual_report_answer(&state, b"{").is_err());
    }

    #[test]
    fn attest_requests_need_a_known_api_version_and_every_field() {
        let (_dir, state) = state();
        let body = b"{}";
        assert!(
            attest_answer(&state, None, body)
                .unwrap_err()
                .message
                .contains("api-version")
        );
        assert!(
            attest_answer(&state, Some("2019-01-01"), body)
                .unwrap_err()
                .message
                .contains("not supported")
        );
        assert!(
            attest_answer(&state, Some("2020-10-01"), body)
                .unwrap_err()
                .message
                .contains("report")
        );
    }
}
