//! The code that runs in the sandbox after `clone`: the init (pid 1 of the new PID namespace) and,
//! forked from it, the app up to its `execve`.
//!
//! Both are copies of a possibly multi-threaded parent, so nothing here allocates, takes a lock or
//! formats: each function is one system call on data the parent prepared ([`super::plan`]), and
//! where glibc's wrapper does more than the system call (fork's atfork handlers and allocator
//! locks, setuid's all-threads broadcast) the raw system call is made instead. A
//! failure is reported as 8 bytes — the step's number and the errno — on the status pipe, which is
//! close-on-exec: the parent reading end-of-file means the app's `execve` succeeded.
//!
//! The order matters and is the point of this module:
//! 1. the init, still root in the host's user namespace, joins the cgroups, does every mount
//!    (system directories, `/proc`, `/sys`, `/dev`, `/tmp`, the binds — FUSE mounts included,
//!    which is why binds are made *before* any user namespace exists) and `pivot_root`s;
//! 2. it forks the app, which resets its signals, takes the pipes as stdout/stderr, drops to the
//!    app's uid/gid, enters a new user namespace mapping only that uid/gid to itself, drops every
//!    capability (bounding, ambient, permitted, effective), sets `no_new_privs` and execs;
//! 3. the init drops to the same uid/gid (no capabilities left) and loops: it reaps every zombie,
//!    forwards signals to the app, exits with the app's status when the app exits (the kernel then
//!    kills whatever is left in the PID namespace) and kills the app when the parent's lifeline
//!    pipe closes (the parent died without dropping its `Sandbox`).

use std::ffi::{CStr, c_int, c_void};
use std::ptr;

use super::plan::{SetupPlan, Step};

/// The file descriptors the child keeps; all others are closed first thing.
#[derive(Debug, Clone, Copy)]
pub struct ChildFds {
    /// Write end of the status pipe (close-on-exec).
    pub status: c_int,
    /// Write ends of the stdout and stderr pipes.
    pub stdout: c_int,
    pub stderr: c_int,
    /// Read end of the lifeline pipe: end-of-file means the parent is gone.
    pub lifeline: c_int,
}

/// What the parent hands to `clone`'s entry point.
pub struct ChildContext<'a> {
    pub plan: &'a SetupPlan,
    /// Null-terminated pointer arrays into `plan.app.argv` / `plan.app.env`.
    pub argv: &'a [*const libc::c_char],
    pub envp: &'a [*const libc::c_char],
    pub fds: ChildFds,
}

/// The steps after the plan's, numbered after it in failure reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum FixedStep {
    CloseInheritedFds,
    BlockSignals,
    SignalFd,
    ForkApp,
    InitDropPrivileges,
    ResetSignals,
    RaiseOomScore,
    Stdio,
    DropGroups,
    SetGid,
    SetUid,
    Dumpable,
    UnshareUser,
    UidMap,
    DenySetgroups,
    GidMap,
    ForbidNestedUserNamespaces,
    DropBoundingSet,
    ClearAmbient,
    ClearCapabilities,
    NoNewPrivs,
    Chdir,
    Exec,
}

impl FixedStep {
    pub const ALL: [FixedStep; 23] = [
        Self::CloseInheritedFds,
        Self::BlockSignals,
        Self::SignalFd,
        Self::ForkApp,
        Self::InitDropPrivileges,
        Self::ResetSignals,
        Self::RaiseOomScore,
        Self::Stdio,
        Self::DropGroups,
        Self::SetGid,
        Self::SetUid,
        Self::Dumpable,
        Self::UnshareUser,
        Self::UidMap,
        Self::DenySetgroups,
        Self::GidMap,
        Self::ForbidNestedUserNamespaces,
        Self::DropBoundingSet,
        Self::ClearAmbient,
        Self::ClearCapabilities,
        Self::NoNewPrivs,
        Self::Chdir,
        Self::Exec,
    ];

