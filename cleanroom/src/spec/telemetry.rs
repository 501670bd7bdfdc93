//! `config set-logging` / `config set-telemetry` (ref §7, §10): the datasink the application's
//! logs (access name `application-telemetry`) or the infrastructure's metrics, traces and logs
//! (`infrastructure-telemetry`) are exported to, its datastore's name, and the
//! `governance.telemetry` entry that points at it. The CLI creates the datastore and adds the
//! datasink with the same code as `datastore add` and `config add-datasink`; this module holds
//! the names and the spec edit.

use std::path::Path;

use serde_yaml::{Mapping, Value};

use super::{AccessPoint, Result, spec_file_tag, update};

/// The longest datastore (and container) name the reference makes (an Azure container name's
/// limit).
pub const MAX_NAME_LENGTH: usize = 63;

/// Which telemetry a sink receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TelemetryKind {
    /// The application's stdout/stderr (`set-logging`).
    Application,
    /// The sidecars' metrics, traces and logs (`set-telemetry`).
    Infrastructure,
}

impl TelemetryKind {
    /// The sink's access name, which the code launcher's export looks for.
    pub fn access_name(self) -> &'static str {
        match self {
            TelemetryKind::Application => "application-telemetry",
            TelemetryKind::Infrastructure => "infrastructure-telemetry",
        }
    }

    /// The key under `governance.telemetry`.
    pub fn key(self) -> &'static str {
        match self {
            TelemetryKind::Application => "application",
            TelemetryKind::Infrastructure => "infrastructure",
        }
    }
}

fn truncate(mut name: String) -> String {
    name.truncate(MAX_NAME_LENGTH);
    name.trim_end_matches('-').to_owned()
}

/// The datastore the sink lives in: `<access>-<tag>-<friendly>`, where tag is
/// [`spec_file_tag`] of the spec file and friendly its file name without non-alphanumerics,
/// cut to [`MAX_NAME_LENGTH`] (ref §7).
pub fn datastore_name(kind: TelemetryKind, spec_path: &Path) -> Result<String> {
    let friendly: String = spec_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let tag = spec_file_tag(spec_path)?;
    Ok(truncate(format!("{}-{tag}-{friendly}", kind.access_name())))
}

/// The container name with `--container-suffix`: `<access>-<suffix>`, cut to
/// [`MAX_NAME_LENGTH`]; without one the container is named after the datastore.
pub fn container_name(kind: TelemetryKind, suffix: Option<&str>) -> Option<String> {
    suffix
        .filter(|s| !s.is_empty())
        .map(|s| truncate(format!("{}-{s}", kind.access_name())))
}

/// Points `governance.telemetry.application` (`{logs: sink}`) or `.infrastructure`
/// (`{metrics, traces, logs}`, all the same sink) of the spec file at `sink`, replacing what
/// was there and keeping every other field of the document.
pub fn set_telemetry(spec_path: &Path, kind: TelemetryKind, sink: &AccessPoint) -> Result<()> {
    let sink = serde_yaml::to_value(sink).expect("an access point serialises");
    let mut entry = Mapping::new();
    let fields: &[&str] = match kind {
        TelemetryKind::Application => &["logs"],
        TelemetryKind::Infrastructure => &["metrics", "traces", "logs"],
    };
    for field in fields {
        entry.insert(Value::from(*field), sink.clone());
    }
    update(spec_path, |root| {
        let governance = child_mapping(root, "governance")?;
        let telemetry = child_mapping(governance, "telemetry")?;
        telemetry.insert(Value::from(kind.key()), Value::Mapping(entry));
        Ok(())
    })
}

/// The mapping under `key`, created when absent or null.
fn child_mapping<'a>(
    parent: &'a mut Mapping,
    key: &str,
) -> std::result::Result<&'a mut Mapping, String> {
    let value = parent
        .entry(Value::from(key))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if value.is_null() {
        *value = Value::Mapping(Mapping::new());
    }
    match value {
        Value::Mapping(mapping) => Ok(mapping),
        _ => Err(format!("'{key}' is not a mapping")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Direction, PrivacyProxySettings, Resource, Spec, proxy_type};

    fn sink(kind: TelemetryKind) -> AccessPoint {
        AccessPoint {
            name: kind.access_name().into(),
            kind: Direction::Sink.volume().into(),
            path: String::new(),
            store: Resource {
                name: "c".into(),
                kind: "Encfs_LocalDirectory".into(),
                id: "ds".into(),
                provider: None,
            },
            identity: None,
            protection: PrivacyProxySettings {
                proxy_type: proxy_type("Encfs_LocalDirectory", Direction::Sink),
                proxy_mode: "Secure".into(),
                configuration: None,
                encryption_secrets: None,
            },
            subdirectory: None,
            manifest: None,
            encrypt_names: false,
        }
    }

    #[test]
    fn names_follow_the_reference_pattern_and_fit() {
        let name =
            datastore_name(TelemetryKind::Application, Path::new("/x/publisher.config")).unwrap();
        let tag = spec_file_tag(Path::new("/x/publisher.config")).unwrap();
        assert_eq!(name, format!("application-telemetry-{tag}-publisherconfig"));
        let long = format!("/x/{}.yaml", "a".repeat(100));
        let name = datastore_name(TelemetryKind::Infrastructure, Path::new(&long)).unwrap();
        assert_eq!(name.len(), MAX_NAME_LENGTH);
        assert!(name.starts_with("infrastructure-telemetry-"));
        assert_eq!(
            container_name(TelemetryKind::Application, Some("run1")).as_deref(),
            Some("application-telemetry-run1")
        );
        assert_eq!(container_name(TelemetryKind::Application, Some("")), None);
        assert_eq!(
            container_name(TelemetryKind::Infrastructure, Some(&"b".repeat(80)))
                .unwrap()
                .len(),
            MAX_NAME_LENGTH
        );
    }

    #[test]
    fn set_telemetry_fills_governance_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.yaml");
        std::fs::write(
            &path,
            "governance: {consent: [x], telemetry: {application: {consent: old, logs: {name: old}}}}\nfuture: 1\n",
        )
        .unwrap();
        set_telemetry(
            &path,
            TelemetryKind::Application,
            &sink(TelemetryKind::Application),
        )
        .unwrap();
        set_telemetry(
            &path,
            TelemetryKind::Infrastructure,
            &sink(TelemetryKind::Infrastructure),
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let document: Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(document["future"], Value::from(1));
        assert_eq!(document["governance"]["consent"][0], Value::from("x"));
        assert!(
            document["governance"]["telemetry"]["application"]
                .get("consent")
                .is_none()
        );
        let spec = Spec::parse(&text, &path).unwrap();
        let telemetry = spec.governance.unwrap().telemetry.unwrap();
        assert_eq!(
            telemetry.application.unwrap().logs,
            sink(TelemetryKind::Application)
        );
        let infrastructure = telemetry.infrastructure.unwrap();
        assert_eq!(infrastructure.metrics, sink(TelemetryKind::Infrastructure));
        assert_eq!(infrastructure.traces, infrastructure.logs);
    }

    #[test]
    fn a_null_governance_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.yaml");
        std::fs::write(&path, "governance: null\n").unwrap();
        set_telemetry(
            &path,
            TelemetryKind::Application,
            &sink(TelemetryKind::Application),
        )
        .unwrap();
        std::fs::write(&path, "governance: 3\n").unwrap();
        let error = set_telemetry(
            &path,
            TelemetryKind::Application,
            &sink(TelemetryKind::Application),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("'governance' is not a mapping"), "{error}");
    }
}
