//! The local Key Vault's HTTPS service: the Key Vault data-plane REST subset of secure key
//! release over rustls (ring provider), with Key Vault's bearer challenge, error bodies and
//! api-versions.
//!
//! Routes (every one needs `?api-version=` and a bearer token):
//! - `PUT /keys/{name}`: import (`key` JWK with its private part, `Hsm`, `attributes.exportable`,
//!   `release_policy`) → the key bundle (public part);
//! - `GET /keys/{name}[/{version}]` → the key bundle (public part, attributes, `release_policy`);
//! - `POST /keys/{name}[/{version}]/release` `{target, nonce?, enc?}` → `{value: JWS}`;
//! - `PUT /secrets/{name}` `{value}` → the secret bundle; `GET /secrets/{name}[/{version}]`.
//!
//! An empty version segment (`/keys/{name}/`, `/keys/{name}//release`, as the Python SDK sends
//! them) means the latest version. All errors go through [`VaultError`], the one mapping to
//! status, Key Vault code and body; no error carries key material.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use encfs_governance::server::{ServerIdentity, ServerLimits, ServerStats, server_config};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::attestation_token::{AttestationError, AuthorityKeys, verify_for_release};
use crate::identity::{TokenVerifier, VAULT_RESOURCE};
use crate::model::{
    ErrorBody, ErrorDetail, JsonWebKey, KeyAttributes, KeyBundle, KeyImportParameters,
    KeyReleaseParameters, KeyReleasePolicy, KeyReleaseResult, SecretAttributes, SecretBundle,
    SecretSetParameters,
};
use crate::policy::ReleasePolicy;
use crate::release::{DEFAULT_ENC, ReleaseContent, ReleaseSigner, oaep_hash_of_enc, release_jws, runtime_key};
use crate::rsa_jwk::{pkcs8_from_jwk, public_jwk};
use crate::store::{Store, StoredKey, StoredSecret, valid_name};
use crate::vault_dir::{VaultDir, VaultDirError};

/// The api-versions accepted: Key Vault's 7.x data-plane versions and those the current Azure
/// SDKs send (azure-keyvault-keys / -secrets 4.9–4.11 send 7.5 and 7.6; newer ones 2025-07-01).
pub const SUPPORTED_API_VERSIONS: [&str; 9] = [
    "7.0",
    "7.1",
    "7.2",
    "7.3",
    "7.4",
    "7.5",
    "7.6",
    "7.6-preview.2",
    "2025-07-01",
];
/// Largest secret value accepted (Key Vault's limit, 25 KiB).
pub const MAX_SECRET_BYTES: usize = 25 * 1024;
/// Default operations of an imported key.
const DEFAULT_KEY_OPS: [&str; 4] = ["encrypt", "decrypt", "wrapKey", "unwrapKey"];
const RECOVERY_LEVEL: &str = "Recoverable+Purgeable";
const RECOVERABLE_DAYS: u64 = 90;
const POLICY_CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// Errors of the vault service, each mapped once to an HTTP status and Key Vault's code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// No bearer token (401 `Unauthorized` with the challenge).
    #[error("AKV10000: Request is missing a Bearer or PoP token.")]
    MissingToken,
    /// The bearer token was refused (401 `Unauthorized` with the challenge).
    #[error("{0}")]
    InvalidToken(String),
    /// A bad request (400 `BadParameter`).
    #[error("{0}")]
    BadParameter(String),
    /// The key does not exist (404 `KeyNotFound`).
    #[error("A key with (name/id) {0} was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182")]
    KeyNotFound(String),
    /// The secret does not exist (404 `SecretNotFound`).
    #[error("A secret with (name/id) {0} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182")]
    SecretNotFound(String),
    /// The operation is not allowed on this key (403 `Forbidden`).
    #[error("{0}")]
    Forbidden(String),
    /// The attestation token was refused (403 `Forbidden`, inner `AccessDenied`).
    #[error("Target environment attestation statement cannot be verified. {0}")]
    Attestation(AttestationError),
    /// The token's claims do not satisfy the release policy (403 `Forbidden`, inner
    /// `AccessDenied`).
    #[error("Target environment attestation statement does not satisfy the key release policy.")]
    PolicyNotSatisfied,
    /// Unknown path (404 `NotFound`) or method (405 `MethodNotAllowed`).
    #[error("{1}")]
    Route(StatusCode, String),
    /// A failure of the vault itself (500 `InternalServerError`).
    #[error("{0}")]
    Internal(String),
}

