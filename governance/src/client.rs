//! The governance client: the reference's cgs-client operations (members, proposals, ballots,
//! contracts, runtime options, events, deployment spec and policy) over HTTPS, pinned to the
//! service certificate, signing every gov request as a COSE_Sign1 message with the member's
//! identity key and calling the app routes with the member certificate (mutual TLS).
//!
//! It speaks only the wire protocol (CCF gov API 2024-07-01 and the clean-room app routes), so it
//! targets the encfs service and a CCF service running the reference app alike.

use std::time::{SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde_json::{Value, json};

use crate::constitution::{BALLOT_ACCEPT, BALLOT_REJECT};
use crate::cose::{GovMessageType, GovernanceMessage};
use crate::identity::MemberIdentity;
use crate::transport::{
    ClientIdentity, CommitStatusRoute, CommitWait, GovernanceTransport, RequestBody,
    ServiceResponse, TransportError, TransportOptions,
};

const API_VERSION: &str = "api-version=2024-07-01";

/// A failure of a client operation.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The service answered with an error, or could not be reached (names the URL).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A check the reference client makes before calling the service (400 in the reference).
    #[error("{code}: {message}")]
    Refused {
        /// The reference's error code (`VersionMissing`, `ContractModified`, …).
        code: &'static str,
        /// What is wrong, naming the contract or proposal.
        message: String,
    },
    /// Signing the request failed.
    #[error("signing the {what} request: {reason}")]
    Signing {
        /// The message type.
        what: &'static str,
        /// The cause.
        reason: String,
    },
    /// The identity could not be used for TLS.
    #[error("member identity: {0}")]
    Identity(String),
}

impl ClientError {
    fn refused(code: &'static str, message: impl Into<String>) -> Self {
        Self::Refused {
            code,
            message: message.into(),
        }
    }
}

/// Result of a client operation.
pub type ClientResult<T> = Result<T, ClientError>;

/// A member's client of one governance service.
pub struct GovernanceClient {
    transport: GovernanceTransport,
    identity: MemberIdentity,
    wait: CommitWait,
}

