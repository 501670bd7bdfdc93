//! The virtual authority over real HTTPS on 127.0.0.1, driven by the crate's own clients: the
//! virtual provider gets a report for a declared policy, the MAA client turns it into a token
//! for a JWKS runtime key, and the token verifies against the published keys (OpenID
//! configuration → JWKS) with the contract's claims. Then the refusals: runtime data the report
//! does not bind, a report of another authority, a flipped byte, a token checked against another
//! authority's keys, an expired token, and a client that does not trust the root. Restarting on
//! the same directory keeps the root.

use aws_lc_rs::digest::{SHA256, digest};
use encfs_attestation::authority::{AUTHORITY_CA_FILE, VirtualAuthority, unix_now};
use encfs_attestation::maa::{MaaClient, MaaError, verify_token_with_jwks};
use encfs_attestation::provider::{AttestationProvider, ProviderError};
use encfs_attestation::service::{RunningAuthority, serve};
use encfs_attestation::snp::hex;
use encfs_attestation::verify::verify_report;
use encfs_attestation::virtual_provider::VirtualProvider;
use serde_json::{Map, Value, json};

const POLICY: &str = "package policy\nallow := true\n";

async fn start(dir: &std::path::Path) -> RunningAuthority {
    let authority = VirtualAuthority::open(dir).unwrap();
    serve(authority, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn runtime_data() -> Vec<u8> {
    json!({"keys": [{"kty": "RSA", "kid": "runtime", "e": "AQAB", "n": "sXch"}]})
        .to_string()
        .into_bytes()
}

fn report_data_for(runtime: &[u8]) -> [u8; 64] {
    let mut data = [0u8; 64];
    data[..32].copy_from_slice(digest(&SHA256, runtime).as_ref());
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_and_tokens_over_https_and_their_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(&dir.path().join("authority")).await;
    let url = running.url();
    let ca = std::fs::read_to_string(dir.path().join("authority").join(AUTHORITY_CA_FILE)).unwrap();
    assert_eq!(ca, running.ca_pem());

    // A report for the declared policy, bound to the runtime data.
    let provider = VirtualProvider::new(&url, &ca, POLICY, false).unwrap();
    assert_eq!(provider.platform(), "snp-caci");
    let runtime = runtime_data();
    let evidence = provider.report(&report_data_for(&runtime)).await.unwrap();
    let roots = encfs_attestation::verify::TrustedRoots::from_pems([&ca]).unwrap();
    let verified = verify_report(&evidence.report, &evidence.endorsements, &roots).unwrap();
    assert_eq!(
        verified.claims["x-ms-sevsnpvm-hostdata"],
        hex(digest(&SHA256, POLICY.as_bytes()).as_ref())
    );

    // The token, as MAA answers it, and its check against the published keys.
    let maa = MaaClient::new([&ca]).unwrap();
    let host = url.trim_start_matches("https://");
    let token = maa
        .attest_snp(host, &evidence, &runtime, 1234)
        .await
        .unwrap();
    let claims = maa.verify_token(&url, &token).await.unwrap();
    assert_eq!(claims["iss"], url.as_str());
    assert_eq!(claims["nonce"], "1234");
    assert_eq!(claims["x-ms-attestation-type"], "sevsnpvm");
    assert_eq!(claims["x-ms-compliance-status"], "azure-compliant-uvm");
    assert_eq!(claims["x-ms-sevsnpvm-is-debuggable"], false);
    assert_eq!(
        claims["x-ms-sevsnpvm-hostdata"],
        verified.claims["x-ms-sevsnpvm-hostdata"]
    );
    assert_eq!(claims["x-ms-runtime"]["keys"][0]["kid"], "runtime");
    assert!(claims.contains_key("x-ms-ver"));
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let jwks: Value = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .build()
        .unwrap()
        .get(format!("{url}/certs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kid"], header.kid.unwrap().as_str());
    assert_eq!(jwks["keys"][0]["x5c"].as_array().unwrap().len(), 2);

    // A debuggable provider's reports say so.
    let debug_provider = VirtualProvider::new(&url, &ca, POLICY, true).unwrap();
    let debug = debug_provider
        .report(&report_data_for(&runtime))
        .await
        .unwrap();
    let debug_token = maa.attest_snp(&url, &debug, &runtime, 1).await.unwrap();
    assert_eq!(
        maa.verify_token(&url, &debug_token).await.unwrap()["x-ms-sevsnpvm-is-debuggable"],
        true
    );

    // Refusals by the authority: runtime data not bound, another authority's report, a flipped byte.
    let refused = |result: Result<String, MaaError>| match result {
        Err(MaaError::Refused { status, body, .. }) => (status, body),
        other => panic!("expected a refusal, got {other:?}"),
    };
    let (status, body) = refused(maa.attest_snp(&url, &evidence, b"{\"keys\":[]}", 1).await);
    assert_eq!(status, 400);
    assert!(
        body.contains("InvalidParameter") && body.contains("runtimeData"),
        "{body}"
    );
    let other_running = start(&dir.path().join("other")).await;
    let other_provider =
        VirtualProvider::new(&other_running.url(), other_running.ca_pem(), POLICY, false).unwrap();
    let foreign = other_provider
        .report(&report_data_for(&runtime))
        .await
        .unwrap();
    let (status, body) = refused(maa.attest_snp(&url, &foreign, &runtime, 1).await);
    assert_eq!(status, 400);
    assert!(body.contains("not a trusted root"), "{body}");
    let mut tampered = evidence.clone();
    tampered.report[0xC0] ^= 1;
    let (status, body) = refused(maa.attest_snp(&url, &tampered, &runtime, 1).await);
    assert_eq!(status, 400);
    assert!(body.contains("signature"), "{body}");

    // Token checks: another authority's keys, an expired token, a tampered one.
    let both = MaaClient::new([ca.as_str(), other_running.ca_pem()]).unwrap();
    assert!(matches!(
        both.verify_token(&other_running.url(), &token).await,
        Err(MaaError::Token(_))
    ));
    let authority = VirtualAuthority::open(&dir.path().join("authority")).unwrap();
    let mut expired = Map::new();
    expired.insert("iss".into(), url.clone().into());
    expired.insert("exp".into(), (unix_now() - 3600).into());
    let expired = authority.sign_token(&url, &expired).unwrap();
    let error = maa.verify_token(&url, &expired).await.unwrap_err();
    assert!(error.to_string().contains("xpired"), "{error}");
    let (_, jwks) = maa.signing_keys(&url).await.unwrap();
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = parts[1].replacen('e', "f", 1);
    assert!(verify_token_with_jwks(&parts.join("."), &jwks, &url).is_err());
    assert!(verify_token_with_jwks(&token, &jwks, "https://someone-else").is_err());

    // A client that does not pin the root cannot talk to it.
    let untrusting = VirtualProvider::new(&url, other_running.ca_pem(), POLICY, false).unwrap();
    assert!(matches!(
        untrusting.report(&[0; 64]).await,
        Err(ProviderError::Failed { .. })
    ));

    // A restart on the same directory keeps the root.
    running.shutdown().await;
    let again = start(&dir.path().join("authority")).await;
    assert_eq!(again.ca_pem(), ca);
    other_running.shutdown().await;
    again.shutdown().await;
}
