//! End-to-end tests of the `encfs` binary: real files, real processes, the openssl CLI as the
//! interoperability peer for KEK wrapping.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use encfs_crypto::{DataKey, legacy_cse};

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

    fn encfs(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_encfs"))
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.encfs(args);
        assert!(
            out.status.success(),
            "encfs {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.encfs(args);
        assert!(!out.status.success(), "encfs {args:?} should fail");
        String::from_utf8(out.stderr).unwrap()
    }

    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn key(&self) -> &'static str {
        if !self.path("k.key").exists() {
            self.ok(&["key", "generate", "--out", "k.key"]);
        }
        "k.key"
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2])
        .collect()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn key_generate_is_0600_and_never_overwrites() {
    let sb = Sandbox::new();
    let printed = sb.ok(&["key", "generate", "--out", "a.key"]);
    assert_eq!(mode(&sb.path("a.key")), 0o600);
    let id = sb.ok(&["key", "id", "--key", "a.key"]);
    assert!(printed.starts_with(id.trim()));
    let before = fs::read(sb.path("a.key")).unwrap();
    let error = sb.fails(&["key", "generate", "--out", "a.key"]);
    assert!(error.contains("a.key"), "{error}");
    assert_eq!(fs::read(sb.path("a.key")).unwrap(), before);
    sb.ok(&["key", "generate", "--raw", "--out", "raw.bin"]);
    assert_eq!(fs::read(sb.path("raw.bin")).unwrap().len(), 32);
}

#[test]
fn encrypt_decrypt_round_trips_at_many_sizes() {
    let sb = Sandbox::new();
    let key = sb.key();
    for (len, segment) in [
        (0, "64KiB"),
        (1, "4KiB"),
        (65536, "64KiB"),
        ((8 << 20) + 3, "64KiB"),
        (16 << 20, "1MiB"),
        (100_000, "16MiB"),
    ] {
        let plain = pattern(len);
        fs::write(sb.path("plain"), &plain).unwrap();
        sb.ok(&[
            "encrypt",
            "--key",
            key,
            "--segment-size",
            segment,
            "plain",
            "blob",
        ]);
        if len > 200 {
            assert_ne!(
                fs::read(sb.path("blob")).unwrap()[100..200],
                plain[100..200]
            );
        }
        sb.ok(&["decrypt", "--key", key, "blob", "back"]);
        assert!(
            fs::read(sb.path("back")).unwrap() == plain,
            "round trip of {len} bytes with {segment}"
        );
    }
    assert_eq!(
        sb.files(),
        ["back", "blob", "k.key", "plain"],
        "no temporary files left behind"
    );
}

