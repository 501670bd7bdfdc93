//! Two writers of one blob, on the embedded store and on Azurite (started by
//! scripts/test-all.sh, address in `ENCFS_AZURITE_URL`): whatever the interleaving, the blob is
//! always exactly one writer's bytes. Each writer stages under its own block ids
//! ([`BlockIds`]); the loser of a race either finds its commit refused (Azure drops the other
//! writer's uncommitted blocks at a commit) or is overwritten whole: "last commit wins", never a
//! mix.

use std::sync::Arc;

use bytes::Bytes;
use encfs_store::azure::{AzureStore, Credentials, DEV_ACCOUNT, DEV_KEY};
use encfs_store::local::LocalStore;
use encfs_store::{BlobStore, BlockIds, Condition, Metadata, StoreError};

const BLOCK: usize = 64 << 10;
const BLOCKS: usize = 4;

fn content(writer: u8, round: usize) -> Vec<u8> {
    (0..BLOCK * BLOCKS)
        .map(|i| (i as u8).wrapping_mul(31) ^ writer ^ (round as u8).wrapping_mul(7))
        .collect()
}

/// One writer: stages its blocks (at their offsets, as uploads and the mount do, or without a
/// hint), yielding between them so the two writers interleave, then commits.
async fn write(
    store: Arc<dyn BlobStore>,
    name: String,
    data: Vec<u8>,
    at_offsets: bool,
) -> Result<(), StoreError> {
    let ids = BlockIds::new();
    let mut list = Vec::new();
    for index in 0..BLOCKS {
        let id = ids.id(index as u64);
        let block = Bytes::copy_from_slice(&data[index * BLOCK..(index + 1) * BLOCK]);
        if at_offsets {
            store
                .stage_block_at(&name, &id, (index * BLOCK) as u64, block, None)
                .await?;
        } else {
            store.stage_block(&name, &id, block, None).await?;
        }
        list.push(id);
        tokio::task::yield_now().await;
    }
    store
        .commit_blocks(&name, &list, &Metadata::new(), &Condition::None, None)
        .await
        .map(drop)
}

async fn two_writers(store: Arc<dyn BlobStore>, rounds: usize) {
    store.create_container().await.unwrap();
    for round in 0..rounds {
        let name = format!("shared/blob-{}", round % 3);
        let (a, b) = (content(0xa5, round), content(0x5a, round));
        let at_offsets = round % 2 == 0;
        let first = tokio::spawn(write(store.clone(), name.clone(), a.clone(), at_offsets));
        let second = tokio::spawn(write(store.clone(), name.clone(), b.clone(), !at_offsets));
        let (first, second) = (first.await.unwrap(), second.await.unwrap());
        for result in [&first, &second] {
            if let Err(error) = result {
                assert!(
                    matches!(
                        error,
                        StoreError::InvalidBlockList(_) | StoreError::ConditionNotMet(_)
                    ),
                    "round {round}: a losing writer is told, not broken: {error}"
                );
            }
        }
        assert!(
            first.is_ok() || second.is_ok(),
            "round {round}: one commit wins"
        );
        let blob = store.get(&name, None, None, None).await.unwrap();
        let whole_a = blob == a && first.is_ok();
        let whole_b = blob == b && second.is_ok();
        assert!(
            whole_a || whole_b,
            "round {round}: the blob is exactly one successful writer's bytes"
        );
    }
}

