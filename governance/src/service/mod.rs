//! The governance service: the state machine ([`crate::kv`], [`crate::gov_api`], [`crate::app`])
//! behind one lock, every write appended to the [`crate::ledger`] and acknowledged only once it
//! is durable, and the HTTPS routes ([`routes`]) of the CCF gov API and the clean-room app.
//!
//! A write runs under the lock: a transaction over the state, its write set appended to the
//! ledger (which assigns the `view.seqno`), then applied to the state. The lock is released
//! before the caller waits for the ledger's fsync ticket, so concurrent writers share one fsync
//! (group commit), and no response names a transaction that a crash could lose.

pub mod routes;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::app::events::EventHistory;
use crate::attestation::CleanRoomAttestation;
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::gov_api;
use crate::identity::{self, IdentityError, ServiceIdentity};
use crate::kv::{Store, Tx, Version};
use crate::ledger::{Ledger, LedgerConfig, LedgerError, ReceiptMaterial};
use crate::ledger_secret::{LedgerSecret, LedgerSecretError};
use crate::server::{RunningServer, ServerError, ServerIdentity, ServerLimits};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The service or node identity could not be created or loaded.
    #[error("service identity in {dir}: {source}")]
    Identity {
        /// The data directory.
        dir: PathBuf,
        /// The cause.
        source: IdentityError,
    },
    /// The ledger could not be opened, or it does not verify.
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    /// A ledger transaction does not replay onto the state.
    #[error("ledger transaction {version} does not replay: {message}")]
    Replay {
        /// The transaction.
        version: String,
        /// The cause.
        message: String,
    },
    /// An initial member could not be registered.
    #[error("initial member: {0}")]
    InitialMember(String),
    /// The HTTPS server could not start.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The TLS identity could not be used.
    #[error("TLS identity: {0}")]
    Tls(String),
    /// The ledger secret (which encrypts the private maps) could not be loaded or created.
    #[error(transparent)]
    LedgerSecret(#[from] LedgerSecretError),
}

/// How to start a service.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Where the identities and the ledger live.
    pub data_dir: PathBuf,
    /// Certificates (PEM) of the initial members; used only when the ledger is empty.
    pub initial_members: Vec<String>,
    /// When signature transactions are written.
    pub ledger: LedgerConfig,
}

/// The state and the ledger, always changed together under one lock.
struct Inner {
    store: Store,
    ledger: Ledger,
}

/// A running governance state machine (without its HTTPS front: see [`Service::serve`]).
pub struct Service {
    inner: Mutex<Inner>,
    identity: ServiceIdentity,
    service_cert_pem: String,
    data_dir: PathBuf,
    /// Verifies clean rooms' attestations and wraps their secrets; `None` refuses every
    /// attested route (fail closed).
    attestation: Option<Arc<dyn CleanRoomAttestation>>,
    /// Seals the private maps of every write set the ledger stores.
    secret: LedgerSecret,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

fn internal(error: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::InternalError, error.to_string())
}

impl Service {
    /// Opens the service in `config.data_dir`: creates the service and node identities on first
    /// start (`service_cert.pem` is what clients pin), opens and verifies the ledger, replays it,
    /// and on an empty ledger registers the initial members (as Accepted).
    ///
    /// # Errors
    /// [`ServiceError`] naming the directory, the ledger file and offset, or the member.
    pub fn open(config: &ServiceConfig) -> Result<Arc<Self>, ServiceError> {
        Self::open_with_attestation(config, None)
    }

