//! RSA keys as JSON Web Keys (RFC 7517 / 7518 §6.3), in the shapes the sidecars speak.
//!
//! The skr sidecar publishes its runtime public key as a JWK (the runtime data MAA binds into the
//! token, and Key Vault wraps the released key to), and answers a release with the released key
//! as a *private* JWK in a JSON string; the secrets sidecar turns that JWK back into PKCS#8 to
//! decrypt with. The DER work is the key vault's (`encfs_keyvault::rsa_jwk`, one implementation
//! for both sides of a release); this module adds the sidecars' JSON shapes (the RFC 7638
//! thumbprint `kid`, `key_ops`) and keeps private members in buffers that zeroize on drop.

use std::io::Write;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use encfs_crypto::kek::{KekPrivateKey, KekPublicKey};
use encfs_keyvault::model::JsonWebKey;
use encfs_keyvault::rsa_jwk;
use zeroize::Zeroizing;

/// Why a key could not be converted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwkError {
    /// The DER structure named does not parse (its contents are never shown).
    #[error("{what} is not valid DER")]
    Der {
        /// What was being parsed (`PKCS#8 private key`, `SubjectPublicKeyInfo`).
        what: &'static str,
    },
    /// The key is not an RSA key.
    #[error("the key is not an RSA key (algorithm {algorithm})")]
    NotRsa {
        /// The key's algorithm (a JWK `kty`).
        algorithm: String,
    },
    /// A JWK member is missing or is not base64url.
    #[error("JWK member '{member}' is missing or not base64url")]
    Member {
        /// The member's name.
        member: &'static str,
    },
    /// The text is not a JSON object of a JWK, or its members are not an RSA key.
    #[error("not a JWK: {reason}")]
    NotJwk {
        /// Why (a JSON parse error or the key check; never the key's bytes).
        reason: String,
    },
}

impl From<rsa_jwk::JwkError> for JwkError {
    fn from(error: rsa_jwk::JwkError) -> Self {
        match error {
            rsa_jwk::JwkError::Member(member) => Self::Member { member },
            rsa_jwk::JwkError::KeyType(kty) => Self::NotRsa {
                algorithm: if kty.is_empty() {
                    "(no kty)".into()
                } else {
                    kty
                },
            },
            other => Self::NotJwk {
                reason: other.to_string(),
            },
        }
    }
}

/// The public JWK `{kty, n, e, kid, key_ops}` of an RSA SubjectPublicKeyInfo, with `kid` the RFC
/// 7638 thumbprint (what the reference's skr sidecar publishes) and `key_ops: ["encrypt"]`.
pub fn public_jwk(spki_der: &[u8]) -> Result<serde_json::Value, JwkError> {
    let key = KekPublicKey::from_der(spki_der).map_err(|_| JwkError::Der {
        what: "SubjectPublicKeyInfo",
    })?;
    let jwk = rsa_jwk::public_jwk(&key)?;
    let (n, e) = (
        jwk.n.clone().unwrap_or_default(),
        jwk.e.clone().unwrap_or_default(),
    );
    // RFC 7638: the required members in lexicographic order, no whitespace.
    let thumbprint_input = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    let thumbprint =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, thumbprint_input.as_bytes());
    Ok(serde_json::json!({
        "kty": "RSA",
        "n": n,
        "e": e,
        "kid": URL_SAFE_NO_PAD.encode(thumbprint.as_ref()),
        "key_ops": ["encrypt"],
    }))
}

/// The SubjectPublicKeyInfo DER of a public (or private) RSA JWK's `n` and `e`.
pub fn spki_der_from_jwk(jwk: &serde_json::Value) -> Result<Vec<u8>, JwkError> {
    let jwk: JsonWebKey = serde_json::from_value(jwk.clone()).map_err(|e| JwkError::NotJwk {
        reason: crate::upstream::describe_json_error(&e),
    })?;
    Ok(rsa_jwk::public_spki_der(&jwk)?)
}

