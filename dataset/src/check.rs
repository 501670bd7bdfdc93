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
    let names = blob_names(store, prefix).await?;
    let entries: Vec<Entry> = stream::iter(names.iter().map(|name| entry_of(store, name)))
        .buffered(parallelism.max(1))
        .try_collect()
        .await?;
    Manifest::new(prefix, entries)
}

/// The manifest of an upload that computed the entries of the blobs it wrote (`known`), given
/// the names `listed` under `prefix` before it began: every known entry, and the entry of every
/// other listed blob (read; one deleted since the listing is left out). So the manifest holds
/// the prefix as it was plus what the upload wrote, and the store is not listed again when the
/// upload ends. The manifest is checked when it is signed ([`Manifest::into_signed`]).
///
/// # Errors
/// A store error reading one of the other blobs ([`entry_of`]).
pub async fn build_from(
    store: &dyn BlobStore,
    prefix: &str,
    mut listed: Vec<String>,
    mut known: Vec<Entry>,
    parallelism: usize,
) -> Result<Manifest, Error> {
    let own = manifest_blob_name(prefix);
    sort_nearly_sorted(&mut known);
    known.dedup_by(|a, b| a.name == b.name);
    listed.sort();
    let mut next_known = known.iter().map(|e| e.name.as_str()).peekable();
    listed.retain(|name| {
        while next_known.next_if(|known| *known < name.as_str()).is_some() {}
        let written = next_known.peek() == Some(&name.as_str());
        *name != own && name.starts_with(prefix) && !written
    });
    let others: Vec<Option<Entry>> = stream::iter(listed.iter().map(|name| async move {
        match entry_of(store, name).await {
            Ok(entry) => Ok(Some(entry)),
            Err(Error::Store(StoreError::BlobNotFound(_))) => Ok(None),
            Err(other) => Err(other),
        }
    }))
    .buffered(parallelism.max(1))
    .try_collect()
    .await?;
    known.extend(others.into_iter().flatten());
    // Checked once, when it is signed (`Manifest::into_signed`): 100,000 headers are worth
    // reading once, not twice.
    Ok(Manifest::assemble(prefix, known))
}

/// Sorts entries by name that come nearly sorted: an upload's workers take its (sorted) files
/// in turn and record each as it finishes, so an entry lands at most a few places from its
/// own. Insertion sort is then linear and touches only neighbours (a comparison sort of
/// 100,000 entries chased names across the heap for 14 ms); past a budget of moves, the
/// order is not nearly sorted after all and a stable sort takes over.
fn sort_nearly_sorted(entries: &mut [Entry]) {
    let mut budget = entries.len().saturating_mul(8);
    for i in 1..entries.len() {
        let mut j = i;
        while j > 0 && entries[j - 1].name > entries[j].name {
            entries.swap(j - 1, j);
            j -= 1;
            budget = match budget.checked_sub(1) {
                Some(left) => left,
                None => {
                    entries.sort_by(|a, b| a.name.cmp(&b.name));
                    return;
                }
            };
        }
    }
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

    #[test]
    fn nearly_sorted_and_scrambled_entries_both_sort() {
        let key = DataKey::generate().unwrap();
        let one = entry_of_bytes("x", &seal(&key, b"x", SegmentSize::MIN).unwrap()).unwrap();
        let named = |i: usize| Entry {
            name: format!("{i:05}"),
            ..one.clone()
        };
        let sorted: Vec<Entry> = (0..2000).map(named).collect();
        // Neighbours swapped (an upload's order), then reversed (past the budget).
        let mut near = sorted.clone();
        for pair in near.chunks_mut(3) {
            pair.reverse();
        }
        sort_nearly_sorted(&mut near);
        assert_eq!(near, sorted);
        let mut reversed: Vec<Entry> = sorted.iter().rev().cloned().collect();
        sort_nearly_sorted(&mut reversed);
        assert_eq!(reversed, sorted);
    }

    #[tokio::test]
    async fn known_entries_are_not_read_others_are_and_plain_blobs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("c"));
        store.create_container().await.unwrap();
        let key = DataKey::generate().unwrap();
        let blob = seal(&key, b"x", SegmentSize::MIN).unwrap();
        put(&store, "a", blob.clone()).await;
        let b = seal(&key, b"bee", SegmentSize::MIN).unwrap();
        put(&store, "b", b.clone()).await;
        let mut pretend = entry_of_bytes("a", &blob).unwrap();
        pretend.tags_sha256 = [9; 32];
        // Listed beside the upload: the upload's own blob (not read: the pretend entry stays),
        // another blob (read), one deleted since (left out), and the manifest blob (never listed).
        let listed = ["b", "a", "deleted", ".encfs-manifest"]
            .map(str::to_owned)
            .to_vec();
        let manifest = build_from(&store, "", listed, vec![pretend.clone()], 2)
            .await
            .unwrap();
        assert_eq!(
            manifest.entries,
            [pretend, entry_of_bytes("b", &b).unwrap()]
        );
        put(&store, "plain.txt", b"hello".to_vec()).await;
        let err = build(&store, "", 2).await.unwrap_err().to_string();
        assert!(err.contains("blob plain.txt: not an encfs blob"), "{err}");
    }
}
