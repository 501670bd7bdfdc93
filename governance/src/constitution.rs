//! The constitution, in Rust: the reference's `validate`, `resolve` and action `apply` functions.
//!
//! CCF runs a JavaScript constitution (the CCF defaults, the operator logic and the CGS
//! `actions.js`/`resolve.js` concatenated). encfs codes the same rules in Rust (reference §2):
//! every action validates its arguments at create time (a failure is CCF's 400
//! `ProposalFailedToValidate`); `resolve` decides Open / Accepted / Rejected after every create and
//! ballot; `apply` runs the actions of an accepted proposal in order. Ballots in CCF are JavaScript
//! `vote` functions; encfs accepts exactly the two canonical ballots the reference client sends
//! (`export function vote (proposal, proposerId) { return true }` and `… return false }`, compared
//! token by token so whitespace does not matter) and refuses any other ballot with a clear error
//! ([`parse_ballot`]): a deliberate departure, since there is no JavaScript engine here.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::kv::{Tx, maps};

/// The actions a reject vote vetoes (reference §2, `resolve.js`).
pub const VETO_ACTIONS: &[&str] = &[
    "set_contract",
    "set_clean_room_policy",
    "set_deployment_spec",
    "set_deployment_info",
    "set_contract_runtime_options_enable_logging",
    "set_contract_runtime_options_enable_telemetry",
    "set_member_document",
];

/// The actions accepted with zero votes.
pub const AUTO_ACCEPT_ACTIONS: &[&str] = &[
    "set_contract_runtime_options_disable_logging",
    "set_contract_runtime_options_disable_telemetry",
];

/// Every action this constitution knows.
pub const ACTIONS: &[&str] = &[
    "set_contract",
    "set_deployment_spec",
    "set_deployment_info",
    "set_clean_room_policy",
    "set_contract_runtime_options_enable_logging",
    "set_contract_runtime_options_disable_logging",
    "set_contract_runtime_options_enable_telemetry",
    "set_contract_runtime_options_disable_telemetry",
    "set_member_document",
    "set_member",
    "remove_member",
    "set_member_data",
    "set_recovery_threshold",
    "set_cgs_runtime_options",
];

/// The claims a `snp-caci` clean-room policy may name (AC `cleanroompolicy.ts` `CLAIMS`).
pub const SNP_CACI_CLAIMS: &[&str] = &[
    "x-ms-attestation-type",
    "x-ms-compliance-status",
    "x-ms-policy-hash",
    "vm-configuration-secure-boot",
    "vm-configuration-secure-boot-template-id",
    "vm-configuration-tpm-enabled",
    "vm-configuration-vmUniqueId",
    "x-ms-sevsnpvm-authorkeydigest",
    "x-ms-sevsnpvm-bootloader-svn",
    "x-ms-sevsnpvm-familyId",
    "x-ms-sevsnpvm-guestsvn",
    "x-ms-sevsnpvm-hostdata",
    "x-ms-sevsnpvm-idkeydigest",
    "x-ms-sevsnpvm-imageId",
    "x-ms-sevsnpvm-is-debuggable",
    "x-ms-sevsnpvm-launchmeasurement",
    "x-ms-sevsnpvm-microcode-svn",
    "x-ms-sevsnpvm-migration-allowed",
    "x-ms-sevsnpvm-reportdata",
    "x-ms-sevsnpvm-reportid",
    "x-ms-sevsnpvm-smt-allowed",
    "x-ms-sevsnpvm-snpfw-svn",
    "x-ms-sevsnpvm-tee-svn",
    "x-ms-sevsnpvm-vmpl",
    "x-ms-ver",
];

/// The claims a `jwt` clean-room policy may name.
pub const JWT_CLAIMS: &[&str] = &["oid", "appid", "tid", "sub", "iss"];

/// The CGS-wide runtime options (`set_cgs_runtime_options`).
pub const CGS_RUNTIME_OPTIONS: &[&str] = &[
    "autoapprove-constitution-proposal",
    "autoapprove-jsapp-proposal",
    "autoapprove-deploymentspec-proposal",
    "autoapprove-deploymentinfo-proposal",
    "autoapprove-cleanroompolicy-proposal",
];

/// The states of a proposal (CCF's names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposalState {
    /// Collecting ballots.
    Open,
    /// Accepted and applied.
    Accepted,
    /// Withdrawn by its proposer.
    Withdrawn,
    /// Rejected by resolve.
    Rejected,
    /// Accepted, but an action's apply failed: nothing applied.
    Failed,
    /// Dropped by CCF when the constitution changes (never produced here: no set_constitution).
    Dropped,
}

impl ProposalState {
    /// CCF's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ProposalState::Open => "Open",
            ProposalState::Accepted => "Accepted",
            ProposalState::Withdrawn => "Withdrawn",
            ProposalState::Rejected => "Rejected",
            ProposalState::Failed => "Failed",
            ProposalState::Dropped => "Dropped",
        }
    }

    /// Parses CCF's spelling.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "Open" => ProposalState::Open,
            "Accepted" => ProposalState::Accepted,
            "Withdrawn" => ProposalState::Withdrawn,
            "Rejected" => ProposalState::Rejected,
            "Failed" => ProposalState::Failed,
            "Dropped" => ProposalState::Dropped,
            _ => return None,
        })
    }
}

/// One action of a proposal.
#[derive(Clone, Debug, PartialEq)]
pub struct Action {
    /// The action name.
    pub name: String,
    /// Its arguments.
    pub args: Value,
}

/// A proposal body `{"actions":[{"name","args"}]}`.
#[derive(Clone, Debug, PartialEq)]
pub struct Proposal {
    /// The actions, applied in order.
    pub actions: Vec<Action>,
}

impl Proposal {
    /// Parses a proposal payload.
    pub fn parse(payload: &[u8]) -> Result<Self, String> {
        let value: Value =
            serde_json::from_slice(payload).map_err(|e| format!("proposal is not JSON: {e}"))?;
        Self::from_value(&value)
    }

