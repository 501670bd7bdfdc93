//! Arguments of `encfs keyvault …`: the local Azure Key Vault service and its identities.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Subcommand;

/// `encfs keyvault …`.
#[derive(Subcommand, Debug)]
pub enum KeyvaultCommand {
    /// Serve the local key vault (Key Vault REST subset of secure key release) over HTTPS.
    Serve {
        /// Address to listen on (HTTPS), e.g. 127.0.0.1:8400.
        #[arg(long)]
        listen: SocketAddr,
        /// The vault's data directory (CA, TLS and signing certificates, keys, secrets,
        /// registered clients); created on first use. Holds keys in clear, mode 0600.
        #[arg(long)]
        data: PathBuf,
        /// A PEM CA certificate trusted (besides the system roots) for the TLS of attestation
        /// authorities' OpenID/JWKS endpoints; repeatable.
        #[arg(long = "trust-authority-ca", value_name = "FILE")]
        trust_authority_ca: Vec<PathBuf>,
        /// Run in the background; returns once the vault listens (prints DIR/service.json).
        #[arg(long)]
        daemon: bool,
    },
    /// Stop a vault started with --daemon on DIR.
    Stop {
        /// The vault's data directory.
        #[arg(long)]
        data: PathBuf,
    },
    /// Identities (clients) of the vault.
    #[command(subcommand)]
    Identity(KeyvaultIdentityCommand),
}

/// `encfs keyvault identity …`.
#[derive(Subcommand, Debug)]
pub enum KeyvaultIdentityCommand {
    /// Register a client and write its credential file (mode 0600): client id, tenant id, a
    /// P-256 key and its certificate issued by the vault's CA.
    Create {
        /// The vault's data directory (initialised if new).
        #[arg(long)]
        data: PathBuf,
        /// A name for the client (unique in the vault).
        #[arg(long)]
        name: String,
        /// Where to write the credential JSON.
        #[arg(long)]
        out: PathBuf,
    },
}
