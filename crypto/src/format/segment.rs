//! Per-blob keys and the sealing of one segment.
//!
//! From the DEK and the header's salt, HKDF-SHA-256 derives two independent keys:
//!
//! * the header MAC key (`info = "encfs/v1/ebf/header-mac"`), for HMAC-SHA-256 over header bytes
//!   0..60, truncated to 16 bytes and stored at 60..76;
//! * the segment key (`info = "encfs/v1/ebf/segment-key" || header bytes 0..60`), the AES-256-GCM
//!   key of every segment. Putting the header in `info` binds every segment to every header field.
//!
//! AES-256-GCM itself comes from `ring`, whose VAES/AVX2 code path measured 1.8× faster than
//! aws-lc-rs on the project's machines (docs/benchmarks.md); HKDF, HMAC and the RNG from aws-lc-rs.
//! The `*_in_place` forms work on a buffer already in sealed layout (`nonce slot || plaintext ||
//! tag slot`), so a reader can fill plaintext straight into place and no byte is copied twice.
//!
//! A segment is sealed with a fresh random 96-bit nonce and AAD `index (u64 big-endian) || final
//! (0x00 or 0x01)`. Random nonces under a per-blob key allow 2^32 segment writes per blob (256 TiB
//! at 64 KiB segments) before the collision bound matters, and let one segment be re-sealed in place.

use std::ops::Range;

use aws_lc_rs::{constant_time, hkdf, hmac, rand};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use zeroize::Zeroizing;

use super::header::{AUTHENTICATED_LEN, Header};
use super::{HEADER_TAG_LEN, NONCE_LEN, SALT_LEN, SEGMENT_OVERHEAD, SegmentSize, TAG_LEN};
use crate::keys::Len;
use crate::{DataKey, Error, Result};

const HEADER_MAC_INFO: &[u8] = b"encfs/v1/ebf/header-mac";
const SEGMENT_KEY_INFO: &[u8] = b"encfs/v1/ebf/segment-key";
/// AAD length: segment index (8) and final flag (1).
const AAD_LEN: usize = 9;

/// The keys of one blob: checks its header and seals or opens its segments.
pub struct BlobCipher {
    header: Header,
    aead: LessSafeKey,
}

impl std::fmt::Debug for BlobCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobCipher")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

fn aad(index: u64, is_final: bool) -> [u8; AAD_LEN] {
    let mut aad = [0u8; AAD_LEN];
    aad[..8].copy_from_slice(&index.to_be_bytes());
    aad[8] = u8::from(is_final);
    aad
}

/// Fills `out` from the RNG (a batch of nonces costs one call instead of one per segment).
pub(crate) fn fill_random(out: &mut [u8]) -> Result<()> {
    rand::fill(out).map_err(|_| Error::Io(std::io::Error::other("OS RNG failed")))
}

fn random_nonce() -> Result<[u8; NONCE_LEN]> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::fill(&mut nonce).map_err(|_| Error::Io(std::io::Error::other("OS RNG failed")))?;
    Ok(nonce)
}

/// Derives `(header MAC key, segment key)` for a header's authenticated bytes.
fn derive(
    key: &DataKey,
    authenticated: &[u8; AUTHENTICATED_LEN],
    salt: &[u8; SALT_LEN],
) -> (hmac::Key, LessSafeKey) {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(key.dangerous_bytes());
    let mut mac_key = Zeroizing::new([0u8; 32]);
    let mut segment_key = Zeroizing::new([0u8; 32]);
    prk.expand(&[HEADER_MAC_INFO], Len(32))
        .and_then(|okm| okm.fill(&mut mac_key[..]))
        .expect("HKDF can produce 32 bytes");
    prk.expand(&[SEGMENT_KEY_INFO, authenticated], Len(32))
        .and_then(|okm| okm.fill(&mut segment_key[..]))
        .expect("HKDF can produce 32 bytes");
    let aead = UnboundKey::new(&AES_256_GCM, &segment_key[..]).expect("32-byte AES key");
    (
        hmac::Key::new(hmac::HMAC_SHA256, &mac_key[..]),
        LessSafeKey::new(aead),
    )
}

