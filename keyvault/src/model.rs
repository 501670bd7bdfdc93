//! The Key Vault REST wire shapes this vault and its client exchange (Key Vault data-plane
//! 7.4/7.5 names: `JsonWebKey`, `KeyBundle`, `KeyReleasePolicy`, `SecretBundle`, the error body).
//! Binary JWK members are base64url without padding, as Key Vault writes them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A JSON Web Key as Key Vault carries it (RSA members only; `key_hsm` for released keys).
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct JsonWebKey {
    /// The key identifier (`https://{vault}/keys/{name}/{version}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// `RSA` or `RSA-HSM`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kty: Option<String>,
    /// Permitted operations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<String>>,
    /// RSA modulus.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// RSA private exponent (secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub d: Option<String>,
    /// RSA `d mod (p-1)` (secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dp: Option<String>,
    /// RSA `d mod (q-1)` (secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dq: Option<String>,
    /// RSA `q^-1 mod p` (secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qi: Option<String>,
    /// RSA prime p (secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p: Option<String>,
    /// RSA prime q (secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    /// The key wrapped for a target (release, or BYOK import).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_hsm: Option<String>,
}

impl JsonWebKey {
    /// Whether any private member is present.
    pub fn has_private_part(&self) -> bool {
        [&self.d, &self.dp, &self.dq, &self.qi, &self.p, &self.q]
            .iter()
            .any(|m| m.is_some())
    }

    /// The public part only (`kid`, `kty`, `key_ops`, `n`, `e`).
    pub fn public_part(&self) -> Self {
        let mut public = Self::default();
        public.kid = self.kid.clone();
        public.kty = self.kty.clone();
        public.key_ops = self.key_ops.clone();
        public.n = self.n.clone();
        public.e = self.e.clone();
        public
    }
}

impl Drop for JsonWebKey {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for member in [
            &mut self.d,
            &mut self.dp,
            &mut self.dq,
            &mut self.qi,
            &mut self.p,
            &mut self.q,
        ] {
            if let Some(value) = member.as_mut() {
                value.zeroize();
            }
        }
    }
}

impl std::fmt::Debug for JsonWebKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonWebKey")
            .field("kid", &self.kid)
            .field("kty", &self.kty)
            .field("key_ops", &self.key_ops)
            .field("n", &self.n)
            .field("e", &self.e)
            .field("private", &self.has_private_part().then_some("<redacted>"))
            .finish()
    }
}

/// Key attributes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KeyAttributes {
    /// Whether the key may be used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Not before (seconds since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Expiry (seconds since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Creation time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
    /// Last update time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated: Option<u64>,
    /// Soft-delete recovery level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_level: Option<String>,
    /// Soft-delete retention days.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recoverable_days: Option<u64>,
    /// Whether the private key may be released.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exportable: Option<bool>,
}

/// A key release policy as Key Vault carries it: the policy JSON, base64url, in `data`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KeyReleasePolicy {
    /// `application/json; charset=utf-8`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// base64url of the policy JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Whether the policy may never change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

/// `PUT /keys/{name}` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeyImportParameters {
    /// The key with its private part.
    pub key: JsonWebKey,
    /// Whether to import into an HSM (`Hsm` in the REST spec; `hsm` accepted).
    #[serde(rename = "Hsm", alias = "hsm", skip_serializing_if = "Option::is_none")]
    pub hsm: Option<bool>,
    /// Attributes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<KeyAttributes>,
    /// Tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// The release policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_policy: Option<KeyReleasePolicy>,
}

/// A key as Key Vault returns it (public part only).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeyBundle {
    /// The public key.
    pub key: JsonWebKey,
    /// Attributes.
    pub attributes: KeyAttributes,
    /// Tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// The release policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_policy: Option<KeyReleasePolicy>,
}

/// `POST /keys/{name}[/{version}]/release` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeyReleaseParameters {
    /// The attestation token of the target environment.
    pub target: String,
    /// A nonce the token must carry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The wrapping algorithm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enc: Option<String>,
}

/// The release answer: a JWS.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyReleaseResult {
    /// The JWS (compact form).
    pub value: String,
}

/// Secret attributes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretAttributes {
    /// Whether the secret may be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Not before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Creation time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
    /// Last update time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated: Option<u64>,
    /// Soft-delete recovery level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_level: Option<String>,
    /// Soft-delete retention days.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recoverable_days: Option<u64>,
}

/// `PUT /secrets/{name}` body.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretSetParameters {
    /// The value.
    pub value: String,
    /// Content type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Attributes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<SecretAttributes>,
    /// Tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
}

/// A secret as Key Vault returns it.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretBundle {
    /// The value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `https://{vault}/secrets/{name}/{version}`.
    pub id: String,
    /// Content type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Attributes.
    pub attributes: SecretAttributes,
    /// Tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
}

impl Drop for SecretBundle {
    fn drop(&mut self) {
        if let Some(value) = self.value.as_mut() {
            zeroize::Zeroize::zeroize(value);
        }
    }
}

impl std::fmt::Debug for SecretBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBundle")
            .field("id", &self.id)
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .field("attributes", &self.attributes)
            .finish()
    }
}

/// Key Vault's error body `{"error": {"code", "message", "innererror"?}}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error of an [`ErrorBody`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorDetail {
    /// The stable code (`Unauthorized`, `Forbidden`, `KeyNotFound`, …).
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// A more specific code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub innererror: Option<Box<ErrorDetail>>,
}
