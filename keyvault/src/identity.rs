//! Identities and bearer tokens of the local vault, shaped like Azure AD's managed identities.
//!
//! `encfs keyvault identity create` registers a client in the vault's directory and writes a
//! credential file: the client id, the tenant id, a P-256 private key and a certificate for it
//! issued by the vault's CA (CN = client id). A bearer token is an ES256 JWT that the credential
//! signs itself, with its certificate in the header (`x5c`), claims `aud` (the resource), `iss`
//! (`https://encfs.local/<tenant_id>/`), `oid = sub = appid` (the client id), `tid`, `iat`, `nbf`
//! and `exp` (one hour). The vault accepts a token only if the certificate chains to its CA, the
//! client is registered with that certificate, the signature verifies, it is within `nbf`..`exp`,
//! and `aud` is the vault's resource.
//!
//! Locally, possession of the credential file is what gates a token: nothing attests the holder.
//! In Azure the identity sidecar gets its token by federating a governance-issued token that only
//! an attested clean room can obtain, so attestation gates tokens there too.
//!
//! [`router`] is the token endpoint a clean room's identity sidecar serves on
//! `/metadata/identity/oauth2/token`, in both of its forms: the reference's
//! `?scope=…&clientId&tenantId` → `{"token"}` and IMDS's `?api-version=2018-02-01&resource=…`
//! (header `Metadata: true`) → `{"access_token", "expires_on", "expires_in", "resource",
//! "token_type"}` that azure-identity's `ManagedIdentityCredential` reads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::durable_file::{PRIVATE_MODE, write_atomic};
use crate::vault_dir::{RegisteredClient, VaultDir, VaultDirError, random_uuid, sha256_hex};

/// The resource (token audience) of Azure Key Vault.
pub const VAULT_RESOURCE: &str = "https://vault.azure.net";
/// Lifetime of a minted token, in seconds.
pub const TOKEN_LIFETIME_SECS: u64 = 3600;
/// Clock skew tolerated on `nbf` and `exp`, in seconds.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// Errors of credentials, tokens and their verification.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The credential file could not be read or written.
    #[error("credential file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The credential file is not the credential JSON.
    #[error("credential file {path} is not a credential: {reason}")]
    BadCredential {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The vault's directory failed.
    #[error(transparent)]
    VaultDir(#[from] VaultDirError),
    /// Signing a token failed (a key that is not P-256 PKCS#8).
    #[error("cannot sign a token with the credential of client {client_id}: {reason}")]
    Mint {
        /// The client.
        client_id: String,
        /// The cause.
        reason: String,
    },
    /// The bearer token was refused; the reason names the check that failed.
    #[error("the bearer token was refused: {0}")]
    InvalidToken(String),
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A client's credential: what the credential file holds.
#[derive(Clone, Serialize, Deserialize)]
pub struct Credential {
    /// The client (application) id.
    pub client_id: String,
    /// The tenant id.
    pub tenant_id: String,
    /// The P-256 private key, PKCS#8 PEM.
    private_key_pem: String,
    /// The certificate of the key, PEM, issued by the vault's CA with CN = `client_id`.
    pub certificate_pem: String,
}

impl Drop for Credential {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.private_key_pem);
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("client_id", &self.client_id)
            .field("tenant_id", &self.tenant_id)
            .field("private_key_pem", &"<redacted>")
            .finish()
    }
}

/// A bearer token and when it expires.
#[derive(Clone)]
pub struct AccessToken {
    /// The JWT.
    pub token: String,
    /// Expiry, seconds since the Unix epoch.
    pub expires_on: u64,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"<redacted>")
            .field("expires_on", &self.expires_on)
            .finish()
    }
}

/// The claims of a bearer token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenClaims {
    /// The resource the token is for.
    pub aud: String,
    /// `https://encfs.local/<tenant_id>/`.
    pub iss: String,
    /// The client id.
    pub oid: String,
    /// The client id.
    pub sub: String,
    /// The client id.
    pub appid: String,
    /// The tenant id.
    pub tid: String,
    /// Issued at.
    pub iat: u64,
    /// Not before.
    pub nbf: u64,
    /// Expiry.
    pub exp: u64,
}

/// The issuer claim of tokens of `tenant_id`.
pub fn issuer_for_tenant(tenant_id: &str) -> String {
    format!("https://encfs.local/{tenant_id}/")
}

/// The resource of a scope: `https://vault.azure.net/.default` → `https://vault.azure.net`.
pub fn resource_of_scope(scope: &str) -> &str {
    scope.strip_suffix("/.default").unwrap_or(scope)
}

