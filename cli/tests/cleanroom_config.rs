//! The clean-room specification verbs through the binary: `config add-application` (the
//! reference's shape, replace by name, unknown fields kept), `set-logging` / `set-telemetry` (a
//! real datastore with its container and DEK, the datasink, `governance.telemetry`), `view` (the
//! seed's merge of the publisher's and the consumer's specs, idempotence, the conflict error),
//! `validate` (every error and warning, JSON and text, the exit status), a spec written in the
//! reference's shape, and malformed YAML named by file and line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value as Json;
use serde_yaml::Value;

/// One party's directory: its spec, datastore and secret store configs.
struct Party {
    dir: tempfile::TempDir,
}

impl Party {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_encfs"))
            .args(args)
            .current_dir(self.dir.path())
            .env("ENCFS_CONFIG", self.path("datastores.yaml"))
            .env("ENCFS_SECRETSTORE_CONFIG", self.path("secretstores.yaml"))
            .env("HOME", self.dir.path())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "encfs {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail; returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "encfs {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    fn yaml(&self, name: &str) -> Value {
        serde_yaml::from_str(&std::fs::read_to_string(self.path(name)).unwrap()).unwrap()
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).unwrap();
    }

    /// A DEK vault and a KEK vault (recorded only: nothing here talks to them).
    fn add_vaults(&self) {
        self.ok(&[
            "secretstore",
            "add",
            "--name",
            "dekkv",
            "--backing-store-type",
            "azure-keyvault",
            "--backing-store-id",
            "https://dek.vault.example",
        ]);
        self.ok(&[
            "secretstore",
            "add",
            "--name",
            "kekkv",
            "--backing-store-type",
            "azure-keyvault-premium",
            "--backing-store-id",
            "https://kek.vault.example",
            "--attestation-endpoint",
            "https://maa.example",
        ]);
        self.ok(&[
            "secretstore",
            "add",
            "--name",
            "local",
            "--backing-store-type",
            "local",
            "--backing-store-id",
            "local-secrets",
        ]);
    }

    fn datastore(&self, name: &str, mode: &str) {
        let store = self.path(&format!("stores/{name}"));
        self.ok(&[
            "datastore",
            "add",
            "--name",
            name,
            "--store",
            store.to_str().unwrap(),
            "--mode",
            mode,
        ]);
    }
}

fn find<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no entry '{name}' in {list:?}"))
}

