//! The read path: a file's readable version ([`SharedSource`], opened on first use), reads
//! through the block cache (segments nobody holds are fetched at once, one request per
//! contiguous run; a local store is read on the calling thread), sequential-read detection with
//! an adaptive prefetch window bounded by the memory budget, and the neighbouring segments a
//! small read hands to the kernel's page cache. A read-only mount's sequential reader of a local
//! store is not prefetched for: its requests are read and opened straight into their replies
//! ([`BlobSource::read_packed`]), the kernel's readahead keeping several in flight.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::cache::{BlockCache, Lookup, SegmentKey};
use super::core::EncFs;
use super::error::{FsError, errno};
use super::handles::OpenFile;
use super::pinned::Finding;
use super::pool::BufferPool;
use super::source::{BlobSource, Expected, SharedSource, SourceError};
use super::write::BaseReader;
use crate::store::{BlobStore, StoreError};

/// Prefetch window bounds.
const MIN_WINDOW: u64 = 1 << 20;
pub(super) const MAX_WINDOW: u64 = 64 << 20;

/// Plaintext bytes per prefetch request.
const PREFETCH_CHUNK: u64 = 2 << 20;

/// Reads this close to the last one count as sequential (the kernel reorders parallel reads).
const SEQUENTIAL_SLACK: u64 = 8 << 20;

/// A handle's sequential-read state: where the last read ended, the prefetch window, and how far
/// prefetches were issued.
#[derive(Default)]
pub(super) struct ReadAhead {
    next: u64,
    window: u64,
    issued: u64,
}

