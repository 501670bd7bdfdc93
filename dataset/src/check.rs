//! Manifests against a store: the entry of one blob, the manifest of a prefix, and the check of a
//! store against a manifest (what `encfs dataset seal` and `encfs dataset verify` do).
//!
//! Every blob is read whole, once (the small blobs of a dataset cost one request each, as a
//! download does), `parallelism` at a time; the store's own retry layer retries transient
//! failures. The check compares names, sizes, headers and tag digests and reports every
//! difference by name ([`Report`]): a blob whose header is another listed blob's is reported as
//! swapped with it, one with a header listed nowhere as replaced (rolled back to an older
//! version, or overwritten), a listed blob absent as missing, an unlisted one as added.

use std::collections::{BTreeMap, HashMap};

use encfs_store::{BlobStore, StoreError};
use futures_util::stream::{self, StreamExt as _, TryStreamExt as _};
use serde::Serialize;

use crate::tags::entry_of_bytes;
use crate::{Entry, Error, Manifest, manifest_blob_name};

/// The manifest entry of blob `name`: its header, size and segment-tag digest (the blob is read).
///
/// # Errors
/// [`Error::Store`] (naming the blob) or [`Error::NotEbf`].
pub async fn entry_of(store: &dyn BlobStore, name: &str) -> Result<Entry, Error> {
    let blob = store.get(name, None, None, None).await?;
    entry_of_bytes(name, &blob)
}

/// Every blob name under `prefix` but the manifest blob, in name order.
async fn blob_names(store: &dyn BlobStore, prefix: &str) -> Result<Vec<String>, Error> {
    let own = manifest_blob_name(prefix);
    let mut names = store.list_names(prefix).await?;
    names.retain(|name| *name != own);
    Ok(names)
}

/// The manifest of every blob under `prefix` (the manifest blob itself excluded), reading
/// `parallelism` blobs at a time.
///
/// # Errors
/// The first blob's error ([`entry_of`]), or [`Error::Payload`].
pub async fn build(
    store: &dyn BlobStore,
    prefix: &str,
    parallelism: usize,
) -> Result<Manifest, Error> {
    build_with(store, prefix, HashMap::new(), parallelism).await
}

/// [`build`], taking the entries of `known` blobs as given instead of reading them (an upload
/// that computed them as it wrote); every other blob under the prefix is read. Entries of
/// `known` no longer listed are dropped.
///
/// # Errors
/// As [`build`].
pub async fn build_with(
    store: &dyn BlobStore,
    prefix: &str,
    mut known: HashMap<String, Entry>,
    parallelism: usize,
) -> Result<Manifest, Error> {
    let names = blob_names(store, prefix).await?;
    let entries: Vec<Entry> = stream::iter(names.into_iter().map(|name| {
        let entry = known.remove(&name);
        async move {
            match entry {
                Some(entry) => Ok(entry),
                None => entry_of(store, &name).await,
            }
        }
    }))
    .buffered(parallelism.max(1))
    .try_collect()
    .await?;
    Manifest::new(prefix, entries)
}

/// One difference between a store and its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Finding {
    /// Listed, absent from the store.
    Missing,
    /// In the store under the prefix, not listed.
    Added,
    /// Holds the version listed under another name: two blobs swapped (or one copied over).
    Swapped {
        /// The entry whose version this blob holds.
        with: String,
    },
    /// Holds another version than the listed one (rolled back to an older one, or overwritten).
    Replaced,
    /// The listed header, but another size or other segment tags: edited in place.
    Modified,
    /// Not an EBF blob, or of a length no EBF blob has.
    Unreadable {
        /// Why.
        reason: String,
    },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing => f.write_str("deleted: listed in the manifest, absent from the store"),
            Self::Added => f.write_str("added: in the store, not listed in the manifest"),
            Self::Swapped { with } => write!(f, "swapped: holds the version listed for {with}"),
            Self::Replaced => f.write_str(
                "replaced: another version than the listed one (rolled back or overwritten)",
            ),
            Self::Modified => f.write_str("modified: the listed header with other contents"),
            Self::Unreadable { reason } => write!(f, "unreadable: {reason}"),
        }
    }
}

/// A blob and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The blob name.
    pub name: String,
    /// What.
    #[serde(flatten)]
    pub finding: Finding,
}

/// What [`verify_store`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Entries of the manifest.
    pub listed: usize,
    /// Listed blobs found exactly as listed.
    pub verified: usize,
    /// Every difference, in name order.
    pub problems: Vec<Problem>,
}

