//! Microsoft Azure Attestation, client side: the `attest/SevSnpVm` request exactly as the
//! reference's SKR sidecar sends it (CSC `pkg/common/maa.go`, ref §11 step 3), and the check of an
//! MAA token against the authority's published keys (OpenID configuration → `jwks_uri` → JWKS).
//!
//! The same code talks to the virtual authority and to a real MAA instance: only the endpoint and
//! the trusted CA certificates differ. Tokens are returned as text and never logged.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use serde_json::{Map, Value, json};

use crate::provider::Evidence;

/// The MAA api-version the requests use (the reference's local-skr uses it; 2020-10-01 is the
/// other one MAA accepts).
pub const MAA_API_VERSION: &str = "2022-08-01";

/// Why attestation or a token check failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MaaError {
    /// A CA certificate to trust is not PEM.
    #[error("CA certificate {index} to trust is not a PEM certificate: {reason}")]
    Certificate {
        /// Its position among the extra CAs.
        index: usize,
        /// Why.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTPS client: {0}")]
    Client(String),
    /// The request did not reach the service or the answer was not readable.
    #[error("request to {url} failed: {reason}")]
    Transport {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The service refused (its status and error body, which holds no secret).
    #[error("{url} answered {status}: {body}")]
    Refused {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The error body (truncated).
        body: String,
    },
    /// The answer lacks a field.
    #[error("the answer of {url} has no '{field}'")]
    Missing {
        /// The URL.
        url: String,
        /// The field.
        field: &'static str,
    },
    /// The token does not verify (names the check: signature, expiry, issuer, unknown `kid`).
    #[error("the attestation token is not valid: {0}")]
    Token(String),
}

/// `maa_endpoint` as a base URL: a `host[:port]` means `https://host[:port]`; a URL is kept.
pub fn endpoint_url(endpoint: &str) -> String {
    let endpoint = endpoint.trim().trim_end_matches('/');
    if endpoint.starts_with("https://") || endpoint.starts_with("http://") {
        endpoint.to_owned()
    } else {
        format!("https://{endpoint}")
    }
}

/// An HTTPS client with extra trusted CAs (the virtual authority's root, a test vault's CA).
///
/// # Errors
/// [`MaaError::Certificate`] or [`MaaError::Client`].
pub fn https_client<I, P>(extra_ca_pems: I) -> Result<reqwest::Client, MaaError>
where
    I: IntoIterator<Item = P>,
    P: AsRef<[u8]>,
{
    let mut builder = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .connect_timeout(std::time::Duration::from_secs(10));
    for (index, pem_text) in extra_ca_pems.into_iter().enumerate() {
        let certificates =
            reqwest::Certificate::from_pem_bundle(pem_text.as_ref()).map_err(|e| {
                MaaError::Certificate {
                    index,
                    reason: e.to_string(),
                }
            })?;
        if certificates.is_empty() {
            return Err(MaaError::Certificate {
                index,
                reason: "no CERTIFICATE block".into(),
            });
        }
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder.build().map_err(|e| MaaError::Client(e.to_string()))
}

/// The body of `POST /attest/SevSnpVm` (ref §11 step 3): `report` = base64url of the JSON
/// `{SnpReport, VcekCertChain, Endorsements?: {Uvm: [...]}}` (each base64url), `runtimeData` =
/// `{data: base64url(runtime data), dataType: "JSON"}`, `nonce`.
pub fn attest_request_body(evidence: &Evidence, runtime_data_json: &[u8], nonce: u64) -> Value {
    let mut report = json!({
        "SnpReport": BASE64URL.encode(&evidence.report),
        "VcekCertChain": BASE64URL.encode(&evidence.endorsements),
    });
    if !evidence.uvm_endorsements.is_empty() {
        let endorsements = json!({"Uvm": [BASE64URL.encode(&evidence.uvm_endorsements)]});
        report["Endorsements"] = BASE64URL.encode(endorsements.to_string()).into();
    }
    json!({
        "report": BASE64URL.encode(report.to_string()),
        "runtimeData": {"data": BASE64URL.encode(runtime_data_json), "dataType": "JSON"},
        "nonce": nonce,
    })
}

/// A client of MAA (or of the virtual authority's MAA routes).
#[derive(Clone, Debug)]
pub struct MaaClient {
    http: reqwest::Client,
}

fn truncated(text: &str) -> String {
    text.chars().take(512).collect()
}

impl MaaClient {
    /// A client trusting the system roots plus `extra_ca_pems` (PEM texts).
    ///
    /// # Errors
    /// [`MaaError::Certificate`] or [`MaaError::Client`].
    pub fn new<I, P>(extra_ca_pems: I) -> Result<Self, MaaError>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        Ok(Self {
            http: https_client(extra_ca_pems)?,
        })
    }

    async fn post_json(&self, url: &str, body: &Value) -> Result<Value, MaaError> {
        let transport = |e: reqwest::Error| MaaError::Transport {
            url: url.to_owned(),
            reason: e.to_string(),
        };
        let response = self
            .http
            .post(url)
            .json(body)
            .send()
            .await
            .map_err(transport)?;
        Self::json_answer(url, response).await
    }

    async fn get_json(&self, url: &str) -> Result<Value, MaaError> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| MaaError::Transport {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        Self::json_answer(url, response).await
    }

    async fn json_answer(url: &str, response: reqwest::Response) -> Result<Value, MaaError> {
        let status = response.status();
        let text = response.text().await.map_err(|e| MaaError::Transport {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        if !status.is_success() {
            return Err(MaaError::Refused {
                url: url.to_owned(),
                status: status.as_u16(),
                body: truncated(&text),
            });
        }
        serde_json::from_str(&text).map_err(|e| MaaError::Transport {
            url: url.to_owned(),
            reason: format!("the answer is not JSON: {e}"),
        })
    }

    /// `POST {maa}/attest/SevSnpVm?api-version=2022-08-01` with the evidence, the runtime data
    /// (JSON, e.g. a JWKS holding the runtime key) and the nonce; returns the token.
    ///
    /// # Errors
    /// [`MaaError`] naming the URL.
    pub async fn attest_snp(
        &self,
        maa_endpoint: &str,
        evidence: &Evidence,
        runtime_data_json: &[u8],
        nonce: u64,
    ) -> Result<String, MaaError> {
        let url = format!(
            "{}/attest/SevSnpVm?api-version={MAA_API_VERSION}",
            endpoint_url(maa_endpoint)
        );
        let body = attest_request_body(evidence, runtime_data_json, nonce);
        let answer = self.post_json(&url, &body).await?;
        answer
            .get("token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or(MaaError::Missing {
                url,
                field: "token",
            })
    }

    /// The authority's OpenID configuration and JWKS: `(issuer, jwks)`.
    ///
    /// # Errors
    /// [`MaaError`] naming the URL.
    pub async fn signing_keys(&self, authority: &str) -> Result<(String, Value), MaaError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            endpoint_url(authority)
        );
        let configuration = self.get_json(&url).await?;
        let issuer = configuration
            .get("issuer")
            .and_then(Value::as_str)
            .ok_or(MaaError::Missing {
                url: url.clone(),
                field: "issuer",
            })?
            .to_owned();
        let jwks_uri = configuration
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or(MaaError::Missing {
                url,
                field: "jwks_uri",
            })?;
        let jwks = self.get_json(jwks_uri).await?;
        Ok((issuer, jwks))
    }

    /// Verifies a token against the authority's published keys and its issuer; returns the
    /// claims.
    ///
    /// # Errors
    /// [`MaaError::Token`] when it does not verify, else [`MaaError`] naming the URL.
    pub async fn verify_token(
        &self,
        authority: &str,
        token: &str,
    ) -> Result<Map<String, Value>, MaaError> {
        let (issuer, jwks) = self.signing_keys(authority).await?;
        verify_token_with_jwks(token, &jwks, &issuer)
    }
}

