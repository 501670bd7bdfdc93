//! The client side of the governance wire: an HTTPS client that trusts only the pinned service
//! certificate, optionally presents a member certificate (mutual TLS, as the reference's
//! cgs-client does for `/app` calls), sends COSE and JSON bodies, turns failures into errors that
//! name the URL and carry the service's `{"error":{"code","message"}}`, and waits for commit the
//! way the reference client does (poll every 500 ms for up to 5 s, AC
//! `HttpResponseMessageExtensions.cs`).
//!
//! The pinned certificate is the only trust anchor (no built-in roots); the server's certificate
//! chain must lead to it and name the endpoint's host or IP address. The TLS stack is rustls with
//! the ring provider chosen explicitly, like the server. The same client works against Azure
//! Managed CCF: nothing here is specific to encfs' service.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::server::conventions::{COSE_CONTENT_TYPE, TRANSACTION_ID_HEADER};
use crate::server::tls::{
    TlsSetupError, certificates_from_pem, certified_key, private_key_from_pem, ring_provider,
};

/// What went wrong talking to the governance service. Messages name the URL, never key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The endpoint URL is not an `https://` URL.
    #[error("the governance endpoint {url} is not a valid https URL: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The pinned service certificate PEM holds no readable certificate.
    #[error("the pinned service certificate for {url} holds no readable CERTIFICATE block")]
    ServiceCertificateUnreadable {
        /// The endpoint it was meant for.
        url: String,
    },
    /// The pinned service certificate, or the certificate the service presented, has expired
    /// (or is not valid yet).
    #[error("the service certificate for {url} is expired or not yet valid: {detail}")]
    ServiceCertificateExpired {
        /// The endpoint.
        url: String,
        /// The validity period or rustls' reason.
        detail: String,
    },
    /// The service presented a certificate that does not lead to the pinned service certificate:
    /// the wrong service, or the wrong pinned certificate.
    #[error(
        "the service at {url} is not the pinned service: its certificate is not issued by the \
         pinned service certificate ({detail})"
    )]
    ServiceCertificateMismatch {
        /// The endpoint.
        url: String,
        /// rustls' reason.
        detail: String,
    },
    /// The service's certificate does not name the endpoint's host or IP address.
    #[error("the service certificate presented by {url} is not valid for that host: {detail}")]
    ServiceNameMismatch {
        /// The endpoint.
        url: String,
        /// rustls' reason.
        detail: String,
    },
    /// Another TLS failure (e.g. the service refused the client certificate).
    #[error("TLS with {url} failed: {detail}")]
    Tls {
        /// The endpoint.
        url: String,
        /// rustls' reason.
        detail: String,
    },
    /// The member certificate or key could not be used (unreadable, or the key does not match).
    #[error("the member certificate and key cannot be used for {url}: {reason}")]
    ClientIdentity {
        /// The endpoint.
        url: String,
        /// Why (never the key).
        reason: String,
    },
    /// Nothing answered at the endpoint (connection refused, no route, DNS).
    #[error("the governance service at {url} is unreachable: {detail}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// The operating system's reason.
        detail: String,
    },
    /// The service did not answer in time.
    #[error("the governance service at {url} did not answer in time")]
    Timeout {
        /// The URL called.
        url: String,
    },
    /// Another HTTP-level failure (connection reset mid-response, protocol error).
    #[error("the request to {url} failed: {detail}")]
    Http {
        /// The URL called.
        url: String,
        /// The reason.
        detail: String,
    },
    /// The service answered with an error status. `code` and `message` are the service's own
    /// (`{"error":{"code","message"}}`), or the raw body as message if it was not in that shape.
    #[error("{url} answered {status} {code}: {message}")]
    Service {
        /// The URL called.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The service's error code (empty if the body had none).
        code: String,
        /// The service's message.
        message: String,
    },
    /// The request could not be built (e.g. a body that does not serialise).
    #[error("the request to {url} could not be built: {detail}")]
    InvalidRequest {
        /// The URL to be called.
        url: String,
        /// What was wrong.
        detail: String,
    },
    /// A successful answer whose body or headers could not be read as expected.
    #[error("unexpected answer from {url}: {detail}")]
    InvalidResponse {
        /// The URL called.
        url: String,
        /// What was wrong.
        detail: String,
    },
    /// The transaction did not reach `Committed` within the commit wait.
    #[error(
        "transaction {transaction_id} was not committed within {waited:?} (last status {last_status} from {url})"
    )]
    CommitTimeout {
        /// The status URL polled.
        url: String,
        /// The transaction waited for.
        transaction_id: TransactionId,
        /// How long it waited.
        waited: Duration,
        /// The last status seen.
        last_status: String,
    },
    /// The service reported the transaction `Invalid` (rolled back).
    #[error("transaction {transaction_id} is Invalid according to {url} (it was rolled back)")]
    TransactionInvalid {
        /// The status URL polled.
        url: String,
        /// The transaction.
        transaction_id: TransactionId,
    },
}

