//! The FUSE mount: a datasource (read-only) or datasink (read-write) view of one store prefix as
//! plain files, while the store holds only ciphertext (`cse`) or CPK-protected blobs.
//!
//! * [`core`]: the filesystem without the kernel ([`EncFs`]), built and checked; its operations,
//!   by concern: `namespace` (inodes over blob names, listings, `lookup`), `attributes` (`stat`,
//!   `setattr`), `entries` (`create`, `mkdir`, `unlink`, `rmdir`, `rename`), `special_nodes`
//!   (links, FIFOs, devices), `handles` (`open` to `release`), `read` (the read path with
//!   prefetch) and `writers` (writes and commits);
//! * [`error`]: [`FsError`], the one error type, and the one mapping of store errors to errno;
//! * `options`: [`MountOptions`];
//! * [`pinned`]: a mount that serves exactly what a dataset manifest lists ([`Pinned`]);
//! * [`cache`]: the memory-bounded segment cache with its optional sealed disk tier;
//! * [`source`]: fetching and verifying runs of segments of one blob version;
//! * [`write`](mod@write): dirty files, staged blocks and the atomic commit;
//! * `scratch`: disk space that only ever holds data sealed under an ephemeral key;
//! * `pool`: reusable read buffers that cached segments are slices of;
//! * [`fuse`]: the fuser adapter; [`Mount`] runs a session until unmounted.

mod attributes;
pub mod cache;
pub mod core;
mod entries;
pub mod error;
pub mod fuse;
mod handles;
mod namespace;
mod options;
pub mod pinned;
mod pool;
mod read;
mod scratch;
pub mod source;
mod special_nodes;
pub mod write;
mod writers;

use std::path::{Path, PathBuf};

pub use self::core::{
    Attr, AttrChanges, Caller, CreateFlags, EncFs, MountError, MountOptions, NodeKind, ROOT,
};
pub use self::error::FsError;
pub use self::pinned::{Pinned, PinnedStatus};

/// A running mount: the FUSE session on its own threads.
pub struct Mount {
    mountpoint: PathBuf,
    session: Option<fuser::BackgroundSession>,
    /// Kept so the session's mount record lives as long as this handle.
    unmounter: Option<fuser::SessionUnmounter>,
}

impl Mount {
    /// Mounts `fs` at `mountpoint` and starts serving (multi-threaded session).
    pub fn start(fs: EncFs, mountpoint: &Path, source_name: &str) -> std::io::Result<Self> {
        if std::env::var_os("ENCFS_KEEP_THP").is_none() {
            disable_huge_pages();
        }
        let read_write = fs.options().read_write;
        let allow_other = fs.options().allow_other;
        let mut config = fuser::Config::default();
        if allow_other {
            // Users other than the one who mounted (the application's user in a clean room);
            // `default_permissions` keeps the kernel checking modes and owners for them.
            config.acl = fuser::SessionACL::All;
        }
        config.mount_options = vec![
            fuser::MountOption::FSName(format!("encfs:{source_name}")),
            fuser::MountOption::Subtype("encfs".into()),
            fuser::MountOption::NoDev,
            fuser::MountOption::NoSuid,
            fuser::MountOption::NoAtime,
            fuser::MountOption::DefaultPermissions,
            fuser::MountOption::CUSTOM(format!("max_read={}", fuse::MAX_IO)),
            if read_write {
                fuser::MountOption::RW
            } else {
                fuser::MountOption::RO
            },
        ];
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        config.n_threads = Some((cpus * 2).max(4));
        config.clone_fd = true;
        let notifier = std::sync::Arc::new(std::sync::OnceLock::new());
        let mut session =
            fuser::Session::new(fuse::Fuse::new(fs, notifier.clone()), mountpoint, &config)?;
        let _ = notifier.set(session.notifier());
        let unmounter = session.unmount_callable();
        let session = session.spawn()?;
        raise_readahead(mountpoint);
        Ok(Self {
            mountpoint: mountpoint.to_owned(),
            session: Some(session),
            unmounter: Some(unmounter),
        })
    }

    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmounts and waits for the session threads.
    pub fn unmount(mut self) -> std::io::Result<()> {
        // fuser's own unmounter skips the unmount when it believes the session already ended,
        // which it can with cloned device descriptors: unmount by the mount point instead.
        unmount(&self.mountpoint)?;
        self.unmounter.take();
        if let Some(session) = self.session.take() {
            session.join()?;
        }
        Ok(())
    }

    /// Waits until the filesystem is unmounted from outside (`encfs unmount`, `fusermount3 -u`).
    pub fn join(mut self) -> std::io::Result<()> {
        match self.session.take() {
            Some(session) => session.join(),
            None => Ok(()),
        }
    }
}

impl Drop for Mount {
    /// A mount dropped without [`Mount::unmount`] (a panic, an early return) is detached lazily
    /// so it never outlives the process as a dead mount point.
    fn drop(&mut self) {
        if self.session.is_some() {
            let _ = std::process::Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.mountpoint)
                .output();
        }
    }
}

