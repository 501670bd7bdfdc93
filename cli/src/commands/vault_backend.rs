//! A secret store backed by a key vault (`encfs_keyvault::client::KeyVaultClient`): the local
//! vault of `encfs keyvault serve` or a real one, reached over HTTPS with the store's credential
//! file (contract 2) and its extra CA.

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use encfs_crypto::kek::KekPrivateKey;
use encfs_keyvault::client::{ClientError, KeyVaultClient};
use encfs_keyvault::identity::Credential;
use encfs_keyvault::rsa_jwk::public_key_from_jwk;
use serde_json::Value;

use super::secretstore::{SecretStore, StoredKek};

/// A key vault reached with a credential.
pub struct VaultBackend {
    client: KeyVaultClient,
}

/// Whether a vault error is "no such key / secret".
fn not_found(error: &ClientError) -> bool {
    matches!(error, ClientError::Vault { status: 404, .. })
}

impl VaultBackend {
    /// Opens the vault of `store`.
    pub fn open(store: &SecretStore) -> Result<Self> {
        let credential_path = store.credential.as_deref().with_context(|| {
            format!(
                "secret store '{}' has no --credential file to reach {}",
                store.name,
                store.url()
            )
        })?;
        let credential = Credential::load(credential_path)
            .with_context(|| format!("cannot load the credential {}", credential_path.display()))?;
        let mut cas = Vec::new();
        if let Some(ca) = &store.ca {
            cas.push(
                std::fs::read(ca)
                    .with_context(|| format!("cannot read the CA {}", ca.display()))?,
            );
        }
        let client = KeyVaultClient::new(store.url(), cas, credential)
            .with_context(|| format!("secret store '{}' ({})", store.name, store.url()))?;
        Ok(Self { client })
    }

    /// The KEK `name` with its release policy, if it exists.
    pub async fn get_kek(&self, name: &str) -> Result<Option<StoredKek>> {
        let bundle = match self.client.get_key(name, None).await {
            Ok(bundle) => bundle,
            Err(error) if not_found(&error) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let public = public_key_from_jwk(&bundle.key)
            .with_context(|| format!("key '{name}' is not an RSA key"))?;
        let release_policy =
            match bundle.release_policy.as_ref().and_then(|p| p.data.as_ref()) {
                Some(data) => {
                    let bytes = URL_SAFE_NO_PAD
                        .decode(data.trim_end_matches('='))
                        .or_else(|_| URL_SAFE.decode(data))
                        .with_context(|| {
                            format!("the release policy of key '{name}' is not base64url")
                        })?;
                    Some(serde_json::from_slice::<Value>(&bytes).with_context(|| {
                        format!("the release policy of key '{name}' is not JSON")
                    })?)
                }
                None => None,
            };
        Ok(Some(StoredKek {
            kid: bundle.key.kid.clone().unwrap_or_else(|| name.to_owned()),
            public,
            release_policy,
        }))
    }

    /// Imports `kek` as `name`, exportable, behind `policy`; returns its kid.
    pub async fn import_kek(
        &self,
        name: &str,
        kek: &KekPrivateKey,
        policy: &Value,
    ) -> Result<String> {
        let bundle = self.client.import_key(name, kek, policy, true).await?;
        Ok(bundle.key.kid.clone().unwrap_or_else(|| name.to_owned()))
    }

    /// The value of secret `name`, if it exists.
    pub async fn get_secret(&self, name: &str) -> Result<Option<String>> {
        match self.client.get_secret(name, None).await {
            Ok(bundle) => Ok(bundle.value.clone()),
            Err(error) if not_found(&error) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Sets secret `name`; returns its id.
    pub async fn set_secret(&self, name: &str, value: &str) -> Result<String> {
        Ok(self.client.set_secret(name, value).await?.id.clone())
    }
}
