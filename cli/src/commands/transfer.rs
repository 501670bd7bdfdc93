//! `encfs upload`, `download`, `ls` and `rm`: glue between arguments and `encfs_transfer`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use encfs_crypto::format::SegmentSize;
use encfs_store::faults::SlowStore;
use encfs_store::redact::redact;
use encfs_store::{
    BlobStore, Condition, CustomerKey, RetryPolicy, StoreError, StoreLocation, list_all,
    open_store_with,
};
use encfs_transfer::{self as transfer, Protection, Summary, TransferOptions};

use super::keys::load_data_key;
use super::{credentials, datastore};
use crate::args::{
    DatastoreSelection, DownloadArgs, LsArgs, Mode, NamedStoreArgs, OutputArgs, RmArgs,
    StoreAccess, TransferArgs, UploadArgs,
};
use crate::output::progress_bar;

/// The store address, protection and options a transfer resolves to.
struct Resolved {
    location: StoreLocation,
    protection: Protection,
    options: TransferOptions,
}

fn protection(mode: Mode, key: Option<&Path>) -> Result<Protection> {
    let key_path =
        || key.with_context(|| format!("--mode {mode:?} needs --key FILE").to_lowercase());
    Ok(match mode {
        Mode::Cse => Protection::Cse(Arc::new(load_data_key(key_path()?)?)),
        // Never the DEK itself: the service sees the CPK key in every request.
        Mode::Cpk => Protection::Cpk(CustomerKey::from_data_key(&load_data_key(key_path()?)?)),
        Mode::Sse => Protection::Sse,
    })
}

/// Opens a store address with any credentials given in files, under the retry policy with the
/// `--request-timeout` deadline.
pub fn open(address: &str, access: &StoreAccess) -> Result<StoreLocation> {
    let credentials = credentials::from_files(access, address)?;
    let retry = RetryPolicy::default().with_deadline(access.request_timeout);
    open_store_with(address, credentials, retry)
        .with_context(|| format!("invalid store address {}", redact(address)))
}

/// The store address a URL or a datastore names (with its `--subdirectory`), its mode, key, and
/// whether the datastore's names are encrypted.
pub(super) fn address_of(
    selection: &DatastoreSelection,
    url: Option<&str>,
    mode: Option<Mode>,
    key: Option<&Path>,
) -> Result<(String, Mode, Option<PathBuf>, bool)> {
    Ok(match &selection.datastore {
        Some(name) => {
            let entry = datastore::find(selection.config.as_deref(), name)?;
            let mut address = entry.store.trim_end_matches('/').to_owned();
            if let Some(sub) = &selection.subdirectory {
                address = format!("{address}/{}", sub.trim_matches('/'));
            }
            (
                address,
                mode.unwrap_or(entry.mode),
                key.map(Path::to_owned).or(Some(entry.key)),
                entry.encrypt_names,
            )
        }
        None => {
            let url = url.context("a store address is required (or --datastore NAME)")?;
            (
                url.to_owned(),
                mode.unwrap_or(Mode::Cse),
                key.map(Path::to_owned),
                false,
            )
        }
    })
}

/// The store, prefix and protection named by a URL or a datastore, plus `--mode` / `--key`.
pub(super) fn locate(
    selection: &DatastoreSelection,
    url: Option<&str>,
    mode: Option<Mode>,
    key: Option<&Path>,
    access: &StoreAccess,
) -> Result<(StoreLocation, Protection)> {
    let (address, mode, key, _) = address_of(selection, url, mode, key)?;
    let mut location = open(&address, access)?;
    // Benchmarks only: emulate a distant store on top of any backend.
    if let Some(ms) = std::env::var("ENCFS_DANGEROUS_INJECT_LATENCY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        let latency = std::time::Duration::from_millis(ms);
        location.store = Arc::new(SlowStore::new(location.store, latency, latency / 10, None));
    }
    Ok((location, protection(mode, key.as_deref())?))
}

