//! The writers of a file: the first writer makes its [`Dirty`] state, `write` goes into it,
//! `commit` publishes a new version (at `flush`, `fsync`, `close`, `truncate`), and the last
//! writer's departure drops what was not committed. The dirty state itself (blocks, staging,
//! the atomic commit) is [`super::write`].

use std::sync::{Arc, Mutex};

use super::attributes::Attr;
use super::core::EncFs;
use super::error::{FsError, errno};
use super::namespace::touch;
use super::write::Dirty;
use crate::store::protection::Protection;

impl EncFs {
    pub(super) fn start_writing(&self, ino: u64, truncate: bool) -> Result<(), FsError> {
        let existing = {
            let mut tree = self.tree.lock().expect("poisoned");
            let node = tree.node_mut(ino)?;
            node.writers += 1;
            node.dirty.clone()
        };
        let result = match existing {
            Some(dirty) if truncate => {
                dirty
                    .lock()
                    .expect("poisoned")
                    .truncate(&self.writes, self, 0)
            }
            Some(_) => Ok(()),
            None => self.make_dirty(ino, truncate).map(drop),
        };
        let mut tree = self.tree.lock().expect("poisoned");
        let node = tree.node_mut(ino)?;
        match result {
            Ok(()) if truncate => node.size = 0,
            Ok(()) => {}
            Err(_) => node.writers -= 1,
        }
        result
    }

    fn make_dirty(&self, ino: u64, truncate: bool) -> Result<Arc<Mutex<Dirty>>, FsError> {
        let (name, has_blob) = {
            let tree = self.tree.lock().expect("poisoned");
            let node = tree.node(ino)?;
            (self.blob_name(&node.path), node.etag.is_some())
        };
        let dirty = if truncate || !has_blob {
            Dirty::empty(&self.writes, &name)?
        } else {
            Dirty::over(&self.writes, &name, Some(self.source(ino)?))?
        };
        let dirty = Arc::new(Mutex::new(dirty));
        let mut tree = self.tree.lock().expect("poisoned");
        let node = tree.node_mut(ino)?;
        Ok(node.dirty.get_or_insert(dirty).clone())
    }

    pub(super) fn dirty_of(&self, ino: u64) -> Result<Option<Arc<Mutex<Dirty>>>, FsError> {
        Ok(self.tree.lock().expect("poisoned").node(ino)?.dirty.clone())
    }

    /// Writes at `offset`.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32, FsError> {
        let handle = self.handle(fh)?;
        if !handle.write {
            return Err(errno!(EBADF));
        }
        let dirty = self.dirty_of(handle.ino)?.ok_or(errno!(EBADF))?;
        let size = {
            let mut dirty = dirty.lock().expect("poisoned");
            dirty.write(&self.writes, self, offset, data)?;
            dirty.size
        };
        // Lock order: a file's dirty state, then the tree; never the other way round.
        let mut tree = self.tree.lock().expect("poisoned");
        let node = tree.node_mut(handle.ino)?;
        node.size = node.size.max(size);
        touch(node);
        Ok(data.len() as u32)
    }

    /// Commits a file's pending changes (at `flush`, `fsync`, and `close`).
    pub(super) fn commit(&self, ino: u64) -> Result<(), FsError> {
        // An unlinked file has nothing left to commit.
        let Some(dirty) = self.dirty_of(ino).ok().flatten() else {
            return Ok(());
        };
        let mut dirty = dirty.lock().expect("poisoned");
        if !dirty.changed {
            return Ok(());
        }
        dirty.attributes = self.commit_attributes(ino)?;
        let etag = dirty.commit(&self.writes, self)?;
        let size = dirty.size;
        let blob_len = match &self.protection {
            Protection::Cse(_) => self.options.segment_size.blob_len(size),
            _ => size,
        };
        {
            let mut tree = self.tree.lock().expect("poisoned");
            let node = tree.node_mut(ino)?;
            if let Some(old) = node.source.take() {
                self.cache.forget_file(old.file);
            }
            node.etag = Some(etag);
            node.size = size;
            node.committed_size = size;
            node.blob_len = blob_len;
            node.local = false;
        }
        // Later writes through still-open handles build on the version just committed.
        let source = self.source(ino).ok();
        dirty.rebase(source);
        Ok(())
    }

    /// One writer of `ino` is done; after the last, its uncommitted state goes, and with it
    /// whatever a failed commit left staged.
    pub(super) fn stop_writing(&self, ino: u64) {
        let finished = {
            let mut tree = self.tree.lock().expect("poisoned");
            tree.nodes.get_mut(&ino).and_then(|node| {
                node.writers = node.writers.saturating_sub(1);
                if node.writers != 0 {
                    return None;
                }
                let dirty = node.dirty.take()?;
                // Whatever was not committed is gone: the file is its committed version again,
                // and the kernel's cached attributes of it (the abandoned size) are stale.
                if node.size != node.committed_size {
                    node.size = node.committed_size;
                    self.stale_attributes.lock().expect("poisoned").push(ino);
                }
                Some(dirty)
            })
        };
        if let Some(dirty) = finished {
            dirty.lock().expect("poisoned").abandon(&self.writes);
        }
    }

    /// `truncate` / `ftruncate`.
    pub fn set_size(&self, ino: u64, size: u64) -> Result<Attr, FsError> {
        if !self.options.read_write {
            return Err(errno!(EROFS));
        }
        let resize = |dirty: &Mutex<Dirty>| -> Result<(), FsError> {
            dirty
                .lock()
                .expect("poisoned")
                .truncate(&self.writes, self, size)?;
            let mut tree = self.tree.lock().expect("poisoned");
            let node = tree.node_mut(ino)?;
            node.size = size;
            touch(node);
            Ok(())
        };
        match self.dirty_of(ino)? {
            Some(dirty) => resize(&dirty)?,
            None => {
                // Nobody has it open for writing: change and commit right away.
                self.start_writing(ino, size == 0)?;
                let result = (|| {
                    let dirty = self.dirty_of(ino)?.ok_or(errno!(EIO))?;
                    resize(&dirty)?;
                    self.commit(ino)
                })();
                self.stop_writing(ino);
                result?;
            }
        }
        self.getattr(ino)
    }
}
