//! Arguments of `encfs attestation …`: the insecure virtual attestation authority.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Subcommand;

/// `encfs attestation …`.
#[derive(Subcommand, Debug)]
pub enum AttestationCommand {
    /// Run the INSECURE virtual attestation authority (SNP-shaped reports for any declared
    /// security policy, MAA-shaped tokens): it proves the flow, not the hardware.
    Serve {
        /// Address to listen on (HTTPS).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8700")]
        listen: SocketAddr,
        /// State directory: authority-ca.pem (what every party pins), keys (0600), certificates.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Run in the background; returns once the authority listens.
        #[arg(long)]
        daemon: bool,
    },
    /// Stop an authority started with --daemon.
    Stop {
        /// Its state directory.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
    },
}
