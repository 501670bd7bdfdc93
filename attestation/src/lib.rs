//! SEV-SNP attestation for encfs.
//!
//! A clean room proves what it runs with an AMD SEV-SNP report: `hostdata` holds the SHA-256 of
//! its security policy and `report_data` binds a key the clean room holds. This crate has the
//! report format ([`snp`]), its verification up to trusted roots ([`verify`]), the
//! [`provider::AttestationProvider`] trait that the sidecars ask for reports and its
//! implementations ([`virtual_provider`], [`azure`]), the client of Microsoft Azure Attestation's
//! `attest/SevSnpVm` and the check of its tokens ([`maa`]), and an **insecure virtual attestation
//! authority** ([`authority`], served over HTTPS by [`service`]) that stands in for the hardware
//! and for MAA on a machine without SEV-SNP: it proves the flow, not the hardware.
//!
//! `unsafe` is denied everywhere except in [`azure`], whose one ioctl needs it.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod authority;
pub mod azure;
pub mod maa;
pub mod provider;
pub mod service;
pub mod snp;
pub mod verify;
pub mod virtual_provider;
