//! The clean room's loopback sidecars (plain HTTP, as the reference's inside the container
//! group): secure key release (`skr`) and secrets unwrap (`secrets`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]
