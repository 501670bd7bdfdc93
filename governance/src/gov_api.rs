//! The CCF governance API (2024-07-01) as pure state transitions: proposals, ballots, state
//! digests, members, transaction status, service info.
//!
//! Each operation takes a [`Tx`] and, for the signed routes, an already-authenticated
//! [`SignedRequest`] (the COSE layer has checked tag 18, the signature against
//! [`member_certificate`], and decoded the protected headers). It returns the JSON body of the
//! answer or an [`ApiError`]; the caller commits the transaction's write set only on `Ok` (a
//! failed operation leaves no trace). Where CCF uses the Merkle root (the proposal id and the state
//! digest), the caller passes the current root.
//!
//! Behaviour follows CCF `src/node/gov/handlers/{proposals,acks,transactions,service_state}.h`
//! (reference §3): the replay window of proposals, resolve on create and on every ballot, apply on
//! acceptance (a failure at create discards the transaction with a 500; after a ballot the
//! proposal becomes Failed), and `remove_all_other_non_open_proposals` whenever a proposal leaves
//! Open.

use std::collections::BTreeMap;

use aws_lc_rs::digest::{SHA256, digest};
use serde_json::{Value, json};

use crate::constitution::{self, Proposal, ProposalState, hex};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::kv::{Store, Tx, Version, maps};

/// CCF's default replay window size (`default_recent_cose_proposals_window_size`).
pub const RECENT_PROPOSALS_WINDOW: usize = 100;

/// The largest `created_at` CCF accepts (ten decimal digits).
pub const MAX_CREATED_AT: u64 = 9_999_999_999;

/// The `api-version` values CCF accepts (`latest` and a missing version mean 2024-07-01).
pub const API_VERSIONS: &[&str] = &["2023-06-01-preview", "2024-07-01", "latest"];

/// A governance request whose COSE_Sign1 envelope the COSE layer has already verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRequest {
    /// The signer: `kid`, the member id (lower-case hex).
    pub member_id: String,
    /// The `ccf.gov.msg.type` header, if present.
    pub msg_type: Option<String>,
    /// The `ccf.gov.msg.created_at` header (seconds since the epoch).
    pub created_at: u64,
    /// The `ccf.gov.msg.proposal_id` header, if present.
    pub proposal_id: Option<String>,
    /// The payload bytes.
    pub payload: Vec<u8>,
    /// The COSE signature bytes.
    pub signature: Vec<u8>,
}

/// Message types of the signed routes (`ccf.gov.msg.type`).
pub mod msg_type {
    /// `proposals:create`.
    pub const PROPOSAL: &str = "proposal";
    /// `ballots/{member}:submit`.
    pub const BALLOT: &str = "ballot";
    /// `{id}:withdraw`.
    pub const WITHDRAWAL: &str = "withdrawal";
    /// `state-digests/{member}:update`.
    pub const STATE_DIGEST: &str = "state_digest";
    /// `state-digests/{member}:ack`.
    pub const ACK: &str = "ack";
}

/// Checks `?api-version=`.
pub fn check_api_version(version: Option<&str>) -> ApiResult<()> {
    match version {
        None => Ok(()),
        Some(v) if API_VERSIONS.contains(&v) => Ok(()),
        Some(v) => Err(ApiError::new(
            ErrorCode::UnsupportedApiVersionValue,
            format!(
                "Unsupported api-version '{v}'. Supported values: {}",
                API_VERSIONS.join(", ")
            ),
        )),
    }
}

/// The certificate PEM of a member, for the COSE layer (`kid` lookup); `None` for a non-member.
pub fn member_certificate(tx: &Tx, member_id: &str) -> Option<String> {
    tx.get(maps::MEMBER_CERTS, member_id)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The status of a member ("Accepted" or "Active").
pub fn member_status(tx: &Tx, member_id: &str) -> Option<String> {
    tx.get(maps::MEMBER_INFO, member_id)
        .and_then(|i| i.get("status"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Registers an initial member as Accepted (the service's `--initial-member`). The member id is
/// checked against the certificate. Also sets the recovery threshold to 1 if unset. Idempotent.
pub fn bootstrap_member(
    tx: &mut Tx,
    member_id: &str,
    cert_pem: &str,
    encryption_pub_key: Option<&str>,
    member_data: Option<Value>,
) -> ApiResult<()> {
    let computed = constitution::member_id_of_certificate(cert_pem).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidInput,
            format!("initial member {member_id}: {e}"),
        )
    })?;
    if computed != member_id {
        return Err(ApiError::new(
            ErrorCode::InvalidInput,
            format!("initial member id {member_id} is not the certificate's id {computed}"),
        ));
    }
    let data = Some(member_data.unwrap_or_else(|| json!({})));
    constitution::add_member(tx, cert_pem, encryption_pub_key, data, None, "Accepted")
        .map_err(|e| ApiError::new(ErrorCode::InvalidInput, e))?;
    if !tx.contains(maps::SERVICE_CONFIG, "0") {
        tx.put(maps::SERVICE_CONFIG, "0", json!({"recovery_threshold": 1}));
    }
    Ok(())
}

fn auth_error(message: String) -> ApiError {
    ApiError::new(ErrorCode::InvalidAuthenticationInfo, message)
}

/// The checks of CCF's COSE authentication policy that need the state: a known member, the
/// message type of the route, and for active-member routes the Active status.
pub fn authorize(
    tx: &Tx,
    request: &SignedRequest,
    expected_type: &str,
    active_only: bool,
) -> ApiResult<()> {
    let status = member_status(tx, &request.member_id).ok_or_else(|| {
        auth_error(format!(
            "Signer {} is not a known member",
            request.member_id
        ))
    })?;
    if let Some(t) = &request.msg_type
        && t != expected_type
    {
        return Err(auth_error(format!(
            "Unexpected message type: {t}, expected: {expected_type}"
        )));
    }
    if active_only && status != "Active" {
        return Err(auth_error(format!(
            "Member {} is {status}, not Active: only Active members may {expected_type}",
            request.member_id
        )));
    }
    if request.created_at > MAX_CREATED_AT {
        return Err(ApiError::new(
            ErrorCode::InvalidCreatedAt,
            format!(
                "created_at {} is greater than {MAX_CREATED_AT}",
                request.created_at
            ),
        ));
    }
    Ok(())
}

fn check_proposal_id(id: &str) -> ApiResult<()> {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidResourceName,
            format!("'{id}' is not a valid proposal ID"),
        ))
    }
}

