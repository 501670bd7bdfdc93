//! The FUSE adapter: turns kernel requests (fuser 0.18, multi-threaded session) into calls on
//! [`EncFs`] and its results into replies. Everything that can block runs on the calling FUSE
//! thread; fetches, decryption and staging run on the mount's runtime.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};

use super::core::{Attr, AttrChanges, Caller, CreateFlags, EncFs, NodeKind};
use super::error::FsError;
use crate::store::attributes::SpecialKind;

/// Largest read and write the kernel sends in one request.
pub const MAX_IO: u32 = 1 << 20;

/// [`EncFs`] as a FUSE filesystem.
pub struct Fuse {
    fs: EncFs,
    /// Set once the session exists: pushes whole segments into the kernel's page cache.
    notifier: Arc<OnceLock<fuser::Notifier>>,
    ttl: Duration,
}

impl Fuse {
    /// Wraps a filesystem.
    pub fn new(fs: EncFs, notifier: Arc<OnceLock<fuser::Notifier>>) -> Self {
        let options = fs.options();
        Self {
            notifier,
            ttl: options.ttl,
            fs,
        }
    }

    fn attr(&self, attr: &Attr) -> FileAttr {
        FileAttr {
            ino: INodeNo(attr.ino),
            size: attr.size,
            blocks: attr.size.div_ceil(512),
            atime: attr.atime,
            mtime: attr.mtime,
            ctime: attr.ctime,
            crtime: attr.mtime,
            kind: file_type(attr.kind),
            perm: attr.perm,
            nlink: attr.nlink,
            uid: attr.uid,
            gid: attr.gid,
            rdev: attr.rdev,
            blksize: MAX_IO,
            flags: 0,
        }
    }
}

/// The process (thread group) a request comes from: FUSE reports the calling thread.
fn process_of(req: &Request) -> u32 {
    let tid = req.pid();
    std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(tid)
}

/// The boundary: a failed operation replies its errno (the error logged itself, if it deserved
/// a line, when it was made; see [`super::error`]).
fn errno(error: FsError) -> Errno {
    Errno::from_i32(error.errno())
}

