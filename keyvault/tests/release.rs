//! Key release against a running local vault with a test attestation authority: a released key
//! unwraps to the imported key for each `enc`, and each refusal of issue #12 answers Key
//! Vault's error with no key material in the response.

mod common;

use common::{TestAuthority, TestVault, b64url, reference_policy};
use encfs_crypto::kek::{KekPrivateKey, KekSize, OaepHash};
use encfs_keyvault::client::ClientError;
use encfs_keyvault::release::{unwrap_released_key, verify_release_jws};
use serde_json::{Value, json};

const PORTS: u16 = 21100;
const HOSTDATA: &str = "73973b78d70cc68353426de188db5dfc57e5b766e399935fb73a61127ea26d20";

struct Fixture {
    authority: TestAuthority,
    vault: TestVault,
    runtime: KekPrivateKey,
    kek: KekPrivateKey,
    /// Strings that must never appear in a refusal: the KEK's private members and PKCS#8.
    secrets: Vec<String>,
}

async fn fixture() -> Fixture {
    let authority = TestAuthority::start(PORTS).await;
    let vault = TestVault::start(PORTS + 25, &[&authority.ca_pem]).await;
    let kek = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
    let jwk = encfs_keyvault::rsa_jwk::private_jwk(&kek).unwrap();
    let secrets = vec![
        jwk.d.clone().unwrap(),
        jwk.p.clone().unwrap(),
        jwk.q.clone().unwrap(),
        b64url(&kek.to_pkcs8_der().unwrap()[..48]),
        "key_hsm".to_owned(),
    ];
    Fixture {
        authority,
        vault,
        runtime: KekPrivateKey::generate(KekSize::Rsa2048).unwrap(),
        kek,
        secrets,
    }
}

impl Fixture {
    async fn import(&self, name: &str, policy: &Value, exportable: bool) {
        self.vault
            .client()
            .import_key(name, &self.kek, policy, exportable)
            .await
            .unwrap();
    }

    fn token(&self, edit: impl FnOnce(&mut Value)) -> String {
        let mut claims = self.authority.claims(HOSTDATA, &self.runtime);
        edit(&mut claims);
        self.authority.sign(&claims)
    }

    /// A raw release; returns the status, the body, and checks the body for key material.
    async fn raw_release(&self, name: &str, body: Value, bearer: bool) -> (u16, Value, String) {
        let mut request = self
            .vault
            .raw()
            .post(format!(
                "{}/keys/{name}/release?api-version=7.4",
                self.vault.running.url()
            ))
            .json(&body);
        if bearer {
            request = request.bearer_auth(self.vault.bearer());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = response.text().await.unwrap();
        if status != 200 {
            for secret in &self.secrets {
                assert!(
                    !text.contains(secret.as_str()),
                    "key material in a refusal: {text}"
                );
            }
        }
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            challenge,
        )
    }

    async fn refused(&self, name: &str, target: String, nonce: Option<&str>) -> (u16, Value) {
        let mut body = json!({"target": target});
        if let Some(nonce) = nonce {
            body["nonce"] = json!(nonce);
        }
        let (status, body, _) = self.raw_release(name, body, true).await;
        assert_ne!(status, 200, "released when it should not: {body}");
        (status, body)
    }
}

fn code(body: &Value) -> (&str, &str) {
    (
        body["error"]["code"].as_str().unwrap_or_default(),
        body["error"]["innererror"]["code"]
            .as_str()
            .unwrap_or_default(),
    )
}

