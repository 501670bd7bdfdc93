//! `config add-datasource --manifest FILE`: the contract's pin of a dataset. The signed manifest
//! is parsed (or, given the publisher's certificate, verified) and the datasource records its
//! digest and the manifest blob's name ([`encfs_cleanroom::spec::ManifestPin`]); from then on the
//! spec every party accepts names the exact dataset, and the clean room's mount refuses any
//! other manifest.

use std::path::Path;

use anyhow::{Context, Result};
use encfs_cleanroom::spec::ManifestPin;
use encfs_dataset::{SignedManifest, manifest_blob_name};

/// The pin of the signed manifest in `path`, checked against `signer_cert` if given.
pub fn pin_of_file(path: &Path, signer_cert: Option<&Path>) -> Result<ManifestPin> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read the manifest {}", path.display()))?;
    let what = format!("the manifest {}", path.display());
    let signed = match signer_cert {
        Some(_) => super::dataset::verify_signed(&bytes, signer_cert, None, &what)?,
        None => SignedManifest::parse(&bytes).with_context(|| format!("{what} is refused"))?,
    };
    Ok(ManifestPin {
        digest: signed.digest(),
        blob: manifest_blob_name(&signed.manifest.store_prefix),
    })
}