    /// Reads a proposal from its JSON value.
    pub fn from_value(value: &Value) -> Result<Self, String> {
        let actions = value
            .get("actions")
            .and_then(Value::as_array)
            .ok_or("proposal has no \"actions\" array")?;
        let mut out = Vec::with_capacity(actions.len());
        for (position, action) in actions.iter().enumerate() {
            let name = action
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("action at position {position} has no string \"name\""))?;
            let args = action
                .get("args")
                .cloned()
                .unwrap_or(Value::Object(Map::new()));
            out.push(Action {
                name: name.to_owned(),
                args,
            });
        }
        Ok(Self { actions: out })
    }

    fn has(&self, name: &str) -> bool {
        self.actions.iter().any(|a| a.name == name)
    }
}

/// Runs every action's validation (CCF `validate`). The error is CCF's description: each failing
/// action as `"{name} at position {i} failed validation: {reason}"` or `"{name}: no such action"`,
/// joined by `", "`.
pub fn validate(tx: &Tx, proposal: &Proposal) -> Result<(), String> {
    let mut errors = Vec::new();
    for (position, action) in proposal.actions.iter().enumerate() {
        if !ACTIONS.contains(&action.name.as_str()) {
            errors.push(format!("{}: no such action", action.name));
        } else if let Err(reason) = validate_action(tx, action) {
            errors.push(format!(
                "{} at position {position} failed validation: {reason}",
                action.name
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join(", "))
    }
}

fn string_arg<'v>(args: &'v Value, name: &str) -> Result<&'v str, String> {
    args.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{name} must be a string"))
}

fn object_arg<'v>(args: &'v Value, name: &str) -> Result<&'v Map<String, Value>, String> {
    args.get(name)
        .and_then(Value::as_object)
        .ok_or_else(|| format!("{name} must be an object"))
}

fn require_accepted(tx: &Tx, contract_id: &str) -> Result<(), String> {
    if tx.contains(maps::ACCEPTED_CONTRACTS, contract_id) {
        Ok(())
    } else {
        Err(format!("Contract '{contract_id}' is not accepted"))
    }
}

fn validate_action(tx: &Tx, action: &Action) -> Result<(), String> {
    let args = &action.args;
    match action.name.as_str() {
        "set_contract" => {
            string_arg(args, "contractId")?;
            object_arg(args, "contract")?;
        }
        "set_deployment_spec" | "set_deployment_info" => {
            let id = string_arg(args, "contractId")?;
            let field = if action.name == "set_deployment_spec" {
                "spec"
            } else {
                "info"
            };
            let spec = object_arg(args, field)?;
            if !spec.contains_key("data") {
                return Err(format!("{field}.data is missing"));
            }
            require_accepted(tx, id)?;
        }
        "set_clean_room_policy" => {
            let id = string_arg(args, "contractId")?;
            validate_policy_change(args)?;
            require_accepted(tx, id)?;
        }
        "set_contract_runtime_options_enable_logging"
        | "set_contract_runtime_options_disable_logging"
        | "set_contract_runtime_options_enable_telemetry"
        | "set_contract_runtime_options_disable_telemetry" => {
            let id = string_arg(args, "contractId")?;
            require_accepted(tx, id)?;
        }
        "set_member_document" => {
            string_arg(args, "documentId")?;
            let document = object_arg(args, "document")?;
            if !document.get("contractId").is_some_and(Value::is_string) {
                return Err("document.contractId must be a string".into());
            }
            if !document.contains_key("data") {
                return Err("document.data is missing".into());
            }
        }
        "set_member" => {
            member_id_of_certificate(string_arg(args, "cert")?)?;
            if let Some(key) = args.get("encryption_pub_key").filter(|v| !v.is_null()) {
                let key = key.as_str().ok_or("encryption_pub_key must be a string")?;
                let block =
                    pem::parse(key).map_err(|e| format!("encryption_pub_key is not PEM: {e}"))?;
                if block.tag() != "PUBLIC KEY" && block.tag() != "RSA PUBLIC KEY" {
                    return Err(format!(
                        "encryption_pub_key is a {} PEM, not a public key",
                        block.tag()
                    ));
                }
            }
            if let Some(data) = args.get("member_data").filter(|v| !v.is_null())
                && !data.is_object()
            {
                return Err("member_data must be an object".into());
            }
            if let Some(role) = args.get("recovery_role").filter(|v| !v.is_null()) {
                let role = role.as_str().ok_or("recovery_role must be a string")?;
                if !["NonParticipant", "Participant", "Owner"].contains(&role) {
                    return Err(format!(
                        "recovery_role '{role}' is not NonParticipant, Participant or Owner"
                    ));
                }
            }
        }
        "remove_member" => {
            member_id_arg(args)?;
        }
        "set_member_data" => {
            let id = string_arg(args, "member_id")?;
            check_member_id(id)?;
            object_arg(args, "member_data")?;
        }
        "set_recovery_threshold" => {
            let threshold = args
                .get("recovery_threshold")
                .and_then(Value::as_u64)
                .ok_or("recovery_threshold must be an integer")?;
            if !(1..=254).contains(&threshold) {
                return Err(format!(
                    "recovery_threshold {threshold} must be between 1 and 254"
                ));
            }
        }
        "set_cgs_runtime_options" => {
            let option = string_arg(args, "option")?;
            if !CGS_RUNTIME_OPTIONS.contains(&option) {
                return Err(format!("Invalid option '{option}'"));
            }
            let status = string_arg(args, "status")?;
            if status != "enabled" && status != "disabled" {
                return Err(format!("Invalid status '{status}'"));
            }
        }
        other => return Err(format!("{other}: no such action")),
    }
    Ok(())
}

