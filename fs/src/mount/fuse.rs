//! The FUSE adapter: turns kernel requests (fuser 0.18, multi-threaded session) into calls on
//! [`EncFs`] and its results into replies. Everything that can block runs on the calling FUSE
//! thread; fetches, decryption and staging run on the mount's runtime.

use std::ffi::OsStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};

use super::core::{Attr, EncFs, NodeKind};

/// Largest read and write the kernel sends in one request.
pub const MAX_IO: u32 = 1 << 20;

/// [`EncFs`] as a FUSE filesystem.
pub struct Fuse {
    fs: EncFs,
    /// Set once the session exists: pushes whole segments into the kernel's page cache.
    notifier: Arc<OnceLock<fuser::Notifier>>,
    ttl: Duration,
    uid: u32,
    gid: u32,
}

impl Fuse {
    /// Wraps a filesystem.
    pub fn new(fs: EncFs, notifier: Arc<OnceLock<fuser::Notifier>>) -> Self {
        let options = fs.options();
        Self {
            notifier,
            ttl: options.ttl,
            uid: options.uid,
            gid: options.gid,
            fs,
        }
    }

    fn attr(&self, attr: &Attr) -> FileAttr {
        FileAttr {
            ino: INodeNo(attr.ino),
            size: attr.size,
            blocks: attr.size.div_ceil(512),
            atime: attr.mtime,
            mtime: attr.mtime,
            ctime: attr.mtime,
            crtime: attr.mtime,
            kind: match attr.kind {
                NodeKind::File => FileType::RegularFile,
                NodeKind::Dir => FileType::Directory,
            },
            perm: attr.perm,
            nlink: if attr.kind == NodeKind::Dir { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
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

fn errno(code: i32) -> Errno {
    Errno::from_i32(code)
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
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // Mode, owner and times are not stored (documented); only the size changes anything.
        let result = match size {
            Some(size) => self.fs.set_size(ino.0, size),
            None => self.fs.getattr(ino.0),
        };
        match result {
            Ok(attr) => reply.attr(&self.ttl, &self.attr(&attr)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name_: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        match name(name_).and_then(|n| self.fs.mkdir(parent.0, n).map_err(errno)) {
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
        if !flags.is_empty() {
            // RENAME_EXCHANGE / RENAME_NOREPLACE are not supported.
            return reply.error(Errno::EINVAL);
        }
        let result = name(name_).and_then(|from| {
            let to = name(new_name)?;
            self.fs
                .rename(parent.0, from, new_parent.0, to)
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
        match self.fs.release(fh.0) {
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
            let kind = match kind {
                NodeKind::File => FileType::RegularFile,
                NodeKind::Dir => FileType::Directory,
            };
            if reply.add(INodeNo(child), (i + 1) as u64, kind, &entry) {
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
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match name(name_).and_then(|n| self.fs.create(parent.0, n).map_err(errno)) {
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
