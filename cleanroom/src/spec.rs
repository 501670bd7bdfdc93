//! The clean-room specification: the reference's model (`cleanroom.py`, YAML, camelCase) with
//! identities, datasources, datasinks, applications and the governance telemetry settings. Reading
//! is lenient (fields this module does not model are ignored); rewriting replaces one entry of the
//! YAML document and keeps every other field as it was, so a spec written by the reference or by
//! another command survives an `add-…` verb.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};

pub mod application;
pub mod merge;
pub mod telemetry;
pub mod validate;

pub use application::{ApplicationError, ApplicationRequest};
pub use merge::{MergeConflict, merge};
pub use telemetry::TelemetryKind;
pub use validate::{Code, Finding, SecretStoreKind, Stores, ValidationReport, validate};

/// The identity `config init` writes (the clean room's CGS-issued OIDC token).
pub const CGS_OIDC_IDENTITY: &str = "cleanroom_cgs_oidc";

/// The parts of a spec the data owner's commands read.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// Identities the access points may refer to.
    #[serde(default)]
    pub identities: Vec<Value>,
    /// Read-only access points.
    #[serde(default)]
    pub datasources: Vec<AccessPoint>,
    /// Read-write access points.
    #[serde(default)]
    pub datasinks: Vec<AccessPoint>,
    /// The applications the clean room runs.
    #[serde(default)]
    pub applications: Vec<Application>,
    /// Consent, audit and telemetry settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub governance: Option<GovernanceSettings>,
    /// Network settings (kept as written; the local clean room allows no network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Value>,
    /// Sandbox settings (kept as written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Value>,
}

/// `Application`: a container the clean room runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Application {
    /// Application name (unique in the spec).
    pub name: String,
    /// The image and its enforcement policy.
    pub image: Image,
    /// `Auto` (start once the execution consent check passes) or `Manual`.
    #[serde(default = "manual")]
    pub start_type: String,
    /// The command line (argv).
    #[serde(default)]
    pub command: Vec<String>,
    /// The environment.
    #[serde(default)]
    pub environment_variables: BTreeMap<String, String>,
    /// Datasource access name → mount path inside the application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datasources: Option<BTreeMap<String, String>>,
    /// Datasink access name → mount path inside the application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datasinks: Option<BTreeMap<String, String>>,
    /// Ports and resource requests.
    #[serde(default)]
    pub runtime_settings: RuntimeSettings,
}

fn manual() -> String {
    "Manual".into()
}

impl Application {
    /// Whether the application starts without a `start` call.
    pub fn auto_start(&self) -> bool {
        self.start_type == "Auto"
    }
}

/// `Image`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// The OCI image document (`backingResource.id` is the image reference).
    pub executable: Document,
    /// How the image is protected, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protection: Option<PrivacyProxySettings>,
    /// `{policy: {policyDocument: b64}}` (the reference writes `{"trustType":"https"}`).
    #[serde(default)]
    pub enforcement_policy: Value,
}

/// `Document`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    /// `OCI`.
    pub document_type: String,
    /// A receipt proving the document's authenticity (empty in the reference's commands).
    #[serde(default)]
    pub authenticity_receipt: String,
    /// The identity that reads the document, when one is needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Value>,
    /// Where the document is.
    pub backing_resource: Resource,
}

/// `runtimeSettings`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeSettings {
    /// Ports the application listens on.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Resource requests.
    #[serde(default)]
    pub resource: ResourceSettings,
}

/// `runtimeSettings.resource`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourceSettings {
    /// Requests.
    #[serde(default)]
    pub requests: ResourceRequests,
}

/// `runtimeSettings.resource.requests`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequests {
    /// CPU cores (fractions allowed).
    #[serde(default)]
    pub cpu: f64,
    /// Memory in GB (GiB in the local clean room).
    #[serde(default, rename = "memoryInGB")]
    pub memory_in_gb: f64,
}

