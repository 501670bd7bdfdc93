//! EBF v1, the encfs encrypted blob format: segmented, authenticated, random access.
//!
//! A blob is a 76-byte header followed by `floor(P / S) + 1` sealed segments, where `P` is the
//! plaintext length and `S` the segment size. Every segment but the last holds exactly `S`
//! plaintext bytes; the last ("final") holds `P mod S` bytes, possibly zero. Each sealed segment is
//! `nonce(12) || AES-256-GCM ciphertext || tag(16)`, so it costs [`SEGMENT_OVERHEAD`] bytes more than
//! its plaintext. The full byte layout and the reasoning are in `docs/format.md`.
//!
//! Why this shape:
//! * Offset → segment → byte range is arithmetic ([`SegmentSize`]), so a FUSE read of 4 KiB
//!   fetches and verifies one segment, never the whole blob.
//! * The final segment always exists and always holds fewer than `S` bytes, so a streaming writer
//!   never needs to look ahead to know which segment is last, and the blob length alone determines
//!   the plaintext length (no unauthenticated length field, unlike the reference CSE trailer).
//! * Each segment's AAD is its index and a final flag: reordering, duplication, truncation at any
//!   length (including a segment boundary) and appending all fail authentication.
//! * A per-blob random salt feeds HKDF, so every blob has its own AES key: a segment or header
//!   spliced from another blob under the same DEK fails.
//! * Each segment carries its own random nonce, so one segment can be re-sealed in place (a
//!   datasink rewriting part of a file) without ever reusing a (key, nonce) pair.
//!
//! Modules: [`header`] parses and encodes the header, [`segment`] derives per-blob keys and seals
//! one segment, [`blob`] seals and opens many segments (in parallel) from byte slices, and
//! [`stream`] wraps those in `Write`/`Read + Seek` adaptors. Only `stream` does I/O.

pub mod blob;
pub mod header;
pub mod segment;
pub mod stream;

pub use blob::{Opener, Sealer, open, plaintext_slots, plaintext_slots_mut, seal};
pub use header::Header;
pub use segment::BlobCipher;
pub use stream::{Decryptor, Encryptor};

use crate::{Error, Result};

/// The first eight bytes of every EBF blob.
pub const MAGIC: [u8; 8] = *b"encfsEBF";
/// The format version this crate writes and reads.
pub const VERSION: u8 = 1;
/// Algorithm 1: HKDF-SHA-256 per-blob keys, AES-256-GCM segments, HMAC-SHA-256 header tag.
pub const ALGORITHM_AES256GCM_HKDF_SHA256: u8 = 1;
/// Header length in bytes (magic 8, version 1, algorithm 1, segment log2 1, reserved 1,
/// key id 16, salt 32, header tag 16).
pub const HEADER_LEN: usize = 76;
/// Per-blob salt length: 256 bits, so salts never collide in practice.
pub const SALT_LEN: usize = 32;
/// Truncated HMAC-SHA-256 header tag length.
pub const HEADER_TAG_LEN: usize = 16;
/// AES-GCM nonce length.
pub const NONCE_LEN: usize = 12;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed segment adds to its plaintext: nonce plus tag.
pub const SEGMENT_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// A segment size: a power of two from 4 KiB to 16 MiB. Also the layout arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SegmentSize {
    log2: u8,
}

impl SegmentSize {
    /// log2 of the smallest segment size, 4 KiB (one page: a 4 KiB random read costs one segment).
    pub const MIN_LOG2: u8 = 12;
    /// log2 of the largest segment size, 16 MiB (the reference system's block size).
    pub const MAX_LOG2: u8 = 24;
    /// The default: 64 KiB, where per-segment overhead is 0.04 % and a random 4 KiB read decrypts
    /// 16× more than it returns (measured in `docs/format.md`).
    pub const DEFAULT: SegmentSize = SegmentSize { log2: 16 };
    /// The smallest segment size, 4 KiB.
    pub const MIN: SegmentSize = SegmentSize {
        log2: Self::MIN_LOG2,
    };
    /// The largest segment size, 16 MiB.
    pub const MAX: SegmentSize = SegmentSize {
        log2: Self::MAX_LOG2,
    };

    /// From a size in bytes.
    pub fn new(bytes: u64) -> Result<Self> {
        if !bytes.is_power_of_two() {
            return Err(Error::InvalidSegmentSize(bytes));
        }
        Self::from_log2(bytes.trailing_zeros() as u8).map_err(|_| Error::InvalidSegmentSize(bytes))
    }

