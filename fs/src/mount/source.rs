//! One version of one blob as the mount reads it: its plaintext geometry and how to fetch and
//! verify any run of its segments.
//!
//! For `cse` blobs the unit is the EBF segment: a run of segments is one ranged `get`, and each
//! segment is opened on its own, so a tampered segment fails alone (its range reads as `EIO`, the
//! rest of the file stays readable). For `cpk` and `sse` blobs, which the store hands back as
//! plaintext, the unit is a fixed [`PLAIN_UNIT`] so that the cache and the prefetcher work the same.
//!
//! A source is one **version**: every ranged read of it names the etag it was opened at
//! (`If-Match` on Azure, an etag check in the embedded store), so a blob overwritten while it is
//! read fails with [`StoreError::Changed`] (`EIO`, logged with the blob name) and never serves a
//! mix of two versions — which `cpk` and `sse` blobs, having no per-blob authentication, would
//! otherwise do silently.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use encfs_crypto::format::{HEADER_LEN, Opener, plaintext_slots};
use rayon::prelude::*;

use super::pool::BufferPool;
use crate::store::protection::Protection;
use crate::store::{BlobStore, CustomerKey, PinnedBlob, StoreError, try_locally};

/// Plaintext bytes per cache unit for blobs the store returns as plaintext (`cpk`, `sse`).
pub const PLAIN_UNIT: usize = 64 << 10;
/// How much of a `cse` blob the first request fetches along with the header: small files are
/// read whole in one round trip.
const FIRST_FETCH: u64 = 1 << 20;

/// Why a blob cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The header or length does not verify (wrong key, not EBF, tampered header, truncated).
    #[error("blob {blob}: {source}")]
    Crypto {
        /// The blob.
        blob: String,
        /// Why.
        source: encfs_crypto::Error,
    },
    /// The store returned fewer bytes than the blob's length promised.
    #[error("blob {0}: shorter than its listed length")]
    Short(String),
    /// Not the version a dataset manifest lists (another header or length: swapped, rolled back
    /// or overwritten), or listed and absent.
    #[error("blob {0}: not the version the dataset manifest lists")]
    NotPinned(String),
}

/// The version a pinned mount must find ([`super::pinned`]): the EBF header and the blob length.
#[derive(Clone, Copy)]
pub(crate) struct Expected<'a> {
    pub(crate) header: &'a [u8],
    pub(crate) blob_len: u64,
}

enum Kind {
    Cse(Box<Opener>),
    Plain(Option<CustomerKey>),
}

/// A fetched segment: its plaintext, or `None` when it failed authentication.
pub(crate) type Fetched = (u64, Option<Bytes>);

/// A blob version the mount can read.
pub(crate) struct BlobSource {
    /// Blob name.
    pub name: String,
    /// Cache number of this version.
    pub file: u64,
    /// Plaintext length.
    pub plain_len: u64,
    /// Plaintext bytes per segment.
    pub unit: usize,
    kind: Kind,
    /// This version held open, for stores that read on the calling thread (while the file is
    /// open: descriptors are not kept for every file ever read).
    pinned: std::sync::Mutex<Option<Arc<dyn PinnedBlob>>>,
    /// The version every read of this source asks for (the listed etag, or the pinned one's).
    version: Option<String>,
}

impl BlobSource {
    /// Opens a blob version (`version`: the etag it was listed with, if known): for `cse`,
    /// fetches and checks the header together with the first segments, which are returned so
    /// the caller can cache them. With `expected` (a pinned mount), a version with another
    /// header or length fails with [`SourceError::NotPinned`].
    pub(crate) async fn open(
        store: &dyn BlobStore,
        name: &str,
        blob_len: u64,
        version: Option<&str>,
        protection: &Protection,
        file: u64,
        expected: Option<Expected<'_>>,
    ) -> Result<(Self, Vec<Fetched>), SourceError> {
        let pinned = match try_locally(store, |local| local.pin(name, protection.cpk())) {
            Some(pinned) => pinned?,
            None => None,
        };
        // A pinned version is the one served: its length and etag win over the listing's.
        let blob_len = pinned.as_ref().map_or(blob_len, |p| p.len());
        let version = pinned
            .as_ref()
            .map(|p| p.etag().to_owned())
            .or(version.map(str::to_owned));
        let (mut source, fetched) = Self::open_unpinned(
            store,
            name,
            blob_len,
            version.as_deref(),
            protection,
            file,
            pinned.as_deref(),
            expected,
        )
        .await?;
        source.version = version;
        source.pinned = std::sync::Mutex::new(pinned.map(Arc::from));
        Ok((source, fetched))
    }

