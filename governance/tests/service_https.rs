//! The governance service end to end over real HTTPS on 127.0.0.1, driven only through the wire
//! protocol by [`GovernanceClient`]: three members (an ISV that starts the service, a publisher,
//! a consumer) add and activate each other, accept a contract, reject another back to Draft,
//! accept a deployment template and a clean-room policy, enable logging by unanimity (one reject
//! vetoes) and disable it with zero votes, withdraw execution consent; then the refusals, each
//! with its status and code; a receipt that verifies against the service certificate; and a
//! restart that keeps every acknowledged transaction.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use encfs_governance::client::{ClientError, GovernanceClient};
use encfs_governance::cose::{GovMessageType, GovernanceMessage};
use encfs_governance::identity::{self, MemberIdentity};
use encfs_governance::ledger::LedgerConfig;
use encfs_governance::receipt::Receipt;
use encfs_governance::server::{RunningServer, ServerLimits};
use encfs_governance::service::{Service, ServiceConfig};
use encfs_governance::transport::{RequestBody, TransportError};
use reqwest::Method;
use serde_json::{Value, json};

fn identity_in(dir: &Path, name: &str) -> MemberIdentity {
    let member = MemberIdentity::generate(name).unwrap();
    member.write_pems(dir).unwrap();
    let (key, cert) = MemberIdentity::file_paths(dir, name);
    MemberIdentity::load(&cert, &key).unwrap()
}

fn config(dir: &Path, initial: &[&MemberIdentity]) -> ServiceConfig {
    ServiceConfig {
        data_dir: dir.to_path_buf(),
        initial_members: initial.iter().map(|m| m.cert_pem()).collect(),
        ledger: LedgerConfig {
            signature_interval_txs: 10,
            signature_interval: std::time::Duration::from_millis(100),
        },
    }
}

async fn start(config: &ServiceConfig) -> (Arc<Service>, RunningServer, String) {
    let service = Service::open(config).unwrap();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = service.serve(addr, ServerLimits::default()).await.unwrap();
    let endpoint = format!("https://127.0.0.1:{}", server.local_addr().port());
    (service, server, endpoint)
}

fn client(endpoint: &str, service: &Service, dir: &Path, name: &str) -> GovernanceClient {
    let (key, cert) = MemberIdentity::file_paths(dir, name);
    GovernanceClient::new(
        endpoint,
        service.service_cert_pem(),
        MemberIdentity::load(&cert, &key).unwrap(),
    )
    .unwrap()
}

fn state(proposal: &Value) -> &str {
    proposal["proposalState"].as_str().unwrap_or("?")
}

fn id(proposal: &Value) -> String {
    proposal["proposalId"].as_str().unwrap().to_owned()
}

