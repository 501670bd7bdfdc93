//! Upload/download round trips in every protection mode, on the embedded store and Azurite, with
//! resumption, tampering, wrong keys and injected faults.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use encfs_crypto::DataKey;
use encfs_store::StoreError;
use encfs_store::azure::{AzureStore, Credentials, DEV_ACCOUNT, DEV_KEY};
use encfs_store::faults::{FaultPlan, FaultyStore, RetryingStore};
use encfs_store::local::LocalStore;
use encfs_store::{BlobStore, Condition, CustomerKey, Metadata, RetryPolicy, list_all};
use encfs_transfer::{
    Progress, Protection, TransferError, TransferOptions, download, download_listed, plan_upload,
    upload,
};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(97).wrapping_add(seed))
        .collect()
}

/// A source tree: many small files, one multi-block file, one empty file.
fn source_tree(root: &Path) {
    std::fs::create_dir_all(root.join("small/nested")).unwrap();
    for i in 0..40 {
        std::fs::write(
            root.join(format!("small/f{i:02}")),
            pattern(1000 + i * 37, i as u8),
        )
        .unwrap();
    }
    std::fs::write(root.join("small/nested/deep.csv"), b"a,b\n1,2\n").unwrap();
    std::fs::write(root.join("large.bin"), pattern(3 * 300_000 + 1234, 7)).unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();
}

fn assert_same_tree(a: &Path, b: &Path) {
    let left = plan_upload(a, "").unwrap();
    let right = plan_upload(b, "").unwrap();
    assert_eq!(
        left.iter().map(|i| &i.blob).collect::<Vec<_>>(),
        right.iter().map(|i| &i.blob).collect::<Vec<_>>()
    );
    for item in left {
        assert!(
            std::fs::read(&item.path).unwrap() == std::fs::read(b.join(&item.blob)).unwrap(),
            "{}",
            item.blob
        );
    }
}

fn options() -> TransferOptions {
    // Small blocks so the large file goes through staged blocks.
    TransferOptions {
        block_size: 256 << 10,
        memory_budget: 4 << 20,
        concurrent_files: 8,
        ..Default::default()
    }
}

fn counter() -> (Arc<AtomicU64>, Progress) {
    let total = Arc::new(AtomicU64::new(0));
    let inner = total.clone();
    (
        total,
        Arc::new(move |n| {
            inner.fetch_add(n, Ordering::Relaxed);
        }),
    )
}

async fn round_trip(store: Arc<dyn BlobStore>, protection: Protection) {
    let work = tempfile::tempdir().unwrap();
    let (src, dst) = (work.path().join("src"), work.path().join("dst"));
    source_tree(&src);
    store.create_container().await.unwrap();
    let items = plan_upload(&src, "data/").unwrap();
    let total: u64 = items.iter().map(|i| i.size).sum();
    let (uploaded, progress) = counter();
    let summary = upload(
        store.clone(),
        items.clone(),
        protection.clone(),
        options(),
        progress,
    )
    .await
    .unwrap();
    assert_eq!(
        (summary.files, summary.skipped, summary.bytes),
        (43, 0, total)
    );
    assert_eq!(uploaded.load(Ordering::Relaxed), total);

    // The store never holds plaintext in cse mode.
    if let Protection::Cse(_) = protection {
        let blob = store
            .get("data/small/nested/deep.csv", None, None, None)
            .await
            .unwrap();
        assert!(!blob.windows(3).any(|w| w == b"a,b"));
        assert_eq!(&blob[..8], b"encfsEBF");
    }

    // Re-running skips everything already committed from the same source.
    let again = upload(
        store.clone(),
        items,
        protection.clone(),
        options(),
        counter().1,
    )
    .await
    .unwrap();
    assert_eq!((again.files, again.skipped), (0, 43));

    let (downloaded, progress) = counter();
    let summary = download(
        store.clone(),
        "data/",
        &dst,
        protection.clone(),
        options(),
        progress,
    )
    .await
    .unwrap();
    assert_eq!(summary.files, 43);
    assert_eq!(downloaded.load(Ordering::Relaxed), total);
    assert_same_tree(&src, &dst);
}

fn local_store() -> (tempfile::TempDir, Arc<dyn BlobStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn BlobStore> = Arc::new(LocalStore::new(dir.path().join("c")));
    (dir, store)
}

