//! The filesystem itself, without the kernel: [`EncFs`] over one store prefix, how it is built
//! and checked before it serves. [`super::fuse`] adapts it to FUSE; tests and the
//! reference-model proptest drive it directly.
//!
//! The operations are split by concern over sibling modules, each an `impl EncFs` block:
//! the names and directories (`namespace`), `stat` and `setattr` (`attributes`), making,
//! removing and renaming entries (`entries`), links and special nodes (`special_nodes`), open
//! handles (`handles`), the read path with prefetch (`read`) and the writers of a file
//! (`writers`). Every one fails with [`FsError`](super::error::FsError), mapped to errno in
//! [`super::error`] alone.
//!
//! Blob names are paths: `a/b/c.csv` is file `c.csv` in directory `b` in directory `a`.
//! Directories are the prefixes the store lists with delimiter `/`; a directory made with `mkdir`
//! lives in this mount until a file is written into it (blob stores have no empty directories).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use super::cache::BlockCache;
use super::handles::OpenFile;
use super::namespace::{Node, Tree};
use super::pinned::{Pinned, is_manifest_blob};
use super::pool::BufferPool;
use super::read::MAX_WINDOW;
use super::source::{BlobSource, SourceError};
use super::write::WriteContext;
use crate::store::protection::Protection;
use crate::store::{BlobStore, StoreError};

/// Threads of the runtime's blocking pool per CPU.
const BLOCKING_THREADS_PER_CPU: usize = 4;

// What this module held before the split, at the paths it had.
pub use super::attributes::{Attr, AttrChanges};
pub use super::entries::{Caller, CreateFlags};
pub use super::namespace::{MAX_BLOB_NAME_CHARS, MAX_NAME_BYTES, NodeKind, ROOT};
pub use super::options::MountOptions;
pub use super::special_nodes::{UNSUPPORTED_LINK, UNSUPPORTED_NODE};

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

/// The filesystem over one store prefix.
pub struct EncFs {
    pub(super) store: Arc<dyn BlobStore>,
    pub(super) prefix: String,
    pub(super) protection: Protection,
    pub(super) options: MountOptions,
    pub(super) runtime: tokio::runtime::Runtime,
    pub(super) cache: Arc<BlockCache>,
    pub(super) pool: Arc<BufferPool>,
    /// Plaintext bytes being prefetched now, and the most allowed.
    pub(super) inflight: Arc<AtomicU64>,
    pub(super) inflight_limit: u64,
    pub(super) tree: Mutex<Tree>,
    pub(super) handles: Mutex<HashMap<u64, Arc<OpenFile>>>,
    pub(super) next_handle: AtomicU64,
    pub(super) next_file: AtomicU64,
    pub(super) writes: WriteContext,
    /// Inodes whose attributes the kernel may have cached wrongly (see
    /// [`EncFs::take_stale_attributes`]).
    pub(super) stale_attributes: Mutex<Vec<u64>>,
    /// The dataset manifest this mount serves exactly, if any ([`EncFs::pinned_to`]).
    pub(super) pinned: Option<Arc<Pinned>>,
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
        let cpus = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .max(2);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cpus)
            // Blocking work (local reads and decryption of prefetches, sealing of written
            // blocks) never waits on another task, so a small pool cannot deadlock; tokio's
            // default of 512 threads let a busy read path grow to ~60 threads, each holding its
            // own allocator pages (about 1 MiB apiece, outside every budget).
            .max_blocking_threads(BLOCKING_THREADS_PER_CPU * cpus)
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
            stale_attributes: Mutex::new(Vec::new()),
            pinned: None,
        })
    }

    /// Serves only what a (verified) dataset manifest lists, in exactly the listed versions
    /// ([`super::pinned`]). For a read-only `cse` mount.
    ///
    /// # Errors
    /// [`MountError::Io`] for a read-write mount or another protection mode than `cse`.
    pub fn pinned_to(mut self, pinned: Arc<Pinned>) -> Result<Self, MountError> {
        if self.options.read_write || !matches!(self.protection, Protection::Cse(_)) {
            return Err(MountError::Io(
                "a mount pinned to a dataset manifest is read-only and cse".into(),
            ));
        }
        self.pinned = Some(pinned);
        Ok(self)
    }

    /// The manifest this mount is pinned to, for its findings ([`Pinned::status`]).
    pub fn pinned(&self) -> Option<Arc<Pinned>> {
        self.pinned.clone()
    }

    /// Inodes whose size went back to their committed version since the last call (an
    /// uncommitted version abandoned): the FUSE adapter tells the kernel to drop what it cached
    /// of their attributes, so no reader sees the abandoned size until its cache times out.
    pub fn take_stale_attributes(&self) -> Vec<u64> {
        std::mem::take(&mut *self.stale_attributes.lock().expect("poisoned"))
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
    /// A pinned mount checks the key against the first listed header instead (a blob of the
    /// store may be the attacked one: it fails alone, at open). Dataset manifests are skipped.
    pub fn verify(&self) -> Result<(), MountError> {
        self.runtime.block_on(async {
            if !self.store.container_exists().await? {
                return Err(StoreError::ContainerNotFound(self.store.location()).into());
            }
            if let Some(pinned) = &self.pinned {
                if let (Some(header), Protection::Cse(key)) =
                    (pinned.first_header(), &self.protection)
                {
                    encfs_crypto::format::BlobCipher::open(key, header).map_err(|source| {
                        SourceError::Crypto {
                            blob: "the dataset manifest's first entry".into(),
                            source,
                        }
                    })?;
                }
                return Ok(());
            }
            let page = self
                .store
                .list(&crate::store::ListOptions {
                    prefix: &self.prefix,
                    max_results: Some(8),
                    ..Default::default()
                })
                .await?;
            let first = page.blobs.iter().find(|blob| !is_manifest_blob(&blob.name));
            if let Some(first) = first {
                let (source, _) = BlobSource::open(
                    &*self.store,
                    &first.name,
                    first.properties.size,
                    Some(&first.properties.etag),
                    &self.protection,
                    0,
                    None,
                )
                .await?;
                if let Protection::Cpk(key) = &self.protection {
                    self.store.properties(&source.name, Some(key)).await?;
                }
            }
            Ok(())
        })
    }

    pub(super) fn blob_name(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }
}