fn names(list: &Value) -> Vec<String> {
    list.as_sequence()
        .map(|l| {
            l.iter()
                .map(|e| e["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn add_application_has_the_reference_shape_and_replaces_by_name() {
    let party = Party::new();
    party.ok(&["config", "init", "--cleanroom-config", "spec.yaml"]);
    // A field this version does not model survives the rewrite.
    let mut text = std::fs::read_to_string(party.path("spec.yaml")).unwrap();
    text.push_str("futureField: {kept: true}\n");
    party.write("spec.yaml", &text);
    let out = party.ok(&[
        "config",
        "add-application",
        "--cleanroom-config",
        "spec.yaml",
        "--name",
        "demo-app",
        "--image",
        "docker.io/golang:1.23",
        "--command",
        "bash -c 'gzip -c \"$INPUT_LOCATION/input.txt\" > $OUTPUT_LOCATION/output.gz'",
        "--datasources",
        "publisher-input=/mnt/remote/input",
        "--datasinks",
        "consumer-output=/mnt/remote/output",
        "--env",
        "INPUT_LOCATION=/mnt/remote/input",
        "OUTPUT_LOCATION=/mnt/remote/output",
        "--cpu",
        "0.5",
        "--memory",
        "4",
        "--ports",
        "8080",
        "--auto-start",
    ]);
    assert!(
        out.contains("application demo-app (docker.io/golang:1.23, auto start) added"),
        "{out}"
    );
    let spec = party.yaml("spec.yaml");
    assert_eq!(spec["futureField"]["kept"], true);
    let app = find(&spec["applications"], "demo-app");
    let executable = &app["image"]["executable"];
    assert_eq!(executable["documentType"], "OCI");
    assert_eq!(executable["backingResource"]["id"], "docker.io/golang:1.23");
    assert_eq!(
        executable["backingResource"]["type"],
        "AzureContainerRegistry"
    );
    assert_eq!(
        executable["backingResource"]["provider"]["url"],
        "docker.io"
    );
    assert_eq!(
        app["image"]["enforcementPolicy"]["policy"]["policyDocument"],
        "eyJ0cnVzdFR5cGUiOiJodHRwcyJ9"
    );
    assert_eq!(app["startType"], "Auto");
    assert_eq!(
        app["command"],
        serde_yaml::to_value([
            "bash",
            "-c",
            "gzip -c \"$INPUT_LOCATION/input.txt\" > $OUTPUT_LOCATION/output.gz"
        ])
        .unwrap()
    );
    assert_eq!(
        app["environmentVariables"]["OUTPUT_LOCATION"],
        "/mnt/remote/output"
    );
    assert_eq!(app["datasources"]["publisher-input"], "/mnt/remote/input");
    assert_eq!(app["datasinks"]["consumer-output"], "/mnt/remote/output");
    assert_eq!(app["runtimeSettings"]["ports"][0], 8080);
    assert_eq!(app["runtimeSettings"]["resource"]["requests"]["cpu"], 0.5);
    assert_eq!(
        app["runtimeSettings"]["resource"]["requests"]["memoryInGB"],
        4.0
    );

    // The same name again replaces the entry: a command alone, manual start.
    let out = party.ok(&[
        "config",
        "add-application",
        "--cleanroom-config",
        "spec.yaml",
        "--name",
        "demo-app",
        "--command",
        "python3 -c 'print(1)'",
        "--cpu",
        "1",
        "--memory",
        "0.5",
    ]);
    assert!(out.contains("replaced"), "{out}");
    party.ok(&[
        "config",
        "add-application",
        "--cleanroom-config",
        "spec.yaml",
        "--name",
        "second",
        "--image",
        "myacr.azurecr.io/app:v1",
        "--cpu",
        "1",
        "--memory",
        "1",
    ]);
    let spec = party.yaml("spec.yaml");
    assert_eq!(names(&spec["applications"]), ["demo-app", "second"]);
    let app = find(&spec["applications"], "demo-app");
    assert_eq!(app["startType"], "Manual");
    assert_eq!(
        app["image"]["executable"]["backingResource"]["id"],
        "encfs.local/command:latest"
    );
    assert_eq!(
        app["command"],
        serde_yaml::to_value(["python3", "-c", "print(1)"]).unwrap()
    );
    assert_eq!(
        app["environmentVariables"],
        Value::Mapping(Default::default())
    );
    let second = find(&spec["applications"], "second");
    assert_eq!(
        second["image"]["executable"]["backingResource"]["provider"]["url"],
        "myacr.azurecr.io"
    );
    assert_eq!(second["command"], Value::Sequence(vec![]));
    assert_eq!(spec["futureField"]["kept"], true);

    // Bad input: nothing changes, the error says what is wrong.
    let before = std::fs::read_to_string(party.path("spec.yaml")).unwrap();
    let base = [
        "config",
        "add-application",
        "--cleanroom-config",
        "spec.yaml",
        "--name",
        "x",
        "--cpu",
        "1",
        "--memory",
        "1",
    ];
    let error = party.fails(&base);
    assert!(error.contains("--image"), "{error}");
    let error = party.fails(&[&base[..], &["--image", "a", "--datasources", "nopath"]].concat());
    assert!(
        error.contains("--datasources takes NAME=VALUE pairs, not 'nopath'"),
        "{error}"
    );
    let error = party.fails(&[&base[..], &["--command", "sh -c 'unclosed"]].concat());
    assert!(error.contains("does not split into words"), "{error}");
    let error = party.fails(&[&base[..], &["--image", "a", "--env", "A=1", "A=2"]].concat());
    assert!(error.contains("--env gives 'A' twice"), "{error}");
    let error = party.fails(&[
        "config",
        "add-application",
        "--cleanroom-config",
        "missing.yaml",
        "--name",
        "x",
        "--image",
        "a",
        "--cpu",
        "1",
        "--memory",
        "1",
    ]);
    assert!(error.contains("missing.yaml"), "{error}");
    assert_eq!(
        std::fs::read_to_string(party.path("spec.yaml")).unwrap(),
        before
    );
}

#[test]
fn set_logging_and_set_telemetry_create_the_datastores_and_sinks() {
    let party = Party::new();
    party.add_vaults();
    party.ok(&["config", "init", "--cleanroom-config", "publisher.config"]);
    let account = party.path("account");
    let account = account.to_str().unwrap();
    let out = party.ok(&[
        "config",
        "set-logging",
        "--cleanroom-config",
        "publisher.config",
        "--storage-account",
        account,
        "--encryption-mode",
        "SSE",
    ]);
    assert!(out.contains("container created"), "{out}");
    let datastores = party.yaml("datastores.yaml");
    let logs = &datastores["datastores"][0];
    let name = logs["name"].as_str().unwrap().to_owned();
    assert!(
        name.starts_with("application-telemetry-") && name.ends_with("-publisherconfig"),
        "{name}"
    );
    assert!(name.len() <= 63);
    assert_eq!(logs["mode"], "sse");
    assert_eq!(logs["store"], format!("{account}/{name}"));
    assert!(
        Path::new(logs["key"].as_str().unwrap()).exists(),
        "the DEK file"
    );
    assert!(
        Path::new(&format!("{account}/{name}")).is_dir(),
        "the container"
    );

    let spec = party.yaml("publisher.config");
    let sink = find(&spec["datasinks"], "application-telemetry");
    assert_eq!(sink["store"]["id"], name.as_str());
    assert_eq!(sink["type"], "Volume_ReadWrite");
    assert_eq!(
        &spec["governance"]["telemetry"]["application"]["logs"],
        sink
    );

    // Again: the datastore is kept, the sink replaced by name, nothing duplicated.
    let out = party.ok(&[
        "config",
        "set-logging",
        "--cleanroom-config",
        "publisher.config",
        "--storage-account",
        account,
        "--encryption-mode",
        "sse",
    ]);
    assert!(out.contains("kept"), "{out}");
    assert_eq!(
        party.yaml("datastores.yaml")["datastores"]
            .as_sequence()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        names(&party.yaml("publisher.config")["datasinks"]),
        ["application-telemetry"]
    );

    // CSE needs the key stores; with them the sink carries the wrapped DEK and KEK references.
    let error = party.fails(&[
        "config",
        "set-telemetry",
        "--cleanroom-config",
        "publisher.config",
        "--storage-account",
        account,
        "--encryption-mode",
        "CSE",
    ]);
    assert!(
        error.contains("needs --dek-secret-store and --kek-secret-store"),
        "{error}"
    );
    assert_eq!(
        party.yaml("datastores.yaml")["datastores"]
            .as_sequence()
            .unwrap()
            .len(),
        1,
        "nothing created"
    );
    party.ok(&[
        "config",
        "set-telemetry",
        "--cleanroom-config",
        "publisher.config",
        "--storage-account",
        account,
        "--encryption-mode",
        "CSE",
        "--dek-secret-store",
        "dekkv",
        "--kek-secret-store",
        "kekkv",
        "--container-suffix",
        "run1",
        "--datastore-secretstore",
        "local",
    ]);
    let datastores = party.yaml("datastores.yaml");
    let telemetry = &datastores["datastores"][1];
    assert!(
        telemetry["name"]
            .as_str()
            .unwrap()
            .starts_with("infrastructure-telemetry-")
    );
    assert_eq!(
        telemetry["store"],
        format!("{account}/infrastructure-telemetry-run1")
    );
    assert!(
        telemetry["key"]
            .as_str()
            .unwrap()
            .starts_with(party.path("local-secrets").to_str().unwrap()),
        "the DEK file is in the local secret store: {:?}",
        telemetry["key"]
    );
    let spec = party.yaml("publisher.config");
    let sink = find(&spec["datasinks"], "infrastructure-telemetry");
    let secrets = &sink["protection"]["encryptionSecrets"];
    assert_eq!(secrets["dek"]["secret"]["backingResource"]["id"], "dekkv");
    assert_eq!(secrets["kek"]["secret"]["backingResource"]["id"], "kekkv");
    let infrastructure = &spec["governance"]["telemetry"]["infrastructure"];
    for field in ["metrics", "traces", "logs"] {
        assert_eq!(&infrastructure[field], sink, "{field}");
    }
    assert!(
        !spec["governance"]["telemetry"]["application"].is_null(),
        "logging stays set"
    );
    let out = party.ok(&[
        "config",
        "validate",
        "--cleanroom-config",
        "publisher.config",
        "--datastore-config",
        "datastores.yaml",
        "--secretstore-config",
        "secretstores.yaml",
    ]);
    assert!(out.contains("is valid (0 warnings)"), "{out}");

    // A vault is not where a DEK file goes.
    let error = party.fails(&[
        "config",
        "set-logging",
        "--cleanroom-config",
        "other.config",
        "--storage-account",
        account,
        "--encryption-mode",
        "SSE",
        "--datastore-secretstore",
        "dekkv",
    ]);
    assert!(
        error.contains("other.config"),
        "the spec must exist first: {error}"
    );
    party.ok(&["config", "init", "--cleanroom-config", "other.config"]);
    let error = party.fails(&[
        "config",
        "set-logging",
        "--cleanroom-config",
        "other.config",
        "--storage-account",
        account,
        "--encryption-mode",
        "SSE",
        "--datastore-secretstore",
        "dekkv",
    ]);
    assert!(error.contains("'dekkv' is a key vault"), "{error}");
}

/// The seed's two parties: the publisher's encrypted dataset and log sink, the consumer's
/// output sink and application. Returns (publisher, consumer).
fn two_parties() -> (Party, Party) {
    let publisher = Party::new();
    publisher.add_vaults();
    publisher.datastore("publisher-input", "cse");
    publisher.ok(&["config", "init", "--cleanroom-config", "publisher.config"]);
    publisher.ok(&[
        "config",
        "add-datasource",
        "--cleanroom-config",
        "publisher.config",
        "--datastore-name",
        "publisher-input",
        "--dek-secret-store",
        "dekkv",
        "--kek-secret-store",
        "kekkv",
        "--subdirectory",
        "mydata/level2",
    ]);
    let account = publisher.path("account");
    publisher.ok(&[
        "config",
        "set-logging",
        "--cleanroom-config",
        "publisher.config",
        "--storage-account",
        account.to_str().unwrap(),
        "--encryption-mode",
        "SSE",
    ]);

    let consumer = Party::new();
    consumer.add_vaults();
    consumer.datastore("consumer-output", "cse");
    consumer.ok(&["config", "init", "--cleanroom-config", "consumer.config"]);
    consumer.ok(&[
        "config",
        "add-datasink",
        "--cleanroom-config",
        "consumer.config",
        "--datastore-name",
        "consumer-output",
        "--dek-secret-store",
        "dekkv",
        "--kek-secret-store",
        "kekkv",
        "--subdirectory",
        "output-data",
    ]);
    consumer.ok(&[
        "config",
        "add-application",
        "--cleanroom-config",
        "consumer.config",
        "--name",
        "demo-app",
        "--image",
        "docker.io/golang:1.23",
        "--command",
        "sh -c 'gzip -c /mnt/remote/input/input.txt > /mnt/remote/output/output.gz'",
        "--datasources",
        "publisher-input=/mnt/remote/input",
        "--datasinks",
        "consumer-output=/mnt/remote/output",
        "--cpu",
        "0.5",
        "--memory",
        "1",
        "--auto-start",
    ]);
    // The publisher shares its spec with the consumer.
    std::fs::copy(
        publisher.path("publisher.config"),
        consumer.path("publisher.config"),
    )
    .unwrap();
    (publisher, consumer)
}

#[test]
fn view_merges_the_publishers_and_the_consumers_specs() {
    let (_publisher, consumer) = two_parties();
    // Alone, the consumer's spec names a datasource it does not have.
    let error = consumer.fails(&[
        "config",
        "validate",
        "--cleanroom-config",
        "consumer.config",
    ]);
    assert!(error.contains("not valid: 1 error"), "{error}");

    consumer.ok(&["config", "init", "--cleanroom-config", "analysis.config"]);
    let printed = consumer.ok(&[
        "config",
        "view",
        "--cleanroom-config",
        "analysis.config",
        "--configs",
        "publisher.config",
        "consumer.config",
        "--output-file",
        "merged.config",
    ]);
    assert_eq!(
        printed,
        std::fs::read_to_string(consumer.path("merged.config")).unwrap()
    );
    let merged = consumer.yaml("merged.config");
    assert_eq!(
        names(&merged["identities"]),
        ["cleanroom_cgs_oidc"],
        "equal entries merge into one"
    );
    assert_eq!(names(&merged["datasources"]), ["publisher-input"]);
    assert_eq!(
        names(&merged["datasinks"]),
        ["application-telemetry", "consumer-output"]
    );
    assert_eq!(names(&merged["applications"]), ["demo-app"]);
    assert_eq!(
        find(&merged["datasources"], "publisher-input")["subdirectory"],
        "mydata/level2"
    );
    assert_eq!(
        merged["governance"]["telemetry"]["application"]["logs"]["name"],
        "application-telemetry"
    );
    let out = consumer.ok(&["config", "validate", "--cleanroom-config", "merged.config"]);
    assert!(out.contains("is valid (0 warnings)"), "{out}");
    // The consumer checks its own keys; the publisher's access points are another party's.
    let report: Json = serde_json::from_str(&consumer.ok(&[
        "config",
        "validate",
        "--cleanroom-config",
        "merged.config",
        "--datastore-config",
        "datastores.yaml",
        "--secretstore-config",
        "secretstores.yaml",
        "--output",
        "json",
    ]))
    .unwrap();
    assert_eq!(report["errors"], serde_json::json!([]));
    let warned: Vec<&str> = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        warned,
        ["DatastoreNotInConfig", "DatastoreNotInConfig"],
        "{report}"
    );

    // Idempotent: merging the result with its parts again changes nothing.
    let again = consumer.ok(&[
        "config",
        "view",
        "--cleanroom-config",
        "merged.config",
        "--configs",
        "merged.config",
        "publisher.config",
        "consumer.config",
    ]);
    assert_eq!(again, printed);
    let quiet = consumer.ok(&[
        "config",
        "view",
        "--cleanroom-config",
        "merged.config",
        "--configs",
        "consumer.config",
        "--no-print",
    ]);
    assert_eq!(quiet, "");
}

#[test]
fn view_refuses_two_different_entries_of_the_same_name() {
    let (_publisher, consumer) = two_parties();
    // The consumer's copy of the publisher's spec was edited: another protection mode.
    let mut edited = consumer.yaml("publisher.config");
    let sources = edited["datasources"].as_sequence_mut().unwrap();
    sources[0]["protection"]["configuration"] = Value::from("eyJFbmNyeXB0aW9uTW9kZSI6ICJTU0UifQ==");
    consumer.write("edited.config", &serde_yaml::to_string(&edited).unwrap());
    let error = consumer.fails(&[
        "config",
        "view",
        "--cleanroom-config",
        "publisher.config",
        "--configs",
        "consumer.config",
        "edited.config",
        "--output-file",
        "merged.config",
    ]);
    assert!(
        error.contains("cannot merge edited.config into publisher.config + consumer.config")
            && error.contains(
                "datasources entry 'publisher-input' differs at protection.configuration"
            ),
        "{error}"
    );
    assert!(!consumer.path("merged.config").exists(), "nothing written");
    // Two different scalars (the reference fails here too) name their path.
    consumer.write("a.config", "governance: {telemetry: {application: {logs: {name: l, type: Volume_ReadWrite, path: '', store: {name: c, type: t, id: one}, protection: {proxyType: p, proxyMode: Secure}}}}}\n");
    consumer.write("b.config", "governance: {telemetry: {application: {logs: {name: l, type: Volume_ReadWrite, path: '', store: {name: c, type: t, id: two}, protection: {proxyType: p, proxyMode: Secure}}}}}\n");
    let error = consumer.fails(&[
        "config",
        "view",
        "--cleanroom-config",
        "a.config",
        "--configs",
        "b.config",
    ]);
    assert!(
        error.contains("'governance.telemetry.application.logs.store.id' differs ('one' here, 'two' in the incoming spec)"),
        "{error}"
    );
}

/// A spec with one of everything `validate` reports.
const BROKEN: &str = r#"
identities:
- {name: cleanroom_cgs_oidc, clientId: '', tenantId: ''}
- {name: cleanroom_cgs_oidc, clientId: '', tenantId: ''}
datasources:
- name: in-cse
  type: Volume_ReadOnly
  path: ''
  store: {name: c, type: Azure_BlobStorage, id: ds-in}
  protection: {proxyType: SecureVolume__ReadOnly__Azure__BlobStorage, proxyMode: Secure, configuration: eyJFbmNyeXB0aW9uTW9kZSI6ICJDU0UiLCAiS2V5VHlwZSI6ICJLRUsifQ==}
- name: in-rw
  type: Volume_ReadWrite
  path: ''
  store: {name: c, type: Azure_BlobStorage, id: ds-rw}
  protection: {proxyType: SecureVolume__ReadWrite__Azure__BlobStorage, proxyMode: Secure, configuration: eyJFbmNyeXB0aW9uTW9kZSI6ICJTU0UifQ==}
- name: in-badconf
  type: Volume_ReadOnly
  path: ''
  store: {name: c, type: Azure_BlobStorage, id: ds-badconf}
  protection: {proxyType: SecureVolume__ReadOnly__Azure__BlobStorage, proxyMode: Secure, configuration: not-base64}
datasinks:
- name: out-kekless
  type: Volume_ReadWrite
  path: ''
  store: {name: c, type: Azure_BlobStorage, id: ds-out}
  protection:
    proxyType: SecureVolume__ReadOnly__Azure__BlobStorage
    proxyMode: Secure
    configuration: eyJFbmNyeXB0aW9uTW9kZSI6ICJDU0UiLCAiS2V5VHlwZSI6ICJLRUsifQ==
    encryptionSecrets:
      dek: {name: wrapped-ds-out-dek-k, secret: {secretType: Key, backingResource: {name: nostore, type: AzureKeyVault, id: nostore}}}
- name: out-sse
  type: Volume_ReadWrite
  path: ''
  store: {name: c, type: Azure_BlobStorage, id: ds-sse}
  protection:
    proxyType: SecureVolume__ReadWrite__Azure__BlobStorage
    proxyMode: Secure
    configuration: eyJFbmNyeXB0aW9uTW9kZSI6ICJTU0UifQ==
    encryptionSecrets:
      dek: {name: d, secret: {secretType: Key, backingResource: {name: localss, type: AzureKeyVault, id: localss}}}
      kek: {name: k, secret: {secretType: Key, backingResource: {name: k, type: AzureKeyVault, id: dekonly}}}
- name: in-cse
  type: Volume_ReadWrite
  path: ''
  store: {name: c, type: Azure_BlobStorage, id: ds-in}
  protection: {proxyType: SecureVolume__ReadWrite__Azure__BlobStorage, proxyMode: Secure, configuration: eyJFbmNyeXB0aW9uTW9kZSI6ICJTU0UifQ==}
applications:
- name: app1
  image: {executable: {documentType: OCI, authenticityReceipt: '', backingResource: {name: app1, type: AzureContainerRegistry, id: img}}, enforcementPolicy: {}}
  startType: Manual
  command: [run]
  datasources: {in-cse: /mnt/in, missing-source: /mnt/missing, in-rw: /mnt/in/nested}
  datasinks: {out-sse: relative/out, missing-sink: /mnt/telemetry/x}
  runtimeSettings: {ports: [], resource: {requests: {cpu: 1, memoryInGB: 1}}}
- name: app2
  image: {executable: {documentType: OCI, authenticityReceipt: '', backingResource: {name: app2, type: AzureContainerRegistry, id: img}}, enforcementPolicy: {}}
  startType: Manual
  command: [run]
  runtimeSettings: {ports: [80], resource: {requests: {cpu: 1, memoryInGB: 1}}}
network:
  http:
    inbound: {enabled: true, policy: {proxyType: API, proxyMode: Open}}
    outbound: {enabled: true, policy: {proxyType: API, proxyMode: Open}}
governance:
  telemetry:
    application:
      logs: {name: application-telemetry, type: Volume_ReadWrite, path: '', store: {name: c, type: Azure_BlobStorage, id: logs}, protection: {proxyType: SecureVolume__ReadWrite__Azure__BlobStorage, proxyMode: Secure}}
"#;

#[test]
fn validate_reports_every_error_and_warning() {
    let party = Party::new();
    party.write("broken.yaml", BROKEN);
    party.write(
        "datastores.yaml",
        "datastores:\n- {name: ds-in, store: /x, mode: sse}\n- {name: ds-out, store: /x, mode: cse}\n- {name: ds-sse, store: /x, mode: sse}\n",
    );
    party.write(
        "secretstores.yaml",
        "secretstores:\n- {name: localss, backing_store_type: local, backing_store_id: /x}\n- {name: dekonly, backing_store_type: azure-keyvault, backing_store_id: 'https://v'}\n",
    );
    let out = party.run(&[
        "config",
        "validate",
        "--cleanroom-config",
        "broken.yaml",
        "--datastore-config",
        "datastores.yaml",
        "--secretstore-config",
        "secretstores.yaml",
        "--output",
        "json",
    ]);
    assert!(!out.status.success(), "errors exit non-zero");
    let report: Json = serde_json::from_slice(&out.stdout).unwrap();
    let codes = |kind: &str| -> Vec<String> {
        let mut codes: Vec<String> = report[kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["code"].as_str().unwrap().to_owned())
            .collect();
        codes.sort();
        codes.dedup();
        codes
    };
    assert_eq!(
        codes("errors"),
        [
            "AccessTypeMismatch",
            "DataStoreNotFound",
            "DatasinkNotFound",
            "DatastoreModeMismatch",
            "DuplicateName",
            "EncryptionSecretsMissing",
            "InvalidMountPath",
            "InvalidProtectionConfiguration",
            "KekMissing",
            "MountPathOverlap",
            "ProxyTypeMismatch",
            "SecretStoreNotFound",
            "SecretStoreUnsuitable",
            "TelemetrySinkNotFound",
            "UnexpectedEncryptionSecrets",
        ],
        "{report:#}"
    );
    assert_eq!(
        codes("warnings"),
        [
            "DatastoreNotInConfig",
            "InboundAllowAll",
            "MultipleApplications",
            "OutboundAllowAll"
        ],
        "{report:#}"
    );
    let messages: Vec<&str> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["message"].as_str().unwrap())
        .collect();
    let has = |text: &str| {
        assert!(
            messages.iter().any(|m| m.contains(text)),
            "no message with {text:?}: {messages:#?}"
        )
    };
    has(
        "applications entry 'app1': datasource 'missing-source' is not among the spec's datasources",
    );
    has("applications entry 'app1': datasink 'missing-sink' is not among the spec's datasinks");
    has("identities: more than one entry is named 'cleanroom_cgs_oidc'");
    has("datasources/datasinks (access names): more than one entry is named 'in-cse'");
    has(
        "mount paths overlap: applications entry 'app1' mounts 'in-cse' at '/mnt/in' and applications entry 'app1' mounts 'in-rw' at '/mnt/in/nested'",
    );
    has(
        "mount paths overlap: the clean room's own directory '/mnt/telemetry' and applications entry 'app1' mounts 'missing-sink' at '/mnt/telemetry/x'",
    );
    has("datasinks entry 'out-kekless': CSE protection has a DEK secret but no KEK");
    has("datasources entry 'in-cse': CSE protection needs encryptionSecrets");
    has(
        "datasinks entry 'out-sse': the wrapped DEK 'd' is in secret store 'localss', which is local",
    );
    has(
        "datasinks entry 'out-kekless': the wrapped DEK 'wrapped-ds-out-dek-k' is in secret store 'nostore', which is not in the secret store config",
    );
    has(
        "governance.telemetry.application.logs: 'application-telemetry' is not among the spec's datasinks",
    );

    // The same as text lines, and a clean spec exits 0.
    let out = party.run(&["config", "validate", "--cleanroom-config", "broken.yaml"]);
    assert!(!out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("error DataStoreNotFound: applications entry 'app1'")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("warning MultipleApplications: ")),
        "{text}"
    );
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("broken.yaml is not valid")
    );
}

