//! The mount through a real kernel FUSE mount: ordinary file APIs on the mount point, the
//! embedded store underneath. Needs /dev/fuse and root (the README test command installs fuse3
//! and runs as root).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use encfs_crypto::DataKey;
use encfs_crypto::format::{HEADER_LEN, SEGMENT_OVERHEAD, SegmentSize};
use encfs_fs::mount::{EncFs, Mount, MountOptions};
use encfs_fs::store::faults::{FaultPlan, FaultyStore, RetryingStore, SlowStore};
use encfs_fs::store::local::LocalStore;
use encfs_fs::store::protection::Protection;
use encfs_fs::store::{
    BlobProperties, BlobStore, Condition, CustomerKey, ListOptions, Listing, LocalAccess, Metadata,
    PinnedBlob, RetryPolicy, StoreError, StoreResult,
};

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

    /// Writes `data` as `name` through a fresh read-write mount, unmounted again.
    fn write_through_mount(&self, name: &str, data: &[u8]) {
        let mount = self.mount(true);
        fs::write(self.path(name), data).unwrap();
        mount.unmount().unwrap();
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
    env.write_through_mount("shared.bin", &data);
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
    env.write_through_mount("t.bin", &data);
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
    env.write_through_mount("a.txt", b"secret");
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
    env.write_through_mount("f.bin", &data);
    let plan = FaultPlan {
        fail_fraction: 0.25,
        timeout_fraction: 0.0,
        timeout: std::time::Duration::ZERO,
        seed: 42,
    };
    // The mount has no retry loop of its own: the one retry layer goes over the store.
    let flaky: Arc<dyn BlobStore> = Arc::new(RetryingStore::new(
        FaultyStore::new(env.store.clone(), plan),
        RetryPolicy::default().with_first_delay(std::time::Duration::from_millis(5)),
    ));
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
        if_match: Option<&str>,
    ) -> StoreResult<Bytes> {
        self.0.get(name, range, cpk, if_match).await
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
    async fn discard_staged(&self, name: &str, ids: &[String]) -> StoreResult<()> {
        self.0.discard_staged(name, ids).await
    }
    /// None: it stands for a remote store whose writes fail.
    fn local(&self) -> Option<&dyn LocalAccess> {
        None
    }
}

/// A store that stops answering: a read through the mount fails with `EIO` at the request
/// deadline instead of blocking its caller (once: nested retry loops, up to half an hour).
#[test]
fn a_hanging_store_fails_reads_at_the_deadline() {
    let env = env();
    {
        let mount = env.mount(true);
        fs::write(env.path("f.bin"), pattern(3 << 20, 4)).unwrap();
        mount.unmount().unwrap();
    }
    let switched = Switched::new(env.store.clone());
    let deadline = std::time::Duration::from_secs(2);
    let store: Arc<dyn BlobStore> = Arc::new(RetryingStore::new(
        switched.clone(),
        RetryPolicy::default().with_deadline(deadline),
    ));
    let mount = env.mount_with(store, false);
    switched.reads.store(true, Ordering::SeqCst);
    let path = env.path("f.bin");
    let (done, finished) = std::sync::mpsc::channel();
    let start = std::time::Instant::now();
    std::thread::spawn(move || {
        let _ = done.send(fs::read(path).map(|data| data.len()));
    });
    let result = finished.recv_timeout(std::time::Duration::from_secs(30));
    let elapsed = start.elapsed();
    mount.unmount().unwrap();
    let result = result.expect("the read was still blocked after 30 s");
    assert_eq!(result.unwrap_err().raw_os_error(), Some(libc::EIO));
    assert!(
        elapsed < deadline + std::time::Duration::from_secs(3),
        "{elapsed:?}"
    );
}

