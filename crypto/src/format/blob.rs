//! Sealing and opening many segments at once, from byte slices, on all cores.
//!
//! [`Sealer`] and [`Opener`] hold one blob's keys and do the index bookkeeping; callers hand them
//! batches of whole segments (a CLI pipeline, a FUSE block cache, a store upload). Batches of more
//! than one segment are spread over the rayon thread pool: segments are independent, so the
//! speed-up is linear until memory bandwidth runs out. [`seal`] and [`open`] are the one-shot forms.

use std::ops::Range;

use rayon::prelude::*;

use super::{BlobCipher, HEADER_LEN, NONCE_LEN, SEGMENT_OVERHEAD, SegmentSize, TAG_LEN};
use crate::{DataKey, Error, Result};

/// Below this many bytes a batch of segments is sealed or opened on the calling thread: handing
/// it to the rayon pool (a wake-up and a wait, ~10-50 µs) costs more than AES-GCM on it saves.
const PARALLEL_MIN_BYTES: usize = 256 << 10;

/// Whether a batch of `bytes` in `segments` segments is worth spreading over the rayon pool.
fn worth_parallel(bytes: usize, segments: u64) -> bool {
    segments > 1 && bytes >= PARALLEL_MIN_BYTES
}

/// Seals a blob's segments in order: whole segments first, then the final piece.
#[derive(Debug)]
pub struct Sealer {
    cipher: BlobCipher,
    next_index: u64,
}

impl Sealer {
    /// A new blob under `key` (fresh salt).
    pub fn new(key: &DataKey, segment_size: SegmentSize) -> Result<Self> {
        Ok(Self::from_cipher(BlobCipher::create(key, segment_size)?))
    }

    /// Continues from an existing cipher (tests use a fixed salt this way).
    pub fn from_cipher(cipher: BlobCipher) -> Self {
        Self {
            cipher,
            next_index: 0,
        }
    }

    /// The header to write before the first segment.
    pub fn header_bytes(&self) -> [u8; HEADER_LEN] {
        self.cipher.header().to_bytes()
    }

    /// The blob's segment size.
    pub fn segment_size(&self) -> SegmentSize {
        self.cipher.segment_size()
    }

    /// Index of the next segment to seal.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// Sealed length of a batch of whole (non-final) segments holding `plaintext_len` bytes.
    pub fn sealed_len(&self, plaintext_len: usize) -> usize {
        self.segment_size().sealed_len(plaintext_len)
    }

    /// Sealed length of the last batch (whole segments then the final one).
    pub fn sealed_len_last(&self, plaintext_len: usize) -> usize {
        self.segment_size().sealed_len_last(plaintext_len)
    }

    /// Seals whole, non-final segments. `plaintext.len()` must be a multiple of the segment size
    /// and `out.len()` must be [`Self::sealed_len`] of it.
    pub fn seal_segments(&mut self, plaintext: &[u8], out: &mut [u8]) -> Result<()> {
        if out.len() != self.sealed_len(plaintext.len()) {
            return Err(self.misuse("seal_segments", out.len()));
        }
        copy_into_slots(plaintext, out, self.segment_size());
        self.seal_segments_in_place(out)
    }

    /// Seals the rest of the blob: any whole segments in `plaintext`, then the final segment with
    /// the remaining `len % segment size` bytes. `out.len()` must be [`Self::sealed_len_last`].
    pub fn seal_last(self, plaintext: &[u8], out: &mut [u8]) -> Result<()> {
        if out.len() != self.sealed_len_last(plaintext.len()) {
            return Err(self.misuse("seal_last", out.len()));
        }
        copy_into_slots(plaintext, out, self.segment_size());
        self.seal_last_in_place(out)
    }

    /// [`Self::seal_segments`] on a buffer in sealed layout whose plaintext slots
    /// ([`plaintext_slots_mut`]) are already filled: whole segments only.
    pub fn seal_segments_in_place(&mut self, sealed: &mut [u8]) -> Result<()> {
        let whole = self.segment_size().sealed_bytes();
        if !sealed.len().is_multiple_of(whole) {
            return Err(self.misuse("seal_segments_in_place", sealed.len()));
        }
        seal_in_place(&self.cipher, self.next_index, sealed, None)?;
        self.next_index += (sealed.len() / whole) as u64;
        Ok(())
    }

    /// [`Self::seal_last`] on a buffer in sealed layout: whole segments, then a final segment of
    /// 28..28 + segment size − 1 bytes.
    pub fn seal_last_in_place(self, sealed: &mut [u8]) -> Result<()> {
        let whole = self.segment_size().sealed_bytes();
        if sealed.len() % whole < SEGMENT_OVERHEAD {
            return Err(self.misuse("seal_last_in_place", sealed.len()));
        }
        let final_index = self.next_index + (sealed.len() / whole) as u64;
        seal_in_place(&self.cipher, self.next_index, sealed, Some(final_index))
    }

