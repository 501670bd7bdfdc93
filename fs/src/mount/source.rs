//! One version of one blob as the mount reads it: its plaintext geometry and how to fetch and
//! verify any run of its segments.
//!
//! For `cse` blobs the unit is the EBF segment: a run of segments is one ranged `get`, and each
//! segment is opened on its own, so a tampered segment fails alone (its range reads as `EIO`, the
//! rest of the file stays readable). For `cpk` and `sse` blobs, which the store hands back as
//! plaintext, the unit is a fixed [`PLAIN_UNIT`] so that the cache and the prefetcher work the same.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use encfs_crypto::format::{HEADER_LEN, Opener, plaintext_slots};
use rayon::prelude::*;

use crate::store::{BlobStore, CustomerKey, StoreError};
use crate::transfer::Protection;

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
}

impl BlobSource {
    /// Opens a blob version: for `cse`, fetches and checks the header together with the first
    /// segments, which are returned so the caller can cache them.
    pub async fn open(
        store: &dyn BlobStore,
        name: &str,
        blob_len: u64,
        protection: &Protection,
        file: u64,
    ) -> Result<(Self, Vec<Fetched>), SourceError> {
        match protection {
            Protection::Cse(key) => {
                let first = blob_len.min(HEADER_LEN as u64 + FIRST_FETCH);
                let head = store.get(name, Some(0..first), None).await?;
                if (head.len() as u64) < first.min(HEADER_LEN as u64) {
                    return Err(SourceError::Short(name.to_owned()));
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

    /// Fetches segments `first..first + count` in one request and verifies each.
    pub async fn fetch(
        &self,
        store: &dyn BlobStore,
        first: u64,
        count: u64,
    ) -> Result<Vec<Fetched>, SourceError> {
        let range = self.fetch_range(first, count);
        let expected = range.end - range.start;
        let cpk = match &self.kind {
            Kind::Plain(cpk) => cpk.as_ref(),
            Kind::Cse(_) => None,
        };
        let data = store.get(&self.name, Some(range), cpk).await?;
        if data.len() as u64 != expected {
            return Err(SourceError::Short(self.name.clone()));
        }
        Ok(self.verify(first, data))
    }

    /// Opens each segment of a fetched run; plain-mode runs are cut into units.
    fn verify(&self, first: u64, data: Bytes) -> Vec<Fetched> {
        match &self.kind {
            Kind::Plain(_) => data
                .chunks(self.unit)
                .enumerate()
                .map(|(i, _)| {
                    let start = i * self.unit;
                    let end = (start + self.unit).min(data.len());
                    (first + i as u64, Some(data.slice(start..end)))
                })
                .collect(),
            Kind::Cse(opener) => {
                let per = opener.segment_size().sealed_bytes();
                let final_index = opener.segment_count() - 1;
                let mut sealed = data
                    .try_into_mut()
                    .unwrap_or_else(|data| BytesMut::from(&data[..]));
                let cipher = opener.cipher();
                let open = |(i, chunk): (usize, &mut [u8])| {
                    let index = first + i as u64;
                    cipher
                        .open_segment_in_place(index, index == final_index, chunk)
                        .is_ok()
                };
                let ok: Vec<bool> = if sealed.len() > 4 * per {
                    sealed.par_chunks_mut(per).enumerate().map(open).collect()
                } else {
                    sealed.chunks_mut(per).enumerate().map(open).collect()
                };
                let sealed = sealed.freeze();
                let base = sealed.as_ptr() as usize;
                let out: Vec<Fetched> = plaintext_slots(&sealed, opener.segment_size())
                    .zip(&ok)
                    .enumerate()
                    .map(|(i, (slot, &good))| {
                        let start = slot.as_ptr() as usize - base;
                        let plain = good.then(|| sealed.slice(start..start + slot.len()));
                        (first + i as u64, plain)
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
        }
    }
}

/// A shared source.
pub(crate) type SharedSource = Arc<BlobSource>;
