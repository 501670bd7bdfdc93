//! `encfs sidecar …`: the clean room's loopback sidecars — skr (secure key release), secrets
//! (unwrap), identity (bearer tokens) and governance (attested consent, events, secrets) — each serving until SIGTERM / SIGINT, printing one
//! ready line (JSON: sidecar, endpoint, pid) on stdout once it listens. `--daemon --run-dir DIR`
//! runs it detached through the governance service's daemonizing code, with the same line in
//! `DIR/service.json` while it runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use encfs_sidecars::secrets::{SecretsConfig, SecretsSidecar};
use encfs_sidecars::skr::{SkrConfig, SkrSidecar};
use serde_json::json;

use encfs_attestation::provider::AttestationProvider;
use encfs_sidecars::skr::TokenAttester;

use crate::sidecar_args::{
    AttestationKind, GovernanceArgs, IdentityArgs, SecretsArgs, SidecarCommand, SkrArgs,
};

/// Runs one `encfs sidecar …` command.
pub fn run(command: SidecarCommand) -> Result<()> {
    let (name, daemon) = match &command {
        SidecarCommand::Skr(args) => ("skr", &args.daemon),
        SidecarCommand::Secrets(args) => ("secrets", &args.daemon),
        SidecarCommand::Identity(args) => ("identity", &args.daemon),
        SidecarCommand::Governance(args) => ("governance", &args.daemon),
        SidecarCommand::Stop { run_dir } => return super::governance::stop(run_dir, "sidecar"),
    };
    if daemon.daemon {
        let dir = daemon
            .run_dir
            .as_deref()
            .context("--daemon needs --run-dir")?;
        return super::governance::daemonize(dir, &format!("{name} sidecar"));
    }
    let run_dir = daemon.run_dir.clone();
    super::runtime()?.block_on(async move {
        match command {
            SidecarCommand::Skr(args) => skr(args, run_dir).await,
            SidecarCommand::Secrets(args) => secrets(args, run_dir).await,
            SidecarCommand::Identity(args) => identity(args, run_dir).await,
            SidecarCommand::Governance(args) => governance(args, run_dir).await,
            SidecarCommand::Stop { .. } => Ok(()),
        }
    })
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))
}

fn trusted_cas(paths: &[PathBuf]) -> Result<Vec<(String, Vec<u8>)>> {
    paths
        .iter()
        .map(|path| Ok((path.display().to_string(), read_file(path, "trusted CA")?)))
        .collect()
}

async fn skr(args: SkrArgs, run_dir: Option<PathBuf>) -> Result<()> {
    let trusted = trusted_cas(&args.trust_ca)?;
    let (provider, attester) = attestation(&args, &trusted)?;
    let sidecar = SkrSidecar::new(SkrConfig {
        provider,
        attester,
        trusted_cas: trusted,
        identity_endpoint: args.identity_endpoint.clone(),
    })
    .context("cannot start the skr sidecar")?;
    serve("skr", args.listen, Arc::new(sidecar).router(), run_dir).await
}

/// The report provider and the token client of `--attestation`. The MAA client trusts the
/// `--trust-ca` roots and, in virtual mode, the authority's root.
type Attestation = (Arc<dyn AttestationProvider>, Arc<dyn TokenAttester>);

fn attestation(args: &SkrArgs, trusted: &[(String, Vec<u8>)]) -> Result<Attestation> {
    let mut maa_cas: Vec<Vec<u8>> = trusted.iter().map(|(_, pem)| pem.clone()).collect();
    let provider: Arc<dyn AttestationProvider> = match args.attestation {
        AttestationKind::Virtual => {
            let authority = args
                .authority
                .as_deref()
                .context("--authority is required")?;
            let ca_path = args
                .authority_ca
                .as_deref()
                .context("--authority-ca is required")?;
            let policy_path = args
                .security_policy
                .as_deref()
                .context("--security-policy is required")?;
            let ca = read_file(ca_path, "authority CA")?;
            let policy = read_file(policy_path, "security policy")?;
            maa_cas.push(ca.clone());
            let provider = encfs_attestation::virtual_provider::VirtualProvider::new(
                authority,
                &ca,
                &policy,
                args.debuggable,
            )
            .with_context(|| format!("the virtual attestation provider for {authority}"))?;
            Arc::new(provider)
        }
        AttestationKind::Azure => Arc::new(
            encfs_attestation::azure::AzureProvider::new()
                .context("the Azure SEV-SNP attestation provider")?,
        ),
    };
    let attester = encfs_attestation::maa::MaaClient::new(maa_cas)
        .context("the attestation service client")?;
    Ok((provider, Arc::new(attester)))
}

