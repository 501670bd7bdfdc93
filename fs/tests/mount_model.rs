//! Reference-model test of the mount at the filesystem layer (no kernel): random sequences of
//! create/open/read/write/truncate/fsync/close/rename/unlink run against [`EncFs`] on the embedded
//! store and against an in-memory model; every read must match the model, and a fresh mount of
//! the same store must see the model's final state. Small segments, blocks, cache and write budget
//! push every path (staging, parked blocks, evictions) within a few kilobytes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use encfs_crypto::DataKey;
use encfs_crypto::format::SegmentSize;
use encfs_fs::mount::{Caller, CreateFlags, EncFs, MountOptions, ROOT};
use encfs_fs::store::BlobStore;
use encfs_fs::store::faults::SlowStore;
use encfs_fs::store::local::LocalStore;
use encfs_fs::store::protection::Protection;
use proptest::prelude::*;

const NAMES: [&str; 4] = ["a", "b", "c", "d/e"];

#[derive(Debug, Clone)]
enum Op {
    Create(usize),
    Open {
        name: usize,
        write: bool,
        truncate: bool,
    },
    Write {
        handle: usize,
        offset: u64,
        len: usize,
        byte: u8,
    },
    Read {
        handle: usize,
        offset: u64,
        len: u32,
    },
    Truncate {
        name: usize,
        size: u64,
    },
    Fsync(usize),
    Close(usize),
    Rename {
        from: usize,
        to: usize,
    },
    Unlink(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let name = 0..NAMES.len();
    prop_oneof![
        2 => name.clone().prop_map(Op::Create),
        2 => (name.clone(), any::<bool>(), any::<bool>())
            .prop_map(|(name, write, truncate)| Op::Open { name, write, truncate: write && truncate }),
        6 => (0..4usize, 0..40_000u64, 0..20_000usize, any::<u8>())
            .prop_map(|(handle, offset, len, byte)| Op::Write { handle, offset, len, byte }),
        4 => (0..4usize, 0..40_000u64, 0..20_000u32)
            .prop_map(|(handle, offset, len)| Op::Read { handle, offset, len }),
        1 => (name.clone(), 0..40_000u64).prop_map(|(name, size)| Op::Truncate { name, size }),
        1 => (0..4usize).prop_map(Op::Fsync),
        2 => (0..4usize).prop_map(Op::Close),
        1 => (name.clone(), name.clone()).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => name.prop_map(Op::Unlink),
    ]
}

struct Harness {
    fs: EncFs,
    dir_d: u64,
}

impl Harness {
    fn new(store: Arc<dyn BlobStore>, protection: &Protection, ttl: Duration) -> Self {
        let options = MountOptions {
            read_write: true,
            cache_size: 48 << 10,
            write_budget: 64 << 10,
            segment_size: SegmentSize::MIN,
            write_block: 8 << 10,
            ttl,
            ..MountOptions::default()
        };
        let fs = EncFs::new(store, "", protection.clone(), options).unwrap();
        let dir_d = match fs.lookup(ROOT, "d") {
            Ok(attr) => attr.ino,
            Err(_) => fs.mkdir(ROOT, "d", 0o755, Caller::default()).unwrap().ino,
        };
        Self { fs, dir_d }
    }

    fn place(&self, name: &str) -> (u64, String) {
        match name.split_once('/') {
            Some((_, leaf)) => (self.dir_d, leaf.to_owned()),
            None => (ROOT, name.to_owned()),
        }
    }

    fn ino(&self, name: &str) -> Option<u64> {
        let (parent, leaf) = self.place(name);
        self.fs.lookup(parent, &leaf).ok().map(|a| a.ino)
    }