/// `governance`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GovernanceSettings {
    /// Never populated by the reference's commands; kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<Value>,
    /// Never populated by the reference's commands; kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<Value>,
    /// Where the application's logs and the infrastructure's telemetry go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<TelemetrySettings>,
}

/// `governance.telemetry`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TelemetrySettings {
    /// Infrastructure telemetry (the sidecars' metrics, traces and logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure: Option<InfrastructureTelemetry>,
    /// The application's logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<ApplicationTelemetry>,
}

/// `governance.telemetry.infrastructure`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InfrastructureTelemetry {
    /// Kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<Value>,
    /// The metrics sink.
    pub metrics: AccessPoint,
    /// The traces sink.
    pub traces: AccessPoint,
    /// The logs sink.
    pub logs: AccessPoint,
}

/// `governance.telemetry.application`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplicationTelemetry {
    /// Kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<Value>,
    /// The logs sink.
    pub logs: AccessPoint,
}

/// What can go wrong reading or rewriting a spec; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file cannot be read.
    #[error("cannot read the clean-room spec {path}: {source}")]
    Read {
        /// The spec file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a spec (the YAML error carries line and column).
    #[error("malformed clean-room spec {path}: {source}")]
    Malformed {
        /// The spec file.
        path: PathBuf,
        /// Why.
        source: serde_yaml::Error,
    },
    /// The document or one of its lists has the wrong shape.
    #[error("the clean-room spec {path}: {what}")]
    Shape {
        /// The spec file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// An access point has a DEK secret but no KEK.
    #[error("access point '{0}' has a DEK secret but no KEK in the clean-room spec")]
    MissingKek(String),
    /// The file cannot be written.
    #[error("cannot write the clean-room spec {path}: {source}")]
    Write {
        /// The spec file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Results of this module.
pub type Result<T, E = SpecError> = std::result::Result<T, E>;

/// `AccessPoint`: a datastore as the clean room mounts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessPoint {
    /// Access name.
    pub name: String,
    /// `Volume_ReadOnly` (datasource) or `Volume_ReadWrite` (datasink).
    #[serde(rename = "type")]
    pub kind: String,
    /// Mount path (empty: chosen by the application's mapping).
    #[serde(default)]
    pub path: String,
    /// The store: `id` is the datastore name.
    pub store: Resource,
    /// An identity object of the spec, when the store needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Value>,
    /// How the data is protected.
    pub protection: PrivacyProxySettings,
    /// A sub-path inside the datastore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdirectory: Option<String>,
    /// The signed dataset manifest this datasource is pinned to (an encfs field; the reference
    /// has none, so a reference spec parses without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<ManifestPin>,
    /// The datastore's blob names are encrypted (`encfs datastore add --encrypt-names`; an encfs
    /// field, absent from reference specs): the clean room's mount maps each plaintext name to
    /// its stored form. CSE datasources only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypt_names: bool,
}

/// `manifest` of a datasource: the exact signed manifest the contract pins. The clean room's
/// mount reads the manifest blob, refuses it unless its SHA-256 is `digest`, and then serves
/// only the blobs it lists, in exactly those versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestPin {
    /// `sha256:<64 lowercase hex>` of the signed manifest's bytes (the COSE_Sign1 message).
    pub digest: String,
    /// The manifest blob's name in the datastore (under the access point's subdirectory).
    pub blob: String,
}

impl ManifestPin {
    /// Whether `digest` has the shape `sha256:<64 lowercase hex>`.
    pub fn digest_is_well_formed(digest: &str) -> bool {
        digest.strip_prefix("sha256:").is_some_and(|hex| {
            hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
    }
}

/// `Resource`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    /// Name (container, secret store, KEK).
    pub name: String,
    /// Resource type (`Azure_BlobStorage`, `AzureKeyVault`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// Id (datastore name, secret store name).
    pub id: String,
    /// Where it is reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ServiceEndpoint>,
}

/// `ServiceEndpoint`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEndpoint {
    /// Protocol (`AzureKeyVault_Secret`, `AzureKeyVault_SecureKey`, …).
    pub protocol: String,
    /// URL.
    pub url: String,
    /// Base64 of a JSON object (for a KEK: `{"authority": <attestation URL>}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<String>,
}

/// `PrivacyProxySettings`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrivacyProxySettings {
    /// `SecureVolume__ReadOnly__Azure__BlobStorage` and the like.
    pub proxy_type: String,
    /// `Secure` or `Open`.
    pub proxy_mode: String,
    /// Base64 of `{"EncryptionMode": "SSE"|"CPK"|"CSE", "KeyType"?: "KEK"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<String>,
    /// The wrapped DEK and its KEK (CSE, CPK).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_secrets: Option<EncryptionSecrets>,
}

