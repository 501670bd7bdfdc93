//! The sandbox's cgroups: memory, CPU and process-count limits, with whichever cgroup version the
//! machine mounts.
//!
//! * **v1** (these machines: one hierarchy per controller at `/sys/fs/cgroup/<controller>`): one
//!   leaf per controller, `<mount>/<this process's cgroup>/encfs-cleanroom/<leaf>`, so the
//!   sandbox stays under whatever limits the caller already has. Files: `memory.limit_in_bytes`
//!   (and `memory.memsw.limit_in_bytes` to the same value where swap accounting exists, so swap
//!   is no way around the limit), `cpu.cfs_period_us` = 100 ms / `cpu.cfs_quota_us` =
//!   millicores × 100 µs, `pids.max`.
//! * **v2** (`/sys/fs/cgroup/cgroup.controllers` exists): one leaf
//!   `/sys/fs/cgroup/encfs-cleanroom/<leaf>` with the controllers enabled on the way down (under
//!   the root, because v2 forbids enabling controllers below a cgroup that holds processes, as the
//!   caller's own cgroup usually does). Files: `memory.max`, `memory.swap.max` = 0, `cpu.max`,
//!   `pids.max`.
//!
//! The init joins the leaves itself (it writes `0` to each `cgroup.procs`) before it forks the app,
//! so every process of the sandbox is inside from its first instruction. Removal is `rmdir` of the
//! leaves, retried briefly while the kernel finishes releasing the dead tasks.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Limits, SandboxError};

/// The directory under which every sandbox's leaf cgroup lives.
const GROUP: &str = "encfs-cleanroom";

/// CFS period: 100 ms, the kernel's default, so a quota reads as a share of one CPU per period.
const CPU_PERIOD_MICROSECONDS: u64 = 100_000;

/// How long `remove` retries an `rmdir` that fails with `EBUSY` (tasks still being released).
const REMOVE_PATIENCE: Duration = Duration::from_secs(2);

