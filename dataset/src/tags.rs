//! The segment-tag digest: SHA-256 over the 16-byte AES-GCM tags of a blob's segments, in order.
//!
//! Each tag authenticates its segment's nonce, ciphertext, index and final flag under the blob's
//! key, so the sequence of tags pins every ciphertext byte of the blob without the digest having
//! to cover (or a checker to hash) the whole ciphertext twice: 16 bytes hashed per segment. The
//! header is pinned byte for byte beside it, so a manifest entry names one version exactly.
//!
//! [`TagDigest`] takes the blob's body (everything after the header) in pieces of any size, as a
//! writer produces it, so an upload computes the digest as it seals, with no second read; the
//! final segment (shorter than the others, possibly empty of plaintext) is only known at
//! [`TagDigest::finish`].

use aws_lc_rs::digest::{Context, SHA256};
use encfs_crypto::format::{HEADER_LEN, Header, SegmentSize, TAG_LEN};

use crate::{Entry, Error};

/// The digest of a blob's segment tags, fed the body as it is written or read.
pub struct TagDigest {
    sealed_segment: usize,
    /// Bytes of the current segment seen so far.
    in_segment: usize,
    /// The last (up to) [`TAG_LEN`] bytes of the current segment.
    tail: [u8; TAG_LEN],
    tail_len: usize,
    body_len: u64,
    context: Context,
}

impl TagDigest {
    /// A digest of the body of a blob with segments of `segment_size`.
    pub fn new(segment_size: SegmentSize) -> Self {
        Self {
            sealed_segment: segment_size.sealed_bytes(),
            in_segment: 0,
            tail: [0; TAG_LEN],
            tail_len: 0,
            body_len: 0,
            context: Context::new(&SHA256),
        }
    }

    /// Feeds the next bytes of the body (the blob after its header).
    pub fn update(&mut self, mut body: &[u8]) {
        self.body_len += body.len() as u64;
        while !body.is_empty() {
            let take = (self.sealed_segment - self.in_segment).min(body.len());
            let (now, rest) = body.split_at(take);
            self.keep_tail(now);
            self.in_segment += take;
            if self.in_segment == self.sealed_segment {
                self.context.update(&self.tail);
                self.in_segment = 0;
                self.tail_len = 0;
            }
            body = rest;
        }
    }

    fn keep_tail(&mut self, bytes: &[u8]) {
        if bytes.len() >= TAG_LEN {
            self.tail.copy_from_slice(&bytes[bytes.len() - TAG_LEN..]);
            self.tail_len = TAG_LEN;
        } else {
            let keep = (TAG_LEN - bytes.len()).min(self.tail_len);
            self.tail
                .copy_within(self.tail_len - keep..self.tail_len, 0);
            self.tail[keep..keep + bytes.len()].copy_from_slice(bytes);
            self.tail_len = keep + bytes.len();
        }
    }

    /// The digest, after the final (short) segment: [`encfs_crypto::Error::InvalidLength`] when
    /// the body fed cannot be an EBF body (it ends inside a segment's overhead, or on a full
    /// segment, which is never the final one).
    ///
    /// # Errors
    /// As above.
    pub fn finish(mut self) -> Result<[u8; 32], encfs_crypto::Error> {
        if self.in_segment < encfs_crypto::format::SEGMENT_OVERHEAD {
            return Err(encfs_crypto::Error::InvalidLength(
                self.body_len + HEADER_LEN as u64,
            ));
        }
        self.context.update(&self.tail);
        Ok(self.context.finish().as_ref().try_into().expect("32 bytes"))
    }
}

/// The manifest entry of a whole blob held in memory.
///
/// # Errors
/// [`Error::NotEbf`] naming the blob when it is not an EBF blob or has no EBF length.
pub fn entry_of_bytes(name: &str, blob: &[u8]) -> Result<Entry, Error> {
    let not_ebf = |source| Error::NotEbf {
        blob: name.to_owned(),
        source,
    };
    let header = Header::parse(blob).map_err(not_ebf)?;
    let mut digest = TagDigest::new(header.segment_size);
    digest.update(&blob[HEADER_LEN..]);
    Ok(Entry {
        name: name.to_owned(),
        size: blob.len() as u64,
        header: blob[..HEADER_LEN].to_vec(),
        tags_sha256: digest.finish().map_err(not_ebf)?,
    })
}