impl VaultError {
    fn status_and_code(&self) -> (StatusCode, &'static str, Option<&'static str>) {
        match self {
            Self::MissingToken | Self::InvalidToken(_) => {
                (StatusCode::UNAUTHORIZED, "Unauthorized", None)
            }
            Self::BadParameter(_) => (StatusCode::BAD_REQUEST, "BadParameter", None),
            Self::KeyNotFound(_) => (StatusCode::NOT_FOUND, "KeyNotFound", None),
            Self::SecretNotFound(_) => (StatusCode::NOT_FOUND, "SecretNotFound", None),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden", None),
            Self::Attestation(_) | Self::PolicyNotSatisfied => {
                (StatusCode::FORBIDDEN, "Forbidden", Some("AccessDenied"))
            }
            Self::Route(status, _) if *status == StatusCode::METHOD_NOT_ALLOWED => {
                (*status, "MethodNotAllowed", None)
            }
            Self::Route(status, _) => (*status, "NotFound", None),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError", None),
        }
    }

    /// The answer: status, Key Vault's error body, and for 401 the bearer challenge of
    /// `tenant_id`.
    pub fn into_response_for(self, tenant_id: &str) -> Response {
        let (status, code, inner) = self.status_and_code();
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message: self.to_string(),
                innererror: inner.map(|inner| {
                    Box::new(ErrorDetail {
                        code: inner.to_owned(),
                        message: self.to_string(),
                        innererror: None,
                    })
                }),
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            let challenge = format!(
                "Bearer authorization=\"https://encfs.local/{tenant_id}\", resource=\"{VAULT_RESOURCE}\""
            );
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
            }
        }
        response
    }
}

impl From<crate::store::StoreError> for VaultError {
    fn from(error: crate::store::StoreError) -> Self {
        Self::Internal(error.to_string())
    }
}

/// Errors starting the vault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory failed.
    #[error(transparent)]
    VaultDir(#[from] VaultDirError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The identity verifier failed.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    /// TLS or the listener failed.
    #[error("{0}")]
    Server(String),
}

struct VaultState {
    dir: VaultDir,
    store: Store,
    verifier: TokenVerifier,
    authority_keys: AuthorityKeys,
    signer: ReleaseSigner,
}

/// The vault's state and router, independent of how it is served.
#[derive(Clone)]
pub struct Vault {
    state: Arc<VaultState>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("dir", &self.state.dir.root())
            .finish()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Vault {
    /// Opens (initialising) the vault in `data_dir`; attestation authorities' TLS is trusted
    /// through the system roots plus `trust_authority_ca_pems`.
    pub fn open<I, P>(data_dir: &Path, trust_authority_ca_pems: I) -> Result<Self, StartError>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        let dir = VaultDir::open_or_init(data_dir)?;
        let store = Store::open(data_dir)?;
        let verifier = TokenVerifier::new(&dir, VAULT_RESOURCE)?;
        let authority_keys = AuthorityKeys::new(trust_authority_ca_pems).map_err(StartError::Server)?;
        let (signing_cert, signing_key) = dir.release_signing()?;
        let chain = signing_cert + &dir.ca_pem()?;
        let signer = ReleaseSigner::from_pem(&chain, &signing_key).map_err(StartError::Server)?;
        Ok(Self {
            state: Arc::new(VaultState {
                dir,
                store,
                verifier,
                authority_keys,
                signer,
            }),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &VaultDir {
        &self.state.dir
    }

    /// The HTTP routes (to be served over TLS).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/keys/{*rest}", any(keys_route))
            .route("/secrets/{*rest}", any(secrets_route))
            .fallback(unknown_route)
            .with_state(self.state.clone())
    }

    /// Binds `addr` and serves the vault over HTTPS with its TLS certificate.
    pub async fn serve(&self, addr: SocketAddr) -> Result<RunningVault, StartError> {
        let (chain, key) = self.state.dir.tls_identity()?;
        let identity =
            ServerIdentity::from_pem(&chain, &key).map_err(|e| StartError::Server(e.to_string()))?;
        let tls = server_config(&identity).map_err(|e| StartError::Server(e.to_string()))?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| StartError::Server(format!("cannot listen on {addr}: {e}")))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| StartError::Server(e.to_string()))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(encfs_governance::server::serve(
            listener,
            tls,
            self.router(),
            ServerLimits::default(),
            Arc::new(ServerStats::default()),
            async {
                let _ = stopped.await;
            },
        ));
        Ok(RunningVault {
            local_addr,
            stop: Some(stop),
            task,
        })
    }
}

