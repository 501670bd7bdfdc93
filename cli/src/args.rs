//! Command-line grammar (clap derive). Verb names follow the reference system where it has them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// encfs: keys, key wrapping and authenticated encrypted blobs for confidential data collaboration.
#[derive(Parser, Debug)]
#[command(name = "encfs", version, propagate_version = true)]
pub struct Cli {
    /// Worker threads for encryption and decryption (default: all cores).
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub access: StoreAccess,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Data encryption keys (DEKs): generate, wrap, unwrap, show id.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Key-encryption keys (RSA KEKs).
    #[command(subcommand)]
    Kek(KekCommand),
    /// Encrypt a file into an EBF v1 blob.
    Encrypt(EncryptArgs),
    /// Decrypt an EBF v1 blob; nothing is written unless every segment verifies.
    Decrypt(DecryptArgs),
    /// Show an EBF blob's header and plaintext length (no key needed).
    Inspect(InspectArgs),
    /// Convert a blob in another format to EBF v1.
    Convert(ConvertArgs),
    /// Encrypt and upload a file or directory tree to a store (path, file:///, Azure or Azurite URL).
    Upload(UploadArgs),
    /// Download and verify a blob or every blob under a prefix.
    Download(DownloadArgs),
    /// List blobs and prefixes at a store address.
    Ls(LsArgs),
    /// Delete a blob (or, with --recursive, everything under a prefix).
    Rm(RmArgs),
    /// Named datastores: a store address, a protection mode and a DEK, recorded in a YAML config.
    #[command(subcommand)]
    Datastore(DatastoreCommand),
    /// Signed dataset manifests: seal a datastore prefix, verify a store against one, show one.
    #[command(subcommand)]
    Dataset(crate::dataset_args::DatasetCommand),
    /// Mount a store prefix as plain files (FUSE): read-only, or read-write with --read-write.
    Mount(MountArgs),
    /// Unmount an encfs mount.
    Unmount(UnmountArgs),
    /// Consortium governance: the service, members, proposals, contracts, the ledger.
    Governance(GovernanceArgs),
    /// The INSECURE virtual attestation authority (SNP reports, MAA-shaped tokens).
    #[command(subcommand)]
    Attestation(crate::attestation_args::AttestationCommand),
    /// The local Azure Key Vault (secure key release) and its identities.
    #[command(subcommand)]
    Keyvault(crate::keyvault_args::KeyvaultCommand),
    /// Secret stores: where DEKs, wrapped DEKs and KEKs live (a directory or a key vault).
    #[command(subcommand)]
    Secretstore(crate::keyrelease_args::SecretstoreCommand),
    /// The clean-room spec and the data owner's KEKs and wrapped DEKs (secure key release).
    #[command(subcommand)]
    Config(crate::keyrelease_args::ConfigCommand),
    /// The clean room's loopback sidecars: skr (key release), secrets (unwrap), identity.
    #[command(subcommand)]
    Sidecar(crate::sidecar_args::SidecarCommand),
    /// The local clean room: run an accepted contract's deployment; what its containers run.
    #[command(subcommand)]
    Cleanroom(crate::cleanroom_args::CleanroomCommand),
    /// A clean room's datasinks: download (and decrypt) one.
    #[command(subcommand)]
    Datasink(crate::cleanroom_args::DatasinkCommand),
    /// A clean room's exported application logs: download (and decrypt) them.
    #[command(subcommand)]
    Logs(crate::cleanroom_args::TelemetryCommand),
    /// A clean room's exported infrastructure telemetry: download (and decrypt) it.
    #[command(subcommand)]
    Telemetry(crate::cleanroom_args::TelemetryCommand),
}

/// `encfs governance …` and its output options.
#[derive(Args, Debug)]
pub struct GovernanceArgs {
    #[command(subcommand)]
    pub command: crate::governance_args::GovernanceCommand,
    #[command(flatten)]
    pub output: crate::governance_args::GovOutput,
}

