//! Contract secrets (reference §1f, AC `js/src/endpoints/secrets.ts`): a private map
//! `secrets-<contractId>` (no `public:` prefix), written by members, users or the clean room,
//! read only by an attested clean room, wrapped for the key its report_data binds.
//!
//! As in the reference, reads are not gated by execution consent and do not check that the
//! contract is accepted: they rely on the clean-room policy existing.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use super::events::CleanRoomVerifiers;
use super::{
    AttestationVerifier, Caller, KeyWrapper, check_report_data, decode_base64, verify_clean_room,
    verify_clean_room_for,
};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::kv::{Tx, maps};

/// The longest secret value, in characters.
pub const MAX_SECRET_CHARS: usize = 25_600;

fn encrypt_key_of(body: &Value) -> ApiResult<&str> {
    body.get("encrypt")
        .and_then(|e| e.get("publicKey"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::EncryptionMissing,
                "Encrypt payload must be supplied.",
            )
        })
}

fn check_value(value: Option<&Value>) -> ApiResult<String> {
    let value = value.and_then(Value::as_str).unwrap_or("");
    if value.is_empty() {
        return Err(ApiError::new(
            ErrorCode::ValueMissing,
            "Value must be supplied.",
        ));
    }
    let chars = value.chars().count();
    if chars > MAX_SECRET_CHARS {
        return Err(ApiError::new(
            ErrorCode::ValueTooLarge,
            format!(
                "Length of the value should be less than {MAX_SECRET_CHARS} characters; it is {chars}."
            ),
        ));
    }
    Ok(value.to_owned())
}

/// `PUT /app/contracts/{cid}/secrets/{secretName}` → `{"secretId"}`. A member's or user's body is
/// `{"value"}` (id `<callerId>_<name>`); a clean room's is `{attestation, platform?, encrypt:
/// {publicKey}, sign:{signature}, data: b64 JSON {"value"}}` (id `cleanroom_<name>`), the
/// signature made by the key the report_data binds.
pub fn put_secret(
    tx: &mut Tx,
    caller: &Caller,
    verifiers: &CleanRoomVerifiers<'_>,
    contract_id: &str,
    secret_name: &str,
    body: &Value,
) -> ApiResult<Value> {
    let (secret_id, value) = match caller {
        Caller::Member(id) | Caller::User(id) => (
            format!("{id}_{secret_name}"),
            check_value(body.get("value"))?,
        ),
        Caller::Jwt(claims) => {
            let oid = claims.get("oid").and_then(Value::as_str).unwrap_or("");
            (
                format!("{oid}_{secret_name}"),
                check_value(body.get("value"))?,
            )
        }
        Caller::Unauthenticated => {
            if body.get("attestation").is_none_or(Value::is_null) {
                return Err(ApiError::new(
                    ErrorCode::AttestationMissing,
                    "Attestation payload must be supplied.",
                ));
            }
            let key_b64 = encrypt_key_of(body)?;
            let verified = verify_clean_room(tx, verifiers.attestation, contract_id, body)?;
            let pem = check_report_data(&verified.report_data, key_b64)?;
            let Some(signature) = body
                .get("sign")
                .and_then(|s| s.get("signature"))
                .and_then(Value::as_str)
            else {
                return Err(ApiError::new(
                    ErrorCode::SignatureMissing,
                    "Signature payload must be supplied.",
                ));
            };
            let data = decode_base64(
                "data",
                body.get("data").and_then(Value::as_str).unwrap_or(""),
            )?;
            verifiers
                .signature
                .verify_rsa_pss_sha256(&pem, &data, &decode_base64("sign.signature", signature)?)
                .map_err(|e| {
                    ApiError::new(
                        ErrorCode::SignatureMismatch,
                        format!("Signature verification was not successful: {e}"),
                    )
                })?;
            let inner: Value = serde_json::from_slice(&data).map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidInput,
                    format!("data is not base64 of JSON: {e}"),
                )
            })?;
            (
                format!("cleanroom_{secret_name}"),
                check_value(inner.get("value"))?,
            )
        }
    };
    tx.put(
        &maps::secrets(contract_id),
        &secret_id,
        json!({ "value": value }),
    );
    Ok(json!({ "secretId": secret_id }))
}

/// `POST /app/contracts/{cid}/secrets/{secretId}` (no auth) with `{attestation, platform?,
/// encrypt:{publicKey}}` → `{"value": b64(wrapped secret bytes)}`.
pub fn get_secret(
    tx: &Tx,
    attestation: &dyn AttestationVerifier,
    wrapper: &dyn KeyWrapper,
    contract_id: &str,
    secret_id: &str,
    body: &Value,
) -> ApiResult<Value> {
    if body.get("attestation").is_none_or(Value::is_null) {
        return Err(ApiError::new(
            ErrorCode::AttestationMissing,
            "Attestation payload must be supplied.",
        ));
    }
    let key_b64 = encrypt_key_of(body)?;
    let delegate = Some(("secrets", secret_id));
    let verified = verify_clean_room_for(tx, attestation, contract_id, body, delegate)?;
    let pem = check_report_data(&verified.report_data, key_b64)?;
    let value = tx
        .get(&maps::secrets(contract_id), secret_id)
        .and_then(|s| s.get("value"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::SecretNotFound,
                format!("A secret with the id {secret_id} was not found."),
            )
        })?;
    let wrapped = wrapper.wrap(&pem, value.as_bytes()).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidInput,
            format!("encrypt.publicKey cannot wrap the secret: {e}"),
        )
    })?;
    Ok(json!({ "value": BASE64.encode(wrapped) }))
}

