//! Command-line grammar of `encfs sidecar …`: the clean room's loopback sidecars (skr, secrets,
//! identity, governance), with the reference's default ports.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

#[derive(Subcommand, Debug)]
pub enum SidecarCommand {
    /// The secure key release sidecar (ref: confidential-sidecar-containers `skr`): attestation
    /// reports, MAA tokens and Key Vault key release, on plain HTTP on loopback.
    Skr(SkrArgs),
    /// The secrets sidecar (ref: ccr-secrets): `POST /secrets/unwrap`.
    Secrets(SecretsArgs),
    /// The identity sidecar: managed-identity-shaped bearer tokens from a credential file.
    Identity(IdentityArgs),
    /// The governance sidecar (ref: ccr-governance): the clean room's attested consent checks,
    /// events and secrets, on plain HTTP on loopback.
    Governance(GovernanceArgs),
    /// Stop a sidecar started with --daemon (SIGTERM to the pid in DIR/service.json).
    Stop {
        /// Its --run-dir.
        #[arg(long, value_name = "DIR")]
        run_dir: PathBuf,
    },
}

/// How a sidecar runs in the background.
#[derive(Args, Debug, Clone)]
pub struct DaemonArgs {
    /// Run in the background; returns (printing the ready line) once it listens. Needs
    /// --run-dir.
    #[arg(long, requires = "run_dir")]
    pub daemon: bool,
    /// Directory for service.json (endpoint and pid, while it runs) and service.log.
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttestationKind {
    /// The insecure virtual attestation authority (`encfs attestation serve`).
    Virtual,
    /// SEV-SNP (`/dev/sev-guest`) with Microsoft Azure Attestation.
    Azure,
}

#[derive(Args, Debug)]
pub struct SkrArgs {
    /// Address to listen on (loopback).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8284")]
    pub listen: SocketAddr,
    /// Where reports come from.
    #[arg(long, value_enum, default_value = "virtual")]
    pub attestation: AttestationKind,
    /// The virtual attestation authority's URL (virtual).
    #[arg(long, value_name = "URL", required_if_eq("attestation", "virtual"))]
    pub authority: Option<String>,
    /// The virtual authority's root certificate, DIR/authority-ca.pem (virtual).
    #[arg(long, value_name = "FILE", required_if_eq("attestation", "virtual"))]
    pub authority_ca: Option<PathBuf>,
    /// The security policy text this clean room declares; hostdata = its SHA-256 (virtual).
    #[arg(long, value_name = "FILE", required_if_eq("attestation", "virtual"))]
    pub security_policy: Option<PathBuf>,
    /// Declare the (virtual) clean room debuggable.
    #[arg(long)]
    pub debuggable: bool,
    /// A PEM root certificate to trust for Key Vault (TLS and release signatures) and the
    /// attestation service, on top of the web PKI roots; repeatable.
    #[arg(long = "trust-ca", value_name = "FILE")]
    pub trust_ca: Vec<PathBuf>,
    /// The identity endpoint a release without access_token gets its bearer token from.
    #[arg(long, value_name = "URL")]
    pub identity_endpoint: Option<String>,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Args, Debug)]
pub struct SecretsArgs {
    /// Address to listen on (loopback).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9300")]
    pub listen: SocketAddr,
    /// The skr sidecar (without it, unwraps fail SkrPortNotSet, as the reference's).
    #[arg(long, value_name = "URL")]
    pub skr: Option<String>,
    /// The identity endpoint (without it, unwraps that need a token fail IdentityPortNotSet).
    #[arg(long, value_name = "URL")]
    pub identity_endpoint: Option<String>,
    /// A PEM root certificate to trust for Key Vault's TLS, on top of the web PKI roots;
    /// repeatable.
    #[arg(long = "trust-ca", value_name = "FILE")]
    pub trust_ca: Vec<PathBuf>,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Args, Debug)]
pub struct IdentityArgs {
    /// Address to listen on (loopback).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8290")]
    pub listen: SocketAddr,
    /// The credential file (`encfs keyvault identity create --out FILE`).
    #[arg(long, value_name = "FILE")]
    pub credential: PathBuf,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Args, Debug)]
pub struct GovernanceArgs {
    /// Address to listen on (loopback).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8300")]
    pub listen: SocketAddr,
    /// The governance service (CGS) URL, https (else env ccrgovEndpoint).
    #[arg(long, value_name = "URL")]
    pub governance_endpoint: Option<String>,
    /// The governance service's certificate (PEM), pinned (else env serviceCert, base64 PEM, or
    /// serviceCertPath).
    #[arg(long, value_name = "FILE")]
    pub service_cert_file: Option<PathBuf>,
    /// The API path prefix, app/contracts/<contractId> (else env ccrgovApiPathPrefix).
    #[arg(long, value_name = "PREFIX", conflicts_with = "contract_id")]
    pub api_path_prefix: Option<String>,
    /// Shorthand for --api-path-prefix app/contracts/ID.
    #[arg(long, value_name = "ID")]
    pub contract_id: Option<String>,
    /// The skr sidecar the attestation report comes from.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8284")]
    pub skr: String,
    #[command(flatten)]
    pub daemon: DaemonArgs,
}
