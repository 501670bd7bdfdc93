//! What upload and download carry besides file contents, as `rsync -a` does: permission bits,
//! owner, group and mtime (in the blob's metadata, [`crate::store::attributes`]), and symbolic links,
//! stored as small blobs whose content is the target (sealed like any content in `cse` mode) and
//! whose metadata carries the `encfs_symlink` marker.

use std::fs;
use std::path::Path;

use bytes::Bytes;

use super::{Protection, Summary, TransferError, UploadItem, local_error, upload_metadata};
use crate::store::attributes::StoredAttributes;
use crate::store::{BlobItem, BlobStore, Condition};
use encfs_crypto::format::{self, SegmentSize};

/// Uploads symbolic links: each becomes a blob holding its target.
pub(super) async fn upload_links(
    store: &dyn BlobStore,
    links: Vec<UploadItem>,
    protection: &Protection,
    segment: SegmentSize,
    summary: &mut Summary,
) -> Result<(), TransferError> {
    for item in links {
        let target = fs::read_link(&item.path).map_err(local_error(&item.path))?;
        let target = target.as_os_str().as_encoded_bytes().to_vec();
        let data = match protection {
            Protection::Cse(key) => {
                format::seal(key, &target, segment).map_err(|source| TransferError::Crypto {
                    blob: item.blob.clone(),
                    source,
                })?
            }
            _ => target.clone(),
        };
        let mut metadata = upload_metadata(&item, protection);
        metadata.insert(
            crate::store::protection::META_SIZE.into(),
            target.len().to_string(),
        );
        store
            .put(
                &item.blob,
                Bytes::from(data),
                &metadata,
                &Condition::None,
                protection.cpk(),
            )
            .await?;
        summary.record(
            UploadItem {
                size: target.len() as u64,
                ..item
            },
            false,
        );
    }
    Ok(())
}

/// Whether a listed blob is a symbolic link.
pub(super) fn is_link(blob: &BlobItem) -> bool {
    StoredAttributes::from_metadata(&blob.properties.metadata).symlink
}

/// Whether a listed blob stands for a FIFO, socket or device node (a read-write mount's `mknod`/`mkfifo`; refused with `mount --no-special-files`):
/// download does not make those.
pub(super) fn is_special(blob: &BlobItem) -> bool {
    StoredAttributes::from_metadata(&blob.properties.metadata)
        .special
        .is_some()
}

/// Makes the symbolic link a link blob describes at `target` (replacing a file or link there).
pub(super) async fn download_link(
    store: &dyn BlobStore,
    blob: &BlobItem,
    target: &Path,
    protection: &Protection,
) -> Result<(), TransferError> {
    let data = store
        .get(
            &blob.name,
            None,
            protection.cpk(),
            Some(&blob.properties.etag),
        )
        .await?;
    let link = match protection {
        Protection::Cse(key) => {
            format::open(key, &data).map_err(|source| TransferError::Crypto {
                blob: blob.name.clone(),
                source,
            })?
        }
        _ => data.to_vec(),
    };
    if let Some(dir) = target.parent() {
        fs::create_dir_all(dir).map_err(local_error(dir))?;
    }
    match fs::symlink_metadata(target) {
        Ok(existing) if !existing.is_dir() => {
            fs::remove_file(target).map_err(local_error(target))?
        }
        _ => {}
    }
    let link = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&link);
    std::os::unix::fs::symlink(link, target).map_err(local_error(target))?;
    restore_attributes(
        target,
        &StoredAttributes::from_metadata(&blob.properties.metadata),
    )
}

/// Gives a downloaded file (or link) the mtime, owner, group and mode its blob records. The owner
/// is restored where the process may change it (as root); elsewhere it stays the caller's, as
/// with `rsync -a`.
pub(super) fn restore_attributes(
    target: &Path,
    attributes: &StoredAttributes,
) -> Result<(), TransferError> {
    use std::os::unix::fs::PermissionsExt;
    if !attributes.symlink
        && let Some(mtime) = attributes.mtime
    {
        let file = fs::OpenOptions::new()
            .write(true)
            .open(target)
            .or_else(|_| fs::File::open(target))
            .map_err(local_error(target))?;
        file.set_modified(mtime).map_err(local_error(target))?;
    }
    if attributes.uid.is_some() || attributes.gid.is_some() {
        match std::os::unix::fs::lchown(target, attributes.uid, attributes.gid) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) => return Err(local_error(target)(e)),
        }
    }
    if !attributes.symlink
        && let Some(mode) = attributes.mode
    {
        fs::set_permissions(target, fs::Permissions::from_mode(mode))
            .map_err(local_error(target))?;
    }
    Ok(())
}
