//! Arguments of the data owner's key release commands: `encfs secretstore …` and `encfs config
//! …` (the reference's `az cleanroom secretstore …` / `az cleanroom config …` verbs and flag
//! names wherever it has them).

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use crate::args::OutputArgs;
use crate::governance_args::ClientSelection;

/// Where a secret store keeps its keys and secrets.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackingStoreType {
    /// A local directory (files mode 0600): DEKs and secrets, no key release.
    Local,
    /// A key vault (URL): secrets only (wrapped DEKs).
    #[value(name = "azure-keyvault")]
    AzureKeyvault,
    /// A premium key vault or managed HSM (URL): secrets and keys behind a release policy (KEKs).
    #[value(name = "azure-keyvault-premium")]
    AzureKeyvaultPremium,
}

/// `encfs secretstore …`.
#[derive(Subcommand, Debug)]
pub enum SecretstoreCommand {
    /// Record a named secret store (replaces an entry of the same name).
    Add {
        /// Store name (what clean-room specs and `--secret-store` refer to).
        #[arg(long)]
        name: String,
        /// The kind of store.
        #[arg(long = "backing-store-type", value_enum)]
        backing_store_type: BackingStoreType,
        /// A directory (local) or the vault's URL (azure-keyvault*).
        #[arg(long = "backing-store-id", value_name = "URL_OR_DIR")]
        backing_store_id: String,
        /// The attestation authority the release policies of this store's KEKs name (MAA URL).
        #[arg(long = "attestation-endpoint", value_name = "URL")]
        attestation_endpoint: Option<String>,
        /// Credential file for the vault (`encfs keyvault identity create --out FILE`).
        #[arg(long, value_name = "FILE")]
        credential: Option<PathBuf>,
        /// PEM of the CA to trust for the vault's TLS certificate (besides the system roots).
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        #[command(flatten)]
        config: SecretstoreConfigArg,
    },
    /// Show one secret store.
    Show {
        /// Store name.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        config: SecretstoreConfigArg,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// List the secret stores.
    List {
        #[command(flatten)]
        config: SecretstoreConfigArg,
        #[command(flatten)]
        output: OutputArgs,
    },
}

/// The secret store config file.
#[derive(Args, Debug, Clone)]
pub struct SecretstoreConfigArg {
    /// Secret store config (default: $ENCFS_SECRETSTORE_CONFIG or
    /// ~/.config/encfs/secretstores.yaml).
    #[arg(
        long = "config",
        visible_alias = "secretstore-config",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
}

/// `encfs config …`: the clean-room spec and the data owner's KEK / wrapped DEK setup.
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Write an empty clean-room spec (nothing happens if the file exists).
    Init {
        /// The clean-room spec file.
        #[arg(long = "cleanroom-config", value_name = "FILE")]
        cleanroom_config: PathBuf,
    },
    /// Add a datastore as a datasource (read-only) of the clean-room spec.
    AddDatasource(AddAccessPointArgs),
    /// Add a datastore as a datasink (read-write) of the clean-room spec.
    AddDatasink(AddAccessPointArgs),
    /// Create (or keep) the KEKs the spec names, each behind the release policy for the
    /// contract's accepted clean-room policy.
    CreateKek(KekArgs),
    /// Create the KEKs (as create-kek), wrap every datastore DEK the spec names with its KEK
    /// and store it as secret `wrapped-<datastore>-dek-<kek>`; record the key release in the
    /// datastore config.
    WrapDeks(WrapDeksArgs),
    /// Wrap any value with a KEK (RSA-OAEP-256) and store it as a secret; prints the unwrap
    /// request shape.
    WrapSecret(WrapSecretArgs),
    #[command(flatten)]
    Spec(crate::spec_args::SpecCommand),
}