fn cse() -> Protection {
    Protection::Cse(Arc::new(DataKey::generate().unwrap()))
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_cse_round_trip() {
    let (_dir, store) = local_store();
    round_trip(store, cse()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_cpk_round_trip() {
    let (_dir, store) = local_store();
    round_trip(store, Protection::Cpk(CustomerKey::new([5; 32]))).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_sse_round_trip() {
    let (_dir, store) = local_store();
    round_trip(store, Protection::Sse).await;
}

fn azurite(name: &str) -> Arc<dyn BlobStore> {
    let url = std::env::var("ENCFS_AZURITE_URL")
        .expect("ENCFS_AZURITE_URL unset: run scripts/test-all.sh");
    let mut suffix = [0u8; 4];
    aws_lc_rs::rand::fill(&mut suffix).unwrap();
    let container = format!(
        "{name}-{}",
        suffix
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    Arc::new(
        AzureStore::new(
            &format!("{url}/{container}"),
            Some(Credentials::shared_key(DEV_ACCOUNT, DEV_KEY).unwrap()),
        )
        .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn azurite_cse_round_trip() {
    round_trip(azurite("xfer-cse"), cse()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn azurite_sse_round_trip() {
    round_trip(azurite("xfer-sse"), Protection::Sse).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn faulty_store_with_retries_still_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let plan = FaultPlan {
        fail_fraction: 0.1,
        timeout_fraction: 0.0,
        timeout: Duration::ZERO,
        seed: 3,
    };
    let store = LocalStore::new(dir.path().join("c"));
    let wrapped: Arc<dyn BlobStore> = Arc::new(RetryingStore::new(
        FaultyStore::new(store, plan),
        RetryPolicy::default()
            .with_attempts(10)
            .with_first_delay(Duration::from_millis(5)),
    ));
    round_trip(wrapped, cse()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_uploads_leave_no_partial_blob_visible() {
    let (dir, _) = local_store();
    let inner = LocalStore::new(dir.path().join("c"));
    inner.create_container().await.unwrap();
    let plan = FaultPlan {
        fail_fraction: 0.3,
        timeout_fraction: 0.0,
        timeout: Duration::ZERO,
        seed: 11,
    };
    let faulty: Arc<dyn BlobStore> = Arc::new(FaultyStore::new(inner.clone(), plan));
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("big"), pattern(2_000_000, 1)).unwrap();
    let items = plan_upload(&work.path().join("big"), "").unwrap();
    let mut failures = 0;
    for _ in 0..5 {
        if upload(faulty.clone(), items.clone(), cse(), options(), counter().1)
            .await
            .is_err()
        {
            failures += 1;
            // Whatever failed, the blob is either absent or complete.
            if let Ok(props) = inner.properties("big", None).await {
                assert_eq!(
                    props.metadata.get("encfs_source_size").map(String::as_str),
                    Some("2000000")
                );
            }
        }
    }
    assert!(
        failures > 0,
        "the fault plan should have failed some attempt"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_truncated_and_wrong_key_downloads_fail_and_leave_nothing() {
    let (dir, store) = local_store();
    let key = Arc::new(DataKey::generate().unwrap());
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    source_tree(&src);
    store.create_container().await.unwrap();
    upload(
        store.clone(),
        plan_upload(&src, "").unwrap(),
        Protection::Cse(key.clone()),
        options(),
        counter().1,
    )
    .await
    .unwrap();

    // Tamper with one byte of one segment of large.bin (through the store, as an attacker would).
    let mut blob = store
        .get("large.bin", None, None, None)
        .await
        .unwrap()
        .to_vec();
    blob[500_000] ^= 1;
    store
        .put(
            "large.bin",
            Bytes::from(blob.clone()),
            &Metadata::new(),
            &Condition::None,
            None,
        )
        .await
        .unwrap();
    let dst = work.path().join("dst");
    let error = download(
        store.clone(),
        "large.bin",
        &dst,
        Protection::Cse(key.clone()),
        options(),
        counter().1,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, TransferError::Crypto { ref blob, .. } if blob == "large.bin"),
        "{error}"
    );
    assert!(!dst.join("large.bin").exists());
    assert_eq!(
        std::fs::read_dir(&dst).map(|d| d.count()).unwrap_or(0),
        0,
        "no temporary files left"
    );

    // Truncated to a segment boundary.
    store
        .put(
            "large.bin",
            Bytes::from(blob[..76 + 2 * 65564].to_vec()),
            &Metadata::new(),
            &Condition::None,
            None,
        )
        .await
        .unwrap();
    let error = download(
        store.clone(),
        "large.bin",
        &dst,
        Protection::Cse(key.clone()),
        options(),
        counter().1,
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("large.bin"), "{error}");

    // Wrong key.
    let other = Protection::Cse(Arc::new(DataKey::generate().unwrap()));
    let error = download(store.clone(), "small/", &dst, other, options(), counter().1)
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("key mismatch") && error.to_string().contains("small/"),
        "{error}"
    );
    assert!(
        list_all(store.as_ref(), "", None)
            .await
            .unwrap()
            .blobs
            .len()
            > 40
    );
    drop(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_container_is_a_clear_error() {
    let (_dir, store) = local_store();
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("f"), b"x").unwrap();
    let error = upload(
        store,
        plan_upload(&work.path().join("f"), "").unwrap(),
        cse(),
        options(),
        counter().1,
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("container not found"), "{error}");
}

/// A blob overwritten between the listing and its ranged reads (as by a writer racing the
/// download): the download fails naming the blob, and leaves no file, rather than writing a
/// file of the other version or a mix of both (`sse` has no per-blob authentication to notice).
async fn overwritten_blob_fails_the_download(store: Arc<dyn BlobStore>) {
    let _ = store.create_container().await;
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("f.bin"), pattern(1_000_000, 1)).unwrap();
    let items = plan_upload(&work.path().join("f.bin"), "").unwrap();
    upload(
        store.clone(),
        items,
        Protection::Sse,
        options(),
        counter().1,
    )
    .await
    .unwrap();
    let listing = list_all(store.as_ref(), "", None).await.unwrap();
    store
        .put(
            "f.bin",
            Bytes::from(pattern(1_000_000, 2)),
            &Metadata::new(),
            &Condition::None,
            None,
        )
        .await
        .unwrap();
    let out = work.path().join("out");
    let error = download_listed(
        store,
        listing.blobs,
        "",
        &out,
        Protection::Sse,
        options(),
        counter().1,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&error, TransferError::Store(StoreError::Changed(name)) if name == "f.bin"),
        "{error}"
    );
    assert!(error.to_string().contains("f.bin"), "{error}");
    assert!(!out.join("f.bin").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_overwritten_blob_fails_the_download() {
    let (_dir, store) = local_store();
    overwritten_blob_fails_the_download(store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn azurite_overwritten_blob_fails_the_download() {
    overwritten_blob_fails_the_download(azurite("xfer-changed")).await;
}

/// `record_entries` (for `upload --seal`): the entry of every blob sealed, computed as it was
/// written, is the entry a reader computes from the stored blob; on the calling-thread path
/// (embedded store) and the async one (a store without local access), small files and large.
#[tokio::test]
async fn recorded_manifest_entries_are_those_of_the_stored_blobs() {
    let (_dir, local) = local_store();
    let remote: Arc<dyn BlobStore> = Arc::new(encfs_store::faults::SlowStore::new(
        local.clone(),
        Duration::ZERO,
        Duration::ZERO,
        None,
    ));
    let work = tempfile::tempdir().unwrap();
    source_tree(work.path());
    local.create_container().await.unwrap();
    for (prefix, store) in [("near/", local.clone()), ("far/", remote)] {
        let items = plan_upload(work.path(), prefix).unwrap();
        let options = TransferOptions {
            record_entries: true,
            ..options()
        };
        let summary = upload(store.clone(), items, cse(), options, counter().1)
            .await
            .unwrap();
        assert_eq!(summary.entries.len(), 43, "{prefix}");
        for entry in &summary.entries {
            let read = encfs_dataset::entry_of(&*store, &entry.name).await.unwrap();
            assert_eq!(&read, entry, "{}", entry.name);
        }
    }
    // Off by default: nothing recorded.
    let items = plan_upload(work.path(), "plain/").unwrap();
    let summary = upload(local, items, cse(), options(), counter().1)
        .await
        .unwrap();
    assert!(summary.entries.is_empty());
}