    /// From its base-2 logarithm, as stored in the header.
    pub fn from_log2(log2: u8) -> Result<Self> {
        if (Self::MIN_LOG2..=Self::MAX_LOG2).contains(&log2) {
            Ok(Self { log2 })
        } else {
            Err(Error::InvalidSegmentSize(
                1u64.checked_shl(u32::from(log2)).unwrap_or(0),
            ))
        }
    }

    /// The base-2 logarithm of the size.
    pub fn log2(self) -> u8 {
        self.log2
    }

    /// The plaintext bytes in a full segment.
    pub fn bytes(self) -> usize {
        1 << self.log2
    }

    /// The stored bytes of a full sealed segment.
    pub fn sealed_bytes(self) -> usize {
        self.bytes() + SEGMENT_OVERHEAD
    }

    /// Number of segments of a blob with `plaintext_len` bytes (always at least one).
    pub fn segment_count(self, plaintext_len: u64) -> u64 {
        (plaintext_len >> self.log2) + 1
    }

    /// Total blob length for a plaintext of `plaintext_len` bytes.
    pub fn blob_len(self, plaintext_len: u64) -> u64 {
        HEADER_LEN as u64
            + plaintext_len
            + self.segment_count(plaintext_len) * SEGMENT_OVERHEAD as u64
    }

    /// Plaintext length of a blob of `blob_len` bytes, or [`Error::InvalidLength`] when no valid
    /// blob has that length (cut inside a segment's overhead, or a header alone).
    pub fn plaintext_len(self, blob_len: u64) -> Result<u64> {
        let body = blob_len
            .checked_sub(HEADER_LEN as u64)
            .ok_or(Error::InvalidLength(blob_len))?;
        let sealed = self.sealed_bytes() as u64;
        let full_segments = body / sealed;
        let final_sealed = body % sealed;
        if final_sealed < SEGMENT_OVERHEAD as u64 {
            return Err(Error::InvalidLength(blob_len));
        }
        Ok(full_segments * self.bytes() as u64 + final_sealed - SEGMENT_OVERHEAD as u64)
    }

    /// Sealed length of a batch of whole, non-final segments holding `plaintext_len` bytes.
    pub fn sealed_len(self, plaintext_len: usize) -> usize {
        plaintext_len + plaintext_len / self.bytes() * SEGMENT_OVERHEAD
    }

    /// Sealed length of a blob's last batch: whole segments, then the final one.
    pub fn sealed_len_last(self, plaintext_len: usize) -> usize {
        self.sealed_len(plaintext_len) + SEGMENT_OVERHEAD
    }

    /// Offset in the blob where segment `index` starts.
    pub fn segment_offset(self, index: u64) -> u64 {
        HEADER_LEN as u64 + index * self.sealed_bytes() as u64
    }

    /// Index of the segment holding plaintext byte `offset`.
    pub fn segment_index(self, offset: u64) -> u64 {
        offset >> self.log2
    }
}

impl Default for SegmentSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_size_bounds() {
        assert!(SegmentSize::new(4096).is_ok());
        assert!(SegmentSize::new(16 << 20).is_ok());
        for bad in [0, 1, 2048, 4095, 5000, 32 << 20, u64::MAX] {
            assert!(SegmentSize::new(bad).is_err(), "{bad}");
        }
        assert!(SegmentSize::from_log2(200).is_err());
        assert_eq!(SegmentSize::default().bytes(), 65536);
    }

    #[test]
    fn lengths_invert_exactly() {
        let s = SegmentSize::new(4096).unwrap();
        for p in [0u64, 1, 4095, 4096, 4097, 8192, 100_000] {
            assert_eq!(s.plaintext_len(s.blob_len(p)).unwrap(), p, "{p}");
        }
        assert_eq!(s.blob_len(0), (HEADER_LEN + SEGMENT_OVERHEAD) as u64);
        assert_eq!(
            s.segment_count(4096),
            2,
            "a full last segment is followed by an empty final one"
        );
        // Every length that is not blob_len(p) for some p is rejected.
        let valid: std::collections::HashSet<u64> = (0..20_000).map(|p| s.blob_len(p)).collect();
        for len in 0..s.blob_len(20_000) {
            assert_eq!(s.plaintext_len(len).is_ok(), valid.contains(&len), "{len}");
        }
    }
}
