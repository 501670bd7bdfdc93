//! `encfs governance …` through the binary, against a real service over HTTPS on 127.0.0.1: the
//! reference walkthrough's consortium steps (keygen, service start, client profiles, add, vote,
//! activate), a contract created, proposed and accepted by all three members, the deployment
//! template and policy, logging and execution consent, the `--query … --output tsv` idiom; clear
//! errors for a wrong client, key or pinned certificate; and `kill -9` under load, after which
//! every acknowledged transaction is still there and one flipped ledger byte is found.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod support;
use support::governance::*;

#[test]
fn the_walkthrough_consortium_and_contract_through_the_cli() {
    let sb = Sandbox::new();
    let service = consortium(&sb);
    let members = sb.json(&with(&["member", "show"], "isv"));
    assert_eq!(
        members["value"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["status"] == "Active")
            .count(),
        3
    );

    // The contract: data from a file, proposed at its version, accepted by all three.
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
        "publisher",
    ));
    assert_eq!(shown["state"], "Draft");
    assert_eq!(shown["data"], "applications: []\n");
    let version = shown["version"].as_str().unwrap();
    let stale = sb.fails(&with(
        &[
            "contract",
            "create",
            "--id",
            "collab",
            "--data",
            "x",
            "--version",
            "1.1",
        ],
        "publisher",
    ));
    assert!(
        stale.contains("PreconditionFailed") && stale.contains("412"),
        "{stale}"
    );
    let proposal = sb.tsv(
        &with(
            &[
                "contract",
                "propose",
                "--id",
                "collab",
                "--version",
                version,
            ],
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
                "collab",
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
            &with(&["contract", "show", "--id", "collab"], "consumer"),
            "state"
        ),
        "Accepted"
    );

    // Deployment template and clean-room policy.
    std::fs::write(sb.path("template.json"), r#"{"resources": []}"#).unwrap();
    let p = sb.tsv(
        &with(
            &[
                "deployment",
                "template",
                "propose",
                "--template-file",
                "template.json",
                "--contract-id",
                "collab",
            ],
            "consumer",
        ),
        "proposalId",
    );
    assert_eq!(vote_all(&sb, &p), "Accepted");
    assert_eq!(
        sb.json(&with(
            &["deployment", "template", "show", "--contract-id", "collab"],
            "isv"
        ))["data"]["resources"],
        serde_json::json!([])
    );
    std::fs::write(
        sb.path("policy.json"),
        r#"{"type":"add","policyType":"snp-caci","claims":{"x-ms-sevsnpvm-is-debuggable":false,"x-ms-sevsnpvm-hostdata":"ab"}}"#,
    )
    .unwrap();
    let p = sb.tsv(
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
            "consumer",
        ),
        "proposalId",
    );
    assert_eq!(vote_all(&sb, &p), "Accepted");
    assert_eq!(
        sb.tsv(
            &with(
                &["deployment", "policy", "show", "--contract-id", "collab"],
                "isv"
            ),
            "policy.\"x-ms-sevsnpvm-hostdata\"[0]"
        ),
        "ab"
    );

    // Logging: enabled by all, disabled with zero votes; execution consent withdrawn by one.
    let option = ["contract", "runtime-option"];
    let propose = |action: &str| {
        let mut args = option.to_vec();
        args.extend_from_slice(&[
            "propose",
            "--option",
            "logging",
            "--action",
            action,
            "--contract-id",
            "collab",
        ]);
        sb.tsv(&with(&args, "publisher"), "proposalId")
    };
    let get = |name: &str| {
        let mut args = option.to_vec();
        args.extend_from_slice(&["get", "--option", name, "--contract-id", "collab"]);
        sb.tsv(&with(&args, "isv"), "status")
    };
    let p = propose("enable");
    assert_eq!(vote_all(&sb, &p), "Accepted");
    assert_eq!(get("logging"), "enabled");
    let p = propose("disable");
    assert_eq!(
        sb.tsv(
            &with(&["proposal", "show", "--proposal-id", &p], "isv"),
            "proposalState"
        ),
        "Accepted"
    );
    assert_eq!(get("logging"), "disabled");
    assert_eq!(get("execution"), "enabled");
    sb.ok(&with(
        &[
            "contract",
            "runtime-option",
            "set",
            "--option",
            "execution",
            "--action",
            "disable",
            "--contract-id",
            "collab",
        ],
        "consumer",
    ));
    assert_eq!(get("execution"), "disabled");
    let refused = sb.fails(&with(
        &[
            "contract",
            "runtime-option",
            "set",
            "--option",
            "logging",
            "--action",
            "enable",
            "--contract-id",
            "collab",
        ],
        "isv",
    ));
    assert!(refused.contains("propose"), "{refused}");
    assert_eq!(
        sb.json(&with(
            &["contract", "event", "list", "--contract-id", "collab"],
            "isv"
        )),
        serde_json::json!({"value": []})
    );

    // A receipt of the acceptance verifies offline against the pinned certificate.
    let version = sb.tsv(
        &with(&["contract", "show", "--id", "collab"], "isv"),
        "version",
    );
    let receipt = sb.ok(&with(
        &["receipt", "get", "--transaction-id", &version],
        "isv",
    ));
    std::fs::write(sb.path("receipt.json"), receipt).unwrap();
    let verified = sb.json(&[
        "receipt",
        "verify",
        "receipt.json",
        "--service-cert",
        "svc/service_cert.pem",
    ]);
    assert_eq!(verified["verified"], true);

    // Clear errors: an unknown client, a key that is not the certificate's, a wrong pinned
    // certificate (another service's).
    let unknown = sb.fails(&with(&["member", "show"], "nobody"));
    assert!(
        unknown.contains("no governance client named \"nobody\""),
        "{unknown}"
    );
    let mismatch = sb.fails(&[
        "client",
        "deploy",
        "--ccf-endpoint",
        &service.endpoint,
        "--signing-cert",
        "keys/isv_cert.pem",
        "--signing-key",
        "keys/publisher_privk.pem",
        "--service-cert",
        "svc/service_cert.pem",
        "--name",
        "bad",
    ]);
    assert!(
        mismatch.contains("does not match the certificate"),
        "{mismatch}"
    );
    keygen(&sb, "other");
    let other = start_service(&sb, "other-svc", &["keys/other_cert.pem"]);
    sb.ok(&[
        "client",
        "deploy",
        "--ccf-endpoint",
        &service.endpoint,
        "--signing-cert",
        "keys/isv_cert.pem",
        "--signing-key",
        "keys/isv_privk.pem",
        "--service-cert",
        "other-svc/service_cert.pem",
        "--name",
        "wrong-pin",
    ]);
    let pinned = sb.fails(&with(&["member", "show"], "wrong-pin"));
    assert!(
        pinned.contains(&service.endpoint) && pinned.to_lowercase().contains("certificate"),
        "{pinned}"
    );
    sb.ok(&["service", "stop", "--data", "other-svc"]);
    drop(other);

    sb.ok(&["service", "stop", "--data", "svc"]);
    let ledger = sb.json(&["ledger", "verify", "svc"]);
    assert_eq!(ledger["verified"], true);
    assert_eq!(
        ledger["lastSignedSeqno"], ledger["transactions"],
        "a clean stop ends the ledger on a signature: {ledger}"
    );
}

