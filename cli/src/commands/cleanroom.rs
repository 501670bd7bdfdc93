//! `encfs cleanroom …`: the local clean room (`run`, `status`, `wait`, `stop`), the commands its
//! containers run (`mount-launcher`, `code-launcher`), and the collaborators' downloads of a
//! clean room's output (`datasink | logs | telemetry download`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use encfs_cleanroom::launcher::governance::{GovernanceSidecarClient, MOUNT_LAUNCHER_SOURCE};
use encfs_cleanroom::otel::{self, Span, Telemetry};
use encfs_cleanroom::spec::Spec;
use serde_json::json;

use super::key_release::{KekRef, KeyRelease, SecretRef};
use crate::args::{Cli, Command};
use crate::cleanroom_args::{
    CleanroomCommand, DatasinkCommand, MountLauncherArgs, SinkDownloadArgs, TelemetryCommand,
    TelemetryDownloadArgs,
};

/// The access name of the application logs' datasink (ref §10).
pub const APPLICATION_TELEMETRY: &str = "application-telemetry";
/// The access name of the infrastructure telemetry's datasink (ref §10).
pub const INFRASTRUCTURE_TELEMETRY: &str = "infrastructure-telemetry";

/// How long a mount launcher waits for its mount to be ready.
const MOUNT_READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs one `encfs cleanroom …` command.
pub fn run(command: CleanroomCommand) -> Result<()> {
    match command {
        CleanroomCommand::MountLauncher(args) => super::runtime()?.block_on(mount_launcher(&args)),
        other => super::cleanroom_run::run(other),
    }
}

// ---------------------------------------------------------------------------------------------
// Collaborators' downloads

/// `encfs datasink download`.
pub fn datasink(command: DatasinkCommand) -> Result<()> {
    let DatasinkCommand::Download(args) = command;
    download_sink(&args)
}

/// `encfs logs download` (`application-telemetry`) or `encfs telemetry download`
/// (`infrastructure-telemetry`).
pub fn telemetry(command: TelemetryCommand, access_name: &str) -> Result<()> {
    let TelemetryCommand::Download(args) = command;
    let TelemetryDownloadArgs {
        cleanroom_config,
        target_folder,
        datastore_config,
    } = args;
    download_sink(&SinkDownloadArgs {
        cleanroom_config,
        name: access_name.to_owned(),
        target_folder,
        datastore_config,
    })
}

/// The datastore behind the datasink `name` of the spec (the telemetry sinks may also be named
/// only in `governance.telemetry`).
fn sink_datastore(spec: &Spec, name: &str, spec_path: &Path) -> Result<String> {
    if let Some(sink) = spec.datasinks.iter().find(|s| s.name == name) {
        return Ok(sink.store.id.clone());
    }
    let telemetry = spec.governance.as_ref().and_then(|g| g.telemetry.as_ref());
    let from_telemetry = match name {
        APPLICATION_TELEMETRY => telemetry
            .and_then(|t| t.application.as_ref())
            .map(|a| a.logs.store.id.clone()),
        INFRASTRUCTURE_TELEMETRY => telemetry
            .and_then(|t| t.infrastructure.as_ref())
            .map(|i| i.logs.store.id.clone()),
        _ => None,
    };
    from_telemetry.with_context(|| {
        format!(
            "the clean-room spec {} has no datasink named '{name}'",
            spec_path.display()
        )
    })
}

fn download_sink(args: &SinkDownloadArgs) -> Result<()> {
    let spec = Spec::load(&args.cleanroom_config)?;
    let datastore = sink_datastore(&spec, &args.name, &args.cleanroom_config)?;
    let target = args.target_folder.join(&datastore);
    let mut argv: Vec<String> = vec![
        "encfs".into(),
        "download".into(),
        target.display().to_string(),
        "--datastore".into(),
        datastore.clone(),
    ];
    if let Some(config) = &args.datastore_config {
        argv.extend(["--config".into(), config.display().to_string()]);
    }
    let cli = <Cli as clap::Parser>::try_parse_from(&argv).context("internal argument error")?;
    let Command::Download(download) = &cli.command else {
        unreachable!("parsed a download command line")
    };
    super::runtime()?
        .block_on(super::transfer::download(download, &cli.access))
        .with_context(|| format!("cannot download datasink '{}' ({datastore})", args.name))
}

// ---------------------------------------------------------------------------------------------
// mount-launcher

fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn required_env(name: &str, access: &str) -> Result<String> {
    env_value(name).with_context(|| {
        format!(
            "the mount launcher of access point '{access}' needs the environment variable {name}"
        )
    })
}

/// The volume status directory: the flag, else `$VOLUMESTATUS_MOUNT_PATH`, else
/// `/mnt/volumestatus` (ref §6).
pub fn volume_status_dir(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("VOLUMESTATUS_MOUNT_PATH").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/mnt/volumestatus"))
}

/// The store address of an access point's container: `AZURE_STORAGE_BLOB_ENDPOINT` joined with
/// `AZURE_STORAGE_ACCOUNT_CONTAINER`, unless the endpoint already ends with the container (a
/// local store's address is the container's directory).
fn store_address(endpoint: &str, container: Option<&str>) -> String {
    let endpoint = endpoint.trim_end_matches('/');
    match container {
        Some(c) if !endpoint.ends_with(&format!("/{c}")) => format!("{endpoint}/{c}"),
        _ => endpoint.to_owned(),
    }
}

/// The key release an access point's container describes in its environment (ref §8 item 6).
fn key_release_from_env(access: &str) -> Result<KeyRelease> {
    Ok(KeyRelease {
        secret: SecretRef {
            kid: required_env("WRAPPED_DEK_SECRET", access)?,
            akv_endpoint: required_env("WRAPPED_DEK_AKV_ENDPOINT", access)?,
        },
        kek: KekRef {
            kid: required_env("KID", access)?,
            akv_endpoint: required_env("AKV_ENDPOINT", access)?,
            maa_endpoint: required_env("MAA_ENDPOINT", access)?,
        },
        client_id: env_value("CLIENT_ID"),
        tenant_id: env_value("TENANT_ID"),
    })
}

/// `encfs cleanroom mount-launcher`: like the reference's blobfuse-launcher, gets the DEK from
/// the secrets sidecar (key release; memory only), mounts the datastore at the mount path for
/// the application's user, writes `<access>.volume.ready` (`{"mount_path": …}`) or
/// `<access>.volume.error` (`{"error_code": …}`), and serves until SIGTERM, which unmounts.
/// A datasource pinned to a manifest (`--manifest-digest`) is mounted with it, and the audit
/// events name the digest (served, or refused); a datasink with `--seal-manifest` gets its
/// manifest sealed by the clean room's attested key after the unmount.
async fn mount_launcher(args: &MountLauncherArgs) -> Result<()> {
    let access = &args.access_name;
    let status_dir = volume_status_dir(args.volume_status_dir.as_deref());
    std::fs::create_dir_all(&status_dir)
        .with_context(|| format!("cannot create {}", status_dir.display()))?;
    let ready = status_dir.join(format!("{access}.volume.ready"));
    let failed = status_dir.join(format!("{access}.volume.error"));
    let _ = std::fs::remove_file(&ready);
    let _ = std::fs::remove_file(&failed);
    let result = mount_and_serve(args, &ready).await;
    if let Err(error) = &result {
        let code = match error.downcast_ref::<MountExit>() {
            Some(MountExit(code)) => *code,
            None => 1,
        };
        let message = encfs_store::redact::redact(&format!("{error:#}"));
        let _ = super::mount::write_json(&failed, &json!({"error_code": code, "message": message}));
    }
    let _ = std::fs::remove_file(&ready);
    result
}

/// The mount exited with this code before it was ready.
#[derive(Debug)]
struct MountExit(i32);

impl std::fmt::Display for MountExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the mount exited with code {}", self.0)
    }
}

impl std::error::Error for MountExit {}

