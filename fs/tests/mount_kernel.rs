//! The mount through a real kernel FUSE mount: ordinary file APIs on the mount point, the
//! embedded store underneath. Needs /dev/fuse and root (the README test command installs fuse3
//! and runs as root).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use encfs_crypto::DataKey;
use encfs_crypto::format::{HEADER_LEN, SEGMENT_OVERHEAD, SegmentSize};
use encfs_fs::mount::{EncFs, Mount, MountOptions};
use encfs_fs::store::faults::{FaultPlan, FaultyStore};
use encfs_fs::store::local::LocalStore;
use encfs_fs::store::{
    BlobProperties, BlobStore, Condition, CustomerKey, ListOptions, Listing, Metadata, StoreError,
    StoreResult,
};
use encfs_fs::transfer::Protection;

fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: run the tests with scripts/test-all.sh as root (it installs fuse3)"
    );
}

struct Env {
    _dir: tempfile::TempDir,
    container: PathBuf,
    mountpoint: PathBuf,
    store: Arc<dyn BlobStore>,
    protection: Protection,
}

fn env() -> Env {
    require_fuse();
    let dir = tempfile::tempdir().unwrap();
    let container = dir.path().join("container");
    let mountpoint = dir.path().join("mnt");
    fs::create_dir(&mountpoint).unwrap();
    let store: Arc<dyn BlobStore> = Arc::new(LocalStore::new(&container));
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(store.create_container())
        .unwrap();
    Env {
        _dir: dir,
        container,
        mountpoint,
        store,
        protection: Protection::Cse(Arc::new(DataKey::generate().unwrap())),
    }
}

impl Env {
    fn mount_with(&self, store: Arc<dyn BlobStore>, read_write: bool) -> Mount {
        let options = MountOptions {
            read_write,
            cache_size: 32 << 20,
            ..MountOptions::default()
        };
        let fs = EncFs::new(store, "", self.protection.clone(), options).unwrap();
        fs.verify().unwrap();
        Mount::start(fs, &self.mountpoint, "test").unwrap()
    }

    fn mount(&self, read_write: bool) -> Mount {
        self.mount_with(self.store.clone(), read_write)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.mountpoint.join(name)
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

#[test]
fn datasink_then_datasource_round_trip() {
    let env = env();
    let big = pattern(9 << 20 | 12345, 1);
    {
        let mount = env.mount(true);
        fs::write(env.path("big.bin"), &big).unwrap();
        fs::create_dir(env.path("out")).unwrap();
        fs::write(env.path("out/small.txt"), b"hello").unwrap();
        let mut f = OpenOptions::new()
            .append(true)
            .open(env.path("out/small.txt"))
            .unwrap();
        f.write_all(b", world").unwrap();
        f.sync_all().unwrap();
        drop(f);
        fs::rename(env.path("out/small.txt"), env.path("out/greeting.txt")).unwrap();
        fs::write(env.path("gone"), b"x").unwrap();
        fs::remove_file(env.path("gone")).unwrap();
        fs::create_dir(env.path("empty")).unwrap();
        fs::remove_dir(env.path("empty")).unwrap();
        assert_eq!(
            fs::remove_dir(env.path("out")).unwrap_err().raw_os_error(),
            Some(libc::ENOTEMPTY)
        );
        // Overwrite in the middle across a block boundary, then truncate.
        let f = OpenOptions::new()
            .write(true)
            .open(env.path("big.bin"))
            .unwrap();
        f.write_all_at(b"PATCH", (4 << 20) - 2).unwrap();
        drop(f);
        let mut expected = big.clone();
        expected[(4 << 20) - 2..(4 << 20) + 3].copy_from_slice(b"PATCH");
        assert!(fs::read(env.path("big.bin")).unwrap() == expected);
        mount.unmount().unwrap();
    }
    let mut expected = big;
    expected[(4 << 20) - 2..(4 << 20) + 3].copy_from_slice(b"PATCH");
    let mount = env.mount(false);
    let mut names: Vec<String> = fs::read_dir(&env.mountpoint)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["big.bin", "out"]);
    assert_eq!(
        fs::metadata(env.path("big.bin")).unwrap().len(),
        expected.len() as u64
    );
    assert!(fs::read(env.path("big.bin")).unwrap() == expected);
    assert_eq!(
        fs::read(env.path("out/greeting.txt")).unwrap(),
        b"hello, world"
    );
    // Random reads through the kernel.
    let f = File::open(env.path("big.bin")).unwrap();
    for offset in [
        0u64,
        65_535,
        1 << 20,
        (4 << 20) - 7,
        expected.len() as u64 - 10,
    ] {
        let mut buf = [0u8; 4096];
        let n = f.read_at(&mut buf, offset).unwrap();
        assert_eq!(&buf[..n], &expected[offset as usize..offset as usize + n]);
    }
    // Read-only means read-only.
    let error = fs::write(env.path("new"), b"no").unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EROFS));
    drop(f);
    mount.unmount().unwrap();
    // The store holds ciphertext only.
    for entry in fs::read_dir(env.container.join("blobs")).unwrap() {
        let raw = fs::read(entry.unwrap().path()).unwrap();
        assert!(!raw.windows(12).any(|w| w == b"hello, world"));
    }
}