/// An `sse` blob (no per-blob authentication) overwritten while a handle reads it: reads after the
/// overwrite are `EIO` through a store that reads remotely (every ranged read carries the etag the
/// handle opened), or the old version's bytes where the store pins the version open (the
/// embedded store) — never the new version's bytes after the old one's.
#[test]
fn an_overwritten_blob_is_never_read_as_a_mix_of_two_versions() {
    let mut env = env();
    env.protection = Protection::Sse;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (old, new) = (pattern(8 << 20, 1), pattern(8 << 20, 2));
    let put = |data: &[u8]| {
        runtime
            .block_on(env.store.put(
                "f.bin",
                Bytes::copy_from_slice(data),
                &Metadata::new(),
                &Condition::None,
                None,
            ))
            .unwrap();
    };
    for remote in [true, false] {
        put(&old);
        let store: Arc<dyn BlobStore> = if remote {
            // No calling-thread calls: every read is a ranged `get` as on Azure.
            Arc::new(SlowStore::new(
                env.store.clone(),
                std::time::Duration::ZERO,
                std::time::Duration::ZERO,
                None,
            ))
        } else {
            env.store.clone()
        };
        let mount = env.mount_with(store, false);
        let file = File::open(env.path("f.bin")).unwrap();
        let mut head = vec![0u8; 64 << 10];
        file.read_exact_at(&mut head, 0).unwrap();
        assert!(head == old[..64 << 10]);
        put(&new);
        let mut tail = vec![0u8; 64 << 10];
        let at = 7 << 20;
        match file.read_exact_at(&mut tail, at as u64) {
            Ok(()) => {
                assert!(!remote, "a remote read of a changed blob must fail");
                assert!(
                    tail == old[at..at + (64 << 10)],
                    "the pinned version's bytes"
                );
            }
            Err(error) => {
                assert!(
                    remote,
                    "the pinned embedded version stays readable: {error}"
                );
                assert_eq!(error.raw_os_error(), Some(libc::EIO));
            }
        }
        drop(file);
        mount.unmount().unwrap();
    }
}

#[test]
fn failing_store_writes_surface_as_errno_and_keep_the_old_version() {
    let env = env();
    let old = pattern(6 << 20, 7);
    env.write_through_mount("f.bin", &old);
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
    env.write_through_mount("f.bin", &data);
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

/// The embedded store with switches: while `stages` is on, staging a block fails; while `commits`
/// is on, the calls that publish (`put`, `commit_blocks`) fail; while `reads` is on, ranged reads
/// hang (a store that takes requests and never answers). Everything else is forwarded, local
/// access and staged blocks served back included, except that nothing is pinned (every read is
/// a `get`) and, while `reads` is on, a read on the calling thread fails transiently at once: the
/// caller then takes the async `get`, which hangs until the request deadline.
struct Switched {
    inner: Arc<dyn BlobStore>,
    stages: AtomicBool,
    commits: AtomicBool,
    reads: AtomicBool,
}

impl Switched {
    fn new(inner: Arc<dyn BlobStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            stages: AtomicBool::new(false),
            commits: AtomicBool::new(false),
            reads: AtomicBool::new(false),
        })
    }

    fn inner_local(&self) -> &dyn LocalAccess {
        self.inner.local().expect("over the embedded store")
    }

    fn gate(&self, switch: &AtomicBool, name: &str) -> StoreResult<()> {
        if switch.load(Ordering::SeqCst) {
            return Err(StoreError::Injected(name.to_owned()));
        }
        Ok(())
    }
}

