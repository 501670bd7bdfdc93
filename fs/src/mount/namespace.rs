//! The namespace: inodes over blob names ([`Node`] in a [`Tree`]), directory listings refreshed
//! from the store after the TTL, `lookup`, `readdir`, and probing the store for a name this
//! mount does not know yet. Names are checked here against what blob stores hold.
//!
//! A directory is a prefix the store lists with delimiter `/`; one made in this mount (`local`)
//! stays until a file is written into it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use encfs_crypto::format::SegmentSize;

use super::attributes::Attr;
use super::core::EncFs;
use super::entries::Caller;
use super::error::{FsError, errno};
use super::pinned::{Finding, Pinned, is_manifest_blob};
use super::source::SharedSource;
use super::write::Dirty;
use crate::store::attributes::{SpecialKind, StoredAttributes};
use crate::store::protection::Protection;
use crate::store::{StoreError, list_all};

/// The root directory's inode number.
pub const ROOT: u64 = 1;

/// Longest blob name, in characters (Azure's limit; the embedded store keeps the same one), so a
/// tree written through the mount can move between stores.
pub const MAX_BLOB_NAME_CHARS: usize = 1024;

/// Longest name of one path component, in bytes (`NAME_MAX`).
pub const MAX_NAME_BYTES: usize = 255;

/// File, directory or symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A blob.
    File,
    /// A prefix.
    Dir,
    /// A blob marked as a link (`encfs_symlink`); its content is the target.
    Symlink,
    /// An empty blob marked as a FIFO, socket or device node (`encfs_node`; refused with
    /// `--no-special-files`): the kernel serves FIFOs and sockets itself, and never opens
    /// devices (`nodev`).
    Special(SpecialKind),
}

pub(super) struct Node {
    pub(super) parent: u64,
    pub(super) name: String,
    /// Path from the mount root, no leading or trailing `/` (empty for the root).
    pub(super) path: String,
    pub(super) kind: NodeKind,
    pub(super) size: u64,
    /// Plaintext size of the committed version (what `size` returns to when an uncommitted
    /// version is abandoned: a failed commit, then the last writer's close).
    pub(super) committed_size: u64,
    pub(super) blob_len: u64,
    pub(super) etag: Option<String>,
    pub(super) mtime: SystemTime,
    pub(super) atime: SystemTime,
    pub(super) ctime: SystemTime,
    /// Mode, owner and group as recorded (or set in this mount); `mtime` above is the time.
    pub(super) attributes: StoredAttributes,
    pub(super) children: BTreeMap<String, u64>,
    pub(super) listed: Option<Instant>,
    /// Exists only in this mount so far (made by `mkdir`, or created and not yet committed).
    pub(super) local: bool,
    pub(super) source: Option<SharedSource>,
    pub(super) dirty: Option<Arc<Mutex<Dirty>>>,
    pub(super) writers: u32,
    pub(super) readers: u32,
    pub(super) removed: bool,
}

impl Node {
    pub(super) fn new(parent: u64, name: &str, path: String, kind: NodeKind) -> Self {
        Self {
            parent,
            name: name.to_owned(),
            path,
            kind,
            size: 0,
            committed_size: 0,
            blob_len: 0,
            etag: None,
            mtime: SystemTime::now(),
            atime: SystemTime::now(),
            ctime: SystemTime::now(),
            attributes: StoredAttributes::default(),
            children: BTreeMap::new(),
            listed: None,
            local: false,
            source: None,
            dirty: None,
            writers: 0,
            readers: 0,
            removed: false,
        }
    }

    /// Whether a blob holds it (a file or a link), as opposed to a prefix.
    fn is_blob(&self) -> bool {
        self.kind != NodeKind::Dir
    }

    /// Takes mode, owner, group, mtime and kind from a listed or probed blob.
    fn take_blob(&mut self, properties: &crate::store::BlobProperties) {
        let attributes = StoredAttributes::from_metadata(&properties.metadata);
        self.mtime = attributes.mtime.unwrap_or(properties.last_modified);
        self.atime = self.mtime;
        self.ctime = properties.last_modified.max(self.mtime);
        self.kind = match (attributes.symlink, attributes.special) {
            (true, _) => NodeKind::Symlink,
            (false, Some(special)) => NodeKind::Special(special),
            (false, None) => NodeKind::File,
        };
        self.attributes = attributes;
    }
}

pub(super) struct Tree {
    pub(super) nodes: HashMap<u64, Node>,
    pub(super) next: u64,
}