/// `config add-datasource` / `add-datasink`.
#[derive(Args, Debug)]
pub struct AddAccessPointArgs {
    /// The clean-room spec file.
    #[arg(long = "cleanroom-config", value_name = "FILE")]
    pub cleanroom_config: PathBuf,
    /// The datastore (from the datastore config).
    #[arg(long = "datastore-name", value_name = "NAME")]
    pub datastore_name: String,
    /// Access name in the spec (default: the datastore name). An entry of the same name is
    /// replaced.
    #[arg(long = "name", visible_alias = "access-name", value_name = "NAME")]
    pub name: Option<String>,
    /// Datastore config (default: $ENCFS_CONFIG or ~/.config/encfs/datastores.yaml).
    #[arg(long = "datastore-config", value_name = "FILE")]
    pub datastore_config: Option<PathBuf>,
    /// Secret store config (default: $ENCFS_SECRETSTORE_CONFIG or
    /// ~/.config/encfs/secretstores.yaml).
    #[arg(long = "secretstore-config", value_name = "FILE")]
    pub secretstore_config: Option<PathBuf>,
    /// Secret store that will hold the wrapped DEK (cse, cpk).
    #[arg(
        long = "dek-secret-store",
        visible_alias = "key-store",
        value_name = "STORE"
    )]
    pub dek_secret_store: Option<String>,
    /// Secret store that will hold the KEK behind its release policy (cse, cpk).
    #[arg(
        long = "kek-secret-store",
        visible_alias = "kek-store",
        value_name = "STORE"
    )]
    pub kek_secret_store: Option<String>,
    /// KEK name (default: the first 8 hex digits of SHA-256 of the spec's path, then `-kek`).
    #[arg(long = "kek-name", value_name = "NAME")]
    pub kek_name: Option<String>,
    /// Protection mode (default: the datastore's).
    #[arg(long = "encryption-mode", value_enum)]
    pub encryption_mode: Option<crate::args::Mode>,
    /// A sub-path inside the datastore.
    #[arg(long, value_name = "PATH")]
    pub subdirectory: Option<String>,
    /// Name of an identity of the spec to access the store with.
    #[arg(long, value_name = "NAME")]
    pub identity: Option<String>,
    /// Pin the datasource to this signed dataset manifest (`encfs dataset seal --output-file`):
    /// its digest goes into the spec, and the clean room serves only what it lists.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// The publisher's member certificate (PEM): the manifest must be signed with its key
    /// (without it the manifest is only parsed).
    #[arg(long, value_name = "PEM", requires = "manifest")]
    pub manifest_signer_cert: Option<PathBuf>,
}

/// What create-kek and wrap-deks read.
#[derive(Args, Debug)]
pub struct KekArgs {
    /// The contract whose accepted clean-room policy the release policies name.
    #[arg(long = "contract-id", value_name = "ID")]
    pub contract_id: String,
    /// The clean-room spec file.
    #[arg(long = "cleanroom-config", value_name = "FILE")]
    pub cleanroom_config: PathBuf,
    /// Secret store config.
    #[arg(long = "secretstore-config", value_name = "FILE")]
    pub secretstore_config: Option<PathBuf>,
    #[command(flatten)]
    pub client: ClientSelection,
    /// Print the plan; create, import and store nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `config wrap-deks`.
#[derive(Args, Debug)]
pub struct WrapDeksArgs {
    #[command(flatten)]
    pub kek: KekArgs,
    /// Datastore config (default: $ENCFS_CONFIG or ~/.config/encfs/datastores.yaml).
    #[arg(long = "datastore-config", value_name = "FILE")]
    pub datastore_config: Option<PathBuf>,
}

/// `config wrap-secret`.
#[derive(Args, Debug)]
pub struct WrapSecretArgs {
    /// Secret name.
    #[arg(long)]
    pub name: String,
    /// File holding the value to wrap (never a command-line value).
    #[arg(long = "value-file", value_name = "FILE")]
    pub value_file: PathBuf,
    /// Secret store that will hold the wrapped value.
    #[arg(long = "secret-store", value_name = "STORE")]
    pub secret_store: String,
    /// Secret store holding (or to hold) the KEK.
    #[arg(
        long = "kek-secret-store",
        visible_alias = "kek-store",
        value_name = "STORE"
    )]
    pub kek_secret_store: String,
    /// KEK name. Used as it is when it exists; created otherwise (needs --contract-id and
    /// --governance-client).
    #[arg(long = "kek-name", value_name = "NAME")]
    pub kek_name: String,
    /// The contract whose clean-room policy a new KEK's release policy names.
    #[arg(long = "contract-id", value_name = "ID")]
    pub contract_id: Option<String>,
    /// The governance client profile (with --contract-id).
    #[arg(long = "governance-client", value_name = "CLIENT")]
    pub governance_client: Option<String>,
    /// Governance profile file.
    #[arg(long = "governance-config", value_name = "FILE")]
    pub governance_config: Option<PathBuf>,
    /// Secret store config.
    #[arg(long = "secretstore-config", value_name = "FILE")]
    pub secretstore_config: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}
