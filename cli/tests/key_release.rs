//! The data owner's key release commands and the clean room's `--key-release`, through the
//! binary: `secretstore add/show/list`, `config init/add-datasource`, and `download` / `mount
//! --datastore NAME --key-release URL` against a small in-test HTTP server that answers as the
//! secrets sidecar does (`POST /secrets/unwrap` → `{"value": b64}`), checking the request is the
//! reference's, the bytes match, and a refusal fails naming the URL and the datastore with
//! nothing written or mounted.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

mod support;

/// A directory with the datastore, secret store and governance configs of one party.
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

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_encfs"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("ENCFS_CONFIG", self.path("datastores.yaml"))
            .env("ENCFS_SECRETSTORE_CONFIG", self.path("secretstores.yaml"))
            .env_remove("AZURE_STORAGE_CONNECTION_STRING");
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "encfs {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "encfs {args:?} should fail");
        String::from_utf8(out.stderr).unwrap()
    }
}

/// An HTTP server on 127.0.0.1 answering every request with one status and body, recording
/// each request's body (JSON). Stands in for the secrets sidecar (a unit-level fake).
struct FakeSidecar {
    url: String,
    requests: Arc<Mutex<Vec<(String, Value)>>>,
}

fn bind_in_range() -> TcpListener {
    (21300..21400)
        .find_map(|port| TcpListener::bind(("127.0.0.1", port)).ok())
        .expect("a free port in 21300-21399")
}

impl FakeSidecar {
    fn start(status: u16, body: Value) -> Self {
        let listener = bind_in_range();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap();
                    }
                }
                let mut payload = vec![0u8; length];
                reader.read_exact(&mut payload).unwrap();
                let target = request_line
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ");
                seen.lock().unwrap().push((
                    target,
                    serde_json::from_slice(&payload).unwrap_or(Value::Null),
                ));
                let text = body.to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        Self { url, requests }
    }

    fn requests(&self) -> Vec<(String, Value)> {
        self.requests.lock().unwrap().clone()
    }
}

/// The owner's side without a vault: a cse datastore with data, and the clean room's datastore
/// config naming the same store with a `key_release` and no key. Returns the raw DEK.
fn owner_data_and_clean_room_config(party: &Party) -> Vec<u8> {
    fs::create_dir_all(party.path("data/sub")).unwrap();
    fs::write(party.path("data/a.txt"), b"alpha").unwrap();
    fs::write(party.path("data/sub/b.bin"), vec![7u8; 100_000]).unwrap();
    party.ok(&["key", "generate", "--out", "dek.bin", "--raw"]);
    let store = party.path("store").display().to_string();
    party.ok(&[
        "upload",
        "data",
        &store,
        "--key",
        "dek.bin",
        "--create-container",
    ]);
    let config = json!({"datastores": [{
        "name": "publisher-input",
        "store": store,
        "mode": "cse",
        "key_release": {
            "secret": {"kid": "wrapped-publisher-input-dek-abcd1234-kek",
                       "akv_endpoint": "https://127.0.0.1:21399"},
            "kek": {"kid": "abcd1234-kek", "akv_endpoint": "127.0.0.1:21399",
                    "maa_endpoint": "127.0.0.1:21398"},
        },
    }]});
    fs::write(
        party.path("cleanroom-datastores.yaml"),
        serde_yaml::to_string(&config).unwrap(),
    )
    .unwrap();
    fs::read(party.path("dek.bin")).unwrap()
}

fn expected_unwrap_request() -> Value {
    json!({"clientId": "", "tenantId": "", "kid": "wrapped-publisher-input-dek-abcd1234-kek",
           "akvEndpoint": "https://127.0.0.1:21399",
           "kek": {"kid": "abcd1234-kek", "akvEndpoint": "127.0.0.1:21399",
                   "maaEndpoint": "127.0.0.1:21398"}})
}

#[test]
fn download_with_key_release_posts_the_reference_request_and_decrypts() {
    let party = Party::new();
    let dek = owner_data_and_clean_room_config(&party);
    let sidecar = FakeSidecar::start(200, json!({"value": STANDARD.encode(&dek)}));
    party.ok(&[
        "download",
        "out",
        "--datastore",
        "publisher-input",
        "--config",
        "cleanroom-datastores.yaml",
        "--key-release",
        &sidecar.url,
    ]);
    assert_eq!(fs::read(party.path("out/a.txt")).unwrap(), b"alpha");
    assert_eq!(
        fs::read(party.path("out/sub/b.bin")).unwrap(),
        vec![7u8; 100_000]
    );
    let requests = sidecar.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].0, "POST /secrets/unwrap");
    assert_eq!(requests[0].1, expected_unwrap_request());
}

