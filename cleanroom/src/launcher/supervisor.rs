//! The launcher's state and what it does to the applications: starting one (execution consent,
//! mounts, the reference's events, the runner), its status, the exports, and — beyond the
//! reference — a supervisor per run that polls the execution consent every
//! [`LauncherConfig::consent_poll`] and stops the app on a revocation, notices the exit, emits
//! the exit event and exports the logs once when logging is enabled. Each run and each export
//! is an OpenTelemetry span (with the run's gauges) in the clean room's trace ([`crate::otel`]).
//!
//! Only a definite answer other than `enabled` stops a running app; a consent check that fails
//! (the sidecar or governance unreachable) is logged and retried at the next poll, so a
//! governance restart does not kill a run. A start, by contrast, fails closed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use tokio::net::TcpListener;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use super::governance::{ConsentCheckError, ConsentOption, GovernanceSidecarClient};
use super::volumes::{self, MountError};
use super::{
    APPLICATION_TELEMETRY, AppRunner, AppState, Application, INFRASTRUCTURE_TELEMETRY,
    LauncherConfig, LauncherError, RunnerError,
};
use crate::otel::{Attributes, Span, Telemetry, TraceContext};

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppOutcome {
    /// The app's exit code.
    pub exit_code: i32,
    /// Whether the launcher stopped it because the execution consent was revoked.
    pub stopped_for_consent: bool,
    /// Whether the logs were exported after the exit (logging consent enabled).
    pub logs_exported: bool,
}

/// Why a start failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The execution consent is not `enabled`.
    #[error("Consent status for execution is not enabled. Status is: '{status}'.")]
    ConsentDenied {
        /// The status governance gave.
        status: String,
    },
    /// The consent could not be checked (fails closed).
    #[error("Consent status for execution could not be checked: {0}")]
    ConsentUnavailable(ConsentCheckError),
    /// No application of that name.
    #[error("Application not found.")]
    UnknownApp,
    /// A mount is not available.
    #[error(transparent)]
    Mount(MountError),
    /// The runner failed.
    #[error("cannot start the application: {0}")]
    Runner(RunnerError),
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The consent is not `enabled`.
    #[error("Consent status for {option} is not enabled. Status is: '{status}'.")]
    ConsentDenied {
        /// `logging` or `telemetry`.
        option: &'static str,
        /// The status governance gave.
        status: String,
    },
    /// The consent could not be checked (fails closed).
    #[error("Consent status for {option} could not be checked: {source}")]
    ConsentUnavailable {
        /// `logging` or `telemetry`.
        option: &'static str,
        /// The failure.
        source: ConsentCheckError,
    },
    /// The datasink's mount is not available.
    #[error(transparent)]
    Mount(MountError),
    /// The copy failed.
    #[error("cannot copy {what} into the {access} mount: {source}")]
    Copy {
        /// What was copied.
        what: &'static str,
        /// The datasink.
        access: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// Which telemetry an export copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export {
    /// `<telemetry>/application` → `application-telemetry` (consent `logging`).
    Logs,
    /// `<telemetry>/infrastructure` → `infrastructure-telemetry` (consent `telemetry`).
    Telemetry,
}

impl Export {
    fn option(self) -> ConsentOption {
        match self {
            Self::Logs => ConsentOption::Logging,
            Self::Telemetry => ConsentOption::Telemetry,
        }
    }

    fn directory(self) -> &'static str {
        match self {
            Self::Logs => "application",
            Self::Telemetry => "infrastructure",
        }
    }

    fn access(self) -> &'static str {
        match self {
            Self::Logs => APPLICATION_TELEMETRY,
            Self::Telemetry => INFRASTRUCTURE_TELEMETRY,
        }
    }

    /// The reference's success message.
    pub fn message(self) -> &'static str {
        match self {
            Self::Logs => "Application telemetry data exported successfully.",
            Self::Telemetry => "Infrastructure telemetry data exported successfully.",
        }
    }
}