fn file_type(kind: NodeKind) -> FileType {
    match kind {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Special(SpecialKind::Fifo) => FileType::NamedPipe,
        NodeKind::Special(SpecialKind::Socket) => FileType::Socket,
        NodeKind::Special(SpecialKind::CharDevice) => FileType::CharDevice,
        NodeKind::Special(SpecialKind::BlockDevice) => FileType::BlockDevice,
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn time(value: TimeOrNow) -> SystemTime {
    match value {
        TimeOrNow::SpecificTime(time) => time,
        TimeOrNow::Now => SystemTime::now(),
    }
}

fn name(name: &OsStr) -> Result<&str, Errno> {
    name.to_str().ok_or(Errno::EINVAL)
}

impl Filesystem for Fuse {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_IO);
        let _ = config.set_max_readahead(MAX_IO);
        // Let the kernel keep more readahead requests in flight than its default (12).
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name_: &OsStr, reply: ReplyEntry) {
        match name(name_).and_then(|n| self.fs.lookup(parent.0, n).map_err(errno)) {
            Ok(attr) => reply.entry(&self.ttl, &self.attr(&attr), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(attr) => reply.attr(&self.ttl, &self.attr(&attr)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let changes = AttrChanges {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
        };
        match self.fs.setattr(ino.0, changes) {
            Ok(attr) => reply.attr(&self.ttl, &self.attr(&attr)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name_: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        // The kernel applied the umask already (no FUSE_DONT_MASK).
        let made =
            name(name_).and_then(|n| self.fs.mkdir(parent.0, n, mode, caller(req)).map_err(errno));
        match made {
            Ok(attr) => reply.entry(&self.ttl, &self.attr(&attr), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name_: &OsStr, reply: ReplyEmpty) {
        match name(name_).and_then(|n| self.fs.unlink(parent.0, n).map_err(errno)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name_: &OsStr, reply: ReplyEmpty) {
        match name(name_).and_then(|n| self.fs.rmdir(parent.0, n).map_err(errno)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name_: &OsStr,
        new_parent: INodeNo,
        new_name: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
            // RENAME_EXCHANGE and RENAME_WHITEOUT cannot be done on a blob store.
            return reply.error(Errno::EINVAL);
        }
        let result = name(name_).and_then(|from| {
            let to = name(new_name)?;
            self.fs
                .rename(parent.0, from, new_parent.0, to, no_replace)
                .map_err(errno)
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let access = flags.0 & libc::O_ACCMODE;
        let write = access == libc::O_WRONLY || access == libc::O_RDWR;
        let truncate = flags.0 & libc::O_TRUNC != 0;
        match self.fs.open(ino.0, write, truncate) {
            // A read-only mount serves immutable versions: the page cache may keep them.
            Ok(fh) => {
                if write {
                    self.fs.set_owner(fh, process_of(req));
                }
                let keep = if self.fs.options().read_write {
                    FopenFlags::empty()
                } else {
                    FopenFlags::FOPEN_KEEP_CACHE
                };
                reply.opened(FileHandle(fh), keep)
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.fs.read(fh.0, offset, size) {
            Ok(data) => {
                reply.data(&data);
                // After the reply (its pages are unlocked by then): the rest of the segment.
                if let (Some((start, segment)), Some(notifier)) =
                    (self.fs.neighbours(fh.0, offset, size), self.notifier.get())
                {
                    let _ = notifier.store(ino, start, &segment);
                }
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.fs.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        match self.fs.flush_from(fh.0, Some(process_of(req))) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let result = self.fs.release(fh.0);
        if let Some(notifier) = self.notifier.get() {
            for ino in self.fs.take_stale_attributes() {
                // Attributes only (a negative offset); this mount never keeps file pages
                // across opens, read-write.
                let _ = notifier.inval_inode(INodeNo(ino), -1, 0);
            }
        }
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.fs.fsync(fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let made = name(link_name).and_then(|n| {
            let target = target.to_str().ok_or(Errno::EINVAL)?;
            self.fs
                .symlink(parent.0, n, target, caller(req))
                .map_err(errno)
        });
        match made {
            Ok(attr) => reply.entry(&self.ttl, &self.attr(&attr), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(e)),
        }
    }

    /// Hard links: a blob store has one name per blob (see the table in `docs/architecture.md`).
    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _new_parent: INodeNo,
        _new_name: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::from_i32(super::core::UNSUPPORTED_LINK));
    }

    /// `mknod` with `S_IFREG` is `creat`; FIFOs, sockets and device nodes are empty marker
    /// blobs by default, `EPERM` with `--no-special-files`.
    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name_: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let special = match mode & libc::S_IFMT {
            libc::S_IFREG => None,
            libc::S_IFIFO => Some(SpecialKind::Fifo),
            libc::S_IFSOCK => Some(SpecialKind::Socket),
            libc::S_IFCHR => Some(SpecialKind::CharDevice),
            libc::S_IFBLK => Some(SpecialKind::BlockDevice),
            _ => return reply.error(Errno::EINVAL),
        };
        if let Some(kind) = special {
            let made = name(name_).and_then(|n| {
                self.fs
                    .mknod_special(parent.0, n, kind, mode, rdev, caller(req))
                    .map_err(errno)
            });
            return match made {
                Ok(attr) => reply.entry(&self.ttl, &self.attr(&attr), Generation(0)),
                Err(e) => reply.error(e),
            };
        }
        let flags = CreateFlags {
            exclusive: true,
            truncate: false,
        };
        let made = name(name_).and_then(|n| {
            self.fs
                .create(parent.0, n, mode, caller(req), flags)
                .map_err(errno)
        });
        match made.and_then(|(attr, fh)| self.fs.release(fh).map(|()| attr).map_err(errno)) {
            Ok(attr) => reply.entry(&self.ttl, &self.attr(&attr), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.getattr(ino.0) {
            Ok(attr) if attr.kind == NodeKind::Dir => {
                reply.opened(FileHandle(0), FopenFlags::empty())
            }
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.fs.readdir(ino.0) {
            Ok(entries) => entries,
            Err(e) => return reply.error(errno(e)),
        };
        let parent = self.fs.parent(ino.0).unwrap_or(ino.0);
        let dots = [
            (ino.0, NodeKind::Dir, ".".to_owned()),
            (parent, NodeKind::Dir, "..".to_owned()),
        ];
        for (i, (child, kind, entry)) in dots
            .into_iter()
            .chain(entries)
            .enumerate()
            .skip(offset as usize)
        {
            if reply.add(INodeNo(child), (i + 1) as u64, file_type(kind), &entry) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // A blob store has no fixed capacity: report plenty.
        let blocks = 1u64 << 40;
        reply.statfs(blocks, blocks, blocks, 1 << 30, 1 << 30, 4096, 255, 4096);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name_: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let flags = CreateFlags {
            exclusive: flags & libc::O_EXCL != 0,
            truncate: flags & libc::O_TRUNC != 0,
        };
        let created = name(name_).and_then(|n| {
            self.fs
                .create(parent.0, n, mode, caller(req), flags)
                .map_err(errno)
        });
        match created {
            Ok((attr, fh)) => {
                self.fs.set_owner(fh, process_of(req));
                reply.created(
                    &self.ttl,
                    &self.attr(&attr),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                )
            }
            Err(e) => reply.error(e),
        }
    }
}
