//! The write path of a read-write mount: one `Dirty` per file being changed.
//!
//! A file's new content is kept as blocks of [`WRITE_BLOCK`] plaintext bytes (whole EBF segments).
//! A block that the writer has moved past is sealed and sent as a staged block at once, in the
//! background. So that a later write into that block can still be served, the embedded store serves
//! staged blocks back ([`BlobStore::local`]); for other stores (Azure keeps uncommitted
//! blocks write-only) a copy is parked in a scratch file that never holds plaintext (`Scratch`:
//! `cse` blocks are already ciphertext under the data key; `cpk`/`sse` blocks are sealed under the
//! mount's ephemeral key). Staged blocks are invisible until `Dirty::commit` (at `flush`, `fsync`
//! and `close`) commits the block list in one request: the new version appears atomically, and a
//! crash before that leaves the old one intact.
//!
//! Memory is bounded by a byte semaphore shared by all files (the write budget): staging waits for
//! room, which is the backpressure a writer feels. Unchanged blocks of an existing file are read
//! through the cache and re-sent at commit.
//!
//! **Failures never publish wrong content.** A commit whose final request fails (the store was
//! unreachable, its directory moved away) keeps every byte — the last block stays in memory, the
//! staged ones stay staged under this version's own block ids — so a later `fsync` or `close`
//! retries it. A block lost in the background (its staging failed) makes the version
//! uncommittable: every later `write`, `flush`, `fsync` and `close` of it fails (`ENOSPC` when the
//! store ran out of space, `EIO` otherwise), its staging is freed, and the previous version stays
//! in the store; only truncating the file to zero starts a new version. Each version stages under
//! ids of its own ([`BlockIds`]), so two writers of one blob never mix blocks: the last commit
//! wins whole. A file can hold at most [`MAX_BLOCKS`] blocks (Azure's limit per block blob): the
//! block size of a file that must be larger is chosen when it grows, before anything is staged, up
//! to [`MAX_WRITE_BLOCK`]; beyond that the size is `EFBIG` at once, and nothing is materialised
//! before the commit needs it. A commit that cannot finish within the request deadline fails with
//! `EIO` and keeps what it staged, so the next `fsync` goes on from there.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use encfs_crypto::format::{BlobCipher, HEADER_LEN, NONCE_LEN, SegmentSize, TAG_LEN};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::error::{FsError, errno_of};
use super::scratch::{Record, Scratch};
use super::source::SharedSource;
use crate::store::protection::Protection;
use crate::store::{BlobStore, BlockIds, Condition, Metadata, StoreError};

/// Default plaintext bytes per staged block.
pub const WRITE_BLOCK: usize = 4 << 20;
/// Most blocks in one blob: Azure's limit for a block blob's committed block list.
pub const MAX_BLOCKS: u64 = 50_000;
/// Largest block a file may be given to fit [`MAX_BLOCKS`]: a block is held in memory while it is
/// written, so this bounds memory per file. With it a file can reach `50,000 × 64 MiB` ≈ 3.05 TiB.
pub const MAX_WRITE_BLOCK: usize = 64 << 20;
/// Semaphore unit of the write budget.
const PERMIT: usize = 64 << 10;

/// What every dirty file shares: the store, the mode, the runtime and the write budget.
pub(crate) struct WriteContext {
    pub store: Arc<dyn BlobStore>,
    pub protection: Protection,
    pub segment: SegmentSize,
    /// Plaintext bytes per staged block: a multiple of the segment size.
    pub block: usize,
    pub runtime: Handle,
    pub budget: Arc<Semaphore>,
    pub budget_bytes: usize,
    pub scratch_dir: Option<std::path::PathBuf>,
    /// How long one commit (one `flush`, `fsync`, `close` or `truncate`) may take.
    pub deadline: Duration,
}

impl WriteContext {
    /// Semaphore permits for `bytes`, clamped so one block always fits the budget.
    fn permits(&self, bytes: usize) -> u32 {
        bytes
            .div_ceil(PERMIT)
            .clamp(1, (self.budget_bytes / PERMIT).max(1)) as u32
    }
}

