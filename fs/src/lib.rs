//! The FUSE mount: [`mount`] serves a blob-store prefix as a filesystem with a streaming,
//! memory-bounded segment cache, adaptive prefetch and an atomic write path.
//!
//! The stores themselves (the [`store::BlobStore`] trait, its backends and wrappers, protection
//! modes and blob metadata) are the `encfs-store` crate, re-exported here as [`store`] for the
//! mount's callers; uploads and downloads are `encfs-transfer`, which the mount does not use.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod mount;
pub use encfs_store as store;
