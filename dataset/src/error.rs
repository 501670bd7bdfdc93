//! The one error type of the crate: every variant names the manifest part, blob or file at fault.

use encfs_store::StoreError;

/// Why a manifest could not be built, sealed, parsed, verified or checked against a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store refused or failed (the error names the blob).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blob under the prefix is not an EBF blob (or its length fits no EBF blob): manifests
    /// cover client-side encrypted (`cse`) datastores only.
    #[error("blob {blob}: {source} (dataset manifests cover cse datastores only)")]
    NotEbf {
        /// The blob.
        blob: String,
        /// What the format check said.
        source: encfs_crypto::Error,
    },
    /// The bytes are not a tagged COSE_Sign1 manifest message.
    #[error("manifest: not a COSE_Sign1 manifest: {0}")]
    Envelope(String),
    /// The payload is not a manifest in canonical form, or breaks a rule of the format.
    #[error("manifest payload: {0}")]
    Payload(String),
    /// The signature does not verify with the signer's certificate.
    #[error("manifest: the signature does not verify (edited, or signed by another key)")]
    BadSignature,
    /// The message is signed by another certificate than the trusted one.
    #[error("manifest: signed by {found}, not by the trusted signer {expected}")]
    UntrustedSigner {
        /// SHA-256 of the trusted certificate (`sha256:…`).
        expected: String,
        /// SHA-256 of the certificate in the message (`sha256:…`, or `none`).
        found: String,
    },
    /// The message's digest is not the pinned one.
    #[error("manifest: digest {found} is not the pinned {expected}")]
    DigestMismatch {
        /// The pinned digest.
        expected: String,
        /// The digest of the bytes given.
        found: String,
    },
    /// A certificate does not parse or holds a key of no supported algorithm.
    #[error("certificate: {0}")]
    Certificate(String),
    /// A private key file does not parse or is not the certificate's key.
    #[error("signing key: {0}")]
    Key(String),
    /// Signing failed.
    #[error("signing the manifest: {0}")]
    Signing(String),
}
