//! The application sandbox: runs the clean room's untrusted application, one command, isolated on
//! this machine (which must be run as root).
//!
//! The app gets its own user, mount, PID, IPC, UTS, network and cgroup namespaces; a root of its
//! own (`pivot_root` into a tmpfs under [`SandboxSpec::work_dir`], old root detached) holding
//! read-only binds of the host's system directories, a generated `/etc`, a fresh `/proc` and
//! `/sys`, six device nodes, a private size-limited `/tmp` and the spec's binds; only `lo` as a
//! network interface; uid/gid 1000 (by default) with no capabilities and `no_new_privs`; memory,
//! CPU and process limits through cgroups v1 or v2; stdout/stderr in a json-file log.
//! `docs/cleanroom.md`, "The application sandbox", says what is isolated how and what is not.
//!
//! Shape: [`Sandbox::spawn`] validates the spec, creates the cgroups and the pipes, builds the
//! whole setup as data (`plan.rs`) and `clone`s the sandbox's init with the new namespaces; the init
//! (`child.rs`) runs the plan, forks the app and supervises it. `spawn` returns once the app's
//! `execve` succeeded (or with the step that failed). The `Sandbox` owns the init: dropping it
//! kills everything inside, reaps it and removes the cgroups and the root directory.

#![deny(clippy::undocumented_unsafe_blocks)]

mod cgroup;
mod child;
mod log;
mod plan;

use std::ffi::c_void;
use std::fs::{File, OpenOptions};
use std::io::{self, PipeReader, PipeWriter, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub use self::log::{MAX_ENTRY_BYTES, rfc3339};
pub use self::plan::{DEFAULT_TMP_BYTES, DEVICES, SYSTEM_DIRECTORIES};

/// What to run and how to confine it.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    /// The application's name: the sandbox's hostname and its cgroups' name
    /// (1 to 63 of `A-Z a-z 0-9 - _ .`).
    pub name: String,
    /// argv; argv\[0\] is looked up on the `PATH` of [`Self::env`] (default
    /// `/usr/local/bin:/usr/bin:/bin`) inside the sandbox, unless it contains a `/`.
    pub command: Vec<String>,
    /// Exactly the app's environment: nothing of the host's is added.
    pub env: Vec<(String, String)>,
    /// Host paths presented at paths in the sandbox.
    pub binds: Vec<Bind>,
    /// The app's uid and gid (1000 / 1000 in the reference), the same numbers inside its user
    /// namespace and on the host. Neither may be 0.
    pub uid: u32,
    pub gid: u32,
    pub limits: Limits,
    /// Host path; the app's stdout and stderr are appended to it as json-file lines.
    pub log_file: PathBuf,
    /// Host directory for the sandbox's root: it must not exist or be empty; the sandbox creates
    /// it, mounts its root there (in its own mount namespace only) and removes it on drop.
    pub work_dir: PathBuf,
}

/// A host path made visible in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// The host path (a directory or a file; FUSE mounts work, see the docs).
    pub source: PathBuf,
    /// Where the app sees it: absolute, outside the sandbox's own tree (`/usr`, `/etc`, `/proc`,
    /// …), not overlapping another bind's target.
    pub target: PathBuf,
    pub read_only: bool,
}

/// Resource limits; `None` leaves that resource unlimited (beyond the caller's own cgroup).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Memory (RSS, page cache, tmpfs pages; swap is not a way around it). Past it the kernel's
    /// OOM killer kills the app: exit code 137.
    pub memory_bytes: Option<u64>,
    /// CPU time per wall time: 1000 = one CPU.
    pub cpu_millicores: Option<u32>,
    /// Processes and threads, the init included; `fork` fails with `EAGAIN` past it.
    pub pids: Option<u32>,
    /// Size of `/tmp` (a tmpfs); [`DEFAULT_TMP_BYTES`] when `None`.
    pub tmp_bytes: Option<u64>,
}

