//! Reusable read buffers. A mount fetches and frees multi-KiB to multi-MiB buffers thousands of
//! times a second; handing them back to the allocator made it return and re-fault pages (huge
//! pages, zeroed on every fault), which measured as half of the CPU time of random reads. Cached
//! segments are [`Bytes`] slices of a pooled buffer; when the last slice goes, the buffer comes
//! back here. A cached segment is the only slice of its buffer (each segment is fetched or copied
//! into a buffer of its own, `source`), so the cache's byte count is the memory it keeps alive.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Free buffers by capacity, and their total bytes.
type FreeLists = (HashMap<usize, Vec<Vec<u8>>>, usize);

/// Free buffers by capacity, up to a byte limit.
pub(crate) struct BufferPool {
    free: Mutex<FreeLists>,
    limit: usize,
    /// Capacity of the buffers handed out by [`Self::freeze`] and not yet back.
    live: AtomicUsize,
}

impl BufferPool {
    /// A pool keeping at most `limit` bytes of free buffers.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            free: Mutex::new((HashMap::new(), 0)),
            limit,
            live: AtomicUsize::new(0),
        })
    }

    /// An empty buffer with capacity for exactly `len` bytes (reused when one is free).
    pub fn take(&self, len: usize) -> Vec<u8> {
        let mut free = self.free.lock().expect("poisoned");
        if let Some(buffer) = free.0.get_mut(&len).and_then(Vec::pop) {
            free.1 -= len;
            return buffer;
        }
        drop(free);
        Vec::with_capacity(len)
    }

    fn give(&self, mut buffer: Vec<u8>) {
        let capacity = buffer.capacity();
        let mut free = self.free.lock().expect("poisoned");
        if free.1 + capacity <= self.limit {
            buffer.clear();
            free.1 += capacity;
            free.0.entry(capacity).or_default().push(buffer);
        }
    }

    /// Bytes of the frozen buffers still alive: what the slices of them hold, whatever their
    /// length.
    #[cfg(test)]
    pub fn live_bytes(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Wraps a filled buffer so that it returns to the pool when its last slice is dropped.
    pub fn freeze(self: &Arc<Self>, buffer: Vec<u8>) -> Bytes {
        self.live.fetch_add(buffer.capacity(), Ordering::Relaxed);
        Bytes::from_owner(Pooled {
            buffer,
            pool: self.clone(),
        })
    }
}

struct Pooled {
    buffer: Vec<u8>,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.buffer);
        self.pool
            .live
            .fetch_sub(buffer.capacity(), Ordering::Relaxed);
        self.pool.give(buffer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_when_the_last_slice_goes() {
        let pool = BufferPool::new(1 << 20);
        let mut buffer = pool.take(1000);
        let address = buffer.as_ptr();
        buffer.extend_from_slice(&[7u8; 1000]);
        let bytes = pool.freeze(buffer);
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(&slice[..], &[7u8; 10]);
        // Still referenced: a new buffer is a fresh one.
        let fresh = pool.take(1000);
        assert_ne!(fresh.as_ptr(), address);
        drop(slice);
        let again = pool.take(1000);
        assert_eq!(again.as_ptr(), address);
        assert!(again.is_empty());
    }

    #[test]
    fn the_pool_is_bounded() {
        let pool = BufferPool::new(1500);
        let a = pool.freeze(vec![0u8; 1000]);
        let b = pool.freeze(vec![0u8; 1000]);
        drop((a, b));
        assert_eq!(pool.free.lock().unwrap().1, 1000);
    }
}
