//! The setup plan: every system call the sandbox's init makes between `clone` and the app's
//! `execve`, computed up front in the parent.
//!
//! After `clone` the child is a copy of a possibly multi-threaded process: another thread may have
//! held the allocator's lock at that instant, so the child must not allocate. Everything it needs —
//! paths as `CString`s, file contents, the argv and environment, the candidate paths of argv\[0\] on
//! the sandbox's `PATH` — is therefore built here, as plain data the child walks. Keeping the plan
//! data also makes it testable without namespaces and lets an error from the child (a step index
//! and an errno) be reported with the step's description.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::{Bind, SandboxError, SandboxSpec};

/// `/tmp`'s size when the spec gives none: tmpfs pages count against the memory limit as well.
pub const DEFAULT_TMP_BYTES: u64 = 256 * 1024 * 1024;

/// The new root is a tmpfs holding only mount points and the generated `/etc`; it is read-only by
/// the time the app starts, so a few MiB are plenty.
const ROOT_TMPFS_OPTIONS: &str = "mode=0755,size=8m,nr_inodes=4096";

/// The host's system directories the programs need, bound read-only (or re-created as the same
/// symlink where the host has a symlink, as merged-/usr systems do for `/bin`, `/lib`, …).
pub const SYSTEM_DIRECTORIES: [&str; 5] = ["/usr", "/bin", "/lib", "/lib64", "/sbin"];

/// The device nodes the sandbox gets, each a bind of the host's node onto an empty file.
pub const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Top-level names of the sandbox's own tree: a bind target may not be (or be under) one of them.
const RESERVED_TOP_DIRECTORIES: [&str; 9] = [
    "bin", "dev", "etc", "lib", "lib64", "proc", "sbin", "sys", "usr",
];

/// `PATH` for the argv\[0\] lookup when the spec's environment has none (it is not added to the
/// environment).
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// One system call (or a short fixed sequence) of the init's setup.
#[derive(Debug)]
pub enum Step {
    /// Write `contents` into an existing file (`cgroup.procs`).
    WriteExisting { path: CString, contents: CString },
    /// `unshare(CLONE_NEWCGROUP)`, after the cgroups are joined, so they are the app's `/`.
    UnshareCgroupNamespace,
    /// `sethostname` in the new UTS namespace.
    SetHostname(CString),
    /// Bring the new network namespace's `lo` up (`SIOCSIFFLAGS`).
    LoopbackUp,
    /// Make every mount of the new mount namespace private, so nothing propagates either way.
    MakeMountsPrivate,
    /// `mount(2)`.
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    /// `mount_setattr(2)`: add `MOUNT_ATTR_*` flags (read-only, nosuid, …) to a mount, or to the
    /// whole tree below it when `recursive` (plain `MS_REMOUNT` is never recursive).
    SetMountAttributes {
        target: CString,
        set: u64,
        recursive: bool,
    },
    /// `mkdir(2)` with an explicit mode (the init runs with umask 0).
    Mkdir { path: CString, mode: libc::mode_t },
    /// `symlink(2)`: `path` → `link_target`.
    Symlink { link_target: CString, path: CString },
    /// Create a new file (`O_EXCL`) with these contents.
    CreateFile {
        path: CString,
        mode: libc::mode_t,
        contents: Vec<u8>,
    },
    /// `pivot_root(".", ".")` in the new root, then detach the old root.
    PivotRoot { new_root: CString },
}

/// A step and what it does, in words, for the error the parent reports if it fails.
#[derive(Debug)]
pub struct PlannedStep {
    pub step: Step,
    pub description: String,
}

/// What the app's process does after the init forks it: the identity it drops to and the exec.
#[derive(Debug)]
pub struct AppLaunch {
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    /// The paths tried in order for argv\[0\] (one when it contains a `/`).
    pub candidates: Vec<CString>,
    pub uid: u32,
    pub gid: u32,
    /// `"<uid> <uid> 1"`: the app's uid is the same number inside and outside its user namespace.
    pub uid_map: CString,
    pub gid_map: CString,
    /// The highest capability number of the running kernel, for the bounding-set drop.
    pub last_capability: u32,
}