impl Tree {
    pub(super) fn node(&self, ino: u64) -> Result<&Node, FsError> {
        self.nodes
            .get(&ino)
            .filter(|n| !n.removed)
            .ok_or(errno!(ENOENT))
    }
    pub(super) fn node_mut(&mut self, ino: u64) -> Result<&mut Node, FsError> {
        self.nodes
            .get_mut(&ino)
            .filter(|n| !n.removed)
            .ok_or(errno!(ENOENT))
    }
    pub(super) fn add(&mut self, node: Node) -> u64 {
        let ino = self.next;
        self.next += 1;
        let (parent, name) = (node.parent, node.name.clone());
        self.nodes.insert(ino, node);
        if let Some(parent) = self.nodes.get_mut(&parent) {
            parent.children.insert(name, ino);
        }
        ino
    }
    /// Takes `name` out of directory `parent`'s entries. A directory emptied here stays (POSIX),
    /// though the store no longer lists it.
    pub(super) fn detach(&mut self, parent: u64, name: &str) -> Result<(), FsError> {
        let dir = self.node_mut(parent)?;
        dir.children.remove(name);
        touch(dir);
        dir.local = true;
        Ok(())
    }
}

/// Plaintext length of a listed blob: the size recorded at upload when it is consistent with the
/// blob length, otherwise computed for the mount's segment size.
fn plaintext_size(
    protection: &Protection,
    properties: &crate::store::BlobProperties,
    default: SegmentSize,
) -> u64 {
    let blob_len = properties.size;
    let recorded: Option<u64> = properties
        .metadata
        .get(crate::store::protection::META_SIZE)
        .and_then(|s| s.parse().ok());
    if !matches!(protection, Protection::Cse(_)) {
        return blob_len;
    }
    if let Some(size) = recorded {
        let consistent = (SegmentSize::MIN_LOG2..=SegmentSize::MAX_LOG2)
            .filter_map(|log2| SegmentSize::from_log2(log2).ok())
            .any(|segment| segment.blob_len(size) == blob_len);
        if consistent {
            return size;
        }
    }
    default.plaintext_len(blob_len).unwrap_or(0)
}

impl EncFs {
    /// Lists a directory from the store unless its listing is younger than the TTL.
    pub(super) fn refresh(&self, dir: u64) -> Result<(), FsError> {
        let path = {
            let tree = self.tree.lock().expect("poisoned");
            let node = tree.node(dir)?;
            if node.kind != NodeKind::Dir {
                return Err(errno!(ENOTDIR));
            }
            if node
                .listed
                .is_some_and(|at| at.elapsed() < self.options.ttl)
            {
                return Ok(());
            }
            node.path.clone()
        };
        let prefix = if path.is_empty() {
            self.prefix.clone()
        } else {
            format!("{}{path}/", self.prefix)
        };
        let listing = self
            .runtime
            .block_on(list_all(&*self.store, &prefix, Some("/")))
            .map_err(FsError::from)?;
        let mut tree = self.tree.lock().expect("poisoned");
        let mut seen = BTreeMap::new();
        let pinned = self.pinned.as_deref();
        for item in &listing.blobs {
            let name = &item.name[prefix.len()..];
            if name.is_empty() || is_manifest_blob(name) {
                continue;
            }
            if let Some(pinned) = pinned {
                let child = join(&path, name);
                if pinned.entry(&child).is_none() {
                    pinned.note(Finding::Added, &child);
                    continue;
                }
            }
            seen.insert(name.to_owned(), ());
            let size = plaintext_size(
                &self.protection,
                &item.properties,
                self.options.segment_size,
            );
            let existing = tree.node(dir)?.children.get(name).copied();
            match existing {
                Some(ino) => {
                    let node = tree.node_mut(ino)?;
                    if node.dirty.is_some() || !node.is_blob() {
                        continue;
                    }
                    if node.etag.as_deref() != Some(item.properties.etag.as_str()) {
                        if let Some(old) = node.source.take() {
                            self.cache.forget_file(old.file);
                        }
                        node.etag = Some(item.properties.etag.clone());
                        node.take_blob(&item.properties);
                    }
                    node.size = size;
                    node.committed_size = size;
                    node.blob_len = item.properties.size;
                    node.local = false;
                }
                None => {
                    let child_path = join(&path, name);
                    let mut node = Node::new(dir, name, child_path, NodeKind::File);
                    node.size = size;
                    node.committed_size = size;
                    node.blob_len = item.properties.size;
                    node.etag = Some(item.properties.etag.clone());
                    node.take_blob(&item.properties);
                    tree.add(node);
                }
            }
        }
        for sub in &listing.prefixes {
            let name = sub[prefix.len()..].trim_end_matches('/');
            if name.is_empty() {
                continue;
            }
            if let Some(pinned) = pinned {
                let child = join(&path, name);
                if !pinned.has_dir(&child) {
                    pinned.note(Finding::Added, &format!("{child}/"));
                    continue;
                }
            }
            seen.insert(name.to_owned(), ());
            match tree.node(dir)?.children.get(name).copied() {
                Some(ino) => tree.node_mut(ino)?.local = false,
                None => {
                    let child_path = join(&path, name);
                    tree.add(Node::new(dir, name, child_path, NodeKind::Dir));
                }
            }
        }
        if let Some(pinned) = pinned {
            self.keep_listed(&mut tree, dir, &path, pinned, &mut seen)?;
        }
        // Children gone from the store leave, unless this mount made or is writing them.
        let children: Vec<(String, u64)> = tree
            .node(dir)?
            .children
            .iter()
            .map(|(n, i)| (n.clone(), *i))
            .collect();
        for (name, ino) in children {
            let keep = seen.contains_key(&name)
                || tree
                    .nodes
                    .get(&ino)
                    .is_some_and(|n| n.local || n.dirty.is_some());
            if !keep {
                tree.node_mut(dir)?.children.remove(&name);
            }
        }
        tree.node_mut(dir)?.listed = Some(Instant::now());
        Ok(())
    }

