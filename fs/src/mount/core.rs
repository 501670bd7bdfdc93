//! The filesystem itself, without the kernel: inodes over blob names, directory listings, open
//! handles, the read path with prefetch, and the write path. [`super::fuse`] adapts it to FUSE;
//! tests and the reference-model proptest drive it directly.
//!
//! Blob names are paths: `a/b/c.csv` is file `c.csv` in directory `b` in directory `a`.
//! Directories are the prefixes the store lists with delimiter `/`; a directory made with `mkdir`
//! lives in this mount until a file is written into it (blob stores have no empty directories).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use encfs_crypto::format::SegmentSize;
use tokio::sync::Semaphore;

use super::cache::{BlockCache, Lookup, SegmentKey};
use super::pool::BufferPool;
use super::source::{BlobSource, SharedSource, SourceError};
use super::write::{BaseReader, Dirty, WriteContext};
use crate::store::attributes::{SpecialKind, StoredAttributes};
use crate::store::protection::Protection;
use crate::store::{BlobStore, BlockIds, Condition, Metadata, StoreError, list_all};

/// The root directory's inode number.
pub const ROOT: u64 = 1;
/// Prefetch window bounds.
const MIN_WINDOW: u64 = 1 << 20;
const MAX_WINDOW: u64 = 32 << 20;
/// Plaintext bytes per prefetch request.
const PREFETCH_CHUNK: u64 = 2 << 20;
/// Reads this close to the last one count as sequential (the kernel reorders parallel reads).
const SEQUENTIAL_SLACK: u64 = 8 << 20;
/// Bytes per request when copying a blob for `rename`.
const COPY_BLOCK: u64 = 8 << 20;
/// Longest blob name, in characters (Azure's limit; the embedded store keeps the same one), so a
/// tree written through the mount can move between stores.
pub const MAX_BLOB_NAME_CHARS: usize = 1024;
/// Longest name of one path component, in bytes (`NAME_MAX`).
pub const MAX_NAME_BYTES: usize = 255;
/// Longest symbolic-link target, in bytes (`PATH_MAX`).
const MAX_SYMLINK_TARGET: usize = 4095;
/// `link`: a blob store has one name per blob. POSIX's errno for a file system that does not
/// support links.
pub const UNSUPPORTED_LINK: i32 = libc::EPERM;
/// `mknod` / `mkfifo` of anything but a regular file: nothing a blob can hold.
pub const UNSUPPORTED_NODE: i32 = libc::EPERM;

/// How a mount behaves.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Accept writes (a datasink); otherwise read-only (a datasource).
    pub read_write: bool,
    /// Memory budget of the block cache, bytes of plaintext.
    pub cache_size: usize,
    /// Directory of the optional sealed disk tier.
    pub disk_cache: Option<std::path::PathBuf>,
    /// Capacity of the disk tier.
    pub disk_cache_size: u64,
    /// Where a writer's parked blocks go (sealed; default: the disk-tier directory, else the
    /// system temporary directory).
    pub scratch_dir: Option<std::path::PathBuf>,
    /// Most dirty bytes in flight to the store, all files together.
    pub write_budget: usize,
    /// EBF segment size of files written through the mount.
    pub segment_size: SegmentSize,
    /// Plaintext bytes per staged block of a file being written (a multiple of the segment size).
    pub write_block: usize,
    /// How long the kernel may cache attributes and entries, and this mount its listings.
    pub ttl: Duration,
    /// Owner of entries that record none (the root, uploads without attributes).
    pub uid: u32,
    /// Group of entries that record none.
    pub gid: u32,
    /// How long one request that commits (`flush`, `fsync`, `close`, `truncate`) may take
    /// before it fails; what it staged is kept for the next attempt.
    pub request_timeout: Duration,
    /// Owner shown for every entry whatever it records (`--uid`): presents the tree to the user
    /// an application runs as. Recorded owners are kept and still written.
    pub force_uid: Option<u32>,
    /// Group shown for every entry (`--gid`).
    pub force_gid: Option<u32>,
    /// Permission bits cleared from every mode shown (`--umask`); recorded modes are kept.
    pub umask: Option<u32>,
    /// Let users other than the one who mounted use the mount (`--allow-other`).
    pub allow_other: bool,
    /// Record FIFOs, sockets and device nodes as empty marker blobs (the default; the mount is
    /// `nodev`, so a device node is never opened as one). `false` (`--no-special-files`):
    /// `mknod` / `mkfifo` of them is `EPERM`.
    pub special_files: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            read_write: false,
            cache_size: 256 << 20,
            disk_cache: None,
            disk_cache_size: 4 << 30,
            scratch_dir: None,
            write_budget: 128 << 20,
            segment_size: SegmentSize::DEFAULT,
            write_block: super::write::WRITE_BLOCK,
            ttl: Duration::from_secs(1),
            uid: 0,
            gid: 0,
            request_timeout: Duration::from_secs(60),
            force_uid: None,
            force_gid: None,
            umask: None,
            allow_other: false,
            special_files: true,
        }
    }
}

/// Why a mount cannot start.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blob does not open with this key (wrong key, wrong mode, not EBF).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Local setup failed.
    #[error("{0}")]
    Io(String),
}

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

