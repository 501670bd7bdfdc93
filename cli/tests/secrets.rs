//! Secrets stay secret, through the real `encfs` binary against Azurite (address in
//! ENCFS_AZURITE_URL, started by scripts/test-all.sh): no SAS signature or account key in any
//! output of any error path; no secret on the command line of any encfs process, `mount --daemon`
//! included; plain http carries secrets only to loopback; `cpk` mode sends a key derived from the
//! DEK, not the DEK; names the signing once got wrong (`%41`, `+`, spaces, non-ASCII) work.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

/// Azurite's well-known development account and key (public, but the key is what these tests
/// look for in every output).
const ACCOUNT: &str = "devstoreaccount1";
const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const CREDENTIAL_VARIABLES: [&str; 4] = [
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
];

fn azurite() -> String {
    std::env::var("ENCFS_AZURITE_URL")
        .expect("ENCFS_AZURITE_URL unset: run scripts/test-all.sh, which starts Azurite")
}

fn random_name(tag: &str) -> String {
    let mut suffix = [0u8; 4];
    aws_lc_rs::rand::fill(&mut suffix).unwrap();
    let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    format!("{tag}-{hex}")
}

/// An account SAS (version 2019-12-12, blob service, every resource type and permission) signed
/// with `key`, as `az storage account generate-sas` makes it. Returns the query string and the
/// signature (base64).
fn account_sas(key: &str) -> (String, String) {
    let (permissions, services, types, expiry, protocol, version) = (
        "rwdlacup",
        "b",
        "sco",
        "2099-01-01T00:00:00Z",
        "https,http",
        "2019-12-12",
    );
    let to_sign = format!(
        "{ACCOUNT}\n{permissions}\n{services}\n{types}\n\n{expiry}\n\n{protocol}\n{version}\n"
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, &BASE64.decode(key).unwrap());
    let signature = BASE64.encode(hmac::sign(&key, to_sign.as_bytes()).as_ref());
    let encoded: String = signature
        .chars()
        .map(|c| match c {
            '+' => "%2B".to_owned(),
            '/' => "%2F".to_owned(),
            '=' => "%3D".to_owned(),
            c => c.to_string(),
        })
        .collect();
    let query = format!(
        "sv={version}&ss={services}&srt={types}&sp={permissions}&se={}&spr={}&sig={encoded}",
        expiry.replace(':', "%3A"),
        protocol.replace(',', "%2C"),
    );
    (query, signature)
}

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
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
            .env("ENCFS_CONFIG", self.path("cfg/datastores.yaml"));
        for variable in CREDENTIAL_VARIABLES {
            command.env_remove(variable);
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
            "encfs {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

/// Every form a secret can take in text: as is, percent-encoded, and a distinctive piece.
fn forms(secret: &str) -> Vec<String> {
    let encoded = secret
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    vec![
        secret.to_owned(),
        encoded,
        secret.trim_end_matches('=')[..20].to_owned(),
    ]
}

fn assert_clean(what: &str, out: &Output, secrets: &[&str]) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in secrets {
        for form in forms(secret) {
            assert!(
                !text.contains(&form),
                "{what}: a secret in the output: {text}"
            );
        }
    }
}

