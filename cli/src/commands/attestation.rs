//! `encfs attestation serve | stop`: the insecure virtual attestation authority in the
//! foreground or as a daemon (the governance service's `--daemon` machinery, reused).

use std::path::Path;

use anyhow::{Context, Result};
use encfs_attestation::authority::{AUTHORITY_CA_FILE, VirtualAuthority};
use serde_json::json;

use super::governance::{SERVICE_STATUS_FILE, daemonize, stop};
use crate::attestation_args::AttestationCommand;

const WHAT: &str = "virtual attestation authority";

/// Runs one `encfs attestation …` command.
pub fn run(command: AttestationCommand) -> Result<()> {
    match command {
        AttestationCommand::Serve {
            listen,
            data,
            daemon,
        } => {
            if daemon {
                return daemonize(&data, WHAT);
            }
            super::runtime()?.block_on(serve(&data, listen))
        }
        AttestationCommand::Stop { data } => stop(&data, WHAT),
    }
}

async fn serve(data: &Path, listen: std::net::SocketAddr) -> Result<()> {
    let authority = VirtualAuthority::open(data)
        .with_context(|| format!("cannot open the {WHAT} in {}", data.display()))?;
    let running = encfs_attestation::service::serve(authority, listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let ca_path = std::fs::canonicalize(data.join(AUTHORITY_CA_FILE))
        .with_context(|| format!("cannot find {}", data.join(AUTHORITY_CA_FILE).display()))?;
    let status = json!({
        "endpoint": running.url(),
        "authorityCa": ca_path,
        "pid": std::process::id(),
    });
    let status_path = data.join(SERVICE_STATUS_FILE);
    let mut out = crate::output::AtomicOutput::create(&status_path)?;
    std::io::Write::write_all(out.file(), status.to_string().as_bytes())?;
    out.commit(true)?;
    eprintln!(
        "encfs attestation: INSECURE virtual authority listening on {} (state in {})",
        running.url(),
        data.display()
    );
    super::governance::until_stopped().await?;
    running.shutdown().await;
    let _ = std::fs::remove_file(&status_path);
    eprintln!("encfs attestation: stopped");
    Ok(())
}
