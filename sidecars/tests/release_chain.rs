//! The release chain with the real services on loopback, in process: the virtual attestation
//! authority (HTTPS), the key vault (HTTPS), the identity endpoint, and the skr and secrets
//! sidecars. A data owner imports a KEK with the reference's release policy for hostdata H and
//! stores a DEK wrapped with it; a clean room whose security policy hashes to H gets the DEK
//! from `/secrets/unwrap`, one whose policy does not is refused with no key material in the
//! answer.
//!
//! Every service runs on this test's runtime: when the test ends, passing or failing, the
//! runtime drops and every listener and task with it.
//!
//! `key_release_latency` (ignored; `benches/key_release_latency.sh`) times "sidecars ready" →
//! "DEK returned by /secrets/unwrap".

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use encfs_attestation::maa::MaaClient;
use encfs_attestation::virtual_provider::VirtualProvider;
use encfs_crypto::kek::{KekPrivateKey, KekSize, OaepHash};
use encfs_keyvault::client::{KeyVaultClient, TokenSource};
use encfs_keyvault::identity::Credential;
use encfs_sidecars::secrets::{SecretsConfig, SecretsSidecar};
use encfs_sidecars::server::RunningSidecar;
use encfs_sidecars::skr::{SkrConfig, SkrSidecar};
use serde_json::{Value, json};

/// Ports this crate's integration tests may use.
const PORTS: std::ops::Range<u16> = 21230..21300;

/// A free loopback address in [`PORTS`] (bound and released; the caller binds it at once).
fn free_addr() -> SocketAddr {
    for port in PORTS {
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().unwrap();
        }
    }
    panic!("no free port in {PORTS:?}");
}

async fn listener() -> tokio::net::TcpListener {
    for port in PORTS {
        if let Ok(listener) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            return listener;
        }
    }
    panic!("no free port in {PORTS:?}");
}

const KEK_NAME: &str = "kek-publisher";
const SECRET_NAME: &str = "wrapped-publisher-input-dek-kek-publisher";

/// The shared services and the owner's setup.
struct World {
    _dir: tempfile::TempDir,
    authority_url: String,
    authority_ca: String,
    vault_url: String,
    vault_ca: String,
    identity_url: String,
    credential: Credential,
    dek: Vec<u8>,
    hostdata_policy: String,
    _running: Vec<Box<dyn std::any::Any + Send>>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl World {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let authority =
            encfs_attestation::authority::VirtualAuthority::open(&dir.path().join("authority"))
                .unwrap();
        let authority = encfs_attestation::service::serve(authority, free_addr())
            .await
            .unwrap();
        let authority_url = authority.url();
        let authority_ca = authority.ca_pem().to_owned();

        let vault = encfs_keyvault::server::Vault::open(
            &dir.path().join("vault"),
            [authority_ca.as_bytes()],
        )
        .unwrap();
        let vault_ca = vault.dir().ca_pem().unwrap();
        let credential = Credential::create(vault.dir(), "cleanroom").unwrap();
        let running_vault = vault.serve(free_addr()).await.unwrap();
        let vault_url = running_vault.url();

        let identity = encfs_sidecars::server::spawn(
            listener().await,
            encfs_keyvault::identity::router(credential.clone()),
        )
        .unwrap();
        let identity_url = identity.url();

        // The data owner: a KEK behind the reference's release policy for H, and a wrapped DEK.
        let hostdata_policy =
            "package policy\n\nallow_all := false\n# the clean room's policy\n".to_owned();
        let hostdata = sha256_hex(hostdata_policy.as_bytes());
        let owner = KeyVaultClient::new(
            &vault_url,
            [vault_ca.as_bytes()],
            TokenSource::from(credential.clone()),
        )
        .unwrap();
        let release_policy = json!({
            "anyOf": [{
                "allOf": [
                    {"claim": "x-ms-sevsnpvm-hostdata", "equals": hostdata},
                    {"claim": "x-ms-compliance-status", "equals": "azure-compliant-uvm"},
                    {"claim": "x-ms-attestation-type", "equals": "sevsnpvm"},
                ],
                "authority": authority_url,
            }],
            "version": "1.0.0",
        });
        let kek = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
        owner
            .import_key(KEK_NAME, &kek, &release_policy, true)
            .await
            .unwrap();
        let mut dek = vec![0u8; 32];
        aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut dek)
            .unwrap();
        let wrapped = kek
            .public_key()
            .encrypt_oaep(OaepHash::Sha256, &dek)
            .unwrap();
        owner
            .set_secret(SECRET_NAME, &STANDARD.encode(wrapped))
            .await
            .unwrap();

