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
    DatastoreSelection, DownloadArgs, LsArgs, Mode, OutputArgs, RmArgs, StoreAccess, TransferArgs,
    UploadArgs,
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

/// The store address a URL or a datastore names (with its `--subdirectory`), its mode and key.
pub(super) fn address_of(
    selection: &DatastoreSelection,
    url: Option<&str>,
    mode: Option<Mode>,
    key: Option<&Path>,
) -> Result<(String, Mode, Option<PathBuf>)> {
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
            )
        }
        None => {
            let url = url.context("a store address is required (or --datastore NAME)")?;
            (
                url.to_owned(),
                mode.unwrap_or(Mode::Cse),
                key.map(Path::to_owned),
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
    let (address, mode, key) = address_of(selection, url, mode, key)?;
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

fn resolve(args: &TransferArgs, url: Option<&str>, access: &StoreAccess) -> Result<Resolved> {
    let (location, protection) = match &args.key_release {
        Some(sidecar) => super::key_release::locate(&args.datastore, args.mode, sidecar, access)?,
        None => locate(&args.datastore, url, args.mode, args.key.as_deref(), access)?,
    };
    let options = TransferOptions {
        block_size: usize::try_from(args.block_size).context("--block-size too large")?,
        memory_budget: usize::try_from(args.memory_budget).context("--memory-budget too large")?,
        concurrent_files: args.concurrency.max(1),
        segment_size: SegmentSize::DEFAULT,
        dry_run: args.dry_run,
        record_entries: false,
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

pub async fn upload(args: &UploadArgs, access: &StoreAccess) -> Result<()> {
    let mut resolved = resolve(&args.transfer, args.destination.as_deref(), access)?;
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
    let manifest = match signer {
        Some(signer) => Some(
            super::dataset::seal_after_upload(
                &*store,
                &resolved.location.prefix,
                std::mem::take(&mut summary.entries),
                &signer,
                args.transfer.concurrency.max(1),
            )
            .await?,
        ),
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
    let resolved = resolve(&args.transfer, url, access)?;
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

pub async fn ls(args: &LsArgs, access: &StoreAccess) -> Result<()> {
    let location = open(&args.url, access)?;
    let store: &dyn BlobStore = location.store.as_ref();
    let delimiter = (!args.recursive).then_some("/");
    let listing = list_all(store, &location.prefix, delimiter)
        .await
        .with_context(|| format!("cannot list {}", redact(&args.url)))?;
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
    let location = open(&args.url, access)?;
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
                return Err(error).with_context(|| format!("cannot delete {}", redact(&args.url)));
            }
        }
    }
    if !args.recursive {
        bail!(
            "{} names a container; use --recursive to delete every blob in it",
            redact(&args.url)
        );
    }
    let listing = list_all(store, &location.prefix, None)
        .await
        .with_context(|| format!("cannot list {}", redact(&args.url)))?;
    for blob in &listing.blobs {
        store
            .delete(&blob.name, &Condition::None)
            .await
            .with_context(|| format!("cannot delete {}", blob.name))?;
    }
    eprintln!("deleted {} blobs", listing.blobs.len());
    Ok(())
}