/// A vault being served.
#[derive(Debug)]
pub struct RunningVault {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningVault {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.local_addr)
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Runs until the server stops.
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }
}

/// What every route checks first: the bearer token, then the api-version.
fn authorise(
    state: &VaultState,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<String, VaultError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(VaultError::MissingToken)?;
    let token = authorization
        .strip_prefix("Bearer ")
        .or_else(|| authorization.strip_prefix("bearer "))
        .ok_or_else(|| VaultError::InvalidToken("AKV10000: Request is missing a Bearer or PoP token.".into()))?;
    state
        .verifier
        .verify(token.trim())
        .map_err(|e| VaultError::InvalidToken(e.to_string()))?;
    let api_version = query
        .get("api-version")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            VaultError::BadParameter("The request URI contains no api-version query parameter.".into())
        })?;
    if !SUPPORTED_API_VERSIONS.contains(&api_version.as_str()) {
        return Err(VaultError::BadParameter(format!(
            "The specified version ({api_version}) is not recognized. Consider using the latest supported version (7.5)."
        )));
    }
    Ok(api_version.clone())
}

fn vault_base(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    format!("https://{host}")
}

fn json_response<T: serde::Serialize>(value: &T) -> Response {
    (StatusCode::OK, axum::Json(value)).into_response()
}

/// serde's message can quote the offending value; only its position is reported.
fn body_error(what: &str, error: &serde_json::Error) -> VaultError {
    VaultError::BadParameter(format!(
        "The request body is not a valid {what} (line {}, column {}).",
        error.line(),
        error.column()
    ))
}

fn check_name(kind: &str, name: &str) -> Result<(), VaultError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(VaultError::BadParameter(format!(
            "The {kind} name {name:?} is invalid: 1-127 characters of 0-9, a-z, A-Z and -."
        )))
    }
}

async fn unknown_route(State(state): State<Arc<VaultState>>, method: Method, uri: axum::http::Uri) -> Response {
    VaultError::Route(
        StatusCode::NOT_FOUND,
        format!("The requested resource {method} {} was not found.", uri.path()),
    )
    .into_response_for(state.dir.tenant_id())
}

async fn keys_route(
    State(state): State<Arc<VaultState>>,
    method: Method,
    axum::extract::Path(rest): axum::extract::Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let api_version = authorise(&state, &headers, &query)?;
        let segments: Vec<&str> = rest.split('/').collect();
        match (method.clone(), segments.as_slice()) {
            (Method::PUT, [name]) => import_key(&state, &headers, name, &body),
            (Method::GET, [name]) => get_key(&state, &headers, name, None),
            (Method::GET, [name, version]) => get_key(&state, &headers, name, Some(version)),
            (Method::POST, [name, "release"]) => {
                release_key(&state, &headers, &api_version, name, None, &body).await
            }
            (Method::POST, [name, version, "release"]) => {
                release_key(&state, &headers, &api_version, name, Some(version), &body).await
            }
            (Method::PUT | Method::GET | Method::POST, _) => Err(VaultError::Route(
                StatusCode::NOT_FOUND,
                format!("The requested resource {method} /keys/{rest} was not found."),
            )),
            _ => Err(VaultError::Route(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("The method {method} is not allowed on /keys/{rest}."),
            )),
        }
    }
    .await;
    result.unwrap_or_else(|error| error.into_response_for(state.dir.tenant_id()))
}

