//! Blob stores and the data plane around them.
//!
//! [`store`] defines the one async [`store::BlobStore`] trait with its backends (the embedded
//! local store, Azure Blob Storage over REST) and the fault- and latency-injecting wrappers used by
//! tests and benchmarks. The FUSE mount and block cache will live beside it in this crate.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod store;
pub mod transfer;