/// What names a store for a transfer or a mount: a URL or a datastore, and the options.
pub(super) struct Target<'a> {
    pub selection: &'a DatastoreSelection,
    pub url: Option<&'a str>,
    pub mode: Option<Mode>,
    pub key: Option<&'a Path>,
    /// The secrets sidecar to get the DEK from (key release), instead of `key`.
    pub key_release: Option<&'a str>,
    /// `--encrypt-names` (a datastore that records it implies it).
    pub encrypt_names: bool,
}

/// The one place upload, download and the mount open their store: address, protection, and the
/// encrypted-names wrapper when the datastore or the flag asks for it (`writes`: the caller may
/// write, so an empty container gets the marker).
pub(super) fn open_target(
    target: &Target<'_>,
    writes: bool,
    access: &StoreAccess,
) -> Result<(StoreLocation, Protection)> {
    let (_, _, _, recorded) = address_of(target.selection, target.url, target.mode, target.key)?;
    let (mut location, protection) = match target.key_release {
        Some(sidecar) => {
            super::key_release::locate(target.selection, target.mode, sidecar, access)?
        }
        None => locate(
            target.selection,
            target.url,
            target.mode,
            target.key,
            access,
        )?,
    };
    let key = match &protection {
        Protection::Cse(key) => Some(key.as_ref()),
        _ => None,
    };
    location.store = with_names(
        location.store,
        key,
        target.encrypt_names || recorded,
        writes,
    )?;
    Ok((location, protection))
}

/// `store` with encrypted names (`encrypt`: under the name key of `key`, which must be a cse
/// DEK, after checking the store's marker), or as it is after checking that its names are not
/// encrypted: a plain-name tool never lists ciphertext as names.
fn with_names(
    store: Arc<dyn BlobStore>,
    key: Option<&encfs_crypto::DataKey>,
    encrypt: bool,
    writes: bool,
) -> Result<Arc<dyn BlobStore>> {
    use encfs_store::names::{EncryptedNames, MARKER, check_marker, has_marker};
    if !encrypt {
        // Advisory: a store that cannot say (a write-only SAS, say) is used as before, and a
        // real access problem surfaces in the command's own requests.
        if matches!(super::block_on(has_marker(store.as_ref()))?, Ok(true)) {
            bail!(
                "the blob names of {} are encrypted (it has the {MARKER} marker): use \
                 --encrypt-names with its key, or a datastore added with --encrypt-names",
                store.location()
            );
        }
        return Ok(store);
    }
    let key =
        key.context("--encrypt-names needs --mode cse: the name key is derived from the DEK")?;
    let names = encfs_crypto::names::NameKey::derive(key);
    super::block_on(check_marker(store.as_ref(), &names, writes))?
        .with_context(|| format!("cannot use encrypted names at {}", store.location()))?;
    Ok(Arc::new(EncryptedNames::new(store, names)))
}

fn resolve(
    args: &TransferArgs,
    url: Option<&str>,
    writes: bool,
    access: &StoreAccess,
) -> Result<Resolved> {
    let target = Target {
        selection: &args.datastore,
        url,
        mode: args.mode,
        key: args.key.as_deref(),
        key_release: args.key_release.as_deref(),
        encrypt_names: args.encrypt_names,
    };
    let (location, protection) = open_target(&target, writes, access)?;
    let options = TransferOptions {
        block_size: usize::try_from(args.block_size).context("--block-size too large")?,
        memory_budget: usize::try_from(args.memory_budget).context("--memory-budget too large")?,
        concurrent_files: args.concurrency.max(1),
        segment_size: SegmentSize::DEFAULT,
        dry_run: args.dry_run,
        record_entries: false,
        stream_seal: None,
    };
    Ok(Resolved {
        location,
        protection,
        options,
    })
}

fn report(
    operation: &str,
    summary: &Summary,
    protection: &Protection,
    output: &OutputArgs,
    dry_run: bool,
) -> Result<()> {
    match output.structured() {
        Some(format) => {
            let value = serde_json::json!({
                "operation": operation,
                "mode": protection.name(),
                "dry_run": dry_run,
                "files": summary.files,
                "skipped": summary.skipped,
                "bytes": summary.bytes,
                "blobs": summary.blobs,
            });
            output.print(&value, format)?;
        }
        None if dry_run => {
            for blob in &summary.blobs {
                println!("would {operation} {blob}");
            }
            println!("dry run: {} files, {} bytes", summary.files, summary.bytes);
        }
        None => {
            eprintln!(
                "{operation}: {} files, {} bytes, {} skipped",
                summary.files, summary.bytes, summary.skipped
            )
        }
    }
    Ok(())
}

