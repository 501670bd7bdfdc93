//! The one error type of the mount: every [`EncFs`](super::EncFs) operation fails with a
//! [`FsError`], which carries the errno the application gets and, where there is one, its cause
//! (a [`StoreError`] naming the blob, a blob that does not open, or a message).
//!
//! Two decisions live here and nowhere else, as in mountpoint-s3's `fs/error.rs`:
//!
//! * [`errno_of`]: which errno each [`StoreError`] reaches the application as;
//! * [`FsError::is_logged`]: which errors leave a line in the log (stderr, `encfs: ...`). A plain
//!   errno (`EROFS`, `EEXIST`, ...) is the answer itself and is not logged; a store error is,
//!   unless it is `ENOENT` (a name probed and not found is no event); an error with a message of
//!   its own (`EIO` with why, `EFBIG`, a commit that failed) always is.
//!
//! An error is logged when it is made, not when it is replied: a failure the caller then drops
//! (re-opening the version just committed, say) still leaves its line. Store errors are already
//! redacted (they name blobs and URLs, never keys or signatures), so logging them is safe.
//!
//! The FUSE adapter turns an error into its errno at the boundary ([`FsError::errno`]).

use super::source::SourceError;
use crate::store::StoreError;

/// Why a filesystem operation failed: the errno for the application, and the cause.
pub struct FsError {
    errno: i32,
    /// Boxed: the read path returns `Result<Vec<u8>, FsError>` on every request, and the
    /// common errors (a plain errno) carry no cause.
    cause: Option<Box<Cause>>,
}

/// What made a [`FsError`].
#[derive(Debug, thiserror::Error)]
enum Cause {
    /// The store refused or failed.
    #[error(transparent)]
    Store(StoreError),
    /// A blob does not open or verify (wrong key, not EBF, tampered, short).
    #[error(transparent)]
    Unreadable(SourceError),
    /// Anything else, said in words (what the log shows after `encfs: `).
    #[error("{0}")]
    Message(String),
}

/// An `Err`-ready [`FsError`] with a plain errno and no cause (not logged):
/// `errno!(ENOENT)` is `FsError::from_errno(libc::ENOENT)`.
macro_rules! errno {
    ($name:ident) => {
        $crate::mount::error::FsError::from_errno(libc::$name)
    };
}
pub(crate) use errno;

impl FsError {
    /// A plain errno, the whole answer (`ENOENT` from a lookup, `EROFS` on a read-only mount):
    /// not logged.
    pub const fn from_errno(errno: i32) -> Self {
        Self { errno, cause: None }
    }

    /// A store error, as [`errno_of`] maps it; logged unless `ENOENT`.
    pub fn store(error: StoreError) -> Self {
        Self::made(errno_of(&error), Cause::Store(error))
    }

    /// `EIO` with the reason (logged).
    pub fn io(message: impl Into<String>) -> Self {
        Self::with_message(libc::EIO, message)
    }

    /// `errno` with the reason (logged).
    pub fn with_message(errno: i32, message: impl Into<String>) -> Self {
        Self::made(errno, Cause::Message(message.into()))
    }

    fn made(errno: i32, cause: Cause) -> Self {
        let error = Self {
            errno,
            cause: Some(Box::new(cause)),
        };
        if error.is_logged() {
            eprintln!("encfs: {error}");
        }
        error
    }

    /// The errno the application gets.
    pub fn errno(&self) -> i32 {
        self.errno
    }

    /// Whether this error is worth a line in the log (see the module's comment): the one place
    /// that decides.
    pub fn is_logged(&self) -> bool {
        match self.cause.as_deref() {
            None => false,
            Some(Cause::Store(_)) => self.errno != libc::ENOENT,
            Some(Cause::Unreadable(_) | Cause::Message(_)) => true,
        }
    }

    /// The store error behind this one, if any.
    pub fn store_error(&self) -> Option<&StoreError> {
        match self.cause.as_deref() {
            Some(Cause::Store(error)) => Some(error),
            _ => None,
        }
    }
}

