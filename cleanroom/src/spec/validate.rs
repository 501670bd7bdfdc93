//! `config validate` (and `governance deployment generate`, which runs the same checks): what
//! must hold of a spec before anyone proposes it as a contract. The reference's checks (ref §7
//! `validate_config`): every access name an application maps exists (`DataStoreNotFound`,
//! `DatasinkNotFound`), with the warnings `InboundAllowAll`, `OutboundAllowAll` and
//! `MultipleApplications`. Ours on top, because a clean room built from a spec that fails them
//! either cannot start or does something nobody agreed to: names are unique, mount paths are
//! absolute and do not overlap (one a prefix of another, across every application's maps and
//! the clean room's own directories such as `/mnt/telemetry`), a pinned dataset manifest is a
//! datasource's with a `sha256:<64 hex>` digest and a blob name, each access point's protection
//! is coherent (its type matches its list, its `proxyType` its type, CSE/CPK carry a wrapped DEK
//! and a KEK, SSE carries none), the telemetry sinks are datasinks of the spec, and, given the
//! owner's stores, the datastores and the secret stores holding the keys exist and can do the
//! job. Checks never stop at the first finding: the report lists all of them.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde_yaml::Value;

use super::{AccessPoint, Direction, Spec, proxy_type};

/// Directories of the clean room itself that no application mount may overlap: the telemetry
/// and volume status directories the launcher writes (ref §6, §10) and the sandbox's own
/// filesystems.
pub const RESERVED_PATHS: [&str; 6] = [
    "/mnt/telemetry",
    "/mnt/volumestatus",
    "/proc",
    "/sys",
    "/dev",
    "/tmp",
];

/// What a finding is about; the reference's codes where it has the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[non_exhaustive]
pub enum Code {
    /// An application maps a datasource access name the spec does not have (reference code).
    DataStoreNotFound,
    /// An application maps a datasink access name the spec does not have (reference code).
    DatasinkNotFound,
    /// Two identities, two access points (sources and sinks share one namespace) or two
    /// applications have the same name.
    DuplicateName,
    /// A mount path is relative, has `.`/`..` components or is `/`.
    InvalidMountPath,
    /// Two mount paths overlap (equal, or one inside the other), or one overlaps a directory of
    /// the clean room ([`RESERVED_PATHS`]).
    MountPathOverlap,
    /// An access point's `type` does not match its list (datasources are `Volume_ReadOnly`,
    /// datasinks `Volume_ReadWrite`).
    AccessTypeMismatch,
    /// `protection.proxyType` does not match the access point's type and store.
    ProxyTypeMismatch,
    /// `protection.configuration` is not base64 of `{"EncryptionMode": "SSE"|"CPK"|"CSE"}`.
    InvalidProtectionConfiguration,
    /// A CSE or CPK access point without `encryptionSecrets`.
    EncryptionSecretsMissing,
    /// A CSE or CPK access point with a DEK secret but no KEK.
    KekMissing,
    /// An SSE access point with `encryptionSecrets` (nothing would use them).
    UnexpectedEncryptionSecrets,
    /// A datasource's `manifest` has a digest that is not `sha256:<64 lowercase hex>` or no blob
    /// name, or a datasink has one (the clean room seals a datasink's manifest itself).
    InvalidManifest,
    /// `encryptNames` on a datasink, or on an access point that is not CSE (the name key is
    /// derived from the DEK).
    InvalidEncryptNames,
    /// A `governance.telemetry` sink is not (or not the same as) a datasink of the spec.
    TelemetrySinkNotFound,
    /// An access point's datastore has another protection mode in the datastore config.
    DatastoreModeMismatch,
    /// A secret store an access point names is not in the secret store config.
    SecretStoreNotFound,
    /// A secret store cannot do what the access point needs of it (a wrapped DEK in a local
    /// store the clean room cannot reach, a KEK in a store without key release).
    SecretStoreUnsuitable,
    /// Warning (reference code): inbound HTTP is enabled with no privacy policy.
    InboundAllowAll,
    /// Warning (reference code): outbound HTTP is enabled with no privacy policy.
    OutboundAllowAll,
    /// Warning (reference code): the spec has more than one application.
    MultipleApplications,
    /// Warning: a datastore config was given but does not have this access point's datastore
    /// (another party's), so its stores were not checked.
    DatastoreNotInConfig,
}