/// The controllers the sandbox limits, with whether `limits` asks for each.
fn wanted(limits: &Limits) -> [(&'static str, bool); 3] {
    [
        ("memory", limits.memory_bytes.is_some()),
        ("cpu", limits.cpu_millicores.is_some()),
        ("pids", limits.pids.is_some()),
    ]
}

/// The sandbox's leaf cgroups (one per v1 controller, or one v2 leaf).
#[derive(Debug)]
pub struct Cgroups {
    leaves: Vec<PathBuf>,
}

impl Cgroups {
    /// Creates the leaf cgroups named `leaf` under the cgroup filesystem at `root` (normally
    /// `/sys/fs/cgroup`) and writes `limits` into them. `self_cgroup` is the text of
    /// `/proc/self/cgroup`. On error, whatever was created is removed again.
    pub fn create(
        root: &Path,
        self_cgroup: &str,
        leaf: &str,
        limits: &Limits,
    ) -> Result<Self, SandboxError> {
        let mut cgroups = Self { leaves: Vec::new() };
        let result = if root.join("cgroup.controllers").exists() {
            cgroups.create_v2(root, leaf, limits)
        } else {
            cgroups.create_v1(root, self_cgroup, leaf, limits)
        };
        match result {
            Ok(()) => Ok(cgroups),
            Err(error) => {
                let _ = cgroups.remove();
                Err(error)
            }
        }
    }

    /// The `cgroup.procs` files the sandbox's init writes itself into.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.leaves
            .iter()
            .map(|leaf| leaf.join("cgroup.procs"))
            .collect()
    }

    /// The leaf directories.
    pub fn leaves(&self) -> &[PathBuf] {
        &self.leaves
    }

    fn create_v1(
        &mut self,
        root: &Path,
        self_cgroup: &str,
        leaf: &str,
        limits: &Limits,
    ) -> Result<(), SandboxError> {
        for (controller, needed) in wanted(limits) {
            let mount = root.join(controller);
            if !mount.join("cgroup.procs").exists() {
                if needed {
                    return Err(SandboxError::MissingController {
                        controller,
                        path: mount,
                    });
                }
                continue;
            }
            let own = own_v1_path(self_cgroup, controller).unwrap_or_default();
            let parent = mount.join(own.trim_start_matches('/')).join(GROUP);
            fs::create_dir_all(&parent).map_err(cgroup_error(&parent))?;
            let dir = parent.join(leaf);
            fs::create_dir(&dir).map_err(cgroup_error(&dir))?;
            self.leaves.push(dir.clone());
            match controller {
                "memory" => {
                    if let Some(bytes) = limits.memory_bytes {
                        write(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
                        let memsw = dir.join("memory.memsw.limit_in_bytes");
                        if memsw.exists() {
                            write(&memsw, &bytes.to_string())?;
                        }
                    }
                }
                "cpu" => {
                    if let Some(millicores) = limits.cpu_millicores {
                        write(
                            &dir.join("cpu.cfs_period_us"),
                            &CPU_PERIOD_MICROSECONDS.to_string(),
                        )?;
                        write(
                            &dir.join("cpu.cfs_quota_us"),
                            &cpu_quota(millicores).to_string(),
                        )?;
                    }
                }
                _ => {
                    if let Some(pids) = limits.pids {
                        write(&dir.join("pids.max"), &pids.to_string())?;
                    }
                }
            }
        }
        Ok(())
    }

    fn create_v2(&mut self, root: &Path, leaf: &str, limits: &Limits) -> Result<(), SandboxError> {
        let available_path = root.join("cgroup.controllers");
        let available =
            fs::read_to_string(&available_path).map_err(cgroup_error(&available_path))?;
        let mut enable = Vec::new();
        for (controller, needed) in wanted(limits) {
            if available.split_whitespace().any(|c| c == controller) {
                enable.push(format!("+{controller}"));
            } else if needed {
                return Err(SandboxError::MissingController {
                    controller,
                    path: available_path,
                });
            }
        }
        let enable = enable.join(" ");
        let group = root.join(GROUP);
        if !enable.is_empty() {
            write(&root.join("cgroup.subtree_control"), &enable)?;
        }
        fs::create_dir_all(&group).map_err(cgroup_error(&group))?;
        if !enable.is_empty() {
            write(&group.join("cgroup.subtree_control"), &enable)?;
        }
        let dir = group.join(leaf);
        fs::create_dir(&dir).map_err(cgroup_error(&dir))?;
        self.leaves.push(dir.clone());
        if let Some(bytes) = limits.memory_bytes {
            write(&dir.join("memory.max"), &bytes.to_string())?;
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                write(&swap, "0")?;
            }
        }
        if let Some(millicores) = limits.cpu_millicores {
            write(
                &dir.join("cpu.max"),
                &format!("{} {CPU_PERIOD_MICROSECONDS}", cpu_quota(millicores)),
            )?;
        }
        if let Some(pids) = limits.pids {
            write(&dir.join("pids.max"), &pids.to_string())?;
        }
        Ok(())
    }

    /// Removes the leaves (they must be empty of tasks: the sandbox was reaped).
    pub fn remove(&mut self) -> Result<(), SandboxError> {
        let mut first_error = None;
        while let Some(leaf) = self.leaves.pop() {
            if let Err(error) = remove_leaf(&leaf) {
                first_error.get_or_insert(SandboxError::Cgroup {
                    path: leaf,
                    source: error,
                });
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}

fn remove_leaf(leaf: &Path) -> io::Result<()> {
    let started = Instant::now();
    loop {
        match fs::remove_dir(leaf) {
            Ok(()) => return Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(error)
                if error.raw_os_error() == Some(libc::EBUSY)
                    && started.elapsed() < REMOVE_PATIENCE =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => return Err(error),
        }
    }
}

/// CFS quota in µs per [`CPU_PERIOD_MICROSECONDS`]: 1000 millicores = one whole period.
pub fn cpu_quota(millicores: u32) -> u64 {
    u64::from(millicores) * CPU_PERIOD_MICROSECONDS / 1000
}

/// This process's path in the v1 hierarchy holding `controller`, from `/proc/self/cgroup` lines
/// `id:controller[,controller…]:path`.
pub fn own_v1_path(self_cgroup: &str, controller: &str) -> Option<String> {
    self_cgroup.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_owned())
    })
}

fn cgroup_error(path: &Path) -> impl FnOnce(io::Error) -> SandboxError + '_ {
    move |source| SandboxError::Cgroup {
        path: path.to_owned(),
        source,
    }
}

