//! POSIX fidelity of the read-write mount through real kernel mounts over the embedded store:
//! `O_EXCL` against names made behind the mount, long names, persisted modes, owners and times,
//! symbolic links, FIFOs and device nodes, the errno of what a blob store cannot hold, and a tree presented to an
//! unprivileged user. Needs /dev/fuse and root (the README test command runs as root).

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use encfs_crypto::DataKey;
use encfs_fs::mount::{EncFs, Mount, MountOptions};
use encfs_fs::store::local::LocalStore;
use encfs_fs::store::protection::Protection;
use encfs_fs::store::{BlobStore, list_all};
use encfs_store::attributes::{META_GID, META_MODE_BITS, META_SYMLINK, META_UID};

struct Env {
    dir: tempfile::TempDir,
    container: PathBuf,
    store: Arc<dyn BlobStore>,
    protection: Protection,
    runtime: tokio::runtime::Runtime,
}

fn env() -> Env {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: run the tests with scripts/test-all.sh as root (it installs fuse3)"
    );
    let dir = tempfile::tempdir().unwrap();
    // Others (the unprivileged user of the tests below) may enter the test directory.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let container = dir.path().join("container");
    let store: Arc<dyn BlobStore> = Arc::new(LocalStore::new(&container));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(store.create_container()).unwrap();
    Env {
        dir,
        container,
        store,
        protection: Protection::Cse(Arc::new(DataKey::generate().unwrap())),
        runtime,
    }
}

impl Env {
    /// A read-write mount at `dir/<name>`.
    fn mount_at(&self, name: &str, options: MountOptions) -> (Mount, PathBuf) {
        let mountpoint = self.dir.path().join(name);
        fs::create_dir_all(&mountpoint).unwrap();
        let options = MountOptions {
            read_write: true,
            cache_size: 32 << 20,
            ..options
        };
        let fs = EncFs::new(self.store.clone(), "", self.protection.clone(), options).unwrap();
        fs.verify().unwrap();
        (Mount::start(fs, &mountpoint, "test").unwrap(), mountpoint)
    }

    fn mount(&self) -> (Mount, PathBuf) {
        self.mount_at("mnt", MountOptions::default())
    }

    fn metadata_of(&self, blob: &str) -> encfs_fs::store::Metadata {
        self.runtime
            .block_on(self.store.properties(blob, None))
            .unwrap()
            .metadata
    }
}

