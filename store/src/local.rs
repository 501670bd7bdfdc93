//! The embedded local store: the default backend, a directory per container, no server.
//!
//! ```text
//! ROOT/CONTAINER/blobs/<percent-encoded name>     one file per committed blob
//! ROOT/CONTAINER/blobs/<sha-256 of name>.long     … whose encoded name is too long for a file name
//! ROOT/CONTAINER/names/<sha-256 of name>          the full name of such a blob
//! ROOT/CONTAINER/staging/<name>/                 staged blocks, one group per writer (`staging`)
//! ROOT/CONTAINER/tmp/                             files being written
//! ROOT/CONTAINER/lock                             serializes conditional commits (flock)
//! ```
//!
//! A blob file is `"encfsLB1" || u32 BE length || JSON metadata || data`, so data and metadata
//! change together in one `rename`. Every write goes to `tmp/`, is fsynced, and is renamed into
//! place (then the directory is fsynced): after a crash at any moment a reader sees the old blob or
//! the new one, never a mix. Names are percent-encoded into one flat directory, so `a` and `a/b`
//! can coexist as on Azure. A name whose encoding is longer than 240 bytes (any name
//! up to Azure's 1,024 characters is accepted) is stored under the SHA-256 of the name instead,
//! and its full name is written once to `names/` before the blob first appears, so listings still
//! return every real name, in order.
//!
//! **CPK emulation with enforcement**: a blob written with a customer-provided key records the
//! key's SHA-256 and is stored encrypted at rest under that key, in the EBF format (so ranged reads
//! decrypt only what they touch). Reads, property calls and writes without the key, or with another
//! key, are refused with the errors Azure gives (HTTP 409 there).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use encfs_crypto::DataKey;
use encfs_crypto::format::{self, Encryptor, HEADER_LEN, Opener, SegmentSize};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::{Deserialize, Serialize};

use super::{
    BlobItem, BlobProperties, BlobStore, Condition, CustomerKey, ListOptions, Listing, Metadata,
    StoreError, StoreResult, paginate,
};

mod staging;
pub use staging::{Collected, LEFTOVER_GRACE};

const MAGIC: &[u8; 8] = b"encfsLB1";
/// Longest encoded name kept as the file name (it fits a file name on common Linux file systems,
/// with room to spare); longer ones are stored under their hash.
const MAX_ENCODED_NAME: usize = 240;
/// Longest blob name, in characters: Azure's limit, so trees move between stores.
const MAX_NAME_CHARS: usize = 1024;
/// File-name suffix of a blob stored under the hash of its name (encoded names never hold a `.`).
const LONG_NAME_SUFFIX: &str = ".long";
/// Directory of the full names of blobs stored under a hash.
const LONG_NAMES: &str = "names";
/// Names keep `-`, `_` and `~` readable; everything else is escaped, `/` and `.` included (so
/// no name can become `.`, `..` or a path).
const NAME_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'~');
/// Staged-block file prefix: plain data, or EBF under the customer key.
const STAGED_PLAIN: u8 = 0;
/// Blocks staged with a position hint go into one assembly file per writer's version
/// ([`staging::assembly_path`]), at their final offset after a reserved header region; a commit
/// whose blocks tile it in order renames it into place. (Its name holds a `.`, which encoded names
/// never do.)
const ASSEMBLY_RESERVE: u64 = 4096;
const STAGED_CPK: u8 = 1;

/// The JSON stored at the front of each blob file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BlobHeader {
    etag: String,
    size: u64,
    modified_unix_nanos: u64,
    metadata: Metadata,
    /// Base64 SHA-256 of the customer key, for CPK blobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cpk_sha256: Option<String>,
}

/// One container of the embedded store.
#[derive(Debug, Clone)]
pub struct LocalStore {
    inner: Arc<Paths>,
}

#[derive(Debug)]
struct Paths {
    container: PathBuf,
    /// The staging groups this instance is writing.
    leases: staging::Leases,
    /// Whether the leftovers of dead writers were collected (once, at the first write).
    collected: std::sync::Once,
}

impl LocalStore {
    /// The container at `path` (its parent directory is the store root).
    pub fn new(container: impl Into<PathBuf>) -> Self {
        Self {
            inner: Arc::new(Paths {
                container: container.into(),
                leases: staging::Leases::default(),
                collected: std::sync::Once::new(),
            }),
        }
    }

    /// Removes what dead writers left behind: staged blocks of versions whose writer no longer
    /// holds their lease and temporary files nobody holds open, untouched for `older_than`.
    /// Never a live writer's (see the `staging` module). Runs by itself, with [`LEFTOVER_GRACE`],
    /// at the first write of each store instance.
    pub fn collect_leftovers(&self, older_than: Duration) -> StoreResult<Collected> {
        staging::collect(&self.inner.container, older_than)
    }

    /// The once-per-instance collection, before the first write.
    fn collect_once(&self) {
        self.inner.collected.call_once(|| {
            let _ = self.collect_leftovers(LEFTOVER_GRACE);
        });
    }

    fn blobs(&self) -> PathBuf {
        self.inner.container.join("blobs")
    }

    fn blob_path(&self, name: &str) -> StoreResult<PathBuf> {
        Ok(self.blobs().join(encode_name(name)?))
    }

    /// For a blob stored under the hash of its name: where its full name is kept.
    fn long_name_path(&self, file_name: &str) -> Option<PathBuf> {
        file_name
            .strip_suffix(LONG_NAME_SUFFIX)
            .map(|hash| self.inner.container.join(LONG_NAMES).join(hash))
    }

