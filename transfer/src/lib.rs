//! Uploads and downloads between local files and a [`BlobStore`], in any protection mode.
//!
//! Upload: files are walked, each is read → (for `cse`) sealed into EBF on the blocking pool,
//! all cores → sent as one `put` (small files) or as staged blocks aligned to whole encrypted
//! segments plus one commit (large files), many files and blocks in flight at once. A byte-based
//! semaphore bounds the data in memory (`memory_budget`). A blob appears only at its commit, so an
//! interrupted upload leaves nothing partial visible; re-running it skips blobs whose metadata
//! records the same source size and mtime.
//!
//! Download: each blob is fetched in ranges (several in flight), verified segment by segment
//! (`cse`), written to a temporary file beside the destination and renamed only once everything
//! verified; a tampered, truncated or wrong-key blob fails with its name and leaves no file.
//!
//! Small files on a store that works on the calling thread (the embedded store) skip the runtime
//! both ways: a few threads of the transfer's own each take the next file and do all of it
//! (`on_threads`), with no hand-off between threads per file.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use encfs_crypto::format::{
    HEADER_LEN, Opener, Sealer, SegmentSize, plaintext_slots, plaintext_slots_mut,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use encfs_dataset::Entry;
use encfs_dataset::tags::{TagDigest, entry_of_bytes};
use encfs_store as store;

use crate::store::attributes::StoredAttributes;
use crate::store::{
    BlobItem, BlobProperties, BlobStore, BlockIds, Condition, Metadata, StoreError, list_all,
    try_locally,
};

pub use crate::store::protection::Protection;
use crate::store::protection::{
    META_KEY_ID, META_MODE, META_MTIME, META_SIZE, blob_metadata, key_id,
};

mod posix;

/// Ranged reads in flight per blob: enough to hide a 20 ms round trip behind 8 MiB ranges.
const RANGES_IN_FLIGHT: usize = 8;

/// Tuning of a transfer.
#[derive(Debug, Clone)]
pub struct TransferOptions {
    /// Plaintext bytes per staged block or ranged read (rounded to whole segments).
    pub block_size: usize,
    /// Most data held in memory at once, all files together.
    pub memory_budget: usize,
    /// Most files in flight at once.
    pub concurrent_files: usize,
    /// EBF segment size for `cse` uploads.
    pub segment_size: SegmentSize,
    /// Report what would be done, transfer nothing.
    pub dry_run: bool,
    /// Upload: record each `cse` blob's dataset-manifest entry (header, size, segment-tag
    /// digest) as it is sealed, in [`Summary::entries`], for `upload --seal` (no second read).
    pub record_entries: bool,
    /// With [`Self::record_entries`]: hand each entry to this manifest, sealed as they arrive
    /// (`upload --seal` of a planned set), instead of collecting them in [`Summary::entries`].
    pub stream_seal: Option<Arc<encfs_dataset::StreamingSeal>>,
}

impl Default for TransferOptions {
    fn default() -> Self {
        Self {
            block_size: 8 << 20,
            memory_budget: 256 << 20,
            concurrent_files: 32,
            segment_size: SegmentSize::DEFAULT,
            dry_run: false,
            record_entries: false,
            stream_seal: None,
        }
    }
}

/// Errors of a transfer: a store error or a local file error, each naming what failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Local {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A blob failed decryption or verification.
    #[error("blob {blob}: {source}")]
    Crypto {
        /// The blob.
        blob: String,
        /// Why.
        source: encfs_crypto::Error,
    },
    /// A blob's content does not match its recorded size (changed or truncated underneath).
    #[error("blob {0}: content does not match its recorded size")]
    SizeMismatch(String),
}

fn local_error(path: &Path) -> impl FnOnce(std::io::Error) -> TransferError + '_ {
    move |source| TransferError::Local {
        path: path.display().to_string(),
        source,
    }
}

/// What a transfer did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    /// Files transferred.
    pub files: u64,
    /// Files skipped (already there, same size and mtime).
    pub skipped: u64,
    /// Plaintext bytes transferred.
    pub bytes: u64,
    /// Blob names written or read.
    pub blobs: Vec<String>,
    /// With [`TransferOptions::record_entries`]: the manifest entries of the blobs this upload
    /// sealed and wrote (not of those skipped, nor of links), in no order.
    #[serde(skip)]
    pub entries: Vec<Entry>,
}

/// Records the entry of blob `name`, sealed in memory as `blob`.
fn record_bytes(sink: &EntrySink, name: &str, blob: &[u8]) {
    match sink.as_deref() {
        Some(Recorder::Stream(seal)) => seal.record_blob(name, blob),
        _ => record(sink, || entry_of_bytes(name, blob)),
    }
}

/// Where an upload puts the manifest entries of the blobs it writes (`None`: nowhere).
type EntrySink = Option<Arc<Recorder>>;

/// Where recorded entries go: into [`Summary::entries`], or into a manifest sealed as they come.
enum Recorder {
    Collect(std::sync::Mutex<Vec<Entry>>),
    Stream(Arc<encfs_dataset::StreamingSeal>),
}

fn record(sink: &EntrySink, entry: impl FnOnce() -> Result<Entry, encfs_dataset::Error>) {
    if let Some(sink) = sink {
        // A blob this upload sealed is always EBF.
        if let Ok(entry) = entry() {
            match &**sink {
                Recorder::Collect(entries) => entries.lock().expect("poisoned").push(entry),
                Recorder::Stream(seal) => seal.record(entry),
            }
        }
    }
}

/// Called with plaintext byte counts as they complete.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// One file to upload.
#[derive(Debug, Clone)]
pub struct UploadItem {
    /// Local file.
    pub path: PathBuf,
    /// Destination blob name.
    pub blob: String,
    /// Its size.
    pub size: u64,
    /// Its mtime in nanoseconds since the epoch.
    pub mtime: u64,
    /// Mode, owner, group, and whether it is a symbolic link (then `size` is the target's
    /// length); recorded in the blob's metadata. The mtime is `mtime` above.
    pub attributes: StoredAttributes,
}

/// The files under `source` (a file or a directory, walked recursively) and their blob names
/// under `prefix`.
pub fn plan_upload(source: &Path, prefix: &str) -> Result<Vec<UploadItem>, TransferError> {
    let meta = fs::metadata(source).map_err(local_error(source))?;
    let mut items = Vec::new();
    if meta.is_file() {
        let name = source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        items.push(item(source, format!("{prefix}{name}"), &meta));
        return Ok(items);
    }
    let mut stack = vec![(source.to_path_buf(), String::new())];
    while let Some((dir, relative)) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(local_error(&dir))? {
            let entry = entry.map_err(local_error(&dir))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            // Links are carried as links (as `rsync -a` does), not followed.
            let meta = fs::symlink_metadata(&path).map_err(local_error(&path))?;
            if meta.is_dir() {
                stack.push((path, format!("{relative}{name}/")));
            } else if meta.is_file() || meta.file_type().is_symlink() {
                items.push(item(&path, format!("{prefix}{relative}{name}"), &meta));
            }
        }
    }
    items.sort_by(|a, b| a.blob.cmp(&b.blob));
    Ok(items)
}

