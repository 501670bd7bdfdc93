//! Upload and download carry what `rsync -a` carries: permission bits, owner, group, mtime and
//! symbolic links (as links, their targets sealed in `cse` mode), on the embedded store.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use encfs_crypto::DataKey;
use encfs_store::attributes::{META_MODE_BITS, META_SYMLINK, META_UID};
use encfs_store::local::LocalStore;
use encfs_store::{BlobStore, list_all};
use encfs_transfer::{Progress, Protection, TransferOptions, download, plan_upload, upload};

#[tokio::test(flavor = "multi_thread")]
async fn upload_records_and_download_restores_modes_owners_times_and_links() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("src");
    fs::create_dir_all(source.join("bin")).unwrap();
    fs::write(source.join("bin/run.sh"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(source.join("bin/run.sh"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::write(source.join("weights"), b"w").unwrap();
    std::os::unix::fs::chown(source.join("weights"), Some(4321), Some(8765)).unwrap();
    let stamp = UNIX_EPOCH + Duration::new(1_500_000_000, 5);
    fs::File::options()
        .write(true)
        .open(source.join("weights"))
        .unwrap()
        .set_modified(stamp)
        .unwrap();
    std::os::unix::fs::symlink("weights", source.join("latest")).unwrap();
    std::os::unix::fs::symlink("../missing/target", source.join("bin/dangling")).unwrap();

    let store: Arc<dyn BlobStore> = Arc::new(LocalStore::new(dir.path().join("container")));
    store.create_container().await.unwrap();
    let protection = Protection::Cse(Arc::new(DataKey::generate().unwrap()));
    let progress: Progress = Arc::new(|_| {});
    let items = plan_upload(&source, "").unwrap();
    upload(
        store.clone(),
        items,
        protection.clone(),
        TransferOptions::default(),
        progress.clone(),
    )
    .await
    .unwrap();

    let listing = list_all(&*store, "", None).await.unwrap();
    let meta = |name: &str| {
        listing
            .blobs
            .iter()
            .find(|b| b.name == name)
            .unwrap_or_else(|| panic!("{name} not uploaded"))
            .properties
            .metadata
            .clone()
    };
    assert_eq!(meta("bin/run.sh")[META_MODE_BITS], "750");
    assert_eq!(meta("weights")[META_UID], "4321");
    assert_eq!(meta("latest")[META_SYMLINK], "1");
    assert_eq!(meta("bin/dangling")[META_SYMLINK], "1");

    let out = dir.path().join("out");
    download(
        store,
        "",
        &out,
        protection,
        TransferOptions::default(),
        progress,
    )
    .await
    .unwrap();
    let run = fs::metadata(out.join("bin/run.sh")).unwrap();
    assert_eq!(run.mode() & 0o7777, 0o750);
    let weights = fs::metadata(out.join("weights")).unwrap();
    assert_eq!((weights.uid(), weights.gid()), (4321, 8765));
    assert_eq!(weights.modified().unwrap(), stamp);
    assert_eq!(
        fs::read_link(out.join("latest")).unwrap(),
        Path::new("weights")
    );
    assert_eq!(fs::read(out.join("latest")).unwrap(), b"w");
    assert_eq!(
        fs::read_link(out.join("bin/dangling")).unwrap(),
        Path::new("../missing/target")
    );
}