/// Validates a policy change `{type: add|remove, policyType?, claims}` (the `set_clean_room_policy`
/// action and the delegate policies): the type, the policy type and every claim name in its
/// allow-list, values scalars or arrays of scalars.
pub fn validate_policy_change(args: &Value) -> Result<(), String> {
    let kind = string_arg(args, "type")?;
    if kind != "add" && kind != "remove" {
        return Err(format!(
            "Clean Room Policy with type '{kind}' is not supported"
        ));
    }
    let policy_type = match args.get("policyType") {
        None | Some(Value::Null) => "snp-caci",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err("policyType must be a string".into()),
    };
    if !["snp-caci", "jwt", "snp-cvm"].contains(&policy_type) {
        return Err(format!("Policy type '{policy_type}' is not supported"));
    }
    let claims = object_arg(args, "claims")?;
    for (claim, value) in claims {
        let allowed = match policy_type {
            "snp-caci" => SNP_CACI_CLAIMS.contains(&claim.as_str()),
            "jwt" => JWT_CLAIMS.contains(&claim.as_str()),
            "snp-cvm" => claim
                .strip_prefix("pcr")
                .and_then(|n| n.parse::<u8>().ok())
                .is_some_and(|n| n <= 23 && claim == &format!("pcr{n}")),
            other => return Err(format!("Policy type '{other}' is not supported")),
        };
        if !allowed {
            return Err(format!("The claim '{claim}' is not an allowed claim"));
        }
        let scalar = |v: &Value| v.is_string() || v.is_number() || v.is_boolean();
        let ok = match value {
            Value::Array(items) => items.iter().all(scalar),
            v => scalar(v),
        };
        if !ok {
            return Err(format!(
                "The claim '{claim}' must be a string, number, boolean or an array of them"
            ));
        }
    }
    Ok(())
}

fn check_member_id(id: &str) -> Result<(), String> {
    if id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "'{id}' is not a member id (64 lower-case hex digits)"
        ))
    }
}

/// `remove_member` takes `member_id`, or (as CCF's default constitution) the member's `cert`.
fn member_id_arg(args: &Value) -> Result<String, String> {
    if let Some(id) = args.get("member_id").and_then(Value::as_str) {
        check_member_id(id)?;
        return Ok(id.to_owned());
    }
    if let Some(cert) = args.get("cert").and_then(Value::as_str) {
        return member_id_of_certificate(cert);
    }
    Err("member_id must be a string".into())
}