/// One error or warning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What kind of finding.
    pub code: Code,
    /// What is wrong, naming the section and entry.
    pub message: String,
}

/// Everything found; the spec is valid when there are no errors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ValidationReport {
    /// Findings that make the spec unusable.
    pub errors: Vec<Finding>,
    /// Findings worth a look.
    pub warnings: Vec<Finding>,
}

impl ValidationReport {
    /// No errors (warnings allowed).
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }

    fn error(&mut self, code: Code, message: String) {
        self.errors.push(Finding { code, message });
    }

    fn warning(&mut self, code: Code, message: String) {
        self.warnings.push(Finding { code, message });
    }
}

/// What a secret store can hold, for the key reachability checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretStoreKind {
    /// A local directory: the clean room cannot reach it.
    Local,
    /// A key vault: secrets (wrapped DEKs).
    Vault,
    /// A premium vault or managed HSM: secrets and keys behind a release policy (KEKs).
    KeyReleaseVault,
}

/// The owner's stores, for the checks that need them (`--datastore-config`,
/// `--secretstore-config`). Either may be absent.
#[derive(Debug, Clone, Default)]
pub struct Stores {
    /// Datastore name → protection mode (`SSE`, `CPK`, `CSE`). When present, access points
    /// whose datastore is not here are another party's: warned about, not checked further.
    pub datastores: Option<BTreeMap<String, String>>,
    /// Secret store name → kind.
    pub secret_stores: Option<BTreeMap<String, SecretStoreKind>>,
}

