//! `encfs dataset seal | verify | show`, `upload --seal` and the manifest of `mount --manifest`:
//! glue between arguments and `encfs_dataset`.
//!
//! The manifest is signed with a governance member identity (a client profile's `signing_cert`
//! and `signing_key`, or the two files given) and stored as the blob
//! [`encfs_dataset::MANIFEST_BLOB`] beside the data. Checking needs no data key: only the
//! store, the manifest and whom to trust — the publisher's certificate, or the manifest digest
//! a contract pinned.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use encfs_dataset::{Manifest, P384Signer, SignedManifest, Trust, manifest_blob_name};
use encfs_fs::mount::{Pinned, PinnedStatus};
use encfs_store::{BlobStore, Condition, Metadata, StoreLocation};

use crate::args::{DatastoreSelection, Mode, StoreAccess};
use crate::dataset_args::{
    DatasetCommand, DatasetStore, ManifestSource, MountManifest, SealArgs, ShowArgs, SignerArgs,
    VerifyArgs,
};

/// Runs `encfs dataset …`.
pub fn run(command: DatasetCommand, access: &StoreAccess) -> Result<()> {
    let runtime = super::runtime()?;
    match command {
        DatasetCommand::Seal(args) => runtime.block_on(seal(&args, access)),
        DatasetCommand::Verify(args) => runtime.block_on(verify(&args, access)),
        DatasetCommand::Show(args) => runtime.block_on(show(&args, access)),
    }
}

/// The store and prefix a dataset lives at: a URL or a datastore (with `--prefix` or
/// `--subdirectory`), which must be `cse` (manifests list EBF headers). No key is loaded.
fn open_dataset(
    url: Option<&str>,
    selection: &DatastoreSelection,
    prefix: Option<&str>,
    access: &StoreAccess,
) -> Result<StoreLocation> {
    let selection = DatastoreSelection {
        datastore: selection.datastore.clone(),
        subdirectory: prefix
            .map(str::to_owned)
            .or_else(|| selection.subdirectory.clone()),
        config: selection.config.clone(),
    };
    // A manifest lists the names a mount serves: with encrypted names, the plaintext ones.
    let (location, address, mode) =
        super::transfer::open_named(&selection, url, None, false, access)?;
    if mode != Mode::Cse {
        bail!(
            "{}: dataset manifests cover cse datastores only (this one is {mode:?})",
            encfs_store::redact::redact(&address)
        );
    }
    Ok(location)
}

fn open_store_of(args: &DatasetStore, access: &StoreAccess) -> Result<StoreLocation> {
    open_dataset(
        args.url.as_deref(),
        &args.datastore,
        args.prefix.as_deref(),
        access,
    )
}

