//! The accept loop: TCP accept, a TLS handshake under a deadline, then HTTP/1.1 (hyper) with a
//! header-read deadline, each connection in its own task, the peer certificate handed to every
//! request of the connection, and graceful shutdown.
//!
//! Written as a loop over hyper rather than `axum::serve` because the limits matter here: axum's
//! `serve` has no handshake or header deadline, so one silent client could hold a task and a
//! socket forever. A failed accept, handshake or connection is counted in [`ServerStats`] and never
//! stops the loop. Connections beyond [`ServerLimits::max_connections`] wait in the kernel's
//! backlog instead of being accepted.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;
use tower_service::Service;

use super::conventions::{
    BodyLimit, DEFAULT_MAX_BODY_BYTES, ccf_method_not_allowed, with_ccf_conventions,
};
use super::tls::{ServerIdentity, TlsSetupError, server_config};

/// The limits of the server. The defaults follow CCF where CCF has one (body 1 MiB, 256 headers).
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// How long a client may take to complete the TLS handshake after TCP accept.
    pub handshake_timeout: Duration,
    /// How long a client may take to send a request's headers; also how long an idle keep-alive
    /// connection stays open (hyper starts this clock when it waits for the next request).
    pub header_read_timeout: Duration,
    /// How long a client may take to send a request's body.
    pub body_read_timeout: Duration,
    /// The largest request body, in bytes (CCF's default `max_body_size` is 1 MB = 1 MiB).
    pub max_body_bytes: usize,
    /// The largest number of request headers (CCF's `default_max_headers_count` is 256).
    pub max_headers: usize,
    /// The largest total size of a request's header section, in bytes.
    pub max_header_bytes: usize,
    /// The most connections served at once; later ones wait in the listen backlog.
    pub max_connections: usize,
    /// How long [`RunningServer::shutdown`] waits for open connections to finish.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(30),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_headers: 256,
            max_header_bytes: 64 * 1024,
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

impl ServerLimits {
    /// The body limit part, for [`with_ccf_conventions`].
    pub fn body_limit(&self) -> BodyLimit {
        BodyLimit {
            max_bytes: self.max_body_bytes,
            read_timeout: self.body_read_timeout,
        }
    }
}

/// The DER of the certificate the client presented in the TLS handshake, if it presented one.
/// The handshake proved the client holds its key; whether it is a member's is for the handler.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCertificate(pub Option<Vec<u8>>);

impl<S: Send + Sync> FromRequestParts<S> for PeerCertificate {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<PeerCertificate>()
            .cloned()
            .unwrap_or_default())
    }
}

/// The connection a request came on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The client's address.
    pub remote_addr: SocketAddr,
    /// The negotiated TLS version, e.g. `TLSv1_3`.
    pub tls_version: String,
}

impl<S: Send + Sync> FromRequestParts<S> for ConnectionInfo {
    type Rejection = super::conventions::ErrorResponse;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<ConnectionInfo>()
            .cloned()
            .ok_or_else(|| {
                super::conventions::ErrorResponse::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "the request did not come through the HTTPS server",
                )
            })
    }
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
}

/// Counters of what the accept loop saw; errors here never stop the server.
#[derive(Debug, Default)]
pub struct ServerStats {
    accepted: AtomicU64,
    accept_errors: AtomicU64,
    handshakes: AtomicU64,
    handshake_failures: AtomicU64,
    handshake_timeouts: AtomicU64,
    connection_errors: AtomicU64,
}

/// A copy of [`ServerStats`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// TCP connections accepted.
    pub accepted: u64,
    /// Failed `accept` calls (e.g. too many open files).
    pub accept_errors: u64,
    /// TLS handshakes completed.
    pub handshakes: u64,
    /// TLS handshakes the client or the server aborted.
    pub handshake_failures: u64,
    /// TLS handshakes not completed within the handshake timeout.
    pub handshake_timeouts: u64,
    /// HTTP connections that ended with an error (including the header-read timeout).
    pub connection_errors: u64,
}

