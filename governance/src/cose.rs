//! CCF governance messages: COSE_Sign1 envelopes signed by a member (CCF gov API 2024-07-01).
//!
//! A member signs every state-changing gov request: the HTTP body is a *tagged* COSE_Sign1
//! (`#6.18([protected: bstr, unprotected: {}, payload: bstr, signature: bstr])`) whose protected
//! header carries `alg` (ES384 when encfs signs), `kid` (a **bstr** holding the member id as
//! lower-case hex ASCII), `ccf.gov.msg.type` (tstr), `ccf.gov.msg.created_at` (int, unix seconds)
//! and, for ballots and withdrawals, `ccf.gov.msg.proposal_id` (tstr). The payload is the request's
//! JSON bytes (empty for `state_digest`).
//!
//! [`parse`] follows CCF's `extract_governance_protected_header_and_signature`
//! (`src/endpoints/authentication/cose_auth.cpp`) check for check and in the same order, with the
//! same error messages; [`GovernanceEnvelope::verify_signature`] and
//! [`GovernanceEnvelope::check_message_type`] are the rest of `MemberCOSESign1AuthnPolicy`
//! (member lookup — "Signer is not a known member" — belongs to the caller, which owns the member
//! table). The protected header is decoded by hand (with ciborium, as coset does) rather than
//! through `coset::Header`, because coset rejects some inputs earlier or later than CCF does and
//! the error text is part of the wire protocol (it is the `message` of the 401 body). Signing uses
//! coset's builder; the ECDSA maths is aws-lc-rs's (fixed-width r‖s, as COSE requires).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, UnparsedPublicKey};
use coset::cbor::value::Value;
use coset::{CborSerializable, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable, iana};

/// The CBOR tag of a COSE_Sign1 message (RFC 9052 §4.2).
pub const COSE_SIGN1_TAG: u64 = 18;
/// Protected-header label of the governance message type.
pub const HEADER_MSG_TYPE: &str = "ccf.gov.msg.type";
/// Protected-header label of the creation time (unix seconds, CBOR int).
pub const HEADER_CREATED_AT: &str = "ccf.gov.msg.created_at";
/// Protected-header label of the proposal id (ballots, withdrawals).
pub const HEADER_PROPOSAL_ID: &str = "ccf.gov.msg.proposal_id";
/// The largest `created_at` CCF accepts: its replay key pads the value to 10 decimal digits
/// (`"{created_at:0>10}:…"`), so an 11-digit value is refused.
pub const MAX_CREATED_AT: u64 = 9_999_999_999;
/// COSE algorithm ids of the three ECDSA algorithms CCF accepts (`is_ecdsa_alg`).
pub const ALG_ES256: i64 = -7;
/// ES384: ECDSA P-384 with SHA-384, what CCF's and encfs's clients sign with.
pub const ALG_ES384: i64 = -35;
/// ES512: ECDSA P-521 with SHA-512.
pub const ALG_ES512: i64 = -36;

/// Governance message types (`ccf.gov.msg.type`), one per gov API route family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GovMessageType {
    /// `POST /gov/members/proposals:create`.
    Proposal,
    /// `POST /gov/members/proposals/{id}/ballots/{memberId}:submit`.
    Ballot,
    /// `POST /gov/members/proposals/{id}:withdraw`.
    Withdrawal,
    /// `POST /gov/members/state-digests/{memberId}:ack`.
    Ack,
    /// `POST /gov/members/state-digests/{memberId}:update`.
    StateDigest,
    /// `POST /gov/recovery/members/{memberId}:recover`.
    RecoveryShare,
}

impl GovMessageType {
    /// Every message type, in the order of the reference's list.
    pub const ALL: [GovMessageType; 6] = [
        GovMessageType::Proposal,
        GovMessageType::Ballot,
        GovMessageType::Withdrawal,
        GovMessageType::Ack,
        GovMessageType::StateDigest,
        GovMessageType::RecoveryShare,
    ];

