//! `encfs cleanroom run | status | wait | stop | code-launcher`: the local clean room. `run`
//! checks the ARM template against what the consortium accepted (the template is the contract's
//! deployment spec; the SHA-256 of its security policy is a hostdata of the accepted clean-room
//! policy), evaluates every container of the template against that policy, then plays the
//! container platform: it starts each container's `encfs` command as a process on this machine
//! (sidecars, one mount launcher per access point, the code launcher), waits for the
//! applications, and stops everything in reverse order. The platform's own parts (the SNP
//! hardware and MAA, the managed identity, the CA bundle) are the flags of `run`.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use encfs_cleanroom::deployment::{ContainerDefinition, DeploymentPlan};
use encfs_cleanroom::otel::{self, LogRecord, Severity, Span, Telemetry};
use encfs_cleanroom::policy::{self, SecurityPolicy};
use serde_json::{Value, json};

use super::mount::{read_json, write_json};
use crate::cleanroom_args::{CleanroomCommand, RunArgs};

/// The reference's sidecar ports inside a container group (ref §5, §6, §11).
const GROUP_PORTS: [u16; 5] = [8200, 8284, 8290, 8300, 9300];
/// The group's paths (ref §8) and where they are in the clean room's data directory.
const GROUP_PATHS: [(&str, &str); 4] = [
    ("/mnt/remote", "remote"),
    ("/mnt/telemetry", "telemetry"),
    ("/mnt/volumestatus", "volumestatus"),
    ("/mnt/config", "config"),
];
/// The clean room's state file in its data directory.
const STATE_FILE: &str = "cleanroom.json";
/// Its result, once it has finished.
const RESULT_FILE: &str = "result.json";
/// How long a sidecar may take to listen, and a mount to be ready.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The application's exit code, as the exit code of `run` and `wait`.
#[derive(Debug)]
pub struct ExitWith(pub i32);

impl std::fmt::Display for ExitWith {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the application exited with code {}", self.0)
    }
}

impl std::error::Error for ExitWith {}

