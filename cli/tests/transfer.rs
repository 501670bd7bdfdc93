//! End-to-end tests of `encfs upload / download / ls / rm / datastore` on the embedded store and on
//! Azurite (started by scripts/test-all.sh; address in ENCFS_AZURITE_URL).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Sandbox {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("cfg/datastores.yaml").display().to_string();
        Self {
            dir,
            env: vec![("ENCFS_CONFIG".into(), config)],
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_encfs"));
        command.args(args).current_dir(self.dir.path());
        for var in [
            "AZURE_STORAGE_CONNECTION_STRING",
            "AZURE_STORAGE_ACCOUNT",
            "AZURE_STORAGE_KEY",
            "AZURE_STORAGE_SAS_TOKEN",
        ] {
            command.env_remove(var);
        }
        command.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command.output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "encfs {args:?}: {}",
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

fn dataset(root: &Path) {
    fs::create_dir_all(root.join("sub/deeper")).unwrap();
    for i in 0..25 {
        fs::write(
            root.join(format!("sub/part-{i:03}.csv")),
            format!("id,value\n{i},{}\n", i * i).repeat(50),
        )
        .unwrap();
    }
    fs::write(root.join("sub/deeper/notes.txt"), b"confidential notes").unwrap();
    let big: Vec<u8> = (0..20_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(root.join("big.bin"), big).unwrap();
}

fn same_tree(a: &Path, b: &Path) {
    let mut stack = vec![PathBuf::new()];
    let mut count = 0;
    while let Some(rel) = stack.pop() {
        for entry in fs::read_dir(a.join(&rel)).unwrap() {
            let entry = entry.unwrap();
            let rel = rel.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                stack.push(rel);
            } else {
                assert!(
                    fs::read(a.join(&rel)).unwrap() == fs::read(b.join(&rel)).unwrap(),
                    "{}",
                    rel.display()
                );
                count += 1;
            }
        }
    }
    assert_eq!(count, 27);
}

#[test]
fn datastore_upload_download_on_the_embedded_store() {
    let sb = Sandbox::new();
    dataset(&sb.path("data"));
    let store = format!("file://{}", sb.path("store/publisher-data").display());
    let out = sb.ok(&["datastore", "add", "--name", "pubdata", "--store", &store]);
    assert!(out.contains("container created"), "{out}");
    let key = sb.path("cfg/keys/pubdata.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        sb.fails(&["datastore", "add", "--name", "pubdata", "--store", &store])
            .contains("already exists")
    );

    let summary: serde_json::Value = serde_json::from_str(&sb.ok(&[
        "upload",
        "--datastore",
        "pubdata",
        "data",
        "--output",
        "json",
    ]))
    .unwrap();
    assert_eq!(
        (summary["files"].as_u64(), summary["skipped"].as_u64()),
        (Some(27), Some(0))
    );
    let again: serde_json::Value = serde_json::from_str(&sb.ok(&[
        "upload",
        "--datastore",
        "pubdata",
        "data",
        "--output",
        "json",
    ]))
    .unwrap();
    assert_eq!(
        (again["files"].as_u64(), again["skipped"].as_u64()),
        (Some(0), Some(27))
    );

    // The store holds only ciphertext.
    let raw: Vec<u8> = walk_bytes(&sb.path("store/publisher-data"));
    assert!(!raw.windows(18).any(|w| w == b"confidential notes"));

    sb.ok(&["download", "--datastore", "pubdata", "out"]);
    same_tree(&sb.path("data"), &sb.path("out"));
    sb.ok(&[
        "download",
        "--datastore",
        "pubdata",
        "--subdirectory",
        "sub/deeper",
        "only-deeper",
    ]);
    assert_eq!(
        fs::read(sb.path("only-deeper/notes.txt")).unwrap(),
        b"confidential notes"
    );

    let listing = sb.ok(&["ls", &store]);
    assert!(
        listing.contains("PRE  sub/") && listing.contains("big.bin"),
        "{listing}"
    );
    let dry = sb.ok(&[
        "upload",
        "--datastore",
        "pubdata",
        "--subdirectory",
        "copy",
        "data",
        "--dry-run",
    ]);
    assert!(dry.contains("would upload copy/big.bin"), "{dry}");
    assert!(!sb.ok(&["ls", "-r", &store]).contains("copy/"));

    sb.ok(&["rm", &format!("{store}/big.bin")]);
    assert!(
        sb.fails(&["rm", &format!("{store}/big.bin")])
            .contains("no blob named big.bin")
    );
    sb.ok(&["rm", "--recursive", &format!("{store}/sub")]);
    assert_eq!(sb.ok(&["ls", "-r", &store]).trim(), "");
}

/// Every file below `root` (none if it does not exist).
fn walk_files(root: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path)
            } else {
                all.push(path)
            }
        }
    }
    all
}