fn errno<T: std::fmt::Debug>(result: std::io::Result<T>) -> i32 {
    result.unwrap_err().raw_os_error().unwrap()
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

#[test]
fn create_exclusive_sees_a_file_made_behind_the_mount() {
    let env = env();
    // A long listing lifetime: the first mount's view of the directory stays stale.
    let slow = MountOptions {
        ttl: Duration::from_secs(60),
        ..MountOptions::default()
    };
    let (a, at_a) = env.mount_at("a", slow.clone());
    let (b, at_b) = env.mount_at("b", slow);
    assert_eq!(fs::read_dir(&at_a).unwrap().count(), 0);
    fs::write(at_b.join("x"), b"written by b").unwrap();
    fs::write(at_b.join("y"), b"also b").unwrap();
    // `a` has not listed since: the kernel asks it to create; the name exists in the store.
    let exclusive = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(at_a.join("x"));
    assert_eq!(errno(exclusive), libc::EEXIST);
    // Without O_TRUNC an existing file is opened, not emptied.
    let mut plain = OpenOptions::new()
        .append(true)
        .create(true)
        .open(at_a.join("y"))
        .unwrap();
    plain.write_all(b", then a").unwrap();
    drop(plain);
    a.unmount().unwrap();
    b.unmount().unwrap();
    let (mount, at) = env.mount();
    assert_eq!(fs::read(at.join("x")).unwrap(), b"written by b");
    assert_eq!(fs::read(at.join("y")).unwrap(), b"also b, then a");
    mount.unmount().unwrap();
}

#[test]
fn long_names_up_to_the_limits_and_enametoolong_beyond() {
    let env = env();
    let (mount, at) = env.mount();
    // 255 bytes in one component (two-byte characters: 765 bytes percent-encoded).
    let component = format!("{}x", "é".repeat(127));
    assert_eq!(component.len(), 255);
    fs::write(at.join(&component), b"one long component").unwrap();
    // A path of 1,024 characters: nested long directories and a file.
    let dir = ["d", "e", "f", "g"].map(|c| c.repeat(200)).join("/");
    fs::create_dir_all(at.join(&dir)).unwrap();
    let file = "h".repeat(1024 - dir.chars().count() - 1);
    let full = format!("{dir}/{file}");
    assert_eq!(full.chars().count(), 1024);
    fs::write(at.join(&full), b"a 1024-character name").unwrap();
    fs::write(at.join("short"), b"s").unwrap();
    // Beyond the limits.
    assert_eq!(
        errno(fs::write(at.join("n".repeat(256)), b"")),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        errno(fs::write(at.join(format!("{full}h")), b"")),
        libc::ENAMETOOLONG
    );
    assert_eq!(
        errno(fs::write(at.join(format!("{dir}/{file}h")), b"")),
        libc::ENAMETOOLONG
    );
    mount.unmount().unwrap();
    // The store lists the real names, in order, and a new mount reads them back.
    let names: Vec<String> = env
        .runtime
        .block_on(list_all(&*env.store, "", None))
        .unwrap()
        .blobs
        .into_iter()
        .map(|b| b.name)
        .collect();
    let mut expected = vec![full.clone(), "short".to_owned(), component.clone()];
    expected.sort();
    assert_eq!(names, expected);
    let (mount, at) = env.mount();
    assert_eq!(
        fs::read(at.join(&component)).unwrap(),
        b"one long component"
    );
    assert_eq!(fs::read(at.join(&full)).unwrap(), b"a 1024-character name");
    let listed: Vec<String> = fs::read_dir(&at)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(listed.contains(&component), "{listed:?}");
    fs::remove_file(at.join(&full)).unwrap();
    mount.unmount().unwrap();
    assert!(
        !env.runtime
            .block_on(list_all(&*env.store, "", None))
            .unwrap()
            .blobs
            .iter()
            .any(|b| b.name == full)
    );
}

#[test]
fn chmod_chown_and_utimes_persist_and_are_enforced() {
    let env = env();
    let stamp = UNIX_EPOCH + Duration::new(1_000_000_000, 123_456_789);
    {
        let (mount, at) = env.mount();
        fs::write(at.join("script.sh"), b"#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(at.join("script.sh"), fs::Permissions::from_mode(0o751)).unwrap();
        std::os::unix::fs::chown(at.join("script.sh"), Some(1234), Some(5678)).unwrap();
        let file = fs::File::options()
            .write(true)
            .open(at.join("script.sh"))
            .unwrap();
        file.set_modified(stamp).unwrap();
        drop(file);
        // A file being written keeps its mode through the commit at close.
        let mut secret = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(at.join("secret"))
            .unwrap();
        secret.write_all(b"root only").unwrap();
        drop(secret);
        mount.unmount().unwrap();
    }
    let meta = env.metadata_of("script.sh");
    assert_eq!(meta[META_MODE_BITS], "751");
    assert_eq!((&*meta[META_UID], &*meta[META_GID]), ("1234", "5678"));
    assert_eq!(env.metadata_of("secret")[META_MODE_BITS], "600");
    // A new mount shows what was recorded, to stat and to ls -l.
    let (mount, at) = env.mount_at(
        "mnt2",
        MountOptions {
            allow_other: true,
            ..MountOptions::default()
        },
    );
    let script = fs::metadata(at.join("script.sh")).unwrap();
    assert_eq!(script.mode() & 0o7777, 0o751);
    assert_eq!((script.uid(), script.gid()), (1234, 5678));
    assert_eq!(script.modified().unwrap(), stamp);
    let ls = Command::new("ls")
        .args(["-ln", "--time-style=+%Y"])
        .arg(&at)
        .output()
        .unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(
        ls.lines()
            .any(|l| l.starts_with("-rwxr-x--x 1 1234 5678") && l.contains(" 2001 script.sh")),
        "{ls}"
    );
    // The kernel checks the recorded mode (default_permissions): uid 1000 may not read it.
    let denied = Command::new("setpriv")
        .args([
            "--reuid",
            "1000",
            "--regid",
            "1000",
            "--clear-groups",
            "cat",
        ])
        .arg(at.join("secret"))
        .output()
        .unwrap();
    assert!(!denied.status.success());
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("Permission denied"),
        "{denied:?}"
    );
    mount.unmount().unwrap();
}

#[test]
fn symbolic_links_are_stored_followed_and_refused_with_nofollow() {
    let env = env();
    {
        let (mount, at) = env.mount();
        fs::create_dir(at.join("data")).unwrap();
        fs::write(at.join("data/real.csv"), b"a,b\n").unwrap();
        std::os::unix::fs::symlink("data/real.csv", at.join("link")).unwrap();
        std::os::unix::fs::symlink("loop2", at.join("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", at.join("loop2")).unwrap();
        assert_eq!(
            fs::read_link(at.join("link")).unwrap(),
            Path::new("data/real.csv")
        );
        assert!(
            fs::symlink_metadata(at.join("link"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read(at.join("link")).unwrap(), b"a,b\n");
        assert_eq!(errno(fs::read(at.join("loop1"))), libc::ELOOP);
        let nofollow = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(at.join("link"));
        assert_eq!(errno(nofollow), libc::ELOOP);
        mount.unmount().unwrap();
    }
    let meta = env.metadata_of("link");
    assert_eq!(meta[META_SYMLINK], "1");
    // In cse mode the target is sealed like any content.
    let raw = fs::read_dir(env.container.join("blobs"))
        .unwrap()
        .map(|e| fs::read(e.unwrap().path()).unwrap())
        .collect::<Vec<_>>();
    assert!(
        !raw.iter()
            .any(|b| b.windows(13).any(|w| w == b"data/real.csv")),
        "link target stored in clear"
    );
    let (mount, at) = env.mount();
    assert_eq!(
        fs::read_link(at.join("link")).unwrap(),
        Path::new("data/real.csv")
    );
    assert_eq!(fs::read(at.join("link")).unwrap(), b"a,b\n");
    fs::rename(at.join("link"), at.join("moved")).unwrap();
    assert_eq!(fs::read(at.join("moved")).unwrap(), b"a,b\n");
    fs::remove_file(at.join("moved")).unwrap();
    mount.unmount().unwrap();
}

#[test]
fn a_directory_emptied_by_a_rename_or_unlink_stays() {
    let env = env();
    let (mount, at) = env.mount();
    fs::create_dir_all(at.join("a/b")).unwrap();
    fs::write(at.join("a/b/f"), b"1").unwrap();
    fs::write(at.join("a/g"), b"2").unwrap();
    // Let the listings expire so the mount asks the store, which no longer lists `a/b/`.
    std::thread::sleep(Duration::from_millis(1100));
    fs::rename(at.join("a/b/f"), at.join("moved")).unwrap();
    fs::remove_file(at.join("a/g")).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert!(fs::metadata(at.join("a/b")).unwrap().is_dir());
    assert!(fs::metadata(at.join("a")).unwrap().is_dir());
    fs::write(at.join("a/b/again"), b"3").unwrap();
    fs::remove_dir(at.join("a/b")).unwrap_err();
    mount.unmount().unwrap();
}

/// By default FIFOs, sockets and device nodes are empty marker blobs: a FIFO carries data
/// between two processes on the mount, a device node shows its type and number but never opens
/// as a device (`nodev`), and both survive a remount.
#[test]
fn fifos_and_device_nodes_are_recorded_and_devices_never_open() {
    let env = env();
    {
        let (mount, at) = env.mount();
        let fifo = c_path(&at.join("pipe"));
        // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
        let reader = {
            let path = at.join("pipe");
            std::thread::spawn(move || fs::read(path).unwrap())
        };
        fs::write(at.join("pipe"), b"through the fifo").unwrap();
        assert_eq!(reader.join().unwrap(), b"through the fifo");
        let null = c_path(&at.join("null"));
        // SAFETY: as above; mknod only reads the path.
        let made =
            unsafe { libc::mknod(null.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
        assert_eq!(made, 0, "{}", std::io::Error::last_os_error());
        mount.unmount().unwrap();
    }
    let node = env.metadata_of("null");
    assert_eq!(
        node.get(encfs_store::attributes::META_NODE)
            .map(String::as_str),
        Some("char")
    );
    let (mount, at) = env.mount();
    let pipe = fs::symlink_metadata(at.join("pipe")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&pipe.file_type()));
    assert_eq!(pipe.mode() & 0o777, 0o640);
    let null = fs::symlink_metadata(at.join("null")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &null.file_type()
    ));
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    // /dev/null's number, yet opening it on this mount is refused: the mount is nodev.
    assert_eq!(errno(fs::File::open(at.join("null"))), libc::EACCES);
    assert_eq!(errno(fs::write(at.join("null"), b"x")), libc::EACCES);
    fs::remove_file(at.join("null")).unwrap();
    fs::remove_file(at.join("pipe")).unwrap();
    mount.unmount().unwrap();
}

#[test]
fn what_a_blob_store_cannot_hold_gets_the_posix_errno() {
    let env = env();
    let refuse_special = MountOptions {
        special_files: false,
        ..MountOptions::default()
    };
    let (mount, at) = env.mount_at("mnt", refuse_special);
    fs::write(at.join("f"), b"1").unwrap();
    fs::write(at.join("g"), b"2").unwrap();
    assert_eq!(
        errno(fs::hard_link(at.join("f"), at.join("h"))),
        libc::EPERM
    );
    let fifo = c_path(&at.join("fifo"));
    // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EPERM)
    );
    // SAFETY: as above.
    let node = unsafe { libc::mknod(fifo.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 3)) };
    assert_eq!(node, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EPERM)
    );
    // mknod of a regular file is creat.
    let regular = c_path(&at.join("plain"));
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::mknod(regular.as_ptr(), libc::S_IFREG | 0o640, 0) },
        0
    );
    assert_eq!(
        fs::metadata(at.join("plain")).unwrap().mode() & 0o777,
        0o640
    );
    let rename2 = |from: &str, to: &str, flags: libc::c_uint| {
        let (from, to) = (c_path(&at.join(from)), c_path(&at.join(to)));
        // SAFETY: valid NUL-terminated paths; renameat2 only reads them.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                flags,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    assert_eq!(
        errno(rename2("f", "g", libc::RENAME_EXCHANGE)),
        libc::EINVAL
    );
    assert_eq!(
        errno(rename2("f", "g", libc::RENAME_NOREPLACE)),
        libc::EEXIST
    );
    assert_eq!(fs::read(at.join("g")).unwrap(), b"2");
    rename2("f", "fresh", libc::RENAME_NOREPLACE).unwrap();
    assert_eq!(fs::read(at.join("fresh")).unwrap(), b"1");
    mount.unmount().unwrap();
}

