//! RSA keys as JSON Web Keys (RFC 7517 / 7518 §6.3), to and from their DER forms.
//!
//! The skr sidecar publishes its runtime public key as a JWK (the runtime data MAA binds into the
//! token, and Key Vault wraps the released key to), and answers a release with the released key
//! as a *private* JWK; the secrets sidecar turns that JWK back into PKCS#8 to decrypt with. The
//! DER work is RustCrypto's `pkcs1` / `pkcs8` (encoding only; no RSA arithmetic here). Private
//! key bytes are held in [`Zeroizing`] buffers while they pass through.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pkcs1::UintRef;
use pkcs8::der::{Decode, Encode};
use pkcs8::{AlgorithmIdentifierRef, ObjectIdentifier, PrivateKeyInfo};
use serde::Deserialize;
use zeroize::Zeroizing;

/// `rsaEncryption` (PKCS #1), the algorithm of RSA SPKI and PKCS#8 keys.
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

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
        /// The key's algorithm (an OID or a JWK `kty`).
        algorithm: String,
    },
    /// A JWK member is missing or is not base64url.
    #[error("JWK member '{member}' is missing or not base64url")]
    Member {
        /// The member's name.
        member: &'static str,
    },
    /// The text is not a JSON object of a JWK.
    #[error("not a JWK: {reason}")]
    NotJwk {
        /// Why (a JSON parse error; never the key's bytes).
        reason: String,
    },
}

fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The public JWK `{kty, n, e, kid, key_ops}` of an RSA SubjectPublicKeyInfo, with `kid` the RFC
/// 7638 thumbprint (what the reference's skr sidecar publishes) and `key_ops: ["encrypt"]`.
pub fn public_jwk(spki_der: &[u8]) -> Result<serde_json::Value, JwkError> {
    let spki = pkcs8::SubjectPublicKeyInfoRef::from_der(spki_der).map_err(|_| JwkError::Der {
        what: "SubjectPublicKeyInfo",
    })?;
    if spki.algorithm.oid != RSA_ENCRYPTION {
        return Err(JwkError::NotRsa {
            algorithm: spki.algorithm.oid.to_string(),
        });
    }
    let public =
        pkcs1::RsaPublicKey::from_der(spki.subject_public_key.raw_bytes()).map_err(|_| {
            JwkError::Der {
                what: "RSAPublicKey",
            }
        })?;
    let n = b64url(public.modulus.as_bytes());
    let e = b64url(public.public_exponent.as_bytes());
    // RFC 7638: the required members in lexicographic order, no whitespace.
    let thumbprint_input = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    let thumbprint =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, thumbprint_input.as_bytes());
    Ok(serde_json::json!({
        "kty": "RSA",
        "n": n,
        "e": e,
        "kid": b64url(thumbprint.as_ref()),
        "key_ops": ["encrypt"],
    }))
}

/// The SubjectPublicKeyInfo DER of a public (or private) RSA JWK's `n` and `e`.
pub fn spki_der_from_jwk(jwk: &serde_json::Value) -> Result<Vec<u8>, JwkError> {
    check_rsa_kty(jwk.get("kty").and_then(|v| v.as_str()))?;
    let n = member_bytes(jwk.get("n").and_then(|v| v.as_str()), "n")?;
    let e = member_bytes(jwk.get("e").and_then(|v| v.as_str()), "e")?;
    let public = pkcs1::RsaPublicKey {
        modulus: uint(&n, "n")?,
        public_exponent: uint(&e, "e")?,
    };
    let public_der = public.to_der().map_err(|_| JwkError::Der {
        what: "RSAPublicKey",
    })?;
    let spki = pkcs8::SubjectPublicKeyInfoRef {
        algorithm: rsa_algorithm(),
        subject_public_key: pkcs8::der::asn1::BitStringRef::from_bytes(&public_der).map_err(
            |_| JwkError::Der {
                what: "SubjectPublicKeyInfo",
            },
        )?,
    };
    spki.to_der().map_err(|_| JwkError::Der {
        what: "SubjectPublicKeyInfo",
    })
}

fn rsa_algorithm() -> AlgorithmIdentifierRef<'static> {
    AlgorithmIdentifierRef {
        oid: RSA_ENCRYPTION,
        parameters: Some(pkcs8::der::asn1::AnyRef::NULL),
    }
}

fn check_rsa_kty(kty: Option<&str>) -> Result<(), JwkError> {
    match kty {
        Some("RSA" | "RSA-HSM") => Ok(()),
        other => Err(JwkError::NotRsa {
            algorithm: other.unwrap_or("(no kty)").to_owned(),
        }),
    }
}

fn member_bytes(value: Option<&str>, member: &'static str) -> Result<Zeroizing<Vec<u8>>, JwkError> {
    let text = value.ok_or(JwkError::Member { member })?;
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map(Zeroizing::new)
        .map_err(|_| JwkError::Member { member })
}

fn uint<'a>(bytes: &'a [u8], member: &'static str) -> Result<UintRef<'a>, JwkError> {
    UintRef::new(bytes).map_err(|_| JwkError::Member { member })
}

