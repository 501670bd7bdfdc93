//! RSA keys ↔ JSON Web Keys: the public JWK of a key, the private JWK a client imports, and the
//! PKCS#8 DER a released key carries. The ASN.1 (PKCS#1 `RSAPrivateKey`/`RSAPublicKey`, PKCS#8,
//! SubjectPublicKeyInfo) is read and written with `asn1-rs`; keys are then loaded by aws-lc-rs
//! through `encfs_crypto::kek`, which checks them.

use std::borrow::Cow;

use asn1_rs::{Any, BitString, FromDer, Integer, Null, OctetString, Oid, Sequence, ToDer};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use encfs_crypto::kek::{KekPrivateKey, KekPublicKey};
use zeroize::Zeroizing;

use crate::model::JsonWebKey;

/// Errors converting between JWKs and keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwkError {
    /// The JWK lacks a member or has one that is not base64url.
    #[error("the JWK member {0} is missing or not base64url")]
    Member(&'static str),
    /// The JWK is not an RSA key.
    #[error("the JWK's kty {0:?} is not RSA or RSA-HSM")]
    KeyType(String),
    /// The key could not be encoded or decoded.
    #[error("the key is not a valid RSA key: {0}")]
    Key(String),
}

const RSA_ENCRYPTION: [u64; 7] = [1, 2, 840, 113_549, 1, 1, 1];

fn decode_member(value: Option<&String>, name: &'static str) -> Result<Zeroizing<Vec<u8>>, JwkError> {
    let value = value.ok_or(JwkError::Member(name))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map_err(|_| JwkError::Member(name))?;
    if bytes.is_empty() {
        return Err(JwkError::Member(name));
    }
    Ok(Zeroizing::new(bytes))
}

/// Unsigned big-endian magnitude → DER INTEGER content (leading zeros stripped, a 0 prepended
/// when the top bit is set).
fn unsigned_integer_content(magnitude: &[u8]) -> Zeroizing<Vec<u8>> {
    let first = magnitude.iter().position(|b| *b != 0).unwrap_or(magnitude.len());
    let trimmed = &magnitude[first..];
    let mut out = Zeroizing::new(Vec::with_capacity(trimmed.len() + 1));
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        out.push(0);
    }
    out.extend_from_slice(trimmed);
    out
}

/// DER INTEGER content → unsigned big-endian magnitude.
fn integer_magnitude(content: &[u8]) -> &[u8] {
    let first = content.iter().position(|b| *b != 0).unwrap_or(content.len().saturating_sub(1));
    &content[first..]
}

fn der<T: ToDer>(value: &T) -> Result<Vec<u8>, JwkError> {
    value.to_der_vec().map_err(|e| JwkError::Key(e.to_string()))
}

fn sequence(items: &[&[u8]]) -> Result<Zeroizing<Vec<u8>>, JwkError> {
    let content = Zeroizing::new(items.concat());
    let encoded = der(&Sequence::new(Cow::Borrowed(content.as_slice())))?;
    Ok(Zeroizing::new(encoded))
}

fn rsa_algorithm_identifier() -> Result<Zeroizing<Vec<u8>>, JwkError> {
    let oid = Oid::from(&RSA_ENCRYPTION).map_err(|e| JwkError::Key(format!("{e:?}")))?;
    sequence(&[&der(&oid)?, &der(&Null::new())?])
}

fn check_kty(jwk: &JsonWebKey) -> Result<(), JwkError> {
    match jwk.kty.as_deref() {
        Some("RSA" | "RSA-HSM") => Ok(()),
        other => Err(JwkError::KeyType(other.unwrap_or_default().to_owned())),
    }
}

/// The SubjectPublicKeyInfo DER of an RSA JWK's `n` and `e`.
pub fn public_spki_der(jwk: &JsonWebKey) -> Result<Vec<u8>, JwkError> {
    check_kty(jwk)?;
    let n = decode_member(jwk.n.as_ref(), "n")?;
    let e = decode_member(jwk.e.as_ref(), "e")?;
    let n = unsigned_integer_content(&n);
    let e = unsigned_integer_content(&e);
    let rsa_public = sequence(&[&der(&Integer::new(&n))?, &der(&Integer::new(&e))?])?;
    let spki = sequence(&[
        &rsa_algorithm_identifier()?,
        &der(&BitString::new(0, &rsa_public))?,
    ])?;
    Ok(spki.to_vec())
}

/// The RSA public key of a JWK (`n`, `e`).
pub fn public_key_from_jwk(jwk: &JsonWebKey) -> Result<KekPublicKey, JwkError> {
    KekPublicKey::from_der(&public_spki_der(jwk)?).map_err(|e| JwkError::Key(e.to_string()))
}

/// The PKCS#8 DER of a private RSA JWK (all of `n e d p q dp dq qi`).
pub fn pkcs8_from_jwk(jwk: &JsonWebKey) -> Result<Zeroizing<Vec<u8>>, JwkError> {
    check_kty(jwk)?;
    let members = [
        (jwk.n.as_ref(), "n"),
        (jwk.e.as_ref(), "e"),
        (jwk.d.as_ref(), "d"),
        (jwk.p.as_ref(), "p"),
        (jwk.q.as_ref(), "q"),
        (jwk.dp.as_ref(), "dp"),
        (jwk.dq.as_ref(), "dq"),
        (jwk.qi.as_ref(), "qi"),
    ];
    let mut encoded: Vec<Zeroizing<Vec<u8>>> = vec![Zeroizing::new(der(&0u32)?)];
    for (value, name) in members {
        let magnitude = decode_member(value, name)?;
        let content = unsigned_integer_content(&magnitude);
        encoded.push(Zeroizing::new(der(&Integer::new(&content))?));
    }
    let parts: Vec<&[u8]> = encoded.iter().map(|v| v.as_slice()).collect();
    let rsa_private = sequence(&parts)?;
    let pkcs8 = sequence(&[
        &der(&0u32)?,
        &rsa_algorithm_identifier()?,
        &Zeroizing::new(der(&OctetString::new(&rsa_private))?),
    ])?;
    // Let aws-lc-rs check the key's consistency.
    KekPrivateKey::from_pkcs8_der(&pkcs8).map_err(|e| JwkError::Key(e.to_string()))?;
    Ok(pkcs8)
}