impl EncFs {
    /// The readable version of a file, opened (header fetched and checked) on first use.
    pub(super) fn source(&self, ino: u64) -> Result<SharedSource, FsError> {
        let (name, etag, blob_len, path) = {
            let tree = self.tree.lock().expect("poisoned");
            let node = tree.node(ino)?;
            if let Some(source) = &node.source {
                return Ok(source.clone());
            }
            let pinned_missing = || {
                let pinned = self.pinned.as_ref()?;
                pinned.entry(&node.path)?;
                pinned.note(Finding::Missing, &node.path);
                Some(FsError::from(SourceError::NotPinned(
                    self.blob_name(&node.path),
                )))
            };
            let Some(etag) = node.etag.clone() else {
                return Err(pinned_missing().unwrap_or_else(|| errno!(ENOENT)));
            };
            (
                self.blob_name(&node.path),
                etag,
                node.blob_len,
                node.path.clone(),
            )
        };
        let expected = self
            .pinned
            .as_ref()
            .and_then(|p| p.entry(&path))
            .map(|e| Expected {
                header: &e.header,
                blob_len: e.blob_len,
            });
        let file = self.next_file.fetch_add(1, Ordering::Relaxed);
        let opened = self.runtime.block_on(BlobSource::open(
            &*self.store,
            &name,
            blob_len,
            Some(&etag),
            &self.protection,
            file,
            expected,
        ));
        let (source, first) = match (opened, &self.pinned) {
            (Ok(opened), _) => opened,
            (Err(SourceError::NotPinned(blob)), Some(pinned)) => {
                pinned.note(Finding::Refused, &path);
                return Err(SourceError::NotPinned(blob).into());
            }
            // Listed, then gone from the store: still not silently missing.
            (Err(SourceError::Store(StoreError::BlobNotFound(blob))), Some(pinned))
                if expected.is_some() =>
            {
                pinned.note(Finding::Missing, &path);
                return Err(SourceError::NotPinned(blob).into());
            }
            (Err(error), _) => return Err(error.into()),
        };
        self.keep(file, first);
        let source = Arc::new(source);
        let mut tree = self.tree.lock().expect("poisoned");
        let node = tree.node_mut(ino)?;
        if node.etag.as_deref() == Some(etag.as_str()) {
            node.size = source.plain_len;
            node.committed_size = source.plain_len;
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
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Bytes, FsError> {
        let handle = self.handle(fh)?;
        if let Some(dirty) = self.dirty_of(handle.ino)? {
            return dirty
                .lock()
                .expect("poisoned")
                .read(&self.writes, self, offset, size as usize)
                .map(Bytes::from);
        }
        let source = self.source(handle.ino)?;
        let end = (offset + size as u64).min(source.plain_len);
        if offset >= end {
            return Ok(Bytes::new());
        }
        // A sequential reader of a read-only mount over a local store reads on this thread, and
        // what the cache does not hold goes straight into the reply (`read_packed`): the
        // kernel's own readahead keeps several such reads in flight, so a prefetch would only
        // add hand-offs and copies. Those bytes are not cached: the kernel keeps them
        // (FOPEN_KEEP_CACHE).
        let local = !self.options.read_write && source.is_pinned();
        let streaming = self.read_ahead(&handle, &source, offset, end, !local);
        let unit = source.unit as u64;
        // A read of less than a segment goes through the cache, which keeps the rest of the
        // segment for the reads after it; so does a read whose last segment the cache holds (a
        // file read before: the rest is likely there too). Its first segment may be held: the
        // part of it an unaligned read before this one left.
        let last = SegmentKey {
            file: source.file,
            index: (end - 1) / unit,
        };
        let direct = streaming && local && end - offset >= unit && !self.cache.holds(last);
        let data = match direct.then(|| source.read_packed(&self.pool, offset, end)) {
            Some(Some(data)) => data,
            _ => Bytes::from(self.read_range(&source, offset, end)?),
        };
        // A read-only mount lets the kernel keep its page cache (FOPEN_KEEP_CACHE): segments a
        // sequential reader has passed are served from there from now on, so they leave this
        // cache at once and their buffers are reused for the segments ahead.
        if streaming && !self.options.read_write {
            let first = offset / unit;
            let passed = if end == source.plain_len {
                source.segment_count()
            } else {
                end / unit
            };
            self.cache.release(source.file, first..passed);
        }
        Ok(data)
    }

    /// Plaintext `offset..end` of a version, through the cache: segments nobody holds are
    /// fetched now (one request per contiguous run), segments being prefetched are waited for.
    pub(super) fn read_range(
        &self,
        source: &SharedSource,
        offset: u64,
        end: u64,
    ) -> Result<Vec<u8>, FsError> {
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
    ) -> Result<Vec<u8>, FsError> {
        let mut out = Vec::with_capacity((end - offset) as usize);
        for index in first..=last {
            let bytes = self.segment(source, index)?;
            let seg = source.plain_range(index);
            let from = offset.max(seg.start) - seg.start;
            let to = end.min(seg.end) - seg.start;
            if (bytes.len() as u64) < to {
                return Err(FsError::io(format!(
                    "blob {}: segment {index} short",
                    source.name
                )));
            }
            out.extend_from_slice(&bytes[from as usize..to as usize]);
        }
        Ok(out)
    }

    /// One segment: from the cache, after a pending fetch, or fetched now.
    pub(super) fn segment(&self, source: &SharedSource, index: u64) -> Result<Bytes, FsError> {
        let key = SegmentKey {
            file: source.file,
            index,
        };
        for _ in 0..4 {
            match self.cache.lookup(key) {
                Lookup::Hit(bytes) => return Ok(bytes),
                Lookup::Bad => {
                    let range = source.plain_range(index);
                    return Err(FsError::io(format!(
                        "blob {}: read of bytes {}..{} refused: segment {index} failed \
                         authentication",
                        source.name, range.start, range.end
                    )));
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
                                            Err(errno!(EIO))
                                        }
                                    };
                                }
                            }
                        }
                        Err(e) => return Err(FsError::from(e)),
                    }
                }
            }
        }
        Err(FsError::io(format!(
            "blob {}: segment {index} unavailable",
            source.name
        )))
    }

    /// Sequential-read detection and (with `prefetch`) the adaptive prefetch window; true when
    /// the read continues a sequential stream.
    fn read_ahead(
        &self,
        handle: &OpenFile,
        source: &SharedSource,
        offset: u64,
        end: u64,
        prefetch: bool,
    ) -> bool {
        let mut ra = handle.readahead.lock().expect("poisoned");
        let sequential = (ra.next == 0 && offset == 0)
            || (offset + SEQUENTIAL_SLACK >= ra.next && offset <= ra.next + SEQUENTIAL_SLACK);
        if !sequential {
            *ra = ReadAhead {
                next: end,
                window: 0,
                issued: 0,
            };
            return false;
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
        if !prefetch {
            return true;
        }
        let target = (end + ra.window).min(source.plain_len);
        let from = ra.issued.max(end);
        if target <= from || inflight >= self.inflight_limit {
            return true;
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
        true
    }
}

impl BaseReader for EncFs {
    fn read_base(
        &self,
        source: &SharedSource,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, FsError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_group_contiguous_indices() {
        assert_eq!(runs(&[1, 2, 3, 7, 8, 10]), vec![(1, 3), (7, 2), (10, 1)]);
        assert!(runs(&[]).is_empty());
    }
}
