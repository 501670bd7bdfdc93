//! The answer of a key release: the key wrapped to the target's runtime key (`key_hsm`), inside
//! a JWS the vault signs with its release-signing certificate — the shape the reference's SKR
//! sidecar reads (ref §11 steps 5–9).
//!
//! JWS header `{alg: RS256, kid, x5c: [signing cert, CA], x5t#S256}`; payload
//! `{request: {api-version, enc, kid}, response: {key: {attributes, key: {key_hsm, kid, kty,
//! key_ops}, release_policy}}}`; `key_hsm` = base64url(JSON `{schema_version, header: {kid, alg:
//! "dir", enc}, ciphertext}`) and `ciphertext` = base64url(RSA-OAEP(AES key) ‖ AES-KWP(PKCS#8
//! DER)), the OAEP hash chosen by `enc`.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use encfs_crypto::kek::{KekPublicKey, OaepHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::model::{JsonWebKey, KeyAttributes, KeyReleasePolicy};
use crate::rsa_jwk::public_key_from_jwk;

/// Key Vault's default `enc` (OAEP-SHA-1 ‖ KWP).
pub const DEFAULT_ENC: &str = "CKM_RSA_AES_KEY_WRAP";

/// The OAEP hash of a release `enc`; `None` for an unknown one.
pub fn oaep_hash_of_enc(enc: &str) -> Option<OaepHash> {
    match enc {
        "CKM_RSA_AES_KEY_WRAP" => Some(OaepHash::Sha1),
        "RSA_AES_KEY_WRAP_256" => Some(OaepHash::Sha256),
        "RSA_AES_KEY_WRAP_384" => Some(OaepHash::Sha384),
        _ => None,
    }
}

/// The first RSA key of the token's `x-ms-runtime.keys` and its `kid`.
pub fn runtime_key(claims: &Value) -> Option<(KekPublicKey, Option<String>)> {
    let keys = claims.get("x-ms-runtime")?.get("keys")?.as_array()?;
    keys.iter().find_map(|key| {
        let jwk: JsonWebKey = serde_json::from_value(key.clone()).ok()?;
        if jwk.kty.as_deref() != Some("RSA") && jwk.kty.as_deref() != Some("RSA-HSM") {
            return None;
        }
        let public = public_key_from_jwk(&jwk).ok()?;
        Some((public, jwk.kid.clone()))
    })
}

/// The vault's release-signing identity: the RSA key and the chain it signs with.
pub struct ReleaseSigner {
    key: EncodingKey,
    chain_der: Vec<Vec<u8>>,
    kid: String,
}

impl std::fmt::Debug for ReleaseSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReleaseSigner").field("kid", &self.kid).finish()
    }
}

impl ReleaseSigner {
    /// From the signing certificate chain (PEM, leaf first) and its RSA PKCS#8 PEM key.
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Self, String> {
        let chain_der: Vec<Vec<u8>> = pem::parse_many(chain_pem)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|p| p.tag() == "CERTIFICATE")
            .map(pem::Pem::into_contents)
            .collect();
        let leaf = chain_der.first().ok_or("no signing certificate")?;
        let kid = crate::vault_dir::sha256_hex(leaf);
        let key = EncodingKey::from_rsa_pem(key_pem.as_bytes()).map_err(|e| e.to_string())?;
        Ok(Self {
            key,
            chain_der,
            kid,
        })
    }

    /// The DER of the signing certificate.
    pub fn certificate_der(&self) -> &[u8] {
        &self.chain_der[0]
    }
}

/// What a release wraps and describes.
pub struct ReleaseContent<'a> {
    /// The api-version of the request.
    pub api_version: &'a str,
    /// The `enc` of the request (or [`DEFAULT_ENC`]).
    pub enc: &'a str,
    /// The key id (`https://{vault}/keys/{name}/{version}`).
    pub kid: &'a str,
    /// The key's type and operations.
    pub kty: &'a str,
    /// Permitted operations.
    pub key_ops: &'a [String],
    /// The key's attributes.
    pub attributes: &'a KeyAttributes,
    /// The key's release policy.
    pub release_policy: Option<&'a KeyReleasePolicy>,
    /// The target's runtime key and its kid.
    pub target: &'a KekPublicKey,
    /// The runtime key's `kid` from the token.
    pub target_kid: Option<&'a str>,
    /// The key material (PKCS#8 DER); it appears only wrapped.
    pub material: &'a [u8],
}