    fn misuse(&self, what: &str, len: usize) -> Error {
        Error::OutOfRange(format!(
            "{what}: {len} bytes is not a valid batch for segment {}",
            self.next_index
        ))
    }
}

/// The plaintext part of each segment in a buffer laid out as sealed segments (the last one may be
/// short): where a reader puts plaintext before sealing in place, or finds it after opening.
pub fn plaintext_slots_mut(
    sealed: &mut [u8],
    segment_size: SegmentSize,
) -> impl Iterator<Item = &mut [u8]> {
    sealed.chunks_mut(segment_size.sealed_bytes()).map(|chunk| {
        let end = chunk
            .len()
            .saturating_sub(TAG_LEN)
            .max(NONCE_LEN.min(chunk.len()));
        &mut chunk[NONCE_LEN.min(end)..end]
    })
}

/// Read-only [`plaintext_slots_mut`].
pub fn plaintext_slots(sealed: &[u8], segment_size: SegmentSize) -> impl Iterator<Item = &[u8]> {
    sealed.chunks(segment_size.sealed_bytes()).map(|chunk| {
        let end = chunk
            .len()
            .saturating_sub(TAG_LEN)
            .max(NONCE_LEN.min(chunk.len()));
        &chunk[NONCE_LEN.min(end)..end]
    })
}

fn copy_into_slots(plaintext: &[u8], sealed: &mut [u8], segment_size: SegmentSize) {
    for (slot, piece) in
        plaintext_slots_mut(sealed, segment_size).zip(plaintext.chunks(segment_size.bytes()))
    {
        slot.copy_from_slice(piece);
    }
}

/// Seals consecutive in-place segments from `first`; the one at `final_index` gets the final flag.
fn seal_in_place(
    cipher: &BlobCipher,
    first: u64,
    sealed: &mut [u8],
    final_index: Option<u64>,
) -> Result<()> {
    let whole = cipher.segment_size().sealed_bytes();
    let mut nonces = vec![0u8; sealed.len().div_ceil(whole) * NONCE_LEN];
    super::segment::fill_random(&mut nonces)?;
    let seal_one = |(offset, (chunk, nonce)): (usize, (&mut [u8], &[u8]))| {
        let index = first + offset as u64;
        let nonce = nonce.try_into().expect("12-byte chunks");
        cipher.seal_in_place_with_nonce(index, Some(index) == final_index, nonce, chunk)
    };
    if worth_parallel(sealed.len(), sealed.len().div_ceil(whole) as u64) {
        sealed
            .par_chunks_mut(whole)
            .zip(nonces.par_chunks(NONCE_LEN))
            .enumerate()
            .try_for_each(seal_one)
    } else {
        sealed
            .chunks_mut(whole)
            .zip(nonces.chunks(NONCE_LEN))
            .enumerate()
            .try_for_each(seal_one)
    }
}

/// Opens segments of one existing blob, in any order.
#[derive(Debug)]
pub struct Opener {
    cipher: BlobCipher,
    blob_len: u64,
    plaintext_len: u64,
}

impl Opener {
    /// Checks the header (key id, then tag) and the blob length.
    pub fn new(key: &DataKey, header_bytes: &[u8], blob_len: u64) -> Result<Self> {
        let cipher = BlobCipher::open(key, header_bytes)?;
        let plaintext_len = cipher.segment_size().plaintext_len(blob_len)?;
        Ok(Self {
            cipher,
            blob_len,
            plaintext_len,
        })
    }

    /// The blob's keys.
    pub fn cipher(&self) -> &BlobCipher {
        &self.cipher
    }

    /// The blob's segment size.
    pub fn segment_size(&self) -> SegmentSize {
        self.cipher.segment_size()
    }

    /// Plaintext length, from the blob length alone.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    /// Number of segments, including the final one.
    pub fn segment_count(&self) -> u64 {
        self.segment_size().segment_count(self.plaintext_len)
    }

    /// Byte range in the blob of `count` segments from `first` (clamped to the blob).
    pub fn sealed_range(&self, first: u64, count: u64) -> Range<u64> {
        let size = self.segment_size();
        let end = first.saturating_add(count).min(self.segment_count());
        size.segment_offset(first.min(end)).min(self.blob_len)
            ..size.segment_offset(end).min(self.blob_len)
    }

