//! `encfs cleanroom code-launcher`: what an application's container runs (ref §6). It decodes
//! the application from its command line (the policy covers that argument, so the application
//! is exactly what the contract says), serves the code launcher API, and runs the application
//! in a sandbox as uid 1000 once the execution consent check passes.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use encfs_cleanroom::launcher::{Launcher, LauncherConfig};
use encfs_cleanroom::sandbox_runner::SandboxRunner;
use encfs_cleanroom::spec::Application;

use crate::cleanroom_args::{CodeLauncherArgs, SandboxArgs};

/// The application's user and group (the reference's podman `user="1000"`).
const APPLICATION_USER: u32 = 1000;

/// Runs the code launcher until SIGTERM / Ctrl-C, which stops the application.
pub fn run(args: &CodeLauncherArgs) -> Result<()> {
    let json = STANDARD
        .decode(args.application_base_64.as_bytes())
        .context("--application-base-64 is not base64")?;
    let application: Application = serde_json::from_slice(&json)
        .context("--application-base-64 is not an application (the spec's Application JSON)")?;
    if application.name != args.application_name {
        bail!(
            "--application-name {} does not match the application's name {}",
            args.application_name,
            application.name
        );
    }
    let telemetry = args
        .telemetry_dir
        .clone()
        .or_else(|| std::env::var_os("TELEMETRY_MOUNT_PATH").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/mnt/telemetry"));
    let volume_status = super::cleanroom::volume_status_dir(args.volume_status_dir.as_deref());
    let mut config = LauncherConfig::new(vec![application], telemetry.clone(), volume_status);
    config.listen = args.listen;
    config.governance = format!("http://127.0.0.1:{}", args.governance_port);
    config.governance_events = std::env::var_os("DISABLE_GOV_EVENTS").is_none();
    let sandbox_dir = match &args.sandbox_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("encfs-sandbox-{}", std::process::id())),
    };
    std::fs::create_dir_all(&sandbox_dir)
        .with_context(|| format!("cannot create {}", sandbox_dir.display()))?;
    let runner = Arc::new(SandboxRunner::new(
        sandbox_dir,
        telemetry.join("application"),
        APPLICATION_USER,
        APPLICATION_USER,
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let exit_file = config
        .volume_status_dir
        .join(format!("{}{EXIT_SUFFIX}", args.application_name));
    let listen = config.listen;
    rt.block_on(async move {
        let launcher = Launcher::new(config, runner)
            .with_context(|| format!("code launcher of {}", args.application_name))?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("the code launcher cannot listen on {listen}"))?;
        eprintln!(
            "encfs cleanroom code-launcher: {} on http://{listen}",
            args.application_name
        );
        tokio::spawn(report_outcomes(
            launcher.clone(),
            args.application_name.clone(),
            exit_file,
        ));
        launcher
            .serve_on(listener, async {
                let _ = super::governance::until_stopped().await;
            })
            .await
            .with_context(|| format!("code launcher of {}", args.application_name))
    })
}

/// The file (in the volume status directory) where the code launcher records how each run of
/// an application ended, once its exit work (events, log export) is done: what the local
/// platform waits on (the reference's platform watches the container instead).
pub const EXIT_SUFFIX: &str = ".application.exited";

/// Writes `{exit_code, stopped_for_consent, logs_exported}` to `path` each time a run of `app`
/// ends.
async fn report_outcomes(launcher: Launcher, app: String, path: PathBuf) {
    let mut last = String::new();
    loop {
        let Some(outcome) = launcher.outcome(&app).await else {
            return;
        };
        let value = serde_json::json!({
            "exit_code": outcome.exit_code,
            "stopped_for_consent": outcome.stopped_for_consent,
            "logs_exported": outcome.logs_exported,
        });
        let text = value.to_string();
        if text != last {
            if let Err(error) = super::mount::write_json(&path, &value) {
                eprintln!("encfs cleanroom code-launcher: {error:#}");
            }
            last = text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `encfs cleanroom sandbox`: one command in the application sandbox; prints its output (the
/// json-file log decoded) when it exits and returns its exit code.
pub fn sandbox(args: &SandboxArgs) -> Result<()> {
    use encfs_cleanroom::sandbox::{Bind, Limits, Sandbox, SandboxSpec};
    let mut binds = Vec::new();
    for bind in &args.binds {
        let parts: Vec<&str> = bind.split(':').collect();
        let (source, target, read_only) = match parts.as_slice() {
            [source, target] => (source, target, false),
            [source, target, "ro"] => (source, target, true),
            _ => bail!("--bind {bind}: expected HOST:INSIDE or HOST:INSIDE:ro"),
        };
        let source = std::path::absolute(source)
            .with_context(|| format!("--bind {bind}: cannot resolve {source}"))?;
        binds.push(Bind {
            source,
            target: PathBuf::from(target),
            read_only,
        });
    }
    let mut env = Vec::new();
    for pair in &args.env {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--env {pair}: expected KEY=VALUE"))?;
        env.push((key.to_owned(), value.to_owned()));
    }
    let scratch = tempfile::Builder::new()
        .prefix("encfs-sandbox-")
        .tempdir()
        .context("cannot create the sandbox's directory")?;
    let log_file = scratch.path().join("output.log");
    let spec = SandboxSpec {
        name: "sandbox".into(),
        command: args.command.clone(),
        env,
        binds,
        uid: args.uid,
        gid: args.uid,
        limits: Limits {
            memory_bytes: args.memory.map(|gib| (gib * f64::from(1u32 << 30)) as u64),
            cpu_millicores: args.cpu.map(|cores| (cores * 1000.0).ceil() as u32),
            pids: Some(encfs_cleanroom::sandbox_runner::DEFAULT_PIDS),
            ..Limits::default()
        },
        log_file: log_file.clone(),
        work_dir: scratch.path().join("root"),
    };
    let mut sandbox = Sandbox::spawn(spec).context("cannot start the sandbox")?;
    let code = sandbox.wait().context("the sandbox failed")?;
    drop(sandbox);
    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
    for line in log.lines() {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let text = entry["log"].as_str().unwrap_or_default();
        if entry["stream"] == "stderr" {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
    }
    if code != 0 {
        return Err(super::ExitWith(code).into());
    }
    Ok(())
}
