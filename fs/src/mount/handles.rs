//! Open handles: `open`, and the calls that end a handle's life (`flush`, `fsync`, `release`).
//! A handle remembers its file, whether it writes, the process that opened it (only that
//! process's `close` commits) and its read-ahead state (see `read`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::core::EncFs;
use super::error::{FsError, errno};
use super::namespace::NodeKind;
use super::read::ReadAhead;

/// One open handle (`fh`).
pub(super) struct OpenFile {
    /// The file.
    pub(super) ino: u64,
    /// Opened for writing.
    pub(super) write: bool,
    /// The process that opened it (0: unknown): only its `close` commits.
    pub(super) owner: AtomicU64,
    /// Where its reads went, for prefetch.
    pub(super) readahead: Mutex<ReadAhead>,
}

impl EncFs {
    /// Opens a file; `write` needs a read-write mount, `truncate` empties it.
    pub fn open(&self, ino: u64, write: bool, truncate: bool) -> Result<u64, FsError> {
        let kind = self.tree.lock().expect("poisoned").node(ino)?.kind;
        if kind == NodeKind::Dir {
            return Err(errno!(EISDIR));
        }
        if write && !self.options.read_write {
            return Err(errno!(EROFS));
        }
        if write {
            self.start_writing(ino, truncate)?;
        } else {
            let dirty = self
                .tree
                .lock()
                .expect("poisoned")
                .node(ino)?
                .dirty
                .is_some();
            if !dirty {
                self.source(ino)?.repin(&*self.store);
            }
            self.tree.lock().expect("poisoned").node_mut(ino)?.readers += 1;
        }
        Ok(self.new_handle(ino, write))
    }

    pub(super) fn new_handle(&self, ino: u64, write: bool) -> u64 {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().expect("poisoned").insert(
            fh,
            Arc::new(OpenFile {
                ino,
                write,
                owner: AtomicU64::new(0),
                readahead: Mutex::new(ReadAhead::default()),
            }),
        );
        fh
    }

    pub(super) fn handle(&self, fh: u64) -> Result<Arc<OpenFile>, FsError> {
        self.handles
            .lock()
            .expect("poisoned")
            .get(&fh)
            .cloned()
            .ok_or(errno!(EBADF))
    }

    /// Records which process opened a handle (see [`Self::flush_from`]).
    pub fn set_owner(&self, fh: u64, process: u32) {
        if let Ok(handle) = self.handle(fh) {
            handle.owner.store(u64::from(process), Ordering::Relaxed);
        }
    }

    /// `flush` (each `close` of a descriptor): commits.
    pub fn flush(&self, fh: u64) -> Result<(), FsError> {
        self.flush_from(fh, None)
    }

    /// `flush` from `process`. Every copy of a descriptor flushes when closed, including the
    /// copies a `fork` + `exec` closes: only the owner's close commits, so a writer that starts
    /// a subprocess does not publish a half-written file. Other flushes report pending errors.
    pub fn flush_from(&self, fh: u64, process: Option<u32>) -> Result<(), FsError> {
        let handle = self.handle(fh)?;
        if !handle.write {
            return Ok(());
        }
        let owner = handle.owner.load(Ordering::Relaxed);
        match process {
            Some(process) if owner != 0 && u64::from(process) != owner => {
                match self.dirty_of(handle.ino).ok().flatten() {
                    Some(dirty) => dirty.lock().expect("poisoned").pending_error(&self.writes),
                    None => Ok(()),
                }
            }
            _ => self.commit(handle.ino),
        }
    }

    /// `fsync`: commits.
    pub fn fsync(&self, fh: u64) -> Result<(), FsError> {
        self.commit(self.handle(fh)?.ino)
    }

    /// Last close of a handle: commits what is left and forgets the handle.
    pub fn release(&self, fh: u64) -> Result<(), FsError> {
        let Some(handle) = self.handles.lock().expect("poisoned").remove(&fh) else {
            return Err(errno!(EBADF));
        };
        if !handle.write {
            let idle = {
                let mut tree = self.tree.lock().expect("poisoned");
                tree.nodes.get_mut(&handle.ino).and_then(|node| {
                    node.readers = node.readers.saturating_sub(1);
                    (node.readers == 0 && node.writers == 0)
                        .then(|| node.source.clone())
                        .flatten()
                })
            };
            if let Some(source) = idle {
                source.unpin();
            }
            return Ok(());
        }
        let result = self.commit(handle.ino);
        self.stop_writing(handle.ino);
        result
    }
}
