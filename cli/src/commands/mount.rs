//! `encfs mount` and `encfs unmount`: serve a store prefix as files through FUSE.
//!
//! The mount runs in the foreground until SIGINT or SIGTERM (or an outside unmount), then
//! unmounts cleanly; `--daemon` re-runs the same command detached and returns once it is ready.
//! A re-run never carries a secret on its command line ([`super::credentials::child_command`]).
//! Like the reference system's launchers, it writes a status file when ready and an error file
//! when it fails, so a launcher can wait for either.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use encfs_crypto::format::SegmentSize;
use encfs_fs::mount::{EncFs, Mount, MountOptions};

use super::credentials::child_command;
use super::transfer::{Target, address_of, open_target};
use crate::args::{MountArgs, StoreAccess, UnmountArgs};

/// How long `--daemon` waits for the detached mount to report.
const DAEMON_WAIT: Duration = Duration::from_secs(120);

/// Writes a small status file atomically (a temporary beside it, then a rename): what the mount,
/// its launcher and the clean room write for their watchers.
pub(super) fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let temp = path.with_extension("encfs-tmp");
    std::fs::write(&temp, format!("{value}\n"))
        .and_then(|()| std::fs::rename(&temp, path))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a status file written by [`write_json`]; `None` if it is missing or not JSON.
pub(super) fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// mimalloc gives freed pages back to the kernel after this many milliseconds (default 10): a
/// mount frees and reallocates multi-MiB buffers constantly, and page faults to get them back
/// measured as a large share of its CPU time. Read by mimalloc at start-up.
const ALLOCATOR_PURGE_DELAY: (&str, &str) = ("MIMALLOC_PURGE_DELAY", "250");

/// Runs `encfs mount`.
pub fn mount(args: &MountArgs, access: &StoreAccess) -> Result<()> {
    let result = start(args, access);
    if let (Err(error), Some(path)) = (&result, &args.error_file) {
        let message = encfs_store::redact::redact(&format!("{error:#}"));
        let _ = write_json(
            path,
            &serde_json::json!({"state": "error", "message": message}),
        );
    }
    result
}

fn start(args: &MountArgs, access: &StoreAccess) -> Result<()> {
    let (url, mountpoint) = url_and_mountpoint(args)?;
    if args.daemon {
        return daemonize(args, access, url);
    }
    if std::env::var_os(ALLOCATOR_PURGE_DELAY.0).is_none() {
        // Start over with the allocator setting in the environment (replaces this process; the
        // new image's command line holds no secret either).
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().context("cannot find the encfs executable")?;
        let (address, ..) = address_of(&args.datastore, url, args.mode, args.key.as_deref())?;
        let error = child_command(&exe, std::env::args_os().skip(1), access, &address)?
            .env(ALLOCATOR_PURGE_DELAY.0, ALLOCATOR_PURGE_DELAY.1)
            .exec();
        eprintln!("encfs: warning: cannot re-run with allocator settings: {error}");
    }
    serve(args, access, url, mountpoint)
}

/// The store URL (none with `--datastore`) and the mount point of the command line.
fn url_and_mountpoint(args: &MountArgs) -> Result<(Option<&str>, PathBuf)> {
    Ok(match (&args.datastore.datastore, args.paths.as_slice()) {
        (Some(_), [mountpoint]) => (None, PathBuf::from(mountpoint)),
        (None, [url, mountpoint]) => (Some(url.as_str()), PathBuf::from(mountpoint)),
        (Some(_), _) => bail!("with --datastore, give only the mount point"),
        (None, _) => bail!("usage: encfs mount URL MOUNTPOINT --key FILE"),
    })
}