#[async_trait]
impl BlobStore for Switched {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn create_container(&self) -> StoreResult<bool> {
        self.inner.create_container().await
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
        if self.reads.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.get(name, range, cpk, if_match).await
    }
    async fn put(
        &self,
        name: &str,
        data: Bytes,
        metadata: &Metadata,
        condition: &Condition,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<String> {
        self.gate(&self.commits, name)?;
        self.inner.put(name, data, metadata, condition, cpk).await
    }
    async fn stage_block(
        &self,
        name: &str,
        id: &str,
        data: Bytes,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<()> {
        self.gate(&self.stages, name)?;
        self.inner.stage_block(name, id, data, cpk).await
    }
    async fn stage_block_at(
        &self,
        name: &str,
        id: &str,
        offset: u64,
        data: Bytes,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<()> {
        self.gate(&self.stages, name)?;
        self.inner.stage_block_at(name, id, offset, data, cpk).await
    }
    async fn commit_blocks(
        &self,
        name: &str,
        ids: &[String],
        metadata: &Metadata,
        condition: &Condition,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<String> {
        self.gate(&self.commits, name)?;
        self.inner
            .commit_blocks(name, ids, metadata, condition, cpk)
            .await
    }
    async fn properties(
        &self,
        name: &str,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<BlobProperties> {
        self.inner.properties(name, cpk).await
    }
    async fn list(&self, options: &ListOptions<'_>) -> StoreResult<Listing> {
        self.inner.list(options).await
    }
    async fn delete(&self, name: &str, condition: &Condition) -> StoreResult<()> {
        self.inner.delete(name, condition).await
    }
    async fn set_metadata(
        &self,
        name: &str,
        metadata: &Metadata,
        condition: &Condition,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<String> {
        self.inner
            .set_metadata(name, metadata, condition, cpk)
            .await
    }
    async fn discard_staged(&self, name: &str, ids: &[String]) -> StoreResult<()> {
        self.inner.discard_staged(name, ids).await
    }
    fn local(&self) -> Option<&dyn LocalAccess> {
        Some(self)
    }
}

impl LocalAccess for Switched {
    fn pin(
        &self,
        _name: &str,
        _cpk: Option<&CustomerKey>,
    ) -> StoreResult<Option<Box<dyn PinnedBlob>>> {
        Ok(None)
    }
    fn get(
        &self,
        name: &str,
        range: Option<Range<u64>>,
        cpk: Option<&CustomerKey>,
        if_match: Option<&str>,
    ) -> StoreResult<Bytes> {
        if self.reads.load(Ordering::SeqCst) {
            return Err(StoreError::Injected(name.to_owned()));
        }
        self.inner_local().get(name, range, cpk, if_match)
    }
    fn properties(&self, name: &str, cpk: Option<&CustomerKey>) -> StoreResult<BlobProperties> {
        self.inner_local().properties(name, cpk)
    }
    fn put(
        &self,
        name: &str,
        data: Bytes,
        metadata: &Metadata,
        condition: &Condition,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<String> {
        self.gate(&self.commits, name)?;
        self.inner_local().put(name, data, metadata, condition, cpk)
    }
    fn read_staged(&self, name: &str, id: &str, cpk: Option<&CustomerKey>) -> StoreResult<Bytes> {
        self.inner_local().read_staged(name, id, cpk)
    }
}

/// Files under `dir` (recursively), for checks that a store holds no leftovers.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// The reproduction: a commit that fails because the store's `blobs/` went away, then
/// a retry once it is back, must publish what was written — never zeros.
#[test]
fn failed_small_commit_keeps_the_bytes_for_the_retry() {
    let env = env();
    let mount = env.mount(true);
    let mut f = File::create(env.path("x")).unwrap();
    f.write_all(b"hello").unwrap();
    let blobs = env.container.join("blobs");
    let away = env.container.join("blobs.away");
    fs::rename(&blobs, &away).unwrap();
    assert_eq!(f.sync_all().unwrap_err().raw_os_error(), Some(libc::EIO));
    fs::rename(&away, &blobs).unwrap();
    f.sync_all().unwrap();
    drop(f);
    mount.unmount().unwrap();
    let mount = env.mount(false);
    assert_eq!(fs::read(env.path("x")).unwrap(), b"hello");
    mount.unmount().unwrap();
}

/// A multi-block file whose final commit fails keeps its staged blocks and its last block: the
/// next fsync publishes exactly what was written.
#[test]
fn failed_block_commit_keeps_every_byte_for_the_retry() {
    let env = env();
    let switched = Switched::new(env.store.clone());
    let mount = env.mount_with(switched.clone(), true);
    let data = pattern((9 << 20) + 12_345, 21);
    let mut f = File::create(env.path("big")).unwrap();
    f.write_all(&data).unwrap();
    switched.commits.store(true, Ordering::SeqCst);
    assert_eq!(f.sync_all().unwrap_err().raw_os_error(), Some(libc::EIO));
    assert_eq!(f.sync_all().unwrap_err().raw_os_error(), Some(libc::EIO));
    switched.commits.store(false, Ordering::SeqCst);
    f.sync_all().unwrap();
    drop(f);
    mount.unmount().unwrap();
    let mount = env.mount(false);
    assert!(fs::read(env.path("big")).unwrap() == data);
    mount.unmount().unwrap();
    assert!(
        files_under(&env.container.join("staging")).is_empty(),
        "a commit removes its staging"
    );
}

/// A block lost in the background makes the version uncommittable: every later fsync and the
/// close fail, even once the store is healthy again, the previous version stays, the staging is
/// freed, and truncating to zero starts a version that commits.
#[test]
fn lost_block_fails_every_later_commit_of_that_version() {
    let env = env();
    let old = pattern(5 << 20, 3);
    env.write_through_mount("f", &old);
    let switched = Switched::new(env.store.clone());
    let mount = env.mount_with(switched.clone(), true);
    let mut f = OpenOptions::new().write(true).open(env.path("f")).unwrap();
    switched.stages.store(true, Ordering::SeqCst);
    // Writing past the first block stages it in the background, where it fails.
    let new = pattern(12 << 20, 4);
    let written = f.write_all(&new);
    let first = written
        .err()
        .or_else(|| f.sync_all().err())
        .expect("a lost block is reported");
    assert_eq!(first.raw_os_error(), Some(libc::EIO));
    switched.stages.store(false, Ordering::SeqCst);
    for _ in 0..2 {
        assert_eq!(f.sync_all().unwrap_err().raw_os_error(), Some(libc::EIO));
    }
    let mut back = vec![0u8; 16];
    assert!(f.read_at(&mut back, 0).is_err() || back.is_empty());
    drop(f);
    assert!(
        fs::read(env.path("f")).unwrap() == old,
        "the old version stays"
    );
    // A new version from scratch commits.
    let mut f = File::create(env.path("f")).unwrap();
    f.write_all(&new).unwrap();
    f.sync_all().unwrap();
    drop(f);
    mount.unmount().unwrap();
    let mount = env.mount(false);
    assert!(fs::read(env.path("f")).unwrap() == new);
    mount.unmount().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !files_under(&env.container.join("staging")).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        files_under(&env.container.join("staging")),
        Vec::<PathBuf>::new()
    );
}

/// A size no block blob can hold is `EFBIG` at once, and nothing is written for it.
#[test]
fn huge_truncate_is_efbig_at_once() {
    let env = env();
    let mount = env.mount(true);
    fs::write(env.path("t"), b"abc").unwrap();
    let started = Instant::now();
    let f = OpenOptions::new().write(true).open(env.path("t")).unwrap();
    for size in [1u64 << 50, 999_999_999_999_999] {
        assert_eq!(
            f.set_len(size).unwrap_err().raw_os_error(),
            Some(libc::EFBIG),
            "size {size}"
        );
    }
    drop(f);
    let status = std::process::Command::new("truncate")
        .args(["-s", "1P"])
        .arg(env.path("t"))
        .status()
        .unwrap();
    assert!(!status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(fs::read(env.path("t")).unwrap(), b"abc");
    assert!(files_under(&env.container.join("staging")).is_empty());
    mount.unmount().unwrap();
}

/// A tmpfs of `size` mounted at `path`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Self {
        fs::create_dir_all(path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs (needs root)");
        Self(path.to_owned())
    }

    fn used(&self) -> u64 {
        files_under(&self.0)
            .iter()
            .filter_map(|p| fs::metadata(p).ok())
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.blocks() * 512
            })
            .sum()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Growing a file beyond the store's space is `ENOSPC` to the caller: the previous version
/// stays, the staging is freed, and the mount goes on serving everything else.
#[test]
fn out_of_space_is_enospc_and_frees_the_staging() {
    require_fuse();
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("disk"), "48m");
    let container = disk.0.join("container");
    let mountpoint = dir.path().join("mnt");
    fs::create_dir(&mountpoint).unwrap();
    let store: Arc<dyn BlobStore> = Arc::new(LocalStore::new(&container));
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(store.create_container())
        .unwrap();
    let env = Env {
        _dir: dir,
        container,
        mountpoint,
        store,
        protection: Protection::Cse(Arc::new(DataKey::generate().unwrap())),
    };
    let mount = env.mount(true);
    let keep = pattern(1 << 20, 5);
    fs::write(env.path("keep"), &keep).unwrap();
    fs::write(env.path("grow"), b"small").unwrap();
    let before = disk.used();
    // 256 MiB of (sealed) zeros cannot fit in 48 MiB.
    let error = std::process::Command::new("truncate")
        .args(["-s", "256M"])
        .arg(env.path("grow"))
        .output()
        .unwrap();
    assert!(!error.status.success());
    assert!(
        String::from_utf8_lossy(&error.stderr).contains("No space left on device"),
        "{}",
        String::from_utf8_lossy(&error.stderr)
    );
    // The kernel sends the writer's release after its close has returned: until the mount has
    // it the failed version is still open (readable, as any open file); then it is gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    while fs::metadata(env.path("grow")).unwrap().len() != 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(fs::read(env.path("grow")).unwrap(), b"small");
    assert!(fs::read(env.path("keep")).unwrap() == keep);
    let deadline = Instant::now() + Duration::from_secs(5);
    while disk.used() > before + (1 << 20) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        disk.used() <= before + (1 << 20),
        "staging freed: {} bytes used, {} before",
        disk.used(),
        before
    );
    // Writes that fit still work.
    fs::write(env.path("after"), b"still here").unwrap();
    assert_eq!(fs::read(env.path("after")).unwrap(), b"still here");
    mount.unmount().unwrap();
}

/// The same failure through the filesystem's own calls (the kernel's release is synchronous
/// here): once the last writer lets go of a version that could not be committed, the file's
/// size is its committed version's at once, not the abandoned one (listings are not refreshed
/// for an hour here, so nothing else could put it right), and the FUSE adapter is told to drop
/// the kernel's cached attributes of it.
#[test]
fn an_abandoned_version_gives_back_the_committed_size_at_once() {
    use encfs_fs::mount::{Caller, CreateFlags, ROOT};
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("disk"), "48m");
    let store: Arc<dyn BlobStore> = Arc::new(LocalStore::new(disk.0.join("container")));
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(store.create_container())
        .unwrap();
    let options = MountOptions {
        read_write: true,
        ttl: Duration::from_secs(3600),
        ..MountOptions::default()
    };
    let protection = Protection::Cse(Arc::new(DataKey::generate().unwrap()));
    let fs = EncFs::new(store, "", protection, options).unwrap();
    let flags = CreateFlags {
        exclusive: true,
        truncate: false,
    };
    let (attr, fh) = fs
        .create(ROOT, "grow", 0o644, Caller::default(), flags)
        .unwrap();
    fs.write(fh, 0, b"small").unwrap();
    fs.release(fh).unwrap();
    let fh = fs.open(attr.ino, true, false).unwrap();
    fs.set_size(attr.ino, 256 << 20).unwrap();
    assert_eq!(fs.flush(fh).map_err(|e| e.errno()), Err(libc::ENOSPC));
    assert_eq!(fs.getattr(attr.ino).unwrap().size, 256 << 20, "still open");
    let _ = fs.release(fh);
    assert_eq!(fs.getattr(attr.ino).unwrap().size, 5);
    assert_eq!(fs.take_stale_attributes(), vec![attr.ino]);
    let fh = fs.open(attr.ino, false, false).unwrap();
    assert_eq!(fs.read(fh, 0, 1 << 20).unwrap(), &b"small"[..]);
    fs.release(fh).unwrap();
}

/// A commit that cannot finish within the request deadline fails in bounded time and keeps what
/// it staged: repeated fsyncs make progress and finally publish the file.
#[test]
fn slow_commit_fails_within_the_deadline_and_resumes() {
    let env = env();
    let slow: Arc<dyn BlobStore> = Arc::new(encfs_fs::store::faults::SlowStore::new(
        env.store.clone(),
        Duration::from_millis(150),
        Duration::ZERO,
        None,
    ));
    let options = MountOptions {
        read_write: true,
        write_budget: 8 << 20,
        request_timeout: Duration::from_secs(1),
        ..MountOptions::default()
    };
    let fs = EncFs::new(slow, "", env.protection.clone(), options).unwrap();
    let mount = Mount::start(fs, &env.mountpoint, "test").unwrap();
    let f = File::create(env.path("sparse")).unwrap();
    f.set_len(100 << 20).unwrap();
    let mut failures = 0;
    loop {
        let started = Instant::now();
        let result = f.sync_all();
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "an fsync took {:?}",
            started.elapsed()
        );
        match result {
            Ok(()) => break,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EIO));
                failures += 1;
                assert!(failures < 30, "no progress across fsyncs");
            }
        }
    }
    assert!(
        failures >= 1,
        "25 blocks at 150 ms cannot commit within 1 s"
    );
    drop(f);
    mount.unmount().unwrap();
    let mount = env.mount(false);
    let read = fs::read(env.path("sparse")).unwrap();
    assert_eq!(read.len(), 100 << 20);
    assert!(read.iter().all(|&b| b == 0));
    mount.unmount().unwrap();
}