fn write(path: &Path, value: &str) -> Result<(), SandboxError> {
    fs::write(path, value).map_err(cgroup_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SELF_CGROUP: &str = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/abc\n\
                               2:cpu,cpuacct:/user.slice\n0::/\n";

    #[test]
    fn own_paths_come_from_proc_self_cgroup() {
        assert_eq!(
            own_v1_path(SELF_CGROUP, "memory").as_deref(),
            Some("/process_api/abc")
        );
        assert_eq!(
            own_v1_path(SELF_CGROUP, "cpu").as_deref(),
            Some("/user.slice")
        );
        assert_eq!(own_v1_path(SELF_CGROUP, "pids").as_deref(), Some("/"));
        assert_eq!(own_v1_path(SELF_CGROUP, "blkio"), None);
    }

    /// The v2 code on a real cgroup2 mount: these machines have one without controllers (all
    /// are bound to v1) at /sys/fs/cgroup/unified, enough to create, join and remove a leaf.
    #[test]
    fn a_real_v2_leaf_is_joined_and_removed() {
        let unified = Path::new("/sys/fs/cgroup/unified");
        let writable = fs::metadata(unified.join("cgroup.procs")).is_ok_and(|_| {
            fs::read_to_string("/proc/self/status")
                .unwrap()
                .contains("Uid:\t0\t")
        });
        if !unified.join("cgroup.controllers").exists() || !writable {
            eprintln!(
                "skipping: needs root and a cgroup2 mount at {}",
                unified.display()
            );
            return;
        }
        let leaf = format!("v2-test-{}", std::process::id());
        let limited = Limits {
            pids: Some(4),
            ..Limits::default()
        };
        if !fs::read_to_string(unified.join("cgroup.controllers"))
            .unwrap()
            .contains("pids")
        {
            assert!(matches!(
                Cgroups::create(unified, "", &leaf, &limited),
                Err(SandboxError::MissingController {
                    controller: "pids",
                    ..
                })
            ));
        }
        let mut cgroups = Cgroups::create(unified, "", &leaf, &Limits::default()).unwrap();
        let procs = cgroups.procs_files().pop().unwrap();
        assert_eq!(
            procs,
            unified
                .join("encfs-cleanroom")
                .join(&leaf)
                .join("cgroup.procs")
        );
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        fs::write(&procs, child.id().to_string()).unwrap();
        assert_eq!(
            fs::read_to_string(&procs).unwrap().trim(),
            child.id().to_string()
        );
        child.kill().unwrap();
        child.wait().unwrap();
        cgroups.remove().unwrap();
        assert!(!procs.parent().unwrap().exists());
    }

    #[test]
    fn cpu_quota_is_a_share_of_the_period() {
        assert_eq!(cpu_quota(1000), 100_000);
        assert_eq!(cpu_quota(250), 25_000);
        assert_eq!(cpu_quota(2500), 250_000);
    }

    /// The file writes on a fake v1 and v2 tree (plain directories stand in for the kernel's
    /// files, which the kernel would create on mkdir); the real hierarchies are exercised by the
    /// sandbox tests.
    #[test]
    fn limits_land_in_the_right_files() {
        let limits = Limits {
            memory_bytes: Some(64 << 20),
            cpu_millicores: Some(500),
            pids: Some(32),
            tmp_bytes: None,
        };
        let v1 = tempfile::tempdir().unwrap();
        for controller in ["memory", "cpu", "pids"] {
            fs::create_dir(v1.path().join(controller)).unwrap();
            fs::write(v1.path().join(controller).join("cgroup.procs"), "").unwrap();
        }
        let mut cgroups = Cgroups::create(v1.path(), SELF_CGROUP, "leaf", &limits).unwrap();
        let memory = v1
            .path()
            .join("memory/process_api/abc/encfs-cleanroom/leaf");
        assert_eq!(
            fs::read_to_string(memory.join("memory.limit_in_bytes")).unwrap(),
            "67108864"
        );
        let cpu = v1.path().join("cpu/user.slice/encfs-cleanroom/leaf");
        assert_eq!(
            fs::read_to_string(cpu.join("cpu.cfs_quota_us")).unwrap(),
            "50000"
        );
        assert_eq!(
            fs::read_to_string(cpu.join("cpu.cfs_period_us")).unwrap(),
            "100000"
        );
        let pids = v1.path().join("pids/encfs-cleanroom/leaf");
        assert_eq!(fs::read_to_string(pids.join("pids.max")).unwrap(), "32");
        assert_eq!(cgroups.procs_files().len(), 3);
        // Plain directories with files in them cannot be rmdir'ed: the fake shows the error.
        assert!(cgroups.remove().is_err());

        let v2 = tempfile::tempdir().unwrap();
        fs::write(
            v2.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let cgroups = Cgroups::create(v2.path(), "0::/\n", "leaf", &limits).unwrap();
        let leaf = v2.path().join("encfs-cleanroom/leaf");
        assert_eq!(
            fs::read_to_string(leaf.join("cpu.max")).unwrap(),
            "50000 100000"
        );
        assert_eq!(
            fs::read_to_string(leaf.join("memory.max")).unwrap(),
            "67108864"
        );
        assert_eq!(
            fs::read_to_string(v2.path().join("cgroup.subtree_control")).unwrap(),
            "+memory +cpu +pids"
        );
        assert_eq!(cgroups.procs_files(), [leaf.join("cgroup.procs")]);
        drop(cgroups);

        let missing = tempfile::tempdir().unwrap();
        assert!(matches!(
            Cgroups::create(missing.path(), SELF_CGROUP, "leaf", &limits),
            Err(SandboxError::MissingController {
                controller: "memory",
                ..
            })
        ));
    }
}
