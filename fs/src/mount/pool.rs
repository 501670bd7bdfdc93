//! Reusable read buffers. A mount fetches and frees multi-KiB to multi-MiB buffers thousands of
//! times a second; handing them back to the allocator made it return and re-fault pages (huge
//! pages, zeroed on every fault), which measured as half of the CPU time of random reads. Cached
//! segments are [`Bytes`] slices of a pooled buffer; when the last slice goes, the buffer comes
//! back here. A request takes the smallest free buffer that fits with at most half again to
//! spare, so runs of varying length (prefetch chunks cut short, replies) still reuse buffers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Free buffers by capacity, and their total bytes.
type FreeLists = (BTreeMap<usize, Vec<Vec<u8>>>, usize);

/// Free buffers by capacity, up to a byte limit.
pub(crate) struct BufferPool {
    free: Mutex<FreeLists>,
    limit: usize,
}

impl BufferPool {
    /// A pool keeping at most `limit` bytes of free buffers.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            free: Mutex::new((BTreeMap::new(), 0)),
            limit,
        })
    }

    /// An empty buffer with capacity for `len` bytes: a free one of up to half again that size,
    /// else a new one of exactly `len`.
    pub fn take(&self, len: usize) -> Vec<u8> {
        let mut free = self.free.lock().expect("poisoned");
        let (lists, bytes) = &mut *free;
        let fit = lists
            .range_mut(len..=len.saturating_add(len / 2))
            .find_map(|(&capacity, list)| list.pop().map(|buffer| (capacity, buffer)));
        if let Some((capacity, buffer)) = fit {
            *bytes -= capacity;
            if lists.get(&capacity).is_some_and(Vec::is_empty) {
                lists.remove(&capacity);
            }
            return buffer;
        }
        drop(free);
        Vec::with_capacity(len)
    }

    /// Keeps `buffer` for reuse (emptied), unless the pool is full.
    pub fn give(&self, mut buffer: Vec<u8>) {
        let capacity = buffer.capacity();
        let mut free = self.free.lock().expect("poisoned");
        if free.1 + capacity <= self.limit {
            buffer.clear();
            free.1 += capacity;
            free.0.entry(capacity).or_default().push(buffer);
        }
    }

    /// Wraps a filled buffer so that it returns to the pool when its last slice is dropped.
    pub fn freeze(self: &Arc<Self>, buffer: Vec<u8>) -> Bytes {
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
        self.pool.give(std::mem::take(&mut self.buffer));
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
    fn a_request_reuses_a_buffer_up_to_half_again_its_size() {
        let pool = BufferPool::new(1 << 20);
        pool.give(Vec::with_capacity(1000));
        pool.give(Vec::with_capacity(4000));
        let fits = pool.take(800);
        assert_eq!(fits.capacity(), 1000);
        // 4000 is more than half again 2000: a new buffer.
        assert_eq!(pool.take(2000).capacity(), 2000);
        assert_eq!(pool.take(3000).capacity(), 4000);
        assert_eq!(pool.free.lock().unwrap().1, 0);
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
