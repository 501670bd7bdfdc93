//! The HTTPS routes: CCF's gov API 2024-07-01 (COSE_Sign1 bodies) and the clean-room governance
//! app under `/app` (member calls by mutual TLS; clean-room calls carry an attestation), each a
//! thin adapter from HTTP to [`crate::gov_api`] / [`crate::app`] through [`Service`].
//!
//! CCF puts a verb after a colon in the last path segment (`proposals/{id}:withdraw`); those
//! segments are matched whole and split here.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Service;
use crate::app::events::{CleanRoomVerifiers, EventKey, SeqnoRange};
use crate::app::{
    self, AttestationVerifier, Caller, KeyWrapper, RsaPssVerifier, VerifiedAttestation,
};
use crate::cose;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::gov_api::{self, SignedRequest};
use crate::identity;
use crate::kv::Version;
use crate::receipt;
use crate::server::{CoseBody, ErrorResponse, PeerCertificate, with_transaction_id};

type Shared = State<Arc<Service>>;

/// A refusal already rendered as a response (boxed: responses are large).
type Refused = Box<Response>;

/// The service's routes.
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/gov/members/proposals:create", post(create_proposal))
        .route("/gov/members/proposals", get(list_proposals))
        .route(
            "/gov/members/proposals/{segment}",
            get(get_proposal).post(withdraw_proposal),
        )
        .route("/gov/members/proposals/{id}/actions", get(proposal_actions))
        .route(
            "/gov/members/proposals/{id}/ballots/{segment}",
            get(get_ballot).post(submit_ballot),
        )
        .route(
            "/gov/members/state-digests/{segment}",
            get(get_state_digest).post(state_digest),
        )
        .route("/gov/service/members", get(list_members))
        .route("/gov/service/members/{member_id}", get(get_member))
        .route(
            "/gov/service/transactions/{transaction_id}",
            get(gov_transaction),
        )
        .route("/gov/service/info", get(service_info))
        .route("/gov/service/constitution", get(constitution))
        .route("/node/network", get(node_network))
        .route("/node/tx", get(tx_status))
        .route("/app/tx", get(tx_status))
        .route("/gov/tx", get(tx_status))
        .route("/app/receipt", get(get_receipt))
        .route("/node/receipt", get(get_receipt))
        .route("/app/contracts", get(list_contracts))
        .route(
            "/app/contracts/{id}",
            axum::routing::put(put_contract).post(get_contract),
        )
        .route(
            "/app/contracts/{id}/runtimeoptions/{option}/{verb}",
            post(contract_runtime_option),
        )
        .route(
            "/app/runtimeoptions/{option}/status",
            post(cgs_runtime_option),
        )
        .route(
            "/app/contracts/{id}/events",
            get(list_events).put(put_event),
        )
        .route(
            "/app/contracts/{id}/cleanroompolicy",
            post(clean_room_policy),
        )
        .route("/app/contracts/{id}/deploymentspec", post(deployment_spec))
        .route("/app/contracts/{id}/deploymentinfo", post(deployment_info))
        .route("/app/contracts/{id}/secrets", get(list_secrets))
        .route(
            "/app/contracts/{id}/secrets/{name}",
            axum::routing::put(put_secret).post(get_secret),
        )
        .route(
            "/app/contracts/{id}/cleanroompolicy/delegates",
            get(list_delegate_policies),
        )
        .route(
            "/app/contracts/{id}/cleanroompolicy/delegates/{kind}/{delegate}",
            axum::routing::put(set_delegate_policy).post(get_delegate_policy),
        )
        .route("/app/memberdocuments", get(list_documents))
        .route(
            "/app/memberdocuments/{doc}",
            axum::routing::put(put_document).get(get_document),
        )
        .route(
            "/app/contracts/{id}/memberdocuments",
            get(list_contract_documents),
        )
        .route(
            "/app/contracts/{id}/memberdocuments/{doc}",
            axum::routing::put(put_contract_document).post(get_contract_document),
        )
        .route(
            "/app/contracts/{id}/memberdocuments/accepted/{doc}",
            post(get_accepted_document),
        )
        .with_state(service)
}