fn item(path: &Path, blob: String, meta: &fs::Metadata) -> UploadItem {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    UploadItem {
        path: path.to_path_buf(),
        blob,
        size: meta.len(),
        mtime,
        attributes: StoredAttributes {
            mtime: None,
            ..StoredAttributes::of_local(meta)
        },
    }
}

/// Uploads `items` to `store`. Small files (one block or less) go to a few threads of their own
/// when the store works on the calling thread (the embedded store): each thread takes the next
/// file and checks, reads, seals and puts it with no hand-off between threads. Large files, and
/// small ones the store cannot take that way, go through the runtime, many at once.
pub async fn upload(
    store: Arc<dyn BlobStore>,
    items: Vec<UploadItem>,
    protection: Protection,
    options: TransferOptions,
    progress: Progress,
) -> Result<Summary, TransferError> {
    if !store.container_exists().await? {
        return Err(StoreError::ContainerNotFound(store.location()).into());
    }
    let (links, items): (Vec<UploadItem>, Vec<UploadItem>) =
        items.into_iter().partition(|item| item.attributes.symlink);
    let mut link_summary = Summary::default();
    if !options.dry_run {
        posix::upload_links(
            &*store,
            links,
            &protection,
            options.segment_size,
            &mut link_summary,
        )
        .await?;
    }
    let sink: EntrySink = match &options.stream_seal {
        Some(seal) if options.record_entries => Some(Arc::new(Recorder::Stream(seal.clone()))),
        _ => options.record_entries.then(|| {
            Arc::new(Recorder::Collect(std::sync::Mutex::new(
                Vec::with_capacity(items.len()),
            )))
        }),
    };
    let block = round_to_segments(options.block_size, options.segment_size);
    let (small, large): (Vec<UploadItem>, Vec<UploadItem>) = items
        .into_iter()
        .partition(|item| item.size as usize <= block && !options.dry_run);
    let threads = {
        let (store, protection, progress) = (store.clone(), protection.clone(), progress.clone());
        let sink = sink.clone();
        let segment = options.segment_size;
        // For a put that failed transiently on the calling thread: the async call retries.
        let runtime = tokio::runtime::Handle::current();
        SmallFileThreads::start(small, &options, move |item| {
            let skipped = match upload_small_blocking(&*store, item, &protection, segment, &sink)? {
                SmallUpload::Unsupported => return Ok(None),
                SmallUpload::Skipped => true,
                SmallUpload::Uploaded => false,
                SmallUpload::Sealed(data) => {
                    let metadata = upload_metadata(item, &protection);
                    let put = store.put(
                        &item.blob,
                        data.clone(),
                        &metadata,
                        &Condition::None,
                        protection.cpk(),
                    );
                    runtime.block_on(put)?;
                    if matches!(protection, Protection::Cse(_)) {
                        record_bytes(&sink, &item.blob, &data);
                    }
                    false
                }
            };
            progress(item.size);
            Ok(Some((item.clone(), skipped)))
        })
    };
    let mut summary = link_summary;
    let large = upload_on_runtime(
        &store,
        large,
        &protection,
        &options,
        &progress,
        &sink,
        &mut summary,
    );
    let (done, declined) = threads.finish(large.await).await?;
    for (item, skipped) in done {
        summary.record(item, skipped);
    }
    upload_on_runtime(
        &store,
        declined,
        &protection,
        &options,
        &progress,
        &sink,
        &mut summary,
    )
    .await?;
    summary.blobs.sort();
    if let Some(Recorder::Collect(entries)) = sink.as_deref() {
        summary.entries = std::mem::take(&mut *entries.lock().expect("poisoned"));
    }
    Ok(summary)
}

impl Summary {
    fn record(&mut self, item: UploadItem, skipped: bool) {
        if skipped {
            self.skipped += 1;
        } else {
            self.files += 1;
            self.bytes += item.size;
            self.blobs.push(item.blob);
        }
    }
}

/// Uploads `items` through the runtime, `concurrent_files` at once; records them in `summary`.
async fn upload_on_runtime(
    store: &Arc<dyn BlobStore>,
    items: Vec<UploadItem>,
    protection: &Protection,
    options: &TransferOptions,
    progress: &Progress,
    sink: &EntrySink,
    summary: &mut Summary,
) -> Result<(), TransferError> {
    let block = round_to_segments(options.block_size, options.segment_size);
    let budget = Arc::new(Semaphore::new(permits(
        options.memory_budget.max(2 * block),
    )));
    let files = Arc::new(Semaphore::new(options.concurrent_files.max(1)));
    let mut tasks = JoinSet::new();
    for item in items {
        let permit = files.clone().acquire_owned().await.expect("semaphore open");
        let (store, protection, budget, progress, options, sink) = (
            store.clone(),
            protection.clone(),
            budget.clone(),
            progress.clone(),
            options.clone(),
            sink.clone(),
        );
        // The skip check runs inside the task too, so a resumed upload of many small files asks
        // about them concurrently rather than one request at a time.
        tasks.spawn(async move {
            let _permit = permit;
            match already_uploaded(store.as_ref(), &item, &protection).await? {
                Existing::Same => {
                    progress(item.size);
                    return Ok((item, true));
                }
                // The store refuses to overwrite a blob under another customer key (or without
                // one): the old version goes first.
                Existing::UnderOtherCustomerKey if !options.dry_run => {
                    match store.delete(&item.blob, &Condition::None).await {
                        Ok(()) | Err(StoreError::BlobNotFound(_)) => {}
                        Err(error) => return Err(error.into()),
                    }
                }
                _ => {}
            }
            if !options.dry_run {
                upload_file(
                    &store,
                    &item,
                    &protection,
                    &options,
                    &budget,
                    &progress,
                    &sink,
                )
                .await?;
            }
            Ok::<_, TransferError>((item, false))
        });
        // Surface failures early instead of after every file was tried.
        while let Some(done) = tasks.try_join_next() {
            let (item, skipped) = done.expect("upload task panicked")?;
            summary.record(item, skipped);
        }
    }
    while let Some(done) = tasks.join_next().await {
        let (item, skipped) = done.expect("upload task panicked")?;
        summary.record(item, skipped);
    }
    Ok(())
}

