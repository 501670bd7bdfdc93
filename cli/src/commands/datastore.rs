//! `encfs datastore …`: named datastores in a YAML config, like the reference system's
//! `az cleanroom datastore add`. Each records a store address, a protection mode and the path of
//! its DEK, which `add` generates into a `keys/` directory beside the config (mode 0600).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use encfs_crypto::{DataKey, key_file};
use serde::{Deserialize, Serialize};

use crate::args::{DatastoreCommand, Mode, StoreAccess};

/// One datastore entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Datastore {
    /// Name used with `--datastore`.
    pub name: String,
    /// Store address.
    pub store: String,
    /// Protection mode.
    pub mode: Mode,
    /// The DEK (cse) or customer key (cpk). Empty where the DEK comes from a key release.
    #[serde(default)]
    pub key: PathBuf,
    /// Where a clean room gets the DEK: the wrapped DEK secret and its KEK (`config wrap-deks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_release: Option<super::key_release::KeyRelease>,
    /// Blob names encrypted under a key derived from the DEK (cse only; `--encrypt-names`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypt_names: bool,
}

/// The config file.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Config {
    /// All datastores.
    #[serde(default)]
    pub datastores: Vec<Datastore>,
}

/// The config path: the flag, else `$ENCFS_CONFIG`, else `~/.config/encfs/datastores.yaml`.
pub fn config_path(flag: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = flag {
        return Ok(path.to_owned());
    }
    if let Some(path) = std::env::var_os("ENCFS_CONFIG") {
        return Ok(PathBuf::from(path));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; pass --config")?;
    Ok(PathBuf::from(home).join(".config/encfs/datastores.yaml"))
}

/// Loads the config (an absent file is an empty config).
pub fn load(path: &Path) -> Result<Config> {
    match fs::read_to_string(path) {
        Ok(text) => serde_yaml::from_str(&text)
            .with_context(|| format!("malformed datastore config {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Finds a datastore by name.
pub fn find(config_flag: Option<&Path>, name: &str) -> Result<Datastore> {
    let path = config_path(config_flag)?;
    let config = load(&path)?;
    config
        .datastores
        .into_iter()
        .find(|d| d.name == name)
        .with_context(|| format!("no datastore named '{name}' in {}", path.display()))
}

pub(super) fn save(path: &Path, config: &Config) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let text = serde_yaml::to_string(config).expect("serializable");
    let temp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    fs::write(temp.path(), text).with_context(|| format!("cannot write {}", path.display()))?;
    temp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// What [`add`] did.
pub(super) struct Added {
    /// The new entry (already saved).
    pub datastore: Datastore,
    /// The store's location, redacted.
    pub location: String,
    /// Whether the container was created (false: it existed).
    pub created: bool,
    /// The new DEK's id.
    pub key_id: String,
}

/// `datastore add`: creates the container at `store` and a new DEK file (mode 0600) in
/// `key_dir` (default: `keys/` beside the config), and records the datastore in the config at
/// `path`. An existing name is refused. With `encrypt_names` (cse only) the container gets the
/// marker of encrypted names, and one that already holds plain-named blobs is refused.
pub(super) async fn add(
    path: &Path,
    name: &str,
    store: &str,
    mode: Mode,
    access: &StoreAccess,
    key_dir: Option<&Path>,
    encrypt_names: bool,
) -> Result<Added> {
    let mut current = load(path)?;
    if current.datastores.iter().any(|d| d.name == name) {
        bail!("datastore '{name}' already exists in {}", path.display());
    }
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("datastore names use letters, digits, '-' and '_' only");
    }
    if encrypt_names && mode != Mode::Cse {
        bail!("--encrypt-names needs --mode cse: the name key is derived from the DEK");
    }
    let location = super::transfer::open(store, access)?;
    let created = location.store.create_container().await.with_context(|| {
        format!(
            "cannot create the container at {}",
            location.store.location()
        )
    })?;
    let keys = match key_dir {
        Some(dir) => dir.to_owned(),
        None => path.parent().unwrap_or(Path::new(".")).join("keys"),
    };
    fs::create_dir_all(&keys).with_context(|| format!("cannot create {}", keys.display()))?;
    let key_path = std::path::absolute(keys.join(format!("{name}.key")))?;
    let key = DataKey::generate()?;
    if encrypt_names {
        let names = encfs_crypto::names::NameKey::derive(&key);
        encfs_store::names::check_marker(location.store.as_ref(), &names, true)
            .await
            .with_context(|| format!("cannot add datastore '{name}'"))?;
    }
    key_file::write(&key_path, &key)
        .with_context(|| format!("cannot write key {}", key_path.display()))?;
    let datastore = Datastore {
        name: name.to_owned(),
        store: store.to_owned(),
        mode,
        key: key_path,
        key_release: None,
        encrypt_names,
    };
    current.datastores.push(datastore.clone());
    save(path, &current)?;
    Ok(Added {
        datastore,
        location: location.store.location().to_string(),
        created,
        key_id: key.id().to_string(),
    })
}

pub async fn run(command: DatastoreCommand, access: &StoreAccess) -> Result<()> {
    match command {
        DatastoreCommand::Add {
            name,
            store,
            mode,
            config,
            encrypt_names,
        } => {
            let path = config_path(config.as_deref())?;
            let added = add(&path, &name, &store, mode, access, None, encrypt_names).await?;
            println!(
                "datastore {name}: {} ({}), key {} (id {})",
                added.location,
                if added.created {
                    "container created"
                } else {
                    "container existed"
                },
                added.datastore.key.display(),
                added.key_id
            );
        }
        DatastoreCommand::List { config } => {
            for datastore in load(&config_path(config.as_deref())?)?.datastores {
                println!(
                    "{}\t{:?}{}\t{}\t{}",
                    datastore.name,
                    datastore.mode,
                    if datastore.encrypt_names {
                        "+names"
                    } else {
                        ""
                    },
                    encfs_store::redact::redact(&datastore.store),
                    datastore.key.display()
                );
            }
        }
    }
    Ok(())
}
