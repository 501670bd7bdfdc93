//! `encfs sidecar governance` through the binary, every part a real service on loopback: the
//! virtual attestation authority (`encfs attestation serve`), the governance service started
//! with `--attestation-authority-ca`, one member who accepted contract `collab` and its
//! clean-room policy, the skr sidecar declaring the agreed policy, and the governance sidecar
//! configured by the reference's environment variables (`ccrgovEndpoint`, `serviceCert`,
//! `ccrgovApiPathPrefix`) with `--daemon --run-dir`. The sidecar's consent check follows the
//! member's `runtime-option set`, and its event appears in `contract event list`. Missing
//! settings are refused naming the flag and the variable. Every service is stopped on drop.

use std::process::{Command, Stdio};

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use serde_json::{Value, json};

mod support;
use support::governance::*;

const AGREED_POLICY: &str = "package policy\n\ndefault allow := false\n";

fn kernel_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `encfs …` stop commands run on drop, last started first.
struct Stops {
    sandbox: std::path::PathBuf,
    commands: Vec<Vec<String>>,
}

impl Drop for Stops {
    fn drop(&mut self) {
        for stop in self.commands.iter().rev() {
            let _ = Command::new(env!("CARGO_BIN_EXE_encfs"))
                .args(stop)
                .current_dir(&self.sandbox)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.to_owned(), body.to_owned())
}

fn ok_encfs(sb: &Sandbox, args: &[&str]) {
    let out = sb.encfs(args).output().unwrap();
    assert!(
        out.status.success(),
        "encfs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn vote(sb: &Sandbox, proposal: &str) {
    sb.ok(&with(
        &[
            "proposal",
            "vote",
            "--proposal-id",
            proposal,
            "--action",
            "accept",
        ],
        "isv",
    ));
}

#[test]
fn the_governance_sidecar_from_the_cli() {
    let sb = Sandbox::new();
    let mut stops = Stops {
        sandbox: sb.dir.path().to_owned(),
        commands: Vec::new(),
    };
    let authority_port = kernel_port();
    let authority_listen = format!("127.0.0.1:{authority_port}");
    ok_encfs(
        &sb,
        &[
            "attestation",
            "serve",
            "--listen",
            &authority_listen,
            "--data",
            "authority",
            "--daemon",
        ],
    );
    stops.commands.push(
        ["attestation", "stop", "--data", "authority"]
            .map(String::from)
            .to_vec(),
    );

    keygen(&sb, "isv");
    let status = sb.json(&[
        "service",
        "start",
        "--data",
        "svc",
        "--listen",
        "127.0.0.1:0",
        "--daemon",
        "--signature-interval-ms",
        "100",
        "--initial-member",
        "keys/isv_cert.pem",
        "--attestation-authority-ca",
        "authority/authority-ca.pem",
    ]);
    let service = RunningService {
        pid: status["pid"].as_i64().unwrap() as i32,
        endpoint: status["endpoint"].as_str().unwrap().to_owned(),
    };
    deploy(&sb, &service, "svc", "isv");
    sb.ok(&with(&["member", "activate"], "isv"));

    // The contract and the clean-room policy for the agreed policy's hostdata.
    std::fs::write(sb.path("spec.yaml"), "applications: []\n").unwrap();
    let shown = sb.json(&with(
        &[
            "contract",
            "create",
            "--id",
            "collab",
            "--data",
            "@spec.yaml",
        ],
        "isv",
    ));
    let version = shown["version"].as_str().unwrap().to_owned();
    let proposal = sb.tsv(
        &with(
            &[
                "contract",
                "propose",
                "--id",
                "collab",
                "--version",
                &version,
            ],
            "isv",
        ),
        "proposalId",
    );
    sb.ok(&with(
        &[
            "contract",
            "vote",
            "--id",
            "collab",
            "--proposal-id",
            &proposal,
            "--action",
            "accept",
        ],
        "isv",
    ));
    let hostdata: String = digest(&SHA256, AGREED_POLICY.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(
        sb.path("policy.json"),
        json!({"type": "add", "policyType": "snp-caci", "claims": {
            "x-ms-sevsnpvm-is-debuggable": false, "x-ms-sevsnpvm-hostdata": hostdata}})
        .to_string(),
    )
    .unwrap();
    let proposal = sb.tsv(
        &with(
            &[
                "deployment",
                "policy",
                "propose",
                "--policy-file",
                "policy.json",
                "--contract-id",
                "collab",
            ],
            "isv",
        ),
        "proposalId",
    );
    vote(&sb, &proposal);

    // The skr sidecar declaring the agreed policy, then the governance sidecar from env.
    std::fs::write(sb.path("agreed.rego"), AGREED_POLICY).unwrap();
    let skr_listen = format!("127.0.0.1:{}", kernel_port());
    ok_encfs(
        &sb,
        &[
            "sidecar",
            "skr",
            "--listen",
            &skr_listen,
            "--attestation",
            "virtual",
            "--authority",
            &format!("https://{authority_listen}"),
            "--authority-ca",
            "authority/authority-ca.pem",
            "--security-policy",
            "agreed.rego",
            "--run-dir",
            "run-skr",
            "--daemon",
        ],
    );
    stops.commands.push(
        ["sidecar", "stop", "--run-dir", "run-skr"]
            .map(String::from)
            .to_vec(),
    );
    let service_cert = std::fs::read(sb.path("svc/service_cert.pem")).unwrap();
    let governance_listen = format!("127.0.0.1:{}", kernel_port());
    let out = sb
        .encfs(&[
            "sidecar",
            "governance",
            "--listen",
            &governance_listen,
            "--skr",
            &format!("http://{skr_listen}"),
            "--run-dir",
            "run-gov",
            "--daemon",
        ])
        .env("ccrgovEndpoint", &service.endpoint)
        .env(
            "serviceCert",
            base64::engine::general_purpose::STANDARD.encode(&service_cert),
        )
        .env("ccrgovApiPathPrefix", "app/contracts/collab")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stops.commands.push(
        ["sidecar", "stop", "--run-dir", "run-gov"]
            .map(String::from)
            .to_vec(),
    );
    let ready: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ready["sidecar"], "governance");
    let base = format!("http://{governance_listen}");

    let consent = |expected: &str| {
        let (status, body) = curl(&["-X", "POST", &format!("{base}/consentcheck/execution")]);
        assert_eq!(status, "200", "{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["status"], expected, "{body}");
    };
    consent("enabled");
    let set = |action: &str| {
        sb.ok(&with(
            &[
                "contract",
                "runtime-option",
                "set",
                "--option",
                "execution",
                "--action",
                action,
                "--contract-id",
                "collab",
            ],
            "isv",
        ))
    };
    set("disable");
    consent("disabled");
    set("enable");
    consent("enabled");

    let (status, body) = curl(&[
        "-X",
        "PUT",
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"source":"code-launcher","message":"from the cli test"}"#,
        &format!("{base}/events"),
    ]);
    assert_eq!(status, "200", "{body}");
    let events = sb.json(&with(
        &[
            "contract",
            "event",
            "list",
            "--contract-id",
            "collab",
            "--all",
        ],
        "isv",
    ));
    assert!(events.to_string().contains("from the cli test"), "{events}");

    // Missing settings name their flag and variable.
    let out = sb
        .encfs(&["sidecar", "governance", "--listen", "127.0.0.1:0"])
        .env_remove("ccrgovEndpoint")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--governance-endpoint") && stderr.contains("ccrgovEndpoint"),
        "{stderr}"
    );
    let out = sb
        .encfs(&[
            "sidecar",
            "governance",
            "--listen",
            "127.0.0.1:0",
            "--governance-endpoint",
            &service.endpoint,
            "--contract-id",
            "collab",
        ])
        .env_remove("serviceCert")
        .env_remove("serviceCertPath")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--service-cert-file"), "{stderr}");
    drop(stops);
    drop(service);
}