    /// The segments covering plaintext `offset..offset + len` (clamped to the plaintext).
    pub fn segments_for(&self, offset: u64, len: u64) -> Range<u64> {
        let size = self.segment_size();
        let end = offset.saturating_add(len).min(self.plaintext_len);
        let first = size.segment_index(offset.min(end));
        let last = if end == 0 {
            0
        } else {
            size.segment_index(end - 1)
        };
        first..(last + 1).max(first + 1).min(self.segment_count())
    }

    /// How many segments a batch of `len` sealed bytes from `first` holds, or an error when the
    /// bytes are not exactly whole segments of this blob.
    fn batch_count(&self, first: u64, len: usize) -> Result<u64> {
        let count = len.div_ceil(self.segment_size().sealed_bytes()) as u64;
        let range = self.sealed_range(first, count);
        if first >= self.segment_count() || range.end - range.start != len as u64 {
            return Err(Error::OutOfRange(format!(
                "{len} sealed bytes are not whole segments from segment {first}"
            )));
        }
        Ok(count)
    }

    /// Opens consecutive segments from `first`; `sealed` must be exactly the bytes of
    /// [`Self::sealed_range`] for some count. Writes the plaintext to the start of `out` and
    /// returns its length.
    pub fn open_segments(&self, first: u64, sealed: &[u8], out: &mut [u8]) -> Result<usize> {
        let size = self.segment_size();
        let count = self.batch_count(first, sealed.len())?;
        let plain_len = sealed.len() - count as usize * SEGMENT_OVERHEAD;
        if out.len() < plain_len {
            return Err(Error::OutOfRange(format!(
                "output of {} bytes, need {plain_len}",
                out.len()
            )));
        }
        let final_index = self.segment_count() - 1;
        let open_one = |(offset, (sealed, plain)): (usize, (&[u8], &mut [u8]))| {
            let index = first + offset as u64;
            self.cipher
                .open_segment(index, index == final_index, sealed, plain)
                .map(drop)
        };
        // An empty final segment has no output chunk, so `zip` would skip it: open it apart.
        let empty_final = sealed.len() % size.sealed_bytes() == SEGMENT_OVERHEAD;
        let (body, tail) =
            sealed.split_at(sealed.len() - if empty_final { SEGMENT_OVERHEAD } else { 0 });
        if worth_parallel(body.len(), count) {
            body.par_chunks(size.sealed_bytes())
                .zip(out[..plain_len].par_chunks_mut(size.bytes()))
                .enumerate()
                .try_for_each(open_one)?;
        } else {
            body.chunks(size.sealed_bytes())
                .zip(out[..plain_len].chunks_mut(size.bytes()))
                .enumerate()
                .try_for_each(open_one)?;
        }
        if empty_final {
            let index = first + (count - 1);
            self.cipher
                .open_segment(index, index == final_index, tail, &mut [])?;
        }
        Ok(plain_len)
    }
}

impl Opener {
    /// Opens consecutive segments from `first` where they lie; afterwards
    /// [`plaintext_slots`] of `sealed` yields the plaintext. Same length rules as
    /// [`Self::open_segments`].
    pub fn open_segments_in_place(&self, first: u64, sealed: &mut [u8]) -> Result<()> {
        let size = self.segment_size();
        let count = self.batch_count(first, sealed.len())?;
        let final_index = self.segment_count() - 1;
        let open_one = |(offset, chunk): (usize, &mut [u8])| {
            let index = first + offset as u64;
            self.cipher
                .open_segment_in_place(index, index == final_index, chunk)
                .map(drop)
        };
        if worth_parallel(sealed.len(), count) {
            sealed
                .par_chunks_mut(size.sealed_bytes())
                .enumerate()
                .try_for_each(open_one)
        } else {
            sealed
                .chunks_mut(size.sealed_bytes())
                .enumerate()
                .try_for_each(open_one)
        }
    }
}

/// Seals `plaintext` as one complete blob under `key`.
pub fn seal(key: &DataKey, plaintext: &[u8], segment_size: SegmentSize) -> Result<Vec<u8>> {
    let sealer = Sealer::new(key, segment_size)?;
    let mut blob = vec![0u8; segment_size.blob_len(plaintext.len() as u64) as usize];
    let (header, body) = blob.split_at_mut(HEADER_LEN);
    header.copy_from_slice(&sealer.header_bytes());
    sealer.seal_last(plaintext, body)?;
    Ok(blob)
}

