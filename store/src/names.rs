//! Encrypted blob names: a wrapper that encrypts every path component of every blob name on
//! every call ([`EncryptedNames`]), and the marker blob that says a container's names are
//! encrypted and under which key (`docs/format.md`, "Encrypted names").
//!
//! Callers above the wrapper (upload, download, the mount) see plaintext names only; the store
//! below sees only [`encfs_crypto::names`] components. A name maps to its stored form without
//! any request (the component cipher is bound to the plaintext path of its parent), so a lookup
//! stays one request. A component whose encoded form is long is stored in its hashed long form;
//! the full form is kept where a listing finds it: in the blob's metadata ([`META_NAME`]) for the
//! last component of a blob, and in a side blob `<long form>.dir` beside a directory's prefix
//! for a directory, written once with the first blob below it. Listings decrypt each
//! component and hide the marker and the side blobs; a listing prefix must be whole components.
//! Each page of a listing is in name order, but pages follow the stored names, so a listing of
//! several pages is not in name order as a whole (the mount and download do not need it).

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use encfs_crypto::names::{NameKey, is_long_form, long_form, stored_form};

use super::{
    BlobItem, BlobProperties, BlobStore, Condition, CustomerKey, ListOptions, Listing, LocalAccess,
    Metadata, PinnedBlob, StoreError, StoreResult,
};

/// The marker blob at the container root of a store with encrypted names. A `.` starts no
/// encrypted component, so it cannot collide with one.
pub const MARKER: &str = ".encfs-names";
/// Metadata of a blob whose last component is a long form: the full encoded component.
pub const META_NAME: &str = "encfs_name";
/// Suffix of the side blob that holds the full encoded form of a long directory component.
pub const DIR_SIDE_SUFFIX: &str = ".dir";
/// Longest stored blob name (Azure's limit).
const MAX_STORED_CHARS: usize = 1024;

/// The marker's content: JSON naming the scheme and the key's public check value (hex).
pub fn marker_content(key: &NameKey) -> Bytes {
    let check: String = key
        .check_value()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Bytes::from(format!(
        "{{\"encfs_names\":1,\"cipher\":\"AES-256-GCM-SIV\",\"check\":\"{check}\"}}\n"
    ))
}

/// Whether `store` has the marker of encrypted names (what a plain-name tool checks first).
pub async fn has_marker(store: &dyn BlobStore) -> StoreResult<bool> {
    match store.properties(MARKER, None).await {
        Ok(_) => Ok(true),
        Err(StoreError::BlobNotFound(_) | StoreError::ContainerNotFound(_)) => Ok(false),
        Err(error) => Err(error),
    }
}