fn header_tag(mac_key: &hmac::Key, authenticated: &[u8]) -> [u8; HEADER_TAG_LEN] {
    let full = hmac::sign(mac_key, authenticated);
    full.as_ref()[..HEADER_TAG_LEN]
        .try_into()
        .expect("HMAC-SHA-256 is 32 bytes")
}

impl BlobCipher {
    /// Starts a new blob under `key` with a fresh random salt.
    pub fn create(key: &DataKey, segment_size: SegmentSize) -> Result<Self> {
        let mut salt = [0u8; SALT_LEN];
        rand::fill(&mut salt).map_err(|_| Error::Io(std::io::Error::other("OS RNG failed")))?;
        Ok(Self::dangerous_create_with_salt(key, segment_size, salt))
    }

    /// Starts a new blob with a caller-chosen salt. Reusing a salt with the same key makes two
    /// blobs share a segment key; only known-answer tests should call this.
    pub fn dangerous_create_with_salt(
        key: &DataKey,
        segment_size: SegmentSize,
        salt: [u8; SALT_LEN],
    ) -> Self {
        let mut header = Header {
            segment_size,
            key_id: key.id(),
            salt,
            tag: [0; HEADER_TAG_LEN],
        };
        let authenticated = header.authenticated_bytes();
        let (mac_key, aead) = derive(key, &authenticated, &salt);
        header.tag = header_tag(&mac_key, &authenticated);
        Self { header, aead }
    }

    /// Checks an existing blob's header against `key`: [`Error::KeyMismatch`] when the blob names
    /// another key, [`Error::Corrupt`] when the header was altered.
    pub fn open(key: &DataKey, header_bytes: &[u8]) -> Result<Self> {
        let header = Header::parse(header_bytes)?;
        let expected = key.id();
        if header.key_id != expected {
            return Err(Error::KeyMismatch {
                expected,
                found: header.key_id,
            });
        }
        let authenticated = header.authenticated_bytes();
        let (mac_key, aead) = derive(key, &authenticated, &header.salt);
        constant_time::verify_slices_are_equal(&header_tag(&mac_key, &authenticated), &header.tag)
            .map_err(|_| Error::Corrupt { segment: None })?;
        Ok(Self { header, aead })
    }

    /// The blob's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The blob's segment size.
    pub fn segment_size(&self) -> SegmentSize {
        self.header.segment_size
    }

    /// Seals one segment into `out`, which must be exactly `plaintext.len() + SEGMENT_OVERHEAD`
    /// bytes. `plaintext` must be a full segment unless `is_final`, when it must be shorter.
    pub fn seal_segment(
        &self,
        index: u64,
        is_final: bool,
        plaintext: &[u8],
        out: &mut [u8],
    ) -> Result<()> {
        self.dangerous_seal_segment_with_nonce(index, is_final, random_nonce()?, plaintext, out)
    }

    /// [`Self::seal_segment`] with a caller-chosen nonce: only for known-answer tests. Reusing a
    /// nonce under the same blob key breaks AES-GCM.
    pub fn dangerous_seal_segment_with_nonce(
        &self,
        index: u64,
        is_final: bool,
        nonce: [u8; NONCE_LEN],
        plaintext: &[u8],
        out: &mut [u8],
    ) -> Result<()> {
        if out.len() != plaintext.len() + SEGMENT_OVERHEAD {
            return Err(Error::OutOfRange(format!(
                "segment {index}: {} plaintext bytes into {} output bytes",
                plaintext.len(),
                out.len()
            )));
        }
        out[NONCE_LEN..NONCE_LEN + plaintext.len()].copy_from_slice(plaintext);
        self.seal_in_place_with_nonce(index, is_final, nonce, out)
    }