struct AppSlot {
    spec: Application,
    /// Serializes starts; holds the current run's supervisor.
    launch: Mutex<Option<JoinHandle<()>>>,
    outcome: watch::Sender<Option<AppOutcome>>,
}

struct Inner {
    config: LauncherConfig,
    runner: Arc<dyn AppRunner>,
    governance: GovernanceSidecarClient,
    apps: BTreeMap<String, AppSlot>,
    launches: AtomicU64,
    /// Spans and metrics of the runs and exports (OTLP/JSON under `<telemetry>/infrastructure`).
    telemetry: Telemetry,
}

/// The code launcher: its applications, the runner and the governance sidecar client. Cheap to
/// clone (shared state).
#[derive(Clone)]
pub struct Launcher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launcher")
            .field("apps", &self.inner.apps.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Runs a runner call on a blocking thread.
async fn blocking<T: Send + 'static>(
    runner: &Arc<dyn AppRunner>,
    call: impl FnOnce(&dyn AppRunner) -> Result<T, RunnerError> + Send + 'static,
) -> Result<T, RunnerError> {
    let runner = Arc::clone(runner);
    tokio::task::spawn_blocking(move || call(runner.as_ref()))
        .await
        .map_err(|e| RunnerError(format!("the runner call panicked: {e}")))?
}