impl Credential {
    /// Registers a new client `name` in the vault at `dir` (initialising the vault if needed) and
    /// returns its credential.
    pub fn create(dir: &VaultDir, name: &str) -> Result<Self, IdentityError> {
        let client_id = random_uuid();
        let issued = dir.issue_client_certificate(&client_id)?;
        let der = pem::parse(&issued.certificate_pem)
            .map_err(|e| IdentityError::Mint {
                client_id: client_id.clone(),
                reason: e.to_string(),
            })?
            .into_contents();
        dir.register_client(RegisteredClient {
            name: name.to_owned(),
            client_id: client_id.clone(),
            tenant_id: dir.tenant_id().to_owned(),
            certificate_sha256: sha256_hex(&der),
        })?;
        Ok(Self {
            client_id,
            tenant_id: dir.tenant_id().to_owned(),
            private_key_pem: issued.private_key_pem.to_string(),
            certificate_pem: issued.certificate_pem,
        })
    }

    /// Reads a credential file.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| IdentityError::Io {
            path: path.to_path_buf(),
            source,
        })?);
        let credential: Self =
            serde_json::from_slice(&bytes).map_err(|e| IdentityError::BadCredential {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        credential.signing_key().map_err(|_| IdentityError::BadCredential {
            path: path.to_path_buf(),
            reason: "private_key_pem is not a P-256 PKCS#8 private key".into(),
        })?;
        credential.certificate_der().map_err(|_| IdentityError::BadCredential {
            path: path.to_path_buf(),
            reason: "certificate_pem holds no certificate".into(),
        })?;
        Ok(credential)
    }

    /// Writes the credential file (mode 0600, atomically).
    pub fn save(&self, path: &Path) -> Result<(), IdentityError> {
        let bytes = Zeroizing::new(serde_json::to_vec_pretty(self).expect("serialisable"));
        write_atomic(path, &bytes, PRIVATE_MODE).map_err(|source| IdentityError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    fn signing_key(&self) -> Result<EncodingKey, jsonwebtoken::errors::Error> {
        EncodingKey::from_ec_pem(self.private_key_pem.as_bytes())
    }

    fn certificate_der(&self) -> Result<Vec<u8>, pem::PemError> {
        pem::parse(&self.certificate_pem).map(pem::Pem::into_contents)
    }

    /// Mints a bearer token for `resource` (a scope's `/.default` suffix is dropped).
    pub fn mint(&self, resource: &str) -> Result<AccessToken, IdentityError> {
        let mint_error = |reason: String| IdentityError::Mint {
            client_id: self.client_id.clone(),
            reason,
        };
        let now = now_secs();
        let claims = TokenClaims {
            aud: resource_of_scope(resource).to_owned(),
            iss: issuer_for_tenant(&self.tenant_id),
            oid: self.client_id.clone(),
            sub: self.client_id.clone(),
            appid: self.client_id.clone(),
            tid: self.tenant_id.clone(),
            iat: now,
            nbf: now,
            exp: now + TOKEN_LIFETIME_SECS,
        };
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("JWT".into());
        let der = self.certificate_der().map_err(|e| mint_error(e.to_string()))?;
        header.x5c = Some(vec![STANDARD.encode(der)]);
        let key = self.signing_key().map_err(|e| mint_error(e.to_string()))?;
        let token =
            jsonwebtoken::encode(&header, &claims, &key).map_err(|e| mint_error(e.to_string()))?;
        Ok(AccessToken {
            token,
            expires_on: claims.exp,
        })
    }
}

/// Who a verified bearer token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The client id (`oid`).
    pub client_id: String,
    /// The tenant id (`tid`).
    pub tenant_id: String,
}

/// Verifies bearer tokens against the vault's CA and client registry (see the module comment).
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    dir: VaultDir,
    ca_public_key: Vec<u8>,
    resource: String,
}

fn refused(reason: impl Into<String>) -> IdentityError {
    IdentityError::InvalidToken(reason.into())
}

impl TokenVerifier {
    /// A verifier for tokens of `resource` (normally [`VAULT_RESOURCE`]) issued to clients of `dir`.
    pub fn new(dir: &VaultDir, resource: &str) -> Result<Self, IdentityError> {
        let ca_pem = dir.ca_pem()?;
        let corrupt = |reason: String| {
            IdentityError::VaultDir(VaultDirError::Corrupt {
                path: dir.root().join(crate::vault_dir::CA_CERT_FILE),
                reason,
            })
        };
        let ca_der = pem::parse(&ca_pem)
            .map_err(|e| corrupt(e.to_string()))?
            .into_contents();
        let (_, ca) =
            x509_parser::parse_x509_certificate(&ca_der).map_err(|e| corrupt(e.to_string()))?;
        Ok(Self {
            dir: dir.clone(),
            ca_public_key: ca.public_key().subject_public_key.data.to_vec(),
            resource: resource.trim_end_matches('/').to_owned(),
        })
    }