/// Semaphore permits are MiB so budgets above 4 GiB fit.
fn permits(bytes: usize) -> usize {
    bytes.div_ceil(1 << 20)
}

fn round_to_segments(bytes: usize, segment: SegmentSize) -> usize {
    bytes.max(segment.bytes()).div_ceil(segment.bytes()) * segment.bytes()
}

/// What the store holds under an upload's blob name.
#[derive(Debug, PartialEq, Eq)]
enum Existing {
    /// Nothing, or another version (source, mode or key): to be uploaded.
    Different,
    /// A blob under another customer-provided key, or under one while this upload has none: to
    /// be deleted first, as stores refuse to overwrite it (so a kill between the delete and the
    /// commit leaves no blob until the upload is run again).
    UnderOtherCustomerKey,
    /// This file already uploaded in this mode under this key: skipped.
    Same,
}

async fn already_uploaded(
    store: &dyn BlobStore,
    item: &UploadItem,
    protection: &Protection,
) -> Result<Existing, TransferError> {
    same_upload(
        store.properties(&item.blob, protection.cpk()).await,
        item,
        protection,
    )
}

/// Whether the blob (its properties, or the error asking for them) is this item already uploaded
/// in this mode.
fn same_upload(
    properties: Result<crate::store::BlobProperties, StoreError>,
    item: &UploadItem,
    protection: &Protection,
) -> Result<Existing, TransferError> {
    let same = match properties {
        // Same source (size, mtime), same mode, and the same key: a blob sealed (cse) or
        // encrypted by the service (cpk) under another key is replaced, so a key rotation
        // re-uploads everything. A blob with no key id recorded (written before key ids were
        // recorded for cpk) counts as another key.
        Ok(props) => Ok(
            props.metadata.get(META_SIZE) == Some(&item.size.to_string())
                && props.metadata.get(META_MTIME) == Some(&item.mtime.to_string())
                && props.metadata.get(META_MODE).map(String::as_str) == Some(protection.name())
                && props.metadata.get(META_KEY_ID) == key_id(protection).as_ref(),
        ),
        Err(StoreError::BlobNotFound(_)) => Ok(false),
        // Under another customer key, or under one while this upload has none.
        Err(StoreError::CustomerKeyRequired(_) | StoreError::CustomerKeyMismatch(_)) => {
            return Ok(Existing::UnderOtherCustomerKey);
        }
        // A blob without a customer key, and this upload has one: the put replaces it.
        Err(StoreError::CustomerKeyUnexpected(_)) => Ok(false),
        Err(error) => Err(error.into()),
    };
    same.map(|same| {
        if same {
            Existing::Same
        } else {
            Existing::Different
        }
    })
}

fn upload_metadata(item: &UploadItem, protection: &Protection) -> Metadata {
    let mut metadata = blob_metadata(protection, item.size, item.mtime);
    item.attributes.write_into(&mut metadata);
    metadata
}

/// Reads the next `len` bytes of a file into the buffer layout the mode needs: plaintext slots of
/// sealed segments for `cse`, plain bytes otherwise; after `front` bytes left for a header.
fn read_chunk(
    file: &mut File,
    path: &Path,
    len: usize,
    sealed_len: Option<(SegmentSize, usize)>,
    front: usize,
) -> Result<Vec<u8>, TransferError> {
    let short = || TransferError::Local {
        path: path.display().to_string(),
        source: std::io::ErrorKind::UnexpectedEof.into(),
    };
    match sealed_len {
        None => {
            let mut buf = vec![0u8; front + len];
            file.read_exact(&mut buf[front..]).map_err(|_| short())?;
            Ok(buf)
        }
        Some((segment, sealed)) => {
            let mut buf = vec![0u8; front + sealed];
            for slot in plaintext_slots_mut(&mut buf[front..], segment) {
                file.read_exact(slot).map_err(|_| short())?;
            }
            Ok(buf)
        }
    }
}

/// Chunk `index` (`len` bytes, the file's last when `last`) read from `file` and, for `cse`,
/// sealed (the header in front of chunk 0; the sealer is used up by the last chunk).
fn read_and_seal(
    file: &mut File,
    path: &Path,
    index: usize,
    len: usize,
    last: bool,
    sealed_len: Option<(SegmentSize, usize)>,
    sealer: &mut Option<Sealer>,
) -> Result<Bytes, TransferError> {
    let header = match sealer.as_ref() {
        Some(sealer) if index == 0 => Some(sealer.header_bytes()),
        _ => None,
    };
    let front = header.map_or(0, |h| h.len());
    let mut buf = read_chunk(file, path, len, sealed_len, front)?;
    if sealer.is_none() {
        return Ok(Bytes::from(buf));
    }
    let crypto = |source| TransferError::Crypto {
        blob: path.display().to_string(),
        source,
    };
    if last {
        let sealer = sealer.take().expect("sealer");
        sealer
            .seal_last_in_place(&mut buf[front..])
            .map_err(crypto)?;
    } else {
        let sealer = sealer.as_mut().expect("sealer");
        sealer
            .seal_segments_in_place(&mut buf[front..])
            .map_err(crypto)?;
    }
    if let Some(header) = header {
        buf[..front].copy_from_slice(&header);
    }
    Ok(Bytes::from(buf))
}

/// A fresh EBF sealer for `item` in `cse` mode; `None` in the other modes.
fn sealer_for(
    item: &UploadItem,
    protection: &Protection,
    segment: SegmentSize,
) -> Result<Option<Sealer>, TransferError> {
    let Protection::Cse(key) = protection else {
        return Ok(None);
    };
    Sealer::new(key, segment)
        .map(Some)
        .map_err(|source| TransferError::Crypto {
            blob: item.blob.clone(),
            source,
        })
}

/// What [`upload_small_blocking`] did.
enum SmallUpload {
    /// The store has no local access, its skip check failed transiently, or the file needs the
    /// async path (an old version to delete first): nothing was done.
    Unsupported,
    Skipped,
    Uploaded,
    /// Sealed, but the calling-thread put failed transiently: put it the async way (retried).
    Sealed(Bytes),
}

