//! The clean-room governance app (the reference's CGS `ccf-app`, routes under `/app`), as pure
//! state transitions over [`crate::kv::Tx`].
//!
//! Each submodule is one group of the reference's endpoints (§1a–§1g). Routes that clean rooms
//! call verify an attestation and, for writes, an RSA-PSS signature; both are traits here
//! ([`AttestationVerifier`], [`SignatureVerifier`]) so the attestation crate can implement them.
//! Wrapping a secret for the caller's key (RSA-OAEP-AES-KWP) is the [`KeyWrapper`] trait.
//! [`RsaPssVerifier`] is a real RSA-PSS verifier on aws-lc-rs.

pub mod contracts;
pub mod documents;
pub mod events;
pub mod policy;
pub mod runtime_options;
pub mod secrets;

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::kv::{Tx, maps};

/// Who calls an app route, as the HTTP layer authenticated them.
#[derive(Clone, Debug, PartialEq)]
pub enum Caller {
    /// A member, by mutual TLS with its identity certificate: its member id.
    Member(String),
    /// A user, by a user certificate: its user id.
    User(String),
    /// A bearer token already verified: its claims (`oid`, `tid`, …).
    Jwt(Map<String, Value>),
    /// No authentication (a clean room; the body carries an attestation).
    Unauthenticated,
}

/// What an attestation verification yields.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedAttestation {
    /// The claims derived from the report (`x-ms-sevsnpvm-hostdata`, …).
    pub claims: Map<String, Value>,
    /// The report's 64-byte report_data.
    pub report_data: Vec<u8>,
}

/// Verifies a clean room's attestation (`{evidence, endorsements, uvm_endorsements, endorsed_tcb?}`,
/// base64 fields, snake_case) for a platform (`snp-caci` or `snp-cvm`).
pub trait AttestationVerifier {
    /// Whether this verifier reads reports of `platform` (one of [`PLATFORMS`]); a platform it
    /// does not read is 400 `UnsupportedPlatform`. All of [`PLATFORMS`] by default.
    fn supports_platform(&self, platform: &str) -> bool {
        PLATFORMS.contains(&platform)
    }
    /// Verifies the report and its endorsements; returns the claims and report_data.
    fn verify(&self, platform: &str, attestation: &Value) -> Result<VerifiedAttestation, String>;
}

/// Verifies RSA-PSS (SHA-256, salt 32) signatures by a PEM public key.
pub trait SignatureVerifier {
    /// `Ok(())` if `signature` signs `message` under `public_key_pem`.
    fn verify_rsa_pss_sha256(
        &self,
        public_key_pem: &str,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), String>;
}

/// Wraps bytes for a clean room's RSA public key (RSA-OAEP-SHA-256 of an AES-256 key ‖ RFC 5649 KWP).
pub trait KeyWrapper {
    /// The wrapped bytes.
    fn wrap(&self, public_key_pem: &str, plaintext: &[u8]) -> Result<Vec<u8>, String>;
}

/// RSA-PSS/SHA-256 verification on aws-lc-rs (SubjectPublicKeyInfo PEM).
pub struct RsaPssVerifier;

impl SignatureVerifier for RsaPssVerifier {
    fn verify_rsa_pss_sha256(
        &self,
        public_key_pem: &str,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), String> {
        let block =
            pem::parse(public_key_pem).map_err(|e| format!("public key is not PEM: {e}"))?;
        let key = aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::RSA_PSS_2048_8192_SHA256,
            block.contents(),
        );
        key.verify(message, signature)
            .map_err(|_| "RSA-PSS signature does not verify".to_owned())
    }
}