/// A spec as the reference's commands write it (§7's shapes: pydantic's nulls, a federated
/// identity, network and sandbox settings, fields this version does not model).
const REFERENCE_SHAPED: &str = r#"
sandbox: {sandboxType: None}
identities:
- name: cleanroom_cgs_oidc
  clientId: ''
  tenantId: ''
  tokenIssuer:
    issuerType: AttestationBasedTokenIssuer
    issuer: {protocol: Attested_OIDC, url: 'https://cgs/oidc', configuration: null}
- name: publisher-identity
  clientId: 00000000-0000-0000-0000-000000000001
  tenantId: 00000000-0000-0000-0000-000000000002
  tokenIssuer:
    issuerType: FederatedIdentityBasedTokenIssuer
    issuer: {protocol: AzureAD_Federated, url: 'https://login.microsoftonline.com/t'}
    federatedIdentity: {name: cleanroom_cgs_oidc, clientId: '', tenantId: '', tokenIssuer: {issuerType: AttestationBasedTokenIssuer, issuer: {protocol: Attested_OIDC, url: 'https://cgs/oidc'}}}
datasources:
- name: publisher-input
  type: Volume_ReadOnly
  path: ''
  store:
    name: publisher-input
    type: Azure_BlobStorage
    id: publisher-input
    provider: {protocol: Azure_BlobStorage, url: 'https://sa.blob.core.windows.net/', configuration: ''}
  identity: {name: publisher-identity, clientId: 00000000-0000-0000-0000-000000000001, tenantId: 00000000-0000-0000-0000-000000000002, tokenIssuer: {issuerType: FederatedIdentityBasedTokenIssuer, issuer: {protocol: AzureAD_Federated, url: 'https://login.microsoftonline.com/t'}, federatedIdentity: {name: cleanroom_cgs_oidc}}}
  protection:
    proxyType: SecureVolume__ReadOnly__Azure__BlobStorage
    proxyMode: Secure
    privacyPolicy: null
    configuration: eyJFbmNyeXB0aW9uTW9kZSI6ICJDU0UiLCAiS2V5VHlwZSI6ICJLRUsifQ==
    encryptionSecrets:
      dek:
        name: wrapped-publisher-input-dek-1a2b3c4d-kek
        secret:
          secretType: Key
          backingResource: {name: publisher-dek-store, type: AzureKeyVault, id: publisher-dek-store, provider: {protocol: AzureKeyVault_Secret, url: 'https://dek.vault.azure.net/'}}
      kek:
        name: 1a2b3c4d-kek
        secret:
          secretType: Key
          backingResource: {name: 1a2b3c4d-kek, type: AzureKeyVault, id: publisher-kek-store, provider: {protocol: AzureKeyVault_SecureKey, url: 'https://kek.managedhsm.azure.net/', configuration: eyJhdXRob3JpdHkiOiAiaHR0cHM6Ly9tYWEifQ==}}
    encryptionSecretAccessIdentity: {name: publisher-identity}
  subdirectory: mydata/level2
