//! A secret store backed by a key vault (stub until the vault client is merged).

use anyhow::{Result, bail};
use encfs_crypto::kek::KekPrivateKey;
use serde_json::Value;

use super::secretstore::{SecretStore, StoredKek};

/// A key vault reached with a credential.
pub struct VaultBackend;

impl VaultBackend {
    /// Opens the vault of `store`.
    pub fn open(_store: &SecretStore) -> Result<Self> {
        bail!("no vault client yet")
    }
    /// The KEK `name`.
    pub async fn get_kek(&self, _name: &str) -> Result<Option<StoredKek>> {
        bail!("no vault client yet")
    }
    /// Imports a KEK.
    pub async fn import_kek(&self, _name: &str, _kek: &KekPrivateKey, _policy: &Value) -> Result<String> {
        bail!("no vault client yet")
    }
    /// A secret.
    pub async fn get_secret(&self, _name: &str) -> Result<Option<String>> {
        bail!("no vault client yet")
    }
    /// Sets a secret.
    pub async fn set_secret(&self, _name: &str, _value: &str) -> Result<String> {
        bail!("no vault client yet")
    }
}
