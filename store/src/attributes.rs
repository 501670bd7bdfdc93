//! POSIX attributes kept in a blob's user metadata: permission bits, owner, group, mtime and the
//! symbolic-link marker. Uploads record them, downloads restore them, and the read-write mount
//! reads and writes them, so the three agree on one set of keys (`docs/format.md`).
//!
//! `encfs_mode` already names the protection mode (`cse`, `cpk`, `sse`), so the permission bits
//! are `encfs_mode_bits`. Every value is optional: a blob written by something else (or by an
//! older encfs) simply has none, and the reader falls back to its defaults.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::Metadata;

/// Permission bits (`0o7777` at most), octal digits.
pub const META_MODE_BITS: &str = "encfs_mode_bits";
/// Owner's numeric user id, decimal.
pub const META_UID: &str = "encfs_uid";
/// Owning group's numeric id, decimal.
pub const META_GID: &str = "encfs_gid";
/// Modification time, nanoseconds since the epoch (the key uploads have always written).
pub const META_MTIME: &str = "encfs_source_mtime";
/// Present (`"1"`) on a symbolic link; its content is the link's target.
pub const META_SYMLINK: &str = "encfs_symlink";
/// On an empty blob standing for a FIFO, socket or device node (a read-write mount's `mknod`/`mkfifo`; refused with `mount --no-special-files`):
/// `fifo`, `socket`, `char` or `block`.
pub const META_NODE: &str = "encfs_node";
/// The device number of a `char` or `block` node, decimal.
pub const META_RDEV: &str = "encfs_rdev";

/// A node with no content that a mount can record as an empty blob (a read-write mount's `mknod`/`mkfifo`; refused with `mount --no-special-files`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialKind {
    /// A named pipe.
    Fifo,
    /// A Unix-domain socket's name.
    Socket,
    /// A character device node (never opened as one: the mount is `nodev`).
    CharDevice,
    /// A block device node (likewise).
    BlockDevice,
}

impl SpecialKind {
    /// Its `encfs_node` value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fifo => "fifo",
            Self::Socket => "socket",
            Self::CharDevice => "char",
            Self::BlockDevice => "block",
        }
    }

    fn parse(value: &str) -> Option<Self> {
        [
            Self::Fifo,
            Self::Socket,
            Self::CharDevice,
            Self::BlockDevice,
        ]
        .into_iter()
        .find(|kind| kind.name() == value)
    }
}

/// Values below this are seconds, not nanoseconds: mounts before the attributes were kept wrote
/// seconds under the same key (10¹² s is year 33,658; 10¹² ns is 1970 + 17 minutes).
const SECONDS_BELOW: u64 = 1_000_000_000_000;

/// The POSIX attributes a blob records; `None` where it records nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredAttributes {
    /// Permission bits, `0o7777` at most.
    pub mode: Option<u32>,
    /// Owner.
    pub uid: Option<u32>,
    /// Group.
    pub gid: Option<u32>,
    /// Modification time.
    pub mtime: Option<SystemTime>,
    /// Whether the blob is a symbolic link (content: the target).
    pub symlink: bool,
    /// The FIFO, socket or device node the (empty) blob stands for.
    pub special: Option<SpecialKind>,
    /// Device number of a device node.
    pub rdev: Option<u32>,
}

impl StoredAttributes {
    /// The attributes in `metadata`; unparsable values count as absent.
    pub fn from_metadata(metadata: &Metadata) -> Self {
        let number = |key: &str| metadata.get(key).and_then(|v| v.parse::<u32>().ok());
        Self {
            mode: metadata
                .get(META_MODE_BITS)
                .and_then(|v| u32::from_str_radix(v, 8).ok())
                .map(|bits| bits & 0o7777),
            uid: number(META_UID),
            gid: number(META_GID),
            mtime: metadata
                .get(META_MTIME)
                .and_then(|v| v.parse::<u64>().ok())
                .map(|n| {
                    if n < SECONDS_BELOW {
                        UNIX_EPOCH + Duration::from_secs(n)
                    } else {
                        UNIX_EPOCH + Duration::from_nanos(n)
                    }
                }),
            symlink: metadata.get(META_SYMLINK).is_some_and(|v| v == "1"),
            special: metadata.get(META_NODE).and_then(|v| SpecialKind::parse(v)),
            rdev: number(META_RDEV),
        }
    }

    /// Writes the attributes that are set into `metadata` (others are left as they are).
    pub fn write_into(&self, metadata: &mut Metadata) {
        if let Some(mode) = self.mode {
            metadata.insert(META_MODE_BITS.into(), format!("{:o}", mode & 0o7777));
        }
        if let Some(uid) = self.uid {
            metadata.insert(META_UID.into(), uid.to_string());
        }
        if let Some(gid) = self.gid {
            metadata.insert(META_GID.into(), gid.to_string());
        }
        if let Some(mtime) = self.mtime {
            metadata.insert(META_MTIME.into(), unix_nanos(mtime).to_string());
        }
        if self.symlink {
            metadata.insert(META_SYMLINK.into(), "1".into());
        } else {
            metadata.remove(META_SYMLINK);
        }
        if let Some(special) = self.special {
            metadata.insert(META_NODE.into(), special.name().into());
        }
        if let Some(rdev) = self.rdev {
            metadata.insert(META_RDEV.into(), rdev.to_string());
        }
    }

    /// The attributes of a local file as `lstat` gives them (what upload records).
    pub fn of_local(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            mode: Some(meta.mode() & 0o7777),
            uid: Some(meta.uid()),
            gid: Some(meta.gid()),
            mtime: meta.modified().ok(),
            symlink: meta.file_type().is_symlink(),
            special: None,
            rdev: None,
        }
    }
}

/// Nanoseconds since the epoch (0 before it).
pub fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_through_metadata() {
        let attributes = StoredAttributes {
            mode: Some(0o4755),
            uid: Some(1000),
            gid: Some(100),
            mtime: Some(UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789)),
            symlink: true,
            special: Some(SpecialKind::CharDevice),
            rdev: Some(259),
        };
        let mut metadata = Metadata::new();
        attributes.write_into(&mut metadata);
        assert_eq!(metadata[META_MODE_BITS], "4755");
        assert_eq!(StoredAttributes::from_metadata(&metadata), attributes);
        assert_eq!(
            StoredAttributes::from_metadata(&Metadata::new()),
            StoredAttributes::default()
        );
    }

    #[test]
    fn old_mount_mtimes_in_seconds_are_read_as_seconds() {
        let mut metadata = Metadata::new();
        metadata.insert(META_MTIME.into(), "1700000000".into());
        assert_eq!(
            StoredAttributes::from_metadata(&metadata).mtime,
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
    }
}
