//! CCF's HTTP conventions, as axum extractors, middleware and responses: the error body
//! `{"error":{"code","message"}}`, the gov API's `api-version` query parameter, COSE request bodies
//! (`Content-Type: application/cose`), the request body limit, the `x-ms-ccf-transaction-id`
//! header of write responses, and CCF's 404/405 bodies for unknown routes and verbs.
//!
//! The status codes, codes and messages are CCF's (sources named at each item) so that a client
//! written against Azure Managed CCF sees the same answers here. No governance logic lives here.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde::Serialize;

/// CCF's transaction-id response header (`ccf::http::headers::CCF_TX_ID`).
pub const TRANSACTION_ID_HEADER: &str = "x-ms-ccf-transaction-id";
/// The `WWW-Authenticate` value of CCF's COSE_Sign1 authentication failures (CCF `cose_auth.cpp`).
pub const COSE_WWW_AUTHENTICATE: &str = "COSE-SIGN1 realm=\"Signed request access\"";
/// The media type of COSE request bodies (`ccf::http::headervalues::contenttype::COSE`).
pub const COSE_CONTENT_TYPE: &str = "application/cose";
/// CCF's security scheme name of member COSE_Sign1 authentication, used in error details.
pub const MEMBER_COSE_SIGN1_SCHEME: &str = "member_cose_sign1";
/// CCF's default maximum request body: `default_max_body_size = "1MB"` with 1 MB = 1024² bytes
/// (CCF `include/ccf/http_configuration.h`, `ds::convert_size_string`).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// A declared body over the limit but at most this long is read and dropped before the 413 is
/// sent, so the client gets the answer; a longer one gets the 413 and the connection closed.
pub const DRAIN_OVERSIZED_BYTES: u64 = 16 << 20;

/// One entry of an error's `details` (CCF `ODataErrorDetails`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ErrorDetail {
    /// The authentication policy that failed (e.g. `member_cose_sign1`).
    pub auth_policy: String,
    /// The detail's error code.
    pub code: String,
    /// The detail's message.
    pub message: String,
}

/// An error answer in CCF's shape: a status, `{"error":{"code","message","details"?}}` and any
/// extra headers. Every handler and extractor of the service answers errors with this type.
#[derive(Debug, Clone)]
pub struct ErrorResponse {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable error code (e.g. `ProposalNotFound`).
    pub code: String,
    /// The human-readable message.
    pub message: String,
    /// CCF's optional `details` list (authentication failures carry one per policy tried).
    pub details: Vec<ErrorDetail>,
    /// Extra response headers (e.g. `WWW-Authenticate`, `Allow`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorInner<'a>,
}

#[derive(Serialize)]
struct ErrorInner<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "<[ErrorDetail]>::is_empty")]
    details: &'a [ErrorDetail],
}

impl ErrorResponse {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            details: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// A COSE_Sign1 authentication failure as CCF answers it: 401 `InvalidAuthenticationInfo`,
    /// message "Invalid authentication credentials.", one detail naming `member_cose_sign1` with
    /// `reason`, and `WWW-Authenticate: COSE-SIGN1 realm="Signed request access"` (CCF
    /// `frontend.h` `get_authenticated_identity`, `cose_auth.cpp` `set_unauthenticated_error`).
    pub fn cose_authentication_failed(reason: impl Into<String>) -> Self {
        let mut error = Self::new(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationInfo",
            "Invalid authentication credentials.",
        )
        .with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(COSE_WWW_AUTHENTICATE),
        );
        error.details.push(ErrorDetail {
            auth_policy: MEMBER_COSE_SIGN1_SCHEME.into(),
            code: "InvalidAuthenticationInfo".into(),
            message: reason.into(),
        });
        error
    }

    /// CCF's answer to a body that grew over the limit while streaming: 413
    /// `RequestBodyTooLarge`, "HTTP request body is too large (max size allowed: 1MB)" (CCF
    /// `http_parser.h` `append_body`, `http_session.h`).
    pub fn body_too_large(max_bytes: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestBodyTooLarge",
            format!(
                "HTTP request body is too large (max size allowed: {})",
                size_string(max_bytes)
            ),
        )
    }

    /// CCF's answer to a `Content-Length` over the limit: 413 `RequestBodyTooLarge`, "HTTP
    /// message body is too large (Content-Length: N, max size allowed: 1MB)" (CCF
    /// `http_parser.h` `headers_complete`).
    pub fn declared_body_too_large(content_length: u64, max_bytes: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestBodyTooLarge",
            format!(
                "HTTP message body is too large (Content-Length: {content_length}, max size \
                 allowed: {})",
                size_string(max_bytes)
            ),
        )
    }

    /// CCF's answer to an unknown path: 404 `ResourceNotFound`, "Unknown path: {path}."
    /// (CCF `frontend.h` `find_endpoint`).
    pub fn unknown_path(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!("Unknown path: {path}."),
        )
    }

    /// The JSON body bytes.
    pub fn body_json(&self) -> Vec<u8> {
        serde_json::to_vec(&ErrorBody {
            error: ErrorInner {
                code: &self.code,
                message: &self.message,
                details: &self.details,
            },
        })
        .unwrap_or_else(|_| b"{\"error\":{\"code\":\"InternalError\",\"message\":\"\"}}".to_vec())
    }
}

