//! Local access: the calls a store can make on the caller's own thread, with no async runtime in
//! between.
//!
//! The embedded store reads and writes local files, so the mount's read path (a `pread` into a
//! pooled buffer on the FUSE thread), the write path (staged blocks read back) and the transfers'
//! small files (skip check, read, seal and put on one thread) skip the hand-offs of the async path
//! entirely: a task, a blocking-pool thread and a wake-up per call, which cost more than the work
//! itself for small reads and small files.
//!
//! This is one explicit capability, not a set of optional probes: [`BlobStore::local`] has no
//! default, so every store and every wrapper states whether it offers local access (the embedded
//! store: itself; Azure: `None`; a wrapper: its inner store's, a view of its own over it, or
//! `None` on purpose). A new wrapper that forgets it does not compile; one that forwards it
//! forwards all of it.
//!
//! **No retries on the calling thread.** A backoff would hold the caller's thread (a FUSE thread,
//! a small-file thread), and only the async calls run under the store's deadline. A call that
//! fails transiently ([`crate::StoreError::is_transient`]) goes back to its caller, which makes
//! the same call through the async [`BlobStore`] method: the retry layer
//! ([`crate::faults::RetryingStore`]) retries that one. [`try_locally`] makes both decisions
//! (local access or not, transient or not) for the calls that have an async twin.

use std::ops::Range;

use bytes::Bytes;

use super::{BlobProperties, BlobStore, Condition, CustomerKey, Metadata, StoreResult};

