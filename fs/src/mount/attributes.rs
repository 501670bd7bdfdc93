//! Attributes: what `stat` shows ([`Attr`], with the mount's `--uid`, `--gid` and `--umask`
//! applied) and what `setattr` changes ([`AttrChanges`]). Mode, owner, group and mtime persist
//! in the blob's metadata: at the next commit of a file being written, at once otherwise.

use std::time::SystemTime;

use super::core::EncFs;
use super::error::{FsError, errno};
use super::namespace::{Node, NodeKind, Tree};
use crate::store::attributes::StoredAttributes;
use crate::store::{Condition, Metadata};

/// What `stat` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// Plaintext length (of the target, for a link).
    pub size: u64,
    /// File, directory or link.
    pub kind: NodeKind,
    /// Last write.
    pub mtime: SystemTime,
    /// Last access (as set by `utimes`; the mount runs `noatime`).
    pub atime: SystemTime,
    /// Last change of content or attributes.
    pub ctime: SystemTime,
    /// Permission bits (`0o7777` at most).
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Links: 1 for a file, 2 plus its subdirectories for a directory.
    pub nlink: u32,
    /// Device number of a device node.
    pub rdev: u32,
}

/// What `setattr` changes (`chmod`, `chown`, `truncate`, `utimes`); `None`: unchanged.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttrChanges {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New length.
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<SystemTime>,
    /// New modification time.
    pub mtime: Option<SystemTime>,
}

impl EncFs {
    pub(super) fn attr_of(&self, ino: u64, node: &Node) -> Attr {
        let write = if self.options.read_write { 0o200 } else { 0 };
        let (size, default) = match node.kind {
            NodeKind::Dir => (0, 0o555 | write),
            NodeKind::File => (node.size, 0o444 | write),
            NodeKind::Symlink => (node.size, 0o777),
            NodeKind::Special(_) => (0, 0o644),
        };
        let mut perm = node.attributes.mode.unwrap_or(default);
        if let Some(umask) = self.options.umask
            && node.kind != NodeKind::Symlink
        {
            perm &= !umask;
        }
        Attr {
            ino,
            size,
            kind: node.kind,
            mtime: node.mtime,
            atime: node.atime,
            ctime: node.ctime,
            perm: (perm & 0o7777) as u16,
            uid: self
                .options
                .force_uid
                .or(node.attributes.uid)
                .unwrap_or(self.options.uid),
            gid: self
                .options
                .force_gid
                .or(node.attributes.gid)
                .unwrap_or(self.options.gid),
            nlink: if node.kind == NodeKind::Dir { 2 } else { 1 },
            rdev: node.attributes.rdev.unwrap_or(0),
        }
    }

    /// [`Self::attr_of`] with a directory's link count (2 plus the subdirectories it knows).
    pub(super) fn attr_in(&self, tree: &Tree, ino: u64) -> Result<Attr, FsError> {
        let node = tree.node(ino)?;
        let mut attr = self.attr_of(ino, node);
        if node.kind == NodeKind::Dir {
            let subdirs = node
                .children
                .values()
                .filter(|child| tree.node(**child).is_ok_and(|c| c.kind == NodeKind::Dir))
                .count();
            attr.nlink = 2 + subdirs as u32;
        }
        Ok(attr)
    }

    /// Attributes of an inode.
    pub fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        let tree = self.tree.lock().expect("poisoned");
        self.attr_in(&tree, ino)
    }

    /// `chmod`, `chown`, `truncate`, `utimes`. Mode, owner, group and mtime are written to the
    /// blob's metadata: at the commit of a file being written, at once (a metadata-only call,
    /// no data rewritten) otherwise. A directory keeps them in this mount only (a blob store
    /// has no directories).
    pub fn setattr(&self, ino: u64, changes: AttrChanges) -> Result<Attr, FsError> {
        let metadata_change = changes.mode.is_some()
            || changes.uid.is_some()
            || changes.gid.is_some()
            || changes.mtime.is_some()
            || changes.atime.is_some();
        if !self.options.read_write && (metadata_change || changes.size.is_some()) {
            return Err(errno!(EROFS));
        }
        if let Some(size) = changes.size {
            self.set_size(ino, size)?;
        }
        if !metadata_change {
            return self.getattr(ino);
        }
        let now = SystemTime::now();
        let dirty = self.dirty_of(ino)?;
        let has_blob = {
            let mut tree = self.tree.lock().expect("poisoned");
            let shown = self.attr_of(ino, tree.node(ino)?);
            let node = tree.node_mut(ino)?;
            let attributes = &mut node.attributes;
            if let Some(mode) = changes.mode {
                attributes.mode = Some(mode & 0o7777);
            }
            if changes.uid.is_some() || changes.gid.is_some() {
                attributes.uid = Some(changes.uid.unwrap_or(shown.uid));
                attributes.gid = Some(changes.gid.unwrap_or(shown.gid));
                // Linux clears set-user-id and set-group-id on a chown of a non-directory.
                if node.kind == NodeKind::File
                    && let Some(mode) = attributes.mode.as_mut()
                {
                    *mode &= !0o6000;
                }
            }
            if let Some(mtime) = changes.mtime {
                node.mtime = mtime;
            }
            if let Some(atime) = changes.atime {
                node.atime = atime;
            }
            node.ctime = now;
            node.etag.is_some()
        };
        let pending = dirty
            .as_ref()
            .is_some_and(|d| d.lock().expect("poisoned").changed);
        if has_blob && !pending {
            // Committed and not being rewritten: change the metadata alone.
            self.persist_attributes(ino)?;
        }
        self.getattr(ino)
    }

    /// Writes a committed blob's mode, owner, group, mtime (and device number) to its metadata
    /// alone, conditional on the version this mount knows.
    pub(super) fn persist_attributes(&self, ino: u64) -> Result<(), FsError> {
        let (blob, etag, attributes) = {
            let tree = self.tree.lock().expect("poisoned");
            let node = tree.node(ino)?;
            let Some(etag) = node.etag.clone() else {
                return Ok(());
            };
            let attributes = StoredAttributes {
                mtime: Some(node.mtime),
                ..node.attributes
            };
            (self.blob_name(&node.path), etag, attributes)
        };
        let new_etag = self
            .runtime
            .block_on(async {
                let cpk = self.protection.cpk();
                let properties = self.store.properties(&blob, cpk).await?;
                let mut metadata = properties.metadata;
                attributes.write_into(&mut metadata);
                self.store
                    .set_metadata(&blob, &metadata, &Condition::IfMatch(etag), cpk)
                    .await
            })
            .map_err(FsError::from)?;
        self.tree.lock().expect("poisoned").node_mut(ino)?.etag = Some(new_etag);
        Ok(())
    }

    /// Metadata of a file's next commit: its mode, owner, group and mtime.
    pub(super) fn commit_attributes(&self, ino: u64) -> Result<Metadata, FsError> {
        let tree = self.tree.lock().expect("poisoned");
        let node = tree.node(ino)?;
        let mut metadata = Metadata::new();
        StoredAttributes {
            mtime: Some(node.mtime),
            ..node.attributes
        }
        .write_into(&mut metadata);
        Ok(metadata)
    }
}