    /// Seals a segment laid out in place: `sealed[12..len - 16]` holds the plaintext on entry; the
    /// nonce and tag slots are filled and the plaintext is encrypted where it lies.
    pub fn seal_segment_in_place(
        &self,
        index: u64,
        is_final: bool,
        sealed: &mut [u8],
    ) -> Result<()> {
        self.seal_in_place_with_nonce(index, is_final, random_nonce()?, sealed)
    }

    pub(crate) fn seal_in_place_with_nonce(
        &self,
        index: u64,
        is_final: bool,
        nonce: [u8; NONCE_LEN],
        sealed: &mut [u8],
    ) -> Result<()> {
        let segment = self.segment_size().bytes();
        let len = sealed.len().wrapping_sub(SEGMENT_OVERHEAD);
        let size_ok = sealed.len() >= SEGMENT_OVERHEAD
            && if is_final {
                len < segment
            } else {
                len == segment
            };
        if !size_ok {
            return Err(Error::OutOfRange(format!(
                "segment {index}: {} sealed bytes for a {} segment of {segment}",
                sealed.len(),
                if is_final { "final" } else { "full" }
            )));
        }
        let (nonce_out, rest) = sealed.split_at_mut(NONCE_LEN);
        let (body, tag_out) = rest.split_at_mut(len);
        nonce_out.copy_from_slice(&nonce);
        let tag = self
            .aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(index, is_final)),
                body,
            )
            .map_err(|_| Error::OutOfRange(format!("segment {index} too large for AES-GCM")))?;
        tag_out.copy_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens one sealed segment into `out[..sealed.len() - SEGMENT_OVERHEAD]` and returns that
    /// length. Any failure is [`Error::Corrupt`] naming the segment.
    pub fn open_segment(
        &self,
        index: u64,
        is_final: bool,
        sealed: &[u8],
        out: &mut [u8],
    ) -> Result<usize> {
        let corrupt = Error::Corrupt {
            segment: Some(index),
        };
        let Some(len) = sealed.len().checked_sub(SEGMENT_OVERHEAD) else {
            return Err(corrupt);
        };
        if out.len() < len {
            return Err(corrupt);
        }
        out[..len].copy_from_slice(&sealed[NONCE_LEN..NONCE_LEN + len]);
        let tag = &sealed[NONCE_LEN + len..];
        self.open_body(
            index,
            is_final,
            sealed[..NONCE_LEN].try_into().expect("12 bytes"),
            tag,
            &mut out[..len],
            0,
        )?;
        Ok(len)
    }

    /// Opens a sealed segment where it lies and returns the range of `sealed` that now holds the
    /// plaintext. On failure the buffer holds garbage and the error is [`Error::Corrupt`].
    pub fn open_segment_in_place(
        &self,
        index: u64,
        is_final: bool,
        sealed: &mut [u8],
    ) -> Result<Range<usize>> {
        let Some(len) = sealed.len().checked_sub(SEGMENT_OVERHEAD) else {
            return Err(Error::Corrupt {
                segment: Some(index),
            });
        };
        let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
        let (body, tag) = rest.split_at_mut(len);
        self.open_body(
            index,
            is_final,
            (&*nonce).try_into().expect("12 bytes"),
            tag,
            body,
            0,
        )?;
        Ok(NONCE_LEN..NONCE_LEN + len)
    }

    /// Opens the whole sealed segments lying back to back in `run`, segment `first` first (the
    /// blob's final segment, `final_index`, may end the run short), and packs their plaintexts
    /// at the start of `run`: afterwards the plaintext of segment `first + k` is at
    /// `k * segment_size`. Each segment is decrypted straight to its packed place, so no byte
    /// moves twice. Returns the plaintext length. Any failure is [`Error::Corrupt`] naming the
    /// first segment that does not open (the run then holds garbage).
    pub fn open_run_packed(&self, first: u64, final_index: u64, run: &mut [u8]) -> Result<usize> {
        let sealed = self.segment_size().sealed_bytes();
        let (mut at, mut packed, mut index) = (0, 0, first);
        while at < run.len() {
            let this = (run.len() - at).min(sealed);
            let Some(len) = this.checked_sub(SEGMENT_OVERHEAD) else {
                return Err(Error::Corrupt {
                    segment: Some(index),
                });
            };
            let nonce = run[at..at + NONCE_LEN].try_into().expect("12 bytes");
            let body = at + NONCE_LEN;
            let tag: [u8; TAG_LEN] = run[body + len..at + this].try_into().expect("16 bytes");
            // Segment k's plaintext lands at or before its body, so the bodies after it and its
            // own tag (both copied out or further on) are untouched.
            let in_out = &mut run[packed..body + len];
            self.open_body(
                index,
                index == final_index,
                nonce,
                &tag,
                in_out,
                body - packed,
            )?;
            (at, packed, index) = (at + this, packed + len, index + 1);
        }
        Ok(packed)
    }

    /// Opens the body at `in_out[src..]` (nonce and tag taken out already) to `in_out[..]`.
    fn open_body(
        &self,
        index: u64,
        is_final: bool,
        nonce: [u8; NONCE_LEN],
        tag: &[u8],
        in_out: &mut [u8],
        src: usize,
    ) -> Result<()> {
        let corrupt = || Error::Corrupt {
            segment: Some(index),
        };
        let segment = self.segment_size().bytes();
        let len = in_out.len().saturating_sub(src);
        if src > in_out.len()
            || (is_final && len >= segment)
            || (!is_final && len != segment)
            || tag.len() != TAG_LEN
        {
            return Err(corrupt());
        }
        let tag = Tag::try_from(tag).map_err(|_| corrupt())?;
        self.aead
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(index, is_final)),
                tag,
                in_out,
                src..,
            )
            .map_err(|_| corrupt())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> (DataKey, BlobCipher) {
        let key = DataKey::from_bytes([5; 32]);
        let cipher = BlobCipher::create(&key, SegmentSize::new(4096).unwrap()).unwrap();
        (key, cipher)
    }

    #[test]
    fn segment_round_trip_and_index_binding() {
        let (_, cipher) = cipher();
        let plain = vec![7u8; 4096];
        let mut sealed = vec![0u8; 4096 + SEGMENT_OVERHEAD];
        cipher.seal_segment(3, false, &plain, &mut sealed).unwrap();
        let mut out = vec![0u8; 4096];
        assert_eq!(
            cipher.open_segment(3, false, &sealed, &mut out).unwrap(),
            4096
        );
        assert_eq!(out, plain);
        assert!(matches!(
            cipher.open_segment(4, false, &sealed, &mut out),
            Err(Error::Corrupt { segment: Some(4) })
        ));
        assert!(cipher.open_segment(3, true, &sealed, &mut out).is_err());
    }

    /// Segments `first..first + plains.len()` sealed back to back, the last one final when
    /// `with_final`.
    fn sealed_run(
        cipher: &BlobCipher,
        first: u64,
        plains: &[Vec<u8>],
        with_final: bool,
    ) -> Vec<u8> {
        let mut run = Vec::new();
        for (k, plain) in plains.iter().enumerate() {
            let is_final = with_final && k + 1 == plains.len();
            let mut sealed = vec![0u8; plain.len() + SEGMENT_OVERHEAD];
            cipher
                .seal_segment(first + k as u64, is_final, plain, &mut sealed)
                .unwrap();
            run.extend_from_slice(&sealed);
        }
        run
    }

    #[test]
    fn a_packed_run_opens_to_the_plaintexts_back_to_back() {
        let (_, cipher) = cipher();
        let full = |b: u8| vec![b; 4096];
        for (first, plains, with_final) in [
            (0, vec![full(1), full(2), full(3), vec![4; 100]], true),
            (7, vec![full(5), full(6)], false),
            (3, vec![full(7), Vec::new()], true),
            (9, vec![vec![8; 1]], true),
        ] {
            let mut run = sealed_run(&cipher, first, &plains, with_final);
            let last = first + plains.len() as u64 - 1;
            let final_index = if with_final { last } else { last + 100 };
            let len = cipher
                .open_run_packed(first, final_index, &mut run)
                .unwrap();
            assert_eq!(run[..len], plains.concat()[..], "run from {first}");
        }
    }

    #[test]
    fn a_packed_run_names_the_segment_that_does_not_open() {
        let (_, cipher) = cipher();
        let plains = vec![vec![1; 4096], vec![2; 4096], vec![3; 4096]];
        let run = sealed_run(&cipher, 4, &plains, false);
        let sealed = 4096 + SEGMENT_OVERHEAD;
        // A flipped body byte, nonce byte or tag byte of the second segment.
        for at in [sealed + 100, sealed + 3, 2 * sealed - 1] {
            let mut bad = run.clone();
            bad[at] ^= 1;
            assert!(matches!(
                cipher.open_run_packed(4, 99, &mut bad),
                Err(Error::Corrupt { segment: Some(5) })
            ));
        }
        // Wrong indices, a final flag where there is none, a cut run, swapped segments.
        assert!(cipher.open_run_packed(5, 99, &mut run.clone()).is_err());
        assert!(cipher.open_run_packed(4, 6, &mut run.clone()).is_err());
        assert!(matches!(
            cipher.open_run_packed(4, 99, &mut run[..run.len() - 10].to_vec()),
            Err(Error::Corrupt { segment: Some(6) })
        ));
        let mut swapped = [&run[sealed..2 * sealed], &run[..sealed]].concat();
        assert!(cipher.open_run_packed(4, 99, &mut swapped).is_err());
    }

    #[test]
    fn reseal_uses_a_fresh_nonce() {
        let (_, cipher) = cipher();
        let mut a = vec![0u8; 10 + SEGMENT_OVERHEAD];
        let mut b = a.clone();
        cipher.seal_segment(0, true, b"0123456789", &mut a).unwrap();
        cipher.seal_segment(0, true, b"0123456789", &mut b).unwrap();
        assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
    }

    #[test]
    fn header_checks() {
        let (key, cipher) = cipher();
        let bytes = cipher.header().to_bytes();
        assert!(BlobCipher::open(&key, &bytes).is_ok());
        let other = DataKey::from_bytes([6; 32]);
        assert!(matches!(
            BlobCipher::open(&other, &bytes),
            Err(Error::KeyMismatch { .. })
        ));
        for position in [10, 20, 40, 70] {
            let mut bad = bytes;
            bad[position] ^= 1;
            assert!(BlobCipher::open(&key, &bad).is_err(), "flip at {position}");
        }
    }

    #[test]
    fn in_place_matches_copying_forms() {
        let (_, cipher) = cipher();
        let mut sealed = vec![0u8; 100 + SEGMENT_OVERHEAD];
        sealed[NONCE_LEN..NONCE_LEN + 100].fill(0x42);
        cipher.seal_segment_in_place(9, true, &mut sealed).unwrap();
        let mut out = [0u8; 100];
        assert_eq!(
            cipher.open_segment(9, true, &sealed, &mut out).unwrap(),
            100
        );
        assert_eq!(out, [0x42; 100]);
        let range = cipher.open_segment_in_place(9, true, &mut sealed).unwrap();
        assert_eq!(&sealed[range], &[0x42; 100]);
        assert!(
            cipher.open_segment_in_place(9, true, &mut sealed).is_err(),
            "already decrypted"
        );
    }

    #[test]
    fn wrong_sizes_refused() {
        let (_, cipher) = cipher();
        let mut out = vec![0u8; 100];
        assert!(cipher.seal_segment(0, false, &[0; 10], &mut out).is_err());
        assert!(
            cipher
                .seal_segment(0, true, &[0; 4096], &mut vec![0; 4096 + 28])
                .is_err()
        );
        assert!(cipher.open_segment(0, true, &[0; 20], &mut out).is_err());
    }
}