/// Opens a complete blob, verifying every segment.
pub fn open(key: &DataKey, blob: &[u8]) -> Result<Vec<u8>> {
    let opener = Opener::new(key, blob, blob.len() as u64)?;
    let mut plaintext = vec![0u8; opener.plaintext_len() as usize];
    opener.open_segments(0, &blob[HEADER_LEN..], &mut plaintext)?;
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: SegmentSize = SegmentSize::MIN;

    #[test]
    fn one_shot_round_trip_around_boundaries() {
        let key = DataKey::generate().unwrap();
        for len in [0, 1, 4095, 4096, 4097, 8192, 3 * 4096 + 5] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let blob = seal(&key, &plain, SMALL).unwrap();
            assert_eq!(blob.len() as u64, SMALL.blob_len(len as u64));
            assert_eq!(open(&key, &blob).unwrap(), plain, "{len}");
        }
    }

    #[test]
    fn batches_equal_one_shot_layout() {
        let key = DataKey::generate().unwrap();
        let plain = vec![9u8; 5 * 4096 + 100];
        let mut sealer = Sealer::new(&key, SMALL).unwrap();
        let mut blob = sealer.header_bytes().to_vec();
        for chunk in plain[..4 * 4096].chunks(2 * 4096) {
            let mut out = vec![0; sealer.sealed_len(chunk.len())];
            sealer.seal_segments(chunk, &mut out).unwrap();
            blob.extend_from_slice(&out);
        }
        let mut out = vec![0; sealer.sealed_len_last(4096 + 100)];
        sealer.seal_last(&plain[4 * 4096..], &mut out).unwrap();
        blob.extend_from_slice(&out);
        assert_eq!(open(&key, &blob).unwrap(), plain);

        let opener = Opener::new(&key, &blob, blob.len() as u64).unwrap();
        assert_eq!(opener.segment_count(), 6);
        assert_eq!(opener.segments_for(4095, 2), 0..2);
        assert_eq!(opener.segments_for(0, 0), 0..1);
        assert_eq!(opener.segments_for(5 * 4096 + 99, 10), 5..6);
        let range = opener.sealed_range(2, 2);
        let mut part = vec![0; 8192];
        let n = opener
            .open_segments(
                2,
                &blob[range.start as usize..range.end as usize],
                &mut part,
            )
            .unwrap();
        assert_eq!(&part[..n], &plain[2 * 4096..4 * 4096]);
    }

    #[test]
    fn in_place_batches_match_copying_ones() {
        let key = DataKey::generate().unwrap();
        let plain: Vec<u8> = (0..3 * 4096 + 7).map(|i| i as u8).collect();
        let mut sealer = Sealer::new(&key, SMALL).unwrap();
        let header = sealer.header_bytes();
        let mut first = vec![0u8; sealer.sealed_len(2 * 4096)];
        for (slot, piece) in plaintext_slots_mut(&mut first, SMALL).zip(plain.chunks(4096)) {
            slot.copy_from_slice(piece);
        }
        sealer.seal_segments_in_place(&mut first).unwrap();
        let mut last = vec![0u8; sealer.sealed_len_last(4096 + 7)];
        for (slot, piece) in
            plaintext_slots_mut(&mut last, SMALL).zip(plain[2 * 4096..].chunks(4096))
        {
            slot.copy_from_slice(piece);
        }
        sealer.seal_last_in_place(&mut last).unwrap();
        let blob = [&header[..], &first, &last].concat();
        assert_eq!(open(&key, &blob).unwrap(), plain);

        let opener = Opener::new(&key, &blob, blob.len() as u64).unwrap();
        let mut body = blob[HEADER_LEN..].to_vec();
        opener.open_segments_in_place(0, &mut body).unwrap();
        assert_eq!(
            plaintext_slots(&body, SMALL).collect::<Vec<_>>().concat(),
            plain
        );
        let mut tampered = blob[HEADER_LEN..].to_vec();
        tampered[5000] ^= 1;
        assert!(matches!(
            opener.open_segments_in_place(0, &mut tampered),
            Err(Error::Corrupt { segment: Some(1) })
        ));
    }

    #[test]
    fn misuse_is_an_error_not_a_panic() {
        let key = DataKey::generate().unwrap();
        let mut sealer = Sealer::new(&key, SMALL).unwrap();
        assert!(sealer.seal_segments(&[0; 100], &mut [0; 128]).is_err());
        let blob = seal(&key, &[1; 9000], SMALL).unwrap();
        let opener = Opener::new(&key, &blob, blob.len() as u64).unwrap();
        assert!(
            opener
                .open_segments(0, &blob[HEADER_LEN..HEADER_LEN + 10], &mut [0; 9000])
                .is_err()
        );
        assert!(
            opener
                .open_segments(7, &blob[HEADER_LEN..], &mut [0; 9000])
                .is_err()
        );
        assert!(
            opener
                .open_segments(0, &blob[HEADER_LEN..], &mut [0; 10])
                .is_err()
        );
    }
}