impl std::fmt::Debug for GovernanceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GovernanceClient")
            .field("endpoint", &self.transport.endpoint())
            .field("member", &self.identity.member_id())
            .finish()
    }
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl GovernanceClient {
    /// A client of `endpoint` that trusts only `service_cert_pem` and acts as `identity`.
    ///
    /// # Errors
    /// [`ClientError::Transport`] for a bad endpoint or certificate, [`ClientError::Identity`].
    pub fn new(
        endpoint: &str,
        service_cert_pem: &str,
        identity: MemberIdentity,
    ) -> ClientResult<Self> {
        let tls_identity = ClientIdentity::from_pem(&identity.cert_pem(), &identity.key().to_pem())
            .map_err(|e| ClientError::Identity(e.to_string()))?;
        let transport = GovernanceTransport::new(
            endpoint,
            service_cert_pem,
            Some(&tls_identity),
            TransportOptions::default(),
        )?;
        Ok(Self {
            transport,
            identity,
            wait: CommitWait::default(),
        })
    }

    /// The member id this client signs as.
    pub fn member_id(&self) -> String {
        self.identity.member_id()
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &str {
        self.transport.endpoint()
    }

    fn sign(
        &self,
        msg_type: GovMessageType,
        proposal_id: Option<&str>,
        payload: &[u8],
    ) -> ClientResult<Vec<u8>> {
        self.identity
            .sign(&GovernanceMessage {
                msg_type,
                created_at: now_seconds(),
                proposal_id,
                payload,
            })
            .map_err(|e| ClientError::Signing {
                what: msg_type.as_str(),
                reason: e.to_string(),
            })
    }

    async fn signed(
        &self,
        path: &str,
        msg_type: GovMessageType,
        proposal_id: Option<&str>,
        payload: &[u8],
    ) -> ClientResult<ServiceResponse> {
        let envelope = self.sign(msg_type, proposal_id, payload)?;
        let path = format!("{path}?{API_VERSION}");
        Ok(self
            .transport
            .send_and_wait_for_commit(
                Method::POST,
                &path,
                RequestBody::Cose(envelope),
                &CommitStatusRoute::GovServiceTransactions,
                self.wait,
            )
            .await?)
    }

    async fn gov_get(&self, path: &str) -> ClientResult<Value> {
        Ok(self
            .transport
            .get(&format!("{path}?{API_VERSION}"))
            .await?
            .json()?)
    }

    async fn app(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> ClientResult<ServiceResponse> {
        let body = match body {
            Some(value) => RequestBody::json(value).expect("a JSON value serialises"),
            None => RequestBody::Empty,
        };
        let write = method != Method::GET && !path.ends_with("/status");
        if write {
            Ok(self
                .transport
                .send_and_wait_for_commit(method, path, body, &CommitStatusRoute::AppTx, self.wait)
                .await?)
        } else {
            Ok(self.transport.send(method, path, body).await?)
        }
    }

    fn json_or_empty(response: &ServiceResponse) -> ClientResult<Value> {
        if response.body.is_empty() {
            Ok(Value::Null)
        } else {
            Ok(response.json()?)
        }
    }

    // -- proposals and ballots ----------------------------------------------------------------

    /// Creates a proposal of `actions` (`[{name, args}]`); the proposal object.
    pub async fn propose(&self, actions: Value) -> ClientResult<Value> {
        let payload = serde_json::to_vec(&json!({ "actions": actions })).expect("JSON");
        let response = self
            .signed(
                "/gov/members/proposals:create",
                GovMessageType::Proposal,
                None,
                &payload,
            )
            .await?;
        Ok(response.json()?)
    }

    /// Votes on a proposal with one of the two canonical ballots; the proposal object.
    pub async fn vote(&self, proposal_id: &str, accept: bool) -> ClientResult<Value> {
        let ballot = if accept { BALLOT_ACCEPT } else { BALLOT_REJECT };
        self.submit_ballot(proposal_id, ballot).await
    }

    /// Submits a ballot (JavaScript source, as CCF takes it); the proposal object.
    pub async fn submit_ballot(&self, proposal_id: &str, ballot: &str) -> ClientResult<Value> {
        let payload = serde_json::to_vec(&json!({ "ballot": ballot })).expect("JSON");
        let path = format!(
            "/gov/members/proposals/{proposal_id}/ballots/{}:submit",
            self.member_id()
        );
        Ok(self
            .signed(&path, GovMessageType::Ballot, Some(proposal_id), &payload)
            .await?
            .json()?)
    }

    /// Withdraws one of this member's proposals; the proposal object (`null` if unknown).
    pub async fn withdraw(&self, proposal_id: &str) -> ClientResult<Value> {
        let path = format!("/gov/members/proposals/{proposal_id}:withdraw");
        let response = self
            .signed(&path, GovMessageType::Withdrawal, Some(proposal_id), &[])
            .await?;
        Self::json_or_empty(&response)
    }

    /// All proposals the service keeps.
    pub async fn proposals(&self) -> ClientResult<Value> {
        self.gov_get("/gov/members/proposals").await
    }

    /// One proposal.
    pub async fn proposal(&self, proposal_id: &str) -> ClientResult<Value> {
        self.gov_get(&format!("/gov/members/proposals/{proposal_id}"))
            .await
    }

    /// The actions a proposal carries.
    pub async fn proposal_actions(&self, proposal_id: &str) -> ClientResult<Value> {
        self.gov_get(&format!("/gov/members/proposals/{proposal_id}/actions"))
            .await
    }

    // -- members -------------------------------------------------------------------------------

    /// The consortium's members.
    pub async fn members(&self) -> ClientResult<Value> {
        self.gov_get("/gov/service/members").await
    }

    /// Activates this member: `state-digests/{me}:update`, then `:ack` with the digest (the
    /// member goes from Accepted to Active).
    pub async fn activate(&self) -> ClientResult<Value> {
        let me = self.member_id();
        let digest: Value = self
            .signed(
                &format!("/gov/members/state-digests/{me}:update"),
                GovMessageType::StateDigest,
                None,
                &[],
            )
            .await?
            .json()?;
        let payload = serde_json::to_vec(&digest).expect("JSON");
        self.signed(
            &format!("/gov/members/state-digests/{me}:ack"),
            GovMessageType::Ack,
            None,
            &payload,
        )
        .await?;
        Ok(json!({ "memberId": me, "status": "Active" }))
    }

    /// Proposes a new member (`set_member`).
    pub async fn propose_member(
        &self,
        cert_pem: &str,
        identifier: &str,
        tenant_id: Option<&str>,
        encryption_pub_key: Option<&str>,
    ) -> ClientResult<Value> {
        let mut member_data = json!({ "identifier": identifier });
        if let Some(tenant) = tenant_id {
            member_data["tenantId"] = json!(tenant);
        }
        let mut args = json!({ "cert": cert_pem, "member_data": member_data });
        if let Some(key) = encryption_pub_key {
            args["encryption_pub_key"] = json!(key);
        }
        self.propose(json!([{ "name": "set_member", "args": args }]))
            .await
    }

    /// Proposes new member data for this member (`set_member_data`, e.g. a tenant id).
    pub async fn propose_member_data(&self, member_data: Value) -> ClientResult<Value> {
        self.propose(json!([{ "name": "set_member_data", "args": { "member_id": self.member_id(), "member_data": member_data } }]))
            .await
    }

    // -- contracts -----------------------------------------------------------------------------

    /// Creates (or, with `version`, updates) a draft contract.
    pub async fn put_contract(
        &self,
        contract_id: &str,
        data: Value,
        version: Option<&str>,
    ) -> ClientResult<()> {
        let mut body = json!({ "data": data });
        if let Some(v) = version {
            body["version"] = json!(v);
        }
        self.app(
            Method::PUT,
            &format!("/app/contracts/{contract_id}"),
            Some(&body),
        )
        .await?;
        Ok(())
    }

    /// A contract: `{id, version, state, data, proposalId, finalVotes?}`.
    pub async fn contract(&self, contract_id: &str) -> ClientResult<Value> {
        Ok(self
            .app(Method::POST, &format!("/app/contracts/{contract_id}"), None)
            .await?
            .json()?)
    }

    /// Contract ids, optionally of one state.
    pub async fn contracts(&self, state: Option<&str>) -> ClientResult<Value> {
        let path = match state {
            Some(s) => format!("/app/contracts?state={s}"),
            None => "/app/contracts".to_owned(),
        };
        Ok(self.app(Method::GET, &path, None).await?.json()?)
    }

    /// Proposes a contract for acceptance at `version` (the reference client refuses a missing
    /// or stale version: `VersionMissing`, `ContractModified`).
    pub async fn propose_contract(
        &self,
        contract_id: &str,
        version: Option<&str>,
    ) -> ClientResult<Value> {
        let Some(version) = version else {
            return Err(ClientError::refused(
                "VersionMissing",
                format!("contract {contract_id}: a version is required"),
            ));
        };
        let contract = self.contract(contract_id).await?;
        let current = contract
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if current != version {
            return Err(ClientError::refused(
                "ContractModified",
                format!(
                    "contract {contract_id} is at version {current}, not {version}: it was modified"
                ),
            ));
        }
        self.propose(json!([{ "name": "set_contract", "args": { "contractId": contract_id, "contract": contract } }]))
            .await
    }

    /// Votes on a contract's open proposal, checking it is the one the contract names.
    pub async fn vote_contract(
        &self,
        contract_id: &str,
        proposal_id: Option<&str>,
        accept: bool,
    ) -> ClientResult<Value> {
        let Some(proposal_id) = proposal_id else {
            return Err(ClientError::refused(
                "ProposalIdMissing",
                format!("contract {contract_id}: a proposal id is required"),
            ));
        };
        let contract = self.contract(contract_id).await?;
        if contract.get("state").and_then(Value::as_str) != Some("Proposed") {
            return Err(ClientError::refused(
                "ContractNotProposed",
                format!("contract {contract_id} is not proposed"),
            ));
        }
        if contract.get("proposalId").and_then(Value::as_str) != Some(proposal_id) {
            return Err(ClientError::refused(
                "ProposalIdMismatch",
                format!(
                    "contract {contract_id} is proposed by another proposal than {proposal_id}"
                ),
            ));
        }
        self.vote(proposal_id, accept).await
    }

    // -- runtime options, events ---------------------------------------------------------------

    /// A contract's runtime option status (`execution`, `logging`, `telemetry`).
    pub async fn runtime_option(&self, contract_id: &str, option: &str) -> ClientResult<Value> {
        let path = format!("/app/contracts/{contract_id}/runtimeoptions/{option}/status");
        Ok(self.app(Method::POST, &path, None).await?.json()?)
    }

    /// Sets this member's execution consent (`execution` only; others go through proposals).
    pub async fn set_runtime_option(
        &self,
        contract_id: &str,
        option: &str,
        enable: bool,
    ) -> ClientResult<()> {
        let verb = if enable { "enable" } else { "disable" };
        self.app(
            Method::POST,
            &format!("/app/contracts/{contract_id}/runtimeoptions/{option}/{verb}"),
            None,
        )
        .await?;
        Ok(())
    }

    /// Proposes enabling or disabling logging or telemetry for a contract.
    pub async fn propose_runtime_option(
        &self,
        contract_id: &str,
        option: &str,
        enable: bool,
    ) -> ClientResult<Value> {
        if option != "logging" && option != "telemetry" {
            return Err(ClientError::refused(
                "InvalidOption",
                format!("only logging and telemetry are proposed; '{option}' is set per member"),
            ));
        }
        let verb = if enable { "enable" } else { "disable" };
        let action = format!("set_contract_runtime_options_{verb}_{option}");
        self.propose(json!([{ "name": action, "args": { "contractId": contract_id } }]))
            .await
    }

    /// A contract's events: the latest of each key, or with `all` the whole history.
    pub async fn events(
        &self,
        contract_id: &str,
        id: Option<&str>,
        scope: Option<&str>,
        all: bool,
    ) -> ClientResult<Value> {
        let mut query = Vec::new();
        if let Some(id) = id {
            query.push(format!("id={id}"));
        }
        if let Some(scope) = scope {
            query.push(format!("scope={scope}"));
        }
        if all {
            query.push("from_seqno=1".to_owned());
        }
        let mut path = format!("/app/contracts/{contract_id}/events");
        if !query.is_empty() {
            path = format!("{path}?{}", query.join("&"));
        }
        Ok(self.app(Method::GET, &path, None).await?.json()?)
    }

    // -- deployment spec and clean-room policy -------------------------------------------------

    /// Proposes a deployment template (`set_deployment_spec`).
    pub async fn propose_deployment_spec(
        &self,
        contract_id: &str,
        template: Value,
    ) -> ClientResult<Value> {
        self.propose(json!([{ "name": "set_deployment_spec", "args": { "contractId": contract_id, "spec": { "data": template } } }]))
            .await
    }

    /// The deployment spec (`{proposalIds, data}`).
    pub async fn deployment_spec(&self, contract_id: &str) -> ClientResult<Value> {
        Ok(self
            .app(
                Method::POST,
                &format!("/app/contracts/{contract_id}/deploymentspec"),
                None,
            )
            .await?
            .json()?)
    }

    /// Proposes a clean-room policy (`{type, policyType?, claims}`, as `deployment generate`
    /// writes it to `cleanroom-governance-policy.json`).
    pub async fn propose_clean_room_policy(
        &self,
        contract_id: &str,
        policy: Value,
    ) -> ClientResult<Value> {
        for (field, code) in [("type", "TypeMissing"), ("claims", "ClaimsMissing")] {
            if policy.get(field).is_none() {
                return Err(ClientError::refused(
                    code,
                    format!("the policy for contract {contract_id} has no '{field}'"),
                ));
            }
        }
        let mut args = policy;
        args["contractId"] = json!(contract_id);
        self.propose(json!([{ "name": "set_clean_room_policy", "args": args }]))
            .await
    }

    /// The clean-room policy (`{proposalIds, policy}`).
    pub async fn clean_room_policy(&self, contract_id: &str) -> ClientResult<Value> {
        Ok(self
            .app(
                Method::POST,
                &format!("/app/contracts/{contract_id}/cleanroompolicy"),
                None,
            )
            .await?
            .json()?)
    }

    /// A receipt of a committed transaction (`view.seqno`), waiting while the service answers
    /// 202 (no signature covers it yet).
    pub async fn receipt(&self, transaction_id: &str) -> ClientResult<Value> {
        let path = format!("/app/receipt?transaction_id={transaction_id}");
        for _ in 0..20 {
            let response = self.transport.get(&path).await?;
            if response.status != 202 {
                return Ok(response.json()?);
            }
            tokio::time::sleep(self.wait.interval).await;
        }
        Err(ClientError::refused(
            "ReceiptNotReady",
            format!("no signature covers transaction {transaction_id} yet"),
        ))
    }

    /// Sends a raw request (for tests and scripts): the response as received.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: RequestBody,
    ) -> ClientResult<ServiceResponse> {
        Ok(self.transport.send(method, path, body).await?)
    }
}
