//! Verification of the attestation token (`target`) of a key release, as Key Vault does it: the
//! token's `iss` must be an `authority` of the key's release policy; its signature must verify
//! against that authority's published keys (`{authority}/.well-known/openid-configuration` →
//! `jwks_uri`, fetched over TLS that trusts the system roots plus the `--trust-authority-ca`
//! files); it must be within `nbf`..`exp`; its `nonce` must equal the request's when the request
//! gives one; and its claims must satisfy the policy.
//!
//! A JWKS key is used through its `n`/`e` when present, else through the certificate `x5c[0]`
//! (MAA publishes only `kid`, `kty` and `x5c`). Fetched key sets are cached for five minutes per
//! authority and refetched once when a token names a `kid` the cache lacks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::policy::{ReleasePolicy, same_authority};

/// How long a fetched key set is used before it is fetched again.
const JWKS_CACHE_TTL: Duration = Duration::from_secs(300);
/// Clock skew tolerated on the token's `nbf` and `exp`.
pub const ATTESTATION_CLOCK_SKEW_SECS: u64 = 30;
/// Signature algorithms accepted on attestation tokens.
const ACCEPTED_ALGORITHMS: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// Why an attestation token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttestationError {
    /// The target is not a JWS/JWT.
    #[error("the target is not an attestation token (JWT): {0}")]
    Malformed(String),
    /// The token's issuer is not an authority of the policy.
    #[error("the token's issuer {issuer:?} is not an authority of the key's release policy")]
    UnknownAuthority {
        /// The token's `iss`.
        issuer: String,
    },
    /// The authority's keys could not be fetched.
    #[error("cannot fetch the signing keys of authority {authority}: {reason}")]
    Jwks {
        /// The authority.
        authority: String,
        /// What failed.
        reason: String,
    },
    /// The signature, the algorithm or the validity period failed.
    #[error("the token does not verify: {0}")]
    Invalid(String),
    /// The request's nonce is not the token's.
    #[error("the request's nonce does not match the token's nonce claim")]
    NonceMismatch,
    /// The claims do not satisfy the release policy.
    #[error("the token's claims do not satisfy the key's release policy")]
    PolicyNotSatisfied,
}

/// The verified claims of a token and its authority.
#[derive(Debug, Clone)]
pub struct VerifiedAttestation {
    /// The authority (as the policy names it).
    pub authority: String,
    /// All claims of the token.
    pub claims: Value,
}

/// Fetches and caches authorities' signing keys.
#[derive(Debug)]
pub struct AuthorityKeys {
    http: reqwest::Client,
    cache: Mutex<HashMap<String, (Instant, Vec<Value>)>>,
}

impl AuthorityKeys {
    /// A fetcher trusting the system (webpki) roots plus `extra_ca_pems`.
    pub fn new<I, P>(extra_ca_pems: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(5));
        for (index, pem) in extra_ca_pems.into_iter().enumerate() {
            let certificates = reqwest::Certificate::from_pem_bundle(pem.as_ref())
                .map_err(|e| format!("authority CA {index}: {e}"))?;
            if certificates.is_empty() {
                return Err(format!("authority CA {index}: no CERTIFICATE block"));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        Ok(Self {
            http: builder.build().map_err(|e| e.to_string())?,
            cache: Mutex::new(HashMap::new()),
        })
    }

    async fn fetch_json(&self, url: &str) -> Result<Value, String> {
        if !url.starts_with("https://") {
            return Err(format!("{url} is not https"));
        }
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{url}: HTTP {}", response.status()));
        }
        response.json().await.map_err(|e| format!("{url}: {e}"))
    }

    async fn fetch(&self, authority: &str) -> Result<Vec<Value>, String> {
        let base = if authority.contains("://") {
            authority.trim_end_matches('/').to_owned()
        } else {
            format!("https://{}", authority.trim_end_matches('/'))
        };
        let configuration = self
            .fetch_json(&format!("{base}/.well-known/openid-configuration"))
            .await?;
        let jwks_uri = configuration
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or("the OpenID configuration has no jwks_uri")?;
        let jwks = self.fetch_json(jwks_uri).await?;
        jwks.get("keys")
            .and_then(Value::as_array)
            .cloned()
            .ok_or_else(|| format!("{jwks_uri}: not a JWKS (no keys array)"))
    }

