//! The code launcher against the real services, in process on loopback: the virtual attestation
//! authority, the governance service (HTTPS, the authority's root as its attestation CA; one
//! member who accepted contract `collab` with the clean-room policy for [`POLICY_TEXT`]), a real
//! skr sidecar and the real governance sidecar; the apps run as plain child processes
//! ([`ProcessRunner`]: no namespaces, that is the sandbox's part) whose mounts are directories
//! announced through volume status files.
//!
//! Covered: an auto-start app that copies its input to its output, its events in the reference's
//! order and wording, the automatic log export at its exit; status; the inbound filter; the
//! exports and their consent checks (the reference's 403 bodies); a start refused while
//! execution is disabled (the exact reference body) and an auto-start refused at boot; an app
//! stopped within 5 s of a revocation; a mount that failed and one that never appears.
//!
//! Every service runs on this test's runtime and every child process is killed when the runner
//! drops, passing or failing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use encfs_attestation::maa::MaaClient;
use encfs_attestation::virtual_provider::VirtualProvider;
use encfs_cleanroom::launcher::{
    AppRunner, AppState, Application, Launcher, LauncherConfig, RunnerError,
};
use encfs_governance::attestation::SnpAttestationVerifier;
use encfs_governance::client::GovernanceClient;
use encfs_governance::identity::MemberIdentity;
use encfs_governance::ledger::LedgerConfig;
use encfs_governance::server::ServerLimits;
use encfs_governance::service::{Service, ServiceConfig};
use encfs_sidecars::governance::{GovernanceConfig, GovernanceSidecar};
use encfs_sidecars::server::RunningSidecar;
use encfs_sidecars::skr::{SkrConfig, SkrSidecar};
use serde_json::{Value, json};

const POLICY_TEXT: &str = "package policy\nallow := true\n";

/// Runs each app as a plain child process. Not isolated: the app sees its mounts at their host
/// paths (each path in the app is replaced by its host path in the command and the environment).
/// stdout and stderr go to `<log_dir>/<app>.log`. Children are killed on drop.
struct ProcessRunner {
    log_dir: PathBuf,
    children: Mutex<HashMap<String, Child>>,
}

impl ProcessRunner {
    fn new(log_dir: &Path) -> Self {
        Self {
            log_dir: log_dir.to_owned(),
            children: Mutex::new(HashMap::new()),
        }
    }
}

fn substitute(text: &str, mounts: &[(String, String, bool)]) -> String {
    let mut by_length: Vec<_> = mounts.iter().collect();
    by_length.sort_by_key(|(_, in_app, _)| std::cmp::Reverse(in_app.len()));
    let mut out = text.to_owned();
    for (host, in_app, _) in by_length {
        out = out.replace(in_app.as_str(), host);
    }
    out
}

impl AppRunner for ProcessRunner {
    fn start(
        &self,
        app: &Application,
        mounts: &[(String, String, bool)],
    ) -> Result<(), RunnerError> {
        let (program, args) = app
            .command
            .split_first()
            .ok_or_else(|| RunnerError(format!("{} has no command", app.name)))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_dir.join(format!("{}.log", app.name)))
            .map_err(|e| RunnerError(e.to_string()))?;
        let mut command = Command::new(program);
        command
            .args(args.iter().map(|a| substitute(a, mounts)))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| RunnerError(e.to_string()))?)
            .stderr(log);
        for (key, value) in &app.environment_variables {
            command.env(key, substitute(value, mounts));
        }
        let child = command
            .spawn()
            .map_err(|e| RunnerError(format!("cannot run {program}: {e}")))?;
        let mut children = self.children.lock().unwrap();
        if let Some(mut old) = children.insert(app.name.clone(), child) {
            let _ = old.kill();
            let _ = old.wait();
        }
        Ok(())
    }

    fn status(&self, app: &str) -> Result<Option<AppState>, RunnerError> {
        let mut children = self.children.lock().unwrap();
        let Some(child) = children.get_mut(app) else {
            return Ok(None);
        };
        match child.try_wait().map_err(|e| RunnerError(e.to_string()))? {
            None => Ok(Some(AppState::Running)),
            Some(status) => {
                use std::os::unix::process::ExitStatusExt;
                let code = status
                    .code()
                    .or_else(|| status.signal().map(|s| 128 + s))
                    .unwrap_or(-1);
                Ok(Some(AppState::Exited(code)))
            }
        }
    }

    fn stop(&self, app: &str) -> Result<(), RunnerError> {
        if let Some(child) = self.children.lock().unwrap().get_mut(app) {
            let _ = child.kill();
            child.wait().map_err(|e| RunnerError(e.to_string()))?;
        }
        Ok(())
    }
}