datasinks: []
applications:
- name: demo-app
  image:
    executable:
      documentType: OCI
      authenticityReceipt: ''
      identity: null
      backingResource: {id: 'docker.io/golang@sha256:abc', name: demo-app, type: AzureContainerRegistry, provider: {protocol: AzureContainerRegistry, url: docker.io, configuration: null}}
    protection: null
    enforcementPolicy: {policy: {policyDocument: eyJ0cnVzdFR5cGUiOiJodHRwcyJ9}}
  startType: Auto
  command: [bash, -c, 'gzip -c /mnt/remote/input/in > /mnt/remote/output/out.gz']
  environmentVariables: {CODE: x}
  datasources: {publisher-input: /mnt/remote/input}
  datasinks: null
  runtimeSettings: {ports: [], resource: {requests: {cpu: 0.5, memoryInGB: 4}}}
network: null
governance: {consent: null, audit: null, telemetry: null}
"#;

#[test]
fn a_spec_written_by_the_reference_parses_and_survives_a_rewrite() {
    let party = Party::new();
    party.write("reference.yaml", REFERENCE_SHAPED);
    let out = party.ok(&["config", "validate", "--cleanroom-config", "reference.yaml"]);
    assert!(out.contains("is valid (0 warnings)"), "{out}");
    let merged = party.ok(&[
        "config",
        "view",
        "--cleanroom-config",
        "reference.yaml",
        "--configs",
        "reference.yaml",
    ]);
    let original: Value = serde_yaml::from_str(REFERENCE_SHAPED).unwrap();
    assert_eq!(
        serde_yaml::from_str::<Value>(&merged).unwrap(),
        original,
        "merging a spec into itself"
    );
    party.ok(&[
        "config",
        "add-application",
        "--cleanroom-config",
        "reference.yaml",
        "--name",
        "other",
        "--command",
        "true",
        "--cpu",
        "0.1",
        "--memory",
        "0.1",
    ]);
    let rewritten = party.yaml("reference.yaml");
    assert_eq!(rewritten["sandbox"], original["sandbox"]);
    assert_eq!(rewritten["identities"], original["identities"]);
    assert_eq!(
        rewritten["datasources"], original["datasources"],
        "unknown fields (privacyPolicy, encryptionSecretAccessIdentity) kept"
    );
    assert_eq!(rewritten["applications"][0], original["applications"][0]);
    assert_eq!(rewritten["governance"], original["governance"]);
}