/// The manifest sealed as the files finish, when it will list exactly the files planned (a
/// fresh prefix, or one whose every blob this upload rewrites; `listed` is the prefix before
/// the upload), instead of after them.
fn start_streaming(
    resolved: &Resolved,
    listed: &[String],
    items: &[transfer::UploadItem],
    signer: &encfs_dataset::P384Signer,
) -> Result<Option<Arc<encfs_dataset::StreamingSeal>>> {
    let prefix = &resolved.location.prefix;
    let own = encfs_dataset::manifest_blob_name(prefix);
    let others: Vec<&String> = listed.iter().filter(|name| **name != own).collect();
    // Usually a fresh prefix: no set of the plan's names to build.
    let covered = others.is_empty() || {
        let planned: std::collections::HashSet<&str> =
            items.iter().map(|i| i.blob.as_str()).collect();
        others.iter().all(|name| planned.contains(name.as_str()))
    };
    if !covered || items.iter().any(|i| i.attributes.symlink) {
        return Ok(None);
    }
    let segment = resolved.options.segment_size;
    let planned = items
        .iter()
        .map(|i| (i.blob.clone(), segment.blob_len(i.size)))
        .collect();
    let seal = encfs_dataset::StreamingSeal::start(prefix, planned, signer)
        .context("cannot start sealing the manifest")?;
    Ok(seal.map(Arc::new))
}

pub async fn upload(args: &UploadArgs, access: &StoreAccess) -> Result<()> {
    let writes = !args.transfer.dry_run;
    let mut resolved = resolve(&args.transfer, args.destination.as_deref(), writes, access)?;
    // The signer is loaded first: a bad key fails before anything is uploaded.
    let signer = match &args.seal {
        seal if seal.seal => {
            anyhow::ensure!(
                matches!(resolved.protection, Protection::Cse(_)) && !args.transfer.dry_run,
                "--seal needs a cse upload (not a dry run): manifests list EBF headers"
            );
            Some(super::dataset::signer_of(&seal.signer)?)
        }
        seal => {
            let signer = &seal.signer;
            anyhow::ensure!(
                signer.governance_client.is_none() && signer.signing_cert.is_none(),
                "--governance-client and --signing-cert sign a manifest: add --seal"
            );
            None
        }
    };
    resolved.options.record_entries = signer.is_some();
    let items = transfer::plan_upload(&args.source, &resolved.location.prefix)
        .with_context(|| format!("cannot read {}", args.source.display()))?;
    let store = resolved.location.store.clone();
    let exists = store
        .container_exists()
        .await
        .with_context(|| format!("cannot check container {}", store.location()))?;
    if !exists && args.create_container && !args.transfer.dry_run {
        store
            .create_container()
            .await
            .with_context(|| format!("cannot create {}", store.location()))?;
    } else if !exists {
        bail!(
            "container not found: {} (create it with --create-container or encfs datastore add)",
            store.location()
        );
    }
    // The prefix's blobs before the upload, for the manifest (what the upload writes, it
    // records as it goes). Listed first, not beside the upload: a listing that runs while the
    // upload creates files in the same directory contends for it, and on a fresh prefix it is
    // one short request.
    let listed = match signer {
        Some(_) => Some(
            store
                .list_names(&resolved.location.prefix)
                .await
                .with_context(|| format!("cannot list {}", store.location()))?,
        ),
        None => None,
    };
    let stream = match (&signer, &listed) {
        (Some(signer), Some(listed)) => start_streaming(&resolved, listed, &items, signer)?,
        _ => None,
    };
    resolved.options.stream_seal = stream.clone();
    let bar = progress_bar(items.iter().map(|i| i.size).sum(), "upload");
    let tick = bar.clone();
    let mut summary = transfer::upload(
        resolved.location.store.clone(),
        items,
        resolved.protection.clone(),
        resolved.options.clone(),
        Arc::new(move |n| tick.inc(n)),
    )
    .await
    .with_context(|| {
        format!(
            "upload of {} to {} failed",
            args.source.display(),
            resolved.location.store.location()
        )
    })?;
    bar.finish_and_clear();
    let manifest = match &signer {
        Some(signer) => {
            let streamed = match &stream {
                Some(stream) => Some(stream.finish(signer).context("cannot sign the manifest")?),
                None => None,
            };
            Some(match streamed {
                Some(Ok(sealed)) => super::dataset::store_streamed(&*store, sealed, None).await?,
                // Off the plan (a file skipped as unchanged, one that changed size), or not
                // streamed: the entries received are sealed the usual way, with the blobs this
                // upload did not write.
                streamed => {
                    let entries = match streamed {
                        Some(Err(entries)) => entries,
                        _ => std::mem::take(&mut summary.entries),
                    };
                    super::dataset::seal_after_upload(
                        &*store,
                        &resolved.location.prefix,
                        listed.unwrap_or_default(),
                        entries,
                        signer,
                        args.transfer.concurrency.max(1),
                    )
                    .await?
                }
            })
        }
        None => None,
    };
    report(
        "upload",
        &summary,
        &resolved.protection,
        &args.transfer.output,
        args.transfer.dry_run,
    )?;
    if let Some(manifest) = manifest {
        match args.transfer.output.structured() {
            Some(format) => args.transfer.output.print(&manifest, format)?,
            None => println!("{}", manifest["digest"].as_str().unwrap_or_default()),
        }
    }
    Ok(())
}

