//! Arguments of `encfs governance …`, with the reference's (`az cleanroom governance …`) command
//! and flag names wherever it has them.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use crate::structured::Format;

/// `encfs governance …`.
#[derive(Subcommand, Debug)]
pub enum GovernanceCommand {
    /// The consortium service: start or stop the embedded governance service.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Named client profiles (endpoint, member identity, pinned service certificate).
    #[command(subcommand)]
    Client(ClientCommand),
    /// Member identities and consortium membership.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Governance proposals and ballots.
    #[command(subcommand)]
    Proposal(ProposalCommand),
    /// Contracts, their runtime options and events.
    #[command(subcommand)]
    Contract(ContractCommand),
    /// The deployment template and the clean-room policy of a contract.
    #[command(subcommand)]
    Deployment(DeploymentCommand),
    /// Offline checks of a ledger.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Transaction receipts.
    #[command(subcommand)]
    Receipt(ReceiptCommand),
}

/// `--output` and `--query` of the governance commands (JSON by default, as `az`).
#[derive(Args, Debug, Clone)]
pub struct GovOutput {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Json, global = true)]
    pub output: Format,
    /// A JMESPath query applied to the result (as `az --query`).
    #[arg(long, value_name = "EXPR", global = true)]
    pub query: Option<String>,
}