#[test]
fn an_unprivileged_user_reads_and_writes_a_tree_mounted_by_root() {
    let env = env();
    {
        let (mount, at) = env.mount();
        fs::create_dir(at.join("inputs")).unwrap();
        fs::write(at.join("inputs/data.csv"), b"x,y\n").unwrap();
        fs::set_permissions(
            at.join("inputs/data.csv"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        mount.unmount().unwrap();
    }
    let presented = MountOptions {
        allow_other: true,
        force_uid: Some(1000),
        force_gid: Some(1000),
        umask: Some(0o022),
        ..MountOptions::default()
    };
    let (mount, at) = env.mount_at("cleanroom", presented);
    let as_user = |script: &str| {
        Command::new("setpriv")
            .args(["--reuid", "1000", "--regid", "1000", "--clear-groups"])
            .args(["sh", "-c", script])
            .current_dir(&at)
            .output()
            .unwrap()
    };
    let run = as_user(
        "cat inputs/data.csv && mkdir -p out/model && echo trained > out/model/weights \
         && chmod 0640 out/model/weights && cat out/model/weights && id -u",
    );
    assert!(run.status.success(), "{run:?}");
    assert_eq!(String::from_utf8_lossy(&run.stdout), "x,y\ntrained\n1000\n");
    let weights = fs::metadata(at.join("out/model/weights")).unwrap();
    assert_eq!((weights.uid(), weights.gid()), (1000, 1000));
    assert_eq!(weights.mode() & 0o777, 0o640);
    assert_eq!(
        fs::metadata(at.join("inputs")).unwrap().mode() & 0o777,
        0o755
    );
    mount.unmount().unwrap();
    // What was recorded: the writer's ids and mode; the root-made input kept its owner.
    let meta = env.metadata_of("out/model/weights");
    assert_eq!((&*meta[META_UID], &*meta[META_GID]), ("1000", "1000"));
    assert_eq!(meta[META_MODE_BITS], "640");
    let input = env.metadata_of("inputs/data.csv");
    assert_eq!((&*input[META_UID], &*input[META_MODE_BITS]), ("0", "600"));
}
