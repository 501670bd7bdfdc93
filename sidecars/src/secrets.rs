//! The secrets sidecar (the reference's ccr-secrets on :9300): `POST /secrets/unwrap` turns a
//! wrapped secret in Key Vault into its plaintext, with the KEK obtained by secure key release
//! (ref §9, clean-room side, step 2).
//!
//! Request `{clientId, tenantId, kid, akvEndpoint, kek: {kid, akvEndpoint, maaEndpoint,
//! accessToken?}, accessToken?}`; answer `{"value": b64(plaintext)}`. The steps:
//! 1. a token for the KEK's vault (`kek.accessToken`, else the identity endpoint's
//!    `scope=<vault|managedhsm>/.default&tenantId&clientId&apiVersion=2018-02-01` → `{token}`);
//! 2. `POST {skr}/key/release {maa_endpoint, akv_endpoint, kid, access_token}` → `{key: "<JWK>"}`;
//! 3. a token for the secret's vault (`accessToken`, else the identity endpoint again);
//! 4. `GET {akvEndpoint}/secrets/{kid}?api-version=7.4` → `value` (base64 of the wrapped bytes);
//! 5. RSA-OAEP-SHA-256 decryption with the released KEK.
//!
//! Errors are ODataError bodies `{"error":{"code","message"}}`: 400 `IdentityPortNotSet` /
//! `SkrPortNotSet` when a step needs a sidecar that is not configured, 400 `BadRequest` for a
//! malformed request, the upstream's status (and Key Vault's code) when a call fails, 502 when
//! one cannot be reached. No answer, log line or error holds the secret, the KEK or a token.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use encfs_crypto::kek::{KekPrivateKey, OaepHash};
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use crate::endpoint::{Endpoint, EndpointError};
use crate::upstream::{self, IdentityEndpoint, UpstreamError};

/// The api-version of the secret read (the reference's).
pub const SECRET_API_VERSION: &str = "7.4";

/// What the secrets sidecar needs.
#[derive(Debug, Clone, Default)]
pub struct SecretsConfig {
    /// The skr sidecar (`http://127.0.0.1:8284`); without it, unwraps fail `SkrPortNotSet`.
    pub skr: Option<String>,
    /// The identity endpoint (`http://127.0.0.1:8290`); without it, unwraps that need a token
    /// fail `IdentityPortNotSet`.
    pub identity_endpoint: Option<String>,
    /// Extra roots (label, PEM) for Key Vault's TLS, on top of the web PKI roots.
    pub trusted_cas: Vec<(String, Vec<u8>)>,
}

/// Why the sidecar cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretsStartError {
    /// An endpoint is not a loopback http or an https URL.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The HTTP client could not be built (a bad `--trust-ca`).
    #[error("{0}")]
    Http(String),
}

/// The secrets sidecar's state.
#[derive(Debug)]
pub struct SecretsSidecar {
    skr: Option<Endpoint>,
    identity: Option<IdentityEndpoint>,
    http: reqwest::Client,
}

/// What an unwrap failed with; [`SecretsError::status_and_code`] is the one mapping to the
/// answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretsError {
    /// A token is needed and no identity endpoint is configured.
    #[error("the identity sidecar's endpoint is not set")]
    IdentityPortNotSet,
    /// No skr sidecar is configured.
    #[error("the skr sidecar's endpoint is not set")]
    SkrPortNotSet,
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// Getting a token failed.
    #[error("cannot get a token for {vault}: {source}")]
    Token {
        /// The vault the token is for.
        vault: String,
        /// The failure.
        source: UpstreamError,
    },
    /// The skr sidecar did not release the KEK.
    #[error("the release of KEK '{kid}' failed: {source}")]
    KeyRelease {
        /// The KEK's name.
        kid: String,
        /// The failure.
        source: UpstreamError,
    },
    /// The wrapped secret could not be read.
    #[error("cannot read secret '{kid}': {source}")]
    Secret {
        /// The secret's name.
        kid: String,
        /// The failure.
        source: UpstreamError,
    },
    /// The released key or the secret is unusable, or the secret is not wrapped with that KEK.
    #[error("cannot unwrap secret '{kid}' with KEK '{kek}': {reason}")]
    Unwrap {
        /// The secret's name.
        kid: String,
        /// The KEK's name.
        kek: String,
        /// Why (never the bytes).
        reason: String,
    },
}

