//! The consortium flow of the reference, scripted against the state machine's public API only
//! (no HTTP): three members (an ISV that starts the service, a publisher, a consumer) bootstrap,
//! add and activate each other, create / propose / vote a contract, reject another back to Draft,
//! propose a deployment template and a clean-room policy, enable logging (veto rule) and disable it
//! with zero votes, one member withdraws execution consent, and a clean room writes an event that
//! is then listed. Every committed write set is kept as bytes and replayed into a fresh store at
//! the end, as the ledger does at start-up.

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::KeyPair;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use encfs_governance::app::events::{
    CleanRoomVerifiers, EventKey, SeqnoRange, event_body, list_events, put_event,
};
use encfs_governance::app::runtime_options::{
    contract_runtime_option_status, set_contract_runtime_option,
};
use encfs_governance::app::{
    AttestationVerifier, Caller, RsaPssVerifier, VerifiedAttestation, contracts, policy,
};
use encfs_governance::constitution::{BALLOT_ACCEPT, BALLOT_REJECT, member_id_of_certificate};
use encfs_governance::error::{ApiResult, ErrorCode};
use encfs_governance::gov_api::{self, SignedRequest, msg_type};
use encfs_governance::kv::{Store, Tx, Version, WriteSet};
use serde_json::{Value, json};

struct Service {
    store: Store,
    ledger: Vec<(Version, Vec<u8>)>,
    clock: u64,
    signatures: u64,
}

impl Service {
    fn root(&self) -> Vec<u8> {
        digest(&SHA256, self.store.last_version().to_string().as_bytes())
            .as_ref()
            .to_vec()
    }

    fn run<T>(&mut self, op: impl FnOnce(&mut Tx) -> ApiResult<T>) -> ApiResult<T> {
        let mut tx = self.store.transaction();
        let out = op(&mut tx)?;
        let write_set = tx.into_write_set();
        if !write_set.is_empty() {
            let bytes = write_set.to_bytes();
            let version = self.store.commit(&write_set);
            self.ledger.push((version, bytes));
        }
        Ok(out)
    }

    fn read<T>(&self, op: impl FnOnce(&Tx) -> T) -> T {
        op(&self.store.transaction())
    }

