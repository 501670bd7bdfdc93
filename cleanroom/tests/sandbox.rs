//! The application sandbox, proven from inside: each test runs a real program (`sh`, `python3`,
//! coreutils) in a real sandbox and checks what it saw. They need root (namespaces, mounts,
//! cgroups); without it each test says so and returns.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use encfs_cleanroom::sandbox::{Bind, Limits, Sandbox, SandboxError, SandboxSpec};

fn is_root() -> bool {
    // Reading our own status is simpler than an unsafe geteuid in a test.
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|line| line.starts_with("Uid:"))
        .is_some_and(|line| line.split_whitespace().nth(2) == Some("0"))
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipping: the sandbox tests need root (namespaces, mounts, cgroups)");
            return;
        }
    };
}

/// A temporary directory for one test: the log file, the work dir, bind sources.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spec(&self, name: &str, command: &[&str]) -> SandboxSpec {
        SandboxSpec {
            name: name.into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("HOME".into(), "/tmp".into()),
            ],
            binds: Vec::new(),
            uid: 1000,
            gid: 1000,
            limits: Limits::default(),
            log_file: self.path(&format!("{name}.log")),
            work_dir: self.path(&format!("{name}-root")),
        }
    }
}

/// The log file's entries, checked for the json-file shape.
fn log_entries(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let entry: serde_json::Value = serde_json::from_str(line).unwrap();
            let object = entry.as_object().unwrap();
            assert_eq!(object.len(), 3, "{line}");
            let time = object["time"].as_str().unwrap();
            assert_eq!(time.len(), 30, "{time}");
            assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
            (
                object["stream"].as_str().unwrap().to_owned(),
                object["log"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn stream_text(path: &Path, stream: &str) -> String {
    log_entries(path)
        .into_iter()
        .filter(|(s, _)| s == stream)
        .map(|(_, log)| log)
        .collect()
}

/// Runs the spec to its end: (exit code, stdout, stderr), and checks the cgroups are gone after.
fn run(spec: SandboxSpec) -> (i32, String, String) {
    let log = spec.log_file.clone();
    let work_dir = spec.work_dir.clone();
    let mut sandbox = Sandbox::spawn(spec).unwrap();
    let code = sandbox.wait().unwrap();
    let cgroups = sandbox.cgroup_dirs().to_vec();
    assert!(!cgroups.is_empty() || !Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists());
    drop(sandbox);
    for dir in cgroups {
        assert!(!dir.exists(), "{} is still there after drop", dir.display());
    }
    assert!(
        !work_dir.exists(),
        "{} is still there after drop",
        work_dir.display()
    );
    (
        code,
        stream_text(&log, "stdout"),
        stream_text(&log, "stderr"),
    )
}

fn key_values(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn sandboxes_can_move_between_threads() {
    fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<Sandbox>();
    send_and_sync::<SandboxError>();
}

#[test]
fn the_app_is_uid_1000_without_capabilities_in_its_own_namespaces() {
    require_root!();
    let scratch = Scratch::new();
    let script = r#"
        echo uid=$(id -u); echo gid=$(id -g); echo user=$(id -un); echo groups=$(id -G)
        grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Uid|Gid|Groups):' /proc/self/status \
            | sed 's/:[[:space:]]*/=/'
        echo uid_map=$(cat /proc/self/uid_map)
        echo gid_map=$(cat /proc/self/gid_map)
        echo hostname=$(hostname)
        echo cgroup=$(cat /proc/self/cgroup | head -1)
        for ns in user mnt pid ipc uts net cgroup; do echo ns_$ns=$(readlink /proc/self/ns/$ns); done
        echo msg_queues=$(tail -n +2 /proc/sysvipc/msg | wc -l)
        echo nested_userns=$(unshare --user true 2>/dev/null && echo allowed || echo refused)
        echo nested_netns=$(unshare --net true 2>/dev/null && echo allowed || echo refused)
        echo max_user_namespaces=$(cat /proc/sys/user/max_user_namespaces)
        echo oom_score_adj=$(cat /proc/self/oom_score_adj)
        echo init_oom_score_adj=$(cat /proc/1/oom_score_adj)
    "#;
    // A System V message queue on the host must not be visible in the sandbox's IPC namespace.
    let queue = Command::new("ipcmk").arg("-Q").output().unwrap();
    let queue_id: String = String::from_utf8_lossy(&queue.stdout)
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let (code, stdout, stderr) = run(scratch.spec("identity", &["sh", "-c", script]));
    let _ = Command::new("ipcrm").args(["-q", &queue_id]).status();
    assert_eq!(code, 0, "{stderr}");
    let seen = key_values(&stdout);
    assert_eq!(seen["uid"], "1000");
    assert_eq!(seen["gid"], "1000");
    assert_eq!(seen["user"], "app");
    assert_eq!(seen["groups"], "1000");
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(seen[set], "0000000000000000", "{set}");
    }
    assert_eq!(seen["NoNewPrivs"], "1");
    assert_eq!(
        seen["Uid"].split_whitespace().collect::<Vec<_>>(),
        ["1000"; 4]
    );
    assert_eq!(
        seen["Gid"].split_whitespace().collect::<Vec<_>>(),
        ["1000"; 4]
    );
    assert_eq!(seen["Groups"], "");
    assert_eq!(
        seen["uid_map"].split_whitespace().collect::<Vec<_>>(),
        ["1000", "1000", "1"]
    );
    assert_eq!(
        seen["gid_map"].split_whitespace().collect::<Vec<_>>(),
        ["1000", "1000", "1"]
    );
    assert_eq!(seen["hostname"], "identity");
    assert!(seen["cgroup"].ends_with(":/"), "{}", seen["cgroup"]);
    for ns in ["user", "mnt", "pid", "ipc", "uts", "net", "cgroup"] {
        let host = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let inside = &seen[&format!("ns_{ns}")];
        assert!(inside.starts_with(&format!("{ns}:[")), "{ns}: {inside}");
        assert_ne!(
            Path::new(inside),
            host,
            "the sandbox shares the host's {ns} namespace"
        );
    }
    assert_eq!(seen["msg_queues"], "0");
    assert_eq!(seen["nested_userns"], "refused");
    assert_eq!(seen["nested_netns"], "refused");
    assert_eq!(seen["max_user_namespaces"], "0");
    // The OOM killer picks the app, never the init.
    assert_eq!(seen["oom_score_adj"], "1000");
    assert_ne!(seen["init_oom_score_adj"], "1000");
}

#[test]
fn the_network_is_loopback_only_and_reaches_nothing() {
    require_root!();
    let scratch = Scratch::new();
    let host_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    host_listener.set_nonblocking(true).unwrap();
    let port = host_listener.local_addr().unwrap().port();
    let script = format!(
        r#"
import errno, os, socket
print("interfaces=" + ",".join(sorted(os.listdir("/sys/class/net"))))
print("lo_flags=" + open("/sys/class/net/lo/flags").read().strip())
for host, port in [("127.0.0.1", {port}), ("10.0.0.1", 80), ("1.1.1.1", 443), ("::1", {port})]:
    try:
        socket.create_connection((host, port), timeout=2).close()
        print(f"connect_{{host}}=connected")
    except OSError as e:
        print(f"connect_{{host}}=" + (errno.errorcode.get(e.errno, str(e.errno)) if e.errno else "timeout"))
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen()
client = socket.create_connection(server.getsockname()); conn, _ = server.accept()
client.sendall(b"ping"); print("loopback=" + conn.recv(4).decode())
"#
    );
    let (code, stdout, stderr) = run(scratch.spec("network", &["python3", "-c", &script]));
    assert_eq!(code, 0, "{stderr}");
    let seen = key_values(&stdout);
    assert_eq!(seen["interfaces"], "lo");
    // IFF_UP | IFF_LOOPBACK
    let flags = i64::from_str_radix(seen["lo_flags"].trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 0x9, 0x9, "lo is up");
    assert_eq!(seen["connect_127.0.0.1"], "ECONNREFUSED");
    assert_eq!(seen["connect_::1"], "ECONNREFUSED");
    assert_eq!(seen["connect_10.0.0.1"], "ENETUNREACH");
    assert_eq!(seen["connect_1.1.1.1"], "ENETUNREACH");
    assert_eq!(seen["loopback"], "ping");
    assert!(
        host_listener.accept().is_err(),
        "the host's listener got a connection"
    );
}

#[test]
fn the_root_filesystem_is_its_own() {
    require_root!();
    let scratch = Scratch::new();
    // A file in the host's /tmp, and a process of the host with a file open.
    let host_tmp_file = PathBuf::from(format!("/tmp/encfs-sandbox-probe-{}", std::process::id()));
    std::fs::write(&host_tmp_file, "host secret").unwrap();
    let script = r#"
import os, stat
def listing(path): return ",".join(sorted(os.listdir(path)))
print("root=" + listing("/"))
print("etc=" + listing("/etc"))
print("dev=" + listing("/dev"))
print("bin_link=" + os.readlink("/bin") if os.path.islink("/bin") else "bin_link=dir")
print("pids=" + ",".join(sorted(p for p in os.listdir("/proc") if p.isdigit())))
print("passwd_app=" + [l for l in open("/etc/passwd") if l.startswith("app:")][0].strip())
print("hosts=" + open("/etc/hosts").read().replace("\n", ";").replace("\t", " "))
for path in ["/work", "/root", "/tmp/" + os.environ["PROBE"], "/home", "/var", "/old_root", "/proc/1/root/work"]:
    print(f"exists_{path}={os.path.exists(path)}")
for path in ["/x", "/usr/x", "/etc/x", "/dev/x", "/proc/x", "/sys/x", "/tmp/x"]:
    try:
        open(path, "w").write("x"); print(f"write_{path}=ok")
    except OSError as e:
        print(f"write_{path}={e.strerror}")
st = os.statvfs("/tmp"); print(f"tmp_bytes={st.f_blocks * st.f_frsize}")
print("tmp_mode=" + oct(stat.S_IMODE(os.stat("/tmp").st_mode)))
print("devices=" + ",".join(f"{d}:{os.major(os.stat('/dev/' + d).st_rdev)}.{os.minor(os.stat('/dev/' + d).st_rdev)}" for d in ["null", "zero", "full", "random", "urandom", "tty"]))
print("urandom_len=" + str(len(open("/dev/urandom", "rb").read(16))))
try:
    open("/dev/tty")
    print("tty=opened")
except OSError as e:
    print("tty=" + e.strerror)
mounts = [l.split(" - ")[1].split()[0] for l in open("/proc/self/mountinfo")]
print("mounts=" + ",".join(sorted(set(mounts))))
"#;
    let mut spec = scratch.spec("filesystem", &["python3", "-c", script]);
    let probe = host_tmp_file
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    spec.env.push(("PROBE".into(), probe));
    spec.limits.tmp_bytes = Some(8 * 1024 * 1024);
    let (code, stdout, stderr) = run(spec);
    std::fs::remove_file(&host_tmp_file).unwrap();
    assert_eq!(code, 0, "{stderr}");
    let seen = key_values(&stdout);
    let mut expected_root: Vec<&str> = vec!["dev", "etc", "proc", "sys", "tmp"];
    for dir in ["usr", "bin", "lib", "lib64", "sbin"] {
        if std::fs::symlink_metadata(format!("/{dir}")).is_ok() {
            expected_root.push(dir);
        }
    }
    expected_root.sort();
    assert_eq!(seen["root"], expected_root.join(","));
    assert_eq!(seen["etc"], "group,hostname,hosts,nsswitch.conf,passwd");
    assert_eq!(
        seen["dev"],
        "fd,full,null,random,stderr,stdin,stdout,tty,urandom,zero"
    );
    if let Ok(host_link) = std::fs::read_link("/bin") {
        assert_eq!(
            seen["bin_link"],
            host_link.to_str().unwrap(),
            "symlinks stay symlinks"
        );
    }
    // The init is pid 1, the app pid 2: nothing of the host's.
    assert_eq!(seen["pids"], "1,2");
    assert_eq!(
        seen["passwd_app"],
        "app:x:1000:1000:application:/tmp:/bin/sh"
    );
    assert!(
        seen["hosts"].contains("127.0.0.1 localhost;"),
        "{}",
        seen["hosts"]
    );
    for (key, value) in &seen {
        if key.starts_with("exists_") {
            assert_eq!(value, "False", "{key} is reachable in the sandbox");
        }
    }
    for path in ["/x", "/usr/x", "/etc/x", "/dev/x", "/sys/x"] {
        assert_eq!(
            seen[&format!("write_{path}")],
            "Read-only file system",
            "{path}"
        );
    }
    assert_eq!(seen["write_/proc/x"], "No such file or directory");
    assert_eq!(seen["write_/tmp/x"], "ok");
    assert_eq!(seen["tmp_bytes"], (8 * 1024 * 1024).to_string());
    assert_eq!(seen["tmp_mode"], "0o1777");
    assert_eq!(
        seen["devices"],
        "null:1.3,zero:1.5,full:1.7,random:1.8,urandom:1.9,tty:5.0"
    );
    assert_eq!(seen["urandom_len"], "16");
    assert_eq!(
        seen["tty"], "No such device or address",
        "no controlling terminal"
    );
    // Only the sandbox's own kinds of mount (no overlay of the host's root, no cgroup, …).
    for kind in seen["mounts"].split(',') {
        assert!(
            [
                "tmpfs", "proc", "sysfs", "devtmpfs", "ext4", "overlay", "xfs", "btrfs",
                "virtiofs", "9p"
            ]
            .contains(&kind),
            "unexpected mount type {kind}"
        );
    }
}

/// A tmpfs mounted on the host for the duration of a test.
struct TmpfsMount(PathBuf);

impl TmpfsMount {
    fn new(path: PathBuf) -> Self {
        std::fs::create_dir_all(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        Self(path)
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn binds_appear_at_their_targets_with_their_modes() {
    require_root!();
    let scratch = Scratch::new();
    let input = scratch.path("input");
    std::fs::create_dir(&input).unwrap();
    std::fs::write(input.join("data.txt"), "publisher data\n").unwrap();
    let output = scratch.path("output");
    std::fs::create_dir(&output).unwrap();
    std::os::unix::fs::chown(&output, Some(1000), Some(1000)).unwrap();
    let tmpfs = TmpfsMount::new(scratch.path("tmpfs"));
    std::fs::write(tmpfs.0.join("on-tmpfs.txt"), "from a tmpfs\n").unwrap();
    std::os::unix::fs::chown(&tmpfs.0, Some(1000), Some(1000)).unwrap();
    let single = scratch.path("config.json");
    std::fs::write(&single, "{}\n").unwrap();
    std::fs::set_permissions(&single, std::fs::Permissions::from_mode(0o644)).unwrap();

    let script = r#"
        echo input=$(cat /mnt/remote/input/data.txt)
        echo input_write=$( (echo x > /mnt/remote/input/new.txt) 2>&1 | sed 's/.*: //')
        echo output_write=$(echo result > /mnt/remote/output/result.txt && echo ok)
        echo tmpfs=$(cat /mnt/scratch/on-tmpfs.txt)
        echo tmpfs_write=$(echo t > /mnt/scratch/by-app.txt && echo ok)
        echo tmpfs_owner=$(stat -c %u /mnt/scratch/by-app.txt)
        echo single=$(cat /tmp/config/config.json)
        echo single_write=$( (echo x > /tmp/config/config.json) 2>&1 | sed 's/.*: //')
    "#;
    let mut spec = scratch.spec("binds", &["sh", "-c", script]);
    spec.binds = vec![
        Bind {
            source: input.clone(),
            target: "/mnt/remote/input".into(),
            read_only: true,
        },
        Bind {
            source: output.clone(),
            target: "/mnt/remote/output".into(),
            read_only: false,
        },
        Bind {
            source: tmpfs.0.clone(),
            target: "/mnt/scratch".into(),
            read_only: false,
        },
        Bind {
            source: single,
            target: "/tmp/config/config.json".into(),
            read_only: true,
        },
    ];
    let (code, stdout, stderr) = run(spec);
    assert_eq!(code, 0, "{stderr}");
    let seen = key_values(&stdout);
    assert_eq!(seen["input"], "publisher data");
    assert_eq!(seen["input_write"], "Read-only file system");
    assert!(!input.join("new.txt").exists());
    assert_eq!(seen["output_write"], "ok");
    assert_eq!(
        std::fs::read_to_string(output.join("result.txt")).unwrap(),
        "result\n"
    );
    assert_eq!(seen["tmpfs"], "from a tmpfs");
    assert_eq!(seen["tmpfs_write"], "ok");
    assert_eq!(seen["tmpfs_owner"], "1000");
    assert_eq!(
        std::fs::read_to_string(tmpfs.0.join("by-app.txt")).unwrap(),
        "t\n"
    );
    assert_eq!(seen["single"], "{}");
    assert_eq!(seen["single_write"], "Read-only file system");
}

#[test]
fn the_init_reaps_orphans_and_forwards_signals() {
    require_root!();
    let scratch = Scratch::new();
    let script = r#"
import os, signal, sys, time
print(f"pid={os.getpid()}", flush=True)
print("init=" + open("/proc/1/comm").read().strip(), flush=True)
for private in ["/proc/1/environ", "/proc/1/mem", "/proc/1/root/"]:
    try:
        os.listdir(private) if private.endswith("/") else open(private, "rb").read(1)
        print(f"read_{private}=ok", flush=True)
    except OSError as e:
        print(f"read_{private}={e.strerror}", flush=True)
# An orphan: the grandchild outlives its parent and is reparented to the init, which must reap it.
if os.fork() == 0:
    if os.fork() == 0:
        time.sleep(0.2); os._exit(0)
    os._exit(0)
os.wait()
time.sleep(0.8)
states = [open(f"/proc/{p}/stat").read().split(")")[1].split()[0] for p in os.listdir("/proc") if p.isdigit()]
print("zombies=" + str(states.count("Z")), flush=True)
signal.signal(signal.SIGTERM, lambda *_: (print("got=SIGTERM", flush=True), sys.exit(7)))
print("ready=1", flush=True)
time.sleep(30)
"#;
    let spec = scratch.spec("signals", &["python3", "-c", script]);
    let log = spec.log_file.clone();
    let mut sandbox = Sandbox::spawn(spec).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !stream_text(&log, "stdout").contains("ready=1") {
        assert!(Instant::now() < deadline, "{:?}", log_entries(&log));
        assert_eq!(sandbox.try_wait().unwrap(), None);
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-TERM", &sandbox.pid().to_string()])
        .status();
    assert!(status.unwrap().success());
    assert_eq!(sandbox.wait().unwrap(), 7);
    let seen = key_values(&stream_text(&log, "stdout"));
    assert_eq!(seen["pid"], "2");
    assert_eq!(seen["init"], "sandbox-init");
    for private in ["/proc/1/environ", "/proc/1/mem", "/proc/1/root/"] {
        assert_eq!(
            seen[&format!("read_{private}")],
            "Permission denied",
            "{private}"
        );
    }
    assert_eq!(seen["zombies"], "0");
    assert_eq!(seen["got"], "SIGTERM");
}

#[test]
fn exit_codes_environment_and_the_log_file() {
    require_root!();
    let scratch = Scratch::new();
    let mut spec = scratch.spec(
        "logging",
        &[
            "sh",
            "-c",
            "env; echo to-stderr >&2; printf partial; exit 3",
        ],
    );
    spec.env = vec![
        ("PATH".into(), "/usr/bin:/bin".into()),
        ("GREETING".into(), "hello world".into()),
    ];
    std::fs::write(&spec.log_file, "").unwrap();
    let log = spec.log_file.clone();
    let (code, stdout, stderr) = run(spec);
    assert_eq!(code, 3);
    // `sh` adds PWD (and dash nothing else); the host's environment is absent.
    let vars: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("PWD=")).collect();
    assert_eq!(
        vars.iter().filter(|l| l.contains('=')).count(),
        2,
        "{stdout}"
    );
    assert!(vars.contains(&"GREETING=hello world"));
    assert!(vars.contains(&"PATH=/usr/bin:/bin"));
    assert!(stdout.ends_with("partial"), "{stdout:?}");
    assert_eq!(stderr, "to-stderr\n");
    let entries = log_entries(&log);
    let last_stdout = entries
        .iter()
        .rev()
        .find(|(stream, _)| stream == "stdout")
        .unwrap();
    assert_eq!(
        last_stdout.1, "partial",
        "an unterminated last line is its own entry"
    );

    // The log is appended to; a signal's exit code is 128 + the signal.
    let mut spec = scratch.spec("logging", &["sh", "-c", "echo second run; kill -TERM $$"]);
    spec.log_file = log.clone();
    let (code, stdout, _) = run(spec);
    assert_eq!(code, 128 + 15);
    assert!(
        stdout.starts_with("GREETING=") || stdout.contains("PATH="),
        "the first run's lines stay"
    );
    assert!(stdout.ends_with("partialsecond run\n"), "{stdout:?}");

    // `env` (coreutils) prints exactly the environment it was given.
    let mut spec = scratch.spec("exact-env", &["env"]);
    spec.env = vec![("PATH".into(), "/usr/bin".into()), ("A".into(), "1".into())];
    let (code, stdout, _) = run(spec);
    assert_eq!(code, 0);
    assert_eq!(stdout, "PATH=/usr/bin\nA=1\n");
}

#[test]
fn a_fork_bomb_stops_at_the_pid_limit() {
    require_root!();
    let scratch = Scratch::new();
    let script = r#"
import os, time
children = 0
try:
    for _ in range(200):
        if os.fork() == 0:
            time.sleep(30); os._exit(0)
        children += 1
    print("forks=unlimited")
except OSError as e:
    print(f"forks={children}"); print(f"errno={e.errno}")
"#;
    let mut spec = scratch.spec("forkbomb", &["python3", "-c", script]);
    spec.limits.pids = Some(16);
    let pids_dir = Path::new("/sys/fs/cgroup/pids");
    let (code, stdout, stderr) = run(spec);
    assert_eq!(code, 0, "{stderr}");
    let seen = key_values(&stdout);
    // 16 = the init + python + 14 children.
    assert_eq!(seen["forks"], "14", "{stdout}");
    assert_eq!(seen["errno"], libc_eagain().to_string());
    assert!(pids_dir.exists());
}

fn libc_eagain() -> i32 {
    11
}

#[test]
fn memory_past_the_limit_kills_the_app() {
    require_root!();
    let scratch = Scratch::new();
    let script = r#"
print("allocating", flush=True)
block = bytearray(256 * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1
print("survived", flush=True)
"#;
    let mut spec = scratch.spec("memory", &["python3", "-c", script]);
    spec.limits.memory_bytes = Some(64 * 1024 * 1024);
    let (code, stdout, _) = run(spec);
    assert_eq!(code, 128 + 9, "the OOM killer's SIGKILL: {stdout}");
    assert_eq!(stdout, "allocating\n");

    let mut spec = scratch.spec(
        "memory-ok",
        &[
            "python3",
            "-c",
            "b = bytearray(16 << 20); b[::4096] = b'1' * 4096; print('fits')",
        ],
    );
    spec.limits.memory_bytes = Some(64 * 1024 * 1024);
    let (code, stdout, stderr) = run(spec);
    assert_eq!((code, stdout.as_str()), (0, "fits\n"), "{stderr}");
}

#[test]
fn the_cpu_quota_throttles_the_app() {
    require_root!();
    let scratch = Scratch::new();
    let script = r#"
import time
start = time.monotonic()
while time.monotonic() - start < 1.0:
    pass
print(f"cpu={time.process_time():.3f}")
"#;
    let mut spec = scratch.spec("cpu", &["python3", "-c", script]);
    spec.limits.cpu_millicores = Some(200);
    let log = spec.log_file.clone();
    let mut sandbox = Sandbox::spawn(spec).unwrap();
    let quota = sandbox
        .cgroup_dirs()
        .iter()
        .find(|dir| dir.starts_with("/sys/fs/cgroup/cpu/") || dir.join("cpu.max").exists())
        .cloned()
        .unwrap();
    let written = std::fs::read_to_string(quota.join("cpu.cfs_quota_us"))
        .or_else(|_| std::fs::read_to_string(quota.join("cpu.max")))
        .unwrap();
    assert!(written.starts_with("20000"), "{written}");
    assert_eq!(sandbox.wait().unwrap(), 0);
    drop(sandbox);
    let seen = key_values(&stream_text(&log, "stdout"));
    let cpu: f64 = seen["cpu"].parse().unwrap();
    // One second of busy wall time at 0.2 CPU: about 0.2 s of CPU (python's start-up included).
    assert!(
        cpu < 0.45,
        "the app used {cpu} s of CPU in 1 s at 200 millicores"
    );
}

/// Host pids whose PID namespace is `namespace`.
fn processes_in(namespace: &Path) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/pid"))
                .ok()
                .as_deref()
                == Some(namespace)
        })
        .collect()
}

#[test]
fn kill_stops_everything_inside_quickly() {
    require_root!();
    let scratch = Scratch::new();
    let script = "trap '' TERM INT HUP; sleep 1000 & sleep 1000 & (trap '' TERM; sleep 1000) & echo started; wait";
    let spec = scratch.spec("killme", &["sh", "-c", script]);
    let log = spec.log_file.clone();
    let mut sandbox = Sandbox::spawn(spec).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !stream_text(&log, "stdout").contains("started") {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let namespace = std::fs::read_link(format!("/proc/{}/ns/pid", sandbox.pid())).unwrap();
    let inside = processes_in(&namespace);
    assert!(inside.len() >= 5, "init, sh and three sleeps: {inside:?}");
    // SIGTERM is forwarded and ignored: the sandbox keeps running.
    Command::new("kill")
        .args(["-TERM", &sandbox.pid().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(sandbox.try_wait().unwrap(), None);
    let started = Instant::now();
    sandbox.kill().unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "kill took {took:?}");
    assert_eq!(sandbox.try_wait().unwrap(), Some(128 + 9));
    assert_eq!(processes_in(&namespace), Vec::<u32>::new());
    let cgroups = sandbox.cgroup_dirs().to_vec();
    drop(sandbox);
    assert!(cgroups.iter().all(|dir| !dir.exists()));
}

#[test]
fn dropping_a_running_sandbox_cleans_up() {
    require_root!();
    let scratch = Scratch::new();
    let mut spec = scratch.spec("dropped", &["sleep", "1000"]);
    spec.limits = Limits {
        memory_bytes: Some(32 << 20),
        cpu_millicores: Some(500),
        pids: Some(8),
        tmp_bytes: None,
    };
    let work_dir = spec.work_dir.clone();
    let sandbox = Sandbox::spawn(spec).unwrap();
    let pid = sandbox.pid();
    let cgroups = sandbox.cgroup_dirs().to_vec();
    assert_eq!(cgroups.len(), 3, "{cgroups:?}");
    for dir in &cgroups {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        assert_eq!(
            procs.lines().count(),
            2,
            "the init and the app in {}",
            dir.display()
        );
        assert!(procs.lines().any(|line| line == pid.to_string()));
    }
    drop(sandbox);
    assert!(cgroups.iter().all(|dir| !dir.exists()));
    assert!(!work_dir.exists());
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn setup_failures_are_reported_and_leave_nothing() {
    require_root!();
    let scratch = Scratch::new();
    let mut spec = scratch.spec("missing", &["no-such-program", "arg"]);
    spec.limits.pids = Some(8);
    let work_dir = spec.work_dir.clone();
    match Sandbox::spawn(spec) {
        Err(SandboxError::Exec { program, source }) => {
            assert_eq!(program, "no-such-program");
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
    assert!(!work_dir.exists());
    let self_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let prefix = format!("missing-{}-", std::process::id());
    let mut leftovers = Vec::new();
    for controller in ["memory", "cpu", "pids"] {
        let own = self_cgroup
            .lines()
            .filter_map(|line| {
                let mut fields = line.splitn(3, ':');
                Some((fields.nth(1)?, fields.next()?))
            })
            .find(|(controllers, _)| controllers.split(',').any(|c| c == controller))
            .map(|(_, path)| path.trim_start_matches('/').to_owned())
            .unwrap_or_default();
        let group = Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(own)
            .join("encfs-cleanroom");
        for entry in std::fs::read_dir(&group).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                leftovers.push(entry.path());
            }
        }
    }
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The host's programs outside the system directories are not there (pyenv's python is in
    // /root), and a bind source that does not exist is named.
    let mut spec = scratch.spec("bad-bind", &["true"]);
    spec.binds.push(Bind {
        source: scratch.path("absent"),
        target: "/mnt/in".into(),
        read_only: true,
    });
    match Sandbox::spawn(spec) {
        Err(SandboxError::InvalidSpec {
            field: "binds",
            reason,
        }) => assert!(reason.contains("absent"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let spec = scratch.spec("root-work", &["true"]);
    std::fs::create_dir(&spec.work_dir).unwrap();
    std::fs::write(spec.work_dir.join("keep.txt"), "mine").unwrap();
    let kept = spec.work_dir.join("keep.txt");
    assert!(matches!(
        Sandbox::spawn(spec),
        Err(SandboxError::InvalidSpec {
            field: "work_dir",
            ..
        })
    ));
    assert!(kept.exists(), "a non-empty work dir is never touched");
}

/// Time from `Sandbox::spawn` to the app's first instruction: the app prints the wall clock
/// (`date +%s%N`, the same clock on both sides of the namespaces) as its first act.
#[test]
fn startup_latency() {
    require_root!();
    let scratch = Scratch::new();
    let mut samples = Vec::new();
    for run_number in 0..20 {
        let mut spec = scratch.spec(&format!("latency-{run_number}"), &["date", "+%s%N"]);
        spec.limits = Limits {
            memory_bytes: Some(256 << 20),
            cpu_millicores: Some(1000),
            pids: Some(64),
            tmp_bytes: None,
        };
        let log = spec.log_file.clone();
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let mut sandbox = Sandbox::spawn(spec).unwrap();
        assert_eq!(sandbox.wait().unwrap(), 0);
        drop(sandbox);
        let printed: u128 = stream_text(&log, "stdout").trim().parse().unwrap();
        samples.push(Duration::from_nanos((printed - before) as u64));
    }
    samples.sort();
    let median = samples[samples.len() / 2];
    eprintln!(
        "sandbox spawn -> first instruction over 20 runs: median {median:?}, min {:?}, max {:?}",
        samples[0],
        samples[samples.len() - 1]
    );
    assert!(median < Duration::from_secs(1), "median {median:?}");
}

#[test]
fn reading_a_log_file_that_grows_while_the_app_runs() {
    require_root!();
    let scratch = Scratch::new();
    let spec = scratch.spec(
        "chatty",
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done",
        ],
    );
    let log = spec.log_file.clone();
    let (code, stdout, _) = run(spec);
    assert_eq!(code, 0);
    assert_eq!(stdout.lines().count(), 2000);
    assert_eq!(stdout.lines().last(), Some("line 1999"));
    let mut raw = String::new();
    std::fs::File::open(&log)
        .unwrap()
        .read_to_string(&mut raw)
        .unwrap();
    assert_eq!(raw.lines().count(), 2000, "one JSON object per line");
}

/// Set in the helper process of [`a_sandbox_dies_with_its_parent`].
const ORPHAN_HELPER: &str = "ENCFS_SANDBOX_ORPHAN_HELPER";

/// When the process holding a `Sandbox` dies without dropping it (SIGKILL, a crash), the init
/// sees its lifeline pipe close and takes the app down with it: nothing keeps running unowned.
#[test]
fn a_sandbox_dies_with_its_parent() {
    require_root!();
    if let Ok(dir) = std::env::var(ORPHAN_HELPER) {
        // The helper: start a sandbox, say where it is, and wait to be killed.
        let scratch_dir = PathBuf::from(dir);
        let mut spec = Scratch::new().spec("orphan", &["sleep", "1000"]);
        spec.work_dir = scratch_dir.join("orphan-root");
        spec.log_file = scratch_dir.join("orphan.log");
        spec.limits.pids = Some(8);
        let sandbox = Sandbox::spawn(spec).unwrap();
        for dir in sandbox.cgroup_dirs() {
            println!("cgroup={}", dir.display());
        }
        println!("init={}", sandbox.pid());
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let scratch = Scratch::new();
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_sandbox_dies_with_its_parent", "--nocapture"])
        .env(ORPHAN_HELPER, scratch.dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut output = std::io::BufReader::new(helper.stdout.take().unwrap());
    let (mut init, mut cgroups) = (None, Vec::new());
    while init.is_none() {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut output, &mut line).unwrap() == 0 {
            let _ = helper.kill();
            panic!("the helper ended before starting its sandbox");
        }
        if let Some(pid) = line.trim().strip_prefix("init=") {
            init = Some(pid.parse::<u32>().unwrap());
        } else if let Some(dir) = line.trim().strip_prefix("cgroup=") {
            cgroups.push(PathBuf::from(dir));
        }
    }
    let init = init.unwrap();
    let namespace = std::fs::read_link(format!("/proc/{init}/ns/pid")).unwrap();
    assert_eq!(processes_in(&namespace).len(), 2, "the init and sleep");
    helper.kill().unwrap();
    helper.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_in(&namespace).is_empty() {
        assert!(Instant::now() < deadline, "the sandbox outlived its parent");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Nobody dropped the Sandbox: its cgroups and work dir are left for the caller's cleanup.
    for dir in cgroups {
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&dir).is_err() && dir.exists() {
            assert!(Instant::now() < deadline, "{} stays busy", dir.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = std::fs::remove_dir(scratch.path("orphan-root"));
}

/// Sandboxes spawned at once from several threads while another thread allocates non-stop: the
/// clone of a busy multi-threaded process must neither deadlock (no allocation or lock after
/// clone) nor hang on a status pipe another sandbox's init inherited.
#[test]
fn concurrent_spawns_from_many_threads() {
    require_root!();
    let scratch = std::sync::Arc::new(Scratch::new());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let allocator = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                kept.push(vec![1u8; 4096]);
                if kept.len() > 1024 {
                    kept.clear();
                }
            }
        })
    };
    // Threads starting and ending all the time: glibc holds its thread-list lock meanwhile.
    let churn = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::spawn(|| std::hint::black_box(vec![0u8; 64 * 1024]))
                    .join()
                    .unwrap();
            }
        })
    };
    // A deadlock would hang the test, and the stuck inits with it: fail fast instead.
    let watchdog = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if Instant::now() > deadline {
                    eprintln!("concurrent spawns deadlocked");
                    std::process::abort();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let started = Instant::now();
    let workers: Vec<_> = (0..6)
        .map(|worker| {
            let scratch = scratch.clone();
            std::thread::spawn(move || {
                for round in 0..4 {
                    let name = format!("concurrent-{worker}-{round}");
                    let mut spec = scratch.spec(&name, &["sh", "-c", "echo $(hostname)"]);
                    spec.limits.pids = Some(8);
                    let log = spec.log_file.clone();
                    let mut sandbox = Sandbox::spawn(spec).unwrap();
                    assert_eq!(sandbox.wait().unwrap(), 0);
                    drop(sandbox);
                    assert_eq!(stream_text(&log, "stdout"), format!("{name}\n"));
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    allocator.join().unwrap();
    churn.join().unwrap();
    watchdog.join().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}