// ---------------------------------------------------------------------------------------------
// Errors and responses

fn api_error(error: ApiError) -> ErrorResponse {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if error.code == ErrorCode::InvalidAuthenticationInfo && status == StatusCode::UNAUTHORIZED {
        return ErrorResponse::cose_authentication_failed(error.message);
    }
    ErrorResponse::new(status, error.code.as_str(), error.message)
}

fn reply(result: ApiResult<(Value, Option<Version>)>) -> Response {
    match result {
        Ok((value, version)) => written(axum::Json(value), version),
        Err(error) => api_error(error).into_response(),
    }
}

/// The answer to a write that returns nothing: `status` with the transaction id, or the error.
fn acknowledged(result: ApiResult<((), Option<Version>)>, status: StatusCode) -> Response {
    match result {
        Ok(((), version)) => written(status, version),
        Err(error) => api_error(error).into_response(),
    }
}

fn written(response: impl IntoResponse, version: Option<Version>) -> Response {
    match version {
        Some(v) => with_transaction_id(response, v.view, v.seqno),
        None => response.into_response(),
    }
}

fn json_or_error(result: ApiResult<Value>) -> Response {
    match result {
        Ok(value) => axum::Json(value).into_response(),
        Err(error) => api_error(error).into_response(),
    }
}

fn bad_segment(segment: &str, verb: &str) -> Response {
    ErrorResponse::unknown_path(&format!("{segment} (expected …:{verb})")).into_response()
}

/// A JSON body; an empty or malformed one is 400 `InvalidInput` naming the route.
fn json_body(bytes: &[u8], what: &str) -> Result<Value, Refused> {
    if bytes.is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ErrorResponse::new(
            StatusCode::BAD_REQUEST,
            "InvalidInput",
            format!("{what}: the body is not JSON: {e}"),
        )
        .into_response()
        .into()
    })
}

// ---------------------------------------------------------------------------------------------
// Authentication

/// CCF's COSE_Sign1 authentication: parse, find the signer's certificate, verify. The state
/// checks (message type, Active) are [`gov_api::authorize`], which every gov operation runs.
fn authenticate(service: &Service, body: &[u8]) -> Result<SignedRequest, Refused> {
    let refuse = |reason: String| -> Refused {
        Box::new(ErrorResponse::cose_authentication_failed(reason).into_response())
    };
    let envelope = cose::parse(body).map_err(|e| refuse(e.to_string()))?;
    envelope
        .check_algorithm()
        .map_err(|e| refuse(e.to_string()))?;
    let cert_pem = service
        .read(|tx| gov_api::member_certificate(tx, &envelope.kid))
        .ok_or_else(|| refuse(format!("Signer {} is not a known member", envelope.kid)))?;
    let der = identity::cert_der_from_pem(&cert_pem).map_err(refuse)?;
    envelope
        .verify_signature(&der)
        .map_err(|e| refuse(e.to_string()))?;
    Ok(SignedRequest {
        member_id: envelope.kid.clone(),
        msg_type: envelope.msg_type.clone(),
        created_at: envelope.created_at,
        proposal_id: envelope.proposal_id.clone(),
        payload: envelope.payload.clone(),
        signature: envelope.signature.clone(),
    })
}

/// CCF's `member_cert` policy: the TLS client certificate is a registered member's.
fn member(service: &Service, peer: &PeerCertificate) -> Result<String, Refused> {
    let unauthenticated = || {
        ErrorResponse::new(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationInfo",
            "Invalid authentication credentials.",
        )
        .into_response()
    };
    let der = peer.0.as_ref().ok_or_else(unauthenticated)?;
    let id = identity::member_id(der);
    service
        .read(|tx| gov_api::member_status(tx, &id))
        .ok_or_else(unauthenticated)?;
    Ok(id)
}

/// A member by certificate, or an unauthenticated caller (a clean room) where the route allows it.
fn member_or_anyone(service: &Service, peer: &PeerCertificate) -> Caller {
    match member(service, peer) {
        Ok(id) => Caller::Member(id),
        Err(_) => Caller::Unauthenticated,
    }
}

/// Where the service has no attestation verifier (`Service::open`), every clean-room
/// attestation is refused, so the attested routes fail closed.
struct NoAttestationProvider;

