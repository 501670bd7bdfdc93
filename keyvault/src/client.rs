//! The Rust Key Vault client: import a key with a release policy, get a key (public part),
//! release it to an attested target, set and get secrets — the data-plane calls the secure key
//! release flow makes, against this crate's vault or Azure Key Vault / Managed HSM.
//!
//! Authentication follows Key Vault's challenge: the first request goes out without a token and
//! without its body; the vault answers 401 with `WWW-Authenticate: Bearer authorization="…",
//! resource="…"` (or `scope="…"`); the client then gets a token for that resource from its
//! [`TokenSource`] and sends the real request. The token is kept until five minutes before it
//! expires. Unlike the Azure SDKs' default, the challenge's resource is not required to match the
//! vault's domain (a local vault at 127.0.0.1 names `https://vault.azure.net`); it must be https.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use encfs_crypto::kek::KekPrivateKey;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use crate::identity::{AccessToken, Credential, IdentityError};
use crate::model::{
    ErrorBody, KeyAttributes, KeyBundle, KeyImportParameters, KeyReleaseParameters,
    KeyReleasePolicy, KeyReleaseResult, SecretBundle, SecretSetParameters,
};
use crate::rsa_jwk::{JwkError, private_jwk};

/// The api-version the client sends (the reference's SKR sidecar sends 7.4).
pub const DEFAULT_API_VERSION: &str = "7.4";
/// A cached token is renewed this many seconds before it expires.
const TOKEN_RENEW_MARGIN_SECS: u64 = 300;