fn check_header_proposal_id(request: &SignedRequest, path_id: &str) -> ApiResult<()> {
    match &request.proposal_id {
        Some(header) if header == path_id => Ok(()),
        Some(header) => Err(ApiError::new(
            ErrorCode::InvalidResourceName,
            format!("Authenticated proposal id {header} does not match URL {path_id}"),
        )),
        None => Err(ApiError::new(
            ErrorCode::InvalidResourceName,
            format!("The signed request carries no proposal id; the URL names {path_id}"),
        )),
    }
}

/// `proposalId = hex sha256(root ‖ sha256(signature))`.
pub fn proposal_id(merkle_root: &[u8], signature: &[u8]) -> String {
    let mut input = merkle_root.to_vec();
    input.extend_from_slice(digest(&SHA256, signature).as_ref());
    hex(digest(&SHA256, &input).as_ref())
}

fn info_of(tx: &Tx, id: &str) -> ApiResult<Value> {
    tx.get(maps::PROPOSALS_INFO, id).cloned().ok_or_else(|| {
        ApiError::new(
            ErrorCode::ProposalNotFound,
            format!("Could not find proposal {id}."),
        )
    })
}

fn state_of(info: &Value) -> ProposalState {
    info.get("state")
        .and_then(Value::as_str)
        .and_then(ProposalState::parse)
        .unwrap_or(ProposalState::Open)
}

/// The proposal object of the API: `{proposalId, proposerId, proposalState, ballotCount,
/// finalVotes?, voteFailures?, failure?}`.
fn proposal_object(id: &str, info: &Value) -> Value {
    let mut out = json!({
        "proposalId": id,
        "proposerId": info.get("proposer_id").cloned().unwrap_or(Value::Null),
        "proposalState": state_of(info).as_str(),
        "ballotCount": info.get("ballots").and_then(Value::as_object).map_or(0, |b| b.len()),
    });
    for (stored, shown) in [
        ("final_votes", "finalVotes"),
        ("vote_failures", "voteFailures"),
        ("failure", "failure"),
    ] {
        if let Some(v) = info.get(stored).filter(|v| !v.is_null()) {
            out[shown] = v.clone();
        }
    }
    out
}

/// The replay window (CCF `is_proposal_submission_acceptable`): refuses a key already kept, and a
/// created_at below the median kept key; keeps at most [`RECENT_PROPOSALS_WINDOW`] keys.
fn check_replay_window(
    tx: &mut Tx,
    created_at: u64,
    signature: &[u8],
    proposal_id: &str,
) -> ApiResult<()> {
    let key = format!(
        "{created_at:0>10}:{}",
        hex(digest(&SHA256, signature).as_ref())
    );
    if let Some(colliding) = tx.get(maps::COSE_RECENT_PROPOSALS, &key) {
        return Err(ApiError::new(
            ErrorCode::ProposalReplay,
            format!(
                "Proposal submission replay, already exists as proposal {}",
                colliding.as_str().unwrap_or("")
            ),
        ));
    }
    let kept = tx.keys(maps::COSE_RECENT_PROPOSALS);
    if !kept.is_empty() {
        let median = &kept[kept.len() / 2];
        let min_created_at = median.split(':').next().unwrap_or("");
        let key_created_at = &key[..key.find(':').unwrap_or(key.len())];
        if key_created_at < min_created_at {
            return Err(ApiError::new(
                ErrorCode::ProposalCreatedTooLongAgo,
                format!(
                    "Proposal created too long ago, created_at must be greater than {min_created_at}"
                ),
            ));
        }
    }
    tx.put(
        maps::COSE_RECENT_PROPOSALS,
        &key,
        Value::String(proposal_id.to_owned()),
    );
    if kept.len() >= RECENT_PROPOSALS_WINDOW - 1 {
        for old in &kept[..kept.len() + 1 - RECENT_PROPOSALS_WINDOW] {
            tx.remove(maps::COSE_RECENT_PROPOSALS, old);
        }
    }
    Ok(())
}

fn stored_proposal(tx: &Tx, id: &str) -> ApiResult<Proposal> {
    let body = tx
        .get(maps::PROPOSALS, id)
        .and_then(Value::as_str)
        .unwrap_or("");
    Proposal::parse(body.as_bytes()).map_err(|e| {
        ApiError::new(
            ErrorCode::InternalError,
            format!("stored proposal {id} is unreadable: {e}"),
        )
    })
}