/// The private JWK `{kty, n, e, d, p, q, dp, dq, qi, kid, key_ops}` of an RSA PKCS#8 private
/// key, serialised as JSON (the reference's `/key/release` answers it as a string). The text
/// holds the private key and zeroizes on drop.
pub fn private_jwk_from_pkcs8(
    pkcs8_der: &[u8],
    kid: &str,
    key_ops: &[String],
) -> Result<Zeroizing<String>, JwkError> {
    let info = PrivateKeyInfo::from_der(pkcs8_der).map_err(|_| JwkError::Der {
        what: "PKCS#8 private key",
    })?;
    if info.algorithm.oid != RSA_ENCRYPTION {
        return Err(JwkError::NotRsa {
            algorithm: info.algorithm.oid.to_string(),
        });
    }
    let key = pkcs1::RsaPrivateKey::from_der(info.private_key).map_err(|_| JwkError::Der {
        what: "RSAPrivateKey",
    })?;
    let member = |value: UintRef<'_>| Zeroizing::new(b64url(value.as_bytes()));
    let (n, e, d) = (
        member(key.modulus),
        member(key.public_exponent),
        member(key.private_exponent),
    );
    let (p, q) = (member(key.prime1), member(key.prime2));
    let (dp, dq, qi) = (
        member(key.exponent1),
        member(key.exponent2),
        member(key.coefficient),
    );
    // kid and key_ops are not secret; JSON-encode them (they may hold any character). The
    // base64url members need no escaping. One buffer, sized up front, so no copy is left behind
    // by a reallocation.
    let kid = serde_json::to_string(kid).map_err(|e| JwkError::NotJwk {
        reason: e.to_string(),
    })?;
    let key_ops = serde_json::to_string(key_ops).map_err(|e| JwkError::NotJwk {
        reason: e.to_string(),
    })?;
    let parts: [(&str, &str); 8] = [
        ("n", &n),
        ("e", &e),
        ("d", &d),
        ("p", &p),
        ("q", &q),
        ("dp", &dp),
        ("dq", &dq),
        ("qi", &qi),
    ];
    let capacity = 64
        + kid.len()
        + key_ops.len()
        + parts
            .iter()
            .map(|(k, v)| k.len() + v.len() + 6)
            .sum::<usize>();
    let mut out = Zeroizing::new(String::with_capacity(capacity));
    out.push_str(r#"{"kty":"RSA""#);
    for (name, value) in parts {
        out.push_str(",\"");
        out.push_str(name);
        out.push_str("\":\"");
        out.push_str(value);
        out.push('"');
    }
    out.push_str(",\"kid\":");
    out.push_str(&kid);
    out.push_str(",\"key_ops\":");
    out.push_str(&key_ops);
    out.push('}');
    Ok(out)
}

/// The members of a private RSA JWK, as text that zeroizes on drop.
#[derive(Deserialize)]
struct PrivateJwkText {
    kty: Option<String>,
    n: Option<String>,
    e: Option<String>,
    d: Option<String>,
    p: Option<String>,
    q: Option<String>,
    dp: Option<String>,
    dq: Option<String>,
    qi: Option<String>,
}

impl Drop for PrivateJwkText {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for member in [
            &mut self.d,
            &mut self.p,
            &mut self.q,
            &mut self.dp,
            &mut self.dq,
            &mut self.qi,
        ] {
            member.zeroize();
        }
    }
}

/// The PKCS#8 DER of a private RSA JWK (JSON text), for [`encfs_crypto::kek::KekPrivateKey`].
pub fn pkcs8_from_private_jwk(jwk_json: &str) -> Result<Zeroizing<Vec<u8>>, JwkError> {
    let jwk: PrivateJwkText = serde_json::from_str(jwk_json).map_err(|e| JwkError::NotJwk {
        reason: crate::upstream::describe_json_error(&e),
    })?;
    check_rsa_kty(jwk.kty.as_deref())?;
    let n = member_bytes(jwk.n.as_deref(), "n")?;
    let e = member_bytes(jwk.e.as_deref(), "e")?;
    let d = member_bytes(jwk.d.as_deref(), "d")?;
    let p = member_bytes(jwk.p.as_deref(), "p")?;
    let q = member_bytes(jwk.q.as_deref(), "q")?;
    let dp = member_bytes(jwk.dp.as_deref(), "dp")?;
    let dq = member_bytes(jwk.dq.as_deref(), "dq")?;
    let qi = member_bytes(jwk.qi.as_deref(), "qi")?;
    let key = pkcs1::RsaPrivateKey {
        modulus: uint(&n, "n")?,
        public_exponent: uint(&e, "e")?,
        private_exponent: uint(&d, "d")?,
        prime1: uint(&p, "p")?,
        prime2: uint(&q, "q")?,
        exponent1: uint(&dp, "dp")?,
        exponent2: uint(&dq, "dq")?,
        coefficient: uint(&qi, "qi")?,
        other_prime_infos: None,
    };
    let key_der = Zeroizing::new(key.to_der().map_err(|_| JwkError::Der {
        what: "RSAPrivateKey",
    })?);
    let info = PrivateKeyInfo {
        algorithm: rsa_algorithm(),
        private_key: &key_der,
        public_key: None,
    };
    info.to_der()
        .map(Zeroizing::new)
        .map_err(|_| JwkError::Der {
            what: "PKCS#8 private key",
        })
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