/// Checks the marker of `store` against `key`: a wrong key, or a store with plain-named blobs
/// and no marker, is an error naming the store. A store with neither blobs nor marker gets the
/// marker when `create` (the writers: upload, a read-write mount, `datastore add`). A missing
/// container passes: [`EncryptedNames::create_container`] writes the marker when it makes one.
pub async fn check_marker(store: &dyn BlobStore, key: &NameKey, create: bool) -> StoreResult<()> {
    let expected = marker_content(key);
    match store.get(MARKER, None, None, None).await {
        Err(StoreError::ContainerNotFound(_)) => return Ok(()),
        Ok(found) if found == expected => return Ok(()),
        Ok(_) => {
            return Err(StoreError::Config(format!(
                "{}: its blob names are encrypted under another key (the check value in \
                 {MARKER} differs): use the datastore's own key",
                store.location()
            )));
        }
        Err(StoreError::BlobNotFound(_)) => {}
        Err(error) => return Err(error),
    }
    let page = store
        .list(&ListOptions {
            max_results: Some(1),
            ..Default::default()
        })
        .await?;
    if !page.blobs.is_empty() || !page.prefixes.is_empty() {
        return Err(StoreError::Config(format!(
            "{}: it holds blobs with plain names and no {MARKER} marker; encrypted names \
             (--encrypt-names) apply only to a container written with them from the start \
             (use an empty container, or leave the option out)",
            store.location()
        )));
    }
    if create {
        match store
            .put(
                MARKER,
                expected,
                &Metadata::new(),
                &Condition::IfNotExists,
                None,
            )
            .await
        {
            Ok(_) => {}
            // Another writer made it first: it must be this key's.
            Err(StoreError::ConditionNotMet(_)) => {
                if store.get(MARKER, None, None, None).await? != marker_content(key) {
                    return Err(StoreError::Config(format!(
                        "{}: another writer made its {MARKER} marker under another key",
                        store.location()
                    )));
                }
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// A plaintext name's stored form and what must be kept beside it.
struct Mapped {
    /// The stored blob name.
    stored: String,
    /// The full encoded last component, when it is a long form ([`META_NAME`]).
    long_last: Option<String>,
    /// Side blobs of long directory components: (side blob name, full encoded component).
    long_dirs: Vec<(String, String)>,
}

/// A store whose blob names are encrypted (see the module documentation).
pub struct EncryptedNames<S> {
    inner: S,
    key: NameKey,
    /// Side blobs known to exist (written or found by this instance).
    recorded: Mutex<HashSet<String>>,
}

impl<S: BlobStore> EncryptedNames<S> {
    /// Wraps `inner`; check its marker first ([`check_marker`]).
    pub fn new(inner: S, key: NameKey) -> Self {
        Self {
            inner,
            key,
            recorded: Mutex::new(HashSet::new()),
        }
    }

    /// The stored form of a plaintext blob name (or of a prefix, without its final `/`).
    fn map(&self, plain: &str) -> StoreResult<Mapped> {
        let mut stored = String::with_capacity(plain.len() * 2);
        let mut long_last = None;
        let mut long_dirs = Vec::new();
        let components: Vec<&str> = plain.split('/').collect();
        let mut parent_end = 0;
        for (i, component) in components.iter().enumerate() {
            let parent = &plain[..parent_end.max(1) - 1];
            let full = self.key.encrypt(&self.key.dir_id(parent), component);
            let part = match stored_form(&full) {
                Some(long) if i + 1 == components.len() => {
                    long_last = Some(full);
                    long
                }
                Some(long) => {
                    long_dirs.push((format!("{stored}{long}{DIR_SIDE_SUFFIX}"), full));
                    long
                }
                None => full,
            };
            stored.push_str(&part);
            if i + 1 < components.len() {
                stored.push('/');
            }
            parent_end += component.len() + 1;
        }
        if stored.chars().count() > MAX_STORED_CHARS {
            return Err(StoreError::NameTooLong(plain.to_owned()));
        }
        Ok(Mapped {
            stored,
            long_last,
            long_dirs,
        })
    }

    fn stored(&self, plain: &str) -> StoreResult<String> {
        Ok(self.map(plain)?.stored)
    }

    /// The stored form of a listing prefix: `""`, or whole components ending in `/`.
    fn map_prefix(&self, prefix: &str) -> StoreResult<String> {
        if prefix.is_empty() {
            return Ok(String::new());
        }
        let Some(dir) = prefix.strip_suffix('/') else {
            return Err(StoreError::Config(format!(
                "{}: listing prefix {prefix:?} ends inside a path component; with encrypted \
                 names a prefix is whole components (empty, or ending in '/')",
                self.inner.location()
            )));
        };
        Ok(self.stored(dir)? + "/")
    }

    /// Metadata as stored: the caller's, plus the full last component of a long name.
    fn metadata_of(mapped: &Mapped, metadata: &Metadata) -> Metadata {
        let mut stored = metadata.clone();
        stored.remove(META_NAME);
        if let Some(full) = &mapped.long_last {
            stored.insert(META_NAME.to_owned(), full.clone());
        }
        stored
    }

    /// The side blobs of `mapped`'s long directory components not known to exist yet.
    fn unrecorded(&self, mapped: &Mapped) -> Vec<(String, String)> {
        let recorded = self.recorded.lock().expect("poisoned");
        mapped
            .long_dirs
            .iter()
            .filter(|(name, _)| !recorded.contains(name))
            .cloned()
            .collect()
    }

    fn mark_recorded(&self, name: String) {
        self.recorded.lock().expect("poisoned").insert(name);
    }

    /// Writes the side blobs of the long directories above a blob about to be written.
    async fn record_dirs(&self, mapped: &Mapped) -> StoreResult<()> {
        for (name, full) in self.unrecorded(mapped) {
            let data = Bytes::from(full);
            match self
                .inner
                .put(&name, data, &Metadata::new(), &Condition::IfNotExists, None)
                .await
            {
                Ok(_) | Err(StoreError::ConditionNotMet(_)) => self.mark_recorded(name),
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Puts the plaintext name back into an error of the inner store that names the stored one
    /// (callers match on the name they asked for; the stored form means nothing to a reader).
    fn named(&self, error: StoreError, plain: &str) -> StoreError {
        let plain = plain.to_owned();
        match error {
            StoreError::BlobNotFound(_) => StoreError::BlobNotFound(plain),
            StoreError::ConditionNotMet(_) => StoreError::ConditionNotMet(plain),
            StoreError::CustomerKeyRequired(_) => StoreError::CustomerKeyRequired(plain),
            StoreError::CustomerKeyMismatch(_) => StoreError::CustomerKeyMismatch(plain),
            StoreError::CustomerKeyUnexpected(_) => StoreError::CustomerKeyUnexpected(plain),
            StoreError::NameTooLong(_) => StoreError::NameTooLong(plain),
            StoreError::InvalidBlockList(_) => StoreError::InvalidBlockList(plain),
            StoreError::Changed(_) => StoreError::Changed(plain),
            other => other,
        }
    }

    fn invalid(&self, stored: &str, error: encfs_crypto::Error) -> StoreError {
        StoreError::Corrupt {
            path: format!("{}/{stored}", self.inner.location()),
            message: format!(
                "{error} (a blob with encrypted names that this key cannot read: written by \
                 something else, edited, or under another key)"
            ),
        }
    }

    /// The full encoded form of a stored component: itself, or for a long form, `full` after
    /// checking that it is the one the long form hashes.
    fn full_form(
        &self,
        stored: &str,
        component: &str,
        full: Option<String>,
    ) -> StoreResult<String> {
        if !is_long_form(component) {
            return Ok(component.to_owned());
        }
        match full {
            Some(full) if long_form(&full) == component => Ok(full),
            _ => Err(self.invalid(
                stored,
                encfs_crypto::Error::InvalidName(component.to_owned()),
            )),
        }
    }

    /// The plaintext of the stored directory path `stored_dir` (no final `/`), decrypting each
    /// component not in `known` (what this listing decrypted already, the prefix included) and
    /// reading the side blob of each long one.
    async fn plain_dir(
        &self,
        stored_dir: &str,
        known: &mut HashMap<String, String>,
    ) -> StoreResult<String> {
        let mut plain = String::new();
        let mut begin = 0;
        for component in stored_dir.split('/') {
            let end = begin + component.len();
            let path = &stored_dir[..end];
            begin = end + 1;
            if let Some(found) = known.get(path) {
                plain = found.clone();
                continue;
            }
            let full = if is_long_form(component) {
                let side = format!("{path}{DIR_SIDE_SUFFIX}");
                let data = self.inner.get(&side, None, None, None).await?;
                Some(String::from_utf8_lossy(&data).into_owned())
            } else {
                None
            };
            let full = self.full_form(path, component, full)?;
            let name = self
                .key
                .decrypt(&self.key.dir_id(&plain), &full)
                .map_err(|e| self.invalid(path, e))?;
            plain = if plain.is_empty() {
                name
            } else {
                format!("{plain}/{name}")
            };
            known.insert(path.to_owned(), plain.clone());
        }
        Ok(plain)
    }

    /// Whether a stored blob name is the marker or a side blob, which listings hide.
    fn hidden(stored: &str) -> bool {
        let last = stored.rsplit('/').next().unwrap_or(stored);
        stored == MARKER || (is_long_form(last) && last.ends_with(DIR_SIDE_SUFFIX))
    }

    /// The plaintext of a stored blob name and its properties as the caller sees them.
    async fn plain_blob(
        &self,
        item: BlobItem,
        known: &mut HashMap<String, String>,
    ) -> StoreResult<BlobItem> {
        let BlobItem {
            name,
            mut properties,
        } = item;
        let (stored_parent, component) = match name.rsplit_once('/') {
            Some((parent, component)) => (parent, component),
            None => ("", name.as_str()),
        };
        let plain_parent = if stored_parent.is_empty() {
            String::new()
        } else {
            self.plain_dir(stored_parent, known).await?
        };
        let full = self.full_form(&name, component, properties.metadata.remove(META_NAME))?;
        let leaf = self
            .key
            .decrypt(&self.key.dir_id(&plain_parent), &full)
            .map_err(|e| self.invalid(&name, e))?;
        let plain = if plain_parent.is_empty() {
            leaf
        } else {
            format!("{plain_parent}/{leaf}")
        };
        Ok(BlobItem {
            name: plain,
            properties,
        })
    }
}

fn strip(mut properties: BlobProperties) -> BlobProperties {
    properties.metadata.remove(META_NAME);
    properties
}

#[async_trait]
impl<S: BlobStore> BlobStore for EncryptedNames<S> {
    fn location(&self) -> String {
        self.inner.location()
    }
    /// Creates the container and, in an empty one, the marker.
    async fn create_container(&self) -> StoreResult<bool> {
        let created = self.inner.create_container().await?;
        check_marker(&self.inner, &self.key, true).await?;
        Ok(created)
    }
    async fn container_exists(&self) -> StoreResult<bool> {
        self.inner.container_exists().await
    }
    async fn get(
        &self,
        name: &str,
        range: Option<Range<u64>>,
        cpk: Option<&CustomerKey>,
        if_match: Option<&str>,
    ) -> StoreResult<Bytes> {
        let stored = self.stored(name)?;
        self.inner
            .get(&stored, range, cpk, if_match)
            .await
            .map_err(|e| self.named(e, name))
    }
    async fn put(
        &self,
        name: &str,
        data: Bytes,
        metadata: &Metadata,
        condition: &Condition,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<String> {
        let mapped = self.map(name)?;
        self.record_dirs(&mapped).await?;
        let metadata = Self::metadata_of(&mapped, metadata);
        self.inner
            .put(&mapped.stored, data, &metadata, condition, cpk)
            .await
            .map_err(|e| self.named(e, name))
    }
    async fn stage_block(
        &self,
        name: &str,
        block_id: &str,
        data: Bytes,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<()> {
        let stored = self.stored(name)?;
        self.inner
            .stage_block(&stored, block_id, data, cpk)
            .await
            .map_err(|e| self.named(e, name))
    }
    async fn stage_block_at(
        &self,
        name: &str,
        block_id: &str,
        offset: u64,
        data: Bytes,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<()> {
        let stored = self.stored(name)?;
        self.inner
            .stage_block_at(&stored, block_id, offset, data, cpk)
            .await
            .map_err(|e| self.named(e, name))
    }
    async fn commit_blocks(
        &self,
        name: &str,
        block_ids: &[String],
        metadata: &Metadata,
        condition: &Condition,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<String> {
        let mapped = self.map(name)?;
        self.record_dirs(&mapped).await?;
        let metadata = Self::metadata_of(&mapped, metadata);
        self.inner
            .commit_blocks(&mapped.stored, block_ids, &metadata, condition, cpk)
            .await
            .map_err(|e| self.named(e, name))
    }
    async fn set_metadata(
        &self,
        name: &str,
        metadata: &Metadata,
        condition: &Condition,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<String> {
        let mapped = self.map(name)?;
        let metadata = Self::metadata_of(&mapped, metadata);
        self.inner
            .set_metadata(&mapped.stored, &metadata, condition, cpk)
            .await
            .map_err(|e| self.named(e, name))
    }
    async fn properties(
        &self,
        name: &str,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<BlobProperties> {
        let stored = self.stored(name)?;
        self.inner
            .properties(&stored, cpk)
            .await
            .map(strip)
            .map_err(|e| self.named(e, name))
    }
    async fn list(&self, options: &ListOptions<'_>) -> StoreResult<Listing> {
        if options.delimiter.is_some_and(|d| d != "/") {
            return Err(StoreError::Config(format!(
                "{}: with encrypted names a listing groups by '/' or not at all",
                self.inner.location()
            )));
        }
        let prefix = self.map_prefix(options.prefix)?;
        let mut known = HashMap::new();
        if let Some(dir) = options.prefix.strip_suffix('/') {
            known.insert(prefix[..prefix.len() - 1].to_owned(), dir.to_owned());
        }
        let mut marker = options.marker.map(str::to_owned);
        loop {
            let page = self
                .inner
                .list(&ListOptions {
                    prefix: &prefix,
                    delimiter: options.delimiter,
                    marker: marker.as_deref(),
                    max_results: options.max_results,
                })
                .await?;
            let mut listing = Listing {
                next_marker: page.next_marker,
                ..Listing::default()
            };
            for item in page.blobs {
                if !Self::hidden(&item.name) {
                    listing.blobs.push(self.plain_blob(item, &mut known).await?);
                }
            }
            for stored in page.prefixes {
                let dir = stored.strip_suffix('/').unwrap_or(&stored);
                listing
                    .prefixes
                    .push(self.plain_dir(dir, &mut known).await? + "/");
            }
            // Each page in plaintext order; across pages the order is the stored names'.
            listing.blobs.sort_by(|a, b| a.name.cmp(&b.name));
            listing.prefixes.sort();
            // A page whose entries were all hidden would look like the end to a caller that
            // reads one page (the mount's "is this a directory" probe): read on.
            let empty = listing.blobs.is_empty() && listing.prefixes.is_empty();
            match &listing.next_marker {
                Some(next) if empty && !next.is_empty() => marker = Some(next.clone()),
                _ => return Ok(listing),
            }
        }
    }
    async fn delete(&self, name: &str, condition: &Condition) -> StoreResult<()> {
        let stored = self.stored(name)?;
        self.inner
            .delete(&stored, condition)
            .await
            .map_err(|e| self.named(e, name))
    }
    async fn discard_staged(&self, name: &str, block_ids: &[String]) -> StoreResult<()> {
        let stored = self.stored(name)?;
        self.inner.discard_staged(&stored, block_ids).await
    }
    /// A view of its own over the inner store's local access, names mapped as here.
    fn local(&self) -> Option<&dyn LocalAccess> {
        self.inner.local().map(|_| self as &dyn LocalAccess)
    }
}

impl<S: BlobStore> EncryptedNames<S> {
    fn inner_local(&self, name: &str) -> StoreResult<&dyn LocalAccess> {
        self.inner.local().ok_or_else(|| {
            StoreError::Config(format!(
                "{name}: {} has no local access",
                self.inner.location()
            ))
        })
    }
}

impl<S: BlobStore> LocalAccess for EncryptedNames<S> {
    fn pin(
        &self,
        name: &str,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<Option<Box<dyn PinnedBlob>>> {
        let stored = self.stored(name)?;
        self.inner_local(name)?
            .pin(&stored, cpk)
            .map_err(|e| self.named(e, name))
    }

    fn get(
        &self,
        name: &str,
        range: Option<Range<u64>>,
        cpk: Option<&CustomerKey>,
        if_match: Option<&str>,
    ) -> StoreResult<Bytes> {
        let stored = self.stored(name)?;
        self.inner_local(name)?
            .get(&stored, range, cpk, if_match)
            .map_err(|e| self.named(e, name))
    }

    fn properties(&self, name: &str, cpk: Option<&CustomerKey>) -> StoreResult<BlobProperties> {
        let stored = self.stored(name)?;
        self.inner_local(name)?
            .properties(&stored, cpk)
            .map(strip)
            .map_err(|e| self.named(e, name))
    }

    fn put(
        &self,
        name: &str,
        data: Bytes,
        metadata: &Metadata,
        condition: &Condition,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<String> {
        let mapped = self.map(name)?;
        let local = self.inner_local(name)?;
        for (side, full) in self.unrecorded(&mapped) {
            match local.put(
                &side,
                Bytes::from(full),
                &Metadata::new(),
                &Condition::IfNotExists,
                None,
            ) {
                Ok(_) | Err(StoreError::ConditionNotMet(_)) => self.mark_recorded(side),
                Err(error) => return Err(error),
            }
        }
        let metadata = Self::metadata_of(&mapped, metadata);
        local
            .put(&mapped.stored, data, &metadata, condition, cpk)
            .map_err(|e| self.named(e, name))
    }

    fn read_staged(
        &self,
        name: &str,
        block_id: &str,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<Bytes> {
        let stored = self.stored(name)?;
        self.inner_local(name)?
            .read_staged(&stored, block_id, cpk)
            .map_err(|e| self.named(e, name))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::list_all;
    use crate::local::LocalStore;
    use encfs_crypto::DataKey;

    fn key(byte: u8) -> NameKey {
        NameKey::derive(&DataKey::from_bytes([byte; 32]))
    }

    async fn embedded() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("c"));
        store.create_container().await.unwrap();
        (dir, store)
    }

    async fn put(store: &dyn BlobStore, name: &str) {
        store
            .put(
                name,
                Bytes::from(format!("data {}", name.len())),
                &Metadata::new(),
                &Condition::None,
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }

    /// Names of a tree with short and long components at every level, as files and directories.
    fn tree() -> Vec<String> {
        let long = "l".repeat(200);
        vec![
            "top-level.txt".into(),
            "2025/sales-01.csv".into(),
            "2025/sales-02.csv".into(),
            "2025/q1/deep-file.bin".into(),
            format!("2025/{long}"),
            format!("{long}/inside-long.txt"),
            format!("{long}/{long}/x"),
            "a/x".into(),
            "b/x".into(),
            "sp ace/ünï/€".into(),
        ]
    }

    /// Every call, names mapped: the blob files and the raw listing hold no plaintext
    /// component, listings (flat and grouped, paged 1 at a time) give back exactly the names
    /// written, with their data, and the model (a set of names) agrees.
    #[tokio::test]
    async fn the_wrapper_maps_every_call_and_listings_decrypt() {
        let (dir, raw) = embedded().await;
        check_marker(&raw, &key(1), true).await.unwrap();
        let wrapper = EncryptedNames::new(raw.clone(), key(1));
        let store: &dyn BlobStore = &wrapper;
        let names = tree();
        for name in &names {
            put(store, name).await;
        }
        let model: BTreeSet<String> = names.iter().cloned().collect();
        let listed: BTreeSet<String> = list_all(store, "", None)
            .await
            .unwrap()
            .blobs
            .into_iter()
            .map(|b| b.name)
            .collect();
        assert_eq!(listed, model);
        for name in &names {
            let data = store.get(name, None, None, None).await.unwrap();
            assert_eq!(data, format!("data {}", name.len()).as_bytes());
            let properties = store.properties(name, None).await.unwrap();
            assert!(!properties.metadata.contains_key(META_NAME));
        }
        // Grouped listings, one entry per page, at each level.
        for prefix in ["", "2025/", &format!("{}/", "l".repeat(200))] {
            let mut marker: Option<String> = None;
            let mut entries = Vec::new();
            loop {
                let page = store
                    .list(&ListOptions {
                        prefix,
                        delimiter: Some("/"),
                        marker: marker.as_deref(),
                        max_results: Some(1),
                    })
                    .await
                    .unwrap();
                entries.extend(page.blobs.into_iter().map(|b| b.name));
                entries.extend(page.prefixes);
                match page.next_marker {
                    Some(next) => marker = Some(next),
                    None => break,
                }
            }
            let mut expected: BTreeSet<String> = BTreeSet::new();
            for name in model.iter().filter(|n| n.starts_with(prefix)) {
                let rest = &name[prefix.len()..];
                expected.insert(match rest.find('/') {
                    Some(at) => format!("{prefix}{}/", &rest[..at]),
                    None => name.clone(),
                });
            }
            assert_eq!(
                entries.into_iter().collect::<BTreeSet<_>>(),
                expected,
                "{prefix:?}"
            );
        }
        // Nothing below the wrapper holds a plaintext component.
        let raw_names = list_all(&raw, "", None).await.unwrap().blobs;
        let mut files = Vec::new();
        for entry in walk(dir.path()) {
            files.push(entry);
        }
        for component in [
            "top-level",
            "sales-0",
            "deep-file",
            "inside-long",
            "llllllll",
            "sp ace",
            "ünï",
        ] {
            for blob in &raw_names {
                assert!(
                    !blob.name.contains(component),
                    "{} holds {component}",
                    blob.name
                );
            }
            for file in &files {
                assert!(!file.contains(component), "{file} holds {component}");
                let encoded: String = percent_encoding::utf8_percent_encode(
                    component,
                    percent_encoding::NON_ALPHANUMERIC,
                )
                .to_string();
                assert!(!file.contains(&encoded), "{file} holds {component}");
            }
        }
        // Equal names in different directories are stored differently.
        let stored_a = wrapper.stored("a/x").unwrap();
        let stored_b = wrapper.stored("b/x").unwrap();
        assert_ne!(
            stored_a.rsplit('/').next(),
            stored_b.rsplit('/').next(),
            "a/x and b/x"
        );
        // Rename of a file (copy and delete, as the mount does), and delete.
        let data = store
            .get("2025/sales-01.csv", None, None, None)
            .await
            .unwrap();
        store
            .put(
                "2025/renamed.csv",
                data,
                &Metadata::new(),
                &Condition::None,
                None,
            )
            .await
            .unwrap();
        store
            .delete("2025/sales-01.csv", &Condition::None)
            .await
            .unwrap();
        assert!(matches!(
            store.properties("2025/sales-01.csv", None).await,
            Err(StoreError::BlobNotFound(n)) if n == "2025/sales-01.csv"
        ));
        assert!(store.properties("2025/renamed.csv", None).await.is_ok());
        // Local access maps names too.
        let local = store.local().expect("over the embedded store");
        local
            .put(
                "local/one",
                Bytes::from_static(b"1"),
                &Metadata::new(),
                &Condition::None,
                None,
            )
            .unwrap();
        assert_eq!(
            &store.get("local/one", None, None, None).await.unwrap()[..],
            b"1"
        );
        assert_eq!(&local.get("local/one", None, None, None).unwrap()[..], b"1");
        assert!(local.properties("local/one", None).is_ok());
        assert!(raw.local().unwrap().properties("local/one", None).is_err());
    }

    fn walk(dir: &std::path::Path) -> Vec<String> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            out.push(entry.file_name().to_string_lossy().into_owned());
            if entry.file_type().unwrap().is_dir() {
                out.extend(walk(&entry.path()));
            } else {
                let text =
                    String::from_utf8_lossy(&std::fs::read(entry.path()).unwrap()).into_owned();
                out.push(text);
            }
        }
        out
    }

    #[tokio::test]
    async fn prefixes_must_be_whole_components_and_foreign_names_are_errors() {
        let (_dir, raw) = embedded().await;
        let wrapper = EncryptedNames::new(raw.clone(), key(1));
        let store: &dyn BlobStore = &wrapper;
        put(store, "dir/file").await;
        let partial = store
            .list(&ListOptions {
                prefix: "di",
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(partial.to_string().contains("\"di\""), "{partial}");
        assert!(
            store
                .list(&ListOptions {
                    delimiter: Some("-"),
                    ..Default::default()
                })
                .await
                .is_err()
        );
        // A blob the key cannot read (a plain name, or the store read under another key).
        let other = EncryptedNames::new(raw.clone(), key(2));
        let error = list_all(&other, "", None).await.unwrap_err();
        assert!(error.to_string().contains("cannot read"), "{error}");
        put(&raw, "plain-name").await;
        let error = list_all(store, "", None).await.unwrap_err();
        assert!(error.to_string().contains("plain-name"), "{error}");
        // Too long once encrypted.
        let deep = vec!["d"; 30].join("/");
        assert!(matches!(
            store.properties(&deep, None).await,
            Err(StoreError::NameTooLong(n)) if n == deep
        ));
    }

    #[tokio::test]
    async fn the_marker_tells_keys_and_plain_stores_apart() {
        let (_dir, raw) = embedded().await;
        assert!(!has_marker(&raw).await.unwrap());
        check_marker(&raw, &key(1), false).await.unwrap();
        assert!(
            !has_marker(&raw).await.unwrap(),
            "a reader writes no marker"
        );
        check_marker(&raw, &key(1), true).await.unwrap();
        assert!(has_marker(&raw).await.unwrap());
        check_marker(&raw, &key(1), true).await.unwrap();
        let wrong = check_marker(&raw, &key(2), false).await.unwrap_err();
        assert!(wrong.to_string().contains("another key"), "{wrong}");
        assert!(wrong.to_string().contains(&raw.location()), "{wrong}");
        // The marker is hidden from listings through the wrapper.
        let store = EncryptedNames::new(raw.clone(), key(1));
        assert!(
            list_all(&store, "", Some("/"))
                .await
                .unwrap()
                .blobs
                .is_empty()
        );

        let (_plain_dir, plain) = embedded().await;
        put(&plain, "2025/sales.csv").await;
        let mixed = check_marker(&plain, &key(1), true).await.unwrap_err();
        assert!(mixed.to_string().contains("plain names"), "{mixed}");
        assert!(!has_marker(&plain).await.unwrap(), "nothing written");
    }
}