    pub fn description(self) -> &'static str {
        match self {
            Self::CloseInheritedFds => "close the file descriptors inherited from the host",
            Self::BlockSignals => "block signals in the init",
            Self::SignalFd => "create the init's signalfd",
            Self::ForkApp => "fork the app from the init",
            Self::InitDropPrivileges => "drop the init's privileges",
            Self::ResetSignals => "reset the app's signal mask",
            Self::RaiseOomScore => "make the app the OOM killer's first choice",
            Self::Stdio => "connect the app's stdin (/dev/null), stdout and stderr",
            Self::DropGroups => "drop supplementary groups",
            Self::SetGid => "set the app's gid",
            Self::SetUid => "set the app's uid",
            Self::Dumpable => "make the app's /proc files its own (PR_SET_DUMPABLE)",
            Self::UnshareUser => "enter a new user namespace",
            Self::UidMap => "write the uid map",
            Self::DenySetgroups => "deny setgroups in the user namespace",
            Self::GidMap => "write the gid map",
            Self::ForbidNestedUserNamespaces => "forbid user namespaces inside the sandbox",
            Self::DropBoundingSet => "drop the capability bounding set",
            Self::ClearAmbient => "clear the ambient capabilities",
            Self::ClearCapabilities => "clear the permitted and effective capabilities",
            Self::NoNewPrivs => "set no_new_privs",
            Self::Chdir => "change to /",
            Self::Exec => "execute the command",
        }
    }
}

/// The number a fixed step has in failure reports of a plan with `plan_steps` steps.
fn fixed_step_number(plan_steps: usize, step: FixedStep) -> u32 {
    plan_steps as u32 + step as u32
}

/// Encodes a failure for the status pipe.
pub fn encode_failure(step: u32, errno: i32) -> [u8; 8] {
    let mut record = [0u8; 8];
    record[..4].copy_from_slice(&step.to_le_bytes());
    record[4..].copy_from_slice(&errno.to_le_bytes());
    record
}

/// Decodes what [`encode_failure`] wrote.
pub fn decode_failure(record: [u8; 8]) -> (u32, i32) {
    let step = u32::from_le_bytes(record[..4].try_into().expect("4 bytes"));
    let errno = i32::from_le_bytes(record[4..].try_into().expect("4 bytes"));
    (step, errno)
}

/// Exit status of a sandbox whose setup failed (as a shell's "command not found").
const SETUP_FAILED_EXIT: c_int = 127;

type Errno = c_int;

fn last_errno() -> Errno {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// `Ok` for a non-negative system call result, else the errno.
fn check(result: libc::c_long) -> Result<libc::c_long, Errno> {
    if result < 0 {
        Err(last_errno())
    } else {
        Ok(result)
    }
}

fn exit_now(code: c_int) -> ! {
    // SAFETY: `_exit` ends the process without running the parent's atexit handlers or
    // destructors, which a forked copy must not run.
    unsafe { libc::_exit(code) }
}

fn report_and_exit(status_fd: c_int, step: u32, errno: Errno) -> ! {
    let record = encode_failure(step, errno);
    // SAFETY: writes 8 bytes from a live stack buffer to a file descriptor; a short or failed
    // write only loses the detail (the parent then reports the exit status).
    unsafe { libc::write(status_fd, record.as_ptr().cast(), record.len()) };
    exit_now(SETUP_FAILED_EXIT)
}

fn close_range(first: c_int, last: c_int) -> Result<(), Errno> {
    if first > last {
        return Ok(());
    }
    // SAFETY: close_range only closes descriptors of this process; the ones still needed are
    // outside the range.
    check(unsafe { libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0u32) })
        .map(drop)
}

/// Closes every descriptor from 3 up except those in `keep` (sorted in place, no allocation).
fn close_fds_except(keep: &mut [c_int]) -> Result<(), Errno> {
    keep.sort_unstable();
    let mut next = 3;
    for &fd in keep.iter() {
        if fd >= next {
            close_range(next, fd - 1)?;
            next = fd + 1;
        }
    }
    close_range(next, c_int::MAX)
}

fn close(fd: c_int) {
    // SAFETY: closes a descriptor this process owns and no longer uses.
    unsafe { libc::close(fd) };
}

fn write_file(path: &CStr, contents: &[u8], flags: c_int, mode: libc::mode_t) -> Result<(), Errno> {
    // SAFETY: `path` is a valid C string; the returned descriptor is closed below.
    let fd =
        check(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, mode) } as libc::c_long)?
            as c_int;
    let mut written = 0;
    while written < contents.len() {
        let rest = &contents[written..];
        // SAFETY: writes from a live slice to the descriptor opened above.
        match check(unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) } as libc::c_long) {
            Ok(n) => written += n as usize,
            Err(libc::EINTR) => {}
            Err(errno) => {
                close(fd);
                return Err(errno);
            }
        }
    }
    close(fd);
    Ok(())
}