/// The header and the one tag of a blob whose body is a single segment (every small file), so
/// that its digest, SHA-256 of that tag ([`one_segment_digest`]), can be taken later and
/// elsewhere; `None` for any other blob (more segments, not EBF).
pub(crate) fn one_segment_tag(blob: &[u8]) -> Option<([u8; HEADER_LEN], [u8; TAG_LEN])> {
    let header = Header::parse(blob).ok()?;
    let body = blob.len().checked_sub(HEADER_LEN)?;
    let one = (encfs_crypto::format::SEGMENT_OVERHEAD..header.segment_size.sealed_bytes())
        .contains(&body);
    one.then(|| {
        (
            blob[..HEADER_LEN].try_into().expect("a header's length"),
            blob[blob.len() - TAG_LEN..]
                .try_into()
                .expect("a tag's length"),
        )
    })
}

/// The segment-tag digest of a blob with one segment, from [`one_segment_tag`].
pub(crate) fn one_segment_digest(tag: &[u8; TAG_LEN]) -> [u8; 32] {
    let mut context = Context::new(&SHA256);
    context.update(tag);
    context.finish().as_ref().try_into().expect("32 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use encfs_crypto::DataKey;
    use encfs_crypto::format::{TAG_LEN, seal};

    /// The digest by the definition: every segment's last 16 bytes, hashed in order.
    fn by_definition(blob: &[u8], segment: SegmentSize) -> [u8; 32] {
        let mut context = Context::new(&SHA256);
        for sealed in blob[HEADER_LEN..].chunks(segment.sealed_bytes()) {
            context.update(&sealed[sealed.len() - TAG_LEN..]);
        }
        context.finish().as_ref().try_into().unwrap()
    }

    #[test]
    fn any_split_of_the_body_gives_the_same_digest() {
        let key = DataKey::generate().unwrap();
        let segment = SegmentSize::MIN;
        for len in [0, 1, 4095, 4096, 4097, 3 * 4096, 3 * 4096 + 100] {
            let blob = seal(&key, &vec![5u8; len], segment).unwrap();
            let expected = by_definition(&blob, segment);
            assert_eq!(entry_of_bytes("b", &blob).unwrap().tags_sha256, expected);
            // One segment's digest can be taken later, from the header and the tag alone.
            let one = one_segment_tag(&blob);
            assert_eq!(one.is_some(), len < 4096, "len {len}");
            if let Some((header, tag)) = one {
                assert_eq!(header[..], blob[..HEADER_LEN]);
                assert_eq!(one_segment_digest(&tag), expected);
            }
            for piece in [1, 7, 15, 16, 17, 4000, 4124, 9000] {
                let mut digest = TagDigest::new(segment);
                for chunk in blob[HEADER_LEN..].chunks(piece) {
                    digest.update(chunk);
                }
                assert_eq!(
                    digest.finish().unwrap(),
                    expected,
                    "len {len} piece {piece}"
                );
            }
        }
    }

    #[test]
    fn a_changed_tag_changes_the_digest_and_bad_lengths_are_refused() {
        let key = DataKey::generate().unwrap();
        let mut blob = seal(&key, &[1u8; 5000], SegmentSize::MIN).unwrap();
        let before = entry_of_bytes("b", &blob).unwrap();
        blob[HEADER_LEN + SegmentSize::MIN.sealed_bytes() - 1] ^= 1;
        assert_ne!(
            entry_of_bytes("b", &blob).unwrap().tags_sha256,
            before.tags_sha256
        );
        let err = entry_of_bytes(
            "b",
            &blob[..HEADER_LEN + SegmentSize::MIN.sealed_bytes() + 10],
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("blob b: invalid blob length"),
            "{err}"
        );
        let err = entry_of_bytes("plain.txt", b"hello").unwrap_err();
        assert!(
            err.to_string()
                .contains("blob plain.txt: not an encfs blob"),
            "{err}"
        );
    }
}