/// The caller check of every member/user/jwt app route (AC `validateCallerAuthorized`): a jwt
/// caller must be registered in `public:ccf.gov.user_identities` by `oid`, with the same `tid`
/// when one is registered; member and user certificates pass.
pub fn authorize_caller(tx: &Tx, caller: &Caller) -> ApiResult<()> {
    let Caller::Jwt(claims) = caller else {
        return Ok(());
    };
    let oid = claims.get("oid").and_then(Value::as_str).unwrap_or("");
    let identity = tx.get(maps::USER_IDENTITIES, oid).ok_or_else(|| {
        ApiError::new(
            ErrorCode::CallerNotAuthorized,
            format!("Caller {oid} is not a registered user identity."),
        )
    })?;
    if let Some(tid) = identity.get("tid").and_then(Value::as_str)
        && claims.get("tid").and_then(Value::as_str) != Some(tid)
    {
        return Err(ApiError::new(
            ErrorCode::CallerTenantNotAuthorized,
            format!("Caller {oid} is not authorized for this tenant."),
        ));
    }
    Ok(())
}

/// The platforms CGS accepts.
pub const PLATFORMS: &[&str] = &["snp-caci", "snp-cvm"];

/// A clean room's request body fields common to the attested routes.
fn attestation_of(body: &Value) -> ApiResult<&Value> {
    match body.get("attestation") {
        Some(a) if !a.is_null() => Ok(a),
        _ => Err(ApiError::new(
            ErrorCode::AttestationMissing,
            "Attestation payload must be supplied.",
        )),
    }
}

/// Verifies a clean room's attestation against the contract's clean-room policy (AC
/// `verifySnpAttestation` + `matchPolicyClaims`). No report-data binding (see
/// [`check_report_data`]).
pub fn verify_clean_room(
    tx: &Tx,
    verifier: &dyn AttestationVerifier,
    contract_id: &str,
    body: &Value,
) -> ApiResult<VerifiedAttestation> {
    verify_clean_room_for(tx, verifier, contract_id, body, None)
}

/// [`verify_clean_room`], falling back (only when the main policy fails) to the delegate policy
/// `(type, delegateId)` if the route has one: events `("events", "writer")`, secrets
/// `("secrets", secretId)`.
pub fn verify_clean_room_for(
    tx: &Tx,
    verifier: &dyn AttestationVerifier,
    contract_id: &str,
    body: &Value,
    delegate: Option<(&str, &str)>,
) -> ApiResult<VerifiedAttestation> {
    let attestation = attestation_of(body)?;
    let platform = body
        .get("platform")
        .and_then(Value::as_str)
        .unwrap_or("snp-caci");
    if !PLATFORMS.contains(&platform) || !verifier.supports_platform(platform) {
        return Err(ApiError::new(
            ErrorCode::UnsupportedPlatform,
            format!("Platform '{platform}' is not supported."),
        ));
    }
    let failed = |m: String| ApiError::new(ErrorCode::VerifySnpAttestationFailed, m);
    let verified = verifier.verify(platform, attestation).map_err(failed)?;
    if let Err(main) = match_policy(tx, contract_id, &verified.claims) {
        let delegate_ok = delegate.is_some_and(|(kind, id)| {
            let map = maps::delegate_policy(contract_id, kind, id);
            match_policy_map(tx, &map, &verified.claims).is_ok()
        });
        if !delegate_ok {
            return Err(failed(main));
        }
    }
    Ok(verified)
}

/// The clean-room policy match rule: every policy claim must be present and `===` one of its
/// allowed values; claims absent from the policy are ignored; an empty policy matches nothing.
pub fn match_policy(tx: &Tx, contract_id: &str, claims: &Map<String, Value>) -> Result<(), String> {
    match_policy_map(tx, &maps::clean_room_policy(contract_id), claims)
}

