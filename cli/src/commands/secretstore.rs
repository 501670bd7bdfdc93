//! `encfs secretstore …`: named secret stores in a YAML config (like datastores), and the
//! backends behind them: a local directory (files mode 0600) or a key vault reached over HTTPS
//! with a credential file, where KEKs live behind release policies and wrapped DEKs as secrets.

use std::fs;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use encfs_crypto::kek::{KekPrivateKey, KekPublicKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::keyrelease_args::{BackingStoreType, SecretstoreCommand};

/// One secret store entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecretStore {
    /// Name used by specs and `--secret-store`.
    pub name: String,
    /// The kind of store.
    pub backing_store_type: BackingStoreType,
    /// A directory (local) or the vault URL.
    pub backing_store_id: String,
    /// The attestation authority release policies name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation_endpoint: Option<String>,
    /// The vault credential file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<PathBuf>,
    /// An extra CA (PEM) for the vault's TLS certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

impl SecretStore {
    /// Whether the store can hold a key behind a release policy.
    pub fn supports_key_release(&self) -> bool {
        self.backing_store_type == BackingStoreType::AzureKeyvaultPremium
    }

    /// Whether the store is a vault (reachable by a clean room).
    pub fn is_vault(&self) -> bool {
        self.backing_store_type != BackingStoreType::Local
    }

    /// The vault URL without a trailing slash.
    pub fn url(&self) -> &str {
        self.backing_store_id.trim_end_matches('/')
    }

    /// The attestation endpoint, required of a KEK store.
    pub fn authority(&self) -> Result<String> {
        self.attestation_endpoint
            .as_deref()
            .map(|a| a.trim_end_matches('/').to_owned())
            .with_context(|| {
                format!(
                    "secret store '{}' has no --attestation-endpoint; a KEK's release policy needs one",
                    self.name
                )
            })
    }

    /// The entry as JSON (paths, never key material).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("serialisable")
    }
}

/// The config file.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Config {
    /// All secret stores.
    #[serde(default)]
    pub secretstores: Vec<SecretStore>,
}

impl Config {
    /// The store named `name`.
    pub fn find(&self, name: &str, path: &Path) -> Result<&SecretStore> {
        self.secretstores
            .iter()
            .find(|s| s.name == name)
            .with_context(|| {
                format!(
                    "no secret store named '{name}' in {} (add it with: encfs secretstore add --name {name} …)",
                    path.display()
                )
            })
    }
}

