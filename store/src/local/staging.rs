//! Staged blocks of the embedded store, kept apart per writer.
//!
//! ```text
//! staging/<name>/<block id>              a block staged without a position (its own file)
//! staging/<name>/<block id>.at           marker of a block staged at a position: "offset len inode"
//! staging/<name>/.assembly-<group>       the blocks of one version at their final offsets
//! staging/<name>/.lease-<group>          held (shared flock) by the live writer of that version
//! ```
//!
//! Every writer draws its own block ids ([`crate::BlockIds`]): the version tag in the id is
//! its *group*, so two writers of one blob never share an assembly file, a marker or a block file,
//! and a commit touches only the blocks it names. A marker records the inode of the assembly file
//! its data went into: if that file was lost (a commit consumed it, a collector removed it) and a
//! new one appeared under the same name, the marker no longer matches and the commit fails as an
//! invalid block list instead of publishing the new file's holes as zeros.
//!
//! **Leftovers.** A writer that crashed leaves its group behind (in `sse` mode, plaintext).
//! [`collect`] removes a group only when no live writer holds its lease (the flock is taken without
//! waiting) and none of its files changed for the grace period; the temporary files of `tmp/` are
//! flocked by their writer the same way. The store runs it once per instance, at its first write,
//! with [`LEFTOVER_GRACE`].

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use percent_encoding::percent_decode_str;

use crate::{StoreError, StoreResult, staging_group};

/// How long a writer's leftovers must have been untouched before they are collected, on top of
/// nobody holding their lease: long enough that a writer between creating its lease and locking
/// it is never mistaken for a dead one.
pub const LEFTOVER_GRACE: Duration = Duration::from_secs(3600);

/// The group of a block id: the version tag of encfs ids, `shared` for ids of other shapes.
pub(super) fn group_of(block_id: &str) -> String {
    staging_group(block_id).unwrap_or_else(|| "shared".to_owned())
}

/// The assembly file of `group` in the blob's staging directory `dir`.
pub(super) fn assembly_path(dir: &Path, group: &str) -> PathBuf {
    dir.join(format!(".assembly-{group}"))
}

fn lease_path(dir: &Path, group: &str) -> PathBuf {
    dir.join(format!(".lease-{group}"))
}

/// The marker of a block staged at a position (`block` is the block's encoded file name).
pub(super) fn marker_path(dir: &Path, block: &str) -> PathBuf {
    dir.join(format!("{block}.at"))
}

/// The leases this store instance holds: one open, share-locked file per group being written.
#[derive(Debug, Default)]
pub(super) struct Leases {
    held: Mutex<HashMap<PathBuf, File>>,
}

impl Leases {
    /// Makes sure this process holds the lease of `group` in `dir` (creating both).
    pub fn take(&self, dir: &Path, group: &str) -> StoreResult<()> {
        let path = lease_path(dir, group);
        let mut held = self.held.lock().expect("poisoned");
        if held.contains_key(&path) {
            return Ok(());
        }
        fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        file.lock_shared().map_err(|e| StoreError::io(&path, e))?;
        held.insert(path, file);
        Ok(())
    }

    /// Lets go of the lease of `group` in `dir` (the commit or discard removed its files).
    pub fn release(&self, dir: &Path, group: &str) {
        self.held
            .lock()
            .expect("poisoned")
            .remove(&lease_path(dir, group));
    }
}

/// The group a file of a staging directory belongs to.
fn group_of_file(file_name: &str) -> String {
    if let Some(group) = file_name
        .strip_prefix(".assembly-")
        .or_else(|| file_name.strip_prefix(".lease-"))
    {
        return group.to_owned();
    }
    let block = file_name
        .strip_suffix(".at.partial")
        .or_else(|| file_name.strip_suffix(".at"))
        .unwrap_or(file_name);
    match percent_decode_str(block).decode_utf8() {
        Ok(id) => group_of(&id),
        Err(_) => "shared".to_owned(),
    }
}

/// Removes the named blocks' files and markers, and the assembly and lease of their groups.
/// Used after a commit (the blocks are in the blob now) and by a discard.
pub(super) fn remove_blocks(leases: &Leases, dir: &Path, blocks: &[(String, String)]) {
    let mut groups = std::collections::BTreeSet::new();
    for (file_name, group) in blocks {
        let _ = fs::remove_file(dir.join(file_name));
        let _ = fs::remove_file(marker_path(dir, file_name));
        groups.insert(group.as_str());
    }
    for group in groups {
        let _ = fs::remove_file(assembly_path(dir, group));
        let _ = fs::remove_file(lease_path(dir, group));
        leases.release(dir, group);
    }
    // Gone when no other writer stages into it.
    let _ = fs::remove_dir(dir);
}

