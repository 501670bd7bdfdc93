//! Load generator for `benches/keyvault_release.sh`: a local key vault and a test attestation
//! authority in this process (the fixtures of keyvault/tests/common), one exportable key under the
//! reference's release policy, then C concurrent clients (each its own HTTPS connection) post
//! key releases for S seconds. Prints one JSON line: releases, releases per second, p50 and p99.
//!
//! ```text
//! keyvault-release --clients C --seconds S
//! ```
//! Each release costs the vault one ES256 bearer verification (plus the CA signature on its
//! certificate), one RS256 verification of the attestation token, one RSA-2048 OAEP encryption
//! (the wrap) and one RSA-2048 signature (the JWS): the signature dominates, so the script prints
//! `openssl speed rsa2048` next to the figure.

#[path = "../../keyvault/tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use encfs_crypto::kek::{KekPrivateKey, KekSize};
use serde_json::json;

const HOSTDATA: &str = "73973b78d70cc68353426de188db5dfc57e5b766e399935fb73a61127ea26d20";

fn options() -> Result<(usize, f64), String> {
    let mut args = std::env::args().skip(1);
    let (mut clients, mut seconds) = (4usize, 3.0f64);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--clients" => clients = value.parse().map_err(|e| format!("--clients: {e}"))?,
            "--seconds" => seconds = value.parse().map_err(|e| format!("--seconds: {e}"))?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok((clients.max(1), seconds))
}

#[tokio::main]
async fn main() {
    let (clients, seconds) = options().unwrap_or_else(|e| {
        eprintln!("keyvault-release: {e}");
        std::process::exit(2);
    });
    let authority = common::TestAuthority::start(21185).await;
    let vault = common::TestVault::start(21160, &[&authority.ca_pem]).await;
    let kek = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
    vault
        .client()
        .import_key(
            "bench-kek",
            &kek,
            &common::reference_policy(&authority.url, HOSTDATA),
            true,
        )
        .await
        .unwrap();
    let runtime = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
    let token = authority.sign(&authority.claims(HOSTDATA, &runtime));
    // Warm-up: the challenge, the authority's JWKS, one release checked end to end.
    let warm = vault.client();
    let jws = warm
        .release(
            "bench-kek",
            None,
            &token,
            None,
            Some("RSA_AES_KEY_WRAP_256"),
        )
        .await
        .unwrap();
    let decoded = encfs_keyvault::release::verify_release_jws(&jws).unwrap();
    let material =
        encfs_keyvault::release::unwrap_released_key(&decoded.payload, &runtime).unwrap();
    assert_eq!(*material, *kek.to_pkcs8_der().unwrap());

    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let client = vault.client();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                client
                    .release(
                        "bench-kek",
                        None,
                        &token,
                        None,
                        Some("RSA_AES_KEY_WRAP_256"),
                    )
                    .await
                    .unwrap();
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "{}",
        json!({
            "clients": clients,
            "releases": latencies.len(),
            "releases_per_second": latencies.len() as f64 / elapsed,
            "p50_ms": percentile(0.5),
            "p99_ms": percentile(0.99),
        })
    );
    vault.running.shutdown().await;
}