    fn read_all(&self, name: &str) -> Vec<u8> {
        let ino = self.ino(name).unwrap_or_else(|| panic!("{name} missing"));
        let fh = self.fs.open(ino, false, false).unwrap();
        let size = self.fs.getattr(ino).unwrap().size;
        let data = self.fs.read(fh, 0, size as u32 + 100).unwrap().to_vec();
        self.fs.release(fh).unwrap();
        data
    }
}

/// `parked`: the store does not serve staged blocks back (as Azure), so the mount keeps its own
/// sealed copies of them in a scratch file.
fn run(ops: Vec<Op>, ttl: Duration, cse: bool, parked: bool) {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalStore::new(dir.path().join("container"));
    let store: Arc<dyn BlobStore> = if parked {
        // The latency wrapper (here with no delay) offers no local access, as Azure.
        Arc::new(SlowStore::new(local, Duration::ZERO, Duration::ZERO, None))
    } else {
        Arc::new(local)
    };
    assert_eq!(store.local().is_some(), !parked);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(store.create_container()).unwrap();
    drop(runtime);
    let protection = if cse {
        Protection::Cse(Arc::new(DataKey::generate().unwrap()))
    } else {
        Protection::Sse
    };
    let h = Harness::new(store.clone(), &protection, ttl);
    let mut model: HashMap<&str, Vec<u8>> = HashMap::new();
    // Open handles: (fh, name, writable).
    let mut handles: Vec<(u64, &str, bool)> = Vec::new();
    for op in ops {
        match op {
            Op::Create(n) => {
                let name = NAMES[n];
                let (parent, leaf) = h.place(name);
                // `creat`: O_CREAT | O_TRUNC.
                let truncate = CreateFlags {
                    exclusive: false,
                    truncate: true,
                };
                let (_, fh) =
                    h.fs.create(parent, &leaf, 0o644, Caller::default(), truncate)
                        .unwrap();
                model.insert(name, Vec::new());
                handles.push((fh, name, true));
            }
            Op::Open {
                name: n,
                write,
                truncate,
            } => {
                let name = NAMES[n];
                let Some(ino) = h.ino(name) else {
                    assert!(!model.contains_key(name), "{name} exists in the model");
                    continue;
                };
                let fh = h.fs.open(ino, write, truncate).unwrap();
                if truncate {
                    model.insert(name, Vec::new());
                }
                handles.push((fh, name, write));
            }
            Op::Write {
                handle,
                offset,
                len,
                byte,
            } => {
                let Some(&(fh, name, write)) = handles.get(handle) else {
                    continue;
                };
                let data = vec![byte; len];
                let result = h.fs.write(fh, offset, &data).map_err(|e| e.errno());
                if !write {
                    assert_eq!(result, Err(libc::EBADF));
                    continue;
                }
                assert_eq!(result, Ok(len as u32));
                let content = model.get_mut(name).unwrap();
                if len > 0 {
                    let end = offset as usize + len;
                    if content.len() < end {
                        content.resize(end, 0);
                    }
                    content[offset as usize..end].copy_from_slice(&data);
                }
            }
            Op::Read {
                handle,
                offset,
                len,
            } => {
                let Some(&(fh, name, _)) = handles.get(handle) else {
                    continue;
                };
                let got = h.fs.read(fh, offset, len).unwrap();
                let content = &model[name];
                let start = (offset as usize).min(content.len());
                let end = (offset as usize + len as usize).min(content.len());
                assert_eq!(got.len(), end - start, "read length of {name} at {offset}");
                assert!(
                    got == content[start..end],
                    "content of {name} at {offset}+{len}"
                );
            }
            Op::Truncate { name: n, size } => {
                let name = NAMES[n];
                let Some(ino) = h.ino(name) else { continue };
                let attr = h.fs.set_size(ino, size).unwrap();
                assert_eq!(attr.size, size);
                model.get_mut(name).unwrap().resize(size as usize, 0);
            }
            Op::Fsync(handle) => {
                let Some(&(fh, _, _)) = handles.get(handle) else {
                    continue;
                };
                h.fs.fsync(fh).unwrap();
            }
            Op::Close(handle) => {
                if handle >= handles.len() {
                    continue;
                }
                let (fh, _, _) = handles.remove(handle);
                h.fs.flush(fh).unwrap();
                h.fs.release(fh).unwrap();
            }
            Op::Rename { from, to } => {
                let (from, to) = (NAMES[from], NAMES[to]);
                if !model.contains_key(from) || handles.iter().any(|&(_, n, _)| n == to) {
                    continue;
                }
                let (p1, l1) = h.place(from);
                let (p2, l2) = h.place(to);
                h.fs.rename(p1, &l1, p2, &l2, false).unwrap();
                if from != to {
                    let content = model.remove(from).unwrap();
                    model.insert(to, content);
                    for handle in &mut handles {
                        if handle.1 == from {
                            handle.1 = to;
                        }
                    }
                }
            }
            Op::Unlink(n) => {
                let name = NAMES[n];
                if !model.contains_key(name) {
                    continue;
                }
                let mut kept = Vec::new();
                for (fh, owner, write) in handles.drain(..) {
                    if owner == name {
                        h.fs.release(fh).unwrap();
                    } else {
                        kept.push((fh, owner, write));
                    }
                }
                handles = kept;
                let (parent, leaf) = h.place(name);
                h.fs.unlink(parent, &leaf).unwrap();
                model.remove(name);
            }
        }
        // Sizes agree after every step.
        for (name, content) in &model {
            let ino = h.ino(name).unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(
                h.fs.getattr(ino).unwrap().size,
                content.len() as u64,
                "size of {name}"
            );
        }
    }
    for (fh, _, _) in handles.drain(..) {
        h.fs.flush(fh).unwrap();
        h.fs.release(fh).unwrap();
    }
    for (name, content) in &model {
        assert!(h.read_all(name) == *content, "final content of {name}");
    }
    drop(h);
    // A new mount of the same store sees exactly the committed model.
    let fresh = Harness::new(store, &protection, ttl);
    for name in NAMES {
        match model.get(name) {
            Some(content) => assert!(fresh.read_all(name) == *content, "{name} after remount"),
            None => assert!(fresh.ino(name).is_none(), "{name} should not exist"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        // Shrunk failures land beside this file (mount_model.proptest-regressions) and are
        // replayed first on every run.
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn mount_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops, Duration::from_secs(60), true, false);
    }

    #[test]
    fn plaintext_mode_mount_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops, Duration::from_secs(60), false, false);
    }