    /// [`Service::open`] with the verifier of the attested clean-room routes (events, secrets,
    /// runtime option status): e.g. [`crate::attestation::SnpAttestationVerifier`]. `None` is
    /// what [`Service::open`] does: those routes refuse every attestation.
    ///
    /// # Errors
    /// As [`Service::open`].
    pub fn open_with_attestation(
        config: &ServiceConfig,
        attestation: Option<Arc<dyn CleanRoomAttestation>>,
    ) -> Result<Arc<Self>, ServiceError> {
        let dir = &config.data_dir;
        let identity_error = |source| ServiceError::Identity {
            dir: dir.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| {
            identity_error(IdentityError::Io {
                path: dir.clone(),
                source: e,
            })
        })?;
        let identity = if dir.join(identity::SERVICE_CERT_FILE).exists() {
            ServiceIdentity::load_from_dir(dir).map_err(identity_error)?
        } else {
            let fresh = ServiceIdentity::generate().map_err(identity_error)?;
            fresh.write_to_dir(dir).map_err(identity_error)?;
            fresh
        };
        let secret = LedgerSecret::load_or_create(dir)?;
        let (ledger, replayed) = Ledger::open(
            &dir.join("ledger"),
            config.ledger.clone(),
            &identity.node,
            &identity.service.cert_der,
        )?;
        let mut store = Store::new(ledger.view());
        for transaction in replayed {
            let version = Version::new(transaction.view, transaction.seqno);
            let replay_error = |message: String| ServiceError::Replay {
                version: version.to_string(),
                message,
            };
            let write_set = secret
                .open(&transaction.write_set)
                .map_err(|e| replay_error(e.to_string()))?;
            store
                .apply(version, &write_set)
                .map_err(|e| replay_error(e.to_string()))?;
        }
        let service = Arc::new(Self {
            service_cert_pem: identity.service.cert_pem(),
            identity,
            inner: Mutex::new(Inner { store, ledger }),
            data_dir: dir.clone(),
            attestation,
            secret,
        });
        let empty = service.lock().ledger.last_seqno() == 0;
        if empty && !config.initial_members.is_empty() {
            let members = config.initial_members.clone();
            let (_, ticket) = service
                .write_locked(|tx, _| {
                    for pem in &members {
                        let der = identity::cert_der_from_pem(pem)
                            .map_err(|e| ApiError::new(ErrorCode::InvalidInput, e))?;
                        crate::gov_api::bootstrap_member(
                            tx,
                            &identity::member_id(&der),
                            pem,
                            None,
                            None,
                        )?;
                    }
                    Ok(())
                })
                .map_err(|e| ServiceError::InitialMember(e.message))?;
            if let Some(ticket) = ticket {
                ticket.wait()?;
            }
            service.lock().ledger.sign_now()?.wait()?;
        } else if !empty {
            // A restart may repeat its first command line; a new member on an existing service
            // is a proposal, never a flag that would be silently ignored.
            for pem in &config.initial_members {
                let der = identity::cert_der_from_pem(pem).map_err(ServiceError::InitialMember)?;
                let id = identity::member_id(&der);
                if service
                    .read(|tx| crate::gov_api::member_status(tx, &id))
                    .is_none()
                {
                    return Err(ServiceError::InitialMember(format!(
                        "member {id} is not a member of the existing service in {}: an initial \
                         member applies only to a new service (propose set_member to add one)",
                        dir.display()
                    )));
                }
            }
        }
        Ok(service)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("governance state lock poisoned")
    }