struct Node {
    parent: u64,
    name: String,
    /// Path from the mount root, no leading or trailing `/` (empty for the root).
    path: String,
    kind: NodeKind,
    size: u64,
    blob_len: u64,
    etag: Option<String>,
    mtime: SystemTime,
    atime: SystemTime,
    ctime: SystemTime,
    /// Mode, owner and group as recorded (or set in this mount); `mtime` above is the time.
    attributes: StoredAttributes,
    children: BTreeMap<String, u64>,
    listed: Option<Instant>,
    /// Exists only in this mount so far (made by `mkdir`, or created and not yet committed).
    local: bool,
    source: Option<SharedSource>,
    dirty: Option<Arc<Mutex<Dirty>>>,
    writers: u32,
    readers: u32,
    removed: bool,
}

impl Node {
    fn new(parent: u64, name: &str, path: String, kind: NodeKind) -> Self {
        Self {
            parent,
            name: name.to_owned(),
            path,
            kind,
            size: 0,
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

struct Tree {
    nodes: HashMap<u64, Node>,
    next: u64,
}

impl Tree {
    fn node(&self, ino: u64) -> Result<&Node, i32> {
        self.nodes
            .get(&ino)
            .filter(|n| !n.removed)
            .ok_or(libc::ENOENT)
    }
    fn node_mut(&mut self, ino: u64) -> Result<&mut Node, i32> {
        self.nodes
            .get_mut(&ino)
            .filter(|n| !n.removed)
            .ok_or(libc::ENOENT)
    }
    fn add(&mut self, node: Node) -> u64 {
        let ino = self.next;
        self.next += 1;
        let (parent, name) = (node.parent, node.name.clone());
        self.nodes.insert(ino, node);
        if let Some(parent) = self.nodes.get_mut(&parent) {
            parent.children.insert(name, ino);
        }
        ino
    }
}

#[derive(Default)]
struct ReadAhead {
    next: u64,
    window: u64,
    issued: u64,
}

struct OpenFile {
    ino: u64,
    write: bool,
    /// The process that opened it (0: unknown): only its `close` commits.
    owner: AtomicU64,
    readahead: Mutex<ReadAhead>,
}

/// The filesystem over one store prefix.
pub struct EncFs {
    store: Arc<dyn BlobStore>,
    prefix: String,
    protection: Protection,
    options: MountOptions,
    runtime: tokio::runtime::Runtime,
    cache: Arc<BlockCache>,
    pool: Arc<BufferPool>,
    /// Plaintext bytes being prefetched now, and the most allowed.
    inflight: Arc<AtomicU64>,
    inflight_limit: u64,
    tree: Mutex<Tree>,
    handles: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next_handle: AtomicU64,
    next_file: AtomicU64,
    writes: WriteContext,
}

fn log_eio(message: impl std::fmt::Display) -> i32 {
    eprintln!("encfs: {message}");
    libc::EIO
}

/// The errno a store error reaches the application as.
pub(crate) fn errno_of(error: &StoreError) -> i32 {
    match error {
        StoreError::BlobNotFound(_) => libc::ENOENT,
        StoreError::NameTooLong(_) => libc::ENAMETOOLONG,
        StoreError::ConditionNotMet(_) => libc::EEXIST,
        StoreError::Auth { .. }
        | StoreError::CustomerKeyMismatch(_)
        | StoreError::CustomerKeyRequired(_)
        | StoreError::CustomerKeyUnexpected(_) => libc::EACCES,
        // Out of local space (or quota) is the writer's ENOSPC, not a generic I/O error.
        StoreError::Io { source, .. }
            if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) =>
        {
            libc::ENOSPC
        }
        StoreError::Io { source, .. } if source.raw_os_error() == Some(libc::EFBIG) => libc::EFBIG,
        _ => libc::EIO,
    }
}

/// [`errno_of`], with the error logged (every errno but `ENOENT` deserves a line in the log).
fn store_errno(error: &StoreError) -> i32 {
    let errno = errno_of(error);
    if errno != libc::ENOENT {
        eprintln!("encfs: {error}");
    }
    errno
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
    /// A filesystem over `store`, rooted at blob-name `prefix` (empty or ending in `/`).
    /// Retries are the store's: give it a [`crate::store::faults::RetryingStore`] (as
    /// [`crate::store::open_store`] does for Azure) for one retry policy with a deadline per call;
    /// the mount adds no retry loop of its own.
    pub fn new(
        store: Arc<dyn BlobStore>,
        prefix: &str,
        protection: Protection,
        options: MountOptions,
    ) -> Result<Self, MountError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(
                std::thread::available_parallelism()
                    .map_or(2, |n| n.get())
                    .max(2),
            )
            .thread_name("encfs-io")
            .enable_all()
            .build()
            .map_err(|e| MountError::Io(format!("runtime: {e}")))?;
        // The budget covers everything the read path holds: cached segments, prefetches in
        // flight and free pooled buffers.
        let (inflight_limit, pool_limit) = Self::reserves(options.cache_size);
        let mut cache = BlockCache::new(
            options
                .cache_size
                .saturating_sub(inflight_limit + pool_limit)
                .max(1 << 20),
        );
        if let Some(dir) = &options.disk_cache {
            std::fs::create_dir_all(dir)
                .map_err(|e| MountError::Io(format!("{}: {e}", dir.display())))?;
            cache = cache
                .with_disk_tier(dir, options.disk_cache_size, options.segment_size.bytes())
                .map_err(|e| MountError::Io(format!("{}: {e}", dir.display())))?;
        }
        let mut root = Node::new(ROOT, "", String::new(), NodeKind::Dir);
        root.local = true;
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, root);
        let writes = WriteContext {
            store: store.clone(),
            protection: protection.clone(),
            segment: options.segment_size,
            block: options
                .write_block
                .max(options.segment_size.bytes())
                .next_multiple_of(options.segment_size.bytes()),
            runtime: runtime.handle().clone(),
            budget: Arc::new(Semaphore::new((options.write_budget / (64 << 10)).max(1))),
            budget_bytes: options.write_budget.max(64 << 10),
            scratch_dir: options
                .scratch_dir
                .clone()
                .or_else(|| options.disk_cache.clone()),
            deadline: options.request_timeout,
        };
        Ok(Self {
            pool: BufferPool::new(pool_limit / 2),
            inflight: Arc::new(AtomicU64::new(0)),
            inflight_limit: inflight_limit as u64,
            store,
            prefix: prefix.to_owned(),
            protection,
            options,
            runtime,
            cache: Arc::new(cache),
            tree: Mutex::new(Tree {
                nodes,
                next: ROOT + 1,
            }),
            handles: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            next_file: AtomicU64::new(1),
            writes,
        })
    }