    fn signed(
        &mut self,
        member: &str,
        kind: &str,
        proposal_id: Option<&str>,
        payload: Value,
    ) -> SignedRequest {
        self.clock += 1;
        self.signatures += 1;
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
            signature: format!("signature {}", self.signatures).into_bytes(),
        }
    }

    fn propose(&mut self, member: &str, actions: Value) -> Value {
        let request = self.signed(
            member,
            msg_type::PROPOSAL,
            None,
            json!({ "actions": actions }),
        );
        let root = self.root();
        self.run(|tx| gov_api::create_proposal(tx, &request, &root))
            .unwrap()
    }

    fn vote(&mut self, member: &str, proposal_id: &str, accept: bool) -> ApiResult<Value> {
        let ballot = if accept { BALLOT_ACCEPT } else { BALLOT_REJECT };
        let request = self.signed(
            member,
            msg_type::BALLOT,
            Some(proposal_id),
            json!({ "ballot": ballot }),
        );
        self.run(|tx| gov_api::submit_ballot(tx, &request, proposal_id, member))
    }

    fn activate(&mut self, member: &str) {
        let update = self.signed(member, msg_type::STATE_DIGEST, None, Value::Null);
        let root = self.root();
        let digest = self
            .run(|tx| gov_api::update_state_digest(tx, &update, member, Some(&root)))
            .unwrap();
        let ack = self.signed(member, msg_type::ACK, None, digest);
        self.run(|tx| gov_api::ack_state_digest(tx, &ack, member))
            .unwrap();
    }

    fn status(&self, member: &str) -> String {
        self.read(|tx| gov_api::get_member(tx, member)).unwrap()["status"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

fn certificate(name: &str) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    rcgen::CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap()
        .pem()
}

fn id_of(proposal: &Value) -> String {
    proposal["proposalId"].as_str().unwrap().to_owned()
}

/// The attestation "verifier" of this test: the attestation carries its claims and report_data.
struct ClaimsInTheClear;

impl AttestationVerifier for ClaimsInTheClear {
    fn verify(&self, _platform: &str, attestation: &Value) -> Result<VerifiedAttestation, String> {
        let claims = attestation["claims"]
            .as_object()
            .cloned()
            .ok_or("no claims")?;
        let report_data = BASE64
            .decode(
                attestation["report_data"]
                    .as_str()
                    .ok_or("no report_data")?,
            )
            .map_err(|e| e.to_string())?;
        Ok(VerifiedAttestation {
            claims,
            report_data,
        })
    }
}

#[test]
fn three_members_from_bootstrap_to_events() {
    let mut s = Service {
        store: Store::default(),
        ledger: Vec::new(),
        clock: 1_700_000_000,
        signatures: 0,
    };

    // The ISV starts the service with itself as the initial member (Accepted), then activates.
    let isv_cert = certificate("isv");
    let isv = member_id_of_certificate(&isv_cert).unwrap();
    s.run(|tx| {
        gov_api::bootstrap_member(
            tx,
            &isv,
            &isv_cert,
            None,
            Some(json!({"identifier": "isv"})),
        )
    })
    .unwrap();
    assert_eq!(s.status(&isv), "Accepted");
    s.activate(&isv);
    assert_eq!(s.status(&isv), "Active");

    // Add the publisher and the consumer; each addition needs every Active member.
    let mut members = vec![isv.clone()];
    for name in ["publisher", "consumer"] {
        let cert = certificate(name);
        let id = member_id_of_certificate(&cert).unwrap();
        let p = s.propose(&members[0], json!([{"name": "set_member", "args": {"cert": cert, "member_data": {"identifier": name}}}]));
        assert_eq!(p["proposalState"], "Open");
        for m in members.clone() {
            s.vote(&m, &id_of(&p), true).unwrap();
        }
        assert_eq!(s.status(&id), "Accepted");
        // An Accepted member cannot vote or propose yet.
        let request = s.signed(&id, msg_type::PROPOSAL, None, json!({"actions": []}));
        let root = s.root();
        let refused = s
            .run(|tx| gov_api::create_proposal(tx, &request, &root))
            .unwrap_err();
        assert_eq!(
            (refused.status, refused.code),
            (401, ErrorCode::InvalidAuthenticationInfo)
        );
        s.activate(&id);
        members.push(id);
    }
    let (publisher, consumer) = (members[1].clone(), members[2].clone());
    assert_eq!(
        s.read(gov_api::list_members)["value"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // Contract create / propose / vote by all.
    s.run(|tx| contracts::put_contract(tx, "collab", &json!({"data": "applications: [demo-app]"})))
        .unwrap();
    let draft = s.read(|tx| contracts::get_contract(tx, "collab")).unwrap();
    assert_eq!(draft["state"], "Draft");
    let p = s.propose(
        &consumer,
        json!([{"name": "set_contract", "args": {"contractId": "collab", "contract": draft}}]),
    );
    let pid = id_of(&p);
    assert_eq!(
        s.read(|tx| contracts::get_contract(tx, "collab")).unwrap()["state"],
        "Proposed"
    );
    assert_eq!(
        s.read(|tx| contracts::list_contracts(tx, Some("Proposed")))
            .unwrap(),
        json!({"value": [{"id": "collab"}]})
    );
    // A second set_contract proposal for the same id is Rejected; the first stays Open.
    let second = s.propose(
        &publisher,
        json!([{"name": "set_contract", "args": {"contractId": "collab", "contract": draft}}]),
    );
    assert_eq!(second["proposalState"], "Rejected");
    for (i, m) in members.iter().enumerate() {
        let out = s.vote(m, &pid, true).unwrap();
        let expected = if i == 2 { "Accepted" } else { "Open" };
        assert_eq!(out["proposalState"], expected);
    }
    let accepted = s.read(|tx| contracts::get_contract(tx, "collab")).unwrap();
    assert_eq!(accepted["state"], "Accepted");
    assert_eq!(accepted["proposalId"], pid.as_str());
    assert_eq!(accepted["finalVotes"].as_array().unwrap().len(), 3);
    let put_again = s
        .run(|tx| contracts::put_contract(tx, "collab", &json!({"data": "x"})))
        .unwrap_err();
    assert_eq!(
        (put_again.status, put_again.code),
        (405, ErrorCode::ContractAlreadyAccepted)
    );

    // A rejected contract goes back to Draft.
    s.run(|tx| contracts::put_contract(tx, "other", &json!({"data": "y"})))
        .unwrap();
    let other = s.read(|tx| contracts::get_contract(tx, "other")).unwrap();
    let p = s.propose(
        &isv,
        json!([{"name": "set_contract", "args": {"contractId": "other", "contract": other}}]),
    );
    s.vote(&isv, &id_of(&p), true).unwrap();
    let out = s.vote(&publisher, &id_of(&p), false).unwrap();
    assert_eq!(out["proposalState"], "Rejected");
    assert_eq!(
        s.read(|tx| contracts::get_contract(tx, "other")).unwrap()["state"],
        "Draft"
    );

    // Deployment template and clean-room policy, each voted by all.
    let template = s.propose(&isv, json!([{"name": "set_deployment_spec", "args": {"contractId": "collab", "spec": {"data": {"resources": []}}}}]));
    assert_eq!(
        s.read(|tx| policy::deployment_spec(tx, "collab"))["proposalIds"],
        json!([id_of(&template)])
    );
    let hostdata = "73973b78d70cc68353426de188db5dfc57e5b766e399935fb73a61127ea26d20";
    let clean_room = s.propose(
        &isv,
        json!([{"name": "set_clean_room_policy", "args": {
        "contractId": "collab", "type": "add",
        "claims": {"x-ms-sevsnpvm-hostdata": hostdata, "x-ms-sevsnpvm-is-debuggable": false}}}]),
    );
    for m in &members {
        s.vote(m, &id_of(&template), true).unwrap();
        s.vote(m, &id_of(&clean_room), true).unwrap();
    }
    assert_eq!(
        s.read(|tx| policy::deployment_spec(tx, "collab")),
        json!({"proposalIds": [], "data": {"resources": []}})
    );
    assert_eq!(
        s.read(|tx| policy::clean_room_policy(tx, "collab"))["policy"],
        json!({"x-ms-sevsnpvm-hostdata": [hostdata], "x-ms-sevsnpvm-is-debuggable": [false]})
    );

    // Logging: enabling is a veto action (one reject rejects it; all accept enables it) ...
    let logging = |tx: &Tx| contract_runtime_option_status(tx, "collab", "logging").unwrap();
    assert_eq!(
        s.read(logging),
        json!({"status": "disabled", "proposalIds": []})
    );
    let enable = json!([{"name": "set_contract_runtime_options_enable_logging", "args": {"contractId": "collab"}}]);
    let vetoed = s.propose(&consumer, enable.clone());
    assert_eq!(s.read(logging)["proposalIds"], json!([id_of(&vetoed)]));
    assert_eq!(
        s.vote(&isv, &id_of(&vetoed), false).unwrap()["proposalState"],
        "Rejected"
    );
    let p = s.propose(&consumer, enable);
    for m in &members {
        s.vote(m, &id_of(&p), true).unwrap();
    }
    assert_eq!(s.read(logging)["status"], "enabled");
    // ... and disabling is accepted with zero votes.
    let disable = s.propose(&publisher, json!([{"name": "set_contract_runtime_options_disable_logging", "args": {"contractId": "collab"}}]));
    assert_eq!(disable["proposalState"], "Accepted");
    assert_eq!(disable["finalVotes"], json!({}));
    assert_eq!(s.read(logging)["status"], "disabled");

    // Execution consent: enabled once accepted; one member's disable turns it off.
    let execution = |tx: &Tx| contract_runtime_option_status(tx, "collab", "execution").unwrap();
    assert_eq!(s.read(execution), json!({"status": "enabled"}));
    s.run(|tx| set_contract_runtime_option(tx, &publisher, "collab", "execution", false))
        .unwrap();
    let status = s.read(execution);
    assert_eq!(status["status"], "disabled");
    assert_eq!(
        status["reason"]["message"],
        format!("Contract has been disabled by the following member(s): m[{publisher}].")
    );
    s.run(|tx| set_contract_runtime_option(tx, &publisher, "collab", "execution", true))
        .unwrap();
    assert_eq!(s.read(execution)["status"], "enabled");

    // A clean room with a matching attestation writes an event; members list it.
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let public_pem = pem::encode(&pem::Pem::new(
        "PUBLIC KEY",
        key.public_key().as_der().unwrap().as_ref().to_vec(),
    ));
    let mut report_data = digest(&SHA256, public_pem.as_bytes()).as_ref().to_vec();
    report_data.extend_from_slice(&[0; 32]);
    let data = json!({"message": "Starting execution of demo-app container"});
    let mut signature = vec![0; key.public_modulus_len()];
    key.sign(
        &aws_lc_rs::signature::RSA_PSS_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        data.to_string().as_bytes(),
        &mut signature,
    )
    .unwrap();
    let attestation = json!({
        "claims": {"x-ms-sevsnpvm-hostdata": hostdata, "x-ms-sevsnpvm-is-debuggable": false},
        "report_data": BASE64.encode(&report_data),
    });
    let body = event_body(
        1_700_000_123_456,
        &data,
        &BASE64.encode(&signature),
        &BASE64.encode(&public_pem),
        Some(attestation),
    );
    let verifiers = CleanRoomVerifiers {
        attestation: &ClaimsInTheClear,
        signature: &RsaPssVerifier,
    };
    s.run(|tx| {
        put_event(
            tx,
            &Caller::Unauthenticated,
            &verifiers,
            "collab",
            &EventKey::default(),
            &body,
        )
    })
    .unwrap();
    let events = s
        .read(|tx| {
            list_events(
                tx,
                None,
                "collab",
                &EventKey::default(),
                SeqnoRange::default(),
            )
        })
        .unwrap();
    assert_eq!(
        events["value"][0]["data"]["message"],
        "Starting execution of demo-app container"
    );
    assert_eq!(events["value"][0]["timestamp"], "1700000123456");

    // `event list --all`: the whole history, from the store's record of event writes.
    let all = s
        .read(|tx| {
            list_events(
                tx,
                Some(&s.store),
                "collab",
                &EventKey::default(),
                SeqnoRange {
                    from_seqno: Some(1),
                    ..Default::default()
                },
            )
        })
        .unwrap();
    assert_eq!(all["value"].as_array().unwrap().len(), 1);
    assert_eq!(all["value"][0]["timestampIso"], "2023-11-14T22:15:23.456Z");

    // Replaying the ledger's write sets rebuilds the same state, byte for byte.
    let mut replayed = Store::default();
    for (version, bytes) in &s.ledger {
        replayed
            .apply(*version, &WriteSet::from_bytes(bytes).unwrap())
            .unwrap();
    }
    assert_eq!(replayed.snapshot_bytes(), s.store.snapshot_bytes());
}