pub async fn download(args: &DownloadArgs, access: &StoreAccess) -> Result<()> {
    let (url, destination) = match (args.paths.as_slice(), &args.transfer.datastore.datastore) {
        ([dest], Some(_)) => (None, PathBuf::from(dest)),
        ([src, dest], None) => (Some(src.as_str()), PathBuf::from(dest)),
        _ => bail!("usage: encfs download SRC_URL DEST, or encfs download --datastore NAME DEST"),
    };
    let resolved = resolve(&args.transfer, url, false, access)?;
    let store = resolved.location.store.clone();
    let path = resolved.location.path.clone();
    // A blob named exactly by the address is one file; otherwise the address is a prefix. A blob
    // the store refuses to describe with this customer key (or without one) is that one file too,
    // so that the download fails saying so rather than finding nothing under the prefix.
    let single = !path.is_empty()
        && match store.properties(&path, cpk_of(&resolved.protection)).await {
            Ok(_) => true,
            Err(
                StoreError::CustomerKeyMismatch(_)
                | StoreError::CustomerKeyRequired(_)
                | StoreError::CustomerKeyUnexpected(_),
            ) => true,
            Err(_) => false,
        };
    let listing = if single {
        Vec::new()
    } else {
        if !store
            .container_exists()
            .await
            .with_context(|| format!("cannot check container {}", store.location()))?
        {
            bail!("container not found: {}", store.location());
        }
        list_all(store.as_ref(), &resolved.location.prefix, None)
            .await
            .with_context(|| format!("download from {} failed", store.location()))?
            .blobs
    };
    let total = listing
        .iter()
        .map(|b| transfer::plaintext_size(&b.properties))
        .sum();
    let bar = progress_bar(total, "download");
    let tick = bar.clone();
    let progress = Arc::new(move |n| tick.inc(n));
    let summary = if single {
        let target = if destination.is_dir() {
            destination.join(path.rsplit('/').next().unwrap_or(&path))
        } else {
            destination.clone()
        };
        transfer::download_one(
            store.clone(),
            &path,
            &target,
            resolved.protection.clone(),
            resolved.options.clone(),
            progress,
        )
        .await
    } else {
        transfer::download_listed(
            store.clone(),
            listing,
            &resolved.location.prefix,
            &destination,
            resolved.protection.clone(),
            resolved.options.clone(),
            progress,
        )
        .await
    }
    .with_context(|| format!("download from {} failed", store.location()))?;
    bar.finish_and_clear();
    if summary.files == 0 {
        bail!(
            "nothing to download at {}/{}",
            store.location(),
            resolved.location.prefix
        );
    }
    report(
        "download",
        &summary,
        &resolved.protection,
        &args.transfer.output,
        args.transfer.dry_run,
    )
}