/// A CCF transaction id, `{view}.{seqno}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId {
    /// The consensus view.
    pub view: u64,
    /// The sequence number.
    pub seqno: u64,
}

impl std::fmt::Display for TransactionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.view, self.seqno)
    }
}

impl std::str::FromStr for TransactionId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (view, seqno) = text
            .split_once('.')
            .ok_or_else(|| format!("transaction id {text:?} is not VIEW.SEQNO"))?;
        let parse = |part: &str| {
            (!part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit()))
                .then(|| part.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| format!("transaction id {text:?} is not VIEW.SEQNO"))
        };
        Ok(Self {
            view: parse(view)?,
            seqno: parse(seqno)?,
        })
    }
}

/// The member certificate (chain) and private key a client presents for mutual TLS.
pub struct ClientIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("chain_len", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Drop for ClientIdentity {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl ClientIdentity {
    /// Reads the member certificate PEM and its private key PEM (PKCS#8, SEC1 or PKCS#1).
    /// Whether the key matches the certificate is checked when the client is built.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsSetupError> {
        let chain =
            certificates_from_pem(cert_pem).ok_or_else(|| TlsSetupError::NoCertificate {
                what: "member certificate".into(),
            })?;
        let key = private_key_from_pem(key_pem).ok_or_else(|| TlsSetupError::NoPrivateKey {
            what: "member key".into(),
        })?;
        Ok(Self { chain, key })
    }
}

/// Which status route the commit wait polls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitStatusRoute {
    /// `GET /gov/service/transactions/{id}?api-version=2024-07-01` (CCF gov API 2024-07-01).
    GovServiceTransactions,
    /// `GET /gov/tx?transaction_id={id}` (what the reference's cgs-client polls for gov writes).
    GovTx,
    /// `GET /app/tx?transaction_id={id}` (what the reference's cgs-client polls for app writes).
    AppTx,
    /// A path template with `{transaction_id}` in it.
    Custom(String),
}

impl CommitStatusRoute {
    /// The path and query for `transaction_id`.
    pub fn path(&self, transaction_id: &TransactionId) -> String {
        match self {
            Self::GovServiceTransactions => {
                format!("/gov/service/transactions/{transaction_id}?api-version=2024-07-01")
            }
            Self::GovTx => format!("/gov/tx?transaction_id={transaction_id}"),
            Self::AppTx => format!("/app/tx?transaction_id={transaction_id}"),
            Self::Custom(template) => {
                template.replace("{transaction_id}", &transaction_id.to_string())
            }
        }
    }
}

/// How the commit wait polls: the reference's 500 ms interval and 5 s bound by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitWait {
    /// The pause between polls.
    pub interval: Duration,
    /// The longest total wait.
    pub timeout: Duration,
}

impl Default for CommitWait {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(500),
            timeout: Duration::from_secs(5),
        }
    }
}

/// A request body.
#[derive(Debug, Clone)]
pub enum RequestBody {
    /// No body.
    Empty,
    /// A JSON document (`Content-Type: application/json`).
    Json(Vec<u8>),
    /// A COSE_Sign1 envelope (`Content-Type: application/cose`).
    Cose(Vec<u8>),
}

impl RequestBody {
    /// `value` serialised as a JSON body.
    pub fn json(value: &impl serde::Serialize) -> Result<Self, serde_json::Error> {
        serde_json::to_vec(value).map(Self::Json)
    }
}

