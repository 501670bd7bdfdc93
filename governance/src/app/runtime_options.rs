//! Contract runtime options (reference §1b): execution consent set per member directly, logging
//! and telemetry by proposals; plus the CGS-wide `autoapprove-*` options.

use serde_json::{Value, json};

use super::is_accepted;
use crate::constitution::{CGS_RUNTIME_OPTIONS, cgs_option_enabled, open_proposal_ids_with};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::kv::{Tx, maps};

/// The contract runtime options.
pub const OPTIONS: &[&str] = &["execution", "logging", "telemetry"];

fn check_option(option: &str) -> ApiResult<()> {
    if OPTIONS.contains(&option) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidOption,
            format!("Invalid option '{option}'. Valid options: execution, logging, telemetry."),
        ))
    }
}

fn execution_map(tx: &Tx, contract_id: &str) -> Vec<(String, String)> {
    tx.get(maps::CONTRACTS_EXECUTION_STATUS, contract_id)
        .and_then(|r| r.get("serializedMemberToStatusMap"))
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str::<Vec<(String, String)>>(s).ok())
        .unwrap_or_default()
}

/// `POST /app/contracts/{id}/runtimeoptions/{option}/{enable|disable}` by a member → 200, empty.
/// `enable` is `true` for the enable route.
pub fn set_contract_runtime_option(
    tx: &mut Tx,
    member_id: &str,
    contract_id: &str,
    option: &str,
    enable: bool,
) -> ApiResult<()> {
    check_option(option)?;
    if option != "execution" {
        return Err(ApiError::new(
            ErrorCode::InvalidOption,
            "Use proposals for options other than 'execution'.",
        ));
    }
    if !is_accepted(tx, contract_id) {
        return Err(ApiError::new(
            ErrorCode::ContractNotAccepted,
            format!("Contract {contract_id} does not exist or has not been accepted."),
        ));
    }
    let mut entries = execution_map(tx, contract_id);
    let status = if enable { "enabled" } else { "disabled" };
    match entries.iter_mut().find(|(m, _)| m == member_id) {
        Some(entry) => entry.1 = status.to_owned(),
        None => entries.push((member_id.to_owned(), status.to_owned())),
    }
    let serialized = serde_json::to_string(&entries).unwrap_or_default();
    tx.put(
        maps::CONTRACTS_EXECUTION_STATUS,
        contract_id,
        json!({ "serializedMemberToStatusMap": serialized }),
    );
    Ok(())
}

/// `POST /app/contracts/{id}/runtimeoptions/{option}/status` → `{status, reason?, proposalIds?}`.
/// For the unauthenticated (clean-room) caller, verify the attestation first with
/// [`super::verify_clean_room`] (no report-data binding, as the reference).
pub fn contract_runtime_option_status(
    tx: &Tx,
    contract_id: &str,
    option: &str,
) -> ApiResult<Value> {
    check_option(option)?;
    if !is_accepted(tx, contract_id) {
        return Ok(json!({
            "status": "disabled",
            "reason": {"code": "ContractNotAccepted", "message": "Contract does not exist or has not been accepted."},
        }));
    }
    if option == "execution" {
        let disabled: Vec<String> = execution_map(tx, contract_id)
            .into_iter()
            .filter(|(_, s)| s == "disabled")
            .map(|(m, _)| m)
            .collect();
        if disabled.is_empty() {
            return Ok(json!({"status": "enabled"}));
        }
        return Ok(json!({
            "status": "disabled",
            "reason": {
                "code": "ContractDisabled",
                "message": format!("Contract has been disabled by the following member(s): m[{}].", disabled.join(",")),
            },
        }));
    }
    let (map, action) = if option == "logging" {
        (
            maps::CONTRACTS_LOGGING_STATUS,
            "set_contract_runtime_options_enable_logging",
        )
    } else {
        (
            maps::CONTRACTS_TELEMETRY_STATUS,
            "set_contract_runtime_options_enable_telemetry",
        )
    };
    let status = tx
        .get(map, contract_id)
        .and_then(|r| r.get("status"))
        .cloned()
        .unwrap_or(json!("disabled"));
    Ok(json!({
        "status": status,
        "proposalIds": open_proposal_ids_with(tx, action, "contractId", contract_id),
    }))
}

