use super::*;
use crate::policy::{ContainerRequest, MountRequest, SecurityPolicy};

/// The seed's collaboration, small: the publisher's CSE datasource, the consumer's CSE datasink
/// and the demo application (reference shapes, §7).
pub(crate) const SEED_SPEC: &str = r#"
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

pub(crate) fn seed_spec() -> Spec {
    Spec::parse(SEED_SPEC, std::path::Path::new("seed.yaml")).unwrap()
}

pub(crate) fn options(policy: SecurityPolicyOption) -> GenerateOptions {
    GenerateOptions {
        contract_id: "collab-1".to_owned(),
        governance_endpoint: "https://127.0.0.1:9443".to_owned(),
        service_cert_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
            .to_owned(),
        image_registry: "localhost".to_owned(),
        security_policy: policy,
        attestation: Attestation::Virtual {
            authority: "https://127.0.0.1:21601".to_owned(),
        },
    }
}

fn generated() -> Deployment {
    generate(&seed_spec(), &options(SecurityPolicyOption::Generate)).unwrap()
}

fn group(d: &Deployment) -> &Value {
    &d.arm_template["resources"][0]
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

fn env_of<'a>(c: &'a Value, key: &str) -> Option<&'a str> {
    c["properties"]["environmentVariables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == key)
        .map(|e| e["value"].as_str().unwrap())
}

