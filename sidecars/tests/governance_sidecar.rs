//! The ccr-governance sidecar against the real services, in process on loopback: the virtual
//! attestation authority (HTTPS), the governance service started with the authority's root as
//! its attestation CA (HTTPS, a member who accepted contract `collab` with a clean-room policy
//! for the hostdata of [`POLICY_TEXT`]), a real skr sidecar reporting for that policy text, and
//! the governance sidecar in front of them.
//!
//! Covered: consent checks (execution enabled by default, disabled by a member, logging
//! disabled then enabled by a proposal), an event that then appears in the contract's event
//! list, a secret a member put read back unwrapped, a secret the clean room put and read back,
//! the path-prefix override header, and the refusals: a missing secret (404 `SecretNotFound`),
//! a clean room whose policy text differs (every route 400 `VerifySnpAttestationFailed`,
//! propagated), malformed input, an unreachable skr at start.
//!
//! Every service runs on this test's runtime: when the test ends, passing or failing, the
//! runtime drops and every listener and task with it.

use std::net::SocketAddr;
use std::sync::Arc;

use aws_lc_rs::digest::{SHA256, digest};
use encfs_attestation::maa::MaaClient;
use encfs_attestation::virtual_provider::VirtualProvider;
use encfs_governance::attestation::SnpAttestationVerifier;
use encfs_governance::client::GovernanceClient;
use encfs_governance::identity::MemberIdentity;
use encfs_governance::ledger::LedgerConfig;
use encfs_governance::server::ServerLimits;
use encfs_governance::service::{Service, ServiceConfig};
use encfs_governance::transport::RequestBody;
use encfs_sidecars::governance::{
    GovernanceConfig, GovernanceSidecar, GovernanceStartError, PATH_PREFIX_HEADER,
};
use encfs_sidecars::server::RunningSidecar;
use encfs_sidecars::skr::{SkrConfig, SkrSidecar};
use reqwest::Method;
use serde_json::{Value, json};

const POLICY_TEXT: &str = "package policy\nallow := true\n";
const OTHER_POLICY_TEXT: &str = "package policy\nallow := true\n# edited\n";

/// A loopback address the kernel chose (bound and released; the caller binds it at once).
fn kernel_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn kernel_listener() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
}

async fn skr_for(authority_url: &str, authority_ca: &str, policy: &str) -> RunningSidecar {
    let provider = VirtualProvider::new(
        authority_url,
        authority_ca.as_bytes(),
        policy.as_bytes(),
        false,
    )
    .unwrap();
    let skr = SkrSidecar::new(SkrConfig {
        provider: Arc::new(provider),
        attester: Arc::new(MaaClient::new(vec![authority_ca.as_bytes().to_vec()]).unwrap()),
        trusted_cas: vec![],
        identity_endpoint: None,
    })
    .unwrap();
    encfs_sidecars::server::spawn(kernel_listener().await, Arc::new(skr).router()).unwrap()
}

async fn sidecar_for(
    endpoint: &str,
    service_cert: &str,
    skr: &RunningSidecar,
) -> Result<RunningSidecar, GovernanceStartError> {
    let sidecar = GovernanceSidecar::start(GovernanceConfig {
        cgs_endpoint: endpoint.to_owned(),
        service_cert_pem: service_cert.as_bytes().to_vec(),
        api_path_prefix: "app/contracts/collab".into(),
        skr: skr.url(),
    })
    .await?;
    Ok(encfs_sidecars::server::spawn(kernel_listener().await, Arc::new(sidecar).router()).unwrap())
}

/// The member accepts contract `collab`, sets its clean-room policy (hostdata of
/// [`POLICY_TEXT`], not debuggable) and puts secret `s1`; returns the secret's id.
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
    member
        .vote_contract("collab", p["proposalId"].as_str(), true)
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

