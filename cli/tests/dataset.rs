//! `encfs dataset seal | verify | show`, `upload --seal` and `mount --manifest` end to end: each
//! attack on a dataset (two blobs swapped, one rolled back to an older version, one deleted, one
//! added) on the embedded store and on Azurite (started by scripts/test-all.sh; address in
//! ENCFS_AZURITE_URL), and through a real kernel mount (needs /dev/fuse and root, as the README
//! test command provides).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use encfs_store::{BlobStore, Condition, Metadata, StoreLocation};

/// Azurite's well-known development account key (public, in Microsoft's documentation).
const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A working directory with its own datastore and governance-profile files.
struct Bench {
    dir: tempfile::TempDir,
    azure: bool,
}

impl Bench {
    fn new(azure: bool) -> Self {
        let bench = Self {
            dir: tempfile::tempdir().unwrap(),
            azure,
        };
        fs::create_dir_all(bench.at("src")).unwrap();
        bench
    }

    fn at(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_encfs"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("ENCFS_CONFIG", self.at("datastores.yaml"))
            .env("ENCFS_GOVERNANCE_CONFIG", self.at("clients.yaml"))
            .env_remove("AZURE_STORAGE_ACCOUNT")
            .env_remove("AZURE_STORAGE_KEY")
            .env_remove("AZURE_STORAGE_SAS_TOKEN");
        if self.azure {
            command.env(
                "AZURE_STORAGE_CONNECTION_STRING",
                "UseDevelopmentStorage=true",
            );
        } else {
            command.env_remove("AZURE_STORAGE_CONNECTION_STRING");
        }
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

    /// Stdout and stderr of a command that must fail.
    fn fails(&self, args: &[&str]) -> (String, String) {
        let out = self.run(args);
        assert!(!out.status.success(), "encfs {args:?} should fail");
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    /// A member identity (`keys/NAME_cert.pem`, `keys/NAME_privk.pem`) and a governance client
    /// profile of the same name (no service is contacted: sealing only reads the identity).
    fn member(&self, name: &str) {
        self.ok(&[
            "governance",
            "member",
            "keygenerator",
            "--name",
            name,
            "--out",
            "keys",
        ]);
        let mut profiles =
            fs::read_to_string(self.at("clients.yaml")).unwrap_or_else(|_| "clients:\n".into());
        let keys = self.at("keys");
        profiles.push_str(&format!(
            "  {name}:\n    endpoint: https://127.0.0.1:1\n    signing_cert: {0}/{name}_cert.pem\n    signing_key: {0}/{name}_privk.pem\n    service_cert: {0}/{name}_cert.pem\n",
            keys.display()
        ));
        fs::write(self.at("clients.yaml"), profiles).unwrap();
    }

    /// The datastore `ds` opened from the test, as an attacker with write access would.
    fn store(&self, address: &str) -> StoreLocation {
        let credentials = self.azure.then(|| {
            encfs_store::azure::Credentials::shared_key("devstoreaccount1", DEV_KEY).unwrap()
        });
        let address = if self.azure {
            address.to_owned()
        } else {
            self.at(address).display().to_string()
        };
        encfs_store::open_store_with(&address, credentials, encfs_store::RetryPolicy::default())
            .unwrap()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn raw(store: &dyn BlobStore, name: &str) -> bytes::Bytes {
    store.get(name, None, None, None).await.unwrap()
}

async fn put_raw(store: &dyn BlobStore, name: &str, data: bytes::Bytes) {
    store
        .put(name, data, &Metadata::new(), &Condition::None, None)
        .await
        .unwrap();
}

/// Publishes a sealed dataset (`ds`, prefix `data/`): a.csv, b.csv, c.csv (v1 then v2), d.csv;
/// returns the v1 ciphertext of c.csv.
fn publish(bench: &Bench, address: &str) -> bytes::Bytes {
    bench.member("publisher");
    bench.member("mallory");
    bench.ok(&["datastore", "add", "--name", "ds", "--store", address]);
    let src = bench.at("src/data");
    fs::create_dir_all(&src).unwrap();
    for (name, text) in [
        ("a", "alpha"),
        ("b", "bravo"),
        ("c", "charlie v1"),
        ("d", "delta"),
    ] {
        fs::write(src.join(format!("{name}.csv")), text.repeat(100)).unwrap();
    }
    let upload = [
        "upload",
        "--datastore",
        "ds",
        "--subdirectory",
        "data",
        "src/data",
    ];
    let mut sealed = upload.to_vec();
    sealed.extend(["--seal", "--governance-client", "publisher"]);
    // A fresh prefix: sealed as the files finish (the streaming path), and it verifies.
    let first = bench.ok(&sealed);
    let mut pinned = VERIFY[..6].to_vec();
    pinned.extend(["--digest", first.trim()]);
    bench.ok(&pinned);
    let location = bench.store(address);
    let old_c = runtime().block_on(raw(&*location.store, "data/c.csv"));
    // v2 of c, sealed in the same pass (a, b and d are skipped, and read for the manifest: the
    // usual path, after the upload).
    std::thread::sleep(Duration::from_millis(20));
    fs::write(src.join("c.csv"), "charlie v2".repeat(100)).unwrap();
    let digest = bench.ok(&sealed);
    assert_ne!(digest, first);
    assert!(digest.trim().starts_with("sha256:"), "{digest}");
    old_c
}

/// The four attacks, through the store API.
fn attack(bench: &Bench, address: &str, old_c: bytes::Bytes) {
    let location = bench.store(address);
    let store = &*location.store;
    runtime().block_on(async {
        let (a, b) = (
            raw(store, "data/a.csv").await,
            raw(store, "data/b.csv").await,
        );
        put_raw(store, "data/a.csv", b).await;
        put_raw(store, "data/b.csv", a.clone()).await;
        put_raw(store, "data/c.csv", old_c).await;
        store.delete("data/d.csv", &Condition::None).await.unwrap();
        put_raw(store, "data/e.csv", a).await;
    });
}

const VERIFY: [&str; 7] = [
    "dataset",
    "verify",
    "--datastore",
    "ds",
    "--prefix",
    "data",
    "--signer-cert",
];

fn verify_args(cert: &str) -> Vec<&str> {
    let mut args = VERIFY.to_vec();
    args.push(cert);
    args
}

fn attacks_are_reported_by_name(bench: &Bench, address: &str) {
    let old_c = publish(bench, address);
    let publisher = "keys/publisher_cert.pem";
    let clean = bench.run(&verify_args(publisher));
    assert!(
        clean.status.success(),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    assert!(String::from_utf8_lossy(&clean.stderr).contains("4 listed, 4 verified, 0 problems"));

    // Show: JSON and the table.
    let shown: serde_json::Value = serde_json::from_str(&bench.ok(&[
        "dataset",
        "show",
        "--datastore",
        "ds",
        "--prefix",
        "data",
        "--output",
        "json",
    ]))
    .unwrap();
    assert_eq!(shown["manifest"]["store_prefix"], "data/");
    assert_eq!(shown["manifest"]["entries"].as_array().unwrap().len(), 4);
    let table = bench.ok(&["dataset", "show", "--datastore", "ds", "--prefix", "data"]);
    assert!(table.contains("data/d.csv") && table.contains("signature not checked"));

    // Another member's certificate: the manifest is refused.
    let (_, error) = bench.fails(&verify_args("keys/mallory_cert.pem"));
    assert!(
        error.contains("is refused") && error.contains("not by the trusted signer"),
        "{error}"
    );

    // One byte edited anywhere in the manifest: refused.
    let location = bench.store(address);
    let manifest = runtime().block_on(raw(&*location.store, "data/.encfs-manifest"));
    for at in [3, manifest.len() / 2, manifest.len() - 5] {
        let mut edited = manifest.to_vec();
        edited[at] ^= 0x20;
        fs::write(bench.at("edited.cose"), &edited).unwrap();
        let mut args = verify_args(publisher);
        args.extend(["--manifest", "edited.cose"]);
        let (_, error) = bench.fails(&args);
        assert!(error.contains("is refused"), "byte {at}: {error}");
    }

    attack(bench, address, old_c);
    let (out, error) = bench.fails(&verify_args(publisher));
    for line in [
        "data/a.csv: swapped: holds the version listed for data/b.csv",
        "data/b.csv: swapped: holds the version listed for data/a.csv",
        "data/c.csv: replaced",
        "data/d.csv: deleted",
        "data/e.csv: added",
    ] {
        assert!(out.contains(line), "{line:?} not in {out}");
    }
    assert!(error.contains("does not hold the dataset"), "{error}");
    let mut args = verify_args(publisher);
    args.extend(["--output", "json"]);
    let out = bench.run(&args);
    assert!(!out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["clean"], false);
    assert_eq!(report["verified"], 0);
    let findings: Vec<(&str, &str)> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["finding"].as_str().unwrap()))
        .collect();
    assert_eq!(
        findings,
        [
            ("data/a.csv", "swapped"),
            ("data/b.csv", "swapped"),
            ("data/c.csv", "replaced"),
            ("data/d.csv", "missing"),
            ("data/e.csv", "added"),
        ]
    );
}

#[test]
fn embedded_store_attacks_are_reported_by_name() {
    let bench = Bench::new(false);
    attacks_are_reported_by_name(&bench, "store/c");
    // A download of the prefix skips the manifest blob (it is no file of the data).
    bench.ok(&[
        "download",
        "--datastore",
        "ds",
        "out",
        "--subdirectory",
        "data",
    ]);
    assert!(!bench.at("out/.encfs-manifest").exists());
    assert!(bench.at("out/a.csv").exists());
}

#[test]
fn azurite_attacks_are_reported_by_name() {
    let url = std::env::var("ENCFS_AZURITE_URL")
        .expect("ENCFS_AZURITE_URL unset: run scripts/test-all.sh, which starts Azurite");
    let mut suffix = [0u8; 4];
    aws_lc_rs::rand::fill(&mut suffix).unwrap();
    let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let bench = Bench::new(true);
    attacks_are_reported_by_name(&bench, &format!("{url}/dataset-{hex}"));
}

#[test]
fn a_dataset_with_encrypted_names_lists_and_checks_the_plain_names() {
    let bench = Bench::new(false);
    bench.member("publisher");
    bench.ok(&[
        "datastore",
        "add",
        "--name",
        "ds",
        "--store",
        "store/en",
        "--encrypt-names",
    ]);
    fs::create_dir_all(bench.at("src/data")).unwrap();
    fs::write(bench.at("src/data/secret-sales.csv"), "1,2\n".repeat(50)).unwrap();
    let upload = [
        "upload",
        "--datastore",
        "ds",
        "--subdirectory",
        "data",
        "src/data",
    ];
    let mut sealed = upload.to_vec();
    sealed.extend(["--seal", "--governance-client", "publisher"]);
    bench.ok(&sealed);
    bench.ok(&verify_args("keys/publisher_cert.pem"));
    let shown = bench.ok(&["dataset", "show", "--datastore", "ds", "--prefix", "data"]);
    assert!(shown.contains("secret-sales.csv"), "{shown}");
    // Neither the data's name nor the manifest's is readable in the store.
    let stored: Vec<String> = fs::read_dir(bench.at("store/en/blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for name in &stored {
        assert!(
            !name.contains("secret") && !name.contains("manifest"),
            "{stored:?}"
        );
    }
    // A datastore config that does not say the names are encrypted is told why.
    let config = fs::read_to_string(bench.at("datastores.yaml")).unwrap();
    fs::write(
        bench.at("plain.yaml"),
        config.replace("encrypt_names: true", "encrypt_names: false"),
    )
    .unwrap();
    let (_, error) = bench.fails(&[
        "dataset",
        "verify",
        "--config",
        "plain.yaml",
        "--datastore",
        "ds",
        "--prefix",
        "data",
        "--signer-cert",
        "keys/publisher_cert.pem",
    ]);
    assert!(error.contains("encrypted"), "{error}");
}

#[test]
fn seal_signs_with_files_and_refuses_plain_blobs() {
    let bench = Bench::new(false);
    bench.member("publisher");
    bench.ok(&["datastore", "add", "--name", "ds", "--store", "store/c"]);
    fs::write(bench.at("src/x.txt"), "x").unwrap();
    bench.ok(&["upload", "--datastore", "ds", "src"]);
    let digest = bench.ok(&[
        "dataset",
        "seal",
        "--datastore",
        "ds",
        "--signing-cert",
        "keys/publisher_cert.pem",
        "--signing-key",
        "keys/publisher_privk.pem",
        "--output-file",
        "m.cose",
    ]);
    let digest = digest.trim();
    // Pinned by digest: no certificate needed.
    bench.ok(&[
        "dataset",
        "verify",
        "--datastore",
        "ds",
        "--digest",
        digest,
        "--manifest",
        "m.cose",
    ]);
    let wrong = format!("sha256:{}", "0".repeat(64));
    let (_, error) = bench.fails(&["dataset", "verify", "--datastore", "ds", "--digest", &wrong]);
    assert!(error.contains("is not the pinned"), "{error}");
    // Neither a certificate nor a digest: refused, saying why.
    let out = bench.run(&["dataset", "verify", "--datastore", "ds"]);
    assert!(!out.status.success());
    // No signer: a clear error.
    let (_, error) = bench.fails(&["dataset", "seal", "--datastore", "ds"]);
    assert!(error.contains("sealing needs a signer"), "{error}");
    // A blob that is not EBF under the prefix: named.
    let location = bench.store("store/c");
    runtime().block_on(put_raw(
        &*location.store,
        "plain.txt",
        bytes::Bytes::from_static(b"hi"),
    ));
    let (_, error) = bench.fails(&[
        "dataset",
        "seal",
        "--datastore",
        "ds",
        "--governance-client",
        "publisher",
    ]);
    assert!(
        error.contains("blob plain.txt: not an encfs blob"),
        "{error}"
    );
}

/// A foreground mount with a status file; unmounted (and waited for) on drop, even on failure.
struct Mounted<'a> {
    bench: &'a Bench,
    child: Child,
}

impl<'a> Mounted<'a> {
    fn start(bench: &'a Bench, args: &[&str]) -> Self {
        assert!(
            Path::new("/dev/fuse").exists(),
            "/dev/fuse is missing: run scripts/test-all.sh as root (it installs fuse3)"
        );
        fs::create_dir_all(bench.at("mnt")).unwrap();
        let status = bench.at("status.json");
        let _ = fs::remove_file(&status);
        let mut all = vec![
            "mount",
            "--datastore",
            "ds",
            "--subdirectory",
            "data",
            "mnt",
        ];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--status-file", status.to_str().unwrap()]);
        let child = bench
            .command(&all)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut mounted = Self { bench, child };
        let start = Instant::now();
        while !status.exists() {
            if mounted.child.try_wait().unwrap().is_some() {
                let mut stderr = String::new();
                use std::io::Read as _;
                let _ = mounted
                    .child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut stderr);
                panic!("mount exited: {stderr}");
            }
            assert!(start.elapsed() < Duration::from_secs(60), "mount not ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        mounted
    }

    /// The status file, once `ready(status)` holds (it is rewritten as findings come).
    fn status_when(&self, ready: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let text = fs::read_to_string(self.bench.at("status.json")).unwrap_or_default();
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(&text)
                && ready(&value)
            {
                return value;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "status: {text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(self.bench.at("mnt"))
            .output();
        // The unmount ends the mount process; kill it only if it hangs.
        let start = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            if start.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn errno_of(result: std::io::Result<impl Sized>) -> Option<i32> {
    result.err().and_then(|e| e.raw_os_error())
}

#[test]
fn a_mount_with_its_manifest_serves_exactly_the_listed_versions() {
    mount_serves_exactly_the_listed_versions(&Bench::new(false), "store/c");
}

#[test]
fn a_mount_over_azurite_with_its_manifest_serves_exactly_the_listed_versions() {
    let url = std::env::var("ENCFS_AZURITE_URL")
        .expect("ENCFS_AZURITE_URL unset: run scripts/test-all.sh, which starts Azurite");
    let mut suffix = [0u8; 4];
    aws_lc_rs::rand::fill(&mut suffix).unwrap();
    let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    mount_serves_exactly_the_listed_versions(&Bench::new(true), &format!("{url}/pinned-{hex}"));
}

/// Each attack through a real kernel mount of the datastore at `address`, with its manifest.
fn mount_serves_exactly_the_listed_versions(bench: &Bench, address: &str) {
    let old_c = publish(bench, address);
    // Before the attacks everything reads.
    {
        let _mount = Mounted::start(
            bench,
            &[
                "--manifest-from-store",
                "--signer-cert",
                "keys/publisher_cert.pem",
            ],
        );
        assert_eq!(
            fs::read(bench.at("mnt/c.csv")).unwrap(),
            "charlie v2".repeat(100).as_bytes()
        );
        let names: Vec<String> = fs::read_dir(bench.at("mnt"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
    }
    attack(bench, address, old_c);
    // A plain mount shows the attacked store as it is (and hides the manifest blob).
    {
        let _mount = Mounted::start(bench, &[]);
        assert_eq!(
            fs::read(bench.at("mnt/a.csv")).unwrap(),
            "bravo".repeat(100).as_bytes()
        );
        assert!(bench.at("mnt/e.csv").exists());
        assert!(!bench.at("mnt/.encfs-manifest").exists());
    }
    let mount = Mounted::start(
        bench,
        &[
            "--manifest-from-store",
            "--signer-cert",
            "keys/publisher_cert.pem",
        ],
    );
    let mnt = bench.at("mnt");
    let mut names: Vec<String> = fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    // The deleted blob is listed, the added one absent.
    assert_eq!(names, ["a.csv", "b.csv", "c.csv", "d.csv"]);
    assert_eq!(errno_of(fs::metadata(mnt.join("e.csv"))), Some(ENOENT));
    // Swapped, rolled back and deleted: EIO at open.
    for name in ["a.csv", "b.csv", "c.csv", "d.csv"] {
        assert_eq!(
            errno_of(fs::File::open(mnt.join(name))),
            Some(EIO),
            "{name}"
        );
    }
    let status = mount.status_when(|s| {
        s["manifest"]["refused"] == 3
            && s["manifest"]["missing"] == 1
            && s["manifest"]["added"] == 1
    });
    assert_eq!(status["manifest"]["entries"], 4);
    assert_eq!(
        status["manifest"]["refused_names"],
        serde_json::json!(["a.csv", "b.csv", "c.csv"])
    );
    assert_eq!(
        status["manifest"]["missing_names"],
        serde_json::json!(["d.csv"])
    );
    assert_eq!(
        status["manifest"]["added_names"],
        serde_json::json!(["e.csv"])
    );
    assert!(
        status["manifest"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    drop(mount);
    // A manifest signed by another member does not mount.
    let out = bench.run(&[
        "mount",
        "--datastore",
        "ds",
        "--subdirectory",
        "data",
        "mnt",
        "--manifest-from-store",
        "--signer-cert",
        "keys/mallory_cert.pem",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not by the trusted signer"));
}

const EIO: i32 = 5;
const ENOENT: i32 = 2;