#[test]
fn a_refused_or_wrong_unwrap_fails_naming_the_sidecar_and_the_datastore() {
    let party = Party::new();
    let dek = owner_data_and_clean_room_config(&party);
    let refusing = FakeSidecar::start(
        403,
        json!({"error": "secure key release failed: policy not satisfied"}),
    );
    let mut wrong = dek.clone();
    wrong[0] ^= 1;
    let wrong_key = FakeSidecar::start(200, json!({"value": STANDARD.encode(&wrong)}));
    let short = FakeSidecar::start(200, json!({"value": STANDARD.encode(&dek[..16])}));
    for (sidecar, expect) in [
        (&refusing, "403"),
        (&short, "16 bytes"),
        (&wrong_key, "key mismatch"),
    ] {
        let error = party.fails(&[
            "download",
            "out",
            "--datastore",
            "publisher-input",
            "--config",
            "cleanroom-datastores.yaml",
            "--key-release",
            &sidecar.url,
        ]);
        assert!(error.contains(expect), "{error}");
        if sidecar.url != wrong_key.url {
            assert!(error.contains(&sidecar.url), "{error}");
            assert!(error.contains("'publisher-input'"), "{error}");
        }
        assert!(!party.path("out/a.txt").exists());
    }
    // Nothing listens there: a port the kernel hands out (outside the range the other tests'
    // fakes scan, so none of them can take it once it is closed).
    let closed = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let error = party.fails(&[
        "download",
        "out",
        "--datastore",
        "publisher-input",
        "--config",
        "cleanroom-datastores.yaml",
        "--key-release",
        &url,
    ]);
    assert!(
        error.contains(&url) && error.contains("publisher-input"),
        "{error}"
    );
    // A datastore without a key release is told what to run.
    let error = party.fails(&[
        "download",
        "out",
        "--datastore",
        "nope",
        "--config",
        "cleanroom-datastores.yaml",
        "--key-release",
        &url,
    ]);
    assert!(error.contains("no datastore named 'nope'"), "{error}");
}