#[derive(Args, Debug)]
pub struct MountArgs {
    /// Store address and mount point (only the mount point with --datastore).
    #[arg(num_args = 1..=2, required = true, value_name = "URL MOUNTPOINT")]
    pub paths: Vec<String>,
    /// Data key file (cse, cpk).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Protection mode of the blobs (default: the datastore's, else cse).
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Accept writes (a datasink). Without it the mount is read-only.
    #[arg(long)]
    pub read_write: bool,
    /// Memory budget of the block cache.
    #[arg(long, default_value = "256MiB", value_parser = crate::size::parse_size)]
    pub cache_size: u64,
    /// Directory for a disk tier of the cache (sealed under a per-mount key, removed at unmount).
    #[arg(long, value_name = "DIR")]
    pub disk_cache: Option<PathBuf>,
    /// Capacity of the disk tier.
    #[arg(long, default_value = "4GiB", value_parser = crate::size::parse_size)]
    pub disk_cache_size: u64,
    /// Where writers park copies of blocks already sent, for stores that cannot serve uncommitted
    /// blocks back (Azure; sealed under a per-mount key; default: the --disk-cache directory,
    /// else $TMPDIR). The embedded store needs none.
    #[arg(long, value_name = "DIR")]
    pub scratch_dir: Option<PathBuf>,
    /// Most dirty data in flight to the store (writers wait beyond it).
    #[arg(long, default_value = "128MiB", value_parser = crate::size::parse_size)]
    pub write_budget: u64,
    /// Let users other than the one who mounted use the mount (the application's user in a
    /// clean room). Modes and owners are still checked by the kernel.
    #[arg(long)]
    pub allow_other: bool,
    /// Show every file and directory as owned by this user id (recorded owners are kept, and
    /// are what download restores). Default: recorded owner, else the mount point's owner.
    #[arg(long, value_name = "UID")]
    pub uid: Option<u32>,
    /// Show every file and directory as owned by this group id (recorded groups are kept).
    #[arg(long, value_name = "GID")]
    pub gid: Option<u32>,
    /// Refuse FIFOs, sockets and device nodes (mkfifo and mknod of them give EPERM). By default
    /// a read-write mount records them as empty marker blobs; devices are never opened as
    /// devices (the mount is nodev), and download skips them.
    #[arg(long = "no-special-files", action = clap::ArgAction::SetFalse)]
    pub special_files: bool,
    /// Permission bits (octal, e.g. 022) cleared from every mode shown; recorded modes are kept.
    #[arg(long, value_name = "OCTAL", value_parser = parse_umask)]
    pub umask: Option<u32>,
    /// Detach: return once the mount is ready, serve in the background.
    #[arg(long)]
    pub daemon: bool,
    /// Written (JSON) once the mount is ready; removed at unmount.
    #[arg(long, value_name = "FILE")]
    pub status_file: Option<PathBuf>,
    /// Written (JSON) if the mount fails.
    #[arg(long, value_name = "FILE")]
    pub error_file: Option<PathBuf>,
    #[command(flatten)]
    pub segments: SegmentArg,
    #[command(flatten)]
    pub datastore: DatastoreSelection,
    /// Get the datastore's DEK from the secrets sidecar at URL (key release; memory only).
    #[arg(
        long,
        value_name = "URL",
        requires = "datastore",
        conflicts_with = "key"
    )]
    pub key_release: Option<String>,
    /// Blob names are encrypted under a key derived from the DEK (cse; a datastore added with
    /// --encrypt-names implies it).
    #[arg(long)]
    pub encrypt_names: bool,
    #[command(flatten)]
    pub manifest: crate::dataset_args::MountManifest,
}

#[derive(Args, Debug)]
pub struct UnmountArgs {
    /// The mount point.
    pub mountpoint: PathBuf,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Client-side encryption (EBF): the store only ever sees ciphertext.
    Cse,
    /// Azure customer-provided key: the service encrypts with your key and refuses access without it.
    Cpk,
    /// The store's own server-side encryption.
    Sse,
}

#[derive(Args, Debug)]
pub struct DatastoreSelection {
    /// Use a datastore from the config instead of a URL and key.
    #[arg(long, value_name = "NAME")]
    pub datastore: Option<String>,
    /// A sub-path inside the datastore.
    #[arg(long, value_name = "PATH", requires = "datastore")]
    pub subdirectory: Option<String>,
    /// Datastore config file (default: $ENCFS_CONFIG or ~/.config/encfs/datastores.yaml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// How stores are reached: Azure credentials from files (otherwise: a SAS in the URL, then the
/// AZURE_STORAGE_* environment variables, then a managed identity if ENCFS_MANAGED_IDENTITY=1),
/// and the deadline of each store request. Secrets are never accepted as values on the command
/// line, where every user of the machine can read them (`ps`, /proc/PID/cmdline).
#[derive(Args, Debug)]
pub struct StoreAccess {
    /// File holding an Azure Storage connection string (or set AZURE_STORAGE_CONNECTION_STRING).
    #[arg(long, value_name = "FILE", global = true)]
    pub connection_string_file: Option<PathBuf>,
    /// File holding the storage account key; the account comes from the URL (or set
    /// AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY).
    #[arg(long, value_name = "FILE", global = true)]
    pub account_key_file: Option<PathBuf>,
    /// File holding a SAS token, the query string (or set AZURE_STORAGE_SAS_TOKEN).
    #[arg(long, value_name = "FILE", global = true)]
    pub sas_token_file: Option<PathBuf>,
    /// Refused: a secret on the command line. Use --connection-string-file.
    #[arg(long, value_name = "STRING", global = true, hide = true)]
    pub connection_string: Option<String>,
    /// Refused: a secret on the command line. Use --account-key-file.
    #[arg(long, value_name = "KEY", global = true, hide = true)]
    pub account_key: Option<String>,
    /// Refused: a secret on the command line. Use --sas-token-file.
    #[arg(long, value_name = "TOKEN", global = true, hide = true)]
    pub sas_token: Option<String>,
    /// The most one store request may take, retries and waits included (e.g. 60, 60s, 500ms,
    /// 2m); past it the request fails (EIO in a mount) naming the blob. In a mount also the
    /// longest a request that commits (flush, fsync, close, truncate) may take, and how long
    /// SIGINT/SIGTERM waits for open files to close before it aborts the mount.
    #[arg(long, value_name = "DURATION", global = true, default_value = "60s",
          value_parser = crate::duration::parse_duration)]
    pub request_timeout: Duration,
}