/// Reads plaintext of a committed version (through the block cache).
pub(crate) trait BaseReader {
    /// `len` bytes of `source` from `offset` (short only at the end of the blob).
    fn read_base(&self, source: &SharedSource, offset: u64, len: usize)
    -> Result<Vec<u8>, FsError>;
}

/// How to park the staged bytes: as they are (EBF under the data key) at an offset, or (plaintext)
/// sealed under the scratch key.
enum Park {
    Raw(u64),
    Seal(Record),
}

/// Where a staged block's copy lies.
#[derive(Clone, Copy)]
enum Parked {
    /// In the store, which serves staged blocks back ([`BlobStore::local`]).
    Store,
    /// EBF segments under the data key, as staged.
    Ebf { offset: u64, len: usize },
    /// Plaintext sealed under the ephemeral scratch key.
    Sealed(Record),
}

/// How a version's blocks are sealed: EBF under a cipher of its own (`cse`), or left to the
/// service (`cpk`, `sse`). One value with the protection mode, so a `cse` file without its cipher
/// cannot exist: a cipher that cannot be made is an error, never plaintext.
#[derive(Clone)]
enum Sealing {
    Ebf(Arc<BlobCipher>),
    Service,
}

impl Sealing {
    fn new(ctx: &WriteContext, name: &str) -> Result<Self, Failure> {
        match &ctx.protection {
            Protection::Cse(key) => BlobCipher::create(key, ctx.segment)
                .map(|cipher| Self::Ebf(Arc::new(cipher)))
                .map_err(|e| Failure::io(format!("{name}: cannot start a new version: {e}"))),
            Protection::Cpk(_) | Protection::Sse => Ok(Self::Service),
        }
    }

    fn cipher(&self) -> Option<&BlobCipher> {
        match self {
            Self::Ebf(cipher) => Some(cipher),
            Self::Service => None,
        }
    }
}

/// Why a version cannot be committed: the errno the application gets, and what is logged.
#[derive(Clone, Debug)]
struct Failure {
    errno: i32,
    message: String,
}

impl Failure {
    fn io(message: String) -> Self {
        Self {
            errno: libc::EIO,
            message,
        }
    }

    fn store(error: &StoreError) -> Self {
        Self {
            errno: errno_of(error),
            message: error.to_string(),
        }
    }

    /// The error the application gets, logged (every time: each call that fails on it says so).
    fn report(&self, name: &str) -> FsError {
        FsError::with_message(self.errno, format!("{name}: {}", self.message))
    }
}

/// The uncommitted new content of one file.
pub(crate) struct Dirty {
    /// Blob name.
    pub name: String,
    /// Current length.
    pub size: u64,
    /// Plaintext bytes per staged block.
    block: usize,
    /// The committed version being modified, if any.
    base: Option<SharedSource>,
    /// Bytes of `base` still part of the file (a truncate cuts this; growing again gives zeros).
    base_valid: u64,
    /// Blocks in memory. One may be shorter than its length in the file (`block_len`): the bytes
    /// past its end are zeros. (Appending then costs no zero-filling.)
    blocks: BTreeMap<u64, Vec<u8>>,
    staged: BTreeMap<u64, Parked>,
    scratch: Option<Arc<Scratch>>,
    sealing: Sealing,
    /// The block ids of this version (fresh for every version).
    ids: BlockIds,
    /// Ids staged in the store for this version (sent, whether or not the task finished).
    sent: std::collections::BTreeSet<u64>,
    tasks: Vec<JoinHandle<Result<(), StoreError>>>,
    /// A block of this version was lost: it can never be committed (sticky until truncated to 0).
    failure: Option<Failure>,
    /// Something to commit.
    pub changed: bool,
    /// Metadata the owner of this file adds to the commit (its POSIX attributes), over the
    /// metadata every blob carries.
    pub attributes: Metadata,
}