/// A successful (status < 400) answer.
#[derive(Debug, Clone)]
pub struct ServiceResponse {
    /// The URL called.
    pub url: String,
    /// The HTTP status.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl ServiceResponse {
    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, TransportError> {
        serde_json::from_slice(&self.body).map_err(|error| TransportError::InvalidResponse {
            url: self.url.clone(),
            detail: format!("the body is not the expected JSON: {error}"),
        })
    }

    /// The `x-ms-ccf-transaction-id` header, if present; an error if present but malformed.
    pub fn transaction_id(&self) -> Result<Option<TransactionId>, TransportError> {
        let Some(value) = self.headers.get(TRANSACTION_ID_HEADER) else {
            return Ok(None);
        };
        value
            .to_str()
            .map_err(|_| "not ASCII".to_owned())
            .and_then(str::parse)
            .map(Some)
            .map_err(|detail| TransportError::InvalidResponse {
                url: self.url.clone(),
                detail: format!("bad {TRANSACTION_ID_HEADER} header: {detail}"),
            })
    }
}

/// Options of [`GovernanceTransport::new`].
#[derive(Debug, Clone, Copy)]
pub struct TransportOptions {
    /// TCP connect deadline.
    pub connect_timeout: Duration,
    /// Whole-request deadline.
    pub request_timeout: Duration,
    /// How long an idle pooled connection is kept; keep it below the server's header-read
    /// timeout so the client never reuses a connection the server is about to close.
    pub pool_idle_timeout: Duration,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            pool_idle_timeout: Duration::from_secs(20),
        }
    }
}

/// A pinned HTTPS client for one governance endpoint.
#[derive(Debug, Clone)]
pub struct GovernanceTransport {
    client: reqwest::Client,
    endpoint: String,
}