    /// The header value as CCF spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            GovMessageType::Proposal => "proposal",
            GovMessageType::Ballot => "ballot",
            GovMessageType::Withdrawal => "withdrawal",
            GovMessageType::Ack => "ack",
            GovMessageType::StateDigest => "state_digest",
            GovMessageType::RecoveryShare => "recovery_share",
        }
    }

    /// The message type a header value names, if any.
    pub fn from_header(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == value)
    }
}

impl std::fmt::Display for GovMessageType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a COSE_Sign1 governance message was refused. The `Display` text is CCF's wherever CCF has
/// one (it becomes the `message` of the 401 `InvalidAuthenticationInfo` body).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoseError {
    /// The body is not CBOR, or its (untagged) top item is not an array.
    #[error("Failed to parse COSE_Sign1 outer array")]
    OuterArray,
    /// The array is not wrapped in CBOR tag 18.
    #[error("COSE_Sign1 is not tagged")]
    NotTagged,
    /// The protected header is not a bstr-wrapped map, or a known label has the wrong type or
    /// appears twice (CCF: QCBOR's `GetItemsInMap` error, printed as a number; encfs names it).
    #[error("Failed to decode protected header: {0}")]
    ProtectedHeader(String),
    /// No `alg` (label 1) in the protected header.
    #[error("Missing algorithm in protected header")]
    MissingAlgorithm,
    /// No `kid` (label 4) in the protected header.
    #[error("Missing kid in protected header")]
    MissingKid,
    /// No `ccf.gov.msg.created_at` in the protected header.
    #[error("Missing created_at in protected header")]
    MissingCreatedAt,
    /// `ccf.gov.msg.created_at` is below zero.
    #[error("Header parameter created_at must be positive")]
    NegativeCreatedAt,
    /// `ccf.gov.msg.created_at` has more than 10 decimal digits (CCF: `InvalidCreatedAt`).
    #[error("Header parameter created_at value is too large ({0} > 9999999999)")]
    CreatedAtTooLarge(u64),
    /// The rest of the COSE_Sign1 structure (unprotected map, payload, signature, trailing bytes)
    /// is malformed.
    #[error("Failed to decode COSE_Sign1")]
    Structure,
    /// `alg` is not one of ES256, ES384, ES512.
    #[error("Unsupported algorithm: {0}")]
    UnsupportedAlgorithm(i64),
    /// The signature does not verify with the signer's certificate (also: the algorithm does not
    /// fit the certificate's curve).
    #[error("Failed to validate COSE Sign1")]
    BadSignature,
    /// The route expects a message type and the header has none.
    #[error("Missing ccf.gov.msg.type, expected ccf.gov.msg.type to be {expected}")]
    MissingMessageType {
        /// The route's message type.
        expected: GovMessageType,
    },
    /// The header's message type is not the route's.
    #[error("Found ccf.gov.msg.type set to {found}, expected ccf.gov.msg.type to be {expected}")]
    WrongMessageType {
        /// What the header says.
        found: String,
        /// The route's message type.
        expected: GovMessageType,
    },
    /// The signer's certificate cannot be parsed or has no usable EC public key.
    #[error("signer certificate: {0}")]
    Certificate(String),
    /// Signing failed (the key is not a P-384 key, or the RNG failed).
    #[error("COSE signing failed: {0}")]
    Signing(&'static str),
}

/// A parsed governance COSE_Sign1 message. Parsing checks the structure only; call
/// [`verify_signature`](Self::verify_signature) with the certificate registered for
/// [`kid`](Self::kid) before trusting anything in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GovernanceEnvelope {
    /// The COSE algorithm id (`alg`).
    pub alg: i64,
    /// The `kid`, as text: the signer's member id (lower-case hex SHA-256 of its DER cert).
    /// Bytes that are not UTF-8 are replaced (such a kid names no member).
    pub kid: String,
    /// `ccf.gov.msg.type`, if present (any text: the route compares it).
    pub msg_type: Option<String>,
    /// `ccf.gov.msg.created_at`, unix seconds, `0..=MAX_CREATED_AT`.
    pub created_at: u64,
    /// `ccf.gov.msg.proposal_id`, if present.
    pub proposal_id: Option<String>,
    /// The payload bytes (the request JSON; empty for `state_digest`).
    pub payload: Vec<u8>,
    /// The signature bytes (r‖s for ECDSA).
    pub signature: Vec<u8>,
    /// The protected header exactly as received (the signature covers these bytes).
    protected: Vec<u8>,
}

