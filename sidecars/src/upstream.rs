//! The HTTP calls the sidecars make (identity endpoint, Key Vault, the skr sidecar) and what a
//! failed one said, reduced to a status, a code and a short message — never a token, never a
//! body that could hold key material (only the `error` members of a JSON error body are kept).

use serde_json::Value;
use zeroize::Zeroizing;

use crate::endpoint::Endpoint;

/// Longest upstream message kept.
const MESSAGE_LIMIT: usize = 300;

/// A failed call to another service.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// No HTTP answer (connection refused, TLS failure, timeout).
    #[error("{service} at {url} is unreachable: {reason}")]
    Unreachable {
        /// Which service (`identity endpoint`, `key vault`, `skr sidecar`).
        service: &'static str,
        /// The URL, without its query.
        url: String,
        /// Why.
        reason: String,
    },
    /// An HTTP error status.
    #[error("{service} at {url} answered {status}: {code}: {message}")]
    Status {
        /// Which service.
        service: &'static str,
        /// The URL, without its query.
        url: String,
        /// The status.
        status: u16,
        /// The error code from the body (`Forbidden`, `SecretNotFound`, …), or `Http<status>`.
        code: String,
        /// The error message from the body.
        message: String,
    },
    /// A success status with a body that lacks what was asked for.
    #[error("{service} at {url} answered without {member}")]
    Malformed {
        /// Which service.
        service: &'static str,
        /// The URL, without its query.
        url: String,
        /// The missing member.
        member: &'static str,
    },
}

impl UpstreamError {
    /// The status to propagate: the upstream's own, or 502 when there was no answer.
    pub fn status(&self) -> u16 {
        match self {
            Self::Status { status, .. } => *status,
            Self::Unreachable { .. } | Self::Malformed { .. } => 502,
        }
    }
}

fn shorten(text: &str) -> String {
    let mut out: String = text.chars().take(MESSAGE_LIMIT).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// The code and message of an error body: Key Vault / ODataError `{"error":{"code","message"}}`,
/// the skr sidecar's `{"error":"…"}`, or OAuth's `{"error","error_description"}`.
pub fn error_summary(status: u16, body: &[u8]) -> (String, String) {
    let fallback_code = format!("Http{status}");
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return (fallback_code, "(no JSON error body)".into());
    };
    match value.get("error") {
        Some(Value::Object(error)) => (
            error
                .get("code")
                .and_then(Value::as_str)
                .map(shorten)
                .unwrap_or(fallback_code),
            error
                .get("message")
                .and_then(Value::as_str)
                .map(shorten)
                .unwrap_or_default(),
        ),
        Some(Value::String(text)) => {
            let description = value.get("error_description").and_then(Value::as_str);
            match description {
                Some(description) => (shorten(text), shorten(description)),
                None => (fallback_code, shorten(text)),
            }
        }
        _ => (fallback_code, "(no error member)".into()),
    }
}

/// `url` without its query (which may name clients, never secrets, but is noise in errors).
fn without_query(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_owned()
}

/// Sends `request` and returns the JSON body of a success, or the failure.
pub async fn call_json(
    service: &'static str,
    url: &str,
    request: reqwest::RequestBuilder,
) -> Result<Value, UpstreamError> {
    let url = without_query(url);
    let response = request
        .send()
        .await
        .map_err(|e| UpstreamError::Unreachable {
            service,
            url: url.clone(),
            reason: e.without_url().to_string(),
        })?;
    let status = response.status().as_u16();
    let body = Zeroizing::new(
        response
            .bytes()
            .await
            .map_err(|e| UpstreamError::Unreachable {
                service,
                url: url.clone(),
                reason: e.without_url().to_string(),
            })?
            .to_vec(),
    );
    if !(200..300).contains(&status) {
        let (code, message) = error_summary(status, &body);
        return Err(UpstreamError::Status {
            service,
            url,
            status,
            code,
            message,
        });
    }
    serde_json::from_slice(&body).map_err(|_| UpstreamError::Malformed {
        service,
        url,
        member: "a JSON body",
    })
}