fn option_ptr(value: &Option<std::ffi::CString>) -> *const libc::c_char {
    value.as_ref().map_or(ptr::null(), |v| v.as_ptr())
}

fn bring_loopback_up() -> Result<(), Errno> {
    // SAFETY: a plain socket call; the descriptor is closed below.
    let socket =
        check(
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) }
                as libc::c_long,
        )? as c_int;
    // SAFETY: `ifreq` is plain data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    request.ifr_name[0] = b'l' as libc::c_char;
    request.ifr_name[1] = b'o' as libc::c_char;
    // SAFETY: SIOCGIFFLAGS fills the flags of the named interface into the live `request`.
    let result = check(unsafe { libc::ioctl(socket, libc::SIOCGIFFLAGS, &mut request) } as _)
        .and_then(|_| {
            // SAFETY: SIOCGIFFLAGS wrote the union's `ifru_flags` member.
            unsafe {
                request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short
            };
            // SAFETY: SIOCSIFFLAGS reads the live `request`.
            check(unsafe { libc::ioctl(socket, libc::SIOCSIFFLAGS, &request) } as _)
        });
    close(socket);
    result.map(drop)
}

fn run_step(step: &Step) -> Result<(), Errno> {
    match step {
        Step::WriteExisting { path, contents } => {
            write_file(path, contents.as_bytes(), libc::O_WRONLY, 0)
        }
        Step::UnshareCgroupNamespace => {
            // SAFETY: unshare only changes this process's namespaces.
            check(unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } as _).map(drop)
        }
        Step::SetHostname(name) => {
            let bytes = name.as_bytes();
            // SAFETY: reads `bytes.len()` bytes of a live C string.
            check(unsafe { libc::sethostname(name.as_ptr(), bytes.len()) } as _).map(drop)
        }
        Step::LoopbackUp => bring_loopback_up(),
        Step::MakeMountsPrivate => check(
            // SAFETY: changes only the propagation of this (new) mount namespace's mounts.
            unsafe {
                libc::mount(
                    ptr::null(),
                    c"/".as_ptr(),
                    ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    ptr::null(),
                )
            } as _,
        )
        .map(drop),
        Step::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => check(
            // SAFETY: all pointers are null or live C strings; the mount happens in the
            // sandbox's own mount namespace.
            unsafe {
                libc::mount(
                    option_ptr(source),
                    target.as_ptr(),
                    option_ptr(fstype),
                    *flags,
                    option_ptr(data).cast::<c_void>(),
                )
            } as _,
        )
        .map(drop),
        Step::SetMountAttributes {
            target,
            set,
            recursive,
        } => {
            let attributes = libc::mount_attr {
                attr_set: *set,
                attr_clr: 0,
                propagation: 0,
                userns_fd: 0,
            };
            let flags = if *recursive { libc::AT_RECURSIVE } else { 0 };
            check(
                // SAFETY: `target` is a live C string and `attributes` a live mount_attr of the
                // size passed.
                unsafe {
                    libc::syscall(
                        libc::SYS_mount_setattr,
                        libc::AT_FDCWD,
                        target.as_ptr(),
                        flags as libc::c_uint,
                        &attributes as *const libc::mount_attr,
                        std::mem::size_of::<libc::mount_attr>(),
                    )
                },
            )
            .map(drop)
        }
        Step::Mkdir { path, mode } => {
            // SAFETY: `path` is a live C string.
            check(unsafe { libc::mkdir(path.as_ptr(), *mode) } as _).map(drop)
        }
        Step::Symlink { link_target, path } => {
            // SAFETY: both are live C strings.
            check(unsafe { libc::symlink(link_target.as_ptr(), path.as_ptr()) } as _).map(drop)
        }
        Step::CreateFile {
            path,
            mode,
            contents,
        } => write_file(
            path,
            contents,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            *mode,
        ),
        Step::PivotRoot { new_root } => {
            // SAFETY: live C strings; chdir/pivot_root/umount2 act on this process's namespace.
            check(unsafe { libc::chdir(new_root.as_ptr()) } as _)?;
            // SAFETY: as above; pivot_root(".", ".") stacks the old root on the new one.
            check(unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) })?;
            // SAFETY: detaches the old root, now mounted on top of ".".
            check(unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) } as _)?;
            // SAFETY: a live C string.
            check(unsafe { libc::chdir(c"/".as_ptr()) } as _).map(drop)
        }
    }
}

