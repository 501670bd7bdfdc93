//! The containers of a clean room, built from its spec in the reference's order (§8): one code
//! launcher per application, the identity sidecar, one encfs mount launcher per access point
//! (a datasource's pinned manifest digest and a datasink's `--seal-manifest` on its command line),
//! the governance sidecar, skr and secrets; `ccr-init` runs first as an init container. Every
//! command is an `encfs` command line, because every container runs the encfs binary; the
//! application's own image and command travel inside the code launcher's
//! `--application-base-64`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::{Attestation, DeploymentError, GenerateOptions};
use crate::policy::{ContainerRequest, MountRequest, PolicyContainer};
use crate::spec::{AccessPoint, Direction, Spec};

/// The code launcher API's port (the only port the group exposes).
pub const CODE_LAUNCHER_PORT: u16 = 8200;
/// The governance sidecar's port.
pub const GOVERNANCE_PORT: u16 = 8300;
/// The skr sidecar's port.
pub const SKR_PORT: u16 = 8284;
/// The secrets sidecar's port.
pub const SECRETS_PORT: u16 = 9300;
/// The identity sidecar's port (the reference's IMDS stand-in).
pub const IDENTITY_PORT: u16 = 8290;
/// Every container's working directory (ARM has no such property; CCE takes the image's, and
/// the encfs image's is `/`).
pub const WORKING_DIR: &str = "/";

/// The emptyDir volume under which the mount launchers mount the access points.
pub const REMOTE_VOLUME: &str = "remotemounts";
/// The emptyDir volume of the telemetry files.
pub const TELEMETRY_VOLUME: &str = "telemetrymounts";
/// The emptyDir volume of the volume status files.
pub const VOLUME_STATUS_VOLUME: &str = "volumestatusmounts";
/// The volume of public configuration the sidecars read: the attestation authority's and the
/// key vault's CA certificates, the policy text the virtual attestation declares, the identity
/// sidecar's credential. The deployer fills it; nothing in it is in the template.
pub const CONFIG_VOLUME: &str = "configmounts";
/// Where each volume is mounted.
pub const REMOTE_PATH: &str = "/mnt/remote";
/// Where the telemetry volume is mounted.
pub const TELEMETRY_PATH: &str = "/mnt/telemetry";
/// Where the volume status volume is mounted.
pub const VOLUME_STATUS_PATH: &str = "/mnt/volumestatus";
/// Where the configuration volume is mounted.
pub const CONFIG_PATH: &str = "/mnt/config";
/// The files of the configuration volume.
pub const CONFIG_AUTHORITY_CA: &str = "/mnt/config/authority-ca.pem";
/// The key vault's CA certificate.
pub const CONFIG_VAULT_CA: &str = "/mnt/config/vault-ca.pem";
/// The policy text the virtual attestation declares (the decoded ccePolicy).
pub const CONFIG_SECURITY_POLICY: &str = "/mnt/config/cleanroom-policy.rego";
/// The identity sidecar's credential file.
pub const CONFIG_IDENTITY_CREDENTIAL: &str = "/mnt/config/identity-credential.json";

/// Every volume of the group, in template order.
pub const VOLUMES: [&str; 4] = [
    REMOTE_VOLUME,
    TELEMETRY_VOLUME,
    VOLUME_STATUS_VOLUME,
    CONFIG_VOLUME,
];

/// One container of the deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerDefinition {
    /// Its name.
    pub name: String,
    /// Its image reference.
    pub image: String,
    /// Its command line, program first.
    pub command: Vec<String>,
    /// Its environment, in template order.
    pub env: Vec<(String, String)>,
    /// Its volume mounts.
    pub mounts: Vec<VolumeMount>,
    /// The ports it exposes.
    pub ports: Vec<u16>,
    /// Whether it runs privileged (the launchers: FUSE and the sandbox).
    pub privileged: bool,
    /// CPU cores requested.
    pub cpu: f64,
    /// Memory requested, GB.
    pub memory_gb: f64,
}

/// One volume mount of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    /// The group's volume.
    pub volume: String,
    /// Where the container sees it.
    pub mount_path: String,
    /// Read-only.
    pub read_only: bool,
}

