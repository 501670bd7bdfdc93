//! One conformance suite, run against every backend: the embedded store, Azurite (started by
//! scripts/test-all.sh, address in `ENCFS_AZURITE_URL`), and each wrapper.

use std::time::Duration;

use bytes::Bytes;
use encfs_store::azure::AzureStore;
use encfs_store::faults::{FaultPlan, FaultyStore, RetryingStore, SlowStore};
use encfs_store::local::LocalStore;
use encfs_store::{
    BlobStore, BlockIds, Condition, CustomerKey, ListOptions, Metadata, RetryPolicy, StoreError,
    StoreResult, list_all,
};

/// Ids of one writer's version, shared by every block a test stages.
fn block_id(index: u64) -> String {
    static IDS: std::sync::LazyLock<BlockIds> = std::sync::LazyLock::new(BlockIds::new);
    IDS.id(index)
}

fn meta(pairs: &[(&str, &str)]) -> Metadata {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A calling-thread call, asked again while it fails transiently (a fault wrapper's fault: its
/// callers would take the async call, which the retry layer retries).
fn offered<T>(call: impl Fn() -> StoreResult<T>) -> StoreResult<T> {
    let mut result = call();
    for _ in 0..20 {
        match result {
            Err(error) if error.is_transient() => result = call(),
            done => return done,
        }
    }
    result
}

/// Everything every backend must do the same way.
async fn conformance(store: &dyn BlobStore) {
    conformance_in(store, Order::Names).await
}

/// The order of a listing across pages.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Name order (every backend).
    Names,
    /// The order of the names as stored, which is not the callers' names' order (encrypted
    /// names: each page is sorted, pages follow the stored names).
    Stored,
}

/// Sorts `names` where the order across pages is not name order.
fn in_order(mut names: Vec<String>, order: Order) -> Vec<String> {
    if order == Order::Stored {
        names.sort();
    }
    names
}

async fn conformance_in(store: &dyn BlobStore, order: Order) {
    let none = Condition::None;
    // Containers.
    assert!(!store.container_exists().await.unwrap());
    assert!(
        matches!(
            store.get("x", None, None, None).await,
            Err(StoreError::ContainerNotFound(_))
        ),
        "missing container"
    );
    assert!(store.create_container().await.unwrap());
    assert!(store.container_exists().await.unwrap());
    assert!(!store.create_container().await.unwrap());

    // Whole puts, ranged reads, properties.
    let data = Bytes::from((0..100_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>());
    let etag = store
        .put(
            "dir/file one.bin",
            data.clone(),
            &meta(&[("source", "test")]),
            &none,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .get("dir/file one.bin", None, None, None)
            .await
            .unwrap(),
        data
    );
    assert_eq!(
        store
            .get("dir/file one.bin", Some(10..20), None, None)
            .await
            .unwrap(),
        data.slice(10..20)
    );
    assert_eq!(
        store
            .get("dir/file one.bin", Some(99_990..200_000), None, None)
            .await
            .unwrap(),
        data.slice(99_990..)
    );
    assert!(
        store
            .get("dir/file one.bin", Some(100_000..100_010), None, None)
            .await
            .unwrap()
            .is_empty()
    );
    let props = store.properties("dir/file one.bin", None).await.unwrap();
    assert_eq!(props.size, 100_000);
    assert_eq!(props.etag, etag);
    assert_eq!(
        props.metadata.get("source").map(String::as_str),
        Some("test")
    );
    assert!(
        matches!(store.get("nope", None, None, None).await, Err(StoreError::BlobNotFound(n)) if n == "nope")
    );
    assert!(matches!(
        store.properties("nope", None).await,
        Err(StoreError::BlobNotFound(_))
    ));

    // Conditions.
    let cond = |c| async move {
        store
            .put(
                "dir/file one.bin",
                Bytes::from_static(b"v2"),
                &Metadata::new(),
                &c,
                None,
            )
            .await
    };
    assert!(matches!(
        cond(Condition::IfNotExists).await,
        Err(StoreError::ConditionNotMet(_))
    ));
    assert!(matches!(
        cond(Condition::IfMatch("\"0xBAD\"".into())).await,
        Err(StoreError::ConditionNotMet(_))
    ));
    let etag2 = cond(Condition::IfMatch(etag.clone())).await.unwrap();
    assert_ne!(etag2, etag);
    assert_eq!(
        store
            .get("dir/file one.bin", None, None, None)
            .await
            .unwrap(),
        Bytes::from_static(b"v2")
    );
    store
        .put(
            "fresh",
            Bytes::from_static(b"new"),
            &Metadata::new(),
            &Condition::IfNotExists,
            None,
        )
        .await
        .unwrap();

    // Staged blocks are invisible until the commit, which is atomic.
    let ids: Vec<String> = (0..3).map(block_id).collect();
    for (i, id) in ids.iter().enumerate() {
        store
            .stage_block("big/blob", id, Bytes::from(vec![i as u8; 5000]), None)
            .await
            .unwrap();
    }
    assert!(matches!(
        store.get("big/blob", None, None, None).await,
        Err(StoreError::BlobNotFound(_))
    ));
    assert!(
        !list_all(store, "big/", None)
            .await
            .unwrap()
            .blobs
            .iter()
            .any(|b| b.name == "big/blob")
    );
    store
        .commit_blocks("big/blob", &ids, &meta(&[("encfs", "1")]), &none, None)
        .await
        .unwrap();
    let committed = store.get("big/blob", None, None, None).await.unwrap();
    assert_eq!(committed.len(), 15_000);
    assert_eq!(
        (committed[0], committed[5000], committed[14_999]),
        (0, 1, 2)
    );
    assert_eq!(
        store
            .properties("big/blob", None)
            .await
            .unwrap()
            .metadata
            .get("encfs")
            .map(String::as_str),
        Some("1")
    );
    let missing = vec![block_id(77)];
    assert!(matches!(
        store
            .commit_blocks("big/other", &missing, &Metadata::new(), &none, None)
            .await,
        Err(StoreError::InvalidBlockList(_))
    ));

    // Hierarchical listing and pagination.
    for name in ["l/a/1", "l/a/2", "l/a/b/3", "l/c"] {
        store
            .put(
                name,
                Bytes::from_static(b"x"),
                &Metadata::new(),
                &none,
                None,
            )
            .await
            .unwrap();
    }
    let top = list_all(store, "l/", Some("/")).await.unwrap();
    assert_eq!(
        top.blobs
            .iter()
            .map(|b| b.name.as_str())
            .collect::<Vec<_>>(),
        ["l/c"]
    );
    assert_eq!(top.prefixes, ["l/a/"]);
    let mut names = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = store
            .list(&ListOptions {
                prefix: "l/",
                max_results: Some(2),
                marker: marker.as_deref(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(page.blobs.len() <= 2);
        names.extend(page.blobs.into_iter().map(|b| b.name));
        match page.next_marker {
            Some(next) => marker = Some(next),
            None => break,
        }
    }
    assert_eq!(in_order(names, order), ["l/a/1", "l/a/2", "l/a/b/3", "l/c"]);
    // Names only: every store (its own answer or the default through `list`), sorted.
    assert_eq!(
        store.list_names("l/").await.unwrap(),
        ["l/a/1", "l/a/2", "l/a/b/3", "l/c"]
    );
    assert_eq!(store.list_names("l/a/b/").await.unwrap(), ["l/a/b/3"]);
    delimiter_pages(store, order).await;
    let all = list_all(store, "", None).await.unwrap();
    assert_eq!(
        all.blobs
            .iter()
            .find(|b| b.name == "big/blob")
            .unwrap()
            .properties
            .size,
        15_000
    );

    // Blocks staged with their final offsets (in any order) commit to the same bytes, also when
    // the list does not tile them in order, and when one was restaged without a position.
    let parts: Vec<Bytes> = (0..4u8)
        .map(|i| Bytes::from(vec![i + 1; 3000 + i as usize]))
        .collect();
    let offsets: Vec<u64> = parts
        .iter()
        .scan(0u64, |at, p| {
            let here = *at;
            *at += p.len() as u64;
            Some(here)
        })
        .collect();
    let ids: Vec<String> = (0..4).map(block_id).collect();
    for i in [2usize, 0, 3, 1] {
        store
            .stage_block_at("pos/tiled", &ids[i], offsets[i], parts[i].clone(), None)
            .await
            .unwrap();
    }
    assert!(matches!(
        store.get("pos/tiled", None, None, None).await,
        Err(StoreError::BlobNotFound(_))
    ));
    store
        .commit_blocks("pos/tiled", &ids, &Metadata::new(), &none, None)
        .await
        .unwrap();
    assert_eq!(
        store.get("pos/tiled", None, None, None).await.unwrap(),
        parts.concat()
    );
    assert_eq!(
        store
            .get("pos/tiled", Some(2990..3010), None, None)
            .await
            .unwrap(),
        [vec![1u8; 10], vec![2u8; 10]].concat()
    );
    for i in 0..4 {
        store
            .stage_block_at("pos/mixed", &ids[i], offsets[i], parts[i].clone(), None)
            .await
            .unwrap();
    }
    store
        .stage_block("pos/mixed", &ids[1], Bytes::from_static(b"replaced"), None)
        .await
        .unwrap();
    // Stores with local access serve uncommitted blocks back, each as last staged.
    if let Some(local) = store.local() {
        let staged = |id: &str| local.read_staged("pos/mixed", id, None);
        assert_eq!(staged(&ids[0]).unwrap(), parts[0]);
        assert_eq!(staged(&ids[3]).unwrap(), parts[3]);
        assert_eq!(&staged(&ids[1]).unwrap()[..], b"replaced");
        assert!(staged("never-staged").is_err());
    }
    let reordered = [ids[3].clone(), ids[1].clone(), ids[0].clone()];
    store
        .commit_blocks("pos/mixed", &reordered, &Metadata::new(), &none, None)
        .await
        .unwrap();
    let expected = [&parts[3][..], b"replaced", &parts[0][..]].concat();
    assert_eq!(
        store.get("pos/mixed", None, None, None).await.unwrap(),
        expected
    );
    assert_eq!(
        store.properties("pos/mixed", None).await.unwrap().size,
        expected.len() as u64
    );

    // The calling-thread calls, where a store offers them, behave as the async calls.
    if let Some(local) = store.local() {
        let properties = offered(|| local.properties("pos/mixed", None));
        assert_eq!(properties.unwrap().size, expected.len() as u64);
        let put = |condition: &Condition| {
            offered(|| {
                local.put(
                    "blocking/put",
                    Bytes::from_static(b"xyz"),
                    &Metadata::new(),
                    condition,
                    None,
                )
            })
        };
        let etag = put(&none).unwrap();
        assert_eq!(
            store.properties("blocking/put", None).await.unwrap().etag,
            etag
        );
        assert_eq!(
            &store.get("blocking/put", None, None, None).await.unwrap()[..],
            b"xyz"
        );
        assert!(matches!(
            put(&Condition::IfMatch("\"0xBAD\"".into())),
            Err(StoreError::ConditionNotMet(_))
        ));
        assert!(matches!(
            offered(|| local.properties("blocking/none", None)),
            Err(StoreError::BlobNotFound(_))
        ));
    }

    // Deletes.
    assert!(matches!(
        store
            .delete("l/c", &Condition::IfMatch("\"0xBAD\"".into()))
            .await,
        Err(StoreError::ConditionNotMet(_))
    ));
    store.delete("l/c", &none).await.unwrap();
    assert!(matches!(
        store.get("l/c", None, None, None).await,
        Err(StoreError::BlobNotFound(_))
    ));
    assert!(matches!(
        store.delete("l/c", &none).await,
        Err(StoreError::BlobNotFound(_))
    ));
}

/// Customer-provided keys, enforced (the embedded store; Azurite cannot, see the module docs of
/// `azure.rs` and `tests/azure_wire.rs` for what is sent).
async fn cpk_enforcement(store: &dyn BlobStore) {
    let (key, other) = (CustomerKey::new([7; 32]), CustomerKey::new([8; 32]));
    let none = Condition::None;
    store.create_container().await.unwrap();
    let data = Bytes::from(vec![0x42u8; 200_000]);
    store
        .put("secret", data.clone(), &Metadata::new(), &none, Some(&key))
        .await
        .unwrap();
    assert_eq!(
        store.get("secret", None, Some(&key), None).await.unwrap(),
        data
    );
    assert_eq!(
        store
            .get("secret", Some(70_000..70_010), Some(&key), None)
            .await
            .unwrap(),
        data.slice(70_000..70_010)
    );
    assert!(matches!(
        store.get("secret", None, None, None).await,
        Err(StoreError::CustomerKeyRequired(_))
    ));
    assert!(matches!(
        store.get("secret", None, Some(&other), None).await,
        Err(StoreError::CustomerKeyMismatch(_))
    ));
    assert!(matches!(
        store.properties("secret", None).await,
        Err(StoreError::CustomerKeyRequired(_))
    ));
    assert_eq!(
        store.properties("secret", Some(&key)).await.unwrap().size,
        200_000
    );
    assert!(matches!(
        store
            .put(
                "secret",
                Bytes::new(),
                &Metadata::new(),
                &none,
                Some(&other)
            )
            .await,
        Err(StoreError::CustomerKeyMismatch(_))
    ));
    store
        .put(
            "plain",
            Bytes::from_static(b"p"),
            &Metadata::new(),
            &none,
            None,
        )
        .await
        .unwrap();
    assert!(matches!(
        store.get("plain", None, Some(&key), None).await,
        Err(StoreError::CustomerKeyUnexpected(_))
    ));
    let ids = vec![block_id(0), block_id(1)];
    for id in &ids {
        store
            .stage_block("staged-secret", id, Bytes::from_static(b"abc"), Some(&key))
            .await
            .unwrap();
    }
    assert!(matches!(
        store
            .commit_blocks("staged-secret", &ids, &Metadata::new(), &none, Some(&other))
            .await,
        Err(StoreError::CustomerKeyMismatch(_))
    ));
    if let Some(local) = store.local() {
        let staged = |cpk| local.read_staged("staged-secret", &ids[1], cpk);
        assert_eq!(&staged(Some(&key)).unwrap()[..], b"abc");
        assert!(matches!(
            staged(Some(&other)),
            Err(StoreError::CustomerKeyMismatch(_))
        ));
        assert!(matches!(
            staged(None),
            Err(StoreError::CustomerKeyRequired(_))
        ));
    }
    store
        .commit_blocks("staged-secret", &ids, &Metadata::new(), &none, Some(&key))
        .await
        .unwrap();
    assert_eq!(
        store
            .get("staged-secret", None, Some(&key), None)
            .await
            .unwrap(),
        Bytes::from_static(b"abcabc")
    );
}

/// A delimiter listing paged 1 and 2 entries at a time: a page boundary inside a run of names
/// under one prefix lists that prefix once, and every page advances.
async fn delimiter_pages(store: &dyn BlobStore, order: Order) {
    let names = [
        "p/x/1", "p/x/2", "p/x/3", "p/y", "p/z/1", "p/z/2", "p/z/3/4",
    ];
    for name in names {
        let data = Bytes::from_static(b"x");
        store
            .put(name, data, &Metadata::new(), &Condition::None, None)
            .await
            .unwrap();
    }
    for max_results in [1, 2] {
        let (mut blobs, mut prefixes) = (Vec::new(), Vec::new());
        let mut marker: Option<String> = None;
        for page_number in 0.. {
            assert!(
                page_number < 10,
                "page size {max_results}: the listing never ends"
            );
            let page = store
                .list(&ListOptions {
                    prefix: "p/",
                    delimiter: Some("/"),
                    marker: marker.as_deref(),
                    max_results: Some(max_results),
                })
                .await
                .unwrap();
            let entries = page.blobs.len() + page.prefixes.len();
            assert!(entries <= max_results as usize, "page size {max_results}");
            blobs.extend(page.blobs.into_iter().map(|b| b.name));
            prefixes.extend(page.prefixes);
            match page.next_marker {
                Some(next) if !next.is_empty() => {
                    assert_ne!(
                        marker.as_ref(),
                        Some(&next),
                        "page size {max_results}: stuck"
                    );
                    marker = Some(next);
                }
                _ => break,
            }
        }
        assert_eq!(blobs, ["p/y"], "page size {max_results}");
        assert_eq!(
            in_order(prefixes, order),
            ["p/x/", "p/z/"],
            "page size {max_results}"
        );
    }
    for name in names {
        store.delete(name, &Condition::None).await.unwrap();
    }
}

fn local() -> (tempfile::TempDir, LocalStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path().join("container"));
    (dir, store)
}

#[tokio::test]
async fn embedded_store() {
    let (_dir, store) = local();
    conformance(&store).await;
}

#[tokio::test]
async fn embedded_store_cpk_is_enforced_and_encrypted_at_rest() {
    let (dir, store) = local();
    cpk_enforcement(&store).await;
    for entry in std::fs::read_dir(dir.path().join("container/blobs")).unwrap() {
        let raw = std::fs::read(entry.unwrap().path()).unwrap();
        if raw.len() > 100_000 {
            assert!(
                !raw.windows(64).any(|w| w.iter().all(|&b| b == 0x42)),
                "CPK blob stored in the clear"
            );
        }
    }
}

#[tokio::test]
async fn embedded_store_leaves_no_temporary_files() {
    let (dir, store) = local();
    conformance(&store).await;
    assert_eq!(
        std::fs::read_dir(dir.path().join("container/tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn latency_wrapper() {
    let (_dir, store) = local();
    let slow = SlowStore::new(
        store,
        Duration::from_millis(2),
        Duration::from_millis(1),
        Some(1 << 30),
    );
    conformance(&slow).await;
}

#[tokio::test]
async fn fault_wrapper_with_retries() {
    let (_dir, store) = local();
    let plan = FaultPlan {
        fail_fraction: 0.2,
        timeout_fraction: 0.05,
        timeout: Duration::from_millis(20),
        seed: 42,
    };
    conformance(&RetryingStore::new(
        FaultyStore::new(store, plan),
        quick_retries(12),
    ))
    .await;
}

#[tokio::test]
async fn fault_wrapper_without_retries_fails_cleanly() {
    let (_dir, store) = local();
    store.create_container().await.unwrap();
    let plan = FaultPlan {
        fail_fraction: 1.0,
        timeout_fraction: 0.0,
        timeout: Duration::ZERO,
        seed: 1,
    };
    let faulty = FaultyStore::new(store, plan);
    let error = faulty
        .put(
            "x",
            Bytes::from_static(b"1"),
            &Metadata::new(),
            &Condition::None,
            None,
        )
        .await
        .unwrap_err();
    assert!(
        error.is_transient() && error.to_string().contains('x'),
        "{error}"
    );
}

/// The Azurite endpoint started by scripts/test-all.sh.
fn azurite() -> String {
    std::env::var("ENCFS_AZURITE_URL").expect(
        "ENCFS_AZURITE_URL is not set: run the tests with scripts/test-all.sh, which installs and starts Azurite",
    )
}

fn azurite_container(tag: &str) -> AzureStore {
    let mut suffix = [0u8; 4];
    aws_lc_rs::rand::fill(&mut suffix).unwrap();
    let name = format!(
        "conf-{tag}-{}",
        suffix
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let credentials = encfs_store::azure::Credentials::shared_key(
        encfs_store::azure::DEV_ACCOUNT,
        encfs_store::azure::DEV_KEY,
    )
    .unwrap();
    AzureStore::new(&format!("{}/{name}", azurite()), Some(credentials)).unwrap()
}

#[tokio::test]
async fn azurite_store() {
    conformance(&azurite_container("plain")).await;
}

#[tokio::test]
async fn azurite_through_latency_and_fault_wrappers() {
    let plan = FaultPlan {
        fail_fraction: 0.15,
        timeout_fraction: 0.0,
        timeout: Duration::ZERO,
        seed: 9,
    };
    let slow = SlowStore::new(
        azurite_container("wrapped"),
        Duration::from_millis(1),
        Duration::ZERO,
        None,
    );
    conformance(&RetryingStore::new(
        FaultyStore::new(slow, plan),
        quick_retries(12),
    ))
    .await;
}

#[tokio::test]
async fn azurite_wrong_key_is_an_auth_error_naming_the_url() {
    let credentials =
        encfs_store::azure::Credentials::shared_key(encfs_store::azure::DEV_ACCOUNT, "AAAA")
            .unwrap();
    let store = AzureStore::new(&format!("{}/nokey", azurite()), Some(credentials)).unwrap();
    let error = store.create_container().await.unwrap_err();
    assert!(matches!(error, StoreError::Auth { .. }), "{error}");
    assert!(error.to_string().contains("/nokey"), "{error}");
}

/// The retry policy with millisecond backoff (faults are injected by the dozen).
fn quick_retries(attempts: u32) -> RetryPolicy {
    RetryPolicy::default()
        .with_attempts(attempts)
        .with_first_delay(Duration::from_millis(5))
}

/// Names that percent-encoding and SharedKey signing get wrong if anything is encoded or decoded
/// once too often: a literal `%41` (which is not `A`), spaces, `+` (which is not a space), `&`,
/// `=`, `?`, `#` and non-ASCII.
const ODD_NAMES: [&str; 5] = [
    "odd%41/file %41.txt",
    "odd%41/a+b c.txt",
    "odd%41/ünïcödé – 名前.csv",
    "odd%41/q?x=1&y=2#frag",
    "odd%2F/slash%2Fencoded",
];

async fn odd_names(store: &dyn BlobStore) {
    let _ = store.create_container().await;
    for (i, name) in ODD_NAMES.iter().enumerate() {
        let data = Bytes::from(format!("content {i}"));
        store
            .put(name, data.clone(), &Metadata::new(), &Condition::None, None)
            .await
            .unwrap_or_else(|e| panic!("put {name}: {e}"));
        assert_eq!(
            store.get(name, None, None, None).await.unwrap(),
            data,
            "{name}"
        );
        assert_eq!(
            store.properties(name, None).await.unwrap().size,
            data.len() as u64
        );
        store
            .stage_block(name, &block_id(0), data.clone(), None)
            .await
            .unwrap_or_else(|e| panic!("stage {name}: {e}"));
        store
            .commit_blocks(
                name,
                &[block_id(0)],
                &Metadata::new(),
                &Condition::None,
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("commit {name}: {e}"));
    }
    // Prefixes with the same characters: the listing query carries them.
    for prefix in [
        "odd%41/",
        "odd%41/a+b",
        "odd%41/ünï",
        "odd%41/q?x=1&",
        "odd%41/file %4",
    ] {
        let listing = list_all(store, prefix, None)
            .await
            .unwrap_or_else(|e| panic!("list {prefix}: {e}"));
        let expected: Vec<&str> = {
            let mut names: Vec<&str> = ODD_NAMES
                .iter()
                .copied()
                .filter(|n| n.starts_with(prefix))
                .collect();
            names.sort();
            names
        };
        let listed: Vec<&str> = listing.blobs.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(listed, expected, "prefix {prefix}");
    }
    let listing = list_all(store, "odd%41/", Some("/")).await.unwrap();
    assert_eq!(listing.blobs.len(), 4);
    let listing = list_all(store, "", Some("/")).await.unwrap();
    assert!(
        listing.prefixes.contains(&"odd%41/".to_owned()),
        "{listing:?}"
    );
    for name in ODD_NAMES {
        store.delete(name, &Condition::None).await.unwrap();
    }
}

#[tokio::test]
async fn embedded_store_odd_names() {
    let (_dir, store) = local();
    odd_names(&store).await;
}

#[tokio::test]
async fn azurite_odd_names_sign_what_is_sent() {
    odd_names(&azurite_container("names")).await;
}

/// Ranged reads pinned to one version: an overwrite between two of them is an error, never the
/// new version's bytes after the old one's.
async fn pinned_reads(store: &dyn BlobStore) {
    let _ = store.create_container().await;
    let name = "pinned/blob";
    let old = Bytes::from(vec![b'o'; 200_000]);
    let new = Bytes::from(vec![b'n'; 200_000]);
    let etag = store
        .put(name, old.clone(), &Metadata::new(), &Condition::None, None)
        .await
        .unwrap();
    let first = store
        .get(name, Some(0..100_000), None, Some(&etag))
        .await
        .unwrap();
    assert_eq!(first, old.slice(0..100_000));
    // The etag a listing gives works as well (Azure lists it unquoted).
    let listed = list_all(store, "pinned/", None).await.unwrap().blobs[0]
        .properties
        .etag
        .clone();
    store
        .get(name, Some(0..10), None, Some(&listed))
        .await
        .unwrap();
    store
        .put(name, new.clone(), &Metadata::new(), &Condition::None, None)
        .await
        .unwrap();
    let second = store
        .get(name, Some(100_000..200_000), None, Some(&etag))
        .await;
    assert!(
        matches!(&second, Err(StoreError::Changed(n)) if n == name),
        "{second:?}"
    );
    let whole = store.get(name, None, None, Some(&etag)).await;
    assert!(matches!(whole, Err(StoreError::Changed(_))), "{whole:?}");
    if let Some(local) = store.local() {
        let blocking = offered(|| local.get(name, Some(0..10), None, Some(&etag)));
        assert!(
            matches!(blocking, Err(StoreError::Changed(_))),
            "{blocking:?}"
        );
    }
    let current = store.properties(name, None).await.unwrap().etag;
    assert_eq!(
        store
            .get(name, Some(100_000..200_000), None, Some(&current))
            .await
            .unwrap(),
        new.slice(100_000..200_000)
    );
    store.delete(name, &Condition::None).await.unwrap();
}

#[tokio::test]
async fn embedded_store_pins_read_versions() {
    let (_dir, store) = local();
    pinned_reads(&store).await;
    let key = CustomerKey::new([9; 32]);
    store.create_container().await.unwrap();
    let etag = store
        .put(
            "c",
            Bytes::from_static(b"one"),
            &Metadata::new(),
            &Condition::None,
            Some(&key),
        )
        .await
        .unwrap();
    store
        .put(
            "c",
            Bytes::from_static(b"two"),
            &Metadata::new(),
            &Condition::None,
            Some(&key),
        )
        .await
        .unwrap();
    let stale = store.get("c", Some(0..2), Some(&key), Some(&etag)).await;
    assert!(
        matches!(stale, Err(StoreError::Changed(_))),
        "cpk reads too: {stale:?}"
    );
}

#[tokio::test]
async fn azurite_pins_read_versions() {
    pinned_reads(&azurite_container("pinned")).await;
}

/// The encrypted-names wrapper over `store`, under a fixed key.
fn encrypted_names<S: BlobStore>(store: S) -> encfs_store::names::EncryptedNames<S> {
    let key = encfs_crypto::DataKey::from_bytes([9; 32]);
    encfs_store::names::EncryptedNames::new(store, encfs_crypto::names::NameKey::derive(&key))
}

#[tokio::test]
async fn encrypted_names_over_the_embedded_store() {
    let (_dir, store) = local();
    let names = encrypted_names(store.clone());
    conformance_in(&names, Order::Stored).await;
    pinned_reads(&names).await;
    // Below the wrapper: the marker and encrypted names only.
    let raw = list_all(&store, "", None).await.unwrap();
    assert!(
        raw.blobs
            .iter()
            .any(|b| b.name == encfs_store::names::MARKER)
    );
    assert!(
        raw.blobs.iter().all(|b| !b.name.contains("pinned")),
        "{raw:?}"
    );
}

#[tokio::test]
async fn encrypted_names_over_azurite() {
    let names = encrypted_names(azurite_container("encnames"));
    conformance_in(&names, Order::Stored).await;
    pinned_reads(&names).await;
}