/// Takes a string member out of a JSON answer, into a buffer that zeroizes on drop.
pub fn take_string(
    service: &'static str,
    url: &str,
    mut value: Value,
    member: &'static str,
) -> Result<Zeroizing<String>, UpstreamError> {
    match value.get_mut(member).map(Value::take) {
        Some(Value::String(text)) => Ok(Zeroizing::new(text)),
        _ => Err(UpstreamError::Malformed {
            service,
            url: without_query(url),
            member,
        }),
    }
}

/// The managed-identity-shaped token endpoint (the reference's identity sidecar on :8290).
#[derive(Clone, Debug)]
pub struct IdentityEndpoint {
    endpoint: Endpoint,
}

/// The token path of the identity endpoint.
const TOKEN_PATH: &str = "/metadata/identity/oauth2/token";

impl IdentityEndpoint {
    /// An identity endpoint at `text` (`http://127.0.0.1:8290`).
    pub fn parse(text: &str) -> Result<Self, crate::endpoint::EndpointError> {
        Ok(Self {
            endpoint: Endpoint::parse("identity endpoint", text)?,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        self.endpoint.base()
    }

    /// A token in the IMDS form (`api-version=2018-02-01&resource=…`, `Metadata: true` →
    /// `access_token`), what the reference's skr sidecar asks when a release names no token.
    pub async fn imds_token(
        &self,
        http: &reqwest::Client,
        resource: &str,
    ) -> Result<Zeroizing<String>, UpstreamError> {
        let url = format!("{}{TOKEN_PATH}", self.endpoint.base());
        let request = http
            .get(&url)
            .header("Metadata", "true")
            .query(&[("api-version", "2018-02-01"), ("resource", resource)]);
        let answer = call_json("identity endpoint", &url, request).await?;
        take_string("identity endpoint", &url, answer, "access_token")
    }

    /// A token in the reference's form (`scope=…&tenantId&clientId&apiVersion=2018-02-01` →
    /// `{token}`), what ccr-secrets asks.
    pub async fn scope_token(
        &self,
        http: &reqwest::Client,
        scope: &str,
        tenant_id: &str,
        client_id: &str,
    ) -> Result<Zeroizing<String>, UpstreamError> {
        let url = format!("{}{TOKEN_PATH}", self.endpoint.base());
        let request = http.get(&url).query(&[
            ("scope", scope),
            ("tenantId", tenant_id),
            ("clientId", client_id),
            ("apiVersion", "2018-02-01"),
        ]);
        let answer = call_json("identity endpoint", &url, request).await?;
        take_string("identity endpoint", &url, answer, "token")
    }
}

/// A JSON parse error described without the input's values: a missing field is named,
/// anything else is its kind and position (serde's "invalid type" messages quote the value,
/// which could be a token).
pub fn describe_json_error(error: &serde_json::Error) -> String {
    let text = error.to_string();
    if text.starts_with("missing field") || text.starts_with("unknown variant") {
        return text;
    }
    let kind = match error.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "a member of the wrong type",
        serde_json::error::Category::Eof => "unexpected end",
    };
    format!("{kind} at line {} column {}", error.line(), error.column())
}

/// An HTTP client trusting the web PKI roots plus `extra_ca_pems` (PEM certificates).
pub fn http_client(extra_ca_pems: &[(String, Vec<u8>)]) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(60));
    for (name, text) in extra_ca_pems {
        let certs = reqwest::Certificate::from_pem_bundle(text)
            .map_err(|e| format!("trusted CA '{name}' is not PEM certificates: {e}"))?;
        if certs.is_empty() {
            return Err(format!("trusted CA '{name}' holds no certificate"));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_of_each_shape() {
        assert_eq!(
            error_summary(403, br#"{"error":{"code":"Forbidden","message":"policy"}}"#),
            ("Forbidden".into(), "policy".into())
        );
        assert_eq!(
            error_summary(403, br#"{"error":"secure key release failed: x"}"#),
            ("Http403".into(), "secure key release failed: x".into())
        );
        assert_eq!(
            error_summary(
                400,
                br#"{"error":"invalid_request","error_description":"d"}"#
            ),
            ("invalid_request".into(), "d".into())
        );
        assert_eq!(error_summary(500, b"<html>").0, "Http500");
        let long = format!(r#"{{"error":"{}"}}"#, "x".repeat(1000));
        assert!(error_summary(500, long.as_bytes()).1.chars().count() <= MESSAGE_LIMIT + 1);
    }
}
