//! encfs governance: the consortium service's building blocks (member identities, COSE-signed
//! governance messages, the constitution, the clean-room contract app and the ledger).
#![forbid(unsafe_code)]
pub mod app;
pub mod attestation;
pub mod client;
pub mod constitution;
pub mod cose;
pub mod error;
pub mod gov_api;
pub mod identity;
pub mod kv;
pub mod ledger;
pub mod ledger_secret;
pub mod merkle;
pub mod receipt;
pub mod server;
pub mod service;
pub mod transport;