/// Runs every check on `spec`.
pub fn validate(spec: &Spec, stores: Option<&Stores>) -> ValidationReport {
    let mut report = ValidationReport::default();
    check_unique_names(spec, &mut report);
    check_application_maps(spec, &mut report);
    check_mount_paths(spec, &mut report);
    for (list, direction) in [
        (&spec.datasources, Direction::Source),
        (&spec.datasinks, Direction::Sink),
    ] {
        for access_point in list {
            check_protection(access_point, direction, &mut report);
            check_manifest(access_point, direction, &mut report);
            if let Some(stores) = stores {
                check_stores(access_point, direction, stores, &mut report);
            }
        }
    }
    check_telemetry(spec, &mut report);
    check_network(spec, &mut report);
    if spec.applications.len() > 1 {
        report.warning(
            Code::MultipleApplications,
            format!(
                "the spec has {} applications ({}); each runs in its own sandbox with the access \
                 points it maps",
                spec.applications.len(),
                spec.applications
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    report
}

fn section(direction: Direction) -> &'static str {
    direction.list()
}

fn check_unique_names(spec: &Spec, report: &mut ValidationReport) {
    let mut duplicates = |section: &str, names: Vec<&str>| {
        let mut seen = BTreeSet::new();
        let mut reported = BTreeSet::new();
        for name in names {
            if !seen.insert(name) && reported.insert(name) {
                report.error(
                    Code::DuplicateName,
                    format!("{section}: more than one entry is named '{name}'"),
                );
            }
        }
    };
    duplicates(
        "identities",
        spec.identities
            .iter()
            .filter_map(|i| i.get("name").and_then(Value::as_str))
            .collect(),
    );
    duplicates(
        "datasources/datasinks (access names)",
        spec.datasources
            .iter()
            .chain(&spec.datasinks)
            .map(|a| a.name.as_str())
            .collect(),
    );
    duplicates(
        "applications",
        spec.applications.iter().map(|a| a.name.as_str()).collect(),
    );
}

fn check_application_maps(spec: &Spec, report: &mut ValidationReport) {
    for app in &spec.applications {
        for name in app.datasources.iter().flat_map(|m| m.keys()) {
            if !spec.datasources.iter().any(|d| &d.name == name) {
                report.error(
                    Code::DataStoreNotFound,
                    format!(
                        "applications entry '{}': datasource '{name}' is not among the spec's datasources",
                        app.name
                    ),
                );
            }
        }
        for name in app.datasinks.iter().flat_map(|m| m.keys()) {
            if !spec.datasinks.iter().any(|d| &d.name == name) {
                report.error(
                    Code::DatasinkNotFound,
                    format!(
                        "applications entry '{}': datasink '{name}' is not among the spec's datasinks",
                        app.name
                    ),
                );
            }
        }
    }
}

/// A mount path's components, or None when it is not an absolute, normal, non-root path.
fn components(path: &str) -> Option<Vec<&str>> {
    if !path.starts_with('/') {
        return None;
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|p| *p == "." || *p == "..") {
        return None;
    }
    Some(parts)
}

/// One mount: where, what is mounted there, and how to name it in a message.
struct Mount<'a> {
    parts: Vec<&'a str>,
    /// The access name (None for a directory of the clean room).
    access: Option<&'a str>,
    /// `applications entry 'x' mounts 'y' at '/p'` or `the clean room's own directory '/p'`.
    description: String,
}

fn check_mount_paths(spec: &Spec, report: &mut ValidationReport) {
    let mut mounts: Vec<Mount> = Vec::new();
    for path in RESERVED_PATHS {
        mounts.push(Mount {
            parts: components(path).expect("reserved paths are absolute"),
            access: None,
            description: format!("the clean room's own directory '{path}'"),
        });
    }
    for app in &spec.applications {
        let maps = [
            ("datasources", &app.datasources),
            ("datasinks", &app.datasinks),
        ];
        for (kind, map) in maps {
            for (access, path) in map.iter().flatten() {
                match components(path) {
                    Some(parts) => mounts.push(Mount {
                        parts,
                        access: Some(access),
                        description: format!(
                            "applications entry '{}' mounts '{access}' at '{path}'",
                            app.name
                        ),
                    }),
                    None => report.error(
                        Code::InvalidMountPath,
                        format!(
                            "applications entry '{}': {kind} '{access}' mount path '{path}' must be \
                             absolute, not '/', without '.' or '..'",
                            app.name
                        ),
                    ),
                }
            }
        }
    }
    for (i, a) in mounts.iter().enumerate() {
        for b in &mounts[i + 1..] {
            // The same access point at the same path in two applications is one mount.
            if a.access.is_some() && a.access == b.access && a.parts == b.parts {
                continue;
            }
            let shorter = a.parts.len().min(b.parts.len());
            if a.parts[..shorter] == b.parts[..shorter] {
                report.error(
                    Code::MountPathOverlap,
                    format!(
                        "mount paths overlap: {} and {}",
                        a.description, b.description
                    ),
                );
            }
        }
    }
}

/// The `EncryptionMode` in `protection.configuration`.
fn encryption_mode(access_point: &AccessPoint) -> Result<String, String> {
    let encoded = access_point
        .protection
        .configuration
        .as_deref()
        .ok_or("it has no protection.configuration")?;
    let bytes = STANDARD
        .decode(encoded)
        .map_err(|_| "protection.configuration is not base64".to_string())?;
    let json: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|_| "protection.configuration is not base64 of a JSON object".to_string())?;
    match json
        .get("EncryptionMode")
        .and_then(serde_json::Value::as_str)
    {
        Some(mode @ ("SSE" | "CPK" | "CSE")) => Ok(mode.to_owned()),
        Some(other) => Err(format!(
            "protection.configuration has EncryptionMode '{other}' (SSE, CPK or CSE)"
        )),
        None => Err("protection.configuration has no EncryptionMode".into()),
    }
}

fn check_protection(
    access_point: &AccessPoint,
    direction: Direction,
    report: &mut ValidationReport,
) {
    let entry = format!("{} entry '{}'", section(direction), access_point.name);
    if access_point.kind != direction.volume() {
        report.error(
            Code::AccessTypeMismatch,
            format!(
                "{entry}: type is '{}', but {} are '{}'",
                access_point.kind,
                section(direction),
                direction.volume()
            ),
        );
    }
    let expected = proxy_type(&access_point.store.kind, direction);
    if access_point.protection.proxy_type != expected {
        report.error(
            Code::ProxyTypeMismatch,
            format!(
                "{entry}: protection.proxyType is '{}', but a {} access point on a {} store is '{expected}'",
                access_point.protection.proxy_type,
                direction.volume(),
                access_point.store.kind
            ),
        );
    }
    let mode = match encryption_mode(access_point) {
        Ok(mode) => mode,
        Err(why) => {
            report.error(
                Code::InvalidProtectionConfiguration,
                format!("{entry}: {why}"),
            );
            return;
        }
    };
    if access_point.encrypt_names {
        if direction == Direction::Sink {
            report.error(
                Code::InvalidEncryptNames,
                format!(
                    "{entry}: encryptNames on a datasink is not supported (the clean room seals \
                     a datasink's manifest by its stored names)"
                ),
            );
        } else if mode != "CSE" {
            report.error(
                Code::InvalidEncryptNames,
                format!(
                    "{entry}: encryptNames needs CSE protection (the name key is derived from \
                     the DEK), not {mode}"
                ),
            );
        }
    }
    let secrets = access_point.protection.encryption_secrets.as_ref();
    match (mode.as_str(), secrets) {
        ("SSE", Some(_)) => report.error(
            Code::UnexpectedEncryptionSecrets,
            format!("{entry}: SSE protection with encryptionSecrets (only CSE and CPK use a DEK)"),
        ),
        ("CSE" | "CPK", None) => report.error(
            Code::EncryptionSecretsMissing,
            format!(
                "{entry}: {mode} protection needs encryptionSecrets (the wrapped DEK and its KEK)"
            ),
        ),
        ("CSE" | "CPK", Some(secrets)) if secrets.kek.is_none() => report.error(
            Code::KekMissing,
            format!("{entry}: {mode} protection has a DEK secret but no KEK to release it"),
        ),
        _ => {}
    }
}

