//! Clean-room policy, deployment spec and deployment info reads (reference §1c, §1d). The writes
//! are the `set_clean_room_policy`, `set_deployment_spec` and `set_deployment_info` actions of the
//! constitution; these reads add the ids of the proposals still open for each.

use serde_json::{Map, Value, json};

use crate::constitution::open_proposal_ids_with;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Store;

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