#[derive(Args, Debug)]
pub struct TransferArgs {
    /// The key (DEK for cse, customer key for cpk; text or raw 32-byte file).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Protection mode.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Plaintext bytes per staged block / ranged read.
    #[arg(long, default_value = "8MiB", value_parser = crate::size::parse_size)]
    pub block_size: u64,
    /// Most data held in memory at once.
    #[arg(long, default_value = "256MiB", value_parser = crate::size::parse_size)]
    pub memory_budget: u64,
    /// Most files in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Show what would be transferred; transfer nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub datastore: DatastoreSelection,
    /// Get the datastore's DEK from the secrets sidecar at URL (key release; memory only).
    #[arg(
        long,
        value_name = "URL",
        requires = "datastore",
        conflicts_with = "key"
    )]
    pub key_release: Option<String>,
    /// Blob names are encrypted under a key derived from the DEK (cse; a datastore added with
    /// --encrypt-names implies it).
    #[arg(long)]
    pub encrypt_names: bool,
}

#[derive(Args, Debug)]
pub struct UploadArgs {
    /// Local file or directory.
    pub source: PathBuf,
    /// Destination store address (omit with --datastore).
    pub destination: Option<String>,
    /// Create the destination container if it does not exist.
    #[arg(long)]
    pub create_container: bool,
    #[command(flatten)]
    pub transfer: TransferArgs,
    #[command(flatten)]
    pub seal: crate::dataset_args::UploadSeal,
}

