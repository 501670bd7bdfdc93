//! The HTTPS server and the pinned client transport over real TLS sockets on 127.0.0.1: mutual TLS
//! as CCF does it, pinning, TLS versions, CCF's HTTP conventions, limits and timeouts, graceful
//! shutdown and the commit wait. curl (if installed) is the independent client.
//!
//! Ports: 18400–18499, one per test, so tests in this binary can run in parallel.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use encfs_governance::server::{
    ApiVersion, ConnectionInfo, CoseBody, PeerCertificate, RunningServer, ServerIdentity,
    ServerLimits, require_api_version, server_config, with_transaction_id,
};
use encfs_governance::transport::{
    ClientIdentity, CommitStatusRoute, CommitWait, GovernanceTransport, RequestBody, TransactionId,
    TransportError, TransportOptions,
};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, PKCS_ECDSA_P384_SHA384};
use reqwest::Method;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn port(offset: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 18400 + offset))
}

/// A self-signed service certificate (CA) and a node certificate it issued, as CCF has them.
struct ServicePki {
    service_cert_pem: String,
    node_chain_pem: String,
    node_key_pem: String,
}

impl ServicePki {
    fn new(node_names: &[&str]) -> Self {
        Self::with_node_validity(node_names, None)
    }

    fn with_node_validity(node_names: &[&str], expired: Option<()>) -> Self {
        let service_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let mut service_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        service_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "CCF Service");
        service_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let service_cert = service_params.self_signed(&service_key).unwrap();
        let issuer = rcgen::Issuer::new(service_params, &service_key);

        let node_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let mut node_params = CertificateParams::new(
            node_names
                .iter()
                .map(|name| name.to_string())
                .collect::<Vec<_>>(),
        )
        .unwrap();
        node_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "CCF Node");
        if expired.is_some() {
            node_params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            node_params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let node_cert = node_params.signed_by(&node_key, &issuer).unwrap();
        Self {
            service_cert_pem: service_cert.pem(),
            node_chain_pem: format!("{}{}", node_cert.pem(), service_cert.pem()),
            node_key_pem: node_key.serialize_pem(),
        }
    }

    fn identity(&self) -> ServerIdentity {
        ServerIdentity::from_pem(&self.node_chain_pem, &self.node_key_pem).unwrap()
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        let der = pem::parse(&self.service_cert_pem).unwrap().into_contents();
        roots.add(CertificateDer::from(der)).unwrap();
        roots
    }
}

/// A member identity: a self-signed P-384 certificate, as `member keygenerator` makes them.
struct Member {
    cert_pem: String,
    key_pem: String,
    cert_der: Vec<u8>,
}

impl Member {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
        }
    }

    fn identity(&self) -> ClientIdentity {
        ClientIdentity::from_pem(&self.cert_pem, &self.key_pem).unwrap()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// How many times each transaction id has been polled, to answer Pending before Committed.
#[derive(Clone, Default)]
struct Polls(Arc<Mutex<HashMap<String, usize>>>);

async fn whoami(PeerCertificate(peer): PeerCertificate) -> String {
    peer.map(|der| sha256_hex(&der))
        .unwrap_or_else(|| "none".into())
}

async fn transaction_status(
    State(polls): State<Polls>,
    version: ApiVersion,
    Path(id): Path<String>,
) -> axum::Json<serde_json::Value> {
    let seen = {
        let mut polls = polls.0.lock().unwrap();
        let seen = polls.entry(id.clone()).or_default();
        *seen += 1;
        *seen
    };
    let status = match id.as_str() {
        "2.5" if seen >= 3 => "Committed",
        "2.5" => "Pending",
        "9.9" => "Invalid",
        _ => "Pending",
    };
    axum::Json(serde_json::json!({
        "status": status, "transactionId": id, "apiVersion": version.as_str()
    }))
}

/// The test application: echo routes, a COSE route under `/gov` with the api-version check, a
/// slow route, a write that returns a transaction id, and the transaction status route.
fn test_router() -> Router {
    let gov = Router::new()
        .route(
            "/cose",
            post(|version: ApiVersion, CoseBody(body): CoseBody| async move {
                format!("{} {}", version.as_str(), body.len())
            }),
        )
        .route("/service/transactions/{id}", get(transaction_status))
        .route_layer(axum::middleware::from_fn(require_api_version))
        .with_state(Polls::default());
    Router::new()
        .route("/whoami", get(whoami))
        .route(
            "/tls",
            get(|info: ConnectionInfo| async move { info.tls_version }),
        )
        .route(
            "/echo",
            post(|body: Bytes| async move { body.len().to_string() }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(400)).await;
                "slow done"
            }),
        )
        .route(
            "/write",
            post(|| async { with_transaction_id("written", 2, 5) }),
        )
        .route(
            "/write-never",
            post(|| async { with_transaction_id("written", 3, 1) }),
        )
        .route(
            "/write-invalid",
            post(|| async { with_transaction_id("written", 9, 9) }),
        )
        .nest("/gov", gov)
}