impl SecretsError {
    /// The status and ODataError code of this error.
    pub fn status_and_code(&self) -> (u16, String) {
        match self {
            Self::IdentityPortNotSet => (400, "IdentityPortNotSet".into()),
            Self::SkrPortNotSet => (400, "SkrPortNotSet".into()),
            Self::BadRequest(_) => (400, "BadRequest".into()),
            Self::Token { source, .. } => (source.status(), "TokenRequestFailed".into()),
            Self::KeyRelease { source, .. } => (source.status(), "KeyReleaseFailed".into()),
            Self::Secret { source, .. } => match source {
                UpstreamError::Status { status, code, .. } => (*status, code.clone()),
                other => (other.status(), "SecretReadFailed".into()),
            },
            Self::Unwrap { .. } => (400, "UnwrapFailed".into()),
        }
    }
}

impl IntoResponse for SecretsError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        eprintln!(
            "encfs sidecar secrets: /secrets/unwrap: {} {code}: {self}",
            status.as_u16()
        );
        (
            status,
            axum::Json(json!({ "error": { "code": code, "message": self.to_string() } })),
        )
            .into_response()
    }
}

/// The unwrap request (the reference's camelCase names).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UnwrapRequest {
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    tenant_id: String,
    kid: String,
    akv_endpoint: String,
    kek: KekReference,
    #[serde(default)]
    access_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KekReference {
    kid: String,
    akv_endpoint: String,
    maa_endpoint: String,
    #[serde(default)]
    access_token: Option<String>,
}

impl Drop for UnwrapRequest {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.access_token);
        zeroize::Zeroize::zeroize(&mut self.kek.access_token);
    }
}

impl SecretsSidecar {
    /// Readies the clients.
    pub fn new(config: SecretsConfig) -> Result<Self, SecretsStartError> {
        let skr = config
            .skr
            .as_deref()
            .map(|text| Endpoint::parse("skr sidecar", text))
            .transpose()?;
        let identity = config
            .identity_endpoint
            .as_deref()
            .map(IdentityEndpoint::parse)
            .transpose()?;
        let http = upstream::http_client(&config.trusted_cas).map_err(SecretsStartError::Http)?;
        Ok(Self {
            skr,
            identity,
            http,
        })
    }