    /// Closes the pinned version (no handle has the file open any more).
    pub fn unpin(&self) {
        self.pinned.lock().expect("poisoned").take();
    }

    /// Pins this version again when the store still has it.
    pub fn repin(&self, store: &dyn BlobStore) {
        let Some(etag) = &self.version else {
            return;
        };
        let mut pinned = self.pinned.lock().expect("poisoned");
        if pinned.is_some() {
            return;
        }
        if let Some(Ok(Some(fresh))) = try_locally(store, |local| local.pin(&self.name, self.cpk()))
            && fresh.etag() == etag
        {
            *pinned = Some(Arc::from(fresh));
        }
    }

    // The version's identity (name, length, etag, pinned handle, expected header) is what a
    // source is opened from; bundling it would only move the list into a struct built once.
    #[allow(clippy::too_many_arguments)]
    async fn open_unpinned(
        store: &dyn BlobStore,
        name: &str,
        blob_len: u64,
        version: Option<&str>,
        protection: &Protection,
        file: u64,
        pinned: Option<&dyn PinnedBlob>,
        expected: Option<Expected<'_>>,
    ) -> Result<(Self, Vec<Fetched>), SourceError> {
        match protection {
            Protection::Cse(key) => {
                let first = blob_len.min(HEADER_LEN as u64 + FIRST_FETCH);
                let head = match pinned {
                    Some(pinned) => pinned.read(0..first)?,
                    None => store.get(name, Some(0..first), None, version).await?,
                };
                if (head.len() as u64) < first.min(HEADER_LEN as u64) {
                    return Err(SourceError::Short(name.to_owned()));
                }
                if let Some(expected) = expected
                    && (expected.blob_len != blob_len || !head.starts_with(expected.header))
                {
                    return Err(SourceError::NotPinned(name.to_owned()));
                }
                let crypto = |source| SourceError::Crypto {
                    blob: name.to_owned(),
                    source,
                };
                let opener = Opener::new(key, &head, blob_len).map_err(crypto)?;
                let unit = opener.segment_size().bytes();
                let source = Self {
                    name: name.to_owned(),
                    file,
                    plain_len: opener.plaintext_len(),
                    unit,
                    kind: Kind::Cse(Box::new(opener)),
                    pinned: std::sync::Mutex::new(None),
                    version: None,
                };
                // Whole segments that came with the header.
                let sealed = source.sealed_segments_in(head.len() as u64 - HEADER_LEN as u64);
                let fetched = if sealed > 0 {
                    let range = source.fetch_range(0, sealed);
                    let body = head.slice(range.start as usize..range.end as usize);
                    source.verify(0, body)
                } else {
                    Vec::new()
                };
                Ok((source, fetched))
            }
            Protection::Cpk(key) => Ok((
                Self::plain(name, blob_len, file, Some(key.clone())),
                Vec::new(),
            )),
            Protection::Sse => Ok((Self::plain(name, blob_len, file, None), Vec::new())),
        }
    }

    fn plain(name: &str, len: u64, file: u64, cpk: Option<CustomerKey>) -> Self {
        Self {
            name: name.to_owned(),
            file,
            plain_len: len,
            unit: PLAIN_UNIT,
            kind: Kind::Plain(cpk),
            pinned: std::sync::Mutex::new(None),
            version: None,
        }
    }

    /// Number of segments (for `cse`, including an empty final one).
    pub fn segment_count(&self) -> u64 {
        match &self.kind {
            Kind::Cse(opener) => opener.segment_count(),
            Kind::Plain(_) => self.plain_len.div_ceil(self.unit as u64),
        }
    }

    /// Plaintext range of segment `index`.
    pub fn plain_range(&self, index: u64) -> Range<u64> {
        let start = index * self.unit as u64;
        start.min(self.plain_len)..(start + self.unit as u64).min(self.plain_len)
    }

