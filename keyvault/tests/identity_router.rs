//! The identity router (`/metadata/identity/oauth2/token`) in both of its forms, and the tokens
//! it serves accepted by the vault.

use std::net::SocketAddr;

use encfs_keyvault::identity::{Credential, TokenVerifier, VAULT_RESOURCE, router};
use encfs_keyvault::vault_dir::VaultDir;
use serde_json::Value;

const PORTS: u16 = 21180;

async fn serve(credential: Credential) -> String {
    for port in PORTS..PORTS + 10 {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        if let Ok(listener) = tokio::net::TcpListener::bind(addr).await {
            tokio::spawn(async move { axum::serve(listener, router(credential)).await });
            return format!("http://{addr}");
        }
    }
    panic!("no free port");
}

#[tokio::test]
async fn both_token_forms_serve_tokens_the_vault_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let vault = VaultDir::open_or_init(dir.path()).unwrap();
    let credential = Credential::create(&vault, "clean-room").unwrap();
    let verifier = TokenVerifier::new(&vault, VAULT_RESOURCE).unwrap();
    let base = serve(credential.clone()).await;
    let http = reqwest::Client::new();

    // The reference's form: scope + clientId + tenantId → {"token"}.
    let url = format!(
        "{base}/metadata/identity/oauth2/token?scope=https://vault.azure.net/.default&clientId={}&tenantId={}&apiVersion=2018-02-01",
        credential.client_id, credential.tenant_id
    );
    let body: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    assert_eq!(
        verifier.verify(token).unwrap().client_id,
        credential.client_id
    );

    // IMDS's form: resource + Metadata: true → access_token, expires_on (string), token_type.
    let url = format!(
        "{base}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net"
    );
    let response = http
        .get(&url)
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["resource"], "https://vault.azure.net");
    assert!(body["expires_on"].as_str().unwrap().parse::<u64>().unwrap() > 0);
    assert!(body["expires_in"].as_str().unwrap().parse::<u64>().unwrap() > 3000);
    verifier
        .verify(body["access_token"].as_str().unwrap())
        .unwrap();

    // IMDS without the Metadata header is refused as IMDS refuses it.
    let response = http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");

    // Another client id, or no scope/resource: 400.
    let response = http
        .get(format!(
            "{base}/metadata/identity/oauth2/token?scope=https://vault.azure.net/.default&clientId=someone-else"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = http
        .get(format!("{base}/metadata/identity/oauth2/token"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // A token for another resource is not a vault token.
    let response: Value = http
        .get(format!(
            "{base}/metadata/identity/oauth2/token?scope=https://storage.azure.com/.default"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        verifier
            .verify(response["token"].as_str().unwrap())
            .is_err()
    );
}