    /// Records the full name of a blob stored under its hash (once; the file never changes),
    /// before the blob file first appears.
    fn record_long_name(&self, name: &str, target: &Path) -> StoreResult<()> {
        let Some(path) = target
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| self.long_name_path(n))
        else {
            return Ok(());
        };
        if path.exists() {
            return Ok(());
        }
        let dir = self.inner.container.join(LONG_NAMES);
        fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let temp = self.temp_file(|file| {
            file.write_all(name.as_bytes())
                .map_err(|e| StoreError::io(&path, e))
        })?;
        temp.persist(&path)?;
        sync_dir(&dir)
    }

    /// Every blob of the container, by name, with its file (unsorted; checks the container).
    fn blob_files(&self) -> StoreResult<Vec<(String, PathBuf)>> {
        self.check_container()?;
        let blobs = self.blobs();
        Ok(fs::read_dir(&blobs)
            .map_err(|e| StoreError::io(&blobs, e))?
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let name = self.name_of_file(entry.file_name().to_str()?)?;
                Some((name, entry.path()))
            })
            .collect())
    }

    /// The blob name a file in `blobs/` holds.
    fn name_of_file(&self, file_name: &str) -> Option<String> {
        match self.long_name_path(file_name) {
            Some(path) => fs::read_to_string(path).ok(),
            None => decode_name(file_name),
        }
    }

    /// [`BlobStore::set_metadata`] on the calling thread: the data is copied file to file
    /// under a new header, under the container lock.
    fn set_metadata_now(
        &self,
        name: &str,
        metadata: &Metadata,
        condition: &Condition,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<String> {
        let target = self.blob_path(name)?;
        let _lock = self.lock()?;
        check_condition(name, &target, condition)?;
        let (header, mut data) = read_header(name, &target)?;
        check_cpk(name, &header, cpk)?;
        let etag = new_etag();
        let header = BlobHeader {
            etag: etag.clone(),
            modified_unix_nanos: now_nanos(),
            metadata: metadata.clone(),
            ..header
        };
        let temp = self.temp_file(|file| {
            write_header(file, &header, &target)?;
            // Everything after the header: the data (EBF under the customer key for CPK).
            std::io::copy(&mut data, file).map_err(|e| StoreError::io(&target, e))?;
            Ok(())
        })?;
        temp.persist(&target)?;
        sync_dir(&self.blobs())?;
        Ok(etag)
    }

    fn staging(&self, name: &str) -> StoreResult<PathBuf> {
        Ok(self
            .inner
            .container
            .join("staging")
            .join(encode_name(name)?))
    }

    fn check_container(&self) -> StoreResult<()> {
        if self.blobs().is_dir() {
            Ok(())
        } else {
            Err(StoreError::ContainerNotFound(
                self.inner.container.display().to_string(),
            ))
        }
    }

    /// Writes `contents` through a temporary file in `tmp/` and fsyncs it; returns its path.
    fn temp_file(
        &self,
        write: impl FnOnce(&mut File) -> StoreResult<()>,
    ) -> StoreResult<tempfile_path::TempPath> {
        let dir = self.inner.container.join("tmp");
        let (mut file, path) = tempfile_path::create(&dir)?;
        write(&mut file)?;
        file.sync_all()
            .map_err(|e| StoreError::io(path.as_ref(), e))?;
        Ok(path)
    }

    /// Renames `temp` over the blob under the container lock, after checking `condition`.
    fn publish(
        &self,
        name: &str,
        temp: tempfile_path::TempPath,
        condition: &Condition,
    ) -> StoreResult<()> {
        self.publish_file(name, temp.as_ref(), condition)?;
        temp.forget();
        Ok(())
    }

    /// Renames the file at `path` over the blob under the container lock, after checking
    /// `condition`. On failure the file is left where it is (a commit can be retried).
    fn publish_file(&self, name: &str, path: &Path, condition: &Condition) -> StoreResult<()> {
        let target = self.blob_path(name)?;
        let _lock = self.lock()?;
        check_condition(name, &target, condition)?;
        self.record_long_name(name, &target)?;
        fs::rename(path, &target).map_err(|e| StoreError::io(&target, e))?;
        sync_dir(&self.blobs())
    }

    /// [`BlobStore::put`] on the calling thread.
    fn put_now(
        &self,
        name: &str,
        data: Bytes,
        metadata: &Metadata,
        condition: &Condition,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<String> {
        let target = self.blob_path(name)?;
        if let Some(existing) = read_header(name, &target).ok().map(|(h, _)| h) {
            // Azure refuses to overwrite a CPK blob without its key.
            if existing.cpk_sha256.is_some() {
                check_cpk(name, &existing, cpk)?;
            }
        }
        let size = data.len() as u64;
        let mut write = |out: &mut Sink<'_>| {
            out.write_all(&data)
                .map_err(|e| StoreError::io(&target, e))?;
            Ok(size)
        };
        let (temp, etag) = write_blob_file(self, &mut write, metadata, cpk, size)?;
        self.publish(name, temp, condition)?;
        Ok(etag)
    }

    fn lock(&self) -> StoreResult<File> {
        let path = self.inner.container.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        file.lock().map_err(|e| StoreError::io(&path, e))?;
        Ok(file)
    }
}

/// Temporary files that are removed unless renamed into place.
mod tempfile_path {
    use std::fs::{File, OpenOptions};
    use std::path::{Path, PathBuf};

    use super::{StoreError, StoreResult};

    /// A file in `tmp/` deleted on drop unless persisted.
    pub struct TempPath(Option<PathBuf>);

    impl AsRef<Path> for TempPath {
        fn as_ref(&self) -> &Path {
            self.0.as_deref().expect("present until persisted")
        }
    }

    impl TempPath {
        pub fn persist(mut self, target: &Path) -> StoreResult<()> {
            let path = self.0.take().expect("present");
            std::fs::rename(&path, target).map_err(|e| StoreError::io(target, e))
        }