/// What [`LocalStore::collect_leftovers`](super::LocalStore::collect_leftovers) removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Collected {
    /// Files removed.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Whether a lock on `path` can be had right now (nobody live holds it). A file that vanished
/// counts as free.
fn unlocked(path: &Path) -> bool {
    match File::open(path) {
        Ok(file) => file.try_lock().is_ok(),
        Err(_) => true,
    }
}

fn modified(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = fs::symlink_metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Removes the leftovers of dead writers in a container: groups of `staging/` whose lease nobody
/// holds and whose files are all older than `older_than`, and unlocked files of `tmp/` as old.
pub(super) fn collect(container: &Path, older_than: Duration) -> StoreResult<Collected> {
    let now = SystemTime::now();
    let old = |time: SystemTime| now.duration_since(time).is_ok_and(|age| age >= older_than);
    let mut collected = Collected::default();
    let mut remove = |path: &Path, len: u64| {
        if fs::remove_file(path).is_ok() {
            collected.files += 1;
            collected.bytes += len;
        }
    };
    let tmp = container.join("tmp");
    if let Ok(entries) = fs::read_dir(&tmp) {
        for entry in entries.flatten() {
            let path = entry.path();
            if let Some((time, len)) = modified(&path)
                && old(time)
                && unlocked(&path)
            {
                remove(&path, len);
            }
        }
    }
    let staging = container.join("staging");
    let Ok(blobs) = fs::read_dir(&staging) else {
        return Ok(collected);
    };
    for blob in blobs.flatten() {
        let dir = blob.path();
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        // group → its files (path, mtime, len)
        let mut groups: BTreeMap<String, Vec<(PathBuf, SystemTime, u64)>> = BTreeMap::new();
        for entry in entries.flatten() {
            let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if let Some((time, len)) = modified(&entry.path()) {
                groups.entry(group_of_file(&file_name)).or_default().push((
                    entry.path(),
                    time,
                    len,
                ));
            }
        }
        for (group, files) in groups {
            let lease = lease_path(&dir, &group);
            // Hold the lease exclusively while removing, so no writer can take it meanwhile.
            let guard = match File::open(&lease) {
                Ok(file) => match file.try_lock() {
                    Ok(()) => Some(file),
                    Err(_) => continue,
                },
                Err(_) => None,
            };
            if !files.iter().all(|(_, time, _)| old(*time)) {
                continue;
            }
            for (path, _, len) in &files {
                if path != &lease {
                    remove(path, *len);
                }
            }
            remove(&lease, 0);
            drop(guard);
        }
        let _ = fs::remove_dir(&dir);
    }
    Ok(collected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BlockIds;

    #[test]
    fn files_belong_to_their_group() {
        let ids = BlockIds::new();
        let id = ids.id(3);
        let group = group_of(&id);
        let encoded: String =
            percent_encoding::utf8_percent_encode(&id, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        assert_eq!(group_of_file(&encoded), group);
        assert_eq!(group_of_file(&format!("{encoded}.at")), group);
        assert_eq!(group_of_file(&format!("{encoded}.at.partial")), group);
        assert_eq!(group_of_file(&format!(".assembly-{group}")), group);
        assert_eq!(group_of_file(&format!(".lease-{group}")), group);
        assert_eq!(group_of_file("YWJj"), "shared");
    }

    #[test]
    fn collect_spares_live_and_recent_writers() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("staging").join("blob");
        fs::create_dir_all(root.path().join("tmp")).unwrap();
        let live = Leases::default();
        live.take(&dir, "aaaaaaaaaaaaaaaa").unwrap();
        fs::write(assembly_path(&dir, "aaaaaaaaaaaaaaaa"), b"live").unwrap();
        // A dead writer: its lease exists but nobody holds it.
        let dead = Leases::default();
        dead.take(&dir, "bbbbbbbbbbbbbbbb").unwrap();
        fs::write(assembly_path(&dir, "bbbbbbbbbbbbbbbb"), b"dead!").unwrap();
        dead.release(&dir, "bbbbbbbbbbbbbbbb");
        // Recent leftovers are kept whatever their lease says.
        assert_eq!(
            collect(root.path(), Duration::from_secs(3600)).unwrap(),
            Collected::default()
        );
        let collected = collect(root.path(), Duration::ZERO).unwrap();
        assert_eq!(collected.files, 2, "the dead group's assembly and lease");
        assert_eq!(collected.bytes, 5);
        assert!(assembly_path(&dir, "aaaaaaaaaaaaaaaa").exists());
        assert!(!assembly_path(&dir, "bbbbbbbbbbbbbbbb").exists());
        // Once the live writer lets go, its leftovers go too.
        live.release(&dir, "aaaaaaaaaaaaaaaa");
        assert_eq!(collect(root.path(), Duration::ZERO).unwrap().files, 2);
        assert!(!dir.exists(), "an empty staging directory is removed");
    }
}