/// The private JWK `{kty, n, e, d, p, q, dp, dq, qi, kid, key_ops}` of an RSA PKCS#8 private
/// key, serialised as JSON (the reference's `/key/release` answers it as a string). The text
/// holds the private key and zeroizes on drop.
pub fn private_jwk_from_pkcs8(
    pkcs8_der: &[u8],
    kid: &str,
    key_ops: &[String],
) -> Result<Zeroizing<String>, JwkError> {
    let key = KekPrivateKey::from_pkcs8_der(pkcs8_der).map_err(|_| JwkError::Der {
        what: "PKCS#8 private key",
    })?;
    let mut jwk = rsa_jwk::private_jwk(&key)?;
    jwk.kid = Some(kid.to_owned());
    jwk.key_ops = Some(key_ops.to_vec());
    // One buffer, sized up front, so no copy of the private members is left behind by a
    // reallocation; `JsonWebKey` zeroizes its own members on drop.
    let members = [
        &jwk.n, &jwk.e, &jwk.d, &jwk.p, &jwk.q, &jwk.dp, &jwk.dq, &jwk.qi,
    ];
    let capacity = 256
        + kid.len() * 6
        + key_ops.iter().map(|op| op.len() * 6 + 3).sum::<usize>()
        + members
            .iter()
            .map(|m| m.as_ref().map_or(0, String::len) + 8)
            .sum::<usize>();
    let mut out = Zeroizing::new(Vec::with_capacity(capacity));
    serde_json::to_writer(&mut *out, &jwk).map_err(|e| JwkError::NotJwk {
        reason: e.to_string(),
    })?;
    out.flush().expect("writing to a Vec does not fail");
    let text = String::from_utf8(std::mem::take(&mut *out)).map_err(|_| JwkError::NotJwk {
        reason: "the JWK is not UTF-8".into(),
    })?;
    Ok(Zeroizing::new(text))
}

/// The PKCS#8 DER of a private RSA JWK (JSON text), for [`encfs_crypto::kek::KekPrivateKey`].
pub fn pkcs8_from_private_jwk(jwk_json: &str) -> Result<Zeroizing<Vec<u8>>, JwkError> {
    let jwk: JsonWebKey = serde_json::from_str(jwk_json).map_err(|e| JwkError::NotJwk {
        reason: crate::upstream::describe_json_error(&e),
    })?;
    Ok(rsa_jwk::pkcs8_from_jwk(&jwk)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use encfs_crypto::kek::{KekPrivateKey, KekPublicKey, KekSize, OaepHash};

    #[test]
    fn private_key_round_trips_through_a_jwk() {
        let key = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
        let der = key.to_pkcs8_der().unwrap();
        let jwk = private_jwk_from_pkcs8(&der, "kek-1", &["decrypt".into()]).unwrap();
        let value: serde_json::Value = serde_json::from_str(&jwk).unwrap();
        for member in [
            "kty", "n", "e", "d", "p", "q", "dp", "dq", "qi", "kid", "key_ops",
        ] {
            assert!(value.get(member).is_some(), "{member} missing in the JWK");
        }
        assert_eq!(value["kid"], "kek-1");
        assert_eq!(value["e"], "AQAB");
        let back = KekPrivateKey::from_pkcs8_der(&pkcs8_from_private_jwk(&jwk).unwrap()).unwrap();
        let ciphertext = key
            .public_key()
            .encrypt_oaep(OaepHash::Sha256, b"dek")
            .unwrap();
        assert_eq!(
            back.decrypt_oaep(OaepHash::Sha256, &ciphertext)
                .unwrap()
                .as_slice(),
            b"dek"
        );
    }

    #[test]
    fn public_jwk_round_trips_and_has_the_thumbprint_kid() {
        let key = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
        let spki = key.public_key().to_der().unwrap();
        let jwk = public_jwk(&spki).unwrap();
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["kid"].as_str().unwrap().len(), 43);
        assert!(jwk.get("d").is_none());
        let back = KekPublicKey::from_der(&spki_der_from_jwk(&jwk).unwrap()).unwrap();
        let ciphertext = back.encrypt_oaep(OaepHash::Sha1, b"x").unwrap();
        assert_eq!(
            key.decrypt_oaep(OaepHash::Sha1, &ciphertext)
                .unwrap()
                .as_slice(),
            b"x"
        );
    }

    #[test]
    fn bad_jwks_are_typed_errors() {
        assert!(matches!(
            pkcs8_from_private_jwk(r#"{"kty":"EC","crv":"P-256"}"#),
            Err(JwkError::NotRsa { .. })
        ));
        assert!(matches!(
            pkcs8_from_private_jwk(r#"{"kty":"RSA","n":"AQAB"}"#),
            Err(JwkError::Member { member: "e" })
        ));
        assert!(matches!(
            pkcs8_from_private_jwk("not json"),
            Err(JwkError::NotJwk { .. })
        ));
        assert!(matches!(
            private_jwk_from_pkcs8(b"\x30\x03\x02\x01\x00", "k", &[]),
            Err(JwkError::Der { .. })
        ));
    }
}