/// [`match_policy`] against any policy map (the main one or a delegate's).
pub fn match_policy_map(tx: &Tx, map: &str, claims: &Map<String, Value>) -> Result<(), String> {
    let policy = tx.entries(map);
    if policy.is_empty() {
        return Err(format!("The clean room policy is missing ({map})."));
    }
    for (claim, allowed) in policy {
        let allowed = allowed.as_array().cloned().unwrap_or_default();
        let Some(actual) = claims.get(&claim) else {
            return Err(format!("Claim {claim} is missing from the attestation."));
        };
        if !allowed.contains(actual) {
            return Err(format!(
                "Attestation claim {claim}, value {actual} does not match policy values: {}",
                Value::Array(allowed)
            ));
        }
    }
    Ok(())
}

/// The report_data binding: `report_data == sha256(PEM text) ‖ 32 × 0x00`, where the PEM is the
/// base64-decoded `public_key_b64`. Returns the PEM.
pub fn check_report_data(report_data: &[u8], public_key_b64: &str) -> ApiResult<String> {
    let pem_bytes = BASE64
        .decode(public_key_b64)
        .map_err(|_| ApiError::new(ErrorCode::InvalidInput, "The public key is not base64."))?;
    let mut expected = digest(&SHA256, &pem_bytes).as_ref().to_vec();
    expected.extend_from_slice(&[0u8; 32]);
    if report_data != expected.as_slice() {
        return Err(ApiError::new(
            ErrorCode::ReportDataMismatch,
            "Attestation report_data value did not match the expected value.",
        ));
    }
    String::from_utf8(pem_bytes)
        .map_err(|_| ApiError::new(ErrorCode::InvalidInput, "The public key is not PEM text."))
}

fn decode_base64(field: &str, text: &str) -> ApiResult<Vec<u8>> {
    BASE64
        .decode(text)
        .map_err(|_| ApiError::new(ErrorCode::InvalidInput, format!("{field} is not base64.")))
}

/// Whether a contract is accepted.
pub fn is_accepted(tx: &Tx, contract_id: &str) -> bool {
    tx.contains(maps::ACCEPTED_CONTRACTS, contract_id)
}