    /// How many whole segments from the first lie in `body_len` bytes after the header.
    fn sealed_segments_in(&self, body_len: u64) -> u64 {
        let Kind::Cse(opener) = &self.kind else {
            return 0;
        };
        let per = opener.segment_size().sealed_bytes() as u64;
        let whole = body_len / per;
        let count = opener.segment_count();
        // The final (short) segment counts when the body reaches the end of the blob.
        if opener.sealed_range(0, count).end <= body_len + HEADER_LEN as u64 {
            count
        } else {
            whole.min(count)
        }
    }

    /// Byte range in the blob holding segments `first..first + count`.
    fn fetch_range(&self, first: u64, count: u64) -> Range<u64> {
        match &self.kind {
            Kind::Cse(opener) => opener.sealed_range(first, count),
            Kind::Plain(_) => {
                let end = (first + count).min(self.segment_count());
                self.plain_range(first).start..self.plain_range(end.max(1) - 1).end
            }
        }
    }

    fn cpk(&self) -> Option<&CustomerKey> {
        match &self.kind {
            Kind::Plain(cpk) => cpk.as_ref(),
            Kind::Cse(_) => None,
        }
    }

    fn checked(&self, first: u64, data: Bytes, expected: u64) -> Result<Vec<Fetched>, SourceError> {
        if data.len() as u64 != expected {
            return Err(SourceError::Short(self.name.clone()));
        }
        Ok(self.verify(first, data))
    }

    /// Fetches segments `first..first + count` in one request and verifies each.
    pub async fn fetch(
        &self,
        store: &dyn BlobStore,
        first: u64,
        count: u64,
    ) -> Result<Vec<Fetched>, SourceError> {
        let range = self.fetch_range(first, count);
        let expected = range.end - range.start;
        let data = store
            .get(&self.name, Some(range), self.cpk(), self.version.as_deref())
            .await?;
        self.checked(first, data, expected)
    }

    /// [`Self::fetch`] on the calling thread, when the store can read without its runtime; a
    /// pinned version is read segment by segment, each into a pooled buffer of its own, and opened
    /// where it lies.
    pub fn fetch_blocking(
        &self,
        store: &dyn BlobStore,
        pool: &Arc<BufferPool>,
        first: u64,
        count: u64,
    ) -> Option<Result<Vec<Fetched>, SourceError>> {
        let pinned = self.pinned.lock().expect("poisoned").clone();
        if let Some(pinned) = pinned {
            let end = (first + count).min(self.segment_count());
            let mut buffers = Vec::with_capacity((end - first) as usize);
            for index in first..end {
                let range = self.fetch_range(index, 1);
                let expected = (range.end - range.start) as usize;
                let mut buffer = pool.take(expected);
                if let Err(error) = pinned.read_into(range, &mut buffer) {
                    return Some(Err(error.into()));
                }
                if buffer.len() != expected {
                    return Some(Err(SourceError::Short(self.name.clone())));
                }
                buffers.push(buffer);
            }
            return Some(Ok(self.open_segments(first, buffers, |b| pool.freeze(b))));
        }
        let range = self.fetch_range(first, count);
        let expected = range.end - range.start;
        let data = try_locally(store, |local| {
            local.get(&self.name, Some(range), self.cpk(), self.version.as_deref())
        })?;
        Some(
            data.map_err(SourceError::from)
                .and_then(|data| self.checked(first, data, expected)),
        )
    }

    /// Whether this version is held open for reads on the calling thread.
    pub fn is_pinned(&self) -> bool {
        self.pinned.lock().expect("poisoned").is_some()
    }

    /// Plaintext `offset..end` of a pinned version, read on the calling thread straight into one
    /// pooled buffer and (for `cse`) opened there, the plaintexts packed back to back
    /// ([`encfs_crypto::format::BlobCipher::open_run_packed`]): one read, one decryption pass and
    /// no copy, for a sequential reader whose bytes the kernel keeps in its page cache. `None`
    /// when the version is not pinned or the read or a segment fails: the caller reads through
    /// the cache instead, which reports the failure with the segment's range.
    pub fn read_packed(&self, pool: &Arc<BufferPool>, offset: u64, end: u64) -> Option<Bytes> {
        let pinned = self.pinned.lock().expect("poisoned").clone()?;
        let unit = self.unit as u64;
        let first = offset / unit;
        // The blob's bytes to read, and where in their plaintext `offset` lies.
        let (range, skip) = match &self.kind {
            Kind::Cse(_) => (
                self.fetch_range(first, (end - 1) / unit - first + 1),
                (offset - first * unit) as usize,
            ),
            Kind::Plain(_) => (offset..end, 0),
        };
        let expected = (range.end - range.start) as usize;
        let mut buffer = pool.take(expected);
        pinned.read_into(range, &mut buffer).ok()?;
        if buffer.len() != expected {
            return None;
        }
        if let Kind::Cse(opener) = &self.kind {
            let final_index = opener.segment_count() - 1;
            let packed = opener
                .cipher()
                .open_run_packed(first, final_index, &mut buffer)
                .ok()?;
            if packed < skip + (end - offset) as usize {
                return None;
            }
        }
        Some(
            pool.freeze(buffer)
                .slice(skip..skip + (end - offset) as usize),
        )
    }