async fn secrets_route(
    State(state): State<Arc<VaultState>>,
    method: Method,
    axum::extract::Path(rest): axum::extract::Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = (|| {
        authorise(&state, &headers, &query)?;
        let segments: Vec<&str> = rest.split('/').collect();
        match (method.clone(), segments.as_slice()) {
            (Method::PUT, [name]) => set_secret(&state, &headers, name, &body),
            (Method::GET, [name]) => get_secret(&state, &headers, name, None),
            (Method::GET, [name, version]) => get_secret(&state, &headers, name, Some(version)),
            (Method::PUT | Method::GET, _) => Err(VaultError::Route(
                StatusCode::NOT_FOUND,
                format!("The requested resource {method} /secrets/{rest} was not found."),
            )),
            _ => Err(VaultError::Route(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("The method {method} is not allowed on /secrets/{rest}."),
            )),
        }
    })();
    result.unwrap_or_else(|error| error.into_response_for(state.dir.tenant_id()))
}

fn key_bundle(base: &str, name: &str, key: &StoredKey) -> Result<KeyBundle, VaultError> {
    let pkcs8 = key
        .pkcs8()
        .ok_or_else(|| VaultError::Internal(format!("the stored key {name} is unreadable")))?;
    let private = encfs_crypto::kek::KekPrivateKey::from_pkcs8_der(&pkcs8)
        .map_err(|_| VaultError::Internal(format!("the stored key {name} is unreadable")))?;
    let mut jwk: JsonWebKey = public_jwk(&private.public_key())
        .map_err(|e| VaultError::Internal(e.to_string()))?;
    jwk.kid = Some(format!("{base}/keys/{name}/{}", key.version));
    jwk.kty = Some(key.kty.clone());
    jwk.key_ops = Some(key.key_ops.clone());
    Ok(KeyBundle {
        key: jwk,
        attributes: key_attributes(key),
        tags: key.tags.clone(),
        release_policy: key.release_policy.clone(),
    })
}

fn key_attributes(key: &StoredKey) -> KeyAttributes {
    KeyAttributes {
        enabled: Some(key.enabled),
        nbf: key.nbf,
        exp: key.exp,
        created: Some(key.created),
        updated: Some(key.updated),
        recovery_level: Some(RECOVERY_LEVEL.into()),
        recoverable_days: Some(RECOVERABLE_DAYS),
        exportable: Some(key.exportable),
    }
}

fn import_key(
    state: &VaultState,
    headers: &HeaderMap,
    name: &str,
    body: &[u8],
) -> Result<Response, VaultError> {
    check_name("key", name)?;
    let parameters: KeyImportParameters =
        serde_json::from_slice(body).map_err(|e| body_error("key import", &e))?;
    let kty = parameters.key.kty.clone().unwrap_or_default();
    if kty != "RSA" && kty != "RSA-HSM" {
        return Err(VaultError::BadParameter(format!(
            "Key import of kty {kty:?} is not supported by this vault (RSA, RSA-HSM)."
        )));
    }
    if !parameters.key.has_private_part() {
        return Err(VaultError::BadParameter(
            "The key to import has no private part (d, p, q, dp, dq, qi).".into(),
        ));
    }
    let pkcs8 = pkcs8_from_jwk(&parameters.key)
        .map_err(|e| VaultError::BadParameter(format!("The key to import is not valid: {e}")))?;
    let attributes = parameters.attributes.clone().unwrap_or_default();
    let exportable = attributes.exportable.unwrap_or(false);
    let release_policy = match &parameters.release_policy {
        Some(policy) => Some(normalise_release_policy(policy)?),
        None => None,
    };
    if exportable && release_policy.is_none() {
        return Err(VaultError::BadParameter(
            "AKV.SKR.1004: Exportable keys must have release policy.".into(),
        ));
    }
    let now = now_secs();
    let mut stored = StoredKey::new(&pkcs8, now);
    let hsm = parameters.hsm.unwrap_or(false) || kty == "RSA-HSM";
    stored.kty = if hsm { "RSA-HSM" } else { "RSA" }.to_owned();
    stored.key_ops = parameters
        .key
        .key_ops
        .clone()
        .filter(|ops| !ops.is_empty())
        .unwrap_or_else(|| DEFAULT_KEY_OPS.iter().map(|s| (*s).to_owned()).collect());
    stored.enabled = attributes.enabled.unwrap_or(true);
    stored.exportable = exportable;
    stored.nbf = attributes.nbf;
    stored.exp = attributes.exp;
    stored.release_policy = release_policy;
    stored.tags = parameters.tags.clone();
    let bundle = key_bundle(&vault_base(headers), name, &stored)?;
    state.store.put_key(name, stored)?;
    Ok(json_response(&bundle))
}

