//! `Write` and `Read + Seek` adaptors over [`Sealer`] and [`Opener`]: the only I/O in `format`.
//!
//! [`Encryptor`] buffers a batch of whole segments (default 1 MiB) and seals each full batch in
//! parallel; [`Encryptor::finish`] seals the final segment. Dropping an encryptor without
//! `finish` leaves a blob with no final segment, which every reader rejects as truncated: an
//! interrupted write can never pass for a complete one.
//!
//! [`Decryptor`] reads the header and the blob length up front (so it needs `Seek`), then serves
//! reads from a cache of the segments around the position. A seek costs nothing until the next
//! read, which fetches and verifies only the segments it touches.

use std::io::{self, Read, Seek, SeekFrom, Write};

use super::{HEADER_LEN, Opener, Sealer, SegmentSize};
use crate::{DataKey, Error, Result};

/// Plaintext buffered by an [`Encryptor`] before a parallel seal, rounded to whole segments.
pub const DEFAULT_BATCH_BYTES: usize = 1 << 20;

/// Encrypts everything written to it into an EBF blob on `W`.
pub struct Encryptor<W: Write> {
    inner: W,
    sealer: Sealer,
    plaintext: Vec<u8>,
    sealed: Vec<u8>,
    batch: usize,
}

impl<W: Write> Encryptor<W> {
    /// Writes the header to `inner` and returns an encryptor with the default batch size.
    pub fn new(key: &DataKey, segment_size: SegmentSize, inner: W) -> Result<Self> {
        Self::with_batch(key, segment_size, DEFAULT_BATCH_BYTES, inner)
    }

    /// As [`Self::new`], sealing `batch_bytes` of plaintext at a time (rounded up to whole
    /// segments); larger batches use more cores.
    pub fn with_batch(
        key: &DataKey,
        segment_size: SegmentSize,
        batch_bytes: usize,
        mut inner: W,
    ) -> Result<Self> {
        let sealer = Sealer::new(key, segment_size)?;
        inner.write_all(&sealer.header_bytes())?;
        let batch = batch_bytes.max(1).div_ceil(segment_size.bytes()) * segment_size.bytes();
        Ok(Self {
            inner,
            sealer,
            plaintext: Vec::with_capacity(batch),
            sealed: Vec::new(),
            batch,
        })
    }

    fn seal_full_batch(&mut self) -> Result<()> {
        self.sealed
            .resize(self.sealer.sealed_len(self.plaintext.len()), 0);
        self.sealer
            .seal_segments(&self.plaintext, &mut self.sealed)?;
        self.inner.write_all(&self.sealed)?;
        self.plaintext.clear();
        Ok(())
    }

    /// Seals the final segment, flushes, and returns the writer.
    pub fn finish(mut self) -> Result<W> {
        let last = self.sealer.sealed_len_last(self.plaintext.len());
        self.sealed.resize(last, 0);
        let Self {
            mut inner,
            sealer,
            plaintext,
            mut sealed,
            ..
        } = self;
        sealer.seal_last(&plaintext, &mut sealed)?;
        inner.write_all(&sealed)?;
        inner.flush()?;
        Ok(inner)
    }
}

impl<W: Write> Write for Encryptor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.plaintext.len() == self.batch {
            // Only now do we know the buffered segments are not the last ones.
            self.seal_full_batch()?;
        }
        let take = buf.len().min(self.batch - self.plaintext.len());
        self.plaintext.extend_from_slice(&buf[..take]);
        Ok(take)
    }

    /// Flushes the inner writer; buffered plaintext stays buffered until a batch fills or
    /// [`Encryptor::finish`] (sealing a partial segment early would make it final).
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decrypts an EBF blob with random access.
pub struct Decryptor<R: Read + Seek> {
    inner: R,
    opener: Opener,
    position: u64,
    /// Plaintext of segments `cached_first..`, as decrypted by the last fetch.
    cached: Vec<u8>,
    cached_first: u64,
    sealed: Vec<u8>,
    batch_segments: u64,
}

impl<R: Read + Seek> Decryptor<R> {
    /// Reads and checks the header: [`Error::KeyMismatch`] for another key, [`Error::Corrupt`] for
    /// an altered header, [`Error::InvalidLength`] for an impossible blob length.
    pub fn new(key: &DataKey, mut inner: R) -> Result<Self> {
        inner.seek(SeekFrom::Start(0))?;
        let mut header = [0u8; HEADER_LEN];
        let got = read_up_to(&mut inner, &mut header)?;
        let blob_len = inner.seek(SeekFrom::End(0))?;
        let opener = Opener::new(key, &header[..got], blob_len)?;
        let batch_segments = (DEFAULT_BATCH_BYTES / opener.segment_size().bytes()).max(1) as u64;
        Ok(Self {
            inner,
            opener,
            position: 0,
            cached: Vec::new(),
            cached_first: 0,
            sealed: Vec::new(),
            batch_segments,
        })
    }