impl Dirty {
    /// New (or truncated) content for `name`, changed from the start.
    pub fn empty(ctx: &WriteContext, name: &str) -> Result<Self, FsError> {
        let mut dirty = Self::over(ctx, name, None)?;
        dirty.changed = true;
        Ok(dirty)
    }

    /// Content starting as the committed version `base`.
    pub fn over(
        ctx: &WriteContext,
        name: &str,
        base: Option<SharedSource>,
    ) -> Result<Self, FsError> {
        let sealing = Sealing::new(ctx, name).map_err(|f| f.report(name))?;
        let size = base.as_ref().map_or(0, |b| b.plain_len);
        let mut dirty = Self {
            name: name.to_owned(),
            size: 0,
            block: ctx.block,
            base_valid: size,
            base,
            blocks: BTreeMap::new(),
            staged: BTreeMap::new(),
            scratch: None,
            sealing,
            ids: BlockIds::new(),
            sent: Default::default(),
            tasks: Vec::new(),
            failure: None,
            changed: false,
            attributes: Metadata::new(),
        };
        dirty.fit(ctx, size)?;
        dirty.size = size;
        Ok(dirty)
    }

    /// Makes sure the file may grow to `size`: within [`MAX_BLOCKS`] blocks, choosing a larger
    /// block size while nothing beyond block 0 is held; `EFBIG` when it cannot be done.
    fn fit(&mut self, ctx: &WriteContext, size: u64) -> Result<(), FsError> {
        if size <= MAX_BLOCKS * self.block as u64 {
            return Ok(());
        }
        let mut block = self.block;
        while size > MAX_BLOCKS * block as u64 && block * 2 <= MAX_WRITE_BLOCK.max(ctx.block) {
            block *= 2;
        }
        let movable = self.staged.is_empty()
            && self.sent.is_empty()
            && self.blocks.keys().all(|&index| index == 0);
        if size > MAX_BLOCKS * block as u64 || !movable {
            return Err(FsError::with_message(
                libc::EFBIG,
                format!(
                    "{}: a size of {size} bytes is beyond what this file can hold ({} blocks of \
                     {} bytes)",
                    self.name,
                    MAX_BLOCKS,
                    if movable { block } else { self.block }
                ),
            ));
        }
        // Block 0 (if any) keeps its bytes; it just becomes a longer block.
        self.block = block;
        Ok(())
    }

    fn block_len(&self, index: u64) -> usize {
        let start = index * self.block as u64;
        self.size.saturating_sub(start).min(self.block as u64) as usize
    }

    /// Fails when a block of this version was lost (see [`Failure`]). The first time, it waits
    /// for the other staging tasks and frees everything this version staged.
    fn check(&mut self, ctx: &WriteContext) -> Result<(), FsError> {
        if self.failure.is_none() {
            return Ok(());
        }
        self.reap(ctx, true);
        self.discard_staging(ctx);
        let failure = self.failure.as_ref().expect("checked above");
        Err(failure.report(&self.name))
    }

    fn reap(&mut self, ctx: &WriteContext, wait: bool) {
        let tasks = std::mem::take(&mut self.tasks);
        for task in tasks {
            if !wait && !task.is_finished() {
                self.tasks.push(task);
                continue;
            }
            let failure = match ctx.runtime.block_on(task) {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => Failure::store(&error),
                Err(join) => Failure::io(format!("staging task failed: {join}")),
            };
            // The first failure is the one reported.
            self.failure.get_or_insert(failure);
        }
    }