/// A file of one chunk on a store with local access (the embedded store): skip check, read, seal
/// and put on one blocking thread, with no hand-offs.
fn upload_small_blocking(
    store: &dyn BlobStore,
    item: &UploadItem,
    protection: &Protection,
    segment: SegmentSize,
    sink: &EntrySink,
) -> Result<SmallUpload, TransferError> {
    let Some(properties) = try_locally(store, |local| {
        local.properties(&item.blob, protection.cpk())
    }) else {
        return Ok(SmallUpload::Unsupported);
    };
    match same_upload(properties, item, protection)? {
        Existing::Same => return Ok(SmallUpload::Skipped),
        // The old version must be deleted first: the async path does that.
        Existing::UnderOtherCustomerKey => return Ok(SmallUpload::Unsupported),
        Existing::Different => {}
    }
    let mut sealer = sealer_for(item, protection, segment)?;
    let sealer_used = sealer.is_some();
    let len = item.size as usize;
    let sealed_len = sealer.as_ref().map(|s| (segment, s.sealed_len_last(len)));
    let mut file = File::open(&item.path).map_err(local_error(&item.path))?;
    let data = read_and_seal(&mut file, &item.path, 0, len, true, sealed_len, &mut sealer)?;
    let metadata = upload_metadata(item, protection);
    let put = try_locally(store, |local| {
        local.put(
            &item.blob,
            data.clone(),
            &metadata,
            &Condition::None,
            protection.cpk(),
        )
    });
    match put {
        Some(result) => {
            result?;
            if sealer_used {
                record_bytes(sink, &item.blob, &data);
            }
            Ok(SmallUpload::Uploaded)
        }
        None => Ok(SmallUpload::Sealed(data)),
    }
}

async fn upload_file(
    store: &Arc<dyn BlobStore>,
    item: &UploadItem,
    protection: &Protection,
    options: &TransferOptions,
    budget: &Arc<Semaphore>,
    progress: &Progress,
    sink: &EntrySink,
) -> Result<(), TransferError> {
    let metadata = upload_metadata(item, protection);
    let segment = options.segment_size;
    let block = round_to_segments(options.block_size, segment);
    let mut sealer = sealer_for(item, protection, segment)?;
    // The manifest entry, computed from the sealed chunks as they go out.
    let mut tags = sink
        .as_ref()
        .and(sealer.as_ref())
        .map(|_| (TagDigest::new(segment), Vec::new(), 0u64));
    let mut file = File::open(&item.path).map_err(local_error(&item.path))?;
    let chunks = (item.size as usize).div_ceil(block).max(1);
    // Ids of this upload's own: a concurrent writer of the same blob never shares a block.
    let block_ids = BlockIds::new();
    let cpk = protection.cpk();
    let mut staged = JoinSet::new();
    let mut ids = Vec::with_capacity(chunks);
    for index in 0..chunks {
        let offset = index * block;
        let len = (item.size as usize - offset).min(block);
        let last = index + 1 == chunks;
        let permit = budget
            .clone()
            .acquire_many_owned(permits(len + len / 256 + 4096) as u32)
            .await
            .expect("semaphore open");
        let sealed_len = sealer.as_ref().map(|s| {
            (
                segment,
                if last {
                    s.sealed_len_last(len)
                } else {
                    s.sealed_len(len)
                },
            )
        });
        let path = item.path.clone();
        let (mut owned_file, mut owned_sealer) = (file, sealer.take());
        // Read and seal off the async threads; the sealer moves in and back out.
        let (returned_file, returned_sealer, data) =
            tokio::task::spawn_blocking(move || -> Result<_, TransferError> {
                let data = read_and_seal(
                    &mut owned_file,
                    &path,
                    index,
                    len,
                    last,
                    sealed_len,
                    &mut owned_sealer,
                )?;
                Ok((owned_file, owned_sealer, data))
            })
            .await
            .expect("read task panicked")?;
        file = returned_file;
        sealer = returned_sealer;
        if let Some((digest, header, size)) = &mut tags {
            let front = if index == 0 { HEADER_LEN } else { 0 };
            if index == 0 {
                *header = data[..HEADER_LEN].to_vec();
            }
            digest.update(&data[front..]);
            *size += data.len() as u64;
        }
        if chunks == 1 {
            store
                .put(&item.blob, data, &metadata, &Condition::None, cpk)
                .await?;
            record_sealed(sink, &item.blob, tags);
            progress(len as u64);
            drop(permit);
            return Ok(());
        }
        let id = block_ids.id(index as u64);
        ids.push(id.clone());
        let (store, blob, cpk, progress) = (
            store.clone(),
            item.blob.clone(),
            cpk.cloned(),
            progress.clone(),
        );
        // Where this block lies in the blob (a hint that lets the embedded store skip a copy).
        let offset = match &sealed_len {
            Some(_) if index == 0 => 0,
            Some((segment, _)) => (HEADER_LEN + index * segment.sealed_len(block)) as u64,
            None => (index * block) as u64,
        };
        staged.spawn(async move {
            let result = store
                .stage_block_at(&blob, &id, offset, data, cpk.as_ref())
                .await;
            drop(permit);
            result.map(|()| progress(len as u64))
        });
        while let Some(done) = staged.try_join_next() {
            done.expect("stage task panicked")?;
        }
    }
    while let Some(done) = staged.join_next().await {
        done.expect("stage task panicked")?;
    }
    store
        .commit_blocks(&item.blob, &ids, &metadata, &Condition::None, cpk)
        .await?;
    record_sealed(sink, &item.blob, tags);
    Ok(())
}

/// Records the entry of a blob whose sealed chunks went through `tags` (header, size).
fn record_sealed(sink: &EntrySink, name: &str, tags: Option<(TagDigest, Vec<u8>, u64)>) {
    if let Some((digest, header, size)) = tags {
        record(sink, || {
            Ok(Entry {
                name: name.to_owned(),
                size,
                header,
                tags_sha256: digest
                    .finish()
                    .map_err(|source| encfs_dataset::Error::NotEbf {
                        blob: name.to_owned(),
                        source,
                    })?,
            })
        });
    }
}

/// Downloads every blob under `prefix` into `destination` (a directory), each to the path its
/// name has below `prefix`.
pub async fn download(
    store: Arc<dyn BlobStore>,
    prefix: &str,
    destination: &Path,
    protection: Protection,
    options: TransferOptions,
    progress: Progress,
) -> Result<Summary, TransferError> {
    let listing = list_all(store.as_ref(), prefix, None).await?;
    download_listed(
        store,
        listing.blobs,
        prefix,
        destination,
        protection,
        options,
        progress,
    )
    .await
}