async fn start(offset: u16, pki: &ServicePki, limits: ServerLimits) -> RunningServer {
    RunningServer::bind(port(offset), pki.identity(), test_router(), limits)
        .await
        .unwrap()
}

fn transport(
    server: &RunningServer,
    host: &str,
    service_cert_pem: &str,
    member: Option<&Member>,
) -> Result<GovernanceTransport, TransportError> {
    GovernanceTransport::new(
        &format!("https://{host}:{}", server.local_addr().port()),
        service_cert_pem,
        member.map(Member::identity).as_ref(),
        TransportOptions::default(),
    )
}

/// A rustls client config that trusts the service certificate, for raw HTTP over TLS.
fn raw_client_config(
    pki: &ServicePki,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(pki.roots())
        .with_no_client_auth();
    Arc::new(config)
}

/// Sends `request` (a whole HTTP/1.1 request, `Connection: close`) over TLS and returns the
/// status, the header block and the body.
async fn raw_https(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    request: &[u8],
) -> std::io::Result<(u16, String, Vec<u8>)> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let mut tls = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await?;
    tls.write_all(request).await?;
    // tokio-rustls may keep records buffered until flushed.
    tls.flush().await?;
    let mut answer = Vec::new();
    // The server may close right after answering (413): read what arrived.
    let _ = tls.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, _) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body_start = answer
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|index| index + 4)
        .unwrap_or(answer.len());
    Ok((status, head.to_owned(), answer[body_start..].to_vec()))
}

fn error_code(body: &[u8]) -> serde_json::Value {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    json["error"].clone()
}

#[tokio::test]
async fn the_peer_certificate_reaches_the_handler_with_and_without_mutual_tls() {
    let pki = ServicePki::new(&["127.0.0.1", "localhost"]);
    let server = start(0, &pki, ServerLimits::default()).await;
    let member = Member::new("publisher");

    let with_cert = transport(&server, "127.0.0.1", &pki.service_cert_pem, Some(&member)).unwrap();
    let answer = with_cert.get("/whoami").await.unwrap();
    assert_eq!(answer.body, sha256_hex(&member.cert_der).as_bytes());

    let anonymous = transport(&server, "localhost", &pki.service_cert_pem, None).unwrap();
    let answer = anonymous.get("/whoami").await.unwrap();
    assert_eq!(&answer.body[..], b"none");

    // A second member on its own connection gets its own certificate, not the first one's.
    let other = Member::new("consumer");
    let answer = transport(&server, "127.0.0.1", &pki.service_cert_pem, Some(&other))
        .unwrap()
        .get("/whoami")
        .await
        .unwrap();
    assert_eq!(answer.body, sha256_hex(&other.cert_der).as_bytes());
    server.shutdown().await;
}