impl GovernanceTransport {
    /// A client for `endpoint` (`https://host:port`, a path prefix allowed) that trusts only
    /// `service_cert_pem` and, with `identity`, presents that member certificate.
    pub fn new(
        endpoint: &str,
        service_cert_pem: &str,
        identity: Option<&ClientIdentity>,
        options: TransportOptions,
    ) -> Result<Self, TransportError> {
        let url = endpoint.trim_end_matches('/').to_owned();
        let parsed =
            reqwest::Url::parse(&url).map_err(|error| TransportError::InvalidEndpoint {
                url: endpoint.to_owned(),
                reason: error.to_string(),
            })?;
        if parsed.scheme() != "https" || parsed.host_str().is_none() {
            return Err(TransportError::InvalidEndpoint {
                url: endpoint.to_owned(),
                reason: "the scheme must be https and a host is required".into(),
            });
        }
        let anchors = certificates_from_pem(service_cert_pem)
            .ok_or_else(|| TransportError::ServiceCertificateUnreadable { url: url.clone() })?;
        let mut roots = rustls::RootCertStore::empty();
        for anchor in &anchors {
            check_validity_period(anchor, &url)?;
            roots
                .add(anchor.clone())
                .map_err(|_| TransportError::ServiceCertificateUnreadable { url: url.clone() })?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(ring_provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|error| TransportError::Tls {
                url: url.clone(),
                detail: error.to_string(),
            })?
            .with_root_certificates(roots);
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some(identity) => {
                let certified = certified_key(&identity.chain, &identity.key).map_err(|error| {
                    TransportError::ClientIdentity {
                        url: url.clone(),
                        reason: error.to_string(),
                    }
                })?;
                builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
                    certified,
                )))
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .https_only(true)
            .http1_only()
            .no_proxy()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .pool_idle_timeout(options.pool_idle_timeout)
            .build()
            .map_err(|error| TransportError::Tls {
                url: url.clone(),
                detail: error.to_string(),
            })?;
        Ok(Self {
            client,
            endpoint: url,
        })
    }

    /// The endpoint, without a trailing slash.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The full URL of `path_and_query` (which starts with `/`).
    pub fn url(&self, path_and_query: &str) -> String {
        if path_and_query.starts_with('/') {
            format!("{}{path_and_query}", self.endpoint)
        } else {
            format!("{}/{path_and_query}", self.endpoint)
        }
    }

    /// Sends one request; statuses ≥ 400 become [`TransportError::Service`].
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: RequestBody,
    ) -> Result<ServiceResponse, TransportError> {
        let url = self.url(path_and_query);
        let mut request = self.client.request(method, &url);
        request = match body {
            RequestBody::Empty => request,
            RequestBody::Json(bytes) => request
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(bytes),
            RequestBody::Cose(bytes) => request
                .header(CONTENT_TYPE, HeaderValue::from_static(COSE_CONTENT_TYPE))
                .body(bytes),
        };
        let response = request
            .send()
            .await
            .map_err(|error| classify(&url, &error))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|error| classify(&url, &error))?;
        if status >= 400 {
            let (code, message) = service_error(&body);
            return Err(TransportError::Service {
                url,
                status,
                code,
                message,
            });
        }
        Ok(ServiceResponse {
            url,
            status,
            headers,
            body,
        })
    }

    /// `GET path_and_query`.
    pub async fn get(&self, path_and_query: &str) -> Result<ServiceResponse, TransportError> {
        self.send(Method::GET, path_and_query, RequestBody::Empty)
            .await
    }

    /// `POST path_and_query` with a COSE_Sign1 body.
    pub async fn post_cose(
        &self,
        path_and_query: &str,
        envelope: Vec<u8>,
    ) -> Result<ServiceResponse, TransportError> {
        self.send(Method::POST, path_and_query, RequestBody::Cose(envelope))
            .await
    }

    /// `method path_and_query` with a JSON body.
    pub async fn send_json(
        &self,
        method: Method,
        path_and_query: &str,
        value: &impl serde::Serialize,
    ) -> Result<ServiceResponse, TransportError> {
        let body = RequestBody::json(value).map_err(|error| TransportError::InvalidRequest {
            url: self.url(path_and_query),
            detail: format!("the JSON body cannot be serialised: {error}"),
        })?;
        self.send(method, path_and_query, body).await
    }

    /// Polls `route` for `transaction_id` until the service reports `Committed` (as the reference
    /// client does: every `wait.interval`, for at most `wait.timeout`). `Invalid` is an error at
    /// once; `Pending` and `Unknown` keep polling.
    pub async fn wait_for_commit(
        &self,
        transaction_id: TransactionId,
        route: &CommitStatusRoute,
        wait: CommitWait,
    ) -> Result<(), TransportError> {
        let path = route.path(&transaction_id);
        let started = tokio::time::Instant::now();
        loop {
            let response = self.get(&path).await?;
            let status: serde_json::Value = response.json()?;
            let status = status
                .get("status")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("")
                .to_owned();
            match status.as_str() {
                "Committed" => return Ok(()),
                "Invalid" => {
                    return Err(TransportError::TransactionInvalid {
                        url: response.url,
                        transaction_id,
                    });
                }
                _ => {}
            }
            if started.elapsed() + wait.interval > wait.timeout {
                return Err(TransportError::CommitTimeout {
                    url: response.url,
                    transaction_id,
                    waited: started.elapsed(),
                    last_status: if status.is_empty() {
                        "(none)".into()
                    } else {
                        status
                    },
                });
            }
            tokio::time::sleep(wait.interval).await;
        }
    }

    /// Sends a write and, if the answer carries `x-ms-ccf-transaction-id`, waits for that
    /// transaction to commit before returning the answer.
    pub async fn send_and_wait_for_commit(
        &self,
        method: Method,
        path_and_query: &str,
        body: RequestBody,
        route: &CommitStatusRoute,
        wait: CommitWait,
    ) -> Result<ServiceResponse, TransportError> {
        let response = self.send(method, path_and_query, body).await?;
        if let Some(transaction_id) = response.transaction_id()? {
            self.wait_for_commit(transaction_id, route, wait).await?;
        }
        Ok(response)
    }
}

/// Refuses a pinned certificate outside its validity period, so the error comes before any
/// connection and says which period.
fn check_validity_period(anchor: &CertificateDer<'_>, url: &str) -> Result<(), TransportError> {
    let (_, certificate) = x509_parser::parse_x509_certificate(anchor.as_ref())
        .map_err(|_| TransportError::ServiceCertificateUnreadable { url: url.into() })?;
    let validity = certificate.validity();
    if !validity.is_valid() {
        return Err(TransportError::ServiceCertificateExpired {
            url: url.into(),
            detail: format!(
                "the pinned service certificate is valid from {} to {}",
                validity.not_before, validity.not_after
            ),
        });
    }
    Ok(())
}