/// [`download`] of `blobs`, listed already under `prefix` (by [`list_all`]).
pub async fn download_listed(
    store: Arc<dyn BlobStore>,
    blobs: Vec<BlobItem>,
    prefix: &str,
    destination: &Path,
    protection: Protection,
    options: TransferOptions,
    progress: Progress,
) -> Result<Summary, TransferError> {
    // Absolute once, so no temporary file asks for the working directory again.
    let destination = std::path::absolute(destination).map_err(local_error(destination))?;
    let mut summary = Summary::default();
    let mut fetches = Vec::with_capacity(blobs.len());
    let mut links = Vec::new();
    let mut restores = Vec::new();
    for blob in blobs {
        let relative = blob
            .name
            .strip_prefix(prefix)
            .unwrap_or(&blob.name)
            .trim_start_matches('/');
        let relative = if relative.is_empty() {
            blob.name.rsplit('/').next().unwrap_or(&blob.name)
        } else {
            relative
        };
        let target = safe_join(&destination, relative).ok_or_else(|| TransferError::Local {
            path: blob.name.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "blob name escapes the destination",
            ),
        })?;
        // Specials are skipped, and so is a dataset manifest (not a file of the data).
        if posix::is_special(&blob) || encfs_dataset::is_manifest_blob(&blob.name) {
            continue;
        }
        summary.files += 1;
        summary.bytes += plaintext_size(&blob.properties);
        summary.blobs.push(blob.name.clone());
        if posix::is_link(&blob) {
            links.push((blob, target));
            continue;
        }
        restores.push((
            target.clone(),
            StoredAttributes::from_metadata(&blob.properties.metadata),
        ));
        fetches.push(Fetch {
            name: blob.name,
            size: blob.properties.size,
            etag: blob.properties.etag,
            target,
        });
    }
    if !options.dry_run {
        fetch_all(
            store.clone(),
            fetches,
            protection.clone(),
            options,
            progress,
        )
        .await?;
        for (target, attributes) in &restores {
            posix::restore_attributes(target, attributes)?;
        }
        for (blob, target) in &links {
            posix::download_link(&*store, blob, target, &protection).await?;
        }
    }
    Ok(summary)
}

/// Downloads one blob to the file `target` (temporary name, renamed once verified).
pub async fn download_one(
    store: Arc<dyn BlobStore>,
    name: &str,
    target: &Path,
    protection: Protection,
    options: TransferOptions,
    progress: Progress,
) -> Result<Summary, TransferError> {
    let properties = store.properties(name, protection.cpk()).await?;
    let attributes = StoredAttributes::from_metadata(&properties.metadata);
    if !options.dry_run && attributes.symlink {
        let blob = BlobItem {
            name: name.to_owned(),
            properties: properties.clone(),
        };
        posix::download_link(&*store, &blob, target, &protection).await?;
    } else if !options.dry_run {
        let absolute = std::path::absolute(target).map_err(local_error(target))?;
        let fetch = Fetch {
            name: name.to_owned(),
            size: properties.size,
            etag: properties.etag.clone(),
            target: absolute.clone(),
        };
        fetch_all(store, vec![fetch], protection, options, progress).await?;
        posix::restore_attributes(&absolute, &attributes)?;
    }
    let bytes = plaintext_size(&properties);
    Ok(Summary {
        files: 1,
        skipped: 0,
        bytes,
        blobs: vec![name.to_owned()],
        entries: Vec::new(),
    })
}

/// The bytes a blob downloads to: the source size its uploader recorded (cse blobs are larger
/// than their data), else its size.
pub fn plaintext_size(properties: &BlobProperties) -> u64 {
    properties
        .metadata
        .get(META_SIZE)
        .and_then(|s| s.parse().ok())
        .unwrap_or(properties.size)
}

/// One blob to download and the file it becomes.
struct Fetch {
    name: String,
    /// The blob's size in the store.
    size: u64,
    /// The version listed: every read of the blob names it, so a blob overwritten during the
    /// download fails it ([`StoreError::Changed`], naming the blob) instead of mixing versions.
    etag: String,
    /// Absolute path of the output file.
    target: PathBuf,
}

/// Downloads `fetches`. Each output directory is created once. Small blobs (one block or less)
/// go to a few threads of their own when the store reads on the calling thread (the embedded
/// store): each thread takes the next file and fetches, opens, writes and renames it with no
/// hand-off between threads. Large blobs, and small ones the store cannot read that way, are
/// fetched in ranges on the runtime, many files at once.
async fn fetch_all(
    store: Arc<dyn BlobStore>,
    fetches: Vec<Fetch>,
    protection: Protection,
    options: TransferOptions,
    progress: Progress,
) -> Result<(), TransferError> {
    let dirs: std::collections::BTreeSet<&Path> =
        fetches.iter().filter_map(|f| f.target.parent()).collect();
    for dir in dirs {
        fs::create_dir_all(dir).map_err(local_error(dir))?;
        // Leftovers of killed downloads into this directory (never a live download's).
        collect_partials(dir)?;
    }
    let (small, large): (Vec<Fetch>, Vec<Fetch>) = fetches
        .into_iter()
        .partition(|f| f.size <= options.block_size as u64);
    let threads = {
        let (store, protection, progress) = (store.clone(), protection.clone(), progress.clone());
        SmallFileThreads::start(small, &options, move |fetch| {
            let (name, size, target) = (&fetch.name, fetch.size, &fetch.target);
            let done =
                download_small_blocking(&*store, name, size, &fetch.etag, target, &protection)?;
            Ok(done.map(|n| progress(n)))
        })
    };
    let fetch_async = |fetches: Vec<Fetch>| {
        fetch_on_runtime(
            store.clone(),
            fetches,
            protection.clone(),
            options.clone(),
            progress.clone(),
        )
    };
    let large = fetch_async(large).await;
    let (_, declined) = threads.finish(large).await?;
    fetch_async(declined).await
}

/// The small files of a transfer, being done by [`on_threads`] on the blocking pool while the
/// runtime does the rest.
struct SmallFileThreads<T, R> {
    stop: Arc<AtomicBool>,
    run: tokio::task::JoinHandle<Result<Outcomes<R, T>, TransferError>>,
}

/// What [`on_threads`] gave back: the results of the items done, and the items handed back.
type Outcomes<R, T> = (Vec<R>, Vec<T>);

impl<T: Send + Sync + 'static, R: Send + 'static> SmallFileThreads<T, R> {
    fn start(
        items: Vec<T>,
        options: &TransferOptions,
        work: impl Fn(&T) -> Result<Option<R>, TransferError> + Send + Sync + 'static,
    ) -> Self {
        let threads = small_file_threads(options, items.len());
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let run = tokio::task::spawn_blocking(move || on_threads(items, threads, &flag, work));
        Self { stop, run }
    }

    /// Waits for the threads once the rest of the transfer gave `rest` (stopping them at their
    /// next file if it failed); returns their results and the files they handed back.
    async fn finish<X>(
        self,
        rest: Result<X, TransferError>,
    ) -> Result<Outcomes<R, T>, TransferError> {
        if rest.is_err() {
            self.stop.store(true, Ordering::Relaxed);
        }
        let done = self.run.await.expect("transfer threads panicked");
        rest?;
        done
    }
}

