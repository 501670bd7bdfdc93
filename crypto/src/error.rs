//! The error type shared by every module of this crate.
//!
//! Decryption failures are deliberately coarse: [`Error::Corrupt`] does not say whether a tag, a
//! nonce, a segment index or a length check failed, so callers cannot be used as an oracle. It does
//! say *where* (which segment), and the binaries add *which blob* as context.

use crate::KeyId;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in key handling and blob sealing/opening.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes do not start with the EBF magic: not an encfs blob at all.
    #[error("not an encfs blob (bad magic)")]
    NotEbf,
    /// The header names a format version this build does not understand.
    #[error("unsupported EBF version {0}")]
    UnsupportedVersion(u8),
    /// The header names an algorithm this build does not understand.
    #[error("unsupported EBF algorithm {0}")]
    UnsupportedAlgorithm(u8),
    /// A segment size outside 4 KiB..=16 MiB or not a power of two.
    #[error("invalid segment size {0}: must be a power of two from 4 KiB to 16 MiB")]
    InvalidSegmentSize(u64),
    /// The blob was sealed under a different data key.
    #[error("key mismatch: blob was encrypted with key {found}, this key is {expected}")]
    KeyMismatch {
        /// Id of the key supplied by the caller.
        expected: KeyId,
        /// Id of the key recorded in the blob header.
        found: KeyId,
    },
    /// Authentication failed: the blob was modified, truncated, extended or spliced.
    #[error("authentication failed{}: blob is corrupt, truncated or tampered with", .segment.map(|s| format!(" at segment {s}")).unwrap_or_default())]
    Corrupt {
        /// The segment whose check failed, when the failure is tied to one (`None`: the header).
        segment: Option<u64>,
    },
    /// The blob length cannot be the length of any valid blob (cut short or extended).
    #[error("invalid blob length {0}: blob is truncated or has extra bytes")]
    InvalidLength(u64),
    /// A request outside the blob (seek or segment index past the end).
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// A key file could not be parsed.
    #[error("malformed key file: {0}")]
    MalformedKeyFile(String),
    /// A key-encryption key could not be parsed, generated or used.
    #[error("key-encryption key: {0}")]
    Kek(String),
    /// A wrapped key could not be unwrapped (wrong unwrapping key or damaged input).
    #[error("unwrap failed: wrong key-encryption key or damaged wrapped key")]
    UnwrapFailed,
    /// An encrypted blob-name component that does not decrypt in its directory under this key:
    /// edited, moved from another directory, written by something else or under another key.
    #[error(
        "encrypted name component {0:?} does not decrypt here: tampered, moved, foreign or another key's"
    )]
    InvalidName(String),
    /// An underlying read or write failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<Error> for std::io::Error {
    fn from(error: Error) -> Self {
        match error {
            Error::Io(io) => io,
            Error::OutOfRange(_) => std::io::Error::new(std::io::ErrorKind::InvalidInput, error),
            other => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
        }
    }
}
