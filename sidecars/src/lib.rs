//! The clean room's loopback sidecars (plain HTTP, as the reference's inside the container
//! group): secure key release ([`skr`]), secrets unwrap ([`secrets`]) and the clean room's
//! attested door to governance ([`governance`], ccr-governance).
//!
//! The sidecars talk to the attestation service, Key Vault and the identity endpoint over the
//! wire, as they would in separate containers; [`skr::TokenAttester`] is the one seam where the
//! attestation client is plugged in (the MAA client of `encfs-attestation`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod endpoint;
pub mod governance;
pub mod jwk;
pub mod release;
pub mod secrets;
pub mod server;
pub mod skr;
pub mod upstream;

#[cfg(test)]
mod testing;