    /// Parts of the cache budget set aside for prefetches in flight and for free pooled buffers
    /// (the second also covers reply buffers and allocator slack).
    fn reserves(cache_size: usize) -> (usize, usize) {
        let inflight = (MAX_WINDOW as usize).min(cache_size / 4);
        let pool = (32usize << 20).min(cache_size / 8);
        (inflight, pool)
    }

    /// The options this filesystem runs with.
    pub fn options(&self) -> &MountOptions {
        &self.options
    }

    /// The block cache (for statistics).
    pub fn cache(&self) -> &BlockCache {
        &self.cache
    }

    /// Checks, before anything is served, that the container exists and that the first blob
    /// under the prefix opens with this key and mode: a wrong key fails here, not on first read.
    pub fn verify(&self) -> Result<(), MountError> {
        self.runtime.block_on(async {
            if !self.store.container_exists().await? {
                return Err(StoreError::ContainerNotFound(self.store.location()).into());
            }
            let page = self
                .store
                .list(&crate::store::ListOptions {
                    prefix: &self.prefix,
                    max_results: Some(1),
                    ..Default::default()
                })
                .await?;
            if let Some(first) = page.blobs.first() {
                let (source, _) = BlobSource::open(
                    &*self.store,
                    &first.name,
                    first.properties.size,
                    Some(&first.properties.etag),
                    &self.protection,
                    0,
                )
                .await?;
                if let Protection::Cpk(key) = &self.protection {
                    self.store.properties(&source.name, Some(key)).await?;
                }
            }
            Ok(())
        })
    }