impl ServerStats {
    /// The current counts.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            accepted: self.accepted.load(Ordering::Relaxed),
            accept_errors: self.accept_errors.load(Ordering::Relaxed),
            handshakes: self.handshakes.load(Ordering::Relaxed),
            handshake_failures: self.handshake_failures.load(Ordering::Relaxed),
            handshake_timeouts: self.handshake_timeouts.load(Ordering::Relaxed),
            connection_errors: self.connection_errors.load(Ordering::Relaxed),
        }
    }
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Serves `router` on `listener` over TLS until `shutdown` resolves, then stops accepting, lets
/// open connections finish their current request for up to `limits.shutdown_grace` and drops the
/// rest. The router is served as given: wrap it with [`with_ccf_conventions`] first (as
/// [`RunningServer::start`] does).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    limits: ServerLimits,
    stats: Arc<ServerStats>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_closed) => break,
            },
            () = &mut shutdown => break,
        };
        let (tcp, remote_addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_error) => {
                    // EMFILE, ECONNABORTED…: back off a little and go on accepting.
                    count(&stats.accept_errors);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        count(&stats.accepted);
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let stats = stats.clone();
        let watcher = graceful.watcher();
        connections.spawn(async move {
            let _slot = slot;
            let tls_stream =
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                    Err(_elapsed) => {
                        count(&stats.handshake_timeouts);
                        return;
                    }
                    Ok(Err(_error)) => {
                        count(&stats.handshake_failures);
                        return;
                    }
                    Ok(Ok(stream)) => stream,
                };
            count(&stats.handshakes);
            let (_, session) = tls_stream.get_ref();
            let peer = PeerCertificate(
                session
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|leaf| leaf.as_ref().to_vec()),
            );
            let info = ConnectionInfo {
                remote_addr,
                tls_version: session
                    .protocol_version()
                    .map(|version| format!("{version:?}"))
                    .unwrap_or_default(),
            };
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(peer.clone());
                    request.extensions_mut().insert(info.clone());
                    let mut router = router.clone();
                    let path = request.uri().path().to_owned();
                    let method = request.method().clone();
                    async move {
                        let response = router.call(request.map(Body::new)).await;
                        response.map(|response| ccf_method_not_allowed(&method, &path, response))
                    }
                });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_headers(limits.max_headers)
                .max_header_size(limits.max_header_bytes)
                .keep_alive(true);
            let connection = http.serve_connection(TokioIo::new(tls_stream), service);
            if watcher.watch(connection).await.is_err() {
                count(&stats.connection_errors);
            }
        });
    }

    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_grace) => {}
    }
    connections.shutdown().await;
}

/// A server running in its own task.
#[derive(Debug)]
pub struct RunningServer {
    local_addr: SocketAddr,
    stats: Arc<ServerStats>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Binds `addr` (port 0 picks a free port) and serves `router` with CCF's conventions
    /// ([`with_ccf_conventions`]) over TLS with `identity`.
    pub async fn bind(
        addr: SocketAddr,
        identity: ServerIdentity,
        router: Router,
        limits: ServerLimits,
    ) -> Result<Self, ServerError> {
        let tls = server_config(&identity)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        Self::start(listener, tls, router, limits)
    }

    /// Serves `router` with CCF's conventions on an already bound listener.
    pub fn start(
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        router: Router,
        limits: ServerLimits,
    ) -> Result<Self, ServerError> {
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
        let router = with_ccf_conventions(router, limits.body_limit());
        let stats = Arc::new(ServerStats::default());
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, tls, router, limits, stats.clone(), async {
            let _ = stopped.await;
        }));
        Ok(Self {
            local_addr,
            stats,
            stop: Some(stop),
            task,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The accept loop's counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Stops accepting, lets open requests finish (up to the shutdown grace) and returns when the
    /// server has stopped.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Runs until the server stops (it stops only through [`RunningServer::shutdown`], so this
    /// is for a process whose only job is serving).
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }
}