/// Milliseconds since the epoch as JavaScript's `toISOString` writes them
/// (`2024-01-31T12:00:00.000Z`).
pub fn iso_from_millis(millis: u64) -> String {
    let secs = millis / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        millis % 1000
    )
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Test implementations of the verification traits.
    use super::*;
    use serde_json::json;

    /// An attestation "verifier" for tests: the attestation is `{"claims": {...}, "report_data":
    /// hex}`; `{"bad": true}` fails verification.
    pub struct FakeAttestation;

    impl AttestationVerifier for FakeAttestation {
        fn verify(
            &self,
            _platform: &str,
            attestation: &Value,
        ) -> Result<VerifiedAttestation, String> {
            if attestation.get("bad").is_some() {
                return Err("the report's signature does not verify".into());
            }
            let claims = attestation
                .get("claims")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let hex = attestation
                .get("report_data")
                .and_then(Value::as_str)
                .unwrap_or("");
            let report_data = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0))
                .collect();
            Ok(VerifiedAttestation {
                claims,
                report_data,
            })
        }
    }

    /// A wrapper that "wraps" by prefixing `wrapped:`.
    pub struct FakeWrapper;

    impl KeyWrapper for FakeWrapper {
        fn wrap(&self, _pem: &str, plaintext: &[u8]) -> Result<Vec<u8>, String> {
            let mut out = b"wrapped:".to_vec();
            out.extend_from_slice(plaintext);
            Ok(out)
        }
    }

    /// A clean room's key pair: an RSA-2048 key that signs with PSS, its public PEM (base64 of
    /// the PEM text, as the wire carries it), and the matching report_data.
    pub struct CleanRoomKey {
        pub key: aws_lc_rs::rsa::KeyPair,
        pub public_pem_b64: String,
        pub report_data_hex: String,
    }

    impl CleanRoomKey {
        pub fn new() -> Self {
            use aws_lc_rs::encoding::AsDer;
            use aws_lc_rs::signature::KeyPair;
            let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
            let spki = key.public_key().as_der().unwrap();
            let pem_text = pem::encode(&pem::Pem::new("PUBLIC KEY", spki.as_ref().to_vec()));
            let mut rd = digest(&SHA256, pem_text.as_bytes()).as_ref().to_vec();
            rd.extend_from_slice(&[0; 32]);
            let report_data_hex = crate::constitution::hex(&rd);
            Self {
                key,
                public_pem_b64: BASE64.encode(pem_text),
                report_data_hex,
            }
        }

        pub fn sign(&self, message: &[u8]) -> String {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let mut sig = vec![0; self.key.public_modulus_len()];
            self.key
                .sign(
                    &aws_lc_rs::signature::RSA_PSS_SHA256,
                    &rng,
                    message,
                    &mut sig,
                )
                .unwrap();
            BASE64.encode(sig)
        }

        /// An attestation for the fake verifier with these claims, bound to this key.
        pub fn attestation(&self, claims: Value) -> Value {
            json!({"claims": claims, "report_data": self.report_data_hex})
        }
    }

    pub fn hostdata(value: &str) -> Value {
        json!({"x-ms-sevsnpvm-hostdata": value, "x-ms-sevsnpvm-is-debuggable": false})
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn jwt_callers_must_be_registered() {
        let mut store = crate::kv::Store::default();
        let jwt = |oid: &str, tid: &str| {
            Caller::Jwt(
                serde_json::json!({"oid": oid, "tid": tid})
                    .as_object()
                    .unwrap()
                    .clone(),
            )
        };
        assert!(authorize_caller(&store.transaction(), &Caller::Member("m".into())).is_ok());
        assert_eq!(
            authorize_caller(&store.transaction(), &jwt("o", "t"))
                .unwrap_err()
                .code,
            ErrorCode::CallerNotAuthorized
        );
        let mut tx = store.transaction();
        tx.put(maps::USER_IDENTITIES, "o", serde_json::json!({"tid": "t"}));
        store.commit(&tx.into_write_set());
        assert!(authorize_caller(&store.transaction(), &jwt("o", "t")).is_ok());
        assert_eq!(
            authorize_caller(&store.transaction(), &jwt("o", "x"))
                .unwrap_err()
                .code,
            ErrorCode::CallerTenantNotAuthorized
        );
    }

    #[test]
    fn iso_timestamps_like_javascript() {
        assert_eq!(iso_from_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            iso_from_millis(1_709_251_199_999),
            "2024-02-29T23:59:59.999Z"
        );
        assert_eq!(iso_from_millis(951_782_400_123), "2000-02-29T00:00:00.123Z");
    }

    #[test]
    fn rsa_pss_verifier_accepts_good_and_refuses_bad_signatures() {
        let key = CleanRoomKey::new();
        let pem_text = String::from_utf8(BASE64.decode(&key.public_pem_b64).unwrap()).unwrap();
        let sig = BASE64.decode(key.sign(b"hello")).unwrap();
        assert!(
            RsaPssVerifier
                .verify_rsa_pss_sha256(&pem_text, b"hello", &sig)
                .is_ok()
        );
        assert!(
            RsaPssVerifier
                .verify_rsa_pss_sha256(&pem_text, b"hellO", &sig)
                .is_err()
        );
        assert!(
            RsaPssVerifier
                .verify_rsa_pss_sha256("junk", b"hello", &sig)
                .is_err()
        );
    }

    #[test]
    fn report_data_binds_the_pem() {
        let key = CleanRoomKey::new();
        let rd: Vec<u8> = (0..64)
            .map(|i| u8::from_str_radix(&key.report_data_hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        assert!(check_report_data(&rd, &key.public_pem_b64).is_ok());
        let other = CleanRoomKey::new();
        assert_eq!(
            check_report_data(&rd, &other.public_pem_b64)
                .unwrap_err()
                .code,
            ErrorCode::ReportDataMismatch
        );
    }
}