impl Report {
    /// Whether the store holds exactly the manifest's blobs, in exactly the listed versions.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks every blob under the manifest's prefix against the manifest: each listed blob present
/// with the same header, size and tag digest, and no blob unlisted. Reads `parallelism` blobs at
/// a time.
///
/// # Errors
/// A store error other than a missing blob (those are findings).
pub async fn verify_store(
    store: &dyn BlobStore,
    manifest: &Manifest,
    parallelism: usize,
) -> Result<Report, Error> {
    let names = blob_names(store, &manifest.store_prefix).await?;
    let by_header: HashMap<&[u8], &str> = manifest
        .entries
        .iter()
        .map(|e| (e.header.as_slice(), e.name.as_str()))
        .collect();
    let mut findings: BTreeMap<String, Finding> = names
        .iter()
        .filter(|name| manifest.entry(name).is_none())
        .map(|name| (name.clone(), Finding::Added))
        .collect();
    let by_header = &by_header;
    let checked: Vec<(String, Option<Finding>)> =
        stream::iter(manifest.entries.iter().map(|listed| async move {
            let finding = match entry_of(store, &listed.name).await {
                Ok(found) => compare(listed, &found, by_header),
                Err(Error::Store(StoreError::BlobNotFound(_))) => Some(Finding::Missing),
                Err(Error::NotEbf { source, .. }) => Some(Finding::Unreadable {
                    reason: source.to_string(),
                }),
                Err(other) => return Err(other),
            };
            Ok((listed.name.clone(), finding))
        }))
        .buffer_unordered(parallelism.max(1))
        .try_collect()
        .await?;
    let mut verified = 0;
    for (name, finding) in checked {
        match finding {
            Some(finding) => {
                findings.insert(name, finding);
            }
            None => verified += 1,
        }
    }
    Ok(Report {
        listed: manifest.entries.len(),
        verified,
        problems: findings
            .into_iter()
            .map(|(name, finding)| Problem { name, finding })
            .collect(),
    })
}

/// What differs between the listed entry and the blob found (`None`: nothing).
fn compare(listed: &Entry, found: &Entry, by_header: &HashMap<&[u8], &str>) -> Option<Finding> {
    if found.header != listed.header {
        return Some(match by_header.get(found.header.as_slice()) {
            Some(other) => Finding::Swapped {
                with: (*other).to_owned(),
            },
            None => Finding::Replaced,
        });
    }
    (found.size != listed.size || found.tags_sha256 != listed.tags_sha256)
        .then_some(Finding::Modified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use encfs_crypto::DataKey;
    use encfs_crypto::format::{SegmentSize, seal};
    use encfs_store::local::LocalStore;
    use encfs_store::{Condition, Metadata};

    async fn put(store: &dyn BlobStore, name: &str, data: Vec<u8>) {
        store
            .put(
                name,
                Bytes::from(data),
                &Metadata::new(),
                &Condition::None,
                None,
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn each_attack_is_found_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("c"));
        store.create_container().await.unwrap();
        let key = DataKey::generate().unwrap();
        let sealed = |text: &str| seal(&key, text.as_bytes(), SegmentSize::MIN).unwrap();
        let (a, b, c, d) = (sealed("a v2"), sealed("b"), sealed("c"), sealed("d"));
        let old_a = sealed("a v1");
        for (name, data) in [
            ("p/a", &a),
            ("p/b", &b),
            ("p/c", &c),
            ("p/d", &d),
            ("q/x", &b),
        ] {
            put(&store, name, data.clone()).await;
        }
        let manifest = build(&store, "p/", 4).await.unwrap();
        assert_eq!(manifest.entries.len(), 4);
        assert!(verify_store(&store, &manifest, 4).await.unwrap().is_clean());

        put(&store, "p/.encfs-manifest", b"not counted".to_vec()).await;
        put(&store, "p/a", old_a).await; // rolled back
        put(&store, "p/b", c.clone()).await; // b and c swapped
        put(&store, "p/c", b.clone()).await;
        store.delete("p/d", &Condition::None).await.unwrap(); // deleted
        put(&store, "p/e", d.clone()).await; // added
        let report = verify_store(&store, &manifest, 4).await.unwrap();
        let found: Vec<(&str, &Finding)> = report
            .problems
            .iter()
            .map(|p| (p.name.as_str(), &p.finding))
            .collect();
        assert_eq!(
            found,
            [
                ("p/a", &Finding::Replaced),
                ("p/b", &Finding::Swapped { with: "p/c".into() }),
                ("p/c", &Finding::Swapped { with: "p/b".into() }),
                ("p/d", &Finding::Missing),
                ("p/e", &Finding::Added),
            ]
        );
        assert_eq!((report.listed, report.verified), (4, 0));
        let json = serde_json::to_string(&report.problems[1]).unwrap();
        assert_eq!(json, r#"{"name":"p/b","finding":"swapped","with":"p/c"}"#);
    }

    #[tokio::test]
    async fn known_entries_are_not_read_and_plain_blobs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("c"));
        store.create_container().await.unwrap();
        let key = DataKey::generate().unwrap();
        let blob = seal(&key, b"x", SegmentSize::MIN).unwrap();
        put(&store, "a", blob.clone()).await;
        let mut known = HashMap::new();
        let mut pretend = entry_of_bytes("a", &blob).unwrap();
        pretend.tags_sha256 = [9; 32];
        known.insert("a".to_owned(), pretend.clone());
        known.insert("gone".to_owned(), pretend.clone());
        let manifest = build_with(&store, "", known, 2).await.unwrap();
        assert_eq!(manifest.entries, [pretend]);
        put(&store, "plain.txt", b"hello".to_vec()).await;
        let err = build(&store, "", 2).await.unwrap_err().to_string();
        assert!(err.contains("blob plain.txt: not an encfs blob"), "{err}");
    }
}
