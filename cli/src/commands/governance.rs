//! `encfs governance …`: the embedded consortium service, named client profiles, and the
//! reference's member / proposal / contract / deployment verbs over the wire protocol, printing
//! JSON (or `--output tsv|table`, narrowed by `--query`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use encfs_governance::client::GovernanceClient;
use encfs_governance::identity::{self, EncryptionKeyPair, MemberIdentity};
use encfs_governance::ledger::LedgerConfig;
use encfs_governance::receipt::Receipt;
use encfs_governance::server::ServerLimits;
use encfs_governance::service::{Service, ServiceConfig};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::governance_args::{
    ClientCommand, ClientSelection, ContractCommand, DeploymentCommand, EventCommand, GovOutput,
    GovernanceCommand, LedgerCommand, MemberCommand, PolicyCommand, ProposalCommand,
    ReceiptCommand, RuntimeOption, RuntimeOptionCommand, ServiceCommand, TemplateCommand, Toggle,
    VoteAction,
};

/// What a running service reports in `DIR/service.json`.
pub(crate) const SERVICE_STATUS_FILE: &str = "service.json";
/// How long `--daemon` waits for the service to listen.
const DAEMON_WAIT: Duration = Duration::from_secs(30);

/// One named client profile: where the service is, who the member is, what to pin. Paths only:
/// the key stays in the user's file.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct Profile {
    endpoint: String,
    signing_cert: PathBuf,
    signing_key: PathBuf,
    service_cert: PathBuf,
}

#[derive(Serialize, Deserialize, Debug, Default)]
struct Profiles {
    #[serde(default)]
    clients: BTreeMap<String, Profile>,
}