/// Presents a member certificate but signs the handshake with another key: no proof of
/// possession. rustls' own builder refuses a mismatched pair, so a resolver hands it over.
#[derive(Debug)]
struct MismatchedKey(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for MismatchedKey {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn a_client_certificate_without_its_key_is_refused_in_the_handshake() {
    let pki = ServicePki::new(&["127.0.0.1"]);
    let server = start(1, &pki, ServerLimits::default()).await;
    let member = Member::new("publisher");
    let impostor = Member::new("impostor");
    let wrong_key = PrivateKeyDer::Pkcs8(
        pem::parse(&impostor.key_pem)
            .unwrap()
            .into_contents()
            .into(),
    );
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&wrong_key).unwrap();
    let certified = rustls::sign::CertifiedKey::new(
        vec![CertificateDer::from(member.cert_der.clone())],
        signing_key,
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Control: the same resolver with the right key is served, so the refusal below is the
    // signature check and nothing else.
    let right_key =
        PrivateKeyDer::Pkcs8(pem::parse(&member.key_pem).unwrap().into_contents().into());
    let honest = rustls::sign::CertifiedKey::new(
        vec![CertificateDer::from(member.cert_der.clone())],
        rustls::crypto::ring::sign::any_supported_type(&right_key).unwrap(),
    );
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(pki.roots())
            .with_client_cert_resolver(Arc::new(MismatchedKey(Arc::new(honest.clone()))));
        let (status, _, body) = raw_https(
            server.local_addr(),
            Arc::new(config),
            b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, sha256_hex(&member.cert_der).as_bytes());
    }
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(pki.roots())
            .with_client_cert_resolver(Arc::new(MismatchedKey(Arc::new(certified.clone()))));
        let result = raw_https(
            server.local_addr(),
            Arc::new(config),
            b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        // TLS 1.2 fails in the handshake; TLS 1.3 clients learn of the alert on first read.
        match result {
            Err(_) => {}
            Ok((status, _, body)) => {
                assert_eq!(
                    status,
                    0,
                    "{version:?}: served {}",
                    String::from_utf8_lossy(&body)
                )
            }
        }
    }
    // The server is still serving.
    let answer = transport(&server, "127.0.0.1", &pki.service_cert_pem, Some(&member))
        .unwrap()
        .get("/whoami")
        .await
        .unwrap();
    assert_eq!(answer.body, sha256_hex(&member.cert_der).as_bytes());
    assert!(
        server.stats().handshake_failures >= 1,
        "{:?}",
        server.stats()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_pinned_to_another_service_certificate_fails_clearly() {
    let pki = ServicePki::new(&["127.0.0.1"]);
    let other = ServicePki::new(&["127.0.0.1"]);
    let server = start(2, &pki, ServerLimits::default()).await;
    let error = transport(&server, "127.0.0.1", &other.service_cert_pem, None)
        .unwrap()
        .get("/whoami")
        .await
        .unwrap_err();
    assert!(
        matches!(error, TransportError::ServiceCertificateMismatch { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("https://127.0.0.1:18402/whoami"),
        "{message}"
    );
    assert!(!message.contains("PRIVATE"), "{message}");

    // The node certificate does not name "localhost": a name error, not a trust error.
    let only_ip = ServicePki::new(&["127.0.0.1"]);
    let server_ip = start(3, &only_ip, ServerLimits::default()).await;
    let error = transport(&server_ip, "localhost", &only_ip.service_cert_pem, None)
        .unwrap()
        .get("/whoami")
        .await
        .unwrap_err();
    assert!(
        matches!(error, TransportError::ServiceNameMismatch { .. }),
        "{error:?}"
    );
    server.shutdown().await;
    server_ip.shutdown().await;
}

#[tokio::test]
async fn expired_certificates_and_unreachable_endpoints_are_distinct_errors() {
    let expired = ServicePki::with_node_validity(&["127.0.0.1"], Some(()));
    let server = start(4, &expired, ServerLimits::default()).await;
    let error = transport(&server, "127.0.0.1", &expired.service_cert_pem, None)
        .unwrap()
        .get("/whoami")
        .await
        .unwrap_err();
    assert!(
        matches!(error, TransportError::ServiceCertificateExpired { .. }),
        "{error:?}"
    );

    // A pinned service certificate that has itself expired is refused before any connection.
    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let old_pin = params.self_signed(&key).unwrap().pem();
    let error = GovernanceTransport::new(
        "https://127.0.0.1:18404",
        &old_pin,
        None,
        TransportOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(error, TransportError::ServiceCertificateExpired { .. }),
        "{error:?}"
    );

    // Nothing listens on 18499.
    let error = GovernanceTransport::new(
        "https://127.0.0.1:18499",
        &expired.service_cert_pem,
        None,
        TransportOptions::default(),
    )
    .unwrap()
    .get("/gov/service/members")
    .await
    .unwrap_err();
    assert!(
        matches!(error, TransportError::Unreachable { .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("https://127.0.0.1:18499/gov/service/members")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_member_key_that_does_not_match_its_certificate_is_a_clear_error() {
    let pki = ServicePki::new(&["127.0.0.1"]);
    let member = Member::new("a");
    let other = Member::new("b");
    let identity = ClientIdentity::from_pem(&member.cert_pem, &other.key_pem).unwrap();
    let error = GovernanceTransport::new(
        "https://127.0.0.1:18405",
        &pki.service_cert_pem,
        Some(&identity),
        TransportOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(error, TransportError::ClientIdentity { .. }),
        "{error:?}"
    );
    assert!(!error.to_string().contains("PRIVATE KEY"));
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_both_served() {
    let pki = ServicePki::new(&["127.0.0.1"]);
    let server = start(6, &pki, ServerLimits::default()).await;
    for (version, name) in [
        (&rustls::version::TLS12, "TLSv1_2"),
        (&rustls::version::TLS13, "TLSv1_3"),
    ] {
        let (status, _, body) = raw_https(
            server.local_addr(),
            raw_client_config(&pki, &[version]),
            b"GET /tls HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        assert_eq!(status, 200);
        assert_eq!(String::from_utf8_lossy(&body), name);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn bodies_over_ccf_s_one_mebibyte_get_413_request_body_too_large() {
    let pki = ServicePki::new(&["127.0.0.1"]);
    let server = start(7, &pki, ServerLimits::default()).await;
    let client = transport(&server, "127.0.0.1", &pki.service_cert_pem, None).unwrap();

    let exactly = vec![b'a'; 1024 * 1024];
    let answer = client
        .send(Method::POST, "/echo", RequestBody::Json(exactly))
        .await
        .unwrap();
    assert_eq!(&answer.body[..], b"1048576");

    let over = vec![b'a'; 1024 * 1024 + 1];
    let error = client
        .send(Method::POST, "/echo", RequestBody::Json(over))
        .await
        .unwrap_err();
    match error {
        TransportError::Service {
            status,
            code,
            message,
            ..
        } => {
            assert_eq!((status, code.as_str()), (413, "RequestBodyTooLarge"));
            assert_eq!(
                message,
                "HTTP message body is too large (Content-Length: 1048577, max size allowed: 1MB)"
            );
        }
        other => panic!("{other:?}"),
    }

    // A chunked body has no Content-Length: the limit applies while it streams.
    let mut request = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..17 {
        request.extend_from_slice(format!("{:x}\r\n", 65536).as_bytes());
        request.extend(std::iter::repeat_n(b'b', 65536));
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let (status, head, body) = raw_https(
        server.local_addr(),
        raw_client_config(&pki, &[&rustls::version::TLS13]),
        &request,
    )
    .await
    .unwrap();
    assert_eq!(status, 413, "{head}");
    assert_eq!(error_code(&body)["code"], "RequestBodyTooLarge");
    assert_eq!(
        error_code(&body)["message"],
        "HTTP request body is too large (max size allowed: 1MB)"
    );
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn cose_routes_require_the_cose_content_type_as_ccf_does() {
    let pki = ServicePki::new(&["127.0.0.1"]);
    let server = start(8, &pki, ServerLimits::default()).await;
    let config = raw_client_config(&pki, &[&rustls::version::TLS13]);

    let missing =
        b"POST /gov/cose HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
    let (status, head, body) = raw_https(server.local_addr(), config.clone(), missing)
        .await
        .unwrap();
    assert_eq!(status, 401);
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: cose-sign1 realm=\"signed request access\""),
        "{head}"
    );
    let error = error_code(&body);
    assert_eq!(error["code"], "InvalidAuthenticationInfo");
    assert_eq!(
        error["details"][0]["message"],
        "Missing content-type header"
    );

    let wrong = b"POST /gov/cose HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
    let (status, _, body) = raw_https(server.local_addr(), config.clone(), wrong)
        .await
        .unwrap();
    assert_eq!(status, 401);
    assert_eq!(
        error_code(&body)["details"][0]["message"],
        "Content type is not set to application/cose"
    );

    // The transport sends COSE with the right type; the body arrives byte for byte.
    let client = transport(&server, "127.0.0.1", &pki.service_cert_pem, None).unwrap();
    let answer = client
        .post_cose("/gov/cose?api-version=2024-07-01", vec![0xd2; 300])
        .await
        .unwrap();
    assert_eq!(&answer.body[..], b"2024-07-01 300");
    server.shutdown().await;
}

#[tokio::test]
async fn api_versions_unknown_paths_and_verbs_get_ccf_s_answers() {
    let pki = ServicePki::new(&["127.0.0.1"]);
    let server = start(9, &pki, ServerLimits::default()).await;
    let client = transport(&server, "127.0.0.1", &pki.service_cert_pem, None).unwrap();

    let answer = client.get("/gov/service/transactions/1.1").await.unwrap();
    assert_eq!(
        answer.json::<serde_json::Value>().unwrap()["apiVersion"],
        "latest"
    );
    let answer = client
        .get("/gov/service/transactions/1.1?api-version=2023-06-01-preview")
        .await
        .unwrap();
    assert_eq!(
        answer.json::<serde_json::Value>().unwrap()["apiVersion"],
        "2023-06-01-preview"
    );

    let error = client
        .get("/gov/service/transactions/1.1?api-version=2099-01-01")
        .await
        .unwrap_err();
    match &error {
        TransportError::Service {
            status,
            code,
            message,
            ..
        } => {
            assert_eq!(
                (*status, code.as_str()),
                (400, "UnsupportedApiVersionValue")
            );
            assert!(message.contains("'2099-01-01'"), "{message}");
        }
        other => panic!("{other:?}"),
    }

    // Unknown paths answer 404 before any api-version check, as in CCF.
    let error = client
        .get("/gov/nothing?api-version=bad")
        .await
        .unwrap_err();
    match &error {
        TransportError::Service {
            status,
            code,
            message,
            ..
        } => {
            assert_eq!((*status, code.as_str()), (404, "ResourceNotFound"));
            assert_eq!(message, "Unknown path: /gov/nothing.");
        }
        other => panic!("{other:?}"),
    }

    let error = client.get("/echo").await.unwrap_err();
    match &error {
        TransportError::Service {
            status,
            code,
            message,
            ..
        } => {
            assert_eq!((*status, code.as_str()), (405, "UnsupportedHttpVerb"));
            assert_eq!(message, "Allowed methods for '/echo' are: OPTIONS, POST.");
        }
        other => panic!("{other:?}"),
    }
    let answer = client
        .send(Method::OPTIONS, "/echo", RequestBody::Empty)
        .await
        .unwrap();
    assert_eq!(answer.status, 204);
    assert_eq!(answer.headers["allow"], "OPTIONS, POST");
    server.shutdown().await;
}

#[tokio::test]
async fn many_concurrent_connections_are_all_served() {
    let pki = ServicePki::new(&["127.0.0.1"]);
    let server = start(10, &pki, ServerLimits::default()).await;
    let config = raw_client_config(&pki, &[&rustls::version::TLS13, &rustls::version::TLS12]);
    let addr = server.local_addr();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..128 {
        let config = config.clone();
        tasks.spawn(async move {
            raw_https(
                addr,
                config,
                b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await
        });
    }
    let started = Instant::now();
    let mut served = 0;
    while let Some(result) = tasks.join_next().await {
        let (status, _, body) = result.unwrap().unwrap();
        assert_eq!((status, &body[..]), (200, &b"slow done"[..]));
        served += 1;
    }
    assert_eq!(served, 128);
    // 128 requests of 400 ms each, concurrently: far less than 128 × 400 ms.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.stats().handshakes, 128);
    server.shutdown().await;
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_the_timeout_while_others_are_served() {
    let pki = ServicePki::new(&["127.0.0.1"]);
    let limits = ServerLimits {
        handshake_timeout: Duration::from_millis(600),
        header_read_timeout: Duration::from_millis(600),
        ..ServerLimits::default()
    };
    let server = start(11, &pki, limits).await;

    // One client connects and never starts TLS; another completes TLS and never sends a request.
    let mut silent_tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    let connector =
        tokio_rustls::TlsConnector::from(raw_client_config(&pki, &[&rustls::version::TLS13]));
    let mut silent_tls = connector
        .connect(
            ServerName::try_from("127.0.0.1").unwrap(),
            TcpStream::connect(server.local_addr()).await.unwrap(),
        )
        .await
        .unwrap();

    // Meanwhile others are served.
    let client = transport(&server, "127.0.0.1", &pki.service_cert_pem, None).unwrap();
    assert_eq!(&client.get("/whoami").await.unwrap().body[..], b"none");

    let started = Instant::now();
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), silent_tcp.read(&mut buffer))
        .await
        .expect("the server kept the silent TCP client open");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let read = tokio::time::timeout(Duration::from_secs(5), silent_tls.read(&mut buffer))
        .await
        .expect("the server kept the silent TLS client open");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        server.stats().handshake_timeouts >= 1,
        "{:?}",
        server.stats()
    );

    // Garbage instead of a ClientHello costs only that connection.
    let mut garbage = TcpStream::connect(server.local_addr()).await.unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let _ = garbage.read(&mut buffer).await;
    assert_eq!(&client.get("/whoami").await.unwrap().body[..], b"none");
    assert!(
        server.stats().handshake_failures >= 1,
        "{:?}",
        server.stats()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_the_request_in_flight_and_stops_accepting() {
    let pki = ServicePki::new(&["127.0.0.1"]);
    let server = start(12, &pki, ServerLimits::default()).await;
    let client = transport(&server, "127.0.0.1", &pki.service_cert_pem, None).unwrap();
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move { client.get("/slow").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.shutdown().await;
    let answer = in_flight.await.unwrap().unwrap();
    assert_eq!(&answer.body[..], b"slow done");
    let error = GovernanceTransport::new(
        "https://127.0.0.1:18412",
        &pki.service_cert_pem,
        None,
        TransportOptions::default(),
    )
    .unwrap()
    .get("/whoami")
    .await
    .unwrap_err();
    assert!(
        matches!(error, TransportError::Unreachable { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn the_commit_wait_polls_until_committed() {
    let pki = ServicePki::new(&["127.0.0.1"]);
    let server = start(13, &pki, ServerLimits::default()).await;
    let client = transport(&server, "127.0.0.1", &pki.service_cert_pem, None).unwrap();
    let fast = CommitWait {
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
    };
    let route = CommitStatusRoute::GovServiceTransactions;

    let answer = client
        .send_and_wait_for_commit(Method::POST, "/write", RequestBody::Empty, &route, fast)
        .await
        .unwrap();
    assert_eq!(
        answer.transaction_id().unwrap(),
        Some(TransactionId { view: 2, seqno: 5 })
    );

    let started = Instant::now();
    let error = client
        .send_and_wait_for_commit(
            Method::POST,
            "/write-never",
            RequestBody::Empty,
            &route,
            fast,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, TransportError::CommitTimeout { .. }),
        "{error:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(error.to_string().contains("3.1"), "{error}");

    let error = client
        .send_and_wait_for_commit(
            Method::POST,
            "/write-invalid",
            RequestBody::Empty,
            &route,
            fast,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, TransportError::TransactionInvalid { .. }),
        "{error:?}"
    );
    assert_eq!(CommitWait::default().interval, Duration::from_millis(500));
    assert_eq!(CommitWait::default().timeout, Duration::from_secs(5));
    server.shutdown().await;
}

#[tokio::test]
async fn server_config_is_usable_with_an_own_listener() {
    // The lead may bind the socket itself (e.g. to report the port before serving).
    let pki = ServicePki::new(&["127.0.0.1"]);
    let listener = tokio::net::TcpListener::bind(port(14)).await.unwrap();
    let server = RunningServer::start(
        listener,
        server_config(&pki.identity()).unwrap(),
        test_router(),
        ServerLimits::default(),
    )
    .unwrap();
    let client = transport(&server, "127.0.0.1", &pki.service_cert_pem, None).unwrap();
    assert_eq!(&client.get("/whoami").await.unwrap().body[..], b"none");
    server.shutdown().await;
}

/// curl, an independent TLS and HTTP implementation (OpenSSL), as client: pinned CA, client
/// certificate, TLS 1.2 and 1.3. Skipped with a message where curl is not installed.
#[tokio::test]
async fn curl_talks_to_the_server_with_and_without_a_client_certificate() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("curl is not installed: skipping the curl client check");
        return;
    }
    let pki = ServicePki::new(&["127.0.0.1"]);
    let server = start(15, &pki, ServerLimits::default()).await;
    let member = Member::new("curl-member");
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("service_cert.pem");
    let cert = dir.path().join("member_cert.pem");
    let key = dir.path().join("member_privk.pem");
    std::fs::write(&ca, &pki.service_cert_pem).unwrap();
    std::fs::write(&cert, &member.cert_pem).unwrap();
    std::fs::write(&key, &member.key_pem).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let url = format!("https://127.0.0.1:{}/whoami", server.local_addr().port());
    let curl = |extra: Vec<String>| {
        let ca = ca.clone();
        let url = url.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new("curl")
                    .args(["-sS", "--fail-with-body", "--cacert"])
                    .arg(&ca)
                    .args(extra)
                    .arg(&url)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let client_cert = vec![
        "--cert".to_string(),
        cert.display().to_string(),
        "--key".to_string(),
        key.display().to_string(),
    ];
    for versions in [
        ["--tlsv1.2", "--tls-max", "1.2"],
        ["--tlsv1.3", "--tls-max", "1.3"],
    ] {
        let mut args: Vec<String> = versions.iter().map(|arg| arg.to_string()).collect();
        args.extend(client_cert.clone());
        let output = curl(args).await;
        assert!(output.status.success(), "{output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            sha256_hex(&member.cert_der)
        );
    }
    let output = curl(Vec::new()).await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "none");

    // curl pinned to another service certificate refuses the server.
    let other = ServicePki::new(&["127.0.0.1"]);
    std::fs::write(&ca, &other.service_cert_pem).unwrap();
    let output = curl(Vec::new()).await;
    assert!(!output.status.success(), "{output:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_self_signed_service_certificate_may_also_be_presented_directly() {
    // Without a node certificate: the service certificate (not a CA) is the TLS certificate and
    // the pin at once. A CA certificate cannot be an end-entity certificate in webpki, so CCF's
    // layout (a node certificate issued by the service certificate) is the one to prefer.
    let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let identity = ServerIdentity::from_pem(&cert.pem(), &key.serialize_pem()).unwrap();
    let server = RunningServer::bind(port(16), identity, test_router(), ServerLimits::default())
        .await
        .unwrap();
    let client = transport(&server, "127.0.0.1", &cert.pem(), None).unwrap();
    assert_eq!(&client.get("/whoami").await.unwrap().body[..], b"none");
    server.shutdown().await;
}

#[tokio::test]
async fn a_body_that_stops_arriving_gets_408_and_oversized_headers_get_431() {
    let pki = ServicePki::new(&["127.0.0.1"]);
    let limits = ServerLimits {
        body_read_timeout: Duration::from_millis(500),
        ..ServerLimits::default()
    };
    let server = start(17, &pki, limits).await;
    let connector =
        tokio_rustls::TlsConnector::from(raw_client_config(&pki, &[&rustls::version::TLS13]));
    let mut tls = connector
        .connect(
            ServerName::try_from("127.0.0.1").unwrap(),
            TcpStream::connect(server.local_addr()).await.unwrap(),
        )
        .await
        .unwrap();
    tls.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer))
        .await
        .expect("the server waited for the body forever")
        .ok();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("RequestTimeout"), "{text}");

    let mut request = b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_vec();
    request.extend_from_slice(b"x-padding: ");
    request.extend(std::iter::repeat_n(b'p', 70 * 1024));
    request.extend_from_slice(b"\r\n\r\n");
    let (status, head, _) = raw_https(
        server.local_addr(),
        raw_client_config(&pki, &[&rustls::version::TLS13]),
        &request,
    )
    .await
    .unwrap();
    assert_eq!(status, 431, "{head}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_service_that_accepts_but_never_answers_is_a_timeout() {
    let pki = ServicePki::new(&["127.0.0.1"]);
    // A TCP listener that accepts and then says nothing, not even a TLS ServerHello.
    let listener = tokio::net::TcpListener::bind(port(18)).await.unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let client = GovernanceTransport::new(
        "https://127.0.0.1:18418",
        &pki.service_cert_pem,
        None,
        TransportOptions {
            connect_timeout: Duration::from_millis(400),
            request_timeout: Duration::from_millis(800),
            ..TransportOptions::default()
        },
    )
    .unwrap();
    let started = Instant::now();
    let error = client.get("/whoami").await.unwrap_err();
    assert!(matches!(error, TransportError::Timeout { .. }), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    holder.abort();
}

/// The server answers before reading a declared-too-large body and closes; the client must still
/// see the 413 answer rather than a reset, even for a body far over the limit.
#[tokio::test]
async fn a_body_far_over_the_limit_still_gets_the_413_answer() {
    let pki = ServicePki::new(&["127.0.0.1"]);
    let server = start(19, &pki, ServerLimits::default()).await;
    let client = transport(&server, "127.0.0.1", &pki.service_cert_pem, None).unwrap();
    for size in [2usize << 20, 32 << 20] {
        let error = client
            .send(Method::POST, "/echo", RequestBody::Json(vec![b'a'; size]))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, TransportError::Service { status: 413, code, .. } if code == "RequestBodyTooLarge"),
            "{size}: {error:?}"
        );
    }
    // The connection was closed, the client reconnects and is served.
    assert_eq!(&client.get("/whoami").await.unwrap().body[..], b"none");
    server.shutdown().await;
}