/// The config path: the flag, else `$ENCFS_SECRETSTORE_CONFIG`, else
/// `~/.config/encfs/secretstores.yaml`.
pub fn config_path(flag: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = flag {
        return Ok(path.to_owned());
    }
    if let Some(path) = std::env::var_os("ENCFS_SECRETSTORE_CONFIG") {
        return Ok(PathBuf::from(path));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; pass --secretstore-config")?;
    Ok(PathBuf::from(home).join(".config/encfs/secretstores.yaml"))
}

/// Loads the config (an absent file is an empty config).
pub fn load(path: &Path) -> Result<Config> {
    match fs::read_to_string(path) {
        Ok(text) => serde_yaml::from_str(&text)
            .with_context(|| format!("malformed secret store config {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn save(path: &Path, config: &Config) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let text = serde_yaml::to_string(config).expect("serialisable");
    let mut out = crate::output::AtomicOutput::create(path)?;
    out.file()
        .write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    out.commit(true)
}

fn absolute_file(path: &Path, what: &str) -> Result<PathBuf> {
    fs::canonicalize(path).with_context(|| format!("cannot find the {what} {}", path.display()))
}

/// Key Vault's object names: 1–127 letters, digits and dashes.
pub fn check_object_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 127
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        bail!("'{name}' is not a valid key or secret name (1-127 letters, digits and '-')");
    }
    Ok(())
}

/// Runs one `encfs secretstore …` command.
pub fn run(command: SecretstoreCommand) -> Result<()> {
    match command {
        SecretstoreCommand::Add {
            name,
            backing_store_type,
            backing_store_id,
            attestation_endpoint,
            credential,
            ca,
            config,
        } => {
            let path = config_path(config.config.as_deref())?;
            let mut current = load(&path)?;
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                bail!("secret store names use letters, digits, '-' and '_' only");
            }
            let backing_store_id = match backing_store_type {
                BackingStoreType::Local => {
                    let dir = PathBuf::from(&backing_store_id);
                    fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(&dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                    absolute_file(&dir, "directory")?.display().to_string()
                }
                _ => {
                    if !backing_store_id.starts_with("https://") {
                        bail!(
                            "--backing-store-id of a key vault must be an https:// URL, not '{backing_store_id}'"
                        );
                    }
                    backing_store_id.trim_end_matches('/').to_owned()
                }
            };
            if let Some(endpoint) = &attestation_endpoint
                && !endpoint.starts_with("https://")
            {
                bail!("--attestation-endpoint must be an https:// URL, not '{endpoint}'");
            }
            let store = SecretStore {
                name: name.clone(),
                backing_store_type,
                backing_store_id,
                attestation_endpoint: attestation_endpoint
                    .map(|e| e.trim_end_matches('/').to_owned()),
                credential: credential
                    .map(|c| absolute_file(&c, "credential file"))
                    .transpose()?,
                ca: ca.map(|c| absolute_file(&c, "CA file")).transpose()?,
            };
            current.secretstores.retain(|s| s.name != name);
            current.secretstores.push(store.clone());
            save(&path, &current)?;
            println!(
                "secret store {name}: {} ({})",
                store.backing_store_id,
                serde_json::to_value(backing_store_type)?
                    .as_str()
                    .unwrap_or_default()
            );
        }
        SecretstoreCommand::Show {
            name,
            config,
            output,
        } => {
            let path = config_path(config.config.as_deref())?;
            let current = load(&path)?;
            let store = current.find(&name, &path)?;
            let value = store.to_json();
            match output.structured() {
                Some(format) => output.print(&value, format)?,
                None => println!("{}", serde_yaml::to_string(&value)?.trim_end()),
            }
        }
        SecretstoreCommand::List { config, output } => {
            let path = config_path(config.config.as_deref())?;
            let current = load(&path)?;
            match output.structured() {
                Some(format) => output.print(
                    &Value::Array(
                        current
                            .secretstores
                            .iter()
                            .map(SecretStore::to_json)
                            .collect(),
                    ),
                    format,
                )?,
                None => {
                    for store in &current.secretstores {
                        println!(
                            "{}\t{}\t{}",
                            store.name,
                            store.to_json()["backing_store_type"]
                                .as_str()
                                .unwrap_or_default(),
                            store.backing_store_id
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

/// A KEK as a store holds it: its id, public key and release policy.
pub struct StoredKek {
    /// The key id (URL with version for a vault).
    pub kid: String,
    /// The public key.
    pub public: KekPublicKey,
    /// The release policy (JSON), if any.
    pub release_policy: Option<Value>,
}

/// A secret store opened for use.
pub enum Backend {
    /// A directory of secret files.
    Local(PathBuf),
    /// A key vault.
    Vault(Box<super::vault_backend::VaultBackend>),
}

impl Backend {
    /// Opens `store`.
    pub fn open(store: &SecretStore) -> Result<Self> {
        Ok(match store.backing_store_type {
            BackingStoreType::Local => Backend::Local(PathBuf::from(&store.backing_store_id)),
            _ => Backend::Vault(Box::new(super::vault_backend::VaultBackend::open(store)?)),
        })
    }

    /// The KEK named `name`, if it exists.
    pub async fn get_kek(&self, name: &str) -> Result<Option<StoredKek>> {
        match self {
            Backend::Local(dir) => bail!(
                "the local secret store {} cannot hold a KEK behind a release policy",
                dir.display()
            ),
            Backend::Vault(vault) => vault.get_kek(name).await,
        }
    }

    /// Imports `kek` as `name` (a new version if the name exists), exportable, with `policy`.
    pub async fn import_kek(
        &self,
        name: &str,
        kek: &KekPrivateKey,
        policy: &Value,
    ) -> Result<String> {
        match self {
            Backend::Local(dir) => bail!(
                "the local secret store {} cannot hold a KEK behind a release policy",
                dir.display()
            ),
            Backend::Vault(vault) => vault.import_kek(name, kek, policy).await,
        }
    }

    /// The current value of secret `name`, if it exists.
    pub async fn get_secret(&self, name: &str) -> Result<Option<String>> {
        check_object_name(name)?;
        match self {
            Backend::Local(dir) => {
                let path = dir.join(name);
                match fs::read_to_string(&path) {
                    Ok(text) => Ok(Some(text)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
                }
            }
            Backend::Vault(vault) => vault.get_secret(name).await,
        }
    }

    /// Sets secret `name` to `value` (a new version if it exists); returns its id.
    pub async fn set_secret(&self, name: &str, value: &str) -> Result<String> {
        check_object_name(name)?;
        match self {
            Backend::Local(dir) => {
                let path = dir.join(name);
                let mut temp = tempfile::Builder::new()
                    .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
                    .tempfile_in(dir)
                    .with_context(|| format!("cannot write in {}", dir.display()))?;
                temp.write_all(value.as_bytes())
                    .and_then(|()| temp.as_file().sync_all())
                    .with_context(|| format!("cannot write {}", path.display()))?;
                temp.persist(&path)
                    .map_err(|e| e.error)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                Ok(path.display().to_string())
            }
            Backend::Vault(vault) => vault.set_secret(name, value).await,
        }
    }
}