fn check_manifest(access_point: &AccessPoint, direction: Direction, report: &mut ValidationReport) {
    let Some(pin) = &access_point.manifest else {
        return;
    };
    let entry = format!("{} entry '{}'", section(direction), access_point.name);
    if direction == Direction::Sink {
        report.error(
            Code::InvalidManifest,
            format!(
                "{entry}: a datasink pins no manifest (the clean room seals the datasink's \
                 manifest at the end of the run)"
            ),
        );
    }
    if !super::ManifestPin::digest_is_well_formed(&pin.digest) {
        report.error(
            Code::InvalidManifest,
            format!(
                "{entry}: manifest.digest '{}' is not sha256:<64 lowercase hex digits>",
                pin.digest
            ),
        );
    }
    if pin.blob.is_empty() || pin.blob.starts_with('/') || pin.blob.split('/').any(|c| c == "..") {
        report.error(
            Code::InvalidManifest,
            format!(
                "{entry}: manifest.blob '{}' is not a blob name inside the datastore",
                pin.blob
            ),
        );
    }
}

fn check_stores(
    access_point: &AccessPoint,
    direction: Direction,
    stores: &Stores,
    report: &mut ValidationReport,
) {
    let entry = format!("{} entry '{}'", section(direction), access_point.name);
    let datastore = &access_point.store.id;
    if let Some(datastores) = &stores.datastores {
        let Some(mode) = datastores.get(datastore) else {
            report.warning(
                Code::DatastoreNotInConfig,
                format!(
                    "{entry}: datastore '{datastore}' is not in the datastore config (another \
                     party's?); its stores were not checked"
                ),
            );
            return;
        };
        if let Ok(spec_mode) = encryption_mode(access_point)
            && &spec_mode != mode
        {
            report.error(
                Code::DatastoreModeMismatch,
                format!(
                    "{entry}: the spec says {spec_mode}, but datastore '{datastore}' is {mode} \
                     in the datastore config"
                ),
            );
        }
    }
    let (Some(secret_stores), Some(secrets)) = (
        &stores.secret_stores,
        &access_point.protection.encryption_secrets,
    ) else {
        return;
    };
    let mut check = |what: &str, name: &str, store: &str, needs: SecretStoreKind| {
        match secret_stores.get(store) {
            None => report.error(
                Code::SecretStoreNotFound,
                format!(
                    "{entry}: the {what} '{name}' is in secret store '{store}', which is not in \
                     the secret store config"
                ),
            ),
            Some(SecretStoreKind::Local) => report.error(
                Code::SecretStoreUnsuitable,
                format!(
                    "{entry}: the {what} '{name}' is in secret store '{store}', which is local; \
                     the clean room cannot reach it"
                ),
            ),
            Some(SecretStoreKind::Vault) if needs == SecretStoreKind::KeyReleaseVault => report
                .error(
                    Code::SecretStoreUnsuitable,
                    format!(
                        "{entry}: the {what} '{name}' is in secret store '{store}', which cannot \
                         hold a key behind a release policy"
                    ),
                ),
            Some(_) => {}
        }
    };
    check(
        "wrapped DEK",
        &secrets.dek.name,
        &secrets.dek.secret.backing_resource.id,
        SecretStoreKind::Vault,
    );
    if let Some(kek) = &secrets.kek {
        check(
            "KEK",
            &kek.secret.backing_resource.name,
            &kek.secret.backing_resource.id,
            SecretStoreKind::KeyReleaseVault,
        );
    }
}