/// Threads for the small files of a transfer: two per crypto thread (the rayon pool's size, all
/// cores unless `--threads` says otherwise), to overlap each file's fsync and system calls; no more
/// than the files in flight allow, each holding one block at most.
fn small_file_threads(options: &TransferOptions, files: usize) -> usize {
    let cores = rayon::current_num_threads();
    let by_memory = options.memory_budget / (options.block_size + HEADER_LEN).max(1);
    (2 * cores)
        .min(options.concurrent_files)
        .min(by_memory)
        .min(files)
        .max(1)
}

/// Runs `work` on every item, on up to `threads` scoped threads that each take the next item in
/// turn, and returns what it gave (`Some`) and the items it declined (`None`: the store cannot do
/// it this way). The first error, or `stop` set, ends the run; the first error is returned. Items
/// not reached by then are in neither list: set `stop` only when the transfer fails anyway.
fn on_threads<T: Send + Sync, R: Send>(
    items: Vec<T>,
    threads: usize,
    stop: &AtomicBool,
    work: impl Fn(&T) -> Result<Option<R>, TransferError> + Sync,
) -> Result<Outcomes<R, T>, TransferError> {
    let next = AtomicUsize::new(0);
    let failure = std::sync::Mutex::new(None);
    let mut done = Vec::new();
    let mut declined = Vec::new();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.min(items.len()))
            .map(|_| {
                scope.spawn(|| {
                    let (mut done, mut declined) = (Vec::new(), Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        match work(item) {
                            Ok(Some(result)) => done.push(result),
                            Ok(None) => declined.push(i),
                            Err(error) => {
                                stop.store(true, Ordering::Relaxed);
                                failure.lock().expect("poisoned").get_or_insert(error);
                            }
                        }
                    }
                    (done, declined)
                })
            })
            .collect();
        for worker in workers {
            let (d, i) = worker.join().expect("transfer thread panicked");
            done.extend(d);
            declined.extend(i);
        }
    });
    if let Some(error) = failure.into_inner().expect("poisoned") {
        return Err(error);
    }
    declined.sort_unstable();
    let mut items: Vec<Option<T>> = items.into_iter().map(Some).collect();
    let declined = declined
        .into_iter()
        .filter_map(|i| items[i].take())
        .collect();
    Ok((done, declined))
}

/// Downloads `fetches` on the runtime, `concurrent_files` at once, each in ranges.
async fn fetch_on_runtime(
    store: Arc<dyn BlobStore>,
    fetches: Vec<Fetch>,
    protection: Protection,
    options: TransferOptions,
    progress: Progress,
) -> Result<(), TransferError> {
    let files = Arc::new(Semaphore::new(options.concurrent_files.max(1)));
    let budget = Arc::new(Semaphore::new(permits(options.memory_budget)));
    let mut tasks = JoinSet::new();
    for fetch in fetches {
        let permit = files.clone().acquire_owned().await.expect("semaphore open");
        let (store, protection, options, budget, progress) = (
            store.clone(),
            protection.clone(),
            options.clone(),
            budget.clone(),
            progress.clone(),
        );
        tasks.spawn(async move {
            let _permit = permit;
            download_blob(
                &store,
                &fetch.name,
                fetch.size,
                &fetch.etag,
                &fetch.target,
                &protection,
                &options,
                &budget,
                &progress,
            )
            .await
        });
        // Surface failures early instead of after every file was tried.
        while let Some(done) = tasks.try_join_next() {
            done.expect("download task panicked")?;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("download task panicked")?;
    }
    Ok(())
}

/// `base/relative` unless `relative` tries to leave `base` (`..`, absolute paths).
fn safe_join(base: &Path, relative: &str) -> Option<PathBuf> {
    let mut path = base.to_path_buf();
    for part in relative.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            part => path.push(part),
        }
    }
    (path != base).then_some(path)
}

#[allow(clippy::too_many_arguments)]
async fn download_blob(
    store: &Arc<dyn BlobStore>,
    name: &str,
    blob_len: u64,
    version: &str,
    target: &Path,
    protection: &Protection,
    options: &TransferOptions,
    budget: &Arc<Semaphore>,
    progress: &Progress,
) -> Result<(), TransferError> {
    let temp = partial_file(target)?;
    let cpk = protection.cpk().cloned();
    let version = (!version.is_empty()).then_some(version);
    let crypto = |source| TransferError::Crypto {
        blob: name.to_owned(),
        source,
    };
    // Work out the ranges to fetch and how to turn each into plaintext. A small cse blob is
    // fetched whole in this first request (one round trip per file instead of two).
    let mut prefetched: Option<Bytes> = None;
    let opener = match protection {
        Protection::Cse(key) => {
            let small = blob_len <= options.block_size as u64;
            let range = if small {
                0..blob_len
            } else {
                0..HEADER_LEN as u64
            };
            let head = store.get(name, Some(range), None, version).await?;
            let opener = Opener::new(key, &head, blob_len).map_err(crypto)?;
            if small {
                prefetched = Some(head);
            }
            Some(Arc::new(opener))
        }
        _ => None,
    };
    let ranges: Vec<(u64, std::ops::Range<u64>)> = match &opener {
        Some(opener) => {
            let per = (round_to_segments(options.block_size, opener.segment_size())
                / opener.segment_size().bytes()) as u64;
            (0..opener.segment_count())
                .step_by(per as usize)
                .map(|first| (first, opener.sealed_range(first, per)))
                .collect()
        }
        None => {
            let block = options.block_size.max(1) as u64;
            (0..blob_len.div_ceil(block).max(1))
                .map(|i| (i, i * block..((i + 1) * block).min(blob_len)))
                .collect()
        }
    };
    // Each range is fetched, opened and written at its own offset of the temp file by its own
    // task (positioned writes: no ordering between ranges, no copy through this loop); the loop
    // keeps RANGES_IN_FLIGHT of them going and collects their results in order.
    // One writer at a time: concurrent writes to one file contend on its inode lock, which the
    // kernel spins on (a fifth of all CPU in a profile); a mutex sleeps instead.
    let file = Arc::new(std::sync::Mutex::new(
        temp.as_file().try_clone().map_err(local_error(target))?,
    ));
    let mut in_flight = VecDeque::new();
    let mut ranges = ranges.into_iter();
    let mut written = 0u64;
    loop {
        while in_flight.len() < RANGES_IN_FLIGHT {
            let Some((first, range)) = ranges.next() else {
                break;
            };
            let permit = budget
                .clone()
                .acquire_many_owned(permits((range.end - range.start) as usize) as u32)
                .await
                .expect("semaphore open");
            let (store, name, cpk, opener, file, target, version) = (
                store.clone(),
                name.to_owned(),
                cpk.clone(),
                opener.clone(),
                file.clone(),
                target.to_owned(),
                version.map(str::to_owned),
            );
            let prefetched = prefetched.clone();
            in_flight.push_back(tokio::spawn(async move {
                let expected = range.end - range.start;
                let data = match prefetched {
                    Some(whole) if whole.len() as u64 >= range.end => {
                        whole.slice(range.start as usize..range.end as usize)
                    }
                    _ => {
                        store
                            .get(&name, Some(range.clone()), cpk.as_ref(), version.as_deref())
                            .await?
                    }
                };
                if data.len() as u64 != expected {
                    return Err(TransferError::SizeMismatch(name));
                }
                tokio::task::spawn_blocking(move || {
                    use std::os::unix::fs::FileExt;
                    let Some(opener) = opener else {
                        let file = file.lock().expect("poisoned");
                        file.write_all_at(&data, range.start)
                            .map_err(local_error(&target))?;
                        return Ok(data.len() as u64);
                    };
                    // Unshared (as fetched): opened in place without a copy.
                    let mut sealed = Vec::from(data);
                    opener
                        .open_segments_in_place(first, &mut sealed)
                        .map_err(|source| TransferError::Crypto { blob: name, source })?;
                    let segment = opener.segment_size();
                    let at = first * segment.bytes() as u64;
                    let file = file.lock().expect("poisoned");
                    let n = write_plaintext_at(&file, &sealed, segment, at, &target)?;
                    drop(permit);
                    Ok(n)
                })
                .await
                .expect("decrypt task panicked")
            }));
        }
        let Some(next) = in_flight.pop_front() else {
            break;
        };
        match next.await.expect("fetch task panicked") {
            Ok(n) => {
                written += n;
                progress(n);
            }
            Err(error) => {
                // The temp file goes with this return; stop the ranges still writing into it.
                in_flight.iter().for_each(|task| task.abort());
                return Err(error);
            }
        }
    }
    let expected = opener.as_ref().map_or(blob_len, |o| o.plaintext_len());
    if written != expected {
        return Err(TransferError::SizeMismatch(name.to_owned()));
    }
    finish(temp, target)
}