/// The `code` and `message` of a CCF error body, or the body text as message.
fn service_error(body: &[u8]) -> (String, String) {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|value| value.get("error"));
    let field = |name: &str| {
        error
            .and_then(|error| error.get(name))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    match (field("code"), field("message")) {
        (Some(code), message) => (code, message.unwrap_or_default()),
        (None, _) => {
            let text = String::from_utf8_lossy(body);
            let text: String = text.chars().take(512).collect();
            (String::new(), text)
        }
    }
}

/// Maps a reqwest failure to the error that says what happened: TLS reasons first (they hide
/// under hyper's and io's errors), then connect failures and timeouts.
fn classify(url: &str, error: &reqwest::Error) -> TransportError {
    if let Some(tls) = find_rustls_error(error) {
        let detail = tls.to_string();
        let url = url.to_owned();
        return match tls {
            rustls::Error::InvalidCertificate(reason) => match reason {
                rustls::CertificateError::Expired
                | rustls::CertificateError::ExpiredContext { .. }
                | rustls::CertificateError::NotValidYet
                | rustls::CertificateError::NotValidYetContext { .. } => {
                    TransportError::ServiceCertificateExpired { url, detail }
                }
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. } => {
                    TransportError::ServiceNameMismatch { url, detail }
                }
                _ => TransportError::ServiceCertificateMismatch { url, detail },
            },
            _ => TransportError::Tls { url, detail },
        };
    }
    if error.is_timeout() {
        return TransportError::Timeout { url: url.into() };
    }
    if error.is_connect() {
        return TransportError::Unreachable {
            url: url.into(),
            detail: innermost_message(error),
        };
    }
    TransportError::Http {
        url: url.into(),
        detail: innermost_message(error),
    }
}

/// The rustls error somewhere in `error`'s source chain. `io::Error` does not report the error
/// it wraps as its source, so those are opened with `get_ref`.
fn find_rustls_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut current: Option<&'a (dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                return Some(tls);
            }
            if let Some(tls) = find_rustls_error(inner) {
                return Some(tls);
            }
        }
        current = error.source();
    }
    None
}

fn innermost_message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_ids_parse_and_print() {
        let id: TransactionId = "2.15".parse().unwrap();
        assert_eq!(id, TransactionId { view: 2, seqno: 15 });
        assert_eq!(id.to_string(), "2.15");
        for bad in ["", "2", "2.", ".3", "a.b", "2.3.4", "-1.2", "+1.2"] {
            assert!(bad.parse::<TransactionId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn commit_routes() {
        let id = TransactionId { view: 3, seqno: 42 };
        assert_eq!(
            CommitStatusRoute::GovServiceTransactions.path(&id),
            "/gov/service/transactions/3.42?api-version=2024-07-01"
        );
        assert_eq!(
            CommitStatusRoute::GovTx.path(&id),
            "/gov/tx?transaction_id=3.42"
        );
        assert_eq!(
            CommitStatusRoute::AppTx.path(&id),
            "/app/tx?transaction_id=3.42"
        );
        assert_eq!(
            CommitStatusRoute::Custom("/x/{transaction_id}".into()).path(&id),
            "/x/3.42"
        );
    }

    #[test]
    fn service_error_bodies() {
        assert_eq!(
            service_error(br#"{"error":{"code":"ProposalNotFound","message":"gone"}}"#),
            ("ProposalNotFound".into(), "gone".into())
        );
        assert_eq!(
            service_error(b"plain text"),
            (String::new(), "plain text".into())
        );
    }

    #[test]
    fn refuses_non_https_endpoints_and_unreadable_pins() {
        let error =
            GovernanceTransport::new("http://127.0.0.1:1", "", None, TransportOptions::default())
                .unwrap_err();
        assert!(
            matches!(error, TransportError::InvalidEndpoint { .. }),
            "{error}"
        );
        let error = GovernanceTransport::new(
            "https://127.0.0.1:1",
            "not a pem",
            None,
            TransportOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(error, TransportError::ServiceCertificateUnreadable { .. }),
            "{error}"
        );
    }
}