/// The member identity that signs: a governance client profile's files, or the files given.
pub(super) fn signer_of(args: &SignerArgs) -> Result<P384Signer> {
    let (cert, key) = match (
        &args.governance_client,
        &args.signing_cert,
        &args.signing_key,
    ) {
        (Some(client), None, None) => {
            super::governance::member_files(client, args.governance_config.as_deref())
                .with_context(|| format!("governance client {client:?}"))?
        }
        (None, Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => bail!(
            "sealing needs a signer: --governance-client CLIENT, or --signing-cert PEM with --signing-key PEM"
        ),
    };
    P384Signer::load(&key, &cert).context("cannot load the member identity that signs the manifest")
}

/// Stores the signed manifest beside the data (the manifest blob of `prefix`).
pub(super) async fn store_manifest(
    store: &dyn BlobStore,
    prefix: &str,
    signed: Bytes,
) -> Result<String> {
    let name = manifest_blob_name(prefix);
    store
        .put(&name, signed, &Metadata::new(), &Condition::None, None)
        .await
        .with_context(|| {
            format!(
                "cannot store the manifest as {name} in {}",
                store.location()
            )
        })?;
    Ok(name)
}

/// Signs `manifest`, stores it beside the data (and in `output_file`); returns what to print
/// (`digest`, `blob`, `entries`, `signer`).
async fn seal_and_store(
    store: &dyn BlobStore,
    manifest: Manifest,
    signer: &P384Signer,
    output_file: Option<&Path>,
) -> Result<serde_json::Value> {
    let signed = manifest
        .into_signed(signer)
        .context("cannot sign the manifest")?;
    let (digest, signer_digest) = (signed.digest(), signed.signer_digest());
    let SignedManifest {
        bytes, manifest, ..
    } = signed;
    let sealed = encfs_dataset::Streamed {
        bytes,
        store_prefix: manifest.store_prefix,
        entries: manifest.entries.len(),
        digest,
        signer_digest,
    };
    store_streamed(store, sealed, output_file).await
}

/// Stores a signed manifest beside its data (and in `output_file`, if given), and says so.
pub(super) async fn store_streamed(
    store: &dyn BlobStore,
    sealed: encfs_dataset::Streamed,
    output_file: Option<&Path>,
) -> Result<serde_json::Value> {
    let encfs_dataset::Streamed {
        bytes,
        store_prefix,
        entries,
        digest,
        signer_digest,
    } = sealed;
    // Moved, not copied: the message of 100,000 entries is 28 MB.
    let bytes = Bytes::from(bytes);
    let blob = store_manifest(store, &store_prefix, bytes.clone()).await?;
    if let Some(path) = output_file {
        let mut out = crate::output::AtomicOutput::create(path)?;
        std::io::Write::write_all(out.file(), &bytes)
            .with_context(|| format!("cannot write {}", path.display()))?;
        out.commit(true)?;
    }
    eprintln!("sealed {entries} blobs under {store_prefix:?} as {blob}");
    Ok(serde_json::json!({
        "digest": digest,
        "blob": blob,
        "entries": entries,
        "signer": signer_digest,
    }))
}

async fn seal(args: &SealArgs, access: &StoreAccess) -> Result<()> {
    let signer = signer_of(&args.signer)?;
    let location = open_store_of(&args.store, access)?;
    let store = &*location.store;
    let manifest = encfs_dataset::build(store, &location.prefix, args.store.concurrency)
        .await
        .with_context(|| format!("cannot build the manifest of {}", store.location()))?;
    let sealed = seal_and_store(store, manifest, &signer, args.output_file.as_deref()).await?;
    match args.output.structured() {
        Some(format) => args.output.print(&sealed, format),
        None => {
            println!("{}", sealed["digest"].as_str().unwrap_or_default());
            Ok(())
        }
    }
}

/// `upload --seal`: the manifest of the prefix, from the entries the upload computed as it
/// sealed and the names listed under the prefix before it (those other blobs, skipped or links
/// or there before, are read), signed and stored.
pub(super) async fn seal_after_upload(
    store: &dyn BlobStore,
    prefix: &str,
    listed: Vec<String>,
    entries: Vec<encfs_dataset::Entry>,
    signer: &P384Signer,
    concurrency: usize,
) -> Result<serde_json::Value> {
    let manifest = encfs_dataset::build_from(store, prefix, listed, entries, concurrency)
        .await
        .with_context(|| format!("cannot build the manifest of {}", store.location()))?;
    seal_and_store(store, manifest, signer, None).await
}

/// The manifest bytes: from a file, or the manifest blob beside the data.
async fn manifest_bytes(
    file: Option<&Path>,
    store: &dyn BlobStore,
    prefix: &str,
) -> Result<Vec<u8>> {
    match file {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("cannot read the manifest {}", path.display())),
        None => {
            let name = manifest_blob_name(prefix);
            let bytes = store.get(&name, None, None, None).await.with_context(|| {
                format!(
                    "cannot read the manifest {name} in {} (seal it first: encfs dataset seal)",
                    store.location()
                )
            })?;
            Ok(bytes.to_vec())
        }
    }
}