/// Runs resolve for a stored Open proposal and records the outcome; applies an accepted one.
fn resolve_and_record(tx: &mut Tx, id: &str, at_create: bool) -> ApiResult<()> {
    let mut info = info_of(tx, id)?;
    let proposal = stored_proposal(tx, id)?;
    let proposer = info
        .get("proposer_id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let mut votes = Vec::new();
    if let Some(ballots) = info.get("ballots").and_then(Value::as_object) {
        for (member, ballot) in ballots {
            // Only canonical ballots are stored, so evaluation cannot fail here.
            if let Ok(vote) = constitution::parse_ballot(ballot.as_str().unwrap_or("")) {
                votes.push((member.clone(), vote));
            }
        }
    }
    let mut state = constitution::resolve(tx, &proposal, &proposer, &votes);
    if state == ProposalState::Open {
        return Ok(());
    }
    let final_votes: BTreeMap<String, bool> = votes.into_iter().collect();
    if state == ProposalState::Accepted {
        let checkpoint = tx.checkpoint();
        if let Err(reason) = constitution::apply(tx, &proposal, id, &final_votes) {
            if at_create {
                return Err(ApiError::new(
                    ErrorCode::InternalError,
                    format!("Failed to apply proposal {id}: {reason}"),
                ));
            }
            tx.rollback_to(checkpoint);
            state = ProposalState::Failed;
            info["failure"] = json!({"reason": reason});
        }
    }
    info["state"] = json!(state.as_str());
    info["final_votes"] = json!(final_votes);
    tx.put(maps::PROPOSALS_INFO, id, info);
    remove_all_other_non_open_proposals(tx, id);
    Ok(())
}

/// CCF deletes every other closed proposal whenever one leaves Open.
fn remove_all_other_non_open_proposals(tx: &mut Tx, keep: &str) {
    for (id, info) in tx.entries(maps::PROPOSALS_INFO) {
        if id != keep && state_of(&info) != ProposalState::Open {
            tx.remove(maps::PROPOSALS_INFO, &id);
            tx.remove(maps::PROPOSALS, &id);
        }
    }
}

/// `POST /gov/members/proposals:create` → 200 proposal object.
pub fn create_proposal(
    tx: &mut Tx,
    request: &SignedRequest,
    merkle_root: &[u8],
) -> ApiResult<Value> {
    authorize(tx, request, msg_type::PROPOSAL, true)?;
    let id = proposal_id(merkle_root, &request.signature);
    check_replay_window(tx, request.created_at, &request.signature, &id)?;
    let failed = |e: String| {
        ApiError::new(
            ErrorCode::ProposalFailedToValidate,
            format!("Proposal failed to validate: {e}"),
        )
    };
    let text = std::str::from_utf8(&request.payload)
        .map_err(|_| failed("the proposal is not UTF-8".into()))?;
    let proposal = Proposal::parse(text.as_bytes()).map_err(failed)?;
    constitution::validate(tx, &proposal).map_err(failed)?;
    tx.put(maps::PROPOSALS, &id, Value::String(text.to_owned()));
    tx.put(
        maps::PROPOSALS_INFO,
        &id,
        json!({"proposer_id": request.member_id, "state": "Open", "ballots": {}}),
    );
    resolve_and_record(tx, &id, true)?;
    Ok(proposal_object(&id, &info_of(tx, &id)?))
}

/// `GET /gov/members/proposals/{proposalId}`.
pub fn get_proposal(tx: &Tx, id: &str) -> ApiResult<Value> {
    check_proposal_id(id)?;
    Ok(proposal_object(id, &info_of(tx, id)?))
}

/// `GET /gov/members/proposals` → `{value:[proposal object]}`.
pub fn list_proposals(tx: &Tx) -> Value {
    let value: Vec<Value> = tx
        .entries(maps::PROPOSALS_INFO)
        .iter()
        .map(|(id, info)| proposal_object(id, info))
        .collect();
    json!({ "value": value })
}

/// `GET /gov/members/proposals/{id}/actions` → the raw proposal body.
pub fn proposal_actions(tx: &Tx, id: &str) -> ApiResult<String> {
    check_proposal_id(id)?;
    tx.get(maps::PROPOSALS, id)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::ProposalNotFound,
                format!("Could not find proposal {id}."),
            )
        })
}

/// `POST /gov/members/proposals/{id}:withdraw` → `Some(proposal object)` (200), or `None` for an
/// unknown proposal (204, idempotent).
pub fn withdraw_proposal(
    tx: &mut Tx,
    request: &SignedRequest,
    id: &str,
) -> ApiResult<Option<Value>> {
    authorize(tx, request, msg_type::WITHDRAWAL, true)?;
    check_proposal_id(id)?;
    check_header_proposal_id(request, id)?;
    let Some(mut info) = tx.get(maps::PROPOSALS_INFO, id).cloned() else {
        return Ok(None);
    };
    let proposer = info
        .get("proposer_id")
        .and_then(Value::as_str)
        .unwrap_or("");
    if proposer != request.member_id {
        return Err(ApiError::new(
            ErrorCode::AuthorizationFailed,
            format!(
                "Proposal {id} can only be withdrawn by the proposer {proposer}, not caller {}.",
                request.member_id
            ),
        ));
    }
    let state = state_of(&info);
    if state != ProposalState::Open {
        return Err(ApiError::new(
            ErrorCode::ProposalNotOpen,
            format!(
                "Proposal {id} is currently in state {} and cannot be withdrawn.",
                state.as_str()
            ),
        ));
    }
    info["state"] = json!(ProposalState::Withdrawn.as_str());
    tx.put(maps::PROPOSALS_INFO, id, info.clone());
    remove_all_other_non_open_proposals(tx, id);
    Ok(Some(proposal_object(id, &info)))
}

/// `POST /gov/members/proposals/{id}/ballots/{memberId}:submit` → 200 proposal object.
pub fn submit_ballot(
    tx: &mut Tx,
    request: &SignedRequest,
    id: &str,
    member_id: &str,
) -> ApiResult<Value> {
    authorize(tx, request, msg_type::BALLOT, true)?;
    if member_id != request.member_id {
        return Err(ApiError::new(
            ErrorCode::InvalidResourceName,
            format!(
                "Authenticated member id {} does not match URL {member_id}",
                request.member_id
            ),
        ));
    }
    check_proposal_id(id)?;
    check_header_proposal_id(request, id)?;
    let mut info = info_of(tx, id)?;
    let state = state_of(&info);
    if state != ProposalState::Open {
        return Err(ApiError::new(
            ErrorCode::ProposalNotOpen,
            format!(
                "Proposal {id} is currently in state {} - only Open proposals can receive votes",
                state.as_str()
            ),
        ));
    }
    let body: Value = serde_json::from_slice(&request.payload).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidInput,
            format!("ballot body is not JSON: {e}"),
        )
    })?;
    let ballot = body.get("ballot").and_then(Value::as_str).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidInput,
            "ballot body has no string \"ballot\"",
        )
    })?;
    if let Some(existing) = info["ballots"].get(member_id) {
        if existing.as_str() == Some(ballot) {
            return Ok(proposal_object(id, &info));
        }
        return Err(ApiError::new(
            ErrorCode::VoteAlreadyExists,
            format!("Different vote already submitted by {member_id} for proposal {id}."),
        ));
    }
    constitution::parse_ballot(ballot).map_err(|e| ApiError::new(ErrorCode::InvalidInput, e))?;
    info["ballots"][member_id] = Value::String(ballot.to_owned());
    tx.put(maps::PROPOSALS_INFO, id, info);
    resolve_and_record(tx, id, false)?;
    Ok(proposal_object(id, &info_of(tx, id)?))
}