/// The calls a store makes on the calling thread ([`BlobStore::local`]). Each behaves as its async
/// twin on [`BlobStore`] (same results, same errors), except that none is retried.
pub trait LocalAccess: Send + Sync {
    /// The current version of a blob held open for reads ([`PinnedBlob`]): the mount reads every
    /// segment of an open file through it without reopening anything. `Ok(None)`: this blob is
    /// read with [`Self::get`] instead (the embedded store keeps a blob written under a customer
    /// key sealed under that key, so it cannot hand out ranges of it as they lie).
    fn pin(
        &self,
        name: &str,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<Option<Box<dyn PinnedBlob>>>;

    /// [`BlobStore::get`].
    fn get(
        &self,
        name: &str,
        range: Option<Range<u64>>,
        cpk: Option<&CustomerKey>,
        if_match: Option<&str>,
    ) -> StoreResult<Bytes>;

    /// [`BlobStore::properties`].
    fn properties(&self, name: &str, cpk: Option<&CustomerKey>) -> StoreResult<BlobProperties>;

    /// [`BlobStore::put`]. After a transient error nothing was written.
    fn put(
        &self,
        name: &str,
        data: Bytes,
        metadata: &Metadata,
        condition: &Condition,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<String>;

    /// The bytes of a block staged under `block_id` ([`BlobStore::stage_block`] or
    /// [`BlobStore::stage_block_at`]) and not yet committed, as last staged. A store with local
    /// access serves its staged blocks back, so a writer that may need one again (the mount's
    /// write path) keeps no copy of its own; a store without (Azure never serves uncommitted
    /// blocks) makes the writer keep one. This call has no async twin: its errors are final.
    fn read_staged(
        &self,
        name: &str,
        block_id: &str,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<Bytes>;
}

/// One version of one blob, readable on the calling thread (see [`LocalAccess::pin`]).
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

/// Makes `call` through the store's local access, on the calling thread. `None`: make the same
/// call through the async [`BlobStore`] method instead, because the store offers no local access
/// or because the call failed transiently (the async call is the one that is retried).
pub fn try_locally<S, T>(
    store: &S,
    call: impl FnOnce(&dyn LocalAccess) -> StoreResult<T>,
) -> Option<StoreResult<T>>
where
    S: BlobStore + ?Sized,
{
    match call(store.local()?) {
        Err(error) if error.is_transient() => None,
        result => Some(result),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::azure::AzureStore;
    use crate::faults::{FaultPlan, FaultyStore, RetryingStore, SlowStore};
    use crate::local::LocalStore;
    use crate::{RetryPolicy, StoreError};

    fn never_fails() -> FaultPlan {
        FaultPlan {
            fail_fraction: 0.0,
            timeout_fraction: 0.0,
            timeout: Duration::ZERO,
            seed: 1,
        }
    }

    fn always_fails() -> FaultPlan {
        FaultPlan {
            fail_fraction: 1.0,
            ..never_fails()
        }
    }

    /// A put and a get through `store`'s local access reach the embedded store underneath.
    fn round_trips_locally(what: &str, store: &dyn BlobStore, under: &LocalStore) {
        let local = store
            .local()
            .unwrap_or_else(|| panic!("{what} drops the embedded store's local access"));
        let name = format!("through/{what}");
        let etag = local
            .put(
                &name,
                Bytes::from_static(b"local"),
                &Metadata::new(),
                &Condition::None,
                None,
            )
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let direct = under.local().expect("the embedded store");
        assert_eq!(direct.properties(&name, None).unwrap().etag, etag, "{what}");
        assert_eq!(&local.get(&name, None, None, None).unwrap()[..], b"local");
    }

    /// Every wrapper stack that the mount, the transfers and the tests build over the embedded
    /// store keeps its local access (a wrapper that stopped forwarding it would send every small
    /// file and every read through the async path, silently slower); the stores that stand for
    /// a distant one (Azure, the latency wrapper) offer none.
    #[tokio::test]
    async fn wrapper_stacks_over_the_embedded_store_keep_local_access() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("c"));
        store.create_container().await.unwrap();
        let shared: Arc<dyn BlobStore> = Arc::new(store.clone());
        // What the CLI opens for a `file://` address (the mount and the transfers take that).
        let opened = crate::open_store(&format!("file://{}", dir.path().join("c").display()))
            .unwrap()
            .store;
        let retry = RetryPolicy::default;
        let stacks: Vec<(&str, Box<dyn BlobStore>)> = vec![
            ("local", Box::new(store.clone())),
            ("arc", Box::new(Arc::new(store.clone()))),
            ("arc-dyn", Box::new(shared.clone())),
            ("opened", Box::new(opened)),
            (
                "retrying",
                Box::new(RetryingStore::new(store.clone(), retry())),
            ),
            (
                "retrying-arc-dyn",
                Box::new(RetryingStore::new(shared.clone(), retry())),
            ),
            (
                "faulty",
                Box::new(FaultyStore::new(store.clone(), never_fails())),
            ),
            (
                "retrying-faulty",
                Box::new(RetryingStore::new(
                    FaultyStore::new(store.clone(), never_fails()),
                    retry(),
                )),
            ),
            (
                "arc-retrying-faulty-arc-dyn",
                Box::new(Arc::new(RetryingStore::new(
                    FaultyStore::new(shared.clone(), never_fails()),
                    retry(),
                ))),
            ),
        ];
        for (what, stack) in &stacks {
            round_trips_locally(what, &**stack, &store);
        }

        let slow = SlowStore::new(store.clone(), Duration::ZERO, Duration::ZERO, None);
        assert!(
            slow.local().is_none(),
            "the latency wrapper delays every call"
        );
        let azure =
            AzureStore::new("http://127.0.0.1:1/devstoreaccount1/never-reached", None).unwrap();
        assert!(azure.local().is_none());
        let retrying_azure = RetryingStore::new(azure, retry());
        assert!(retrying_azure.local().is_none());
        assert!(try_locally(&retrying_azure, |local| local.properties("x", None)).is_none());
        let opened = crate::open_store("http://127.0.0.1:1/devstoreaccount1/never-reached");
        assert!(opened.unwrap().store.local().is_none(), "Azure, as opened");
    }

    /// The fault wrapper faults calling-thread calls as it faults async ones; a transient fault
    /// sends the caller to the async call (which the retry layer retries), a lasting error does
    /// not.
    #[tokio::test]
    async fn a_transient_local_failure_hands_the_call_to_the_async_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("c"));
        store.create_container().await.unwrap();
        let faulty = RetryingStore::new(
            FaultyStore::new(store.clone(), always_fails()),
            RetryPolicy::default(),
        );
        let local = faulty.local().expect("offered over the embedded store");
        assert!(matches!(
            local.properties("x", None),
            Err(StoreError::Injected(_))
        ));
        assert!(try_locally(&faulty, |local| local.properties("x", None)).is_none());
        let missing = try_locally(&store, |local| local.properties("x", None));
        assert!(matches!(missing, Some(Err(StoreError::BlobNotFound(_)))));
    }
}