async fn call(
    method: Method,
    url: String,
    body: Option<&Value>,
    prefix: Option<&str>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(body) = body {
        request = request.json(body);
    }
    if let Some(prefix) = prefix {
        request = request.header(PATH_PREFIX_HEADER, prefix);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn code(answer: &(u16, Value)) -> (u16, &str) {
    (answer.0, answer.1["error"]["code"].as_str().unwrap_or(""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn governance_sidecar_against_the_real_services() {
    let dir = tempfile::tempdir().unwrap();
    let authority =
        encfs_attestation::authority::VirtualAuthority::open(&dir.path().join("authority"))
            .unwrap();
    let verifier = SnpAttestationVerifier::from_pems([authority.ca_pem()]).unwrap();
    let authority = encfs_attestation::service::serve(authority, kernel_addr())
        .await
        .unwrap();
    let authority_ca = authority.ca_pem().to_owned();

    let keys = dir.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let member_id = MemberIdentity::generate("isv").unwrap();
    member_id.write_pems(&keys).unwrap();
    let (key_path, cert_path) = MemberIdentity::file_paths(&keys, "isv");
    let config = ServiceConfig {
        data_dir: dir.path().join("service"),
        initial_members: vec![member_id.cert_pem()],
        ledger: LedgerConfig {
            signature_interval_txs: 10,
            signature_interval: std::time::Duration::from_millis(100),
        },
    };
    let service = Service::open_with_attestation(
        &config,
        Some(Arc::new(verifier)
            as Arc<
                dyn encfs_governance::attestation::CleanRoomAttestation,
            >),
    )
    .unwrap();
    let server = service
        .serve("127.0.0.1:0".parse().unwrap(), ServerLimits::default())
        .await
        .unwrap();
    let endpoint = format!("https://127.0.0.1:{}", server.local_addr().port());
    let service_cert = service.service_cert_pem().to_owned();
    let member = GovernanceClient::new(
        &endpoint,
        service.service_cert_pem(),
        MemberIdentity::load(&cert_path, &key_path).unwrap(),
    )
    .unwrap();
    let secret_id = set_up_contract(&member).await;

    let skr = skr_for(&authority.url(), &authority_ca, POLICY_TEXT).await;
    let sidecar = sidecar_for(&endpoint, &service_cert, &skr).await.unwrap();
    let url = |path: &str| format!("{}{path}", sidecar.url());

    // Consent: execution is enabled once accepted; a member disables and re-enables it.
    let execution = call(Method::POST, url("/consentcheck/execution"), None, None).await;
    assert_eq!(execution.0, 200, "{}", execution.1);
    assert_eq!(execution.1["status"], "enabled", "{}", execution.1);
    member
        .set_runtime_option("collab", "execution", false)
        .await
        .unwrap();
    let execution = call(Method::POST, url("/consentcheck/execution"), None, None).await;
    assert_eq!(execution.0, 200);
    assert_eq!(execution.1["status"], "disabled", "{}", execution.1);
    assert_eq!(execution.1["reason"]["code"], "ContractDisabled");
    member
        .set_runtime_option("collab", "execution", true)
        .await
        .unwrap();
    // Logging: disabled by default, enabled by an accepted proposal.
    let logging = call(Method::POST, url("/consentcheck/logging"), None, None).await;
    assert_eq!(logging.1["status"], "disabled", "{}", logging.1);
    let p = member
        .propose_runtime_option("collab", "logging", true)
        .await
        .unwrap();
    member
        .vote(p["proposalId"].as_str().unwrap(), true)
        .await
        .unwrap();
    let logging = call(Method::POST, url("/consentcheck/logging"), None, None).await;
    assert_eq!(logging.1["status"], "enabled", "{}", logging.1);
    // An unknown option: governance's 400, propagated.
    let unknown = call(Method::POST, url("/consentcheck/coffee"), None, None).await;
    assert_eq!(code(&unknown), (400, "InvalidOption"), "{}", unknown.1);

    // An event, signed and attested by the sidecar, then listed by the member.
    let event =
        json!({"source": "code-launcher", "message": "Starting execution of demo-app container"});
    let put = call(Method::PUT, url("/events"), Some(&event), None).await;
    assert_eq!(put.0, 200, "{}", put.1);
    let events = member.events("collab", None, None, true).await.unwrap();
    let listed = events["value"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["data"]["message"] == "Starting execution of demo-app container");
    assert!(listed, "{events}");
    // With an id and scope.
    let put = call(
        Method::PUT,
        url("/events?id=launcher&scope=audit"),
        Some(&json!({"message": "scoped"})),
        None,
    )
    .await;
    assert_eq!(put.0, 200, "{}", put.1);
    let scoped = member
        .events("collab", Some("launcher"), Some("audit"), false)
        .await
        .unwrap();
    assert_eq!(scoped["value"][0]["data"]["message"], "scoped", "{scoped}");
    // Not a JSON object.
    let bad = call(Method::PUT, url("/events"), Some(&json!([1, 2])), None).await;
    assert_eq!(code(&bad), (400, "BadRequest"));

    // The member's secret, unwrapped by the sidecar.
    let secret = call(
        Method::POST,
        url(&format!("/secrets/{secret_id}")),
        None,
        None,
    )
    .await;
    assert_eq!(secret.0, 200, "{}", secret.1);
    assert_eq!(secret.1, json!({"value": "the secret value"}));
    // A secret the clean room puts, then reads back.
    let put = call(
        Method::PUT,
        url("/secrets/from-room"),
        Some(&json!({"value": "written inside"})),
        None,
    )
    .await;
    assert_eq!(put.0, 200, "{}", put.1);
    assert_eq!(put.1["secretId"], "cleanroom_from-room");
    let back = call(
        Method::POST,
        url("/secrets/cleanroom_from-room"),
        None,
        None,
    )
    .await;
    assert_eq!(back.1, json!({"value": "written inside"}), "{}", back.1);
    let missing = call(Method::POST, url("/secrets/nobody_nothing"), None, None).await;
    assert_eq!(code(&missing), (404, "SecretNotFound"), "{}", missing.1);
    let traversal = call(Method::POST, url("/secrets/..%2F..%2Fx"), None, None).await;
    assert_eq!(code(&traversal), (400, "BadRequest"), "{}", traversal.1);

    // The prefix header: another contract (not accepted, so not enabled), and a malformed one.
    let other = call(
        Method::POST,
        url("/consentcheck/execution"),
        None,
        Some("app/contracts/other"),
    )
    .await;
    assert_ne!(other.1["status"], "enabled", "{}", other.1);
    let bad_prefix = call(
        Method::POST,
        url("/consentcheck/execution"),
        None,
        Some("app/../node"),
    )
    .await;
    assert_eq!(code(&bad_prefix), (400, "BadRequest"));

    // A clean room whose security policy differs: its report's hostdata is not the accepted
    // one, and governance's refusal comes through each route.
    let other_skr = skr_for(&authority.url(), &authority_ca, OTHER_POLICY_TEXT).await;
    let other_room = sidecar_for(&endpoint, &service_cert, &other_skr)
        .await
        .unwrap();
    let other_url = |path: &str| format!("{}{path}", other_room.url());
    for (method, path, body) in [
        (Method::POST, "/consentcheck/execution".to_owned(), None),
        (
            Method::PUT,
            "/events".to_owned(),
            Some(json!({"message": "x"})),
        ),
        (Method::POST, format!("/secrets/{secret_id}"), None),
        (
            Method::PUT,
            "/secrets/intruder".to_owned(),
            Some(json!({"value": "x"})),
        ),
    ] {
        let answer = call(method, other_url(&path), body.as_ref(), None).await;
        assert_eq!(
            code(&answer),
            (400, "VerifySnpAttestationFailed"),
            "{path}: {}",
            answer.1
        );
        assert!(answer.1.to_string().contains("hostdata"), "{}", answer.1);
        assert!(!answer.1.to_string().contains("the secret value"));
    }

    // Start refusals: an http governance endpoint, no skr.
    let closed = kernel_addr();
    let refused = GovernanceSidecar::start(GovernanceConfig {
        cgs_endpoint: endpoint.clone(),
        service_cert_pem: service_cert.as_bytes().to_vec(),
        api_path_prefix: "app/contracts/collab".into(),
        skr: format!("http://{closed}"),
    })
    .await
    .unwrap_err();
    assert!(
        matches!(refused, GovernanceStartError::Attestation(_)),
        "{refused}"
    );
    let refused = GovernanceSidecar::start(GovernanceConfig {
        cgs_endpoint: endpoint.replace("https://", "http://"),
        service_cert_pem: service_cert.as_bytes().to_vec(),
        api_path_prefix: "app/contracts/collab".into(),
        skr: skr.url(),
    })
    .await
    .unwrap_err();
    assert!(
        matches!(refused, GovernanceStartError::NotHttps(_)),
        "{refused}"
    );

    for running in [sidecar, other_room, skr, other_skr] {
        running.shutdown().await.unwrap();
    }
    server.shutdown().await;
    authority.shutdown().await;
}