/// Writes the plaintext of opened segments (`sealed`, opened in place) at offset `at` of `file`;
/// returns the bytes written.
fn write_plaintext_at(
    file: &File,
    sealed: &[u8],
    segment: SegmentSize,
    mut at: u64,
    target: &Path,
) -> Result<u64, TransferError> {
    use std::os::unix::fs::FileExt;
    let start = at;
    for plain in plaintext_slots(sealed, segment) {
        file.write_all_at(plain, at).map_err(local_error(target))?;
        at += plain.len() as u64;
    }
    Ok(at - start)
}

/// The suffix of a download's temporary file (`.NAME.XXXXXX.encfs-partial`).
const PARTIAL_SUFFIX: &str = ".encfs-partial";

/// The temporary file a download goes to, beside `target` (hidden, `.encfs-partial`); its
/// directory exists already. The file is locked (`flock`, exclusive) from its creation until it
/// is closed, after its rename: [`collect_partials`] removes only partials whose lock it can take,
/// so never a live download's.
fn partial_file(target: &Path) -> Result<tempfile::NamedTempFile, TransferError> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    loop {
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{file_name}."))
            .suffix(PARTIAL_SUFFIX)
            .tempfile_in(dir)
            .map_err(local_error(dir))?;
        temp.as_file().lock().map_err(local_error(temp.path()))?;
        // A collector may have taken the lock between the creation and ours, and removed the
        // file: then start again. Once this holds, no collector removes it (they need the lock).
        if same_file(temp.path(), temp.as_file()) {
            return Ok(temp);
        }
    }
}

/// Whether `path` still names the open `file`.
fn same_file(path: &Path, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::symlink_metadata(path), file.metadata()) {
        (Ok(named), Ok(open)) => (named.dev(), named.ino()) == (open.dev(), open.ino()),
        _ => false,
    }
}