#[tokio::test]
async fn a_released_key_unwraps_to_the_imported_key_for_each_enc() {
    let f = fixture().await;
    f.import("kek", &reference_policy(&f.authority.url, HOSTDATA), true)
        .await;
    let client = f.vault.client();
    let bundle = client.get_key("kek", None).await.unwrap();
    assert!(
        !bundle.key.has_private_part(),
        "get returned a private part"
    );
    assert_eq!(bundle.attributes.exportable, Some(true));
    let policy = bundle.release_policy.as_ref().unwrap();
    assert_eq!(
        policy.content_type.as_deref(),
        Some("application/json; charset=utf-8")
    );
    let policy_json: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            policy.data.as_ref().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(policy_json, reference_policy(&f.authority.url, HOSTDATA));

    let expected = f.kek.to_pkcs8_der().unwrap();
    let version = bundle
        .key
        .kid
        .as_ref()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    for (enc, hash) in [
        (None, OaepHash::Sha1),
        (Some("CKM_RSA_AES_KEY_WRAP"), OaepHash::Sha1),
        (Some("RSA_AES_KEY_WRAP_256"), OaepHash::Sha256),
        (Some("RSA_AES_KEY_WRAP_384"), OaepHash::Sha384),
    ] {
        let token = f.token(|_| {});
        let jws = client
            .release("kek", Some(&version), &token, Some("1234"), enc)
            .await
            .unwrap();
        let decoded = verify_release_jws(&jws).unwrap();
        let header = &decoded.header;
        assert_eq!(header["alg"], "RS256");
        assert!(header["kid"].is_string() && header["x5t#S256"].is_string());
        // x5c ends with the vault's CA.
        let ca_der = pem::parse(&f.vault.ca_pem).unwrap().into_contents();
        let x5c = header["x5c"].as_array().unwrap();
        assert_eq!(
            x5c.last().unwrap().as_str().unwrap(),
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &ca_der)
        );
        let payload = &decoded.payload;
        assert_eq!(
            payload["request"]["enc"],
            enc.unwrap_or("CKM_RSA_AES_KEY_WRAP")
        );
        assert_eq!(payload["request"]["api-version"], "7.4");
        assert_eq!(
            payload["response"]["key"]["key"]["kid"],
            bundle.key.kid.clone().unwrap()
        );
        assert!(
            payload["response"]["key"]["key"].get("d").is_none(),
            "clear key in the JWS"
        );
        let material = unwrap_released_key(payload, &f.runtime).unwrap();
        assert_eq!(*material, *expected, "enc {enc:?}");
        // The chosen hash is the one used: the other hashes do not unwrap.
        let ciphertext = key_hsm_ciphertext(payload);
        for other in [OaepHash::Sha1, OaepHash::Sha256, OaepHash::Sha384] {
            let result = encfs_crypto::rsa_aes_wrap::unwrap(&f.runtime, other, &ciphertext);
            assert_eq!(result.is_ok(), other == hash, "{enc:?} with {other:?}");
        }
    }
}