    #[test]
    fn mount_matches_model_with_parked_blocks(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops, Duration::from_secs(60), true, true);
    }

    #[test]
    fn plaintext_mode_with_parked_blocks(ops in proptest::collection::vec(op(), 1..30)) {
        run(ops, Duration::from_secs(60), false, true);
    }

    #[test]
    fn mount_matches_model_with_listing_refreshes(ops in proptest::collection::vec(op(), 1..25)) {
        run(ops, Duration::ZERO, true, false);
    }
}

/// An embedded store holding one file, `big`, written through a read-write mount; and how to
/// mount it (read-write or not) with `cache_size`.
fn store_with_big(
    protection: &Protection,
    data: &[u8],
    cache_size: usize,
) -> (tempfile::TempDir, impl Fn(bool) -> EncFs) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn BlobStore> = Arc::new(LocalStore::new(dir.path().join("c")));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(store.create_container()).unwrap();
    let protection = protection.clone();
    let mount = move |read_write: bool| {
        let options = MountOptions {
            read_write,
            cache_size,
            ..MountOptions::default()
        };
        EncFs::new(store.clone(), "", protection.clone(), options).unwrap()
    };
    let writer = mount(true);
    let flags = CreateFlags {
        exclusive: true,
        truncate: false,
    };
    let (_, fh) = writer
        .create(ROOT, "big", 0o644, Caller::default(), flags)
        .unwrap();
    writer.write(fh, 0, data).unwrap();
    writer.release(fh).unwrap();
    (dir, mount)
}