    /// Fetch `segments` segments per read from the inner reader (default: 1 MiB worth). Use 1 for
    /// small random reads.
    pub fn set_batch_segments(&mut self, segments: u64) {
        self.batch_segments = segments.max(1);
    }

    /// The plaintext length.
    pub fn plaintext_len(&self) -> u64 {
        self.opener.plaintext_len()
    }

    /// The blob's segment size.
    pub fn segment_size(&self) -> SegmentSize {
        self.opener.segment_size()
    }

    /// Gives back the inner reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn cached_range(&self) -> std::ops::Range<u64> {
        let start = self.cached_first * self.segment_size().bytes() as u64;
        start..start + self.cached.len() as u64
    }

    fn fetch(&mut self, first: u64) -> Result<()> {
        let range = self.opener.sealed_range(first, self.batch_segments);
        self.sealed.resize((range.end - range.start) as usize, 0);
        self.inner.seek(SeekFrom::Start(range.start))?;
        self.inner
            .read_exact(&mut self.sealed)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => Error::Corrupt {
                    segment: Some(first),
                },
                _ => Error::Io(e),
            })?;
        self.cached.resize(self.sealed.len(), 0);
        self.cached_first = first;
        match self
            .opener
            .open_segments(first, &self.sealed, &mut self.cached)
        {
            Ok(len) => {
                self.cached.truncate(len);
                Ok(())
            }
            Err(error) => {
                self.cached.clear();
                Err(error)
            }
        }
    }
}

fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

impl<R: Read + Seek> Read for Decryptor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.position >= self.plaintext_len() {
            return Ok(0);
        }
        if !self.cached_range().contains(&self.position) {
            let first = self.segment_size().segment_index(self.position);
            self.fetch(first)?;
        }
        let range = self.cached_range();
        let start = (self.position - range.start) as usize;
        let n = buf.len().min(self.cached.len() - start);
        buf[..n].copy_from_slice(&self.cached[start..start + n]);
        self.position += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for Decryptor<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => self.plaintext_len().checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        let target = target.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "seek before start of blob")
        })?;
        self.position = target;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    #[test]
    fn stream_round_trip_with_seeks() {
        let key = DataKey::generate().unwrap();
        let plain: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
        let mut encryptor =
            Encryptor::with_batch(&key, SegmentSize::MIN, 8192, Vec::new()).unwrap();
        for chunk in plain.chunks(777) {
            encryptor.write_all(chunk).unwrap();
        }
        let blob = encryptor.finish().unwrap();
        assert_eq!(
            blob.len() as u64,
            SegmentSize::MIN.blob_len(plain.len() as u64)
        );
        assert_eq!(crate::format::open(&key, &blob).unwrap(), plain);

        let mut decryptor = Decryptor::new(&key, Cursor::new(&blob)).unwrap();
        let mut all = Vec::new();
        decryptor.read_to_end(&mut all).unwrap();
        assert_eq!(all, plain);
        decryptor.set_batch_segments(1);
        for offset in [0u64, 4095, 4096, 12_345, 49_999] {
            decryptor.seek(SeekFrom::Start(offset)).unwrap();
            let mut buf = [0u8; 100];
            let n = decryptor.read(&mut buf).unwrap();
            assert!(n > 0);
            assert_eq!(&buf[..n], &plain[offset as usize..offset as usize + n]);
        }
        assert_eq!(decryptor.seek(SeekFrom::End(0)).unwrap(), 50_000);
        assert_eq!(decryptor.read(&mut [0; 10]).unwrap(), 0);
        assert!(decryptor.seek(SeekFrom::Current(-60_000)).is_err());
    }

    #[test]
    fn unfinished_encryptor_leaves_an_invalid_blob() {
        let key = DataKey::generate().unwrap();
        let mut encryptor =
            Encryptor::with_batch(&key, SegmentSize::MIN, 4096, Vec::new()).unwrap();
        encryptor.write_all(&[1; 3 * 4096]).unwrap();
        let partial = std::mem::take(&mut encryptor.inner);
        assert!(crate::format::open(&key, &partial).is_err());
    }

    #[test]
    fn empty_blob_and_short_inputs() {
        let key = DataKey::generate().unwrap();
        let blob = Encryptor::new(&key, SegmentSize::DEFAULT, Vec::new())
            .unwrap()
            .finish()
            .unwrap();
        let mut decryptor = Decryptor::new(&key, Cursor::new(&blob)).unwrap();
        assert_eq!(decryptor.plaintext_len(), 0);
        assert_eq!(decryptor.read(&mut [0; 10]).unwrap(), 0);
        assert!(matches!(
            Decryptor::new(&key, Cursor::new(&blob[..50])),
            Err(Error::InvalidLength(_))
        ));
        assert!(matches!(
            Decryptor::new(&key, Cursor::new(b"hello")),
            Err(Error::NotEbf)
        ));
    }
}
