//! A local Azure Key Vault for encfs: the REST subset the secure key release flow uses.
//!
//! - [`identity`]: credentials, bearer tokens (minting, verification) and the managed-identity
//!   token endpoint;
//! - [`client`]: the Rust Key Vault client (import, get, release, secrets) with Key Vault's
//!   challenge flow;
//! - [`policy`]: the secure key release policy grammar and its evaluation;
//! - [`attestation_token`]: verification of a release's attestation token;
//! - [`release`]: the release JWS and `key_hsm`;
//! - [`server`]: the HTTPS service; [`store`]: its keys and secrets; [`vault_dir`]: its data
//!   directory and certificate authority.
//!
//! The local vault's data directory holds keys in clear at rest, protected only by file mode
//! 0600; Azure Key Vault Premium / Managed HSM would keep them in an HSM.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod attestation_token;
pub mod client;
pub mod durable_file;
pub mod identity;
pub mod model;
pub mod policy;
pub mod release;
pub mod rsa_jwk;
pub mod server;
pub mod store;
pub mod vault_dir;