/// Maximum CBOR nesting ciborium may recurse into while decoding untrusted bodies.
const CBOR_RECURSION_LIMIT: usize = 64;

fn decode_cbor(bytes: &[u8]) -> Option<Value> {
    let mut rest = bytes;
    let value: Value =
        coset::cbor::de::from_reader_with_recursion_limit(&mut rest, CBOR_RECURSION_LIMIT).ok()?;
    rest.is_empty().then_some(value)
}

/// Parses a governance COSE_Sign1 body, in CCF's order of checks.
///
/// # Errors
/// A [`CoseError`] naming the first check that failed.
pub fn parse(body: &[u8]) -> Result<GovernanceEnvelope, CoseError> {
    // CCF's QCBOR decoder enters the array first (any decode error there is an "outer array"
    // failure), then looks at the tag, and only at the end checks that nothing trails.
    let mut rest = body;
    let top: Value =
        coset::cbor::de::from_reader_with_recursion_limit(&mut rest, CBOR_RECURSION_LIMIT)
            .map_err(|_| CoseError::OuterArray)?;
    let trailing = !rest.is_empty();
    let (tag, inner) = match top {
        Value::Tag(tag, inner) => (Some(tag), *inner),
        other => (None, other),
    };
    let Value::Array(items) = inner else {
        return Err(CoseError::OuterArray);
    };
    if tag != Some(COSE_SIGN1_TAG) {
        return Err(CoseError::NotTagged);
    }
    let mut items = items.into_iter();
    let protected = match items.next() {
        Some(Value::Bytes(bytes)) => bytes,
        _ => {
            return Err(CoseError::ProtectedHeader(
                "protected header is not a bstr".into(),
            ));
        }
    };
    let header = parse_protected(&protected)?;

    let unprotected_ok = matches!(items.next(), Some(Value::Map(_)));
    let payload = match items.next() {
        Some(Value::Bytes(bytes)) => Some(bytes),
        _ => None,
    };
    let signature = match items.next() {
        Some(Value::Bytes(bytes)) => Some(bytes),
        _ => None,
    };
    let (Some(payload), Some(signature)) = (payload, signature) else {
        return Err(CoseError::Structure);
    };
    if !unprotected_ok || items.next().is_some() || trailing {
        return Err(CoseError::Structure);
    }
    Ok(GovernanceEnvelope {
        alg: header.alg,
        kid: header.kid,
        msg_type: header.msg_type,
        created_at: header.created_at,
        proposal_id: header.proposal_id,
        payload,
        signature,
        protected,
    })
}

struct ProtectedFields {
    alg: i64,
    kid: String,
    msg_type: Option<String>,
    created_at: u64,
    proposal_id: Option<String>,
}

