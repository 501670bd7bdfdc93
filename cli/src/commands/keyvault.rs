//! `encfs keyvault …`: the local Azure Key Vault (`serve`, `stop`) and its identities
//! (`identity create`). Glue only: the vault is `encfs_keyvault::server`, credentials are
//! `encfs_keyvault::identity`. `--daemon` reuses the governance service's daemonizer (re-run
//! without `--daemon`, detached, until `DIR/service.json` appears).

use std::path::Path;

use anyhow::{Context, Result};
use encfs_keyvault::identity::Credential;
use encfs_keyvault::server::Vault;
use encfs_keyvault::vault_dir::VaultDir;
use serde_json::json;

use crate::keyvault_args::{KeyvaultCommand, KeyvaultIdentityCommand};

/// The service's name in the daemonizer's errors.
const WHAT: &str = "key vault";

/// Runs `encfs keyvault …`.
pub fn run(command: KeyvaultCommand) -> Result<()> {
    match command {
        KeyvaultCommand::Serve {
            listen,
            data,
            trust_authority_ca,
            daemon,
        } => {
            if daemon {
                return super::governance::daemonize(&data, WHAT);
            }
            let trusted = trust_authority_ca
                .iter()
                .map(|path| {
                    std::fs::read(path).with_context(|| {
                        format!(
                            "cannot read the authority CA certificate {}",
                            path.display()
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            super::runtime()?.block_on(serve(&data, listen, trusted))
        }
        KeyvaultCommand::Stop { data } => super::governance::stop(&data, WHAT),
        KeyvaultCommand::Identity(KeyvaultIdentityCommand::Create { data, name, out }) => {
            let dir = VaultDir::open_or_init(&data)
                .with_context(|| format!("cannot open the key vault in {}", data.display()))?;
            let credential = Credential::create(&dir, &name).with_context(|| {
                format!("cannot create identity {name:?} in {}", data.display())
            })?;
            credential
                .save(&out)
                .context("cannot write the credential")?;
            println!(
                "{}",
                json!({
                    "name": name,
                    "client_id": credential.client_id,
                    "tenant_id": credential.tenant_id,
                    "credential": out,
                })
            );
            Ok(())
        }
    }
}

async fn serve(data: &Path, listen: std::net::SocketAddr, trusted: Vec<Vec<u8>>) -> Result<()> {
    let vault = Vault::open(data, &trusted)
        .with_context(|| format!("cannot open the key vault in {}", data.display()))?;
    let running = vault
        .serve(listen)
        .await
        .with_context(|| format!("cannot serve the key vault on {listen}"))?;
    let ca = std::fs::canonicalize(data.join(encfs_keyvault::vault_dir::CA_CERT_FILE))
        .context("cannot find the vault's CA certificate")?;
    let status = json!({
        "endpoint": running.url(),
        "caCert": ca,
        "tenantId": vault.dir().tenant_id(),
        "pid": std::process::id(),
    });
    let status_path = data.join(super::governance::SERVICE_STATUS_FILE);
    encfs_keyvault::durable_file::write_atomic(
        &status_path,
        status.to_string().as_bytes(),
        encfs_keyvault::durable_file::PUBLIC_MODE,
    )
    .with_context(|| format!("cannot write {}", status_path.display()))?;
    eprintln!(
        "encfs keyvault: listening on {} (state in {})",
        running.url(),
        data.display()
    );
    super::governance::until_stopped().await?;
    running.shutdown().await;
    let _ = std::fs::remove_file(&status_path);
    eprintln!("encfs keyvault: stopped");
    Ok(())
}
