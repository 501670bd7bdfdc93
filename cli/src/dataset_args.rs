//! Grammar of `encfs dataset …` (signed dataset manifests) and of the manifest options of
//! `encfs upload --seal` and `encfs mount --manifest`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::args::{DatastoreSelection, OutputArgs};

#[derive(Subcommand, Debug)]
pub enum DatasetCommand {
    /// Build the manifest of a datastore prefix (each blob's name, EBF header, size and
    /// segment-tag digest), sign it with a member identity, store it beside the data.
    Seal(SealArgs),
    /// Check a manifest's signature, then every blob under its prefix (offline: no key needed);
    /// exits non-zero when a blob is swapped, rolled back, deleted or added.
    Verify(VerifyArgs),
    /// Print a manifest (its signature is not checked: see `encfs dataset verify`).
    Show(ShowArgs),
}

/// Which store prefix a dataset is.
#[derive(Args, Debug)]
pub struct DatasetStore {
    /// Store address (omit with --datastore).
    pub url: Option<String>,
    #[command(flatten)]
    pub datastore: DatastoreSelection,
    /// A prefix inside the datastore (as --subdirectory).
    #[arg(
        long,
        value_name = "PATH",
        requires = "datastore",
        conflicts_with = "subdirectory"
    )]
    pub prefix: Option<String>,
    /// Blobs read at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
}

/// Who signs a manifest: a governance client profile's member identity, or the files.
#[derive(Args, Debug, Clone)]
pub struct SignerArgs {
    /// Sign with the member identity of this governance client profile.
    #[arg(long = "governance-client", value_name = "CLIENT")]
    pub governance_client: Option<String>,
    /// Governance client profile file (default: $ENCFS_GOVERNANCE_CONFIG or
    /// ~/.config/encfs/governance-clients.yaml).
    #[arg(long = "governance-config", value_name = "FILE")]
    pub governance_config: Option<PathBuf>,
    /// Sign with this member certificate (PEM; with --signing-key) instead of a profile.
    #[arg(
        long,
        value_name = "PEM",
        requires = "signing_key",
        conflicts_with = "governance_client"
    )]
    pub signing_cert: Option<PathBuf>,
    /// The member's private key (PEM, PKCS#8 or SEC1).
    #[arg(long, value_name = "PEM", requires = "signing_cert")]
    pub signing_key: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct SealArgs {
    #[command(flatten)]
    pub store: DatasetStore,
    #[command(flatten)]
    pub signer: SignerArgs,
    /// Also write the signed manifest to this file.
    #[arg(long, value_name = "FILE")]
    pub output_file: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Where a manifest comes from and whom to trust for it.
#[derive(Args, Debug)]
pub struct ManifestSource {
    /// The signed manifest file (default: the manifest blob beside the data).
    #[arg(long, value_name = "FILE", conflicts_with = "from_store")]
    pub manifest: Option<PathBuf>,
    /// Read the manifest blob beside the data (the default).
    #[arg(long)]
    pub from_store: bool,
    /// The publisher's member certificate (PEM): the manifest must be signed with its key.
    #[arg(
        long,
        value_name = "PEM",
        required_unless_present_any = ["digest", "attestation_authority"]
    )]
    pub signer_cert: Option<PathBuf>,
    /// The manifest's pinned digest (sha256:…, from a contract): then its own signer is
    /// accepted.
    #[arg(long, value_name = "sha256:HEX")]
    pub digest: Option<String>,
    /// A manifest a clean room sealed (a datasink's): its attestation token must verify against
    /// this authority (URL) and bind the manifest's signing key.
    #[arg(long, value_name = "URL", conflicts_with_all = ["signer_cert", "digest"])]
    pub attestation_authority: Option<String>,
    /// CA certificates (PEM) to trust for the authority's TLS, besides the system roots.
    #[arg(
        long = "authority-ca",
        value_name = "PEM",
        requires = "attestation_authority"
    )]
    pub authority_ca: Vec<PathBuf>,
    /// The hostdata (hex) the sealing clean room's policy must have: the accepted policy's.
    #[arg(long, value_name = "HEX", requires = "attestation_authority")]
    pub hostdata: Option<String>,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub store: DatasetStore,
    #[command(flatten)]
    pub source: ManifestSource,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The signed manifest file (default: the manifest blob of the datastore).
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Store address (without --manifest or --datastore).
    pub url: Option<String>,
    #[command(flatten)]
    pub datastore: DatastoreSelection,
    /// A prefix inside the datastore (as --subdirectory).
    #[arg(
        long,
        value_name = "PATH",
        requires = "datastore",
        conflicts_with = "subdirectory"
    )]
    pub prefix: Option<String>,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `encfs upload --seal`.
#[derive(Args, Debug)]
pub struct UploadSeal {
    /// Seal the dataset in the same pass: write its signed manifest beside the data after the
    /// last blob (cse only; with --governance-client or --signing-cert/--signing-key).
    #[arg(long)]
    pub seal: bool,
    #[command(flatten)]
    pub signer: SignerArgs,
}

/// `encfs mount --manifest …`: serve only what a signed manifest lists, in exactly those versions.
#[derive(Args, Debug)]
pub struct MountManifest {
    /// Serve only what this signed manifest lists (read-only, cse).
    #[arg(long, value_name = "FILE", conflicts_with = "manifest_from_store")]
    pub manifest: Option<PathBuf>,
    /// Serve only what the manifest blob beside the data lists.
    #[arg(long)]
    pub manifest_from_store: bool,
    /// The manifest's pinned digest (sha256:…).
    #[arg(long, value_name = "sha256:HEX")]
    pub manifest_digest: Option<String>,
    /// The publisher's member certificate (PEM) the manifest must be signed with.
    #[arg(long, value_name = "PEM")]
    pub signer_cert: Option<PathBuf>,
}
