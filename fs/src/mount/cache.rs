//! The block cache: decrypted segments in a memory-bounded LRU, keyed by blob version and segment.
//!
//! A key names one version of one blob (`file`: a number the mount hands out per blob name and
//! etag, so a rewritten blob never serves stale plaintext) and one segment of it. Fetches in
//! flight are registered as pending so concurrent readers and the prefetcher never fetch the same
//! segment twice: a reader that finds a segment pending waits for it. Segments that failed
//! authentication are remembered as bad, so every read of that range gets `EIO` without another
//! fetch. With a disk tier, segments evicted from memory are sealed under an ephemeral key and
//! parked on disk (the mount's `scratch` module); a later miss in memory reads them back from there.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use lru::LruCache;

use super::scratch::{Record, Scratch};

/// One segment of one blob version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SegmentKey {
    /// The blob version (name + etag), as numbered by the mount.
    pub file: u64,
    /// Segment index.
    pub index: u64,
}

/// What the cache knows about a segment.
pub(crate) enum Lookup {
    /// Decrypted bytes.
    Hit(Bytes),
    /// The segment failed authentication.
    Bad,
    /// Somebody is fetching it: wait on this.
    Pending(Arc<Pending>),
    /// Nobody has it.
    Miss,
}

/// A fetch in flight.
pub(crate) struct Pending {
    done: Mutex<bool>,
    ready: Condvar,
}

impl Pending {
    /// Waits until the fetch finished (successfully or not), at most `limit`.
    pub fn wait(&self, limit: Duration) {
        let done = self.done.lock().expect("poisoned");
        let _unused = self
            .ready
            .wait_timeout_while(done, limit, |done| !*done)
            .expect("poisoned");
    }
}

struct Inner {
    lru: LruCache<SegmentKey, Bytes>,
    bytes: usize,
    pending: HashMap<SegmentKey, Arc<Pending>>,
    bad: HashSet<SegmentKey>,
}

struct DiskTier {
    scratch: Scratch,
    slot_bytes: usize,
    slots: u64,
    state: Mutex<DiskState>,
}

struct DiskState {
    map: LruCache<SegmentKey, (u64, Record)>,
    free: Vec<u64>,
    next: u64,
}

/// Counters for tests and `--verbose` reporting.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups served from memory.
    pub hits: u64,
    /// Lookups served from the disk tier.
    pub disk_hits: u64,
    /// Segments inserted after a fetch.
    pub inserts: u64,
    /// Segments evicted from memory.
    pub evictions: u64,
}

/// Memory-bounded LRU of decrypted segments, with an optional sealed disk tier.
pub struct BlockCache {
    inner: Mutex<Inner>,
    budget: usize,
    disk: Option<DiskTier>,
    stats: Mutex<CacheStats>,
}