/// Runs `run`, `status`, `wait`, `stop` and `code-launcher`.
pub fn run(command: CleanroomCommand) -> Result<()> {
    match command {
        CleanroomCommand::Run(args) => run_cleanroom(&args),
        CleanroomCommand::Status { data } => status(&data),
        CleanroomCommand::Wait { data, timeout } => wait(&data, timeout),
        CleanroomCommand::Stop { data } => stop(&data),
        CleanroomCommand::CodeLauncher(args) => super::code_launcher::run(&args),
        CleanroomCommand::Sandbox(args) => super::code_launcher::sandbox(&args),
        CleanroomCommand::MountLauncher(_) => unreachable!("dispatched by the cleanroom module"),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn say(verbose: bool, text: impl AsRef<str>) {
    if verbose {
        eprintln!("encfs cleanroom: {}", text.as_ref());
    }
}

// ---------------------------------------------------------------------------------------------
// What the consortium accepted

/// Checks that `template` is the contract's accepted deployment spec and that its security
/// policy's hostdata is in the accepted clean-room policy; returns the plan.
fn accepted_plan(args: &RunArgs, template: &Value) -> Result<DeploymentPlan> {
    let client = super::governance::open_client(&args.client)?;
    let (spec, policy) = runtime()?
        .block_on(async {
            let spec = client.deployment_spec(&args.contract_id).await?;
            let policy = client.clean_room_policy(&args.contract_id).await?;
            Ok::<_, encfs_governance::client::ClientError>((spec, policy))
        })
        .with_context(|| {
            format!(
                "cannot read contract {}'s deployment from governance ({})",
                args.contract_id,
                client.endpoint()
            )
        })?;
    if spec.get("data") != Some(template) {
        bail!(
            "the template {} is not the deployment spec accepted for contract {}: nothing was started",
            args.template.display(),
            args.contract_id
        );
    }
    let plan = encfs_cleanroom::deployment::plan(template)
        .with_context(|| format!("the template {}", args.template.display()))?;
    if plan.contract_id != args.contract_id {
        bail!(
            "the template {} is for contract {}, not {}",
            args.template.display(),
            plan.contract_id,
            args.contract_id
        );
    }
    let hostdata = policy::hostdata(&plan.rego);
    let accepted: Vec<&str> = policy["policy"]["x-ms-sevsnpvm-hostdata"]
        .as_array()
        .map(|values| values.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !accepted.contains(&hostdata.as_str()) {
        bail!(
            "the security policy of the template {} (hostdata {hostdata}) is not the clean-room policy accepted for contract {} ({}): nothing was started",
            args.template.display(),
            args.contract_id,
            if accepted.is_empty() {
                "no policy accepted".to_owned()
            } else {
                format!("accepted: {}", accepted.join(", "))
            }
        );
    }
    Ok(plan)
}

/// Evaluates every container of the plan against its security policy, as the platform's guest
/// agent does before it creates a container.
fn enforce(plan: &DeploymentPlan) -> Result<()> {
    let policy = SecurityPolicy::parse(&plan.rego).context("the template's security policy")?;
    for container in plan.init_containers.iter().chain(&plan.containers) {
        let definition = &container.definition;
        policy
            .check_container(&definition.policy_request())
            .with_context(|| {
                format!(
                    "the security policy refuses container '{}': nothing was started",
                    definition.name
                )
            })?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The platform: ports, paths, processes

/// The host's stand-ins for the group's fixed ports: the local clean room shares this machine's
/// loopback, so each port the template names moves to a free one (the launcher's to
/// `--launcher-listen`).
fn port_map(launcher: SocketAddr) -> Result<BTreeMap<u16, u16>> {
    let mut map = BTreeMap::new();
    let mut held = Vec::new();
    for port in GROUP_PORTS {
        if port == 8200 && launcher.port() != 0 {
            map.insert(port, launcher.port());
            continue;
        }
        let listener = TcpListener::bind("127.0.0.1:0").context("cannot pick a free port")?;
        map.insert(port, listener.local_addr()?.port());
        held.push(listener);
    }
    Ok(map)
}

/// Rewrites one argument or environment value for this machine: the group's ports to the
/// host's, the group's paths into the data directory.
fn localise(value: &str, ports: &BTreeMap<u16, u16>, data: &Path) -> String {
    // A pinned manifest digest is hex after a colon: `sha256:8284…` is no port.
    if value.starts_with("sha256:") {
        return value.to_owned();
    }
    let mut out = value.to_owned();
    for (group, host) in ports {
        let group_text = group.to_string();
        if out == group_text {
            return host.to_string();
        }
        for prefix in [":", "localhost:"] {
            let from = format!("{prefix}{group}");
            if let Some(at) = out.find(&from) {
                let end = at + from.len();
                let bounded = out[end..]
                    .chars()
                    .next()
                    .is_none_or(|c| !c.is_ascii_digit());
                if bounded {
                    out = format!("{}{prefix}{host}{}", &out[..at], &out[end..]);
                }
            }
        }
    }
    for (group, local) in GROUP_PATHS {
        if out == group || out.starts_with(&format!("{group}/")) {
            return format!("{}{}", data.join(local).display(), &out[group.len()..]);
        }
    }
    out
}

/// What this machine adds to a code launcher's command line: where its API listens on this
/// machine's loopback, the governance sidecar's port there, and where sandboxes keep their
/// roots. (The sidecars find the platform's parts in the config volume, see
/// [`platform_config`].)
fn platform_args(
    container: &ContainerDefinition,
    data: &Path,
    launcher: SocketAddr,
    ports: &BTreeMap<u16, u16>,
) -> Vec<String> {
    let command: Vec<&str> = container.command.iter().map(String::as_str).collect();
    match command.get(1..3) {
        Some(["cleanroom", "code-launcher"]) => vec![
            "--listen".into(),
            launcher.to_string(),
            "--governance-port".into(),
            ports.get(&8300).copied().unwrap_or(8300).to_string(),
            "--sandbox-dir".into(),
            data.join("sandbox").display().to_string(),
        ],
        // Its skr port is a default, not on the template's command line.
        Some(["sidecar", "governance"]) if !container.command.iter().any(|a| a == "--skr") => vec![
            "--skr".into(),
            format!(
                "http://127.0.0.1:{}",
                ports.get(&8284).copied().unwrap_or(8284)
            ),
        ],
        _ => Vec::new(),
    }
}

/// Fills the group's config volume (`/mnt/config`) with the platform's parts, which ACI gives a
/// confidential container group by itself: the attestation authority's CA (its SNP hardware and
/// MAA), the CA bundle the vaults are trusted with, the managed identity's credential (linked,
/// not copied), and the security policy the group declares.
fn platform_config(args: &RunArgs, data: &Path, rego: &str) -> Result<()> {
    let config = data.join("config");
    std::fs::create_dir_all(&config)
        .with_context(|| format!("cannot create {}", config.display()))?;
    let read = |path: &Path| {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let write = |name: &str, text: &str| {
        let path = config.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    write("authority-ca.pem", &read(&args.authority_ca)?)?;
    let mut bundle = String::new();
    for ca in &args.trust_ca {
        bundle.push_str(&read(ca)?);
        if !bundle.ends_with('\n') {
            bundle.push('\n');
        }
    }
    write("vault-ca.pem", &bundle)?;
    write("cleanroom-policy.rego", rego)?;
    let credential = config.join("identity-credential.json");
    let _ = std::fs::remove_file(&credential);
    let target = std::path::absolute(&args.identity_credential)
        .with_context(|| format!("cannot resolve {}", args.identity_credential.display()))?;
    std::os::unix::fs::symlink(&target, &credential)
        .with_context(|| format!("cannot link {}", credential.display()))
}

/// The port a container listens on: its first declared port, else its `--listen` argument's.
fn listen_port(container: &ContainerDefinition) -> Option<u16> {
    container.ports.first().copied().or_else(|| {
        let at = container.command.iter().position(|a| a == "--listen")?;
        let address: SocketAddr = container.command.get(at + 1)?.parse().ok()?;
        Some(address.port())
    })
}

/// One started container: its process and where its output goes.
struct Running {
    name: String,
    child: Child,
    /// The thread that forwards the container's output to its log and to OTLP logs.
    output: std::thread::JoinHandle<()>,
}

/// Every container started so far, stopped in reverse order on drop (SIGTERM, then SIGKILL
/// after a grace period).
struct Group {
    running: Vec<Running>,
}

impl Group {
    fn stop_all(&mut self) {
        while let Some(mut container) = self.running.pop() {
            terminate(&mut container.child, Duration::from_secs(30));
            // Its last lines: the pipe closes once the container (and any process it left
            // holding its output) is gone; a straggler is not waited for long.
            let start = Instant::now();
            while !container.output.is_finished() && start.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(5));
            }
            if container.output.is_finished() {
                let _ = container.output.join();
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn terminate(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let start = Instant::now();
    while start.elapsed() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn wait_listening(port: u16, name: &str, child: &mut Child) -> Result<()> {
    let start = Instant::now();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("container '{name}' exited with {status} before it listened on {address}");
        }
        if start.elapsed() > START_TIMEOUT {
            bail!("container '{name}' did not listen on {address} within {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_volume(status_dir: &Path, access: &str, name: &str, child: &mut Child) -> Result<()> {
    let ready = status_dir.join(format!("{access}.volume.ready"));
    let failed = status_dir.join(format!("{access}.volume.error"));
    let start = Instant::now();
    loop {
        if ready.exists() {
            return Ok(());
        }
        if failed.exists() || child.try_wait()?.is_some() {
            let reason = read_json(&failed)
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "the mount launcher exited".into());
            bail!("access point '{access}' (container '{name}') did not mount: {reason}");
        }
        if start.elapsed() > START_TIMEOUT {
            bail!("access point '{access}' was not mounted within {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The access name a mount launcher's command line names.
fn access_name_of(command: &[String]) -> Option<&str> {
    command
        .iter()
        .position(|a| a == "--access-name")
        .and_then(|i| command.get(i + 1))
        .map(String::as_str)
}

/// Copies a container's output, line by line, into its plain log file and, as OTLP log
/// records of that container (secrets in URLs redacted), into the clean room's telemetry: the
/// local stand-in for the reference's otel-collector reading the containers' logs.
fn forward_output(output: std::io::PipeReader, mut log: File, telemetry: Telemetry) {
    use std::io::{BufRead, Write};
    let mut output = std::io::BufReader::new(output);
    let mut line = Vec::new();
    loop {
        line.clear();
        match output.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let _ = log.write_all(&line);
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        if text.is_empty() {
            continue;
        }
        let body = encfs_store::redact::redact(text);
        telemetry.logs(&[LogRecord {
            time: SystemTime::now(),
            severity: Severity::of_line(&body),
            body,
        }]);
    }
}

fn start_container(
    container: &ContainerDefinition,
    args: &RunArgs,
    data: &Path,
    ports: &BTreeMap<u16, u16>,
    telemetry: &Telemetry,
) -> Result<(Child, std::thread::JoinHandle<()>)> {
    let launcher = SocketAddr::new(args.launcher_listen.ip(), ports[&8200]);
    let Some((program, rest)) = container.command.split_first() else {
        bail!("container '{}' has no command", container.name);
    };
    if program != "encfs" {
        bail!(
            "container '{}' runs '{program}': the local clean room runs only encfs containers (an application runs inside the code launcher's sandbox)",
            container.name
        );
    }
    let exe = std::env::current_exe().context("cannot find the encfs executable")?;
    let log_path = data
        .join("telemetry/infrastructure")
        .join(format!("{}.log", container.name));
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let (output, writer) =
        std::io::pipe().context("cannot create a pipe for a container's output")?;
    let mut command = std::process::Command::new(exe);
    command
        .args(rest.iter().map(|a| localise(a, ports, data)))
        .args(platform_args(container, data, launcher, ports))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(otel::TELEMETRY_ENV, data.join("telemetry"))
        .env(otel::TRACEPARENT_ENV, telemetry.context().traceparent())
        .env("VOLUMESTATUS_MOUNT_PATH", data.join("volumestatus"))
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    for (key, value) in &container.env {
        command.env(key, localise(value, ports, data));
    }
    // Its own process group: a Ctrl-C at the terminal reaches `run`, which stops the group in
    // order, not every container at once.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let child = command
        .spawn()
        .with_context(|| format!("cannot start container '{}'", container.name))?;
    // The command holds the pipe's writing ends: without it, the pipe closes when the
    // container's processes are gone.
    drop(command);
    let own = Telemetry::new(
        &data.join("telemetry/infrastructure"),
        &container.name,
        telemetry.context(),
    );
    let forward = std::thread::Builder::new()
        .name(format!("log-{}", container.name))
        .spawn(move || forward_output(output, log, own))
        .context("cannot start a log thread")?;
    Ok((child, forward))
}

// ---------------------------------------------------------------------------------------------
// run

fn run_cleanroom(args: &RunArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.template)
        .with_context(|| format!("cannot read the template {}", args.template.display()))?;
    let template: Value = serde_json::from_str(&text)
        .with_context(|| format!("the template {} is not JSON", args.template.display()))?;
    let started = Instant::now();
    let wall_start = SystemTime::now();
    let plan = accepted_plan(args, &template)?;
    say(
        args.verbose,
        format!(
            "template {} is contract {}'s accepted deployment; policy hostdata {}",
            args.template.display(),
            args.contract_id,
            policy::hostdata(&plan.rego)
        ),
    );
    enforce(&plan)?;
    let checked = SystemTime::now();
    say(
        args.verbose,
        format!(
            "the security policy admits all {} containers",
            plan.containers.len() + plan.init_containers.len()
        ),
    );

    let data = std::path::absolute(&args.data)
        .with_context(|| format!("cannot resolve {}", args.data.display()))?;
    let state_path = data.join(STATE_FILE);
    if let Ok(text) = std::fs::read_to_string(&state_path)
        && let Some(pid) = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["pid"].as_u64())
        && super::governance::alive(pid)
    {
        bail!(
            "a clean room already runs on {} (pid {pid})",
            data.display()
        );
    }
    for dir in [
        "remote",
        "telemetry/application",
        "telemetry/infrastructure",
        "volumestatus",
        "sandbox",
    ] {
        let path = data.join(dir);
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
    }
    // One trace for the whole clean room: this run is its root span, every container's spans
    // are its children (TRACEPARENT).
    let (context, root) = otel::TraceContext::new_root();
    let telemetry = Telemetry::new(
        &data.join("telemetry/infrastructure"),
        "cleanroom-platform",
        context,
    );
    let contract = || ("encfs.contract_id", args.contract_id.clone().into());
    telemetry.span(&Span {
        name: "cleanroom.policy_check",
        start: wall_start,
        end: checked,
        error: None,
        attributes: vec![
            contract(),
            ("encfs.hostdata", policy::hostdata(&plan.rego).into()),
            (
                "encfs.containers",
                ((plan.containers.len() + plan.init_containers.len()) as i64).into(),
            ),
        ],
    });
    let _ = std::fs::remove_file(data.join(RESULT_FILE));
    for app in plan.applications() {
        let _ = std::fs::remove_file(data.join("volumestatus").join(format!(
            "{}{}",
            app.name,
            super::code_launcher::EXIT_SUFFIX
        )));
    }
    platform_config(args, &data, &plan.rego)?;
    let ports = port_map(args.launcher_listen)?;
    let launcher_url = format!("http://{}:{}", args.launcher_listen.ip(), ports[&8200]);
    write_json(
        &state_path,
        &json!({
            "state": "starting",
            "pid": std::process::id(),
            "contract_id": args.contract_id,
            "launcher": launcher_url,
            "applications": plan.applications().map(|a| &a.name).collect::<Vec<_>>(),
        }),
    )?;

    let mut group = Group {
        running: Vec::new(),
    };
    let outcome = start_and_wait(args, &plan, &data, &ports, &mut group, started, &telemetry);
    say(args.verbose, "stopping the clean room");
    group.stop_all();
    let code = match &outcome {
        Ok(code) => *code,
        Err(_) => 1,
    };
    let mut result = json!({"state": "finished", "exit_code": code});
    if let Err(error) = &outcome {
        result["error"] = json!(encfs_store::redact::redact(&format!("{error:#}")));
    }
    telemetry.span_with_id(
        &Span {
            name: "cleanroom.run",
            start: wall_start,
            end: SystemTime::now(),
            error: result["error"].as_str().map(str::to_owned),
            attributes: vec![contract(), ("encfs.exit_code", i64::from(code).into())],
        },
        Some(root),
    );
    write_json(&data.join(RESULT_FILE), &result)?;
    let _ = std::fs::remove_file(&state_path);
    let code = outcome?;
    if code != 0 {
        return Err(ExitWith(code).into());
    }
    Ok(())
}

/// Starts the containers in the template's order (sidecars first, then the mounts, then the
/// code launchers), waits for the applications, returns the first non-zero exit code (0 if all
/// succeeded).
fn start_and_wait(
    args: &RunArgs,
    plan: &DeploymentPlan,
    data: &Path,
    ports: &BTreeMap<u16, u16>,
    group: &mut Group,
    started: Instant,
    telemetry: &Telemetry,
) -> Result<i32> {
    let status_dir = data.join("volumestatus");
    let definitions: Vec<&ContainerDefinition> =
        plan.containers.iter().map(|c| &c.definition).collect();
    let of_kind = |word: usize, kind: &str| {
        definitions
            .iter()
            .copied()
            .filter(|c| c.command.get(word).map(String::as_str) == Some(kind))
            .collect::<Vec<_>>()
    };
    // Sidecars in the order they depend on each other (skr needs the identity, secrets needs
    // skr, governance needs skr's attestation), then the mounts, then the code launchers.
    let mut ordered = Vec::new();
    for sidecar in ["identity", "skr", "secrets", "governance"] {
        ordered.extend(of_kind(2, sidecar));
    }
    let others: Vec<_> = of_kind(1, "sidecar")
        .into_iter()
        .filter(|c| {
            !ordered
                .iter()
                .any(|o: &&ContainerDefinition| o.name == c.name)
        })
        .collect();
    ordered.extend(others);
    ordered.extend(of_kind(2, "mount-launcher"));
    ordered.extend(of_kind(2, "code-launcher"));
    for container in definitions {
        if !ordered.iter().any(|c| c.name == container.name) {
            bail!(
                "container '{}' runs {:?}, which the local clean room does not know how to run",
                container.name,
                container.command
            );
        }
    }
    let stop = stop_flag()?;
    for container in ordered {
        let spawned = SystemTime::now();
        let (mut child, output) = start_container(container, args, data, ports, telemetry)?;
        let kind = container.command.get(2).map(String::as_str).unwrap_or("");
        let ready = match kind {
            "mount-launcher" => {
                let access = access_name_of(&container.command).unwrap_or(&container.name);
                wait_volume(&status_dir, access, &container.name, &mut child)
            }
            _ => match listen_port(container) {
                Some(port) => wait_listening(
                    ports.get(&port).copied().unwrap_or(port),
                    &container.name,
                    &mut child,
                ),
                None => Ok(()),
            },
        };
        group.running.push(Running {
            name: container.name.clone(),
            child,
            output,
        });
        telemetry.span(&Span {
            name: "cleanroom.container_start",
            start: spawned,
            end: SystemTime::now(),
            error: ready
                .as_ref()
                .err()
                .map(|e| encfs_store::redact::redact(&format!("{e:#}"))),
            attributes: vec![
                ("encfs.container", container.name.clone().into()),
                ("encfs.container_kind", kind.to_owned().into()),
            ],
        });
        ready?;
        say(
            args.verbose,
            format!(
                "container {} is up ({} ms)",
                container.name,
                started.elapsed().as_millis()
            ),
        );
    }
    let state_path = data.join(STATE_FILE);
    write_json(
        &state_path,
        &json!({
            "state": "running",
            "pid": std::process::id(),
            "contract_id": args.contract_id,
            "launcher": format!("http://{}:{}", args.launcher_listen.ip(), ports[&8200]),
            "applications": plan.applications().map(|a| &a.name).collect::<Vec<_>>(),
            "ready_after_ms": started.elapsed().as_millis() as u64,
        }),
    )?;
    telemetry.gauges(&[(
        "encfs.cleanroom.startup_duration",
        "ms",
        started.elapsed().as_secs_f64() * 1000.0,
        vec![("encfs.contract_id", args.contract_id.clone().into())],
    )]);
    wait_applications(args, plan, group, &stop, &status_dir)
}

/// Set by SIGINT / SIGTERM (`cleanroom stop`).
fn stop_flag() -> Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let for_thread = flag.clone();
    let rt = runtime()?;
    std::thread::spawn(move || {
        let _ = rt.block_on(super::governance::until_stopped());
        for_thread.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    Ok(flag)
}

/// Waits until every application has exited (each code launcher records how a run ended, after
/// its exit work, in the volume status directory), or the clean room is stopped, or a container
/// dies. The status route is not polled: each call of it is an audit event in the reference.
fn wait_applications(
    args: &RunArgs,
    plan: &DeploymentPlan,
    group: &mut Group,
    stop: &std::sync::atomic::AtomicBool,
    status_dir: &Path,
) -> Result<i32> {
    let mut exit_codes: BTreeMap<String, i32> = BTreeMap::new();
    loop {
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            bail!("the clean room was stopped before its applications finished");
        }
        for running in &mut group.running {
            if let Some(status) = running.child.try_wait()? {
                bail!("container '{}' exited with {status}", running.name);
            }
        }
        for app in plan.applications() {
            if exit_codes.contains_key(&app.name) {
                continue;
            }
            let path =
                status_dir.join(format!("{}{}", app.name, super::code_launcher::EXIT_SUFFIX));
            if let Some(outcome) = read_json(&path)
                && let Some(code) = outcome["exit_code"].as_i64()
            {
                say(
                    args.verbose,
                    format!(
                        "application {} exited with code {code} ({outcome})",
                        app.name
                    ),
                );
                exit_codes.insert(app.name.clone(), code as i32);
            }
        }
        if exit_codes.len() == plan.applications().count() {
            return Ok(exit_codes.values().copied().find(|c| *c != 0).unwrap_or(0));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// status, wait, stop

fn status(data: &Path) -> Result<()> {
    let value = match (
        read_json(&data.join(STATE_FILE)),
        read_json(&data.join(RESULT_FILE)),
    ) {
        (Some(state), _) if state["pid"].as_u64().is_some_and(super::governance::alive) => state,
        (_, Some(result)) => result,
        _ => bail!("no clean room has run on {}", data.display()),
    };
    println!("{value:#}");
    Ok(())
}

fn wait(data: &Path, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let running = read_json(&data.join(STATE_FILE))
            .and_then(|s| s["pid"].as_u64())
            .is_some_and(super::governance::alive);
        if !running {
            let Some(result) = read_json(&data.join(RESULT_FILE)) else {
                bail!("no clean room has run on {}", data.display());
            };
            let code = result["exit_code"].as_i64().unwrap_or(1) as i32;
            println!("{result:#}");
            if code != 0 {
                return Err(ExitWith(code).into());
            }
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!(
                "the clean room on {} still runs after {timeout:?}",
                data.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stop(data: &Path) -> Result<()> {
    let Some(pid) = read_json(&data.join(STATE_FILE)).and_then(|s| s["pid"].as_u64()) else {
        bail!("no clean room runs on {}", data.display());
    };
    if !super::governance::alive(pid) {
        bail!("no clean room runs on {}", data.display());
    }
    let pid = i32::try_from(pid).context("pid out of range")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .context("cannot signal the clean room")?;
    wait(data, Duration::from_secs(120)).or_else(|error| match error.downcast_ref::<ExitWith>() {
        Some(_) => Ok(()),
        None => Err(error),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localise_moves_ports_and_paths() {
        let ports = BTreeMap::from([(8284, 40001), (9300, 40002)]);
        let data = Path::new("/data");
        assert_eq!(localise("8284", &ports, data), "40001");
        assert_eq!(localise("127.0.0.1:9300", &ports, data), "127.0.0.1:40002");
        assert_eq!(
            localise("http://localhost:8284/x", &ports, data),
            "http://localhost:40001/x"
        );
        assert_eq!(localise("127.0.0.1:82840", &ports, data), "127.0.0.1:82840");
        assert_eq!(localise("/mnt/remote/in", &ports, data), "/data/remote/in");
        assert_eq!(localise("/mnt/remotex", &ports, data), "/mnt/remotex");
        assert_eq!(localise("hello", &ports, data), "hello");
        let digest = format!("sha256:8284a{}", "0".repeat(59));
        assert_eq!(localise(&digest, &ports, data), digest);
    }
}