/// Checks the policy (refusing a malformed one with Key Vault's `BadParameter`) and returns it
/// as the vault keeps and answers it.
fn normalise_release_policy(policy: &KeyReleasePolicy) -> Result<KeyReleasePolicy, VaultError> {
    let data = policy
        .data
        .as_deref()
        .filter(|d| !d.is_empty())
        .ok_or_else(|| VaultError::BadParameter("The release policy has no data.".into()))?;
    if let Some(content_type) = &policy.content_type
        && !content_type.to_ascii_lowercase().starts_with("application/json")
    {
        return Err(VaultError::BadParameter(format!(
            "The release policy content type {content_type:?} is not supported (application/json; charset=utf-8)."
        )));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(data.trim_end_matches('='))
        .map_err(|_| VaultError::BadParameter("The release policy data is not base64url.".into()))?;
    ReleasePolicy::parse(&bytes)
        .map_err(|e| VaultError::BadParameter(format!("The release policy is invalid: {e}")))?;
    Ok(KeyReleasePolicy {
        content_type: Some(POLICY_CONTENT_TYPE.into()),
        data: Some(URL_SAFE_NO_PAD.encode(&bytes)),
        immutable: Some(policy.immutable.unwrap_or(false)),
    })
}

fn get_key(
    state: &VaultState,
    headers: &HeaderMap,
    name: &str,
    version: Option<&str>,
) -> Result<Response, VaultError> {
    let key = state
        .store
        .key(name, version)?
        .ok_or_else(|| VaultError::KeyNotFound(name.to_owned()))?;
    Ok(json_response(&key_bundle(&vault_base(headers), name, &key)?))
}

async fn release_key(
    state: &VaultState,
    headers: &HeaderMap,
    api_version: &str,
    name: &str,
    version: Option<&str>,
    body: &[u8],
) -> Result<Response, VaultError> {
    let key = state
        .store
        .key(name, version)?
        .ok_or_else(|| VaultError::KeyNotFound(name.to_owned()))?;
    let parameters: KeyReleaseParameters =
        serde_json::from_slice(body).map_err(|e| body_error("key release", &e))?;
    if parameters.target.trim().is_empty() {
        return Err(VaultError::BadParameter("The release target (attestation token) is missing.".into()));
    }
    let enc = parameters.enc.as_deref().filter(|e| !e.is_empty()).unwrap_or(DEFAULT_ENC);
    if oaep_hash_of_enc(enc).is_none() {
        return Err(VaultError::BadParameter(format!(
            "The release algorithm (enc) {enc:?} is not supported (CKM_RSA_AES_KEY_WRAP, RSA_AES_KEY_WRAP_256, RSA_AES_KEY_WRAP_384)."
        )));
    }
    if !key.enabled {
        return Err(VaultError::Forbidden(format!("Operation release is not allowed on a disabled key ({name}).")));
    }
    if !key.exportable {
        return Err(VaultError::Forbidden(format!(
            "Operation release is not allowed on a non-exportable key ({name})."
        )));
    }
    let policy_record = key
        .release_policy
        .as_ref()
        .ok_or_else(|| VaultError::Forbidden(format!("The key {name} has no release policy.")))?;
    let policy_bytes = URL_SAFE_NO_PAD
        .decode(policy_record.data.as_deref().unwrap_or_default())
        .map_err(|_| VaultError::Internal(format!("the stored release policy of {name} is unreadable")))?;
    let policy = ReleasePolicy::parse(&policy_bytes)
        .map_err(|e| VaultError::Internal(format!("the stored release policy of {name}: {e}")))?;
    let verified = verify_for_release(
        parameters.target.trim(),
        &policy,
        &state.authority_keys,
        parameters.nonce.as_deref(),
    )
    .await
    .map_err(|error| match error {
        AttestationError::PolicyNotSatisfied => VaultError::PolicyNotSatisfied,
        AttestationError::Malformed(reason) => {
            VaultError::BadParameter(format!("The release target is not an attestation token: {reason}"))
        }
        other => VaultError::Attestation(other),
    })?;
    let (target, target_kid) = runtime_key(&verified.claims).ok_or_else(|| {
        VaultError::BadParameter(
            "The attestation token carries no RSA key in x-ms-runtime.keys to wrap the key to.".into(),
        )
    })?;
    let pkcs8 = key
        .pkcs8()
        .ok_or_else(|| VaultError::Internal(format!("the stored key {name} is unreadable")))?;
    let kid = format!("{}/keys/{name}/{}", vault_base(headers), key.version);
    let attributes = key_attributes(&key);
    let jws = release_jws(
        &state.signer,
        &ReleaseContent {
            api_version,
            enc,
            kid: &kid,
            kty: &key.kty,
            key_ops: &key.key_ops,
            attributes: &attributes,
            release_policy: key.release_policy.as_ref(),
            target: &target,
            target_kid: target_kid.as_deref(),
            material: &pkcs8,
        },
    )
    .map_err(VaultError::Internal)?;
    Ok(json_response(&KeyReleaseResult { value: jws }))
}

fn secret_bundle(base: &str, name: &str, secret: &StoredSecret) -> SecretBundle {
    SecretBundle {
        value: Some(secret.value().to_owned()),
        id: format!("{base}/secrets/{name}/{}", secret.version),
        content_type: secret.content_type.clone(),
        attributes: SecretAttributes {
            enabled: Some(secret.enabled),
            nbf: secret.nbf,
            exp: secret.exp,
            created: Some(secret.created),
            updated: Some(secret.updated),
            recovery_level: Some(RECOVERY_LEVEL.into()),
            recoverable_days: Some(RECOVERABLE_DAYS),
        },
        tags: secret.tags.clone(),
    }
}

fn set_secret(
    state: &VaultState,
    headers: &HeaderMap,
    name: &str,
    body: &[u8],
) -> Result<Response, VaultError> {
    check_name("secret", name)?;
    let parameters: SecretSetParameters =
        serde_json::from_slice(body).map_err(|e| body_error("secret", &e))?;
    if parameters.value.len() > MAX_SECRET_BYTES {
        return Err(VaultError::BadParameter(format!(
            "The secret value is larger than {MAX_SECRET_BYTES} bytes."
        )));
    }
    let mut secret = StoredSecret::new(&parameters.value, now_secs());
    secret.content_type = parameters.content_type.clone();
    if let Some(attributes) = &parameters.attributes {
        secret.enabled = attributes.enabled.unwrap_or(true);
        secret.nbf = attributes.nbf;
        secret.exp = attributes.exp;
    }
    secret.tags = parameters.tags.clone();
    let bundle = secret_bundle(&vault_base(headers), name, &secret);
    state.store.put_secret(name, secret)?;
    Ok(json_response(&bundle))
}

fn get_secret(
    state: &VaultState,
    headers: &HeaderMap,
    name: &str,
    version: Option<&str>,
) -> Result<Response, VaultError> {
    let secret = state
        .store
        .secret(name, version)?
        .ok_or_else(|| VaultError::SecretNotFound(name.to_owned()))?;
    if !secret.enabled {
        return Err(VaultError::Forbidden(format!("Operation get is not allowed on a disabled secret ({name}).")));
    }
    Ok(json_response(&secret_bundle(&vault_base(headers), name, &secret)))
}