        /// The file was moved away by its owner: nothing to remove on drop.
        pub fn forget(mut self) {
            self.0 = None;
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            if let Some(path) = self.0.take() {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    pub fn create(dir: &Path) -> StoreResult<(File, TempPath)> {
        for _ in 0..16 {
            let mut suffix = [0u8; 8];
            aws_lc_rs::rand::fill(&mut suffix)
                .map_err(|_| StoreError::Config("OS RNG failed".into()))?;
            let path = dir.join(format!(
                "{}.partial",
                suffix
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            ));
            match OpenOptions::new()
                .write(true)
                .read(true)
                .create_new(true)
                .open(&path)
            {
                // Held by its writer until renamed or removed: the leftover collector skips
                // files it cannot lock.
                Ok(file) => {
                    file.lock().map_err(|e| StoreError::io(&path, e))?;
                    return Ok((file, TempPath(Some(path))));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(StoreError::io(&path, e)),
            }
        }
        Err(StoreError::Config(format!(
            "cannot create a temporary file in {}",
            dir.display()
        )))
    }
}

/// The file name of a blob (or block id): the name percent-encoded, or the hex SHA-256 of the
/// name and [`LONG_NAME_SUFFIX`] when the encoding is longer than [`MAX_ENCODED_NAME`].
fn encode_name(name: &str) -> StoreResult<String> {
    if name.is_empty() {
        return Err(StoreError::Config("empty blob name".into()));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(StoreError::NameTooLong(name.to_owned()));
    }
    let encoded = utf8_percent_encode(name, NAME_ESCAPES).to_string();
    if encoded.len() > MAX_ENCODED_NAME {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, name.as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        return Ok(format!("{hex}{LONG_NAME_SUFFIX}"));
    }
    Ok(encoded)
}

fn decode_name(encoded: &str) -> Option<String> {
    percent_decode_str(encoded)
        .decode_utf8()
        .ok()
        .map(|n| n.into_owned())
}

fn sync_dir(dir: &Path) -> StoreResult<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

fn new_etag() -> String {
    let mut random = [0u8; 8];
    aws_lc_rs::rand::fill(&mut random).expect("OS RNG");
    format!(
        "\"0x{}\"",
        random
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<String>()
    )
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn check_condition(name: &str, target: &Path, condition: &Condition) -> StoreResult<()> {
    match condition {
        Condition::None => Ok(()),
        Condition::IfNotExists if target.exists() => {
            Err(StoreError::ConditionNotMet(name.to_owned()))
        }
        Condition::IfNotExists => Ok(()),
        Condition::IfMatch(etag) => match read_header(name, target) {
            Ok((header, _)) if &header.etag == etag => Ok(()),
            Ok(_) => Err(StoreError::ConditionNotMet(name.to_owned())),
            Err(StoreError::BlobNotFound(_)) => Err(StoreError::ConditionNotMet(name.to_owned())),
            Err(other) => Err(other),
        },
    }
}

/// Reads a blob file's header; returns it and the open file positioned at the data.
fn read_header(name: &str, path: &Path) -> StoreResult<(BlobHeader, File)> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::BlobNotFound(name.to_owned()));
        }
        Err(e) => return Err(StoreError::io(path, e)),
    };
    let corrupt = |message: &str| corrupt(path, message);
    let mut prefix = [0u8; PREFIX_LEN];
    file.read_exact(&mut prefix)
        .map_err(|_| corrupt("too short for a blob header"))?;
    let mut json = vec![0u8; metadata_len(&prefix, path)?];
    file.read_exact(&mut json)
        .map_err(|_| corrupt("truncated metadata"))?;
    Ok((parse_metadata(&json, path)?, file))
}

/// Bytes before a blob file's metadata: magic and the metadata's length.
const PREFIX_LEN: usize = 12;

fn corrupt(path: &Path, message: &str) -> StoreError {
    StoreError::Corrupt {
        path: path.display().to_string(),
        message: message.to_owned(),
    }
}

/// The metadata length a blob file's prefix gives.
fn metadata_len(prefix: &[u8; PREFIX_LEN], path: &Path) -> StoreResult<usize> {
    if &prefix[..8] != MAGIC {
        return Err(corrupt(path, "bad magic"));
    }
    let len = u32::from_be_bytes(prefix[8..].try_into().expect("4 bytes")) as usize;
    if len > 1 << 20 {
        return Err(corrupt(path, "metadata too large"));
    }
    Ok(len)
}

fn parse_metadata(json: &[u8], path: &Path) -> StoreResult<BlobHeader> {
    serde_json::from_slice(json).map_err(|e| corrupt(path, &format!("metadata: {e}")))
}

/// A whole blob file in one read (a small blob in a handful of system calls): its header and
/// its data.
fn read_whole(name: &str, path: &Path) -> StoreResult<(BlobHeader, Bytes)> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::BlobNotFound(name.to_owned()));
        }
        Err(e) => return Err(StoreError::io(path, e)),
    };
    let prefix = bytes
        .first_chunk::<PREFIX_LEN>()
        .ok_or_else(|| corrupt(path, "too short for a blob header"))?;
    let data_start = PREFIX_LEN + metadata_len(prefix, path)?;
    let json = bytes
        .get(PREFIX_LEN..data_start)
        .ok_or_else(|| corrupt(path, "truncated metadata"))?;
    let header = parse_metadata(json, path)?;
    let data_end = data_start as u64 + header.size;
    if (bytes.len() as u64) < data_end {
        return Err(corrupt(path, "blob file shorter than its header says"));
    }
    let data = Bytes::from(bytes).slice(data_start..data_end as usize);
    Ok((header, data))
}