/// Verifies a manifest against the publisher's certificate or a pinned digest.
pub(super) fn verify_signed(
    bytes: &[u8],
    signer_cert: Option<&Path>,
    digest: Option<&str>,
    what: &str,
) -> Result<SignedManifest> {
    let verified = match (signer_cert, digest) {
        (_, Some(digest)) => {
            let signed = SignedManifest::verify_pinned(bytes, digest);
            match (signed, signer_cert) {
                (Ok(signed), Some(cert)) => {
                    SignedManifest::verify(bytes, &Trust::Certificate(cert_der(cert)?))
                        .map(|_| signed)
                }
                (signed, _) => signed,
            }
        }
        (Some(cert), None) => SignedManifest::verify(bytes, &Trust::Certificate(cert_der(cert)?)),
        (None, None) => bail!(
            "{what}: give --signer-cert PEM (the publisher's member certificate) or the pinned digest: a manifest is only as good as whom it is checked against"
        ),
    };
    verified.with_context(|| format!("{what} is refused"))
}

/// DER of the first certificate of a PEM file.
fn cert_der(path: &Path) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the certificate {}", path.display()))?;
    encfs_governance::identity::cert_der_from_pem(&text)
        .map_err(|reason| anyhow::anyhow!("{}: {reason}", path.display()))
}

async fn verified_manifest(
    source: &ManifestSource,
    location: &StoreLocation,
) -> Result<SignedManifest> {
    let bytes = manifest_bytes(
        source.manifest.as_deref(),
        &*location.store,
        &location.prefix,
    )
    .await?;
    let what = match &source.manifest {
        Some(path) => format!("the manifest {}", path.display()),
        None => format!("the manifest {}", manifest_blob_name(&location.prefix)),
    };
    if let Some(authority) = &source.attestation_authority {
        let attested = super::attested_manifest::verify_attested(
            &bytes,
            authority,
            &source.authority_ca,
            source.hostdata.as_deref(),
        )
        .await
        .with_context(|| format!("{what} is refused"))?;
        eprintln!(
            "{what} was sealed by a clean room with hostdata {}",
            attested.hostdata
        );
        return Ok(attested.signed);
    }
    verify_signed(
        &bytes,
        source.signer_cert.as_deref(),
        source.digest.as_deref(),
        &what,
    )
}

async fn verify(args: &VerifyArgs, access: &StoreAccess) -> Result<()> {
    let location = open_store_of(&args.store, access)?;
    let signed = verified_manifest(&args.source, &location).await?;
    let manifest = &signed.manifest;
    if manifest.store_prefix != location.prefix {
        bail!(
            "the manifest covers the prefix {:?}, not {:?}: point at the datastore prefix it was sealed for",
            manifest.store_prefix,
            location.prefix
        );
    }
    let store = &*location.store;
    let report = encfs_dataset::verify_store(store, manifest, args.store.concurrency)
        .await
        .with_context(|| format!("cannot check {} against the manifest", store.location()))?;
    match args.output.structured() {
        Some(format) => {
            let value = serde_json::json!({
                "digest": signed.digest(),
                "signer": signed.signer_digest(),
                "store_prefix": manifest.store_prefix,
                "listed": report.listed,
                "verified": report.verified,
                "clean": report.is_clean(),
                "problems": report.problems,
            });
            args.output.print(&value, format)?;
        }
        None => {
            for problem in &report.problems {
                println!("{}: {}", problem.name, problem.finding);
            }
            eprintln!(
                "manifest {}: {} listed, {} verified, {} problems",
                signed.digest(),
                report.listed,
                report.verified,
                report.problems.len()
            );
        }
    }
    if !report.is_clean() {
        let names: Vec<&str> = report.problems.iter().map(|p| p.name.as_str()).collect();
        bail!(
            "{} does not hold the dataset the manifest lists: {}",
            store.location(),
            names.join(", ")
        );
    }
    Ok(())
}