/// The whole setup: the init's steps in order, then the app's launch.
#[derive(Debug)]
pub struct SetupPlan {
    pub steps: Vec<PlannedStep>,
    pub app: AppLaunch,
}

/// What the plan needs to know of the host; gathered by [`HostLayout::probe`], given by tests.
#[derive(Debug, Clone)]
pub struct HostLayout {
    /// Each system directory present on the host, with its symlink target if it is a symlink.
    pub system_directories: Vec<(String, Option<PathBuf>)>,
    /// Whether each bind source (in spec order) is a directory (else a file is the mount point).
    pub bind_source_is_directory: Vec<bool>,
    pub last_capability: u32,
}

impl HostLayout {
    /// Looks at this machine: which system directories exist (and which are symlinks), what kind
    /// each bind source is, and the kernel's last capability.
    pub fn probe(spec: &SandboxSpec) -> Result<Self, SandboxError> {
        let mut system_directories = Vec::new();
        for dir in SYSTEM_DIRECTORIES {
            match std::fs::symlink_metadata(dir) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    let target = std::fs::read_link(dir).map_err(|source| SandboxError::Host {
                        what: "reading the symlink",
                        path: dir.into(),
                        source,
                    })?;
                    system_directories.push((dir.to_owned(), Some(target)));
                }
                Ok(meta) if meta.is_dir() => system_directories.push((dir.to_owned(), None)),
                _ => {}
            }
        }
        let mut bind_source_is_directory = Vec::new();
        for (index, bind) in spec.binds.iter().enumerate() {
            let meta =
                std::fs::metadata(&bind.source).map_err(|source| SandboxError::InvalidSpec {
                    field: "binds",
                    reason: format!("binds[{index}].source {}: {source}", bind.source.display()),
                })?;
            bind_source_is_directory.push(meta.is_dir());
        }
        let last_capability = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(63);
        Ok(Self {
            system_directories,
            bind_source_is_directory,
            last_capability,
        })
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> SandboxError {
    SandboxError::InvalidSpec {
        field,
        reason: reason.into(),
    }
}