fn write_header(file: &mut File, header: &BlobHeader, path: &Path) -> StoreResult<()> {
    let json = serde_json::to_vec(header).expect("serializable");
    let mut out = Vec::with_capacity(PREFIX_LEN + json.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    file.write_all(&out).map_err(|e| StoreError::io(path, e))
}

/// CPK enforcement: the request's key must be exactly the blob's.
fn check_cpk(name: &str, header: &BlobHeader, cpk: Option<&CustomerKey>) -> StoreResult<()> {
    match (&header.cpk_sha256, cpk) {
        (None, None) => Ok(()),
        (Some(_), None) => Err(StoreError::CustomerKeyRequired(name.to_owned())),
        (None, Some(_)) => Err(StoreError::CustomerKeyUnexpected(name.to_owned())),
        (Some(recorded), Some(key)) if *recorded == key.sha256_base64() => Ok(()),
        (Some(_), Some(_)) => Err(StoreError::CustomerKeyMismatch(name.to_owned())),
    }
}

fn cpk_data_key(cpk: &CustomerKey) -> DataKey {
    DataKey::from_bytes(*cpk.dangerous_bytes())
}

/// Properties of the blob file at `path`, enforcing the CPK rules.
fn properties_at(
    name: &str,
    path: &Path,
    cpk: Option<&CustomerKey>,
) -> StoreResult<BlobProperties> {
    let (header, _) = read_header(name, path)?;
    check_cpk(name, &header, cpk)?;
    Ok(properties_of(&header))
}

fn properties_of(header: &BlobHeader) -> BlobProperties {
    BlobProperties {
        size: header.size,
        etag: header.etag.clone(),
        last_modified: UNIX_EPOCH + Duration::from_nanos(header.modified_unix_nanos),
        metadata: header.metadata.clone(),
    }
}

/// The version check of a read pinned to an etag (`If-Match`): header and data come from one
/// open file, so a matching header means the bytes read are that version's.
fn check_version(name: &str, header: &BlobHeader, if_match: Option<&str>) -> StoreResult<()> {
    match if_match {
        Some(etag) if etag != header.etag => Err(StoreError::Changed(name.to_owned())),
        _ => Ok(()),
    }
}

/// Reads `range` of the data that follows the header (plain or CPK-encrypted); with `if_match`,
/// only from that version.
fn read_range(
    name: &str,
    path: &Path,
    range: Option<Range<u64>>,
    cpk: Option<&CustomerKey>,
    if_match: Option<&str>,
) -> StoreResult<Bytes> {
    if range.is_none() && cpk.is_none() {
        let (header, data) = read_whole(name, path)?;
        check_cpk(name, &header, None)?;
        check_version(name, &header, if_match)?;
        return Ok(data);
    }
    let (header, mut file) = read_header(name, path)?;
    check_cpk(name, &header, cpk)?;
    check_version(name, &header, if_match)?;
    let range = range.unwrap_or(0..header.size);
    let (start, end) = (range.start.min(header.size), range.end.min(header.size));
    if start >= end {
        return Ok(Bytes::new());
    }
    let data_start = file
        .stream_position()
        .map_err(|e| StoreError::io(path, e))?;
    let io = |e| StoreError::io(path, e);
    let Some(cpk) = cpk else {
        // Read into spare capacity: no zeroing of a buffer that is overwritten anyway.
        let len = (end - start) as usize;
        let mut out = Vec::with_capacity(len);
        file.seek(SeekFrom::Start(data_start + start)).map_err(io)?;
        (&mut file)
            .take(len as u64)
            .read_to_end(&mut out)
            .map_err(io)?;
        if out.len() != len {
            return Err(corrupt(path, "blob file shorter than its header says"));
        }
        return Ok(out.into());
    };
    // CPK: the data is an EBF blob under the customer key; decrypt only the segments needed.
    let total = file.metadata().map_err(io)?.len() - data_start;
    let mut ebf_header = [0u8; HEADER_LEN];
    file.read_exact(&mut ebf_header).map_err(io)?;
    let corrupt = |e: encfs_crypto::Error| corrupt(path, &e.to_string());
    let opener = Opener::new(&cpk_data_key(cpk), &ebf_header, total).map_err(corrupt)?;
    let segments = opener.segments_for(start, end - start);
    let sealed_range = opener.sealed_range(segments.start, segments.end - segments.start);
    let mut sealed = vec![0u8; (sealed_range.end - sealed_range.start) as usize];
    file.seek(SeekFrom::Start(data_start + sealed_range.start))
        .map_err(io)?;
    file.read_exact(&mut sealed).map_err(io)?;
    let mut plain = vec![0u8; sealed.len()];
    let n = opener
        .open_segments(segments.start, &sealed, &mut plain)
        .map_err(corrupt)?;
    let first_byte = segments.start * opener.segment_size().bytes() as u64;
    let from = (start - first_byte) as usize;
    let to = (from + (end - start) as usize).min(n);
    Ok(Bytes::copy_from_slice(&plain[from..to]))
}

/// Where a blob's data goes: straight into the file (plain data: staged blocks are copied
/// file-to-file by the kernel, `copy_file_range`), through the CPK encryptor, or into memory (a
/// staged block read back).
enum Sink<'a> {
    File(&'a mut File),
    Encrypting(&'a mut dyn Write),
    Memory(&'a mut Vec<u8>),
}

impl Sink<'_> {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Self::File(file) => file.write_all(bytes),
            Self::Encrypting(writer) => writer.write_all(bytes),
            Self::Memory(out) => {
                out.extend_from_slice(bytes);
                Ok(())
            }
        }
    }
}