fn walk_bytes(root: &Path) -> Vec<u8> {
    walk_files(root)
        .into_iter()
        .flat_map(|path| fs::read(path).unwrap())
        .collect()
}

#[test]
fn tampered_and_wrong_key_downloads_fail_naming_the_blob_and_leave_nothing() {
    let sb = Sandbox::new();
    dataset(&sb.path("data"));
    sb.ok(&["key", "generate", "--out", "k.key"]);
    sb.ok(&["key", "generate", "--out", "other.key"]);
    let store = sb.path("store/c").display().to_string();
    let error = sb.fails(&["upload", "data", &store, "--key", "k.key"]);
    assert!(
        error.contains("container not found") && error.contains("store/c"),
        "{error}"
    );
    sb.ok(&[
        "upload",
        "data",
        &store,
        "--key",
        "k.key",
        "--create-container",
    ]);
    // Flip one byte in the middle of big.bin's blob file on disk.
    let blob = sb.path("store/c/blobs/big%2Ebin");
    let mut bytes = fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    fs::write(&blob, bytes).unwrap();
    let error = sb.fails(&[
        "download",
        &format!("{store}/big.bin"),
        "big.out",
        "--key",
        "k.key",
    ]);
    assert!(
        error.contains("big.bin") && error.contains("authentication failed"),
        "{error}"
    );
    assert!(!sb.path("big.out").exists());
    let error = sb.fails(&[
        "download",
        &format!("{store}/sub"),
        "out",
        "--key",
        "other.key",
    ]);
    assert!(
        error.contains("key mismatch") && error.contains("sub/"),
        "{error}"
    );
    let leftovers: Vec<_> = walk_files(&sb.path("out"));
    assert!(
        leftovers
            .iter()
            .all(|p| !p.display().to_string().contains("partial")),
        "{leftovers:?}"
    );
}

#[test]
fn bad_addresses_and_missing_containers_are_clear_errors() {
    let sb = Sandbox::new();
    sb.ok(&["key", "generate", "--out", "k.key"]);
    fs::write(sb.path("f"), b"x").unwrap();
    let error = sb.fails(&["upload", "f", "s3://bucket/x", "--key", "k.key"]);
    assert!(error.contains("s3://bucket/x"), "{error}");
    // An Azure container name the service would refuse fails before any request.
    let error = sb.fails(&[
        "upload",
        "f",
        "http://127.0.0.1:9/devstoreaccount1/Data_1",
        "--key",
        "k.key",
    ]);
    assert!(
        error.contains("container name 'Data_1' is invalid"),
        "{error}"
    );
    let error = sb.fails(&[
        "download",
        &sb.path("nowhere").display().to_string(),
        "out",
        "--key",
        "k.key",
    ]);
    assert!(
        error.contains("container not found") && error.contains("nowhere"),
        "{error}"
    );
    let error = sb.fails(&[
        "upload",
        "missing-dir",
        &sb.path("s").display().to_string(),
        "--key",
        "k.key",
    ]);
    assert!(error.contains("missing-dir"), "{error}");
    let error = sb.fails(&["upload", "f", &sb.path("s").display().to_string()]);
    assert!(error.contains("--key"), "{error}");
    let error = sb.fails(&["download", "--datastore", "nope", "out"]);
    assert!(error.contains("no datastore named 'nope'"), "{error}");
    fs::create_dir_all(sb.path("cfg")).unwrap();
    fs::write(sb.path("cfg/datastores.yaml"), "datastores: [[[").unwrap();
    let error = sb.fails(&["datastore", "list"]);
    assert!(
        error.contains("malformed datastore config") && error.contains("datastores.yaml"),
        "{error}"
    );
}