#[test]
fn a_malformed_spec_is_named_with_its_line() {
    let party = Party::new();
    party.write(
        "bad.yaml",
        "identities: []\ndatasinks: []\ndatasources: x: y\n",
    );
    for args in [
        &["config", "validate", "--cleanroom-config", "bad.yaml"][..],
        &[
            "config",
            "view",
            "--cleanroom-config",
            "bad.yaml",
            "--configs",
            "bad.yaml",
        ],
        &[
            "config",
            "add-application",
            "--cleanroom-config",
            "bad.yaml",
            "--name",
            "a",
            "--image",
            "i",
            "--cpu",
            "1",
            "--memory",
            "1",
        ],
    ] {
        let error = party.fails(args);
        assert!(
            error.contains("malformed clean-room spec bad.yaml") && error.contains("line 3"),
            "{args:?}: {error}"
        );
    }
    party.ok(&["config", "init", "--cleanroom-config", "good.yaml"]);
    let error = party.fails(&[
        "config",
        "view",
        "--cleanroom-config",
        "good.yaml",
        "--configs",
        "bad.yaml",
    ]);
    assert!(
        error.contains("bad.yaml") && error.contains("line 3"),
        "{error}"
    );
    // A well-formed document of the wrong shape names the file too.
    party.write("shape.yaml", "datasources: {not: a list}\n");
    let error = party.fails(&["config", "validate", "--cleanroom-config", "shape.yaml"]);
    assert!(error.contains("shape.yaml"), "{error}");
}

