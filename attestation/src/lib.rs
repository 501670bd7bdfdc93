//! SEV-SNP attestation for encfs.
//!
//! A clean room proves what it runs with an AMD SEV-SNP report: `hostdata` holds the SHA-256 of
//! its security policy and `report_data` binds a key the clean room holds. This crate has the
//! [`provider::AttestationProvider`] trait that the sidecars ask for reports, and its
//! implementations.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod provider;
