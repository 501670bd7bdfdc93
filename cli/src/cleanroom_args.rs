//! Arguments of `encfs cleanroom …` (the local clean room and the commands its containers run)
//! and of the collaborators' `encfs datasink | logs | telemetry download`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::governance_args::ClientSelection;

/// `encfs cleanroom …`.
#[derive(Subcommand, Debug)]
pub enum CleanroomCommand {
    /// Run the clean room of an accepted contract on this machine: check the template and its
    /// policy against governance, start the sidecars, the mounts and the code launcher, run the
    /// application in its sandbox; exit with the application's exit code.
    Run(RunArgs),
    /// Show a running (or finished) clean room's state.
    Status {
        /// The clean room's data directory (`run --data`).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
    },
    /// Wait until a clean room has finished; exit with its application's exit code.
    Wait {
        /// The clean room's data directory (`run --data`).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Give up after this long.
        #[arg(long, default_value = "30m", value_parser = crate::duration::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Stop a running clean room (the application, its mounts and sidecars).
    Stop {
        /// The clean room's data directory (`run --data`).
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
    },
    /// Run a command in the application sandbox, as the clean room runs an application (its own
    /// namespaces and root, loopback only, uid 1000): to try an application, and for the
    /// sandbox's benchmark. Its output is printed when it exits; the exit code is its own.
    Sandbox(SandboxArgs),
    /// What an access point's container runs: get the DEK through key release, mount the
    /// datastore at the mount path, write its volume status file (ref §6).
    MountLauncher(MountLauncherArgs),
    /// What an application's container runs: the code launcher API (ref §6) that starts the
    /// application in its sandbox after the consent checks.
    CodeLauncher(CodeLauncherArgs),
}

/// `encfs cleanroom run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The contract whose accepted deployment is run.
    #[arg(long)]
    pub contract_id: String,
    #[command(flatten)]
    pub client: ClientSelection,
    /// The ARM template (`governance deployment generate`); it must be the contract's accepted
    /// deployment spec.
    #[arg(long, value_name = "FILE")]
    pub template: PathBuf,
    /// The clean room's working directory: mounts, telemetry, volume status, sidecar state.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// The CA certificate of the attestation authority standing in for the platform's SNP
    /// hardware and MAA (`authority-ca.pem` of `encfs attestation serve`, INSECURE, virtual; its
    /// URL is in the template).
    #[arg(long, value_name = "FILE")]
    pub authority_ca: PathBuf,
    /// The clean room's identity credential (`encfs keyvault identity create`), standing in for
    /// the platform's managed identity.
    #[arg(long, value_name = "FILE")]
    pub identity_credential: PathBuf,
    /// CA certificates to trust for the key vaults' TLS (besides the system roots).
    #[arg(long = "trust-ca", value_name = "FILE")]
    pub trust_ca: Vec<PathBuf>,
    /// Where the code launcher API listens (the reference's port 8200).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8200")]
    pub launcher_listen: SocketAddr,
    /// Print each step as it happens.
    #[arg(long)]
    pub verbose: bool,
}

