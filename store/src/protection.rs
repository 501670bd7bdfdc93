//! How blob contents are protected, and the metadata every blob encfs writes carries.
//!
//! Both the transfers and the mount write blobs, and both must agree on what a blob's metadata
//! says (its protection mode, plaintext size, source mtime and key id), so these live below both,
//! beside the store: the mount never imports the transfers.

use std::sync::Arc;

use encfs_crypto::DataKey;

use crate::{CustomerKey, Metadata};

/// Metadata name of the protection mode (`cse`, `cpk`, `sse`). Azure requires C#-identifier
/// names: no hyphens.
pub const META_MODE: &str = "encfs_mode";
/// Metadata name of the plaintext size in bytes.
pub const META_SIZE: &str = "encfs_source_size";
/// Metadata name of the source file's mtime (seconds since the epoch).
pub const META_MTIME: &str = "encfs_source_mtime";
/// Metadata name of the DEK's key id (`cse`).
pub const META_KEY_ID: &str = "encfs_key_id";

/// How blob contents are protected.
#[derive(Clone)]
pub enum Protection {
    /// Client-side encryption: EBF under the DEK; the store sees only ciphertext.
    Cse(Arc<DataKey>),
    /// Azure customer-provided key: plaintext sent with the key; the service encrypts.
    Cpk(CustomerKey),
    /// The store's default server-side encryption.
    Sse,
}

impl Protection {
    /// `cse`, `cpk` or `sse`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Cse(_) => "cse",
            Self::Cpk(_) => "cpk",
            Self::Sse => "sse",
        }
    }

    /// The customer-provided key sent with every request (`cpk`), if any.
    pub fn cpk(&self) -> Option<&CustomerKey> {
        match self {
            Self::Cpk(key) => Some(key),
            _ => None,
        }
    }
}

/// The metadata every blob encfs writes carries (uploads and the mount alike): mode, plaintext
/// size, source mtime (seconds), and the key's id for `cse` and `cpk` ([`key_id`]).
pub fn blob_metadata(protection: &Protection, size: u64, mtime: u64) -> Metadata {
    let mut metadata = Metadata::new();
    metadata.insert(META_MODE.into(), protection.name().into());
    metadata.insert(META_SIZE.into(), size.to_string());
    metadata.insert(META_MTIME.into(), mtime.to_string());
    if let Some(id) = key_id(protection) {
        metadata.insert(META_KEY_ID.into(), id);
    }
    metadata
}

/// What `encfs_key_id` records: the DEK's id for `cse`; for `cpk`, `sha256:` and the base64
/// SHA-256 of the customer key (the digest Azure itself keeps and returns with the blob, so it
/// tells nothing the service does not); nothing for `sse`.
pub fn key_id(protection: &Protection) -> Option<String> {
    match protection {
        Protection::Cse(key) => Some(key.id().to_string()),
        Protection::Cpk(key) => Some(format!("sha256:{}", key.sha256_base64())),
        Protection::Sse => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_names_the_mode_size_time_and_key() {
        let key = Arc::new(DataKey::generate().unwrap());
        let cse = blob_metadata(&Protection::Cse(key.clone()), 5, 7);
        assert_eq!(cse[META_MODE], "cse");
        assert_eq!(cse[META_SIZE], "5");
        assert_eq!(cse[META_MTIME], "7");
        assert_eq!(cse[META_KEY_ID], key.id().to_string());
        let sse = blob_metadata(&Protection::Sse, 5, 7);
        assert_eq!(sse[META_MODE], "sse");
        assert!(!sse.contains_key(META_KEY_ID));
    }
}