fn cpk_of(protection: &Protection) -> Option<&CustomerKey> {
    match protection {
        Protection::Cpk(key) => Some(key),
        _ => None,
    }
}

/// The store of `ls` and `rm`: the address or datastore, with encrypted names when the flag or
/// the datastore asks for them (only then is the DEK read). Returns the address too, for errors.
fn open_names(target: &NamedStoreArgs, access: &StoreAccess) -> Result<(StoreLocation, String)> {
    let (location, address, _) = open_named(
        &target.datastore,
        target.url.as_deref(),
        target.key.as_deref(),
        target.encrypt_names,
        access,
    )?;
    Ok((location, address))
}

/// A store with its names as the datastore or the flag says (the DEK is read only for
/// encrypted names), its address and its mode: for the commands that name blobs without
/// transferring them (`ls`, `rm`, `dataset …`).
pub(super) fn open_named(
    selection: &DatastoreSelection,
    url: Option<&str>,
    key: Option<&Path>,
    encrypt_names: bool,
    access: &StoreAccess,
) -> Result<(StoreLocation, String, Mode)> {
    let (address, mode, key, recorded) = address_of(selection, url, None, key)?;
    let encrypt = encrypt_names || recorded;
    let mut location = open(&address, access)?;
    let key = match (encrypt, mode) {
        (true, Mode::Cse) => Some(load_data_key(
            key.as_deref()
                .context("--encrypt-names needs --key FILE (the DEK) to read the names")?,
        )?),
        _ => None,
    };
    location.store = with_names(location.store, key.as_ref(), encrypt, false)?;
    Ok((location, address, mode))
}

pub async fn ls(args: &LsArgs, access: &StoreAccess) -> Result<()> {
    let (location, address) = open_names(&args.target, access)?;
    let store: &dyn BlobStore = location.store.as_ref();
    let delimiter = (!args.recursive).then_some("/");
    let listing = list_all(store, &location.prefix, delimiter)
        .await
        .with_context(|| format!("cannot list {}", redact(&address)))?;
    match args.output.structured() {
        Some(format) => {
            let blobs: Vec<_> = listing
                .blobs
                .iter()
                .map(|b| serde_json::json!({"name": b.name, "size": b.properties.size, "etag": b.properties.etag, "metadata": b.properties.metadata}))
                .collect();
            let value = serde_json::json!({"prefixes": listing.prefixes, "blobs": blobs});
            args.output.print(&value, format)?;
        }
        None => {
            for prefix in &listing.prefixes {
                println!("{:>12}  {prefix}", "PRE");
            }
            for blob in &listing.blobs {
                println!("{:>12}  {}", blob.properties.size, blob.name);
            }
        }
    }
    Ok(())
}

pub async fn rm(args: &RmArgs, access: &StoreAccess) -> Result<()> {
    let (location, address) = open_names(&args.target, access)?;
    let store = location.store.as_ref();
    if !location.path.is_empty() {
        match store.delete(&location.path, &Condition::None).await {
            Ok(()) => return Ok(()),
            Err(StoreError::BlobNotFound(_)) if args.recursive => {}
            Err(StoreError::BlobNotFound(name)) => {
                bail!(
                    "no blob named {name} at {} (use --recursive to delete a prefix)",
                    store.location()
                )
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot delete {}", redact(&address)));
            }
        }
    }
    if !args.recursive {
        bail!(
            "{} names a container; use --recursive to delete every blob in it",
            redact(&address)
        );
    }
    let listing = list_all(store, &location.prefix, None)
        .await
        .with_context(|| format!("cannot list {}", redact(&address)))?;
    for blob in &listing.blobs {
        store
            .delete(&blob.name, &Condition::None)
            .await
            .with_context(|| format!("cannot delete {}", blob.name))?;
    }
    eprintln!("deleted {} blobs", listing.blobs.len());
    Ok(())
}
