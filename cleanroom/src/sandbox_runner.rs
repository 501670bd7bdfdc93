//! The code launcher's application runner on this machine: each application runs in its own
//! [`Sandbox`] (namespaces, its own root, cgroup limits, the application's user), with the
//! datasource and datasink mounts bound at the paths the spec gives and its output appended to
//! `<telemetry>/application/<app>.log`. The spec's resource requests become the sandbox's
//! limits (the reference's container gets them as ACI resources).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::launcher::{AppRunner, AppState, RunnerError};
use crate::sandbox::{Bind, Limits, Sandbox, SandboxSpec};
use crate::spec::Application;

/// Processes an application may have at once (the spec has no such setting).
pub const DEFAULT_PIDS: u32 = 512;

/// An application's sandbox, or how it ended.
enum Entry {
    Running(Box<Sandbox>),
    Exited(i32),
}

/// Runs applications in sandboxes; see the module documentation.
pub struct SandboxRunner {
    work_dir: PathBuf,
    log_dir: PathBuf,
    uid: u32,
    gid: u32,
    apps: Mutex<BTreeMap<String, Entry>>,
}

impl SandboxRunner {
    /// A runner whose sandboxes keep their roots under `work_dir` and whose applications log to
    /// `log_dir/<app>.log`, run as `uid`:`gid`.
    pub fn new(work_dir: PathBuf, log_dir: PathBuf, uid: u32, gid: u32) -> Self {
        Self {
            work_dir,
            log_dir,
            uid,
            gid,
            apps: Mutex::new(BTreeMap::new()),
        }
    }

    /// The sandbox of `app` as the spec describes it.
    pub fn spec_for(&self, app: &Application, mounts: &[(String, String, bool)]) -> SandboxSpec {
        let requests = &app.runtime_settings.resource.requests;
        let memory = (requests.memory_in_gb > 0.0)
            .then(|| (requests.memory_in_gb * f64::from(1u32 << 30)) as u64);
        let cpu = (requests.cpu > 0.0).then(|| (requests.cpu * 1000.0).ceil() as u32);
        SandboxSpec {
            name: app.name.clone(),
            command: app.command.clone(),
            env: app
                .environment_variables
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            binds: mounts
                .iter()
                .map(|(source, target, read_only)| Bind {
                    source: PathBuf::from(source),
                    target: PathBuf::from(target),
                    read_only: *read_only,
                })
                .collect(),
            uid: self.uid,
            gid: self.gid,
            limits: Limits {
                memory_bytes: memory,
                cpu_millicores: cpu,
                pids: Some(DEFAULT_PIDS),
                ..Limits::default()
            },
            log_file: self.log_dir.join(format!("{}.log", app.name)),
            work_dir: self.work_dir.join(&app.name),
        }
    }

    fn apps(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.apps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn failed(app: &str, what: &str, error: impl std::fmt::Display) -> RunnerError {
    RunnerError(format!("cannot {what} application '{app}': {error}"))
}

impl AppRunner for SandboxRunner {
    fn start(
        &self,
        app: &Application,
        mounts: &[(String, String, bool)],
    ) -> Result<(), RunnerError> {
        let mut apps = self.apps();
        if let Some(Entry::Running(_)) = apps.get(&app.name) {
            return Err(RunnerError(format!(
                "application '{}' already runs",
                app.name
            )));
        }
        // A finished run's sandbox is gone; its root directory is made afresh.
        apps.remove(&app.name);
        let sandbox = Sandbox::spawn(self.spec_for(app, mounts))
            .map_err(|e| failed(&app.name, "start", e))?;
        apps.insert(app.name.clone(), Entry::Running(Box::new(sandbox)));
        Ok(())
    }

    fn status(&self, app: &str) -> Result<Option<AppState>, RunnerError> {
        let mut apps = self.apps();
        let Some(entry) = apps.get_mut(app) else {
            return Ok(None);
        };
        let code = match entry {
            Entry::Exited(code) => return Ok(Some(AppState::Exited(*code))),
            Entry::Running(sandbox) => sandbox.try_wait().map_err(|e| failed(app, "watch", e))?,
        };
        Ok(Some(match code {
            Some(code) => {
                *entry = Entry::Exited(code);
                AppState::Exited(code)
            }
            None => AppState::Running,
        }))
    }

    fn stop(&self, app: &str) -> Result<(), RunnerError> {
        let mut apps = self.apps();
        if let Some(entry) = apps.get_mut(app)
            && let Entry::Running(sandbox) = entry
        {
            sandbox.kill().map_err(|e| failed(app, "stop", e))?;
            let code = sandbox.wait().map_err(|e| failed(app, "reap", e))?;
            *entry = Entry::Exited(code);
        }
        Ok(())
    }
}
