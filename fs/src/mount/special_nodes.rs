//! Symbolic links and special nodes (FIFOs, sockets, device nodes): small blobs marked in their
//! metadata (`encfs_symlink`, `encfs_node`) and committed at once; a link's content is its
//! target, sealed like any content. Hard links cannot exist on a blob store.

use super::attributes::Attr;
use super::core::EncFs;
use super::entries::Caller;
use super::error::{FsError, errno};
use super::namespace::{NodeKind, check_name};
use crate::store::attributes::SpecialKind;

/// Longest symbolic-link target, in bytes (`PATH_MAX`).
const MAX_SYMLINK_TARGET: usize = 4095;

/// `link`: a blob store has one name per blob. POSIX's errno for a file system that does not
/// support links.
pub const UNSUPPORTED_LINK: i32 = libc::EPERM;

/// `mknod` / `mkfifo` of anything but a regular file: nothing a blob can hold.
pub const UNSUPPORTED_NODE: i32 = libc::EPERM;

impl EncFs {
    /// Makes a symbolic link: a small blob marked `encfs_symlink`, its content the target
    /// (sealed like any content).
    pub fn symlink(
        &self,
        parent: u64,
        name: &str,
        target: &str,
        caller: Caller,
    ) -> Result<Attr, FsError> {
        if !self.options.read_write {
            return Err(errno!(EROFS));
        }
        check_name(name)?;
        if target.is_empty() {
            return Err(errno!(ENOENT));
        }
        if target.len() > MAX_SYMLINK_TARGET {
            return Err(errno!(ENAMETOOLONG));
        }
        self.make_blob_node(
            parent,
            name,
            NodeKind::Symlink,
            0o777,
            target.as_bytes(),
            caller,
        )
    }

    /// Makes a FIFO, socket or device node: an empty blob marked `encfs_node` (by default; with
    /// `--no-special-files`, `EPERM`, what POSIX gives where a file system cannot hold one).
    pub fn mknod_special(
        &self,
        parent: u64,
        name: &str,
        kind: SpecialKind,
        mode: u32,
        rdev: u32,
        caller: Caller,
    ) -> Result<Attr, FsError> {
        if !self.options.special_files {
            return Err(FsError::from_errno(UNSUPPORTED_NODE));
        }
        if !self.options.read_write {
            return Err(errno!(EROFS));
        }
        check_name(name)?;
        let attr = self.make_blob_node(parent, name, NodeKind::Special(kind), mode, &[], caller);
        let ino = attr?.ino;
        let is_device = matches!(kind, SpecialKind::CharDevice | SpecialKind::BlockDevice);
        if is_device {
            self.tree
                .lock()
                .expect("poisoned")
                .node_mut(ino)?
                .attributes
                .rdev = Some(rdev);
            self.persist_attributes(ino)?;
        }
        self.getattr(ino)
    }

    /// A symbolic link or special node: a new blob holding `content`, committed at once.
    fn make_blob_node(
        &self,
        parent: u64,
        name: &str,
        kind: NodeKind,
        mode: u32,
        content: &[u8],
        caller: Caller,
    ) -> Result<Attr, FsError> {
        self.refresh(parent)?;
        if self.child_or_probe(parent, name)?.is_some() {
            return Err(errno!(EEXIST));
        }
        let ino = self.add_local(parent, name, kind, mode, caller)?;
        let result = (|| {
            self.start_writing(ino, true)?;
            let dirty = self.dirty_of(ino)?.ok_or(errno!(EIO))?;
            if !content.is_empty() {
                dirty
                    .lock()
                    .expect("poisoned")
                    .write(&self.writes, self, 0, content)?;
            }
            self.tree.lock().expect("poisoned").node_mut(ino)?.size = content.len() as u64;
            let committed = self.commit(ino);
            self.stop_writing(ino);
            committed
        })();
        if let Err(e) = result {
            let mut tree = self.tree.lock().expect("poisoned");
            if let Ok(dir) = tree.node_mut(parent) {
                dir.children.remove(name);
            }
            if let Some(node) = tree.nodes.get_mut(&ino) {
                node.removed = true;
            }
            return Err(e);
        }
        self.getattr(ino)
    }

    /// The target of a symbolic link.
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>, FsError> {
        if self.tree.lock().expect("poisoned").node(ino)?.kind != NodeKind::Symlink {
            return Err(errno!(EINVAL));
        }
        let source = self.source(ino)?;
        if source.plain_len == 0 {
            return Ok(Vec::new());
        }
        self.read_range(&source, 0, source.plain_len)
    }
}