async fn mount_and_serve(args: &MountLauncherArgs, ready: &Path) -> Result<()> {
    let access = &args.access_name;
    let mode = match args.encryption_mode.to_ascii_uppercase().as_str() {
        "CSE" => "cse",
        "CPK" => "cpk",
        "SSE" => "sse",
        other => bail!("access point '{access}': unknown encryption mode '{other}'"),
    };
    let endpoint = required_env("AZURE_STORAGE_BLOB_ENDPOINT", access)?;
    let container = env_value("AZURE_STORAGE_ACCOUNT_CONTAINER");
    let address = store_address(&endpoint, container.as_deref());
    let key_release = if mode == "sse" {
        None
    } else {
        Some(key_release_from_env(access)?)
    };
    // The mount reads its datastore from a config: this one names the store, the mode and where
    // the DEK comes from, nothing secret.
    let config = tempfile::Builder::new()
        .prefix("encfs-mount-launcher-")
        .suffix(".yaml")
        .tempfile()
        .context("cannot create the mount launcher's datastore config")?;
    let mut entry = json!({"name": access, "store": address, "mode": mode, "key": ""});
    if let Some(release) = &key_release {
        entry["key_release"] = serde_json::to_value(release)?;
    }
    std::fs::write(
        config.path(),
        serde_yaml::to_string(&json!({"datastores": [entry]}))?,
    )
    .with_context(|| format!("cannot write {}", config.path().display()))?;

    std::fs::create_dir_all(&args.mount_path)
        .with_context(|| format!("cannot create {}", args.mount_path.display()))?;
    let mount_status = tempfile::Builder::new()
        .prefix("encfs-mount-status-")
        .tempdir()
        .context("cannot create a status directory")?;
    let status_file = mount_status.path().join("ready.json");
    let error_file = mount_status.path().join("error.json");
    let exe = std::env::current_exe().context("cannot find the encfs executable")?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("mount")
        .arg(&args.mount_path)
        .args(["--datastore", access])
        .arg("--config")
        .arg(config.path())
        .args(["--allow-other", "--uid", &args.uid.to_string()])
        .args(["--gid", &args.gid.to_string()])
        .arg("--status-file")
        .arg(&status_file)
        .arg("--error-file")
        .arg(&error_file);
    if mode != "sse" {
        command.args([
            "--key-release",
            &format!("http://127.0.0.1:{}", args.secrets_port),
        ]);
    }
    if args.read_write {
        command.arg("--read-write");
    }
    if let Some(sub) = &args.sub_directory {
        command.args(["--subdirectory", sub]);
    }
    if args.encrypt_names {
        command.arg("--encrypt-names");
    }
    if let Some(digest) = &args.manifest_digest {
        command.args(["--manifest-from-store", "--manifest-digest", digest]);
    }
    let governance = governance_client(args)?;
    let telemetry = Telemetry::from_env(&format!("{access}-encfs-mount"));
    let attributes = || -> otel::Attributes {
        let mut list = vec![
            ("encfs.access_name", access.clone().into()),
            ("encfs.encryption_mode", mode.into()),
            ("encfs.read_write", args.read_write.into()),
        ];
        if let Some(digest) = &args.manifest_digest {
            list.push(("encfs.manifest_digest", digest.clone().into()));
        }
        list
    };
    let spawned = SystemTime::now();
    let child = command
        .spawn()
        .with_context(|| format!("cannot start the mount of access point '{access}'"))?;
    // Killed if this launcher fails before the mount is up.
    let mut child = KillOnDrop(Some(child));
    let child = child.0.as_mut().expect("just set");
    let started = Instant::now();
    while !status_file.exists() {
        if let Some(status) = child.try_wait()? {
            let reason = super::mount::read_json(&error_file)
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_default();
            if let Some(digest) = &args.manifest_digest {
                governance
                    .event(&format!(
                        "Access point {access} refused the dataset pinned by manifest {digest}: {}",
                        encfs_store::redact::redact(&reason)
                    ))
                    .await;
            }
            if let Some(telemetry) = &telemetry {
                telemetry.span(&Span {
                    name: "mount.start",
                    start: spawned,
                    end: SystemTime::now(),
                    error: Some(encfs_store::redact::redact(&reason)),
                    attributes: attributes(),
                });
            }
            return Err(anyhow::Error::new(MountExit(status.code().unwrap_or(1)))
                .context(format!("access point '{access}' did not mount: {reason}")));
        }
        if started.elapsed() > MOUNT_READY_TIMEOUT {
            bail!("access point '{access}' was not mounted within {MOUNT_READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mounted = SystemTime::now();
    if let Some(telemetry) = &telemetry {
        // The DEK through key release, the store checked, the FUSE mount up.
        telemetry.span(&Span {
            name: "mount.start",
            start: spawned,
            end: mounted,
            error: None,
            attributes: attributes(),
        });
        telemetry.gauges(&[(
            "encfs.mount.ready_duration",
            "ms",
            started.elapsed().as_secs_f64() * 1000.0,
            attributes(),
        )]);
    }
    super::mount::write_json(ready, &json!({"mount_path": args.mount_path}))?;
    eprintln!(
        "encfs cleanroom mount-launcher: {access} mounted at {}",
        args.mount_path.display()
    );
    if let Some(digest) = &args.manifest_digest {
        governance
            .event(&format!(
                "Access point {access} serves the dataset of manifest {digest}, verified at mount"
            ))
            .await;
    }
    let stop = super::governance::until_stopped();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if let Some(status) = child.try_wait()? {
                    if !status.success() {
                        bail!("the mount of access point '{access}' ended with {status}");
                    }
                    return Ok(());
                }
            }
            stopped = &mut stop => {
                stopped?;
                break;
            }
        }
    }
    let _ = std::fs::remove_file(ready);
    // What the pinned mount refused during the run (its status file's `manifest` findings), read
    // while it still runs: for the audit event and the telemetry's gauges.
    let findings = super::mount::read_json(&status_file)
        .map(|s| s["manifest"].clone())
        .filter(serde_json::Value::is_object);
    if let Some(digest) = &args.manifest_digest
        && let Some(found) = findings
            .as_ref()
            .filter(|f| f["refused"] != 0 || f["missing"] != 0)
    {
        let names = |key: &str| {
            let list = found[key].as_array().cloned().unwrap_or_default();
            let names: Vec<&str> = list.iter().filter_map(|n| n.as_str()).collect();
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        };
        governance
            .event(&format!(
                "Access point {access} refused blobs not as manifest {digest} lists them: \
                 refused {}; missing {}",
                names("refused_names"),
                names("missing_names")
            ))
            .await;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let status = tokio::task::block_in_place(|| child.wait())?;
    if let Some(telemetry) = &telemetry {
        let mut list = attributes();
        let mut gauges = Vec::new();
        if let Some(found) = &findings {
            for (key, name) in [
                ("refused", "encfs.mount.manifest.refused"),
                ("missing", "encfs.mount.manifest.missing"),
            ] {
                let count = found[key].as_f64().unwrap_or(0.0);
                gauges.push((name, "{blob}", count, attributes()));
            }
        }
        list.push((
            "encfs.exit_code",
            i64::from(status.code().unwrap_or(-1)).into(),
        ));
        telemetry.span(&Span {
            name: "mount.serve",
            start: mounted,
            end: SystemTime::now(),
            error: (!status.success()).then(|| format!("the mount ended with {status}")),
            attributes: list,
        });
        telemetry.gauges(&gauges);
    }
    if !status.success() {
        bail!("the mount of access point '{access}' ended with {status} at unmount");
    }
    if args.seal_manifest {
        // The mount has unmounted: every blob it wrote is committed.
        let maa = required_env("MAA_ENDPOINT", access)?;
        let skr = format!("http://127.0.0.1:{}", args.skr_port);
        let sealed = match &args.sub_directory {
            Some(sub) => format!(
                "{}/{}",
                address.trim_end_matches('/'),
                sub.trim_matches('/')
            ),
            None => address.clone(),
        };
        let digest = super::attested_manifest::seal_datasink(&sealed, &skr, &maa)
            .await
            .with_context(|| format!("cannot seal the manifest of datasink '{access}'"))?;
        eprintln!("encfs cleanroom mount-launcher: {access} sealed manifest {digest}");
        governance
            .event(&format!(
                "Access point {access} sealed its datasink manifest {digest}"
            ))
            .await;
    }
    Ok(())
}

/// The governance sidecar as the mount launcher calls it (events only;
/// `DISABLE_GOV_EVENTS` turns them off, as for the code launcher).
fn governance_client(args: &MountLauncherArgs) -> Result<GovernanceSidecarClient> {
    GovernanceSidecarClient::new(
        &format!("http://127.0.0.1:{}", args.governance_port),
        std::env::var_os("DISABLE_GOV_EVENTS").is_none(),
    )
    .map(|client| client.with_source(MOUNT_LAUNCHER_SOURCE))
    .map_err(anyhow::Error::msg)
}

/// A child process killed (and reaped) if it is still running when this is dropped.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0
            && let Ok(None) = child.try_wait()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_address_joins_the_container_unless_the_endpoint_names_it() {
        assert_eq!(
            store_address("https://acct.blob.core.windows.net/", Some("c")),
            "https://acct.blob.core.windows.net/c"
        );
        assert_eq!(store_address("/data/store", Some("store")), "/data/store");
        assert_eq!(store_address("/data/store", None), "/data/store");
    }
}