fn serve(
    args: &MountArgs,
    access: &StoreAccess,
    url: Option<&str>,
    mountpoint: PathBuf,
) -> Result<()> {
    let meta = std::fs::metadata(&mountpoint)
        .with_context(|| format!("mount point {}", mountpoint.display()))?;
    anyhow::ensure!(
        meta.is_dir(),
        "mount point {} is not a directory",
        mountpoint.display()
    );
    let target = Target {
        selection: &args.datastore,
        url,
        mode: args.mode,
        key: args.key.as_deref(),
        key_release: args.key_release.as_deref(),
        encrypt_names: args.encrypt_names,
    };
    let (location, protection) = open_target(&target, args.read_write, access)?;
    let address = location.store.location();
    let pinned = super::dataset::pinned_for_mount(&args.manifest, &location)?;
    let options = MountOptions {
        read_write: args.read_write,
        cache_size: usize::try_from(args.cache_size).context("--cache-size too large")?,
        disk_cache: args.disk_cache.clone(),
        disk_cache_size: args.disk_cache_size,
        scratch_dir: args.scratch_dir.clone(),
        write_budget: usize::try_from(args.write_budget).context("--write-budget too large")?,
        segment_size: SegmentSize::new(args.segments.segment_size)?,
        // A datasource does not change under a run; a datasink sees its own writes at once.
        ttl: if args.read_write {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(60)
        },
        uid: meta.uid(),
        gid: meta.gid(),
        request_timeout: access.request_timeout.max(Duration::from_millis(100)),
        force_uid: args.uid,
        force_gid: args.gid,
        umask: args.umask,
        allow_other: args.allow_other,
        special_files: args.special_files,
        ..MountOptions::default()
    };
    let mut fs = EncFs::new(location.store, &location.prefix, protection, options)
        .with_context(|| format!("cannot mount {address}"))?;
    if let Some(pinned) = &pinned {
        fs = fs.pinned_to(pinned.clone()).context("--manifest")?;
    }
    // A wrong key, a wrong mode or a missing container fails here, before anything is served.
    fs.verify()
        .with_context(|| format!("cannot mount {address}"))?;
    let mount = Mount::start(fs, &mountpoint, &address)
        .with_context(|| format!("cannot mount at {}", mountpoint.display()))?;
    let ready = serde_json::json!({
        "state": "ready",
        "mountpoint": mountpoint,
        "source": address,
        "read_write": args.read_write,
        "pid": std::process::id(),
    });
    if let Some(path) = &args.status_file {
        write_json(path, &super::dataset::ready_with(&ready, pinned.as_deref()))?;
    }
    eprintln!(
        "encfs: {address} mounted at {} ({})",
        mountpoint.display(),
        if args.read_write {
            "read-write"
        } else {
            "read-only"
        }
    );
    // SIGINT / SIGTERM unmount; an outside unmount ends the session by itself. While files are
    // open the unmount is refused: it is retried until --request-timeout has passed or a second
    // signal comes, then the FUSE connection is aborted (every pending request fails, callers
    // are freed) and the mount point detached. Nothing uncommitted is published by that: the
    // store keeps each file's previous version.
    let target = mountpoint.clone();
    let connection = encfs_fs::mount::connection_id(&mountpoint);
    let patience = access.request_timeout.max(Duration::from_millis(100));
    let forced = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let forced_flag = forced.clone();
    let ended = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ended_flag = ended.clone();
    let watcher =
        super::dataset::watch_status(pinned, args.status_file.clone(), ready, ended.clone());
    let signals = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            // Whether this mount's own session and connection are still there: a connection
            // number is reused by the next FUSE mount once this one is gone, and a mount
            // unmounted from outside ends by itself.
            let still_ours = || {
                !ended_flag.load(std::sync::atomic::Ordering::SeqCst)
                    && encfs_fs::mount::connection_id(&target) == connection
            };
            let give_up = tokio::time::Instant::now() + patience;
            let mut attempt = 0u32;
            loop {
                if !still_ours() {
                    return;
                }
                match encfs_fs::mount::unmount(&target) {
                    Ok(()) => return,
                    Err(error) if attempt.is_multiple_of(20) => eprintln!(
                        "encfs: unmount of {} refused ({error}): files are open; retrying for \
                         up to {} s (a second signal aborts now)",
                        target.display(),
                        patience.as_secs()
                    ),
                    Err(_) => {}
                }
                attempt += 1;
                tokio::select! {
                    _ = int.recv() => break,
                    _ = term.recv() => break,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
                if tokio::time::Instant::now() >= give_up {
                    break;
                }
            }
            if !still_ours() {
                return;
            }
            forced_flag.store(true, std::sync::atomic::Ordering::SeqCst);
            eprintln!(
                "encfs: aborting the mount at {}: open files lose what they had not committed",
                target.display()
            );
            // Detach first, so the mount point is gone before the aborted session ends and
            // the process exits; then free the callers still blocked on the connection.
            let _ = encfs_fs::mount::detach(&target);
            if let Some(id) = connection
                && !ended_flag.load(std::sync::atomic::Ordering::SeqCst)
            {
                encfs_fs::mount::abort_connection(id);
            }
        });
    });
    let result = mount.join();
    ended.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(watcher) = watcher {
        let _ = watcher.join();
    }
    if forced.load(std::sync::atomic::Ordering::SeqCst) {
        // The session ended because of the abort: let the signal thread finish its clean-up
        // (the control filesystem it may have mounted) before this process exits.
        let _ = signals.join();
    }
    if let Some(path) = &args.status_file {
        let _ = std::fs::remove_file(path);
    }
    result.with_context(|| format!("FUSE session at {}", mountpoint.display()))?;
    if forced.load(std::sync::atomic::Ordering::SeqCst) {
        bail!(
            "{} was aborted with files still open (their uncommitted writes were dropped)",
            mountpoint.display()
        );
    }
    eprintln!("encfs: unmounted {}", mountpoint.display());
    Ok(())
}

