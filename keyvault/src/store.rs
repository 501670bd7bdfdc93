//! The vault's persistent keys and secrets, one JSON file per name under `DIR/keys/` and
//! `DIR/secrets/` (mode 0600, written atomically), each holding every version in creation order.
//!
//! Key material is kept as PKCS#8 DER (base64) in clear: the file mode is its only protection at
//! rest, where Azure Key Vault keeps it in an HSM.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::durable_file::{PRIVATE_MODE, create_private_dir, write_atomic};
use crate::model::KeyReleasePolicy;

/// Longest key or secret name (Key Vault's limit).
pub const MAX_NAME_LEN: usize = 127;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file holds something unreadable.
    #[error("{path}: not a vault record: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Whether `name` is a valid Key Vault object name (1–127 of `0-9 a-z A-Z -`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A random 32-hex-digit version id, as Key Vault's.
pub fn new_version_id() -> String {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One version of a key.
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredKey {
    /// The version id.
    pub version: String,
    /// `RSA` or `RSA-HSM`.
    pub kty: String,
    /// Permitted operations.
    pub key_ops: Vec<String>,
    /// PKCS#8 DER of the private key, base64 (secret).
    pkcs8_base64: String,
    /// Whether the key may be used.
    pub enabled: bool,
    /// Whether it may be released.
    pub exportable: bool,
    /// Not before / expiry, seconds since the epoch.
    pub nbf: Option<u64>,
    /// Expiry.
    pub exp: Option<u64>,
    /// Creation time.
    pub created: u64,
    /// Last update time.
    pub updated: u64,
    /// The release policy as imported.
    pub release_policy: Option<KeyReleasePolicy>,
    /// Tags.
    pub tags: Option<BTreeMap<String, String>>,
}

impl Drop for StoredKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.pkcs8_base64);
    }
}

impl StoredKey {
    /// A new version holding `pkcs8` (other fields to be set by the caller).
    pub fn new(pkcs8: &[u8], now: u64) -> Self {
        Self {
            version: new_version_id(),
            kty: "RSA".into(),
            key_ops: Vec::new(),
            pkcs8_base64: STANDARD.encode(pkcs8),
            enabled: true,
            exportable: false,
            nbf: None,
            exp: None,
            created: now,
            updated: now,
            release_policy: None,
            tags: None,
        }
    }

    /// The PKCS#8 DER of the private key.
    pub fn pkcs8(&self) -> Option<Zeroizing<Vec<u8>>> {
        STANDARD.decode(&self.pkcs8_base64).ok().map(Zeroizing::new)
    }
}

/// One version of a secret.
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredSecret {
    /// The version id.
    pub version: String,
    /// The value (secret).
    value: String,
    /// Content type.
    pub content_type: Option<String>,
    /// Whether it may be read.
    pub enabled: bool,
    /// Not before.
    pub nbf: Option<u64>,
    /// Expiry.
    pub exp: Option<u64>,
    /// Creation time.
    pub created: u64,
    /// Last update time.
    pub updated: u64,
    /// Tags.
    pub tags: Option<BTreeMap<String, String>>,
}

impl Drop for StoredSecret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.value);
    }
}

impl StoredSecret {
    /// A new version holding `value`.
    pub fn new(value: &str, now: u64) -> Self {
        Self {
            version: new_version_id(),
            value: value.to_owned(),
            content_type: None,
            enabled: true,
            nbf: None,
            exp: None,
            created: now,
            updated: now,
            tags: None,
        }
    }

    /// The value.
    pub fn value(&self) -> &str {
        &self.value
    }
}

#[derive(Serialize, Deserialize)]
struct Versions<T> {
    versions: Vec<T>,
}

/// Keys and secrets on disk.
#[derive(Debug)]
pub struct Store {
    keys_dir: PathBuf,
    secrets_dir: PathBuf,
    write_lock: Mutex<()>,
}

impl Store {
    /// Opens (creating) the store under `root`.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let keys_dir = root.join("keys");
        let secrets_dir = root.join("secrets");
        for dir in [&keys_dir, &secrets_dir] {
            create_private_dir(dir).map_err(|source| StoreError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(Self {
            keys_dir,
            secrets_dir,
            write_lock: Mutex::new(()),
        })
    }

    fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>, StoreError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                serde_json::from_slice::<Versions<T>>(&bytes)
                    .map(|v| v.versions)
                    .map_err(|e| StoreError::Corrupt {
                        path: path.to_path_buf(),
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(StoreError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn append<T: Serialize + for<'de> Deserialize<'de>>(
        &self,
        path: &Path,
        record: T,
    ) -> Result<(), StoreError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut versions = Self::read::<T>(path)?;
        versions.push(record);
        let bytes = Zeroizing::new(
            serde_json::to_vec(&Versions { versions }).expect("serialisable"),
        );
        write_atomic(path, &bytes, PRIVATE_MODE).map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    fn pick<T>(versions: Vec<T>, version: Option<&str>, id: impl Fn(&T) -> &str) -> Option<T> {
        match version.filter(|v| !v.is_empty()) {
            Some(wanted) => versions.into_iter().find(|v| id(v) == wanted),
            None => versions.into_iter().last(),
        }
    }

    /// Adds a version of key `name` (the name must be [`valid_name`]).
    pub fn put_key(&self, name: &str, key: StoredKey) -> Result<(), StoreError> {
        self.append(&self.keys_dir.join(format!("{name}.json")), key)
    }

    /// Key `name` at `version` (latest if `None` or empty).
    pub fn key(&self, name: &str, version: Option<&str>) -> Result<Option<StoredKey>, StoreError> {
        if !valid_name(name) {
            return Ok(None);
        }
        let versions = Self::read::<StoredKey>(&self.keys_dir.join(format!("{name}.json")))?;
        Ok(Self::pick(versions, version, |k| &k.version))
    }

    /// Adds a version of secret `name`.
    pub fn put_secret(&self, name: &str, secret: StoredSecret) -> Result<(), StoreError> {
        self.append(&self.secrets_dir.join(format!("{name}.json")), secret)
    }

    /// Secret `name` at `version` (latest if `None` or empty).
    pub fn secret(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<Option<StoredSecret>, StoreError> {
        if !valid_name(name) {
            return Ok(None);
        }
        let versions =
            Self::read::<StoredSecret>(&self.secrets_dir.join(format!("{name}.json")))?;
        Ok(Self::pick(versions, version, |s| &s.version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_accumulate_and_the_latest_is_default() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let first = StoredSecret::new("one", 1);
        let first_version = first.version.clone();
        store.put_secret("s", first).unwrap();
        store.put_secret("s", StoredSecret::new("two", 2)).unwrap();
        assert_eq!(store.secret("s", None).unwrap().unwrap().value(), "two");
        assert_eq!(
            store.secret("s", Some(&first_version)).unwrap().unwrap().value(),
            "one"
        );
        assert!(store.secret("s", Some("nope")).unwrap().is_none());
        assert!(store.secret("../etc", None).unwrap().is_none());
        assert!(!valid_name("a/b"));
        assert!(valid_name("wrapped-ds-dek-kek"));
    }
}