    /// The routes, served from this state.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/secrets/unwrap", post(unwrap_route))
            .with_state(self)
    }

    async fn token(
        &self,
        given: Option<&str>,
        vault: &Endpoint,
        request: &UnwrapRequest,
    ) -> Result<Zeroizing<String>, SecretsError> {
        if let Some(token) = given.filter(|t| !t.is_empty()) {
            return Ok(Zeroizing::new(token.to_owned()));
        }
        let identity = self
            .identity
            .as_ref()
            .ok_or(SecretsError::IdentityPortNotSet)?;
        let scope = format!("{}/.default", vault.vault_resource());
        identity
            .scope_token(&self.http, &scope, &request.tenant_id, &request.client_id)
            .await
            .map_err(|source| SecretsError::Token {
                vault: vault.host().to_owned(),
                source,
            })
    }

    async fn unwrap(&self, request: &UnwrapRequest) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
        let bad = |e: EndpointError| SecretsError::BadRequest(e.to_string());
        for (what, value) in [
            ("kid", &request.kid),
            ("akvEndpoint", &request.akv_endpoint),
            ("kek.kid", &request.kek.kid),
            ("kek.akvEndpoint", &request.kek.akv_endpoint),
            ("kek.maaEndpoint", &request.kek.maa_endpoint),
        ] {
            if value.trim().is_empty() {
                return Err(SecretsError::BadRequest(format!(
                    "{what} is missing or empty"
                )));
            }
        }
        if !is_object_name(&request.kid) {
            return Err(SecretsError::BadRequest(format!(
                "kid '{}' is not a secret name (letters, digits, '-', optionally /version)",
                request.kid
            )));
        }
        let kek_vault =
            Endpoint::parse("kek.akvEndpoint", &request.kek.akv_endpoint).map_err(bad)?;
        let secret_vault = Endpoint::parse("akvEndpoint", &request.akv_endpoint).map_err(bad)?;
        let skr = self.skr.as_ref().ok_or(SecretsError::SkrPortNotSet)?;

        // 1–2: the KEK, released by the skr sidecar.
        let kek_token = self
            .token(request.kek.access_token.as_deref(), &kek_vault, request)
            .await?;
        let release_url = format!("{}/key/release", skr.base());
        let call = self.http.post(&release_url).json(&json!({
            "maa_endpoint": request.kek.maa_endpoint,
            "akv_endpoint": request.kek.akv_endpoint,
            "kid": request.kek.kid,
            "access_token": kek_token.as_str(),
        }));
        drop(kek_token);
        let key_release = |source| SecretsError::KeyRelease {
            kid: request.kek.kid.clone(),
            source,
        };
        let answer = upstream::call_json("skr sidecar", &release_url, call)
            .await
            .map_err(key_release)?;
        let jwk = upstream::take_string("skr sidecar", &release_url, answer, "key")
            .map_err(key_release)?;
        let unwrap_error = |reason: String| SecretsError::Unwrap {
            kid: request.kid.clone(),
            kek: request.kek.kid.clone(),
            reason,
        };
        let kek_der = crate::jwk::pkcs8_from_private_jwk(&jwk)
            .map_err(|e| unwrap_error(format!("the released key: {e}")))?;
        drop(jwk);
        let kek = KekPrivateKey::from_pkcs8_der(&kek_der)
            .map_err(|e| unwrap_error(format!("the released key: {e}")))?;
        drop(kek_der);

        // 3–4: the wrapped secret.
        let secret_token = self
            .token(request.access_token.as_deref(), &secret_vault, request)
            .await?;
        let secret_url = format!(
            "{}/secrets/{}?api-version={SECRET_API_VERSION}",
            secret_vault.base(),
            request.kid
        );
        let call = self
            .http
            .get(&secret_url)
            .bearer_auth(secret_token.as_str());
        drop(secret_token);
        let secret_error = |source| SecretsError::Secret {
            kid: request.kid.clone(),
            source,
        };
        let answer = upstream::call_json("key vault", &secret_url, call)
            .await
            .map_err(secret_error)?;
        let value = upstream::take_string("key vault", &secret_url, answer, "value")
            .map_err(secret_error)?;
        let wrapped = STANDARD
            .decode(value.trim())
            .map_err(|_| unwrap_error("the secret's value is not base64".into()))?;

        // 5: RSA-OAEP-SHA-256 with the KEK.
        kek.decrypt_oaep(OaepHash::Sha256, &wrapped).map_err(|_| {
            unwrap_error("RSA-OAEP-SHA-256 decryption failed (wrong KEK or damaged secret)".into())
        })
    }
}

/// Key Vault object names: letters, digits and '-', optionally `/version`.
fn is_object_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '/')
        && !name.starts_with('/')
}