    /// A pinned mount's listed children of `dir` that the store no longer has: still listed
    /// (no version: `EIO` at open), never silently missing.
    fn keep_listed(
        &self,
        tree: &mut Tree,
        dir: u64,
        path: &str,
        pinned: &Pinned,
        seen: &mut BTreeMap<String, ()>,
    ) -> Result<(), FsError> {
        for (name, is_dir) in pinned.children(path) {
            if seen.insert(name.clone(), ()).is_some() {
                continue;
            }
            let child_path = join(path, &name);
            let existing = tree.node(dir)?.children.get(&name).copied();
            if is_dir {
                if existing.is_none() {
                    tree.add(Node::new(dir, &name, child_path, NodeKind::Dir));
                }
                continue;
            }
            pinned.note(Finding::Missing, &child_path);
            let entry = pinned.entry(&child_path).expect("a listed child");
            let ino = match existing {
                Some(ino) => ino,
                None => tree.add(Node::new(dir, &name, child_path, NodeKind::File)),
            };
            let node = tree.node_mut(ino)?;
            if let Some(old) = node.source.take() {
                self.cache.forget_file(old.file);
            }
            node.etag = None;
            node.size = entry.plain_len;
            node.committed_size = entry.plain_len;
            node.blob_len = entry.blob_len;
        }
        Ok(())
    }