#[test]
fn many_readers_of_one_file() {
    let env = env();
    let data = Arc::new(pattern(6 << 20, 2));
    {
        let mount = env.mount(true);
        fs::write(env.path("shared.bin"), &*data).unwrap();
        mount.unmount().unwrap();
    }
    let mount = env.mount(false);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (path, data) = (env.path("shared.bin"), data.clone());
            std::thread::spawn(move || {
                let mut f = File::open(&path).unwrap();
                if t % 2 == 0 {
                    let mut all = Vec::new();
                    f.read_to_end(&mut all).unwrap();
                    assert!(all == *data, "reader {t}: whole file differs");
                } else {
                    for i in 0..64u64 {
                        let offset = (i * 97_531 * (t as u64 + 1)) % (data.len() as u64 - 8192);
                        let mut buf = vec![0u8; 8192];
                        f.seek(SeekFrom::Start(offset)).unwrap();
                        f.read_exact(&mut buf).unwrap();
                        assert!(buf[..] == data[offset as usize..offset as usize + 8192]);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    mount.unmount().unwrap();
}

#[test]
fn readers_while_another_handle_writes() {
    let env = env();
    let old = pattern(3 << 20, 3);
    let new = pattern(3 << 20, 4);
    let mount = env.mount(true);
    fs::write(env.path("f.bin"), &old).unwrap();
    let writer = {
        let (path, new) = (env.path("f.bin"), new.clone());
        std::thread::spawn(move || {
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            for (i, chunk) in new.chunks(64 << 10).enumerate() {
                f.write_all_at(chunk, (i * (64 << 10)) as u64).unwrap();
            }
            f.sync_all().unwrap();
        })
    };
    // Every byte a reader sees is the old or the new byte at that position.
    for _ in 0..10 {
        let mut f = File::open(env.path("f.bin")).unwrap();
        let mut seen = Vec::new();
        f.read_to_end(&mut seen).unwrap();
        assert_eq!(seen.len(), old.len());
        for (i, b) in seen.iter().enumerate() {
            assert!(*b == old[i] || *b == new[i], "byte {i} is neither version");
        }
    }
    writer.join().unwrap();
    assert!(fs::read(env.path("f.bin")).unwrap() == new);
    mount.unmount().unwrap();
}

#[test]
fn tampered_segment_gives_eio_for_its_range_only() {
    let env = env();
    let segment = SegmentSize::DEFAULT.bytes();
    let data = pattern(40 * segment + 100, 5);
    {
        let mount = env.mount(true);
        fs::write(env.path("t.bin"), &data).unwrap();
        mount.unmount().unwrap();
    }
    // Flip one ciphertext byte inside segment 20 of the blob file.
    let blob = fs::read_dir(env.container.join("blobs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut raw = fs::read(&blob).unwrap();
    let blob_len = SegmentSize::DEFAULT.blob_len(data.len() as u64) as usize;
    let data_start = raw.len() - blob_len;
    let bad = 20;
    raw[data_start + HEADER_LEN + bad * (segment + SEGMENT_OVERHEAD) + 500] ^= 1;
    fs::write(&blob, &raw).unwrap();

    let mount = env.mount(false);
    let f = File::open(env.path("t.bin")).unwrap();
    let read = |range: Range<usize>| {
        let mut buf = vec![0u8; range.len()];
        f.read_exact_at(&mut buf, range.start as u64).map(|()| buf)
    };
    let error = read(bad * segment..bad * segment + 10).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::EIO));
    assert!(read(0..segment).unwrap() == data[..segment]);
    let tail = (bad + 1) * segment..data.len();
    assert!(read(tail.clone()).unwrap() == data[tail]);
    let mut all = Vec::new();
    assert_eq!(
        File::open(env.path("t.bin"))
            .unwrap()
            .read_to_end(&mut all)
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EIO)
    );
    drop(f);
    mount.unmount().unwrap();
}

#[test]
fn wrong_key_fails_before_serving() {
    let env = env();
    {
        let mount = env.mount(true);
        fs::write(env.path("a.txt"), b"secret").unwrap();
        mount.unmount().unwrap();
    }
    let wrong = Protection::Cse(Arc::new(DataKey::generate().unwrap()));
    let fs = EncFs::new(env.store.clone(), "", wrong, MountOptions::default()).unwrap();
    let error = fs.verify().unwrap_err().to_string();
    assert!(error.contains("key mismatch"), "{error}");
    assert!(error.contains("a.txt"), "{error}");
    let missing: Arc<dyn BlobStore> = Arc::new(LocalStore::new(env.container.join("nope")));
    let fs = EncFs::new(missing, "", env.protection.clone(), MountOptions::default()).unwrap();
    assert!(
        fs.verify()
            .unwrap_err()
            .to_string()
            .contains("container not found")
    );
}

#[test]
fn flaky_store_reads_retry() {
    let env = env();
    let data = pattern(5 << 20, 6);
    {
        let mount = env.mount(true);
        fs::write(env.path("f.bin"), &data).unwrap();
        mount.unmount().unwrap();
    }
    let plan = FaultPlan {
        fail_fraction: 0.25,
        timeout_fraction: 0.0,
        timeout: std::time::Duration::ZERO,
        seed: 42,
    };
    let flaky: Arc<dyn BlobStore> = Arc::new(FaultyStore::new(env.store.clone(), plan));
    let mount = env.mount_with(flaky, false);
    for _ in 0..3 {
        assert!(fs::read(env.path("f.bin")).unwrap() == data);
    }
    mount.unmount().unwrap();
}

/// Reads work; every write fails (a store that went read-only, or a network cut on upload).
struct WritesFail(Arc<dyn BlobStore>);

#[async_trait]
impl BlobStore for WritesFail {
    fn location(&self) -> String {
        self.0.location()
    }
    async fn create_container(&self) -> StoreResult<bool> {
        self.0.create_container().await
    }
    async fn container_exists(&self) -> StoreResult<bool> {
        self.0.container_exists().await
    }
    async fn get(
        &self,
        name: &str,
        range: Option<Range<u64>>,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<Bytes> {
        self.0.get(name, range, cpk).await
    }
    async fn put(
        &self,
        name: &str,
        _: Bytes,
        _: &Metadata,
        _: &Condition,
        _: Option<&CustomerKey>,
    ) -> StoreResult<String> {
        Err(StoreError::Injected(name.to_owned()))
    }
    async fn stage_block(
        &self,
        name: &str,
        _: &str,
        _: Bytes,
        _: Option<&CustomerKey>,
    ) -> StoreResult<()> {
        Err(StoreError::Injected(name.to_owned()))
    }
    async fn commit_blocks(
        &self,
        name: &str,
        _: &[String],
        _: &Metadata,
        _: &Condition,
        _: Option<&CustomerKey>,
    ) -> StoreResult<String> {
        Err(StoreError::Injected(name.to_owned()))
    }
    async fn set_metadata(
        &self,
        name: &str,
        _: &Metadata,
        _: &Condition,
        _: Option<&CustomerKey>,
    ) -> StoreResult<String> {
        Err(StoreError::Injected(name.to_owned()))
    }
    async fn properties(
        &self,
        name: &str,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<BlobProperties> {
        self.0.properties(name, cpk).await
    }
    async fn list(&self, options: &ListOptions<'_>) -> StoreResult<Listing> {
        self.0.list(options).await
    }
    async fn delete(&self, name: &str, _: &Condition) -> StoreResult<()> {
        Err(StoreError::Injected(name.to_owned()))
    }
}

#[test]
fn failing_store_writes_surface_as_errno_and_keep_the_old_version() {
    let env = env();
    let old = pattern(6 << 20, 7);
    {
        let mount = env.mount(true);
        fs::write(env.path("f.bin"), &old).unwrap();
        mount.unmount().unwrap();
    }
    {
        let failing: Arc<dyn BlobStore> = Arc::new(WritesFail(env.store.clone()));
        let mount = env.mount_with(failing, true);
        // Large rewrite: staging fails in the background; fsync and close report it.
        let mut f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(env.path("f.bin"))
            .unwrap();
        let new = pattern(10 << 20, 8);
        let written = f.write_all(&new);
        let synced = f.sync_all();
        assert!(
            written.is_err() || synced.is_err(),
            "a failed upload must reach the application"
        );
        let error = written.err().or(synced.err()).unwrap();
        assert_eq!(error.raw_os_error(), Some(libc::EIO));
        drop(f);
        // A small new file fails at close (flush).
        let mut small = File::create(env.path("small")).unwrap();
        small.write_all(b"tiny").unwrap();
        assert_eq!(
            small.sync_all().unwrap_err().raw_os_error(),
            Some(libc::EIO)
        );
        drop(small);
        assert_eq!(
            fs::remove_file(env.path("f.bin"))
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EIO)
        );
        mount.unmount().unwrap();
    }
    let mount = env.mount(false);
    assert!(
        fs::read(env.path("f.bin")).unwrap() == old,
        "the old version is intact"
    );
    assert!(!env.path("small").exists());
    mount.unmount().unwrap();
}

#[test]
fn disk_tier_serves_evictions_and_leaves_nothing_behind() {
    let env = env();
    let data = pattern(6 << 20, 9);
    {
        let mount = env.mount(true);
        fs::write(env.path("f.bin"), &data).unwrap();
        mount.unmount().unwrap();
    }
    let tier = env.container.parent().unwrap().join("tier");
    let options = MountOptions {
        cache_size: 1 << 20,
        disk_cache: Some(tier.clone()),
        ..MountOptions::default()
    };
    let fs = EncFs::new(env.store.clone(), "", env.protection.clone(), options).unwrap();
    let mount = Mount::start(fs, &env.mountpoint, "test").unwrap();
    for _ in 0..2 {
        // O_DIRECT is not offered; separate opens with a dropped page cache stand in for it.
        let _ = fs::write("/proc/sys/vm/drop_caches", "1");
        assert!(fs::read(env.path("f.bin")).unwrap() == data);
    }
    // The tier's file has no name: nothing in the directory, plaintext or otherwise.
    assert_eq!(fs::read_dir(&tier).unwrap().count(), 0);
    mount.unmount().unwrap();
    assert_eq!(fs::read_dir(&tier).unwrap().count(), 0);
}