/// Checks the spec before anything is created: every field the sandbox cannot honour is named.
pub fn validate(spec: &SandboxSpec) -> Result<(), SandboxError> {
    let name = &spec.name;
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !name_ok {
        return Err(invalid(
            "name",
            format!(
                "{name:?} must be 1 to 63 characters of A-Z a-z 0-9 - _ . (it is the hostname and \
                 the cgroup's name), not starting with . or -"
            ),
        ));
    }
    if spec.command.is_empty() || spec.command[0].is_empty() {
        return Err(invalid("command", "the command is empty"));
    }
    if let Some(arg) = spec.command.iter().find(|arg| arg.contains('\0')) {
        return Err(invalid(
            "command",
            format!("argument {arg:?} contains a NUL byte"),
        ));
    }
    let mut keys = std::collections::BTreeSet::new();
    for (key, value) in &spec.env {
        if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
            return Err(invalid(
                "env",
                format!("{key:?}: a name must be non-empty without = or NUL, a value without NUL"),
            ));
        }
        if !keys.insert(key.as_str()) {
            return Err(invalid("env", format!("{key:?} is given twice")));
        }
    }
    if spec.uid == 0 || spec.gid == 0 {
        return Err(invalid(
            "uid/gid",
            "the app may not run as uid or gid 0 (it would be root in its user namespace)",
        ));
    }
    let limits = &spec.limits;
    if limits
        .memory_bytes
        .is_some_and(|bytes| bytes < 4 * 1024 * 1024)
    {
        return Err(invalid("limits.memory_bytes", "below 4 MiB nothing starts"));
    }
    if limits
        .cpu_millicores
        .is_some_and(|millicores| millicores < 10)
    {
        return Err(invalid(
            "limits.cpu_millicores",
            "below 10 millicores (the kernel's smallest CFS quota, 1 ms per 100 ms)",
        ));
    }
    if limits.pids.is_some_and(|pids| pids < 2) {
        return Err(invalid(
            "limits.pids",
            "at least 2: the sandbox's init and the app",
        ));
    }
    if limits.tmp_bytes.is_some_and(|bytes| bytes < 4096) {
        return Err(invalid("limits.tmp_bytes", "at least one page"));
    }
    if !spec.work_dir.is_absolute() {
        return Err(invalid(
            "work_dir",
            format!("{} is not an absolute path", spec.work_dir.display()),
        ));
    }
    for (index, bind) in spec.binds.iter().enumerate() {
        validate_bind(index, bind)?;
        for (other_index, other) in spec.binds.iter().enumerate().take(index) {
            if bind.target.starts_with(&other.target) || other.target.starts_with(&bind.target) {
                return Err(invalid(
                    "binds",
                    format!(
                        "binds[{index}].target {} overlaps binds[{other_index}].target {}",
                        bind.target.display(),
                        other.target.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn validate_bind(index: usize, bind: &Bind) -> Result<(), SandboxError> {
    if !bind.source.is_absolute() {
        return Err(invalid(
            "binds",
            format!(
                "binds[{index}].source {} is not absolute",
                bind.source.display()
            ),
        ));
    }
    let target = &bind.target;
    let normal = target.is_absolute()
        && target
            .components()
            .skip(1)
            .all(|c| matches!(c, Component::Normal(_)))
        && target.components().count() > 1;
    if !normal || target.as_os_str().as_bytes().contains(&0) {
        return Err(invalid(
            "binds",
            format!(
                "binds[{index}].target {} must be an absolute path below / without . or ..",
                target.display()
            ),
        ));
    }
    let top = target
        .components()
        .nth(1)
        .map(|c| c.as_os_str())
        .unwrap_or_default();
    if RESERVED_TOP_DIRECTORIES
        .iter()
        .any(|reserved| OsStr::new(reserved) == top)
        || target == Path::new("/tmp")
    {
        return Err(invalid(
            "binds",
            format!(
                "binds[{index}].target {} is inside the sandbox's own tree ({}, /tmp itself)",
                target.display(),
                RESERVED_TOP_DIRECTORIES.map(|d| format!("/{d}")).join(" ")
            ),
        ));
    }
    Ok(())
}

fn c_path(path: &Path) -> CString {
    // Every path here is validated or generated without NUL bytes.
    CString::new(path.as_os_str().as_bytes()).expect("paths are checked for NUL bytes")
}

fn c_string(text: &str) -> CString {
    CString::new(text).expect("strings are checked for NUL bytes")
}

/// A path inside the new root `root`, from an absolute sandbox path.
fn inside(root: &Path, sandbox_path: &Path) -> PathBuf {
    root.join(sandbox_path.strip_prefix("/").unwrap_or(sandbox_path))
}

struct PlanBuilder {
    steps: Vec<PlannedStep>,
}

impl PlanBuilder {
    fn push(&mut self, step: Step, description: String) {
        self.steps.push(PlannedStep { step, description });
    }

    fn mkdir(&mut self, path: &Path, mode: libc::mode_t, shown: &Path) {
        self.push(
            Step::Mkdir {
                path: c_path(path),
                mode,
            },
            format!("create the directory {}", shown.display()),
        );
    }

    fn bind(&mut self, source: &Path, target: &Path, shown: &Path, read_only: bool) {
        self.push(
            Step::Mount {
                source: Some(c_path(source)),
                target: c_path(target),
                fstype: None,
                flags: libc::MS_BIND | libc::MS_REC,
                data: None,
            },
            format!("bind {} at {}", source.display(), shown.display()),
        );
        let mut set = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
        if read_only {
            set |= libc::MOUNT_ATTR_RDONLY;
        }
        self.push(
            Step::SetMountAttributes {
                target: c_path(target),
                set,
                recursive: true,
            },
            format!(
                "make {} {}nosuid, nodev",
                shown.display(),
                if read_only { "read-only, " } else { "" }
            ),
        );
    }

    fn tmpfs(&mut self, target: &Path, flags: libc::c_ulong, options: &str, shown: &Path) {
        self.push(
            Step::Mount {
                source: Some(c_string("tmpfs")),
                target: c_path(target),
                fstype: Some(c_string("tmpfs")),
                flags,
                data: Some(c_string(options)),
            },
            format!("mount a tmpfs ({options}) at {}", shown.display()),
        );
    }

    fn file(&mut self, path: &Path, mode: libc::mode_t, contents: Vec<u8>, shown: &Path) {
        self.push(
            Step::CreateFile {
                path: c_path(path),
                mode,
                contents,
            },
            format!("create {}", shown.display()),
        );
    }
}

/// The generated `/etc`: the app's user and group, root and nobody (the names of unmapped ids),
/// loopback host names, and an nsswitch.conf that keeps the C library on these files.
pub fn etc_files(spec: &SandboxSpec) -> Vec<(&'static str, String)> {
    let (uid, gid, name) = (spec.uid, spec.gid, &spec.name);
    vec![
        (
            "passwd",
            format!(
                "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n\
                 app:x:{uid}:{gid}:application:/tmp:/bin/sh\n\
                 nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
        ),
        (
            "group",
            format!("root:x:0:\napp:x:{gid}:\nnogroup:x:65534:\n"),
        ),
        (
            "hosts",
            format!("127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{name}\n"),
        ),
        ("hostname", format!("{name}\n")),
        (
            "nsswitch.conf",
            "passwd: files\ngroup: files\nhosts: files\n".to_owned(),
        ),
    ]
}

/// Builds the plan for `spec` on a host laid out as `host`, joining the cgroups whose
/// `cgroup.procs` files are `cgroup_procs`. `spec` must have passed [`validate`].
pub fn build(spec: &SandboxSpec, host: &HostLayout, cgroup_procs: &[PathBuf]) -> SetupPlan {
    let root = spec.work_dir.as_path();
    let mut plan = PlanBuilder { steps: Vec::new() };

    for procs in cgroup_procs {
        plan.push(
            Step::WriteExisting {
                path: c_path(procs),
                contents: c_string("0"),
            },
            format!(
                "join the cgroup {}",
                procs.parent().unwrap_or(procs).display()
            ),
        );
    }
    plan.push(
        Step::UnshareCgroupNamespace,
        "enter a new cgroup namespace".into(),
    );
    plan.push(
        Step::SetHostname(c_string(&spec.name)),
        format!("set the hostname {}", spec.name),
    );
    plan.push(Step::LoopbackUp, "bring lo up".into());
    plan.push(Step::MakeMountsPrivate, "make all mounts private".into());
    plan.tmpfs(
        root,
        libc::MS_NOSUID | libc::MS_NODEV,
        ROOT_TMPFS_OPTIONS,
        Path::new("/"),
    );

    for (dir, symlink) in &host.system_directories {
        let dir = Path::new(dir);
        let target = inside(root, dir);
        match symlink {
            Some(link_target) => plan.push(
                Step::Symlink {
                    link_target: c_path(link_target),
                    path: c_path(&target),
                },
                format!(
                    "create the symlink {} -> {}",
                    dir.display(),
                    link_target.display()
                ),
            ),
            None => {
                plan.mkdir(&target, 0o755, dir);
                plan.bind(dir, &target, dir, true);
            }
        }
    }

    let etc = Path::new("/etc");
    plan.mkdir(&inside(root, etc), 0o755, etc);
    for (name, contents) in etc_files(spec) {
        let shown = etc.join(name);
        plan.file(&inside(root, &shown), 0o644, contents.into_bytes(), &shown);
    }

    let proc_dir = Path::new("/proc");
    plan.mkdir(&inside(root, proc_dir), 0o555, proc_dir);
    plan.push(
        Step::Mount {
            source: Some(c_string("proc")),
            target: c_path(&inside(root, proc_dir)),
            fstype: Some(c_string("proc")),
            flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            data: None,
        },
        "mount the PID namespace's proc at /proc".into(),
    );
    let sys_dir = Path::new("/sys");
    plan.mkdir(&inside(root, sys_dir), 0o555, sys_dir);
    plan.push(
        Step::Mount {
            source: Some(c_string("sysfs")),
            target: c_path(&inside(root, sys_dir)),
            fstype: Some(c_string("sysfs")),
            flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY,
            data: None,
        },
        "mount the network namespace's sysfs at /sys (read-only)".into(),
    );

    let dev = Path::new("/dev");
    let dev_inside = inside(root, dev);
    plan.mkdir(&dev_inside, 0o755, dev);
    plan.tmpfs(
        &dev_inside,
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "mode=0755,size=64k",
        dev,
    );
    for device in DEVICES {
        let shown = dev.join(device);
        let target = inside(root, &shown);
        plan.file(&target, 0o666, Vec::new(), &shown);
        plan.push(
            Step::Mount {
                source: Some(c_path(&shown)),
                target: c_path(&target),
                fstype: None,
                flags: libc::MS_BIND,
                data: None,
            },
            format!("bind the host's {} at {}", shown.display(), shown.display()),
        );
        plan.push(
            Step::SetMountAttributes {
                target: c_path(&target),
                set: libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NOEXEC,
                recursive: false,
            },
            format!("make {} nosuid, noexec", shown.display()),
        );
    }
    for (link, link_target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let shown = dev.join(link);
        plan.push(
            Step::Symlink {
                link_target: c_string(link_target),
                path: c_path(&inside(root, &shown)),
            },
            format!("create the symlink {} -> {link_target}", shown.display()),
        );
    }
    plan.push(
        Step::SetMountAttributes {
            target: c_path(&dev_inside),
            set: libc::MOUNT_ATTR_RDONLY,
            recursive: false,
        },
        "make /dev read-only".into(),
    );

    let tmp = Path::new("/tmp");
    let tmp_bytes = spec.limits.tmp_bytes.unwrap_or(DEFAULT_TMP_BYTES);
    plan.mkdir(&inside(root, tmp), 0o755, tmp);
    plan.tmpfs(
        &inside(root, tmp),
        libc::MS_NOSUID | libc::MS_NODEV,
        &format!("mode=1777,size={tmp_bytes}"),
        tmp,
    );

    let mut created = std::collections::BTreeSet::new();
    for (index, bind) in spec.binds.iter().enumerate() {
        let target = &bind.target;
        // Parents of the mount point, in the sandbox's own tmpfs (targets never nest, so none of
        // these lies in another bind: nothing is created on a host filesystem).
        let ancestors: Vec<&Path> = target
            .ancestors()
            .skip(1)
            .filter(|a| a.parent().is_some())
            .collect();
        for ancestor in ancestors.into_iter().rev() {
            if ancestor == tmp || !created.insert(ancestor.to_owned()) {
                continue;
            }
            let path = inside(root, ancestor);
            plan.push(
                Step::Mkdir {
                    path: c_path(&path),
                    mode: 0o755,
                },
                format!("create the directory {}", ancestor.display()),
            );
        }
        let mount_point = inside(root, target);
        if host
            .bind_source_is_directory
            .get(index)
            .copied()
            .unwrap_or(true)
        {
            plan.mkdir(&mount_point, 0o755, target);
        } else {
            plan.file(&mount_point, 0o644, Vec::new(), target);
        }
        plan.bind(&bind.source, &mount_point, target, bind.read_only);
    }

    plan.push(
        Step::SetMountAttributes {
            target: c_path(root),
            set: libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
            recursive: false,
        },
        "make the new root read-only".into(),
    );
    plan.push(
        Step::PivotRoot {
            new_root: c_path(root),
        },
        format!("pivot_root into {} and detach the old root", root.display()),
    );

    let path_variable = spec
        .env
        .iter()
        .find(|(key, _)| key == "PATH")
        .map(|(_, value)| value.as_str())
        .unwrap_or(DEFAULT_PATH);
    let program = &spec.command[0];
    let candidates = if program.contains('/') {
        vec![c_string(program)]
    } else {
        path_variable
            .split(':')
            .map(|dir| if dir.is_empty() { "." } else { dir })
            .map(|dir| c_string(&format!("{}/{program}", dir.trim_end_matches('/'))))
            .collect()
    };
    let app = AppLaunch {
        argv: spec.command.iter().map(|arg| c_string(arg)).collect(),
        env: spec
            .env
            .iter()
            .map(|(key, value)| c_string(&format!("{key}={value}")))
            .collect(),
        candidates,
        uid: spec.uid,
        gid: spec.gid,
        uid_map: c_string(&format!("{0} {0} 1", spec.uid)),
        gid_map: c_string(&format!("{0} {0} 1", spec.gid)),
        last_capability: host.last_capability,
    };
    SetupPlan {
        steps: plan.steps,
        app,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::Limits;

    fn spec() -> SandboxSpec {
        SandboxSpec {
            name: "demo-app".into(),
            command: vec!["python3".into(), "-c".into(), "print(1)".into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            binds: vec![Bind {
                source: "/srv/data".into(),
                target: "/mnt/remote/input".into(),
                read_only: true,
            }],
            uid: 1000,
            gid: 1000,
            limits: Limits::default(),
            log_file: "/var/log/demo-app.log".into(),
            work_dir: "/run/sandbox/demo-app".into(),
        }
    }

    fn host() -> HostLayout {
        HostLayout {
            system_directories: vec![
                ("/usr".into(), None),
                ("/bin".into(), Some("usr/bin".into())),
            ],
            bind_source_is_directory: vec![true],
            last_capability: 40,
        }
    }

    fn descriptions(plan: &SetupPlan) -> Vec<&str> {
        plan.steps.iter().map(|s| s.description.as_str()).collect()
    }

    #[test]
    fn the_plan_mounts_in_a_safe_order() {
        let plan = build(
            &spec(),
            &host(),
            &["/sys/fs/cgroup/pids/x/cgroup.procs".into()],
        );
        let steps = descriptions(&plan);
        let position = |needle: &str| {
            steps
                .iter()
                .position(|s| s.contains(needle))
                .unwrap_or_else(|| panic!("{needle}"))
        };
        // Cgroups are joined while the host's /sys is still there; the root goes read-only only
        // after every mount point exists; pivot_root is last.
        assert_eq!(position("join the cgroup"), 0);
        assert!(position("make all mounts private") < position("mount a tmpfs"));
        assert!(position("bind /usr at /usr") < position("make the new root read-only"));
        assert!(position("bind /srv/data at /mnt/remote/input") < position("make the new root"));
        assert_eq!(position("pivot_root"), steps.len() - 1);
        assert!(steps.contains(&"create the symlink /bin -> usr/bin"));
        assert!(steps.contains(&"make /mnt/remote/input read-only, nosuid, nodev"));
        assert!(steps.contains(&"create the directory /mnt/remote"));
        assert!(steps.contains(&"create the directory /mnt"));
    }

    #[test]
    fn argv0_is_looked_up_on_the_sandbox_path() {
        let plan = build(&spec(), &host(), &[]);
        let candidates: Vec<_> = plan
            .app
            .candidates
            .iter()
            .map(|c| c.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(candidates, ["/usr/bin/python3", "/bin/python3"]);
        let mut absolute = spec();
        absolute.command[0] = "/opt/app/run".into();
        let plan = build(&absolute, &host(), &[]);
        assert_eq!(plan.app.candidates, [c_string("/opt/app/run")]);
        assert_eq!(plan.app.env, [c_string("PATH=/usr/bin:/bin")]);
        assert_eq!(plan.app.uid_map, c_string("1000 1000 1"));
    }

    #[test]
    fn bad_specs_name_their_field() {
        let field = |edit: fn(&mut SandboxSpec)| {
            let mut spec = spec();
            edit(&mut spec);
            match validate(&spec) {
                Err(SandboxError::InvalidSpec { field, .. }) => field,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(field(|s| s.name = "a/b".into()), "name");
        assert_eq!(field(|s| s.command.clear()), "command");
        assert_eq!(field(|s| s.env.push(("PATH".into(), "/x".into()))), "env");
        assert_eq!(field(|s| s.uid = 0), "uid/gid");
        assert_eq!(field(|s| s.binds[0].target = "mnt/x".into()), "binds");
        assert_eq!(field(|s| s.binds[0].target = "/mnt/../etc".into()), "binds");
        assert_eq!(field(|s| s.binds[0].target = "/proc/x".into()), "binds");
        assert_eq!(field(|s| s.binds[0].target = "/tmp".into()), "binds");
        assert_eq!(
            field(|s| s.binds.push(Bind {
                source: "/srv".into(),
                target: "/mnt/remote".into(),
                read_only: false
            })),
            "binds"
        );
        assert_eq!(field(|s| s.limits.pids = Some(1)), "limits.pids");
        assert_eq!(field(|s| s.work_dir = "relative".into()), "work_dir");
        let mut under_tmp = spec();
        under_tmp.binds[0].target = "/tmp/input".into();
        validate(&under_tmp).unwrap();
    }
}