#[test]
fn one_thread_and_pipes_work_too() {
    let sb = Sandbox::new();
    let key = sb.key();
    let plain = pattern(3 << 20);
    fs::write(sb.path("plain"), &plain).unwrap();
    sb.ok(&["--threads", "1", "encrypt", "--key", key, "plain", "blob"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_encfs"))
        .args(["encrypt", "--key", key, "/dev/stdin", "piped"])
        .current_dir(sb.dir.path())
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &plain).unwrap();
    assert!(child.wait().unwrap().success());
    sb.ok(&["--threads", "1", "decrypt", "--key", key, "piped", "back"]);
    assert!(fs::read(sb.path("back")).unwrap() == plain);
}

#[test]
fn tampered_wrong_key_and_truncated_blobs_leave_no_output() {
    let sb = Sandbox::new();
    let key = sb.key();
    fs::write(sb.path("plain"), pattern(300_000)).unwrap();
    sb.ok(&["encrypt", "--key", key, "plain", "blob"]);
    let blob = fs::read(sb.path("blob")).unwrap();

    let mut tampered = blob.clone();
    tampered[200_000] ^= 1;
    fs::write(sb.path("tampered"), &tampered).unwrap();
    let error = sb.fails(&["decrypt", "--key", key, "tampered", "out"]);
    assert!(
        error.contains("tampered") && error.contains("authentication failed"),
        "{error}"
    );

    fs::write(sb.path("truncated"), &blob[..blob.len() - 5000]).unwrap();
    let error = sb.fails(&["decrypt", "--key", key, "truncated", "out"]);
    assert!(error.contains("truncated"), "{error}");

    sb.ok(&["key", "generate", "--out", "other.key"]);
    let error = sb.fails(&["decrypt", "--key", "other.key", "blob", "out"]);
    assert!(
        error.contains("key mismatch") && error.contains("blob"),
        "{error}"
    );

    // An existing output survives a failed decrypt untouched.
    fs::write(sb.path("keep"), b"previous").unwrap();
    sb.fails(&["decrypt", "--key", key, "tampered", "keep"]);
    assert_eq!(fs::read(sb.path("keep")).unwrap(), b"previous");
    assert!(!sb.path("out").exists());
    assert!(
        sb.files().iter().all(|name| !name.contains("partial")),
        "{:?}",
        sb.files()
    );
}

#[test]
fn bad_inputs_get_clear_errors() {
    let sb = Sandbox::new();
    let key = sb.key();
    fs::write(sb.path("plain"), b"hello").unwrap();
    let error = sb.fails(&[
        "encrypt",
        "--key",
        key,
        "--segment-size",
        "3000",
        "plain",
        "blob",
    ]);
    assert!(error.contains("segment"), "{error}");
    let error = sb.fails(&["encrypt", "--key", key, "missing", "blob"]);
    assert!(error.contains("missing"), "{error}");
    fs::write(sb.path("bad.key"), "not a key").unwrap();
    let error = sb.fails(&["encrypt", "--key", "bad.key", "plain", "blob"]);
    assert!(
        error.contains("bad.key") && error.contains("malformed"),
        "{error}"
    );
    let error = sb.fails(&["decrypt", "--key", key, "plain", "out"]);
    assert!(
        error.contains("plain") && error.contains("not an encfs blob"),
        "{error}"
    );
    assert!(!sb.path("blob").exists() && !sb.path("out").exists());
}

#[test]
fn open_key_file_permissions_warn() {
    let sb = Sandbox::new();
    let key = sb.key();
    fs::set_permissions(sb.path(key), fs::Permissions::from_mode(0o644)).unwrap();
    let out = sb.encfs(&["key", "id", "--key", key]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
}

#[test]
fn inspect_needs_no_key() {
    let sb = Sandbox::new();
    let key = sb.key();
    fs::write(sb.path("plain"), pattern(200_000)).unwrap();
    sb.ok(&[
        "encrypt",
        "--key",
        key,
        "--segment-size",
        "4KiB",
        "plain",
        "blob",
    ]);
    let id = sb.ok(&["key", "id", "--key", key]);
    let text = sb.ok(&["inspect", "blob"]);
    assert!(
        text.contains(id.trim()) && text.contains("200000 bytes") && text.contains("4.0 KiB"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&sb.ok(&["inspect", "--output", "json", "blob"])).unwrap();
    assert_eq!(json["plaintext_len"], 200_000);
    assert_eq!(json["segment_size"], 4096);
    assert_eq!(json["segments"], 49);
    // az's idiom: a JMESPath query and bare TSV, for `$(...)` in scripts.
    let tsv = sb.ok(&[
        "inspect",
        "--query",
        "segment_size",
        "--output",
        "tsv",
        "blob",
    ]);
    assert_eq!(tsv, "4096\n");
    let table = sb.ok(&[
        "inspect",
        "--query",
        "{n: segments}",
        "--output",
        "table",
        "blob",
    ]);
    assert_eq!(table, "n\n--\n49\n");
    let blob = fs::read(sb.path("blob")).unwrap();
    // Cut at a segment boundary: the length alone shows it (a cut inside the final segment
    // needs the key to detect, which inspect does not take).
    fs::write(sb.path("cut"), &blob[..76 + 10 * (4096 + 28)]).unwrap();
    assert!(sb.fails(&["inspect", "cut"]).contains("truncated"));
}

#[test]
fn convert_from_cleanroom_cse() {
    let sb = Sandbox::new();
    let dek = DataKey::generate().unwrap();
    fs::write(sb.path("dataset.bin"), dek.dangerous_bytes()).unwrap();
    for len in [
        0,
        1000,
        legacy_cse::BLOCK_SIZE,
        legacy_cse::BLOCK_SIZE + 4321,
    ] {
        let plain = pattern(len);
        fs::write(
            sb.path("legacy"),
            legacy_cse::insecure_seal(&dek, &plain, legacy_cse::BLOCK_SIZE),
        )
        .unwrap();
        let error = sb.fails(&["inspect", "legacy"]);
        assert!(error.contains("cleanroom-cse"), "{error}");
        sb.ok(&[
            "convert",
            "--from",
            "cleanroom-cse",
            "--key",
            "dataset.bin",
            "legacy",
            "converted",
        ]);
        sb.ok(&["decrypt", "--key", "dataset.bin", "converted", "back"]);
        assert!(fs::read(sb.path("back")).unwrap() == plain, "{len}");
    }
    let mut legacy = fs::read(sb.path("legacy")).unwrap();
    legacy[100] ^= 1;
    fs::write(sb.path("legacy"), legacy).unwrap();
    fs::remove_file(sb.path("converted")).unwrap();
    let error = sb.fails(&[
        "convert",
        "--from",
        "cleanroom-cse",
        "--key",
        "dataset.bin",
        "legacy",
        "converted",
    ]);
    assert!(
        error.contains("legacy") && error.contains("authentication failed"),
        "{error}"
    );
    assert!(!sb.path("converted").exists());
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const OAEP: [&str; 6] = [
    "-pkeyopt",
    "rsa_padding_mode:oaep",
    "-pkeyopt",
    "rsa_oaep_md:sha256",
    "-pkeyopt",
    "rsa_mgf1_md:sha256",
];

#[test]
fn kek_wrap_interoperates_with_openssl_both_ways() {
    let sb = Sandbox::new();
    let dir = sb.dir.path();
    sb.ok(&[
        "kek",
        "generate",
        "--bits",
        "2048",
        "--out-private",
        "kek.pem",
        "--out-public",
        "kek.pub",
    ]);
    assert_eq!(mode(&sb.path("kek.pem")), 0o600);
    sb.ok(&["key", "generate", "--out", "dek.key", "--raw"]);

    // encfs wraps, openssl unwraps.
    sb.ok(&[
        "key",
        "wrap",
        "--kek-public",
        "kek.pub",
        "--key",
        "dek.key",
        "--out",
        "dek.wrapped",
    ]);
    let mut args = vec![
        "pkeyutl",
        "-decrypt",
        "-inkey",
        "kek.pem",
        "-in",
        "dek.wrapped",
        "-out",
        "dek.openssl",
    ];
    args.extend(OAEP);
    openssl(&args, dir);
    assert_eq!(
        fs::read(sb.path("dek.openssl")).unwrap(),
        fs::read(sb.path("dek.key")).unwrap()
    );

    // openssl generates and wraps, encfs unwraps.
    openssl(
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:3072",
            "-out",
            "ossl.pem",
        ],
        dir,
    );
    openssl(
        &["pkey", "-in", "ossl.pem", "-pubout", "-out", "ossl.pub"],
        dir,
    );
    let mut args = vec![
        "pkeyutl",
        "-encrypt",
        "-pubin",
        "-inkey",
        "ossl.pub",
        "-in",
        "dek.key",
        "-out",
        "ossl.wrapped",
    ];
    args.extend(OAEP);
    openssl(&args, dir);
    sb.ok(&[
        "key",
        "unwrap",
        "--kek-private",
        "ossl.pem",
        "--in",
        "ossl.wrapped",
        "--out",
        "back.key",
        "--raw",
    ]);
    assert_eq!(
        fs::read(sb.path("back.key")).unwrap(),
        fs::read(sb.path("dek.key")).unwrap()
    );
    assert_eq!(mode(&sb.path("back.key")), 0o600);

    // A wrong KEK fails clearly and writes nothing.
    let error = sb.fails(&[
        "key",
        "unwrap",
        "--kek-private",
        "kek.pem",
        "--in",
        "ossl.wrapped",
        "--out",
        "nope.key",
    ]);
    assert!(
        error.contains("ossl.wrapped") && error.contains("unwrap failed"),
        "{error}"
    );
    assert!(!sb.path("nope.key").exists());
    // Public/private confusion is named.
    let error = sb.fails(&[
        "key",
        "unwrap",
        "--kek-private",
        "kek.pub",
        "--in",
        "dek.wrapped",
        "--out",
        "x.key",
    ]);
    assert!(error.contains("kek.pub"), "{error}");
}