impl std::fmt::Display for ErrorResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ErrorResponse {}

impl IntoResponse for ErrorResponse {
    fn into_response(self) -> Response {
        let body = self.body_json();
        let mut response = (self.status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// The gov API versions CCF accepts (CCF `src/node/gov/api_version.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ApiVersion {
    /// `2023-06-01-preview`.
    Preview2023_06_01,
    /// `2024-07-01`.
    V2024_07_01,
    /// `latest`, also used when the parameter is missing.
    Latest,
}

impl ApiVersion {
    /// Every version with its query-string spelling, oldest first.
    pub const ALL: [(ApiVersion, &'static str); 3] = [
        (ApiVersion::Preview2023_06_01, "2023-06-01-preview"),
        (ApiVersion::V2024_07_01, "2024-07-01"),
        (ApiVersion::Latest, "latest"),
    ];

    /// The query-string spelling.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(version, _)| *version == self)
            .map(|(_, name)| *name)
            .unwrap_or("latest")
    }

    /// Reads `api-version` from a query string: missing → `Latest` (CCF's `api_version_adapter`
    /// default), unknown → 400 `UnsupportedApiVersionValue` with CCF's message.
    pub fn from_query(query: Option<&str>) -> Result<Self, ErrorResponse> {
        let value = query.and_then(|query| {
            url_query_pairs(query)
                .find(|(name, _)| name == "api-version")
                .map(|(_, value)| value)
        });
        let Some(value) = value else {
            return Ok(ApiVersion::Latest);
        };
        Self::ALL
            .iter()
            .find(|(_, name)| *name == value)
            .map(|(version, _)| *version)
            .ok_or_else(|| {
                let supported: Vec<&str> = Self::ALL.iter().map(|(_, name)| *name).collect();
                ErrorResponse::new(
                    StatusCode::BAD_REQUEST,
                    "UnsupportedApiVersionValue",
                    format!(
                        "Unsupported api-version '{value}'. The supported api-versions are: {}",
                        supported.join(", ")
                    ),
                )
            })
    }
}

/// `name=value` pairs of a query string, percent-decoded (`+` is a space, as CCF decodes).
fn url_query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        let escaped = (byte == b'%')
            .then(|| bytes.get(index + 1..index + 3))
            .flatten()
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (byte, escaped) {
            (_, Some(decoded)) => {
                out.push(decoded);
                index += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                index += 1;
            }
            (other, None) => {
                out.push(other);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A size as CCF's unit strings print it: `1MB` for 1024² bytes, `16KB`, or plain bytes.
fn size_string(bytes: usize) -> String {
    const KB: usize = 1024;
    match bytes {
        0 => "0".into(),
        b if b % (KB * KB * KB) == 0 => format!("{}GB", b / (KB * KB * KB)),
        b if b % (KB * KB) == 0 => format!("{}MB", b / (KB * KB)),
        b if b % KB == 0 => format!("{}KB", b / KB),
        b => b.to_string(),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ApiVersion {
    type Rejection = ErrorResponse;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(version) = parts.extensions.get::<ApiVersion>() {
            return Ok(*version);
        }
        ApiVersion::from_query(parts.uri.query())
    }
}

/// Middleware for the `/gov` routes: checks `api-version` (400 `UnsupportedApiVersionValue` for an
/// unknown one) and stores the [`ApiVersion`] in the request's extensions. Attach it with
/// `route_layer(axum::middleware::from_fn(require_api_version))` so that unknown paths still get
/// CCF's 404 first, as in CCF.
pub async fn require_api_version(mut request: Request, next: Next) -> Response {
    match ApiVersion::from_query(request.uri().query()) {
        Ok(version) => {
            request.extensions_mut().insert(version);
            next.run(request).await
        }
        Err(error) => error.into_response(),
    }
}

/// The raw bytes of a COSE request body. Requires `Content-Type: application/cose` exactly, as
/// CCF's `MemberCOSESign1AuthnPolicy` does; otherwise 401 `InvalidAuthenticationInfo` with CCF's
/// reason ("Missing content-type header" / "Content type is not set to application/cose") and
/// the COSE `WWW-Authenticate` header. Decoding and verifying the envelope is the caller's job.
#[derive(Debug, Clone)]
pub struct CoseBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for CoseBody {
    type Rejection = ErrorResponse;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match request.headers().get(header::CONTENT_TYPE) {
            None => {
                return Err(ErrorResponse::cose_authentication_failed(
                    "Missing content-type header",
                ));
            }
            Some(value) if value.as_bytes() != COSE_CONTENT_TYPE.as_bytes() => {
                return Err(ErrorResponse::cose_authentication_failed(format!(
                    "Content type is not set to {COSE_CONTENT_TYPE}"
                )));
            }
            Some(_) => {}
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                ErrorResponse::new(
                    rejection.status(),
                    "InvalidInput",
                    format!("Could not read the request body: {}", rejection.body_text()),
                )
            })?;
        Ok(CoseBody(bytes))
    }
}

/// Sets `x-ms-ccf-transaction-id: {view}.{seqno}` on a (write) response.
pub fn set_transaction_id(headers: &mut HeaderMap, view: u64, seqno: u64) {
    if let Ok(value) = HeaderValue::from_str(&format!("{view}.{seqno}")) {
        headers.insert(HeaderName::from_static(TRANSACTION_ID_HEADER), value);
    }
}

/// `response` with `x-ms-ccf-transaction-id: {view}.{seqno}` added.
pub fn with_transaction_id(response: impl IntoResponse, view: u64, seqno: u64) -> Response {
    let mut response = response.into_response();
    set_transaction_id(response.headers_mut(), view, seqno);
    response
}

/// The fallback handler for unknown paths: CCF's 404 `ResourceNotFound` body.
pub async fn unknown_path(request: Request) -> ErrorResponse {
    ErrorResponse::unknown_path(request.uri().path())
}

/// Gives axum's bare 405 answers CCF's body: 405 `UnsupportedHttpVerb`, "Allowed methods for
/// '{path}' are: OPTIONS, …." with the `Allow` header kept; an `OPTIONS` request to a known path
/// gets 204 with that `Allow` header instead (CCF `frontend.h` `find_endpoint`).
/// The accept loop applies it to every response: axum adds the `Allow` header after any
/// `Router::layer` middleware has run, so this cannot be a router layer.
pub fn ccf_method_not_allowed(method: &Method, path: &str, response: Response) -> Response {
    if response.status() != StatusCode::METHOD_NOT_ALLOWED
        || response.headers().contains_key(header::CONTENT_TYPE)
    {
        return response;
    }
    let mut allowed = vec!["OPTIONS".to_owned()];
    if let Some(allow) = response
        .headers()
        .get(header::ALLOW)
        .and_then(|value| value.to_str().ok())
    {
        allowed.extend(
            allow
                .split(',')
                .map(|verb| verb.trim().to_owned())
                .filter(|verb| !verb.is_empty() && verb != "OPTIONS"),
        );
    }
    let allow_value = HeaderValue::from_str(&allowed.join(", "))
        .unwrap_or_else(|_| HeaderValue::from_static("OPTIONS"));
    if method == Method::OPTIONS {
        let mut response = StatusCode::NO_CONTENT.into_response();
        response.headers_mut().insert(header::ALLOW, allow_value);
        return response;
    }
    let message = format!(
        "Allowed methods for '{path}' are: {}.",
        allow_value.to_str().unwrap_or("OPTIONS")
    );
    ErrorResponse::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "UnsupportedHttpVerb",
        message,
    )
    .with_header(header::ALLOW, allow_value)
    .into_response()
}

/// The body limit, as middleware state.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit {
    /// The largest request body accepted, in bytes.
    pub max_bytes: usize,
    /// How long reading the whole body may take.
    pub read_timeout: std::time::Duration,
}

/// Middleware that reads the whole request body (as CCF does before dispatch) up to the limit:
/// a `Content-Length` or a streamed body over it gets 413 `RequestBodyTooLarge` and the
/// connection is closed, as CCF closes it; a body not complete within the read timeout gets 408
/// `RequestTimeout`.
pub async fn limit_body(
    axum::extract::State(limit): axum::extract::State<BodyLimit>,
    request: Request,
    next: Next,
) -> Response {
    let close = |error: ErrorResponse| {
        let mut response = error.into_response();
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if let Some(length) = declared.filter(|length| *length > limit.max_bytes as u64) {
        // A client that sends its whole body before reading the answer (reqwest does) would see
        // a broken pipe instead of the 413 if the connection closed now: read and drop a
        // moderately oversized body first, frame by frame, so nothing of it is kept.
        if length <= DRAIN_OVERSIZED_BYTES {
            let mut body = request.into_body();
            let drain = async { while let Some(Ok(_frame)) = body.frame().await {} };
            let _ = tokio::time::timeout(limit.read_timeout, drain).await;
        }
        return close(ErrorResponse::declared_body_too_large(
            length,
            limit.max_bytes,
        ));
    }
    let (parts, body) = request.into_parts();
    let limited = http_body_util::Limited::new(body, limit.max_bytes);
    let collected = tokio::time::timeout(limit.read_timeout, limited.collect()).await;
    let bytes = match collected {
        Err(_elapsed) => {
            return close(ErrorResponse::new(
                StatusCode::REQUEST_TIMEOUT,
                "RequestTimeout",
                "The request body was not received in time",
            ));
        }
        Ok(Err(error)) => {
            if error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return close(ErrorResponse::body_too_large(limit.max_bytes));
            }
            return ErrorResponse::new(
                StatusCode::BAD_REQUEST,
                "InvalidInput",
                "Unable to read the HTTP request body",
            )
            .into_response();
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Adds the conventions to a router: the body limit (and axum's own limit raised to match) and
/// CCF's 404 for unknown paths. CCF's 405 body is added by the accept loop
/// ([`ccf_method_not_allowed`]); `/gov` routes still need [`require_api_version`] as a route
/// layer.
pub fn with_ccf_conventions(router: axum::Router, limit: BodyLimit) -> axum::Router {
    router
        .fallback(unknown_path)
        .layer(axum::middleware::from_fn_with_state(limit, limit_body))
        .layer(axum::extract::DefaultBodyLimit::max(limit.max_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_version_as_ccf_reads_it() {
        assert_eq!(ApiVersion::from_query(None).unwrap(), ApiVersion::Latest);
        assert_eq!(
            ApiVersion::from_query(Some("a=b")).unwrap(),
            ApiVersion::Latest
        );
        assert_eq!(
            ApiVersion::from_query(Some("api-version=2024-07-01")).unwrap(),
            ApiVersion::V2024_07_01
        );
        assert_eq!(
            ApiVersion::from_query(Some("x=1&api-version=2023-06-01-preview")).unwrap(),
            ApiVersion::Preview2023_06_01
        );
        assert_eq!(
            ApiVersion::from_query(Some("api-version=latest")).unwrap(),
            ApiVersion::Latest
        );
        let error = ApiVersion::from_query(Some("api-version=2022-01-01")).unwrap_err();
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert_eq!(error.code, "UnsupportedApiVersionValue");
        assert_eq!(
            error.message,
            "Unsupported api-version '2022-01-01'. The supported api-versions are: \
             2023-06-01-preview, 2024-07-01, latest"
        );
        for (version, name) in ApiVersion::ALL {
            assert_eq!(version.as_str(), name);
        }
    }

    #[test]
    fn percent_decoding_of_query_values() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%+1"), "% 1");
    }

    #[test]
    fn error_body_shape() {
        let body =
            ErrorResponse::new(StatusCode::NOT_FOUND, "ProposalNotFound", "no such").body_json();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error":{"code":"ProposalNotFound","message":"no such"}})
        );
        let body =
            ErrorResponse::cose_authentication_failed("Signer is not a known member").body_json();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["code"], "InvalidAuthenticationInfo");
        assert_eq!(
            json["error"]["details"][0]["message"],
            "Signer is not a known member"
        );
        assert_eq!(
            json["error"]["details"][0]["auth_policy"],
            "member_cose_sign1"
        );
    }

    #[test]
    fn sizes_print_as_ccf_prints_them() {
        assert_eq!(size_string(1024 * 1024), "1MB");
        assert_eq!(size_string(16 * 1024), "16KB");
        assert_eq!(size_string(1000), "1000");
        assert_eq!(
            ErrorResponse::body_too_large(DEFAULT_MAX_BODY_BYTES).message,
            "HTTP request body is too large (max size allowed: 1MB)"
        );
        assert_eq!(
            ErrorResponse::declared_body_too_large(2_000_000, DEFAULT_MAX_BODY_BYTES).message,
            "HTTP message body is too large (Content-Length: 2000000, max size allowed: 1MB)"
        );
    }

    #[test]
    fn transaction_id_header() {
        let response = with_transaction_id(StatusCode::OK, 2, 15);
        assert_eq!(response.headers()[TRANSACTION_ID_HEADER], "2.15");
    }
}
