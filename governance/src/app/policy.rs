//! Clean-room policy, deployment spec and deployment info reads (reference §1c, §1d). The writes
//! are the `set_clean_room_policy`, `set_deployment_spec` and `set_deployment_info` actions of the
//! constitution; these reads add the ids of the proposals still open for each.

use serde_json::{Map, Value, json};

use super::events::CleanRoomVerifiers;
use super::{check_report_data, decode_base64, verify_clean_room};
use crate::constitution::{apply_policy_change, open_proposal_ids_with, validate_policy_change};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::kv::{Tx, maps};

/// `POST /app/contracts/{id}/cleanroompolicy` → `{proposalIds, policy:{claim:[values]}}`.
pub fn clean_room_policy(tx: &Tx, contract_id: &str) -> Value {
    let policy: Map<String, Value> = tx
        .entries(&maps::clean_room_policy(contract_id))
        .into_iter()
        .collect();
    json!({
        "proposalIds": open_proposal_ids_with(tx, "set_clean_room_policy", "contractId", contract_id),
        "policy": policy,
    })
}

/// `POST /app/contracts/{id}/deploymentspec` (unauthenticated) → `{proposalIds, data}`.
pub fn deployment_spec(tx: &Tx, contract_id: &str) -> Value {
    deployment_record(
        tx,
        maps::DEPLOYMENT_SPECS,
        "set_deployment_spec",
        contract_id,
    )
}

/// `POST /app/contracts/{id}/deploymentinfo` (unauthenticated) → `{proposalIds, data}`.
pub fn deployment_info(tx: &Tx, contract_id: &str) -> Value {
    deployment_record(
        tx,
        maps::DEPLOYMENT_INFO,
        "set_deployment_info",
        contract_id,
    )
}

fn deployment_record(tx: &Tx, map: &str, action: &str, contract_id: &str) -> Value {
    let data = tx
        .get(map, contract_id)
        .and_then(|r| r.get("data"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    json!({
        "proposalIds": open_proposal_ids_with(tx, action, "contractId", contract_id),
        "data": data,
    })
}

/// `PUT /app/contracts/{id}/cleanroompolicy/delegates/{type}/{delegateId}` (no auth): a clean
/// room that satisfies the main policy changes a delegate policy. Body `{attestation, platform?,
/// sign:{signature, publicKey}, data: b64 JSON {type: add|remove, claims, policyType?}}`; the
/// report_data must bind `sign.publicKey`, which must sign `data`. → 200, empty.
pub fn set_delegate_policy(
    tx: &mut Tx,
    verifiers: &CleanRoomVerifiers<'_>,
    contract_id: &str,
    kind: &str,
    delegate_id: &str,
    body: &Value,
) -> ApiResult<()> {
    let verified = verify_clean_room(tx, verifiers.attestation, contract_id, body)?;
    let Some(sign) = body.get("sign").filter(|s| s.is_object()) else {
        return Err(ApiError::new(
            ErrorCode::SignatureMissing,
            "Signature payload must be supplied.",
        ));
    };
    let pem = check_report_data(
        &verified.report_data,
        sign.get("publicKey").and_then(Value::as_str).unwrap_or(""),
    )?;
    let data = decode_base64(
        "data",
        body.get("data").and_then(Value::as_str).unwrap_or(""),
    )?;
    let signature = decode_base64(
        "sign.signature",
        sign.get("signature").and_then(Value::as_str).unwrap_or(""),
    )?;
    verifiers
        .signature
        .verify_rsa_pss_sha256(&pem, &data, &signature)
        .map_err(|e| {
            ApiError::new(
                ErrorCode::SignatureMismatch,
                format!("Signature verification was not successful: {e}"),
            )
        })?;
    let change: Value = serde_json::from_slice(&data).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidInput,
            format!("data is not base64 of JSON: {e}"),
        )
    })?;
    validate_policy_change(&change).map_err(|e| ApiError::new(ErrorCode::InvalidInput, e))?;
    apply_policy_change(
        tx,
        &maps::delegate_policy(contract_id, kind, delegate_id),
        &change,
    )
    .map_err(|e| ApiError::new(ErrorCode::InvalidInput, e))?;
    tx.put(
        &maps::delegate_policy_list(contract_id),
        &format!("{kind}_{delegate_id}"),
        json!({"type": kind, "id": delegate_id}),
    );
    Ok(())
}