/// `encryptionSecrets`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncryptionSecrets {
    /// The wrapped DEK (a secret).
    pub dek: EncryptionSecret,
    /// The KEK (a key behind a release policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kek: Option<EncryptionSecret>,
}

/// `EncryptionSecret`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncryptionSecret {
    /// Secret or key name.
    pub name: String,
    /// Where it is kept.
    pub secret: CleanroomSecret,
}

/// `CleanroomSecret`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanroomSecret {
    /// `Secret`, `Certificate` or `Key`.
    pub secret_type: String,
    /// The secret store (`id` = its name) and the key name.
    pub backing_resource: Resource,
}

/// One access point's key release: which KEK, in which store, wraps which DEK secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyReleaseRef {
    /// Access name.
    pub access_name: String,
    /// The datastore (its DEK).
    pub datastore: String,
    /// The wrapped DEK's secret name.
    pub dek_secret: String,
    /// The secret store of the wrapped DEK.
    pub dek_store: String,
    /// The KEK's name.
    pub kek_name: String,
    /// The secret store of the KEK.
    pub kek_store: String,
}

impl Spec {
    /// Parses a spec.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        serde_yaml::from_str(text).map_err(|source| SpecError::Malformed {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads a spec file.
    pub fn load(path: &Path) -> Result<Self> {
        Self::parse(&read(path)?, path)
    }

    /// The access points with a wrapped DEK and a KEK, datasources first.
    pub fn key_releases(&self) -> Result<Vec<KeyReleaseRef>> {
        let mut out = Vec::new();
        for ap in self.datasources.iter().chain(&self.datasinks) {
            let Some(secrets) = &ap.protection.encryption_secrets else {
                continue;
            };
            let Some(kek) = &secrets.kek else {
                return Err(SpecError::MissingKek(ap.name.clone()));
            };
            out.push(KeyReleaseRef {
                access_name: ap.name.clone(),
                datastore: ap.store.id.clone(),
                dek_secret: secrets.dek.name.clone(),
                dek_store: secrets.dek.secret.backing_resource.id.clone(),
                kek_name: kek.secret.backing_resource.name.clone(),
                kek_store: kek.secret.backing_resource.id.clone(),
            });
        }
        Ok(out)
    }

    /// The application named `name`.
    pub fn application(&self, name: &str) -> Option<&Application> {
        self.applications.iter().find(|a| a.name == name)
    }

    /// The access point named `name`, datasources first.
    pub fn access_point(&self, name: &str) -> Option<(&AccessPoint, Direction)> {
        let source = self.datasources.iter().find(|a| a.name == name);
        let sink = || self.datasinks.iter().find(|a| a.name == name);
        source
            .map(|a| (a, Direction::Source))
            .or_else(|| sink().map(|a| (a, Direction::Sink)))
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| SpecError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// What `config init` writes: the CGS OIDC identity and empty lists.
pub fn initial() -> Value {
    serde_yaml::from_str(&format!(
        "identities:\n- name: {CGS_OIDC_IDENTITY}\n  clientId: ''\n  tenantId: ''\n  tokenIssuer:\n    \
         issuerType: AttestationBasedTokenIssuer\n    issuer:\n      protocol: Attested_OIDC\n      \
         url: https://cgs/oidc\ndatasources: []\ndatasinks: []\napplications: []\n"
    ))
    .expect("a valid YAML literal")
}

/// `config init`: writes [`initial`] unless the file exists. Returns whether it wrote.
pub fn init(path: &Path) -> Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    save(path, &initial())?;
    Ok(true)
}

/// Which list an access point goes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `datasources`, `Volume_ReadOnly`.
    Source,
    /// `datasinks`, `Volume_ReadWrite`.
    Sink,
}

