//! A micro-benchmark of the governance HTTPS layer (not a CI test): requests per second of a
//! trivial mutual-TLS route over keep-alive connections, and full TLS handshakes (with a client
//! certificate) per second, full and resumed. Client and server share the process and the
//! machine, so the figures are a floor for the server alone. All keys are P-384 (CCF's curve),
//! signed and verified by ring.
//!
//! `nice -n 19 cargo run --release -p encfs-governance --example https_bench -- [SECONDS] [CONNECTIONS]`

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use encfs_governance::server::{PeerCertificate, RunningServer, ServerIdentity, ServerLimits};
use encfs_governance::transport::{ClientIdentity, GovernanceTransport, TransportOptions};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, PKCS_ECDSA_P384_SHA384};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let connections: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);

    // CCF's layout: a service CA, a node certificate it issued, a self-signed member.
    let service_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
    let mut service_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    service_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let service_cert = service_params.self_signed(&service_key).unwrap();
    let issuer = rcgen::Issuer::new(service_params, &service_key);
    let node_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
    let node_cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&node_key, &issuer)
        .unwrap();
    let member_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
    let member_cert = CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .self_signed(&member_key)
        .unwrap();

    let router = Router::new().route(
        "/whoami",
        get(|PeerCertificate(peer): PeerCertificate| async move {
            if peer.is_some() { "member" } else { "none" }
        }),
    );
    let identity = ServerIdentity::from_pem(
        &format!("{}{}", node_cert.pem(), service_cert.pem()),
        &node_key.serialize_pem(),
    )
    .unwrap();
    let server = RunningServer::bind(
        SocketAddr::from(([127, 0, 0, 1], 18490)),
        identity,
        router,
        ServerLimits::default(),
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    println!("server on {addr}; {seconds} s per measurement, {connections} client connections");

    // 1. Keep-alive: each client has its own pooled connection and loops over GET /whoami.
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    let member = ClientIdentity::from_pem(&member_cert.pem(), &member_key.serialize_pem()).unwrap();
    for _ in 0..connections {
        let client = GovernanceTransport::new(
            &format!("https://{addr}"),
            &service_cert.pem(),
            Some(&member),
            TransportOptions::default(),
        )
        .unwrap();
        let done = done.clone();
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let answer = client.get("/whoami").await.unwrap();
                assert_eq!(&answer.body[..], b"member");
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let requests = done.load(Ordering::Relaxed);
    println!(
        "keep-alive mTLS GET: {requests} requests, {:.0} requests/s",
        requests as f64 / seconds as f64
    );

    // 2. Handshakes: a new TLS connection with the member certificate for every request.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(service_cert.der().to_vec()))
        .unwrap();
    // Full handshakes (resumption off, as every new CLI process does) and resumed ones.
    for (version, resume, name) in [
        (&rustls::version::TLS13, false, "TLS 1.3 full"),
        (&rustls::version::TLS12, false, "TLS 1.2 full"),
        (&rustls::version::TLS13, true, "TLS 1.3 resumed"),
        (&rustls::version::TLS12, true, "TLS 1.2 resumed"),
    ] {
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(
                vec![CertificateDer::from(member_cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(member_key.serialize_der().into()),
            )
            .unwrap();
        if !resume {
            config.resumption = rustls::client::Resumption::disabled();
        }
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let done = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..connections {
            let connector = connector.clone();
            let done = done.clone();
            let failed = failed.clone();
            tasks.spawn(async move {
                let mut answer = Vec::with_capacity(512);
                while Instant::now() < deadline {
                    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                    // Without it Nagle and delayed ACKs stall TLS 1.2's client flights ~40 ms.
                    tcp.set_nodelay(true).unwrap();
                    let mut tls = connector
                        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
                        .await
                        .unwrap();
                    tls.write_all(b"GET /whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .await
                        .unwrap();
                    // Without a flush tokio-rustls may keep the request buffered (seen once in
                    // ~5000 resumed TLS 1.2 connections: the server then times out the headers).
                    tls.flush().await.unwrap();
                    answer.clear();
                    let read = tls.read_to_end(&mut answer).await;
                    if !answer.ends_with(b"member") {
                        let (_, session) = tls.get_ref();
                        eprintln!(
                            "{name}: FAILED {read:?} {} resumed={:?}",
                            String::from_utf8_lossy(&answer),
                            session.handshake_kind()
                        );
                        failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        let handshakes = done.load(Ordering::Relaxed);
        println!(
            "{name}: {} failed; server {:?}",
            failed.load(Ordering::Relaxed),
            server.stats()
        );
        println!(
            "{name} mTLS handshake + 1 request per connection: {handshakes}, {:.0} handshakes/s",
            handshakes as f64 / seconds as f64
        );
    }
    println!("server counters: {:?}", server.stats());
    server.shutdown().await;
}