async fn show(args: &ShowArgs, access: &StoreAccess) -> Result<()> {
    let bytes = match &args.manifest {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("cannot read the manifest {}", path.display()))?,
        None => {
            let location = open_dataset(
                args.url.as_deref(),
                &args.datastore,
                args.prefix.as_deref(),
                access,
            )?;
            manifest_bytes(None, &*location.store, &location.prefix).await?
        }
    };
    let signed = SignedManifest::parse(&bytes).context("cannot parse the manifest")?;
    let manifest = &signed.manifest;
    let signer = signed
        .signer_cert_der
        .as_deref()
        .map(encfs_governance::identity::member_id);
    match args.output.structured() {
        Some(format) => {
            let payload: serde_json::Value =
                serde_json::from_slice(&manifest.to_payload()).expect("the payload is JSON");
            let value = serde_json::json!({
                "digest": signed.digest(),
                "signer_member_id": signer,
                "signature_checked": false,
                "manifest": payload,
            });
            args.output.print(&value, format)?;
        }
        None => {
            println!("digest      {}", signed.digest());
            println!(
                "signer      {} (signature not checked: encfs dataset verify)",
                signer.as_deref().unwrap_or("none")
            );
            println!("prefix      {:?}", manifest.store_prefix);
            println!("created at  {} (unix)", manifest.created_at);
            println!("entries     {}", manifest.entries.len());
            println!("{:>14}  {:<16}  NAME", "SIZE", "VERSION (SALT)");
            for entry in &manifest.entries {
                // Bytes 28..36 of the header: the start of the per-blob salt.
                let salt = encfs_governance::identity::hex(&entry.header[28..36]);
                println!("{:>14}  {salt:<16}  {}", entry.size, entry.name);
            }
        }
    }
    Ok(())
}

/// The verified manifest list a mount serves (`encfs mount --manifest …`), or `None` without
/// one. The signature is checked here; the mount gets the plain list.
pub(super) fn pinned_for_mount(
    args: &MountManifest,
    location: &StoreLocation,
) -> Result<Option<Arc<Pinned>>> {
    if args.manifest.is_none() && !args.manifest_from_store {
        if args.manifest_digest.is_some() || args.signer_cert.is_some() {
            bail!(
                "--manifest-digest and --signer-cert need --manifest FILE or --manifest-from-store"
            );
        }
        return Ok(None);
    }
    let runtime = super::runtime()?;
    let bytes = runtime.block_on(manifest_bytes(
        args.manifest.as_deref(),
        &*location.store,
        &location.prefix,
    ))?;
    let signed = verify_signed(
        &bytes,
        args.signer_cert.as_deref(),
        args.manifest_digest.as_deref(),
        "the mount's manifest",
    )?;
    let pinned = Pinned::new(&signed.manifest, &location.prefix, &signed.digest());
    eprintln!(
        "encfs: serving only the {} blobs of manifest {}",
        pinned.status().entries,
        signed.digest()
    );
    Ok(Some(Arc::new(pinned)))
}

/// The `manifest` part of a pinned mount's status file.
pub(super) fn status_json(status: &PinnedStatus) -> serde_json::Value {
    serde_json::json!({
        "digest": status.digest,
        "entries": status.entries,
        "added": status.added.len(),
        "missing": status.missing.len(),
        "refused": status.refused.len(),
        "added_names": status.added,
        "missing_names": status.missing,
        "refused_names": status.refused,
    })
}

/// The mount's ready status, with the pinned mount's findings.
pub(super) fn ready_with(ready: &serde_json::Value, pinned: Option<&Pinned>) -> serde_json::Value {
    let mut value = ready.clone();
    if let Some(pinned) = pinned {
        value["manifest"] = status_json(&pinned.status());
    }
    value
}

/// Rewrites a pinned mount's status file whenever its findings change, until `ended`.
pub(super) fn watch_status(
    pinned: Option<Arc<Pinned>>,
    path: Option<std::path::PathBuf>,
    ready: serde_json::Value,
    ended: Arc<std::sync::atomic::AtomicBool>,
) -> Option<std::thread::JoinHandle<()>> {
    let (pinned, path) = (pinned?, path?);
    Some(std::thread::spawn(move || {
        use std::sync::atomic::Ordering::SeqCst;
        let mut last = pinned.status();
        while !ended.load(SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let now = pinned.status();
            if now != last && !ended.load(SeqCst) {
                if let Err(error) =
                    super::mount::write_json(&path, &ready_with(&ready, Some(&*pinned)))
                {
                    eprintln!("encfs: {error:#}");
                }
                last = now;
            }
        }
    }))
}