/// A member's id: lower-case hex SHA-256 of the DER of its certificate (the first PEM block).
pub fn member_id_of_certificate(pem_text: &str) -> Result<String, String> {
    let block = pem::parse(pem_text).map_err(|e| format!("cert is not PEM: {e}"))?;
    if block.tag() != "CERTIFICATE" {
        return Err(format!("cert is a {} PEM, not a CERTIFICATE", block.tag()));
    }
    x509_parser::parse_x509_certificate(block.contents())
        .map_err(|e| format!("cert is not an X.509 certificate: {e}"))?;
    Ok(hex(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        block.contents(),
    )
    .as_ref()))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn truthy(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

/// Whether a member's `member_data` makes it an operator (its votes do not count).
pub fn is_operator(member_data: &Value) -> bool {
    let roles = member_data.get("cgsRoles");
    truthy(member_data.get("isOperator"))
        || truthy(member_data.get("isRecoveryOperator"))
        || truthy(roles.and_then(|r| r.get("cgsOperator")))
        || truthy(roles.and_then(|r| r.get("contractOperator")))
}

fn member_data(tx: &Tx, member_id: &str) -> Value {
    tx.get(maps::MEMBER_INFO, member_id)
        .and_then(|info| info.get("member_data"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// The actions of every Open proposal, by proposal id.
pub fn open_proposals(tx: &Tx) -> Vec<(String, Proposal)> {
    let mut out = Vec::new();
    for (id, info) in tx.entries(maps::PROPOSALS_INFO) {
        if info.get("state").and_then(Value::as_str) != Some("Open") {
            continue;
        }
        let Some(body) = tx.get(maps::PROPOSALS, &id).and_then(Value::as_str) else {
            continue;
        };
        if let Ok(proposal) = Proposal::parse(body.as_bytes()) {
            out.push((id, proposal));
        }
    }
    out
}

/// The ids of the Open proposals holding an action `action` whose `field` argument is `id`.
pub fn open_proposal_ids_with(tx: &Tx, action: &str, field: &str, id: &str) -> Vec<String> {
    open_proposals(tx)
        .into_iter()
        .filter(|(_, p)| {
            p.actions
                .iter()
                .any(|a| a.name == action && a.args.get(field).and_then(Value::as_str) == Some(id))
        })
        .map(|(pid, _)| pid)
        .collect()
}

fn count_open_with(open: &[(String, Proposal)], action: &str, field: &str, id: &str) -> usize {
    open.iter()
        .filter(|(_, p)| {
            p.actions
                .iter()
                .any(|a| a.name == action && a.args.get(field).and_then(Value::as_str) == Some(id))
        })
        .count()
}

/// Decides a proposal's state after a create or a ballot (reference §2, `resolve.js`). `votes` are
/// the members' evaluated ballots. The proposal is expected to be stored as Open already (it
/// counts itself among the open proposals, as in CCF).
pub fn resolve(
    tx: &Tx,
    proposal: &Proposal,
    proposer_id: &str,
    votes: &[(String, bool)],
) -> ProposalState {
    use ProposalState::*;
    // 1. operatorResolve: none of CCF's operator actions (node management) exist here.
    // 2. Veto.
    if proposal
        .actions
        .iter()
        .any(|a| VETO_ACTIONS.contains(&a.name.as_str()))
        && votes.iter().any(|(_, v)| !v)
    {
        return Rejected;
    }
    let has_contract = proposal.has("set_contract");
    // Parsing every open proposal is only needed for the set_contract / set_member_document rules.
    let open = if has_contract || proposal.has("set_member_document") {
        open_proposals(tx)
    } else {
        Vec::new()
    };
    // 3. set_contract alone, distinct, not accepted, not in another open proposal.
    if has_contract {
        if proposal.actions.iter().any(|a| a.name != "set_contract") {
            return Rejected;
        }
        let ids: Vec<&str> = proposal
            .actions
            .iter()
            .map(|a| {
                a.args
                    .get("contractId")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            })
            .collect();
        let mut distinct = ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != ids.len() {
            return Rejected;
        }
        for id in ids {
            if tx.contains(maps::ACCEPTED_CONTRACTS, id)
                || count_open_with(&open, "set_contract", "contractId", id) > 1
            {
                return Rejected;
            }
        }
    }
    // 4. set_member_document: not accepted, not in another open proposal.
    for action in proposal
        .actions
        .iter()
        .filter(|a| a.name == "set_member_document")
    {
        let id = action
            .args
            .get("documentId")
            .and_then(Value::as_str)
            .unwrap_or("");
        if tx.contains(maps::ACCEPTED_DOCUMENTS, id)
            || count_open_with(&open, "set_member_document", "documentId", id) > 1
        {
            return Rejected;
        }
    }
    // 5. Votes that count: true votes of non-operators.
    let member_votes = votes
        .iter()
        .filter(|(m, v)| *v && !is_operator(&member_data(tx, m)))
        .count();
    // 6. Auto-accepted actions.
    if proposal
        .actions
        .iter()
        .all(|a| AUTO_ACCEPT_ACTIONS.contains(&a.name.as_str()))
    {
        return Accepted;
    }
    // 7. Unanimity of the active non-operator members.
    let (mut active, mut accepted) = (0usize, 0usize);
    for (_, info) in tx.entries(maps::MEMBER_INFO) {
        if is_operator(info.get("member_data").unwrap_or(&Value::Null)) {
            continue;
        }
        match info.get("status").and_then(Value::as_str) {
            Some("Active") => active += 1,
            Some("Accepted") => accepted += 1,
            _ => {}
        }
    }
    let unanimous = member_votes == active && (!has_contract || accepted == 0);
    if unanimous {
        return Accepted;
    }
    // 8. Operator auto-approval behind the CGS runtime options.
    let proposer = member_data(tx, proposer_id);
    let roles = proposer.get("cgsRoles");
    if truthy(roles.and_then(|r| r.get("contractOperator"))) && !proposal.actions.is_empty() {
        let auto = proposal.actions.iter().all(|a| {
            let option = match a.name.as_str() {
                "set_deployment_spec" => "autoapprove-deploymentspec-proposal",
                "set_deployment_info" => "autoapprove-deploymentinfo-proposal",
                "set_clean_room_policy" => "autoapprove-cleanroompolicy-proposal",
                _ => return false,
            };
            cgs_option_enabled(tx, option)
        });
        if auto {
            return Accepted;
        }
    }
    Open
}

/// Whether a CGS-wide runtime option is enabled.
pub fn cgs_option_enabled(tx: &Tx, option: &str) -> bool {
    tx.get(maps::CGS_RUNTIME_OPTIONS, option)
        .and_then(|v| v.get("status"))
        .and_then(Value::as_str)
        == Some("enabled")
}

/// Applies an accepted proposal's actions in order. On error the caller rolls the transaction back
/// to before the apply and marks the proposal Failed.
pub fn apply(
    tx: &mut Tx,
    proposal: &Proposal,
    proposal_id: &str,
    final_votes: &BTreeMap<String, bool>,
) -> Result<(), String> {
    for (position, action) in proposal.actions.iter().enumerate() {
        apply_action(tx, action, proposal_id, final_votes).map_err(|e| {
            format!(
                "{} at position {position} failed to apply: {e}",
                action.name
            )
        })?;
    }
    Ok(())
}

fn votes_json(final_votes: &BTreeMap<String, bool>) -> Value {
    Value::Object(
        final_votes
            .iter()
            .map(|(k, v)| (k.clone(), Value::Bool(*v)))
            .collect(),
    )
}

fn apply_action(
    tx: &mut Tx,
    action: &Action,
    proposal_id: &str,
    final_votes: &BTreeMap<String, bool>,
) -> Result<(), String> {
    let args = &action.args;
    match action.name.as_str() {
        "set_contract" => {
            let id = string_arg(args, "contractId")?;
            let data = args["contract"].get("data").cloned().unwrap_or(Value::Null);
            tx.put(
                maps::ACCEPTED_CONTRACTS,
                id,
                json!({"data": data, "proposalId": proposal_id, "finalVotes": votes_json(final_votes)}),
            );
        }
        "set_deployment_spec" => {
            let id = string_arg(args, "contractId")?;
            tx.put(
                maps::DEPLOYMENT_SPECS,
                id,
                json!({"data": args["spec"]["data"].clone()}),
            );
        }
        "set_deployment_info" => {
            let id = string_arg(args, "contractId")?;
            tx.put(
                maps::DEPLOYMENT_INFO,
                id,
                json!({"data": args["info"]["data"].clone()}),
            );
        }
        "set_clean_room_policy" => apply_clean_room_policy(tx, args)?,
        "set_contract_runtime_options_enable_logging"
        | "set_contract_runtime_options_disable_logging"
        | "set_contract_runtime_options_enable_telemetry"
        | "set_contract_runtime_options_disable_telemetry" => {
            let id = string_arg(args, "contractId")?;
            let map = if action.name.ends_with("logging") {
                maps::CONTRACTS_LOGGING_STATUS
            } else {
                maps::CONTRACTS_TELEMETRY_STATUS
            };
            let status = if action.name.contains("_enable_") {
                "enabled"
            } else {
                "disabled"
            };
            tx.put(map, id, json!({"status": status}));
        }
        "set_member_document" => {
            let id = string_arg(args, "documentId")?;
            let document = &args["document"];
            tx.put(
                maps::ACCEPTED_DOCUMENTS,
                id,
                json!({
                    "contractId": document["contractId"].clone(),
                    "data": document["data"].clone(),
                    "proposalId": proposal_id,
                    "finalVotes": votes_json(final_votes),
                }),
            );
        }
        "set_member" => {
            let cert = string_arg(args, "cert")?;
            let member_data = args.get("member_data").filter(|v| !v.is_null()).cloned();
            let key = args.get("encryption_pub_key").and_then(Value::as_str);
            let role = args.get("recovery_role").and_then(Value::as_str);
            add_member(tx, cert, key, member_data, role, "Accepted")?;
        }
        "remove_member" => {
            let id = member_id_arg(args)?;
            for map in [
                maps::MEMBER_CERTS,
                maps::MEMBER_INFO,
                maps::MEMBER_ENCRYPTION_KEYS,
                maps::MEMBER_ACKS,
            ] {
                tx.remove(map, &id);
            }
        }
        "set_member_data" => {
            let id = string_arg(args, "member_id")?;
            let mut info = tx
                .get(maps::MEMBER_INFO, id)
                .cloned()
                .ok_or_else(|| format!("Member {id} does not exist"))?;
            info["member_data"] = args["member_data"].clone();
            tx.put(maps::MEMBER_INFO, id, info);
        }
        "set_recovery_threshold" => {
            let threshold = args["recovery_threshold"].as_u64().unwrap_or(0);
            // With no recovery member at all (members without encryption keys) only 1 is allowed.
            let recovery_members = recovery_member_count(tx);
            if threshold as usize > recovery_members.max(1) {
                return Err(format!(
                    "Recovery threshold {threshold} cannot be greater than the number of recovery members ({recovery_members})"
                ));
            }
            tx.put(
                maps::SERVICE_CONFIG,
                "0",
                json!({"recovery_threshold": threshold}),
            );
        }
        "set_cgs_runtime_options" => {
            let option = string_arg(args, "option")?;
            let status = string_arg(args, "status")?;
            tx.put(maps::CGS_RUNTIME_OPTIONS, option, json!({"status": status}));
        }
        other => return Err(format!("{other}: no such action")),
    }
    Ok(())
}

/// Members that hold recovery shares: those with an encryption key that are not NonParticipant.
pub fn recovery_member_count(tx: &Tx) -> usize {
    tx.entries(maps::MEMBER_INFO)
        .into_iter()
        .filter(|(id, info)| {
            tx.contains(maps::MEMBER_ENCRYPTION_KEYS, id)
                && info.get("recovery_role").and_then(Value::as_str) != Some("NonParticipant")
        })
        .count()
}

/// Registers a member (`set_member`, and the bootstrap of the initial members). A member that
/// already exists is left unchanged (as CCF does). Returns the member id.
pub fn add_member(
    tx: &mut Tx,
    cert_pem: &str,
    encryption_pub_key: Option<&str>,
    member_data: Option<Value>,
    recovery_role: Option<&str>,
    status: &str,
) -> Result<String, String> {
    let id = member_id_of_certificate(cert_pem)?;
    if tx.contains(maps::MEMBER_CERTS, &id) {
        return Ok(id);
    }
    tx.put(maps::MEMBER_CERTS, &id, Value::String(cert_pem.to_owned()));
    let mut info = json!({"status": status});
    if let Some(data) = member_data {
        info["member_data"] = data;
    }
    let role = match (recovery_role, encryption_pub_key) {
        (Some(role), _) => role,
        (None, Some(_)) => "Participant",
        (None, None) => "NonParticipant",
    };
    info["recovery_role"] = Value::String(role.to_owned());
    tx.put(maps::MEMBER_INFO, &id, info);
    if let Some(key) = encryption_pub_key {
        tx.put(
            maps::MEMBER_ENCRYPTION_KEYS,
            &id,
            Value::String(key.to_owned()),
        );
    }
    Ok(id)
}

fn apply_clean_room_policy(tx: &mut Tx, args: &Value) -> Result<(), String> {
    let id = string_arg(args, "contractId")?;
    apply_policy_change(tx, &maps::clean_room_policy(id), args)
}

/// Applies a policy change `{type: add|remove, claims}` to a policy map (claim → allowed values).
pub fn apply_policy_change(tx: &mut Tx, map: &str, args: &Value) -> Result<(), String> {
    let map = map.to_owned();
    let kind = string_arg(args, "type")?;
    for (claim, value) in object_arg(args, "claims")? {
        let values: Vec<Value> = match value {
            Value::Array(items) => items.clone(),
            v => vec![v.clone()],
        };
        let existing: Vec<Value> = tx
            .get(&map, claim)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        match kind {
            "add" => {
                if value.is_boolean() {
                    tx.put(&map, claim, Value::Array(values));
                } else {
                    let mut merged = existing;
                    for v in values {
                        if !merged.contains(&v) {
                            merged.push(v);
                        }
                    }
                    tx.put(&map, claim, Value::Array(merged));
                }
            }
            "remove" => {
                if !tx.contains(&map, claim) {
                    return Err(format!(
                        "The claim '{claim}' is not in the clean room policy"
                    ));
                }
                if value.is_boolean() {
                    tx.remove(&map, claim);
                    continue;
                }
                let mut left = existing;
                for v in values {
                    let at = left.iter().position(|x| x == &v).ok_or_else(|| {
                        format!("The value {v} of claim '{claim}' is not in the clean room policy")
                    })?;
                    left.remove(at);
                }
                if left.is_empty() {
                    tx.remove(&map, claim);
                } else {
                    tx.put(&map, claim, Value::Array(left));
                }
            }
            other => {
                return Err(format!(
                    "Clean Room Policy with type '{other}' is not supported"
                ));
            }
        }
    }
    Ok(())
}

/// The canonical accept ballot the reference client sends.
pub const BALLOT_ACCEPT: &str = "export function vote (proposal, proposerId) { return true }";
/// The canonical reject ballot the reference client sends.
pub const BALLOT_REJECT: &str = "export function vote (proposal, proposerId) { return false }";

fn ballot_tokens(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() || c == '_' || c == '$' {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            tokens.push(std::mem::take(&mut word));
        }
        if !c.is_whitespace() {
            tokens.push(c.to_string());
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    tokens
}

/// Evaluates a ballot: `Ok(true)` / `Ok(false)` for the two canonical ballots (any whitespace, an
/// optional `;` after the return value), an error naming the departure for anything else.
pub fn parse_ballot(ballot: &str) -> Result<bool, String> {
    let mut tokens = ballot_tokens(ballot);
    if tokens.len() == 13 && tokens[11] == ";" {
        tokens.remove(11);
    }
    for (canonical, vote) in [(BALLOT_ACCEPT, true), (BALLOT_REJECT, false)] {
        if tokens == ballot_tokens(canonical) {
            return Ok(vote);
        }
    }
    Err(format!(
        "Only the canonical ballots '{BALLOT_ACCEPT}' and '{BALLOT_REJECT}' are supported: this service does not run JavaScript"
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kv::Store;

    /// A self-signed test certificate (rcgen, P-384) and its PEM.
    pub(crate) fn test_cert(name: &str) -> String {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    fn with_members(statuses: &[(&str, Value)]) -> (Store, Vec<String>) {
        let mut store = Store::default();
        let mut tx = store.transaction();
        let mut ids = Vec::new();
        for (i, (status, data)) in statuses.iter().enumerate() {
            let cert = test_cert(&format!("m{i}"));
            let data = if data.is_null() {
                None
            } else {
                Some(data.clone())
            };
            ids.push(add_member(&mut tx, &cert, None, data, None, status).unwrap());
        }
        let ws = tx.into_write_set();
        store.commit(&ws);
        (store, ids)
    }

    fn action(name: &str, args: Value) -> Proposal {
        Proposal {
            actions: vec![Action {
                name: name.into(),
                args,
            }],
        }
    }

    fn store_open(tx: &mut Tx, id: &str, proposal: &Value) {
        tx.put(maps::PROPOSALS, id, Value::String(proposal.to_string()));
        tx.put(
            maps::PROPOSALS_INFO,
            id,
            json!({"state": "Open", "proposer_id": "x", "ballots": {}}),
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// resolve against the reference's rules written as a table: members (Active or Accepted,
        /// operator or not) and the Active members' votes, for a veto action, a non-veto action,
        /// set_contract and an auto-accepted action.
        #[test]
        fn resolve_matches_the_rules(
            members in proptest::collection::vec((proptest::bool::ANY, proptest::bool::ANY), 1..5),
            votes in proptest::collection::vec(proptest::option::of(proptest::bool::ANY), 5),
            kind in 0usize..4,
        ) {
            let statuses: Vec<(&str, Value)> = members
                .iter()
                .map(|&(active, operator)| {
                    let data = if operator { json!({"isOperator": true}) } else { Value::Null };
                    (if active { "Active" } else { "Accepted" }, data)
                })
                .collect();
            let (store, ids) = with_members(&statuses);
            let tx = store.transaction();
            let cast: Vec<(String, bool)> = ids
                .iter()
                .zip(&members)
                .zip(&votes)
                .filter(|((_, (active, _)), _)| *active)
                .filter_map(|((id, _), v)| v.map(|v| (id.clone(), v)))
                .collect();
            let (name, args) = [
                ("set_clean_room_policy", json!({"contractId": "c"})),
                ("set_recovery_threshold", json!({"recovery_threshold": 1})),
                ("set_contract", json!({"contractId": "c", "contract": {}})),
                ("set_contract_runtime_options_disable_logging", json!({"contractId": "c"})),
            ][kind].clone();
            let veto = kind == 0 || kind == 2;
            let counted = cast.iter().filter(|(id, v)| *v && !members[ids.iter().position(|i| i == id).unwrap()].1).count();
            let active = members.iter().filter(|(a, op)| *a && !op).count();
            let accepted_only = members.iter().filter(|(a, op)| !a && !op).count();
            let expected = if veto && cast.iter().any(|(_, v)| !v) {
                ProposalState::Rejected
            } else if kind == 3 || (counted == active && (kind != 2 || accepted_only == 0)) {
                ProposalState::Accepted
            } else {
                ProposalState::Open
            };
            proptest::prop_assert_eq!(resolve(&tx, &action(name, args), &ids[0], &cast), expected);
        }
    }

    #[test]
    fn canonical_ballots_only() {
        assert_eq!(parse_ballot(BALLOT_ACCEPT), Ok(true));
        assert_eq!(parse_ballot(BALLOT_REJECT), Ok(false));
        assert_eq!(
            parse_ballot("export function vote(proposal,proposerId){\n  return true;\n}"),
            Ok(true)
        );
        for other in [
            "export function vote (proposal, proposerId) { return 1 }",
            "export function vote (p, proposerId) { return true }",
            "export function vote (proposal, proposerId) { return proposal.x }",
            "",
        ] {
            let e = parse_ballot(other).unwrap_err();
            assert!(e.contains("canonical ballots"), "{e}");
        }
    }

    #[test]
    fn unknown_action_and_bad_arguments_fail_validation() {
        let store = Store::default();
        let tx = store.transaction();
        let e = validate(&tx, &action("set_js_app", json!({}))).unwrap_err();
        assert_eq!(e, "set_js_app: no such action");
        let e = validate(&tx, &action("set_contract", json!({"contractId": 3}))).unwrap_err();
        assert!(
            e.starts_with(
                "set_contract at position 0 failed validation: contractId must be a string"
            ),
            "{e}"
        );
        let e = validate(
            &tx,
            &action(
                "set_deployment_spec",
                json!({"contractId": "c", "spec": {"data": {}}}),
            ),
        )
        .unwrap_err();
        assert!(e.contains("is not accepted"), "{e}");
        let e = validate(
            &tx,
            &action("set_recovery_threshold", json!({"recovery_threshold": 0})),
        )
        .unwrap_err();
        assert!(e.contains("between 1 and 254"), "{e}");
        assert!(
            validate(
                &tx,
                &action(
                    "set_cgs_runtime_options",
                    json!({"option": "autoapprove-x", "status": "enabled"})
                )
            )
            .is_err()
        );
        assert!(validate(&tx, &action("set_member", json!({"cert": "not pem"}))).is_err());
    }

    #[test]
    fn clean_room_policy_validation_uses_the_allow_lists() {
        let mut store = Store::default();
        let mut tx = store.transaction();
        tx.put(maps::ACCEPTED_CONTRACTS, "c", json!({"data": "x"}));
        store.commit(&tx.into_write_set());
        let tx = store.transaction();
        let policy = |kind: &str, policy_type: Value, claims: Value| {
            action(
                "set_clean_room_policy",
                json!({"contractId": "c", "type": kind, "policyType": policy_type, "claims": claims}),
            )
        };
        assert!(
            validate(
                &tx,
                &policy(
                    "add",
                    Value::Null,
                    json!({"x-ms-sevsnpvm-hostdata": ["ab"], "x-ms-sevsnpvm-is-debuggable": false})
                )
            )
            .is_ok()
        );
        let e = validate(&tx, &policy("add", Value::Null, json!({"x-ms-foo": "a"}))).unwrap_err();
        assert!(
            e.contains("The claim 'x-ms-foo' is not an allowed claim"),
            "{e}"
        );
        let e = validate(&tx, &policy("replace", Value::Null, json!({}))).unwrap_err();
        assert!(
            e.contains("Clean Room Policy with type 'replace' is not supported"),
            "{e}"
        );
        assert!(
            validate(
                &tx,
                &policy("add", json!("jwt"), json!({"oid": "o", "tid": "t"}))
            )
            .is_ok()
        );
        assert!(validate(&tx, &policy("add", json!("jwt"), json!({"x-ms-ver": "1"}))).is_err());
        assert!(
            validate(
                &tx,
                &policy("add", json!("snp-cvm"), json!({"pcr23": "00"}))
            )
            .is_ok()
        );
        assert!(
            validate(
                &tx,
                &policy("add", json!("snp-cvm"), json!({"pcr24": "00"}))
            )
            .is_err()
        );
        assert!(validate(&tx, &policy("add", json!("tdx"), json!({}))).is_err());
        let mut other = policy("add", Value::Null, json!({}));
        other.actions[0].args["contractId"] = json!("not-accepted");
        assert!(validate(&tx, &other).is_err());
    }

    #[test]
    fn clean_room_policy_add_and_remove() {
        let mut store = Store::default();
        let mut tx = store.transaction();
        let add = json!({"contractId": "c", "type": "add", "claims": {"x-ms-sevsnpvm-hostdata": ["a", "b"], "x-ms-sevsnpvm-is-debuggable": false}});
        apply_clean_room_policy(&mut tx, &add).unwrap();
        apply_clean_room_policy(&mut tx, &json!({"contractId": "c", "type": "add", "claims": {"x-ms-sevsnpvm-hostdata": "a", "x-ms-sevsnpvm-is-debuggable": true}})).unwrap();
        let map = maps::clean_room_policy("c");
        assert_eq!(
            tx.get(&map, "x-ms-sevsnpvm-hostdata"),
            Some(&json!(["a", "b"]))
        );
        assert_eq!(
            tx.get(&map, "x-ms-sevsnpvm-is-debuggable"),
            Some(&json!([true]))
        );
        let remove = |claims: Value| json!({"contractId": "c", "type": "remove", "claims": claims});
        assert!(
            apply_clean_room_policy(&mut tx, &remove(json!({"x-ms-sevsnpvm-hostdata": "z"})))
                .is_err()
        );
        apply_clean_room_policy(
            &mut tx,
            &remove(
                json!({"x-ms-sevsnpvm-hostdata": ["a", "b"], "x-ms-sevsnpvm-is-debuggable": true}),
            ),
        )
        .unwrap();
        assert!(tx.entries(&map).is_empty());
        store.commit(&tx.into_write_set());
    }

    #[test]
    fn veto_actions_are_rejected_by_one_vote_others_stay_open() {
        let (store, ids) = with_members(&[("Active", Value::Null), ("Active", Value::Null)]);
        let tx = store.transaction();
        for name in VETO_ACTIONS {
            let p = action(name, json!({"contractId": "c", "documentId": "d"}));
            let state = resolve(
                &tx,
                &p,
                &ids[0],
                &[(ids[0].clone(), true), (ids[1].clone(), false)],
            );
            assert_eq!(state, ProposalState::Rejected, "{name}");
        }
        let p = action("set_recovery_threshold", json!({"recovery_threshold": 1}));
        assert_eq!(
            resolve(
                &tx,
                &p,
                &ids[0],
                &[(ids[0].clone(), false), (ids[1].clone(), false)]
            ),
            ProposalState::Open
        );
        assert_eq!(
            resolve(&tx, &p, &ids[0], &[(ids[0].clone(), true)]),
            ProposalState::Open
        );
        assert_eq!(
            resolve(
                &tx,
                &p,
                &ids[0],
                &[(ids[0].clone(), true), (ids[1].clone(), true)]
            ),
            ProposalState::Accepted
        );
    }

    #[test]
    fn disabling_logging_or_telemetry_needs_no_votes() {
        let (store, ids) = with_members(&[("Active", Value::Null), ("Active", Value::Null)]);
        let tx = store.transaction();
        for name in AUTO_ACCEPT_ACTIONS {
            assert_eq!(
                resolve(&tx, &action(name, json!({"contractId": "c"})), &ids[0], &[]),
                ProposalState::Accepted
            );
        }
        let enable = action(
            "set_contract_runtime_options_enable_logging",
            json!({"contractId": "c"}),
        );
        assert_eq!(
            resolve(&tx, &enable, &ids[0], &[(ids[0].clone(), true)]),
            ProposalState::Open
        );
    }

    #[test]
    fn operators_do_not_count() {
        let op = json!({"cgsRoles": {"contractOperator": "true"}});
        let (store, ids) = with_members(&[
            ("Active", Value::Null),
            ("Active", op),
            ("Active", json!({"isOperator": true})),
        ]);
        let tx = store.transaction();
        let p = action("set_recovery_threshold", json!({"recovery_threshold": 1}));
        assert_eq!(
            resolve(&tx, &p, &ids[0], &[(ids[0].clone(), true)]),
            ProposalState::Accepted
        );
        assert_eq!(
            resolve(
                &tx,
                &p,
                &ids[1],
                &[(ids[1].clone(), true), (ids[2].clone(), true)]
            ),
            ProposalState::Open
        );
    }

    #[test]
    fn contract_operator_auto_approval_needs_the_option() {
        let op = json!({"cgsRoles": {"contractOperator": "true"}});
        let (mut store, ids) = with_members(&[("Active", Value::Null), ("Active", op)]);
        let p = action(
            "set_deployment_spec",
            json!({"contractId": "c", "spec": {"data": {}}}),
        );
        assert_eq!(
            resolve(&store.transaction(), &p, &ids[1], &[]),
            ProposalState::Open
        );
        let mut tx = store.transaction();
        tx.put(
            maps::CGS_RUNTIME_OPTIONS,
            "autoapprove-deploymentspec-proposal",
            json!({"status": "enabled"}),
        );
        store.commit(&tx.into_write_set());
        assert_eq!(
            resolve(&store.transaction(), &p, &ids[1], &[]),
            ProposalState::Accepted
        );
        assert_eq!(
            resolve(&store.transaction(), &p, &ids[0], &[]),
            ProposalState::Open
        );
    }

    #[test]
    fn set_contract_rules() {
        let (store, ids) = with_members(&[("Active", Value::Null)]);
        let me = &ids[0];
        let yes = [(me.clone(), true)];
        let mut tx = store.transaction();
        let contract = |id: &str| json!({"name": "set_contract", "args": {"contractId": id, "contract": {"data": "d"}}});
        // Alone: accepted by the single member's vote.
        let one = json!({"actions": [contract("c1")]});
        store_open(&mut tx, "p1", &one);
        assert_eq!(
            resolve(&tx, &Proposal::from_value(&one).unwrap(), me, &yes),
            ProposalState::Accepted
        );
        // Mixed with another action → Rejected.
        let mixed = json!({"actions": [contract("c2"), {"name": "set_recovery_threshold", "args": {"recovery_threshold": 1}}]});
        assert_eq!(
            resolve(&tx, &Proposal::from_value(&mixed).unwrap(), me, &yes),
            ProposalState::Rejected
        );
        // Duplicate ids → Rejected.
        let dup = json!({"actions": [contract("c3"), contract("c3")]});
        assert_eq!(
            resolve(&tx, &Proposal::from_value(&dup).unwrap(), me, &yes),
            ProposalState::Rejected
        );
        // A second open proposal for c1 → Rejected (both count as open).
        store_open(&mut tx, "p2", &one);
        assert_eq!(
            resolve(&tx, &Proposal::from_value(&one).unwrap(), me, &[]),
            ProposalState::Rejected
        );
        // Already accepted → Rejected.
        tx.put(maps::ACCEPTED_CONTRACTS, "c9", json!({}));
        let nine = json!({"actions": [contract("c9")]});
        assert_eq!(
            resolve(&tx, &Proposal::from_value(&nine).unwrap(), me, &yes),
            ProposalState::Rejected
        );
    }

    #[test]
    fn set_contract_waits_while_a_member_is_accepted_but_not_active() {
        let (store, ids) = with_members(&[("Active", Value::Null), ("Accepted", Value::Null)]);
        let tx = store.transaction();
        let p = action("set_contract", json!({"contractId": "c", "contract": {}}));
        assert_eq!(
            resolve(&tx, &p, &ids[0], &[(ids[0].clone(), true)]),
            ProposalState::Open
        );
        let q = action("set_recovery_threshold", json!({"recovery_threshold": 1}));
        assert_eq!(
            resolve(&tx, &q, &ids[0], &[(ids[0].clone(), true)]),
            ProposalState::Accepted
        );
    }

    #[test]
    fn member_document_rules() {
        let (store, ids) = with_members(&[("Active", Value::Null)]);
        let mut tx = store.transaction();
        let doc = json!({"actions": [{"name": "set_member_document", "args": {"documentId": "d", "document": {"contractId": "c", "data": 1}}}]});
        let p = Proposal::from_value(&doc).unwrap();
        let yes = [(ids[0].clone(), true)];
        store_open(&mut tx, "p1", &doc);
        assert_eq!(resolve(&tx, &p, &ids[0], &yes), ProposalState::Accepted);
        store_open(&mut tx, "p2", &doc);
        assert_eq!(resolve(&tx, &p, &ids[0], &yes), ProposalState::Rejected);
        tx.remove(maps::PROPOSALS_INFO, "p2");
        tx.put(maps::ACCEPTED_DOCUMENTS, "d", json!({}));
        assert_eq!(resolve(&tx, &p, &ids[0], &yes), ProposalState::Rejected);
    }

    #[test]
    fn apply_writes_the_reference_records() {
        let (mut store, ids) = with_members(&[("Active", Value::Null)]);
        let mut tx = store.transaction();
        let votes: BTreeMap<String, bool> = [(ids[0].clone(), true)].into();
        apply(
            &mut tx,
            &action(
                "set_contract",
                json!({"contractId": "c", "contract": {"data": "spec", "version": "1.1"}}),
            ),
            "pid",
            &votes,
        )
        .unwrap();
        assert_eq!(
            tx.get(maps::ACCEPTED_CONTRACTS, "c"),
            Some(
                &json!({"data": "spec", "proposalId": "pid", "finalVotes": {ids[0].clone(): true}})
            )
        );
        apply(
            &mut tx,
            &action(
                "set_contract_runtime_options_enable_logging",
                json!({"contractId": "c"}),
            ),
            "p",
            &votes,
        )
        .unwrap();
        assert_eq!(
            tx.get(maps::CONTRACTS_LOGGING_STATUS, "c"),
            Some(&json!({"status": "enabled"}))
        );
        apply(
            &mut tx,
            &action(
                "set_contract_runtime_options_disable_telemetry",
                json!({"contractId": "c"}),
            ),
            "p",
            &votes,
        )
        .unwrap();
        assert_eq!(
            tx.get(maps::CONTRACTS_TELEMETRY_STATUS, "c"),
            Some(&json!({"status": "disabled"}))
        );
        let e = apply(
            &mut tx,
            &action("set_recovery_threshold", json!({"recovery_threshold": 2})),
            "p",
            &votes,
        )
        .unwrap_err();
        assert!(
            e.contains("cannot be greater than the number of recovery members (0)"),
            "{e}"
        );
        apply(
            &mut tx,
            &action("set_recovery_threshold", json!({"recovery_threshold": 1})),
            "p",
            &votes,
        )
        .unwrap();
        let e = apply(
            &mut tx,
            &action(
                "set_member_data",
                json!({"member_id": "ab".repeat(32), "member_data": {}}),
            ),
            "p",
            &votes,
        )
        .unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
        let cert = test_cert("new");
        apply(
            &mut tx,
            &action(
                "set_member",
                json!({"cert": cert, "member_data": {"identifier": "n"}}),
            ),
            "p",
            &votes,
        )
        .unwrap();
        let new_id = member_id_of_certificate(&cert).unwrap();
        assert_eq!(
            tx.get(maps::MEMBER_INFO, &new_id).unwrap()["status"],
            "Accepted"
        );
        apply(
            &mut tx,
            &action("remove_member", json!({"member_id": new_id})),
            "p",
            &votes,
        )
        .unwrap();
        assert!(!tx.contains(maps::MEMBER_INFO, &new_id));
        store.commit(&tx.into_write_set());
    }
}