fn parse_protected(protected: &[u8]) -> Result<ProtectedFields, CoseError> {
    let bad = |why: &str| CoseError::ProtectedHeader(why.to_string());
    let Some(Value::Map(entries)) = decode_cbor(protected) else {
        return Err(bad("protected header is not a CBOR map"));
    };
    let mut alg = None;
    let mut kid = None;
    let mut msg_type = None;
    let mut created_at: Option<i128> = None;
    let mut proposal_id = None;
    fn set<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), CoseError> {
        if slot.replace(value).is_some() {
            return Err(CoseError::ProtectedHeader(format!(
                "duplicate label {name}"
            )));
        }
        Ok(())
    }
    for (label, value) in entries {
        match label {
            Value::Integer(i) if i128::from(i) == 1 => {
                let Value::Integer(v) = value else {
                    return Err(bad("alg is not an int"));
                };
                let v = i64::try_from(i128::from(v)).map_err(|_| bad("alg is out of range"))?;
                set(&mut alg, v, "alg")?;
            }
            Value::Integer(i) if i128::from(i) == 4 => {
                let Value::Bytes(v) = value else {
                    return Err(bad("kid is not a bstr"));
                };
                set(&mut kid, String::from_utf8_lossy(&v).into_owned(), "kid")?;
            }
            Value::Text(t) if t == HEADER_MSG_TYPE => {
                let Value::Text(v) = value else {
                    return Err(bad("ccf.gov.msg.type is not a tstr"));
                };
                set(&mut msg_type, v, HEADER_MSG_TYPE)?;
            }
            Value::Text(t) if t == HEADER_PROPOSAL_ID => {
                let Value::Text(v) = value else {
                    return Err(bad("ccf.gov.msg.proposal_id is not a tstr"));
                };
                set(&mut proposal_id, v, HEADER_PROPOSAL_ID)?;
            }
            Value::Text(t) if t == HEADER_CREATED_AT => {
                let Value::Integer(v) = value else {
                    return Err(bad("ccf.gov.msg.created_at is not an int"));
                };
                // QCBOR_TYPE_INT64: a uint above i64::MAX does not match the type.
                let v = i128::from(v);
                if v > i128::from(i64::MAX) {
                    return Err(bad("ccf.gov.msg.created_at is out of range"));
                }
                set(&mut created_at, v, HEADER_CREATED_AT)?;
            }
            _ => {}
        }
    }
    let alg = alg.ok_or(CoseError::MissingAlgorithm)?;
    let kid = kid.ok_or(CoseError::MissingKid)?;
    let created_at = created_at.ok_or(CoseError::MissingCreatedAt)?;
    if created_at < 0 {
        return Err(CoseError::NegativeCreatedAt);
    }
    let created_at = created_at as u64;
    if created_at > MAX_CREATED_AT {
        return Err(CoseError::CreatedAtTooLarge(created_at));
    }
    Ok(ProtectedFields {
        alg,
        kid,
        msg_type,
        created_at,
        proposal_id,
    })
}

/// The curve of an EC public key, as far as COSE's ECDSA algorithms go.
fn ecdsa_verification_for_cert(
    cert_der: &[u8],
) -> Result<(i64, &'static signature::EcdsaVerificationAlgorithm, Vec<u8>), CoseError> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der)
        .map_err(|e| CoseError::Certificate(format!("not a DER X.509 certificate: {e}")))?;
    let spki = cert.public_key();
    let (alg, verification) = ecdsa_for_spki(spki)?;
    Ok((alg, verification, spki.subject_public_key.data.to_vec()))
}

/// The COSE ECDSA algorithm (and aws-lc-rs verifier, fixed-width r‖s) for an EC SPKI.
pub(crate) fn ecdsa_for_spki(
    spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>,
) -> Result<(i64, &'static signature::EcdsaVerificationAlgorithm), CoseError> {
    use x509_parser::oid_registry::{
        OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    };
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY {
        return Err(CoseError::Certificate(
            "the public key is not an EC key".into(),
        ));
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .ok_or_else(|| CoseError::Certificate("the EC key names no curve".into()))?;
    if curve == OID_EC_P256 {
        Ok((ALG_ES256, &signature::ECDSA_P256_SHA256_FIXED))
    } else if curve == OID_NIST_EC_P384 {
        Ok((ALG_ES384, &signature::ECDSA_P384_SHA384_FIXED))
    } else if curve == OID_NIST_EC_P521 {
        Ok((ALG_ES512, &signature::ECDSA_P521_SHA512_FIXED))
    } else {
        Err(CoseError::Certificate(format!(
            "unsupported EC curve {curve}"
        )))
    }
}

/// The COSE `Sig_structure` for a COSE_Sign1 with empty external AAD (RFC 9052 §4.4).
fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    let structure = Value::Array(vec![
        Value::Text("Signature1".into()),
        Value::Bytes(protected.to_vec()),
        Value::Bytes(Vec::new()),
        Value::Bytes(payload.to_vec()),
    ]);
    let mut out = Vec::with_capacity(protected.len() + payload.len() + 32);
    // Serialising a Value into a Vec cannot fail.
    coset::cbor::ser::into_writer(&structure, &mut out).expect("CBOR into a Vec");
    out
}

