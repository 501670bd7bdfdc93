//! Changes to the namespace: `create` (`open` with `O_CREAT`), `mkdir`, `unlink`, `rmdir` and
//! `rename` (a file's blob is copied, then the old one deleted; a non-empty directory is
//! `EXDEV`, on which `mv` falls back to copying).

use std::time::SystemTime;

use super::attributes::Attr;
use super::core::EncFs;
use super::error::{FsError, errno};
use super::namespace::{NodeKind, check_name, join, touch};
use crate::store::{BlobStore, BlockIds, Condition, StoreError};

/// Who asks: the caller's ids, for the owner of what it creates.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// How `create` was called (`open(2)` flags that matter here).
#[derive(Debug, Clone, Copy, Default)]
pub struct CreateFlags {
    /// `O_EXCL`: fail with `EEXIST` if the name exists, in this mount or only in the store.
    pub exclusive: bool,
    /// `O_TRUNC`: empty an existing file.
    pub truncate: bool,
}

/// Bytes per request when copying a blob for `rename`.
const COPY_BLOCK: u64 = 8 << 20;

impl EncFs {
    /// Creates and opens a file (`open` with `O_CREAT`). The mount's listing may be older than
    /// the store (another mount or an upload made the name since), so a name this mount does not
    /// know is looked up in the store first: with `O_EXCL` an existing name is `EEXIST`, without
    /// it the existing file is opened (and emptied only with `O_TRUNC`).
    pub fn create(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        caller: Caller,
        flags: CreateFlags,
    ) -> Result<(Attr, u64), FsError> {
        if !self.options.read_write {
            return Err(errno!(EROFS));
        }
        check_name(name)?;
        self.refresh(parent)?;
        let existing = self.child_or_probe(parent, name)?;
        if let Some(existing) = existing {
            if flags.exclusive {
                return Err(errno!(EEXIST));
            }
            let fh = self.open(existing, true, flags.truncate)?;
            return Ok((self.getattr(existing)?, fh));
        }
        let ino = self.add_local(parent, name, NodeKind::File, mode, caller)?;
        self.start_writing(ino, true)?;
        let fh = self.new_handle(ino, true);
        Ok((self.getattr(ino)?, fh))
    }

    /// Removes a file.
    pub fn unlink(&self, parent: u64, name: &str) -> Result<(), FsError> {
        if !self.options.read_write {
            return Err(errno!(EROFS));
        }
        self.refresh(parent)?;
        let (ino, blob, has_blob) = {
            let tree = self.tree.lock().expect("poisoned");
            let ino = *tree
                .node(parent)?
                .children
                .get(name)
                .ok_or(errno!(ENOENT))?;
            let node = tree.node(ino)?;
            if node.kind == NodeKind::Dir {
                return Err(errno!(EISDIR));
            }
            (ino, self.blob_name(&node.path), node.etag.is_some())
        };
        if has_blob {
            match self
                .runtime
                .block_on(self.store.delete(&blob, &Condition::None))
            {
                Ok(()) | Err(StoreError::BlobNotFound(_)) => {}
                Err(e) => return Err(FsError::from(e)),
            }
        }
        let (dirty, source) = {
            let mut tree = self.tree.lock().expect("poisoned");
            tree.detach(parent, name)?;
            let node = tree.node_mut(ino)?;
            node.removed = true;
            (node.dirty.take(), node.source.take())
        };
        if let Some(dirty) = dirty {
            dirty.lock().expect("poisoned").abandon(&self.writes);
        }
        if let Some(source) = source {
            self.cache.forget_file(source.file);
        }
        Ok(())
    }

    /// Makes a directory (kept in this mount until a file is written into it).
    pub fn mkdir(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        caller: Caller,
    ) -> Result<Attr, FsError> {
        if !self.options.read_write {
            return Err(errno!(EROFS));
        }
        check_name(name)?;
        self.refresh(parent)?;
        if self.child_or_probe(parent, name)?.is_some() {
            return Err(errno!(EEXIST));
        }
        let ino = self.add_local(parent, name, NodeKind::Dir, mode, caller)?;
        self.getattr(ino)
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, parent: u64, name: &str) -> Result<(), FsError> {
        if !self.options.read_write {
            return Err(errno!(EROFS));
        }
        self.refresh(parent)?;
        let ino = {
            let tree = self.tree.lock().expect("poisoned");
            let ino = *tree
                .node(parent)?
                .children
                .get(name)
                .ok_or(errno!(ENOENT))?;
            if tree.node(ino)?.kind != NodeKind::Dir {
                return Err(errno!(ENOTDIR));
            }
            ino
        };
        self.expire(ino);
        if !self.readdir(ino)?.is_empty() {
            return Err(errno!(ENOTEMPTY));
        }
        let mut tree = self.tree.lock().expect("poisoned");
        let dir = tree.node_mut(parent)?;
        dir.children.remove(name);
        touch(dir);
        tree.node_mut(ino)?.removed = true;
        Ok(())
    }

