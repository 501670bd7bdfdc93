//! Blob stores and the data plane around them.
//!
//! [`store`] defines the one async [`store::BlobStore`] trait with its backends (the embedded
//! local store, Azure Blob Storage over REST) and the fault- and latency-injecting wrappers used by
//! tests and benchmarks. [`transfer`] moves files in and out; [`mount`] serves a store prefix as a
//! FUSE filesystem with a streaming, memory-bounded block cache.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod attributes;
pub mod mount;
pub mod store;
pub mod transfer;
