//! The `encfs` command line: argument parsing and glue over `encfs-crypto`.
//!
//! Binaries stay thin (see docs/architecture.md): each command module turns arguments into calls
//! on the library crates and adds context naming the file it was working on, so every error says
//! what failed and where, and exits non-zero.
#![forbid(unsafe_code)]

mod args;
mod attestation_args;
mod cleanroom_args;
mod commands;
mod dataset_args;
mod duration;
mod governance_args;
mod keyrelease_args;
mod keyvault_args;
mod output;
mod pipeline;
mod sidecar_args;
mod size;
mod spec_args;
mod structured;

use std::process::ExitCode;

use clap::Parser;

/// Parses the process arguments, runs the command, prints any error and maps it to an exit code.
pub fn run() -> ExitCode {
    let cli = args::Cli::parse();
    match commands::dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if let Some(commands::ExitWith(code)) = error.downcast_ref() {
                // The clean room's application failed: its exit code is ours (it said why in
                // its log); 1 where it does not fit an exit status.
                return ExitCode::from(u8::try_from(*code).ok().filter(|c| *c != 0).unwrap_or(1));
            }
            // Redacted: an address or a transport error in the chain may carry a SAS.
            let message = encfs_store::redact::redact(&format!("{error:#}"));
            eprintln!("encfs: error: {message}");
            ExitCode::FAILURE
        }
    }
}