/// A read-only mount lets the kernel keep its page cache, so the segments a sequential reader
/// has passed leave the mount's cache at once (their buffers serve the segments ahead, and a
/// scan does not push other files out); random reads stay cached, and so does a read-write
/// mount's stream (the kernel drops its page cache at every open there).
#[test]
fn a_sequential_stream_leaves_a_read_only_cache_and_random_reads_stay() {
    let protection = Protection::Cse(Arc::new(DataKey::generate().unwrap()));
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    let (_dir, mount) = store_with_big(&protection, &data, 64 << 20);
    let stream = |fs: &EncFs| {
        let ino = fs.lookup(ROOT, "big").unwrap().ino;
        let fh = fs.open(ino, false, false).unwrap();
        let mut read = Vec::new();
        for offset in (0..data.len() as u64).step_by(1 << 20) {
            read.extend(fs.read(fh, offset, 1 << 20).unwrap());
        }
        fs.release(fh).unwrap();
        assert!(read == data);
    };
    let reader = mount(false);
    stream(&reader);
    assert_eq!(reader.cache().used(), 0, "a finished stream left segments");
    // Reads far apart are random: what they fetched stays.
    let ino = reader.lookup(ROOT, "big").unwrap().ino;
    let fh = reader.open(ino, false, false).unwrap();
    for offset in [5u64 << 20, 1 << 20, 7 << 20, 3 << 20] {
        let got = reader.read(fh, offset, 4096).unwrap();
        assert!(got[..] == data[offset as usize..offset as usize + 4096]);
    }
    reader.release(fh).unwrap();
    assert!(reader.cache().used() >= 4 * 65536);
    let read_write = mount(true);
    stream(&read_write);
    assert!(read_write.cache().used() >= data.len() / 2);
}

/// A sequential reader of a read-only mount over the embedded store reads each request straight
/// from the pinned blob into its reply (`BlobSource::read_packed`), past the cache: the bytes are
/// the file's for aligned and unaligned reads, `cse` and `sse`, and the cache takes in only the
/// segments that came with the header (and those of a read overlapping them). A segment that fails authentication fails the read holding
/// it with `EIO` (through the cache, which names it), and the stream goes on after it.
#[test]
fn a_read_only_stream_reads_past_the_cache_and_still_refuses_a_tampered_segment() {
    let segment = SegmentSize::DEFAULT.bytes();
    let data: Vec<u8> = (0..(128 * segment + 100) as u32)
        .map(|i| (i % 251) as u8)
        .collect();
    for protection in [
        Protection::Cse(Arc::new(DataKey::generate().unwrap())),
        Protection::Sse,
    ] {
        let cache_size = MountOptions::default().cache_size;
        let (dir, mount) = store_with_big(&protection, &data, cache_size);
        for step in [1u64 << 20, 300 << 10] {
            let reader = mount(false);
            let ino = reader.lookup(ROOT, "big").unwrap().ino;
            let fh = reader.open(ino, false, false).unwrap();
            let mut read = Vec::new();
            for offset in (0..data.len() as u64).step_by(step as usize) {
                read.extend(reader.read(fh, offset, step as u32).unwrap());
            }
            reader.release(fh).unwrap();
            assert!(read == data, "a stream in steps of {step}");
            // The 16 that came with the header, and those of the one read that overlaps them
            // (a stream through the cache inserts all 129).
            let inserted = reader.cache().stats().inserts;
            assert!(inserted <= 20, "{inserted} segments went through the cache");
        }
        if matches!(protection, Protection::Sse) {
            continue;
        }
        // Flip one ciphertext byte of segment 40 (plaintext 2.5 MiB, in the third 1 MiB read).
        let blob = std::fs::read_dir(dir.path().join("c/blobs"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut raw = std::fs::read(&blob).unwrap();
        let blob_len = SegmentSize::DEFAULT.blob_len(data.len() as u64) as usize;
        let data_start = raw.len() - blob_len;
        let sealed = segment + encfs_crypto::format::SEGMENT_OVERHEAD;
        raw[data_start + encfs_crypto::format::HEADER_LEN + 40 * sealed + 500] ^= 1;
        std::fs::write(&blob, &raw).unwrap();
        let reader = mount(false);
        let ino = reader.lookup(ROOT, "big").unwrap().ino;
        let fh = reader.open(ino, false, false).unwrap();
        for offset in (0..data.len() as u64).step_by(1 << 20) {
            let read = reader.read(fh, offset, 1 << 20);
            let range = offset as usize..(offset as usize + (1 << 20)).min(data.len());
            if offset == 2 << 20 {
                assert!(read.is_err(), "the read holding the tampered segment");
            } else {
                assert!(read.unwrap()[..] == data[range], "the read at {offset}");
            }
        }
        reader.release(fh).unwrap();
    }
}