/// The service's verifier and wrapper, or the one that refuses everything.
fn clean_room(service: &Service) -> &dyn crate::attestation::CleanRoomAttestation {
    match &service.attestation {
        Some(attestation) => attestation.as_ref(),
        None => &NoAttestationProvider,
    }
}

impl AttestationVerifier for NoAttestationProvider {
    fn verify(&self, _platform: &str, _attestation: &Value) -> Result<VerifiedAttestation, String> {
        Err("no attestation provider is configured on this governance service".into())
    }
}

impl KeyWrapper for NoAttestationProvider {
    fn wrap(&self, _public_key_pem: &str, _plaintext: &[u8]) -> Result<Vec<u8>, String> {
        Err("no key wrapping for clean rooms without an attestation provider".into())
    }
}

// ---------------------------------------------------------------------------------------------
// CCF gov API

async fn create_proposal(State(service): Shared, CoseBody(body): CoseBody) -> Response {
    let request = match authenticate(&service, &body) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    reply(
        service
            .write(|tx, root| gov_api::create_proposal(tx, &request, root))
            .await,
    )
}

async fn list_proposals(State(service): Shared) -> Response {
    axum::Json(service.read(gov_api::list_proposals)).into_response()
}

async fn get_proposal(State(service): Shared, Path(segment): Path<String>) -> Response {
    json_or_error(service.read(|tx| gov_api::get_proposal(tx, &segment)))
}

async fn withdraw_proposal(
    State(service): Shared,
    Path(segment): Path<String>,
    CoseBody(body): CoseBody,
) -> Response {
    let Some(id) = segment.strip_suffix(":withdraw") else {
        return bad_segment(&segment, "withdraw");
    };
    let request = match authenticate(&service, &body) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    match service
        .write(|tx, _| gov_api::withdraw_proposal(tx, &request, id))
        .await
    {
        Ok((Some(value), version)) => written(axum::Json(value), version),
        Ok((None, version)) => written(StatusCode::NO_CONTENT, version),
        Err(error) => api_error(error).into_response(),
    }
}

async fn proposal_actions(State(service): Shared, Path(id): Path<String>) -> Response {
    match service.read(|tx| gov_api::proposal_actions(tx, &id)) {
        Ok(text) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            text,
        )
            .into_response(),
        Err(error) => api_error(error).into_response(),
    }
}

async fn submit_ballot(
    State(service): Shared,
    Path((id, segment)): Path<(String, String)>,
    CoseBody(body): CoseBody,
) -> Response {
    let Some(member_id) = segment.strip_suffix(":submit") else {
        return bad_segment(&segment, "submit");
    };
    let request = match authenticate(&service, &body) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    reply(
        service
            .write(|tx, _| gov_api::submit_ballot(tx, &request, &id, member_id))
            .await,
    )
}

async fn get_ballot(
    State(service): Shared,
    Path((id, member_id)): Path<(String, String)>,
) -> Response {
    match service.read(|tx| gov_api::get_ballot(tx, &id, &member_id)) {
        Ok(text) => (
            [(axum::http::header::CONTENT_TYPE, "text/javascript")],
            text,
        )
            .into_response(),
        Err(error) => api_error(error).into_response(),
    }
}

async fn get_state_digest(State(service): Shared, Path(member_id): Path<String>) -> Response {
    json_or_error(service.read(|tx| gov_api::get_state_digest(tx, &member_id)))
}

async fn state_digest(
    State(service): Shared,
    Path(segment): Path<String>,
    CoseBody(body): CoseBody,
) -> Response {
    let request = match authenticate(&service, &body) {
        Ok(r) => r,
        Err(e) => return *e,
    };
    if let Some(member_id) = segment.strip_suffix(":update") {
        return reply(
            service
                .write(|tx, root| gov_api::update_state_digest(tx, &request, member_id, Some(root)))
                .await,
        );
    }
    if let Some(member_id) = segment.strip_suffix(":ack") {
        return acknowledged(
            service
                .write(|tx, _| gov_api::ack_state_digest(tx, &request, member_id))
                .await,
            StatusCode::NO_CONTENT,
        );
    }
    bad_segment(&segment, "update|ack")
}