        Self {
            _dir: dir,
            authority_url,
            authority_ca,
            vault_url,
            vault_ca,
            identity_url,
            credential,
            dek,
            hostdata_policy,
            _running: vec![
                Box::new(authority),
                Box::new(running_vault),
                Box::new(identity),
            ],
        }
    }

    /// A clean room declaring `policy`: its skr and secrets sidecars.
    async fn clean_room(&self, policy: &str) -> (RunningSidecar, RunningSidecar) {
        let provider = VirtualProvider::new(
            &self.authority_url,
            self.authority_ca.as_bytes(),
            policy.as_bytes(),
            false,
        )
        .unwrap();
        let attester =
            MaaClient::new([self.authority_ca.as_bytes(), self.vault_ca.as_bytes()]).unwrap();
        let skr = SkrSidecar::new(SkrConfig {
            provider: Arc::new(provider),
            attester: Arc::new(attester),
            trusted_cas: vec![
                ("vault-ca".into(), self.vault_ca.clone().into_bytes()),
                (
                    "authority-ca".into(),
                    self.authority_ca.clone().into_bytes(),
                ),
            ],
            identity_endpoint: Some(self.identity_url.clone()),
        })
        .unwrap();
        let skr = encfs_sidecars::server::spawn(listener().await, Arc::new(skr).router()).unwrap();
        let secrets = SecretsSidecar::new(SecretsConfig {
            skr: Some(skr.url()),
            identity_endpoint: Some(self.identity_url.clone()),
            trusted_cas: vec![("vault-ca".into(), self.vault_ca.clone().into_bytes())],
        })
        .unwrap();
        let secrets =
            encfs_sidecars::server::spawn(listener().await, Arc::new(secrets).router()).unwrap();
        (skr, secrets)
    }

    fn unwrap_request(&self) -> Value {
        json!({
            "clientId": self.credential.client_id,
            "tenantId": self.credential.tenant_id,
            "kid": SECRET_NAME,
            "akvEndpoint": self.vault_url,
            "kek": {
                "kid": KEK_NAME,
                "akvEndpoint": self.vault_url,
                "maaEndpoint": self.authority_url,
            },
        })
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn unwrap(secrets: &RunningSidecar, request: &Value) -> (u16, String) {
    let response = http()
        .post(format!("{}/secrets/unwrap", secrets.url()))
        .json(request)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dek_is_released_only_to_the_declared_policy() {
    let world = World::start().await;

    // The right policy: the DEK comes back.
    let (skr, secrets) = world.clean_room(&world.hostdata_policy).await;
    let (status, text) = unwrap(&secrets, &world.unwrap_request()).await;
    assert_eq!(status, 200, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        STANDARD.decode(body["value"].as_str().unwrap()).unwrap(),
        world.dek
    );

    // The skr's own release answers the key as a JWK string.
    let response = http()
        .post(format!("{}/key/release", skr.url()))
        .json(&json!({
            "maa_endpoint": world.authority_url,
            "akv_endpoint": world.vault_url,
            "kid": KEK_NAME,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let jwk: Value = serde_json::from_str(body["key"].as_str().unwrap()).unwrap();
    assert!(jwk["d"].is_string() && jwk["kid"].as_str().unwrap().contains(KEK_NAME));
    skr.shutdown().await.unwrap();
    secrets.shutdown().await.unwrap();

    // Another policy (hostdata ≠ H): refused, with no key material in the answer.
    let (skr, secrets) = world
        .clean_room("package policy\n\nallow_all := true\n")
        .await;
    let (status, text) = unwrap(&secrets, &world.unwrap_request()).await;
    assert_eq!(status, 403, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["code"], "KeyReleaseFailed", "{text}");
    let dek_b64 = STANDARD.encode(&world.dek);
    assert!(
        !text.contains(&dek_b64) && !text.contains("\"d\""),
        "{text}"
    );
    let response = http()
        .post(format!("{}/key/release", skr.url()))
        .json(&json!({
            "maa_endpoint": world.authority_url,
            "akv_endpoint": world.vault_url,
            "kid": KEK_NAME,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let text = response.text().await.unwrap();
    assert!(text.contains("secure key release failed"), "{text}");
    assert!(
        !text.contains("\"d\"") && !text.contains("key_hsm"),
        "{text}"
    );
    skr.shutdown().await.unwrap();
    secrets.shutdown().await.unwrap();
}

/// "sidecars ready" (runtime key generated, listening) → "DEK returned by /secrets/unwrap",
/// over `ENCFS_BENCH_REQUESTS` requests (default 20); writes `bench-out/key_release.md`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: benches/key_release_latency.sh"]
async fn key_release_latency() {
    let requests: usize = std::env::var("ENCFS_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let world = World::start().await;
    let (skr, secrets) = world.clean_room(&world.hostdata_policy).await;
    let request = world.unwrap_request();
    let mut times = Vec::with_capacity(requests);
    for _ in 0..requests {
        let start = Instant::now();
        let (status, text) = unwrap(&secrets, &request).await;
        let elapsed = start.elapsed();
        assert_eq!(status, 200, "{text}");
        times.push(elapsed);
    }
    times.sort();
    let pick = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (median, p90, min, max) = (pick(0.5), pick(0.9), times[0], times[times.len() - 1]);
    let report = format!(
        "# Key release latency\n\n\
         From \"sidecars ready\" (skr runtime key generated, both sidecars listening) to \"DEK \
         returned by `/secrets/unwrap`\": identity token, report from the virtual authority, \
         MAA-shaped token, Key Vault release (policy evaluation, RSA-OAEP ‖ AES-KWP wrap, RS256 \
         JWS), JWS chain + signature check, unwrap, second token, secret read, RSA-OAEP-SHA-256 \
         decrypt. All services in one process on loopback, HTTPS where the reference has it; \
         debug build of the workspace crates (dependencies at opt-level 2).\n\n\
         | requests | median | p90 | min | max | target |\n|---|---|---|---|---|---|\n\
         | {requests} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | ≤ 200 ms median |\n",
        ms(median),
        ms(p90),
        ms(min),
        ms(max)
    );
    println!("{report}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench-out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("key_release.md"), report).unwrap();
    skr.shutdown().await.unwrap();
    secrets.shutdown().await.unwrap();
}