/// Raw system calls, not glibc's `setgroups`/`setresgid`/`setresuid`: those change the
/// credentials of *every thread* of the process (the "setxid" broadcast), walking a thread list
/// under a lock that this child copied from a multi-threaded parent — stale and possibly held
/// forever. The child is single-threaded, so the per-thread system call is exactly right.
fn set_identity(uid: u32, gid: u32) -> Result<(), (FixedStep, Errno)> {
    // SAFETY: setgroups with an empty list reads nothing.
    check(unsafe { libc::syscall(libc::SYS_setgroups, 0usize, ptr::null::<libc::gid_t>()) })
        .map_err(|e| (FixedStep::DropGroups, e))?;
    // SAFETY: plain credential system call.
    check(unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) })
        .map_err(|e| (FixedStep::SetGid, e))?;
    // SAFETY: plain credential system call; leaving uid 0 clears every capability.
    check(unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) })
        .map_err(|e| (FixedStep::SetUid, e))?;
    Ok(())
}

fn prctl(option: c_int, argument: libc::c_ulong) -> Result<(), Errno> {
    // SAFETY: the prctl options used here take integer arguments only.
    check(unsafe { libc::prctl(option, argument, 0 as libc::c_ulong, 0 as libc::c_ulong, 0) } as _)
        .map(drop)
}

/// `capset`'s header and data (`linux/capability.h`, version 3: two 32-bit words per set).
#[repr(C)]
struct CapabilityHeader {
    version: u32,
    pid: c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapabilityData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn clear_capabilities() -> Result<(), Errno> {
    let mut header = CapabilityHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapabilityData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and data are live and of the layout capset expects for version 3.
    check(unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) }).map(drop)
}

/// The init: runs the plan, forks the app, then reaps and forwards signals until the app exits.
///
/// # Safety
/// `arg` must point to a [`ChildContext`] that was live when `clone` copied the parent.
pub extern "C" fn init_main(arg: *mut c_void) -> c_int {
    // SAFETY: the parent passed a pointer to a ChildContext it kept alive across `clone`; this
    // process's copy of the parent's memory holds it unchanged.
    let context = unsafe { &*(arg as *const ChildContext<'_>) };
    run_init(context)
}

fn run_init(context: &ChildContext<'_>) -> ! {
    let fds = context.fds;
    let plan_steps = context.plan.steps.len();
    let fail = |step: FixedStep, errno: Errno| -> ! {
        report_and_exit(fds.status, fixed_step_number(plan_steps, step), errno)
    };
    let mut keep = [fds.status, fds.stdout, fds.stderr, fds.lifeline];
    if let Err(errno) = close_fds_except(&mut keep) {
        fail(FixedStep::CloseInheritedFds, errno);
    }
    // SAFETY: plain process calls: a new session (no controlling terminal, so the app cannot
    // reach the host's terminal through /dev/tty), a known umask, a recognisable name.
    unsafe {
        libc::setsid();
        libc::umask(0);
    }
    let _ = prctl(libc::PR_SET_NAME, c"sandbox-init".as_ptr() as libc::c_ulong);

    for (number, planned) in context.plan.steps.iter().enumerate() {
        if let Err(errno) = run_step(&planned.step) {
            report_and_exit(fds.status, number as u32, errno);
        }
    }

    // Every signal is blocked in the init (the parent cloned it with all blocked, so none of the
    // parent's handlers ever runs here) and read from a signalfd: a blocked signal is queued even
    // for a PID namespace's init, which otherwise drops signals it has no handler for.
    // SAFETY: sigset_t is plain data, initialised by sigfillset before use.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `all` is a live sigset_t; sigprocmask only changes this thread's mask.
    let blocked = unsafe {
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, ptr::null_mut())
    };
    if blocked != 0 {
        fail(FixedStep::BlockSignals, last_errno());
    }
    // SAFETY: `all` is a live sigset_t.
    let signal_fd = match check(unsafe { libc::signalfd(-1, &all, libc::SFD_CLOEXEC) } as _) {
        Ok(fd) => fd as c_int,
        Err(errno) => fail(FixedStep::SignalFd, errno),
    };

    // A raw clone with fork semantics, not glibc's fork(): that one runs atfork handlers and
    // takes the allocator's locks, which another thread of the original parent may have held at
    // the instant the init was cloned (the init's copies would then never be released).
    // SAFETY: no new stack and no CLONE_VM: the child continues on its own copy of this stack,
    // as after fork; it only runs `run_app`, which does not allocate and ends in execve or _exit.
    let app = match unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    } {
        -1 => fail(FixedStep::ForkApp, last_errno()),
        0 => run_app(context),
        pid => pid as libc::pid_t,
    };

    if let Err((_, errno)) = set_identity(context.plan.app.uid, context.plan.app.gid)
        .and_then(|()| prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map_err(|e| (FixedStep::NoNewPrivs, e)))
    {
        // SAFETY: kill only signals the app this init just forked.
        unsafe { libc::kill(app, libc::SIGKILL) };
        fail(FixedStep::InitDropPrivileges, errno);
    }
    close(fds.status);
    close(fds.stdout);
    close(fds.stderr);
    supervise(app, signal_fd, fds.lifeline)
}

