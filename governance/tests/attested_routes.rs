//! The attested clean-room routes over real HTTPS with the real SEV-SNP verifier and reports from
//! the virtual attestation authority: a clean room whose report has the accepted policy's
//! hostdata and binds its key in report_data writes an event, reads a secret (wrapped for its
//! key: it unwraps to the member's value) and reads a runtime option; then each refusal with the
//! reference's code (§1i): the wrong hostdata, report_data for another key, a report signed by
//! another authority, a flipped byte, the `snp-cvm` platform, and a service with no verifier.
//! The secret is in the ledger file only encrypted, and a restart replays it to its value.
//! Member documents: drafted, accepted by proposal, read by the clean room with its attestation.
//! Delegate policies: set by the attested, signing clean room, read by members.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use encfs_attestation::authority::VirtualAuthority;
use encfs_crypto::kek::{KekPrivateKey, KekSize, OaepHash};
use encfs_governance::attestation::SnpAttestationVerifier;
use encfs_governance::client::GovernanceClient;
use encfs_governance::identity::MemberIdentity;
use encfs_governance::ledger::LedgerConfig;
use encfs_governance::server::{RunningServer, ServerLimits};
use encfs_governance::service::{Service, ServiceConfig};
use encfs_governance::transport::RequestBody;
use reqwest::Method;
use serde_json::{Value, json};

const POLICY_TEXT: &str = "package policy\nallow := true\n";

/// A clean room's RSA-2048 key: its public PEM (base64 on the wire) and report_data.
struct CleanRoomKey {
    private: KekPrivateKey,
    public_pem: String,
}

impl CleanRoomKey {
    fn new() -> Self {
        let private = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
        let public_pem = private.public_key().to_pem().unwrap();
        Self {
            private,
            public_pem,
        }
    }

    fn public_b64(&self) -> String {
        BASE64.encode(&self.public_pem)
    }

    /// sha256(PEM text) ‖ 32 zeros, as governance checks it.
    fn report_data(&self) -> [u8; 64] {
        let mut data = [0u8; 64];
        data[..32].copy_from_slice(digest(&SHA256, self.public_pem.as_bytes()).as_ref());
        data
    }

    fn sign(&self, message: &[u8]) -> String {
        let der = self.private.to_pkcs8_der().unwrap();
        let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(&der).unwrap();
        let mut signature = vec![0; pair.public_modulus_len()];
        pair.sign(
            &aws_lc_rs::signature::RSA_PSS_SHA256,
            &aws_lc_rs::rand::SystemRandom::new(),
            message,
            &mut signature,
        )
        .unwrap();
        BASE64.encode(signature)
    }
}

async fn start(
    dir: &Path,
    member: &MemberIdentity,
    verifier: Option<SnpAttestationVerifier>,
) -> (Arc<Service>, RunningServer, String) {
    let config = ServiceConfig {
        data_dir: dir.to_path_buf(),
        initial_members: vec![member.cert_pem()],
        ledger: LedgerConfig {
            signature_interval_txs: 10,
            signature_interval: std::time::Duration::from_millis(100),
        },
    };
    let verifier = verifier
        .map(|v| Arc::new(v) as Arc<dyn encfs_governance::attestation::CleanRoomAttestation>);
    let service = Service::open_with_attestation(&config, verifier).unwrap();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server = service.serve(addr, ServerLimits::default()).await.unwrap();
    let endpoint = format!("https://127.0.0.1:{}", server.local_addr().port());
    (service, server, endpoint)
}

/// A service in `dir/service` with one member (`isv`, its keys in `dir/keys`) and the verifier
/// of the virtual authority in `dir/authority`, and that member's client.
struct OneMember {
    authority: VirtualAuthority,
    member_id: MemberIdentity,
    service: Arc<Service>,
    server: RunningServer,
    endpoint: String,
    member: GovernanceClient,
}

async fn one_member(dir: &Path) -> OneMember {
    let authority = VirtualAuthority::open(&dir.join("authority")).unwrap();
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let member_id = MemberIdentity::generate("isv").unwrap();
    member_id.write_pems(&keys).unwrap();
    let (key_path, cert_path) = MemberIdentity::file_paths(&keys, "isv");
    let verifier = SnpAttestationVerifier::from_pems([authority.ca_pem()]).unwrap();
    let (service, server, endpoint) = start(&dir.join("service"), &member_id, Some(verifier)).await;
    let member = GovernanceClient::new(
        &endpoint,
        service.service_cert_pem(),
        MemberIdentity::load(&cert_path, &key_path).unwrap(),
    )
    .unwrap();
    OneMember {
        authority,
        member_id,
        service,
        server,
        endpoint,
        member,
    }
}

