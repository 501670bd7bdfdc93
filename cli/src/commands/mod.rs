//! One module per group of verbs; [`dispatch`] routes parsed arguments to them.

mod attestation;
mod attested_manifest;
mod cleanroom;
mod cleanroom_run;
mod code_launcher;
mod credentials;
mod crypt;
mod dataset;
mod datastore;
mod deployment_generate;
mod governance;
mod key_release;
mod keys;
mod keyvault;
mod manifest_pin;
mod mount;
mod owner_config;
mod secretstore;
mod sidecar;
mod spec_config;
mod transfer;
mod vault_backend;

use anyhow::{Context, Result};

pub(crate) use cleanroom_run::ExitWith;

use crate::args::{Cli, Command};

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Runs `future` to its end from synchronous code: called from the mount (no runtime) and from
/// upload/download (inside the multi-threaded one).
fn block_on<F: std::future::Future>(future: F) -> Result<F::Output> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => Ok(tokio::task::block_in_place(|| handle.block_on(future))),
        Err(_) => Ok(tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(future)),
    }
}

/// Runs one parsed command line.
pub fn dispatch(cli: Cli) -> Result<()> {
    if let Some(threads) = cli.threads {
        anyhow::ensure!(threads > 0, "--threads must be at least 1");
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .context("cannot start the worker threads")?;
    }
    match cli.command {
        Command::Key(command) => keys::key(command),
        Command::Kek(command) => keys::kek(command),
        Command::Encrypt(args) => crypt::encrypt(&args),
        Command::Decrypt(args) => crypt::decrypt(&args),
        Command::Inspect(args) => crypt::inspect(&args),
        Command::Convert(args) => crypt::convert(&args),
        Command::Upload(args) => runtime()?.block_on(transfer::upload(&args, &cli.access)),
        Command::Download(args) => runtime()?.block_on(transfer::download(&args, &cli.access)),
        Command::Ls(args) => runtime()?.block_on(transfer::ls(&args, &cli.access)),
        Command::Rm(args) => runtime()?.block_on(transfer::rm(&args, &cli.access)),
        Command::Datastore(command) => runtime()?.block_on(datastore::run(command, &cli.access)),
        Command::Dataset(command) => dataset::run(command, &cli.access),
        Command::Mount(args) => mount::mount(&args, &cli.access),
        Command::Unmount(args) => mount::unmount(&args),
        Command::Governance(args) => governance::run(args.command, &args.output),
        Command::Attestation(command) => attestation::run(command),
        Command::Keyvault(command) => keyvault::run(command),
        Command::Secretstore(command) => secretstore::run(command),
        Command::Config(command) => owner_config::run(command, &cli.access),
        Command::Sidecar(command) => sidecar::run(command),
        Command::Cleanroom(command) => cleanroom::run(command),
        Command::Datasink(command) => cleanroom::datasink(command),
        Command::Logs(command) => cleanroom::telemetry(command, cleanroom::APPLICATION_TELEMETRY),
        Command::Telemetry(command) => {
            cleanroom::telemetry(command, cleanroom::INFRASTRUCTURE_TELEMETRY)
        }
    }
}
