//! A mount pinned to a dataset manifest: only the listed blobs, in exactly the listed versions.
//!
//! The caller (the CLI) verifies the signed manifest and hands over its plain list; nothing
//! here checks a signature. The mount then serves exactly that list: a blob in the store but not
//! listed ("added") is absent from listings and lookups; a listed blob absent from the store
//! ("missing", deleted) is still listed and fails with `EIO` at open, never silently missing; a
//! listed blob whose EBF header (the per-blob salt names the version) or length is not the
//! listed one ("refused": swapped with another, rolled back, overwritten) fails with `EIO` at
//! open. The header comes with the first read the mount makes at open anyway, so the check
//! costs no request. Each finding is logged once with its name and counted ([`PinnedStatus`]),
//! which the CLI writes into the mount's status file. The segment-tag digest is not checked
//! here (that would read every blob whole before serving it): segments are authenticated under
//! the blob's key as they are read, and `encfs dataset verify` checks the digest offline.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use encfs_crypto::format::Header;
use encfs_dataset::Manifest;

/// One listed blob, by its path below the mount's prefix.
pub(crate) struct PinnedEntry {
    pub(crate) header: Vec<u8>,
    pub(crate) blob_len: u64,
    /// Plaintext length (what a listing shows when the blob is missing).
    pub(crate) plain_len: u64,
}

/// What a pinned mount found so far, each set in name order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinnedStatus {
    /// Digest of the manifest (`sha256:…`), as the caller named it.
    pub digest: String,
    /// Entries of the manifest below the mount's prefix.
    pub entries: usize,
    /// In the store, not listed: hidden (a whole unlisted directory is one name ending in `/`).
    pub added: BTreeSet<String>,
    /// Listed, absent from the store: listed, `EIO` at open.
    pub missing: BTreeSet<String>,
    /// Another version than the listed one (swapped, rolled back, overwritten): `EIO` at open.
    pub refused: BTreeSet<String>,
}

/// Which set a finding goes to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Finding {
    Added,
    Missing,
    Refused,
}

/// The manifest's list as the mount uses it.
pub struct Pinned {
    entries: BTreeMap<String, PinnedEntry>,
    /// Every directory with a listed blob below it (paths, no trailing `/`; the root is "").
    dirs: BTreeSet<String>,
    status: Mutex<PinnedStatus>,
}

impl Pinned {
    /// The entries of `manifest` below the mount's `prefix` (empty or ending in `/`), as paths
    /// relative to it. `digest` names the manifest in the status.
    pub fn new(manifest: &Manifest, prefix: &str, digest: &str) -> Self {
        let mut entries = BTreeMap::new();
        let mut dirs = BTreeSet::from([String::new()]);
        for entry in &manifest.entries {
            let Some(path) = entry.name.strip_prefix(prefix) else {
                continue;
            };
            let plain_len = Header::parse(&entry.header)
                .ok()
                .and_then(|h| h.segment_size.plaintext_len(entry.size).ok())
                .unwrap_or(0);
            let mut dir = path;
            while let Some((parent, _)) = dir.rsplit_once('/') {
                dirs.insert(parent.to_owned());
                dir = parent;
            }
            entries.insert(
                path.to_owned(),
                PinnedEntry {
                    header: entry.header.clone(),
                    blob_len: entry.size,
                    plain_len,
                },
            );
        }
        let status = PinnedStatus {
            digest: digest.to_owned(),
            entries: entries.len(),
            ..PinnedStatus::default()
        };
        Self {
            entries,
            dirs,
            status: Mutex::new(status),
        }
    }

    /// The listed blob at `path`, if any.
    pub(crate) fn entry(&self, path: &str) -> Option<&PinnedEntry> {
        self.entries.get(path)
    }

    /// Whether a listed blob lies below directory `path`.
    pub(crate) fn has_dir(&self, path: &str) -> bool {
        self.dirs.contains(path)
    }

    /// The listed children of directory `dir` (`""`: the root): names and whether each is a
    /// directory.
    pub(crate) fn children(&self, dir: &str) -> Vec<(String, bool)> {
        let below = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut out: Vec<(String, bool)> = self
            .entries
            .range(below.clone()..)
            .take_while(|(path, _)| path.starts_with(&below))
            .map(|(path, _)| {
                let rest = &path[below.len()..];
                match rest.split_once('/') {
                    None => (rest.to_owned(), false),
                    Some((sub, _)) => (sub.to_owned(), true),
                }
            })
            .collect();
        out.dedup();
        out
    }

    /// The first listed entry (to check the key before serving), as its header.
    pub(crate) fn first_header(&self) -> Option<&[u8]> {
        self.entries.values().next().map(|e| e.header.as_slice())
    }

    /// Records a finding about `path`; logged the first time.
    pub(crate) fn note(&self, finding: Finding, path: &str) {
        let mut status = self.status.lock().expect("poisoned");
        let (set, what) = match finding {
            Finding::Added => (
                &mut status.added,
                "in the store but not in the manifest: hidden",
            ),
            Finding::Missing => (
                &mut status.missing,
                "listed in the manifest but absent from the store: EIO at open",
            ),
            Finding::Refused => (
                &mut status.refused,
                "not the version the manifest lists (swapped, rolled back or overwritten): EIO at open",
            ),
        };
        if set.insert(path.to_owned()) {
            eprintln!("encfs: manifest: {path}: {what}");
        }
    }

    /// What was found so far.
    pub fn status(&self) -> PinnedStatus {
        self.status.lock().expect("poisoned").clone()
    }
}

/// Whether a blob path is a dataset manifest: hidden from every mount, pinned or not (it is not
/// an EBF blob of the data).
pub(crate) use encfs_dataset::is_manifest_blob;

#[cfg(test)]
mod tests {
    use super::*;
    use encfs_crypto::DataKey;
    use encfs_crypto::format::{SegmentSize, seal};

    #[test]
    fn listed_children_and_directories() {
        let key = DataKey::generate().unwrap();
        let blob = seal(&key, b"x", SegmentSize::MIN).unwrap();
        let entry = |name: &str| encfs_dataset::tags::entry_of_bytes(name, &blob).unwrap();
        let manifest = Manifest::new(
            "p/",
            vec![entry("p/a"), entry("p/d/b"), entry("p/d/e/c"), entry("p/z")],
        )
        .unwrap();
        let pinned = Pinned::new(&manifest, "p/", "sha256:00");
        assert_eq!(
            pinned.children(""),
            [("a".into(), false), ("d".into(), true), ("z".into(), false)]
        );
        assert_eq!(
            pinned.children("d"),
            [("b".into(), false), ("e".into(), true)]
        );
        assert!(pinned.has_dir("d/e") && !pinned.has_dir("x"));
        assert_eq!(pinned.entry("a").unwrap().plain_len, 1);
        let sub = Pinned::new(&manifest, "p/d/", "sha256:00");
        assert_eq!(sub.status().entries, 2);
        pinned.note(Finding::Added, "new");
        pinned.note(Finding::Added, "new");
        assert_eq!(pinned.status().added.len(), 1);
        assert!(is_manifest_blob(".encfs-manifest") && is_manifest_blob("d/.encfs-manifest"));
        assert!(!is_manifest_blob("x.encfs-manifest"));
    }
}
