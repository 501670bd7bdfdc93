//! Arguments of the clean-room specification verbs `encfs config add-application | set-logging |
//! set-telemetry | view | validate` (the reference's `az cleanroom config …` verbs, with its flag
//! names wherever the local stores allow).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::args::{Mode, OutputArgs};

/// The spec verbs, flattened into `encfs config …`.
#[derive(Subcommand, Debug)]
pub enum SpecCommand {
    /// Add an application (the agreed code) to the clean-room spec; an entry of the same name is
    /// replaced.
    AddApplication(AddApplicationArgs),
    /// Create a datastore for the application's logs and add it as the datasink
    /// `application-telemetry` (`governance.telemetry.application.logs`).
    SetLogging(SetTelemetryArgs),
    /// Create a datastore for the infrastructure's metrics, traces and logs and add it as the
    /// datasink `infrastructure-telemetry` (`governance.telemetry.infrastructure`).
    SetTelemetry(SetTelemetryArgs),
    /// Merge the parties' specs into one and print it (YAML).
    View(ViewArgs),
    /// Check a spec: names, mount paths, protection modes, telemetry sinks and (given the
    /// stores) keys. Exits non-zero on any error.
    Validate(ValidateArgs),
}

/// `config add-application`.
#[derive(Args, Debug)]
pub struct AddApplicationArgs {
    /// The clean-room spec file.
    #[arg(long = "cleanroom-config", value_name = "FILE")]
    pub cleanroom_config: PathBuf,
    /// Application name (a container name: letters, digits, '-').
    #[arg(long)]
    pub name: String,
    /// The image reference recorded for the generated deployment (`registry/repo:tag`).
    #[arg(long, value_name = "REF", required_unless_present = "command")]
    pub image: Option<String>,
    /// The command line, split like a shell would (the local clean room runs it). Alone, the
    /// image recorded is the placeholder `encfs.local/command:latest`.
    #[arg(long, value_name = "COMMAND", allow_hyphen_values = true)]
    pub command: Option<String>,
    /// Datasources to mount, `ACCESS_NAME=/mount/path` (repeat or list several).
    #[arg(long, value_name = "NAME=PATH", num_args = 1..)]
    pub datasources: Vec<String>,
    /// Datasinks to mount, `ACCESS_NAME=/mount/path`.
    #[arg(long, value_name = "NAME=PATH", num_args = 1..)]
    pub datasinks: Vec<String>,
    /// Environment variables, `KEY=VALUE` (they are part of the contract: no secrets).
    #[arg(
        long = "env",
        visible_alias = "env-vars",
        value_name = "KEY=VALUE",
        num_args = 1..
    )]
    pub env: Vec<String>,
    /// CPU cores requested (fractions allowed).
    #[arg(long, value_name = "CORES")]
    pub cpu: f64,
    /// Memory requested, GB.
    #[arg(long, value_name = "GB")]
    pub memory: f64,
    /// Ports the application listens on.
    #[arg(long, value_name = "PORT", num_args = 1..)]
    pub ports: Vec<u16>,
    /// Start once the execution consent check passes (`startType: Auto`), without a start call.
    #[arg(long)]
    pub auto_start: bool,
}

/// `config set-logging` / `config set-telemetry`.
#[derive(Args, Debug)]
pub struct SetTelemetryArgs {
    /// The clean-room spec file.
    #[arg(long = "cleanroom-config", value_name = "FILE")]
    pub cleanroom_config: PathBuf,
    /// Where the container is created: a directory, or an Azure storage account URL
    /// (`https://account.blob.core.windows.net`); the container is `<this>/<container>`.
    #[arg(long = "storage-account", value_name = "DIR_OR_URL")]
    pub storage_account: String,
    /// Protection mode of the telemetry datastore.
    #[arg(long = "encryption-mode", value_enum, ignore_case = true)]
    pub encryption_mode: Mode,
    /// Datastore config (default: $ENCFS_CONFIG or ~/.config/encfs/datastores.yaml).
    #[arg(long = "datastore-config", value_name = "FILE")]
    pub datastore_config: Option<PathBuf>,
    /// Secret store config (default: $ENCFS_SECRETSTORE_CONFIG or
    /// ~/.config/encfs/secretstores.yaml).
    #[arg(long = "secretstore-config", value_name = "FILE")]
    pub secretstore_config: Option<PathBuf>,
    /// A local secret store whose directory gets the new datastore's DEK file (default: `keys/`
    /// beside the datastore config, as `datastore add`).
    #[arg(
        long = "datastore-secretstore",
        visible_alias = "secretstore",
        value_name = "STORE"
    )]
    pub datastore_secretstore: Option<String>,
    /// Secret store that will hold the wrapped DEK (cse, cpk).
    #[arg(
        long = "dek-secret-store",
        visible_alias = "dek-secretstore",
        value_name = "STORE"
    )]
    pub dek_secret_store: Option<String>,
    /// Secret store that will hold the KEK behind its release policy (cse, cpk).
    #[arg(
        long = "kek-secret-store",
        visible_alias = "kek-secretstore",
        value_name = "STORE"
    )]
    pub kek_secret_store: Option<String>,
    /// KEK name (default: the spec file's tag, then `-kek`).
    #[arg(long = "kek-name", value_name = "NAME")]
    pub kek_name: Option<String>,
    /// Name the container `<access>-<suffix>` instead of after the datastore.
    #[arg(long = "container-suffix", value_name = "SUFFIX")]
    pub container_suffix: Option<String>,
    /// Name of an identity of the spec to access the store with.
    #[arg(long, value_name = "NAME")]
    pub identity: Option<String>,
}

/// `config view`.
#[derive(Args, Debug)]
pub struct ViewArgs {
    /// The spec the others merge into.
    #[arg(long = "cleanroom-config", value_name = "FILE")]
    pub cleanroom_config: PathBuf,
    /// The other parties' specs, merged in this order.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub configs: Vec<PathBuf>,
    /// Also write the merged spec to FILE.
    #[arg(long = "output-file", value_name = "FILE")]
    pub output_file: Option<PathBuf>,
    /// Do not print the merged spec.
    #[arg(long)]
    pub no_print: bool,
}

/// `config validate`.
#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// The clean-room spec file.
    #[arg(long = "cleanroom-config", value_name = "FILE")]
    pub cleanroom_config: PathBuf,
    /// Your datastore config: your access points' datastores must be there with the spec's
    /// protection mode (others' are reported as warnings).
    #[arg(long = "datastore-config", value_name = "FILE")]
    pub datastore_config: Option<PathBuf>,
    /// Your secret store config: the stores holding your access points' wrapped DEKs and KEKs
    /// must be there and able to hold them.
    #[arg(long = "secretstore-config", value_name = "FILE")]
    pub secretstore_config: Option<PathBuf>,
    #[command(flatten)]
    pub output: OutputArgs,
}