fn container<'a>(d: &'a Deployment, name: &str) -> &'a Value {
    group(d)["properties"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

fn command(c: &Value) -> Vec<&str> {
    c["properties"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

#[test]
fn template_has_the_reference_group_shape() {
    let d = generated();
    let g = group(&d);
    assert_eq!(g["type"], "Microsoft.ContainerInstance/containerGroups");
    assert_eq!(g["apiVersion"], "2023-05-01");
    assert_eq!(g["tags"]["accr-contract-id"], "collab-1");
    let p = &g["properties"];
    assert_eq!(p["sku"], "Confidential");
    assert_eq!(p["osType"], "Linux");
    assert_eq!(p["restartPolicy"], "Never");
    assert_eq!(
        p["ipAddress"]["ports"],
        json!([{"port": 8200, "protocol": "TCP"}])
    );
    assert_eq!(
        names(&p["volumes"]),
        [
            "remotemounts",
            "telemetrymounts",
            "volumestatusmounts",
            "configmounts"
        ]
    );
    assert_eq!(
        names(&p["containers"]),
        [
            "demo-app-code-launcher",
            "identity-sidecar",
            "publisher-input-encfs-mount",
            "consumer-output-encfs-mount",
            "ccr-governance",
            "skr",
            "ccr-secrets",
        ]
    );
    assert_eq!(names(&p["initContainers"]), ["ccr-init"]);
    let policy = STANDARD
        .decode(
            p["confidentialComputeProperties"]["ccePolicy"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    assert_eq!(policy, d.rego.as_bytes());
    for c in p["containers"].as_array().unwrap() {
        assert_eq!(
            c["properties"]["image"],
            format!("localhost/encfs:{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(command(c)[0], "encfs");
    }
}

#[test]
fn code_launcher_carries_the_application() {
    let d = generated();
    let c = container(&d, "demo-app-code-launcher");
    let args = command(c);
    assert_eq!(
        args[..5],
        [
            "encfs",
            "cleanroom",
            "code-launcher",
            "--application-name",
            "demo-app"
        ]
    );
    assert_eq!(args[5], "--application-base-64");
    let app: crate::spec::Application =
        serde_json::from_slice(&STANDARD.decode(args[6]).unwrap()).unwrap();
    assert_eq!(&app, seed_spec().application("demo-app").unwrap());
    assert_eq!(
        c["properties"]["ports"],
        json!([{"port": 8200, "protocol": "TCP"}])
    );
    assert_eq!(c["properties"]["securityContext"]["privileged"], true);
    assert_eq!(c["properties"]["resources"]["requests"]["memoryInGB"], 4.0);
}

#[test]
fn mount_launchers_follow_the_access_points() {
    let d = generated();
    let source = container(&d, "publisher-input-encfs-mount");
    assert_eq!(
        command(source),
        [
            "encfs",
            "cleanroom",
            "mount-launcher",
            "--access-name",
            "publisher-input",
            "--mount-path",
            "/mnt/remote/publisher-input",
            "--read-only",
            "--encryption-mode",
            "CSE",
            "--governance-port",
            "8300",
            "--skr-port",
            "8284",
            "--secrets-port",
            "9300",
            "--imds-port",
            "8290",
            "--sub-directory",
            "mydata/level2",
        ]
    );
    let expect = [
        ("AZURE_STORAGE_ACCOUNT", "pubsa"),
        ("AZURE_STORAGE_ACCOUNT_CONTAINER", "publisher-input"),
        (
            "AZURE_STORAGE_BLOB_ENDPOINT",
            "https://pubsa.blob.core.windows.net/",
        ),
        ("ACCESS_NAME", "publisher-input"),
        ("MAA_ENDPOINT", "sharedeus2.eus2.attest.azure.net"),
        ("AKV_ENDPOINT", "pubkek.managedhsm.azure.net"),
        ("KID", "pubkek"),
        ("CLIENT_ID", "pub-client"),
        ("TENANT_ID", "pub-tenant"),
        ("WRAPPED_DEK_SECRET", "wrapped-publisher-input-dek-pubkek"),
        (
            "WRAPPED_DEK_AKV_ENDPOINT",
            "https://pubdek.vault.azure.net/",
        ),
    ];
    for (k, v) in expect {
        assert_eq!(env_of(source, k), Some(v), "{k}");
    }
    let sink = container(&d, "consumer-output-encfs-mount");
    let args = command(sink);
    assert!(
        args.contains(&"--read-write") && args.contains(&"SSE"),
        "{args:?}"
    );
    assert!(!args.contains(&"--sub-directory"));
    assert!(
        !args.contains(&"--seal-manifest"),
        "an SSE datasink has no attestation authority to seal with: {args:?}"
    );
    assert!(!command(source).contains(&"--seal-manifest"));
    let mut spec = seed_spec();
    let mut cse_sink = spec.datasources[0].clone();
    cse_sink.name = "consumer-output".into();
    cse_sink.kind = crate::spec::Direction::Sink.volume().into();
    cse_sink.protection.proxy_type =
        crate::spec::proxy_type("Azure_BlobStorage", crate::spec::Direction::Sink);
    cse_sink.subdirectory = None;
    spec.datasinks[0] = cse_sink;
    let d = generate(&spec, &options(SecurityPolicyOption::Generate)).unwrap();
    let args = command(container(&d, "consumer-output-encfs-mount"));
    assert!(
        args.contains(&"--seal-manifest"),
        "a CSE datasink is sealed: {args:?}"
    );
    assert_eq!(env_of(sink, "KID"), Some(""));
}

#[test]
fn encrypted_names_are_on_the_mount_launchers_command_and_in_the_policy() {
    let plain = generated();
    let mut spec = seed_spec();
    spec.datasources[0].encrypt_names = true;
    let d = generate(&spec, &options(SecurityPolicyOption::Generate)).unwrap();
    let args = command(container(&d, "publisher-input-encfs-mount"));
    assert_eq!(args.last(), Some(&"--encrypt-names"), "{args:?}");
    assert!(
        !command(container(&plain, "publisher-input-encfs-mount")).contains(&"--encrypt-names")
    );
    assert_ne!(d.hostdata(), plain.hostdata(), "the policy pins the flag");
    // The spec field round-trips and stays out of a spec that does not set it.
    let text = serde_yaml::to_string(&spec.datasources[0]).unwrap();
    assert!(text.contains("encryptNames: true"), "{text}");
    let plain_text = serde_yaml::to_string(&seed_spec().datasources[0]).unwrap();
    assert!(!plain_text.contains("encryptNames"), "{plain_text}");
}

fn pinned(digest_byte: &str) -> Deployment {
    let mut spec = seed_spec();
    spec.datasources[0].manifest = Some(crate::spec::ManifestPin {
        digest: format!("sha256:{}", digest_byte.repeat(32)),
        blob: ".encfs-manifest".to_owned(),
    });
    generate(&spec, &options(SecurityPolicyOption::Generate)).unwrap()
}

#[test]
fn a_pinned_manifest_is_in_the_policy_and_its_change_changes_the_hostdata() {
    let unpinned = generated();
    let a = pinned("aa");
    let args = command(container(&a, "publisher-input-encfs-mount"));
    let digest = format!("sha256:{}", "aa".repeat(32));
    let at = args.iter().position(|a| *a == "--manifest-digest").unwrap();
    assert_eq!(args[at + 1], digest);
    assert!(a.rego.contains(&digest), "the rego pins the digest");
    let b = pinned("ab");
    assert_ne!(a.hostdata(), unpinned.hostdata());
    assert_ne!(
        a.hostdata(),
        b.hostdata(),
        "another dataset, another clean room"
    );
    assert_eq!(a.hostdata(), pinned("aa").hostdata());
    let policy = SecurityPolicy::parse(&a.rego).unwrap();
    let launcher = |d: &Deployment| {
        plan(&d.arm_template)
            .unwrap()
            .container("publisher-input-encfs-mount")
            .unwrap()
            .definition
            .policy_request()
    };
    policy.check_container(&launcher(&a)).unwrap();
    assert!(
        policy.check_container(&launcher(&b)).is_err(),
        "a mount launcher pinned to another digest is refused by the policy"
    );
}

#[test]
fn sidecars_get_their_real_flags() {
    let d = generated();
    let gov = container(&d, "ccr-governance");
    assert_eq!(
        command(gov),
        [
            "encfs",
            "sidecar",
            "governance",
            "--listen",
            "127.0.0.1:8300"
        ]
    );
    assert_eq!(
        env_of(gov, "ccrgovEndpoint"),
        Some("https://127.0.0.1:9443")
    );
    assert_eq!(
        env_of(gov, "ccrgovApiPathPrefix"),
        Some("app/contracts/collab-1")
    );
    let cert = STANDARD
        .decode(env_of(gov, "serviceCert").unwrap())
        .unwrap();
    assert!(
        String::from_utf8(cert)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    let skr = command(container(&d, "skr"));
    assert_eq!(
        skr[..5],
        ["encfs", "sidecar", "skr", "--listen", "127.0.0.1:8284"]
    );
    assert!(skr.windows(2).any(|w| w == ["--attestation", "virtual"]));
    assert!(
        skr.windows(2)
            .any(|w| w == ["--security-policy", CONFIG_SECURITY_POLICY])
    );
    let secrets = command(container(&d, "ccr-secrets"));
    assert!(
        secrets
            .windows(2)
            .any(|w| w == ["--skr", "http://127.0.0.1:8284"])
    );
    let identity = command(container(&d, "identity-sidecar"));
    assert!(
        identity
            .windows(2)
            .any(|w| w == ["--credential", CONFIG_IDENTITY_CREDENTIAL])
    );

    let mut azure = options(SecurityPolicyOption::Generate);
    azure.attestation = Attestation::Azure;
    let d = generate(&seed_spec(), &azure).unwrap();
    let skr = command(container(&d, "skr"));
    assert!(
        skr.windows(2).any(|w| w == ["--attestation", "azure"]),
        "{skr:?}"
    );
    assert!(!skr.contains(&"--authority"));
}

#[test]
fn the_generated_policy_admits_each_generated_container_exactly() {
    let d = generated();
    let policy = SecurityPolicy::parse(&d.rego).unwrap();
    let p = plan(&d.arm_template).unwrap();
    for c in p.init_containers.iter().chain(&p.containers) {
        policy
            .check_container(&c.definition.policy_request())
            .unwrap();
    }
    // One byte of difference in any agreed field is refused.
    let launcher = p
        .container("demo-app-code-launcher")
        .unwrap()
        .definition
        .policy_request();
    let mut changed = launcher.clone();
    let last = changed.command.len() - 1;
    changed.command[last].push('A');
    assert!(
        policy
            .check_container(&changed)
            .unwrap_err()
            .concerns("command")
    );
    let mut env = launcher.clone();
    env.env.push("DEBUG=1".to_owned());
    assert!(policy.check_container(&env).unwrap_err().concerns("env"));
    let mut rw: ContainerRequest = p
        .container("demo-app-code-launcher")
        .unwrap()
        .definition
        .policy_request();
    rw.mounts
        .iter_mut()
        .find(|m| m.read_only)
        .unwrap()
        .read_only = false;
    assert!(policy.check_container(&rw).unwrap_err().concerns("mounts"));
    let mut extra = p.container("skr").unwrap().definition.policy_request();
    extra.mounts.push(MountRequest {
        destination: "/mnt/remote".to_owned(),
        source: "remotemounts".to_owned(),
        read_only: true,
    });
    assert!(
        policy
            .check_container(&extra)
            .unwrap_err()
            .concerns("mounts")
    );
}

#[test]
fn governance_policy_names_the_hostdata() {
    let d = generated();
    assert_eq!(
        d.governance_policy,
        json!({"type": "add", "policyType": "snp-caci", "claims": {
            "x-ms-sevsnpvm-is-debuggable": false,
            "x-ms-sevsnpvm-hostdata": crate::policy::hostdata(&d.rego)}})
    );
    assert_eq!(d.hostdata().len(), 64);
}

#[test]
fn allow_all_writes_the_fixed_policy() {
    let d = generate(&seed_spec(), &options(SecurityPolicyOption::AllowAll)).unwrap();
    assert_eq!(d.rego, crate::policy::ALLOW_ALL);
    let p = plan(&d.arm_template).unwrap();
    assert_eq!(p.rego, crate::policy::ALLOW_ALL);
    assert_eq!(
        p.hostdata(),
        crate::policy::hostdata(crate::policy::ALLOW_ALL)
    );
}

#[test]
fn generation_is_deterministic() {
    let a = generated();
    let b = generated();
    assert_eq!(a.rego, b.rego);
    assert_eq!(a.arm_template, b.arm_template);
    assert_eq!(a.pod_manifest, b.pod_manifest);
}

#[test]
fn pod_manifest_and_policy_input_carry_the_same_containers() {
    let d = generated();
    let pod: Value = serde_yaml::from_str(&d.pod_manifest).unwrap();
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(
        pod["metadata"]["annotations"][POD_POLICY_ANNOTATION],
        group(&d)["properties"]["confidentialComputeProperties"]["ccePolicy"]
    );
    assert_eq!(
        names(&pod["spec"]["containers"]),
        names(&group(&d)["properties"]["containers"])
    );
    assert_eq!(names(&pod["spec"]["initContainers"]), ["ccr-init"]);
    assert_eq!(
        pod["spec"]["volumes"][0],
        json!({"name": "remotemounts", "emptyDir": {}})
    );
    assert_eq!(d.policy_input["version"], "1.0");
    assert_eq!(d.policy_input["containers"].as_array().unwrap().len(), 8);
}

#[test]
fn plan_round_trips_generate() {
    let spec = seed_spec();
    let opts = options(SecurityPolicyOption::Generate);
    let d = generate(&spec, &opts).unwrap();
    let p = plan(&d.arm_template).unwrap();
    assert_eq!(p.contract_id, "collab-1");
    assert_eq!(p.rego, d.rego);
    assert_eq!(p.hostdata(), d.hostdata());
    let (init, containers) = containers::containers(&spec, &opts).unwrap();
    let planned: Vec<_> = p.containers.iter().map(|c| c.definition.clone()).collect();
    assert_eq!(planned, containers);
    let planned_init: Vec<_> = p
        .init_containers
        .iter()
        .map(|c| c.definition.clone())
        .collect();
    assert_eq!(planned_init, init);
    let apps: Vec<_> = p.applications().collect();
    assert_eq!(apps, [spec.application("demo-app").unwrap()]);
    assert_eq!(p.container("skr").unwrap().application, None);
    assert_eq!(p.volumes.len(), 4);
}

#[test]
fn plan_names_the_container_and_field_of_a_malformed_template() {
    let d = generated();
    let at = |edit: &dyn Fn(&mut Value)| {
        let mut t = d.arm_template.clone();
        edit(&mut t);
        plan(&t).unwrap_err().to_string()
    };
    let e = at(&|t| {
        t["resources"][0]["properties"]["containers"][5]["properties"]["command"] = json!("skr")
    });
    assert!(
        e.contains("container \"skr\"") && e.contains("command"),
        "{e}"
    );
    let e = at(&|t| {
        t["resources"][0]["properties"]["containers"][4]["properties"]["environmentVariables"][0]
            ["value"] = json!(1)
    });
    assert!(
        e.contains("ccr-governance") && e.contains("environmentVariables[0]"),
        "{e}"
    );
    let e = at(&|t| {
        t["resources"][0]["properties"]["confidentialComputeProperties"]["ccePolicy"] = json!("%%%")
    });
    assert!(e.contains("ccePolicy") && e.contains("base64"), "{e}");
    let e = at(&|t| {
        t["resources"][0]["tags"]
            .as_object_mut()
            .unwrap()
            .remove("accr-contract-id");
    });
    assert!(e.contains("accr-contract-id"), "{e}");
    let e = at(&|t| {
        t["resources"][0]["properties"]["containers"][0]["properties"]["command"][6] =
            json!("bm90IGpzb24=")
    });
    assert!(
        e.contains("demo-app-code-launcher") && e.contains("--application-base-64"),
        "{e}"
    );
    let e = at(&|t| {
        t["resources"][0]["properties"]["containers"][1]["properties"]["volumeMounts"][0]["name"] =
            json!("hostroot")
    });
    assert!(
        e.contains("identity-sidecar") && e.contains("hostroot"),
        "{e}"
    );
    let e = at(&|t| {
        t["resources"][0]["properties"]["containers"][2]["properties"]["ports"] =
            json!([{"port": 70000}])
    });
    assert!(
        e.contains("publisher-input-encfs-mount") && e.contains("ports[0]"),
        "{e}"
    );
    let e = at(&|t| t["resources"] = json!([]));
    assert!(e.contains("resources"), "{e}");
}

#[test]
fn validation_names_the_entry() {
    let mut spec = seed_spec();
    spec.applications[0]
        .datasources
        .as_mut()
        .unwrap()
        .insert("missing".to_owned(), "/mnt/x".to_owned());
    let e = generate(&spec, &options(SecurityPolicyOption::Generate))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("demo-app") && e.contains("DataStoreNotFound") && e.contains("missing"),
        "{e}"
    );

    let mut spec = seed_spec();
    spec.applications[0]
        .datasinks
        .as_mut()
        .unwrap()
        .insert("gone".to_owned(), "/o".to_owned());
    assert!(
        validate_spec(&spec)
            .unwrap_err()
            .to_string()
            .contains("DatasinkNotFound")
    );

    let mut spec = seed_spec();
    spec.datasinks[0].protection.configuration = None;
    let e = validate_spec(&spec).unwrap_err().to_string();
    assert!(
        e.contains("consumer-output") && e.contains("configuration"),
        "{e}"
    );

    let mut spec = seed_spec();
    spec.applications[0].name = "Demo App".to_owned();
    assert!(
        validate_spec(&spec)
            .unwrap_err()
            .to_string()
            .contains("\"Demo App\"")
    );
}

#[test]
fn write_to_writes_the_five_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = generated();
    let written = d.write_to(&dir.path().join("out")).unwrap();
    assert_eq!(written.len(), 5);
    let rego = std::fs::read_to_string(dir.path().join("out").join(POLICY_FILE)).unwrap();
    assert_eq!(crate::policy::hostdata(&rego), d.hostdata());
    let template: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out").join(ARM_TEMPLATE_FILE)).unwrap(),
    )
    .unwrap();
    assert_eq!(template, d.arm_template);
}