async fn list_members(State(service): Shared) -> Response {
    axum::Json(service.read(gov_api::list_members)).into_response()
}

async fn get_member(State(service): Shared, Path(member_id): Path<String>) -> Response {
    json_or_error(service.read(|tx| gov_api::get_member(tx, &member_id)))
}

async fn gov_transaction(State(service): Shared, Path(transaction_id): Path<String>) -> Response {
    json_or_error(
        service
            .transaction_status(&transaction_id)
            .map(|status| json!({"status": status, "transactionId": transaction_id})),
    )
}

#[derive(Deserialize)]
struct TransactionQuery {
    transaction_id: Option<String>,
}

/// `GET /app/tx?transaction_id=V.S` (CCF's node frontend shape).
async fn tx_status(State(service): Shared, Query(query): Query<TransactionQuery>) -> Response {
    let Some(id) = query.transaction_id else {
        return ErrorResponse::new(
            StatusCode::BAD_REQUEST,
            "InvalidQueryParameterValue",
            "transaction_id is required",
        )
        .into_response();
    };
    json_or_error(
        service
            .transaction_status(&id)
            .map(|status| json!({"status": status, "transaction_id": id})),
    )
}

async fn service_info(State(service): Shared) -> Response {
    let pem = service.service_cert_pem().to_owned();
    axum::Json(service.read(|tx| gov_api::service_info(tx, &pem))).into_response()
}

async fn constitution() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "text/javascript")],
        gov_api::service_constitution(),
    )
        .into_response()
}

/// `GET /node/network`: where CCF clients (and the reference's tests) read the service certificate.
async fn node_network(State(service): Shared) -> Response {
    axum::Json(json!({
        "service_certificate": service.service_cert_pem(),
        "service_status": "Open",
        "current_view": service.read(|tx| tx.store().view()),
    }))
    .into_response()
}

/// `GET /app/receipt?transaction_id=V.S`: CCF's JSON receipt; 202 with `Retry-After` until a
/// signature covers the transaction.
async fn get_receipt(State(service): Shared, Query(query): Query<TransactionQuery>) -> Response {
    let Some(id) = query.transaction_id else {
        return ErrorResponse::new(
            StatusCode::BAD_REQUEST,
            "InvalidQueryParameterValue",
            "transaction_id is required",
        )
        .into_response();
    };
    let Ok(version) = id.parse::<Version>() else {
        return ErrorResponse::new(
            StatusCode::BAD_REQUEST,
            "InvalidQueryParameterValue",
            format!("'{id}' is not a transaction ID (view.seqno)"),
        )
        .into_response();
    };
    if service.transaction_status(&id).ok() != Some("Committed") {
        return ErrorResponse::new(
            StatusCode::NOT_FOUND,
            "TransactionNotFound",
            format!("transaction {id} is not committed"),
        )
        .into_response();
    }
    match service.receipt_material(version.seqno) {
        Ok(material) => match receipt::build(&material) {
            Ok(receipt) => axum::Json(receipt).into_response(),
            Err(error) => ErrorResponse::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                error.to_string(),
            )
            .into_response(),
        },
        Err(crate::ledger::LedgerError::NotSigned(_)) => (
            StatusCode::ACCEPTED,
            [(axum::http::header::RETRY_AFTER, "1")],
            "",
        )
            .into_response(),
        Err(error) => ErrorResponse::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            error.to_string(),
        )
        .into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// The clean-room app

#[derive(Deserialize)]
struct StateQuery {
    state: Option<String>,
}

async fn list_contracts(
    State(service): Shared,
    peer: PeerCertificate,
    Query(query): Query<StateQuery>,
) -> Response {
    if let Err(e) = member(&service, &peer) {
        return *e;
    }
    json_or_error(service.read(|tx| app::contracts::list_contracts(tx, query.state.as_deref())))
}

async fn put_contract(
    State(service): Shared,
    peer: PeerCertificate,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(e) = member(&service, &peer) {
        return *e;
    }
    let body = match json_body(&body, &format!("contract {id}")) {
        Ok(b) => b,
        Err(e) => return *e,
    };
    acknowledged(
        service
            .write(|tx, _| app::contracts::put_contract(tx, &id, &body))
            .await,
        StatusCode::OK,
    )
}

