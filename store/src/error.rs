//! Store errors: one enum for every backend, each variant naming the blob or URL concerned.

/// Result alias for store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// What can go wrong talking to a blob store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The blob does not exist.
    #[error("blob not found: {0}")]
    BlobNotFound(String),
    /// The container does not exist.
    #[error("container not found: {0}")]
    ContainerNotFound(String),
    /// An `If-Match` / `If-None-Match` condition did not hold (HTTP 412 or 409).
    #[error("condition not met for {0}: the blob changed or already exists")]
    ConditionNotMet(String),
    /// The blob is protected by a customer-provided key and none was given (HTTP 409).
    #[error(
        "{0} is encrypted with a customer-provided key; supply it (--mode cpk with the right key)"
    )]
    CustomerKeyRequired(String),
    /// The customer-provided key given is not the blob's (HTTP 409).
    #[error("{0}: the customer-provided key does not match the key the blob was written with")]
    CustomerKeyMismatch(String),
    /// A customer-provided key was given for a blob that has none (HTTP 409).
    #[error("{0} is not encrypted with a customer-provided key, but one was given")]
    CustomerKeyUnexpected(String),
    /// Credentials missing or refused (HTTP 401/403).
    #[error("access denied to {url}: {message}")]
    Auth {
        /// The request URL (without any SAS token).
        url: String,
        /// What the service said.
        message: String,
    },
    /// A block list named a block that was never staged.
    #[error("{0}: commit names a block that was not staged")]
    InvalidBlockList(String),
    /// Any other HTTP failure that retries did not cure.
    #[error("{method} {url} failed: HTTP {status} {code}")]
    Http {
        /// Request method.
        method: String,
        /// The request URL (without any SAS token).
        url: String,
        /// HTTP status.
        status: u16,
        /// The service's error code (`x-ms-error-code`), if any.
        code: String,
        /// How long the service asked to wait before a retry (`Retry-After`), if it said.
        retry_after: Option<std::time::Duration>,
    },
    /// The service could not be reached (after retries).
    #[error("cannot reach {url}: {message}")]
    Network {
        /// The request URL (without any SAS token).
        url: String,
        /// The transport error.
        message: String,
    },
    /// A store address or configuration that cannot be used.
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// Data on disk (embedded store) that does not parse.
    #[error("corrupt store data in {path}: {message}")]
    Corrupt {
        /// File concerned.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A local I/O error.
    #[error("{path}: {source}")]
    Io {
        /// File concerned.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The blob is no longer the version being read (a ranged read pinned to an etag, after an
    /// overwrite): reading on would mix two versions.
    #[error("blob {0} changed while it was being read (it was overwritten); open it again")]
    Changed(String),
    /// A call did not finish within its deadline ([`super::RetryPolicy::deadline`]), retries
    /// included.
    #[error("{what}: no answer from the store within {after:?} (--request-timeout)")]
    Timeout {
        /// The blob (or container call) concerned.
        what: String,
        /// The deadline.
        after: std::time::Duration,
    },
    /// Injected by the fault wrapper (tests and benchmarks only).
    #[error("injected fault on {0}")]
    Injected(String),
}

impl StoreError {
    /// Whether retrying the same request may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Network { .. } | Self::Injected(_) => true,
            Self::Http { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            _ => false,
        }
    }

    /// How long the service asked to wait before retrying, when it said (`Retry-After`).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}
