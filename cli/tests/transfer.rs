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

/// Bytes in the store's files outside `blobs/` (staged blocks, writes in progress) last written
/// at or after `since`: what a running upload has staged so far.
fn staged_since(store: &Path, since: std::time::SystemTime) -> u64 {
    // File times come from a coarse clock (a few ms): allow for it.
    let since = since - std::time::Duration::from_millis(10);
    walk_files(store)
        .iter()
        .filter(|p| !p.strip_prefix(store).unwrap().starts_with("blobs"))
        .filter_map(|p| fs::metadata(p).ok())
        .filter(|m| m.modified().is_ok_and(|t| t >= since))
        .map(|m| m.len())
        .sum()
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
    let download = || {
        let _ = fs::remove_file(sb.path("got"));
        sb.ok(&["download", &format!("{store}/f"), "got", "--key", "k.key"]);
        fs::read(sb.path("got")).unwrap()
    };
    // Rounds killed while the new version was being staged (so the kill really interrupted a
    // replacement), and rounds whose upload got to its commit before the kill.
    let (mut interrupted, mut completed) = (0, 0);
    for round in 0..8u64 {
        let started = std::time::SystemTime::now();
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
        // Wait until this upload has staged something (or ended by itself), then kill it a
        // little later each round.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut staging = false;
        while std::time::Instant::now() < deadline && child.try_wait().unwrap().is_none() {
            if staged_since(&sb.path("store/c"), started) > 0 {
                staging = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        std::thread::sleep(std::time::Duration::from_millis(20 * round));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let got = download();
        assert!(
            got == old || got == new,
            "round {round}: a mix of old and new ({} bytes)",
            got.len()
        );
        if got == new {
            completed += 1;
            // Put the old version back so later rounds interrupt a real replacement again.
            sb.ok(&["rm", &format!("{store}/f")]);
            sb.ok(&["upload", "v1/f", &store, "--key", "k.key"]);
        } else if staging {
            interrupted += 1;
        }
    }
    assert!(
        interrupted > 0,
        "no round was killed mid-upload ({completed} of 8 completed first): the test proved nothing"
    );
    // After all those kills, an upload left to finish publishes the new version whole.
    sb.ok(&[
        "upload",
        "v2/f",
        &store,
        "--key",
        "k.key",
        "--block-size",
        "1MiB",
    ]);
    assert!(
        download() == new,
        "the completed upload did not publish the new version"
    );
}

/// The `.encfs-partial` files below `root`.
fn partials(root: &Path) -> Vec<PathBuf> {
    walk_files(root)
        .into_iter()
        .filter(|p| p.display().to_string().ends_with(".encfs-partial"))
        .collect()
}

/// Starts `encfs ARGS` in the sandbox with its environment and `extra` variables.
fn spawn(sb: &Sandbox, args: &[&str], extra: &[(&str, &str)]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_encfs"))
        .args(args)
        .current_dir(sb.dir.path())
        .envs(sb.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .envs(extra.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Polls until `root` holds a partial download (panics after 30 s).
fn wait_for_partial(root: &Path, child: &mut std::process::Child) -> PathBuf {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(partial) = partials(root).pop() {
            return partial;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the download ended before it wrote a partial file"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no partial file appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

#[test]
fn a_killed_downloads_partial_is_collected_by_the_next_download_and_a_live_one_is_kept() {
    let sb = Sandbox::new();
    dataset(&sb.path("data"));
    sb.ok(&["key", "generate", "--out", "k.key"]);
    let store = sb.path("store/c").display().to_string();
    let args = ["--key", "k.key", "--create-container"];
    sb.ok(&[&["upload", "data", &store][..], &args].concat());
    // Slow store requests, so that the download of big.bin is still running when we look.
    let slow = [("ENCFS_DANGEROUS_INJECT_LATENCY_MS", "150")];
    let big = format!("{store}/big.bin");
    let download_big = [
        "download",
        &big,
        "out/big.bin",
        "--key",
        "k.key",
        "--block-size",
        "1MiB",
    ];

    // kill -9 midway: the partial stays behind ...
    fs::create_dir_all(sb.path("out")).unwrap();
    let mut child = spawn(&sb, &download_big, &slow);
    let left = wait_for_partial(&sb.path("out"), &mut child);
    let _ = child.kill();
    let _ = child.wait();
    assert!(left.exists());
    assert!(!sb.path("out/big.bin").exists());
    // ... until the next download into that directory, which removes it and succeeds.
    sb.ok(&["download", &store, "out", "--key", "k.key"]);
    assert_eq!(partials(&sb.path("out")), Vec::<PathBuf>::new());
    same_tree(&sb.path("data"), &sb.path("out"));

    // A live download's partial survives a concurrent download into the same directory.
    fs::remove_file(sb.path("out/big.bin")).unwrap();
    let mut live = spawn(&sb, &download_big, &slow);
    let partial = wait_for_partial(&sb.path("out"), &mut live);
    let notes = format!("{store}/sub/deeper/notes.txt");
    sb.ok(&["download", &notes, "out/notes.txt", "--key", "k.key"]);
    assert!(
        partial.exists(),
        "a concurrent download removed a live download's partial file"
    );
    let output = live.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the live download failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        fs::read(sb.path("out/big.bin")).unwrap() == fs::read(sb.path("data/big.bin")).unwrap()
    );
    assert_eq!(
        fs::read(sb.path("out/notes.txt")).unwrap(),
        b"confidential notes"
    );
    assert_eq!(partials(&sb.path("out")), Vec::<PathBuf>::new());
}

/// `files` and `skipped` of an upload's JSON summary.
fn upload_counts(sb: &Sandbox, args: &[&str]) -> (u64, u64) {
    let mut all = vec!["upload"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--output", "json"]);
    let summary: serde_json::Value = serde_json::from_str(&sb.ok(&all)).unwrap();
    (
        summary["files"].as_u64().unwrap(),
        summary["skipped"].as_u64().unwrap(),
    )
}

/// The blob names of the dataset (27 files).
fn dataset_blobs(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = walk_files(root)
        .iter()
        .map(|p| p.strip_prefix(root).unwrap().display().to_string())
        .collect();
    names.sort();
    names
}

/// Upload with key A, then with key B: every file is uploaded again (a resumed upload compares
/// the key, not only size and mtime), and each blob downloads with B and fails with A. The same
/// key again skips every file; so does the same mode, and another mode uploads again.
fn key_rotation_re_uploads_everything(sb: &Sandbox, store: &str, mode: &str, wrong_key: &str) {
    dataset(&sb.path("data"));
    let blobs = dataset_blobs(&sb.path("data"));
    assert_eq!(blobs.len(), 27);
    sb.ok(&["key", "generate", "--out", "a.key"]);
    sb.ok(&["key", "generate", "--out", "b.key"]);
    let with = |key: &'static str| ["data", store, "--key", key, "--mode", mode];
    assert_eq!(
        upload_counts(sb, &with("a.key")),
        (27, 0),
        "{mode}: first upload"
    );
    assert_eq!(
        upload_counts(sb, &with("a.key")),
        (0, 27),
        "{mode}: same key"
    );
    assert_eq!(
        upload_counts(sb, &with("b.key")),
        (27, 0),
        "{mode}: new key"
    );
    assert_eq!(
        upload_counts(sb, &with("b.key")),
        (0, 27),
        "{mode}: same new key"
    );
    sb.ok(&["download", store, "out-b", "--key", "b.key", "--mode", mode]);
    same_tree(&sb.path("data"), &sb.path("out-b"));
    for blob in &blobs {
        let error = sb.fails(&[
            "download",
            &format!("{store}/{blob}"),
            "out-a",
            "--key",
            "a.key",
            "--mode",
            mode,
        ]);
        assert!(
            error.contains(wrong_key) && error.contains(blob.as_str()),
            "{mode}: {blob} with the old key: {error}"
        );
    }
    // Another mode replaces every blob too.
    let sse = ["data", store, "--mode", "sse"];
    assert_eq!(upload_counts(sb, &sse), (27, 0), "{mode} → sse");
    assert_eq!(upload_counts(sb, &sse), (0, 27), "sse again");
}

#[test]
fn a_new_key_re_uploads_every_file_on_the_embedded_store() {
    for (mode, wrong_key) in [("cse", "key mismatch"), ("cpk", "customer-provided key")] {
        let sb = Sandbox::new();
        let store = sb.path("store/c").display().to_string();
        fs::create_dir_all(sb.path("empty")).unwrap();
        sb.ok(&[
            "upload",
            "empty",
            &store,
            "--mode",
            "sse",
            "--create-container",
        ]);
        key_rotation_re_uploads_everything(&sb, &store, mode, wrong_key);
    }
}

#[test]
fn a_new_key_re_uploads_every_file_on_azurite() {
    let mut sb = Sandbox::new();
    sb.env.push((
        "AZURE_STORAGE_CONNECTION_STRING".into(),
        "UseDevelopmentStorage=true".into(),
    ));
    let mut suffix = [0u8; 4];
    aws_lc_rs::rand::fill(&mut suffix).unwrap();
    let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let store = format!("{}/rotate-{hex}", azurite_url());
    fs::create_dir_all(sb.path("empty")).unwrap();
    sb.ok(&[
        "upload",
        "empty",
        &store,
        "--mode",
        "sse",
        "--create-container",
    ]);
    key_rotation_re_uploads_everything(&sb, &store, "cse", "key mismatch");
}

/// Components of [`named_tree`], none of which may appear in a store with encrypted names.
const NAMED_COMPONENTS: [&str; 5] = [
    "secret-dir",
    "sales-2025.csv",
    "données",
    "link-to-sales",
    "llllllllllllllll",
];

/// A tree for encrypted names: short, long (200 and 230 bytes) and non-ASCII components, a
/// symbolic link and a file with its own mode.
fn named_tree(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let long_dir = root.join("secret-dir").join("l".repeat(200));
    fs::create_dir_all(&long_dir).unwrap();
    fs::create_dir_all(root.join("données")).unwrap();
    fs::write(
        root.join("secret-dir/sales-2025.csv"),
        b"id,amount\n1,100\n",
    )
    .unwrap();
    // 230 bytes: download's partial file (`.NAME.XXXXXX.encfs-partial`) must fit in 255.
    fs::write(long_dir.join("l".repeat(230)), b"long names").unwrap();
    fs::write(root.join("données/résumé.txt"), "été".repeat(1000)).unwrap();
    std::os::unix::fs::symlink("sales-2025.csv", root.join("secret-dir/link-to-sales")).unwrap();
    fs::set_permissions(
        root.join("secret-dir/sales-2025.csv"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
}

/// The same names, contents, link targets and permission bits below `a` and `b`.
fn same_named_tree(a: &Path, b: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut seen = 0;
    for path in walk_files(a) {
        let rel = path.strip_prefix(a).unwrap();
        let other = b.join(rel);
        let (mine, theirs) = (
            fs::symlink_metadata(&path).unwrap(),
            fs::symlink_metadata(&other).unwrap_or_else(|e| panic!("{}: {e}", rel.display())),
        );
        if mine.file_type().is_symlink() {
            assert_eq!(
                fs::read_link(&path).unwrap(),
                fs::read_link(&other).unwrap()
            );
        } else {
            assert_eq!(
                fs::read(&path).unwrap(),
                fs::read(&other).unwrap(),
                "{rel:?}"
            );
            assert_eq!(
                mine.permissions().mode() & 0o777,
                theirs.permissions().mode() & 0o777,
                "{rel:?}"
            );
        }
        seen += 1;
    }
    assert_eq!(seen, 4);
    assert_eq!(walk_files(b).len(), 4);
}

/// Upload, list and download through a datastore with encrypted names at `store`, then every
/// mixed or wrong configuration, each a clear error.
fn encrypted_names_round_trip(sb: &Sandbox, store: &str) {
    named_tree(&sb.path("named"));
    let out = sb.ok(&[
        "datastore",
        "add",
        "--name",
        "en",
        "--store",
        store,
        "--encrypt-names",
    ]);
    assert!(out.contains("datastore en"), "{out}");
    let listed = sb.ok(&["datastore", "list"]);
    assert!(listed.contains("en\tCse+names\t"), "{listed}");
    sb.ok(&["upload", "--datastore", "en", "named"]);
    let listing = sb.ok(&["ls", "--datastore", "en", "--recursive"]);
    assert!(listing.contains("secret-dir/sales-2025.csv"), "{listing}");
    assert!(listing.contains(&"l".repeat(230)), "{listing}");
    let top = sb.ok(&["ls", "--datastore", "en"]);
    assert!(top.contains("PRE") && top.contains("données/"), "{top}");
    sb.ok(&["download", "--datastore", "en", "named-out"]);
    same_named_tree(&sb.path("named"), &sb.path("named-out"));
    // One file by its name, through the datastore's subdirectory.
    sb.ok(&[
        "download",
        "--datastore",
        "en",
        "--subdirectory",
        "secret-dir",
        "one-out",
    ]);
    assert_eq!(
        fs::read(sb.path("one-out/sales-2025.csv")).unwrap(),
        b"id,amount\n1,100\n"
    );

    // A plain-name tool is told why, and lists nothing.
    let key = sb.path("cfg/keys/en.key").display().to_string();
    for args in [
        vec!["ls", store],
        vec!["ls", store, "--recursive", "--output", "json"],
        vec!["download", store, "plain-out", "--key", &key],
        vec!["upload", "named", store, "--key", &key],
    ] {
        let error = sb.fails(&args);
        assert!(
            error.contains("encrypted") && error.contains("--encrypt-names"),
            "{args:?}: {error}"
        );
        for component in NAMED_COMPONENTS {
            assert!(!error.contains(component), "{error}");
        }
    }
    assert!(!sb.path("plain-out").exists());
    // The right flag and key work without the datastore.
    let listing = sb.ok(&["ls", store, "-r", "--encrypt-names", "--key", &key]);
    assert!(listing.contains("données/résumé.txt"), "{listing}");
    // Another key: refused, naming the store.
    sb.ok(&["key", "generate", "--out", "other.key"]);
    let error = sb.fails(&["ls", store, "--encrypt-names", "--key", "other.key"]);
    assert!(error.contains("another key"), "{error}");
    let error = sb.fails(&[
        "download",
        store,
        "wrong-out",
        "--encrypt-names",
        "--key",
        "other.key",
    ]);
    assert!(error.contains("another key"), "{error}");
    assert!(!sb.path("wrong-out").exists());
    // Only cse has a DEK to derive the name key from.
    let error = sb.fails(&[
        "datastore",
        "add",
        "--name",
        "bad",
        "--store",
        "store/bad",
        "--mode",
        "sse",
        "--encrypt-names",
    ]);
    assert!(error.contains("--mode cse"), "{error}");
    // rm finds a file by its plain name; a plain rm is refused like every plain-name tool.
    let error = sb.fails(&["rm", &format!("{store}/données/résumé.txt")]);
    assert!(error.contains("encrypted"), "{error}");
    sb.ok(&[
        "rm",
        "--datastore",
        "en",
        "--subdirectory",
        "données/résumé.txt",
    ]);
    let listing = sb.ok(&["ls", "--datastore", "en", "--recursive"]);
    assert!(!listing.contains("résumé.txt"), "{listing}");
    assert!(listing.contains("secret-dir/sales-2025.csv"), "{listing}");
}

#[test]
fn encrypted_names_on_the_embedded_store() {
    let sb = Sandbox::new();
    let store = format!("file://{}", sb.path("store/names").display());
    encrypted_names_round_trip(&sb, &store);
    // No plaintext component in any blob file's name or bytes.
    for file in walk_files(&sb.path("store/names")) {
        let path = file.to_string_lossy().into_owned();
        let bytes = fs::read(&file).unwrap();
        for component in NAMED_COMPONENTS {
            let encoded = percent_encode(component);
            for needle in [component, encoded.as_str()] {
                assert!(!path.contains(needle), "{path} holds {component}");
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                    "{path}'s bytes hold {component}"
                );
            }
        }
    }
    // The option on a store that already holds plain names is refused; nothing is written.
    fs::create_dir_all(sb.path("plain")).unwrap();
    fs::write(sb.path("plain/readme.txt"), b"plain").unwrap();
    sb.ok(&["key", "generate", "--out", "plain.key"]);
    let plain_store = sb.path("store/plain").display().to_string();
    sb.ok(&[
        "upload",
        "plain",
        &plain_store,
        "--key",
        "plain.key",
        "--create-container",
    ]);
    let before = walk_files(&sb.path("store/plain")).len();
    let error = sb.fails(&[
        "upload",
        "named",
        &plain_store,
        "--key",
        "plain.key",
        "--encrypt-names",
    ]);
    assert!(error.contains("plain names"), "{error}");
    assert_eq!(walk_files(&sb.path("store/plain")).len(), before);
    let error = sb.fails(&[
        "datastore",
        "add",
        "--name",
        "mixed",
        "--store",
        &plain_store,
        "--encrypt-names",
    ]);
    assert!(error.contains("plain names"), "{error}");
    assert!(!sb.path("cfg/keys/mixed.key").exists());
}

/// Percent-encoding as the embedded store writes blob file names (every byte but `[A-Za-z0-9]`).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn encrypted_names_on_azurite() {
    let mut sb = Sandbox::new();
    sb.env.push((
        "AZURE_STORAGE_CONNECTION_STRING".into(),
        "UseDevelopmentStorage=true".into(),
    ));
    let mut suffix = [0u8; 4];
    aws_lc_rs::rand::fill(&mut suffix).unwrap();
    let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let store = format!("{}/names-{hex}", azurite_url());
    encrypted_names_round_trip(&sb, &store);
}