/// Why a sandbox could not be started or waited for.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// A field of the [`SandboxSpec`] is unusable; `field` names it.
    #[error("sandbox spec, {field}: {reason}")]
    InvalidSpec { field: &'static str, reason: String },
    /// The process is not root (namespaces, mounts and cgroups need it).
    #[error("the sandbox needs root (effective uid 0) for its namespaces, mounts and cgroups")]
    NotRoot,
    /// A limit was asked for but its cgroup controller is not mounted.
    #[error("limit on {controller} asked for, but no {controller} cgroup controller at {}", path.display())]
    MissingController {
        controller: &'static str,
        path: PathBuf,
    },
    /// Creating, writing or removing a cgroup file failed.
    #[error("cgroup {}: {source}", path.display())]
    Cgroup { path: PathBuf, source: io::Error },
    /// A host file or directory the sandbox uses (work dir, log file) could not be used.
    #[error("{what} {}: {source}", path.display())]
    Host {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// A step of the sandbox's setup failed before the app started.
    #[error("sandbox setup failed to {step}: {source}")]
    Setup { step: String, source: io::Error },
    /// The command could not be executed in the sandbox (not found on its `PATH`, not
    /// executable, …).
    #[error("cannot execute {program:?} in the sandbox: {source}")]
    Exec { program: String, source: io::Error },
    /// A system call of the host side (clone, pipe, waitpid, kill) failed.
    #[error("{what}: {source}")]
    System {
        what: &'static str,
        source: io::Error,
    },
}

/// The child's stack for `clone`: the init only walks the plan, so this is generous.
const INIT_STACK_BYTES: usize = 1024 * 1024;

/// Distinguishes the cgroups of sandboxes of the same name in one process.
static SANDBOX_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A running (or finished, not yet dropped) sandbox.
#[derive(Debug)]
pub struct Sandbox {
    pid: libc::pid_t,
    exit_code: Option<i32>,
    /// Kept open for the sandbox's lifetime; the init kills the app when it closes.
    lifeline: Option<PipeWriter>,
    pumps: Vec<JoinHandle<()>>,
    cgroups: cgroup::Cgroups,
    work_dir: PathBuf,
}

/// A signal set (`sigset_t` is plain data: all-zero is a valid, empty value).
struct SignalMask(libc::sigset_t);

impl SignalMask {
    fn empty() -> Self {
        // SAFETY: sigset_t is a plain bit array; zero is the empty set.
        Self(unsafe { std::mem::zeroed() })
    }
}

/// An owned descriptor moved above 0-2, so that the child's `dup2` onto stdin/stdout/stderr can
/// never clobber it (a caller started with a closed stdin would get a pipe at fd 0).
fn above_stdio<T: From<OwnedFd> + Into<OwnedFd> + AsRawFd>(fd: T) -> io::Result<T> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // `try_clone` duplicates with F_DUPFD_CLOEXEC from 3 up.
    let owned: OwnedFd = fd.into();
    Ok(T::from(owned.try_clone()?))
}

fn pipe() -> Result<(PipeReader, PipeWriter), SandboxError> {
    let system = |source| SandboxError::System {
        what: "creating a pipe",
        source,
    };
    let (reader, writer) = io::pipe().map_err(system)?;
    Ok((
        above_stdio(reader).map_err(system)?,
        above_stdio(writer).map_err(system)?,
    ))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Creates the work dir (or takes an empty existing one).
fn prepare_work_dir(path: &Path) -> Result<(), SandboxError> {
    let host = |source| SandboxError::Host {
        what: "creating the work dir",
        path: path.into(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(host)?;
    }
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            let mut entries = std::fs::read_dir(path).map_err(host)?;
            if entries.next().is_some() {
                return Err(SandboxError::InvalidSpec {
                    field: "work_dir",
                    reason: format!("{} exists and is not empty", path.display()),
                });
            }
            Ok(())
        }
        Err(error) => Err(host(error)),
    }
}

impl Sandbox {
    /// Starts `spec.command` in a new sandbox and returns once it is executing.
    pub fn spawn(spec: SandboxSpec) -> Result<Sandbox, SandboxError> {
        if !is_root() {
            return Err(SandboxError::NotRoot);
        }
        plan::validate(&spec)?;
        let host = plan::HostLayout::probe(&spec)?;
        let log_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_file)
            .map_err(|source| SandboxError::Host {
                what: "opening the log file",
                path: spec.log_file.clone(),
                source,
            })?;

