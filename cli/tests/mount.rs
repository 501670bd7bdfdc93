//! `encfs mount` / `encfs unmount` end to end: the binary, a real kernel mount, the embedded
//! store. Needs /dev/fuse and root (the README test command provides both).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        assert!(
            Path::new("/dev/fuse").exists(),
            "/dev/fuse is missing: run scripts/test-all.sh as root (it installs fuse3)"
        );
        let env = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        fs::create_dir(env.path("mnt")).unwrap();
        env
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

    /// Starts a foreground mount and waits for its status file.
    fn mount(&self, args: &[&str]) -> Child {
        let status = self.path("status.json");
        let _ = fs::remove_file(&status);
        let mut all = vec!["mount"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--status-file", status.to_str().unwrap()]);
        let mut child = self
            .command(&all)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !status.exists() {
            if let Some(code) = child.try_wait().unwrap() {
                let out = child.wait_with_output().unwrap();
                panic!(
                    "mount exited ({code}): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            assert!(start.elapsed() < Duration::from_secs(60), "mount not ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    fn mounted(&self) -> bool {
        let mnt = self.path("mnt");
        let mnt = mnt.to_str().unwrap();
        fs::read_to_string("/proc/mounts")
            .unwrap()
            .lines()
            .any(|line| line.split(' ').nth(1) == Some(mnt))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if self.mounted() {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(self.path("mnt"))
                .output();
        }
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn dataset(env: &Env) -> Vec<u8> {
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    let big: Vec<u8> = (0..(3 << 20) + 777u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    fs::write(src.join("big.bin"), &big).unwrap();
    fs::write(src.join("sub/note.txt"), b"a note").unwrap();
    big
}

#[test]
fn datastore_mount_serves_files_and_stops_cleanly_on_sigterm() {
    let env = Env::new();
    let big = dataset(&env);
    env.ok(&["datastore", "add", "--name", "in", "--store", "store/in"]);
    env.ok(&["upload", "--datastore", "in", "src"]);
    let mut child = env.mount(&["--datastore", "in", "mnt"]);
    assert!(env.mounted());
    let status: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(env.path("status.json")).unwrap()).unwrap();
    assert_eq!(status["state"], "ready");
    assert_eq!(status["read_write"], false);
    assert!(fs::read(env.path("mnt/big.bin")).unwrap() == big);
    assert_eq!(fs::read(env.path("mnt/sub/note.txt")).unwrap(), b"a note");
    // Ordinary tools work on it.
    let out = Command::new("cat")
        .arg(env.path("mnt/sub/note.txt"))
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"a note");
    signal(&child, "TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(code) = child.try_wait().unwrap() {
            break code;
        }
        assert!(Instant::now() < deadline, "mount did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(code.success(), "exit status {code}");
    assert!(!env.mounted());
    assert!(!env.path("status.json").exists());
}

#[test]
fn daemon_datasink_round_trip_then_unmount() {
    let env = Env::new();
    env.ok(&["datastore", "add", "--name", "out", "--store", "store/out"]);
    let out = env.ok(&[
        "mount",
        "--datastore",
        "out",
        "mnt",
        "--read-write",
        "--daemon",
    ]);
    assert!(out.contains("\"ready\""), "{out}");
    assert!(env.mounted());
    let result: Vec<u8> = (0..5_000_000u32).map(|i| (i % 253) as u8).collect();
    fs::create_dir(env.path("mnt/results")).unwrap();
    fs::write(env.path("mnt/results/model.bin"), &result).unwrap();
    env.ok(&["unmount", "mnt"]);
    let start = Instant::now();
    while env.mounted() {
        assert!(start.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(20));
    }
    env.ok(&[
        "download",
        "--datastore",
        "out",
        "dl",
        "--subdirectory",
        "results",
    ]);
    assert!(fs::read(env.path("dl/model.bin")).unwrap() == result);
    // The store never saw the plaintext.
    for entry in fs::read_dir(env.path("store/out/blobs")).unwrap() {
        let raw = fs::read(entry.unwrap().path()).unwrap();
        assert!(!raw.windows(64).any(|w| w == &result[1000..1064]));
    }
}

#[test]
fn wrong_key_refuses_to_mount_and_writes_the_error_file() {
    let env = Env::new();
    dataset(&env);
    env.ok(&["key", "generate", "--out", "right.key"]);
    env.ok(&["key", "generate", "--out", "wrong.key"]);
    env.ok(&[
        "upload",
        "src",
        "store/c",
        "--key",
        "right.key",
        "--create-container",
    ]);
    let out = env.run(&[
        "mount",
        "store/c",
        "mnt",
        "--key",
        "wrong.key",
        "--error-file",
        "err.json",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("key mismatch"), "{stderr}");
    let error: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(env.path("err.json")).unwrap()).unwrap();
    assert_eq!(error["state"], "error");
    assert!(!env.mounted());
    // A missing container is named.
    let out = env.run(&["mount", "store/none", "mnt", "--key", "right.key"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("container not found"));
    // So is a --daemon failure.
    let out = env.run(&["mount", "store/c", "mnt", "--key", "wrong.key", "--daemon"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("key mismatch"));
    assert!(!env.mounted());
}

#[test]
fn kill_during_a_rewrite_keeps_the_previous_version() {
    let env = Env::new();
    let big = dataset(&env);
    env.ok(&["key", "generate", "--out", "k.key"]);
    env.ok(&[
        "upload",
        "src",
        "store/c",
        "--key",
        "k.key",
        "--create-container",
    ]);
    let mut child = env.mount(&["store/c", "mnt", "--key", "k.key", "--read-write"]);
    // Rewrite big.bin with much more data, and kill the mount half way.
    let mut file = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(env.path("mnt/big.bin"))
        .unwrap();
    let chunk = vec![0xAB; 1 << 20];
    for _ in 0..24 {
        file.write_all(&chunk).unwrap();
    }
    signal(&child, "KILL");
    let _ = child.wait();
    let _ = file.write_all(&chunk);
    drop(file);
    let _ = Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(env.path("mnt"))
        .output();
    env.ok(&["download", "store/c/big.bin", "after.bin", "--key", "k.key"]);
    let after = fs::read(env.path("after.bin")).unwrap();
    assert_eq!(after.len(), big.len());
    assert!(after == big);
}

/// SIGTERM while a file is held open: the clean unmount is refused, so after --request-timeout
/// the mount aborts its FUSE connection (the holder gets ENOTCONN instead of hanging) and exits
/// non-zero, saying why; the mount point is gone and the store still holds the old version.
#[test]
fn sigterm_with_open_files_aborts_after_the_request_timeout() {
    let env = Env::new();
    let big = dataset(&env);
    env.ok(&["datastore", "add", "--name", "in", "--store", "store/in"]);
    env.ok(&["upload", "--datastore", "in", "src"]);
    let mut child = env.mount(&[
        "--datastore",
        "in",
        "mnt",
        "--read-write",
        "--request-timeout",
        "2s",
    ]);
    let mut held = fs::OpenOptions::new()
        .write(true)
        .open(env.path("mnt/big.bin"))
        .unwrap();
    held.write_all(b"never committed").unwrap();
    let started = Instant::now();
    signal(&child, "TERM");
    let code = loop {
        if let Some(code) = child.try_wait().unwrap() {
            break code;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "mount did not stop after SIGTERM with an open file"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "it waited first"
    );
    assert!(!code.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("aborted with files still open"), "{stderr}");
    assert!(!env.mounted());
    // The holder is not stuck: its next call fails at once.
    assert!(held.sync_all().is_err());
    drop(held);
    env.ok(&["download", "--datastore", "in", "out"]);
    assert!(fs::read(env.path("out/big.bin")).unwrap() == big);
}

/// Runs a tool in `dir`, asserting success; its standard output.
fn tool(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A read-write mount of a datastore with encrypted names: the ordinary tools work on plaintext
/// names, and the store's files never hold one.
#[test]
fn a_mount_with_encrypted_names_serves_plain_names_and_stores_none() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("reports/2025")).unwrap();
    fs::write(
        src.join("reports/2025/quarterly-sales.csv"),
        b"q,amount\n1,10\n",
    )
    .unwrap();
    fs::write(src.join("reports/readme-first.txt"), b"read me").unwrap();
    env.ok(&[
        "datastore",
        "add",
        "--name",
        "en",
        "--store",
        "store/en",
        "--encrypt-names",
    ]);
    env.ok(&["upload", "--datastore", "en", "src"]);
    // Without the option the mount refuses, saying why.
    let out = env.run(&["mount", "store/en", "mnt", "--key", "keys/en.key"]);
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains("encrypted"), "{error}");
    assert!(!env.mounted());

    let mut child = env.mount(&["--datastore", "en", "mnt", "--read-write"]);
    let mnt = env.path("mnt");
    let listing = tool(&mnt, "ls", &["-R"]);
    assert!(listing.contains("quarterly-sales.csv"), "{listing}");
    assert!(listing.contains("readme-first.txt"), "{listing}");
    assert_eq!(tool(&mnt, "cat", &["reports/readme-first.txt"]), "read me");
    // Create, write, rename a file; mkdir, rename a directory; rm.
    fs::write(mnt.join("reports/new-forecast.txt"), b"up").unwrap();
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(mnt.join("reports/new-forecast.txt"))
        .unwrap();
    file.write_all(b" and up").unwrap();
    drop(file);
    fs::rename(
        mnt.join("reports/new-forecast.txt"),
        mnt.join("reports/final-forecast.txt"),
    )
    .unwrap();
    fs::create_dir(mnt.join("scratch-area")).unwrap();
    fs::write(mnt.join("scratch-area/tmp-notes.txt"), b"notes").unwrap();
    // A directory: empty, a rename; with files, the mount answers EXDEV and `mv` copies.
    fs::create_dir(mnt.join("empty-dir")).unwrap();
    fs::rename(mnt.join("empty-dir"), mnt.join("renamed-empty")).unwrap();
    assert!(mnt.join("renamed-empty").is_dir());
    tool(&mnt, "mv", &["reports/2025", "reports/year-2025"]);
    fs::remove_file(mnt.join("reports/readme-first.txt")).unwrap();
    assert_eq!(
        fs::read(mnt.join("reports/final-forecast.txt")).unwrap(),
        b"up and up"
    );
    assert_eq!(
        fs::read(mnt.join("reports/year-2025/quarterly-sales.csv")).unwrap(),
        b"q,amount\n1,10\n"
    );
    assert!(!mnt.join("reports/2025").exists());
    assert!(!mnt.join("reports/readme-first.txt").exists());
    // tar of a small tree in and out.
    let tree = env.path("tree");
    fs::create_dir_all(tree.join("inner-dir")).unwrap();
    for i in 0..20 {
        fs::write(
            tree.join(format!("inner-dir/member-{i}.dat")),
            vec![i as u8; 3000],
        )
        .unwrap();
    }
    let archive = env.path("tree.tar").display().to_string();
    tool(&env.path(""), "tar", &["-cf", &archive, "tree"]);
    tool(&mnt, "tar", &["-xf", &archive]);
    let copy = env.path("copy");
    fs::create_dir(&copy).unwrap();
    let out_archive = env.path("out.tar").display().to_string();
    tool(&mnt, "tar", &["-cf", &out_archive, "tree"]);
    tool(&copy, "tar", &["-xf", &out_archive]);
    for i in 0..20 {
        let name = format!("tree/inner-dir/member-{i}.dat");
        assert_eq!(
            fs::read(copy.join(&name)).unwrap(),
            vec![i as u8; 3000],
            "{name}"
        );
    }
    env.ok(&["unmount", "mnt"]);
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "mount did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!env.mounted());

    // After the mount: the names as the store lists them, and none of them in its files.
    let listing = env.ok(&["ls", "--datastore", "en", "-r"]);
    for name in [
        "reports/final-forecast.txt",
        "reports/year-2025/quarterly-sales.csv",
        "scratch-area/tmp-notes.txt",
        "tree/inner-dir/member-7.dat",
    ] {
        assert!(listing.contains(name), "{name} in {listing}");
    }
    assert!(!listing.contains("readme-first"), "{listing}");
    let mut stack = vec![env.path("store/en")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = fs::read(&path).unwrap();
            for component in [
                "reports",
                "quarterly",
                "forecast",
                "scratch",
                "tmp-notes",
                "year-2025",
                "inner-dir",
                "member",
            ] {
                let shown = path.display().to_string();
                assert!(!shown.contains(component), "{shown} holds {component}");
                assert!(
                    !bytes
                        .windows(component.len())
                        .any(|w| w == component.as_bytes()),
                    "{shown}'s bytes hold {component}"
                );
            }
        }
    }
}