    /// Verifies `token` and returns its principal, or the reason it was refused.
    pub fn verify(&self, token: &str) -> Result<Principal, IdentityError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| refused(format!("not a JWT: {e}")))?;
        if header.alg != Algorithm::ES256 {
            return Err(refused(format!("alg {:?} is not ES256", header.alg)));
        }
        let chain = header
            .x5c_der()
            .map_err(|e| refused(format!("x5c is not base64 DER: {e}")))?
            .unwrap_or_default();
        let leaf_der = chain.first().ok_or_else(|| refused("the header has no x5c"))?;
        let (rest, leaf) = x509_parser::parse_x509_certificate(leaf_der)
            .map_err(|e| refused(format!("x5c[0] is not a certificate: {e}")))?;
        if !rest.is_empty() {
            return Err(refused("x5c[0] has trailing bytes"));
        }
        if leaf.signature_algorithm.algorithm != x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA256 {
            return Err(refused("the certificate is not signed by the vault's CA"));
        }
        aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
            &self.ca_public_key,
        )
        .verify(leaf.tbs_certificate.as_ref(), &leaf.signature_value.data)
        .map_err(|_| refused("the certificate is not signed by the vault's CA"))?;
        if !leaf.validity().is_valid() {
            return Err(refused("the certificate is outside its validity period"));
        }
        let common_name = leaf
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .ok_or_else(|| refused("the certificate has no common name"))?
            .to_owned();
        let fingerprint = sha256_hex(leaf_der);
        let client = self
            .dir
            .clients()?
            .into_iter()
            .find(|c| c.client_id == common_name && c.certificate_sha256 == fingerprint)
            .ok_or_else(|| refused(format!("client {common_name} is not registered")))?;

        let key = DecodingKey::from_ec_der(&leaf.public_key().subject_public_key.data);
        let mut validation = Validation::new(Algorithm::ES256);
        validation.leeway = CLOCK_SKEW_SECS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss"]);
        validation.set_audience(&[self.resource.clone(), format!("{}/", self.resource)]);
        validation.set_issuer(&[issuer_for_tenant(&client.tenant_id)]);
        let data = jsonwebtoken::decode::<TokenClaims>(token, &key, &validation)
            .map_err(|e| refused(e.to_string()))?;
        let claims = data.claims;
        if claims.oid != client.client_id
            || claims.appid != client.client_id
            || claims.sub != client.client_id
        {
            return Err(refused("oid/appid/sub do not name the certificate's client"));
        }
        if claims.tid != client.tenant_id {
            return Err(refused("tid is not the client's tenant"));
        }
        Ok(Principal {
            client_id: client.client_id,
            tenant_id: client.tenant_id,
        })
    }
}

/// The token endpoint of a clean room's identity sidecar, serving `credential`'s tokens on
/// `GET /metadata/identity/oauth2/token` (both forms; see the module comment).
pub fn router(credential: Credential) -> Router {
    Router::new()
        .route("/metadata/identity/oauth2/token", get(token_endpoint))
        .with_state(Arc::new(credential))
}

fn imds_error(status: StatusCode, error: &str, description: String) -> Response {
    (
        status,
        Json(serde_json::json!({"error": error, "error_description": description})),
    )
        .into_response()
}

fn query_value<'a>(query: &'a HashMap<String, String>, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|name| query.get(*name))
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