impl Drop for ProcessRunner {
    fn drop(&mut self) {
        for child in self.children.get_mut().unwrap().values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn kernel_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn kernel_listener() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The member accepts contract `collab` with the clean-room policy for [`POLICY_TEXT`].
async fn set_up_contract(member: &GovernanceClient) {
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
    let policy = json!({"type": "add", "policyType": "snp-caci", "claims": {
        "x-ms-sevsnpvm-is-debuggable": false,
        "x-ms-sevsnpvm-hostdata": sha256_hex(POLICY_TEXT.as_bytes()),
    }});
    let p = member
        .propose_clean_room_policy("collab", policy)
        .await
        .unwrap();
    member
        .vote(p["proposalId"].as_str().unwrap(), true)
        .await
        .unwrap();
}

async fn set_logging(member: &GovernanceClient, enable: bool) {
    let p = member
        .propose_runtime_option("collab", "logging", enable)
        .await
        .unwrap();
    if p["proposalState"] == "Open" {
        member
            .vote(p["proposalId"].as_str().unwrap(), true)
            .await
            .unwrap();
    }
}

fn application(name: &str, start: &str, script: &str, sources: Value, sinks: Value) -> Application {
    serde_json::from_value(json!({
        "name": name,
        "image": {
            "executable": {
                "documentType": "OCI",
                "authenticityReceipt": "",
                "backingResource": {"name": name, "type": "AzureContainerRegistry", "id": "docker.io/library/busybox:1"},
            },
            "enforcementPolicy": {},
        },
        "startType": start,
        "command": ["sh", "-c", script],
        "environmentVariables": {"OUTPUT_LOCATION": "/mnt/remote/output"},
        "datasources": sources,
        "datasinks": sinks,
        "runtimeSettings": {},
    }))
    .unwrap()
}

fn ready(status_dir: &Path, access: &str, mount: &Path) {
    std::fs::create_dir_all(mount).unwrap();
    std::fs::write(
        status_dir.join(format!("{access}.volume.ready")),
        json!({"mount_path": mount}).to_string(),
    )
    .unwrap();
}

async fn call(method: reqwest::Method, url: String) -> (u16, Value) {
    let response = reqwest::Client::new()
        .request(method, url)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The contract's event messages from the code launcher, in ledger order.
async fn launcher_events(member: &GovernanceClient) -> Vec<String> {
    let events = member.events("collab", None, None, true).await.unwrap();
    let mut entries: Vec<(u64, String)> = events["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["data"]["source"] == "code-launcher")
        .map(|e| {
            (
                e["seqno"].as_u64().unwrap(),
                e["data"]["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    entries.sort();
    entries.into_iter().map(|(_, m)| m).collect()
}

fn position(events: &[String], wanted: &str) -> usize {
    events
        .iter()
        .position(|e| e.starts_with(wanted))
        .unwrap_or_else(|| panic!("no event '{wanted}' in {events:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn code_launcher_against_the_real_services() {
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
    let service = Service::open_with_attestation(
        &ServiceConfig {
            data_dir: dir.path().join("service"),
            initial_members: vec![member_id.cert_pem()],
            ledger: LedgerConfig {
                signature_interval_txs: 10,
                signature_interval: Duration::from_millis(100),
            },
        },
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
    let member = GovernanceClient::new(
        &endpoint,
        service.service_cert_pem(),
        MemberIdentity::load(&cert_path, &key_path).unwrap(),
    )
    .unwrap();
    set_up_contract(&member).await;
    set_logging(&member, true).await;

    let provider = VirtualProvider::new(
        &authority.url(),
        authority_ca.as_bytes(),
        POLICY_TEXT.as_bytes(),
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
    let skr: RunningSidecar =
        encfs_sidecars::server::spawn(kernel_listener().await, Arc::new(skr).router()).unwrap();
    let governance = GovernanceSidecar::start(GovernanceConfig {
        cgs_endpoint: endpoint.clone(),
        service_cert_pem: service.service_cert_pem().as_bytes().to_vec(),
        api_path_prefix: "app/contracts/collab".into(),
        skr: skr.url(),
    })
    .await
    .unwrap();
    let governance =
        encfs_sidecars::server::spawn(kernel_listener().await, Arc::new(governance).router())
            .unwrap();

    // The mounts: plain directories announced as the mount launchers would.
    let status_dir = dir.path().join("volumestatus");
    let telemetry = dir.path().join("telemetry");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&status_dir).unwrap();
    ready(&status_dir, "publisher-input", &mnt.join("input"));
    ready(&status_dir, "consumer-output", &mnt.join("output"));
    ready(
        &status_dir,
        "application-telemetry",
        &mnt.join("app-telemetry"),
    );
    ready(
        &status_dir,
        "infrastructure-telemetry",
        &mnt.join("infra-telemetry"),
    );
    std::fs::write(
        status_dir.join("broken-input.volume.error"),
        r#"{"error_code": 3}"#,
    )
    .unwrap();
    std::fs::write(mnt.join("input/data.txt"), "the publisher's rows\n").unwrap();

    let io = (
        json!({"publisher-input": "/mnt/remote/input"}),
        json!({"consumer-output": "/mnt/remote/output"}),
    );
    let apps = vec![
        application(
            "demo-app",
            "Auto",
            "cp /mnt/remote/input/data.txt \"$OUTPUT_LOCATION/copy.txt\" && echo copied-the-input",
            io.0.clone(),
            io.1.clone(),
        ),
        application(
            "long-app",
            "Manual",
            "echo long-app-up; exec sleep 60",
            json!({}),
            json!({}),
        ),
        application(
            "broken-app",
            "Manual",
            "true",
            json!({"broken-input": "/in"}),
            json!({}),
        ),
        application(
            "waiting-app",
            "Manual",
            "true",
            json!({"never-mounted": "/in"}),
            json!({}),
        ),
    ];
    let mut config = LauncherConfig::new(apps.clone(), telemetry.clone(), status_dir.clone());
    config.governance = governance.url();
    config.mount_wait = Duration::from_secs(1);
    let runner = Arc::new(ProcessRunner::new(&telemetry.join("application")));
    let launcher = Launcher::new(config.clone(), runner.clone()).unwrap();
    let listener = kernel_listener().await;
    let api = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(launcher.clone().serve_on(listener, async move {
        let _ = stopped.await;
    }));
    let url = |path: &str| format!("{api}{path}");

    // The auto-start app ran, wrote its output, and its logs were exported at its exit.
    let outcome = tokio::time::timeout(Duration::from_secs(30), launcher.outcome("demo-app"))
        .await
        .expect("demo-app did not finish")
        .unwrap();
    assert_eq!(outcome.exit_code, 0);
    assert!(outcome.logs_exported && !outcome.stopped_for_consent);
    assert_eq!(
        std::fs::read_to_string(mnt.join("output/copy.txt")).unwrap(),
        "the publisher's rows\n"
    );
    let exported = std::fs::read_to_string(mnt.join("app-telemetry/demo-app.log")).unwrap();
    assert!(exported.contains("copied-the-input"), "{exported}");
    let status = call(reqwest::Method::GET, url("/gov/demo-app/status")).await;
    assert_eq!(status, (200, json!({"status": "exited", "exit_code": 0})));
    let events = launcher_events(&member).await;
    let order = [
        "Creating container for demo-app",
        "Created container with Id demo-app-1 for demo-app",
        "Starting execution of demo-app container",
        "demo-app container status: exited, exit code: 0",
        "Exported the logs of demo-app to application-telemetry",
    ]
    .map(|wanted| position(&events, wanted));
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{events:#?}");

    // The inbound filter, and the routes behind it.
    for (method, path) in [
        (reqwest::Method::GET, "/gov/exportLogs"),
        (reqwest::Method::GET, "/gov/demo-app/start"),
        (reqwest::Method::POST, "/gov/demo-app/status"),
        (reqwest::Method::DELETE, "/gov/demo-app/status"),
        (reqwest::Method::POST, "/events"),
        (reqwest::Method::GET, "/"),
    ] {
        let answer = call(method.clone(), url(path)).await;
        assert_eq!(answer.0, 403, "{method} {path}");
        assert_eq!(answer.1["code"], "RequestNotAllowed", "{method} {path}");
    }
    let unknown = call(reqwest::Method::POST, url("/gov/nobody/start")).await;
    assert_eq!(
        (unknown.0, unknown.1["code"].as_str()),
        (404, Some("ApplicationNotFound"))
    );
    let unknown = call(reqwest::Method::GET, url("/gov/nobody/status")).await;
    assert_eq!(unknown.0, 404);
    let never = call(reqwest::Method::GET, url("/gov/long-app/status")).await;
    assert_eq!(never.0, 404, "{}", never.1);

    // Exports: logging is enabled, telemetry is not.
    let logs = call(reqwest::Method::POST, url("/gov/exportLogs")).await;
    assert_eq!(
        logs,
        (
            200,
            json!({"message": "Application telemetry data exported successfully."})
        )
    );
    let refused = call(reqwest::Method::POST, url("/gov/exportTelemetry")).await;
    assert_eq!(
        refused,
        (
            403,
            json!({"code": "ConsentCheckFailed", "message": "Consent status for telemetry is not enabled. Status is: 'disabled'."})
        )
    );

    // Execution disabled: a start is refused with the reference's body, and so is an
    // auto-start at boot (the app never runs).
    member
        .set_runtime_option("collab", "execution", false)
        .await
        .unwrap();
    let refused = call(reqwest::Method::POST, url("/gov/long-app/start")).await;
    assert_eq!(
        refused,
        (
            403,
            json!({"code": "ConsentCheckFailed", "message": "Consent status for execution is not enabled. Status is: 'disabled'."})
        )
    );
    let second_runner = Arc::new(ProcessRunner::new(&telemetry.join("application")));
    let mut second_config = config.clone();
    second_config.applications = vec![application("demo-app", "Auto", "true", io.0, io.1)];
    let second = Launcher::new(second_config, second_runner.clone()).unwrap();
    second.boot().await;
    assert_eq!(second_runner.status("demo-app").unwrap(), None);
    member
        .set_runtime_option("collab", "execution", true)
        .await
        .unwrap();

    // A running app is stopped within 5 s of a revocation, with an event.
    let asked = Instant::now();
    let started = call(reqwest::Method::POST, url("/gov/long-app/start")).await;
    println!(
        "POST /gov/long-app/start (consent check, events, start): {:?}",
        asked.elapsed()
    );
    assert_eq!(
        started,
        (200, json!({"message": "Application started successfully."}))
    );
    let running = call(reqwest::Method::GET, url("/gov/long-app/status")).await;
    assert_eq!(
        running,
        (200, json!({"status": "running", "exit_code": null}))
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(runner.status("long-app").unwrap(), Some(AppState::Running));
    let revoked_at = Instant::now();
    member
        .set_runtime_option("collab", "execution", false)
        .await
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), launcher.outcome("long-app"))
        .await
        .expect("long-app was not stopped")
        .unwrap();
    let took = revoked_at.elapsed();
    println!("revocation → app stopped and recorded: {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(outcome.stopped_for_consent);
    assert_eq!(outcome.exit_code, 128 + 9);
    let events = launcher_events(&member).await;
    position(
        &events,
        "Execution consent for long-app was revoked (status: 'disabled')",
    );
    member
        .set_runtime_option("collab", "execution", true)
        .await
        .unwrap();

    // Mounts that failed or never appear.
    let broken = call(reqwest::Method::POST, url("/gov/broken-app/start")).await;
    assert_eq!(broken.0, 500);
    assert_eq!(broken.1["code"], "MountNotAvailable");
    assert_eq!(
        broken.1["message"],
        "Mount point for broken-input is not available. The encfs mount exited with error : 3"
    );
    let waiting = call(reqwest::Method::POST, url("/gov/waiting-app/start")).await;
    assert_eq!(waiting.1["code"], "MountNotAvailable", "{}", waiting.1);
    assert!(
        waiting.1["message"]
            .as_str()
            .unwrap()
            .contains("never-mounted.volume.ready"),
        "{}",
        waiting.1
    );
    assert_eq!(runner.status("broken-app").unwrap(), None);

    // Logging disabled (auto-accepted): export is refused.
    set_logging(&member, false).await;
    let refused = call(reqwest::Method::POST, url("/gov/exportLogs")).await;
    assert_eq!(
        refused,
        (
            403,
            json!({"code": "ConsentCheckFailed", "message": "Consent status for logging is not enabled. Status is: 'disabled'."})
        )
    );

    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();
    governance.shutdown().await.unwrap();
    skr.shutdown().await.unwrap();
    server.shutdown().await;
    authority.shutdown().await;
}