fn key_hsm_ciphertext(payload: &Value) -> Vec<u8> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let key_hsm: Value = serde_json::from_slice(
        &b64.decode(
            payload["response"]["key"]["key"]["key_hsm"]
                .as_str()
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    b64.decode(key_hsm["ciphertext"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn refusals_answer_key_vault_errors_without_key_material() {
    let f = fixture().await;
    f.import("kek", &reference_policy(&f.authority.url, HOSTDATA), true)
        .await;
    let mut debug_policy = reference_policy(&f.authority.url, HOSTDATA);
    debug_policy["anyOf"][0]["allOf"]
        .as_array_mut()
        .unwrap()
        .push(json!({"claim": "x-ms-sevsnpvm-is-debuggable", "equals": false}));
    f.import("kek-nodebug", &debug_policy, true).await;

    // The wrong hostdata.
    let (status, body) = f
        .refused(
            "kek",
            f.token(|c| c["x-ms-sevsnpvm-hostdata"] = json!("00".repeat(32))),
            None,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (403, ("Forbidden", "AccessDenied")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("release policy")
    );

    // is-debuggable true where the policy says false.
    let (status, body) = f
        .refused(
            "kek-nodebug",
            f.token(|c| c["x-ms-sevsnpvm-is-debuggable"] = json!(true)),
            None,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (403, ("Forbidden", "AccessDenied")),
        "{body}"
    );
    // …and the same key releases to a non-debuggable token.
    let (status, _, _) = f
        .raw_release("kek-nodebug", json!({"target": f.token(|_| {})}), true)
        .await;
    assert_eq!(status, 200);

    // An expired token.
    let (status, body) = f
        .refused(
            "kek",
            f.token(|c| {
                c["exp"] = json!(common::now() - 3600);
                c["nbf"] = json!(common::now() - 7200);
            }),
            None,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (403, ("Forbidden", "AccessDenied")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot be verified")
    );

    // A token not yet valid.
    let (status, _) = f
        .refused(
            "kek",
            f.token(|c| c["nbf"] = json!(common::now() + 3600)),
            None,
        )
        .await;
    assert_eq!(status, 403);

    // A token of another authority (its own issuer and keys).
    let other = TestAuthority::start(PORTS + 50).await;
    let foreign = other.sign(&other.claims(HOSTDATA, &f.runtime));
    let (status, body) = f.refused("kek", foreign, None).await;
    assert_eq!(
        (status, code(&body)),
        (403, ("Forbidden", "AccessDenied")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not an authority")
    );

    // A token claiming the right issuer but signed by another authority's key.
    let forged = other.sign(&f.authority.claims(HOSTDATA, &f.runtime));
    let (status, body) = f.refused("kek", forged, None).await;
    assert_eq!(
        (status, code(&body)),
        (403, ("Forbidden", "AccessDenied")),
        "{body}"
    );

    // A tampered token: the payload changed after signing.
    let good = f.token(|c| c["x-ms-sevsnpvm-hostdata"] = json!("11".repeat(32)));
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &parts[1])
            .unwrap(),
    )
    .unwrap();
    claims["x-ms-sevsnpvm-hostdata"] = json!(HOSTDATA);
    parts[1] = b64url(&serde_json::to_vec(&claims).unwrap());
    let (status, body) = f.refused("kek", parts.join("."), None).await;
    assert_eq!(
        (status, code(&body)),
        (403, ("Forbidden", "AccessDenied")),
        "{body}"
    );

    // A missing claim.
    let (status, body) = f
        .refused(
            "kek",
            f.token(|c| {
                c.as_object_mut().unwrap().remove("x-ms-compliance-status");
            }),
            None,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (403, ("Forbidden", "AccessDenied")),
        "{body}"
    );

    // A nonce mismatch (the token carries "1234").
    let (status, body) = f.refused("kek", f.token(|_| {}), Some("9999")).await;
    assert_eq!(
        (status, code(&body)),
        (403, ("Forbidden", "AccessDenied")),
        "{body}"
    );
    assert!(body["error"]["message"].as_str().unwrap().contains("nonce"));

    // Not a token at all.
    let (status, body) = f.refused("kek", "not-a-jwt".into(), None).await;
    assert_eq!((status, code(&body).0), (400, "BadParameter"), "{body}");

    // A release without a bearer token: 401 with Key Vault's challenge.
    let (status, body, challenge) = f
        .raw_release("kek", json!({"target": f.token(|_| {})}), false)
        .await;
    assert_eq!((status, code(&body).0), (401, "Unauthorized"), "{body}");
    assert!(
        challenge.starts_with("Bearer authorization=\"https://"),
        "{challenge}"
    );
    assert!(
        challenge.contains("resource=\"https://vault.azure.net\""),
        "{challenge}"
    );

    // A token minted by a client of another vault.
    let other_vault = TestVault::start(PORTS + 75, &[]).await;
    let response = f
        .vault
        .raw()
        .post(format!(
            "{}/keys/kek/release?api-version=7.4",
            f.vault.running.url()
        ))
        .bearer_auth(other_vault.bearer())
        .json(&json!({"target": f.token(|_| {})}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test]
async fn policy_operators_gate_release_both_ways() {
    let f = fixture().await;
    let url = f.authority.url.clone();
    let policy = |condition: Value| json!({"version": "1.0.0", "anyOf": [{"authority": url, "allOf": [condition]}]});
    let cases = [
        (
            json!({"claim": "x-ms-sevsnpvm-guestsvn", "exists": true}),
            true,
        ),
        (json!({"claim": "x-ms-absent", "exists": true}), false),
        (json!({"claim": "x-ms-absent", "exists": false}), true),
        (
            json!({"claim": "x-ms-sevsnpvm-hostdata", "notEquals": "00"}),
            true,
        ),
        (
            json!({"claim": "x-ms-sevsnpvm-hostdata", "notEquals": HOSTDATA}),
            false,
        ),
        (
            json!({"claim": "x-ms-sevsnpvm-guestsvn", "greaterOrEquals": 4}),
            true,
        ),
        (
            json!({"claim": "x-ms-sevsnpvm-guestsvn", "greater": 4}),
            false,
        ),
        (json!({"claim": "x-ms-sevsnpvm-guestsvn", "less": 5}), true),
        (
            json!({"claim": "x-ms-sevsnpvm-guestsvn", "lessOrEquals": 3}),
            false,
        ),
        (
            json!({"anyOf": [{"claim": "x-ms-absent", "exists": true},
                          {"claim": "x-ms-runtime.keys", "exists": true}]}),
            true,
        ),
        (
            json!({"allOf": [{"claim": "x-ms-sevsnpvm-guestsvn", "equals": 4},
                          {"claim": "x-ms-ver", "equals": "2.0"}]}),
            false,
        ),
    ];
    for (i, (condition, releases)) in cases.iter().enumerate() {
        let name = format!("op-{i}");
        f.import(&name, &policy(condition.clone()), true).await;
        let (status, body, _) = f
            .raw_release(&name, json!({"target": f.token(|_| {})}), true)
            .await;
        let expected = if *releases { 200 } else { 403 };
        assert_eq!(status, expected, "{condition}: {body}");
    }
}

#[tokio::test]
async fn import_get_and_secret_errors() {
    let f = fixture().await;
    let client = f.vault.client();

    // Exportable without a policy, and a malformed policy: Key Vault's BadParameter.
    let raw_import = |policy: Option<Value>, exportable: bool| {
        let jwk = encfs_keyvault::rsa_jwk::private_jwk(&f.kek).unwrap();
        let mut body = json!({"key": jwk, "attributes": {"exportable": exportable}});
        if let Some(policy) = policy {
            body["release_policy"] = json!({"data": b64url(&serde_json::to_vec(&policy).unwrap())});
        }
        let request = f
            .vault
            .raw()
            .put(format!(
                "{}/keys/bad?api-version=7.5",
                f.vault.running.url()
            ))
            .bearer_auth(f.vault.bearer())
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = raw_import(None, true).await;
    assert_eq!((status, code(&body).0), (400, "BadParameter"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("AKV.SKR.1004")
    );
    let (status, body) = raw_import(Some(json!({"version": "1.0.0", "anyOf": []})), true).await;
    assert_eq!((status, code(&body).0), (400, "BadParameter"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("$.anyOf"),
        "{body}"
    );
    let (status, body) = raw_import(Some(json!({"version": "1.0.0", "anyOf": [{"authority": "https://a", "allOf": [{"claim": "x", "bigger": 1}]}]})), true).await;
    assert_eq!((status, code(&body).0), (400, "BadParameter"), "{body}");
    for secret in &f.secrets {
        assert!(!body.to_string().contains(secret.as_str()));
    }

    // A non-exportable key is never released.
    f.import(
        "fixed",
        &reference_policy(&f.authority.url, HOSTDATA),
        false,
    )
    .await;
    let (status, body) = f.refused("fixed", f.token(|_| {}), None).await;
    assert_eq!((status, code(&body).0), (403, "Forbidden"), "{body}");

    // Unknown key and secret.
    match client.get_key("nope", None).await {
        Err(ClientError::Vault {
            status: 404, code, ..
        }) => assert_eq!(code, "KeyNotFound"),
        other => panic!("{other:?}"),
    }
    match client.get_secret("nope", None).await {
        Err(ClientError::Vault {
            status: 404, code, ..
        }) => assert_eq!(code, "SecretNotFound"),
        other => panic!("{other:?}"),
    }

    // Secrets: versions, latest by default.
    let first = client
        .set_secret("wrapped-ds-dek-kek", "b25l")
        .await
        .unwrap();
    client
        .set_secret("wrapped-ds-dek-kek", "dHdv")
        .await
        .unwrap();
    let latest = client.get_secret("wrapped-ds-dek-kek", None).await.unwrap();
    assert_eq!(latest.value.as_deref(), Some("dHdv"));
    let first_version = first.id.rsplit('/').next().unwrap().to_owned();
    let old = client
        .get_secret("wrapped-ds-dek-kek", Some(&first_version))
        .await
        .unwrap();
    assert_eq!(old.value.as_deref(), Some("b25l"));

    // api-versions: 7.5 works, a missing or unknown one is BadParameter.
    let client75 = f.vault.client().with_api_version("7.5");
    client75
        .get_secret("wrapped-ds-dek-kek", None)
        .await
        .unwrap();
    let client_bad = f.vault.client().with_api_version("1.0");
    match client_bad.get_secret("wrapped-ds-dek-kek", None).await {
        Err(ClientError::Vault {
            status: 400, code, ..
        }) => assert_eq!(code, "BadParameter"),
        other => panic!("{other:?}"),
    }

    // A fixed bearer token works as a token source.
    let bearer_client = encfs_keyvault::client::KeyVaultClient::new(
        &f.vault.running.url(),
        [f.vault.ca_pem.as_bytes()],
        encfs_keyvault::client::TokenSource::Bearer(f.vault.bearer()),
    )
    .unwrap();
    assert!(
        bearer_client
            .get_secret("wrapped-ds-dek-kek", None)
            .await
            .is_ok()
    );
    let bad_bearer = encfs_keyvault::client::KeyVaultClient::new(
        &f.vault.running.url(),
        [f.vault.ca_pem.as_bytes()],
        encfs_keyvault::client::TokenSource::Bearer("garbage".into()),
    )
    .unwrap();
    match bad_bearer.get_secret("wrapped-ds-dek-kek", None).await {
        Err(ClientError::Vault {
            status: 401, code, ..
        }) => assert_eq!(code, "Unauthorized"),
        other => panic!("{other:?}"),
    }

    // State persists across a restart of the vault on the same directory.
    let reopened =
        encfs_keyvault::server::Vault::open(f.vault.dir.path(), [f.authority.ca_pem.as_bytes()])
            .unwrap();
    assert_eq!(reopened.dir().ca_pem().unwrap(), f.vault.ca_pem);
}