impl ContainerDefinition {
    fn new(name: String, image: &str, command: Vec<String>) -> Self {
        Self {
            name,
            image: image.to_owned(),
            command,
            env: Vec::new(),
            mounts: Vec::new(),
            ports: Vec::new(),
            privileged: false,
            cpu: 0.2,
            memory_gb: 0.5,
        }
    }

    fn mount(mut self, volume: &str, mount_path: &str, read_only: bool) -> Self {
        self.mounts.push(VolumeMount {
            volume: volume.to_owned(),
            mount_path: mount_path.to_owned(),
            read_only,
        });
        self
    }

    fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.push((name.to_owned(), value.into()));
        self
    }

    fn mounts_as_policy(&self) -> Vec<MountRequest> {
        self.mounts
            .iter()
            .map(|m| MountRequest {
                destination: m.mount_path.clone(),
                source: m.volume.clone(),
                read_only: m.read_only,
            })
            .collect()
    }

    fn env_as_policy(&self) -> Vec<String> {
        self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// The container as the security policy agrees it.
    pub fn policy_container(&self) -> PolicyContainer {
        PolicyContainer {
            name: self.name.clone(),
            command: self.command.clone(),
            env: self.env_as_policy(),
            mounts: self.mounts_as_policy(),
            working_dir: WORKING_DIR.to_owned(),
        }
    }

    /// The request a clean room makes to start this container exactly as defined.
    pub fn policy_request(&self) -> ContainerRequest {
        ContainerRequest {
            name: self.name.clone(),
            command: self.command.clone(),
            env: self.env_as_policy(),
            mounts: self.mounts_as_policy(),
            working_dir: WORKING_DIR.to_owned(),
        }
    }

    /// The container's entry in `cleanroom-policy-in.json` (confcom's input shape).
    pub fn policy_input(&self) -> Value {
        json!({
            "name": self.name,
            "containerImage": self.image,
            "command": self.command,
            "environmentVariables": self.env.iter().map(|(k, v)| {
                json!({"name": k, "value": v, "strategy": "string"})
            }).collect::<Vec<_>>(),
            "mounts": self.mounts.iter().map(|m| json!({
                "mountType": "emptyDir",
                "mountPath": m.mount_path,
                "readonly": m.read_only,
            })).collect::<Vec<_>>(),
        })
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn loopback(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// `host[:port]` of a URL (`https://v.example:8443/x` → `v.example:8443`); a bare host stays.
fn url_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or_default().to_owned()
}

/// The storage account of a blob endpoint (`https://acct.blob.core.windows.net` → `acct`); for
/// another address (an embedded local store), the datastore's name.
fn storage_account(access: &AccessPoint) -> String {
    let url = access
        .store
        .provider
        .as_ref()
        .map(|p| p.url.as_str())
        .unwrap_or_default();
    if url.starts_with("https://") || url.starts_with("http://") {
        let host = url_host(url);
        host.split('.').next().unwrap_or_default().to_owned()
    } else {
        access.store.id.clone()
    }
}

/// The access point's `EncryptionMode` (`SSE`, `CPK`, `CSE`) from its protection configuration.
pub(crate) fn encryption_mode(access: &AccessPoint) -> Result<String, DeploymentError> {
    let invalid = |why: String| DeploymentError::Spec {
        entry: format!("access point {:?}", access.name),
        message: why,
    };
    let Some(configuration) = &access.protection.configuration else {
        return Err(invalid("protection.configuration is missing".to_owned()));
    };
    let decoded = STANDARD
        .decode(configuration)
        .map_err(|e| invalid(format!("protection.configuration is not base64: {e}")))?;
    let value: Value = serde_json::from_slice(&decoded)
        .map_err(|e| invalid(format!("protection.configuration is not JSON: {e}")))?;
    value["EncryptionMode"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| invalid("protection.configuration has no EncryptionMode".to_owned()))
}

fn identity_field(access: &AccessPoint, field: &str) -> String {
    access
        .identity
        .as_ref()
        .and_then(|i| i.get(field))
        .and_then(serde_yaml::Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The MAA host of a KEK: `authority` of its provider's base64 JSON configuration.
fn kek_authority(access: &AccessPoint) -> String {
    access
        .protection
        .encryption_secrets
        .as_ref()
        .and_then(|s| s.kek.as_ref())
        .and_then(|k| k.secret.backing_resource.provider.as_ref())
        .and_then(|p| p.configuration.as_deref())
        .and_then(|c| STANDARD.decode(c).ok())
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|v| v["authority"].as_str().map(url_host))
        .unwrap_or_default()
}

fn code_launcher(
    app: &crate::spec::Application,
    image: &str,
) -> Result<ContainerDefinition, DeploymentError> {
    let json = serde_json::to_string(app).map_err(|e| DeploymentError::Spec {
        entry: format!("application {:?}", app.name),
        message: format!("cannot be written as JSON: {e}"),
    })?;
    let command = vec![
        "encfs".to_owned(),
        "cleanroom".to_owned(),
        "code-launcher".to_owned(),
        "--application-name".to_owned(),
        app.name.clone(),
        "--application-base-64".to_owned(),
        STANDARD.encode(json),
    ];
    let requests = &app.runtime_settings.resource.requests;
    let mut container =
        ContainerDefinition::new(format!("{}-code-launcher", app.name), image, command)
            .env("APPLICATION_NAME", app.name.clone())
            .env("TELEMETRY_MOUNT_PATH", TELEMETRY_PATH)
            .env("VOLUMESTATUS_MOUNT_PATH", VOLUME_STATUS_PATH)
            .mount(REMOTE_VOLUME, REMOTE_PATH, false)
            .mount(TELEMETRY_VOLUME, TELEMETRY_PATH, false)
            .mount(VOLUME_STATUS_VOLUME, VOLUME_STATUS_PATH, true);
    container.ports = vec![CODE_LAUNCHER_PORT];
    container.privileged = true;
    if requests.cpu > 0.0 {
        container.cpu = requests.cpu;
    }
    if requests.memory_in_gb > 0.0 {
        container.memory_gb = requests.memory_in_gb;
    }
    Ok(container)
}

fn identity_sidecar(contract_id: &str, spec: &Spec, image: &str) -> ContainerDefinition {
    let client_ids: Vec<String> = spec
        .datasources
        .iter()
        .chain(&spec.datasinks)
        .map(|a| identity_field(a, "clientId"))
        .filter(|id| !id.is_empty())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let args = json!({"Identities": {
        "ManagedIdentities": client_ids.iter().map(|id| json!({"ClientId": id})).collect::<Vec<_>>(),
        "ApplicationIdentities": client_ids.iter().map(|id| json!({
            "ClientId": id,
            "Credential": {"CredentialType": "FederatedCredential", "FederationConfiguration": {
                "IdTokenEndpoint": format!("http://localhost:{GOVERNANCE_PORT}"),
                "Subject": contract_id,
                "Audience": "api://AzureADTokenExchange"}}
        })).collect::<Vec<_>>(),
    }});
    ContainerDefinition::new(
        "identity-sidecar".to_owned(),
        image,
        vec![
            "encfs".to_owned(),
            "sidecar".to_owned(),
            "identity".to_owned(),
            "--listen".to_owned(),
            loopback(IDENTITY_PORT),
            "--credential".to_owned(),
            CONFIG_IDENTITY_CREDENTIAL.to_owned(),
        ],
    )
    .env("IdentitySideCarArgs", STANDARD.encode(args.to_string()))
    .mount(CONFIG_VOLUME, CONFIG_PATH, true)
}

fn mount_launcher(
    access: &AccessPoint,
    direction: Direction,
    image: &str,
) -> Result<ContainerDefinition, DeploymentError> {
    let mode = encryption_mode(access)?;
    let mut command = vec![
        "encfs".to_owned(),
        "cleanroom".to_owned(),
        "mount-launcher".to_owned(),
        "--access-name".to_owned(),
        access.name.clone(),
        "--mount-path".to_owned(),
        format!("{REMOTE_PATH}/{}", access.name),
        match direction {
            Direction::Source => "--read-only",
            Direction::Sink => "--read-write",
        }
        .to_owned(),
        "--encryption-mode".to_owned(),
        mode,
        "--governance-port".to_owned(),
        GOVERNANCE_PORT.to_string(),
        "--skr-port".to_owned(),
        SKR_PORT.to_string(),
        "--secrets-port".to_owned(),
        SECRETS_PORT.to_string(),
        "--imds-port".to_owned(),
        IDENTITY_PORT.to_string(),
    ];
    if let Some(sub) = access.subdirectory.as_deref().filter(|s| !s.is_empty()) {
        command.extend(["--sub-directory".to_owned(), sub.to_owned()]);
    }
    // On the command line, so the policy pins it too.
    if access.encrypt_names {
        command.push("--encrypt-names".to_owned());
    }
    // The pinned manifest's digest is on the command line, so the policy (and its hostdata, which
    // the KEK's release policy names) changes with it: a clean room for another dataset version
    // is another clean room.
    match (direction, &access.manifest) {
        (Direction::Source, Some(pin)) => {
            command.extend(["--manifest-digest".to_owned(), pin.digest.clone()]);
        }
        // The sealing key's attestation comes from the KEK's authority (MAA_ENDPOINT): an SSE
        // datasink has none and is not sealed.
        (Direction::Sink, _) if !kek_authority(access).is_empty() => {
            command.push("--seal-manifest".to_owned());
        }
        _ => {}
    }
    let secrets = access.protection.encryption_secrets.as_ref();
    let kek = secrets.and_then(|s| s.kek.as_ref());
    let kek_vault = kek
        .and_then(|k| k.secret.backing_resource.provider.as_ref())
        .map(|p| url_host(&p.url))
        .unwrap_or_default();
    let dek_vault = secrets
        .and_then(|s| s.dek.secret.backing_resource.provider.as_ref())
        .map(|p| p.url.clone())
        .unwrap_or_default();
    let blob_endpoint = access
        .store
        .provider
        .as_ref()
        .map(|p| p.url.clone())
        .unwrap_or_default();
    let mut container =
        ContainerDefinition::new(format!("{}-encfs-mount", access.name), image, command)
            .env("AZURE_STORAGE_ACCOUNT", storage_account(access))
            .env("AZURE_STORAGE_ACCOUNT_CONTAINER", access.store.name.clone())
            .env("AZURE_STORAGE_BLOB_ENDPOINT", blob_endpoint)
            .env("ACCESS_NAME", access.name.clone())
            .env("MAA_ENDPOINT", kek_authority(access))
            .env("AKV_ENDPOINT", kek_vault)
            .env("KID", kek.map(|k| k.name.clone()).unwrap_or_default())
            .env("CLIENT_ID", identity_field(access, "clientId"))
            .env("TENANT_ID", identity_field(access, "tenantId"))
            .env(
                "WRAPPED_DEK_SECRET",
                secrets.map(|s| s.dek.name.clone()).unwrap_or_default(),
            )
            .env("WRAPPED_DEK_AKV_ENDPOINT", dek_vault)
            .mount(REMOTE_VOLUME, REMOTE_PATH, false)
            .mount(TELEMETRY_VOLUME, TELEMETRY_PATH, false)
            .mount(VOLUME_STATUS_VOLUME, VOLUME_STATUS_PATH, false);
    container.privileged = true;
    Ok(container)
}

fn governance_sidecar(options: &GenerateOptions, image: &str) -> ContainerDefinition {
    ContainerDefinition::new(
        "ccr-governance".to_owned(),
        image,
        strings(&["encfs", "sidecar", "governance", "--listen"])
            .into_iter()
            .chain([loopback(GOVERNANCE_PORT)])
            .collect(),
    )
    .env("ccrgovEndpoint", options.governance_endpoint.clone())
    .env(
        "ccrgovApiPathPrefix",
        format!("app/contracts/{}", options.contract_id),
    )
    .env("serviceCert", STANDARD.encode(&options.service_cert_pem))
}

fn skr_sidecar(options: &GenerateOptions, image: &str) -> ContainerDefinition {
    let mut command = strings(&["encfs", "sidecar", "skr", "--listen"]);
    command.push(loopback(SKR_PORT));
    match &options.attestation {
        Attestation::Azure => command.extend(strings(&["--attestation", "azure"])),
        Attestation::Virtual { authority } => {
            command.extend(strings(&["--attestation", "virtual", "--authority"]));
            command.push(authority.clone());
            command.extend(strings(&[
                "--authority-ca",
                CONFIG_AUTHORITY_CA,
                "--security-policy",
                CONFIG_SECURITY_POLICY,
                "--trust-ca",
                CONFIG_VAULT_CA,
                "--trust-ca",
                CONFIG_AUTHORITY_CA,
            ]));
        }
    }
    command.extend([
        "--identity-endpoint".to_owned(),
        format!("http://{}", loopback(IDENTITY_PORT)),
    ]);
    ContainerDefinition::new("skr".to_owned(), image, command)
        .env("Port", SKR_PORT.to_string())
        .mount(CONFIG_VOLUME, CONFIG_PATH, true)
}

fn secrets_sidecar(options: &GenerateOptions, image: &str) -> ContainerDefinition {
    let mut command = strings(&["encfs", "sidecar", "secrets", "--listen"]);
    command.push(loopback(SECRETS_PORT));
    command.extend([
        "--skr".to_owned(),
        format!("http://{}", loopback(SKR_PORT)),
        "--identity-endpoint".to_owned(),
        format!("http://{}", loopback(IDENTITY_PORT)),
    ]);
    if matches!(options.attestation, Attestation::Virtual { .. }) {
        command.extend(strings(&["--trust-ca", CONFIG_VAULT_CA]));
    }
    ContainerDefinition::new("ccr-secrets".to_owned(), image, command)
        .env("IDENTITY_PORT", IDENTITY_PORT.to_string())
        .env("SKR_PORT", SKR_PORT.to_string())
        .mount(CONFIG_VOLUME, CONFIG_PATH, true)
}

fn init_container(image: &str) -> ContainerDefinition {
    let mut container = ContainerDefinition::new(
        "ccr-init".to_owned(),
        image,
        strings(&[
            "encfs",
            "cleanroom",
            "init",
            "--clear-mount-paths",
            VOLUME_STATUS_PATH,
            "--create-directories",
            "/mnt/telemetry/infrastructure",
            "/mnt/telemetry/application",
        ]),
    )
    .mount(TELEMETRY_VOLUME, TELEMETRY_PATH, false)
    .mount(VOLUME_STATUS_VOLUME, VOLUME_STATUS_PATH, false);
    container.privileged = true;
    // ARM gives init containers no resource requests.
    container.cpu = 0.0;
    container.memory_gb = 0.0;
    container
}

/// The access points of a spec, datasources first, each once (a telemetry sink is also a
/// datasink).
pub(crate) fn access_points(spec: &Spec) -> Vec<(&AccessPoint, Direction)> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for (list, direction) in [
        (&spec.datasources, Direction::Source),
        (&spec.datasinks, Direction::Sink),
    ] {
        for access in list {
            if seen.insert(access.name.clone()) {
                out.push((access, direction));
            }
        }
    }
    out
}

/// The init containers and the containers of the deployment of `spec`.
pub(crate) fn containers(
    spec: &Spec,
    options: &GenerateOptions,
) -> Result<(Vec<ContainerDefinition>, Vec<ContainerDefinition>), DeploymentError> {
    let image = options.image();
    let mut containers = Vec::new();
    for app in &spec.applications {
        containers.push(code_launcher(app, &image)?);
    }
    containers.push(identity_sidecar(&options.contract_id, spec, &image));
    for (access, direction) in access_points(spec) {
        containers.push(mount_launcher(access, direction, &image)?);
    }
    containers.push(governance_sidecar(options, &image));
    containers.push(skr_sidecar(options, &image));
    containers.push(secrets_sidecar(options, &image));
    Ok((vec![init_container(&image)], containers))
}