#[test]
fn add_datasource_pins_the_signed_manifest_by_digest() {
    let publisher = Party::new();
    publisher.add_vaults();
    publisher.datastore("publisher-input", "cse");
    std::fs::create_dir_all(publisher.path("data/mydata")).unwrap();
    publisher.write("data/mydata/a.csv", "id,amount\n1,2\n");
    publisher.ok(&[
        "upload",
        "data",
        "--datastore",
        "publisher-input",
        "--create-container",
    ]);
    for member in ["publisher", "other"] {
        publisher.ok(&[
            "governance",
            "member",
            "keygenerator",
            "--name",
            member,
            "--out",
            "keys",
        ]);
    }
    publisher.ok(&[
        "dataset",
        "seal",
        "--datastore",
        "publisher-input",
        "--signing-cert",
        "keys/publisher_cert.pem",
        "--signing-key",
        "keys/publisher_privk.pem",
        "--output-file",
        "manifest.cose",
    ]);
    let bytes = std::fs::read(publisher.path("manifest.cose")).unwrap();
    let digest = format!(
        "sha256:{}",
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    publisher.ok(&["config", "init", "--cleanroom-config", "publisher.yaml"]);
    fn add<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "config",
            "add-datasource",
            "--cleanroom-config",
            "publisher.yaml",
            "--datastore-name",
            "publisher-input",
            "--dek-secret-store",
            "dekkv",
            "--kek-secret-store",
            "kekkv",
        ];
        args.extend_from_slice(extra);
        args
    }
    let out = publisher.ok(&add(&[
        "--manifest",
        "manifest.cose",
        "--manifest-signer-cert",
        "keys/publisher_cert.pem",
    ]));
    assert!(
        out.contains(&format!("pinned to manifest {digest}")),
        "{out}"
    );
    let spec = publisher.yaml("publisher.yaml");
    let source = find(&spec["datasources"], "publisher-input");
    assert_eq!(source["manifest"]["digest"].as_str(), Some(digest.as_str()));
    assert_eq!(source["manifest"]["blob"].as_str(), Some(".encfs-manifest"));
    publisher.ok(&["config", "validate", "--cleanroom-config", "publisher.yaml"]);

    // Without a certificate the manifest is only parsed: the same pin.
    publisher.ok(&add(&["--manifest", "manifest.cose"]));
    assert_eq!(publisher.yaml("publisher.yaml"), spec);

    // A manifest of the whole datastore does not pin a datasource of one subdirectory (its mount
    // would read mydata/.encfs-manifest): refused, naming both.
    let error = publisher.fails(&add(&[
        "--manifest",
        "manifest.cose",
        "--subdirectory",
        "mydata",
    ]));
    assert!(
        error.contains("mydata/.encfs-manifest") && error.contains("--subdirectory"),
        "{error}"
    );
    assert_eq!(publisher.yaml("publisher.yaml"), spec);

    // Another member's certificate, an edited byte, a file that is no manifest: refused, the spec
    // untouched.
    let error = publisher.fails(&add(&[
        "--manifest",
        "manifest.cose",
        "--manifest-signer-cert",
        "keys/other_cert.pem",
    ]));
    assert!(error.contains("manifest.cose"), "{error}");
    let mut edited = bytes.clone();
    let last = edited.len() - 1;
    edited[last] ^= 1;
    std::fs::write(publisher.path("edited.cose"), &edited).unwrap();
    let error = publisher.fails(&add(&[
        "--manifest",
        "edited.cose",
        "--manifest-signer-cert",
        "keys/publisher_cert.pem",
    ]));
    assert!(error.contains("edited.cose"), "{error}");
    publisher.write("not.cose", "hello");
    let error = publisher.fails(&add(&["--manifest", "not.cose"]));
    assert!(error.contains("not.cose"), "{error}");
    assert_eq!(publisher.yaml("publisher.yaml"), spec);

    // A datasink pins no manifest; a malformed digest is a validation error.
    publisher.datastore("sink", "cse");
    let error = publisher.fails(&[
        "config",
        "add-datasink",
        "--cleanroom-config",
        "publisher.yaml",
        "--datastore-name",
        "sink",
        "--dek-secret-store",
        "dekkv",
        "--kek-secret-store",
        "kekkv",
        "--manifest",
        "manifest.cose",
    ]);
    assert!(error.contains("a datasink pins no manifest"), "{error}");
    let text = std::fs::read_to_string(publisher.path("publisher.yaml")).unwrap();
    publisher.write("short.yaml", &text.replace(&digest, &digest[..40]));
    let out = publisher.run(&["config", "validate", "--cleanroom-config", "short.yaml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains("InvalidManifest") && stdout.contains("manifest.digest"),
        "{stdout}"
    );
}

