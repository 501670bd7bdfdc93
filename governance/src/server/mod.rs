//! The governance service's HTTPS layer, with no governance logic: rustls (ring provider) with
//! CCF-style optional client certificates, an accept loop with handshake and header deadlines and
//! graceful shutdown, and CCF's HTTP conventions (error bodies, `api-version`, COSE bodies, body
//! limit, transaction-id header, 404/405 bodies).
//!
//! The application builds an axum [`axum::Router`], reads the caller's certificate with the
//! [`PeerCertificate`] extractor and COSE bodies with [`CoseBody`], answers errors with
//! [`ErrorResponse`], and starts it with [`RunningServer::bind`].

pub mod accept;
pub mod conventions;
pub mod tls;

pub use accept::{
    ConnectionInfo, PeerCertificate, RunningServer, ServerError, ServerLimits, ServerStats,
    StatsSnapshot, serve,
};
pub use conventions::{
    ApiVersion, BodyLimit, COSE_CONTENT_TYPE, CoseBody, DEFAULT_MAX_BODY_BYTES, ErrorDetail,
    ErrorResponse, TRANSACTION_ID_HEADER, ccf_method_not_allowed, require_api_version,
    set_transaction_id, with_ccf_conventions, with_transaction_id,
};
pub use tls::{AnyClientCertificate, ServerIdentity, TlsSetupError, server_config};
