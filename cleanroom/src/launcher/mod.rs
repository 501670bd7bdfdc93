//! The code launcher (ref §6, the reference's `code_launcher` on :8200): the clean room's API that
//! starts the agreed application only after governance's execution consent, reports its status,
//! and exports its logs and the infrastructure telemetry after the logging / telemetry consent.
//!
//! | route | behaviour | answers |
//! |---|---|---|
//! | `POST /gov/{app}/start` | consent check `execution` through the governance sidecar, then the app by name, wait for its mounts, start | 200 `{"message":"Application started successfully."}`; 403 `{"code":"ConsentCheckFailed",…}`; 404 unknown app; 500 mount or runner failure |
//! | `GET /gov/{app}/status` | the runner's state; emits the event `<app> container status: <s>, exit code: <n>` | 200 `{"status":"running"\|"exited","exit_code":n\|null}`; 404 |
//! | `POST /gov/exportLogs` | consent `logging`; copy `<telemetry>/application` into the mount of `application-telemetry` | 200 `{"message":"Application telemetry data exported successfully."}`; 403 |
//! | `POST /gov/exportTelemetry` | consent `telemetry`; `<telemetry>/infrastructure` → `infrastructure-telemetry` | 200 `{"message":"Infrastructure telemetry data exported successfully."}`; 403 |
//!
//! Anything else is refused by the inbound filter before routing: 403
//! `{"code":"RequestNotAllowed",…}` (the reference's envoy + OPA policy, [`api::is_allowed`]).
//!
//! The application itself runs through [`AppRunner`], which the caller binds to the sandbox; the
//! launcher gives it the app's spec and its mounts (host path, path in the app, read-only), found
//! through the mount launchers' volume status files ([`volumes`]). Beyond the reference, a
//! supervisor ([`supervisor`]) polls the execution consent while the app runs and stops the app
//! when a member revokes it, and exports the logs once when the app exits with logging enabled.
//! Events go to governance through the sidecar's `PUT /events`
//! (`{"source":"code-launcher","message":…}`).

pub mod api;
pub mod export;
pub mod governance;
pub mod supervisor;
pub mod volumes;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use crate::spec::Application;
pub use supervisor::{AppOutcome, Launcher};

/// The reference's API port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8200";
/// The reference's governance sidecar.
pub const DEFAULT_GOVERNANCE: &str = "http://127.0.0.1:8300";
/// The access name of the application logs' datasink.
pub const APPLICATION_TELEMETRY: &str = "application-telemetry";
/// The access name of the infrastructure telemetry's datasink.
pub const INFRASTRUCTURE_TELEMETRY: &str = "infrastructure-telemetry";

/// What state an application is in, as the runner sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppState {
    /// It runs.
    Running,
    /// It ended with this exit code (a signal `s` is `128 + s`, as a shell reports it).
    Exited(i32),
}

/// A runner's failure (the sandbox could not start, query or stop the application).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RunnerError(pub String);

/// Starts, watches and stops the application; bound by the caller to the sandbox.
///
/// The runner writes the application's stdout and stderr to
/// [`LauncherConfig::application_log`] (`<telemetry>/application/<app>.log`). Calls may block
/// briefly (the launcher runs them on blocking threads).
pub trait AppRunner: Send + Sync + 'static {
    /// Starts `app` with `mounts`: (host mount path, path in the app, read-only). Starting an app
    /// that exited starts it again.
    fn start(
        &self,
        app: &Application,
        mounts: &[(String, String, bool)],
    ) -> Result<(), RunnerError>;
    /// The app's state, `None` if it was never started.
    fn status(&self, app: &str) -> Result<Option<AppState>, RunnerError>;
    /// Stops the app (no error if it is not running).
    fn stop(&self, app: &str) -> Result<(), RunnerError>;
}

/// The launcher's settings.
#[derive(Debug, Clone)]
pub struct LauncherConfig {
    /// Where the API listens (loopback; the reference's 8200).
    pub listen: SocketAddr,
    /// The governance sidecar's URL (the reference's `http://localhost:8300`).
    pub governance: String,
    /// The applications of the spec (one in the reference; names unique).
    pub applications: Vec<Application>,
    /// The telemetry directory (`TELEMETRY_MOUNT_PATH`, `/mnt/telemetry`): `application/` holds
    /// the apps' logs, `infrastructure/` the sidecars' telemetry.
    pub telemetry_dir: PathBuf,
    /// The volume status directory (`VOLUMESTATUS_MOUNT_PATH`, `/mnt/volumestatus`).
    pub volume_status_dir: PathBuf,
    /// How long a start or an export waits for a mount's status file (the reference: 5 × 10 s).
    pub mount_wait: Duration,
    /// How often a running app's execution consent is checked (at most 1 s).
    pub consent_poll: Duration,
    /// Send events to governance (`DISABLE_GOV_EVENTS` turns them off in the reference).
    pub governance_events: bool,
}

impl LauncherConfig {
    /// The reference's defaults for `applications`, telemetry under `telemetry_dir` and volume
    /// status files under `volume_status_dir`.
    pub fn new(
        applications: Vec<Application>,
        telemetry_dir: PathBuf,
        volume_status_dir: PathBuf,
    ) -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("a socket address"),
            governance: DEFAULT_GOVERNANCE.into(),
            applications,
            telemetry_dir,
            volume_status_dir,
            mount_wait: Duration::from_secs(50),
            consent_poll: Duration::from_secs(1),
            governance_events: true,
        }
    }

    /// Where the runner writes `app`'s stdout and stderr.
    pub fn application_log(&self, app: &str) -> PathBuf {
        self.telemetry_dir
            .join("application")
            .join(format!("{app}.log"))
    }
}

/// Why the launcher cannot start or serve.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LauncherError {
    /// The configuration is unusable.
    #[error("code launcher configuration: {0}")]
    Config(String),
    /// The listen address could not be bound.
    #[error("the code launcher cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A directory could not be created.
    #[error("cannot create {path}: {source}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("the code launcher failed: {0}")]
    Serve(std::io::Error),
}

/// Binds `config.listen`, starts the auto-start apps after their execution consent check, and
/// serves the API until `shutdown` completes; then stops the apps still running.
pub async fn serve(
    config: LauncherConfig,
    runner: Arc<dyn AppRunner>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), LauncherError> {
    let addr = config.listen;
    let launcher = Launcher::new(config, runner)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| LauncherError::Bind { addr, source })?;
    launcher.serve_on(listener, shutdown).await
}
