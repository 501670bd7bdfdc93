//! encfs governance: the consortium service's building blocks (member identities, COSE-signed
//! governance messages, the constitution, the clean-room contract app and the ledger).
pub mod app;
pub mod constitution;
pub mod error;
pub mod gov_api;
pub mod kv;