/// The service's status and error code of a failed call.
fn refusal<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Transport(TransportError::Service { status, code, .. })) => (status, code),
        Err(ClientError::Refused { code, .. }) => (400, code.to_owned()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Every member in `voters` accepts; the last answer.
async fn all_accept(voters: &[&GovernanceClient], proposal_id: &str) -> Value {
    let mut last = Value::Null;
    for voter in voters {
        last = voter.vote(proposal_id, true).await.unwrap();
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consortium_flow_over_https_and_its_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let isv_id = identity_in(&keys, "isv");
    identity_in(&keys, "publisher");
    identity_in(&keys, "consumer");
    identity_in(&keys, "late");
    identity_in(&keys, "stranger");
    let config = config(&dir.path().join("service"), &[&isv_id]);
    let (service, server, endpoint) = start(&config).await;
    assert!(
        dir.path()
            .join("service")
            .join(identity::SERVICE_CERT_FILE)
            .exists()
    );

    // The consortium: the ISV activates, then adds the publisher and the consumer.
    let isv = client(&endpoint, &service, &keys, "isv");
    let publisher = client(&endpoint, &service, &keys, "publisher");
    let consumer = client(&endpoint, &service, &keys, "consumer");
    let members = isv.members().await.unwrap();
    assert_eq!(members["value"][0]["status"], "Accepted");
    isv.activate().await.unwrap();
    let p = isv
        .propose_member(
            &std::fs::read_to_string(keys.join("publisher_cert.pem")).unwrap(),
            "publisher",
            Some("tenant-p"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(state(&p), "Open");
    assert_eq!(state(&isv.vote(&id(&p), true).await.unwrap()), "Accepted");
    publisher.activate().await.unwrap();
    let p = isv
        .propose_member(
            &std::fs::read_to_string(keys.join("consumer_cert.pem")).unwrap(),
            "consumer",
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        state(&all_accept(&[&isv, &publisher], &id(&p)).await),
        "Accepted"
    );
    consumer.activate().await.unwrap();
    let members = isv.members().await.unwrap();
    let active = members["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["status"] == "Active")
        .count();
    assert_eq!(active, 3, "{members}");
    let everyone = [&isv, &publisher, &consumer];

    // A contract: create, propose at its version, all three accept.
    publisher
        .put_contract("collab", json!("spec: v1"), None)
        .await
        .unwrap();
    let draft = publisher.contract("collab").await.unwrap();
    assert_eq!(draft["state"], "Draft");
    let version = draft["version"].as_str().unwrap().to_owned();
    let p = publisher
        .propose_contract("collab", Some(&version))
        .await
        .unwrap();
    assert_eq!(
        publisher.contract("collab").await.unwrap()["state"],
        "Proposed"
    );
    for voter in everyone {
        voter
            .vote_contract("collab", Some(&id(&p)), true)
            .await
            .unwrap();
    }
    let accepted = consumer.contract("collab").await.unwrap();
    assert_eq!(accepted["state"], "Accepted", "{accepted}");
    assert_eq!(accepted["finalVotes"].as_array().unwrap().len(), 3);
    assert_eq!(
        refusal(
            publisher
                .put_contract("collab", json!("x"), Some(&version))
                .await
        ),
        (405, "ContractAlreadyAccepted".into())
    );

    // A rejected contract goes back to Draft; stale versions are refused.
    consumer
        .put_contract("other", json!("spec: v1"), None)
        .await
        .unwrap();
    assert_eq!(
        refusal(
            consumer
                .put_contract("other", json!("spec: v2"), None)
                .await
        ),
        (409, "ContractAlreadyExists".into())
    );
    assert_eq!(
        refusal(
            consumer
                .put_contract("other", json!("spec: v2"), Some("1.1"))
                .await
        ),
        (412, "PreconditionFailed".into())
    );
    let v = consumer.contract("other").await.unwrap()["version"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        refusal(consumer.propose_contract("other", None).await),
        (400, "VersionMissing".into())
    );
    assert_eq!(
        refusal(consumer.propose_contract("other", Some("1.1")).await),
        (400, "ContractModified".into())
    );
    let p = consumer.propose_contract("other", Some(&v)).await.unwrap();
    assert_eq!(
        refusal(
            isv.vote_contract("other", Some("0".repeat(64).as_str()), true)
                .await
        ),
        (400, "ProposalIdMismatch".into())
    );
    let rejected = isv
        .vote_contract("other", Some(&id(&p)), false)
        .await
        .unwrap();
    assert_eq!(state(&rejected), "Rejected");
    assert_eq!(consumer.contract("other").await.unwrap()["state"], "Draft");

    // Deployment template and clean-room policy, voted by all.
    let template = json!({"$schema": "arm", "resources": []});
    let p = publisher
        .propose_deployment_spec("collab", template.clone())
        .await
        .unwrap();
    assert_eq!(state(&all_accept(&everyone, &id(&p)).await), "Accepted");
    assert_eq!(
        isv.deployment_spec("collab").await.unwrap()["data"],
        template
    );
    let policy = json!({"type": "add", "policyType": "snp-caci", "claims": {"x-ms-sevsnpvm-is-debuggable": false, "x-ms-sevsnpvm-hostdata": "73973b78"}});
    let p = consumer
        .propose_clean_room_policy("collab", policy)
        .await
        .unwrap();
    assert_eq!(state(&all_accept(&everyone, &id(&p)).await), "Accepted");
    let shown = publisher.clean_room_policy("collab").await.unwrap();
    assert_eq!(
        shown["policy"]["x-ms-sevsnpvm-hostdata"],
        json!(["73973b78"]),
        "{shown}"
    );

    // Logging: one reject vetoes an enable; all accept enables; disable needs no vote.
    let p = publisher
        .propose_runtime_option("collab", "logging", true)
        .await
        .unwrap();
    isv.vote(&id(&p), true).await.unwrap();
    assert_eq!(
        state(&consumer.vote(&id(&p), false).await.unwrap()),
        "Rejected"
    );
    assert_eq!(
        isv.runtime_option("collab", "logging").await.unwrap()["status"],
        "disabled"
    );
    let p = publisher
        .propose_runtime_option("collab", "logging", true)
        .await
        .unwrap();
    assert_eq!(state(&all_accept(&everyone, &id(&p)).await), "Accepted");
    assert_eq!(
        isv.runtime_option("collab", "logging").await.unwrap()["status"],
        "enabled"
    );
    let p = consumer
        .propose_runtime_option("collab", "logging", false)
        .await
        .unwrap();
    assert_eq!(
        state(&p),
        "Accepted",
        "disabling logging is accepted with zero votes"
    );
    assert_eq!(
        isv.runtime_option("collab", "logging").await.unwrap()["status"],
        "disabled"
    );

    // Execution consent: on by default once accepted; one member withdraws it.
    assert_eq!(
        isv.runtime_option("collab", "execution").await.unwrap()["status"],
        "enabled"
    );
    consumer
        .set_runtime_option("collab", "execution", false)
        .await
        .unwrap();
    let status = isv.runtime_option("collab", "execution").await.unwrap();
    assert_eq!(status["status"], "disabled");
    assert_eq!(status["reason"]["code"], "ContractDisabled");
    assert_eq!(
        isv.events("collab", None, None, false).await.unwrap(),
        json!({"value": []})
    );

    // Refusals.
    let stranger = client(&endpoint, &service, &keys, "stranger");
    assert_eq!(
        refusal(stranger.propose(json!([])).await),
        (401, "InvalidAuthenticationInfo".into())
    );
    assert_eq!(
        refusal(stranger.contract("collab").await),
        (401, "InvalidAuthenticationInfo".into())
    );
    // An Accepted-but-not-Active member may not vote, and blocks set_contract.
    let p = isv
        .propose_member(
            &std::fs::read_to_string(keys.join("late_cert.pem")).unwrap(),
            "late",
            None,
            None,
        )
        .await
        .unwrap();
    all_accept(&everyone, &id(&p)).await;
    let late = client(&endpoint, &service, &keys, "late");
    let open = publisher
        .propose_runtime_option("collab", "telemetry", true)
        .await
        .unwrap();
    assert_eq!(
        refusal(late.vote(&id(&open), true).await),
        (401, "InvalidAuthenticationInfo".into())
    );
    // A second, different ballot from one member.
    isv.vote(&id(&open), true).await.unwrap();
    isv.vote(&id(&open), true).await.unwrap();
    assert_eq!(
        refusal(isv.vote(&id(&open), false).await),
        (400, "VoteAlreadyExists".into())
    );
    // A replayed proposal: the same signed bytes twice.
    let isv_member =
        MemberIdentity::load(&keys.join("isv_cert.pem"), &keys.join("isv_privk.pem")).unwrap();
    let payload = json!({"actions": [{"name": "set_contract_runtime_options_disable_telemetry", "args": {"contractId": "collab"}}]}).to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signed = isv_member
        .sign(&GovernanceMessage {
            msg_type: GovMessageType::Proposal,
            created_at: now,
            proposal_id: None,
            payload: payload.as_bytes(),
        })
        .unwrap();
    let create = "/gov/members/proposals:create?api-version=2024-07-01";
    isv.raw(Method::POST, create, RequestBody::Cose(signed.clone()))
        .await
        .unwrap();
    assert_eq!(
        refusal(
            isv.raw(Method::POST, create, RequestBody::Cose(signed))
                .await
        ),
        (400, "ProposalReplay".into())
    );
    // The wrong message type for the route, and an untagged envelope.
    let ballot_typed = isv_member
        .sign(&GovernanceMessage {
            msg_type: GovMessageType::Ballot,
            created_at: now,
            proposal_id: None,
            payload: payload.as_bytes(),
        })
        .unwrap();
    assert_eq!(
        refusal(
            isv.raw(Method::POST, create, RequestBody::Cose(ballot_typed))
                .await
        ),
        (401, "InvalidAuthenticationInfo".into())
    );
    let untagged = encfs_governance::cose::sign_untagged_for_tests(
        isv_member.key().signing_key(),
        &isv_member.member_id(),
        &GovernanceMessage {
            msg_type: GovMessageType::Proposal,
            created_at: now,
            proposal_id: None,
            payload: payload.as_bytes(),
        },
    )
    .unwrap();
    assert_eq!(
        refusal(
            isv.raw(Method::POST, create, RequestBody::Cose(untagged))
                .await
        ),
        (401, "InvalidAuthenticationInfo".into())
    );
    assert_eq!(
        refusal(
            isv.raw(Method::POST, create, RequestBody::Json(b"{}".to_vec()))
                .await
        ),
        (401, "InvalidAuthenticationInfo".into())
    );
    // A forged signature: one flipped bit of a signed envelope.
    let mut forged = isv_member
        .sign(&GovernanceMessage {
            msg_type: GovMessageType::Proposal,
            created_at: now + 1,
            proposal_id: None,
            payload: payload.as_bytes(),
        })
        .unwrap();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert_eq!(
        refusal(
            isv.raw(Method::POST, create, RequestBody::Cose(forged))
                .await
        ),
        (401, "InvalidAuthenticationInfo".into())
    );
    // Oversized bodies.
    let big = vec![b' '; 2 << 20];
    assert_eq!(
        refusal(isv.raw(Method::POST, create, RequestBody::Cose(big)).await).0,
        413
    );

    // A receipt of the contract's acceptance verifies against the service certificate.
    let tx = isv
        .raw(Method::GET, "/gov/service/members", RequestBody::Empty)
        .await
        .unwrap();
    assert_eq!(tx.status, 200);
    publisher
        .put_contract("receipted", json!("r"), None)
        .await
        .unwrap();
    let last_write = publisher
        .raw(Method::POST, "/app/contracts/receipted", RequestBody::Empty)
        .await
        .unwrap()
        .json::<Value>()
        .unwrap()["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let receipt: Receipt = serde_json::from_value(isv.receipt(&last_write).await.unwrap()).unwrap();
    let service_der = identity::cert_der_from_pem(service.service_cert_pem()).unwrap();
    receipt.verify(&service_der).unwrap();
    let other = identity::ServiceIdentity::generate().unwrap();
    assert!(
        receipt.verify(&other.service.cert_der).is_err(),
        "a receipt must not verify under another service"
    );

    // A restart keeps every acknowledged transaction.
    let before = isv.contract("collab").await.unwrap();
    let proposals_before = isv.proposals().await.unwrap();
    server.shutdown().await;
    drop(service);
    let (service, server, endpoint) = start(&config).await;
    let isv = client(&endpoint, &service, &keys, "isv");
    assert_eq!(isv.contract("collab").await.unwrap(), before);
    assert_eq!(isv.proposals().await.unwrap(), proposals_before);
    assert_eq!(
        isv.contract("receipted").await.unwrap()["version"],
        json!(last_write)
    );
    server.shutdown().await;
    drop(service);
    // A restart with a certificate that is not a member is refused, naming the member: an
    // initial member applies only to a new service.
    let outsider = identity_in(&keys, "outsider");
    let mut with_stranger = config.clone();
    with_stranger.initial_members.push(outsider.cert_pem());
    let Err(refused) = Service::open(&with_stranger) else {
        panic!("an outsider as initial member was accepted on a restart");
    };
    assert!(
        refused.to_string().contains(&outsider.member_id()),
        "{refused}"
    );
    let summary = encfs_governance::ledger::verify_ledger(
        &dir.path().join("service").join("ledger"),
        &service_der,
    )
    .unwrap();
    assert!(summary.transactions > 20, "{summary:?}");
}

/// CCF's own Python tools (PyPI `ccf`, the venv of `scripts/ccf-venv.sh`) as an independent
/// client of the live service over HTTPS: `ccf.cose.create_cose_sign1` signs the activation
/// (state digest update and ack), a proposal and a ballot; Python's `ssl` pins the service
/// certificate; `ccf.receipt` verifies the receipt the service returns for the ballot.
const CCF_CLIENT_SCRIPT: &str = r#"
import sys, json, ssl, time, urllib.request, urllib.error
from hashlib import sha256
import ccf.cose, ccf.receipt
from cryptography.x509 import load_pem_x509_certificate
endpoint, service_pem, key, cert, member = sys.argv[1:6]
key, cert = open(key).read(), open(cert).read()
ctx = ssl.create_default_context(cafile=service_pem)
def call(method, path, body=None, cose=False):
    req = urllib.request.Request(endpoint + path, data=body, method=method)
    if cose:
        req.add_header("Content-Type", "application/cose")
    try:
        with urllib.request.urlopen(req, context=ctx) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
def signed(path, kind, payload=b"", proposal_id=None):
    headers = {"ccf.gov.msg.type": kind, "ccf.gov.msg.created_at": int(time.time())}
    if proposal_id:
        headers["ccf.gov.msg.proposal_id"] = proposal_id
    return call("POST", path + "?api-version=2024-07-01", ccf.cose.create_cose_sign1(payload, key, cert, headers), True)
s, _, digest = signed(f"/gov/members/state-digests/{member}:update", "state_digest")
assert s == 200, (s, digest)
s, _, body = signed(f"/gov/members/state-digests/{member}:ack", "ack", digest)
assert s == 204, (s, body)
proposal = json.dumps({"actions": [{"name": "set_member_data", "args": {"member_id": member, "member_data": {"identifier": "py"}}}]}).encode()
s, _, body = signed("/gov/members/proposals:create", "proposal", proposal)
assert s == 200, (s, body)
pid = json.loads(body)["proposalId"]
ballot = json.dumps({"ballot": "export function vote (proposal, proposerId) { return true }"}).encode()
s, headers, body = signed(f"/gov/members/proposals/{pid}/ballots/{member}:submit", "ballot", ballot, pid)
assert s == 200 and json.loads(body)["proposalState"] == "Accepted", (s, body)
txid = {k.lower(): v for k, v in headers.items()}["x-ms-ccf-transaction-id"]
s, _, body = call("GET", "/gov/service/members?api-version=2024-07-01")
assert json.loads(body)["value"][0]["memberData"]["identifier"] == "py", body
for _ in range(50):
    s, _, body = call("GET", f"/app/receipt?transaction_id={txid}")
    if s == 200:
        break
    time.sleep(0.1)
assert s == 200, (s, body)
r = json.loads(body)
c = r["leaf_components"]
assert c["commit_evidence"].startswith(f"ce:{txid}:"), c
leaf = sha256(bytes.fromhex(c["write_set_digest"]) + sha256(c["commit_evidence"].encode()).digest() + bytes.fromhex(c["claims_digest"])).hexdigest()
root = ccf.receipt.root(leaf, r["proof"])
node = load_pem_x509_certificate(r["cert"].encode())
ccf.receipt.verify(root, r["signature"], node)
ccf.receipt.check_endorsements(node, load_pem_x509_certificate(open(service_pem, "rb").read()), [])
s, _, body = call("POST", "/gov/members/proposals:create?api-version=2024-07-01", b"not cose", True)
assert s == 401 and json.loads(body)["error"]["code"] == "InvalidAuthenticationInfo", (s, body)
print("ok", txid)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ccf_python_tools_drive_the_service_over_https() {
    let python = std::env::var("ENCFS_CCF_PYTHON").expect(
        "ENCFS_CCF_PYTHON is not set: run the tests with scripts/test-all.sh, which creates the \
         virtual environment with CCF's Python tools (scripts/ccf-venv.sh) and sets it",
    );
    let dir = tempfile::tempdir().unwrap();
    let member = identity_in(dir.path(), "m0");
    let config = config(&dir.path().join("service"), &[&member]);
    let (service, server, endpoint) = start(&config).await;
    let service_pem = dir.path().join("service").join(identity::SERVICE_CERT_FILE);
    let (key, cert) = MemberIdentity::file_paths(dir.path(), "m0");
    let args = [
        endpoint.clone(),
        service_pem.display().to_string(),
        key.display().to_string(),
        cert.display().to_string(),
        member.member_id(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg("-c")
            .arg(CCF_CLIENT_SCRIPT)
            .args(args)
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    server.shutdown().await;
    drop(service);
    assert!(
        out.status.success(),
        "the CCF Python client failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok "));
}