/// `GET /app/contracts/{cid}/secrets` → `{value:[{secretId}]}`.
pub fn list_secrets(tx: &Tx, contract_id: &str) -> Value {
    let value: Vec<Value> = tx
        .keys(&maps::secrets(contract_id))
        .into_iter()
        .map(|id| json!({ "secretId": id }))
        .collect();
    json!({ "value": value })
}

#[cfg(test)]
mod tests {
    use super::super::RsaPssVerifier;
    use super::super::test_support::*;
    use super::*;
    use crate::kv::Store;

    const V: CleanRoomVerifiers<'static> = CleanRoomVerifiers {
        attestation: &FakeAttestation,
        signature: &RsaPssVerifier,
    };

    fn store() -> Store {
        let mut store = Store::default();
        let mut tx = store.transaction();
        let policy = maps::clean_room_policy("c");
        // Two hostdata values allowed.
        tx.put(&policy, "x-ms-sevsnpvm-hostdata", json!(["good", "second"]));
        store.commit(&tx.into_write_set());
        store
    }

    #[test]
    fn member_put_clean_room_get() {
        let mut store = store();
        let member = Caller::Member("m1".into());
        let mut tx = store.transaction();
        assert_eq!(
            put_secret(&mut tx, &member, &V, "c", "s", &json!({"value": ""}))
                .unwrap_err()
                .code,
            ErrorCode::ValueMissing
        );
        let big = "x".repeat(MAX_SECRET_CHARS + 1);
        assert_eq!(
            put_secret(&mut tx, &member, &V, "c", "s", &json!({ "value": big }))
                .unwrap_err()
                .code,
            ErrorCode::ValueTooLarge
        );
        let out = put_secret(&mut tx, &member, &V, "c", "s", &json!({"value": "hunter2"})).unwrap();
        assert_eq!(out, json!({"secretId": "m1_s"}));
        store.commit(&tx.into_write_set());
        assert!(store.entry("secrets-c", "m1_s").is_some());

        let tx = store.transaction();
        let key = CleanRoomKey::new();
        let body = |claims: Value, pk: &str| json!({"attestation": key.attestation(claims), "encrypt": {"publicKey": pk}});
        let get = |b: &Value, id: &str| get_secret(&tx, &FakeAttestation, &FakeWrapper, "c", id, b);
        assert_eq!(
            get(&json!({}), "m1_s").unwrap_err().code,
            ErrorCode::AttestationMissing
        );
        assert_eq!(
            get(&json!({"attestation": {}}), "m1_s").unwrap_err().code,
            ErrorCode::EncryptionMissing
        );
        assert_eq!(
            get(&body(hostdata("bad"), &key.public_pem_b64), "m1_s")
                .unwrap_err()
                .code,
            ErrorCode::VerifySnpAttestationFailed
        );
        let other = CleanRoomKey::new();
        assert_eq!(
            get(&body(hostdata("good"), &other.public_pem_b64), "m1_s")
                .unwrap_err()
                .code,
            ErrorCode::ReportDataMismatch
        );
        assert_eq!(
            get(&body(hostdata("good"), &key.public_pem_b64), "nope")
                .unwrap_err()
                .code,
            ErrorCode::SecretNotFound
        );
        let got = get(&body(hostdata("second"), &key.public_pem_b64), "m1_s").unwrap();
        assert_eq!(
            BASE64.decode(got["value"].as_str().unwrap()).unwrap(),
            b"wrapped:hunter2"
        );
        assert_eq!(
            list_secrets(&tx, "c"),
            json!({"value": [{"secretId": "m1_s"}]})
        );
    }

    #[test]
    fn a_secret_specific_delegate_policy_admits_another_hostdata() {
        let mut store = store();
        let mut tx = store.transaction();
        tx.put("secrets-c", "m1_s", json!({"value": "v"}));
        tx.put("secrets-c", "m1_t", json!({"value": "w"}));
        tx.put(
            &maps::delegate_policy("c", "secrets", "m1_s"),
            "x-ms-sevsnpvm-hostdata",
            json!(["third"]),
        );
        store.commit(&tx.into_write_set());
        let tx = store.transaction();
        let key = CleanRoomKey::new();
        let body = json!({"attestation": key.attestation(hostdata("third")), "encrypt": {"publicKey": key.public_pem_b64}});
        assert!(get_secret(&tx, &FakeAttestation, &FakeWrapper, "c", "m1_s", &body).is_ok());
        let other = get_secret(&tx, &FakeAttestation, &FakeWrapper, "c", "m1_t", &body);
        assert_eq!(
            other.unwrap_err().code,
            ErrorCode::VerifySnpAttestationFailed
        );
    }

    #[test]
    fn clean_room_put_is_signed_and_bound() {
        let store = store();
        let key = CleanRoomKey::new();
        let data = json!({"value": "from the clean room"}).to_string();
        let body = json!({
            "attestation": key.attestation(hostdata("good")),
            "encrypt": {"publicKey": key.public_pem_b64},
            "sign": {"signature": key.sign(data.as_bytes())},
            "data": BASE64.encode(&data),
        });
        let mut tx = store.transaction();
        let out = put_secret(&mut tx, &Caller::Unauthenticated, &V, "c", "k", &body).unwrap();
        assert_eq!(out["secretId"], "cleanroom_k");
        let mut forged = body.clone();
        forged["data"] = json!(BASE64.encode("{\"value\":\"other\"}"));
        assert_eq!(
            put_secret(&mut tx, &Caller::Unauthenticated, &V, "c", "k", &forged)
                .unwrap_err()
                .code,
            ErrorCode::SignatureMismatch
        );
    }
}