/// Builds the signed release JWS.
pub fn release_jws(signer: &ReleaseSigner, content: &ReleaseContent<'_>) -> Result<String, String> {
    let hash = oaep_hash_of_enc(content.enc).ok_or("unknown enc")?;
    let wrapped = encfs_crypto::rsa_aes_wrap::wrap(content.target, hash, content.material)
        .map_err(|e| e.to_string())?;
    let key_hsm = json!({
        "schema_version": "1.0",
        "header": {
            "kid": content.target_kid.unwrap_or("TpmEphemeralEncryptionKey"),
            "alg": "dir",
            "enc": content.enc,
        },
        "ciphertext": URL_SAFE_NO_PAD.encode(wrapped),
    });
    let key_hsm = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&key_hsm).expect("serialisable"));
    let payload = json!({
        "request": {
            "api-version": content.api_version,
            "enc": content.enc,
            "kid": content.kid,
        },
        "response": {
            "key": {
                "attributes": content.attributes,
                "key": {
                    "key_hsm": key_hsm,
                    "kid": content.kid,
                    "kty": content.kty,
                    "key_ops": content.key_ops,
                },
                "release_policy": content.release_policy,
            }
        }
    });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(signer.kid.clone());
    header.x5c = Some(signer.chain_der.iter().map(|der| STANDARD.encode(der)).collect());
    header.x5t_s256 = Some(URL_SAFE_NO_PAD.encode(
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, signer.certificate_der()).as_ref(),
    ));
    jsonwebtoken::encode(&header, &payload, &signer.key).map_err(|e| e.to_string())
}

/// A decoded release JWS: its header and payload (the signature is checked by
/// [`verify_release_jws`]).
#[derive(Debug, Clone)]
pub struct DecodedRelease {
    /// The JWS header.
    pub header: Value,
    /// The payload.
    pub payload: Value,
}

/// Splits a compact JWS and decodes its header and payload, without checking the signature —
/// the parsing the fuzz target `jws_decode` exercises.
pub fn decode_jws_unverified(jws: &str) -> Result<DecodedRelease, String> {
    let mut parts = jws.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("a compact JWS has three parts".into());
    };
    URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| "the signature is not base64url")?;
    let decode = |part: &str, what: &str| -> Result<Value, String> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| format!("the {what} is not base64url"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("the {what} is not JSON: {e}"))
    };
    let header = decode(header, "header")?;
    if !header.is_object() {
        return Err("the header is not a JSON object".into());
    }
    Ok(DecodedRelease {
        header,
        payload: decode(payload, "payload")?,
    })
}

/// Verifies a release JWS against its `x5c[0]` certificate and returns the payload. (Chaining
/// `x5c` to a trusted root is the caller's decision, as in the reference's sidecar.)
pub fn verify_release_jws(jws: &str) -> Result<DecodedRelease, String> {
    let decoded = decode_jws_unverified(jws)?;
    let header = jsonwebtoken::decode_header(jws).map_err(|e| e.to_string())?;
    let chain = header
        .x5c_der()
        .map_err(|e| e.to_string())?
        .ok_or("the JWS header has no x5c")?;
    let leaf = chain.first().ok_or("the JWS header has an empty x5c")?;
    let (_, certificate) =
        x509_parser::parse_x509_certificate(leaf).map_err(|e| format!("x5c[0]: {e}"))?;
    let key = jsonwebtoken::DecodingKey::from_rsa_der(&certificate.public_key().subject_public_key.data);
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    jsonwebtoken::decode::<Value>(jws, &key, &validation).map_err(|e| e.to_string())?;
    Ok(decoded)
}

/// The key material inside a verified release payload's `key_hsm`, unwrapped with the target's
/// private key (what an SKR sidecar does).
pub fn unwrap_released_key(
    payload: &Value,
    target: &encfs_crypto::kek::KekPrivateKey,
) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    let key_hsm = payload
        .pointer("/response/key/key/key_hsm")
        .and_then(Value::as_str)
        .ok_or("no response.key.key.key_hsm")?;
    let key_hsm: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(key_hsm)
            .map_err(|_| "key_hsm is not base64url")?,
    )
    .map_err(|e| format!("key_hsm is not JSON: {e}"))?;
    let enc = key_hsm
        .pointer("/header/enc")
        .and_then(Value::as_str)
        .ok_or("key_hsm has no header.enc")?;
    let hash = oaep_hash_of_enc(enc).ok_or("key_hsm names an unknown enc")?;
    let ciphertext = URL_SAFE_NO_PAD
        .decode(
            key_hsm
                .get("ciphertext")
                .and_then(Value::as_str)
                .ok_or("key_hsm has no ciphertext")?,
        )
        .map_err(|_| "the ciphertext is not base64url")?;
    encfs_crypto::rsa_aes_wrap::unwrap(target, hash, &ciphertext).map_err(|e| e.to_string())
}