    /// Brings block `index` into memory (at most `block_len` bytes, zeros after), from the staged
    /// copy or the base version when it is not there yet.
    fn load(
        &mut self,
        ctx: &WriteContext,
        base: &dyn BaseReader,
        index: u64,
    ) -> Result<(), FsError> {
        if self.blocks.contains_key(&index) {
            return Ok(());
        }
        let want = self.block_len(index);
        let start = index * self.block as u64;
        let mut plain = match self.staged.remove(&index) {
            Some(parked) => {
                self.reap(ctx, true);
                self.check(ctx)?;
                self.unpark(ctx, index, parked)?
            }
            None => match &self.base {
                Some(source) if start < self.base_valid => {
                    let len = (self.base_valid - start).min(want as u64) as usize;
                    base.read_base(source, start, len)?
                }
                // A new block: room for all of it, so appending never reallocates.
                _ => Vec::with_capacity(self.block),
            },
        };
        plain.truncate(want);
        self.blocks.insert(index, plain);
        Ok(())
    }

    fn unpark(&self, ctx: &WriteContext, index: u64, parked: Parked) -> Result<Vec<u8>, FsError> {
        let fail = |e: String| FsError::io(format!("{}: staged block {index}: {e}", self.name));
        let scratch = || {
            self.scratch
                .as_ref()
                .expect("parked blocks have a scratch file")
        };
        // The bytes as staged (EBF under the data key for `cse`), or the plaintext itself.
        let staged = match parked {
            Parked::Store => ctx
                .store
                .local()
                .map(|local| {
                    local.read_staged(&self.name, &self.ids.id(index), ctx.protection.cpk())
                })
                .expect("the store reads staged blocks")
                .map(Vec::from)
                .map_err(|e| fail(e.to_string()))?,
            Parked::Ebf { offset, len } => scratch()
                .read_raw(offset, len)
                .map_err(|e| fail(e.to_string()))?,
            Parked::Sealed(record) => {
                return scratch().read(&record).map_err(|e| fail(e.to_string()));
            }
        };
        self.open_block(ctx, index, staged)
            .map_err(|e| fail(e.to_string()))
    }

    /// The plaintext of staged block `index` from the bytes that were staged (for `cse`, EBF
    /// segments under the data key, after the header for block 0).
    fn open_block(
        &self,
        ctx: &WriteContext,
        index: u64,
        mut sealed: Vec<u8>,
    ) -> Result<Vec<u8>, encfs_crypto::Error> {
        let Some(cipher) = self.sealing.cipher() else {
            return Ok(sealed);
        };
        if index == 0 {
            sealed.drain(..HEADER_LEN.min(sealed.len()));
        }
        let per = ctx.segment.sealed_bytes();
        let first = index * (self.block / ctx.segment.bytes()) as u64;
        let mut plain = Vec::with_capacity(self.block);
        for (i, chunk) in sealed.chunks_mut(per).enumerate() {
            let range = cipher.open_segment_in_place(first + i as u64, false, chunk)?;
            plain.extend_from_slice(&chunk[range]);
        }
        Ok(plain)
    }

    /// `EIO` when a background staging of this file failed.
    pub fn pending_error(&mut self, ctx: &WriteContext) -> Result<(), FsError> {
        self.reap(ctx, false);
        self.check(ctx)
    }