/// The init's loop: reap, forward, exit with the app's status.
fn supervise(app: libc::pid_t, signal_fd: c_int, lifeline: c_int) -> ! {
    let mut polled = [
        libc::pollfd {
            fd: signal_fd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: lifeline,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `polled` is a live array of two pollfd.
        if unsafe { libc::poll(polled.as_mut_ptr(), 2, -1) } < 0 {
            continue; // EINTR cannot happen with every signal blocked; retry regardless.
        }
        if polled[1].revents != 0 {
            // The parent is gone (its end of the lifeline closed): nobody will ever wait for
            // this sandbox, so stop it. The kernel kills the rest when the init exits.
            // SAFETY: kill only signals the app.
            unsafe { libc::kill(app, libc::SIGKILL) };
            exit_now(128 + libc::SIGKILL);
        }
        if polled[0].revents & libc::POLLIN == 0 {
            continue;
        }
        // SAFETY: signalfd_siginfo is plain data; the read fills it.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reads at most `size` bytes into the live `info`.
        let read = unsafe {
            libc::read(
                signal_fd,
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        if read != size as isize {
            continue;
        }
        let signal = info.ssi_signo as c_int;
        if signal != libc::SIGCHLD {
            // SAFETY: forwards the signal to the app only.
            unsafe { libc::kill(app, signal) };
            continue;
        }
        loop {
            let mut status = 0;
            // SAFETY: reaps any exited child of the init (orphans are reparented to it).
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == app {
                if libc::WIFEXITED(status) {
                    exit_now(libc::WEXITSTATUS(status));
                }
                if libc::WIFSIGNALED(status) {
                    exit_now(128 + libc::WTERMSIG(status));
                }
            }
        }
    }
}

/// The app's process from fork to execve.
fn run_app(context: &ChildContext<'_>) -> ! {
    let fds = context.fds;
    let plan_steps = context.plan.steps.len();
    let launch = &context.plan.app;
    let fail = |step: FixedStep, errno: Errno| -> ! {
        report_and_exit(fds.status, fixed_step_number(plan_steps, step), errno)
    };

    // SAFETY: every catchable signal gets its default action (the parent's handlers must never
    // run here, and the parent may ignore SIGPIPE: ignored dispositions survive execve), then the
    // mask inherited blocked from the init is cleared; sigset_t is plain data that sigemptyset
    // initialises.
    unsafe {
        for signal in 1..=libc::SIGRTMAX() {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::signal(signal, libc::SIG_DFL);
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        if libc::sigprocmask(libc::SIG_SETMASK, &none, ptr::null_mut()) != 0 {
            fail(FixedStep::ResetSignals, last_errno());
        }
        libc::umask(0o022);
    }
    // The app (and all it forks) is the OOM killer's first choice, in the cgroup and on the host:
    // never the init, which may have inherited a large RSS from the parent. Raising the score
    // needs no privilege.
    if let Err(errno) = write_file(c"/proc/self/oom_score_adj", b"1000", libc::O_WRONLY, 0) {
        fail(FixedStep::RaiseOomScore, errno);
    }

    // SAFETY: a live C string; the descriptor is dup'ed onto 0 and closed.
    let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
    if null < 0 {
        fail(FixedStep::Stdio, last_errno());
    }
    // SAFETY: dup2 onto the standard descriptors; every source is open (the pipes are >= 3).
    let stdio = unsafe {
        (null == 0 || libc::dup2(null, 0) == 0)
            && libc::dup2(fds.stdout, 1) == 1
            && libc::dup2(fds.stderr, 2) == 2
    };
    if !stdio {
        fail(FixedStep::Stdio, last_errno());
    }
    let mut keep = [fds.status];
    if let Err(errno) = close_fds_except(&mut keep) {
        fail(FixedStep::CloseInheritedFds, errno);
    }

    if let Err((step, errno)) = set_identity(launch.uid, launch.gid) {
        fail(step, errno);
    }
    // Changing uid made this process non-dumpable, which would leave /proc/self/uid_map owned by
    // root and unwritable; the exec below recomputes dumpability anyway.
    if let Err(errno) = prctl(libc::PR_SET_DUMPABLE, 1) {
        fail(FixedStep::Dumpable, errno);
    }
    // SAFETY: unshare only changes this process's namespaces.
    if let Err(errno) = check(unsafe { libc::unshare(libc::CLONE_NEWUSER) } as _) {
        fail(FixedStep::UnshareUser, errno);
    }
    if let Err(errno) = write_file(
        c"/proc/self/uid_map",
        launch.uid_map.as_bytes(),
        libc::O_WRONLY,
        0,
    ) {
        fail(FixedStep::UidMap, errno);
    }
    if let Err(errno) = write_file(c"/proc/self/setgroups", b"deny", libc::O_WRONLY, 0) {
        fail(FixedStep::DenySetgroups, errno);
    }
    if let Err(errno) = write_file(
        c"/proc/self/gid_map",
        launch.gid_map.as_bytes(),
        libc::O_WRONLY,
        0,
    ) {
        fail(FixedStep::GidMap, errno);
    }
    // No user namespaces below this one (the limit is per user namespace and this process is
    // its root until the capabilities go): the app cannot regain capabilities over namespaces
    // of its own, which keeps the kernel surface it can reach small.
    if let Err(errno) = write_file(
        c"/proc/sys/user/max_user_namespaces",
        b"0",
        libc::O_WRONLY,
        0,
    ) {
        fail(FixedStep::ForbidNestedUserNamespaces, errno);
    }
    // The new user namespace gave this process every capability inside it: drop them all.
    for capability in 0..=launch.last_capability {
        if let Err(errno) = prctl(libc::PR_CAPBSET_DROP, capability as libc::c_ulong)
            && errno != libc::EINVAL
        {
            fail(FixedStep::DropBoundingSet, errno);
        }
    }
    if let Err(errno) = prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
    ) {
        fail(FixedStep::ClearAmbient, errno);
    }
    if let Err(errno) = clear_capabilities() {
        fail(FixedStep::ClearCapabilities, errno);
    }
    if let Err(errno) = prctl(libc::PR_SET_NO_NEW_PRIVS, 1) {
        fail(FixedStep::NoNewPrivs, errno);
    }
    // SAFETY: a live C string.
    if unsafe { libc::chdir(c"/".as_ptr()) } != 0 {
        fail(FixedStep::Chdir, last_errno());
    }

    let mut first_error = libc::ENOENT;
    for candidate in &launch.candidates {
        // SAFETY: argv and envp are null-terminated arrays of live C strings.
        unsafe {
            libc::execve(
                candidate.as_ptr(),
                context.argv.as_ptr(),
                context.envp.as_ptr(),
            )
        };
        match last_errno() {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => first_error = libc::EACCES,
            errno => fail(FixedStep::Exec, errno),
        }
    }
    fail(FixedStep::Exec, first_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_records_round_trip() {
        assert_eq!(
            decode_failure(encode_failure(41, libc::EPERM)),
            (41, libc::EPERM)
        );
    }

    #[test]
    fn fixed_steps_are_numbered_after_the_plan() {
        for (index, step) in FixedStep::ALL.iter().enumerate() {
            assert_eq!(*step as usize, index);
            assert_eq!(fixed_step_number(10, *step), 10 + index as u32);
        }
    }
}