        let self_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let leaf = format!(
            "{}-{}-{}",
            spec.name,
            std::process::id(),
            SANDBOX_SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let cgroups = cgroup::Cgroups::create(
            Path::new("/sys/fs/cgroup"),
            &self_cgroup,
            &leaf,
            &spec.limits,
        )?;
        prepare_work_dir(&spec.work_dir)?;
        let mut sandbox = Sandbox {
            pid: 0,
            exit_code: None,
            lifeline: None,
            pumps: Vec::new(),
            cgroups,
            work_dir: spec.work_dir.clone(),
        };
        sandbox.start(&spec, &host, log_file)?;
        Ok(sandbox)
    }

    fn start(
        &mut self,
        spec: &SandboxSpec,
        host: &plan::HostLayout,
        log_file: File,
    ) -> Result<(), SandboxError> {
        let setup = plan::build(spec, host, &self.cgroups.procs_files());
        let argv: Vec<*const libc::c_char> = setup
            .app
            .argv
            .iter()
            .map(|arg| arg.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let envp: Vec<*const libc::c_char> = setup
            .app
            .env
            .iter()
            .map(|var| var.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();

        let (mut status_reader, status_writer) = pipe()?;
        let (stdout_reader, stdout_writer) = pipe()?;
        let (stderr_reader, stderr_writer) = pipe()?;
        let (lifeline_reader, lifeline_writer) = pipe()?;
        let context = child::ChildContext {
            plan: &setup,
            argv: &argv,
            envp: &envp,
            fds: child::ChildFds {
                status: status_writer.as_raw_fd(),
                stdout: stdout_writer.as_raw_fd(),
                stderr: stderr_writer.as_raw_fd(),
                lifeline: lifeline_reader.as_raw_fd(),
            },
        };

        let mut stack = vec![0u8; INIT_STACK_BYTES];
        // The stack grows down: clone takes its top, 16-byte aligned.
        let top = (stack.as_mut_ptr() as usize + INIT_STACK_BYTES) & !15;
        let flags = libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS
            | libc::SIGCHLD;
        // The child starts with every signal blocked, so that none of this process's handlers
        // (tokio's, a Ctrl-C handler) can run in it before it has set up its own.
        let mut blocked_all = SignalMask::empty();
        let mut previous = SignalMask::empty();
        // SAFETY: sigfillset initialises a live sigset_t; pthread_sigmask changes only this
        // thread's mask and is restored right after the clone.
        unsafe {
            libc::sigfillset(&mut blocked_all.0);
            libc::pthread_sigmask(libc::SIG_SETMASK, &blocked_all.0, &mut previous.0);
        }
        // SAFETY: without CLONE_VM the child gets a copy of this process's memory, so `context`,
        // `setup`, `argv`, `envp` and `stack` stay valid for it; `init_main` never returns into
        // this code (it ends in `_exit` or `execve`) and does not allocate or lock.
        let pid = unsafe {
            libc::clone(
                child::init_main,
                top as *mut c_void,
                flags,
                &context as *const child::ChildContext<'_> as *mut c_void,
            )
        };
        let clone_error = io::Error::last_os_error();
        // SAFETY: restores this thread's mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &previous.0, std::ptr::null_mut()) };
        if pid < 0 {
            return Err(SandboxError::System {
                what: "cloning the sandbox's init",
                source: clone_error,
            });
        }
        self.pid = pid;
        self.lifeline = Some(lifeline_writer);
        drop((status_writer, stdout_writer, stderr_writer, lifeline_reader));

        let sink = Arc::new(Mutex::new(log_file));
        for (reader, stream) in [(stdout_reader, "stdout"), (stderr_reader, "stderr")] {
            let pump = log::spawn_pump(reader, stream, Arc::clone(&sink)).map_err(|source| {
                SandboxError::System {
                    what: "starting a log thread",
                    source,
                }
            })?;
            self.pumps.push(pump);
        }

        // End-of-file: the app's execve closed the last copy of the status pipe.
        let mut record = [0u8; 8];
        let mut filled = 0;
        while filled < record.len() {
            match status_reader.read(&mut record[filled..]) {
                Ok(0) => break,
                Ok(read) => filled += read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(SandboxError::System {
                        what: "reading the setup status",
                        source,
                    });
                }
            }
        }
        if filled == 0 {
            return Ok(());
        }
        let _ = self.kill();
        if filled < record.len() {
            return Err(SandboxError::Setup {
                step: "report its status".into(),
                source: io::Error::from(io::ErrorKind::UnexpectedEof),
            });
        }
        let (number, errno) = child::decode_failure(record);
        let source = io::Error::from_raw_os_error(errno);
        let number = number as usize;
        let plan_steps = setup.steps.len();
        if let Some(planned) = setup.steps.get(number) {
            return Err(SandboxError::Setup {
                step: planned.description.clone(),
                source,
            });
        }
        match child::FixedStep::ALL.get(number - plan_steps) {
            Some(child::FixedStep::Exec) => Err(SandboxError::Exec {
                program: spec.command[0].clone(),
                source,
            }),
            Some(step) => Err(SandboxError::Setup {
                step: step.description().into(),
                source,
            }),
            None => Err(SandboxError::Setup {
                step: format!("step {number}"),
                source,
            }),
        }
    }

    /// The host pid of the sandbox's init (pid 1 inside; the app is its child, pid 2).
    /// Signals sent to it (other than SIGKILL/SIGSTOP) are forwarded to the app.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// The app's exit code if the sandbox has ended (128 + signal number when a signal ended the
    /// app, e.g. 137 for the OOM killer or [`Self::kill`]), else `None`. Once it returns a code,
    /// the log file holds all of the app's output.
    pub fn try_wait(&mut self) -> Result<Option<i32>, SandboxError> {
        self.reap(libc::WNOHANG)
    }

    /// Waits for the sandbox to end and returns the app's exit code (see [`Self::try_wait`]).
    pub fn wait(&mut self) -> Result<i32, SandboxError> {
        loop {
            if let Some(code) = self.reap(0)? {
                return Ok(code);
            }
        }
    }

    /// Kills everything in the sandbox (SIGKILL to the init: the kernel then kills every process
    /// of its PID namespace) and reaps it. Bounded in time unless a process inside is stuck in
    /// the kernel, e.g. on a FUSE request its daemon never answers.
    pub fn kill(&mut self) -> Result<(), SandboxError> {
        if self.exit_code.is_some() || self.pid <= 0 {
            return Ok(());
        }
        // SAFETY: `pid` is this process's unreaped child (reaping sets `exit_code`), so the pid
        // cannot have been reused.
        if unsafe { libc::kill(self.pid, libc::SIGKILL) } != 0 {
            return Err(SandboxError::System {
                what: "killing the sandbox's init",
                source: io::Error::last_os_error(),
            });
        }
        self.wait().map(drop)
    }

    fn reap(&mut self, options: libc::c_int) -> Result<Option<i32>, SandboxError> {
        if let Some(code) = self.exit_code {
            return Ok(Some(code));
        }
        let mut status = 0;
        // SAFETY: waits for this process's own child only.
        let reaped = unsafe { libc::waitpid(self.pid, &mut status, options) };
        if reaped < 0 {
            let source = io::Error::last_os_error();
            if source.kind() == io::ErrorKind::Interrupted {
                return Ok(None);
            }
            return Err(SandboxError::System {
                what: "waiting for the sandbox's init",
                source,
            });
        }
        if reaped == 0 {
            return Ok(None);
        }
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        };
        self.exit_code = Some(code);
        // Every process of the PID namespace is gone with its init: the pipes are at EOF.
        for pump in self.pumps.drain(..) {
            let _ = pump.join();
        }
        Ok(Some(code))
    }

    /// The sandbox's cgroup directories (one per v1 controller, or one v2 leaf); they are removed
    /// on drop.
    pub fn cgroup_dirs(&self) -> &[PathBuf] {
        self.cgroups.leaves()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.kill();
        self.lifeline = None;
        let _ = self.cgroups.remove();
        // Only the directory itself: the root was a tmpfs in the sandbox's mount namespace, gone
        // with it, so the host's directory is empty. Never a recursive delete.
        let _ = std::fs::remove_dir(&self.work_dir);
    }
}