/// `POST /app/contracts/{id}/cleanroompolicy/delegates/{type}/{delegateId}` → `{policy}`.
pub fn delegate_policy(tx: &Tx, contract_id: &str, kind: &str, delegate_id: &str) -> Value {
    let policy: Map<String, Value> = tx
        .entries(&maps::delegate_policy(contract_id, kind, delegate_id))
        .into_iter()
        .collect();
    json!({ "policy": policy })
}

/// `GET /app/contracts/{id}/cleanroompolicy/delegates` → `{value:[{type, id}]}`.
pub fn list_delegate_policies(tx: &Tx, contract_id: &str) -> Value {
    let value: Vec<Value> = tx
        .entries(&maps::delegate_policy_list(contract_id))
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    json!({ "value": value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Store;

    #[test]
    fn delegate_policies_are_set_by_an_attested_signed_clean_room() {
        use super::super::RsaPssVerifier;
        use super::super::test_support::*;
        use base64::Engine;
        let mut store = Store::default();
        let mut tx = store.transaction();
        tx.put(
            &maps::clean_room_policy("c"),
            "x-ms-sevsnpvm-hostdata",
            json!(["good"]),
        );
        store.commit(&tx.into_write_set());
        let key = CleanRoomKey::new();
        let change =
            json!({"type": "add", "claims": {"x-ms-sevsnpvm-hostdata": "second"}}).to_string();
        let body = json!({
            "attestation": key.attestation(hostdata("good")),
            "sign": {"signature": key.sign(change.as_bytes()), "publicKey": key.public_pem_b64},
            "data": base64::engine::general_purpose::STANDARD.encode(&change),
        });
        let v = CleanRoomVerifiers {
            attestation: &FakeAttestation,
            signature: &RsaPssVerifier,
        };
        let mut tx = store.transaction();
        set_delegate_policy(&mut tx, &v, "c", "events", "writer", &body).unwrap();
        assert_eq!(
            delegate_policy(&tx, "c", "events", "writer"),
            json!({"policy": {"x-ms-sevsnpvm-hostdata": ["second"]}})
        );
        assert_eq!(
            list_delegate_policies(&tx, "c"),
            json!({"value": [{"type": "events", "id": "writer"}]})
        );
        let mut bad = body.clone();
        bad["attestation"] = key.attestation(hostdata("second"));
        assert_eq!(
            set_delegate_policy(&mut tx, &v, "c", "events", "writer", &bad)
                .unwrap_err()
                .code,
            ErrorCode::VerifySnpAttestationFailed
        );
        let mut unsigned = body.clone();
        unsigned.as_object_mut().unwrap().remove("sign");
        assert_eq!(
            set_delegate_policy(&mut tx, &v, "c", "events", "writer", &unsigned)
                .unwrap_err()
                .code,
            ErrorCode::SignatureMissing
        );
        let not_allowed = json!({"type": "add", "claims": {"x-ms-nope": "1"}}).to_string();
        let mut b = body.clone();
        b["data"] = json!(base64::engine::general_purpose::STANDARD.encode(&not_allowed));
        b["sign"]["signature"] = json!(key.sign(not_allowed.as_bytes()));
        assert_eq!(
            set_delegate_policy(&mut tx, &v, "c", "events", "writer", &b)
                .unwrap_err()
                .code,
            ErrorCode::InvalidInput
        );
        store.commit(&tx.into_write_set());
    }

    #[test]
    fn empty_reads_and_stored_records() {
        let mut store = Store::default();
        let tx = store.transaction();
        assert_eq!(
            deployment_spec(&tx, "c"),
            json!({"proposalIds": [], "data": {}})
        );
        assert_eq!(
            clean_room_policy(&tx, "c"),
            json!({"proposalIds": [], "policy": {}})
        );
        let mut tx = store.transaction();
        tx.put(maps::DEPLOYMENT_INFO, "c", json!({"data": {"k": 1}}));
        tx.put(
            &maps::clean_room_policy("c"),
            "x-ms-sevsnpvm-hostdata",
            json!(["ab"]),
        );
        store.commit(&tx.into_write_set());
        let tx = store.transaction();
        assert_eq!(deployment_info(&tx, "c")["data"], json!({"k": 1}));
        assert_eq!(
            clean_room_policy(&tx, "c")["policy"],
            json!({"x-ms-sevsnpvm-hostdata": ["ab"]})
        );
    }
}