/// Creates contracts `{prefix}-{i}` one after another until the service fails; returns the ids
/// the CLI acknowledged.
fn load(sb: &Sandbox, prefix: &str, client: &str, deadline: Instant) -> Vec<String> {
    let mut acknowledged = Vec::new();
    for i in 0.. {
        if Instant::now() > deadline {
            break;
        }
        let id = format!("{prefix}-{i}");
        let out = sb.run(&with(
            &["contract", "create", "--id", &id, "--data", "load"],
            client,
        ));
        if !out.status.success() {
            break;
        }
        acknowledged.push(id);
    }
    acknowledged
}

#[test]
fn kill_9_under_load_loses_no_acknowledged_transaction_and_a_flipped_byte_is_found() {
    let sb = Sandbox::new();
    let service = consortium(&sb);
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid = service.pid;
    let sandbox = &sb;
    let acknowledged: Vec<String> = std::thread::scope(|scope| {
        let loaders: Vec<_> = ["isv", "publisher", "consumer"]
            .into_iter()
            .map(|client| scope.spawn(move || load(sandbox, client, client, deadline)))
            .collect();
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .unwrap()
                .success()
        );
        loaders
            .into_iter()
            .flat_map(|l| l.join().unwrap())
            .collect()
    });
    drop(service);
    assert!(
        acknowledged.len() >= 3,
        "the load acknowledged only {acknowledged:?}"
    );

    // Restart on the same state: every acknowledged contract is there.
    std::thread::sleep(Duration::from_millis(200));
    let service = start_service(&sb, "svc", &[]);
    for name in ["isv", "publisher", "consumer"] {
        deploy(&sb, &service, "svc", name);
    }
    let listed = sb.json(&with(
        &["contract", "show", "--id", &acknowledged[0]],
        "isv",
    ));
    assert_eq!(listed["state"], "Draft");
    let ids: Vec<String> = sb
        .tsv(&with(&["member", "show"], "isv"), "length(value)")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(ids, ["3"]);
    for id in &acknowledged {
        sb.ok(&with(&["contract", "show", "--id", id], "consumer"));
    }
    sb.ok(&["service", "stop", "--data", "svc"]);
    drop(service);
    assert_eq!(sb.json(&["ledger", "verify", "svc"])["verified"], true);

    // One flipped byte, anywhere in the body of the ledger, is found by the offline check and by
    // a start on it.
    let ledger = ledger_file(&sb.path("svc"));
    let original = std::fs::read(&ledger).unwrap();
    for at in [
        20,
        original.len() / 3,
        original.len() / 2,
        original.len() - 2,
    ] {
        let mut bytes = original.clone();
        bytes[at] ^= 0x01;
        std::fs::write(&ledger, &bytes).unwrap();
        let error = sb.fails(&["ledger", "verify", "svc"]);
        assert!(error.contains("ledger"), "byte {at}: {error}");
        let start = sb.run(&[
            "service",
            "start",
            "--data",
            "svc",
            "--listen",
            "127.0.0.1:0",
            "--daemon",
        ]);
        assert!(
            !start.status.success(),
            "a service started on a ledger with byte {at} flipped"
        );
    }
    std::fs::write(&ledger, &original).unwrap();
    assert_eq!(sb.json(&["ledger", "verify", "svc"])["verified"], true);
}

fn ledger_file(data: &Path) -> PathBuf {
    data.join("ledger").join("ledger.bin")
}