/// A writer that is still staging when another commits never changes the published blob, and
/// its own later commit publishes its own bytes whole (or is refused).
async fn late_writer(store: Arc<dyn BlobStore>) {
    store.create_container().await.unwrap();
    let name = "late".to_owned();
    let (a, b) = (content(1, 0), content(2, 0));
    let slow = BlockIds::new();
    let first = Bytes::copy_from_slice(&b[..BLOCK]);
    store
        .stage_block_at(&name, &slow.id(0), 0, first, None)
        .await
        .unwrap();
    write(store.clone(), name.clone(), a.clone(), true)
        .await
        .unwrap();
    let mut list = vec![slow.id(0)];
    for index in 1..BLOCKS {
        let block = Bytes::copy_from_slice(&b[index * BLOCK..(index + 1) * BLOCK]);
        let id = slow.id(index as u64);
        // Azure may already have dropped this writer's blocks; staging itself still works.
        store
            .stage_block_at(&name, &id, (index * BLOCK) as u64, block, None)
            .await
            .unwrap();
        list.push(id);
        assert!(
            store.get(&name, None, None, None).await.unwrap() == a,
            "a late block never lands in the published blob"
        );
    }
    let late = store
        .commit_blocks(&name, &list, &Metadata::new(), &Condition::None, None)
        .await;
    let blob = store.get(&name, None, None, None).await.unwrap();
    match late {
        Ok(_) => assert!(blob == b, "the late commit publishes its own bytes whole"),
        Err(StoreError::InvalidBlockList(_)) => assert!(blob == a),
        Err(other) => panic!("unexpected: {other}"),
    }
}

fn local() -> (tempfile::TempDir, Arc<dyn BlobStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalStore::new(dir.path().join("container")));
    (dir, store)
}

fn azurite(tag: &str) -> Arc<dyn BlobStore> {
    let url = std::env::var("ENCFS_AZURITE_URL").expect(
        "ENCFS_AZURITE_URL is not set: run the tests with scripts/test-all.sh, which starts Azurite",
    );
    let mut suffix = [0u8; 4];
    aws_lc_rs::rand::fill(&mut suffix).unwrap();
    let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let credentials = Credentials::shared_key(DEV_ACCOUNT, DEV_KEY).unwrap();
    Arc::new(AzureStore::new(&format!("{url}/race-{tag}-{hex}"), Some(credentials)).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_store_never_mixes_two_writers() {
    let (_dir, store) = local();
    two_writers(store.clone(), 60).await;
    late_writer(store).await;
    // Every commit removed its own staging; the losers' leftovers (none here) would be collected.
    assert_eq!(
        std::fs::read_dir(_dir.path().join("container/staging"))
            .unwrap()
            .count(),
        0,
        "no staging left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azurite_never_mixes_two_writers() {
    let store = azurite("two");
    two_writers(store.clone(), 20).await;
    late_writer(store).await;
}

/// The leftovers of a writer that died (its lease released, nobody holding it) are collected;
/// a live writer's staging, in another store instance on the same container, is not.
#[tokio::test]
async fn embedded_store_collects_dead_writers_only() {
    let (dir, store) = local();
    store.create_container().await.unwrap();
    let live_ids = BlockIds::new();
    let block = Bytes::from_static(b"live block");
    store
        .stage_block_at("f", &live_ids.id(0), 0, block.clone(), None)
        .await
        .unwrap();
    // A dead writer: staged from a store instance that is gone (its leases died with it).
    {
        let other = LocalStore::new(dir.path().join("container"));
        other
            .stage_block_at("f", &BlockIds::new().id(0), 0, block.clone(), None)
            .await
            .unwrap();
        other
            .stage_block("g", &BlockIds::new().id(0), block.clone(), None)
            .await
            .unwrap();
    }
    std::fs::write(dir.path().join("container/tmp/dead.partial"), b"x").unwrap();
    let collector = LocalStore::new(dir.path().join("container"));
    let recent = collector
        .collect_leftovers(encfs_store::local::LEFTOVER_GRACE)
        .unwrap();
    assert_eq!(
        recent.files, 0,
        "recent leftovers wait for the grace period"
    );
    let collected = collector
        .collect_leftovers(std::time::Duration::ZERO)
        .unwrap();
    assert!(collected.files >= 4, "{collected:?}");
    // The live writer's block is still there and commits.
    store
        .commit_blocks(
            "f",
            &[live_ids.id(0)],
            &Metadata::new(),
            &Condition::None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(store.get("f", None, None, None).await.unwrap(), block);
    assert_eq!(
        std::fs::read_dir(dir.path().join("container/staging"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("container/tmp"))
            .unwrap()
            .count(),
        0
    );
}
