//! The blob-store abstraction: one async trait, shared types and errors, and the backends.
//!
//! A store is bound to one container. Everything upload, download and the mount need is here:
//! ranged reads, whole-blob puts, staged blocks committed atomically as a block list (Azure's Put
//! Block / Put Block List: staged blocks are invisible until the commit), properties with user
//! metadata, hierarchical listing, deletes, etag conditions, and container create/exists. The
//! protection mode travels with each request as an optional [`CustomerKey`] (Azure CPK); client-side
//! encryption (EBF) happens above the store, which then only ever sees ciphertext. The calls a
//! local backend can make on the caller's thread are one explicit capability
//! ([`local_access`], [`BlobStore::local`]).
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod attributes;
pub mod azure;
mod error;
pub mod faults;
pub mod local;
pub mod local_access;
mod location;
pub mod names;
pub mod protection;
pub mod redact;
pub mod retry;

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::SystemTime;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use zeroize::Zeroizing;

pub use error::{StoreError, StoreResult};
pub use local_access::{LocalAccess, PinnedBlob, try_locally};
pub use location::{StoreLocation, open_store, open_store_with};
pub use retry::RetryPolicy;

/// User metadata of a blob (`x-ms-meta-*` on Azure): lower-case ASCII names.
pub type Metadata = BTreeMap<String, String>;

/// A customer-provided AES-256 key (Azure CPK): the service encrypts at rest with it and refuses
/// every read or write of the blob without it.
#[derive(Clone)]
pub struct CustomerKey {
    key: Zeroizing<[u8; 32]>,
    sha256: [u8; 32],
}

impl CustomerKey {
    /// Wraps a 32-byte key.
    pub fn new(key: [u8; 32]) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &key);
        Self {
            key: Zeroizing::new(key),
            sha256: digest.as_ref().try_into().expect("32 bytes"),
        }
    }

    /// The customer key encfs sends for a data key: never the DEK itself (a key has one
    /// purpose), but [`encfs_crypto::DataKey::customer_key`], derived under its own HKDF label.
    /// Every code path that turns a key file or a datastore's key into a CPK key goes through here.
    pub fn from_data_key(key: &encfs_crypto::DataKey) -> Self {
        Self::new(*key.customer_key().dangerous_bytes())
    }

    /// The key bytes (sent base64-encoded in `x-ms-encryption-key`).
    pub fn dangerous_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// Base64 of the key's SHA-256 (`x-ms-encryption-key-sha256`).
    pub fn sha256_base64(&self) -> String {
        BASE64.encode(self.sha256)
    }

    /// Base64 of the key (`x-ms-encryption-key`).
    pub fn key_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(BASE64.encode(*self.key))
    }
}

impl std::fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CustomerKey(sha256={})", self.sha256_base64())
    }
}

/// A precondition on a write or delete.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Condition {
    /// Unconditional.
    #[default]
    None,
    /// Only if the blob's current etag is this one (`If-Match`).
    IfMatch(String),
    /// Only if the blob does not exist (`If-None-Match: *`).
    IfNotExists,
}

/// What a store knows about one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobProperties {
    /// Stored length in bytes.
    pub size: u64,
    /// Opaque version tag; changes on every write.
    pub etag: String,
    /// Time of the last write.
    pub last_modified: SystemTime,
    /// User metadata.
    pub metadata: Metadata,
}

/// One blob in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobItem {
    /// Full blob name.
    pub name: String,
    /// Its properties (metadata included).
    pub properties: BlobProperties,
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Blobs on this page, in name order.
    pub blobs: Vec<BlobItem>,
    /// With a delimiter: the "directories" (`prefix + segment + delimiter`) on this page.
    pub prefixes: Vec<String>,
    /// Where the next page starts, if there is one.
    pub next_marker: Option<String>,
}

/// Options of a listing call.
#[derive(Debug, Clone, Default)]
pub struct ListOptions<'a> {
    /// Only names starting with this.
    pub prefix: &'a str,
    /// Group names by the next occurrence of this after the prefix (usually `/`).
    pub delimiter: Option<&'a str>,
    /// Continue from a previous page's `next_marker`.
    pub marker: Option<&'a str>,
    /// Page size (the store may return fewer).
    pub max_results: Option<u32>,
}