/// Turns transparent huge pages off for this process. The mount allocates and frees read
/// buffers constantly; with huge pages every fresh allocation faulted in (and zeroed) a whole
/// 2 MiB page, which measured as a third of the CPU time of 4 KiB random reads.
pub fn disable_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integer arguments and only changes a process flag.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Lets the kernel read ahead up to a whole FUSE request (the default is 128 KiB), so
/// sequential reads reach the filesystem as 1 MiB requests. Needs root; harmless otherwise.
fn raise_readahead(mountpoint: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(mountpoint) else {
        return;
    };
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let knob = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    let _ = std::fs::write(knob, (fuse::MAX_IO / 1024 * 4).to_string());
}

/// The kernel's number for the FUSE connection mounted at `mountpoint` now (its name under
/// `/sys/fs/fuse/connections/`: the superblock's device number, in the kernel's encoding), read
/// from `/proc/self/mountinfo`, so no request reaches the filesystem itself. `None` when no FUSE
/// filesystem is mounted there (unmounted, or detached).
pub fn connection_id(mountpoint: &Path) -> Option<u64> {
    // Only the parent is resolved: resolving the mount point itself would ask the filesystem.
    let mountpoint = match (mountpoint.parent(), mountpoint.file_name()) {
        (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => {
            std::fs::canonicalize(parent).ok()?.join(name)
        }
        _ => std::path::absolute(mountpoint).ok()?,
    };
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    fuse_connection_in(&table, &mountpoint)
}

/// [`connection_id`] over the text of a `mountinfo` table: the last (topmost) mount at
/// `mountpoint`, if it is a FUSE one.
fn fuse_connection_in(table: &str, mountpoint: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let wanted = mountpoint.as_os_str().as_bytes();
    let top = table.lines().rev().find(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|at| unescape_mountinfo(at) == wanted)
    })?;
    let (fields, tail) = top.split_once(" - ")?;
    let fs_type = tail.split(' ').next()?;
    if fs_type != "fuse" && !fs_type.starts_with("fuse.") {
        return None;
    }
    let (major, minor) = fields.split(' ').nth(2)?.split_once(':')?;
    Some((major.parse::<u64>().ok()? << 20) | minor.parse::<u64>().ok()?)
}

/// A `mountinfo` path field with its octal escapes (`\040` for a space) undone.
fn unescape_mountinfo(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            std::str::from_utf8(digits)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// Aborts a FUSE connection (root only): every pending and later request fails with
/// `ENOTCONN`, so no caller stays blocked on the mount, and the session ends.
pub fn abort_connection(id: u64) {
    let connections = Path::new("/sys/fs/fuse/connections");
    let abort = connections.join(id.to_string()).join("abort");
    // The control filesystem is not always mounted (it is where systemd is absent): mount it
    // for this write only, and leave the machine as it was.
    let mounted_here = !abort.exists()
        && std::process::Command::new("mount")
            .args(["-t", "fusectl", "fusectl"])
            .arg(connections)
            .output()
            .is_ok_and(|o| o.status.success());
    let _ = std::fs::write(abort, "1");
    if mounted_here {
        let _ = std::process::Command::new("umount")
            .arg(connections)
            .output();
    }
}

/// Detaches the mount point at once, even while files are open (`fusermount3 -u -z`).
pub fn detach(mountpoint: &Path) -> std::io::Result<()> {
    let status = std::process::Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(mountpoint)
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{}: lazy unmount failed",
            mountpoint.display()
        )))
    }
}

/// Unmounts whatever FUSE filesystem is at `mountpoint` (`fusermount3 -u`, or `umount` as root).
pub fn unmount(mountpoint: &Path) -> std::io::Result<()> {
    let fusermount = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(mountpoint)
        .output();
    if fusermount.as_ref().is_ok_and(|o| o.status.success()) {
        return Ok(());
    }
    let umount = std::process::Command::new("umount")
        .arg(mountpoint)
        .output()?;
    if umount.status.success() {
        return Ok(());
    }
    let said = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).trim().to_owned();
    let reason = match &fusermount {
        Ok(output) if !said(output).is_empty() => said(output),
        _ => said(&umount),
    };
    Err(std::io::Error::other(format!(
        "{}: {reason}",
        mountpoint.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
97 22 0:52 / /tmp/a\\040b rw,nosuid,nodev - fuse.encfs encfs:x rw,user_id=0,group_id=0
98 22 0:53 / /tmp/plain rw - tmpfs tmpfs rw
99 22 0:54 / /tmp/plain rw,nosuid,nodev - fuse encfs:y rw
100 22 0:55 / /tmp/covered rw - fuse.encfs encfs:z rw
101 22 0:56 / /tmp/covered rw - tmpfs tmpfs rw
";

    #[test]
    fn the_connection_is_the_topmost_fuse_mount_at_the_path() {
        let at = |p: &str| fuse_connection_in(TABLE, Path::new(p));
        assert_eq!(at("/tmp/a b"), Some(52));
        assert_eq!(at("/tmp/plain"), Some(54));
        // A tmpfs mounted over the FUSE mount: nothing of ours is reachable there.
        assert_eq!(at("/tmp/covered"), None);
        assert_eq!(at("/"), None);
        assert_eq!(at("/tmp/missing"), None);
        assert_eq!(
            fuse_connection_in("1 0 8:1 / /x rw - fuse.encfs e rw\n", Path::new("/x")),
            Some(8 << 20 | 1)
        );
    }
}
