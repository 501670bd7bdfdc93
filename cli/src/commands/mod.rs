//! One module per group of verbs; [`dispatch`] routes parsed arguments to them.

mod crypt;
mod keys;

use anyhow::{Context, Result};

use crate::args::{Cli, Command};

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
    }
}