/// `GET /gov/members/proposals/{id}/ballots/{memberId}` → the ballot JS (text/javascript).
pub fn get_ballot(tx: &Tx, id: &str, member_id: &str) -> ApiResult<String> {
    check_proposal_id(id)?;
    let info = info_of(tx, id)?;
    info["ballots"]
        .get(member_id)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::VoteNotFound,
                format!("Member {member_id} has not voted for proposal {id}."),
            )
        })
}

fn check_path_is_signer(request: &SignedRequest, member_id: &str) -> ApiResult<()> {
    if member_id == request.member_id {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidAuthenticationInfo,
            format!(
                "Member id {member_id} in the URL does not match the authenticated member {}",
                request.member_id
            ),
        )
        .with_status(400))
    }
}

/// `GET /gov/members/state-digests/{memberId}` → `{memberId, stateDigest}`.
pub fn get_state_digest(tx: &Tx, member_id: &str) -> ApiResult<Value> {
    let ack = tx.get(maps::MEMBER_ACKS, member_id).ok_or_else(|| {
        ApiError::new(
            ErrorCode::ResourceNotFound,
            format!("No state digest found for member {member_id}."),
        )
    })?;
    Ok(
        json!({"memberId": member_id, "stateDigest": ack.get("state_digest").cloned().unwrap_or(Value::Null)}),
    )
}

/// `POST /gov/members/state-digests/{memberId}:update` → `{memberId, stateDigest}` (hex root).
/// `merkle_root` is `None` before the first signature transaction (500, as CCF).
pub fn update_state_digest(
    tx: &mut Tx,
    request: &SignedRequest,
    member_id: &str,
    merkle_root: Option<&[u8]>,
) -> ApiResult<Value> {
    authorize(tx, request, msg_type::STATE_DIGEST, false)?;
    check_path_is_signer(request, member_id)?;
    let root = merkle_root.ok_or_else(|| {
        ApiError::new(
            ErrorCode::InternalError,
            "The service has no signature yet: no state digest to issue",
        )
    })?;
    let digest = hex(root);
    tx.put(
        maps::MEMBER_ACKS,
        member_id,
        json!({"state_digest": digest}),
    );
    Ok(json!({"memberId": member_id, "stateDigest": digest}))
}

/// `POST /gov/members/state-digests/{memberId}:ack` → `Ok(())` = 204; an Accepted member
/// becomes Active.
pub fn ack_state_digest(tx: &mut Tx, request: &SignedRequest, member_id: &str) -> ApiResult<()> {
    authorize(tx, request, msg_type::ACK, false)?;
    check_path_is_signer(request, member_id)?;
    let mut ack = tx
        .get(maps::MEMBER_ACKS, member_id)
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::AuthorizationFailed,
                format!("No ACK record exists for member {member_id}."),
            )
        })?;
    let body: Value = serde_json::from_slice(&request.payload).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidInput,
            format!("ack body is not JSON: {e}"),
        )
    })?;
    let submitted = body
        .get("stateDigest")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidInput,
                "ack body has no string \"stateDigest\"",
            )
        })?;
    if ack.get("state_digest").and_then(Value::as_str) != Some(submitted) {
        return Err(ApiError::new(
            ErrorCode::StateDigestMismatch,
            format!("Submitted state digest is not valid for member {member_id}."),
        ));
    }
    ack["acknowledged"] = json!(true);
    tx.put(maps::MEMBER_ACKS, member_id, ack);
    if let Some(mut info) = tx.get(maps::MEMBER_INFO, member_id).cloned()
        && info["status"] == "Accepted"
    {
        info["status"] = json!("Active");
        tx.put(maps::MEMBER_INFO, member_id, info);
    }
    Ok(())
}

fn member_object(tx: &Tx, member_id: &str, info: &Value) -> Value {
    let mut out = json!({
        "memberId": member_id,
        "status": info.get("status").cloned().unwrap_or(Value::Null),
        "memberData": info.get("member_data").cloned().unwrap_or_else(|| json!({})),
        "certificate": tx.get(maps::MEMBER_CERTS, member_id).cloned().unwrap_or(Value::Null),
        "recoveryRole": info.get("recovery_role").cloned().unwrap_or_else(|| json!("NonParticipant")),
    });
    if let Some(key) = tx.get(maps::MEMBER_ENCRYPTION_KEYS, member_id) {
        out["publicEncryptionKey"] = key.clone();
    }
    out
}

/// `GET /gov/service/members` → `{value:[{memberId, status, memberData, certificate,
/// publicEncryptionKey?, recoveryRole}]}`.
pub fn list_members(tx: &Tx) -> Value {
    let value: Vec<Value> = tx
        .entries(maps::MEMBER_INFO)
        .iter()
        .map(|(id, info)| member_object(tx, id, info))
        .collect();
    json!({ "value": value })
}

/// `GET /gov/service/members/{memberId}`.
pub fn get_member(tx: &Tx, member_id: &str) -> ApiResult<Value> {
    let info = tx.get(maps::MEMBER_INFO, member_id).ok_or_else(|| {
        ApiError::new(
            ErrorCode::ResourceNotFound,
            format!("Member {member_id} does not exist."),
        )
    })?;
    Ok(member_object(tx, member_id, info))
}

/// `GET /gov/service/transactions/{transactionId}` → `{status, transactionId}`. `durable_seqno`
/// is the last seqno the ledger has fsynced: a transaction applied to the store but not yet
/// durable is `Pending`. (Pass `store.last_version().seqno` when every applied one is durable.)
pub fn transaction_status(
    store: &Store,
    transaction_id: &str,
    durable_seqno: u64,
) -> ApiResult<crate::kv::TxStatus> {
    let version: Version = transaction_id.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidResourceName,
            format!("'{transaction_id}' is not a transaction ID (view.seqno)"),
        )
    })?;
    let mut status = store.tx_status(version);
    if status == crate::kv::TxStatus::Committed && version.seqno > durable_seqno {
        status = crate::kv::TxStatus::Pending;
    }
    Ok(status)
}