async fn get_contract(
    State(service): Shared,
    peer: PeerCertificate,
    Path(id): Path<String>,
) -> Response {
    if let Err(e) = member(&service, &peer) {
        return *e;
    }
    json_or_error(service.read(|tx| app::contracts::get_contract(tx, &id)))
}

async fn contract_runtime_option(
    State(service): Shared,
    peer: PeerCertificate,
    Path((id, option, verb)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> Response {
    match verb.as_str() {
        "status" => {
            // member_cert or no_auth with an attestation (the reference checks its claims; it
            // binds no key, so a replay can only read the status anyone may read).
            if let Caller::Unauthenticated = member_or_anyone(&service, &peer) {
                let body = match json_body(&body, &format!("contract {id} {option} status")) {
                    Ok(b) => b,
                    Err(e) => return *e,
                };
                if let Err(error) =
                    service.read(|tx| app::verify_clean_room(tx, clean_room(&service), &id, &body))
                {
                    return api_error(error).into_response();
                }
            }
            json_or_error(
                service.read(|tx| {
                    app::runtime_options::contract_runtime_option_status(tx, &id, &option)
                }),
            )
        }
        "enable" | "disable" => {
            let member_id = match member(&service, &peer) {
                Ok(m) => m,
                Err(e) => return *e,
            };
            let enable = verb == "enable";
            acknowledged(
                service
                    .write(|tx, _| {
                        app::runtime_options::set_contract_runtime_option(
                            tx, &member_id, &id, &option, enable,
                        )
                    })
                    .await,
                StatusCode::OK,
            )
        }
        other => ErrorResponse::unknown_path(&format!(
            "/app/contracts/{id}/runtimeoptions/{option}/{other}"
        ))
        .into_response(),
    }
}

async fn cgs_runtime_option(
    State(service): Shared,
    peer: PeerCertificate,
    Path(option): Path<String>,
) -> Response {
    if let Err(e) = member(&service, &peer) {
        return *e;
    }
    json_or_error(service.read(|tx| app::runtime_options::runtime_option_status(tx, &option)))
}

#[derive(Deserialize)]
struct EventQuery {
    id: Option<String>,
    scope: Option<String>,
    from_seqno: Option<u64>,
    to_seqno: Option<u64>,
    max_seqno_per_page: Option<u64>,
}

async fn list_events(
    State(service): Shared,
    peer: PeerCertificate,
    Path(id): Path<String>,
    Query(query): Query<EventQuery>,
) -> Response {
    if let Err(e) = member(&service, &peer) {
        return *e;
    }
    let key = EventKey {
        id: query.id,
        scope: query.scope,
    };
    let range = SeqnoRange {
        from_seqno: query.from_seqno,
        to_seqno: query.to_seqno,
        max_seqno_per_page: query.max_seqno_per_page,
    };
    json_or_error(service.read_with_history(|tx, history| {
        app::events::list_events(tx, Some(history), &id, &key, range)
    }))
}

async fn put_event(
    State(service): Shared,
    peer: PeerCertificate,
    Path(id): Path<String>,
    Query(query): Query<EventQuery>,
    body: axum::body::Bytes,
) -> Response {
    let caller = member_or_anyone(&service, &peer);
    let body = match json_body(&body, &format!("event of contract {id}")) {
        Ok(b) => b,
        Err(e) => return *e,
    };
    let key = EventKey {
        id: query.id,
        scope: query.scope,
    };
    let put = |tx: &mut crate::kv::Tx<'_>, _: &[u8]| {
        let verifiers = CleanRoomVerifiers {
            attestation: clean_room(&service),
            signature: &RsaPssVerifier,
        };
        app::events::put_event(tx, &caller, &verifiers, &id, &key, &body)
    };
    acknowledged(service.write(put).await, StatusCode::NO_CONTENT)
}

async fn clean_room_policy(
    State(service): Shared,
    peer: PeerCertificate,
    Path(id): Path<String>,
) -> Response {
    if let Err(e) = member(&service, &peer) {
        return *e;
    }
    axum::Json(service.read(|tx| app::policy::clean_room_policy(tx, &id))).into_response()
}

async fn deployment_spec(State(service): Shared, Path(id): Path<String>) -> Response {
    axum::Json(service.read(|tx| app::policy::deployment_spec(tx, &id))).into_response()
}

async fn deployment_info(State(service): Shared, Path(id): Path<String>) -> Response {
    axum::Json(service.read(|tx| app::policy::deployment_info(tx, &id))).into_response()
}

/// A member-only read answered as JSON: the caller's certificate must be a member's.
fn member_json(
    service: &Service,
    peer: &PeerCertificate,
    read: impl FnOnce(&crate::kv::Tx<'_>) -> Value,
) -> Response {
    if let Err(e) = member(service, peer) {
        return *e;
    }
    axum::Json(service.read(read)).into_response()
}

async fn list_secrets(
    State(service): Shared,
    peer: PeerCertificate,
    Path(id): Path<String>,
) -> Response {
    member_json(&service, &peer, |tx| app::secrets::list_secrets(tx, &id))
}

async fn put_secret(
    State(service): Shared,
    peer: PeerCertificate,
    Path((id, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let caller = member_or_anyone(&service, &peer);
    let body = match json_body(&body, &format!("secret {name} of contract {id}")) {
        Ok(b) => b,
        Err(e) => return *e,
    };
    let put = |tx: &mut crate::kv::Tx<'_>, _: &[u8]| {
        let verifiers = CleanRoomVerifiers {
            attestation: clean_room(&service),
            signature: &RsaPssVerifier,
        };
        app::secrets::put_secret(tx, &caller, &verifiers, &id, &name, &body)
    };
    reply(service.write(put).await)
}

/// A clean room's attested read: the JSON body (`what` names it in an error), then `read` with
/// the service's attestation verifier (which also wraps the answer for the clean room's key).
fn attested_read(
    service: &Service,
    what: &str,
    body: &axum::body::Bytes,
    read: impl FnOnce(
        &crate::kv::Tx<'_>,
        &dyn crate::attestation::CleanRoomAttestation,
        &Value,
    ) -> ApiResult<Value>,
) -> Response {
    let body = match json_body(body, what) {
        Ok(b) => b,
        Err(e) => return *e,
    };
    json_or_error(service.read(|tx| read(tx, clean_room(service), &body)))
}

async fn get_secret(
    State(service): Shared,
    Path((id, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let what = format!("secret {name} of contract {id}");
    attested_read(&service, &what, &body, |tx, clean_room, body| {
        app::secrets::get_secret(tx, clean_room, clean_room, &id, &name, body)
    })
}

// Delegate policies (reference §1c): set by a clean room that satisfies the main policy, with
// its attestation and a signature by the key its report binds; read by members.

async fn list_delegate_policies(
    State(service): Shared,
    peer: PeerCertificate,
    Path(id): Path<String>,
) -> Response {
    member_json(&service, &peer, |tx| {
        app::policy::list_delegate_policies(tx, &id)
    })
}

async fn get_delegate_policy(
    State(service): Shared,
    peer: PeerCertificate,
    Path((id, kind, delegate)): Path<(String, String, String)>,
) -> Response {
    member_json(&service, &peer, |tx| {
        app::policy::delegate_policy(tx, &id, &kind, &delegate)
    })
}

async fn set_delegate_policy(
    State(service): Shared,
    Path((id, kind, delegate)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let body = match json_body(
        &body,
        &format!("delegate policy {kind}/{delegate} of contract {id}"),
    ) {
        Ok(b) => b,
        Err(e) => return *e,
    };
    let set = |tx: &mut crate::kv::Tx<'_>, _: &[u8]| {
        let verifiers = CleanRoomVerifiers {
            attestation: clean_room(&service),
            signature: &RsaPssVerifier,
        };
        app::policy::set_delegate_policy(tx, &verifiers, &id, &kind, &delegate, &body)
    };
    acknowledged(service.write(set).await, StatusCode::OK)
}

// Member documents (reference §1g): drafts by any member, accepted by a `set_member_document`
// proposal, read by the clean room with its attestation.

/// The drafts a member lists: all, or those of `contract`.
fn documents(service: &Service, peer: &PeerCertificate, contract: Option<&str>) -> Response {
    member_json(service, peer, |tx| {
        app::documents::list_documents(tx, contract)
    })
}

async fn list_documents(State(service): Shared, peer: PeerCertificate) -> Response {
    documents(&service, &peer, None)
}

async fn list_contract_documents(
    State(service): Shared,
    peer: PeerCertificate,
    Path(id): Path<String>,
) -> Response {
    documents(&service, &peer, Some(&id))
}

/// A draft's PUT: `contract` is the contract of the route, if any (a body without `contractId`
/// gets it; one naming another contract is refused).
async fn write_document(
    service: &Service,
    peer: &PeerCertificate,
    contract: Option<&str>,
    doc: &str,
    body: &axum::body::Bytes,
) -> Response {
    if let Err(e) = member(service, peer) {
        return *e;
    }
    let mut body = match json_body(body, &format!("member document {doc}")) {
        Ok(b) => b,
        Err(e) => return *e,
    };
    if let (Some(contract), Some(object)) = (contract, body.as_object_mut()) {
        match object.get("contractId").and_then(Value::as_str) {
            None => {
                object.insert("contractId".into(), Value::from(contract));
            }
            Some(named) if named != contract => {
                return api_error(ApiError::new(
                    ErrorCode::InvalidInput,
                    format!(
                        "member document {doc}: the body's contractId '{named}' is not the \
                         route's contract '{contract}'"
                    ),
                ))
                .into_response();
            }
            Some(_) => {}
        }
    }
    acknowledged(
        service
            .write(|tx, _| app::documents::put_document(tx, doc, &body))
            .await,
        StatusCode::OK,
    )
}

async fn put_document(
    State(service): Shared,
    peer: PeerCertificate,
    Path(doc): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    write_document(&service, &peer, None, &doc, &body).await
}

async fn put_contract_document(
    State(service): Shared,
    peer: PeerCertificate,
    Path((id, doc)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    write_document(&service, &peer, Some(&id), &doc, &body).await
}

async fn get_document(
    State(service): Shared,
    peer: PeerCertificate,
    Path(doc): Path<String>,
) -> Response {
    if let Err(e) = member(&service, &peer) {
        return *e;
    }
    json_or_error(service.read(|tx| app::documents::get_document(tx, &doc)))
}

async fn get_contract_document(
    service: Shared,
    peer: PeerCertificate,
    Path((_id, doc)): Path<(String, String)>,
) -> Response {
    get_document(service, peer, Path(doc)).await
}

async fn get_accepted_document(
    State(service): Shared,
    Path((id, doc)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let what = format!("accepted member document {doc}");
    attested_read(&service, &what, &body, |tx, clean_room, body| {
        app::documents::get_accepted_document(tx, clean_room, clean_room, &id, &doc, body)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_error_keeps_its_status_code_and_message() {
        let e = api_error(ApiError::new(
            ErrorCode::PreconditionFailed,
            "stale version of contract c1",
        ));
        assert_eq!(e.status, StatusCode::PRECONDITION_FAILED);
        assert_eq!(e.code, "PreconditionFailed");
        assert!(e.message.contains("c1"));
        let auth = api_error(ApiError::new(
            ErrorCode::InvalidAuthenticationInfo,
            "not Active",
        ));
        assert!(
            auth.headers
                .iter()
                .any(|(name, _)| name == axum::http::header::WWW_AUTHENTICATE)
        );
    }

    #[test]
    fn a_bad_json_body_names_the_route() {
        let response = json_body(b"{", "contract c1").unwrap_err();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(json_body(b"", "x").unwrap(), json!({}));
    }

    #[test]
    fn gov_message_types_name_the_routes() {
        use crate::cose::GovMessageType;
        assert_eq!(
            GovMessageType::Proposal.as_str(),
            gov_api::msg_type::PROPOSAL
        );
        assert_eq!(GovMessageType::Ballot.as_str(), gov_api::msg_type::BALLOT);
    }
}