fn check_telemetry(spec: &Spec, report: &mut ValidationReport) {
    let Some(telemetry) = spec.governance.as_ref().and_then(|g| g.telemetry.as_ref()) else {
        return;
    };
    let mut sinks: Vec<(&str, &AccessPoint)> = Vec::new();
    if let Some(application) = &telemetry.application {
        sinks.push(("governance.telemetry.application.logs", &application.logs));
    }
    if let Some(infrastructure) = &telemetry.infrastructure {
        sinks.push((
            "governance.telemetry.infrastructure.metrics",
            &infrastructure.metrics,
        ));
        sinks.push((
            "governance.telemetry.infrastructure.traces",
            &infrastructure.traces,
        ));
        sinks.push((
            "governance.telemetry.infrastructure.logs",
            &infrastructure.logs,
        ));
    }
    for (field, sink) in sinks {
        match spec.datasinks.iter().find(|d| d.name == sink.name) {
            None => report.error(
                Code::TelemetrySinkNotFound,
                format!("{field}: '{}' is not among the spec's datasinks", sink.name),
            ),
            Some(datasink) if datasink != sink => report.error(
                Code::TelemetrySinkNotFound,
                format!(
                    "{field}: '{}' differs from the datasink of that name",
                    sink.name
                ),
            ),
            Some(_) => {}
        }
    }
}