    /// The service certificate (PEM) that clients pin.
    pub fn service_cert_pem(&self) -> &str {
        &self.service_cert_pem
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Runs a read-only function over the current state.
    pub fn read<T>(&self, f: impl FnOnce(&Tx<'_>) -> T) -> T {
        let inner = self.lock();
        let tx = inner.store.transaction();
        f(&tx)
    }

    /// Runs a read over the state with the event history at hand (the store records every
    /// write of an event key).
    pub fn read_with_history<T>(&self, f: impl FnOnce(&Tx<'_>, &dyn EventHistory) -> T) -> T {
        let inner = self.lock();
        let tx = inner.store.transaction();
        f(&tx, &inner.store)
    }

    /// Runs `f` as a transaction under the lock (with the current Merkle root, for proposal ids
    /// and state digests), appends its writes to the ledger and applies them; returns the result
    /// and the ticket to wait on. A failed `f` leaves no trace.
    fn write_locked<T>(
        &self,
        f: impl FnOnce(&mut Tx<'_>, &[u8]) -> ApiResult<T>,
    ) -> ApiResult<(T, Option<crate::ledger::Ticket>)> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let root = inner.ledger.root().unwrap_or([0; 32]);
        let mut tx = inner.store.transaction();
        let out = f(&mut tx, &root)?;
        let write_set = tx.into_write_set();
        if write_set.is_empty() {
            return Ok((out, None));
        }
        let ticket = inner
            .ledger
            .append(self.secret.seal(&write_set).map_err(internal)?, None)
            .map_err(internal)?;
        let version = Version::new(ticket.view(), ticket.seqno());
        inner.store.apply(version, &write_set).map_err(internal)?;
        Ok((out, Some(ticket)))
    }

    /// Runs `f` as a transaction under the lock (see `write_locked`), then waits, outside the
    /// lock, until the transaction is durable.
    /// Returns the result and the transaction's version (`None` when nothing was written).
    pub async fn write<T>(
        &self,
        f: impl FnOnce(&mut Tx<'_>, &[u8]) -> ApiResult<T>,
    ) -> ApiResult<(T, Option<Version>)> {
        let (out, ticket) = self.write_locked(f)?;
        let Some(ticket) = ticket else {
            return Ok((out, None));
        };
        let version = Version::new(ticket.view(), ticket.seqno());
        ticket.wait_async().await.map_err(internal)?;
        Ok((out, Some(version)))
    }

    /// Appends a signature transaction if one is due (call every signature interval).
    pub fn sign_if_due(&self) -> Result<(), LedgerError> {
        self.lock().ledger.sign_if_due().map(drop)
    }

    /// Signs every transaction not yet covered by a signature and waits until that is durable:
    /// what a clean shutdown does, so the ledger ends on a signature (as a complete CCF ledger
    /// file does) and every transaction has a receipt.
    ///
    /// # Errors
    /// [`LedgerError`] from signing or the fsync.
    pub async fn sign_pending(&self) -> Result<(), LedgerError> {
        let ticket = {
            let mut inner = self.lock();
            if inner.ledger.last_seqno() == inner.ledger.last_signed_seqno() {
                return Ok(());
            }
            inner.ledger.sign_now()?
        };
        ticket.wait_async().await
    }

    /// The current Merkle root (zeros for an empty ledger).
    pub fn merkle_root(&self) -> [u8; 32] {
        self.lock().ledger.root().unwrap_or([0; 32])
    }

    /// The status of a transaction id: `Committed` once it is in the ledger and fsynced,
    /// `Pending` while its fsync is under way, `Unknown` for a later seqno of the current view,
    /// `Invalid` otherwise (another view's history).
    pub fn transaction_status(&self, transaction_id: &str) -> ApiResult<&'static str> {
        let inner = self.lock();
        // A transaction is Committed only once it is on disk: one appended but not yet fsynced
        // (group commit in progress) is Pending, so no client sees "Committed" for a transaction
        // a crash could still lose.
        gov_api::transaction_status(&inner.store, transaction_id, inner.ledger.durable_seqno())
            .map(|status| status.as_str())
    }

    /// What a receipt of `seqno` needs (the signature covering it must exist).
    pub fn receipt_material(&self, seqno: u64) -> Result<ReceiptMaterial, LedgerError> {
        self.lock().ledger.receipt_material(seqno)
    }

    /// Serves the routes on `listen` over HTTPS with the node certificate (issued by the service
    /// certificate), and writes a signature transaction every signature interval.
    ///
    /// # Errors
    /// [`ServiceError::Server`] when the address cannot be bound.
    pub async fn serve(
        self: &Arc<Self>,
        listen: SocketAddr,
        limits: ServerLimits,
    ) -> Result<RunningServer, ServiceError> {
        let chain = format!("{}{}", self.identity.node.cert_pem(), self.service_cert_pem);
        let tls = ServerIdentity::from_pem(&chain, &self.identity.node.key.to_pem())
            .map_err(|e| ServiceError::Tls(e.to_string()))?;
        let server = RunningServer::bind(listen, tls, routes::router(self.clone()), limits).await?;
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let Some(service) = weak.upgrade() else {
                    return;
                };
                if let Err(error) = service.sign_if_due() {
                    eprintln!("encfs governance: signature transaction failed: {error}");
                }
            }
        });
        Ok(server)
    }
}