    /// Writes `data` at `offset`, then stages the blocks the writer has moved past.
    pub fn write(
        &mut self,
        ctx: &WriteContext,
        base: &dyn BaseReader,
        offset: u64,
        data: &[u8],
    ) -> Result<(), FsError> {
        self.reap(ctx, false);
        self.check(ctx)?;
        let end = offset + data.len() as u64;
        self.fit(ctx, end)?;
        if end > self.size {
            // Bytes between the old end and `offset` read as zeros: blocks not in memory are
            // filled on load (the base counts only up to `base_valid`), blocks in memory read as
            // zeros past their ends.
            self.size = end;
        }
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let index = at / self.block as u64;
            let within = (at % self.block as u64) as usize;
            let n = rest.len().min(self.block - within);
            self.load(ctx, base, index)?;
            let block = self.blocks.get_mut(&index).expect("loaded");
            if block.len() < within {
                block.resize(within, 0);
            }
            // Overwrite what the block holds, append the rest.
            let overlap = (block.len() - within).min(n);
            block[within..within + overlap].copy_from_slice(&rest[..overlap]);
            block.extend_from_slice(&rest[overlap..n]);
            rest = &rest[n..];
            at += n as u64;
        }
        self.changed = true;
        // Stream out full blocks that lie wholly before this write.
        let behind: Vec<u64> = self
            .blocks
            .keys()
            .copied()
            .filter(|&i| (i + 1) * self.block as u64 <= offset)
            .collect();
        for index in behind {
            self.stage(ctx, index)?;
        }
        // Random writers: keep a bounded number of blocks in memory.
        let limit = (ctx.budget_bytes / self.block / 4).max(2);
        while self.blocks.len() > limit {
            let full = self.size / self.block as u64;
            let Some(&index) = self.blocks.keys().find(|&&i| i < full) else {
                break;
            };
            self.stage(ctx, index)?;
        }
        Ok(())
    }

    /// Reads `len` bytes from `offset` of the current content.
    pub fn read(
        &mut self,
        ctx: &WriteContext,
        base: &dyn BaseReader,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, FsError> {
        // A version that lost a block has no content to read back.
        self.check(ctx)?;
        let end = (offset + len as u64).min(self.size);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut at = offset;
        while at < end {
            let index = at / self.block as u64;
            let within = (at % self.block as u64) as usize;
            let n = ((end - at) as usize).min(self.block - within);
            if let Some(block) = self.blocks.get(&index) {
                // What the block holds of the range, then zeros.
                let held = block.len().clamp(within, within + n);
                out.extend_from_slice(block.get(within..held).unwrap_or_default());
                out.resize(out.len() + within + n - held, 0);
            } else if let Some(&parked) = self.staged.get(&index) {
                self.reap(ctx, true);
                self.check(ctx)?;
                out.extend_from_slice(&self.unpark(ctx, index, parked)?[within..within + n]);
            } else {
                let start = index * self.block as u64 + within as u64;
                let mut piece = match &self.base {
                    Some(source) if start < self.base_valid => {
                        let from_base = (self.base_valid - start).min(n as u64) as usize;
                        base.read_base(source, start, from_base)?
                    }
                    _ => Vec::new(),
                };
                piece.resize(n, 0);
                out.extend_from_slice(&piece);
            }
            at += n as u64;
        }
        Ok(out)
    }

    /// Sets the length: cut blocks beyond it, zero the tail of the block it ends in.
    pub fn truncate(
        &mut self,
        ctx: &WriteContext,
        base: &dyn BaseReader,
        size: u64,
    ) -> Result<(), FsError> {
        self.reap(ctx, false);
        if size == 0 {
            // Nothing of the old content is left: a new version, whatever became of this one.
            self.restart(ctx)?;
            self.size = 0;
            self.base_valid = 0;
            self.changed = true;
            return Ok(());
        }
        self.check(ctx)?;
        self.fit(ctx, size)?;
        if size < self.size {
            let keep = size.div_ceil(self.block as u64);
            self.blocks.retain(|&i, _| i < keep);
            self.staged.retain(|&i, _| i < keep);
            if !size.is_multiple_of(self.block as u64) {
                let last = size / self.block as u64;
                self.load(ctx, base, last)?;
            }
            self.size = size;
            self.base_valid = self.base_valid.min(size);
            if let Some(block) = self.blocks.get_mut(&(size / self.block as u64)) {
                block.truncate((size % self.block as u64) as usize);
            }
        } else if size > self.size {
            // The blocks in memory read as zeros past their ends.
            self.size = size;
        }
        self.changed = true;
        Ok(())
    }

    /// Seals block `index` (full, not final) and sends it as a staged block in the background.
    fn stage(&mut self, ctx: &WriteContext, index: u64) -> Result<(), FsError> {
        let plain = self
            .blocks
            .remove(&index)
            .expect("staging a block in memory");
        // Sealed by the staging task, off the writer's thread (the writer goes on meanwhile).
        let (sealing, segment, block, name) = (
            self.sealing.clone(),
            ctx.segment,
            self.block,
            self.name.clone(),
        );
        let data = move || seal(&sealing, segment, block, &name, index, &plain, block, false);
        if ctx.store.local().is_some() {
            // The store serves the block back until the commit: no copy of our own.
            self.staged.insert(index, Parked::Store);
            self.send_block(ctx, index, self.block, data, None);
            return Ok(());
        }
        let scratch = match &self.scratch {
            Some(scratch) => scratch.clone(),
            None => {
                let scratch = Arc::new(
                    Scratch::new(ctx.scratch_dir.as_deref())
                        .map_err(|e| FsError::io(format!("{}: scratch file: {e}", self.name)))?,
                );
                self.scratch = Some(scratch.clone());
                scratch
            }
        };
        let slot =
            index * Scratch::sealed_len(self.block + HEADER_LEN + self.block / 64 + 28 * 8) as u64;
        // The parked copy is written by the staging task too; whoever needs it back first waits
        // for the tasks (`reap`).
        let (parked, park) = if self.sealing.cipher().is_some() {
            let header = if index == 0 { HEADER_LEN } else { 0 };
            let len = header + ctx.segment.sealed_len(self.block);
            (Parked::Ebf { offset: slot, len }, Park::Raw(slot))
        } else {
            let record = scratch.reserve(slot, self.block);
            (Parked::Sealed(record), Park::Seal(record))
        };
        self.staged.insert(index, parked);
        self.send_block(ctx, index, self.block, data, Some((scratch, park)));
        Ok(())
    }

    /// Stages block `index` (about `bytes` long) in the background: `data` makes its bytes (on a
    /// blocking thread), then they go to the store, and to the scratch file when `park` says so.
    fn send_block(
        &mut self,
        ctx: &WriteContext,
        index: u64,
        bytes: usize,
        data: impl FnOnce() -> Result<Bytes, String> + Send + 'static,
        park: Option<(Arc<Scratch>, Park)>,
    ) {
        let permits = ctx.permits(bytes);
        let offset = self.blob_offset(ctx, index);
        let budget = ctx.budget.clone();
        // Backpressure: wait here, in the writer's thread, until the budget has room.
        let permit = ctx
            .runtime
            .block_on(budget.acquire_many_owned(permits))
            .expect("write budget semaphore closed");
        let (store, name, cpk, id) = (
            ctx.store.clone(),
            self.name.clone(),
            ctx.protection.cpk().cloned(),
            self.ids.id(index),
        );
        self.sent.insert(index);
        self.tasks.push(ctx.runtime.spawn(async move {
            let failed = |source: std::io::Error| StoreError::Io {
                path: format!("{name} (block {index})"),
                source,
            };
            let data = tokio::task::spawn_blocking(data)
                .await
                .map_err(|join| failed(std::io::Error::other(join.to_string())))?
                .map_err(|e| failed(std::io::Error::other(e)))?;
            let parking = park.map(|(scratch, park)| {
                let data = data.clone();
                tokio::task::spawn_blocking(move || match park {
                    Park::Raw(offset) => scratch.write_raw(offset, &data),
                    Park::Seal(record) => scratch.write_reserved(&record, &data),
                })
            });
            let result = store
                .stage_block_at(&name, &id, offset, data, cpk.as_ref())
                .await;
            drop(permit);
            if let Some(parking) = parking {
                match parking.await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        return Err(StoreError::Io {
                            path: format!("{name} (parked block {index})"),
                            source: error,
                        });
                    }
                    Err(join) => {
                        return Err(StoreError::Io {
                            path: format!("{name} (parked block {index})"),
                            source: std::io::Error::other(join.to_string()),
                        });
                    }
                }
            }
            result
        }));
    }

    /// Where block `index` lies in the committed blob.
    fn blob_offset(&self, ctx: &WriteContext, index: u64) -> u64 {
        match &self.sealing {
            Sealing::Service => index * self.block as u64,
            Sealing::Ebf(_) if index == 0 => 0,
            Sealing::Ebf(_) => {
                HEADER_LEN as u64 + index * ctx.segment.sealed_len(self.block) as u64
            }
        }
    }

    /// [`seal`] of the last block, on this thread.
    fn seal_now(
        &self,
        ctx: &WriteContext,
        index: u64,
        plain: &[u8],
        len: usize,
    ) -> Result<Bytes, FsError> {
        seal(
            &self.sealing,
            ctx.segment,
            self.block,
            &self.name,
            index,
            plain,
            len,
            true,
        )
        .map_err(FsError::io)
    }

    /// Sends everything not yet sent and commits the block list: the new version becomes visible
    /// in one step. Returns the new etag. On failure nothing is published and, unless a block was
    /// lost, everything is kept for the next attempt (see the module's comment).
    pub fn commit(&mut self, ctx: &WriteContext, base: &dyn BaseReader) -> Result<String, FsError> {
        let started = Instant::now();
        self.reap(ctx, true);
        self.check(ctx)?;
        let full = self.size / self.block as u64;
        let tail = (self.size % self.block as u64) as usize;
        let cse = self.sealing.cipher().is_some();
        let cpk = ctx.protection.cpk().cloned();
        let metadata = self.metadata(ctx);
        let single = full == 0 || (!cse && full == 1 && tail == 0);
        if single {
            let index = 0;
            self.load(ctx, base, index)?;
            // Sealed from the block in memory, which stays there until the put succeeded.
            let plain = self.blocks.get(&index).map_or(&[][..], Vec::as_slice);
            let data = self.seal_now(ctx, index, plain, self.size as usize)?;
            let etag = ctx
                .runtime
                .block_on(ctx.store.put(
                    &self.name,
                    data,
                    &metadata,
                    &Condition::None,
                    cpk.as_ref(),
                ))
                .map_err(|e| Failure::store(&e).report(&self.name))?;
            self.finish(ctx);
            return Ok(etag);
        }
        for index in 0..full {
            if self.staged.contains_key(&index) {
                continue;
            }
            if started.elapsed() > ctx.deadline {
                // What was staged stays staged: the next fsync or close goes on from here.
                return Err(FsError::io(format!(
                    "{}: commit did not finish within the {:?} request deadline (block {index} \
                     of {full}); it continues at the next fsync or close",
                    self.name, ctx.deadline
                )));
            }
            self.load(ctx, base, index)?;
            self.stage(ctx, index)?;
            self.reap(ctx, false);
            self.check(ctx)?;
        }
        let mut ids: Vec<String> = (0..full).map(|i| self.ids.id(i)).collect();
        self.reap(ctx, true);
        self.check(ctx)?;
        if cse || tail > 0 {
            self.load(ctx, base, full)?;
            // The last block is staged here and stays in memory until the commit succeeded: a
            // failure to send it loses nothing (the next attempt sends it again, same id).
            let plain = self.blocks.get(&full).map_or(&[][..], Vec::as_slice);
            let data = self.seal_now(ctx, full, plain, tail)?;
            let id = self.ids.id(full);
            self.sent.insert(full);
            ctx.runtime
                .block_on(ctx.store.stage_block_at(
                    &self.name,
                    &id,
                    self.blob_offset(ctx, full),
                    data,
                    cpk.as_ref(),
                ))
                .map_err(|e| Failure::store(&e).report(&self.name))?;
            ids.push(id);
        }
        let etag = ctx
            .runtime
            .block_on(ctx.store.commit_blocks(
                &self.name,
                &ids,
                &metadata,
                &Condition::None,
                cpk.as_ref(),
            ))
            .map_err(|e| Failure::store(&e).report(&self.name))?;
        self.finish(ctx);
        Ok(etag)
    }

    fn metadata(&self, ctx: &WriteContext) -> Metadata {
        let mtime = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut metadata =
            crate::store::protection::blob_metadata(&ctx.protection, self.size, mtime);
        metadata.extend(self.attributes.clone());
        metadata
    }

    /// After a commit: nothing dirty; the next version gets fresh keys and block ids. If no
    /// cipher can be made for it, the file takes no more writes (never plaintext under `cse`).
    fn finish(&mut self, ctx: &WriteContext) {
        self.blocks.clear();
        self.staged.clear();
        self.sent.clear();
        self.scratch = None;
        self.changed = false;
        self.ids = BlockIds::new();
        match Sealing::new(ctx, &self.name) {
            Ok(sealing) => self.sealing = sealing,
            Err(failure) => self.failure = Some(failure),
        }
    }

    /// Drops this version entirely (its staging too) and starts a new, empty one.
    fn restart(&mut self, ctx: &WriteContext) -> Result<(), FsError> {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        self.discard_staging(ctx);
        self.failure = None;
        self.finish(ctx);
        self.check(ctx)
    }

    /// Frees the store's staging of this version's blocks, in the background.
    fn discard_staging(&mut self, ctx: &WriteContext) {
        let ids: Vec<String> = std::mem::take(&mut self.sent)
            .into_iter()
            .map(|i| self.ids.id(i))
            .collect();
        self.staged.clear();
        if ids.is_empty() {
            return;
        }
        let (store, name) = (ctx.store.clone(), self.name.clone());
        ctx.runtime.spawn(async move {
            if let Err(error) = store.discard_staged(&name, &ids).await {
                eprintln!("encfs: {name}: cannot free staged blocks: {error}");
            }
        });
    }

    /// Points the content at the version just committed (for writes after an `fsync`).
    pub fn rebase(&mut self, source: Option<SharedSource>) {
        self.base_valid = source.as_ref().map_or(0, |s| s.plain_len);
        self.base = source;
    }

    /// Stops background work and frees the staging (the file was unlinked or the last writer
    /// closed it without a successful commit).
    pub fn abandon(&mut self, ctx: &WriteContext) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        self.discard_staging(ctx);
        self.blocks.clear();
        self.changed = false;
    }
}