    /// Opens (for `cse`) each buffer, one whole segment each from `first`, in place, and hands
    /// back its plaintext as a slice of it: every segment keeps only its own buffer alive, so the
    /// cache's count of the bytes it holds is the memory it really holds (a segment sliced from a
    /// 2 MiB fetch would keep all 2 MiB alive after its neighbours were evicted).
    fn open_segments(
        &self,
        first: u64,
        mut buffers: Vec<Vec<u8>>,
        freeze: impl Fn(Vec<u8>) -> Bytes,
    ) -> Vec<Fetched> {
        let Kind::Cse(opener) = &self.kind else {
            return buffers
                .into_iter()
                .zip(first..)
                .map(|(buffer, index)| (index, Some(freeze(buffer))))
                .collect();
        };
        let final_index = opener.segment_count() - 1;
        let cipher = opener.cipher();
        let open = |(i, sealed): (usize, &mut Vec<u8>)| {
            let index = first + i as u64;
            cipher
                .open_segment_in_place(index, index == final_index, sealed)
                .is_ok()
        };
        let ok: Vec<bool> = if buffers.len() > 4 {
            buffers.par_iter_mut().enumerate().map(open).collect()
        } else {
            buffers.iter_mut().enumerate().map(open).collect()
        };
        let segment = opener.segment_size();
        let out: Vec<Fetched> = buffers
            .into_iter()
            .zip(ok)
            .zip(first..)
            .map(|((buffer, good), index)| {
                let sealed = freeze(buffer);
                let plain = good.then(|| {
                    let slot = plaintext_slots(&sealed, segment)
                        .next()
                        .expect("one segment");
                    let start = slot.as_ptr() as usize - sealed.as_ptr() as usize;
                    sealed.slice(start..start + slot.len())
                });
                (index, plain)
            })
            .collect();
        for (index, plain) in &out {
            if plain.is_none() {
                let range = self.plain_range(*index);
                eprintln!(
                    "encfs: blob {}: segment {index} (plaintext bytes {}..{}) failed \
                     authentication; reads of that range return EIO",
                    self.name, range.start, range.end
                );
            }
        }
        out
    }

    /// Opens each segment of a fetched run; plain-mode runs are cut into units. Each segment is
    /// copied into a buffer of its own first (see [`Self::open_segments`]): the copy costs a
    /// fraction of the decryption, and the run's buffer goes as soon as this returns.
    fn verify(&self, first: u64, data: Bytes) -> Vec<Fetched> {
        let per = match &self.kind {
            Kind::Plain(_) => self.unit,
            Kind::Cse(opener) => opener.segment_size().sealed_bytes(),
        };
        let buffers = data.chunks(per).map(<[u8]>::to_vec).collect();
        self.open_segments(first, buffers, Bytes::from)
    }
}

