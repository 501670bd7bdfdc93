//! Helpers shared by the CLI tests that drive a real governance service: a sandbox directory
//! running `encfs governance …`, a service started with `--daemon` (killed on drop), client
//! profiles, and the reference walkthrough's three-member consortium.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

/// The `encfs` binary the tests drive: this build's, or the one `ENCFS_BENCH_BIN` names (the
/// benchmarks point it at the shared release build, so that a debug-built harness measures the
/// optimised binary).
pub fn encfs_bin() -> PathBuf {
    std::env::var_os("ENCFS_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_encfs")))
}

impl Sandbox {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(encfs_bin());
        command
            .arg("governance")
            .args(args)
            .current_dir(self.dir.path())
            .env("ENCFS_GOVERNANCE_CONFIG", self.path("clients.yaml"));
        command
    }

    /// `encfs ARGS` (no `governance` prefix), in the sandbox, with its governance profiles.
    pub fn encfs(&self, args: &[&str]) -> Command {
        let mut command = Command::new(encfs_bin());
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("ENCFS_GOVERNANCE_CONFIG", self.path("clients.yaml"));
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "encfs governance {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    pub fn tsv(&self, args: &[&str], query: &str) -> String {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--query", query, "--output", "tsv"]);
        self.ok(&all).trim().to_owned()
    }

    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "encfs governance {args:?} should fail"
        );
        String::from_utf8(out.stderr).unwrap()
    }
}

/// A service started with `--daemon`; killed on drop, whatever happened.
pub struct RunningService {
    pub pid: i32,
    pub endpoint: String,
}

impl Drop for RunningService {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-9", &self.pid.to_string()])
            .status();
    }
}

pub fn start_service(sb: &Sandbox, data: &str, initial: &[&str]) -> RunningService {
    let mut args = vec![
        "service",
        "start",
        "--data",
        data,
        "--listen",
        "127.0.0.1:0",
        "--daemon",
        "--signature-interval-ms",
        "100",
    ];
    for cert in initial {
        args.extend_from_slice(&["--initial-member", cert]);
    }
    let status = sb.json(&args);
    RunningService {
        pid: status["pid"].as_i64().unwrap() as i32,
        endpoint: status["endpoint"].as_str().unwrap().to_owned(),
    }
}

pub fn deploy(sb: &Sandbox, service: &RunningService, data: &str, name: &str) {
    sb.ok(&[
        "client",
        "deploy",
        "--ccf-endpoint",
        &service.endpoint,
        "--signing-cert",
        &format!("keys/{name}_cert.pem"),
        "--signing-key",
        &format!("keys/{name}_privk.pem"),
        "--service-cert",
        &format!("{data}/service_cert.pem"),
        "--name",
        name,
    ]);
}

pub fn keygen(sb: &Sandbox, name: &str) -> String {
    sb.tsv(
        &["member", "keygenerator", "--name", name, "--out", "keys"],
        "memberId",
    )
}

pub fn gc(name: &str) -> [&str; 2] {
    ["--governance-client", name]
}

pub fn with<'a>(args: &[&'a str], client: &'a str) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend_from_slice(&gc(client));
    all
}

/// The consortium of the walkthrough: the ISV starts the service and adds the other two.
pub fn consortium(sb: &Sandbox) -> RunningService {
    for name in ["isv", "publisher", "consumer"] {
        keygen(sb, name);
    }
    let service = start_service(sb, "svc", &["keys/isv_cert.pem"]);
    for name in ["isv", "publisher", "consumer"] {
        deploy(sb, &service, "svc", name);
    }
    sb.ok(&with(&["member", "activate"], "isv"));
    let mut voters = vec!["isv"];
    for name in ["publisher", "consumer"] {
        let cert = format!("keys/{name}_cert.pem");
        let proposal = sb.tsv(
            &with(
                &[
                    "member",
                    "add",
                    "--certificate",
                    &cert,
                    "--identifier",
                    name,
                ],
                "isv",
            ),
            "proposalId",
        );
        for voter in &voters {
            sb.ok(&with(
                &[
                    "proposal",
                    "vote",
                    "--proposal-id",
                    &proposal,
                    "--action",
                    "accept",
                ],
                voter,
            ));
        }
        assert_eq!(
            sb.tsv(
                &with(&["proposal", "show", "--proposal-id", &proposal], "isv"),
                "proposalState"
            ),
            "Accepted"
        );
        sb.ok(&with(&["member", "activate"], name));
        voters.push(name);
    }
    service
}

pub fn vote_all(sb: &Sandbox, proposal: &str) -> String {
    let mut state = String::new();
    for voter in ["isv", "publisher", "consumer"] {
        state = sb.tsv(
            &with(
                &[
                    "proposal",
                    "vote",
                    "--proposal-id",
                    proposal,
                    "--action",
                    "accept",
                ],
                voter,
            ),
            "proposalState",
        );
    }
    state
}

/// Creates contract `id` (data `spec`), has every member of [`consortium`] accept it, then
/// proposes and accepts the clean-room policy `policy_json` (the `deployment policy propose`
/// body) for it.
pub fn accepted_contract_with_policy(sb: &Sandbox, id: &str, spec: &str, policy_json: &str) {
    accepted_contract(sb, id, spec);
    propose_policy(sb, id, policy_json);
}

/// Creates contract `id` (data `spec`) and has every member of [`consortium`] accept it.
pub fn accepted_contract(sb: &Sandbox, id: &str, spec: &str) {
    let data = format!("{id}-spec.yaml");
    std::fs::write(sb.path(&data), spec).unwrap();
    let data_arg = format!("@{data}");
    let shown = sb.json(&with(
        &["contract", "create", "--id", id, "--data", &data_arg],
        "publisher",
    ));
    let version = shown["version"].as_str().unwrap().to_owned();
    let proposal = sb.tsv(
        &with(
            &["contract", "propose", "--id", id, "--version", &version],
            "publisher",
        ),
        "proposalId",
    );
    for voter in ["isv", "publisher", "consumer"] {
        sb.ok(&with(
            &[
                "contract",
                "vote",
                "--id",
                id,
                "--proposal-id",
                &proposal,
                "--action",
                "accept",
            ],
            voter,
        ));
    }
}

/// Proposes and accepts (all three members) the clean-room policy `policy_json` for `id`.
pub fn propose_policy(sb: &Sandbox, id: &str, policy_json: &str) {
    let file = format!("{id}-policy.json");
    std::fs::write(sb.path(&file), policy_json).unwrap();
    let proposal = sb.tsv(
        &with(
            &[
                "deployment",
                "policy",
                "propose",
                "--policy-file",
                &file,
                "--contract-id",
                id,
            ],
            "consumer",
        ),
        "proposalId",
    );
    assert_eq!(vote_all(sb, &proposal), "Accepted");
}