impl Direction {
    /// The spec's list key.
    pub fn list(self) -> &'static str {
        match self {
            Direction::Source => "datasources",
            Direction::Sink => "datasinks",
        }
    }

    /// The access point's `type`.
    pub fn volume(self) -> &'static str {
        match self {
            Direction::Source => "Volume_ReadOnly",
            Direction::Sink => "Volume_ReadWrite",
        }
    }

    fn proxy_access(self) -> &'static str {
        match self {
            Direction::Source => "ReadOnly",
            Direction::Sink => "ReadWrite",
        }
    }
}

/// The spec's store type for an encfs store address: Azure Blob Storage for http(s) URLs, a
/// local directory store otherwise (encfs only; the reference has no such type).
pub fn store_type(address: &str) -> &'static str {
    if address.starts_with("https://") || address.starts_with("http://") {
        "Azure_BlobStorage"
    } else {
        "Encfs_LocalDirectory"
    }
}

/// `proxyType` for a store type and direction, as the reference spells it
/// (`SecureVolume__ReadOnly__Azure__BlobStorage`).
pub fn proxy_type(store_type: &str, direction: Direction) -> String {
    format!(
        "SecureVolume__{}__{}",
        direction.proxy_access(),
        store_type.replace('_', "__")
    )
}

/// `protection.configuration`: base64 of `{"EncryptionMode": …}` (+ `"KeyType": "KEK"` for CSE
/// and CPK), keys in the reference's order.
pub fn protection_configuration(mode: &str) -> String {
    let text = if mode == "SSE" {
        format!(r#"{{"EncryptionMode": "{mode}"}}"#)
    } else {
        format!(r#"{{"EncryptionMode": "{mode}", "KeyType": "KEK"}}"#)
    };
    STANDARD.encode(text)
}

/// A KEK provider's `configuration`: base64 of `{"authority": <attestation URL>}`.
pub fn kek_configuration(authority: &str) -> String {
    STANDARD.encode(serde_json::json!({ "authority": authority }).to_string())
}

/// The wrapped DEK's secret name: `wrapped-<datastore>-dek-<kek>`.
pub fn wrapped_dek_name(datastore: &str, kek: &str) -> String {
    format!("wrapped-{datastore}-dek-{kek}")
}

/// The default KEK name of a spec file: [`spec_file_tag`], then `-kek`.
pub fn default_kek_name(spec_path: &Path) -> Result<String> {
    Ok(format!("{}-kek", spec_file_tag(spec_path)?))
}

/// A stable 8-hex-digit tag of a spec file: the first 4 bytes of SHA-256 of its absolute path.
/// The reference uses the first 8 hex digits of uuid3(NAMESPACE_X500, path) (an MD5) for the
/// same purpose (default KEK names, telemetry datastore names); any stable per-spec tag serves.
pub fn spec_file_tag(spec_path: &Path) -> Result<String> {
    let absolute = std::path::absolute(spec_path).map_err(|source| SpecError::Read {
        path: spec_path.to_path_buf(),
        source,
    })?;
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        absolute.as_os_str().as_encoded_bytes(),
    );
    let hex: String = digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(hex)
}

/// Adds `access_point` to the spec file's datasources or datasinks, replacing an entry of the
/// same name, keeping every other field of the document.
pub fn add_access_point(
    path: &Path,
    direction: Direction,
    access_point: &AccessPoint,
) -> Result<()> {
    let entry = serde_yaml::to_value(access_point).expect("an access point serialises");
    upsert_named(path, direction.list(), &access_point.name, entry)
}

/// Adds `application` to the spec file's applications, replacing an entry of the same name.
pub fn add_application(path: &Path, application: &Application) -> Result<()> {
    let entry = serde_yaml::to_value(application).expect("an application serialises");
    upsert_named(path, "applications", &application.name, entry)
}

/// Puts `entry` into the top-level list `list` of the spec file, replacing the entry whose
/// `name` is `name`, keeping every other field of the document.
pub fn upsert_named(path: &Path, list: &str, name: &str, entry: Value) -> Result<()> {
    update(path, |root| {
        let value = root
            .entry(Value::from(list))
            .or_insert_with(|| Value::Sequence(Vec::new()));
        if value.is_null() {
            *value = Value::Sequence(Vec::new());
        }
        let Value::Sequence(entries) = value else {
            return Err(format!("'{list}' is not a list"));
        };
        let same_name = |e: &Value| e.get("name").and_then(Value::as_str) == Some(name);
        match entries.iter_mut().find(|e| same_name(e)) {
            Some(existing) => *existing = entry,
            None => entries.push(entry),
        }
        Ok(())
    })
}

/// Rewrites the spec file through `edit`, which gets the document's root mapping (created when
/// the file is empty) and may refuse with a description of what is wrong.
pub fn update(
    path: &Path,
    edit: impl FnOnce(&mut Mapping) -> std::result::Result<(), String>,
) -> Result<()> {
    let text = read(path)?;
    let mut document: Value =
        serde_yaml::from_str(&text).map_err(|source| SpecError::Malformed {
            path: path.to_path_buf(),
            source,
        })?;
    if document.is_null() {
        document = Value::Mapping(Mapping::new());
    }
    let shape = |what: String| SpecError::Shape {
        path: path.to_path_buf(),
        what,
    };
    let Value::Mapping(root) = &mut document else {
        return Err(shape("not a YAML mapping".into()));
    };
    edit(root).map_err(shape)?;
    save(path, &document)
}

/// The identity object named `name` in the spec's `identities`.
pub fn identity(spec: &Spec, name: &str) -> Option<Value> {
    spec.identities
        .iter()
        .find(|i| i.get("name").and_then(Value::as_str) == Some(name))
        .cloned()
}

/// Writes `document` to `path` atomically (a temporary file in the same directory, synced, then
/// renamed over the old file), so a crash leaves the old spec or the new one, never half of one.
pub fn save(path: &Path, document: &Value) -> Result<()> {
    let failed = |source| SpecError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir,
        None => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    let text = serde_yaml::to_string(document).expect("a YAML value serialises");
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(failed)?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(failed)?;
    file.as_file().sync_all().map_err(failed)?;
    file.persist(path).map_err(|e| failed(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access_point(name: &str) -> AccessPoint {
        AccessPoint {
            name: name.into(),
            kind: Direction::Source.volume().into(),
            path: String::new(),
            store: Resource {
                name: "container".into(),
                kind: "Azure_BlobStorage".into(),
                id: name.into(),
                provider: None,
            },
            identity: None,
            protection: PrivacyProxySettings {
                proxy_type: proxy_type("Azure_BlobStorage", Direction::Source),
                proxy_mode: "Secure".into(),
                configuration: Some(protection_configuration("CSE")),
                encryption_secrets: None,
            },
            subdirectory: None,
            manifest: None,
            encrypt_names: false,
        }
    }

    #[test]
    fn add_replaces_by_name_and_keeps_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.yaml");
        std::fs::write(
            &path,
            "sandbox: {sandboxType: None}\ndatasources:\n- name: a\n  futureField: 7\napplications: [{name: app}]\n",
        )
        .unwrap();
        let mut first = access_point("b");
        add_access_point(&path, Direction::Source, &first).unwrap();
        first.path = "/mnt/b".into();
        add_access_point(&path, Direction::Source, &first).unwrap();
        let document: Value =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(document["sandbox"]["sandboxType"], Value::from("None"));
        assert_eq!(document["applications"][0]["name"], Value::from("app"));
        let sources = document["datasources"].as_sequence().unwrap();
        assert_eq!(sources.len(), 2);
        assert_eq!(sources[0]["futureField"], Value::from(7));
        assert_eq!(sources[1]["path"], Value::from("/mnt/b"));
        assert_eq!(
            sources[1]["protection"]["proxyType"],
            Value::from("SecureVolume__ReadOnly__Azure__BlobStorage")
        );
    }

    #[test]
    fn init_writes_the_reference_identity_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.yaml");
        assert!(init(&path).unwrap());
        std::fs::write(&path, "datasources: []\n").unwrap();
        assert!(!init(&path).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "datasources: []\n");
        let spec: Value = initial();
        assert_eq!(
            spec["identities"][0]["name"],
            Value::from(CGS_OIDC_IDENTITY)
        );
        assert_eq!(
            spec["identities"][0]["tokenIssuer"]["issuer"]["url"],
            Value::from("https://cgs/oidc")
        );
    }

    #[test]
    fn configuration_blobs_match_the_reference_text() {
        let decode = |s: String| String::from_utf8(STANDARD.decode(s).unwrap()).unwrap();
        assert_eq!(
            decode(protection_configuration("CSE")),
            r#"{"EncryptionMode": "CSE", "KeyType": "KEK"}"#
        );
        assert_eq!(
            decode(protection_configuration("SSE")),
            r#"{"EncryptionMode": "SSE"}"#
        );
        assert_eq!(
            decode(kek_configuration("https://maa")),
            r#"{"authority":"https://maa"}"#
        );
    }

    #[test]
    fn a_reference_shaped_application_and_telemetry_parse() {
        let text = r#"
identities: []
datasources: []
datasinks: []
applications:
- name: demo-app
  image:
    executable:
      documentType: OCI
      authenticityReceipt: ''
      backingResource:
        id: docker.io/golang@sha256:abc
        name: demo-app
        type: AzureContainerRegistry
        provider: {protocol: AzureContainerRegistry, url: docker.io}
    enforcementPolicy: {policy: {policyDocument: eyJ0cnVzdFR5cGUiOiJodHRwcyJ9}}
  startType: Auto
  command: [bash, -c, "gzip -c /mnt/remote/input/x > /mnt/remote/output/x.gz"]
  environmentVariables: {CODE: x}
  datasources: {publisher-input: /mnt/remote/input}
  datasinks: {consumer-output: /mnt/remote/output}
  runtimeSettings:
    ports: []
    resource: {requests: {cpu: 0.5, memoryInGB: 4}}
governance:
  telemetry:
    application:
      logs:
        name: application-telemetry
        type: Volume_ReadWrite
        path: ''
        store: {name: c, type: Azure_BlobStorage, id: application-telemetry-1}
        protection: {proxyType: SecureVolume__ReadWrite__Azure__BlobStorage, proxyMode: Secure}
"#;
        let spec = Spec::parse(text, Path::new("spec.yaml")).unwrap();
        let app = spec.application("demo-app").unwrap();
        assert!(app.auto_start());
        assert_eq!(app.command[0], "bash");
        assert_eq!(app.runtime_settings.resource.requests.memory_in_gb, 4.0);
        assert_eq!(
            app.datasources.as_ref().unwrap()["publisher-input"],
            "/mnt/remote/input"
        );
        let telemetry = spec.governance.unwrap().telemetry.unwrap();
        assert_eq!(
            telemetry.application.unwrap().logs.name,
            "application-telemetry"
        );
    }

    #[test]
    fn a_malformed_spec_names_the_file_and_line() {
        let error = Spec::parse("datasources:\n  - name: [\n", Path::new("bad.yaml")).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("bad.yaml"), "{text}");
        assert!(text.contains("line"), "{text}");
    }
}
