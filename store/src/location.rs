//! Store addresses: which backend a URL or path names, and the blob prefix inside it.
//!
//! * a plain path or `file:///abs/path` — the embedded store. The container is the deepest
//!   existing container directory on the path (one holding `blobs/`), the rest is a prefix; when
//!   none exists yet, the whole path is the container (created by `upload`).
//! * `https://ACCOUNT.blob.core.windows.net/CONTAINER[/prefix]` or an Azurite URL
//!   `http://127.0.0.1:10000/ACCOUNT/CONTAINER[/prefix]` — Azure Blob Storage, behind the one
//!   retry layer ([`RetryingStore`] with the caller's [`RetryPolicy`]).
//!
//! Messages name an address only through [`redact`]: a SAS in the query never reaches them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::azure::{AzureStore, ContainerUrl, Credentials};
use super::faults::RetryingStore;
use super::local::LocalStore;
use super::redact::redact;
use super::{BlobStore, RetryPolicy, StoreError, StoreResult};

/// A store plus the blob-name prefix the address pointed into.
pub struct StoreLocation {
    /// The container.
    pub store: Arc<dyn BlobStore>,
    /// Blob-name prefix inside it (empty, or ending in `/`).
    pub prefix: String,
    /// The same path without the added `/`: a single blob's name when the address names one.
    pub path: String,
}

fn with_slash(prefix: String) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        prefix
    } else {
        prefix + "/"
    }
}

/// Opens the store an address names (credentials for Azure from the URL or the environment;
/// the default [`RetryPolicy`]).
pub fn open_store(address: &str) -> StoreResult<StoreLocation> {
    open_store_with(address, None, RetryPolicy::default())
}

/// As [`open_store`], with explicit Azure credentials (a SAS in the URL still wins) and the retry
/// policy of every call (the embedded store has no transient failures to retry).
pub fn open_store_with(
    address: &str,
    credentials: Option<Credentials>,
    retry: RetryPolicy,
) -> StoreResult<StoreLocation> {
    if address.starts_with("http://") || address.starts_with("https://") {
        let url = ContainerUrl::parse(address)?;
        let parsed = reqwest::Url::parse(address)
            .map_err(|e| StoreError::Config(format!("{}: {e}", redact(address))))?;
        let segments: Vec<String> = parsed
            .path_segments()
            .map(|s| {
                s.filter(|p| !p.is_empty())
                    .map(|p| {
                        percent_encoding::percent_decode_str(p)
                            .decode_utf8_lossy()
                            .into_owned()
                    })
                    .collect()
            })
            .unwrap_or_default();
        let skip = segments
            .iter()
            .position(|s| *s == url.container)
            .map_or(segments.len(), |i| i + 1);
        let path = segments[skip..].join("/");
        let prefix = with_slash(path.clone());
        let mut container_url = format!("{}/{}", url.endpoint, url.container);
        if let Some(sas) = &url.sas {
            container_url = format!("{container_url}?{sas}");
        }
        let azure = AzureStore::new(&container_url, credentials)?;
        return Ok(StoreLocation {
            store: Arc::new(RetryingStore::new(azure, retry)),
            prefix,
            path,
        });
    }
    let path = match address.strip_prefix("file://") {
        Some(rest) if rest.starts_with('/') => PathBuf::from(rest),
        Some(_) => {
            return Err(StoreError::Config(format!(
                "{}: file URLs must be absolute (file:///path)",
                redact(address)
            )));
        }
        None if address.contains("://") => {
            return Err(StoreError::Config(format!(
                "{}: unknown store scheme (use a path, file:///, http:// or https://)",
                redact(address)
            )));
        }
        None => PathBuf::from(address),
    };
    let (container, prefix) = split_local(&path);
    Ok(StoreLocation {
        store: Arc::new(LocalStore::new(container)),
        prefix: with_slash(prefix.clone()),
        path: prefix,
    })
}

fn split_local(path: &Path) -> (PathBuf, String) {
    let mut container = path.to_path_buf();
    let mut rest: Vec<String> = Vec::new();
    loop {
        if container.join("blobs").is_dir() {
            rest.reverse();
            return (container, rest.join("/"));
        }
        let (Some(parent), Some(name)) = (container.parent(), container.file_name()) else {
            break;
        };
        rest.push(name.to_string_lossy().into_owned());
        container = parent.to_path_buf();
    }
    (path.to_path_buf(), String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_split_at_the_existing_container() {
        let dir = tempfile::tempdir().unwrap();
        let container = dir.path().join("c");
        std::fs::create_dir_all(container.join("blobs")).unwrap();
        let (found, prefix) = split_local(&container.join("x/y"));
        assert_eq!((found, prefix.as_str()), (container.clone(), "x/y"));
        let fresh = dir.path().join("new/container");
        assert_eq!(split_local(&fresh), (fresh.clone(), String::new()));
        assert!(open_store("s3://bucket").is_err());
        assert!(open_store("file://relative").is_err());
        let location = open_store(&format!("file://{}/sub", container.display())).unwrap();
        assert_eq!(location.prefix, "sub/");
    }

    #[test]
    fn azure_urls_split_container_and_prefix() {
        let location = open_store("http://127.0.0.1:10000/devstoreaccount1/cn1/a/b").unwrap();
        assert_eq!(location.prefix, "a/b/");
        assert_eq!(
            location.store.location(),
            "http://127.0.0.1:10000/devstoreaccount1/cn1"
        );
    }
}