/// The bytes that go to the store for block `index` of a file (`block` plaintext bytes per block),
/// `len` plaintext bytes long (`plain`, then zeros): EBF segments for `cse` (the header in front of
/// block 0; the last segment final when `last`), the plaintext otherwise.
#[allow(clippy::too_many_arguments)]
fn seal(
    sealing: &Sealing,
    segment: SegmentSize,
    block: usize,
    name: &str,
    index: u64,
    plain: &[u8],
    len: usize,
    last: bool,
) -> Result<Bytes, String> {
    debug_assert!(plain.len() <= len);
    let Some(cipher) = sealing.cipher() else {
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(plain);
        out.resize(len, 0);
        return Ok(Bytes::from(out));
    };
    let sealed_len = if last {
        segment.sealed_len_last(len)
    } else {
        segment.sealed_len(len)
    };
    let header = if index == 0 { HEADER_LEN } else { 0 };
    // Laid out in one pass, with no zero-filling first: room for the nonce, the plaintext (zeros
    // past `plain`), room for the tag; then sealed in place.
    let mut out = Vec::with_capacity(header + sealed_len);
    if index == 0 {
        out.extend_from_slice(&cipher.header().to_bytes());
    }
    let per = segment.sealed_bytes();
    let count = sealed_len.div_ceil(per);
    for i in 0..count {
        let start = (i * segment.bytes()).min(len);
        let end = (start + segment.bytes()).min(len);
        let piece = &plain[start.min(plain.len())..end.min(plain.len())];
        out.extend_from_slice(&[0u8; NONCE_LEN]);
        out.extend_from_slice(piece);
        out.resize(out.len() + (end - start - piece.len()) + TAG_LEN, 0);
    }
    debug_assert_eq!(out.len(), header + sealed_len);
    let first = index * (block / segment.bytes()) as u64;
    use rayon::prelude::*;
    out[header..]
        .par_chunks_mut(per)
        .enumerate()
        .try_for_each(|(i, chunk)| {
            cipher.seal_segment_in_place(first + i as u64, last && i + 1 == count, chunk)
        })
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(Bytes::from(out))
}
