//! Keys, key wrapping and the EBF v1 encrypted blob format: the cryptographic base of encfs.
//!
//! Everything here is pure computation over byte slices except the small [`key_file`] module,
//! which reads and writes key files with safe permissions. The AEAD, HKDF, HMAC and RSA-OAEP
//! primitives come from `aws-lc-rs` (chosen over `ring` by measurement, see
//! `docs/benchmarks.md`); AES key wrap with padding comes from RustCrypto's `aes-kw`.
//!
//! * [`DataKey`] — a 256-bit data encryption key (DEK) and its [`KeyId`].
//! * [`kek`] — RSA key-encryption keys and OAEP-SHA-256 DEK wrapping.
//! * [`aes_key_wrap`] — RFC 5649 AES key wrap with padding.
//! * [`format`](mod@format) — the segmented, authenticated, random-access blob format (see `docs/format.md`).
//! * [`legacy_cse`] — reader for the reference system's client-side encryption format.
//! * [`names`] — deterministic encryption of blob-name components (AES-256-GCM-SIV, per directory).
//! * [`rsa_aes_wrap`] — RSA-OAEP ‖ AES-KWP hybrid wrapping (Key Vault key release, CCF secrets).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod aes_key_wrap;
mod error;
pub mod format;
pub mod kek;
pub mod key_file;
mod keys;
pub mod legacy_cse;
pub mod names;
pub mod rsa_aes_wrap;

pub use error::{Error, Result};
pub use keys::{CustomerKeyBytes, DataKey, KEY_ID_LEN, KeyId};

/// Small entry points for the fuzz targets in `fuzz/`; not a stable API.
#[doc(hidden)]
pub mod fuzz_hooks;