/// Removes from `dir` the `.encfs-partial` files of downloads that were killed before their
/// rename (`kill -9`, a crash, a power cut): those whose lock can be taken. A live download holds
/// its partial's lock until the file is renamed and closed, so its partial is never touched.
/// Returns how many were removed; what cannot be opened, locked or removed is left alone.
fn collect_partials(dir: &Path) -> Result<usize, TransferError> {
    use std::os::unix::fs::OpenOptionsExt;
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(local_error(dir)(error)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(local_error(dir))?;
        let name = entry.file_name();
        let is_partial = name
            .to_str()
            .is_some_and(|n| n.starts_with('.') && n.ends_with(PARTIAL_SUFFIX));
        if !is_partial || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        let Ok(file) = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
        else {
            continue;
        };
        // Held: a live download's. Not lockable at all: not ours to judge.
        if file.try_lock().is_err() {
            continue;
        }
        // Still the file at that name (not renamed away by a download that just finished)?
        if same_file(&path, &file) && fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Makes a verified download durable and gives it its name.
fn finish(temp: tempfile::NamedTempFile, target: &Path) -> Result<(), TransferError> {
    temp.as_file().sync_all().map_err(local_error(target))?;
    temp.persist(target).map_err(|e| TransferError::Local {
        path: target.display().to_string(),
        source: e.error,
    })?;
    Ok(())
}

/// [`download_blob`] of a whole small blob on the calling thread, for stores with local access
/// ([`store::LocalAccess::get`]). `Ok(None)`: the store has none, or the read failed transiently;
/// nothing was done (the async path, which retries, takes the blob). Returns the plaintext bytes
/// written.
fn download_small_blocking(
    store: &dyn BlobStore,
    name: &str,
    blob_len: u64,
    version: &str,
    target: &Path,
    protection: &Protection,
) -> Result<Option<u64>, TransferError> {
    let version = (!version.is_empty()).then_some(version);
    let Some(data) = try_locally(store, |local| {
        local.get(name, None, protection.cpk(), version)
    }) else {
        return Ok(None);
    };
    let data = data?;
    if data.len() as u64 != blob_len {
        return Err(TransferError::SizeMismatch(name.to_owned()));
    }
    let temp = partial_file(target)?;
    let mut file = temp.as_file();
    let written = match protection {
        Protection::Cse(key) => {
            let crypto = |source| TransferError::Crypto {
                blob: name.to_owned(),
                source,
            };
            let opener = Opener::new(key, &data, blob_len).map_err(crypto)?;
            let mut sealed = Vec::from(data);
            let body = &mut sealed[HEADER_LEN.min(blob_len as usize)..];
            opener.open_segments_in_place(0, body).map_err(crypto)?;
            let n = write_plaintext_at(file, body, opener.segment_size(), 0, target)?;
            if n != opener.plaintext_len() {
                return Err(TransferError::SizeMismatch(name.to_owned()));
            }
            n
        }
        _ => {
            file.write_all(&data).map_err(local_error(target))?;
            data.len() as u64
        }
    };
    finish(temp, target)?;
    Ok(Some(written))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::CustomerKey;
    use encfs_crypto::DataKey;

    #[test]
    fn threads_do_every_item_once_and_hand_back_the_declined_in_order() {
        let stop = AtomicBool::new(false);
        let items: Vec<u32> = (0..1000).collect();
        let (mut done, declined) =
            on_threads(items, 4, &stop, |&i| Ok((i % 7 != 0).then_some(i * 2))).unwrap();
        done.sort_unstable();
        let expected: Vec<u32> = (0..1000).filter(|i| i % 7 != 0).map(|i| i * 2).collect();
        assert_eq!(done, expected);
        assert_eq!(declined, (0..1000).step_by(7).collect::<Vec<u32>>());
    }

    #[test]
    fn threads_stop_at_the_first_error_or_when_told() {
        let stop = AtomicBool::new(false);
        let tried = AtomicUsize::new(0);
        let result = on_threads((0..10_000).collect(), 3, &stop, |&i: &u32| {
            tried.fetch_add(1, Ordering::Relaxed);
            if i == 10 {
                return Err(TransferError::SizeMismatch(format!("item {i}")));
            }
            Ok(Some(()))
        });
        assert!(matches!(result, Err(TransferError::SizeMismatch(name)) if name == "item 10"));
        assert!(tried.load(Ordering::Relaxed) < 10_000);
        let told = AtomicBool::new(true);
        let (done, declined) = on_threads(vec![1, 2, 3], 2, &told, |_| Ok(Some(()))).unwrap();
        assert!(done.is_empty() && declined.is_empty());
    }

    #[test]
    fn the_skip_check_compares_mode_and_key() {
        let item = UploadItem {
            path: PathBuf::from("f"),
            blob: "f".into(),
            size: 10,
            mtime: 99,
            attributes: StoredAttributes::default(),
        };
        let cse = |key| Protection::Cse(Arc::new(key));
        let (a, b) = (DataKey::generate().unwrap(), DataKey::generate().unwrap());
        let a_again = DataKey::from_bytes(*a.dangerous_bytes());
        let cpk = |byte| Protection::Cpk(CustomerKey::new([byte; 32]));
        let written_with = |protection: &Protection| {
            Ok(BlobProperties {
                size: 64,
                etag: "e".into(),
                last_modified: UNIX_EPOCH,
                metadata: blob_metadata(protection, item.size, item.mtime),
            })
        };
        let same = |written: &Protection, now: &Protection| {
            same_upload(written_with(written), &item, now).unwrap() == Existing::Same
        };
        assert!(same(&cse(a), &cse(a_again)));
        let a = DataKey::from_bytes(*b.dangerous_bytes());
        assert!(!same(&cse(a), &cse(DataKey::generate().unwrap())));
        assert!(same(&cpk(1), &cpk(1)));
        assert!(!same(&cpk(1), &cpk(2)));
        assert!(same(&Protection::Sse, &Protection::Sse));
        assert!(!same(&Protection::Sse, &cpk(1)));
        assert!(!same(&cse(b), &Protection::Sse));
        // A cpk blob from before key ids were recorded for cpk: uploaded again.
        let mut old = written_with(&cpk(1)).unwrap();
        old.metadata.remove(META_KEY_ID);
        assert_eq!(
            same_upload(Ok(old), &item, &cpk(1)).unwrap(),
            Existing::Different
        );
        // Under another customer key (the store will not describe it): deleted, then uploaded.
        let refused = Err(StoreError::CustomerKeyMismatch("f".into()));
        assert_eq!(
            same_upload(refused, &item, &cpk(2)).unwrap(),
            Existing::UnderOtherCustomerKey
        );
    }

    #[test]
    fn only_partials_nobody_holds_are_collected() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("f.csv");
        // A live download's partial: locked while open.
        let live = partial_file(&target).unwrap();
        // A killed download's: the file is there, nobody holds it.
        let dead = dir.path().join(".f.csv.abc123.encfs-partial");
        fs::write(&dead, b"half").unwrap();
        // Not partials, or not plain files: left alone.
        fs::write(dir.path().join("f.csv"), b"done").unwrap();
        fs::write(dir.path().join("x.encfs-partial"), b"visible name").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(".l.1.encfs-partial")).unwrap();
        assert_eq!(collect_partials(dir.path()).unwrap(), 1);
        assert!(!dead.exists());
        assert!(live.path().exists());
        assert!(dir.path().join("x.encfs-partial").exists());
        assert!(
            dir.path()
                .join(".l.1.encfs-partial")
                .symlink_metadata()
                .is_ok()
        );
        // Once its download is over (here: dropped), nothing of it is left to collect.
        let path = live.path().to_owned();
        drop(live);
        assert!(!path.exists());
        assert_eq!(collect_partials(dir.path()).unwrap(), 0);
        assert_eq!(collect_partials(&dir.path().join("missing")).unwrap(), 0);
    }

    #[test]
    fn safe_join_refuses_escapes() {
        let base = Path::new("/out");
        assert_eq!(safe_join(base, "a/b"), Some(PathBuf::from("/out/a/b")));
        assert_eq!(safe_join(base, "a/../../x"), None);
        assert_eq!(
            safe_join(base, "/etc/passwd"),
            Some(PathBuf::from("/out/etc/passwd"))
        );
        assert_eq!(safe_join(base, ""), None);
    }

    #[test]
    fn plan_walks_directories_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("d/e")).unwrap();
        fs::write(dir.path().join("d/e/2"), b"22").unwrap();
        fs::write(dir.path().join("d/1"), b"1").unwrap();
        let items = plan_upload(&dir.path().join("d"), "pre/").unwrap();
        assert_eq!(
            items.iter().map(|i| i.blob.as_str()).collect::<Vec<_>>(),
            ["pre/1", "pre/e/2"]
        );
        let single = plan_upload(&dir.path().join("d/1"), "").unwrap();
        assert_eq!(single[0].blob, "1");
        assert!(plan_upload(&dir.path().join("missing"), "").is_err());
    }
}