/// Two mounts of one store writing the same name at once, many rounds: the blob is always
/// exactly one writer's bytes ("last commit wins" whole), never a mix of their blocks.
#[test]
fn two_mounts_writing_one_name_never_mix() {
    let env = env();
    let second = env.container.parent().unwrap().join("mnt2");
    fs::create_dir(&second).unwrap();
    let first = env.mount(true);
    let options = MountOptions {
        read_write: true,
        cache_size: 32 << 20,
        ..MountOptions::default()
    };
    let fs2 = EncFs::new(env.store.clone(), "", env.protection.clone(), options).unwrap();
    let other = Mount::start(fs2, &second, "test2").unwrap();
    for round in 0..6u8 {
        let (a, b) = (pattern(9 << 20, round), pattern(9 << 20, round + 100));
        let (pa, pb) = (env.path("shared.bin"), second.join("shared.bin"));
        std::thread::scope(|scope| {
            let (a, b) = (&a, &b);
            let one = scope.spawn(move || fs::write(&pa, a));
            let two = scope.spawn(move || fs::write(&pb, b));
            // A loser may be told (its commit refused) but nothing else goes wrong.
            for result in [one.join().unwrap(), two.join().unwrap()] {
                if let Err(error) = result {
                    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
                }
            }
        });
        let stored = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(env.store.get("shared.bin", None, None, None))
            .unwrap();
        let Protection::Cse(key) = &env.protection else {
            unreachable!()
        };
        let plain = encfs_crypto::format::open(key, &stored).expect("a whole, valid blob");
        assert!(
            plain == a || plain == b,
            "round {round}: the blob is one writer's bytes"
        );
    }
    other.unmount().unwrap();
    first.unmount().unwrap();
}