/// Verifies an RS256 token: its `kid` must name a key of `jwks`, the signature must verify, `exp`
/// and `nbf` must hold (60 s leeway) and `iss` must be `issuer`. Returns the claims.
///
/// # Errors
/// [`MaaError::Token`] naming the check.
pub fn verify_token_with_jwks(
    token: &str,
    jwks: &Value,
    issuer: &str,
) -> Result<Map<String, Value>, MaaError> {
    let bad = MaaError::Token;
    let header = jsonwebtoken::decode_header(token).map_err(|e| bad(format!("header: {e}")))?;
    if header.alg != jsonwebtoken::Algorithm::RS256 {
        return Err(bad(format!("algorithm {:?} is not RS256", header.alg)));
    }
    let kid = header
        .kid
        .ok_or_else(|| bad("the header has no kid".into()))?;
    let keys: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(jwks.clone()).map_err(|e| bad(format!("JWKS: {e}")))?;
    let jwk = keys
        .find(&kid)
        .ok_or_else(|| bad(format!("no published key has kid '{kid}'")))?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| bad(format!("key: {e}")))?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&[issuer]);
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.leeway = 60;
    validation.set_required_spec_claims(&["exp", "iss"]);
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
        .map_err(|e| bad(e.to_string()))?;
    Ok(data.claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_hosts_or_urls() {
        assert_eq!(
            endpoint_url("sharedeus.eus.attest.azure.net"),
            "https://sharedeus.eus.attest.azure.net"
        );
        assert_eq!(endpoint_url("127.0.0.1:21000/"), "https://127.0.0.1:21000");
        assert_eq!(
            endpoint_url("https://127.0.0.1:21000"),
            "https://127.0.0.1:21000"
        );
        assert_eq!(endpoint_url("http://x"), "http://x");
    }

    #[test]
    fn the_request_has_the_sidecars_shape() {
        let evidence = Evidence {
            report: vec![1, 2, 3],
            endorsements: b"PEM".to_vec(),
            uvm_endorsements: b"COSE".to_vec(),
            endorsed_tcb: "00".into(),
        };
        let body = attest_request_body(&evidence, br#"{"keys":[]}"#, 7);
        assert_eq!(body["nonce"], 7);
        assert_eq!(body["runtimeData"]["dataType"], "JSON");
        assert_eq!(
            BASE64URL
                .decode(body["runtimeData"]["data"].as_str().unwrap())
                .unwrap(),
            br#"{"keys":[]}"#
        );
        let report: Value =
            serde_json::from_slice(&BASE64URL.decode(body["report"].as_str().unwrap()).unwrap())
                .unwrap();
        assert_eq!(
            BASE64URL
                .decode(report["SnpReport"].as_str().unwrap())
                .unwrap(),
            [1, 2, 3]
        );
        assert_eq!(
            BASE64URL
                .decode(report["VcekCertChain"].as_str().unwrap())
                .unwrap(),
            b"PEM"
        );
        let endorsements: Value = serde_json::from_slice(
            &BASE64URL
                .decode(report["Endorsements"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            BASE64URL
                .decode(endorsements["Uvm"][0].as_str().unwrap())
                .unwrap(),
            b"COSE"
        );
    }

    #[test]
    fn a_bad_ca_is_named() {
        assert!(matches!(
            MaaClient::new([b"not a pem".as_slice()]),
            Err(MaaError::Certificate { index: 0, .. })
        ));
    }
}