/// Waits for `path` to exist while `child` runs; the child's stderr on early exit.
fn wait_ready(child: &mut std::process::Child, path: &Path) -> Result<(), String> {
    let start = Instant::now();
    while !path.exists() {
        if child.try_wait().unwrap().is_some() {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            return Err(stderr);
        }
        assert!(start.elapsed() < Duration::from_secs(60), "mount not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[test]
fn mount_with_key_release_serves_the_datasource_and_a_refusal_mounts_nothing() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: run scripts/test-all.sh as root (it installs fuse3)"
    );
    let party = Party::new();
    let dek = owner_data_and_clean_room_config(&party);
    fs::create_dir(party.path("mnt")).unwrap();
    let status = party.path("status.json");
    let mount = |url: &str| {
        party
            .command(&[
                "mount",
                "mnt",
                "--datastore",
                "publisher-input",
                "--config",
                "cleanroom-datastores.yaml",
                "--key-release",
                url,
                "--status-file",
                status.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    let refusing = FakeSidecar::start(403, json!({"error": "secure key release failed"}));
    let mut child = mount(&refusing.url);
    let error = wait_ready(&mut child, &status).expect_err("a refused release must not mount");
    assert!(!child.wait().unwrap().success());
    assert!(
        error.contains(&refusing.url) && error.contains("publisher-input"),
        "{error}"
    );
    assert!(!status.exists());
    assert_eq!(fs::read_dir(party.path("mnt")).unwrap().count(), 0);

    let sidecar = FakeSidecar::start(200, json!({"value": STANDARD.encode(&dek)}));
    let mut child = mount(&sidecar.url);
    wait_ready(&mut child, &status).unwrap();
    let read = fs::read(party.path("mnt/a.txt"));
    let big = fs::read(party.path("mnt/sub/b.bin"));
    party.ok(&["unmount", "mnt"]);
    assert!(child.wait().unwrap().success());
    assert_eq!(read.unwrap(), b"alpha");
    assert_eq!(big.unwrap(), vec![7u8; 100_000]);
    assert_eq!(sidecar.requests()[0].1, expected_unwrap_request());
}

#[test]
fn secretstores_and_the_clean_room_spec_through_the_cli() {
    let party = Party::new();
    party.ok(&[
        "secretstore",
        "add",
        "--name",
        "local-keys",
        "--backing-store-type",
        "local",
        "--backing-store-id",
        "keys-dir",
    ]);
    fs::write(party.path("cred.json"), "{}").unwrap();
    fs::write(party.path("ca.pem"), "x").unwrap();
    party.ok(&[
        "secretstore",
        "add",
        "--name",
        "kv",
        "--backing-store-type",
        "azure-keyvault-premium",
        "--backing-store-id",
        "https://127.0.0.1:21399/",
        "--attestation-endpoint",
        "https://127.0.0.1:21398",
        "--credential",
        "cred.json",
        "--ca",
        "ca.pem",
    ]);
    let mode = fs::metadata(party.path("keys-dir")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o700
    );
    let shown: Value = serde_json::from_str(&party.ok(&[
        "secretstore",
        "show",
        "--name",
        "kv",
        "--output",
        "json",
    ]))
    .unwrap();
    assert_eq!(shown["backing_store_type"], "azure-keyvault-premium");
    assert_eq!(shown["backing_store_id"], "https://127.0.0.1:21399");
    assert_eq!(shown["attestation_endpoint"], "https://127.0.0.1:21398");
    assert!(
        shown["credential"]
            .as_str()
            .unwrap()
            .ends_with("/cred.json")
    );
    let listed = party.ok(&[
        "secretstore",
        "list",
        "--output",
        "tsv",
        "--query",
        "[].name",
    ]);
    assert_eq!(
        listed.split_whitespace().collect::<Vec<_>>(),
        ["local-keys", "kv"]
    );
    let error = party.fails(&[
        "secretstore",
        "add",
        "--name",
        "plain",
        "--backing-store-type",
        "azure-keyvault",
        "--backing-store-id",
        "http://127.0.0.1:1",
    ]);
    assert!(error.contains("https://"), "{error}");
    assert!(
        party
            .fails(&["secretstore", "show", "--name", "none"])
            .contains("no secret store named 'none'")
    );

    // The spec: init, a cse datasource with its wrapped DEK and KEK, an sse datasink.
    let store = party.path("store").display().to_string();
    party.ok(&["datastore", "add", "--name", "pub-in", "--store", &store]);
    let sink = party.path("sink").display().to_string();
    party.ok(&[
        "datastore",
        "add",
        "--name",
        "pub-out",
        "--store",
        &sink,
        "--mode",
        "sse",
    ]);
    party.ok(&["config", "init", "--cleanroom-config", "spec.yaml"]);
    let add = |extra: &[&str]| {
        let mut args = vec![
            "config",
            "add-datasource",
            "--cleanroom-config",
            "spec.yaml",
            "--datastore-name",
            "pub-in",
        ];
        args.extend_from_slice(extra);
        party.run(&args)
    };
    let refused = add(&[
        "--dek-secret-store",
        "local-keys",
        "--kek-secret-store",
        "kv",
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is local"));
    let out = add(&[
        "--key-store",
        "kv",
        "--kek-store",
        "kv",
        "--kek-name",
        "my-kek",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    party.ok(&[
        "config",
        "add-datasink",
        "--cleanroom-config",
        "spec.yaml",
        "--datastore-name",
        "pub-out",
    ]);
    let spec: serde_yaml::Value =
        serde_yaml::from_str(&fs::read_to_string(party.path("spec.yaml")).unwrap()).unwrap();
    assert_eq!(spec["identities"][0]["name"], "cleanroom_cgs_oidc");
    let source = &spec["datasources"][0];
    assert_eq!(source["name"], "pub-in");
    assert_eq!(source["type"], "Volume_ReadOnly");
    assert_eq!(source["store"]["id"], "pub-in");
    assert_eq!(source["protection"]["proxyMode"], "Secure");
    let secrets = &source["protection"]["encryptionSecrets"];
    assert_eq!(secrets["dek"]["name"], "wrapped-pub-in-dek-my-kek");
    assert_eq!(
        secrets["dek"]["secret"]["backingResource"]["provider"]["protocol"],
        "AzureKeyVault_Secret"
    );
    assert_eq!(secrets["kek"]["name"], "my-kek");
    assert_eq!(secrets["kek"]["secret"]["backingResource"]["id"], "kv");
    let configuration = secrets["kek"]["secret"]["backingResource"]["provider"]["configuration"]
        .as_str()
        .unwrap();
    assert_eq!(
        STANDARD.decode(configuration).unwrap(),
        br#"{"authority":"https://127.0.0.1:21398"}"#
    );
    let sink = &spec["datasinks"][0];
    assert_eq!(sink["type"], "Volume_ReadWrite");
    assert!(sink["protection"].get("encryptionSecrets").is_none());
    // Re-adding replaces the entry; init leaves an existing spec alone.
    let out = add(&[
        "--key-store",
        "kv",
        "--kek-store",
        "kv",
        "--kek-name",
        "other-kek",
    ]);
    assert!(out.status.success());
    party.ok(&["config", "init", "--cleanroom-config", "spec.yaml"]);
    let spec: serde_yaml::Value =
        serde_yaml::from_str(&fs::read_to_string(party.path("spec.yaml")).unwrap()).unwrap();
    assert_eq!(spec["datasources"].as_sequence().unwrap().len(), 1);
    assert_eq!(
        spec["datasources"][0]["protection"]["encryptionSecrets"]["kek"]["name"],
        "other-kek"
    );
}
