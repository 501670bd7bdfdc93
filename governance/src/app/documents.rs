//! Member documents (reference §1g, AC `js/src/endpoints/memberdocuments.ts`): the contract life
//! cycle for documents attached to a contract. Drafts in `public:documents`, accepted ones
//! (written by the `set_member_document` apply) in `public:ccf.gov.accepted_member_documents`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use super::contracts::final_votes_list;
use super::{AttestationVerifier, KeyWrapper, check_report_data, verify_clean_room};
use crate::constitution::open_proposals;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::kv::{Tx, maps};

/// `PUT /app/memberdocuments/{documentId}` (or under a contract) body `{version?, contractId,
/// data}` → 200, empty.
pub fn put_document(tx: &mut Tx, document_id: &str, body: &Value) -> ApiResult<()> {
    if tx.contains(maps::ACCEPTED_DOCUMENTS, document_id) {
        return Err(ApiError::new(
            ErrorCode::DocumentAlreadyAccepted,
            format!("Document {document_id} has already been accepted and cannot be changed."),
        ));
    }
    let Some(contract_id) = body
        .get("contractId")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
    else {
        return Err(ApiError::new(
            ErrorCode::ContractIdMissing,
            "contractId is missing from the request body.",
        ));
    };
    let Some(data) = body.get("data").filter(|d| !d.is_null()) else {
        return Err(ApiError::new(
            ErrorCode::DataMissing,
            "data is missing from the request body.",
        ));
    };
    if !tx.contains(maps::CONTRACTS, contract_id)
        && !tx.contains(maps::ACCEPTED_CONTRACTS, contract_id)
    {
        return Err(ApiError::new(
            ErrorCode::ContractNotFound,
            format!("A contract with the id {contract_id} was not found."),
        ));
    }
    if tx.contains(maps::DOCUMENTS, document_id) {
        let current = tx
            .committed_version(maps::DOCUMENTS, document_id)
            .map(|v| v.to_string());
        match body
            .get("version")
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
        {
            None => {
                return Err(ApiError::new(
                    ErrorCode::DocumentAlreadyExists,
                    format!(
                        "Document {document_id} already exists. If the intent is to update it then specify the version property."
                    ),
                ));
            }
            Some(v) if Some(v) != current.as_deref() => {
                return Err(ApiError::new(
                    ErrorCode::PreconditionFailed,
                    format!(
                        "The operation specified version {v} of document {document_id}, which is not the current version."
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    tx.put(
        maps::DOCUMENTS,
        document_id,
        json!({"contractId": contract_id, "data": data}),
    );
    Ok(())
}

/// `GET /app/memberdocuments/{documentId}` → `{id, contractId, version, data, state, proposalId,
/// finalVotes?}`.
pub fn get_document(tx: &Tx, document_id: &str) -> ApiResult<Value> {
    if let Some(accepted) = tx.get(maps::ACCEPTED_DOCUMENTS, document_id) {
        let version = tx
            .committed_version(maps::ACCEPTED_DOCUMENTS, document_id)
            .map(|v| v.to_string());
        return Ok(json!({
            "id": document_id,
            "contractId": accepted.get("contractId").cloned().unwrap_or(Value::Null),
            "version": version.unwrap_or_default(),
            "data": accepted.get("data").cloned().unwrap_or(Value::Null),
            "state": "Accepted",
            "proposalId": accepted.get("proposalId").cloned().unwrap_or(json!("")),
            "finalVotes": final_votes_list(accepted.get("finalVotes")),
        }));
    }
    let proposed = open_proposals(tx).into_iter().find_map(|(id, p)| {
        p.actions
            .into_iter()
            .find(|a| {
                a.name == "set_member_document"
                    && a.args.get("documentId").and_then(Value::as_str) == Some(document_id)
            })
            .map(|a| (id, a.args.get("document").cloned().unwrap_or(Value::Null)))
    });
    if let Some((proposal_id, document)) = proposed {
        return Ok(json!({
            "id": document_id,
            "contractId": document.get("contractId").cloned().unwrap_or(Value::Null),
            "version": document.get("version").cloned().unwrap_or(json!("")),
            "data": document.get("data").cloned().unwrap_or(Value::Null),
            "state": "Proposed",
            "proposalId": proposal_id,
        }));
    }
    let draft = tx.get(maps::DOCUMENTS, document_id).ok_or_else(|| {
        ApiError::new(
            ErrorCode::DocumentNotFound,
            format!("A document with the id {document_id} was not found."),
        )
    })?;
    let version = tx
        .committed_version(maps::DOCUMENTS, document_id)
        .map(|v| v.to_string());
    Ok(json!({
        "id": document_id,
        "contractId": draft.get("contractId").cloned().unwrap_or(Value::Null),
        "version": version.unwrap_or_default(),
        "data": draft.get("data").cloned().unwrap_or(Value::Null),
        "state": "Draft",
        "proposalId": "",
    }))
}

/// `GET /app/memberdocuments` (or `/app/contracts/{cid}/memberdocuments`) → `{value:[{id,
/// contractId}]}`.
pub fn list_documents(tx: &Tx, contract_id: Option<&str>) -> Value {
    let value: Vec<Value> = tx
        .entries(maps::DOCUMENTS)
        .into_iter()
        .filter(|(_, d)| contract_id.is_none_or(|c| d.get("contractId").and_then(Value::as_str) == Some(c)))
        .map(|(id, d)| json!({"id": id, "contractId": d.get("contractId").cloned().unwrap_or(Value::Null)}))
        .collect();
    json!({ "value": value })
}

/// `POST /app/contracts/{cid}/memberdocuments/accepted/{docId}` (no auth) with `{attestation,
/// platform?, encrypt:{publicKey}}` → `{"value": b64(wrapped JSON of the accepted document as
/// [`get_document`] shows it)}`.
pub fn get_accepted_document(
    tx: &Tx,
    attestation: &dyn AttestationVerifier,
    wrapper: &dyn KeyWrapper,
    contract_id: &str,
    document_id: &str,
    body: &Value,
) -> ApiResult<Value> {
    if body.get("attestation").is_none_or(Value::is_null) {
        return Err(ApiError::new(
            ErrorCode::AttestationMissing,
            "Attestation payload must be supplied.",
        ));
    }
    let key_b64 = body
        .get("encrypt")
        .and_then(|e| e.get("publicKey"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::EncryptionMissing,
                "Encrypt payload must be supplied.",
            )
        })?;
    let verified = verify_clean_room(tx, attestation, contract_id, body)?;
    let pem = check_report_data(&verified.report_data, key_b64)?;
    let not_found = || {
        ApiError::new(
            ErrorCode::DocumentNotFound,
            format!(
                "An accepted document with the id {document_id} was not found for contract {contract_id}."
            ),
        )
    };
    let accepted = tx
        .get(maps::ACCEPTED_DOCUMENTS, document_id)
        .ok_or_else(not_found)?;
    if accepted.get("contractId").and_then(Value::as_str) != Some(contract_id) {
        return Err(not_found());
    }
    let document = get_document(tx, document_id)?;
    let wrapped = wrapper
        .wrap(&pem, document.to_string().as_bytes())
        .map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidInput,
                format!("encrypt.publicKey cannot wrap the document: {e}"),
            )
        })?;
    Ok(json!({ "value": BASE64.encode(wrapped) }))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use crate::kv::Store;

    #[test]
    fn put_rules_and_accepted_read() {
        let mut store = Store::default();
        let mut tx = store.transaction();
        let code = |r: ApiResult<()>| r.unwrap_err().code;
        assert_eq!(
            code(put_document(&mut tx, "d", &json!({"data": 1}))),
            ErrorCode::ContractIdMissing
        );
        assert_eq!(
            code(put_document(&mut tx, "d", &json!({"contractId": "c"}))),
            ErrorCode::DataMissing
        );
        assert_eq!(
            code(put_document(
                &mut tx,
                "d",
                &json!({"contractId": "c", "data": 1})
            )),
            ErrorCode::ContractNotFound
        );
        tx.put(maps::CONTRACTS, "c", json!({"data": "x"}));
        put_document(&mut tx, "d", &json!({"contractId": "c", "data": 1})).unwrap();
        store.commit(&tx.into_write_set());
        let mut tx = store.transaction();
        let got = get_document(&tx, "d").unwrap();
        assert_eq!(got["state"], "Draft");
        assert_eq!(
            code(put_document(
                &mut tx,
                "d",
                &json!({"contractId": "c", "data": 2})
            )),
            ErrorCode::DocumentAlreadyExists
        );
        assert_eq!(
            code(put_document(
                &mut tx,
                "d",
                &json!({"contractId": "c", "data": 2, "version": "0.0"})
            )),
            ErrorCode::PreconditionFailed
        );
        put_document(
            &mut tx,
            "d",
            &json!({"contractId": "c", "data": 2, "version": got["version"]}),
        )
        .unwrap();
        assert_eq!(
            list_documents(&tx, Some("c")),
            json!({"value": [{"id": "d", "contractId": "c"}]})
        );
        assert_eq!(
            get_document(&tx, "zz").unwrap_err().code,
            ErrorCode::DocumentNotFound
        );
        tx.put(
            maps::ACCEPTED_DOCUMENTS,
            "d",
            json!({"contractId": "c", "data": 2, "proposalId": "p", "finalVotes": {"m": true}}),
        );
        tx.put(
            &maps::clean_room_policy("c"),
            "x-ms-sevsnpvm-hostdata",
            json!(["good"]),
        );
        store.commit(&tx.into_write_set());
        let mut tx = store.transaction();
        assert_eq!(
            code(put_document(
                &mut tx,
                "d",
                &json!({"contractId": "c", "data": 3})
            )),
            ErrorCode::DocumentAlreadyAccepted
        );
        let key = CleanRoomKey::new();
        let body = json!({"attestation": key.attestation(hostdata("good")), "encrypt": {"publicKey": key.public_pem_b64}});
        let out =
            get_accepted_document(&tx, &FakeAttestation, &FakeWrapper, "c", "d", &body).unwrap();
        let plain = BASE64.decode(out["value"].as_str().unwrap()).unwrap();
        let doc: Value = serde_json::from_slice(&plain[b"wrapped:".len()..]).unwrap();
        assert_eq!(doc["state"], "Accepted");
        assert_eq!(
            get_accepted_document(&tx, &FakeAttestation, &FakeWrapper, "other", "d", &body)
                .unwrap_err()
                .code,
            ErrorCode::VerifySnpAttestationFailed
        );
        assert_eq!(
            get_accepted_document(&tx, &FakeAttestation, &FakeWrapper, "c", "d", &json!({}))
                .unwrap_err()
                .code,
            ErrorCode::AttestationMissing
        );
    }
}
