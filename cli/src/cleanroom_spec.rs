//! The clean-room spec (the reference's `cleanroom.py` model, YAML, camelCase), as far as the
//! data owner's commands need it: identities, datasources and datasinks with their protection
//! and encryption secrets. Reading is lenient (fields this module does not model are ignored);
//! rewriting replaces one access point in the YAML document and keeps every other field as it
//! was, so a spec from the reference or from another command survives `add-datasource`.

use std::path::Path;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};

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
}

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
        serde_yaml::from_str(text)
            .with_context(|| format!("malformed clean-room spec {}", path.display()))
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
                bail!(
                    "access point '{}' has a DEK secret but no KEK in the clean-room spec",
                    ap.name
                );
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
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the clean-room spec {}", path.display()))
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

/// The default KEK name of a spec file: the first 8 hex digits of SHA-256 of its absolute path,
/// then `-kek` (the reference uses uuid3 of the path; any stable per-spec name serves).
pub fn default_kek_name(spec_path: &Path) -> Result<String> {
    let absolute = std::path::absolute(spec_path)
        .with_context(|| format!("cannot resolve {}", spec_path.display()))?;
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        absolute.as_os_str().as_encoded_bytes(),
    );
    let hex: String = digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!("{hex}-kek"))
}

/// Adds `access_point` to the spec file's datasources or datasinks, replacing an entry of the
/// same name, keeping every other field of the document.
pub fn add_access_point(
    path: &Path,
    direction: Direction,
    access_point: &AccessPoint,
) -> Result<()> {
    let text = read(path)?;
    let mut document: Value = serde_yaml::from_str(&text)
        .with_context(|| format!("malformed clean-room spec {}", path.display()))?;
    if document.is_null() {
        document = Value::Mapping(Mapping::new());
    }
    let Value::Mapping(root) = &mut document else {
        bail!(
            "the clean-room spec {} is not a YAML mapping",
            path.display()
        );
    };
    let list = root
        .entry(Value::from(direction.list()))
        .or_insert_with(|| Value::Sequence(Vec::new()));
    if list.is_null() {
        *list = Value::Sequence(Vec::new());
    }
    let Value::Sequence(entries) = list else {
        bail!(
            "'{}' in the clean-room spec {} is not a list",
            direction.list(),
            path.display()
        );
    };
    let entry = serde_yaml::to_value(access_point).expect("an access point serialises");
    let same_name = |e: &Value| e.get("name").and_then(Value::as_str) == Some(&access_point.name);
    match entries.iter_mut().find(|e| same_name(e)) {
        Some(existing) => *existing = entry,
        None => entries.push(entry),
    }
    save(path, &document)
}

/// The identity object named `name` in the spec's `identities`.
pub fn identity(spec: &Spec, name: &str) -> Option<Value> {
    spec.identities
        .iter()
        .find(|i| i.get("name").and_then(Value::as_str) == Some(name))
        .cloned()
}

fn save(path: &Path, document: &Value) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let text = serde_yaml::to_string(document).expect("a YAML value serialises");
    let mut out = crate::output::AtomicOutput::create(path)?;
    std::io::Write::write_all(out.file(), text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    out.commit(true)
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
}