impl GovernanceEnvelope {
    /// Checks that `alg` is ECDSA (CCF: "Unsupported algorithm: {alg}") and that the signature
    /// verifies with the public key of `cert_der` (the certificate registered for `kid`).
    ///
    /// # Errors
    /// [`CoseError::UnsupportedAlgorithm`], [`CoseError::Certificate`] or
    /// [`CoseError::BadSignature`].
    pub fn verify_signature(&self, cert_der: &[u8]) -> Result<(), CoseError> {
        self.check_algorithm()?;
        let (cert_alg, verification, public_key) = ecdsa_verification_for_cert(cert_der)?;
        if cert_alg != self.alg {
            return Err(CoseError::BadSignature);
        }
        let tbs = sig_structure(&self.protected, &self.payload);
        UnparsedPublicKey::new(verification, &public_key)
            .verify(&tbs, &self.signature)
            .map_err(|_| CoseError::BadSignature)
    }

    /// CCF's `is_ecdsa_alg` check (done before the member lookup).
    ///
    /// # Errors
    /// [`CoseError::UnsupportedAlgorithm`].
    pub fn check_algorithm(&self) -> Result<(), CoseError> {
        match self.alg {
            ALG_ES256 | ALG_ES384 | ALG_ES512 => Ok(()),
            other => Err(CoseError::UnsupportedAlgorithm(other)),
        }
    }

    /// Checks the message type against the route's (CCF checks it after the signature).
    ///
    /// # Errors
    /// [`CoseError::MissingMessageType`] or [`CoseError::WrongMessageType`].
    pub fn check_message_type(&self, expected: GovMessageType) -> Result<(), CoseError> {
        match self.msg_type.as_deref() {
            None => Err(CoseError::MissingMessageType { expected }),
            Some(found) if found == expected.as_str() => Ok(()),
            Some(found) => Err(CoseError::WrongMessageType {
                found: found.to_string(),
                expected,
            }),
        }
    }

    /// The message type, if the header names a known one.
    pub fn message_type(&self) -> Option<GovMessageType> {
        self.msg_type
            .as_deref()
            .and_then(GovMessageType::from_header)
    }

    /// The protected header bytes as received.
    pub fn protected_bytes(&self) -> &[u8] {
        &self.protected
    }
}

/// What a member signs: the protected-header fields and the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GovernanceMessage<'a> {
    /// The message type.
    pub msg_type: GovMessageType,
    /// Unix seconds.
    pub created_at: u64,
    /// The proposal id, for ballots and withdrawals.
    pub proposal_id: Option<&'a str>,
    /// The JSON body (may be empty).
    pub payload: &'a [u8],
}

/// Signs a governance message as the reference client does: tagged COSE_Sign1, ES384, `kid` =
/// the member id as ASCII bytes. `key` must be a P-384 key loaded with
/// [`signature::ECDSA_P384_SHA384_FIXED_SIGNING`].
///
/// # Errors
/// [`CoseError::Signing`] when the key is of another algorithm or the RNG fails;
/// [`CoseError::CreatedAtTooLarge`] for a `created_at` CCF would refuse.
pub fn sign(
    key: &EcdsaKeyPair,
    member_id: &str,
    message: &GovernanceMessage<'_>,
) -> Result<Vec<u8>, CoseError> {
    if key.algorithm() != &signature::ECDSA_P384_SHA384_FIXED_SIGNING {
        return Err(CoseError::Signing(
            "the key is not an ES384 (P-384, fixed r‖s) key",
        ));
    }
    if message.created_at > MAX_CREATED_AT {
        return Err(CoseError::CreatedAtTooLarge(message.created_at));
    }
    let mut header = HeaderBuilder::new()
        .algorithm(iana::Algorithm::ES384)
        .key_id(member_id.as_bytes().to_vec())
        .text_value(
            HEADER_MSG_TYPE.to_string(),
            Value::Text(message.msg_type.as_str().into()),
        )
        .text_value(
            HEADER_CREATED_AT.to_string(),
            Value::Integer(message.created_at.into()),
        );
    if let Some(id) = message.proposal_id {
        header = header.text_value(HEADER_PROPOSAL_ID.to_string(), Value::Text(id.to_string()));
    }
    let rng = SystemRandom::new();
    let mut failure = None;
    let sign1 = CoseSign1Builder::new()
        .protected(header.build())
        .payload(message.payload.to_vec())
        .create_signature(&[], |tbs| match key.sign(&rng, tbs) {
            Ok(sig) => sig.as_ref().to_vec(),
            Err(_) => {
                failure = Some(CoseError::Signing("ECDSA signing failed"));
                Vec::new()
            }
        })
        .build();
    if let Some(err) = failure {
        return Err(err);
    }
    sign1
        .to_tagged_vec()
        .map_err(|_| CoseError::Signing("CBOR encoding failed"))
}

