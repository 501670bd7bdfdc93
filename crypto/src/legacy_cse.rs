//! Reader for the reference clean-room system's legacy client-side encryption (CSE) format, so
//! existing datasets can be read and converted to EBF (`encfs convert --from cleanroom-cse`).
//!
//! Layout: the plaintext is cut into 16 MiB blocks, the last one zero-padded to full size; each
//! block is stored as `nonce(12) || AES-256-GCM ciphertext(16 MiB) || tag(16)` under the raw DEK
//! with no associated data; an 8-byte big-endian count of padding bytes ends the file.
//!
//! Its weaknesses (why EBF exists): blocks carry no index, so they can be swapped between
//! positions or files under the same key; the padding trailer is unauthenticated, so truncation
//! is not detected by the cipher; 16 MiB blocks make small random reads slow. This reader limits
//! what it can: it checks the length arithmetic, bounds the padding count, and requires the
//! discarded padding bytes (which *are* authenticated) to be zero, so a trailer edited to hide
//! real data is caught unless that data was itself zeros.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};

use crate::{DataKey, Error, Result};

/// The reference system's block size.
pub const BLOCK_SIZE: usize = 16 << 20;
/// Nonce bytes before each block.
pub const NONCE_LEN: usize = 12;
/// Tag bytes after each block.
pub const TAG_LEN: usize = 16;
/// The padding-length trailer.
pub const TRAILER_LEN: usize = 8;

/// Where the plaintext lives in a legacy blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Plaintext bytes per block.
    pub block_size: usize,
    /// Number of stored blocks.
    pub block_count: u64,
    /// Plaintext length after removing the padding.
    pub plaintext_len: u64,
}

impl Layout {
    /// Computes the layout from the blob length and its last eight bytes.
    pub fn new(blob_len: u64, trailer: [u8; TRAILER_LEN]) -> Result<Self> {
        Self::with_block_size(blob_len, trailer, BLOCK_SIZE)
    }

    /// As [`Self::new`] for a non-standard block size (tests and fuzzing use small blocks).
    pub fn with_block_size(
        blob_len: u64,
        trailer: [u8; TRAILER_LEN],
        block_size: usize,
    ) -> Result<Self> {
        let stored = (block_size + NONCE_LEN + TAG_LEN) as u64;
        let body = blob_len
            .checked_sub(TRAILER_LEN as u64)
            .ok_or(Error::InvalidLength(blob_len))?;
        if body % stored != 0 {
            return Err(Error::InvalidLength(blob_len));
        }
        let block_count = body / stored;
        let padding = u64::from_be_bytes(trailer);
        let max_padding = if block_count == 0 {
            0
        } else {
            block_size as u64 - 1
        };
        if padding > max_padding {
            return Err(Error::Corrupt { segment: None });
        }
        Ok(Self {
            block_size,
            block_count,
            plaintext_len: block_count * block_size as u64 - padding,
        })
    }

    /// Stored bytes of one block.
    pub fn stored_block_len(&self) -> usize {
        self.block_size + NONCE_LEN + TAG_LEN
    }

    /// Plaintext bytes of block `index` after padding removal.
    pub fn block_plaintext_len(&self, index: u64) -> usize {
        let start = index * self.block_size as u64;
        (self.plaintext_len.saturating_sub(start)).min(self.block_size as u64) as usize
    }
}

/// Decrypts legacy blocks with one DEK.
pub struct LegacyCipher {
    aead: LessSafeKey,
}

impl LegacyCipher {
    /// The reference system uses the DEK directly as the AES-256-GCM key.
    pub fn new(key: &DataKey) -> Self {
        let unbound = UnboundKey::new(&AES_256_GCM, key.dangerous_bytes()).expect("32-byte key");
        Self {
            aead: LessSafeKey::new(unbound),
        }
    }

    /// Opens stored block `index` into `out` (at least `layout.block_size` bytes), returning how
    /// many plaintext bytes it holds after padding removal.
    pub fn open_block(
        &self,
        layout: &Layout,
        index: u64,
        stored: &[u8],
        out: &mut [u8],
    ) -> Result<usize> {
        let corrupt = Error::Corrupt {
            segment: Some(index),
        };
        if stored.len() != layout.stored_block_len()
            || out.len() < layout.block_size
            || index >= layout.block_count
        {
            return Err(corrupt);
        }
        let nonce: [u8; NONCE_LEN] = stored[..NONCE_LEN].try_into().expect("12 bytes");
        let (ciphertext, tag) = stored[NONCE_LEN..].split_at(layout.block_size);
        let tag = Tag::try_from(tag).map_err(|_| Error::Corrupt {
            segment: Some(index),
        })?;
        out[..layout.block_size].copy_from_slice(ciphertext);
        self.aead
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                tag,
                &mut out[..layout.block_size],
                0..,
            )
            .map_err(|_| Error::Corrupt {
                segment: Some(index),
            })?;
        let keep = layout.block_plaintext_len(index);
        if out[keep..layout.block_size].iter().any(|&b| b != 0) {
            // The trailer claims more padding than there is: it was altered to cut data off.
            return Err(corrupt);
        }
        Ok(keep)
    }
}