/// The client profile a command acts through.
#[derive(Args, Debug, Clone)]
pub struct ClientSelection {
    /// The client profile (made by `encfs governance client deploy`).
    #[arg(long = "governance-client", value_name = "CLIENT")]
    pub client: String,
    /// Profile file (default: $ENCFS_GOVERNANCE_CONFIG or ~/.config/encfs/governance-clients.yaml).
    #[arg(long = "governance-config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum ServiceCommand {
    /// Start the service (HTTPS, CCF gov API + clean-room app), creating its identity on first start.
    Start {
        /// State directory: service_cert.pem (what clients pin), keys, ledger.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Address to listen on.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9443")]
        listen: SocketAddr,
        /// Certificate (PEM) of an initial member; repeatable. Used when the ledger is empty.
        #[arg(long = "initial-member", value_name = "CERT")]
        initial_members: Vec<PathBuf>,
        /// Run in the background; returns once the service listens.
        #[arg(long)]
        daemon: bool,
        /// Transactions between two signature transactions.
        #[arg(long, default_value_t = 5000)]
        signature_interval_txs: u64,
        /// Longest time an unsigned transaction waits for a signature, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        signature_interval_ms: u64,
        /// Root certificate (PEM) that clean rooms' SEV-SNP endorsement chains must end at
        /// (AMD's ARK, or a virtual authority's authority-ca.pem); repeatable. None: attested
        /// clean-room routes refuse every attestation.
        #[arg(long = "attestation-authority-ca", value_name = "FILE")]
        attestation_authority_cas: Vec<PathBuf>,
    },
    /// Stop a service started with --daemon.
    Stop {
        /// Its state directory.
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Record a named client profile.
    Deploy {
        /// The service's address, e.g. https://127.0.0.1:9443.
        #[arg(long = "ccf-endpoint", value_name = "URL")]
        endpoint: String,
        /// The member's certificate (PEM).
        #[arg(long = "signing-cert", value_name = "FILE")]
        signing_cert: PathBuf,
        /// The member's private key (PEM, P-384).
        #[arg(long = "signing-key", value_name = "FILE")]
        signing_key: PathBuf,
        /// The service certificate to pin (PEM).
        #[arg(long = "service-cert", value_name = "FILE")]
        service_cert: PathBuf,
        /// Profile name.
        #[arg(long)]
        name: String,
        /// Profile file (default: $ENCFS_GOVERNANCE_CONFIG or ~/.config/encfs/governance-clients.yaml).
        #[arg(long = "governance-config", value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Show a profile (no key material).
    Show {
        /// Profile name.
        #[arg(long)]
        name: String,
        /// Profile file.
        #[arg(long = "governance-config", value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Remove a profile (the key files stay).
    Remove {
        /// Profile name.
        #[arg(long)]
        name: String,
        /// Profile file.
        #[arg(long = "governance-config", value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum MemberCommand {
    /// Generate a member identity: a P-384 key and self-signed certificate (and, with
    /// --gen-enc-key, an RSA encryption key pair).
    Keygenerator {
        /// Member name (the certificate's CN and the file prefix).
        #[arg(long)]
        name: String,
        /// Output directory.
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
        /// Also generate NAME_enc_privk.pem / NAME_enc_pubk.pem.
        #[arg(long)]
        gen_enc_key: bool,
    },
    /// Activate this member (Accepted → Active).
    Activate {
        #[command(flatten)]
        client: ClientSelection,
    },
    /// Propose a new member.
    Add {
        /// The new member's certificate (PEM).
        #[arg(long, value_name = "FILE")]
        certificate: PathBuf,
        /// Its name in member_data.identifier.
        #[arg(long)]
        identifier: String,
        /// Its Entra tenant id.
        #[arg(long)]
        tenant_id: Option<String>,
        /// Its RSA encryption public key (PEM).
        #[arg(long, value_name = "FILE")]
        encryption_public_key: Option<PathBuf>,
        #[command(flatten)]
        client: ClientSelection,
    },
    /// List the members.
    Show {
        #[command(flatten)]
        client: ClientSelection,
    },
    /// Propose this member's tenant id.
    SetTenantId {
        /// The tenant id.
        #[arg(long)]
        tenant_id: String,
        #[command(flatten)]
        client: ClientSelection,
    },
}

/// A vote.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteAction {
    /// The canonical accepting ballot.
    Accept,
    /// The canonical rejecting ballot.
    Reject,
}

/// Enable or disable.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toggle {
    /// Enable.
    Enable,
    /// Disable.
    Disable,
}

/// A contract runtime option.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeOption {
    /// Execution consent (per member).
    Execution,
    /// Application logs export (by proposal).
    Logging,
    /// Infrastructure telemetry export (by proposal).
    Telemetry,
}

impl RuntimeOption {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Execution => "execution",
            Self::Logging => "logging",
            Self::Telemetry => "telemetry",
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum ProposalCommand {
    /// List the proposals the service keeps.
    List {
        #[command(flatten)]
        client: ClientSelection,
    },
    /// Show a proposal.
    Show {
        #[arg(long)]
        proposal_id: String,
        #[command(flatten)]
        client: ClientSelection,
    },
    /// Show a proposal's actions.
    ShowActions {
        #[arg(long)]
        proposal_id: String,
        #[command(flatten)]
        client: ClientSelection,
    },
    /// Vote on a proposal.
    Vote {
        #[arg(long)]
        proposal_id: String,
        #[arg(long, value_enum)]
        action: VoteAction,
        #[command(flatten)]
        client: ClientSelection,
    },
    /// Withdraw one of your proposals.
    Withdraw {
        #[arg(long)]
        proposal_id: String,
        #[command(flatten)]
        client: ClientSelection,
    },
}

#[derive(Subcommand, Debug)]
pub enum ContractCommand {
    /// Create (or with --version update) a draft contract.
    #[command(disable_version_flag = true)]
    Create {
        /// Contract id.
        #[arg(long)]
        id: String,
        /// The contract's data: text, or @FILE.
        #[arg(long)]
        data: String,
        /// The version being replaced (to update a draft).
        #[arg(long = "version", id = "contract_version")]
        version: Option<String>,
        #[command(flatten)]
        client: ClientSelection,
    },
    /// Show a contract.
    Show {
        #[arg(long)]
        id: String,
        #[command(flatten)]
        client: ClientSelection,
    },
    /// Propose a contract for acceptance.
    #[command(disable_version_flag = true)]
    Propose {
        #[arg(long)]
        id: String,
        /// The version shown by `contract show`.
        #[arg(long = "version", id = "contract_version")]
        version: Option<String>,
        #[command(flatten)]
        client: ClientSelection,
    },
    /// Vote on a contract's proposal.
    Vote {
        #[arg(long)]
        id: String,
        #[arg(long)]
        proposal_id: Option<String>,
        #[arg(long, value_enum)]
        action: VoteAction,
        #[command(flatten)]
        client: ClientSelection,
    },
    /// Runtime options: execution consent, logging, telemetry.
    #[command(subcommand)]
    RuntimeOption(RuntimeOptionCommand),
    /// Audit events of a contract.
    #[command(subcommand)]
    Event(EventCommand),
}

#[derive(Subcommand, Debug)]
pub enum RuntimeOptionCommand {
    /// The option's status.
    Get {
        #[arg(long, value_enum)]
        option: RuntimeOption,
        #[arg(long)]
        contract_id: String,
        #[command(flatten)]
        client: ClientSelection,
    },
    /// Set this member's execution consent.
    Set {
        #[arg(long, value_enum)]
        option: RuntimeOption,
        #[arg(long, value_enum)]
        action: Toggle,
        #[arg(long)]
        contract_id: String,
        #[command(flatten)]
        client: ClientSelection,
    },
    /// Propose enabling or disabling logging or telemetry.
    Propose {
        #[arg(long, value_enum)]
        option: RuntimeOption,
        #[arg(long, value_enum)]
        action: Toggle,
        #[arg(long)]
        contract_id: String,
        #[command(flatten)]
        client: ClientSelection,
    },
}

#[derive(Subcommand, Debug)]
pub enum EventCommand {
    /// List a contract's events (the latest of the key, or with --all its history).
    List {
        #[arg(long)]
        contract_id: String,
        /// Event id (default: the contract id).
        #[arg(long)]
        id: Option<String>,
        /// Event scope.
        #[arg(long)]
        scope: Option<String>,
        /// Every event written to the key, not only the latest.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        client: ClientSelection,
    },
}

#[derive(Subcommand, Debug)]
pub enum DeploymentCommand {
    /// Generate the deployment of a contract's spec: the ARM template, its security policy, the
    /// clean-room policy to propose, confcom's input and a pod manifest.
    Generate {
        #[arg(long)]
        contract_id: String,
        /// Directory the files are written to (created if missing).
        #[arg(long, value_name = "DIR")]
        output_dir: PathBuf,
        /// Which security policy to write.
        #[arg(long, value_enum, default_value = "generate")]
        security_policy_creation_option: SecurityPolicyCreationOption,
        /// The registry of the encfs image every container runs (`<registry>/encfs:<version>`).
        #[arg(long, value_name = "REGISTRY", default_value = "localhost")]
        image_registry: String,
        /// A local clean room: the INSECURE virtual attestation authority's URL the skr sidecar
        /// gets its reports from (without it, SEV-SNP hardware with MAA).
        #[arg(long, value_name = "URL")]
        attestation_authority: Option<String>,
        #[command(flatten)]
        client: ClientSelection,
    },
    /// The deployment template (ARM JSON).
    #[command(subcommand)]
    Template(TemplateCommand),
    /// The clean-room policy (`cleanroom-governance-policy.json`).
    #[command(subcommand)]
    Policy(PolicyCommand),
}

/// `--security-policy-creation-option`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityPolicyCreationOption {
    /// The fixed allow-all policy (tests and demonstrations only).
    AllowAll,
    /// A policy for exactly the generated containers.
    Generate,
}

#[derive(Subcommand, Debug)]
pub enum TemplateCommand {
    /// Propose a deployment template for a contract.
    Propose {
        #[arg(long, value_name = "FILE")]
        template_file: PathBuf,
        #[arg(long)]
        contract_id: String,
        #[command(flatten)]
        client: ClientSelection,
    },
    /// Show the accepted deployment template.
    Show {
        #[arg(long)]
        contract_id: String,
        #[command(flatten)]
        client: ClientSelection,
    },
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Propose a clean-room policy for a contract.
    Propose {
        #[arg(long, value_name = "FILE")]
        policy_file: PathBuf,
        #[arg(long)]
        contract_id: String,
        #[command(flatten)]
        client: ClientSelection,
    },
    /// Show the accepted clean-room policy.
    Show {
        #[arg(long)]
        contract_id: String,
        #[command(flatten)]
        client: ClientSelection,
    },
}

#[derive(Subcommand, Debug)]
pub enum LedgerCommand {
    /// Verify a ledger offline: every hash, every signature, the node's endorsement.
    Verify {
        /// The service's state directory (or its `ledger` directory).
        dir: PathBuf,
        /// The service certificate (default: DIR/service_cert.pem).
        #[arg(long, value_name = "FILE")]
        service_cert: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ReceiptCommand {
    /// Fetch the receipt of a committed transaction.
    Get {
        /// `view.seqno`.
        #[arg(long)]
        transaction_id: String,
        #[command(flatten)]
        client: ClientSelection,
    },
    /// Verify a receipt (JSON) against the service certificate.
    Verify {
        /// The receipt file.
        file: PathBuf,
        #[arg(long, value_name = "FILE")]
        service_cert: PathBuf,
    },
}