    /// Finds `name` in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &str) -> Result<Attr, FsError> {
        if name.len() > MAX_NAME_BYTES {
            // Every path operation looks its components up first: one check covers them all.
            return Err(errno!(ENAMETOOLONG));
        }
        self.refresh(parent)?;
        let tree = self.tree.lock().expect("poisoned");
        let ino = *tree
            .node(parent)?
            .children
            .get(name)
            .ok_or(errno!(ENOENT))?;
        self.attr_in(&tree, ino)
    }

    /// The entries of a directory, in name order.
    pub fn readdir(&self, dir: u64) -> Result<Vec<(u64, NodeKind, String)>, FsError> {
        self.refresh(dir)?;
        let tree = self.tree.lock().expect("poisoned");
        let node = tree.node(dir)?;
        Ok(node
            .children
            .iter()
            .filter_map(|(name, &ino)| {
                tree.node(ino)
                    .ok()
                    .map(|child| (ino, child.kind, name.clone()))
            })
            .collect())
    }

    /// The parent of a directory (for `..`).
    pub fn parent(&self, ino: u64) -> Result<u64, FsError> {
        Ok(self.tree.lock().expect("poisoned").node(ino)?.parent)
    }

    /// The child `name` of `parent`, asking the store when this mount does not know it.
    pub(super) fn child_or_probe(&self, parent: u64, name: &str) -> Result<Option<u64>, FsError> {
        let path = {
            let tree = self.tree.lock().expect("poisoned");
            let dir = tree.node(parent)?;
            if let Some(&ino) = dir.children.get(name) {
                return Ok(Some(ino));
            }
            join(&dir.path, name)
        };
        // A pinned mount's tree is its manifest; the manifest blob is never an entry.
        if self.pinned.is_some() || is_manifest_blob(&path) {
            return Ok(None);
        }
        if path.chars().count() > MAX_BLOB_NAME_CHARS {
            return Ok(None);
        }
        let blob = self.blob_name(&path);
        // A blob of that name, else a prefix (a directory), else nothing.
        let found = match self
            .runtime
            .block_on(self.store.properties(&blob, self.protection.cpk()))
        {
            Ok(properties) => Some(properties),
            Err(StoreError::BlobNotFound(_)) => {
                let dir_prefix = format!("{blob}/");
                let page = self
                    .runtime
                    .block_on(self.store.list(&crate::store::ListOptions {
                        prefix: &dir_prefix,
                        max_results: Some(1),
                        ..Default::default()
                    }))
                    .map_err(FsError::from)?;
                if page.blobs.is_empty() && page.prefixes.is_empty() {
                    return Ok(None);
                }
                None
            }
            Err(e) => return Err(FsError::from(e)),
        };
        let mut tree = self.tree.lock().expect("poisoned");
        if let Some(&ino) = tree.node(parent)?.children.get(name) {
            return Ok(Some(ino));
        }
        let node = match found {
            Some(properties) => {
                let mut node = Node::new(parent, name, path, NodeKind::File);
                node.size =
                    plaintext_size(&self.protection, &properties, self.options.segment_size);
                node.committed_size = node.size;
                node.blob_len = properties.size;
                node.etag = Some(properties.etag.clone());
                node.take_blob(&properties);
                node
            }
            None => Node::new(parent, name, path, NodeKind::Dir),
        };
        Ok(Some(tree.add(node)))
    }

    /// A new entry made in this mount, owned by `caller` (group: the directory's when it is
    /// set-group-id, as on Linux), with `mode`'s permission bits.
    pub(super) fn add_local(
        &self,
        parent: u64,
        name: &str,
        kind: NodeKind,
        mode: u32,
        caller: Caller,
    ) -> Result<u64, FsError> {
        let mut tree = self.tree.lock().expect("poisoned");
        let dir = tree.node(parent)?;
        if dir.kind != NodeKind::Dir {
            return Err(errno!(ENOTDIR));
        }
        if dir.children.contains_key(name) {
            return Err(errno!(EEXIST));
        }
        let path = join(&dir.path, name);
        self.check_path(&path)?;
        let parent_attr = self.attr_of(parent, dir);
        let mut mode = mode & 0o7777;
        let mut gid = caller.gid;
        if parent_attr.perm & 0o2000 != 0 {
            gid = parent_attr.gid;
            if kind == NodeKind::Dir {
                mode |= 0o2000;
            }
        }
        let mut node = Node::new(parent, name, path, kind);
        node.local = true;
        node.attributes = StoredAttributes {
            mode: Some(mode),
            uid: Some(caller.uid),
            gid: Some(gid),
            mtime: None,
            symlink: kind == NodeKind::Symlink,
            special: match kind {
                NodeKind::Special(special) => Some(special),
                _ => None,
            },
            rdev: None,
        };
        if kind == NodeKind::Dir {
            node.listed = Some(Instant::now());
        }
        let ino = tree.add(node);
        touch(tree.node_mut(parent)?);
        Ok(ino)
    }

    /// `ENAMETOOLONG` for a path whose blob name would exceed what blob stores hold.
    pub(super) fn check_path(&self, path: &str) -> Result<(), FsError> {
        if self.blob_name(path).chars().count() > MAX_BLOB_NAME_CHARS {
            return Err(errno!(ENAMETOOLONG));
        }
        Ok(())
    }

    /// The name of an entry in its directory.
    pub(super) fn getattr_name(&self, ino: u64) -> Result<String, FsError> {
        Ok(self.tree.lock().expect("poisoned").node(ino)?.name.clone())
    }

    pub(super) fn expire(&self, dir: u64) {
        if let Some(node) = self.tree.lock().expect("poisoned").nodes.get_mut(&dir) {
            node.listed = None;
        }
    }
}

/// A write or a change of a directory's entries: new mtime and ctime.
pub(super) fn touch(node: &mut Node) {
    let now = SystemTime::now();
    node.mtime = now;
    node.ctime = now;
}

pub(super) fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

pub(super) fn check_name(name: &str) -> Result<(), FsError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(errno!(EINVAL));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(errno!(ENAMETOOLONG));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        let errno_of = |name: &str| check_name(name).map_err(|e| e.errno());
        assert_eq!(errno_of("a/b"), Err(libc::EINVAL));
        assert_eq!(errno_of(".."), Err(libc::EINVAL));
        assert_eq!(errno_of(&"x".repeat(256)), Err(libc::ENAMETOOLONG));
        assert_eq!(errno_of("ok.csv"), Ok(()));
    }
}