#[test]
fn an_encrypted_names_datastore_is_a_datasource_with_encrypt_names_and_never_a_datasink() {
    let owner = Party::new();
    owner.add_vaults();
    let store = owner.path("stores/secret-names");
    owner.ok(&[
        "datastore",
        "add",
        "--name",
        "secret-names",
        "--store",
        store.to_str().unwrap(),
        "--encrypt-names",
    ]);
    owner.datastore("plain", "cse");
    owner.ok(&["config", "init", "--cleanroom-config", "spec.yaml"]);
    let add = |verb: &'static str, datastore: &'static str| -> Vec<&'static str> {
        vec![
            "config",
            verb,
            "--cleanroom-config",
            "spec.yaml",
            "--datastore-name",
            datastore,
            "--dek-secret-store",
            "dekkv",
            "--kek-secret-store",
            "kekkv",
        ]
    };
    owner.ok(&add("add-datasource", "secret-names"));
    owner.ok(&add("add-datasource", "plain"));
    let spec = owner.yaml("spec.yaml");
    assert_eq!(
        find(&spec["datasources"], "secret-names")["encryptNames"],
        Value::Bool(true)
    );
    assert!(
        find(&spec["datasources"], "plain")
            .get("encryptNames")
            .is_none(),
        "a plain datastore's entry has no encryptNames: {spec:?}"
    );
    let error = owner.fails(&add("add-datasink", "secret-names"));
    assert!(
        error.contains("secret-names") && error.contains("encrypted names"),
        "{error}"
    );
    assert_eq!(owner.yaml("spec.yaml"), spec, "nothing written");
    owner.ok(&["config", "validate", "--cleanroom-config", "spec.yaml"]);
}