fn profiles_path(flag: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = flag {
        return Ok(path.to_owned());
    }
    if let Some(path) = std::env::var_os("ENCFS_GOVERNANCE_CONFIG") {
        return Ok(PathBuf::from(path));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; pass --governance-config")?;
    Ok(PathBuf::from(home).join(".config/encfs/governance-clients.yaml"))
}

fn load_profiles(path: &Path) -> Result<Profiles> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_yaml::from_str(&text)
            .with_context(|| format!("malformed governance client profiles {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Profiles::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn save_profiles(path: &Path, profiles: &Profiles) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let text = serde_yaml::to_string(profiles).expect("serialisable");
    let mut out = crate::output::AtomicOutput::create(path)?;
    std::io::Write::write_all(out.file(), text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    out.commit(true)
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(path).with_context(|| format!("cannot find {}", path.display()))
}

fn read_text(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} {}", path.display()))
}

/// The profile named `client` in the profile file (`config`, else the default one).
fn profile(client: &str, config: Option<&Path>) -> Result<Profile> {
    let path = profiles_path(config)?;
    let mut profiles = load_profiles(&path)?;
    profiles.clients.remove(client).with_context(|| {
        format!(
            "no governance client named {client:?} in {} (create it with: encfs governance client deploy --name {client} …)",
            path.display(),
        )
    })
}

/// The member certificate and private key files of a client profile (what a dataset manifest
/// is signed with).
pub(super) fn member_files(client: &str, config: Option<&Path>) -> Result<(PathBuf, PathBuf)> {
    let profile = profile(client, config)?;
    Ok((profile.signing_cert, profile.signing_key))
}

/// The client of a profile: its identity loaded (the key must match the certificate) and the
/// service certificate pinned.
pub(super) fn open_client(selection: &ClientSelection) -> Result<GovernanceClient> {
    Ok(open_client_with_service_cert(selection)?.0)
}

/// [`open_client`] and the service certificate (PEM) its profile pins.
pub(super) fn open_client_with_service_cert(
    selection: &ClientSelection,
) -> Result<(GovernanceClient, String)> {
    let profile = profile(&selection.client, selection.config.as_deref())?;
    let identity = MemberIdentity::load(&profile.signing_cert, &profile.signing_key)
        .with_context(|| format!("governance client {:?}", selection.client))?;
    let service_cert = read_text(&profile.service_cert, "service certificate")?;
    let client =
        GovernanceClient::new(&profile.endpoint, &service_cert, identity).with_context(|| {
            format!(
                "governance client {:?} ({})",
                selection.client, profile.endpoint
            )
        })?;
    Ok((client, service_cert))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Runs a client operation and prints its result.
fn with_client<F>(selection: &ClientSelection, output: &GovOutput, op: F) -> Result<()>
where
    F: AsyncFnOnce(&GovernanceClient) -> encfs_governance::client::ClientResult<Value>,
{
    let client = open_client(selection)?;
    let value = runtime()?.block_on(op(&client)).with_context(|| {
        format!(
            "governance client {:?} ({})",
            selection.client,
            client.endpoint()
        )
    })?;
    print(&value, output)
}

fn print(value: &Value, output: &GovOutput) -> Result<()> {
    crate::structured::print(value, output.output, output.query.as_deref())
}

fn data_argument(data: &str) -> Result<String> {
    match data.strip_prefix('@') {
        Some(path) => read_text(Path::new(path), "contract data file"),
        None => Ok(data.to_owned()),
    }
}

fn json_file(path: &Path, what: &str) -> Result<Value> {
    serde_json::from_str(&read_text(path, what)?)
        .with_context(|| format!("the {what} {} is not JSON", path.display()))
}

/// Runs one `encfs governance …` command.
pub fn run(command: GovernanceCommand, output: &GovOutput) -> Result<()> {
    match command {
        GovernanceCommand::Service(command) => service(command),
        GovernanceCommand::Client(command) => client_profile(command, output),
        GovernanceCommand::Member(command) => member(command, output),
        GovernanceCommand::Proposal(command) => proposal(command, output),
        GovernanceCommand::Contract(command) => contract(command, output),
        GovernanceCommand::Deployment(command) => deployment(command, output),
        GovernanceCommand::Ledger(LedgerCommand::Verify { dir, service_cert }) => {
            ledger_verify(&dir, service_cert.as_deref(), output)
        }
        GovernanceCommand::Receipt(command) => receipt(command, output),
    }
}

// ---------------------------------------------------------------------------------------------
// The service

fn service(command: ServiceCommand) -> Result<()> {
    match command {
        ServiceCommand::Start {
            data,
            listen,
            initial_members,
            daemon,
            signature_interval_txs,
            signature_interval_ms,
            attestation_authority_cas,
        } => {
            if daemon {
                return daemonize(&data, "governance service");
            }
            let attestation = attestation_verifier(&attestation_authority_cas)?;
            let initial_members = initial_members
                .iter()
                .map(|path| read_text(path, "initial member certificate"))
                .collect::<Result<Vec<_>>>()?;
            let config = ServiceConfig {
                data_dir: data.clone(),
                initial_members,
                ledger: LedgerConfig {
                    signature_interval_txs: signature_interval_txs.max(1),
                    signature_interval: Duration::from_millis(signature_interval_ms.max(1)),
                },
            };
            runtime()?.block_on(serve(&config, listen, attestation))
        }
        ServiceCommand::Stop { data } => stop(&data, "governance service"),
    }
}

/// The verifier of the attested clean-room routes, trusting the `--attestation-authority-ca`
/// roots; none given = those routes stay closed.
fn attestation_verifier(
    cas: &[PathBuf],
) -> Result<Option<std::sync::Arc<dyn encfs_governance::attestation::CleanRoomAttestation>>> {
    if cas.is_empty() {
        return Ok(None);
    }
    let pems = cas
        .iter()
        .map(|path| read_text(path, "attestation authority CA"))
        .collect::<Result<Vec<_>>>()?;
    let verifier = encfs_governance::attestation::SnpAttestationVerifier::from_pems(&pems)
        .context("--attestation-authority-ca")?;
    Ok(Some(std::sync::Arc::new(verifier)))
}

async fn serve(
    config: &ServiceConfig,
    listen: std::net::SocketAddr,
    attestation: Option<std::sync::Arc<dyn encfs_governance::attestation::CleanRoomAttestation>>,
) -> Result<()> {
    let dir = &config.data_dir;
    let service = Service::open_with_attestation(config, attestation)
        .with_context(|| format!("cannot start the governance service in {}", dir.display()))?;
    let server = service
        .serve(listen, ServerLimits::default())
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let status = json!({
        "endpoint": format!("https://{}", server.local_addr()),
        "serviceCert": absolute(&dir.join(identity::SERVICE_CERT_FILE))?,
        "pid": std::process::id(),
    });
    let status_path = dir.join(SERVICE_STATUS_FILE);
    let mut out = crate::output::AtomicOutput::create(&status_path)?;
    std::io::Write::write_all(out.file(), status.to_string().as_bytes())?;
    out.commit(true)?;
    eprintln!(
        "encfs governance: listening on {} (state in {})",
        server.local_addr(),
        dir.display()
    );
    until_stopped().await?;
    server.shutdown().await;
    service.sign_pending().await.with_context(|| {
        format!(
            "cannot sign the ledger's last transactions in {}",
            dir.display()
        )
    })?;
    let _ = std::fs::remove_file(&status_path);
    eprintln!("encfs governance: stopped");
    Ok(())
}

/// Re-runs the command without `--daemon`, detached, and returns once it listens (once it has
/// written `DATA/service.json`); `what` names the service in errors.
pub(crate) fn daemonize(data: &Path, what: &str) -> Result<()> {
    std::fs::create_dir_all(data).with_context(|| format!("cannot create {}", data.display()))?;
    let status_path = data.join(SERVICE_STATUS_FILE);
    if let Ok(text) = std::fs::read_to_string(&status_path) {
        let pid = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["pid"].as_u64());
        if pid.is_some_and(alive) {
            bail!(
                "a {what} already runs on {} ({})",
                data.display(),
                status_path.display()
            );
        }
        let _ = std::fs::remove_file(&status_path);
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os()
        .skip(1)
        .filter(|a| a != "--daemon")
        .collect();
    let exe = std::env::current_exe().context("cannot find the encfs executable")?;
    let log_path = data.join("service.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(exe)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start the background {what}"))?;
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_path) {
            println!("{text}");
            return Ok(());
        }
        if let Some(code) = child
            .try_wait()
            .with_context(|| format!("background {what}"))?
        {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let last = log
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("(no log)");
            bail!("the {what} exited ({code}) before it listened: {last}");
        }
        if start.elapsed() > DAEMON_WAIT {
            let _ = child.kill();
            bail!(
                "the {what} did not listen within {DAEMON_WAIT:?} (log: {})",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a process runs (a zombie, killed but not yet reaped, does not).
pub(crate) fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_owned())
        })
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

/// Stops a service started with `--daemon` (SIGTERM to the pid of `DATA/service.json`).
pub(crate) fn stop(data: &Path, what: &str) -> Result<()> {
    let status_path = data.join(SERVICE_STATUS_FILE);
    let text = std::fs::read_to_string(&status_path).with_context(|| {
        format!(
            "no {what} runs on {} (no {})",
            data.display(),
            status_path.display()
        )
    })?;
    let pid = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["pid"].as_i64())
        .with_context(|| format!("malformed {}", status_path.display()))?;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).context("bad pid")?);
    if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_err() {
        let _ = std::fs::remove_file(&status_path);
        return Ok(());
    }
    let start = Instant::now();
    let raw = pid.as_raw() as u64;
    while alive(raw) && start.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if alive(raw) {
        bail!("the {what} (pid {pid}) did not stop within 15 s");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Client profiles

fn client_profile(command: ClientCommand, output: &GovOutput) -> Result<()> {
    match command {
        ClientCommand::Deploy {
            endpoint,
            signing_cert,
            signing_key,
            service_cert,
            name,
            config,
        } => {
            let identity = MemberIdentity::load(&signing_cert, &signing_key)?;
            let pinned = read_text(&service_cert, "service certificate")?;
            identity::cert_der_from_pem(&pinned)
                .map_err(|e| anyhow::anyhow!("{}: {e}", service_cert.display()))?;
            // Builds the pinned transport: a bad endpoint or an expired certificate fails here.
            GovernanceClient::new(&endpoint, &pinned, identity)
                .with_context(|| format!("governance client {name:?} ({endpoint})"))?;
            let path = profiles_path(config.as_deref())?;
            let mut profiles = load_profiles(&path)?;
            let profile = Profile {
                endpoint,
                signing_cert: absolute(&signing_cert)?,
                signing_key: absolute(&signing_key)?,
                service_cert: absolute(&service_cert)?,
            };
            profiles.clients.insert(name.clone(), profile);
            save_profiles(&path, &profiles)?;
            show_profile(&name, config.as_deref(), output)
        }
        ClientCommand::Show { name, config } => show_profile(&name, config.as_deref(), output),
        ClientCommand::Remove { name, config } => {
            let path = profiles_path(config.as_deref())?;
            let mut profiles = load_profiles(&path)?;
            if profiles.clients.remove(&name).is_none() {
                bail!("no governance client named {name:?} in {}", path.display());
            }
            save_profiles(&path, &profiles)
        }
    }
}

fn show_profile(name: &str, config: Option<&Path>, output: &GovOutput) -> Result<()> {
    let path = profiles_path(config)?;
    let profiles = load_profiles(&path)?;
    let profile = profiles
        .clients
        .get(name)
        .with_context(|| format!("no governance client named {name:?} in {}", path.display()))?;
    let cert = read_text(&profile.signing_cert, "member certificate")?;
    let member_id = identity::cert_der_from_pem(&cert)
        .map(|der| identity::member_id(&der))
        .map_err(|e| anyhow::anyhow!("{}: {e}", profile.signing_cert.display()))?;
    print(
        &json!({
            "name": name,
            "ccfEndpoint": profile.endpoint,
            "memberId": member_id,
            "signingCert": profile.signing_cert,
            "signingKey": profile.signing_key,
            "serviceCert": profile.service_cert,
        }),
        output,
    )
}

// ---------------------------------------------------------------------------------------------
// Members, proposals, contracts, deployment

fn member(command: MemberCommand, output: &GovOutput) -> Result<()> {
    match command {
        MemberCommand::Keygenerator {
            name,
            out,
            gen_enc_key,
        } => {
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let identity = MemberIdentity::generate(&name)?;
            let (key, cert) = identity.write_pems(&out)?;
            let mut shown = json!({
                "name": name,
                "memberId": identity.member_id(),
                "certificate": cert,
                "privateKey": key,
            });
            if gen_enc_key {
                let (private, public) = EncryptionKeyPair::generate()?.write_pems(&out, &name)?;
                shown["encryptionPrivateKey"] = json!(private);
                shown["encryptionPublicKey"] = json!(public);
            }
            print(&shown, output)
        }
        MemberCommand::Activate { client } => {
            with_client(&client, output, async |c| c.activate().await)
        }
        MemberCommand::Add {
            certificate,
            identifier,
            tenant_id,
            encryption_public_key,
            client,
        } => {
            let cert = read_text(&certificate, "member certificate")?;
            identity::cert_der_from_pem(&cert)
                .map_err(|e| anyhow::anyhow!("{}: {e}", certificate.display()))?;
            let key = encryption_public_key
                .map(|p| read_text(&p, "encryption public key"))
                .transpose()?;
            with_client(&client, output, async |c| {
                c.propose_member(&cert, &identifier, tenant_id.as_deref(), key.as_deref())
                    .await
            })
        }
        MemberCommand::Show { client } => with_client(&client, output, async |c| c.members().await),
        MemberCommand::SetTenantId { tenant_id, client } => {
            with_client(&client, output, async |c| {
                let me = c.member_id();
                let members = c.members().await?;
                let mut data = members["value"]
                    .as_array()
                    .and_then(|all| all.iter().find(|m| m["memberId"] == json!(me)))
                    .map(|m| m["memberData"].clone())
                    .filter(Value::is_object)
                    .unwrap_or_else(|| json!({}));
                data["tenantId"] = json!(tenant_id);
                c.propose_member_data(data).await
            })
        }
    }
}

fn proposal(command: ProposalCommand, output: &GovOutput) -> Result<()> {
    match command {
        ProposalCommand::List { client } => {
            with_client(&client, output, async |c| c.proposals().await)
        }
        ProposalCommand::Show {
            proposal_id,
            client,
        } => with_client(&client, output, async |c| c.proposal(&proposal_id).await),
        ProposalCommand::ShowActions {
            proposal_id,
            client,
        } => with_client(&client, output, async |c| {
            c.proposal_actions(&proposal_id).await
        }),
        ProposalCommand::Vote {
            proposal_id,
            action,
            client,
        } => with_client(&client, output, async |c| {
            c.vote(&proposal_id, action == VoteAction::Accept).await
        }),
        ProposalCommand::Withdraw {
            proposal_id,
            client,
        } => with_client(&client, output, async |c| c.withdraw(&proposal_id).await),
    }
}

fn contract(command: ContractCommand, output: &GovOutput) -> Result<()> {
    match command {
        ContractCommand::Create {
            id,
            data,
            version,
            client,
        } => {
            let data = data_argument(&data)?;
            with_client(&client, output, async |c| {
                c.put_contract(&id, json!(data), version.as_deref()).await?;
                c.contract(&id).await
            })
        }
        ContractCommand::Show { id, client } => {
            with_client(&client, output, async |c| c.contract(&id).await)
        }
        ContractCommand::Propose {
            id,
            version,
            client,
        } => with_client(&client, output, async |c| {
            c.propose_contract(&id, version.as_deref()).await
        }),
        ContractCommand::Vote {
            id,
            proposal_id,
            action,
            client,
        } => with_client(&client, output, async |c| {
            c.vote_contract(&id, proposal_id.as_deref(), action == VoteAction::Accept)
                .await
        }),
        ContractCommand::RuntimeOption(command) => runtime_option(command, output),
        ContractCommand::Event(EventCommand::List {
            contract_id,
            id,
            scope,
            all,
            client,
        }) => with_client(&client, output, async |c| {
            c.events(&contract_id, id.as_deref(), scope.as_deref(), all)
                .await
        }),
    }
}

fn runtime_option(command: RuntimeOptionCommand, output: &GovOutput) -> Result<()> {
    match command {
        RuntimeOptionCommand::Get {
            option,
            contract_id,
            client,
        } => with_client(&client, output, async |c| {
            c.runtime_option(&contract_id, option.as_str()).await
        }),
        RuntimeOptionCommand::Set {
            option,
            action,
            contract_id,
            client,
        } => {
            if option != RuntimeOption::Execution {
                bail!(
                    "only execution consent is set per member; propose {} instead: encfs governance contract runtime-option propose",
                    option.as_str()
                );
            }
            with_client(&client, output, async |c| {
                c.set_runtime_option(&contract_id, option.as_str(), action == Toggle::Enable)
                    .await?;
                c.runtime_option(&contract_id, option.as_str()).await
            })
        }
        RuntimeOptionCommand::Propose {
            option,
            action,
            contract_id,
            client,
        } => with_client(&client, output, async |c| {
            c.propose_runtime_option(&contract_id, option.as_str(), action == Toggle::Enable)
                .await
        }),
    }
}

fn deployment(command: DeploymentCommand, output: &GovOutput) -> Result<()> {
    match command {
        DeploymentCommand::Generate {
            contract_id,
            output_dir,
            security_policy_creation_option,
            image_registry,
            attestation_authority,
            client,
        } => {
            let generated = super::deployment_generate::run(
                &super::deployment_generate::Request {
                    contract_id: &contract_id,
                    output_dir: &output_dir,
                    policy: security_policy_creation_option,
                    image_registry: &image_registry,
                    attestation_authority: attestation_authority.as_deref(),
                    client: &client,
                },
                runtime()?,
            )?;
            print(&generated, output)
        }
        DeploymentCommand::Template(TemplateCommand::Propose {
            template_file,
            contract_id,
            client,
        }) => {
            let template = json_file(&template_file, "deployment template")?;
            with_client(&client, output, async |c| {
                c.propose_deployment_spec(&contract_id, template).await
            })
        }
        DeploymentCommand::Template(TemplateCommand::Show {
            contract_id,
            client,
        }) => with_client(&client, output, async |c| {
            c.deployment_spec(&contract_id).await
        }),
        DeploymentCommand::Policy(PolicyCommand::Propose {
            policy_file,
            contract_id,
            client,
        }) => {
            let policy = json_file(&policy_file, "clean-room policy")?;
            with_client(&client, output, async |c| {
                c.propose_clean_room_policy(&contract_id, policy).await
            })
        }
        DeploymentCommand::Policy(PolicyCommand::Show {
            contract_id,
            client,
        }) => with_client(&client, output, async |c| {
            c.clean_room_policy(&contract_id).await
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Offline checks

fn ledger_verify(dir: &Path, service_cert: Option<&Path>, output: &GovOutput) -> Result<()> {
    let (ledger_dir, default_cert) = if dir.join("ledger").is_dir() {
        (dir.join("ledger"), dir.join(identity::SERVICE_CERT_FILE))
    } else {
        (
            dir.to_owned(),
            dir.parent()
                .unwrap_or(dir)
                .join(identity::SERVICE_CERT_FILE),
        )
    };
    let cert_path = service_cert.map_or(default_cert, Path::to_owned);
    let der = identity::cert_der_from_pem(&read_text(&cert_path, "service certificate")?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", cert_path.display()))?;
    let summary = encfs_governance::ledger::verify_ledger(&ledger_dir, &der)
        .with_context(|| format!("the ledger in {} does not verify", ledger_dir.display()))?;
    print(
        &json!({
            "ledger": ledger_dir,
            "verified": true,
            "transactions": summary.transactions,
            "signatures": summary.signatures,
            "lastSignedSeqno": summary.last_signed_seqno,
            "tornTailBytes": summary.torn_tail_bytes,
        }),
        output,
    )
}

fn receipt(command: ReceiptCommand, output: &GovOutput) -> Result<()> {
    match command {
        ReceiptCommand::Get {
            transaction_id,
            client,
        } => with_client(&client, output, async |c| c.receipt(&transaction_id).await),
        ReceiptCommand::Verify { file, service_cert } => {
            let receipt: Receipt = serde_json::from_str(&read_text(&file, "receipt")?)
                .with_context(|| format!("{} is not a CCF JSON receipt", file.display()))?;
            let der =
                identity::cert_der_from_pem(&read_text(&service_cert, "service certificate")?)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", service_cert.display()))?;
            let verified = receipt.verify(&der).map_err(|e| {
                anyhow::anyhow!("the receipt {} does not verify: {e}", file.display())
            })?;
            print(
                &json!({
                    "verified": true,
                    "root": identity::hex(&verified.root),
                    "transactionId": verified.transaction_id.map(|(v, s)| format!("{v}.{s}")),
                }),
                output,
            )
        }
    }
}

/// Waits until the process is asked to stop (Ctrl-C or SIGTERM): how every `encfs` service
/// started in the foreground or with `--daemon` (governance, attestation, key vault) ends.
pub(crate) async fn until_stopped() -> Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot handle SIGTERM")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}