/// `GET /gov/service/info` → `{status, certificate, recentCoseProposalsWindowSize, recoveryThreshold}`.
pub fn service_info(tx: &Tx, service_cert_pem: &str) -> Value {
    let threshold = tx
        .get(maps::SERVICE_CONFIG, "0")
        .and_then(|c| c.get("recovery_threshold"))
        .cloned();
    json!({
        "status": "Open",
        "certificate": service_cert_pem,
        "recentCoseProposalsWindowSize": RECENT_PROPOSALS_WINDOW,
        "recoveryThreshold": threshold.unwrap_or(Value::Null),
    })
}

/// `GET /gov/service/constitution`: CCF returns the JavaScript; encfs's constitution is Rust, so
/// this returns a description naming the rules and the actions.
pub fn service_constitution() -> String {
    format!(
        "// encfs governance: the constitution is built in (Rust), following the Azure clean-room CGS constitution.\n\
         // actions: {}\n// veto actions: {}\n// accepted with zero votes: {}\n\
         // ballots: exactly '{}' or '{}'\n",
        constitution::ACTIONS.join(", "),
        constitution::VETO_ACTIONS.join(", "),
        constitution::AUTO_ACCEPT_ACTIONS.join(", "),
        constitution::BALLOT_ACCEPT,
        constitution::BALLOT_REJECT,
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::constitution::tests::test_cert;
    use crate::constitution::{BALLOT_ACCEPT, BALLOT_REJECT};

    /// A test service: a store, members and a fake Merkle root advancing with every commit.
    pub(crate) struct TestService {
        pub store: Store,
        pub clock: u64,
        pub sig_counter: u64,
    }

    impl TestService {
        pub fn new() -> Self {
            Self {
                store: Store::default(),
                clock: 1_700_000_000,
                sig_counter: 0,
            }
        }

        pub fn root(&self) -> Vec<u8> {
            digest(&SHA256, self.store.last_version().to_string().as_bytes())
                .as_ref()
                .to_vec()
        }

        /// Runs an operation in a transaction; commits on Ok, drops on Err.
        pub fn run<T>(&mut self, op: impl FnOnce(&mut Tx) -> ApiResult<T>) -> ApiResult<T> {
            let mut tx = self.store.transaction();
            let out = op(&mut tx)?;
            let ws = tx.into_write_set();
            if !ws.is_empty() {
                self.store.commit(&ws);
            }
            Ok(out)
        }

        pub fn read<T>(&self, op: impl FnOnce(&Tx) -> T) -> T {
            op(&self.store.transaction())
        }

        pub fn request(
            &mut self,
            member: &str,
            kind: &str,
            proposal_id: Option<&str>,
            payload: Value,
        ) -> SignedRequest {
            self.clock += 1;
            self.sig_counter += 1;
            SignedRequest {
                member_id: member.to_owned(),
                msg_type: Some(kind.to_owned()),
                created_at: self.clock,
                proposal_id: proposal_id.map(str::to_owned),
                payload: if payload.is_null() {
                    Vec::new()
                } else {
                    payload.to_string().into_bytes()
                },
                signature: self.sig_counter.to_be_bytes().to_vec(),
            }
        }

        pub fn bootstrap(&mut self, name: &str) -> String {
            let cert = test_cert(name);
            let id = constitution::member_id_of_certificate(&cert).unwrap();
            self.run(|tx| {
                bootstrap_member(tx, &id, &cert, None, Some(json!({"identifier": name})))
            })
            .unwrap();
            id
        }

        pub fn activate(&mut self, member: &str) {
            let root = self.root();
            let update = self.request(member, msg_type::STATE_DIGEST, None, Value::Null);
            let digest = self
                .run(|tx| update_state_digest(tx, &update, member, Some(&root)))
                .unwrap();
            let ack = self.request(member, msg_type::ACK, None, digest);
            self.run(|tx| ack_state_digest(tx, &ack, member)).unwrap();
        }

        pub fn propose(&mut self, member: &str, actions: Value) -> ApiResult<Value> {
            let request = self.request(
                member,
                msg_type::PROPOSAL,
                None,
                json!({ "actions": actions }),
            );
            let root = self.root();
            self.run(|tx| create_proposal(tx, &request, &root))
        }

        pub fn vote(&mut self, member: &str, proposal: &str, accept: bool) -> ApiResult<Value> {
            let ballot = if accept { BALLOT_ACCEPT } else { BALLOT_REJECT };
            let request = self.request(
                member,
                msg_type::BALLOT,
                Some(proposal),
                json!({ "ballot": ballot }),
            );
            self.run(|tx| submit_ballot(tx, &request, proposal, member))
        }

        /// Adds a member by a proposal every given voter accepts; returns its id (Accepted).
        pub fn add_member(&mut self, name: &str, voters: &[String]) -> String {
            let cert = test_cert(name);
            let id = constitution::member_id_of_certificate(&cert).unwrap();
            let p = self
                .propose(&voters[0], json!([{"name": "set_member", "args": {"cert": cert, "member_data": {"identifier": name}}}]))
                .unwrap();
            let pid = p["proposalId"].as_str().unwrap().to_owned();
            for v in voters {
                self.vote(v, &pid, true).unwrap();
            }
            assert_eq!(
                self.read(|tx| member_status(tx, &id)).as_deref(),
                Some("Accepted")
            );
            id
        }
    }

    fn code_of<T: std::fmt::Debug>(r: ApiResult<T>) -> (u16, ErrorCode) {
        let e = r.unwrap_err();
        (e.status, e.code)
    }

    #[test]
    fn proposal_id_is_sha256_of_root_and_signature_digest() {
        let root = [7u8; 32];
        let sig = b"signature";
        let mut input = root.to_vec();
        input.extend_from_slice(digest(&SHA256, sig).as_ref());
        assert_eq!(
            proposal_id(&root, sig),
            hex(digest(&SHA256, &input).as_ref())
        );
    }

    #[test]
    fn only_active_members_propose_and_vote() {
        let mut s = TestService::new();
        let a = s.bootstrap("a");
        let (status, code) = code_of(s.propose(&a, json!([])));
        assert_eq!((status, code), (401, ErrorCode::InvalidAuthenticationInfo));
        let (status, _) = code_of(s.propose(&"00".repeat(32), json!([])));
        assert_eq!(status, 401);
        s.activate(&a);
        let p = s
            .propose(
                &a,
                json!([{"name": "set_recovery_threshold", "args": {"recovery_threshold": 1}}]),
            )
            .unwrap();
        assert_eq!(p["proposalState"], "Open");
        assert_eq!(p["ballotCount"], 0);
        assert!(p.get("finalVotes").is_none());
        // A wrong message type for the route.
        let mut r = s.request(&a, msg_type::BALLOT, None, json!({"actions": []}));
        r.msg_type = Some("ballot".into());
        let root = s.root();
        assert_eq!(
            code_of(s.run(|tx| create_proposal(tx, &r, &root))).1,
            ErrorCode::InvalidAuthenticationInfo
        );
    }

    #[test]
    fn activation_by_update_and_ack() {
        let mut s = TestService::new();
        let a = s.bootstrap("a");
        let b = s.bootstrap("b");
        assert_eq!(
            code_of(s.read(|tx| get_state_digest(tx, &a))).1,
            ErrorCode::ResourceNotFound
        );
        let ack = s.request(
            &a,
            msg_type::ACK,
            None,
            json!({"memberId": a, "stateDigest": "00"}),
        );
        assert_eq!(
            code_of(s.run(|tx| ack_state_digest(tx, &ack, &a))),
            (403, ErrorCode::AuthorizationFailed)
        );
        let upd = s.request(&a, msg_type::STATE_DIGEST, None, Value::Null);
        assert_eq!(
            code_of(s.run(|tx| update_state_digest(tx, &upd, &b, Some(&[1])))),
            (400, ErrorCode::InvalidAuthenticationInfo)
        );
        assert_eq!(
            code_of(s.run(|tx| update_state_digest(tx, &upd, &a, None))).0,
            500
        );
        let root = s.root();
        let d = s
            .run(|tx| update_state_digest(tx, &upd, &a, Some(&root)))
            .unwrap();
        assert_eq!(d["stateDigest"], hex(&root));
        assert_eq!(s.read(|tx| get_state_digest(tx, &a)).unwrap(), d);
        let bad = s.request(
            &a,
            msg_type::ACK,
            None,
            json!({"memberId": a, "stateDigest": "ff"}),
        );
        assert_eq!(
            code_of(s.run(|tx| ack_state_digest(tx, &bad, &a))),
            (400, ErrorCode::StateDigestMismatch)
        );
        let good = s.request(&a, msg_type::ACK, None, d);
        s.run(|tx| ack_state_digest(tx, &good, &a)).unwrap();
        assert_eq!(
            s.read(|tx| member_status(tx, &a)).as_deref(),
            Some("Active")
        );
        let members = s.read(list_members);
        assert_eq!(members["value"].as_array().unwrap().len(), 2);
        let m = s.read(|tx| get_member(tx, &a)).unwrap();
        assert_eq!(m["status"], "Active");
        assert_eq!(m["memberData"]["identifier"], "a");
        assert!(
            m["certificate"]
                .as_str()
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        assert_eq!(m["recoveryRole"], "NonParticipant");
        assert!(m.get("publicEncryptionKey").is_none());
        assert_eq!(
            code_of(s.read(|tx| get_member(tx, &"ab".repeat(32)))),
            (404, ErrorCode::ResourceNotFound)
        );
    }

    #[test]
    fn bootstrap_checks_the_member_id() {
        let mut s = TestService::new();
        let cert = test_cert("x");
        let e = s
            .run(|tx| bootstrap_member(tx, &"00".repeat(32), &cert, None, None))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidInput);
    }

    #[test]
    fn ballots_idempotent_same_differing_refused() {
        let mut s = TestService::new();
        let a = s.bootstrap("a");
        s.activate(&a);
        let b = s.add_member("b", std::slice::from_ref(&a));
        s.activate(&b);
        let p = s
            .propose(
                &a,
                json!([{"name": "set_recovery_threshold", "args": {"recovery_threshold": 1}}]),
            )
            .unwrap();
        let pid = p["proposalId"].as_str().unwrap().to_owned();
        let v1 = s.vote(&a, &pid, true).unwrap();
        assert_eq!(v1["ballotCount"], 1);
        let again = s.vote(&a, &pid, true).unwrap();
        assert_eq!(again, v1);
        assert_eq!(
            code_of(s.vote(&a, &pid, false)),
            (400, ErrorCode::VoteAlreadyExists)
        );
        assert_eq!(
            s.read(|tx| get_ballot(tx, &pid, &a)).unwrap(),
            BALLOT_ACCEPT
        );
        assert_eq!(
            code_of(s.read(|tx| get_ballot(tx, &pid, &b))),
            (404, ErrorCode::VoteNotFound)
        );
        // A non-canonical ballot.
        let r = s.request(
            &b,
            msg_type::BALLOT,
            Some(&pid),
            json!({"ballot": "export function vote() { return 1 }"}),
        );
        let e = s.run(|tx| submit_ballot(tx, &r, &pid, &b)).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidInput);
        assert!(e.message.contains("canonical"));
        // Not JSON / no ballot.
        let r = s.request(&b, msg_type::BALLOT, Some(&pid), json!({"vote": true}));
        assert_eq!(
            code_of(s.run(|tx| submit_ballot(tx, &r, &pid, &b))).1,
            ErrorCode::InvalidInput
        );
        // Path member ≠ signer.
        let r = s.request(
            &b,
            msg_type::BALLOT,
            Some(&pid),
            json!({"ballot": BALLOT_ACCEPT}),
        );
        assert_eq!(
            code_of(s.run(|tx| submit_ballot(tx, &r, &pid, &a))),
            (400, ErrorCode::InvalidResourceName)
        );
        // Header proposal id ≠ path.
        let other = "ab".repeat(32);
        let r = s.request(
            &b,
            msg_type::BALLOT,
            Some(&other),
            json!({"ballot": BALLOT_ACCEPT}),
        );
        assert_eq!(
            code_of(s.run(|tx| submit_ballot(tx, &r, &pid, &b))),
            (400, ErrorCode::InvalidResourceName)
        );
        // Unknown proposal and bad id.
        assert_eq!(
            code_of(s.vote(&b, &other, true)),
            (404, ErrorCode::ProposalNotFound)
        );
        assert_eq!(
            code_of(s.read(|tx| get_proposal(tx, "xyz"))),
            (400, ErrorCode::InvalidResourceName)
        );
        // b accepts → Accepted with finalVotes.
        let done = s.vote(&b, &pid, true).unwrap();
        assert_eq!(done["proposalState"], "Accepted");
        assert_eq!(
            done["finalVotes"],
            json!({a.clone(): true, b.clone(): true})
        );
        assert_eq!(
            code_of(s.vote(&b, &pid, true)),
            (400, ErrorCode::ProposalNotOpen)
        );
    }

    #[test]
    fn an_accepted_but_not_active_member_cannot_vote() {
        let mut s = TestService::new();
        let a = s.bootstrap("a");
        s.activate(&a);
        let b = s.add_member("b", std::slice::from_ref(&a));
        let p = s
            .propose(
                &a,
                json!([{"name": "set_recovery_threshold", "args": {"recovery_threshold": 1}}]),
            )
            .unwrap();
        let pid = p["proposalId"].as_str().unwrap();
        assert_eq!(
            code_of(s.vote(&b, pid, true)),
            (401, ErrorCode::InvalidAuthenticationInfo)
        );
    }

    #[test]
    fn replay_window_refuses_replays_and_old_proposals() {
        let mut s = TestService::new();
        let a = s.bootstrap("a");
        s.activate(&a);
        let r = s.request(&a, msg_type::PROPOSAL, None, json!({"actions": [{"name": "set_recovery_threshold", "args": {"recovery_threshold": 1}}]}));
        let root = s.root();
        let first = s.run(|tx| create_proposal(tx, &r, &root)).unwrap();
        let root = s.root();
        let e = s.run(|tx| create_proposal(tx, &r, &root)).unwrap_err();
        assert_eq!(e.code, ErrorCode::ProposalReplay);
        assert_eq!(
            e.message,
            format!(
                "Proposal submission replay, already exists as proposal {}",
                first["proposalId"].as_str().unwrap()
            )
        );
        // Fill the window with later proposals; then one older than the median is refused.
        for _ in 0..4 {
            s.propose(
                &a,
                json!([{"name": "set_recovery_threshold", "args": {"recovery_threshold": 1}}]),
            )
            .unwrap();
        }
        let mut old = s.request(&a, msg_type::PROPOSAL, None, json!({"actions": []}));
        old.created_at = r.created_at + 1;
        let root = s.root();
        let e = s.run(|tx| create_proposal(tx, &old, &root)).unwrap_err();
        assert_eq!(e.code, ErrorCode::ProposalCreatedTooLongAgo);
        assert_eq!(
            e.message,
            format!(
                "Proposal created too long ago, created_at must be greater than {:0>10}",
                r.created_at + 2
            )
        );
        // created_at out of range.
        let mut huge = s.request(&a, msg_type::PROPOSAL, None, json!({"actions": []}));
        huge.created_at = MAX_CREATED_AT + 1;
        let root = s.root();
        assert_eq!(
            code_of(s.run(|tx| create_proposal(tx, &huge, &root))).1,
            ErrorCode::InvalidCreatedAt
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]
        /// The replay window against a model: a sorted list of kept keys; a key is refused if kept
        /// (replay) or if its created_at is below the median kept one (too old); after each
        /// acceptance only the 100 largest keys stay.
        #[test]
        fn replay_window_matches_a_model(
            submissions in proptest::collection::vec((0u64..40, 0u8..4), 1..160)
        ) {
            let mut s = TestService::new();
            let a = s.bootstrap("a");
            s.activate(&a);
            let mut model: Vec<String> = Vec::new();
            for (offset, sig) in submissions {
                let created_at = 1_700_000_000 + offset;
                let signature = vec![sig];
                let key = format!("{created_at:0>10}:{}", hex(digest(&SHA256, &signature).as_ref()));
                let expected = if model.contains(&key) {
                    Some(ErrorCode::ProposalReplay)
                } else if !model.is_empty() && key[..10] < model[model.len() / 2][..10] {
                    Some(ErrorCode::ProposalCreatedTooLongAgo)
                } else {
                    None
                };
                let request = SignedRequest {
                    member_id: a.clone(),
                    msg_type: Some(msg_type::PROPOSAL.into()),
                    created_at,
                    proposal_id: None,
                    payload: br#"{"actions":[{"name":"set_recovery_threshold","args":{"recovery_threshold":1}}]}"#.to_vec(),
                    signature,
                };
                let root = s.root();
                let got = s.run(|tx| create_proposal(tx, &request, &root)).err().map(|e| e.code);
                proptest::prop_assert_eq!(got, expected);
                if expected.is_none() {
                    model.push(key);
                    model.sort();
                    if model.len() > RECENT_PROPOSALS_WINDOW {
                        model.drain(..model.len() - RECENT_PROPOSALS_WINDOW);
                    }
                }
                proptest::prop_assert_eq!(s.read(|tx| tx.keys(maps::COSE_RECENT_PROPOSALS)), model.clone());
            }
        }
    }

    #[test]
    fn replay_window_keeps_one_hundred_keys() {
        let mut s = TestService::new();
        let a = s.bootstrap("a");
        s.activate(&a);
        for _ in 0..120 {
            s.propose(
                &a,
                json!([{"name": "set_recovery_threshold", "args": {"recovery_threshold": 1}}]),
            )
            .unwrap();
        }
        assert_eq!(
            s.read(|tx| tx.keys(maps::COSE_RECENT_PROPOSALS).len()),
            RECENT_PROPOSALS_WINDOW
        );
    }

    #[test]
    fn failed_validation_leaves_no_trace() {
        let mut s = TestService::new();
        let a = s.bootstrap("a");
        s.activate(&a);
        let before = s.store.clone();
        let e = s.propose(&a, json!([{"name": "set_deployment_spec", "args": {"contractId": "c", "spec": {"data": {}}}}])).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (400, ErrorCode::ProposalFailedToValidate)
        );
        assert!(
            e.message.starts_with(
                "Proposal failed to validate: set_deployment_spec at position 0 failed validation"
            ),
            "{}",
            e.message
        );
        let e = s
            .propose(&a, json!([{"name": "no_such", "args": {}}]))
            .unwrap_err();
        assert_eq!(
            e.message,
            "Proposal failed to validate: no_such: no such action"
        );
        assert_eq!(s.store, before);
    }

    #[test]
    fn apply_failure_at_create_is_500_and_after_a_ballot_is_failed() {
        // An operator alone: no member's vote counts, so a proposal is accepted at create.
        let mut s = TestService::new();
        let cert = test_cert("op");
        let op = constitution::member_id_of_certificate(&cert).unwrap();
        s.run(|tx| bootstrap_member(tx, &op, &cert, None, Some(json!({"isOperator": true}))))
            .unwrap();
        s.activate(&op);
        let before = s.store.clone();
        let e = s
            .propose(
                &op,
                json!([{"name": "set_recovery_threshold", "args": {"recovery_threshold": 5}}]),
            )
            .unwrap_err();
        assert_eq!((e.status, e.code), (500, ErrorCode::InternalError));
        assert!(
            e.message.contains("Failed to apply proposal"),
            "{}",
            e.message
        );
        assert_eq!(s.store, before);

        let mut s = TestService::new();
        let a = s.bootstrap("a");
        s.activate(&a);
        let b = s.add_member("b", std::slice::from_ref(&a));
        s.activate(&b);
        let p = s.propose(&a, json!([
            {"name": "set_cgs_runtime_options", "args": {"option": "autoapprove-jsapp-proposal", "status": "enabled"}},
            {"name": "set_recovery_threshold", "args": {"recovery_threshold": 5}}
        ])).unwrap();
        let pid = p["proposalId"].as_str().unwrap().to_owned();
        s.vote(&a, &pid, true).unwrap();
        let done = s.vote(&b, &pid, true).unwrap();
        assert_eq!(done["proposalState"], "Failed");
        assert!(
            done["failure"]["reason"]
                .as_str()
                .unwrap()
                .contains("recovery members")
        );
        assert!(!s.read(|tx| constitution::cgs_option_enabled(tx, "autoapprove-jsapp-proposal")));
    }

    #[test]
    fn withdraw_rules_and_closed_proposals_are_pruned() {
        let mut s = TestService::new();
        let a = s.bootstrap("a");
        s.activate(&a);
        let b = s.add_member("b", std::slice::from_ref(&a));
        s.activate(&b);
        let p = s
            .propose(
                &a,
                json!([{"name": "set_recovery_threshold", "args": {"recovery_threshold": 1}}]),
            )
            .unwrap();
        let pid = p["proposalId"].as_str().unwrap().to_owned();
        let w = s.request(&b, msg_type::WITHDRAWAL, Some(&pid), Value::Null);
        assert_eq!(
            code_of(s.run(|tx| withdraw_proposal(tx, &w, &pid))),
            (403, ErrorCode::AuthorizationFailed)
        );
        let unknown = "cd".repeat(32);
        let w = s.request(&a, msg_type::WITHDRAWAL, Some(&unknown), Value::Null);
        assert_eq!(
            s.run(|tx| withdraw_proposal(tx, &w, &unknown)).unwrap(),
            None
        );
        let w = s.request(&a, msg_type::WITHDRAWAL, Some(&unknown), Value::Null);
        assert_eq!(
            code_of(s.run(|tx| withdraw_proposal(tx, &w, &pid))).1,
            ErrorCode::InvalidResourceName
        );
        let w = s.request(&a, msg_type::WITHDRAWAL, Some(&pid), Value::Null);
        let out = s
            .run(|tx| withdraw_proposal(tx, &w, &pid))
            .unwrap()
            .unwrap();
        assert_eq!(out["proposalState"], "Withdrawn");
        assert!(out.get("finalVotes").is_none());
        let w = s.request(&a, msg_type::WITHDRAWAL, Some(&pid), Value::Null);
        assert_eq!(
            code_of(s.run(|tx| withdraw_proposal(tx, &w, &pid))).1,
            ErrorCode::ProposalNotOpen
        );
        // The next proposal to close removes the withdrawn one.
        let q = s.propose(&a, json!([{"name": "set_contract_runtime_options_disable_logging", "args": {"contractId": "c"}}]));
        // (validation needs an accepted contract)
        assert_eq!(q.unwrap_err().code, ErrorCode::ProposalFailedToValidate);
        let q = s
            .propose(
                &a,
                json!([{"name": "set_recovery_threshold", "args": {"recovery_threshold": 1}}]),
            )
            .unwrap();
        let qid = q["proposalId"].as_str().unwrap().to_owned();
        s.vote(&a, &qid, true).unwrap();
        s.vote(&b, &qid, true).unwrap();
        assert_eq!(
            code_of(s.read(|tx| get_proposal(tx, &pid))).1,
            ErrorCode::ProposalNotFound
        );
        assert_eq!(
            s.read(|tx| get_proposal(tx, &qid)).unwrap()["proposalState"],
            "Accepted"
        );
        let listed = s.read(list_proposals);
        assert_eq!(listed["value"].as_array().unwrap().len(), 1);
        let actions = s.read(|tx| proposal_actions(tx, &qid)).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&actions).unwrap()["actions"][0]["name"],
            "set_recovery_threshold"
        );
    }

    #[test]
    fn transaction_status_and_versions() {
        let mut s = TestService::new();
        s.bootstrap("a");
        assert_eq!(
            transaction_status(&s.store, "1.1", 0).unwrap().as_str(),
            "Pending"
        );
        assert_eq!(
            transaction_status(&s.store, "1.1", 1).unwrap().as_str(),
            "Committed"
        );
        assert_eq!(
            transaction_status(&s.store, "1.9", 1).unwrap().as_str(),
            "Unknown"
        );
        assert_eq!(
            transaction_status(&s.store, "x", 1).unwrap_err().code,
            ErrorCode::InvalidResourceName
        );
        assert!(check_api_version(Some("2024-07-01")).is_ok());
        assert!(check_api_version(None).is_ok());
        assert_eq!(
            check_api_version(Some("2020-01-01")).unwrap_err().code,
            ErrorCode::UnsupportedApiVersionValue
        );
        let info = s.read(|tx| service_info(tx, "PEM"));
        assert_eq!(info["recentCoseProposalsWindowSize"], 100);
        assert_eq!(info["recoveryThreshold"], 1);
    }
}