/// Drives every error path reachable from the command line with a SAS (in the URL and in a
/// file), with an account key (file, environment, connection string), and with the refused
/// value flags, and greps all output for the signature and the key.
#[test]
fn no_error_path_shows_a_sas_or_an_account_key() {
    let sb = Sandbox::new();
    let base = azurite();
    let (sas, signature) = account_sas(KEY);
    // A SAS signed with another key: Azurite answers 403, and this signature must not leak
    // either.
    let (bad_sas, bad_signature) = account_sas("d3Jvbmcta2V5LWZvci1hLXNpZ25hdHVyZS0xMjM0NTY=");
    let container = format!("{base}/{}", random_name("sec"));
    fs::write(sb.path("sas"), format!("?{sas}\n")).unwrap();
    fs::write(sb.path("account.key"), format!("{KEY}\n")).unwrap();
    fs::write(sb.path("wrong.key"), "d3Jvbmc=").unwrap();
    fs::write(
        sb.path("connection"),
        format!("DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey=d3Jvbmc=;BlobEndpoint={base}"),
    )
    .unwrap();
    fs::create_dir(sb.path("data")).unwrap();
    fs::write(sb.path("data/f.txt"), "hello").unwrap();
    sb.ok(&["key", "generate", "--out", "k.key"]);
    // It works with the SAS, so the failures below are the error paths, not a bad token.
    sb.ok(&[
        "upload",
        "data",
        &format!("{container}?{sas}"),
        "--key",
        "k.key",
        "--create-container",
    ]);
    assert!(
        sb.ok(&["ls", &container, "--sas-token-file", "sas"])
            .contains("f.txt")
    );
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/{ACCOUNT}/cont", listener.local_addr().unwrap())
    };
    let with_sas = |url: &str| format!("{url}?{sas}");
    let missing = format!("{base}/{}", random_name("none"));
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "403, bad signature",
            vec!["ls".into(), format!("{container}?{bad_sas}")],
        ),
        ("missing container", vec!["ls".into(), with_sas(&missing)]),
        (
            "missing blob",
            vec![
                "download".into(),
                with_sas(&format!("{container}/nope.txt")),
                "out".into(),
                "--key".into(),
                "k.key".into(),
            ],
        ),
        (
            "rm of a missing blob",
            vec!["rm".into(), with_sas(&format!("{container}/nope"))],
        ),
        ("unreachable host", vec!["ls".into(), with_sas(&dead)]),
        (
            "unreachable host, upload",
            vec![
                "upload".into(),
                "data".into(),
                with_sas(&dead),
                "--key".into(),
                "k.key".into(),
            ],
        ),
        (
            "bad container name",
            vec!["ls".into(), with_sas(&format!("{base}/Bad_Name"))],
        ),
        (
            "no container",
            vec!["ls".into(), with_sas(&format!("{base}/"))],
        ),
        (
            "not a store URL",
            vec!["ls".into(), format!("ftp://host/c?{sas}")],
        ),
        (
            "plain http to another host",
            vec!["ls".into(), with_sas("http://192.0.2.1/acct/cont")],
        ),
        (
            "plain http to another host, SAS file",
            vec![
                "ls".into(),
                "http://192.0.2.1/acct/cont".into(),
                "--sas-token-file".into(),
                "sas".into(),
            ],
        ),
        (
            "sas file, missing container",
            vec![
                "ls".into(),
                missing.clone(),
                "--sas-token-file".into(),
                "sas".into(),
            ],
        ),
        (
            "wrong account key",
            vec![
                "ls".into(),
                container.clone(),
                "--account-key-file".into(),
                "wrong.key".into(),
            ],
        ),
        (
            "account key, missing container",
            vec![
                "ls".into(),
                missing.clone(),
                "--account-key-file".into(),
                "account.key".into(),
            ],
        ),
        (
            "account key, unreachable",
            vec![
                "ls".into(),
                dead.clone(),
                "--account-key-file".into(),
                "account.key".into(),
            ],
        ),
        (
            "connection string with a wrong key",
            vec![
                "ls".into(),
                container.clone(),
                "--connection-string-file".into(),
                "connection".into(),
            ],
        ),
        (
            "refused --account-key",
            vec![
                "ls".into(),
                container.clone(),
                "--account-key".into(),
                KEY.into(),
            ],
        ),
        (
            "refused --sas-token",
            vec![
                "ls".into(),
                container.clone(),
                "--sas-token".into(),
                sas.clone(),
            ],
        ),
        (
            "refused --connection-string",
            vec![
                "ls".into(),
                container.clone(),
                format!("--connection-string=AccountName={ACCOUNT};AccountKey={KEY}"),
            ],
        ),
        (
            "mount of a missing container",
            vec![
                "mount".into(),
                with_sas(&missing),
                "mnt".into(),
                "--key".into(),
                "k.key".into(),
                "--error-file".into(),
                "mount-error.json".into(),
            ],
        ),
        (
            "datastore add, unreachable",
            vec![
                "datastore".into(),
                "add".into(),
                "--name".into(),
                "d".into(),
                "--store".into(),
                with_sas(&dead),
            ],
        ),
    ];
    fs::create_dir(sb.path("mnt")).unwrap();
    for (what, args) in &cases {
        // A short deadline: the unreachable cases retry until it passes.
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.extend(["--request-timeout", "2s"]);
        let out = sb.run(&args);
        assert!(!out.status.success(), "{what}: should fail");
        assert!(!out.stderr.is_empty(), "{what}: says why");
        assert_clean(what, &out, &[&signature, &bad_signature, KEY]);
    }
    let out = sb.run(&["ls", &container, "--account-key", KEY]);
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(message.contains("--account-key-file"), "{message}");
    let out = sb.run(&["ls", &with_sas("http://192.0.2.1/acct/cont")]);
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(
        message.contains("refusing to send a SAS token over plain http://"),
        "{message}"
    );
    // The environment form of the account key, wrong: a 403 naming the URL, no key.
    let out = sb
        .command(&["ls", &container])
        .env("AZURE_STORAGE_ACCOUNT", ACCOUNT)
        .env("AZURE_STORAGE_KEY", "d3Jvbmc=")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_clean("environment key", &out, &[KEY, &signature]);
    let error_file = fs::read_to_string(sb.path("mount-error.json")).unwrap();
    for form in forms(&signature) {
        assert!(!error_file.contains(&form), "{error_file}");
    }
    // A datastore whose address holds a SAS is listed without it.
    sb.ok(&[
        "datastore",
        "add",
        "--name",
        "s",
        "--store",
        &format!("{container}?{sas}"),
    ]);
    let listed = sb.run(&["datastore", "list"]);
    assert!(listed.status.success());
    assert_clean("datastore list", &listed, &[&signature]);
}