/// Re-runs this command without `--daemon`, detached, and waits for its status or error file.
fn daemonize(args: &MountArgs, access: &StoreAccess, url: Option<&str>) -> Result<()> {
    let (address, ..) = address_of(&args.datastore, url, args.mode, args.key.as_deref())?;
    let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
    let status = args
        .status_file
        .clone()
        .unwrap_or_else(|| dir.path().join("status.json"));
    let error = args
        .error_file
        .clone()
        .unwrap_or_else(|| dir.path().join("error.json"));
    let _ = std::fs::remove_file(&status);
    let _ = std::fs::remove_file(&error);
    let mut command_line: Vec<std::ffi::OsString> = std::env::args_os()
        .skip(1)
        .filter(|a| a != "--daemon")
        .collect();
    if args.status_file.is_none() {
        command_line.push("--status-file".into());
        command_line.push(status.clone().into());
    }
    if args.error_file.is_none() {
        command_line.push("--error-file".into());
        command_line.push(error.clone().into());
    }
    let exe = std::env::current_exe().context("cannot find the encfs executable")?;
    let log = std::env::var_os("ENCFS_LOG_FILE").map(PathBuf::from);
    let stderr = match &log {
        Some(path) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?,
        ),
        None => Stdio::null(),
    };
    use std::os::unix::process::CommandExt;
    let mut child = child_command(&exe, command_line, access, &address)?
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .context("cannot start the background mount")?;
    let start = Instant::now();
    loop {
        if status.exists() {
            println!(
                "{}",
                std::fs::read_to_string(&status).unwrap_or_default().trim()
            );
            return Ok(());
        }
        if let Ok(text) = std::fs::read_to_string(&error) {
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or(text);
            bail!("{message}");
        }
        if let Some(code) = child.try_wait().context("background mount")? {
            bail!("the background mount exited ({code}) before it was ready");
        }
        if start.elapsed() > DAEMON_WAIT {
            let _ = child.kill();
            bail!("the background mount was not ready after {DAEMON_WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `encfs unmount`.
pub fn unmount(args: &UnmountArgs) -> Result<()> {
    encfs_fs::mount::unmount(&args.mountpoint)
        .with_context(|| format!("cannot unmount {}", args.mountpoint.display()))
}