/// The private key of a private RSA JWK.
pub fn private_key_from_jwk(jwk: &JsonWebKey) -> Result<KekPrivateKey, JwkError> {
    KekPrivateKey::from_pkcs8_der(&pkcs8_from_jwk(jwk)?).map_err(|e| JwkError::Key(e.to_string()))
}

fn malformed(what: &str) -> JwkError {
    JwkError::Key(format!("malformed {what}"))
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The public JWK (`kty: RSA`, `n`, `e`) of a public key.
pub fn public_jwk(key: &KekPublicKey) -> Result<JsonWebKey, JwkError> {
    let spki = key.to_der().map_err(|e| JwkError::Key(e.to_string()))?;
    let (_, outer) = Sequence::from_der(&spki).map_err(|_| malformed("SubjectPublicKeyInfo"))?;
    let (rest, _algorithm) =
        Any::from_der(&outer.content).map_err(|_| malformed("AlgorithmIdentifier"))?;
    let (_, bits) = BitString::from_der(rest).map_err(|_| malformed("subjectPublicKey"))?;
    let (_, rsa) = Sequence::from_der(&bits.data).map_err(|_| malformed("RSAPublicKey"))?;
    let (rest, n) = Integer::from_der(&rsa.content).map_err(|_| malformed("modulus"))?;
    let (_, e) = Integer::from_der(rest).map_err(|_| malformed("exponent"))?;
    let mut jwk = JsonWebKey::default();
    jwk.kty = Some("RSA".into());
    jwk.n = Some(b64(integer_magnitude(n.as_ref())));
    jwk.e = Some(b64(integer_magnitude(e.as_ref())));
    Ok(jwk)
}

/// The private JWK (`kty: RSA` and all RSA members) of a private key.
pub fn private_jwk(key: &KekPrivateKey) -> Result<JsonWebKey, JwkError> {
    let pkcs8 = key.to_pkcs8_der().map_err(|e| JwkError::Key(e.to_string()))?;
    let (_, outer) = Sequence::from_der(&pkcs8).map_err(|_| malformed("PKCS#8"))?;
    let (rest, _version) = Any::from_der(&outer.content).map_err(|_| malformed("PKCS#8"))?;
    let (rest, _algorithm) = Any::from_der(rest).map_err(|_| malformed("PKCS#8"))?;
    let (_, octets) = OctetString::from_der(rest).map_err(|_| malformed("PKCS#8"))?;
    let (_, rsa) = Sequence::from_der(octets.as_ref()).map_err(|_| malformed("RSAPrivateKey"))?;
    let mut rest: &[u8] = &rsa.content;
    let mut values = Vec::with_capacity(9);
    for _ in 0..9 {
        let (next, integer) = Integer::from_der(rest).map_err(|_| malformed("RSAPrivateKey"))?;
        values.push(b64(integer_magnitude(integer.as_ref())));
        rest = next;
    }
    let mut values = values.into_iter().skip(1);
    let mut next = || values.next();
    let mut jwk = JsonWebKey::default();
    jwk.kty = Some("RSA".into());
    jwk.n = next();
    jwk.e = next();
    jwk.d = next();
    jwk.p = next();
    jwk.q = next();
    jwk.dp = next();
    jwk.dq = next();
    jwk.qi = next();
    Ok(jwk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use encfs_crypto::kek::{KekSize, OaepHash};

    #[test]
    fn private_jwk_round_trips_to_the_same_key() {
        let key = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
        let jwk = private_jwk(&key).unwrap();
        let back = private_key_from_jwk(&jwk).unwrap();
        assert_eq!(*back.to_pkcs8_der().unwrap(), *key.to_pkcs8_der().unwrap());
        let public = public_key_from_jwk(&jwk).unwrap();
        let ciphertext = public.encrypt_oaep(OaepHash::Sha256, b"hello").unwrap();
        assert_eq!(
            &*key.decrypt_oaep(OaepHash::Sha256, &ciphertext).unwrap(),
            b"hello"
        );
        let public_jwk = public_jwk(&key.public_key()).unwrap();
        assert_eq!(public_jwk.n, jwk.n);
        assert_eq!(public_jwk.e.as_deref(), Some("AQAB"));
        assert_eq!(
            public_spki_der(&public_jwk).unwrap(),
            key.public_key().to_der().unwrap()
        );
    }

    #[test]
    fn refuses_incomplete_and_inconsistent_jwks() {
        let key = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
        let mut jwk = private_jwk(&key).unwrap();
        jwk.qi = None;
        assert!(matches!(private_key_from_jwk(&jwk), Err(JwkError::Member("qi"))));
        let mut jwk = private_jwk(&key).unwrap();
        jwk.d = Some("AQAB".into());
        assert!(private_key_from_jwk(&jwk).is_err());
        let mut jwk = private_jwk(&key).unwrap();
        jwk.kty = Some("EC".into());
        assert!(matches!(private_key_from_jwk(&jwk), Err(JwkError::KeyType(_))));
    }
}