/// A shared source.
pub(crate) type SharedSource = Arc<BlobSource>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mount::cache::{BlockCache, Lookup, SegmentKey};
    use crate::store::local::LocalStore;
    use crate::store::{Condition, Metadata};
    use encfs_crypto::DataKey;
    use encfs_crypto::format::{SegmentSize, seal};

    const SEGMENT: usize = 64 << 10;
    /// Segments per fetched run: the mount's 2 MiB prefetch requests.
    const RUN: u64 = 32;

    /// A `cse` blob of `segments` 64 KiB segments in an embedded store, opened (and pinned) as
    /// the mount opens it.
    async fn pinned_source(segments: usize) -> (tempfile::TempDir, LocalStore, BlobSource) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("c"));
        store.create_container().await.unwrap();
        let key = Arc::new(DataKey::generate().unwrap());
        let plain: Vec<u8> = (0..segments * SEGMENT).map(|i| (i % 251) as u8).collect();
        let sealed = seal(&key, &plain, SegmentSize::new(SEGMENT as u64).unwrap()).unwrap();
        let len = sealed.len() as u64;
        let none = Condition::None;
        store
            .put("f", sealed.into(), &Metadata::new(), &none, None)
            .await
            .unwrap();
        let protection = Protection::Cse(key);
        let (source, _) = BlobSource::open(&store, "f", len, None, &protection, 1, None)
            .await
            .unwrap();
        (dir, store, source)
    }

    #[tokio::test]
    async fn a_pinned_open_refuses_another_header_or_length() {
        let (_dir, store, source) = pinned_source(2).await;
        let blob = store.get("f", None, None, None).await.unwrap();
        let protection = Protection::Cse(Arc::new(DataKey::generate().unwrap()));
        let len = blob.len() as u64;
        let mut other = blob[..HEADER_LEN].to_vec();
        other[40] ^= 1;
        for (header, blob_len) in [(&other[..], len), (&blob[..HEADER_LEN], len + 1)] {
            let expected = Some(Expected { header, blob_len });
            let opened = BlobSource::open(&store, "f", len, None, &protection, 2, expected).await;
            assert!(matches!(opened, Err(SourceError::NotPinned(ref name)) if name == "f"));
        }
        drop(source);
    }

    #[tokio::test]
    async fn each_segment_of_a_fetched_run_holds_only_its_own_buffer() {
        let (_dir, store, source) = pinned_source(64).await;
        let pool = BufferPool::new(64 << 20);
        let fetched = source
            .fetch_blocking(&store, &pool, 0, RUN)
            .unwrap()
            .unwrap();
        assert_eq!(fetched.len(), RUN as usize);
        for (index, plain) in &fetched {
            let plain = plain.as_ref().unwrap();
            let at = *index as usize * SEGMENT;
            assert!(plain.iter().zip(at..).all(|(&b, i)| b == (i % 251) as u8));
        }
        let sealed = SegmentSize::new(SEGMENT as u64).unwrap().sealed_bytes();
        assert_eq!(pool.live_bytes(), RUN as usize * sealed);
        // One survivor of the run keeps one segment's buffer alive, not the run's.
        let survivor = fetched[7].1.clone().unwrap();
        drop(fetched);
        assert_eq!(pool.live_bytes(), sealed);
        drop(survivor);
        assert_eq!(pool.live_bytes(), 0);
        // The same through the store's async path (a copy per segment): no segment shares its
        // buffer with another.
        let fetched = source.fetch(&store, 0, RUN).await.unwrap();
        assert!(
            fetched
                .iter()
                .all(|(_, plain)| plain.as_ref().unwrap().is_unique())
        );
    }

    /// The cache's budget bounds the memory it keeps alive, whatever survives of each fetch: a
    /// reader streams a file in 2 MiB runs while another keeps one segment of every run hot.
    #[tokio::test]
    async fn a_cache_of_segments_from_large_fetches_holds_no_more_than_its_budget() {
        let runs = 48;
        let (_dir, store, source) = pinned_source(runs * RUN as usize).await;
        let pool = BufferPool::new(0);
        let budget = 8 << 20;
        let cache = BlockCache::new(budget);
        for run in 0..runs as u64 {
            let fetched = source
                .fetch_blocking(&store, &pool, run * RUN, RUN)
                .unwrap()
                .unwrap();
            for (index, plain) in fetched {
                cache.insert(SegmentKey { file: 1, index }, plain.unwrap());
            }
            // The hot segment of every run so far is used again.
            for earlier in 0..=run {
                let key = SegmentKey {
                    file: 1,
                    index: earlier * RUN,
                };
                let _ = cache.lookup(key);
            }
            assert!(cache.used() <= budget);
            assert!(
                pool.live_bytes() <= budget + budget / 100,
                "run {run}: the cache counts {} bytes but keeps {} alive",
                cache.used(),
                pool.live_bytes()
            );
        }
        // The hot segments are all still there.
        let hot = SegmentKey { file: 1, index: 0 };
        assert!(matches!(cache.lookup(hot), Lookup::Hit(_)));
    }
}