async fn identity(args: IdentityArgs, run_dir: Option<PathBuf>) -> Result<()> {
    let credential = encfs_keyvault::identity::Credential::load(&args.credential)
        .with_context(|| format!("cannot load the credential {}", args.credential.display()))?;
    let router = encfs_keyvault::identity::router(credential);
    serve("identity", args.listen, router, run_dir).await
}

async fn secrets(args: SecretsArgs, run_dir: Option<PathBuf>) -> Result<()> {
    let sidecar = SecretsSidecar::new(SecretsConfig {
        skr: args.skr.clone(),
        identity_endpoint: args.identity_endpoint.clone(),
        trusted_cas: trusted_cas(&args.trust_ca)?,
    })
    .context("cannot start the secrets sidecar")?;
    serve("secrets", args.listen, Arc::new(sidecar).router(), run_dir).await
}

/// A setting from its flag, else from the reference's environment variable.
fn flag_or_env(flag: Option<String>, variable: &str) -> Option<String> {
    flag.or_else(|| {
        std::env::var(variable)
            .ok()
            .filter(|v| !v.trim().is_empty())
    })
}

/// The pinned service certificate: --service-cert-file, else env serviceCert (base64 PEM), else
/// env serviceCertPath.
fn service_cert(args: &GovernanceArgs) -> Result<Vec<u8>> {
    use base64::Engine;
    if let Some(path) = &args.service_cert_file {
        return read_file(path, "governance service certificate");
    }
    if let Some(b64) = flag_or_env(None, "serviceCert") {
        return base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .context("env serviceCert is not base64 (of the service certificate's PEM)");
    }
    if let Some(path) = flag_or_env(None, "serviceCertPath") {
        return read_file(
            Path::new(&path),
            "governance service certificate (serviceCertPath)",
        );
    }
    bail!(
        "the governance service certificate is needed: --service-cert-file, or env serviceCert / serviceCertPath"
    )
}

async fn governance(args: GovernanceArgs, run_dir: Option<PathBuf>) -> Result<()> {
    let cgs_endpoint = flag_or_env(args.governance_endpoint.clone(), "ccrgovEndpoint").context(
        "the governance endpoint is needed: --governance-endpoint or env ccrgovEndpoint",
    )?;
    let api_path_prefix = match &args.contract_id {
        Some(id) => format!("app/contracts/{id}"),
        None => flag_or_env(args.api_path_prefix.clone(), "ccrgovApiPathPrefix").context(
            "the API path prefix is needed: --api-path-prefix, --contract-id or env ccrgovApiPathPrefix",
        )?,
    };
    let service_cert_pem = service_cert(&args)?;
    let sidecar = encfs_sidecars::governance::GovernanceSidecar::start(
        encfs_sidecars::governance::GovernanceConfig {
            cgs_endpoint: cgs_endpoint.clone(),
            service_cert_pem,
            api_path_prefix,
            skr: args.skr.clone(),
        },
    )
    .await
    .with_context(|| format!("cannot start the governance sidecar for {cgs_endpoint}"))?;
    serve(
        "governance",
        args.listen,
        Arc::new(sidecar).router(),
        run_dir,
    )
    .await
}

/// Serves `router` on `listen` (loopback only) until SIGTERM or SIGINT.
async fn serve(
    name: &str,
    listen: SocketAddr,
    router: axum::Router,
    run_dir: Option<PathBuf>,
) -> Result<()> {
    if !listen.ip().is_loopback() {
        bail!("the {name} sidecar listens on loopback only, not {listen}");
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let ready = json!({
        "sidecar": name,
        "endpoint": format!("http://{addr}"),
        "pid": std::process::id(),
    })
    .to_string();
    let status_path = run_dir
        .as_ref()
        .map(|dir| dir.join(super::governance::SERVICE_STATUS_FILE));
    if let Some(path) = &status_path {
        let mut out = crate::output::AtomicOutput::create(path)?;
        std::io::Write::write_all(out.file(), ready.as_bytes())?;
        out.commit(true)?;
    }
    {
        use std::io::Write;
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{ready}");
        let _ = stdout.flush();
    }
    eprintln!("encfs sidecar {name}: listening on http://{addr}");
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot handle SIGTERM")?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    };
    let served = encfs_sidecars::server::serve(listener, router, stop).await;
    if let Some(path) = &status_path {
        let _ = std::fs::remove_file(path);
    }
    served.with_context(|| format!("the {name} sidecar on {addr} failed"))?;
    eprintln!("encfs sidecar {name}: stopped");
    Ok(())
}