#[derive(Args, Debug)]
pub struct DownloadArgs {
    /// `SRC_URL DEST`, or just `DEST` with --datastore.
    #[arg(num_args = 1..=2, required = true, value_name = "SRC_URL DEST")]
    pub paths: Vec<String>,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

/// What `ls` and `rm` act on: an address or a datastore, and its names' key.
#[derive(Args, Debug)]
pub struct NamedStoreArgs {
    /// Store address (container, prefix or blob; omit with --datastore).
    pub url: Option<String>,
    /// The DEK, needed only for encrypted names (--encrypt-names).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Blob names are encrypted under a key derived from the DEK (cse; a datastore added with
    /// --encrypt-names implies it).
    #[arg(long)]
    pub encrypt_names: bool,
    #[command(flatten)]
    pub datastore: DatastoreSelection,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    #[command(flatten)]
    pub target: NamedStoreArgs,
    /// List every blob below, not just one level.
    #[arg(long, short)]
    pub recursive: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// The blob (or prefix, with --recursive).
    #[command(flatten)]
    pub target: NamedStoreArgs,
    /// Delete every blob under the prefix.
    #[arg(long, short)]
    pub recursive: bool,
}

#[derive(Subcommand, Debug)]
pub enum DatastoreCommand {
    /// Create the container and a DEK, and record the datastore in the config.
    Add {
        /// Datastore name.
        #[arg(long)]
        name: String,
        /// Store address (path, file:///, or Azure container URL).
        #[arg(long)]
        store: String,
        /// Protection mode.
        #[arg(long, value_enum, default_value_t = Mode::Cse)]
        mode: Mode,
        /// Config file (default: $ENCFS_CONFIG or ~/.config/encfs/datastores.yaml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Encrypt blob names too (cse only; recorded in the config, followed by upload,
        /// download, mount and ls).
        #[arg(long)]
        encrypt_names: bool,
    },
    /// List the configured datastores.
    List {
        /// Config file.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Generate a new 256-bit DEK into a new file (mode 0600).
    Generate {
        /// Where to write the key; an existing file is never overwritten.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Write the raw 32 bytes (the reference system's `.bin` form) instead of the text form.
        #[arg(long)]
        raw: bool,
    },
    /// Wrap a DEK with an RSA public KEK (RSA-OAEP, SHA-256, MGF1-SHA-256).
    Wrap {
        /// PEM public key (`BEGIN PUBLIC KEY`).
        #[arg(long, value_name = "FILE")]
        kek_public: PathBuf,
        /// The DEK to wrap (text or raw 32-byte file).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Where to write the wrapped key (raw RSA ciphertext, as `openssl pkeyutl` writes).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Unwrap a wrapped DEK with the RSA private KEK.
    Unwrap {
        /// PEM PKCS#8 private key (`BEGIN PRIVATE KEY`).
        #[arg(long, value_name = "FILE")]
        kek_private: PathBuf,
        /// The wrapped key.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Where to write the DEK (mode 0600, never overwritten).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Write the raw 32 bytes instead of the text form.
        #[arg(long)]
        raw: bool,
    },
    /// Print a DEK's key id (the id stored in every blob it seals).
    Id {
        /// The DEK.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum KekCommand {
    /// Generate an RSA key pair: PKCS#8 private key (mode 0600) and public key, both PEM.
    Generate {
        /// Private key output.
        #[arg(long, value_name = "FILE")]
        out_private: PathBuf,
        /// Public key output.
        #[arg(long, value_name = "FILE")]
        out_public: PathBuf,
        /// Modulus size: 3072 (default), 4096, or 2048 for the reference system.
        #[arg(long, default_value_t = 3072)]
        bits: usize,
    },
}

#[derive(Args, Debug)]
pub struct Durability {
    /// Skip the fsync before the output is renamed into place (faster, not crash-safe).
    #[arg(long)]
    pub no_fsync: bool,
}

#[derive(Args, Debug)]
pub struct SegmentArg {
    /// Plaintext bytes per segment of the output: a power of two from 4KiB to 16MiB.
    #[arg(long, default_value = "64KiB", value_parser = crate::size::parse_size)]
    pub segment_size: u64,
}

#[derive(Args, Debug)]
pub struct EncryptArgs {
    /// The DEK (text or raw 32-byte file).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Plaintext input.
    pub input: PathBuf,
    /// Encrypted output (written to a temporary name, renamed when complete).
    pub output: PathBuf,
    #[command(flatten)]
    pub segments: SegmentArg,
    #[command(flatten)]
    pub durability: Durability,
}

#[derive(Args, Debug)]
pub struct DecryptArgs {
    /// The DEK.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// EBF blob.
    pub input: PathBuf,
    /// Plaintext output (written to a temporary name, renamed only after every segment verified).
    pub output: PathBuf,
    #[command(flatten)]
    pub durability: Durability,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object.
    Json,
    /// Tab-separated values (the JSON's scalars), for scripts.
    Tsv,
    /// Aligned columns.
    Table,
}

/// `--output` and `--query`, as `az` has them.
#[derive(Args, Debug)]
pub struct OutputArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// A JMESPath query applied to the JSON result before it is printed (implies JSON output
    /// unless --output says otherwise).
    #[arg(long, value_name = "EXPR")]
    pub query: Option<String>,
}

impl OutputArgs {
    /// The structured format to print in, or `None` for the human-readable text.
    pub fn structured(&self) -> Option<crate::structured::Format> {
        use crate::structured::Format;
        match self.output {
            OutputFormat::Text if self.query.is_some() => Some(Format::Json),
            OutputFormat::Text => None,
            OutputFormat::Json => Some(Format::Json),
            OutputFormat::Tsv => Some(Format::Tsv),
            OutputFormat::Table => Some(Format::Table),
        }
    }

    /// Prints `value` in the structured format chosen.
    pub fn print(
        &self,
        value: &serde_json::Value,
        format: crate::structured::Format,
    ) -> anyhow::Result<()> {
        crate::structured::print(value, format, self.query.as_deref())
    }
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The blob to inspect.
    pub file: PathBuf,
    #[command(flatten)]
    pub output: OutputArgs,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceFormat {
    /// The reference clean-room system's client-side encryption format (16 MiB blocks).
    CleanroomCse,
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// The source format.
    #[arg(long, value_enum)]
    pub from: SourceFormat,
    /// The DEK (the reference system's raw `.bin` files work as they are).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Source blob.
    pub input: PathBuf,
    /// EBF output.
    pub output: PathBuf,
    #[command(flatten)]
    pub segments: SegmentArg,
    #[command(flatten)]
    pub durability: Durability,
}

/// An octal umask (`022`, `0o077`), at most `0o777`.
fn parse_umask(text: &str) -> Result<u32, String> {
    let digits = text.trim_start_matches("0o");
    match u32::from_str_radix(digits, 8) {
        Ok(mask) if mask <= 0o777 => Ok(mask),
        _ => Err(format!("{text}: expected an octal umask such as 022")),
    }
}