/// A blob store bound to one container. Every method names the blob it works on in its errors.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// A printable address of the container (URL or path), for messages.
    fn location(&self) -> String;

    /// Creates the container; `Ok(false)` when it already existed.
    async fn create_container(&self) -> StoreResult<bool>;

    /// Whether the container exists.
    async fn container_exists(&self) -> StoreResult<bool>;

    /// Reads `range` of a blob (`None`: the whole blob). A range past the end is clamped.
    /// With `if_match`, only that version of the blob (`If-Match` on Azure): a blob overwritten
    /// since fails with [`StoreError::Changed`], so ranged reads of one version never mix two.
    async fn get(
        &self,
        name: &str,
        range: Option<Range<u64>>,
        cpk: Option<&CustomerKey>,
        if_match: Option<&str>,
    ) -> StoreResult<Bytes>;

    /// Writes a whole blob in one request; returns the new etag.
    async fn put(
        &self,
        name: &str,
        data: Bytes,
        metadata: &Metadata,
        condition: &Condition,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<String>;

    /// Stages one block of a future blob. Invisible to readers until [`Self::commit_blocks`].
    /// `block_id` must be at most 64 bytes, and all ids of one blob the same length.
    async fn stage_block(
        &self,
        name: &str,
        block_id: &str,
        data: Bytes,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<()>;

    /// [`Self::stage_block`] with a hint: the block will lie at byte `offset` of the committed
    /// blob. Backends that can place it there at once (the embedded store) then commit without
    /// copying; the others ignore the hint.
    async fn stage_block_at(
        &self,
        name: &str,
        block_id: &str,
        offset: u64,
        data: Bytes,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<()> {
        let _ = offset;
        self.stage_block(name, block_id, data, cpk).await
    }

    /// Atomically replaces the blob with the concatenation of the staged blocks, in order.
    async fn commit_blocks(
        &self,
        name: &str,
        block_ids: &[String],
        metadata: &Metadata,
        condition: &Condition,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<String>;

    /// Replaces a committed blob's user metadata without rewriting its data (Azure: Set Blob
    /// Metadata, `comp=metadata`; the embedded store copies the data file to file). Returns the
    /// new etag; the last-modified time changes as on Azure.
    async fn set_metadata(
        &self,
        name: &str,
        metadata: &Metadata,
        condition: &Condition,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<String>;

    /// Size, etag, time and metadata of a blob.
    async fn properties(
        &self,
        name: &str,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<BlobProperties>;

    /// One page of the blobs in the container.
    async fn list(&self, options: &ListOptions<'_>) -> StoreResult<Listing>;

    /// The names of every blob under `prefix`, sorted, without their properties. The default
    /// pages through [`Self::list`], so every store and wrapper answers it correctly; a store
    /// that can name its blobs without reading each one (the embedded store: one directory
    /// read instead of a header read per blob) answers faster.
    async fn list_names(&self, prefix: &str) -> StoreResult<Vec<String>> {
        let listing = list_all(self, prefix, None).await?;
        let mut names: Vec<String> = listing.blobs.into_iter().map(|b| b.name).collect();
        names.sort();
        Ok(names)
    }

    /// Deletes a blob.
    async fn delete(&self, name: &str, condition: &Condition) -> StoreResult<()>;

    /// Drops blocks staged under `block_ids` and never committed: a writer gave up (the file was
    /// unlinked, its commit failed for lack of space), and its staging should not hold the disk.
    /// Blocks of other writers are untouched. Required of every store and wrapper, so that no
    /// wrapper silently keeps a writer's staging alive. Azure has no such call (the service drops
    /// uncommitted blocks at the blob's next commit, or after a week): it does nothing there.
    async fn discard_staged(&self, name: &str, block_ids: &[String]) -> StoreResult<()>;

    /// The store's calls on the calling thread ([`LocalAccess`]), or `None` when it has none
    /// (Azure: every call is a request over the network). Required of every store and wrapper, so
    /// that none drops it by omission: a wrapper forwards its inner store's, offers a view of its
    /// own over it, or says `None` on purpose. Constant for the life of the store.
    fn local(&self) -> Option<&dyn LocalAccess>;
}

/// A shared store is a store (lets wrappers such as [`faults::SlowStore`] wrap `Arc<dyn BlobStore>`).
#[async_trait]
impl<T: BlobStore + ?Sized> BlobStore for std::sync::Arc<T> {
    fn location(&self) -> String {
        (**self).location()
    }
    async fn create_container(&self) -> StoreResult<bool> {
        (**self).create_container().await
    }
    async fn container_exists(&self) -> StoreResult<bool> {
        (**self).container_exists().await
    }
    async fn get(
        &self,
        name: &str,
        range: Option<Range<u64>>,
        cpk: Option<&CustomerKey>,
        if_match: Option<&str>,
    ) -> StoreResult<Bytes> {
        (**self).get(name, range, cpk, if_match).await
    }
    async fn put(
        &self,
        name: &str,
        data: Bytes,
        metadata: &Metadata,
        condition: &Condition,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<String> {
        (**self).put(name, data, metadata, condition, cpk).await
    }
    async fn stage_block(
        &self,
        name: &str,
        block_id: &str,
        data: Bytes,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<()> {
        (**self).stage_block(name, block_id, data, cpk).await
    }
    async fn stage_block_at(
        &self,
        name: &str,
        block_id: &str,
        offset: u64,
        data: Bytes,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<()> {
        (**self)
            .stage_block_at(name, block_id, offset, data, cpk)
            .await
    }
    async fn commit_blocks(
        &self,
        name: &str,
        block_ids: &[String],
        metadata: &Metadata,
        condition: &Condition,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<String> {
        (**self)
            .commit_blocks(name, block_ids, metadata, condition, cpk)
            .await
    }
    async fn set_metadata(
        &self,
        name: &str,
        metadata: &Metadata,
        condition: &Condition,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<String> {
        (**self).set_metadata(name, metadata, condition, cpk).await
    }
    async fn properties(
        &self,
        name: &str,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<BlobProperties> {
        (**self).properties(name, cpk).await
    }
    async fn list(&self, options: &ListOptions<'_>) -> StoreResult<Listing> {
        (**self).list(options).await
    }
    async fn list_names(&self, prefix: &str) -> StoreResult<Vec<String>> {
        (**self).list_names(prefix).await
    }
    async fn delete(&self, name: &str, condition: &Condition) -> StoreResult<()> {
        (**self).delete(name, condition).await
    }
    async fn discard_staged(&self, name: &str, block_ids: &[String]) -> StoreResult<()> {
        (**self).discard_staged(name, block_ids).await
    }
    fn local(&self) -> Option<&dyn LocalAccess> {
        (**self).local()
    }
}

/// Lists every page. Convenience over [`BlobStore::list`].
pub async fn list_all<S: BlobStore + ?Sized>(
    store: &S,
    prefix: &str,
    delimiter: Option<&str>,
) -> StoreResult<Listing> {
    let mut all = Listing::default();
    let mut marker: Option<String> = None;
    loop {
        let options = ListOptions {
            prefix,
            delimiter,
            marker: marker.as_deref(),
            max_results: Some(5000),
        };
        let page = store.list(&options).await?;
        all.blobs.extend(page.blobs);
        all.prefixes.extend(page.prefixes);
        match page.next_marker {
            Some(next) if !next.is_empty() => marker = Some(next),
            _ => return Ok(all),
        }
    }
}

/// The block ids of one version of a blob under construction.
///
/// Every writer (an upload of one file, one version of a file in the mount) draws its own random
/// 64-bit version tag, so two writers of the same blob never stage under the same id: a commit
/// names only its own blocks, and a late block of one writer can never stand in for another's.
/// Ids are fixed width (Azure requires all ids of a blob to be the same length): the base64 of
/// `"{tag:016x}-{index:015}"`, 32 bytes, 44 characters. The tag is also the staging group by which
/// the embedded store keeps one assembly file per version ([`staging_group`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockIds {
    tag: u64,
}

impl BlockIds {
    /// A fresh version tag from the OS RNG.
    pub fn new() -> Self {
        let mut random = [0u8; 8];
        aws_lc_rs::rand::fill(&mut random).expect("OS RNG");
        Self {
            tag: u64::from_le_bytes(random),
        }
    }

    /// The id of block number `index` (below 10^15).
    pub fn id(&self, index: u64) -> String {
        BASE64.encode(format!("{:016x}-{index:015}", self.tag))
    }
}

impl Default for BlockIds {
    fn default() -> Self {
        Self::new()
    }
}

/// The version tag (16 hex digits) of an id made by [`BlockIds`], or `None` for an id of another
/// shape (a client other than encfs): the embedded store groups staged blocks by it.
pub fn staging_group(block_id: &str) -> Option<String> {
    let raw = BASE64.decode(block_id).ok()?;
    let text = std::str::from_utf8(&raw).ok()?;
    let (tag, index) = text.split_once('-')?;
    (tag.len() == 16
        && tag.bytes().all(|b| b.is_ascii_hexdigit())
        && index.bytes().all(|b| b.is_ascii_digit()))
    .then(|| tag.to_ascii_lowercase())
}

/// Applies prefix, delimiter, marker and page size to a sorted list of names: the listing
/// semantics shared by backends that hold names locally.
///
/// Each name stands for one entry: itself, or with a delimiter, the prefix it falls under
/// (`prefix + segment + delimiter`). Entries never decrease in name order (a name's entry is a
/// prefix of it, ending at its first delimiter), so a page is the next `max_results` distinct
/// entries and its marker is the last of them: the next page starts after every name whose entry
/// is at or before it. A prefix is thus listed once, whatever the page size, and every page
/// advances.
pub(crate) fn paginate<T>(
    items: Vec<(String, T)>,
    options: &ListOptions<'_>,
) -> (Vec<(String, T)>, Vec<String>, Option<String>) {
    let max = options.max_results.unwrap_or(5000).max(1) as usize;
    let delimiter = options.delimiter.filter(|d| !d.is_empty());
    let mut blobs = Vec::new();
    let mut prefixes: Vec<String> = Vec::new();
    // The entry emitted last (a blob name or a prefix) and how many were emitted.
    let mut last: Option<String> = None;
    let mut emitted = 0;
    for (name, item) in items {
        let Some(rest) = name.strip_prefix(options.prefix) else {
            continue;
        };
        let group = delimiter
            .and_then(|d| rest.find(d).map(|at| at + d.len()))
            .map(|end| format!("{}{}", options.prefix, &rest[..end]));
        let entry = group.as_deref().unwrap_or(&name);
        if options.marker.is_some_and(|m| entry <= m) || last.as_deref() == Some(entry) {
            continue;
        }
        if emitted == max {
            return (blobs, prefixes, last);
        }
        emitted += 1;
        last = Some(entry.to_owned());
        match group {
            Some(prefix) => prefixes.push(prefix),
            None => blobs.push((name, item)),
        }
    }
    (blobs, prefixes, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<(String, ())> {
        list.iter().map(|n| (n.to_string(), ())).collect()
    }

    #[test]
    fn paginate_prefix_delimiter_marker() {
        let all = names(&["a/1", "a/2", "a/b/3", "b", "c/4"]);
        let options = ListOptions {
            prefix: "",
            delimiter: Some("/"),
            ..Default::default()
        };
        let (blobs, prefixes, next) = paginate(all.clone(), &options);
        assert_eq!(
            blobs.iter().map(|b| b.0.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        assert_eq!(prefixes, ["a/", "c/"]);
        assert_eq!(next, None);
        let options = ListOptions {
            prefix: "a/",
            delimiter: Some("/"),
            ..Default::default()
        };
        let (blobs, prefixes, _) = paginate(all.clone(), &options);
        assert_eq!(blobs.len(), 2);
        assert_eq!(prefixes, ["a/b/"]);
        let options = ListOptions {
            max_results: Some(2),
            ..Default::default()
        };
        let (page, _, next) = paginate(all.clone(), &options);
        assert_eq!(page.len(), 2);
        let options = ListOptions {
            max_results: Some(2),
            marker: next.as_deref(),
            ..Default::default()
        };
        let (page, _, _) = paginate(all, &options);
        assert_eq!(page[0].0, "a/b/3");
    }

    /// Every page of a listing, following the markers (at most one page per name, plus one).
    fn all_pages(
        items: &[(String, ())],
        prefix: &str,
        delimiter: Option<&str>,
        max_results: u32,
    ) -> Vec<(Vec<String>, Vec<String>)> {
        let mut pages = Vec::new();
        let mut marker: Option<String> = None;
        for _ in 0..=items.len() {
            let options = ListOptions {
                prefix,
                delimiter,
                marker: marker.as_deref(),
                max_results: Some(max_results),
            };
            let (blobs, prefixes, next) = paginate(items.to_vec(), &options);
            pages.push((blobs.into_iter().map(|(n, _)| n).collect(), prefixes));
            match next {
                Some(next) => marker = Some(next),
                None => return pages,
            }
        }
        panic!("the listing did not end after {} pages", pages.len());
    }

    #[test]
    fn a_run_of_names_under_one_prefix_is_listed_once_and_pages_advance() {
        let all = names(&["a/1", "a/2", "a/3", "b", "c/1", "c/2"]);
        for max in [1, 2] {
            let pages = all_pages(&all, "", Some("/"), max);
            let prefixes: Vec<String> = pages.iter().flat_map(|p| p.1.clone()).collect();
            let blobs: Vec<String> = pages.iter().flat_map(|p| p.0.clone()).collect();
            assert_eq!(prefixes, ["a/", "c/"], "page size {max}");
            assert_eq!(blobs, ["b"], "page size {max}");
        }
    }

    /// The listing a model computes: the distinct entries (blob names, or the prefix a name
    /// falls under) of the names starting with `prefix`, in order.
    fn model_listing(
        names: &std::collections::BTreeSet<String>,
        prefix: &str,
        delimiter: Option<&str>,
    ) -> Vec<(String, bool)> {
        let mut entries = std::collections::BTreeSet::new();
        for name in names.iter().filter(|n| n.starts_with(prefix)) {
            let rest = &name[prefix.len()..];
            match delimiter.and_then(|d| rest.find(d).map(|at| (at, d))) {
                Some((at, d)) => entries.insert((format!("{prefix}{}{d}", &rest[..at]), true)),
                None => entries.insert((name.clone(), false)),
            };
        }
        entries.into_iter().collect()
    }

    proptest::proptest! {
        #[test]
        fn pages_concatenated_are_the_whole_listing(
            names in proptest::collection::btree_set("[ab/]{0,6}", 0..40),
            prefix in proptest::sample::select(vec!["", "a", "a/", "b/", "ab"]),
            delimiter in proptest::sample::select(vec![None, Some("/"), Some("ab"), Some("")]),
            max in 1u32..8,
        ) {
            let items: Vec<(String, ())> = names.iter().map(|n| (n.clone(), ())).collect();
            let expected = model_listing(&names, prefix, delimiter.filter(|d| !d.is_empty()));
            let pages = all_pages(&items, prefix, delimiter, max);
            let mut got = Vec::new();
            for (i, (blobs, prefixes)) in pages.iter().enumerate() {
                let len = blobs.len() + prefixes.len();
                // Full pages but the last, and the last is empty only when everything is.
                proptest::prop_assert!(len <= max as usize);
                if i + 1 < pages.len() {
                    proptest::prop_assert_eq!(len, max as usize);
                } else {
                    proptest::prop_assert!(len > 0 || expected.is_empty());
                }
                let mut page: Vec<(String, bool)> = blobs.iter().map(|b| (b.clone(), false)).collect();
                page.extend(prefixes.iter().map(|p| (p.clone(), true)));
                page.sort();
                got.extend(page);
            }
            proptest::prop_assert_eq!(&got, &expected);
            // And one page of everything is the same listing.
            let whole = all_pages(&items, prefix, delimiter, 5000);
            proptest::prop_assert_eq!(whole.len(), 1);
        }
    }

    #[test]
    fn cpk_digest_and_debug() {
        let key = CustomerKey::new([1; 32]);
        assert_eq!(key.sha256_base64().len(), 44);
        assert!(!format!("{key:?}").contains(&*key.key_base64()));
        let ids = BlockIds::new();
        assert_eq!(ids.id(1).len(), ids.id(999_999_999).len());
        assert_eq!(ids.id(0).len(), 44);
        assert_ne!(
            ids.id(0),
            BlockIds::new().id(0),
            "each version has its own ids"
        );
        let group = staging_group(&ids.id(7)).expect("an encfs id");
        assert_eq!(staging_group(&ids.id(8)), Some(group.clone()));
        assert_ne!(staging_group(&BlockIds::new().id(7)), Some(group));
        assert_eq!(staging_group(&BASE64.encode("someone-else")), None);
        assert_eq!(staging_group("not base64!"), None);
    }
}