fn check_network(spec: &Spec, report: &mut ValidationReport) {
    let Some(http) = spec.network.as_ref().and_then(|n| n.get("http")) else {
        return;
    };
    for (direction, code) in [
        ("inbound", Code::InboundAllowAll),
        ("outbound", Code::OutboundAllowAll),
    ] {
        let Some(settings) = http.get(direction).filter(|s| !s.is_null()) else {
            continue;
        };
        if settings.get("enabled").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let has_policy = settings
            .get("policy")
            .and_then(|p| p.get("privacyPolicy"))
            .is_some_and(|p| !p.is_null());
        if !has_policy {
            report.warning(
                code,
                format!(
                    "network.http.{direction} is enabled without a privacy policy: all {direction} \
                     HTTP traffic is allowed (the local clean room has no network at all)"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
identities:
- {name: cleanroom_cgs_oidc, clientId: '', tenantId: '', tokenIssuer: {issuerType: AttestationBasedTokenIssuer, issuer: {protocol: Attested_OIDC, url: 'https://cgs/oidc'}}}
datasources:
- name: publisher-input
  type: Volume_ReadOnly
  path: ''
  store: {name: publisher-input, type: Azure_BlobStorage, id: publisher-input}
  protection:
    proxyType: SecureVolume__ReadOnly__Azure__BlobStorage
    proxyMode: Secure
    configuration: eyJFbmNyeXB0aW9uTW9kZSI6ICJDU0UiLCAiS2V5VHlwZSI6ICJLRUsifQ==
    encryptionSecrets:
      dek: {name: wrapped-publisher-input-dek-k, secret: {secretType: Key, backingResource: {name: dekkv, type: AzureKeyVault, id: dekkv}}}
      kek: {name: k, secret: {secretType: Key, backingResource: {name: k, type: AzureKeyVault, id: kekkv}}}
datasinks:
- name: consumer-output
  type: Volume_ReadWrite
  path: ''
  store: {name: consumer-output, type: Azure_BlobStorage, id: consumer-output}
  protection: {proxyType: SecureVolume__ReadWrite__Azure__BlobStorage, proxyMode: Secure, configuration: eyJFbmNyeXB0aW9uTW9kZSI6ICJTU0UifQ==}
- name: application-telemetry
  type: Volume_ReadWrite
  path: ''
  store: {name: application-telemetry, type: Azure_BlobStorage, id: logs}
  protection: {proxyType: SecureVolume__ReadWrite__Azure__BlobStorage, proxyMode: Secure, configuration: eyJFbmNyeXB0aW9uTW9kZSI6ICJTU0UifQ==}
applications:
- name: demo-app
  image: {executable: {documentType: OCI, authenticityReceipt: '', backingResource: {name: demo-app, type: AzureContainerRegistry, id: 'docker.io/golang'}}, enforcementPolicy: {}}
  startType: Auto
  command: [sh, -c, run]
  environmentVariables: {}
  datasources: {publisher-input: /mnt/remote/input}
  datasinks: {consumer-output: /mnt/remote/output}
  runtimeSettings: {ports: [], resource: {requests: {cpu: 0.5, memoryInGB: 1}}}
"#;

    fn spec() -> Spec {
        Spec::parse(SPEC, std::path::Path::new("spec.yaml")).unwrap()
    }

    fn codes(findings: &[Finding]) -> Vec<Code> {
        findings.iter().map(|f| f.code).collect()
    }

    #[test]
    fn a_good_spec_is_valid() {
        let report = validate(&spec(), None);
        assert!(report.is_valid(), "{report:?}");
        assert!(report.warnings.is_empty(), "{report:?}");
    }

    #[test]
    fn unknown_access_names_use_the_reference_codes() {
        let mut spec = spec();
        let app = &mut spec.applications[0];
        app.datasources
            .as_mut()
            .unwrap()
            .insert("missing-in".into(), "/mnt/a".into());
        app.datasinks
            .as_mut()
            .unwrap()
            .insert("publisher-input".into(), "/mnt/b".into());
        let report = validate(&spec, None);
        assert_eq!(
            codes(&report.errors),
            [Code::DataStoreNotFound, Code::DatasinkNotFound]
        );
        assert!(
            report.errors[0].message.contains("'demo-app'")
                && report.errors[0].message.contains("'missing-in'")
        );
    }

    #[test]
    fn duplicate_names_in_each_section() {
        let mut spec = spec();
        spec.identities.push(spec.identities[0].clone());
        let mut sink = spec.datasinks[0].clone();
        sink.name = "publisher-input".into();
        spec.datasinks.push(sink);
        spec.applications.push(spec.applications[0].clone());
        let report = validate(&spec, None);
        assert_eq!(
            codes(&report.errors),
            [
                Code::DuplicateName,
                Code::DuplicateName,
                Code::DuplicateName
            ]
        );
        assert!(report.errors[1].message.contains("'publisher-input'"));
        assert_eq!(codes(&report.warnings), [Code::MultipleApplications]);
    }

    #[test]
    fn overlapping_and_invalid_mount_paths() {
        let mut spec = spec();
        let mut second = spec.applications[0].clone();
        second.name = "second".into();
        // The same access point at the same path in another application is fine.
        spec.applications.push(second.clone());
        assert!(validate(&spec, None).is_valid());
        // Another access point inside the first one's path is not.
        let second = spec.applications.last_mut().unwrap();
        second
            .datasinks
            .as_mut()
            .unwrap()
            .insert("consumer-output".into(), "/mnt/remote/input/out/".into());
        // It overlaps both applications' publisher-input.
        let report = validate(&spec, None);
        assert_eq!(
            codes(&report.errors),
            [Code::MountPathOverlap, Code::MountPathOverlap]
        );
        let message = &report.errors[0].message;
        assert!(
            message.contains(
                "applications entry 'demo-app' mounts 'publisher-input' at '/mnt/remote/input'"
            ) && message.contains(
                "applications entry 'second' mounts 'consumer-output' at '/mnt/remote/input/out/'"
            ),
            "{message}"
        );

        let mut spec = self::spec();
        let maps = spec.applications[0].datasinks.as_mut().unwrap();
        maps.insert(
            "consumer-output".into(),
            "/mnt/telemetry/application".into(),
        );
        let report = validate(&spec, None);
        assert_eq!(codes(&report.errors), [Code::MountPathOverlap]);
        assert!(report.errors[0].message.contains("the clean room's own directory '/mnt/telemetry' and applications entry 'demo-app' mounts 'consumer-output' at '/mnt/telemetry/application'"));

        for bad in ["relative/path", "/", "/mnt/../etc", "/mnt/./x"] {
            let mut spec = self::spec();
            spec.applications[0]
                .datasinks
                .as_mut()
                .unwrap()
                .insert("consumer-output".into(), bad.into());
            assert_eq!(
                codes(&validate(&spec, None).errors),
                [Code::InvalidMountPath],
                "{bad}"
            );
        }
        // Within one application, the same path for two access points overlaps.
        let mut spec = self::spec();
        spec.applications[0]
            .datasinks
            .as_mut()
            .unwrap()
            .insert("consumer-output".into(), "/mnt/remote/input".into());
        assert_eq!(
            codes(&validate(&spec, None).errors),
            [Code::MountPathOverlap]
        );
    }

    #[test]
    fn encrypted_names_only_on_a_cse_datasource() {
        let mut spec = spec();
        spec.datasources[0].protection.configuration =
            Some(super::super::protection_configuration("CSE"));
        spec.datasources[0].encrypt_names = true;
        assert!(validate(&spec, None).is_valid());
        spec.datasources[0].protection.configuration =
            Some(super::super::protection_configuration("CPK"));
        let report = validate(&spec, None);
        assert_eq!(codes(&report.errors), [Code::InvalidEncryptNames]);
        assert!(report.errors[0].message.contains("not CPK"), "{report:?}");

        let mut spec = self::spec();
        spec.datasinks[0].encrypt_names = true;
        let report = validate(&spec, None);
        assert_eq!(codes(&report.errors), [Code::InvalidEncryptNames]);
        assert!(report.errors[0].message.contains("datasink"), "{report:?}");
    }

    #[test]
    fn protection_incoherence() {
        let mut spec = spec();
        spec.datasources[0].kind = "Volume_ReadWrite".into();
        let report = validate(&spec, None);
        assert_eq!(codes(&report.errors), [Code::AccessTypeMismatch]);

        let mut spec = self::spec();
        spec.datasinks[0].protection.proxy_type =
            "SecureVolume__ReadOnly__Azure__BlobStorage".into();
        assert_eq!(
            codes(&validate(&spec, None).errors),
            [Code::ProxyTypeMismatch]
        );

        let mut spec = self::spec();
        spec.datasources[0].protection.encryption_secrets = None;
        assert_eq!(
            codes(&validate(&spec, None).errors),
            [Code::EncryptionSecretsMissing]
        );

        let mut spec = self::spec();
        let secrets = spec.datasources[0].protection.encryption_secrets.clone();
        spec.datasources[0]
            .protection
            .encryption_secrets
            .as_mut()
            .unwrap()
            .kek = None;
        assert_eq!(codes(&validate(&spec, None).errors), [Code::KekMissing]);

        let mut spec = self::spec();
        spec.datasinks[0].protection.encryption_secrets = secrets;
        assert_eq!(
            codes(&validate(&spec, None).errors),
            [Code::UnexpectedEncryptionSecrets]
        );

        for configuration in [
            None,
            Some("not base64!"),
            Some("bm90IGpzb24="),
            Some("eyJFbmNyeXB0aW9uTW9kZSI6ICJYWVoifQ=="),
        ] {
            let mut spec = self::spec();
            spec.datasinks[0].protection.configuration = configuration.map(str::to_owned);
            assert_eq!(
                codes(&validate(&spec, None).errors),
                [Code::InvalidProtectionConfiguration],
                "{configuration:?}"
            );
        }
    }

    #[test]
    fn a_pinned_manifest_needs_a_digest_of_the_right_shape_on_a_datasource() {
        let good = crate::spec::ManifestPin {
            digest: format!("sha256:{}", "ab".repeat(32)),
            blob: ".encfs-manifest".into(),
        };
        let mut spec = spec();
        spec.datasources[0].manifest = Some(good.clone());
        assert!(validate(&spec, None).is_valid());
        for digest in [
            String::new(),
            "ab".repeat(32),
            format!("sha256:{}", "ab".repeat(31)),
            format!("sha256:{}", "AB".repeat(32)),
            format!("sha512:{}", "ab".repeat(32)),
            format!("sha256:{}g", "ab".repeat(31)),
        ] {
            let mut spec = self::spec();
            spec.datasources[0].manifest = Some(crate::spec::ManifestPin {
                digest: digest.clone(),
                ..good.clone()
            });
            let report = validate(&spec, None);
            assert_eq!(codes(&report.errors), [Code::InvalidManifest], "{digest}");
            assert!(
                report.errors[0]
                    .message
                    .contains("datasources entry 'publisher-input'")
            );
        }
        for blob in ["", "/abs", "a/../b"] {
            let mut spec = self::spec();
            spec.datasources[0].manifest = Some(crate::spec::ManifestPin {
                blob: blob.into(),
                ..good.clone()
            });
            assert_eq!(
                codes(&validate(&spec, None).errors),
                [Code::InvalidManifest],
                "{blob}"
            );
        }
        let mut spec = self::spec();
        spec.datasinks[0].manifest = Some(good);
        assert_eq!(
            codes(&validate(&spec, None).errors),
            [Code::InvalidManifest]
        );
    }

    #[test]
    fn telemetry_sinks_must_be_datasinks() {
        let mut spec = spec();
        let sink = spec.datasinks[1].clone();
        spec.governance = Some(crate::spec::GovernanceSettings {
            telemetry: Some(crate::spec::TelemetrySettings {
                application: Some(crate::spec::ApplicationTelemetry {
                    consent: None,
                    logs: sink.clone(),
                }),
                infrastructure: None,
            }),
            ..Default::default()
        });
        assert!(validate(&spec, None).is_valid());
        spec.datasinks.pop();
        let report = validate(&spec, None);
        assert_eq!(codes(&report.errors), [Code::TelemetrySinkNotFound]);
        assert!(
            report.errors[0]
                .message
                .starts_with("governance.telemetry.application.logs")
        );
        let mut changed = sink;
        changed.store.id = "other".into();
        spec.datasinks.push(changed);
        assert_eq!(
            codes(&validate(&spec, None).errors),
            [Code::TelemetrySinkNotFound]
        );
    }

    #[test]
    fn stores_are_checked_when_given() {
        let spec = spec();
        let all = Stores {
            datastores: Some(BTreeMap::from([
                ("publisher-input".into(), "CSE".into()),
                ("consumer-output".into(), "SSE".into()),
                ("logs".into(), "SSE".into()),
            ])),
            secret_stores: Some(BTreeMap::from([
                ("dekkv".into(), SecretStoreKind::Vault),
                ("kekkv".into(), SecretStoreKind::KeyReleaseVault),
            ])),
        };
        assert_eq!(validate(&spec, Some(&all)), ValidationReport::default());

        let mut wrong = all.clone();
        wrong
            .datastores
            .as_mut()
            .unwrap()
            .insert("publisher-input".into(), "CPK".into());
        wrong
            .secret_stores
            .as_mut()
            .unwrap()
            .insert("kekkv".into(), SecretStoreKind::Vault);
        wrong.secret_stores.as_mut().unwrap().remove("dekkv");
        let report = validate(&spec, Some(&wrong));
        assert_eq!(
            codes(&report.errors),
            [
                Code::DatastoreModeMismatch,
                Code::SecretStoreNotFound,
                Code::SecretStoreUnsuitable
            ]
        );

        let mut local = all.clone();
        local
            .secret_stores
            .as_mut()
            .unwrap()
            .insert("dekkv".into(), SecretStoreKind::Local);
        assert_eq!(
            codes(&validate(&spec, Some(&local)).errors),
            [Code::SecretStoreUnsuitable]
        );

        // Another party's datastore: a warning, its keys not checked.
        let mut theirs = all.clone();
        theirs
            .datastores
            .as_mut()
            .unwrap()
            .remove("publisher-input");
        theirs.secret_stores = Some(BTreeMap::new());
        let report = validate(&spec, Some(&theirs));
        assert!(report.is_valid(), "{report:?}");
        assert_eq!(codes(&report.warnings), [Code::DatastoreNotInConfig]);

        // Secret stores without a datastore config: every access point's keys are checked.
        let keys_only = Stores {
            datastores: None,
            secret_stores: Some(BTreeMap::new()),
        };
        assert_eq!(
            codes(&validate(&spec, Some(&keys_only)).errors),
            [Code::SecretStoreNotFound, Code::SecretStoreNotFound]
        );
    }

    #[test]
    fn network_warnings_as_the_reference() {
        let mut spec = spec();
        spec.network = Some(serde_yaml::from_str(
            "http: {inbound: {enabled: true, policy: {proxyType: API, proxyMode: Open}}, outbound: {enabled: true, policy: {proxyType: API, proxyMode: Open}}}",
        ).unwrap());
        let report = validate(&spec, None);
        assert!(report.is_valid());
        assert_eq!(
            codes(&report.warnings),
            [Code::InboundAllowAll, Code::OutboundAllowAll]
        );
        spec.network = Some(serde_yaml::from_str(
            "http: {inbound: {enabled: true, policy: {proxyType: API, proxyMode: Secure, privacyPolicy: {policy: {}}}}, outbound: {enabled: false}}",
        ).unwrap());
        assert!(validate(&spec, None).warnings.is_empty());
    }
}
