//! Contracts (reference §1a, AC `js/src/endpoints/contracts.ts`): drafts in `public:contracts`,
//! accepted contracts (written by the `set_contract` apply) in `public:ccf.gov.accepted_contracts`,
//! and the Draft / Proposed / Accepted state derived from both plus the open proposals.
//!
//! The optimistic-concurrency `version` is the KV version `"{view}.{seqno}"` of the last write
//! to the key; a stale one on PUT is 412, a missing one on an existing contract 409.

use serde_json::{Value, json};

use crate::constitution::open_proposals;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::kv::{Tx, maps};

/// The contract states.
pub const STATES: &[&str] = &["Draft", "Proposed", "Accepted"];

/// `PUT /app/contracts/{contractId}` body `{"version"?: string, "data": any}` → 200, empty body.
pub fn put_contract(tx: &mut Tx, contract_id: &str, body: &Value) -> ApiResult<()> {
    if tx.contains(maps::ACCEPTED_CONTRACTS, contract_id) {
        return Err(ApiError::new(
            ErrorCode::ContractAlreadyAccepted,
            format!("Contract {contract_id} has already been accepted and cannot be changed."),
        ));
    }
    let Some(data) = body.get("data").filter(|d| !d.is_null()) else {
        return Err(ApiError::new(
            ErrorCode::DataMissing,
            "data is missing from the request body.",
        ));
    };
    if tx.contains(maps::CONTRACTS, contract_id) {
        let current = tx
            .committed_version(maps::CONTRACTS, contract_id)
            .map(|v| v.to_string());
        match body
            .get("version")
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
        {
            None => {
                return Err(ApiError::new(
                    ErrorCode::ContractAlreadyExists,
                    format!(
                        "Contract {contract_id} already exists. If the intent is to update it then specify the version property."
                    ),
                ));
            }
            Some(version) if Some(version) != current.as_deref() => {
                return Err(ApiError::new(
                    ErrorCode::PreconditionFailed,
                    format!(
                        "The operation specified version {version} of contract {contract_id}, which is not the current version {}.",
                        current.unwrap_or_default()
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    tx.put(maps::CONTRACTS, contract_id, json!({ "data": data }));
    Ok(())
}

/// The open `set_contract` proposal for a contract: `(proposal id, args.contract)`.
fn open_contract_proposal(tx: &Tx, contract_id: &str) -> Option<(String, Value)> {
    open_proposals(tx).into_iter().find_map(|(id, proposal)| {
        proposal
            .actions
            .into_iter()
            .find(|a| {
                a.name == "set_contract"
                    && a.args.get("contractId").and_then(Value::as_str) == Some(contract_id)
            })
            .map(|a| (id, a.args.get("contract").cloned().unwrap_or(Value::Null)))
    })
}

/// `finalVotes` as the GET answers it: `[{memberId, vote}]` from the stored `{memberId: bool}`.
pub fn final_votes_list(stored: Option<&Value>) -> Value {
    let list: Vec<Value> = stored
        .and_then(Value::as_object)
        .map(|votes| {
            votes
                .iter()
                .map(|(m, v)| json!({"memberId": m, "vote": v}))
                .collect()
        })
        .unwrap_or_default();
    Value::Array(list)
}

/// `POST /app/contracts/{contractId}` → `{id, version, state, data, proposalId, finalVotes?}`.
pub fn get_contract(tx: &Tx, contract_id: &str) -> ApiResult<Value> {
    if let Some(accepted) = tx.get(maps::ACCEPTED_CONTRACTS, contract_id) {
        let version = tx
            .committed_version(maps::ACCEPTED_CONTRACTS, contract_id)
            .map(|v| v.to_string());
        return Ok(json!({
            "id": contract_id,
            "version": version.unwrap_or_default(),
            "state": "Accepted",
            "data": accepted.get("data").cloned().unwrap_or(Value::Null),
            "proposalId": accepted.get("proposalId").cloned().unwrap_or(json!("")),
            "finalVotes": final_votes_list(accepted.get("finalVotes")),
        }));
    }
    if let Some((proposal_id, contract)) = open_contract_proposal(tx, contract_id) {
        return Ok(json!({
            "id": contract_id,
            "version": contract.get("version").cloned().unwrap_or(json!("")),
            "state": "Proposed",
            "data": contract.get("data").cloned().unwrap_or(Value::Null),
            "proposalId": proposal_id,
        }));
    }
    if let Some(draft) = tx.get(maps::CONTRACTS, contract_id) {
        let version = tx
            .committed_version(maps::CONTRACTS, contract_id)
            .map(|v| v.to_string());
        return Ok(json!({
            "id": contract_id,
            "version": version.unwrap_or_default(),
            "state": "Draft",
            "data": draft.get("data").cloned().unwrap_or(Value::Null),
            "proposalId": "",
        }));
    }
    Err(ApiError::new(
        ErrorCode::ContractNotFound,
        format!("A contract with the id {contract_id} was not found."),
    ))
}

/// `GET /app/contracts[?state=Draft|Proposed|Accepted]` → `{value:[{id}]}`.
pub fn list_contracts(tx: &Tx, state: Option<&str>) -> ApiResult<Value> {
    if let Some(s) = state
        && !STATES.contains(&s)
    {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("state '{s}' is not one of {}.", STATES.join(", ")),
        ));
    }
    let proposed: Vec<String> = open_proposals(tx)
        .into_iter()
        .flat_map(|(_, p)| p.actions)
        .filter(|a| a.name == "set_contract")
        .filter_map(|a| {
            a.args
                .get("contractId")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    let value: Vec<Value> = tx
        .keys(maps::CONTRACTS)
        .into_iter()
        .filter(|id| {
            let actual = if tx.contains(maps::ACCEPTED_CONTRACTS, id) {
                "Accepted"
            } else if proposed.contains(id) {
                "Proposed"
            } else {
                "Draft"
            };
            state.is_none_or(|s| s == actual)
        })
        .map(|id| json!({ "id": id }))
        .collect();
    Ok(json!({ "value": value }))
}

/// The client-side checks of `contract propose` (AC `ContractsController.cs`): `current` is the
/// contract as [`get_contract`] shows it, `version` the one the user gives. Returns the proposal
/// payload `{"actions":[{"name":"set_contract","args":{contractId, contract}}]}`.
pub fn contract_proposal(current: &Value, version: Option<&str>) -> ApiResult<Value> {
    let id = current.get("id").and_then(Value::as_str).unwrap_or("");
    let Some(version) = version.filter(|v| !v.is_empty()) else {
        return Err(ApiError::new(
            ErrorCode::VersionMissing,
            "version must be specified to propose a contract.",
        ));
    };
    if current.get("version").and_then(Value::as_str) != Some(version) {
        return Err(ApiError::new(
            ErrorCode::ContractModified,
            format!(
                "Contract {id} has been modified since version {version}: read it again and propose the new version."
            ),
        ));
    }
    Ok(
        json!({"actions": [{"name": "set_contract", "args": {"contractId": id, "contract": current}}]}),
    )
}

/// The client-side checks of `contract vote`: a proposal id is given, the contract is Proposed,
/// and by that proposal.
pub fn check_contract_vote(current: &Value, proposal_id: Option<&str>) -> ApiResult<()> {
    let id = current.get("id").and_then(Value::as_str).unwrap_or("");
    let Some(proposal_id) = proposal_id.filter(|p| !p.is_empty()) else {
        return Err(ApiError::new(
            ErrorCode::ProposalIdMissing,
            "proposalId must be specified to vote on a contract.",
        ));
    };
    if current.get("state").and_then(Value::as_str) != Some("Proposed") {
        return Err(ApiError::new(
            ErrorCode::ContractNotProposed,
            format!("Contract {id} is not proposed."),
        ));
    }
    if current.get("proposalId").and_then(Value::as_str) != Some(proposal_id) {
        return Err(ApiError::new(
            ErrorCode::ProposalIdMismatch,
            format!("Proposal {proposal_id} is not the open proposal of contract {id}."),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gov_api::tests::TestService;

    fn code(r: ApiResult<impl std::fmt::Debug>) -> (u16, ErrorCode) {
        let e = r.unwrap_err();
        (e.status, e.code)
    }

    #[test]
    fn put_rules_405_409_412_and_data_missing() {
        let mut s = TestService::new();
        assert_eq!(
            code(s.run(|tx| put_contract(tx, "c", &json!({})))),
            (400, ErrorCode::DataMissing)
        );
        s.run(|tx| put_contract(tx, "c", &json!({"data": "spec v1"})))
            .unwrap();
        let got = s.read(|tx| get_contract(tx, "c")).unwrap();
        assert_eq!(got["state"], "Draft");
        assert_eq!(got["proposalId"], "");
        let v1 = got["version"].as_str().unwrap().to_owned();
        assert_eq!(v1, s.store.last_version().to_string());
        assert_eq!(
            code(s.run(|tx| put_contract(tx, "c", &json!({"data": "x"})))),
            (409, ErrorCode::ContractAlreadyExists)
        );
        assert_eq!(
            code(s.run(|tx| put_contract(tx, "c", &json!({"data": "x", "version": "9.9"})))),
            (412, ErrorCode::PreconditionFailed)
        );
        s.run(|tx| put_contract(tx, "c", &json!({"data": "spec v2", "version": v1})))
            .unwrap();
        let got = s.read(|tx| get_contract(tx, "c")).unwrap();
        assert_eq!(got["data"], "spec v2");
        assert_ne!(got["version"], v1.as_str());
        // The old version is stale now.
        assert_eq!(
            code(s.run(|tx| put_contract(tx, "c", &json!({"data": "x", "version": v1})))).1,
            ErrorCode::PreconditionFailed
        );
        let mut tx = s.store.transaction();
        tx.put(
            maps::ACCEPTED_CONTRACTS,
            "c",
            json!({"data": "spec v2", "proposalId": "p", "finalVotes": {"m": true}}),
        );
        s.store.commit(&tx.into_write_set());
        assert_eq!(
            code(s.run(|tx| put_contract(tx, "c", &json!({"data": "x"})))),
            (405, ErrorCode::ContractAlreadyAccepted)
        );
        let got = s.read(|tx| get_contract(tx, "c")).unwrap();
        assert_eq!(got["state"], "Accepted");
        assert_eq!(got["finalVotes"], json!([{"memberId": "m", "vote": true}]));
    }

    #[test]
    fn client_side_propose_and_vote_checks() {
        let draft =
            json!({"id": "c", "version": "1.4", "state": "Draft", "data": "d", "proposalId": ""});
        assert_eq!(
            contract_proposal(&draft, None).unwrap_err().code,
            ErrorCode::VersionMissing
        );
        assert_eq!(
            contract_proposal(&draft, Some("1.3")).unwrap_err().code,
            ErrorCode::ContractModified
        );
        let p = contract_proposal(&draft, Some("1.4")).unwrap();
        assert_eq!(p["actions"][0]["args"]["contract"], draft);
        assert_eq!(
            check_contract_vote(&draft, None).unwrap_err().code,
            ErrorCode::ProposalIdMissing
        );
        assert_eq!(
            check_contract_vote(&draft, Some("p")).unwrap_err().code,
            ErrorCode::ContractNotProposed
        );
        let proposed = json!({"id": "c", "state": "Proposed", "proposalId": "p"});
        assert_eq!(
            check_contract_vote(&proposed, Some("q")).unwrap_err().code,
            ErrorCode::ProposalIdMismatch
        );
        assert!(check_contract_vote(&proposed, Some("p")).is_ok());
    }

    #[test]
    fn list_by_state() {
        let mut s = TestService::new();
        for id in ["a", "b", "c"] {
            s.run(|tx| put_contract(tx, id, &json!({"data": id})))
                .unwrap();
        }
        let mut tx = s.store.transaction();
        tx.put(maps::ACCEPTED_CONTRACTS, "a", json!({"data": "a"}));
        tx.put(
            maps::PROPOSALS,
            "p",
            json!(
                r#"{"actions":[{"name":"set_contract","args":{"contractId":"b","contract":{}}}]}"#
            ),
        );
        tx.put(
            maps::PROPOSALS_INFO,
            "p",
            json!({"state": "Open", "proposer_id": "m", "ballots": {}}),
        );
        s.store.commit(&tx.into_write_set());
        let ids = |state: &str| s.read(|tx| list_contracts(tx, Some(state))).unwrap();
        assert_eq!(ids("Accepted"), json!({"value": [{"id": "a"}]}));
        assert_eq!(ids("Proposed"), json!({"value": [{"id": "b"}]}));
        assert_eq!(ids("Draft"), json!({"value": [{"id": "c"}]}));
        assert_eq!(
            s.read(|tx| list_contracts(tx, None)).unwrap()["value"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        assert_eq!(
            s.read(|tx| get_contract(tx, "b")).unwrap()["proposalId"],
            "p"
        );
    }

    #[test]
    fn get_of_a_missing_contract_is_404_and_list_checks_state() {
        let s = TestService::new();
        assert_eq!(
            code(s.read(|tx| get_contract(tx, "nope"))),
            (404, ErrorCode::ContractNotFound)
        );
        assert_eq!(
            code(s.read(|tx| list_contracts(tx, Some("Open")))),
            (400, ErrorCode::InvalidParameter)
        );
        assert_eq!(
            s.read(|tx| list_contracts(tx, None)).unwrap(),
            json!({"value": []})
        );
    }
}