    /// Renames a file (the blob is copied, then the old one deleted) or an empty directory.
    /// A non-empty directory gives `EXDEV`, on which `mv` falls back to copying.
    /// With `no_replace` (`RENAME_NOREPLACE`), an existing target is `EEXIST`.
    pub fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        no_replace: bool,
    ) -> Result<(), FsError> {
        if !self.options.read_write {
            return Err(errno!(EROFS));
        }
        check_name(new_name)?;
        self.refresh(parent)?;
        self.refresh(new_parent)?;
        let ino = *self
            .tree
            .lock()
            .expect("poisoned")
            .node(parent)?
            .children
            .get(name)
            .ok_or(errno!(ENOENT))?;
        let target = self.child_or_probe(new_parent, new_name)?;
        let kind = self.tree.lock().expect("poisoned").node(ino)?.kind;
        if target == Some(ino) {
            return Ok(());
        }
        if no_replace && target.is_some() {
            return Err(errno!(EEXIST));
        }
        let new_path = {
            let tree = self.tree.lock().expect("poisoned");
            join(&tree.node(new_parent)?.path, new_name)
        };
        self.check_path(&new_path)?;
        if let Some(target) = target {
            let target_kind = self.getattr(target)?.kind;
            match (kind == NodeKind::Dir, target_kind == NodeKind::Dir) {
                (false, true) => return Err(errno!(EISDIR)),
                (true, false) => return Err(errno!(ENOTDIR)),
                (true, true) => {
                    self.expire(target);
                    if !self.readdir(target)?.is_empty() {
                        return Err(errno!(ENOTEMPTY));
                    }
                }
                (false, false) => {}
            }
        }
        if kind == NodeKind::Dir {
            self.expire(ino);
            if !self.readdir(ino)?.is_empty() {
                return Err(errno!(EXDEV));
            }
            if let Some(target) = target {
                self.rmdir(new_parent, &self.getattr_name(target)?)?;
            }
        }
        let mut renamed_dirty = None;
        if kind != NodeKind::Dir {
            self.commit(ino)?;
            let (old_blob, has_blob) = {
                let tree = self.tree.lock().expect("poisoned");
                let node = tree.node(ino)?;
                (self.blob_name(&node.path), node.etag.is_some())
            };
            let new_blob = self.blob_name(&new_path);
            if has_blob {
                let etag = self
                    .runtime
                    .block_on(copy_blob(
                        &*self.store,
                        &old_blob,
                        &new_blob,
                        self.protection.cpk(),
                    ))
                    .map_err(FsError::from)?;
                match self
                    .runtime
                    .block_on(self.store.delete(&old_blob, &Condition::None))
                {
                    Ok(()) | Err(StoreError::BlobNotFound(_)) => {}
                    Err(e) => return Err(FsError::from(e)),
                }
                let mut tree = self.tree.lock().expect("poisoned");
                let node = tree.node_mut(ino)?;
                node.etag = Some(etag);
                if let Some(source) = node.source.take() {
                    self.cache.forget_file(source.file);
                }
            }
            renamed_dirty = self.dirty_of(ino)?.map(|d| (d, new_blob));
        }
        let mut tree = self.tree.lock().expect("poisoned");
        if let Some(old) = target.and_then(|t| tree.nodes.get_mut(&t)) {
            old.removed = true;
        }
        tree.detach(parent, name)?;
        let node = tree.node_mut(ino)?;
        node.parent = new_parent;
        node.name = new_name.to_owned();
        node.path = new_path;
        node.ctime = SystemTime::now();
        let dir = tree.node_mut(new_parent)?;
        dir.children.insert(new_name.to_owned(), ino);
        touch(dir);
        drop(tree);
        // Open writers continue on the blob under its new name (committed just above).
        if let Some((dirty, new_blob)) = renamed_dirty {
            let source = self.source(ino).ok();
            let mut dirty = dirty.lock().expect("poisoned");
            dirty.name = new_blob;
            dirty.rebase(source);
        }
        Ok(())
    }
}

/// Copies a blob's stored bytes (ciphertext for `cse`: EBF does not bind the name) and metadata.
async fn copy_blob(
    store: &dyn BlobStore,
    from: &str,
    to: &str,
    cpk: Option<&crate::store::CustomerKey>,
) -> Result<String, StoreError> {
    let properties = store.properties(from, cpk).await?;
    // Every read names the version measured, so an overwrite during the copy fails it rather
    // than copying a mix of two versions.
    let version = Some(properties.etag.as_str());
    if properties.size <= COPY_BLOCK {
        let data = store.get(from, None, cpk, version).await?;
        return store
            .put(to, data, &properties.metadata, &Condition::None, cpk)
            .await;
    }
    let mut ids = Vec::new();
    let block_ids = BlockIds::new();
    let mut offset = 0;
    while offset < properties.size {
        let end = (offset + COPY_BLOCK).min(properties.size);
        let data = store.get(from, Some(offset..end), cpk, version).await?;
        let id = block_ids.id(ids.len() as u64);
        store.stage_block(to, &id, data, cpk).await?;
        ids.push(id);
        offset = end;
    }
    store
        .commit_blocks(to, &ids, &properties.metadata, &Condition::None, cpk)
        .await
}
