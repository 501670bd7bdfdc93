//! The Azure SDK for Python (azure-keyvault-keys, azure-keyvault-secrets, azure-identity) as a
//! real client of the local vault: ManagedIdentityCredential against the identity router,
//! KeyClient import_key with a KeyReleasePolicy, get_key, release_key with an attestation token,
//! SecretClient set/get — then the released key is unwrapped here and compared with the key the
//! SDK imported. The python comes from ENCFS_KEYVAULT_PYTHON (scripts/keyvault-venv.sh; scripts/test-all.sh sets it).

mod common;

use std::net::SocketAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{TestAuthority, TestVault, reference_policy};
use encfs_crypto::kek::{KekPrivateKey, KekSize};
use encfs_keyvault::release::{unwrap_released_key, verify_release_jws};
use serde_json::Value;

const PORTS: u16 = 21150;
const HOSTDATA: &str = "aa11bb22cc33dd44ee55ff6600778899aa11bb22cc33dd44ee55ff6600778899";

#[tokio::test(flavor = "multi_thread")]
async fn the_azure_sdk_for_python_imports_gets_releases_and_uses_secrets() {
    let python = std::env::var("ENCFS_KEYVAULT_PYTHON").expect(
        "ENCFS_KEYVAULT_PYTHON is not set: run the tests with scripts/test-all.sh, which creates \
         the virtual environment with the Azure SDK for Python (scripts/keyvault-venv.sh) and sets it",
    );
    let authority = TestAuthority::start(PORTS).await;
    let vault = TestVault::start(PORTS + 25, &[&authority.ca_pem]).await;

    // The identity router, as `encfs sidecar identity` serves it.
    let mut identity_url = None;
    for offset in 0..20 {
        let addr: SocketAddr = format!("127.0.0.1:{}", PORTS - 20 + offset)
            .parse()
            .unwrap();
        if let Ok(listener) = tokio::net::TcpListener::bind(addr).await {
            let router = encfs_keyvault::identity::router(vault.credential.clone());
            tokio::spawn(async move { axum::serve(listener, router).await });
            identity_url = Some(format!("http://{addr}"));
            break;
        }
    }
    let identity_url = identity_url.expect("a free port for the identity router");

    let runtime = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
    let token = authority.sign(&authority.claims(HOSTDATA, &runtime));
    let work = tempfile::tempdir().unwrap();
    let ca = work.path().join("vault-ca.pem");
    std::fs::write(&ca, &vault.ca_pem).unwrap();
    let token_file = work.path().join("target.jwt");
    std::fs::write(&token_file, &token).unwrap();
    let policy_file = work.path().join("policy.json");
    std::fs::write(
        &policy_file,
        serde_json::to_vec(&reference_policy(&authority.url, HOSTDATA)).unwrap(),
    )
    .unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/azure_sdk.py");
    let mut command = std::process::Command::new(&python);
    command
        .arg(script)
        .env("VAULT_URL", vault.running.url())
        .env("VAULT_CA", &ca)
        .env("AZURE_POD_IDENTITY_AUTHORITY_HOST", &identity_url)
        .env("TARGET_TOKEN_FILE", &token_file)
        .env("RELEASE_POLICY_FILE", &policy_file)
        .env("KEY_NAME", "sdk-kek")
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("IDENTITY_ENDPOINT")
        .env_remove("MSI_ENDPOINT");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "azure_sdk.py failed:\n{stderr}");
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    eprintln!(
        "Azure SDK api-versions: keys {}, secrets {}",
        result["api_version"], result["secrets_api_version"]
    );

    let decoded = verify_release_jws(result["jws"].as_str().unwrap()).unwrap();
    let material = unwrap_released_key(&decoded.payload, &runtime).unwrap();
    let imported = STANDARD.decode(result["pkcs8"].as_str().unwrap()).unwrap();
    // The SDK's PKCS#8 and aws-lc's may differ in encoding details; compare the keys.
    let released = KekPrivateKey::from_pkcs8_der(&material).unwrap();
    let original = KekPrivateKey::from_pkcs8_der(&imported).unwrap();
    assert_eq!(
        released.public_key().to_der().unwrap(),
        original.public_key().to_der().unwrap()
    );
    assert_eq!(
        *released.to_pkcs8_der().unwrap(),
        *original.to_pkcs8_der().unwrap()
    );
    assert_eq!(
        decoded.payload["response"]["key"]["key"]["kid"],
        result["kid"]
    );
    assert_eq!(result["secret"], "c2VjcmV0LXZhbHVl");
    assert_eq!(result["refused"]["status"], 403, "{}", result["refused"]);
    assert_eq!(result["refused"]["code"], "Forbidden");
}
