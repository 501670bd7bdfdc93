//! The 76-byte EBF header: parse and encode, no cryptography.
//!
//! ```text
//! offset len field
//!      0   8 magic "encfsEBF"
//!      8   1 version (1)
//!      9   1 algorithm (1 = AES-256-GCM, HKDF-SHA-256)
//!     10   1 log2(segment size), 12..=24
//!     11   1 reserved, 0
//!     12  16 key id of the DEK
//!     28  32 salt, random per blob
//!     60  16 header tag: HMAC-SHA-256 over bytes 0..60, truncated
//! ```
//! Parsing checks only structure; the tag is checked by [`crate::format::BlobCipher::open`].

use super::{
    ALGORITHM_AES256GCM_HKDF_SHA256, HEADER_LEN, HEADER_TAG_LEN, MAGIC, SALT_LEN, SegmentSize,
    VERSION,
};
use crate::{Error, KEY_ID_LEN, KeyId, Result};

/// Length of the header part covered by the header tag.
pub const AUTHENTICATED_LEN: usize = HEADER_LEN - HEADER_TAG_LEN;

/// A parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Plaintext bytes per segment.
    pub segment_size: SegmentSize,
    /// Id of the DEK the blob was sealed with.
    pub key_id: KeyId,
    /// Per-blob random salt for HKDF.
    pub salt: [u8; SALT_LEN],
    /// Truncated HMAC over the other fields.
    pub tag: [u8; HEADER_TAG_LEN],
}

impl Header {
    /// Parses the first [`HEADER_LEN`] bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
            return Err(Error::NotEbf);
        }
        if bytes.len() < HEADER_LEN {
            return Err(Error::InvalidLength(bytes.len() as u64));
        }
        if bytes[8] != VERSION {
            return Err(Error::UnsupportedVersion(bytes[8]));
        }
        if bytes[9] != ALGORITHM_AES256GCM_HKDF_SHA256 {
            return Err(Error::UnsupportedAlgorithm(bytes[9]));
        }
        let segment_size = SegmentSize::from_log2(bytes[10])?;
        if bytes[11] != 0 {
            return Err(Error::Corrupt { segment: None });
        }
        Ok(Self {
            segment_size,
            key_id: KeyId(bytes[12..12 + KEY_ID_LEN].try_into().expect("16 bytes")),
            salt: bytes[28..28 + SALT_LEN].try_into().expect("32 bytes"),
            tag: bytes[AUTHENTICATED_LEN..HEADER_LEN]
                .try_into()
                .expect("16 bytes"),
        })
    }

    /// The bytes covered by the header tag.
    pub fn authenticated_bytes(&self) -> [u8; AUTHENTICATED_LEN] {
        let mut out = [0u8; AUTHENTICATED_LEN];
        out[..8].copy_from_slice(&MAGIC);
        out[8] = VERSION;
        out[9] = ALGORITHM_AES256GCM_HKDF_SHA256;
        out[10] = self.segment_size.log2();
        out[11] = 0;
        out[12..28].copy_from_slice(&self.key_id.0);
        out[28..60].copy_from_slice(&self.salt);
        out
    }

    /// The full encoded header.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..AUTHENTICATED_LEN].copy_from_slice(&self.authenticated_bytes());
        out[AUTHENTICATED_LEN..].copy_from_slice(&self.tag);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            segment_size: SegmentSize::DEFAULT,
            key_id: KeyId([1; 16]),
            salt: [2; 32],
            tag: [3; 16],
        }
    }

    #[test]
    fn round_trip() {
        let header = sample();
        assert_eq!(Header::parse(&header.to_bytes()).unwrap(), header);
    }

    #[test]
    fn structural_errors() {
        let good = sample().to_bytes();
        assert!(matches!(Header::parse(b"PK\x03\x04"), Err(Error::NotEbf)));
        assert!(matches!(
            Header::parse(&good[..40]),
            Err(Error::InvalidLength(40))
        ));
        let mut bad = good;
        bad[8] = 2;
        assert!(matches!(
            Header::parse(&bad),
            Err(Error::UnsupportedVersion(2))
        ));
        let mut bad = good;
        bad[9] = 9;
        assert!(matches!(
            Header::parse(&bad),
            Err(Error::UnsupportedAlgorithm(9))
        ));
        let mut bad = good;
        bad[10] = 30;
        assert!(matches!(
            Header::parse(&bad),
            Err(Error::InvalidSegmentSize(_))
        ));
        let mut bad = good;
        bad[11] = 1;
        assert!(matches!(
            Header::parse(&bad),
            Err(Error::Corrupt { segment: None })
        ));
    }
}