/// Errors of the Key Vault client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The vault URL is not usable.
    #[error("vault URL {url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// An extra CA certificate is not PEM.
    #[error("extra CA certificate {index} is not a PEM certificate: {reason}")]
    CaCertificate {
        /// Its position in the list.
        index: usize,
        /// The cause.
        reason: String,
    },
    /// The HTTP exchange failed (connection, TLS, timeout).
    #[error("request to {url} failed: {source}")]
    Http {
        /// The URL (no credentials).
        url: String,
        /// The cause.
        source: reqwest::Error,
    },
    /// The vault answered with Key Vault's error body.
    #[error("{url}: HTTP {status}: {code}: {message}")]
    Vault {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// Key Vault's error code (`KeyNotFound`, `Forbidden`, …).
        code: String,
        /// Key Vault's message.
        message: String,
    },
    /// The 401 challenge could not be followed.
    #[error("{url}: cannot follow the authentication challenge: {reason}")]
    Challenge {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A token could not be minted.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A key could not be turned into a JWK.
    #[error(transparent)]
    Jwk(#[from] JwkError),
    /// The answer is not the expected JSON.
    #[error("{url}: unexpected answer: {reason}")]
    Response {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
}

/// Where the client's bearer tokens come from.
pub enum TokenSource {
    /// Minted from a credential for the resource the challenge names.
    Credential(Box<Credential>),
    /// A fixed bearer token (from an identity endpoint or the caller).
    Bearer(String),
}

impl From<Credential> for TokenSource {
    fn from(credential: Credential) -> Self {
        Self::Credential(Box::new(credential))
    }
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Credential(credential) => f.debug_tuple("Credential").field(credential).finish(),
            Self::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// A Key Vault data-plane client (see the module comment).
#[derive(Debug)]
pub struct KeyVaultClient {
    vault_url: String,
    http: reqwest::Client,
    tokens: TokenSource,
    api_version: String,
    cached: Mutex<Option<AccessToken>>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `host[:port]` (https implied) or an https URL → `https://host[:port]` without a trailing slash.
pub fn normalise_vault_url(vault_url: &str) -> Result<String, ClientError> {
    let trimmed = vault_url.trim().trim_end_matches('/');
    let url = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("https://{trimmed}")
    };
    let parsed = reqwest::Url::parse(&url).map_err(|e| ClientError::Url {
        url: vault_url.to_owned(),
        reason: e.to_string(),
    })?;
    if parsed.scheme() != "https" {
        return Err(ClientError::Url {
            url: vault_url.to_owned(),
            reason: "Key Vault is reached over https only".into(),
        });
    }
    if parsed.host_str().is_none() {
        return Err(ClientError::Url {
            url: vault_url.to_owned(),
            reason: "no host".into(),
        });
    }
    Ok(url)
}

/// The `resource` (or `scope`, less `/.default`) of a `WWW-Authenticate: Bearer …` challenge.
pub fn challenge_resource(header: &str) -> Option<String> {
    let rest = header.trim().strip_prefix("Bearer")?.trim();
    let mut resource = None;
    let mut scope = None;
    for part in rest.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"').to_owned();
        match key.trim().to_ascii_lowercase().as_str() {
            "resource" => resource = Some(value),
            "scope" => scope = Some(value),
            _ => {}
        }
    }
    resource
        .or_else(|| scope.map(|s| crate::identity::resource_of_scope(&s).to_owned()))
        .filter(|r| r.starts_with("https://"))
}

fn url_segment(value: &str) -> String {
    percent_encode(value)
}

fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl KeyVaultClient {
    /// A client of the vault at `vault_url` (`host[:port]` or an https URL) trusting the system
    /// roots plus `extra_ca_pems` (PEM text, one or more certificates each), authenticating
    /// with `token_source`.
    pub fn new<I, P>(
        vault_url: &str,
        extra_ca_pems: I,
        token_source: impl Into<TokenSource>,
    ) -> Result<Self, ClientError>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        let vault_url = normalise_vault_url(vault_url)?;
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(std::time::Duration::from_secs(60))
            .connect_timeout(std::time::Duration::from_secs(10));
        for (index, pem) in extra_ca_pems.into_iter().enumerate() {
            let certificates = reqwest::Certificate::from_pem_bundle(pem.as_ref()).map_err(|e| {
                ClientError::CaCertificate {
                    index,
                    reason: e.to_string(),
                }
            })?;
            if certificates.is_empty() {
                return Err(ClientError::CaCertificate {
                    index,
                    reason: "no CERTIFICATE block".into(),
                });
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder.build().map_err(|source| ClientError::Http {
            url: vault_url.clone(),
            source,
        })?;
        Ok(Self {
            vault_url,
            http,
            tokens: token_source.into(),
            api_version: DEFAULT_API_VERSION.to_owned(),
            cached: Mutex::new(None),
        })
    }

    /// The same client sending another `api-version` (e.g. `7.5`).
    pub fn with_api_version(mut self, api_version: &str) -> Self {
        self.api_version = api_version.to_owned();
        self
    }

    /// The vault's base URL (`https://host[:port]`).
    pub fn vault_url(&self) -> &str {
        &self.vault_url
    }

    fn token_for(&self, resource: &str) -> Result<AccessToken, ClientError> {
        match &self.tokens {
            TokenSource::Credential(credential) => Ok(credential.mint(resource)?),
            TokenSource::Bearer(token) => Ok(AccessToken {
                token: token.clone(),
                expires_on: u64::MAX,
            }),
        }
    }

    async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}?api-version={}", self.vault_url, self.api_version);
        let http_error = |source| ClientError::Http {
            url: url.clone(),
            source,
        };
        let mut cached = self.cached.lock().await;
        let usable = cached
            .as_ref()
            .filter(|t| t.expires_on > now_secs() + TOKEN_RENEW_MARGIN_SECS)
            .cloned();
        let token = match usable {
            Some(token) => token,
            None => {
                // The challenge: the request without a token and without its body.
                let probe = self
                    .http
                    .request(method.clone(), &url)
                    .header(reqwest::header::CONTENT_LENGTH, "0")
                    .send()
                    .await
                    .map_err(http_error)?;
                let resource = if probe.status() == StatusCode::UNAUTHORIZED {
                    let header = probe
                        .headers()
                        .get(reqwest::header::WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    challenge_resource(&header).ok_or_else(|| ClientError::Challenge {
                        url: url.clone(),
                        reason: format!(
                            "the 401 answer has no Bearer challenge with an https resource \
                             (WWW-Authenticate: {header:?})"
                        ),
                    })?
                } else {
                    crate::identity::VAULT_RESOURCE.to_owned()
                };
                let token = self.token_for(&resource)?;
                *cached = Some(token.clone());
                token
            }
        };
        drop(cached);
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(&token.token);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request.send().await.map_err(http_error)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(http_error)?;
        if !status.is_success() {
            if status == StatusCode::UNAUTHORIZED {
                *self.cached.lock().await = None;
            }
            let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => (body.error.code, body.error.message),
                Err(_) => (
                    status.canonical_reason().unwrap_or("Error").to_owned(),
                    String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned(),
                ),
            };
            return Err(ClientError::Vault {
                url,
                status: status.as_u16(),
                code,
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Response {
            url,
            reason: e.to_string(),
        })
    }

    fn key_path(name: &str, version: Option<&str>) -> String {
        match version.filter(|v| !v.is_empty()) {
            Some(version) => format!("/keys/{}/{}", url_segment(name), url_segment(version)),
            None => format!("/keys/{}", url_segment(name)),
        }
    }

    /// Imports `key` as key `name` (a new version if it exists), exportable or not, with
    /// `release_policy` (the policy JSON; sent base64url as Key Vault takes it). Returns the key
    /// as the vault answers it (public part).
    pub async fn import_key(
        &self,
        name: &str,
        key: &KekPrivateKey,
        release_policy: &serde_json::Value,
        exportable: bool,
    ) -> Result<KeyBundle, ClientError> {
        let mut jwk = private_jwk(key)?;
        jwk.kty = Some("RSA-HSM".into());
        jwk.key_ops = Some(vec![
            "encrypt".into(),
            "decrypt".into(),
            "wrapKey".into(),
            "unwrapKey".into(),
        ]);
        let policy_json = serde_json::to_vec(release_policy).expect("serialisable");
        let parameters = KeyImportParameters {
            key: jwk,
            hsm: Some(true),
            attributes: Some(KeyAttributes {
                enabled: Some(true),
                exportable: Some(exportable),
                ..KeyAttributes::default()
            }),
            tags: None,
            release_policy: Some(KeyReleasePolicy {
                content_type: Some("application/json; charset=utf-8".into()),
                data: Some(URL_SAFE_NO_PAD.encode(policy_json)),
                immutable: Some(false),
            }),
        };
        let body = zeroize::Zeroizing::new(serde_json::to_vec(&parameters).expect("serialisable"));
        self.request(Method::PUT, &Self::key_path(name, None), Some(body.to_vec()))
            .await
    }

    /// The key `name` (its latest version, or `version`): public part, attributes and policy.
    pub async fn get_key(&self, name: &str, version: Option<&str>) -> Result<KeyBundle, ClientError> {
        self.request(Method::GET, &Self::key_path(name, version), None)
            .await
    }

    /// Releases key `name` to the environment attested by `target_token`: returns the vault's
    /// JWS (its payload holds the key wrapped to the token's runtime key).
    pub async fn release(
        &self,
        name: &str,
        version: Option<&str>,
        target_token: &str,
        nonce: Option<&str>,
        enc: Option<&str>,
    ) -> Result<String, ClientError> {
        let parameters = KeyReleaseParameters {
            target: target_token.to_owned(),
            nonce: nonce.map(str::to_owned),
            enc: enc.map(str::to_owned),
        };
        let path = format!("{}/release", Self::key_path(name, version));
        let result: KeyReleaseResult = self
            .request(
                Method::POST,
                &path,
                Some(serde_json::to_vec(&parameters).expect("serialisable")),
            )
            .await?;
        Ok(result.value)
    }

    /// Sets secret `name` to `value` (a new version).
    pub async fn set_secret(&self, name: &str, value: &str) -> Result<SecretBundle, ClientError> {
        let parameters = SecretSetParameters {
            value: value.to_owned(),
            ..SecretSetParameters::default()
        };
        let body = zeroize::Zeroizing::new(serde_json::to_vec(&parameters).expect("serialisable"));
        self.request(
            Method::PUT,
            &format!("/secrets/{}", url_segment(name)),
            Some(body.to_vec()),
        )
        .await
    }

    /// The secret `name` (latest version, or `version`).
    pub async fn get_secret(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<SecretBundle, ClientError> {
        let path = match version.filter(|v| !v.is_empty()) {
            Some(version) => format!("/secrets/{}/{}", url_segment(name), url_segment(version)),
            None => format!("/secrets/{}", url_segment(name)),
        };
        self.request(Method::GET, &path, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_key_vault_challenges() {
        assert_eq!(
            challenge_resource(
                r#"Bearer authorization="https://login.microsoftonline.com/72f988bf", resource="https://vault.azure.net""#
            )
            .as_deref(),
            Some("https://vault.azure.net")
        );
        assert_eq!(
            challenge_resource(
                r#"Bearer authorization="https://login.microsoftonline.com/t", scope="https://managedhsm.azure.net/.default""#
            )
            .as_deref(),
            Some("https://managedhsm.azure.net")
        );
        assert_eq!(challenge_resource(r#"Basic realm="x""#), None);
        assert_eq!(challenge_resource(r#"Bearer resource="http://plain""#), None);
    }

    #[test]
    fn vault_urls_default_to_https() {
        assert_eq!(
            normalise_vault_url("127.0.0.1:21100").unwrap(),
            "https://127.0.0.1:21100"
        );
        assert_eq!(
            normalise_vault_url("https://kv.vault.azure.net/").unwrap(),
            "https://kv.vault.azure.net"
        );
        assert!(normalise_vault_url("http://127.0.0.1:1").is_err());
    }

    #[test]
    fn names_are_percent_encoded() {
        assert_eq!(url_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(url_segment("wrapped-ds-dek-kek"), "wrapped-ds-dek-kek");
    }
}
