//! A local Azure Key Vault for encfs: the REST subset the secure key release flow uses.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