impl From<StoreError> for FsError {
    fn from(error: StoreError) -> Self {
        Self::store(error)
    }
}

/// A blob that cannot be served: its store error's errno, or `EIO` when it does not open or
/// verify (logged either way, as the store error rule says).
impl From<SourceError> for FsError {
    fn from(error: SourceError) -> Self {
        match error {
            SourceError::Store(error) => Self::store(error),
            other => Self::made(libc::EIO, Cause::Unreadable(other)),
        }
    }
}

/// The errno a store error reaches the application as: the one mapping.
pub fn errno_of(error: &StoreError) -> i32 {
    match error {
        StoreError::BlobNotFound(_) => libc::ENOENT,
        StoreError::NameTooLong(_) => libc::ENAMETOOLONG,
        StoreError::ConditionNotMet(_) => libc::EEXIST,
        StoreError::Auth { .. }
        | StoreError::CustomerKeyMismatch(_)
        | StoreError::CustomerKeyRequired(_)
        | StoreError::CustomerKeyUnexpected(_) => libc::EACCES,
        // Out of local space (or quota) is the writer's ENOSPC, not a generic I/O error.
        StoreError::Io { source, .. }
            if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) =>
        {
            libc::ENOSPC
        }
        StoreError::Io { source, .. } if source.raw_os_error() == Some(libc::EFBIG) => libc::EFBIG,
        _ => libc::EIO,
    }
}

impl std::fmt::Display for FsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.cause.as_deref() {
            Some(cause) => cause.fmt(f),
            None => std::io::Error::from_raw_os_error(self.errno).fmt(f),
        }
    }
}

impl std::fmt::Debug for FsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsError")
            .field("errno", &self.errno)
            .field("cause", &self.cause)
            .finish()
    }
}

impl std::error::Error for FsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self.cause.as_deref() {
            Some(Cause::Store(error)) => Some(error),
            Some(Cause::Unreadable(error)) => Some(error),
            Some(Cause::Message(_)) | None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_their_errno() {
        let io = |code| StoreError::Io {
            path: "a".into(),
            source: std::io::Error::from_raw_os_error(code),
        };
        assert_eq!(
            FsError::from(StoreError::BlobNotFound("a".into())).errno(),
            libc::ENOENT
        );
        assert_eq!(
            FsError::from(StoreError::NameTooLong("a".into())).errno(),
            libc::ENAMETOOLONG
        );
        assert_eq!(
            FsError::from(StoreError::ConditionNotMet("a".into())).errno(),
            libc::EEXIST
        );
        assert_eq!(FsError::from(io(libc::ENOSPC)).errno(), libc::ENOSPC);
        assert_eq!(FsError::from(io(libc::EDQUOT)).errno(), libc::ENOSPC);
        assert_eq!(FsError::from(io(libc::EFBIG)).errno(), libc::EFBIG);
        assert_eq!(FsError::from(io(libc::EPIPE)).errno(), libc::EIO);
    }

    #[test]
    fn only_errors_with_a_cause_are_logged_and_a_missing_blob_is_not() {
        assert!(!errno!(EROFS).is_logged());
        assert!(!FsError::from(StoreError::BlobNotFound("a".into())).is_logged());
        assert!(FsError::from(StoreError::ConditionNotMet("a".into())).is_logged());
        assert!(FsError::io("segment 3 short").is_logged());
        // A message of its own is always logged, whatever the errno.
        assert!(FsError::with_message(libc::ENOENT, "a: gone while committing").is_logged());
    }

    #[test]
    fn the_cause_is_kept_and_shown() {
        let error = FsError::from(StoreError::BlobNotFound("dir/a.csv".into()));
        assert_eq!(error.to_string(), "blob not found: dir/a.csv");
        assert!(std::error::Error::source(&error).is_some());
        assert!(matches!(
            error.store_error(),
            Some(StoreError::BlobNotFound(_))
        ));
        assert_eq!(
            errno!(ENOENT).to_string(),
            std::io::Error::from_raw_os_error(libc::ENOENT).to_string()
        );
    }
}