/// `encfs cleanroom sandbox`.
#[derive(Args, Debug)]
pub struct SandboxArgs {
    /// A host directory (or mount) seen at a path inside: `HOST:INSIDE` (read-write) or
    /// `HOST:INSIDE:ro`.
    #[arg(long = "bind", value_name = "HOST:INSIDE[:ro]")]
    pub binds: Vec<String>,
    /// An environment variable, `KEY=VALUE` (the sandbox has no other).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Memory limit, GiB.
    #[arg(long, value_name = "GIB")]
    pub memory: Option<f64>,
    /// CPU limit, cores.
    #[arg(long, value_name = "CORES")]
    pub cpu: Option<f64>,
    /// The user and group the command runs as.
    #[arg(long, default_value_t = 1000)]
    pub uid: u32,
    /// The command and its arguments.
    #[arg(required = true, last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `encfs cleanroom mount-launcher` (the reference's blobfuse-launcher arguments).
#[derive(Args, Debug)]
pub struct MountLauncherArgs {
    /// The access point's name.
    #[arg(long)]
    pub access_name: String,
    /// Where to mount.
    #[arg(long, value_name = "DIR")]
    pub mount_path: PathBuf,
    /// A datasource (the default).
    #[arg(long, conflicts_with = "read_write")]
    pub read_only: bool,
    /// A datasink.
    #[arg(long)]
    pub read_write: bool,
    /// `SSE`, `CPK` or `CSE`.
    #[arg(long)]
    pub encryption_mode: String,
    /// A sub-path inside the datastore.
    #[arg(long, value_name = "PATH")]
    pub sub_directory: Option<String>,
    /// The governance sidecar's port.
    #[arg(long, default_value_t = 8300)]
    pub governance_port: u16,
    /// The skr sidecar's port.
    #[arg(long, default_value_t = 8284)]
    pub skr_port: u16,
    /// The secrets sidecar's port (the DEK is unwrapped there).
    #[arg(long, default_value_t = 9300)]
    pub secrets_port: u16,
    /// The identity sidecar's port.
    #[arg(long, default_value_t = 8290)]
    pub imds_port: u16,
    /// Where the volume status files go (default: $VOLUMESTATUS_MOUNT_PATH, else
    /// /mnt/volumestatus).
    #[arg(long, value_name = "DIR")]
    pub volume_status_dir: Option<PathBuf>,
    /// The user the mount is presented to (the application's).
    #[arg(long, default_value_t = 1000)]
    pub uid: u32,
    /// The group the mount is presented to.
    #[arg(long, default_value_t = 1000)]
    pub gid: u32,
    /// The digest (`sha256:…`) of the dataset manifest the contract pins: the mount reads the
    /// manifest beside the data, refuses it unless it has this digest, and serves only what it
    /// lists (a datasource).
    #[arg(long, value_name = "DIGEST", conflicts_with = "read_write")]
    pub manifest_digest: Option<String>,
    /// At the end of the run, after the unmount, seal the datasink's manifest with a key the
    /// clean room's attestation binds (a datasink).
    #[arg(long, requires = "read_write")]
    pub seal_manifest: bool,
    /// The datastore's blob names are encrypted (the spec's `encryptNames`; cse only): the
    /// mount maps each name to its stored form under the name key of the released DEK.
    #[arg(long)]
    pub encrypt_names: bool,
}

/// `encfs cleanroom code-launcher` (the reference's code_launcher arguments).
#[derive(Args, Debug)]
pub struct CodeLauncherArgs {
    /// The application this launcher runs.
    #[arg(long)]
    pub application_name: String,
    /// The application (the spec's Application object, JSON, base64).
    #[arg(long, value_name = "B64")]
    pub application_base_64: String,
    /// Where the API listens.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8200")]
    pub listen: SocketAddr,
    /// The governance sidecar's port.
    #[arg(long, default_value_t = 8300)]
    pub governance_port: u16,
    /// Telemetry directory (default: $TELEMETRY_MOUNT_PATH, else /mnt/telemetry).
    #[arg(long, value_name = "DIR")]
    pub telemetry_dir: Option<PathBuf>,
    /// Volume status directory (default: $VOLUMESTATUS_MOUNT_PATH, else /mnt/volumestatus).
    #[arg(long, value_name = "DIR")]
    pub volume_status_dir: Option<PathBuf>,
    /// Where the application's sandbox keeps its root (default: a directory under $TMPDIR).
    #[arg(long, value_name = "DIR")]
    pub sandbox_dir: Option<PathBuf>,
}

/// `encfs datasink …`.
#[derive(Subcommand, Debug)]
pub enum DatasinkCommand {
    /// Download (and decrypt) a datasink of a clean-room spec.
    Download(SinkDownloadArgs),
}

/// `encfs logs …` / `encfs telemetry …`.
#[derive(Subcommand, Debug)]
pub enum TelemetryCommand {
    /// Download (and decrypt) the clean room's exported logs or telemetry.
    Download(TelemetryDownloadArgs),
}

/// `encfs datasink download`.
#[derive(Args, Debug)]
pub struct SinkDownloadArgs {
    /// The clean-room spec naming the datasink.
    #[arg(long, value_name = "FILE")]
    pub cleanroom_config: PathBuf,
    /// The datasink's access name.
    #[arg(long)]
    pub name: String,
    /// Where to write; files land under TARGET/<datastore>/.
    #[arg(long, value_name = "DIR")]
    pub target_folder: PathBuf,
    /// Datastore config file (default: $ENCFS_CONFIG or ~/.config/encfs/datastores.yaml).
    #[arg(long, value_name = "FILE")]
    pub datastore_config: Option<PathBuf>,
}

/// `encfs logs download` / `encfs telemetry download`.
#[derive(Args, Debug)]
pub struct TelemetryDownloadArgs {
    /// The clean-room spec naming the telemetry datasinks.
    #[arg(long, value_name = "FILE")]
    pub cleanroom_config: PathBuf,
    /// Where to write; files land under TARGET/<datastore>/.
    #[arg(long, value_name = "DIR")]
    pub target_folder: PathBuf,
    /// Datastore config file (default: $ENCFS_CONFIG or ~/.config/encfs/datastores.yaml).
    #[arg(long, value_name = "FILE")]
    pub datastore_config: Option<PathBuf>,
}