/// The unauthenticated (clean-room) form of the status route: body `{attestation, platform?}`,
/// verified against the contract's policy (400 `AttestationMissing` /
/// `VerifySnpAttestationFailed`), with no report-data binding (as the reference: the status is
/// not secret).
pub fn clean_room_runtime_option_status(
    tx: &Tx,
    verifier: &dyn super::AttestationVerifier,
    contract_id: &str,
    option: &str,
    body: &Value,
) -> ApiResult<Value> {
    check_option(option)?;
    super::verify_clean_room(tx, verifier, contract_id, body)?;
    contract_runtime_option_status(tx, contract_id, option)
}

/// `POST /app/runtimeoptions/{option}/status` (CGS-wide `autoapprove-*`) → `{status}`.
pub fn runtime_option_status(tx: &Tx, option: &str) -> ApiResult<Value> {
    if !CGS_RUNTIME_OPTIONS.contains(&option) {
        return Err(ApiError::new(
            ErrorCode::InvalidOption,
            format!("Invalid option '{option}'."),
        ));
    }
    let status = if cgs_option_enabled(tx, option) {
        "enabled"
    } else {
        "disabled"
    };
    Ok(json!({ "status": status }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Store;

    #[test]
    fn status_before_and_after_acceptance_and_consent() {
        let mut store = Store::default();
        let tx = store.transaction();
        let s = contract_runtime_option_status(&tx, "c", "execution").unwrap();
        assert_eq!(s["status"], "disabled");
        assert_eq!(s["reason"]["code"], "ContractNotAccepted");
        assert_eq!(
            contract_runtime_option_status(&tx, "c", "nope")
                .unwrap_err()
                .code,
            ErrorCode::InvalidOption
        );
        let mut tx = store.transaction();
        assert_eq!(
            set_contract_runtime_option(&mut tx, "m1", "c", "execution", false)
                .unwrap_err()
                .code,
            ErrorCode::ContractNotAccepted
        );
        assert_eq!(
            set_contract_runtime_option(&mut tx, "m1", "c", "logging", true)
                .unwrap_err()
                .code,
            ErrorCode::InvalidOption
        );
        tx.put(maps::ACCEPTED_CONTRACTS, "c", json!({"data": 1}));
        store.commit(&tx.into_write_set());
        let tx = store.transaction();
        assert_eq!(
            contract_runtime_option_status(&tx, "c", "execution").unwrap(),
            json!({"status": "enabled"})
        );
        assert_eq!(
            contract_runtime_option_status(&tx, "c", "logging").unwrap(),
            json!({"status": "disabled", "proposalIds": []})
        );
        let mut tx = store.transaction();
        set_contract_runtime_option(&mut tx, "m1", "c", "execution", false).unwrap();
        set_contract_runtime_option(&mut tx, "m2", "c", "execution", false).unwrap();
        let s = contract_runtime_option_status(&tx, "c", "execution").unwrap();
        assert_eq!(s["reason"]["code"], "ContractDisabled");
        assert_eq!(
            s["reason"]["message"],
            "Contract has been disabled by the following member(s): m[m1,m2]."
        );
        set_contract_runtime_option(&mut tx, "m1", "c", "execution", true).unwrap();
        set_contract_runtime_option(&mut tx, "m2", "c", "execution", true).unwrap();
        assert_eq!(
            contract_runtime_option_status(&tx, "c", "execution").unwrap()["status"],
            "enabled"
        );
        assert_eq!(
            runtime_option_status(&tx, "autoapprove-jsapp-proposal").unwrap()["status"],
            "disabled"
        );
        assert_eq!(
            runtime_option_status(&tx, "x").unwrap_err().code,
            ErrorCode::InvalidOption
        );
        use super::super::test_support::{FakeAttestation, hostdata};
        tx.put(
            &maps::clean_room_policy("c"),
            "x-ms-sevsnpvm-hostdata",
            json!(["good"]),
        );
        let status = |body: Value| {
            clean_room_runtime_option_status(&tx, &FakeAttestation, "c", "execution", &body)
        };
        assert_eq!(
            status(json!({})).unwrap_err().code,
            ErrorCode::AttestationMissing
        );
        assert_eq!(
            status(json!({"attestation": {"claims": hostdata("bad")}}))
                .unwrap_err()
                .code,
            ErrorCode::VerifySnpAttestationFailed
        );
        assert_eq!(
            status(json!({"attestation": {"claims": hostdata("good")}})).unwrap()["status"],
            "enabled"
        );
    }
}