    fn blob_name(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    fn attr_of(&self, ino: u64, node: &Node) -> Attr {
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
    fn attr_in(&self, tree: &Tree, ino: u64) -> Result<Attr, i32> {
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
    pub fn getattr(&self, ino: u64) -> Result<Attr, i32> {
        let tree = self.tree.lock().expect("poisoned");
        self.attr_in(&tree, ino)
    }

    /// Lists a directory from the store unless its listing is younger than the TTL.
    fn refresh(&self, dir: u64) -> Result<(), i32> {
        let path = {
            let tree = self.tree.lock().expect("poisoned");
            let node = tree.node(dir)?;
            if node.kind != NodeKind::Dir {
                return Err(libc::ENOTDIR);
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
            .map_err(|e| store_errno(&e))?;
        let mut tree = self.tree.lock().expect("poisoned");
        let mut seen = BTreeMap::new();
        for item in &listing.blobs {
            let name = &item.name[prefix.len()..];
            if name.is_empty() {
                continue;
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
                    node.blob_len = item.properties.size;
                    node.local = false;
                }
                None => {
                    let child_path = join(&path, name);
                    let mut node = Node::new(dir, name, child_path, NodeKind::File);
                    node.size = size;
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
            seen.insert(name.to_owned(), ());
            match tree.node(dir)?.children.get(name).copied() {
                Some(ino) => tree.node_mut(ino)?.local = false,
                None => {
                    let child_path = join(&path, name);
                    tree.add(Node::new(dir, name, child_path, NodeKind::Dir));
                }
            }
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

    /// Finds `name` in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &str) -> Result<Attr, i32> {
        if name.len() > MAX_NAME_BYTES {
            // Every path operation looks its components up first: one check covers them all.
            return Err(libc::ENAMETOOLONG);
        }
        self.refresh(parent)?;
        let tree = self.tree.lock().expect("poisoned");
        let ino = *tree.node(parent)?.children.get(name).ok_or(libc::ENOENT)?;
        self.attr_in(&tree, ino)
    }

    /// The entries of a directory, in name order.
    pub fn readdir(&self, dir: u64) -> Result<Vec<(u64, NodeKind, String)>, i32> {
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
    pub fn parent(&self, ino: u64) -> Result<u64, i32> {
        Ok(self.tree.lock().expect("poisoned").node(ino)?.parent)
    }

    /// The readable version of a file, opened (header fetched and checked) on first use.
    fn source(&self, ino: u64) -> Result<SharedSource, i32> {
        let (name, etag, blob_len) = {
            let tree = self.tree.lock().expect("poisoned");
            let node = tree.node(ino)?;
            if let Some(source) = &node.source {
                return Ok(source.clone());
            }
            let Some(etag) = node.etag.clone() else {
                return Err(libc::ENOENT);
            };
            (self.blob_name(&node.path), etag, node.blob_len)
        };
        let file = self.next_file.fetch_add(1, Ordering::Relaxed);
        let (source, first) = self
            .runtime
            .block_on(BlobSource::open(
                &*self.store,
                &name,
                blob_len,
                Some(&etag),
                &self.protection,
                file,
            ))
            .map_err(|e| match e {
                SourceError::Store(e) => store_errno(&e),
                other => log_eio(other),
            })?;
        self.keep(file, first);
        let source = Arc::new(source);
        let mut tree = self.tree.lock().expect("poisoned");
        let node = tree.node_mut(ino)?;
        if node.etag.as_deref() == Some(etag.as_str()) {
            node.size = source.plain_len;
            node.source = Some(source.clone());
        }
        Ok(source)
    }

    fn keep(&self, file: u64, fetched: Vec<(u64, Option<Bytes>)>) {
        for (index, plain) in fetched {
            let key = SegmentKey { file, index };
            match plain {
                Some(bytes) => self.cache.insert(key, bytes),
                None => self.cache.mark_bad(key),
            }
        }
    }

    /// Opens a file; `write` needs a read-write mount, `truncate` empties it.
    pub fn open(&self, ino: u64, write: bool, truncate: bool) -> Result<u64, i32> {
        let kind = self.tree.lock().expect("poisoned").node(ino)?.kind;
        if kind == NodeKind::Dir {
            return Err(libc::EISDIR);
        }
        if write && !self.options.read_write {
            return Err(libc::EROFS);
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

    fn new_handle(&self, ino: u64, write: bool) -> u64 {
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

    fn start_writing(&self, ino: u64, truncate: bool) -> Result<(), i32> {
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

    fn make_dirty(&self, ino: u64, truncate: bool) -> Result<Arc<Mutex<Dirty>>, i32> {
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

    fn handle(&self, fh: u64) -> Result<Arc<OpenFile>, i32> {
        self.handles
            .lock()
            .expect("poisoned")
            .get(&fh)
            .cloned()
            .ok_or(libc::EBADF)
    }

    fn dirty_of(&self, ino: u64) -> Result<Option<Arc<Mutex<Dirty>>>, i32> {
        Ok(self.tree.lock().expect("poisoned").node(ino)?.dirty.clone())
    }

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
    ) -> Result<(Attr, u64), i32> {
        if !self.options.read_write {
            return Err(libc::EROFS);
        }
        check_name(name)?;
        self.refresh(parent)?;
        let existing = self.child_or_probe(parent, name)?;
        if let Some(existing) = existing {
            if flags.exclusive {
                return Err(libc::EEXIST);
            }
            let fh = self.open(existing, true, flags.truncate)?;
            return Ok((self.getattr(existing)?, fh));
        }
        let ino = self.add_local(parent, name, NodeKind::File, mode, caller)?;
        self.start_writing(ino, true)?;
        let fh = self.new_handle(ino, true);
        Ok((self.getattr(ino)?, fh))
    }

    /// A new entry made in this mount, owned by `caller` (group: the directory's when it is
    /// set-group-id, as on Linux), with `mode`'s permission bits.
    fn add_local(
        &self,
        parent: u64,
        name: &str,
        kind: NodeKind,
        mode: u32,
        caller: Caller,
    ) -> Result<u64, i32> {
        let mut tree = self.tree.lock().expect("poisoned");
        let dir = tree.node(parent)?;
        if dir.kind != NodeKind::Dir {
            return Err(libc::ENOTDIR);
        }
        if dir.children.contains_key(name) {
            return Err(libc::EEXIST);
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

    /// The child `name` of `parent`, asking the store when this mount does not know it.
    fn child_or_probe(&self, parent: u64, name: &str) -> Result<Option<u64>, i32> {
        let path = {
            let tree = self.tree.lock().expect("poisoned");
            let dir = tree.node(parent)?;
            if let Some(&ino) = dir.children.get(name) {
                return Ok(Some(ino));
            }
            join(&dir.path, name)
        };
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
                    .map_err(|e| store_errno(&e))?;
                if page.blobs.is_empty() && page.prefixes.is_empty() {
                    return Ok(None);
                }
                None
            }
            Err(e) => return Err(store_errno(&e)),
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
                node.blob_len = properties.size;
                node.etag = Some(properties.etag.clone());
                node.take_blob(&properties);
                node
            }
            None => Node::new(parent, name, path, NodeKind::Dir),
        };
        Ok(Some(tree.add(node)))
    }

    /// `ENAMETOOLONG` for a path whose blob name would exceed what blob stores hold.
    fn check_path(&self, path: &str) -> Result<(), i32> {
        if self.blob_name(path).chars().count() > MAX_BLOB_NAME_CHARS {
            return Err(libc::ENAMETOOLONG);
        }
        Ok(())
    }

    /// Makes a symbolic link: a small blob marked `encfs_symlink`, its content the target
    /// (sealed like any content).
    pub fn symlink(
        &self,
        parent: u64,
        name: &str,
        target: &str,
        caller: Caller,
    ) -> Result<Attr, i32> {
        if !self.options.read_write {
            return Err(libc::EROFS);
        }
        check_name(name)?;
        if target.is_empty() {
            return Err(libc::ENOENT);
        }
        if target.len() > MAX_SYMLINK_TARGET {
            return Err(libc::ENAMETOOLONG);
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
    ) -> Result<Attr, i32> {
        if !self.options.special_files {
            return Err(UNSUPPORTED_NODE);
        }
        if !self.options.read_write {
            return Err(libc::EROFS);
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
    ) -> Result<Attr, i32> {
        self.refresh(parent)?;
        if self.child_or_probe(parent, name)?.is_some() {
            return Err(libc::EEXIST);
        }
        let ino = self.add_local(parent, name, kind, mode, caller)?;
        let result = (|| {
            self.start_writing(ino, true)?;
            let dirty = self.dirty_of(ino)?.ok_or(libc::EIO)?;
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
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>, i32> {
        if self.tree.lock().expect("poisoned").node(ino)?.kind != NodeKind::Symlink {
            return Err(libc::EINVAL);
        }
        let source = self.source(ino)?;
        if source.plain_len == 0 {
            return Ok(Vec::new());
        }
        self.read_range(&source, 0, source.plain_len)
    }

    /// `chmod`, `chown`, `truncate`, `utimes`. Mode, owner, group and mtime are written to the
    /// blob's metadata: at the commit of a file being written, at once (a metadata-only call,
    /// no data rewritten) otherwise. A directory keeps them in this mount only (a blob store
    /// has no directories).
    pub fn setattr(&self, ino: u64, changes: AttrChanges) -> Result<Attr, i32> {
        let metadata_change = changes.mode.is_some()
            || changes.uid.is_some()
            || changes.gid.is_some()
            || changes.mtime.is_some()
            || changes.atime.is_some();
        if !self.options.read_write && (metadata_change || changes.size.is_some()) {
            return Err(libc::EROFS);
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
    fn persist_attributes(&self, ino: u64) -> Result<(), i32> {
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
            .map_err(|e| store_errno(&e))?;
        self.tree.lock().expect("poisoned").node_mut(ino)?.etag = Some(new_etag);
        Ok(())
    }

    /// Metadata of a file's next commit: its mode, owner, group and mtime.
    fn commit_attributes(&self, ino: u64) -> Result<Metadata, i32> {
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

    /// For a small random read on a read-only mount: the whole segments around `offset..+size`
    /// that are now in the cache, as `(plaintext offset, bytes)`, so the caller can hand them to
    /// the kernel's page cache (`FUSE_NOTIFY_STORE`): the segment was fetched and decrypted
    /// whole anyway, and nearby reads then need no round trip.
    pub fn neighbours(&self, fh: u64, offset: u64, size: u32) -> Option<(u64, Bytes)> {
        if self.options.read_write {
            return None;
        }
        let handle = self.handle(fh).ok()?;
        if handle.readahead.lock().expect("poisoned").window != 0 {
            return None;
        }
        let source = self
            .tree
            .lock()
            .expect("poisoned")
            .node(handle.ino)
            .ok()?
            .source
            .clone()?;
        let unit = source.unit as u64;
        let index = offset / unit;
        if (offset + size as u64).div_ceil(unit) != index + 1 || size as u64 >= unit {
            return None;
        }
        match self.cache.lookup(SegmentKey {
            file: source.file,
            index,
        }) {
            Lookup::Hit(bytes) => Some((source.plain_range(index).start, bytes)),
            _ => None,
        }
    }

    /// Reads up to `size` bytes at `offset`.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, i32> {
        let handle = self.handle(fh)?;
        if let Some(dirty) = self.dirty_of(handle.ino)? {
            return dirty
                .lock()
                .expect("poisoned")
                .read(&self.writes, self, offset, size as usize);
        }
        let source = self.source(handle.ino)?;
        let end = (offset + size as u64).min(source.plain_len);
        if offset >= end {
            return Ok(Vec::new());
        }
        self.read_ahead(&handle, &source, offset, end);
        self.read_range(&source, offset, end)
    }

    /// Plaintext `offset..end` of a version, through the cache: segments nobody holds are
    /// fetched now (one request per contiguous run), segments being prefetched are waited for.
    fn read_range(&self, source: &SharedSource, offset: u64, end: u64) -> Result<Vec<u8>, i32> {
        let unit = source.unit as u64;
        let (first, last) = (offset / unit, (end - 1) / unit);
        let claimed = self.cache.claim(source.file, first..=last);
        let mut remote = Vec::new();
        for (start, count) in runs(&claimed) {
            let indices: Vec<u64> = (start..start + count).collect();
            // A local store is read right here, on the FUSE thread: no hand-offs.
            match source.fetch_blocking(&*self.store, &self.pool, start, count) {
                Some(fetched) => {
                    if let Ok(segments) = fetched {
                        self.keep(source.file, segments);
                    }
                    // On failure `segment` fetches again and reports.
                    self.cache.complete(source.file, &indices);
                }
                None => remote.push(indices),
            }
        }
        let tasks: Vec<_> = remote
            .into_iter()
            .map(|indices| {
                self.runtime.spawn(fetch_task(
                    self.store.clone(),
                    self.cache.clone(),
                    self.pool.clone(),
                    source.clone(),
                    indices,
                ))
            })
            .collect();
        for task in tasks {
            let _ = self.runtime.block_on(task);
        }
        self.copy_out(source, offset, end, first, last)
    }

    fn copy_out(
        &self,
        source: &SharedSource,
        offset: u64,
        end: u64,
        first: u64,
        last: u64,
    ) -> Result<Vec<u8>, i32> {
        let mut out = Vec::with_capacity((end - offset) as usize);
        for index in first..=last {
            let bytes = self.segment(source, index)?;
            let seg = source.plain_range(index);
            let from = offset.max(seg.start) - seg.start;
            let to = end.min(seg.end) - seg.start;
            if (bytes.len() as u64) < to {
                return Err(log_eio(format!(
                    "blob {}: segment {index} short",
                    source.name
                )));
            }
            out.extend_from_slice(&bytes[from as usize..to as usize]);
        }
        Ok(out)
    }

    /// One segment: from the cache, after a pending fetch, or fetched now.
    fn segment(&self, source: &SharedSource, index: u64) -> Result<Bytes, i32> {
        let key = SegmentKey {
            file: source.file,
            index,
        };
        for _ in 0..4 {
            match self.cache.lookup(key) {
                Lookup::Hit(bytes) => return Ok(bytes),
                Lookup::Bad => {
                    let range = source.plain_range(index);
                    eprintln!(
                        "encfs: blob {}: read of bytes {}..{} refused: segment {index} failed \
                         authentication",
                        source.name, range.start, range.end
                    );
                    return Err(libc::EIO);
                }
                Lookup::Pending(pending) => pending.wait(self.options.request_timeout),
                Lookup::Miss => {
                    let claimed = self.cache.claim(source.file, std::iter::once(index));
                    if claimed.is_empty() {
                        continue;
                    }
                    let fetched = match source.fetch_blocking(&*self.store, &self.pool, index, 1) {
                        Some(fetched) => fetched,
                        None => self.runtime.block_on(source.fetch(&*self.store, index, 1)),
                    };
                    self.cache.complete(source.file, &claimed);
                    match fetched {
                        Ok(segments) => {
                            for (i, plain) in segments {
                                if i == index {
                                    return match plain {
                                        Some(bytes) => {
                                            self.cache.insert(key, bytes.clone());
                                            Ok(bytes)
                                        }
                                        None => {
                                            self.cache.mark_bad(key);
                                            Err(libc::EIO)
                                        }
                                    };
                                }
                            }
                        }
                        Err(SourceError::Store(e)) => return Err(store_errno(&e)),
                        Err(e) => return Err(log_eio(e)),
                    }
                }
            }
        }
        Err(log_eio(format!(
            "blob {}: segment {index} unavailable",
            source.name
        )))
    }

    /// Sequential-read detection and the adaptive prefetch window.
    fn read_ahead(&self, handle: &OpenFile, source: &SharedSource, offset: u64, end: u64) {
        let mut ra = handle.readahead.lock().expect("poisoned");
        let sequential = (ra.next == 0 && offset == 0)
            || (offset + SEQUENTIAL_SLACK >= ra.next && offset <= ra.next + SEQUENTIAL_SLACK);
        if !sequential {
            *ra = ReadAhead {
                next: end,
                window: 0,
                issued: 0,
            };
            return;
        }
        let cap = MAX_WINDOW.min(self.inflight_limit).max(MIN_WINDOW);
        ra.window = (ra.window * 2).clamp(MIN_WINDOW, cap);
        // Memory pressure: prefetches in flight near their share of the budget (from every
        // reader together) shrink the window. Cached segments are not pressure: they are evicted.
        let inflight = self.inflight.load(Ordering::Relaxed);
        if inflight > self.inflight_limit / 4 * 3 {
            ra.window = (ra.window / 2).max(MIN_WINDOW);
        }
        ra.next = ra.next.max(end);
        let target = (end + ra.window).min(source.plain_len);
        let from = ra.issued.max(end);
        if target <= from || inflight >= self.inflight_limit {
            return;
        }
        ra.issued = target;
        drop(ra);
        let unit = source.unit as u64;
        let claimed = self
            .cache
            .claim(source.file, from / unit..target.div_ceil(unit));
        let per = (PREFETCH_CHUNK / unit).max(1);
        for (start, count) in runs(&claimed) {
            let mut at = start;
            while at < start + count {
                let n = per.min(start + count - at);
                let bytes = n * unit;
                self.inflight.fetch_add(bytes, Ordering::Relaxed);
                let inflight = self.inflight.clone();
                let task = fetch_task(
                    self.store.clone(),
                    self.cache.clone(),
                    self.pool.clone(),
                    source.clone(),
                    (at..at + n).collect(),
                );
                self.runtime.spawn(async move {
                    task.await;
                    inflight.fetch_sub(bytes, Ordering::Relaxed);
                });
                at += n;
            }
        }
    }

    /// Writes at `offset`.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32, i32> {
        let handle = self.handle(fh)?;
        if !handle.write {
            return Err(libc::EBADF);
        }
        let dirty = self.dirty_of(handle.ino)?.ok_or(libc::EBADF)?;
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
    fn commit(&self, ino: u64) -> Result<(), i32> {
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
            node.blob_len = blob_len;
            node.local = false;
        }
        // Later writes through still-open handles build on the version just committed.
        let source = self.source(ino).ok();
        dirty.rebase(source);
        Ok(())
    }

    /// Records which process opened a handle (see [`Self::flush_from`]).
    pub fn set_owner(&self, fh: u64, process: u32) {
        if let Ok(handle) = self.handle(fh) {
            handle.owner.store(u64::from(process), Ordering::Relaxed);
        }
    }

    /// `flush` (each `close` of a descriptor): commits.
    pub fn flush(&self, fh: u64) -> Result<(), i32> {
        self.flush_from(fh, None)
    }

    /// `flush` from `process`. Every copy of a descriptor flushes when closed, including the
    /// copies a `fork` + `exec` closes: only the owner's close commits, so a writer that starts
    /// a subprocess does not publish a half-written file. Other flushes report pending errors.
    pub fn flush_from(&self, fh: u64, process: Option<u32>) -> Result<(), i32> {
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
    pub fn fsync(&self, fh: u64) -> Result<(), i32> {
        self.commit(self.handle(fh)?.ino)
    }

    /// Last close of a handle: commits what is left and forgets the handle.
    pub fn release(&self, fh: u64) -> Result<(), i32> {
        let Some(handle) = self.handles.lock().expect("poisoned").remove(&fh) else {
            return Err(libc::EBADF);
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

    /// One writer of `ino` is done; after the last, its uncommitted state goes, and with it
    /// whatever a failed commit left staged.
    fn stop_writing(&self, ino: u64) {
        let finished = {
            let mut tree = self.tree.lock().expect("poisoned");
            tree.nodes.get_mut(&ino).and_then(|node| {
                node.writers = node.writers.saturating_sub(1);
                if node.writers == 0 {
                    node.dirty.take()
                } else {
                    None
                }
            })
        };
        if let Some(dirty) = finished {
            dirty.lock().expect("poisoned").abandon(&self.writes);
        }
    }

    /// `truncate` / `ftruncate`.
    pub fn set_size(&self, ino: u64, size: u64) -> Result<Attr, i32> {
        if !self.options.read_write {
            return Err(libc::EROFS);
        }
        match self.dirty_of(ino)? {
            Some(dirty) => {
                dirty
                    .lock()
                    .expect("poisoned")
                    .truncate(&self.writes, self, size)?;
                let mut tree = self.tree.lock().expect("poisoned");
                let node = tree.node_mut(ino)?;
                node.size = size;
                touch(node);
            }
            None => {
                // Nobody has it open for writing: change and commit right away.
                self.start_writing(ino, size == 0)?;
                let result = (|| {
                    let dirty = self.dirty_of(ino)?.ok_or(libc::EIO)?;
                    dirty
                        .lock()
                        .expect("poisoned")
                        .truncate(&self.writes, self, size)?;
                    {
                        let mut tree = self.tree.lock().expect("poisoned");
                        let node = tree.node_mut(ino)?;
                        node.size = size;
                        touch(node);
                    }
                    self.commit(ino)
                })();
                self.stop_writing(ino);
                result?;
            }
        }
        self.getattr(ino)
    }

    /// Removes a file.
    pub fn unlink(&self, parent: u64, name: &str) -> Result<(), i32> {
        if !self.options.read_write {
            return Err(libc::EROFS);
        }
        self.refresh(parent)?;
        let (ino, blob, has_blob) = {
            let tree = self.tree.lock().expect("poisoned");
            let ino = *tree.node(parent)?.children.get(name).ok_or(libc::ENOENT)?;
            let node = tree.node(ino)?;
            if node.kind == NodeKind::Dir {
                return Err(libc::EISDIR);
            }
            (ino, self.blob_name(&node.path), node.etag.is_some())
        };
        if has_blob {
            match self
                .runtime
                .block_on(self.store.delete(&blob, &Condition::None))
            {
                Ok(()) | Err(StoreError::BlobNotFound(_)) => {}
                Err(e) => return Err(store_errno(&e)),
            }
        }
        let (dirty, source) = {
            let mut tree = self.tree.lock().expect("poisoned");
            let dir = tree.node_mut(parent)?;
            dir.children.remove(name);
            touch(dir);
            // A directory emptied here stays (POSIX), though the store no longer lists it.
            dir.local = true;
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
    pub fn mkdir(&self, parent: u64, name: &str, mode: u32, caller: Caller) -> Result<Attr, i32> {
        if !self.options.read_write {
            return Err(libc::EROFS);
        }
        check_name(name)?;
        self.refresh(parent)?;
        if self.child_or_probe(parent, name)?.is_some() {
            return Err(libc::EEXIST);
        }
        let ino = self.add_local(parent, name, NodeKind::Dir, mode, caller)?;
        self.getattr(ino)
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, parent: u64, name: &str) -> Result<(), i32> {
        if !self.options.read_write {
            return Err(libc::EROFS);
        }
        self.refresh(parent)?;
        let ino = {
            let tree = self.tree.lock().expect("poisoned");
            let ino = *tree.node(parent)?.children.get(name).ok_or(libc::ENOENT)?;
            if tree.node(ino)?.kind != NodeKind::Dir {
                return Err(libc::ENOTDIR);
            }
            ino
        };
        self.expire(ino);
        if !self.readdir(ino)?.is_empty() {
            return Err(libc::ENOTEMPTY);
        }
        let mut tree = self.tree.lock().expect("poisoned");
        let dir = tree.node_mut(parent)?;
        dir.children.remove(name);
        touch(dir);
        tree.node_mut(ino)?.removed = true;
        Ok(())
    }

    /// The name of an entry in its directory.
    fn getattr_name(&self, ino: u64) -> Result<String, i32> {
        Ok(self.tree.lock().expect("poisoned").node(ino)?.name.clone())
    }

    fn expire(&self, dir: u64) {
        if let Some(node) = self.tree.lock().expect("poisoned").nodes.get_mut(&dir) {
            node.listed = None;
        }
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
    ) -> Result<(), i32> {
        if !self.options.read_write {
            return Err(libc::EROFS);
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
            .ok_or(libc::ENOENT)?;
        let target = self.child_or_probe(new_parent, new_name)?;
        let kind = self.tree.lock().expect("poisoned").node(ino)?.kind;
        if target == Some(ino) {
            return Ok(());
        }
        if no_replace && target.is_some() {
            return Err(libc::EEXIST);
        }
        let new_path = {
            let tree = self.tree.lock().expect("poisoned");
            join(&tree.node(new_parent)?.path, new_name)
        };
        self.check_path(&new_path)?;
        if let Some(target) = target {
            let target_kind = self.getattr(target)?.kind;
            match (kind == NodeKind::Dir, target_kind == NodeKind::Dir) {
                (false, true) => return Err(libc::EISDIR),
                (true, false) => return Err(libc::ENOTDIR),
                (true, true) => {
                    self.expire(target);
                    if !self.readdir(target)?.is_empty() {
                        return Err(libc::ENOTEMPTY);
                    }
                }
                (false, false) => {}
            }
        }
        if kind == NodeKind::Dir {
            self.expire(ino);
            if !self.readdir(ino)?.is_empty() {
                return Err(libc::EXDEV);
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
                    .map_err(|e| store_errno(&e))?;
                match self
                    .runtime
                    .block_on(self.store.delete(&old_blob, &Condition::None))
                {
                    Ok(()) | Err(StoreError::BlobNotFound(_)) => {}
                    Err(e) => return Err(store_errno(&e)),
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
        let dir = tree.node_mut(parent)?;
        dir.children.remove(name);
        touch(dir);
        // A directory emptied here stays (POSIX), though the store no longer lists it.
        dir.local = true;
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

impl BaseReader for EncFs {
    fn read_base(&self, source: &SharedSource, offset: u64, len: usize) -> Result<Vec<u8>, i32> {
        let end = (offset + len as u64).min(source.plain_len);
        if offset >= end {
            return Ok(Vec::new());
        }
        self.read_range(source, offset, end)
    }
}

/// Fetches claimed segments in one request, fills the cache, and releases the claims.
async fn fetch_task(
    store: Arc<dyn BlobStore>,
    cache: Arc<BlockCache>,
    pool: Arc<BufferPool>,
    source: SharedSource,
    claimed: Vec<u64>,
) {
    let (Some(&first), Some(&last)) = (claimed.first(), claimed.last()) else {
        return;
    };
    let count = last - first + 1;
    let fill = |cache: &BlockCache, file: u64, segments: Vec<(u64, Option<Bytes>)>| {
        for (index, plain) in segments {
            let key = SegmentKey { file, index };
            match plain {
                Some(bytes) => cache.insert(key, bytes),
                None => cache.mark_bad(key),
            }
        }
    };
    // Local stores: read, verify and fill the cache on one blocking thread.
    let local = {
        let (store, cache, source) = (store.clone(), cache.clone(), source.clone());
        tokio::task::spawn_blocking(move || {
            let fetched = source.fetch_blocking(&*store, &pool, first, count)?;
            match fetched {
                Ok(segments) => fill(&cache, source.file, segments),
                Err(error) => eprintln!("encfs: prefetch of {}: {error}", source.name),
            }
            Some(())
        })
        .await
        .ok()
        .flatten()
    };
    if local.is_none() {
        match source.fetch(&*store, first, count).await {
            Ok(segments) => {
                let (cache, file) = (cache.clone(), source.file);
                let filled =
                    tokio::task::spawn_blocking(move || fill(&cache, file, segments)).await;
                if let Err(e) = filled {
                    eprintln!("encfs: cache fill failed: {e}");
                }
            }
            Err(error) => eprintln!("encfs: prefetch of {}: {error}", source.name),
        }
    }
    cache.complete(source.file, &claimed);
}

/// Contiguous runs `(start, count)` of sorted indices.
fn runs(indices: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &index in indices {
        match out.last_mut() {
            Some((start, count)) if *start + *count == index => *count += 1,
            _ => out.push((index, 1)),
        }
    }
    out
}

/// A write or a change of a directory's entries: new mtime and ctime.
fn touch(node: &mut Node) {
    let now = SystemTime::now();
    node.mtime = now;
    node.ctime = now;
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn check_name(name: &str) -> Result<(), i32> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(libc::EINVAL);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(libc::ENAMETOOLONG);
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_group_contiguous_indices() {
        assert_eq!(runs(&[1, 2, 3, 7, 8, 10]), vec![(1, 3), (7, 2), (10, 1)]);
        assert!(runs(&[]).is_empty());
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(check_name("a/b"), Err(libc::EINVAL));
        assert_eq!(check_name(".."), Err(libc::EINVAL));
        assert_eq!(check_name(&"x".repeat(256)), Err(libc::ENAMETOOLONG));
        assert_eq!(check_name("ok.csv"), Ok(()));
    }
}
