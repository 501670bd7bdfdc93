//! `encfs governance deployment generate` against a real governance service: the contract's
//! spec comes over the wire, the five files land in the output directory, and the template's
//! policy, the written rego and the governance policy agree on one hostdata.

mod support;

use std::fs;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use support::governance::{Sandbox, accepted_contract, consortium, with};

/// The seed's collaboration, small (reference shapes): the publisher's CSE datasource, the
/// consumer's SSE datasink and the demo application.
const SEED_SPEC: &str = r#"
identities:
- name: cleanroom_cgs_oidc
  clientId: ''
  tenantId: ''
  tokenIssuer:
    issuerType: AttestationBasedTokenIssuer
    issuer: {protocol: Attested_OIDC, url: "https://cgs/oidc"}
datasources:
- name: publisher-input
  type: Volume_ReadOnly
  path: ''
  store:
    name: publisher-input
    type: Azure_BlobStorage
    id: publisher-input
    provider: {protocol: Azure_BlobStorage, url: "https://pubsa.blob.core.windows.net/"}
  identity: {name: publisher-identity, clientId: pub-client, tenantId: pub-tenant}
  protection:
    proxyType: SecureVolume__ReadOnly__Azure__BlobStorage
    proxyMode: Secure
    configuration: eyJFbmNyeXB0aW9uTW9kZSI6ICJDU0UiLCAiS2V5VHlwZSI6ICJLRUsifQ==
    encryptionSecrets:
      dek:
        name: wrapped-publisher-input-dek-pubkek
        secret:
          secretType: Key
          backingResource:
            name: pub-dek-store
            type: AzureKeyVault
            id: pub-dek-store
            provider: {protocol: AzureKeyVault_Secret, url: "https://pubdek.vault.azure.net/"}
      kek:
        name: pubkek
        secret:
          secretType: Key
          backingResource:
            name: pubkek
            type: AzureKeyVault
            id: pub-kek-store
            provider:
              protocol: AzureKeyVault_SecureKey
              url: "https://pubkek.managedhsm.azure.net/"
              configuration: eyJhdXRob3JpdHkiOiJodHRwczovL3NoYXJlZGV1czIuZXVzMi5hdHRlc3QuYXp1cmUubmV0In0=
  subdirectory: mydata/level2
datasinks:
- name: consumer-output
  type: Volume_ReadWrite
  path: ''
  store:
    name: consumer-output
    type: Azure_BlobStorage
    id: consumer-output
    provider: {protocol: Azure_BlobStorage, url: "https://consa.blob.core.windows.net/"}
  protection:
    proxyType: SecureVolume__ReadWrite__Azure__BlobStorage
    proxyMode: Secure
    configuration: eyJFbmNyeXB0aW9uTW9kZSI6ICJTU0UifQ==
applications:
- name: demo-app
  image:
    executable:
      documentType: OCI
      authenticityReceipt: ''
      backingResource:
        id: docker.io/golang@sha256:aaaa
        name: demo-app
        type: AzureContainerRegistry
        provider: {protocol: AzureContainerRegistry, url: docker.io}
    enforcementPolicy:
      policy: {policyDocument: eyJ0cnVzdFR5cGUiOiJodHRwcyJ9}
  startType: Auto
  command: [bash, -c, "cd /mnt/remote/input && gzip -c data > /mnt/remote/output/output.gz"]
  environmentVariables: {INPUT_LOCATION: /mnt/remote/input, OUTPUT_LOCATION: /mnt/remote/output}
  datasources: {publisher-input: /mnt/remote/input}
  datasinks: {consumer-output: /mnt/remote/output}
  runtimeSettings:
    ports: []
    resource: {requests: {cpu: 0.5, memoryInGB: 4}}
"#;

fn sha256_hex(text: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn generate(sb: &Sandbox, contract: &str, out: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "deployment",
        "generate",
        "--contract-id",
        contract,
        "--output-dir",
        out,
    ];
    args.extend_from_slice(extra);
    sb.run(&with(&args, "consumer"))
}