impl BlockCache {
    /// A cache holding at most `budget` bytes of plaintext in memory.
    pub fn new(budget: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
                pending: HashMap::new(),
                bad: HashSet::new(),
            }),
            budget: budget.max(1),
            disk: None,
            stats: Mutex::new(CacheStats::default()),
        }
    }

    /// Adds a disk tier of at most `capacity` bytes in `dir` for segments of `slot_bytes`
    /// plaintext bytes (larger segments stay memory-only).
    pub fn with_disk_tier(
        mut self,
        dir: &Path,
        capacity: u64,
        slot_bytes: usize,
    ) -> std::io::Result<Self> {
        let sealed = Scratch::sealed_len(slot_bytes) as u64;
        self.disk = Some(DiskTier {
            scratch: Scratch::new(Some(dir))?,
            slot_bytes,
            slots: (capacity / sealed).max(1),
            state: Mutex::new(DiskState {
                map: LruCache::unbounded(),
                free: Vec::new(),
                next: 0,
            }),
        });
        Ok(self)
    }

    /// The memory budget in bytes.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Plaintext bytes held in memory now.
    pub fn used(&self) -> usize {
        self.inner.lock().expect("poisoned").bytes
    }

    /// Counters since the cache was made.
    pub fn stats(&self) -> CacheStats {
        *self.stats.lock().expect("poisoned")
    }

    /// Looks a segment up in memory, then on disk.
    pub(crate) fn lookup(&self, key: SegmentKey) -> Lookup {
        {
            let mut inner = self.inner.lock().expect("poisoned");
            if let Some(bytes) = inner.lru.get(&key) {
                let bytes = bytes.clone();
                drop(inner);
                self.stats.lock().expect("poisoned").hits += 1;
                return Lookup::Hit(bytes);
            }
            if inner.bad.contains(&key) {
                return Lookup::Bad;
            }
            if let Some(pending) = inner.pending.get(&key) {
                return Lookup::Pending(pending.clone());
            }
        }
        if let Some(bytes) = self.disk_get(key) {
            self.stats.lock().expect("poisoned").disk_hits += 1;
            self.insert(key, bytes.clone());
            return Lookup::Hit(bytes);
        }
        Lookup::Miss
    }

    /// Whether a segment is held (in memory or on disk), being fetched or known bad.
    pub(crate) fn holds(&self, key: SegmentKey) -> bool {
        let inner = self.inner.lock().expect("poisoned");
        inner.lru.contains(&key)
            || inner.pending.contains_key(&key)
            || inner.bad.contains(&key)
            || self.disk_contains(key)
    }

    /// Registers the segments of `indices` that nobody has or fetches as pending, and returns
    /// them: the caller must fetch those and then call [`Self::complete`].
    pub(crate) fn claim(&self, file: u64, indices: impl Iterator<Item = u64>) -> Vec<u64> {
        let mut inner = self.inner.lock().expect("poisoned");
        let mut claimed = Vec::new();
        for index in indices {
            let key = SegmentKey { file, index };
            if inner.lru.contains(&key)
                || inner.pending.contains_key(&key)
                || inner.bad.contains(&key)
            {
                continue;
            }
            if self.disk_contains(key) {
                continue;
            }
            inner.pending.insert(
                key,
                Arc::new(Pending {
                    done: Mutex::new(false),
                    ready: Condvar::new(),
                }),
            );
            claimed.push(index);
        }
        claimed
    }

    /// Ends the pending state of claimed segments (fetched or failed) and wakes their waiters.
    pub(crate) fn complete(&self, file: u64, indices: &[u64]) {
        let mut woken = Vec::with_capacity(indices.len());
        {
            let mut inner = self.inner.lock().expect("poisoned");
            for &index in indices {
                if let Some(pending) = inner.pending.remove(&SegmentKey { file, index }) {
                    woken.push(pending);
                }
            }
        }
        for pending in woken {
            *pending.done.lock().expect("poisoned") = true;
            pending.ready.notify_all();
        }
    }

    /// Remembers a segment that failed authentication.
    pub(crate) fn mark_bad(&self, key: SegmentKey) {
        self.inner.lock().expect("poisoned").bad.insert(key);
    }

    /// Inserts decrypted bytes, evicting least-recently-used segments over the budget.
    pub(crate) fn insert(&self, key: SegmentKey, bytes: Bytes) {
        let mut evicted = Vec::new();
        {
            let mut inner = self.inner.lock().expect("poisoned");
            let len = bytes.len();
            if let Some(old) = inner.lru.put(key, bytes) {
                inner.bytes -= old.len();
            }
            inner.bytes += len;
            while inner.bytes > self.budget {
                let Some((old_key, old)) = inner.lru.pop_lru() else {
                    break;
                };
                inner.bytes -= old.len();
                evicted.push((old_key, old));
            }
        }
        let mut stats = self.stats.lock().expect("poisoned");
        stats.inserts += 1;
        stats.evictions += evicted.len() as u64;
        drop(stats);
        for (old_key, old) in evicted {
            self.disk_put(old_key, &old);
        }
    }

    /// Drops segments a sequential reader has copied out (memory only, no disk tier): the kernel's
    /// page cache holds them now, and keeping them would only push other files' segments out
    /// (a scan flooding the LRU) and keep fresh buffers from being reused.
    pub(crate) fn release(&self, file: u64, indices: std::ops::Range<u64>) {
        let mut released = Vec::new();
        {
            let mut inner = self.inner.lock().expect("poisoned");
            for index in indices {
                if let Some(old) = inner.lru.pop(&SegmentKey { file, index }) {
                    inner.bytes -= old.len();
                    released.push(old);
                }
            }
        }
        // The buffers go back to their pool outside the lock.
        drop(released);
    }

    /// Drops every segment of a blob version (after it was replaced or deleted).
    pub(crate) fn forget_file(&self, file: u64) {
        let mut inner = self.inner.lock().expect("poisoned");
        let keys: Vec<SegmentKey> = inner
            .lru
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| k.file == file)
            .collect();
        for key in keys {
            if let Some(old) = inner.lru.pop(&key) {
                inner.bytes -= old.len();
            }
        }
        inner.bad.retain(|k| k.file != file);
        drop(inner);
        if let Some(disk) = &self.disk {
            let mut state = disk.state.lock().expect("poisoned");
            let keys: Vec<SegmentKey> = state
                .map
                .iter()
                .map(|(k, _)| *k)
                .filter(|k| k.file == file)
                .collect();
            for key in keys {
                if let Some((slot, _)) = state.map.pop(&key) {
                    state.free.push(slot);
                }
            }
        }
    }

    fn disk_contains(&self, key: SegmentKey) -> bool {
        self.disk
            .as_ref()
            .is_some_and(|d| d.state.lock().expect("poisoned").map.contains(&key))
    }

    fn disk_get(&self, key: SegmentKey) -> Option<Bytes> {
        let disk = self.disk.as_ref()?;
        let (slot, record) = *disk.state.lock().expect("poisoned").map.get(&key)?;
        match disk.scratch.read(&record) {
            Ok(plain) => Some(Bytes::from(plain)),
            Err(error) => {
                eprintln!("encfs: disk cache slot {slot}: {error}; refetching");
                let mut state = disk.state.lock().expect("poisoned");
                if state.map.pop(&key).is_some() {
                    state.free.push(slot);
                }
                None
            }
        }
    }

    fn disk_put(&self, key: SegmentKey, plain: &[u8]) {
        let Some(disk) = &self.disk else { return };
        if plain.len() > disk.slot_bytes {
            return;
        }
        let slot = {
            let mut state = disk.state.lock().expect("poisoned");
            if state.map.contains(&key) {
                return;
            }
            if let Some(slot) = state.free.pop() {
                slot
            } else if state.next < disk.slots {
                state.next += 1;
                state.next - 1
            } else if let Some((_, (slot, _))) = state.map.pop_lru() {
                slot
            } else {
                return;
            }
        };
        let offset = slot * Scratch::sealed_len(disk.slot_bytes) as u64;
        match disk.scratch.write(offset, plain) {
            Ok(record) => {
                disk.state
                    .lock()
                    .expect("poisoned")
                    .map
                    .put(key, (slot, record));
            }
            Err(error) => {
                eprintln!("encfs: disk cache write failed: {error}");
                disk.state.lock().expect("poisoned").free.push(slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(file: u64, index: u64) -> SegmentKey {
        SegmentKey { file, index }
    }

    #[test]
    fn evicts_least_recently_used_over_budget() {
        let cache = BlockCache::new(3 * 10);
        for i in 0..3 {
            cache.insert(key(1, i), Bytes::from(vec![i as u8; 10]));
        }
        assert!(matches!(cache.lookup(key(1, 0)), Lookup::Hit(_)));
        cache.insert(key(1, 3), Bytes::from(vec![3; 10]));
        // Segment 1 was the least recently used.
        assert!(matches!(cache.lookup(key(1, 1)), Lookup::Miss));
        assert!(matches!(cache.lookup(key(1, 0)), Lookup::Hit(_)));
        assert!(cache.used() <= 30);
        assert_eq!(cache.stats().evictions, 1);
    }

    #[test]
    fn claims_are_exclusive_and_waiters_wake() {
        let cache = Arc::new(BlockCache::new(1 << 20));
        assert_eq!(cache.claim(7, 0..4), vec![0, 1, 2, 3]);
        assert!(cache.claim(7, 0..4).is_empty());
        let Lookup::Pending(pending) = cache.lookup(key(7, 2)) else {
            panic!("expected pending");
        };
        let filler = cache.clone();
        let t = std::thread::spawn(move || {
            filler.insert(key(7, 2), Bytes::from_static(b"x"));
            filler.complete(7, &[0, 1, 2, 3]);
        });
        pending.wait(Duration::from_secs(10));
        t.join().unwrap();
        assert!(matches!(cache.lookup(key(7, 2)), Lookup::Hit(_)));
        // Unfilled claims fall back to misses after completion.
        assert!(matches!(cache.lookup(key(7, 1)), Lookup::Miss));
    }

    #[test]
    fn bad_segments_and_forgotten_files() {
        let cache = BlockCache::new(1 << 20);
        cache.mark_bad(key(1, 5));
        assert!(matches!(cache.lookup(key(1, 5)), Lookup::Bad));
        cache.insert(key(1, 0), Bytes::from_static(b"abc"));
        cache.insert(key(2, 0), Bytes::from_static(b"def"));
        cache.forget_file(1);
        assert!(matches!(cache.lookup(key(1, 0)), Lookup::Miss));
        assert!(matches!(cache.lookup(key(1, 5)), Lookup::Miss));
        assert!(matches!(cache.lookup(key(2, 0)), Lookup::Hit(_)));
        assert_eq!(cache.used(), 3);
    }

    #[test]
    fn disk_tier_takes_evictions_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlockCache::new(8)
            .with_disk_tier(dir.path(), 1 << 20, 8)
            .unwrap();
        cache.insert(key(1, 0), Bytes::from_static(b"plain-00"));
        cache.insert(key(1, 1), Bytes::from_static(b"plain-01"));
        // Segment 0 went to disk and comes back from there.
        let Lookup::Hit(bytes) = cache.lookup(key(1, 0)) else {
            panic!("expected a disk hit");
        };
        assert_eq!(&bytes[..], b"plain-00");
        assert_eq!(cache.stats().disk_hits, 1);
        // Nothing named is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