/// Opens a whole legacy blob held in memory.
pub fn open(key: &DataKey, blob: &[u8]) -> Result<Vec<u8>> {
    open_with_block_size(key, blob, BLOCK_SIZE)
}

/// [`open`] for a non-standard block size.
pub fn open_with_block_size(key: &DataKey, blob: &[u8], block_size: usize) -> Result<Vec<u8>> {
    let trailer_start = blob
        .len()
        .checked_sub(TRAILER_LEN)
        .ok_or(Error::InvalidLength(blob.len() as u64))?;
    let trailer = blob[trailer_start..].try_into().expect("8 bytes");
    let layout = Layout::with_block_size(blob.len() as u64, trailer, block_size)?;
    let cipher = LegacyCipher::new(key);
    let mut plaintext = Vec::with_capacity(layout.plaintext_len as usize);
    let mut block = vec![0u8; block_size];
    for (index, stored) in blob[..trailer_start]
        .chunks(layout.stored_block_len())
        .enumerate()
    {
        let keep = cipher.open_block(&layout, index as u64, stored, &mut block)?;
        plaintext.extend_from_slice(&block[..keep]);
    }
    Ok(plaintext)
}

/// Writes the legacy format, for tests and fixtures only: the format is weak (see the module
/// docs) and encfs never produces it for users.
#[doc(hidden)]
pub fn insecure_seal(key: &DataKey, plaintext: &[u8], block_size: usize) -> Vec<u8> {
    let aead = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, key.dangerous_bytes()).expect("32-byte key"),
    );
    let blocks = plaintext.len().div_ceil(block_size);
    let padding = blocks * block_size - plaintext.len();
    let mut out = Vec::with_capacity(blocks * (block_size + NONCE_LEN + TAG_LEN) + TRAILER_LEN);
    for chunk in plaintext.chunks(block_size) {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("RNG");
        let mut body = chunk.to_vec();
        body.resize(block_size, 0);
        let tag = aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut body,
            )
            .expect("seal");
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        out.extend_from_slice(tag.as_ref());
    }
    out.extend_from_slice(&(padding as u64).to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: usize = 1024;

    #[test]
    fn round_trip_various_lengths() {
        let key = DataKey::generate().unwrap();
        for len in [0usize, 1, 1023, 1024, 1025, 5000] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 256) as u8).collect();
            let blob = insecure_seal(&key, &plain, SMALL);
            assert_eq!(
                open_with_block_size(&key, &blob, SMALL).unwrap(),
                plain,
                "{len}"
            );
        }
    }

    #[test]
    fn standard_block_size_round_trip() {
        let key = DataKey::generate().unwrap();
        let plain = vec![0x5a; BLOCK_SIZE + 3];
        assert_eq!(
            open(&key, &insecure_seal(&key, &plain, BLOCK_SIZE)).unwrap(),
            plain
        );
    }

    #[test]
    fn tampering_detected() {
        let key = DataKey::generate().unwrap();
        let plain = vec![1u8; 3000];
        let blob = insecure_seal(&key, &plain, SMALL);
        let mut flipped = blob.clone();
        flipped[100] ^= 1;
        assert!(open_with_block_size(&key, &flipped, SMALL).is_err());
        assert!(open_with_block_size(&DataKey::generate().unwrap(), &blob, SMALL).is_err());
        assert!(open_with_block_size(&key, &blob[..blob.len() - 1], SMALL).is_err());
        // A trailer edited to claim more padding cuts real (non-zero) data: caught.
        let mut trailer_edit = blob.clone();
        let n = trailer_edit.len();
        trailer_edit[n - 1] += 5;
        assert!(open_with_block_size(&key, &trailer_edit, SMALL).is_err());
        // Padding of a full block or more is structurally impossible.
        let mut huge = blob;
        let n = huge.len();
        huge[n - 8..].copy_from_slice(&(SMALL as u64).to_be_bytes());
        assert!(open_with_block_size(&key, &huge, SMALL).is_err());
    }
}