/// Signs with the [`sign`] rules but returns the *untagged* encoding (for tests of the
/// "COSE_Sign1 is not tagged" refusal; no real client sends this).
///
/// # Errors
/// As [`sign`].
pub fn sign_untagged_for_tests(
    key: &EcdsaKeyPair,
    member_id: &str,
    message: &GovernanceMessage<'_>,
) -> Result<Vec<u8>, CoseError> {
    let tagged = sign(key, member_id, message)?;
    let sign1 = coset::CoseSign1::from_tagged_slice(&tagged)
        .map_err(|_| CoseError::Signing("re-decoding failed"))?;
    sign1
        .to_vec()
        .map_err(|_| CoseError::Signing("CBOR encoding failed"))
}

/// The hook the `cose_decode` fuzz target calls: parse, then check the message type and the
/// signature against a fixed P-384 certificate (and the body as a certificate); must never panic.
#[doc(hidden)]
pub fn fuzz_parse_and_verify(body: &[u8]) {
    static CERT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let cert = CERT.get_or_init(|| {
        crate::identity::MemberIdentity::generate("fuzz")
            .expect("keygen")
            .cert_der()
            .to_vec()
    });
    if let Ok(envelope) = parse(body) {
        let _ = envelope.check_message_type(GovMessageType::Proposal);
        let _ = envelope.message_type();
        let _ = envelope.verify_signature(cert);
        let _ = envelope.verify_signature(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A P-384 key and a self-signed certificate for it.
    fn cert_and_key() -> (EcdsaKeyPair, Vec<u8>) {
        let rcgen_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let cert = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&rcgen_key)
            .unwrap();
        let key = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            &rcgen_key.serialize_der(),
        )
        .unwrap();
        (key, cert.der().to_vec())
    }

    fn message(payload: &[u8]) -> GovernanceMessage<'_> {
        GovernanceMessage {
            msg_type: GovMessageType::Ballot,
            created_at: 1_700_000_000,
            proposal_id: Some("ab12"),
            payload,
        }
    }

    /// Re-encodes a tagged COSE_Sign1 with a replaced protected header and a fresh signature.
    fn with_protected(key: &EcdsaKeyPair, entries: Vec<(Value, Value)>, payload: &[u8]) -> Vec<u8> {
        let mut protected = Vec::new();
        coset::cbor::ser::into_writer(&Value::Map(entries), &mut protected).unwrap();
        let tbs = sig_structure(&protected, payload);
        let sig = key.sign(&SystemRandom::new(), &tbs).unwrap();
        let msg = Value::Tag(
            COSE_SIGN1_TAG,
            Box::new(Value::Array(vec![
                Value::Bytes(protected),
                Value::Map(vec![]),
                Value::Bytes(payload.to_vec()),
                Value::Bytes(sig.as_ref().to_vec()),
            ])),
        );
        let mut out = Vec::new();
        coset::cbor::ser::into_writer(&msg, &mut out).unwrap();
        out
    }

    fn base_entries() -> Vec<(Value, Value)> {
        vec![
            (Value::Integer(1.into()), Value::Integer((-35).into())),
            (Value::Integer(4.into()), Value::Bytes(b"abcd".to_vec())),
            (
                Value::Text(HEADER_CREATED_AT.into()),
                Value::Integer(5.into()),
            ),
        ]
    }

    #[test]
    fn sign_then_parse_and_verify_round_trips() {
        let (key, cert) = cert_and_key();
        let body = sign(&key, "ab", &message(br#"{"ballot":"x"}"#)).unwrap();
        assert_eq!(body[0], 0xd2, "tag 18 is the first byte");
        let env = parse(&body).unwrap();
        assert_eq!(env.alg, ALG_ES384);
        assert_eq!(env.kid, "ab");
        assert_eq!(env.msg_type.as_deref(), Some("ballot"));
        assert_eq!(env.message_type(), Some(GovMessageType::Ballot));
        assert_eq!(env.created_at, 1_700_000_000);
        assert_eq!(env.proposal_id.as_deref(), Some("ab12"));
        assert_eq!(env.payload, br#"{"ballot":"x"}"#);
        assert_eq!(env.signature.len(), 96, "r‖s, 48 bytes each");
        env.verify_signature(&cert).unwrap();
        env.check_message_type(GovMessageType::Ballot).unwrap();
        assert_eq!(
            env.check_message_type(GovMessageType::Proposal)
                .unwrap_err()
                .to_string(),
            "Found ccf.gov.msg.type set to ballot, expected ccf.gov.msg.type to be proposal"
        );
    }

    #[test]
    fn empty_payload_and_no_proposal_id() {
        let (key, cert) = cert_and_key();
        let msg = GovernanceMessage {
            msg_type: GovMessageType::StateDigest,
            created_at: 0,
            proposal_id: None,
            payload: b"",
        };
        let env = parse(&sign(&key, "m", &msg).unwrap()).unwrap();
        assert!(env.payload.is_empty());
        assert_eq!(env.proposal_id, None);
        env.verify_signature(&cert).unwrap();
    }

    #[test]
    fn any_flipped_bit_is_refused() {
        let (key, cert) = cert_and_key();
        let body = sign(&key, "ab", &message(b"{}")).unwrap();
        for i in 0..body.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = body.clone();
                bad[i] ^= bit;
                let accepted = parse(&bad).and_then(|env| env.verify_signature(&cert));
                assert!(accepted.is_err(), "byte {i} bit {bit:#x} went unnoticed");
            }
        }
    }

    #[test]
    fn another_members_certificate_does_not_verify() {
        let (key, _) = cert_and_key();
        let (_, other_cert) = cert_and_key();
        let env = parse(&sign(&key, "ab", &message(b"{}")).unwrap()).unwrap();
        assert_eq!(
            env.verify_signature(&other_cert),
            Err(CoseError::BadSignature)
        );
    }

    #[test]
    fn untagged_is_refused_with_ccfs_message() {
        let (key, _) = cert_and_key();
        let body = sign_untagged_for_tests(&key, "ab", &message(b"{}")).unwrap();
        assert_eq!(
            parse(&body).unwrap_err().to_string(),
            "COSE_Sign1 is not tagged"
        );
        // Another tag is "not tagged" too.
        let mut other = sign(&key, "ab", &message(b"{}")).unwrap();
        other[0] = 0xd1; // tag 17 (COSE_Mac0)
        assert_eq!(parse(&other).unwrap_err(), CoseError::NotTagged);
    }

    #[test]
    fn not_cbor_or_not_an_array() {
        assert_eq!(parse(b"").unwrap_err(), CoseError::OuterArray);
        assert_eq!(parse(b"{\"json\":1}").unwrap_err(), CoseError::OuterArray);
        assert_eq!(parse(&[0xd2, 0x01]).unwrap_err(), CoseError::OuterArray);
    }

    #[test]
    fn header_errors_match_ccf() {
        let (key, _) = cert_and_key();
        let without = |label: Value| {
            let entries = base_entries()
                .into_iter()
                .filter(|(l, _)| *l != label)
                .collect();
            parse(&with_protected(&key, entries, b""))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            without(Value::Integer(1.into())),
            "Missing algorithm in protected header"
        );
        assert_eq!(
            without(Value::Integer(4.into())),
            "Missing kid in protected header"
        );
        assert_eq!(
            without(Value::Text(HEADER_CREATED_AT.into())),
            "Missing created_at in protected header"
        );
        let replace = |label: Value, value: Value| {
            let entries = base_entries()
                .into_iter()
                .map(|(l, v)| {
                    if l == label {
                        (l, value.clone())
                    } else {
                        (l, v)
                    }
                })
                .collect();
            parse(&with_protected(&key, entries, b""))
        };
        assert_eq!(
            replace(
                Value::Text(HEADER_CREATED_AT.into()),
                Value::Integer((-1).into())
            )
            .unwrap_err()
            .to_string(),
            "Header parameter created_at must be positive"
        );
        assert_eq!(
            replace(
                Value::Text(HEADER_CREATED_AT.into()),
                Value::Integer(10_000_000_000u64.into())
            )
            .unwrap_err(),
            CoseError::CreatedAtTooLarge(10_000_000_000)
        );
        assert_eq!(
            replace(
                Value::Text(HEADER_CREATED_AT.into()),
                Value::Integer(MAX_CREATED_AT.into())
            )
            .unwrap()
            .created_at,
            MAX_CREATED_AT
        );
        assert!(matches!(
            replace(
                Value::Text(HEADER_CREATED_AT.into()),
                Value::Text("5".into())
            ),
            Err(CoseError::ProtectedHeader(_))
        ));
        assert!(matches!(
            replace(Value::Integer(4.into()), Value::Text("abcd".into())),
            Err(CoseError::ProtectedHeader(m)) if m.contains("kid is not a bstr")
        ));
        let env = replace(Value::Integer(1.into()), Value::Integer((-257).into())).unwrap();
        assert_eq!(
            env.check_algorithm().unwrap_err().to_string(),
            "Unsupported algorithm: -257"
        );
        let mut dup = base_entries();
        dup.push((Value::Integer(4.into()), Value::Bytes(b"ef".to_vec())));
        assert!(matches!(
            parse(&with_protected(&key, dup, b"")),
            Err(CoseError::ProtectedHeader(m)) if m.contains("duplicate")
        ));
    }

    #[test]
    fn structure_errors() {
        let (key, _) = cert_and_key();
        let mut body = sign(&key, "ab", &message(b"{}")).unwrap();
        body.push(0x00);
        assert_eq!(
            parse(&body).unwrap_err().to_string(),
            "Failed to decode COSE_Sign1"
        );
        // Detached payload (nil) is refused: CCF reads the payload from the body.
        let good = parse(&sign(&key, "ab", &message(b"{}")).unwrap()).unwrap();
        let detached = Value::Tag(
            18,
            Box::new(Value::Array(vec![
                Value::Bytes(good.protected.clone()),
                Value::Map(vec![]),
                Value::Null,
                Value::Bytes(good.signature.clone()),
            ])),
        );
        let mut out = Vec::new();
        coset::cbor::ser::into_writer(&detached, &mut out).unwrap();
        assert_eq!(parse(&out).unwrap_err(), CoseError::Structure);
    }

    #[test]
    fn algorithm_must_fit_the_curve() {
        let (key, cert) = cert_and_key();
        let mut entries = base_entries();
        entries[0].1 = Value::Integer((-7).into()); // ES256 header, P-384 key
        let env = parse(&with_protected(&key, entries, b"x")).unwrap();
        assert_eq!(env.verify_signature(&cert), Err(CoseError::BadSignature));
    }

    #[test]
    fn es256_signatures_verify_with_p256_certs() {
        let rcgen_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&rcgen_key)
            .unwrap();
        let key = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rcgen_key.serialize_der(),
        )
        .unwrap();
        let mut entries = base_entries();
        entries[0].1 = Value::Integer((-7).into());
        let env = parse(&with_protected(&key, entries, b"x")).unwrap();
        env.verify_signature(cert.der()).unwrap();
    }

    #[test]
    fn signing_refuses_a_non_p384_key() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        let key =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
                .unwrap();
        assert!(matches!(
            sign(&key, "a", &message(b"")),
            Err(CoseError::Signing(_))
        ));
    }
}
