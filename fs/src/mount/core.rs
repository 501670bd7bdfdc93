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
use crate::store::protection::Protection;
use crate::store::{BlobStore, BlockIds, Condition, StoreError, list_all};

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
    /// Owner reported for every file.
    pub uid: u32,
    /// Group reported for every file.
    pub gid: u32,
    /// How long one request that commits (`flush`, `fsync`, `close`, `truncate`) may take
    /// before it fails; what it staged is kept for the next attempt.
    pub request_timeout: Duration,
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

/// File or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A blob.
    File,
    /// A prefix.
    Dir,
}

/// What `stat` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// Plaintext length.
    pub size: u64,
    /// File or directory.
    pub kind: NodeKind,
    /// Last write.
    pub mtime: SystemTime,
    /// Permission bits.
    pub perm: u16,
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
    blob_len: u64,
    recorded: Option<u64>,
    default: SegmentSize,
) -> u64 {
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
        let (size, perm) = match node.kind {
            NodeKind::Dir => (0, 0o555 | write),
            NodeKind::File => (node.size, 0o444 | write),
        };
        Attr {
            ino,
            size,
            kind: node.kind,
            mtime: node.mtime,
            perm,
        }
    }

    /// Attributes of an inode.
    pub fn getattr(&self, ino: u64) -> Result<Attr, i32> {
        let tree = self.tree.lock().expect("poisoned");
        Ok(self.attr_of(ino, tree.node(ino)?))
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
            let recorded = item
                .properties
                .metadata
                .get(crate::store::protection::META_SIZE)
                .and_then(|s| s.parse().ok());
            seen.insert(name.to_owned(), (NodeKind::File, Some(item)));
            let size = plaintext_size(
                &self.protection,
                item.properties.size,
                recorded,
                self.options.segment_size,
            );
            let existing = tree.node(dir)?.children.get(name).copied();
            match existing {
                Some(ino) => {
                    let node = tree.node_mut(ino)?;
                    if node.dirty.is_some() || node.kind != NodeKind::File {
                        continue;
                    }
                    if node.etag.as_deref() != Some(item.properties.etag.as_str()) {
                        if let Some(old) = node.source.take() {
                            self.cache.forget_file(old.file);
                        }
                        node.etag = Some(item.properties.etag.clone());
                    }
                    node.size = size;
                    node.blob_len = item.properties.size;
                    node.mtime = item.properties.last_modified;
                    node.local = false;
                }
                None => {
                    let child_path = join(&path, name);
                    let mut node = Node::new(dir, name, child_path, NodeKind::File);
                    node.size = size;
                    node.blob_len = item.properties.size;
                    node.etag = Some(item.properties.etag.clone());
                    node.mtime = item.properties.last_modified;
                    tree.add(node);
                }
            }
        }
        for sub in &listing.prefixes {
            let name = sub[prefix.len()..].trim_end_matches('/');
            if name.is_empty() {
                continue;
            }
            seen.insert(name.to_owned(), (NodeKind::Dir, None));
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
        self.refresh(parent)?;
        let tree = self.tree.lock().expect("poisoned");
        let ino = *tree.node(parent)?.children.get(name).ok_or(libc::ENOENT)?;
        Ok(self.attr_of(ino, tree.node(ino)?))
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

    /// Creates and opens a new empty file.
    pub fn create(&self, parent: u64, name: &str) -> Result<(Attr, u64), i32> {
        if !self.options.read_write {
            return Err(libc::EROFS);
        }
        check_name(name)?;
        self.refresh(parent)?;
        let ino = {
            let mut tree = self.tree.lock().expect("poisoned");
            let dir = tree.node(parent)?;
            if dir.kind != NodeKind::Dir {
                return Err(libc::ENOTDIR);
            }
            if let Some(&existing) = dir.children.get(name) {
                drop(tree);
                let fh = self.open(existing, true, true)?;
                return Ok((self.getattr(existing)?, fh));
            }
            let path = join(&dir.path, name);
            let mut node = Node::new(parent, name, path, NodeKind::File);
            node.local = true;
            tree.add(node)
        };
        self.start_writing(ino, true)?;
        let fh = self.new_handle(ino, true);
        Ok((self.getattr(ino)?, fh))
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
        node.mtime = SystemTime::now();
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
            node.mtime = SystemTime::now();
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
        let finished = {
            let mut tree = self.tree.lock().expect("poisoned");
            tree.nodes.get_mut(&handle.ino).and_then(|node| {
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
        result
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
                self.tree.lock().expect("poisoned").node_mut(ino)?.size = size;
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
                    self.tree.lock().expect("poisoned").node_mut(ino)?.size = size;
                    self.commit(ino)
                })();
                let finished = {
                    let mut tree = self.tree.lock().expect("poisoned");
                    let node = tree.node_mut(ino)?;
                    node.writers -= 1;
                    if node.writers == 0 {
                        node.dirty.take()
                    } else {
                        None
                    }
                };
                // A failed commit leaves nothing staged behind.
                if let Some(dirty) = finished {
                    dirty.lock().expect("poisoned").abandon(&self.writes);
                }
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
            tree.node_mut(parent)?.children.remove(name);
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
    pub fn mkdir(&self, parent: u64, name: &str) -> Result<Attr, i32> {
        if !self.options.read_write {
            return Err(libc::EROFS);
        }
        check_name(name)?;
        self.refresh(parent)?;
        let mut tree = self.tree.lock().expect("poisoned");
        let dir = tree.node(parent)?;
        if dir.kind != NodeKind::Dir {
            return Err(libc::ENOTDIR);
        }
        if dir.children.contains_key(name) {
            return Err(libc::EEXIST);
        }
        let mut node = Node::new(parent, name, join(&dir.path, name), NodeKind::Dir);
        node.local = true;
        node.listed = Some(Instant::now());
        let ino = tree.add(node);
        Ok(self.attr_of(ino, tree.node(ino)?))
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
        tree.node_mut(parent)?.children.remove(name);
        tree.node_mut(ino)?.removed = true;
        Ok(())
    }

    fn expire(&self, dir: u64) {
        if let Some(node) = self.tree.lock().expect("poisoned").nodes.get_mut(&dir) {
            node.listed = None;
        }
    }

    /// Renames a file (the blob is copied, then the old one deleted) or an empty directory.
    /// A non-empty directory gives `EXDEV`, on which `mv` falls back to copying.
    pub fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
    ) -> Result<(), i32> {
        if !self.options.read_write {
            return Err(libc::EROFS);
        }
        check_name(new_name)?;
        self.refresh(parent)?;
        self.refresh(new_parent)?;
        let (ino, kind, target) = {
            let tree = self.tree.lock().expect("poisoned");
            let ino = *tree.node(parent)?.children.get(name).ok_or(libc::ENOENT)?;
            let target = tree.node(new_parent)?.children.get(new_name).copied();
            (ino, tree.node(ino)?.kind, target)
        };
        if target == Some(ino) {
            return Ok(());
        }
        if kind == NodeKind::Dir {
            self.expire(ino);
            if !self.readdir(ino)?.is_empty() {
                return Err(libc::EXDEV);
            }
        }
        if let Some(target) = target {
            let target_kind = self.getattr(target)?.kind;
            match (kind, target_kind) {
                (NodeKind::File, NodeKind::Dir) => return Err(libc::EISDIR),
                (NodeKind::Dir, NodeKind::File) => return Err(libc::ENOTDIR),
                (NodeKind::Dir, NodeKind::Dir) => self.rmdir(new_parent, new_name)?,
                (NodeKind::File, NodeKind::File) => {}
            }
        }
        let new_path = {
            let tree = self.tree.lock().expect("poisoned");
            join(&tree.node(new_parent)?.path, new_name)
        };
        let mut renamed_dirty = None;
        if kind == NodeKind::File {
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
        tree.node_mut(parent)?.children.remove(name);
        let node = tree.node_mut(ino)?;
        node.parent = new_parent;
        node.name = new_name.to_owned();
        node.path = new_path;
        tree.node_mut(new_parent)?
            .children
            .insert(new_name.to_owned(), ino);
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
    if name.len() > 255 {
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