#[test]
fn generates_the_deployment_of_an_accepted_contract() {
    let sb = Sandbox::new();
    let _service = consortium(&sb);
    accepted_contract(&sb, "collab", SEED_SPEC);

    let out = generate(
        &sb,
        "collab",
        "deploy",
        &["--attestation-authority", "https://127.0.0.1:21601"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["contractState"], "Accepted");
    assert_eq!(shown["files"].as_array().unwrap().len(), 5);

    let rego = fs::read_to_string(sb.path("deploy/cleanroom-policy.rego")).unwrap();
    let hostdata = sha256_hex(rego.as_bytes());
    assert_eq!(shown["hostdata"], hostdata.as_str());
    let template: Value = serde_json::from_str(
        &fs::read_to_string(sb.path("deploy/cleanroom-arm-template.json")).unwrap(),
    )
    .unwrap();
    let group = &template["resources"][0];
    assert_eq!(group["tags"]["accr-contract-id"], "collab");
    let cce = STANDARD
        .decode(
            group["properties"]["confidentialComputeProperties"]["ccePolicy"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    assert_eq!(
        sha256_hex(&cce),
        hostdata,
        "the template's policy is the written rego"
    );
    let policy: Value = serde_json::from_str(
        &fs::read_to_string(sb.path("deploy/cleanroom-governance-policy.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        policy,
        serde_json::json!({"type": "add", "policyType": "snp-caci", "claims": {
            "x-ms-sevsnpvm-is-debuggable": false, "x-ms-sevsnpvm-hostdata": hostdata}})
    );
    // The governance sidecar is pointed at this service, pinned to its certificate.
    let gov = group["properties"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ccr-governance")
        .unwrap();
    let env = |k: &str| {
        gov["properties"]["environmentVariables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == k)
            .unwrap()["value"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(env("ccrgovEndpoint"), _service.endpoint);
    assert_eq!(env("ccrgovApiPathPrefix"), "app/contracts/collab");
    let cert = fs::read_to_string(sb.path("svc/service_cert.pem")).unwrap();
    assert_eq!(
        STANDARD.decode(env("serviceCert")).unwrap(),
        cert.as_bytes()
    );
    let pod = fs::read_to_string(sb.path("deploy/cleanroom-pod.yaml")).unwrap();
    assert!(pod.contains("microsoft.containerinstance.virtualnode.ccepolicy"));
    let input: Value = serde_json::from_str(
        &fs::read_to_string(sb.path("deploy/cleanroom-policy-in.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(input["containers"].as_array().unwrap().len(), 8);

    // The same contract generates the same bytes (every party can check a proposal).
    let again = generate(
        &sb,
        "collab",
        "deploy-again",
        &["--attestation-authority", "https://127.0.0.1:21601"],
    );
    assert!(again.status.success());
    assert_eq!(
        fs::read_to_string(sb.path("deploy-again/cleanroom-policy.rego")).unwrap(),
        rego
    );

    // allow-all writes the fixed policy and its hash.
    let out = generate(
        &sb,
        "collab",
        "allow-all",
        &["--security-policy-creation-option", "allow-all"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let allow_all = fs::read_to_string(sb.path("allow-all/cleanroom-policy.rego")).unwrap();
    assert_eq!(allow_all, encfs_cleanroom::policy::ALLOW_ALL);
    assert_ne!(sha256_hex(allow_all.as_bytes()), hostdata);
}

#[test]
fn refuses_a_missing_contract_and_an_undeployable_spec() {
    let sb = Sandbox::new();
    let _service = consortium(&sb);
    let out = generate(&sb, "nope", "deploy", &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"nope\"") && err.contains("ContractNotFound"),
        "{err}"
    );
    assert!(!sb.path("deploy").exists(), "nothing written");

    let broken = SEED_SPEC.replace(
        "datasources: {publisher-input: /mnt/remote/input}",
        "datasources: {someone-else: /mnt/remote/input}",
    );
    accepted_contract(&sb, "broken", &broken);
    let out = generate(&sb, "broken", "deploy", &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("demo-app")
            && err.contains("DataStoreNotFound")
            && err.contains("someone-else"),
        "{err}"
    );
    assert!(!sb.path("deploy").exists(), "nothing written");
}