fn encfs_processes() -> Vec<(u32, String)> {
    let binary = fs::canonicalize(env!("CARGO_BIN_EXE_encfs")).unwrap();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let exe = fs::read_link(entry.path().join("exe")).ok()?;
            (exe == binary).then(|| {
                let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
                (pid, String::from_utf8_lossy(&cmdline).replace('\0', " "))
            })
        })
        .collect()
}

fn mounted(mountpoint: &Path) -> bool {
    let mountpoint = mountpoint.to_str().unwrap();
    fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .any(|line| line.split(' ').nth(1) == Some(mountpoint))
}

/// Unmounts whatever a test mounted, even when it fails.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        if mounted(&self.0) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.0)
                .output();
        }
    }
}

/// `mount --daemon` with a credential file and with a SAS in the URL: every encfs process's
/// command line is free of the key and the signature (the detached child gets them in its
/// environment), and the mount serves the files.
#[test]
fn daemon_mounts_hold_no_secret_on_any_command_line() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse missing: run scripts/test-all.sh as root"
    );
    let sb = Sandbox::new();
    let container = format!("{}/{}", azurite(), random_name("daemon"));
    let (sas, signature) = account_sas(KEY);
    fs::write(sb.path("account.key"), KEY).unwrap();
    fs::create_dir_all(sb.path("data")).unwrap();
    fs::write(sb.path("data/f.txt"), "served").unwrap();
    sb.ok(&["key", "generate", "--out", "k.key"]);
    sb.ok(&[
        "upload",
        "data",
        &container,
        "--key",
        "k.key",
        "--create-container",
        "--account-key-file",
        "account.key",
    ]);
    let mountpoint = sb.path("mnt");
    fs::create_dir(&mountpoint).unwrap();
    let _guard = Unmount(mountpoint.clone());
    for address in [container.clone(), format!("{container}?{sas}")] {
        let mut args = vec!["mount", &address, "mnt", "--key", "k.key", "--daemon"];
        if !address.contains('?') {
            args.extend(["--account-key-file", "account.key"]);
        }
        let out = sb.run(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(mounted(&mountpoint));
        assert_eq!(
            fs::read_to_string(mountpoint.join("f.txt")).unwrap(),
            "served"
        );
        let processes = encfs_processes();
        assert!(!processes.is_empty(), "the daemon runs");
        for (pid, cmdline) in &processes {
            for secret in [KEY, signature.as_str()] {
                for form in forms(secret) {
                    assert!(!cmdline.contains(&form), "pid {pid}: {cmdline}");
                }
            }
        }
        sb.ok(&["unmount", "mnt"]);
        let start = Instant::now();
        while mounted(&mountpoint) {
            assert!(start.elapsed() < Duration::from_secs(30), "still mounted");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `--mode cpk` with a datastore's DEK: the key the service receives (the embedded store records
/// its SHA-256, as Azure does) is the HKDF-derived key, not the DEK; download and mount agree.
#[test]
fn cpk_mode_sends_a_derived_key_not_the_dek() {
    let sb = Sandbox::new();
    sb.ok(&["datastore", "add", "--name", "x", "--store", "store/x"]);
    fs::create_dir(sb.path("data")).unwrap();
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(sb.path("data/f.bin"), &content).unwrap();
    sb.ok(&["upload", "--datastore", "x", "--mode", "cpk", "data"]);
    let dek_path = sb.path("cfg/keys/x.key");
    let out = sb.ok(&["key", "id", "--key", dek_path.to_str().unwrap()]);
    assert!(!out.is_empty());
    // The recorded key digest, from the blob file's JSON header.
    let blob = fs::read_dir(sb.path("store/x/blobs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let raw = fs::read(&blob).unwrap();
    let header_len = u32::from_be_bytes(raw[8..12].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&raw[12..12 + header_len]).unwrap();
    let recorded = header["cpk_sha256"].as_str().unwrap().to_owned();
    let dek = dek_bytes(&dek_path);
    let sha = |bytes: &[u8]| {
        BASE64.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
    };
    assert_ne!(
        recorded,
        sha(&dek),
        "the DEK itself was sent as the CPK key"
    );
    let derived = {
        let prk = aws_lc_rs::hkdf::Salt::new(aws_lc_rs::hkdf::HKDF_SHA256, &[]).extract(&dek);
        let mut okm = [0u8; 32];
        prk.expand(&[b"encfs/v1/cpk-key"], aws_lc_rs::hkdf::HKDF_SHA256)
            .unwrap()
            .fill(&mut okm)
            .unwrap();
        okm
    };
    assert_eq!(recorded, sha(&derived));
    sb.ok(&["download", "--datastore", "x", "--mode", "cpk", "out"]);
    assert!(fs::read(sb.path("out/f.bin")).unwrap() == content);
    // The plain --key form derives the same key.
    sb.ok(&[
        "download",
        "store/x/f.bin",
        "one.bin",
        "--mode",
        "cpk",
        "--key",
        dek_path.to_str().unwrap(),
    ]);
    assert!(fs::read(sb.path("one.bin")).unwrap() == content);
    if Path::new("/dev/fuse").exists() {
        fs::create_dir(sb.path("mnt")).unwrap();
        let _guard = Unmount(sb.path("mnt"));
        sb.ok(&[
            "mount",
            "--datastore",
            "x",
            "--mode",
            "cpk",
            "mnt",
            "--daemon",
        ]);
        assert!(fs::read(sb.path("mnt/f.bin")).unwrap() == content);
        sb.ok(&["unmount", "mnt"]);
    }
}

/// The DEK bytes of a text key file, decoded here independently of encfs (`encfs-dek-v1:` then
/// 64 hex digits, as key_file writes it) — or a raw 32-byte file.
fn dek_bytes(path: &Path) -> Vec<u8> {
    let raw = fs::read(path).unwrap();
    if raw.len() == 32 {
        return raw;
    }
    let text = String::from_utf8(raw).unwrap();
    let hex: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .flat_map(|l| l.split(|c: char| !c.is_ascii_hexdigit()))
        .find(|word| word.len() == 64)
        .expect("a 64-hex-digit key in the key file")
        .to_owned();
    (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// Upload, list and download through the CLI of names with `%41`, `+`, spaces and non-ASCII,
/// with a prefix holding them too (SharedKey signing once decoded `%41` to `A`: HTTP 403).
#[test]
fn odd_names_round_trip_through_azurite() {
    let sb = Sandbox::new();
    let container = format!("{}/{}", azurite(), random_name("names"));
    fs::write(sb.path("account.key"), KEY).unwrap();
    let dir = sb.path("data/pre%41fix +x");
    fs::create_dir_all(&dir).unwrap();
    let names = ["a%41b.txt", "c+d e.txt", "ünï – 名前.csv"];
    for name in names {
        fs::write(dir.join(name), name).unwrap();
    }
    sb.ok(&["key", "generate", "--out", "k.key"]);
    let auth = ["--account-key-file", "account.key", "--key", "k.key"];
    let mut upload = vec!["upload", "data", container.as_str(), "--create-container"];
    upload.extend(auth);
    sb.ok(&upload);
    let listed = sb.ok(&[
        "ls",
        "-r",
        &format!("{container}/pre%2541fix%20+x/"),
        "--account-key-file",
        "account.key",
    ]);
    for name in names {
        assert!(listed.contains(name), "{name} in {listed}");
    }
    let mut download = vec!["download", container.as_str(), "out"];
    download.extend(auth);
    sb.ok(&download);
    for name in names {
        assert_eq!(
            fs::read_to_string(sb.path("out/pre%41fix +x").join(name)).unwrap(),
            name
        );
    }
}
