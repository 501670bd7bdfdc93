//! The blob-store abstraction: one async trait, shared types and errors, and the backends.
//!
//! A store is bound to one container. Everything upload, download and the mount need is here:
//! ranged reads, whole-blob puts, staged blocks committed atomically as a block list (Azure's Put
//! Block / Put Block List: staged blocks are invisible until the commit), properties with user
//! metadata, hierarchical listing, deletes, etag conditions, and container create/exists. The
//! protection mode travels with each request as an optional [`CustomerKey`] (Azure CPK); client-side
//! encryption (EBF) happens above the store, which then only ever sees ciphertext.

pub mod azure;
mod error;
pub mod faults;
pub mod local;
mod location;

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::SystemTime;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use zeroize::Zeroizing;

pub use error::{StoreError, StoreResult};
pub use location::{StoreLocation, open_store, open_store_with};

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
    async fn get(
        &self,
        name: &str,
        range: Option<Range<u64>>,
        cpk: Option<&CustomerKey>,
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

    /// Deletes a blob.
    async fn delete(&self, name: &str, condition: &Condition) -> StoreResult<()>;

    /// One version of a blob held open for reads on the calling thread (the embedded store): the
    /// mount reads every segment of a file through it without reopening anything. `None`: not
    /// supported, use [`Self::get`].
    fn pin_blocking(
        &self,
        _name: &str,
        _cpk: Option<&CustomerKey>,
    ) -> Option<StoreResult<Box<dyn PinnedBlob>>> {
        None
    }

    /// [`Self::get`] done on the calling thread, for backends that read local files: the mount's
    /// read path then costs no thread hand-offs. `None`: not supported, use [`Self::get`].
    fn get_blocking(
        &self,
        _name: &str,
        _range: Option<Range<u64>>,
        _cpk: Option<&CustomerKey>,
    ) -> Option<StoreResult<Bytes>> {
        None
    }

    /// [`Self::properties`] done on the calling thread (the embedded store). `None`: not supported.
    fn properties_blocking(
        &self,
        _name: &str,
        _cpk: Option<&CustomerKey>,
    ) -> Option<StoreResult<BlobProperties>> {
        None
    }

    /// [`Self::put`] done on the calling thread (the embedded store): an upload of a small file
    /// then costs no thread hand-offs. `None`: not supported (nothing was written).
    fn put_blocking(
        &self,
        _name: &str,
        _data: Bytes,
        _metadata: &Metadata,
        _condition: &Condition,
        _cpk: Option<&CustomerKey>,
    ) -> Option<StoreResult<String>> {
        None
    }

    /// Whether [`Self::read_staged_blocking`] serves blocks staged and not yet committed (the
    /// embedded store). Azure never serves uncommitted blocks: a writer that may need a staged
    /// block back keeps its own copy there.
    fn reads_staged(&self) -> bool {
        false
    }

    /// The bytes of a block staged under `block_id` and not yet committed, read on the calling
    /// thread. `None`: not supported ([`Self::reads_staged`] is false).
    fn read_staged_blocking(
        &self,
        _name: &str,
        _block_id: &str,
        _cpk: Option<&CustomerKey>,
    ) -> Option<StoreResult<Bytes>> {
        None
    }
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
    ) -> StoreResult<Bytes> {
        (**self).get(name, range, cpk).await
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
    async fn delete(&self, name: &str, condition: &Condition) -> StoreResult<()> {
        (**self).delete(name, condition).await
    }
    fn get_blocking(
        &self,
        name: &str,
        range: Option<Range<u64>>,
        cpk: Option<&CustomerKey>,
    ) -> Option<StoreResult<Bytes>> {
        (**self).get_blocking(name, range, cpk)
    }
    fn pin_blocking(
        &self,
        name: &str,
        cpk: Option<&CustomerKey>,
    ) -> Option<StoreResult<Box<dyn PinnedBlob>>> {
        (**self).pin_blocking(name, cpk)
    }
    fn properties_blocking(
        &self,
        name: &str,
        cpk: Option<&CustomerKey>,
    ) -> Option<StoreResult<BlobProperties>> {
        (**self).properties_blocking(name, cpk)
    }
    fn put_blocking(
        &self,
        name: &str,
        data: Bytes,
        metadata: &Metadata,
        condition: &Condition,
        cpk: Option<&CustomerKey>,
    ) -> Option<StoreResult<String>> {
        (**self).put_blocking(name, data, metadata, condition, cpk)
    }
    fn reads_staged(&self) -> bool {
        (**self).reads_staged()
    }
    fn read_staged_blocking(
        &self,
        name: &str,
        block_id: &str,
        cpk: Option<&CustomerKey>,
    ) -> Option<StoreResult<Bytes>> {
        (**self).read_staged_blocking(name, block_id, cpk)
    }
}

/// One version of one blob, readable on the calling thread (see [`BlobStore::pin_blocking`]).
pub trait PinnedBlob: Send + Sync {
    /// Its length.
    fn len(&self) -> u64;
    /// Its version.
    fn etag(&self) -> &str;
    /// Whether it is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Reads `range` (clamped to the blob).
    fn read(&self, range: Range<u64>) -> StoreResult<Bytes>;
    /// Appends `range` (clamped to the blob) to `out`, whose capacity the caller provides.
    fn read_into(&self, range: Range<u64>, out: &mut Vec<u8>) -> StoreResult<()> {
        out.extend_from_slice(&self.read(range)?);
        Ok(())
    }
}

/// Lists every page. Convenience over [`BlobStore::list`].
pub async fn list_all(
    store: &dyn BlobStore,
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

/// A block id for block number `index` of a blob: fixed width, as Azure requires.
pub fn block_id(index: u64) -> String {
    BASE64.encode(format!("encfs-block-{index:012}"))
}

/// Applies prefix, delimiter, marker and page size to a sorted list of names: the listing
/// semantics shared by backends that hold names locally.
pub(crate) fn paginate<T>(
    items: Vec<(String, T)>,
    options: &ListOptions<'_>,
) -> (Vec<(String, T)>, Vec<String>, Option<String>) {
    let max = options.max_results.unwrap_or(5000).max(1) as usize;
    let mut blobs = Vec::new();
    let mut prefixes: Vec<String> = Vec::new();
    let mut next_marker = None;
    for (name, item) in items {
        if !name.starts_with(options.prefix) || options.marker.is_some_and(|m| name.as_str() <= m) {
            continue;
        }
        if blobs.len() + prefixes.len() == max {
            next_marker = blobs
                .last()
                .map(|(n, _): &(String, T)| n.clone())
                .max(prefixes.last().cloned());
            break;
        }
        let rest = &name[options.prefix.len()..];
        match options
            .delimiter
            .filter(|d| !d.is_empty())
            .and_then(|d| rest.find(d).map(|at| at + d.len()))
        {
            Some(end) => {
                let prefix = format!("{}{}", options.prefix, &rest[..end]);
                if prefixes.last() != Some(&prefix) {
                    prefixes.push(prefix);
                }
            }
            None => blobs.push((name, item)),
        }
    }
    (blobs, prefixes, next_marker)
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

    #[test]
    fn cpk_digest_and_debug() {
        let key = CustomerKey::new([1; 32]);
        assert_eq!(key.sha256_base64().len(), 44);
        assert!(!format!("{key:?}").contains(&*key.key_base64()));
        assert_eq!(block_id(1).len(), block_id(999_999).len());
    }
}