    /// The key set of `authority`; `refresh` bypasses the cache.
    pub async fn key_set(
        &self,
        authority: &str,
        refresh: bool,
    ) -> Result<Vec<Value>, AttestationError> {
        if !refresh {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((fetched, set)) = cache.get(authority)
                && fetched.elapsed() < JWKS_CACHE_TTL
            {
                return Ok(set.clone());
            }
        }
        let set = self
            .fetch(authority)
            .await
            .map_err(|reason| AttestationError::Jwks {
                authority: authority.to_owned(),
                reason,
            })?;
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(authority.to_owned(), (Instant::now(), set.clone()));
        Ok(set)
    }
}

fn decoding_key(jwk: &Value) -> Result<DecodingKey, AttestationError> {
    let member = |name: &str| jwk.get(name).and_then(Value::as_str).filter(|v| !v.is_empty());
    if let (Some(n), Some(e)) = (member("n"), member("e")) {
        return DecodingKey::from_rsa_components(n, e)
            .map_err(|e| AttestationError::Invalid(e.to_string()));
    }
    if let (Some(x), Some(y)) = (member("x"), member("y")) {
        return DecodingKey::from_ec_components(x, y)
            .map_err(|e| AttestationError::Invalid(e.to_string()));
    }
    let certificate = jwk
        .get("x5c")
        .and_then(Value::as_array)
        .and_then(|chain| chain.first())
        .and_then(Value::as_str)
        .ok_or_else(|| {
            AttestationError::Invalid("the authority's key has neither n/e, x/y nor x5c".into())
        })?;
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(certificate)
        .map_err(|_| AttestationError::Invalid("the authority key's x5c is not base64".into()))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).map_err(|_| {
        AttestationError::Invalid("the authority key's x5c is not a certificate".into())
    })?;
    let public_key = parsed.public_key();
    let raw = &public_key.subject_public_key.data;
    if public_key.algorithm.algorithm == x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION {
        Ok(DecodingKey::from_rsa_der(raw))
    } else {
        Ok(DecodingKey::from_ec_der(raw))
    }
}

fn find_key<'a>(set: &'a [Value], kid: Option<&str>) -> Option<&'a Value> {
    match kid {
        Some(kid) => set
            .iter()
            .find(|key| key.get("kid").and_then(Value::as_str) == Some(kid)),
        None if set.len() == 1 => set.first(),
        None => None,
    }
}

fn claim_as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Verifies `token` for a release under `policy` (see the module comment); `nonce` is the
/// release request's.
pub async fn verify_for_release(
    token: &str,
    policy: &ReleasePolicy,
    keys: &AuthorityKeys,
    nonce: Option<&str>,
) -> Result<VerifiedAttestation, AttestationError> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| AttestationError::Malformed(e.to_string()))?;
    if !ACCEPTED_ALGORITHMS.contains(&header.alg) {
        return Err(AttestationError::Invalid(format!(
            "algorithm {:?} is not accepted",
            header.alg
        )));
    }
    // The issuer is read before the signature is checked only to choose the authority whose
    // keys must verify it; nothing else of the unverified payload is used.
    let unverified: Value = jsonwebtoken::dangerous::insecure_decode(token)
        .map(|data: jsonwebtoken::TokenData<Value>| data.claims)
        .map_err(|e| AttestationError::Malformed(e.to_string()))?;
    let issuer = unverified
        .get("iss")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let authority = policy
        .authorities()
        .into_iter()
        .find(|authority| same_authority(authority, &issuer))
        .ok_or_else(|| AttestationError::UnknownAuthority {
            issuer: issuer.clone(),
        })?
        .to_owned();

    let mut set = keys.key_set(&authority, false).await?;
    if find_key(&set, header.kid.as_deref()).is_none() {
        set = keys.key_set(&authority, true).await?;
    }
    let jwk = find_key(&set, header.kid.as_deref()).ok_or_else(|| {
        AttestationError::Invalid(format!(
            "the authority publishes no key {:?}",
            header.kid.as_deref().unwrap_or("")
        ))
    })?;
    let key = decoding_key(jwk)?;
    let mut validation = Validation::new(header.alg);
    validation.leeway = ATTESTATION_CLOCK_SKEW_SECS;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "iss"]);
    validation.set_issuer(&[issuer.as_str()]);
    let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map_err(|e| AttestationError::Invalid(e.to_string()))?
        .claims;

    if let Some(nonce) = nonce.filter(|n| !n.is_empty()) {
        let token_nonce = claims.get("nonce").and_then(claim_as_text);
        if token_nonce.as_deref() != Some(nonce) {
            return Err(AttestationError::NonceMismatch);
        }
    }
    if !policy.evaluate(&issuer, &claims) {
        return Err(AttestationError::PolicyNotSatisfied);
    }
    Ok(VerifiedAttestation { authority, claims })
}