/// Writes a blob file (header then data, encrypting under the CPK if given) to a temp file.
fn write_blob_file(
    store: &LocalStore,
    data: &mut dyn FnMut(&mut Sink<'_>) -> StoreResult<u64>,
    metadata: &Metadata,
    cpk: Option<&CustomerKey>,
    size: u64,
) -> StoreResult<(tempfile_path::TempPath, String)> {
    let etag = new_etag();
    let header = BlobHeader {
        etag: etag.clone(),
        size,
        modified_unix_nanos: now_nanos(),
        metadata: metadata.clone(),
        cpk_sha256: cpk.map(CustomerKey::sha256_base64),
    };
    let temp = store.temp_file(|file| {
        let path = store.inner.container.join("tmp");
        write_header(file, &header, &path)?;
        let written = match cpk {
            None => data(&mut Sink::File(file))?,
            Some(cpk) => {
                let mut buffered = std::io::BufWriter::with_capacity(1 << 20, &mut *file);
                let mut encryptor =
                    Encryptor::new(&cpk_data_key(cpk), SegmentSize::DEFAULT, &mut buffered)
                        .map_err(|e| StoreError::io(&path, e.into()))?;
                let n = data(&mut Sink::Encrypting(&mut encryptor))?;
                encryptor
                    .finish()
                    .map_err(|e| StoreError::io(&path, e.into()))?;
                buffered.flush().map_err(|e| StoreError::io(&path, e))?;
                n
            }
        };
        if written != size {
            return Err(corrupt(&path, "short write"));
        }
        Ok(())
    })?;
    Ok((temp, etag))
}

/// An open blob file: reads see the version that was current when it was opened, even if the
/// blob is replaced meanwhile (a commit renames a new file over the name).
struct PinnedFile {
    path: PathBuf,
    file: File,
    data_start: u64,
    size: u64,
    etag: String,
}

impl super::PinnedBlob for PinnedFile {
    fn len(&self) -> u64 {
        self.size
    }

    fn etag(&self) -> &str {
        &self.etag
    }

    fn read(&self, range: Range<u64>) -> StoreResult<Bytes> {
        let mut out = Vec::new();
        self.read_into(range, &mut out)?;
        Ok(out.into())
    }

    fn read_into(&self, range: Range<u64>, out: &mut Vec<u8>) -> StoreResult<()> {
        use std::os::fd::AsRawFd;
        let (start, end) = (range.start.min(self.size), range.end.min(self.size));
        let len = (end - start) as usize;
        out.reserve(len);
        let base = out.len();
        // Read straight into spare capacity: zero-filling first would cost as much as the copy.
        let mut done = 0usize;
        while done < len {
            let offset = (self.data_start + start + done as u64) as libc::off_t;
            // SAFETY: writes at most `len - done` bytes at `base + done`, inside the capacity
            // reserved above; the descriptor is owned by `self.file` and open.
            let n = unsafe {
                libc::pread(
                    self.file.as_raw_fd(),
                    out.as_mut_ptr().add(base + done).cast(),
                    len - done,
                    offset,
                )
            };
            if n < 0 {
                let error = std::io::Error::last_os_error();
                if error.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(StoreError::io(&self.path, error));
            }
            if n == 0 {
                return Err(corrupt(
                    &self.path,
                    "blob file shorter than its header says",
                ));
            }
            done += n as usize;
        }
        // SAFETY: `pread` initialised the `len` bytes after the first `base`.
        unsafe { out.set_len(base + len) };
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> StoreResult<T> + Send + 'static,
) -> StoreResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking store task panicked")
}

#[async_trait]
impl BlobStore for LocalStore {
    fn location(&self) -> String {
        self.inner.container.display().to_string()
    }

    async fn create_container(&self) -> StoreResult<bool> {
        let store = self.clone();
        blocking(move || {
            let existed = store.blobs().is_dir();
            for dir in ["blobs", "staging", "tmp"] {
                let path = store.inner.container.join(dir);
                fs::create_dir_all(&path).map_err(|e| StoreError::io(&path, e))?;
            }
            Ok(!existed)
        })
        .await
    }

    async fn container_exists(&self) -> StoreResult<bool> {
        Ok(self.blobs().is_dir())
    }

    async fn get(
        &self,
        name: &str,
        range: Option<Range<u64>>,
        cpk: Option<&CustomerKey>,
        if_match: Option<&str>,
    ) -> StoreResult<Bytes> {
        self.check_container()?;
        let (path, name, cpk) = (self.blob_path(name)?, name.to_owned(), cpk.cloned());
        let if_match = if_match.map(str::to_owned);
        blocking(move || read_range(&name, &path, range, cpk.as_ref(), if_match.as_deref())).await
    }

    async fn put(
        &self,
        name: &str,
        data: Bytes,
        metadata: &Metadata,
        condition: &Condition,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<String> {
        self.check_container()?;
        let (store, name, metadata, condition, cpk) = (
            self.clone(),
            name.to_owned(),
            metadata.clone(),
            condition.clone(),
            cpk.cloned(),
        );
        blocking(move || {
            store.collect_once();
            store.put_now(&name, data, &metadata, &condition, cpk.as_ref())
        })
        .await
    }

    async fn stage_block(
        &self,
        name: &str,
        block_id: &str,
        data: Bytes,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<()> {
        self.check_container()?;
        if block_id.is_empty() || block_id.len() > 64 {
            return Err(StoreError::Config(format!(
                "{name}: block id must be 1 to 64 bytes"
            )));
        }
        let (store, dir, block, group, cpk) = (
            self.clone(),
            self.staging(name)?,
            encode_name(block_id)?,
            staging::group_of(block_id),
            cpk.cloned(),
        );
        blocking(move || {
            store.collect_once();
            store.inner.leases.take(&dir, &group)?;
            let temp = store.temp_file(|file| {
                let io = |e| StoreError::io(&dir, e);
                match &cpk {
                    None => {
                        file.write_all(&[STAGED_PLAIN]).map_err(io)?;
                        file.write_all(&data).map_err(io)
                    }
                    Some(cpk) => {
                        file.write_all(&[STAGED_CPK]).map_err(io)?;
                        let sealed = format::seal(&cpk_data_key(cpk), &data, SegmentSize::DEFAULT)
                            .map_err(|e| StoreError::io(&dir, e.into()))?;
                        file.write_all(&sealed).map_err(io)
                    }
                }
            })?;
            // This copy supersedes one staged at a position under the same id.
            let _ = fs::remove_file(staging::marker_path(&dir, &block));
            temp.persist(&dir.join(block))
        })
        .await
    }

    async fn stage_block_at(
        &self,
        name: &str,
        block_id: &str,
        offset: u64,
        data: Bytes,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<()> {
        if cpk.is_some() {
            // CPK blocks are sealed one by one under the customer key: no in-place assembly.
            return self.stage_block(name, block_id, data, cpk).await;
        }
        self.check_container()?;
        if block_id.is_empty() || block_id.len() > 64 {
            return Err(StoreError::Config(format!(
                "{name}: block id must be 1 to 64 bytes"
            )));
        }
        let (store, dir, block, group) = (
            self.clone(),
            self.staging(name)?,
            encode_name(block_id)?,
            staging::group_of(block_id),
        );
        blocking(move || {
            use std::os::unix::fs::{FileExt, MetadataExt};
            let io = |e| StoreError::io(&dir, e);
            store.collect_once();
            store.inner.leases.take(&dir, &group)?;
            let path = staging::assembly_path(&dir, &group);
            let assembly = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(io)?;
            assembly
                .write_all_at(&data, ASSEMBLY_RESERVE + offset)
                .map_err(|e| StoreError::io(&path, e))?;
            let inode = assembly.metadata().map_err(io)?.ino();
            let _ = fs::remove_file(dir.join(&block));
            // The marker appears (by rename) only after its data was written; it names the
            // assembly file's inode, so a lost and recreated assembly cannot pass for this one.
            let marker = staging::marker_path(&dir, &block);
            let temp = dir.join(format!("{block}.at.partial"));
            fs::write(&temp, format!("{offset} {} {inode}", data.len())).map_err(io)?;
            fs::rename(&temp, &marker).map_err(io)
        })
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
        self.check_container()?;
        let dir = self.staging(name)?;
        // (encoded file name, group) of each block named, for the clean-up after the commit.
        let blocks = named_blocks(block_ids)?;
        let block_ids = block_ids.to_vec();
        let (store, name, metadata, condition, cpk) = (
            self.clone(),
            name.to_owned(),
            metadata.clone(),
            condition.clone(),
            cpk.cloned(),
        );
        blocking(move || {
            store.collect_once();
            let staged: Vec<Staged> = block_ids
                .iter()
                .map(|id| staged_ref(&name, &dir, id))
                .collect::<StoreResult<_>>()?;
            if cpk.is_none()
                && let Some(etag) = commit_assembly(&store, &name, &staged, &metadata, &condition)?
            {
                staging::remove_blocks(&store.inner.leases, &dir, &blocks);
                return Ok(etag);
            }
            let mut size = 0u64;
            for block in &staged {
                size += match block {
                    Staged::File(path, len) => staged_plain_len(path, *len)?,
                    Staged::At { len, .. } => *len,
                };
            }
            let mut write = |out: &mut Sink<'_>| {
                let mut written = 0;
                for block in &staged {
                    written += match block {
                        Staged::File(path, _) => copy_staged(&name, path, cpk.as_ref(), out)?,
                        at @ Staged::At { .. } => copy_assembled(&name, at, cpk.as_ref(), out)?,
                    };
                }
                Ok(written)
            };
            let (temp, etag) = write_blob_file(&store, &mut write, &metadata, cpk.as_ref(), size)?;
            store.publish(&name, temp, &condition)?;
            staging::remove_blocks(&store.inner.leases, &dir, &blocks);
            Ok(etag)
        })
        .await
    }

    async fn set_metadata(
        &self,
        name: &str,
        metadata: &Metadata,
        condition: &Condition,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<String> {
        self.check_container()?;
        let (store, name, metadata, condition, cpk) = (
            self.clone(),
            name.to_owned(),
            metadata.clone(),
            condition.clone(),
            cpk.cloned(),
        );
        blocking(move || store.set_metadata_now(&name, &metadata, &condition, cpk.as_ref())).await
    }

    async fn properties(
        &self,
        name: &str,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<BlobProperties> {
        self.check_container()?;
        let (path, name, cpk) = (self.blob_path(name)?, name.to_owned(), cpk.cloned());
        blocking(move || properties_at(&name, &path, cpk.as_ref())).await
    }

    async fn list(&self, options: &ListOptions<'_>) -> StoreResult<Listing> {
        let mut names = self.blob_files()?;
        names.sort();
        let (page, prefixes, next_marker) = paginate(names, options);
        let page = tokio::task::spawn_blocking(move || {
            page.into_iter()
                .filter_map(|(name, path)| {
                    // A blob deleted since the directory read simply drops out of the page.
                    let (header, _) = read_header(&name, &path).ok()?;
                    Some(BlobItem {
                        name,
                        properties: properties_of(&header),
                    })
                })
                .collect()
        })
        .await
        .expect("listing task panicked");
        Ok(Listing {
            blobs: page,
            prefixes,
            next_marker,
        })
    }
    async fn list_names(&self, prefix: &str) -> StoreResult<Vec<String>> {
        // Names only: one directory read, no blob file opened.
        let mut names: Vec<String> = self
            .blob_files()?
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| name.starts_with(prefix))
            .collect();
        names.sort();
        Ok(names)
    }

    async fn delete(&self, name: &str, condition: &Condition) -> StoreResult<()> {
        self.check_container()?;
        let (store, name, condition) = (self.clone(), name.to_owned(), condition.clone());
        blocking(move || {
            let target = store.blob_path(&name)?;
            let _lock = store.lock()?;
            check_condition(&name, &target, &condition)?;
            match fs::remove_file(&target) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StoreError::BlobNotFound(name));
                }
                Err(e) => return Err(StoreError::io(&target, e)),
            }
            if let Some(long_name) = target
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| store.long_name_path(n))
            {
                let _ = fs::remove_file(long_name);
            }
            let _ = fs::remove_dir_all(store.staging(&name)?);
            sync_dir(&store.blobs())
        })
        .await
    }

    async fn discard_staged(&self, name: &str, block_ids: &[String]) -> StoreResult<()> {
        self.check_container()?;
        let dir = self.staging(name)?;
        let blocks = named_blocks(block_ids)?;
        let store = self.clone();
        blocking(move || {
            staging::remove_blocks(&store.inner.leases, &dir, &blocks);
            Ok(())
        })
        .await
    }

    /// Itself: every call is local file I/O.
    fn local(&self) -> Option<&dyn super::LocalAccess> {
        Some(self)
    }
}

