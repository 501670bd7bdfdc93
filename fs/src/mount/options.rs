//! How a mount behaves: [`MountOptions`], what `encfs mount`'s flags set, with the defaults a
//! library caller gets.

use std::time::Duration;

use encfs_crypto::format::SegmentSize;

/// How a mount behaves.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Accept writes (a datasink); otherwise read-only (a datasource).
    pub read_write: bool,
    /// Memory budget of the block cache, bytes of plaintext.
    pub cache_size: usize,
    /// Directory of the optional sealed disk tier.
    pub disk_cache: Option<std::path::PathBuf>,
    /// Capacity of the disk tier.
    pub disk_cache_size: u64,
    /// Where a writer's parked blocks go (sealed; default: the disk-tier directory, else the
    /// system temporary directory).
    pub scratch_dir: Option<std::path::PathBuf>,
    /// Most dirty bytes in flight to the store, all files together.
    pub write_budget: usize,
    /// EBF segment size of files written through the mount.
    pub segment_size: SegmentSize,
    /// Plaintext bytes per staged block of a file being written (a multiple of the segment size).
    pub write_block: usize,
    /// How long the kernel may cache attributes and entries, and this mount its listings.
    pub ttl: Duration,
    /// Owner of entries that record none (the root, uploads without attributes).
    pub uid: u32,
    /// Group of entries that record none.
    pub gid: u32,
    /// How long one request that commits (`flush`, `fsync`, `close`, `truncate`) may take
    /// before it fails; what it staged is kept for the next attempt.
    pub request_timeout: Duration,
    /// Owner shown for every entry whatever it records (`--uid`): presents the tree to the user
    /// an application runs as. Recorded owners are kept and still written.
    pub force_uid: Option<u32>,
    /// Group shown for every entry (`--gid`).
    pub force_gid: Option<u32>,
    /// Permission bits cleared from every mode shown (`--umask`); recorded modes are kept.
    pub umask: Option<u32>,
    /// Let users other than the one who mounted use the mount (`--allow-other`).
    pub allow_other: bool,
    /// Record FIFOs, sockets and device nodes as empty marker blobs (the default; the mount is
    /// `nodev`, so a device node is never opened as one). `false` (`--no-special-files`):
    /// `mknod` / `mkfifo` of them is `EPERM`.
    pub special_files: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            read_write: false,
            cache_size: 256 << 20,
            disk_cache: None,
            disk_cache_size: 4 << 30,
            scratch_dir: None,
            write_budget: 128 << 20,
            segment_size: SegmentSize::DEFAULT,
            write_block: super::write::WRITE_BLOCK,
            ttl: Duration::from_secs(1),
            uid: 0,
            gid: 0,
            request_timeout: Duration::from_secs(60),
            force_uid: None,
            force_gid: None,
            umask: None,
            allow_other: false,
            special_files: true,
        }
    }
}
