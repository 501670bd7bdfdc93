//! Scratch space on local disk that never holds plaintext: every record is sealed with AES-256-GCM
//! under an ephemeral key that lives only in this process's memory.
//!
//! Used by the optional disk tier of the block cache and by the write path to park blocks that
//! were already staged to the store. The file is created with `O_TMPFILE` semantics (no name), so
//! it disappears when the mount ends, even after a crash. Each record is sealed as one EBF segment
//! whose index is a fresh counter value remembered by the caller: a record moved to another slot,
//! or an older record replayed into its slot, fails authentication.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use encfs_crypto::DataKey;
use encfs_crypto::format::{BlobCipher, NONCE_LEN, SEGMENT_OVERHEAD, SegmentSize};

/// Where a sealed record lies and how to check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record {
    /// Byte offset in the scratch file.
    pub offset: u64,
    /// Plaintext length.
    pub len: usize,
    /// The counter value it was sealed under.
    pub counter: u64,
}

/// An unnamed scratch file plus its ephemeral cipher.
pub(crate) struct Scratch {
    file: File,
    cipher: BlobCipher,
    counter: AtomicU64,
}

impl Scratch {
    /// Creates an unnamed scratch file in `dir` (or the system temp directory).
    pub fn new(dir: Option<&Path>) -> std::io::Result<Self> {
        let file = match dir {
            Some(dir) => tempfile::tempfile_in(dir)?,
            None => tempfile::tempfile()?,
        };
        let key = DataKey::generate().map_err(std::io::Error::other)?;
        // The largest segment size: every record (at most a few MiB) is one short final segment.
        let cipher = BlobCipher::create(&key, SegmentSize::MAX).map_err(std::io::Error::other)?;
        Ok(Self {
            file,
            cipher,
            counter: AtomicU64::new(0),
        })
    }

    /// Bytes a record of `len` plaintext bytes takes on disk.
    pub fn sealed_len(len: usize) -> usize {
        len + SEGMENT_OVERHEAD
    }

    /// Seals `plain` and writes it at `offset`.
    pub fn write(&self, offset: u64, plain: &[u8]) -> std::io::Result<Record> {
        let record = self.reserve(offset, plain.len());
        self.write_reserved(&record, plain)?;
        Ok(record)
    }

    /// Allocates the counter of a record to be written later by [`Self::write_reserved`].
    pub fn reserve(&self, offset: u64, len: usize) -> Record {
        Record {
            offset,
            len,
            counter: self.counter.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Seals `plain` (exactly `record.len` bytes) under the record's counter and writes it.
    pub fn write_reserved(&self, record: &Record, plain: &[u8]) -> std::io::Result<()> {
        let mut sealed = vec![0u8; Self::sealed_len(plain.len())];
        self.cipher
            .seal_segment(record.counter, true, plain, &mut sealed)
            .map_err(std::io::Error::other)?;
        self.file.write_all_at(&sealed, record.offset)
    }

    /// Reads and opens a record written by [`Self::write`].
    pub fn read(&self, record: &Record) -> std::io::Result<Vec<u8>> {
        let mut sealed = vec![0u8; Self::sealed_len(record.len)];
        self.file.read_exact_at(&mut sealed, record.offset)?;
        self.cipher
            .open_segment_in_place(record.counter, true, &mut sealed)
            .map_err(|e| std::io::Error::other(format!("scratch record: {e}")))?;
        sealed.truncate(NONCE_LEN + record.len);
        sealed.drain(..NONCE_LEN);
        Ok(sealed)
    }

    /// Writes bytes that are already ciphertext (EBF segments under the data key) as they are.
    pub fn write_raw(&self, offset: u64, sealed: &[u8]) -> std::io::Result<()> {
        self.file.write_all_at(sealed, offset)
    }

    /// Reads back bytes written by [`Self::write_raw`].
    pub fn read_raw(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_never_hold_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = Scratch::new(Some(dir.path())).unwrap();
        let plain = b"secret plaintext that must not reach the disk".repeat(100);
        let a = scratch.write(0, &plain).unwrap();
        let b = scratch.write(10_000, b"second").unwrap();
        assert_eq!(scratch.read(&a).unwrap(), plain);
        assert_eq!(scratch.read(&b).unwrap(), b"second");
        // The file has no name, and its bytes do not contain the plaintext.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let mut raw = vec![0u8; 20_000];
        let n = scratch.file.read_at(&mut raw, 0).unwrap();
        assert!(!raw[..n].windows(6).any(|w| w == b"secret"));
    }

    #[test]
    fn moved_or_replayed_records_are_refused() {
        let scratch = Scratch::new(None).unwrap();
        let first = scratch.write(0, b"version one").unwrap();
        let second = scratch.write(0, b"version two").unwrap();
        // Replaying the old record's counter against the new bytes fails.
        assert!(scratch.read(&first).is_err());
        assert_eq!(scratch.read(&second).unwrap(), b"version two");
        let moved = Record {
            offset: 4096,
            ..second
        };
        scratch.file.write_all_at(&[0u8; 64], 4096).unwrap();
        assert!(scratch.read(&moved).is_err());
    }
}