/// The embedded store's calls on the calling thread: the same file I/O as the async calls, which
/// run it on the blocking pool.
impl super::LocalAccess for LocalStore {
    fn pin(
        &self,
        name: &str,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<Option<Box<dyn super::PinnedBlob>>> {
        if cpk.is_some() {
            // CPK data is sealed under the customer key: served by `get`.
            return Ok(None);
        }
        let pin = || -> StoreResult<Box<dyn super::PinnedBlob>> {
            self.check_container()?;
            let path = self.blob_path(name)?;
            let (header, mut file) = read_header(name, &path)?;
            check_cpk(name, &header, None)?;
            let data_start = file
                .stream_position()
                .map_err(|e| StoreError::io(&path, e))?;
            Ok(Box::new(PinnedFile {
                path,
                file,
                data_start,
                size: header.size,
                etag: header.etag,
            }))
        };
        pin().map(Some)
    }

    fn get(
        &self,
        name: &str,
        range: Option<Range<u64>>,
        cpk: Option<&CustomerKey>,
        if_match: Option<&str>,
    ) -> StoreResult<Bytes> {
        self.check_container()?;
        read_range(name, &self.blob_path(name)?, range, cpk, if_match)
    }

    fn properties(&self, name: &str, cpk: Option<&CustomerKey>) -> StoreResult<BlobProperties> {
        self.check_container()?;
        properties_at(name, &self.blob_path(name)?, cpk)
    }

    fn put(
        &self,
        name: &str,
        data: Bytes,
        metadata: &Metadata,
        condition: &Condition,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<String> {
        self.collect_once();
        self.check_container()?;
        self.put_now(name, data, metadata, condition, cpk)
    }

    fn read_staged(
        &self,
        name: &str,
        block_id: &str,
        cpk: Option<&CustomerKey>,
    ) -> StoreResult<Bytes> {
        self.check_container()?;
        let dir = self.staging(name)?;
        let mut out = Vec::new();
        let sink = &mut Sink::Memory(&mut out);
        match staged_ref(name, &dir, block_id)? {
            Staged::File(path, _) => copy_staged(name, &path, cpk, sink)?,
            at @ Staged::At { .. } => copy_assembled(name, &at, cpk, sink)?,
        };
        Ok(out.into())
    }
}

/// The encoded file name and the staging group of each block id.
fn named_blocks(block_ids: &[String]) -> StoreResult<Vec<(String, String)>> {
    block_ids
        .iter()
        .map(|id| encode_name(id).map(|e| (e, staging::group_of(id))))
        .collect()
}

/// A block named in a commit: its own file (and length), or a range of its version's assembly
/// file (which must still be the file of that inode).
enum Staged {
    File(PathBuf, u64),
    At {
        assembly: PathBuf,
        offset: u64,
        len: u64,
        inode: u64,
    },
}

fn staged_ref(name: &str, dir: &Path, block_id: &str) -> StoreResult<Staged> {
    let file_name = encode_name(block_id)?;
    let block = dir.join(&file_name);
    if let Ok(len) = fs::metadata(&block).map(|m| m.len()) {
        return Ok(Staged::File(block, len));
    }
    let marker = staging::marker_path(dir, &file_name);
    let text =
        fs::read_to_string(&marker).map_err(|_| StoreError::InvalidBlockList(name.to_owned()))?;
    let mut fields = text.split(' ').map(str::parse::<u64>);
    match (fields.next(), fields.next(), fields.next()) {
        (Some(Ok(offset)), Some(Ok(len)), Some(Ok(inode))) => Ok(Staged::At {
            assembly: staging::assembly_path(dir, &staging::group_of(block_id)),
            offset,
            len,
            inode,
        }),
        _ => Err(corrupt(&marker, "bad staged-block marker")),
    }
}

/// The assembly file of a block staged at a position, opened, if it is still the file the block
/// was written into; otherwise the block is lost (an invalid block list).
fn open_assembly(name: &str, block: &Staged, write: bool) -> StoreResult<File> {
    use std::os::unix::fs::MetadataExt;
    let Staged::At {
        assembly, inode, ..
    } = block
    else {
        unreachable!("only blocks staged at a position have an assembly file")
    };
    let file = OpenOptions::new()
        .read(true)
        .write(write)
        .open(assembly)
        .map_err(|_| StoreError::InvalidBlockList(name.to_owned()))?;
    match file.metadata() {
        Ok(meta) if meta.ino() == *inode => Ok(file),
        Ok(_) => Err(StoreError::InvalidBlockList(name.to_owned())),
        Err(e) => Err(StoreError::io(assembly, e)),
    }
}

/// The copy-free commit: when every block was staged at a position into one assembly file and
/// they tile it from 0 in list order, the header is written into the reserved region and the file
/// is renamed into place. `None` when the blocks do not qualify (the caller copies instead). A
/// failed rename leaves the assembly file in place, so the commit can be retried.
fn commit_assembly(
    store: &LocalStore,
    name: &str,
    staged: &[Staged],
    metadata: &Metadata,
    condition: &Condition,
) -> StoreResult<Option<String>> {
    use std::os::unix::fs::FileExt;
    let Some(Staged::At { assembly: path, .. }) = staged.first() else {
        return Ok(None);
    };
    let mut end = 0u64;
    for block in staged {
        match block {
            Staged::At {
                assembly,
                offset,
                len,
                ..
            } if *offset == end && assembly == path => end += len,
            _ => return Ok(None),
        }
    }
    let file = open_assembly(name, &staged[0], true)?;
    for block in &staged[1..] {
        open_assembly(name, block, false)?;
    }
    let etag = new_etag();
    let header = BlobHeader {
        etag: etag.clone(),
        size: end,
        modified_unix_nanos: now_nanos(),
        metadata: metadata.clone(),
        cpk_sha256: None,
    };
    let json = serde_json::to_vec(&header).expect("serializable");
    if PREFIX_LEN as u64 + json.len() as u64 > ASSEMBLY_RESERVE {
        return Ok(None);
    }
    // The JSON is padded with spaces to fill the reserved region, so the data starts right after.
    let mut head = Vec::with_capacity(ASSEMBLY_RESERVE as usize);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&((ASSEMBLY_RESERVE - PREFIX_LEN as u64) as u32).to_be_bytes());
    head.extend_from_slice(&json);
    head.resize(ASSEMBLY_RESERVE as usize, b' ');
    let io = |e| StoreError::io(path, e);
    file.write_all_at(&head, 0).map_err(io)?;
    file.set_len(ASSEMBLY_RESERVE + end).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    store.publish_file(name, path, condition)?;
    Ok(Some(etag))
}

/// Plaintext length of a staged block file of `len` bytes.
fn staged_plain_len(path: &Path, len: u64) -> StoreResult<u64> {
    let mut kind = [0u8; 1];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut kind))
        .map_err(|e| StoreError::io(path, e))?;
    match kind[0] {
        STAGED_PLAIN => Ok(len - 1),
        STAGED_CPK => SegmentSize::DEFAULT
            .plaintext_len(len - 1)
            .map_err(|e| corrupt(path, &e.to_string())),
        _ => Err(corrupt(path, "unknown staged block kind")),
    }
}