/// A clean room's HTTPS client: no client certificate, the service certificate pinned.
fn clean_room_client(service: &Service) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(service.service_cert_pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap()
}

async fn call(http: &reqwest::Client, method: Method, url: String, body: &Value) -> (u16, Value) {
    let response = http.request(method, url).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn code(answer: &(u16, Value)) -> (u16, &str) {
    (answer.0, answer.1["error"]["code"].as_str().unwrap_or(""))
}

/// One member sets up contract `collab`: accepted, with the clean-room policy (hostdata of
/// [`POLICY_TEXT`], not debuggable), and a secret `s1`; returns the secret's id.
async fn set_up_contract(member: &GovernanceClient) -> String {
    member.activate().await.unwrap();
    member
        .put_contract("collab", json!("spec: v1"), None)
        .await
        .unwrap();
    let version = member.contract("collab").await.unwrap()["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let p = member
        .propose_contract("collab", Some(&version))
        .await
        .unwrap();
    let proposal_id = p["proposalId"].as_str().unwrap().to_owned();
    member
        .vote_contract("collab", Some(&proposal_id), true)
        .await
        .unwrap();
    let hostdata = encfs_attestation::snp::hex(digest(&SHA256, POLICY_TEXT.as_bytes()).as_ref());
    let policy = json!({"type": "add", "policyType": "snp-caci", "claims": {
        "x-ms-sevsnpvm-is-debuggable": false,
        "x-ms-sevsnpvm-hostdata": hostdata,
    }});
    let p = member
        .propose_clean_room_policy("collab", policy)
        .await
        .unwrap();
    let accepted = member
        .vote(p["proposalId"].as_str().unwrap(), true)
        .await
        .unwrap();
    assert_eq!(accepted["proposalState"], "Accepted", "{accepted}");
    let put = member
        .raw(
            Method::PUT,
            "/app/contracts/collab/secrets/s1",
            RequestBody::json(&json!({"value": "the secret value"})).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(put.status, 200);
    put.json::<Value>().unwrap()["secretId"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn event_body(key: &CleanRoomKey, attestation: Value) -> Value {
    let data = BASE64.encode(json!({"message": "hello"}).to_string());
    let signature = key.sign(&BASE64.decode(&data).unwrap());
    json!({
        "data": data,
        "timestamp": "1700000000000",
        "sign": {"signature": signature, "publicKey": key.public_b64()},
        "platform": "snp-caci",
        "attestation": attestation,
    })
}

fn secret_body(key: &CleanRoomKey, attestation: Value) -> Value {
    json!({"attestation": attestation, "encrypt": {"publicKey": key.public_b64()}})
}

/// A clean room's secret read: 200, the value wrapped for `key`, unwrapped here.
async fn read_secret(
    http: &reqwest::Client,
    url: String,
    key: &CleanRoomKey,
    attestation: Value,
) -> Vec<u8> {
    let secret = call(http, Method::POST, url, &secret_body(key, attestation)).await;
    assert_eq!(secret.0, 200, "{}", secret.1);
    let wrapped = BASE64.decode(secret.1["value"].as_str().unwrap()).unwrap();
    encfs_crypto::rsa_aes_wrap::unwrap(&key.private, OaepHash::Sha256, &wrapped)
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attested_routes_accept_the_right_report_and_refuse_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let other_authority = VirtualAuthority::open(&dir.path().join("other")).unwrap();
    let OneMember {
        authority,
        member_id,
        service,
        server,
        endpoint,
        member,
    } = one_member(dir.path()).await;
    let secret_id = set_up_contract(&member).await;
    let http = clean_room_client(&service);
    let events_url = format!("{endpoint}/app/contracts/collab/events");
    let secret_url = format!("{endpoint}/app/contracts/collab/secrets/{secret_id}");
    let status_url = format!("{endpoint}/app/contracts/collab/runtimeoptions/execution/status");

    // The right clean room.
    let key = CleanRoomKey::new();
    let good = authority
        .report(&key.report_data(), POLICY_TEXT.as_bytes(), false)
        .unwrap()
        .to_wire_json();
    let put = call(
        &http,
        Method::PUT,
        events_url.clone(),
        &event_body(&key, good.clone()),
    )
    .await;
    assert_eq!(put.0, 204, "{}", put.1);
    let events = member.events("collab", None, None, true).await.unwrap();
    assert!(events.to_string().contains("hello"), "{events}");
    assert_eq!(
        read_secret(&http, secret_url.clone(), &key, good.clone()).await,
        b"the secret value"
    );
    let status = call(
        &http,
        Method::POST,
        status_url.clone(),
        &json!({"attestation": good}),
    )
    .await;
    assert_eq!(status.0, 200, "{}", status.1);
    assert!(status.1.get("status").is_some(), "{}", status.1);

    // The wrong hostdata: another policy text.
    let wrong_policy = authority
        .report(&key.report_data(), b"allow everything", false)
        .unwrap()
        .to_wire_json();
    for (method, url, body) in [
        (
            Method::PUT,
            events_url.clone(),
            event_body(&key, wrong_policy.clone()),
        ),
        (
            Method::POST,
            secret_url.clone(),
            secret_body(&key, wrong_policy.clone()),
        ),
        (
            Method::POST,
            status_url.clone(),
            json!({"attestation": wrong_policy}),
        ),
    ] {
        let answer = call(&http, method, url.clone(), &body).await;
        assert_eq!(code(&answer), (400, "VerifySnpAttestationFailed"), "{url}");
        assert!(answer.1.to_string().contains("hostdata"), "{}", answer.1);
    }
    // A debuggable report where the policy says not debuggable.
    let debuggable = authority
        .report(&key.report_data(), POLICY_TEXT.as_bytes(), true)
        .unwrap()
        .to_wire_json();
    let answer = call(
        &http,
        Method::POST,
        secret_url.clone(),
        &secret_body(&key, debuggable),
    )
    .await;
    assert_eq!(code(&answer), (400, "VerifySnpAttestationFailed"));

    // report_data bound to another key.
    let other_key = CleanRoomKey::new();
    let for_other = authority
        .report(&other_key.report_data(), POLICY_TEXT.as_bytes(), false)
        .unwrap()
        .to_wire_json();
    for (method, url, body) in [
        (
            Method::PUT,
            events_url.clone(),
            event_body(&key, for_other.clone()),
        ),
        (
            Method::POST,
            secret_url.clone(),
            secret_body(&key, for_other.clone()),
        ),
    ] {
        let answer = call(&http, method, url.clone(), &body).await;
        assert_eq!(code(&answer), (400, "ReportDataMismatch"), "{url}");
        assert!(answer.1.get("value").is_none());
    }

    // A report signed by another authority (its chain ends at a root the service does not trust).
    let foreign = other_authority
        .report(&key.report_data(), POLICY_TEXT.as_bytes(), false)
        .unwrap()
        .to_wire_json();
    let answer = call(
        &http,
        Method::POST,
        secret_url.clone(),
        &secret_body(&key, foreign.clone()),
    )
    .await;
    assert_eq!(code(&answer), (400, "VerifySnpAttestationFailed"));
    assert!(
        answer.1.to_string().contains("not a trusted root"),
        "{}",
        answer.1
    );
    let answer = call(
        &http,
        Method::PUT,
        events_url.clone(),
        &event_body(&key, foreign),
    )
    .await;
    assert_eq!(code(&answer), (400, "VerifySnpAttestationFailed"));

    // A flipped byte in the report (hostdata), and in the signature.
    for at in [0xC0usize, 0x2A0] {
        let mut evidence = BASE64.decode(good["evidence"].as_str().unwrap()).unwrap();
        evidence[at] ^= 1;
        let mut tampered = good.clone();
        tampered["evidence"] = BASE64.encode(&evidence).into();
        let answer = call(
            &http,
            Method::POST,
            secret_url.clone(),
            &secret_body(&key, tampered),
        )
        .await;
        assert_eq!(
            code(&answer),
            (400, "VerifySnpAttestationFailed"),
            "byte {at:#x}"
        );
        assert!(answer.1.to_string().contains("signature"), "{}", answer.1);
    }

    // A platform the verifier does not read; a body without attestation.
    let mut cvm = secret_body(&key, good.clone());
    cvm["platform"] = "snp-cvm".into();
    let answer = call(&http, Method::POST, secret_url.clone(), &cvm).await;
    assert_eq!(code(&answer), (400, "UnsupportedPlatform"));
    let answer = call(
        &http,
        Method::POST,
        secret_url.clone(),
        &json!({"encrypt": {"publicKey": key.public_b64()}}),
    )
    .await;
    assert_eq!(code(&answer), (400, "AttestationMissing"));

    // The secret is in the ledger only encrypted (the private map, sealed by the ledger
    // secret): neither its value nor its base64 is in the file.
    let ledger = std::fs::read(dir.path().join("service/ledger/ledger.bin")).unwrap();
    for clear in [
        b"the secret value".to_vec(),
        BASE64.encode("the secret value").into_bytes(),
    ] {
        assert!(
            !ledger.windows(clear.len()).any(|w| w == clear),
            "a secret in the clear in the ledger"
        );
    }

    server.shutdown().await;
    drop(service);

    // The same state without a verifier: fail closed, even for the right report.
    let (service, server, endpoint) = start(&dir.path().join("service"), &member_id, None).await;
    let http = clean_room_client(&service);
    let answer = call(
        &http,
        Method::POST,
        format!("{endpoint}/app/contracts/collab/secrets/{secret_id}"),
        &secret_body(&key, good.clone()),
    )
    .await;
    assert_eq!(code(&answer), (400, "VerifySnpAttestationFailed"));
    server.shutdown().await;
    drop(service);

    // Restarted with the verifier, the replayed (decrypted) secret is served as it was set.
    let verifier = SnpAttestationVerifier::from_pems([authority.ca_pem()]).unwrap();
    let (service, server, endpoint) =
        start(&dir.path().join("service"), &member_id, Some(verifier)).await;
    let http = clean_room_client(&service);
    let url = format!("{endpoint}/app/contracts/collab/secrets/{secret_id}");
    assert_eq!(
        read_secret(&http, url, &key, good).await,
        b"the secret value"
    );
    server.shutdown().await;
}

/// Member documents over HTTPS: a member's draft (PUT, GET, list, under a contract or not), its
/// acceptance by a `set_member_document` proposal, the accepted document read by the right clean
/// room (wrapped for its key) and refused to one with another policy; a contract-scoped PUT
/// naming another contract is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_documents_are_drafted_accepted_and_read_by_the_clean_room() {
    let dir = tempfile::tempdir().unwrap();
    let OneMember {
        authority,
        service,
        server,
        endpoint,
        member,
        ..
    } = one_member(dir.path()).await;
    set_up_contract(&member).await;
    let raw = |method: Method, path: String, body: Value| {
        let member = &member;
        async move {
            let answer = member
                .raw(method, &path, RequestBody::json(&body).unwrap())
                .await
                .unwrap();
            let status = answer.status;
            (status, answer.json::<Value>().unwrap_or(Value::Null))
        }
    };

    // A draft, under the contract's route (the body's contractId filled in from it).
    let put = raw(
        Method::PUT,
        "/app/contracts/collab/memberdocuments/doc1".into(),
        json!({"data": "the member's document"}),
    )
    .await;
    assert_eq!(put.0, 200, "{}", put.1);
    let draft = raw(Method::GET, "/app/memberdocuments/doc1".into(), json!({})).await;
    assert_eq!(draft.1["state"], "Draft", "{}", draft.1);
    assert_eq!(draft.1["contractId"], "collab");
    let listed = raw(
        Method::GET,
        "/app/contracts/collab/memberdocuments".into(),
        json!({}),
    )
    .await;
    assert_eq!(
        listed.1,
        json!({"value": [{"id": "doc1", "contractId": "collab"}]})
    );
    let other = member
        .raw(
            Method::PUT,
            "/app/contracts/collab/memberdocuments/doc2",
            RequestBody::json(&json!({"contractId": "elsewhere", "data": 1})).unwrap(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        other.contains("InvalidInput") && other.contains("elsewhere"),
        "{other}"
    );

    // Accepted by the consortium.
    let proposal = member
        .propose(json!([{"name": "set_member_document", "args": {
            "documentId": "doc1",
            "document": {"contractId": "collab", "data": "the member's document",
                         "version": draft.1["version"]},
        }}]))
        .await
        .unwrap();
    let voted = member
        .vote(proposal["proposalId"].as_str().unwrap(), true)
        .await
        .unwrap();
    assert_eq!(voted["proposalState"], "Accepted", "{voted}");
    let accepted = raw(
        Method::POST,
        "/app/contracts/collab/memberdocuments/doc1".into(),
        json!({}),
    )
    .await;
    assert_eq!(accepted.1["state"], "Accepted", "{}", accepted.1);

    // The clean room reads it with its attestation, wrapped for its key.
    let http = clean_room_client(&service);
    let url = format!("{endpoint}/app/contracts/collab/memberdocuments/accepted/doc1");
    let key = CleanRoomKey::new();
    let good = authority
        .report(&key.report_data(), POLICY_TEXT.as_bytes(), false)
        .unwrap()
        .to_wire_json();
    let plain = read_secret(&http, url.clone(), &key, good).await;
    let document: Value = serde_json::from_slice(&plain).unwrap();
    assert_eq!(document["data"], "the member's document", "{document}");
    let wrong = authority
        .report(&key.report_data(), b"another policy", false)
        .unwrap()
        .to_wire_json();
    let refused = call(&http, Method::POST, url, &secret_body(&key, wrong)).await;
    assert_eq!(code(&refused), (400, "VerifySnpAttestationFailed"));
    server.shutdown().await;
}

/// Delegate policies over HTTPS: a clean room that satisfies the main policy, with its
/// attestation and a signature by the key its report binds, adds a delegate policy; members list
/// and read it; an unsigned change and one from a clean room of another policy are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegate_policies_are_set_by_the_attested_clean_room_and_read_by_members() {
    let dir = tempfile::tempdir().unwrap();
    let OneMember {
        authority,
        service,
        server,
        endpoint,
        member,
        ..
    } = one_member(dir.path()).await;
    set_up_contract(&member).await;
    let http = clean_room_client(&service);
    let url = format!("{endpoint}/app/contracts/collab/cleanroompolicy/delegates/events/writer");
    let key = CleanRoomKey::new();
    let report = |policy: &[u8]| {
        authority
            .report(&key.report_data(), policy, false)
            .unwrap()
            .to_wire_json()
    };
    let change =
        json!({"type": "add", "claims": {"x-ms-sevsnpvm-hostdata": "ab".repeat(32)}}).to_string();
    let body = |attestation: Value| {
        json!({
            "attestation": attestation,
            "sign": {"signature": key.sign(change.as_bytes()), "publicKey": key.public_b64()},
            "data": BASE64.encode(&change),
        })
    };
    let set = call(
        &http,
        Method::PUT,
        url.clone(),
        &body(report(POLICY_TEXT.as_bytes())),
    )
    .await;
    assert_eq!(set.0, 200, "{}", set.1);

    let read = |path: &'static str| {
        let member = &member;
        async move {
            member
                .raw(Method::GET, path, RequestBody::Empty)
                .await
                .unwrap()
                .json::<Value>()
                .unwrap()
        }
    };
    assert_eq!(
        read("/app/contracts/collab/cleanroompolicy/delegates").await,
        json!({"value": [{"type": "events", "id": "writer"}]})
    );
    let policy = member
        .raw(
            Method::POST,
            "/app/contracts/collab/cleanroompolicy/delegates/events/writer",
            RequestBody::Empty,
        )
        .await
        .unwrap()
        .json::<Value>()
        .unwrap();
    assert_eq!(
        policy,
        json!({"policy": {"x-ms-sevsnpvm-hostdata": ["ab".repeat(32)]}})
    );

    let mut unsigned = body(report(POLICY_TEXT.as_bytes()));
    unsigned.as_object_mut().unwrap().remove("sign");
    let refused = call(&http, Method::PUT, url.clone(), &unsigned).await;
    assert_eq!(code(&refused), (400, "SignatureMissing"));
    let refused = call(&http, Method::PUT, url, &body(report(b"another policy"))).await;
    assert_eq!(code(&refused), (400, "VerifySnpAttestationFailed"));
    server.shutdown().await;
}