fn is_app_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Launcher {
    /// Checks the configuration and creates the telemetry directories.
    pub fn new(config: LauncherConfig, runner: Arc<dyn AppRunner>) -> Result<Self, LauncherError> {
        if !config.listen.ip().is_loopback() {
            return Err(LauncherError::Config(format!(
                "the API listens on loopback only, not {}",
                config.listen
            )));
        }
        if config.consent_poll.is_zero() || config.consent_poll > std::time::Duration::from_secs(1)
        {
            return Err(LauncherError::Config(format!(
                "the consent poll interval must be within (0, 1 s], not {:?}",
                config.consent_poll
            )));
        }
        let governance = GovernanceSidecarClient::new(&config.governance, config.governance_events)
            .map_err(LauncherError::Config)?;
        let mut apps = BTreeMap::new();
        for spec in &config.applications {
            if !is_app_name(&spec.name) {
                return Err(LauncherError::Config(format!(
                    "application name '{}' is not a name (letters, digits, '-', '_', '.')",
                    spec.name
                )));
            }
            let slot = AppSlot {
                spec: spec.clone(),
                launch: Mutex::new(None),
                outcome: watch::channel(None).0,
            };
            if apps.insert(spec.name.clone(), slot).is_some() {
                return Err(LauncherError::Config(format!(
                    "application '{}' appears twice",
                    spec.name
                )));
            }
        }
        for sub in ["application", "infrastructure"] {
            let path = config.telemetry_dir.join(sub);
            std::fs::create_dir_all(&path)
                .map_err(|source| LauncherError::Directory { path, source })?;
        }
        let telemetry = Telemetry::new(
            &config.telemetry_dir.join("infrastructure"),
            "code-launcher",
            TraceContext::from_env(),
        );
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                runner,
                governance,
                apps,
                launches: AtomicU64::new(0),
                telemetry,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LauncherConfig {
        &self.inner.config
    }

    /// Whether `app` is one of the spec's applications.
    pub fn knows(&self, app: &str) -> bool {
        self.inner.apps.contains_key(app)
    }

    async fn event(&self, message: &str) {
        self.inner.governance.event(message).await;
    }

    /// Starts `app`: execution consent, then the app by name, its mounts, the events
    /// `Creating container for <app>`, `Created container with Id <id> for <app>`, `Starting
    /// execution of <app> container`, and the runner. An app that runs already is left alone.
    pub async fn start(&self, app: &str) -> Result<(), StartError> {
        match self
            .inner
            .governance
            .consent(ConsentOption::Execution)
            .await
        {
            Ok(status) if status == "enabled" => {}
            Ok(status) => return Err(StartError::ConsentDenied { status }),
            Err(e) => return Err(StartError::ConsentUnavailable(e)),
        }
        let slot = self.inner.apps.get(app).ok_or(StartError::UnknownApp)?;
        let mut launch = slot.launch.lock().await;
        let name = app.to_owned();
        if let Ok(Some(AppState::Running)) =
            blocking(&self.inner.runner, move |r| r.status(&name)).await
        {
            return Ok(());
        }
        let config = &self.inner.config;
        let mut mounts = Vec::new();
        for (paths, read_only) in [
            (&slot.spec.datasources, true),
            (&slot.spec.datasinks, false),
        ] {
            for (access, in_app) in paths.iter().flatten() {
                let host =
                    volumes::wait_for_mount(&config.volume_status_dir, access, config.mount_wait)
                        .await
                        .map_err(StartError::Mount)?;
                mounts.push((host.display().to_string(), in_app.clone(), read_only));
            }
        }
        self.event(&format!("Creating container for {app}")).await;
        let id = format!(
            "{app}-{}",
            self.inner.launches.fetch_add(1, Ordering::Relaxed) + 1
        );
        self.event(&format!("Created container with Id {id} for {app}"))
            .await;
        self.event(&format!("Starting execution of {app} container"))
            .await;
        let spec = slot.spec.clone();
        let started = SystemTime::now();
        if let Err(e) = blocking(&self.inner.runner, move |r| r.start(&spec, &mounts)).await {
            self.event(&format!("Failed to start {app}: {e}")).await;
            return Err(StartError::Runner(e));
        }
        slot.outcome.send_replace(None);
        if let Some(previous) = launch.take() {
            previous.abort();
        }
        let supervisor = self.clone();
        let name = app.to_owned();
        *launch = Some(tokio::spawn(async move {
            supervisor.supervise(&name, started).await;
        }));
        Ok(())
    }

    /// `app`'s state (`None`: never started), and the reference's status event.
    pub async fn status(&self, app: &str) -> Result<Option<AppState>, RunnerError> {
        let name = app.to_owned();
        let state = blocking(&self.inner.runner, move |r| r.status(&name)).await?;
        if let Some(state) = state {
            let (status, code) = match state {
                AppState::Running => ("running", "None".to_owned()),
                AppState::Exited(code) => ("exited", code.to_string()),
            };
            self.event(&format!(
                "{app} container status: {status}, exit code: {code}"
            ))
            .await;
        }
        Ok(state)
    }

    /// Exports the logs or the telemetry after its consent check.
    pub async fn export(&self, export: Export) -> Result<u64, ExportError> {
        let started = SystemTime::now();
        let copied = self.export_unrecorded(export).await;
        let mut attributes: Attributes = vec![("encfs.export", export.directory().into())];
        if let Ok(bytes) = &copied {
            attributes.push((
                "encfs.export.bytes",
                i64::try_from(*bytes).unwrap_or(i64::MAX).into(),
            ));
        }
        self.inner.telemetry.span(&Span {
            name: "telemetry.export",
            start: started,
            end: SystemTime::now(),
            error: copied.as_ref().err().map(ToString::to_string),
            attributes,
        });
        copied
    }

    async fn export_unrecorded(&self, export: Export) -> Result<u64, ExportError> {
        let option = export.option();
        match self.inner.governance.consent(option).await {
            Ok(status) if status == "enabled" => {}
            Ok(status) => {
                return Err(ExportError::ConsentDenied {
                    option: option.name(),
                    status,
                });
            }
            Err(source) => {
                return Err(ExportError::ConsentUnavailable {
                    option: option.name(),
                    source,
                });
            }
        }
        let config = &self.inner.config;
        let mount = volumes::wait_for_mount(
            &config.volume_status_dir,
            export.access(),
            config.mount_wait,
        )
        .await
        .map_err(ExportError::Mount)?;
        let from = config.telemetry_dir.join(export.directory());
        tokio::task::spawn_blocking(move || super::export::copy_tree(&from, &mount))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|copied| copied)
            .map_err(|source| ExportError::Copy {
                what: export.directory(),
                access: export.access(),
                source,
            })
    }

    /// Waits until the current run of `app` ended and its exit work (event, log export) is
    /// done; `None` for an unknown app.
    pub async fn outcome(&self, app: &str) -> Option<AppOutcome> {
        let mut outcome = self.inner.apps.get(app)?.outcome.subscribe();
        let ended = outcome.wait_for(Option::is_some).await.ok()?;
        ended.clone()
    }

    /// Starts the auto-start apps (after the execution consent check); a failure is logged and
    /// sent as an event, as the reference does.
    pub async fn boot(&self) {
        let auto: Vec<String> = self
            .inner
            .apps
            .values()
            .filter(|slot| slot.spec.auto_start())
            .map(|slot| slot.spec.name.clone())
            .collect();
        for app in auto {
            if let Err(e) = self.start(&app).await {
                eprintln!("encfs code launcher: auto-start of {app} failed: {e}");
                self.event(&format!("Failed to start {app}: {e}")).await;
            }
        }
    }

    /// Stops every supervisor and every app still running.
    pub async fn stop_all(&self) {
        for (name, slot) in &self.inner.apps {
            if let Some(supervisor) = slot.launch.lock().await.take() {
                supervisor.abort();
            }
            let app = name.clone();
            if let Ok(Some(AppState::Running)) =
                blocking(&self.inner.runner, move |r| r.status(&app)).await
            {
                let app = name.clone();
                if let Err(e) = blocking(&self.inner.runner, move |r| r.stop(&app)).await {
                    eprintln!("encfs code launcher: cannot stop {name}: {e}");
                }
            }
        }
    }

    /// Serves the API on `listener` (auto-start apps start in the background) until `shutdown`
    /// completes, then stops the apps.
    pub async fn serve_on(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), LauncherError> {
        let booting = self.clone();
        let boot = tokio::spawn(async move { booting.boot().await });
        let served = axum::serve(listener, super::api::router(self.clone()))
            .with_graceful_shutdown(shutdown)
            .await;
        boot.abort();
        self.stop_all().await;
        served.map_err(LauncherError::Serve)
    }

    /// One run's supervisor: consent watch, exit, exit event, the run's span and metrics, log
    /// export.
    async fn supervise(&self, app: &str, started: SystemTime) {
        let Some(slot) = self.inner.apps.get(app) else {
            return;
        };
        let mut stopped_for_consent = false;
        loop {
            tokio::time::sleep(self.inner.config.consent_poll).await;
            let name = app.to_owned();
            match blocking(&self.inner.runner, move |r| r.status(&name)).await {
                Ok(Some(AppState::Exited(exit_code))) => {
                    self.event(&format!(
                        "{app} container status: exited, exit code: {exit_code}"
                    ))
                    .await;
                    self.record_run(app, started, exit_code, stopped_for_consent);
                    let logs_exported = self.export_after_exit(app).await;
                    slot.outcome.send_replace(Some(AppOutcome {
                        exit_code,
                        stopped_for_consent,
                        logs_exported,
                    }));
                    return;
                }
                Ok(_) => {}
                Err(e) => eprintln!("encfs code launcher: status of {app}: {e}"),
            }
            if stopped_for_consent {
                continue;
            }
            match self
                .inner
                .governance
                .consent(ConsentOption::Execution)
                .await
            {
                Ok(status) if status == "enabled" => {}
                Ok(status) => {
                    let name = app.to_owned();
                    let stopped = blocking(&self.inner.runner, move |r| r.stop(&name)).await;
                    stopped_for_consent = true;
                    let message = match stopped {
                        Ok(()) => format!(
                            "Execution consent for {app} was revoked (status: '{status}'); the application was stopped."
                        ),
                        Err(e) => format!(
                            "Execution consent for {app} was revoked (status: '{status}'); stopping the application failed: {e}"
                        ),
                    };
                    eprintln!("encfs code launcher: {message}");
                    self.event(&message).await;
                }
                Err(e) => eprintln!("encfs code launcher: {e} (the app runs on; retrying)"),
            }
        }
    }

    /// The span of one application run (start to exit) and its gauges.
    fn record_run(&self, app: &str, started: SystemTime, exit_code: i32, stopped: bool) {
        let attributes = || -> Attributes {
            vec![
                ("encfs.application", app.to_owned().into()),
                ("encfs.exit_code", i64::from(exit_code).into()),
                ("encfs.stopped_for_consent", stopped.into()),
            ]
        };
        let ended = SystemTime::now();
        let telemetry = &self.inner.telemetry;
        telemetry.span(&Span {
            name: "application.run",
            start: started,
            end: ended,
            error: (exit_code != 0).then(|| format!("{app} exited with code {exit_code}")),
            attributes: attributes(),
        });
        let seconds = ended
            .duration_since(started)
            .unwrap_or_default()
            .as_secs_f64();
        telemetry.gauges(&[
            ("encfs.application.duration", "s", seconds, attributes()),
            (
                "encfs.application.exit_code",
                "1",
                f64::from(exit_code),
                attributes(),
            ),
        ]);
    }

    /// The automatic export after an exit: only with logging enabled; never an error.
    async fn export_after_exit(&self, app: &str) -> bool {
        match self.export(Export::Logs).await {
            Ok(_) => {
                self.event(&format!(
                    "Exported the logs of {app} to {APPLICATION_TELEMETRY} after it exited"
                ))
                .await;
                true
            }
            Err(ExportError::ConsentDenied { .. }) => false,
            Err(e) => {
                eprintln!("encfs code launcher: log export after {app} exited failed: {e}");
                self.event(&format!("Exporting the logs of {app} failed: {e}"))
                    .await;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The start and supervision logic against an in-process fake of the governance sidecar's
    //! consent route and an in-memory runner (the real chain is `tests/launcher.rs`).

    use std::collections::HashMap;
    use std::sync::Mutex as StdMutex;
    use std::time::Duration;

    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use serde_json::json;

    use super::*;

    /// Consent answers by option: `Some(status)` or `None` for a failing check (500).
    type Answers = Arc<StdMutex<HashMap<String, Option<String>>>>;

    async fn consent(
        State(answers): State<Answers>,
        Path(option): Path<String>,
    ) -> axum::response::Response {
        let answer = answers.lock().unwrap().get(&option).cloned().flatten();
        match answer {
            Some(status) => axum::Json(json!({ "status": status })).into_response(),
            None => (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"error": {"code": "Boom", "message": "governance is down"}})),
            )
                .into_response(),
        }
    }

    async fn fake_sidecar(answers: Answers) -> String {
        let router = axum::Router::new()
            .route("/consentcheck/{option}", axum::routing::post(consent))
            .route("/events", axum::routing::put(|| async { StatusCode::OK }))
            .with_state(answers);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        url
    }

    #[derive(Default)]
    struct MemoryRunner {
        states: StdMutex<HashMap<String, AppState>>,
        started_with: StdMutex<Vec<Vec<(String, String, bool)>>>,
    }

    impl AppRunner for MemoryRunner {
        fn start(
            &self,
            app: &Application,
            mounts: &[(String, String, bool)],
        ) -> Result<(), RunnerError> {
            self.started_with.lock().unwrap().push(mounts.to_vec());
            self.states
                .lock()
                .unwrap()
                .insert(app.name.clone(), AppState::Running);
            Ok(())
        }
        fn status(&self, app: &str) -> Result<Option<AppState>, RunnerError> {
            Ok(self.states.lock().unwrap().get(app).copied())
        }
        fn stop(&self, app: &str) -> Result<(), RunnerError> {
            if let Some(state) = self.states.lock().unwrap().get_mut(app) {
                *state = AppState::Exited(137);
            }
            Ok(())
        }
    }

    fn app(name: &str) -> Application {
        serde_json::from_value(json!({
            "name": name,
            "image": {"executable": {"documentType": "OCI", "backingResource":
                {"name": name, "type": "AzureContainerRegistry", "id": "img"}}},
            "command": ["true"],
            "datasources": {"in": "/mnt/in"},
            "datasinks": {"out": "/mnt/out"},
        }))
        .unwrap()
    }

    fn set(answers: &Answers, option: &str, status: Option<&str>) {
        answers
            .lock()
            .unwrap()
            .insert(option.into(), status.map(str::to_owned));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn starts_fail_closed_and_a_failing_check_does_not_stop_a_run() {
        let dir = tempfile::tempdir().unwrap();
        let status_dir = dir.path().join("status");
        std::fs::create_dir_all(&status_dir).unwrap();
        for access in ["in", "out"] {
            std::fs::write(
                status_dir.join(format!("{access}.volume.ready")),
                json!({"mount_path": format!("/host/{access}")}).to_string(),
            )
            .unwrap();
        }
        let answers: Answers = Arc::default();
        let mut config =
            LauncherConfig::new(vec![app("a")], dir.path().join("telemetry"), status_dir);
        config.governance = fake_sidecar(answers.clone()).await;
        config.consent_poll = Duration::from_millis(50);
        let runner = Arc::new(MemoryRunner::default());
        let launcher = Launcher::new(config, runner.clone()).unwrap();
        assert!(dir.path().join("telemetry/application").is_dir());

        // The check itself fails: no start.
        set(&answers, "execution", None);
        let error = launcher.start("a").await.unwrap_err();
        assert!(
            matches!(error, StartError::ConsentUnavailable(_)),
            "{error}"
        );
        assert_eq!(super::super::api::start_error(&error).status(), 403);
        assert_eq!(runner.status("a").unwrap(), None);

        // Enabled: started with the datasource read-only and the datasink read-write.
        set(&answers, "execution", Some("enabled"));
        launcher.start("a").await.unwrap();
        assert_eq!(
            runner.started_with.lock().unwrap()[0],
            vec![
                ("/host/in".to_owned(), "/mnt/in".to_owned(), true),
                ("/host/out".to_owned(), "/mnt/out".to_owned(), false),
            ]
        );
        // A second start while it runs leaves it alone.
        launcher.start("a").await.unwrap();
        assert_eq!(runner.started_with.lock().unwrap().len(), 1);

        // Governance unreachable for a while: the run goes on.
        set(&answers, "execution", None);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(runner.status("a").unwrap(), Some(AppState::Running));
        // Revoked: stopped; logging is not enabled, so no export.
        set(&answers, "execution", Some("disabled"));
        set(&answers, "logging", Some("disabled"));
        let outcome = tokio::time::timeout(Duration::from_secs(5), launcher.outcome("a"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            outcome,
            AppOutcome {
                exit_code: 137,
                stopped_for_consent: true,
                logs_exported: false
            }
        );
        assert!(launcher.outcome("nobody").await.is_none());
    }

    #[test]
    fn configurations_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let base = LauncherConfig::new(vec![app("a")], dir.path().join("t"), dir.path().join("s"));
        let runner: Arc<dyn AppRunner> = Arc::new(MemoryRunner::default());
        let refused = |config: LauncherConfig| {
            Launcher::new(config, runner.clone())
                .unwrap_err()
                .to_string()
        };
        let mut twice = base.clone();
        twice.applications.push(app("a"));
        assert!(refused(twice).contains("appears twice"));
        let mut bad_name = base.clone();
        bad_name.applications = vec![app("../x")];
        assert!(refused(bad_name).contains("is not a name"));
        let mut open = base.clone();
        open.listen = "0.0.0.0:8200".parse().unwrap();
        assert!(refused(open).contains("loopback"));
        let mut slow = base.clone();
        slow.consent_poll = Duration::from_secs(2);
        assert!(refused(slow).contains("consent poll"));
        let mut remote = base.clone();
        remote.governance = "http://governance.example:8300".into();
        assert!(refused(remote).contains("loopback"));
        assert!(Launcher::new(base, runner.clone()).is_ok());
    }
}