/// Appends a block staged at a position (`len` bytes at `offset` of its assembly file) to `out`.
/// Such blocks are never under a customer key.
fn copy_assembled(
    name: &str,
    block: &Staged,
    cpk: Option<&CustomerKey>,
    out: &mut Sink<'_>,
) -> StoreResult<u64> {
    if cpk.is_some() {
        return Err(StoreError::CustomerKeyUnexpected(name.to_owned()));
    }
    let Staged::At {
        assembly,
        offset,
        len,
        ..
    } = block
    else {
        unreachable!("copy_assembled takes blocks staged at a position")
    };
    let (offset, len) = (*offset, *len);
    let io = |e| StoreError::io(assembly, e);
    let mut file = open_assembly(name, block, false)?;
    file.seek(SeekFrom::Start(ASSEMBLY_RESERVE + offset))
        .map_err(io)?;
    let mut part = file.take(len);
    match out {
        Sink::File(target) => std::io::copy(&mut part, *target),
        Sink::Encrypting(target) => std::io::copy(&mut part, *target),
        Sink::Memory(target) => std::io::copy(&mut part, *target),
    }
    .map_err(io)
}

/// Appends a staged block's plaintext to `out`, enforcing the CPK rules on it.
fn copy_staged(
    name: &str,
    path: &Path,
    cpk: Option<&CustomerKey>,
    out: &mut Sink<'_>,
) -> StoreResult<u64> {
    let io = |e| StoreError::io(path, e);
    let mut file = File::open(path).map_err(io)?;
    let mut kind = [0u8; 1];
    file.read_exact(&mut kind).map_err(io)?;
    match (kind[0], cpk, out) {
        // Plain into a plain blob: the kernel copies file to file (copy_file_range).
        (STAGED_PLAIN, None, Sink::File(target)) => std::io::copy(&mut file, *target).map_err(io),
        (STAGED_PLAIN, None, Sink::Memory(out)) => {
            file.read_to_end(out).map(|n| n as u64).map_err(io)
        }
        (STAGED_PLAIN, None, Sink::Encrypting(_)) => unreachable!("no encryptor without a key"),
        (STAGED_PLAIN, Some(_), _) => Err(StoreError::CustomerKeyUnexpected(name.to_owned())),
        (_, None, _) => Err(StoreError::CustomerKeyRequired(name.to_owned())),
        (_, Some(cpk), out) => {
            let mut body = Vec::new();
            file.read_to_end(&mut body).map_err(io)?;
            let plain = format::open(&cpk_data_key(cpk), &body)
                .map_err(|_| StoreError::CustomerKeyMismatch(name.to_owned()))?;
            out.write_all(&plain).map_err(io)?;
            Ok(plain.len() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_flatten() {
        for name in ["a", "a/b/c.txt", "spaces and ünïcode", "..", "%2F"] {
            let encoded = encode_name(name).unwrap();
            assert!(!encoded.contains('/'));
            assert_eq!(decode_name(&encoded).unwrap(), name);
        }
        assert!(encode_name("").is_err());
        let long = encode_name(&"x".repeat(300)).unwrap();
        assert!(long.ends_with(LONG_NAME_SUFFIX) && long.len() < MAX_ENCODED_NAME);
        assert_ne!(long, encode_name(&"x".repeat(301)).unwrap());
        assert!(matches!(
            encode_name(&"é".repeat(1025)),
            Err(StoreError::NameTooLong(_))
        ));
        assert!(encode_name(&"é".repeat(1024)).is_ok());
    }
}