async fn unwrap_route(State(sidecar): State<Arc<SecretsSidecar>>, body: Bytes) -> Response {
    let body = Zeroizing::new(body.to_vec());
    let request: UnwrapRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return SecretsError::BadRequest(format!(
                "the body is not an unwrap request: {}",
                upstream::describe_json_error(&e)
            ))
            .into_response();
        }
    };
    match sidecar.unwrap(&request).await {
        Ok(plaintext) => {
            let body = Zeroizing::new(json!({ "value": STANDARD.encode(&*plaintext) }).to_string());
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body.as_bytes().to_vec(),
            )
                .into_response()
        }
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FakeVault, http, serve};
    use serde_json::Value;

    fn request(vault: &FakeVault, kid: &str, kek_kid: &str) -> Value {
        json!({
            "clientId": "client-1",
            "tenantId": "tenant-1",
            "kid": kid,
            "akvEndpoint": vault.url(),
            "kek": {"kid": kek_kid, "akvEndpoint": vault.url(), "maaEndpoint": "maa.example"},
        })
    }

    async fn post(url: &str, body: &Value) -> (u16, String) {
        let response = http().post(url).json(body).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    #[tokio::test]
    async fn unwrap_returns_the_dek_and_errors_have_the_reference_shapes() {
        let vault = FakeVault::start().await;
        let skr = serve(crate::skr::tests::skr_with(&vault, None).router()).await;
        let full = Arc::new(
            SecretsSidecar::new(SecretsConfig {
                skr: Some(skr.url()),
                identity_endpoint: Some(vault.url()),
                trusted_cas: vec![],
            })
            .unwrap(),
        );
        let secrets = serve(full.router()).await;
        let url = format!("{}/secrets/unwrap", secrets.url());

        let (status, text) = post(&url, &request(&vault, "wrapped-dek", "kek")).await;
        assert_eq!(status, 200, "{text}");
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            STANDARD.decode(body["value"].as_str().unwrap()).unwrap(),
            vault.dek
        );
        // Both tokens came from the identity endpoint, in the scope form, with the ids.
        assert_eq!(vault.scope_calls(), 2);

        // Tokens given in the request: no identity call.
        let mut with_tokens = request(&vault, "wrapped-dek", "kek");
        with_tokens["accessToken"] = json!("good-token");
        with_tokens["kek"]["accessToken"] = json!("good-token");
        let (status, _) = post(&url, &with_tokens).await;
        assert_eq!(status, 200);
        assert_eq!(vault.scope_calls(), 2);

        let check = |status: u16, text: &str, want_status: u16, want_code: &str| {
            assert_eq!(status, want_status, "{text}");
            let body: Value = serde_json::from_str(text).unwrap();
            assert_eq!(body["error"]["code"], want_code, "{text}");
            assert!(body["error"]["message"].is_string());
            let dek_b64 = STANDARD.encode(&vault.dek);
            assert!(
                !text.contains(&dek_b64) && !text.contains("good-token"),
                "{text}"
            );
        };
        // The secret does not exist: Key Vault's 404 and code.
        let (status, text) = post(&url, &request(&vault, "missing", "kek")).await;
        check(status, &text, 404, "SecretNotFound");
        // The release is refused: the skr's 403.
        let (status, text) = post(&url, &request(&vault, "wrapped-dek", "refused")).await;
        check(status, &text, 403, "KeyReleaseFailed");
        // The secret is not wrapped with this KEK.
        let (status, text) = post(&url, &request(&vault, "wrapped-other", "kek")).await;
        check(status, &text, 400, "UnwrapFailed");
        // Malformed requests.
        let (status, text) = post(&url, &json!({"kid": "x"})).await;
        check(status, &text, 400, "BadRequest");
        let (status, text) = post(&url, &request(&vault, "../etc", "kek")).await;
        check(status, &text, 400, "BadRequest");

        // No identity endpoint and no tokens; no skr.
        let no_identity = Arc::new(
            SecretsSidecar::new(SecretsConfig {
                skr: Some(skr.url()),
                ..SecretsConfig::default()
            })
            .unwrap(),
        );
        let no_skr = Arc::new(
            SecretsSidecar::new(SecretsConfig {
                identity_endpoint: Some(vault.url()),
                ..SecretsConfig::default()
            })
            .unwrap(),
        );
        let no_identity = serve(no_identity.router()).await;
        let no_skr = serve(no_skr.router()).await;
        let (status, text) = post(
            &format!("{}/secrets/unwrap", no_identity.url()),
            &request(&vault, "wrapped-dek", "kek"),
        )
        .await;
        check(status, &text, 400, "IdentityPortNotSet");
        let (status, text) = post(
            &format!("{}/secrets/unwrap", no_skr.url()),
            &request(&vault, "wrapped-dek", "kek"),
        )
        .await;
        check(status, &text, 400, "SkrPortNotSet");

        for server in [secrets, no_identity, no_skr, skr] {
            server.shutdown().await.unwrap();
        }
        vault.stop().await;
    }

    #[test]
    fn endpoints_are_checked_at_start() {
        assert!(matches!(
            SecretsSidecar::new(SecretsConfig {
                skr: Some("http://skr.example:8284".into()),
                ..SecretsConfig::default()
            }),
            Err(SecretsStartError::Endpoint(_))
        ));
    }
}