fn azurite_url() -> String {
    std::env::var("ENCFS_AZURITE_URL")
        .expect("ENCFS_AZURITE_URL unset: run scripts/test-all.sh, which starts Azurite")
}

#[test]
fn azurite_round_trip_with_a_connection_string() {
    let mut sb = Sandbox::new();
    sb.env.push((
        "AZURE_STORAGE_CONNECTION_STRING".into(),
        "UseDevelopmentStorage=true".into(),
    ));
    dataset(&sb.path("data"));
    let mut suffix = [0u8; 4];
    aws_lc_rs::rand::fill(&mut suffix).unwrap();
    let container = format!(
        "{}/cli-{}",
        azurite_url(),
        suffix
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    sb.ok(&["datastore", "add", "--name", "az", "--store", &container]);
    sb.ok(&["upload", "--datastore", "az", "data"]);
    sb.ok(&["download", "--datastore", "az", "out"]);
    same_tree(&sb.path("data"), &sb.path("out"));
    assert!(sb.ok(&["ls", &container]).contains("big.bin"));

    // Credentials from a file instead of the environment.
    let flags = Sandbox::new();
    let dev_key =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    fs::write(flags.path("account.key"), format!("{dev_key}\n")).unwrap();
    fs::write(flags.path("wrong.key"), "d3Jvbmc=").unwrap();
    assert!(
        flags
            .ok(&["ls", &container, "--account-key-file", "account.key"])
            .contains("big.bin")
    );
    let error = flags.fails(&["ls", &container, "--account-key-file", "wrong.key"]);
    assert!(error.contains("access denied"), "{error}");
    let error = flags.fails(&["ls", &container]);
    assert!(
        error.contains("access denied") || error.contains("HTTP"),
        "anonymous access must fail: {error}"
    );

    // Wrong credentials: a clear auth error naming the URL.
    let mut bad = Sandbox::new();
    bad.env
        .push(("AZURE_STORAGE_ACCOUNT".into(), "devstoreaccount1".into()));
    bad.env
        .push(("AZURE_STORAGE_KEY".into(), "d3Jvbmc=".into()));
    let error = bad.fails(&["ls", &container]);
    assert!(
        error.contains("access denied") && error.contains("cli-"),
        "{error}"
    );
}

#[test]
fn kill_dash_nine_mid_upload_leaves_the_old_blob_or_the_new_one() {
    let sb = Sandbox::new();
    sb.ok(&["key", "generate", "--out", "k.key"]);
    let store = sb.path("store/c").display().to_string();
    let old: Vec<u8> = vec![0xaa; 5_000_000];
    let new: Vec<u8> = (0..30_000_000u32).map(|i| (i % 253) as u8).collect();
    fs::create_dir_all(sb.path("v1")).unwrap();
    fs::create_dir_all(sb.path("v2")).unwrap();
    fs::write(sb.path("v1/f"), &old).unwrap();
    fs::write(sb.path("v2/f"), &new).unwrap();
    sb.ok(&[
        "upload",
        "v1/f",
        &store,
        "--key",
        "k.key",
        "--create-container",
    ]);
    let mut saw_new = false;
    for round in 0..10u64 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_encfs"))
            .args([
                "upload",
                "v2/f",
                &store,
                "--key",
                "k.key",
                "--block-size",
                "1MiB",
                "--concurrency",
                "2",
            ])
            .current_dir(sb.dir.path())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(15 * round));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let _ = fs::remove_file(sb.path("got"));
        sb.ok(&["download", &format!("{store}/f"), "got", "--key", "k.key"]);
        let got = fs::read(sb.path("got")).unwrap();
        assert!(
            got == old || got == new,
            "round {round}: a mix of old and new ({} bytes)",
            got.len()
        );
        saw_new |= got == new;
        if saw_new {
            // Put the old version back so later rounds interrupt a real replacement again.
            sb.ok(&["rm", &format!("{store}/f")]);
            sb.ok(&["upload", "v1/f", &store, "--key", "k.key"]);
        }
    }
}