async fn token_endpoint(
    State(credential): State<Arc<Credential>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(client_id) = query_value(&query, &["clientId", "client_id"])
        && client_id != credential.client_id
    {
        return imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("this endpoint holds no identity with client id {client_id}"),
        );
    }
    if let Some(tenant_id) = query_value(&query, &["tenantId", "tenant_id"])
        && tenant_id != credential.tenant_id
    {
        return imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("this endpoint holds no identity in tenant {tenant_id}"),
        );
    }
    let mint = |resource: &str| {
        credential.mint(resource).map_err(|e| {
            imds_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                e.to_string(),
            )
        })
    };
    if let Some(resource) = query_value(&query, &["resource"]) {
        let metadata = headers
            .get("metadata")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if !metadata {
            return imds_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Required metadata header not specified".into(),
            );
        }
        let resource = resource_of_scope(resource);
        return match mint(resource) {
            Ok(token) => {
                let expires_in = token.expires_on.saturating_sub(now_secs());
                Json(serde_json::json!({
                    "access_token": token.token,
                    "expires_on": token.expires_on.to_string(),
                    "expires_in": expires_in.to_string(),
                    "ext_expires_in": expires_in.to_string(),
                    "not_before": (token.expires_on - TOKEN_LIFETIME_SECS).to_string(),
                    "resource": resource,
                    "token_type": "Bearer",
                }))
                .into_response()
            }
            Err(response) => response,
        };
    }
    if let Some(scope) = query_value(&query, &["scope"]) {
        return match mint(resource_of_scope(scope)) {
            Ok(token) => Json(serde_json::json!({"token": token.token})).into_response(),
            Err(response) => response,
        };
    }
    imds_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "the request names neither a scope nor a resource".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault() -> (tempfile::TempDir, VaultDir) {
        let dir = tempfile::tempdir().unwrap();
        let vault = VaultDir::open_or_init(dir.path()).unwrap();
        (dir, vault)
    }

    #[test]
    fn a_minted_token_verifies_and_names_the_client() {
        let (_tmp, vault) = vault();
        let credential = Credential::create(&vault, "reader").unwrap();
        let verifier = TokenVerifier::new(&vault, VAULT_RESOURCE).unwrap();
        let token = credential.mint("https://vault.azure.net/.default").unwrap();
        let principal = verifier.verify(&token.token).unwrap();
        assert_eq!(principal.client_id, credential.client_id);
        assert_eq!(principal.tenant_id, vault.tenant_id());
        assert!(token.expires_on > now_secs() + TOKEN_LIFETIME_SECS - 10);
    }

    #[test]
    fn the_credential_file_round_trips_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let (tmp, vault) = vault();
        let credential = Credential::create(&vault, "reader").unwrap();
        let path = tmp.path().join("cred.json");
        credential.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = Credential::load(&path).unwrap();
        assert_eq!(loaded.client_id, credential.client_id);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for field in ["client_id", "tenant_id", "private_key_pem", "certificate_pem"] {
            assert!(json.get(field).is_some(), "{field}");
        }
        assert!(!format!("{loaded:?}").contains("PRIVATE"));
    }

    #[test]
    fn refuses_wrong_audience_unregistered_foreign_and_tampered_tokens() {
        let (_tmp, vault) = vault();
        let credential = Credential::create(&vault, "reader").unwrap();
        let verifier = TokenVerifier::new(&vault, VAULT_RESOURCE).unwrap();

        let other_audience = credential.mint("https://storage.azure.com").unwrap();
        assert!(verifier.verify(&other_audience.token).is_err());

        // A client of another vault: its certificate does not chain to this CA.
        let (_tmp2, other_vault) = vault_pair();
        let foreign = Credential::create(&other_vault, "reader").unwrap();
        let err = verifier
            .verify(&foreign.mint(VAULT_RESOURCE).unwrap().token)
            .unwrap_err();
        assert!(err.to_string().contains("CA"), "{err}");

        // Tampered payload.
        let token = credential.mint(VAULT_RESOURCE).unwrap().token;
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&parts[1])
                .unwrap(),
        )
        .unwrap();
        claims["exp"] = serde_json::json!(claims["exp"].as_u64().unwrap() + 100_000);
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&claims).unwrap());
        assert!(verifier.verify(&parts.join(".")).is_err());

        assert!(verifier.verify("not a token").is_err());
    }

    fn vault_pair() -> (tempfile::TempDir, VaultDir) {
        vault()
    }

    #[test]
    fn an_unregistered_certificate_of_the_right_ca_is_refused() {
        let (_tmp, vault) = vault();
        let verifier = TokenVerifier::new(&vault, VAULT_RESOURCE).unwrap();
        // Issued by the CA but never registered.
        let issued = vault.issue_client_certificate("ghost").unwrap();
        let ghost = Credential {
            client_id: "ghost".into(),
            tenant_id: vault.tenant_id().into(),
            private_key_pem: issued.private_key_pem.to_string(),
            certificate_pem: issued.certificate_pem,
        };
        let err = verifier
            .verify(&ghost.mint(VAULT_RESOURCE).unwrap().token)
            .unwrap_err();
        assert!(err.to_string().contains("not registered"), "{err}");
    }

    #[test]
    fn an_expired_token_is_refused() {
        let (_tmp, vault) = vault();
        let credential = Credential::create(&vault, "reader").unwrap();
        let verifier = TokenVerifier::new(&vault, VAULT_RESOURCE).unwrap();
        let now = now_secs();
        let claims = TokenClaims {
            aud: VAULT_RESOURCE.into(),
            iss: issuer_for_tenant(&credential.tenant_id),
            oid: credential.client_id.clone(),
            sub: credential.client_id.clone(),
            appid: credential.client_id.clone(),
            tid: credential.tenant_id.clone(),
            iat: now - 7200,
            nbf: now - 7200,
            exp: now - 3600,
        };
        let mut header = Header::new(Algorithm::ES256);
        header.x5c = Some(vec![STANDARD.encode(credential.certificate_der().unwrap())]);
        let token = jsonwebtoken::encode(&header, &claims, &credential.signing_key().unwrap())
            .unwrap();
        assert!(verifier.verify(&token).is_err());
    }
}
