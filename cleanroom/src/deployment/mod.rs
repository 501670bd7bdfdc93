//! Deployment generation (`encfs governance deployment generate`, the reference's §8): from an
//! accepted contract's spec, the ARM template of one confidential container group, its security
//! policy (`cleanroom-policy.rego`, hashed into the hostdata), the clean-room policy governance
//! accepts (`cleanroom-governance-policy.json`), confcom's input and a Kubernetes pod manifest —
//! and the reverse, [`plan`], that the local clean room reads a template back with.
//!
//! Generation is a pure function of the spec and the options: every party that generates from
//! the same contract gets the same bytes, and so can check a proposed template and policy
//! against its own copy before voting.

mod containers;
mod plan;
mod render;

pub use containers::{
    CODE_LAUNCHER_PORT, CONFIG_AUTHORITY_CA, CONFIG_IDENTITY_CREDENTIAL, CONFIG_PATH,
    CONFIG_SECURITY_POLICY, CONFIG_VAULT_CA, CONFIG_VOLUME, ContainerDefinition, GOVERNANCE_PORT,
    IDENTITY_PORT, REMOTE_PATH, REMOTE_VOLUME, SECRETS_PORT, SKR_PORT, TELEMETRY_PATH,
    TELEMETRY_VOLUME, VOLUME_STATUS_PATH, VOLUME_STATUS_VOLUME, VOLUMES, VolumeMount, WORKING_DIR,
};
pub use plan::{DeploymentPlan, PlanError, PlannedContainer, plan};
pub use render::{CONTAINER_GROUP_TYPE, CONTRACT_TAG, POD_POLICY_ANNOTATION};

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::policy::{self, ALLOW_ALL};
use crate::spec::Spec;

/// File names of the generated deployment, as the reference names them.
pub const ARM_TEMPLATE_FILE: &str = "cleanroom-arm-template.json";
/// The security policy's text.
pub const POLICY_FILE: &str = "cleanroom-policy.rego";
/// The clean-room policy to propose to governance.
pub const GOVERNANCE_POLICY_FILE: &str = "cleanroom-governance-policy.json";
/// confcom's input.
pub const POLICY_INPUT_FILE: &str = "cleanroom-policy-in.json";
/// The Kubernetes pod manifest.
pub const POD_MANIFEST_FILE: &str = "cleanroom-pod.yaml";

/// `--security-policy-creation-option`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityPolicyOption {
    /// The fixed allow-all policy.
    AllowAll,
    /// A policy for exactly the generated containers.
    Generate,
}

/// Where the clean room's skr sidecar gets its attestation reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attestation {
    /// SEV-SNP hardware with Microsoft Azure Attestation (a real confidential group).
    Azure,
    /// The INSECURE virtual authority at this URL (a local clean room): its CA, the key vault's
    /// CA and the declared policy text are read from the configuration volume.
    Virtual {
        /// The authority's URL.
        authority: String,
    },
}

/// What generation needs besides the spec.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// The contract the deployment is for.
    pub contract_id: String,
    /// The governance service's URL (`ccrgovEndpoint`).
    pub governance_endpoint: String,
    /// The governance service certificate (PEM), given to the governance sidecar in base64.
    pub service_cert_pem: String,
    /// The registry of the encfs image (`<registry>/encfs:<version>`).
    pub image_registry: String,
    /// Which security policy to write.
    pub security_policy: SecurityPolicyOption,
    /// How the clean room attests.
    pub attestation: Attestation,
}

impl GenerateOptions {
    /// The image every container runs.
    pub fn image(&self) -> String {
        format!(
            "{}/encfs:{}",
            self.image_registry.trim_end_matches('/'),
            env!("CARGO_PKG_VERSION")
        )
    }
}

/// Why a deployment cannot be generated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeploymentError {
    /// The spec is not deployable; names the entry.
    #[error("the clean-room spec: {entry}: {message}")]
    Spec {
        /// The entry (`application "demo-app"`, `access point "x"`).
        entry: String,
        /// What is wrong.
        message: String,
    },
    /// An output file cannot be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A generated deployment: every file's content.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// `cleanroom-arm-template.json`.
    pub arm_template: Value,
    /// `cleanroom-policy.rego`.
    pub rego: String,
    /// `cleanroom-governance-policy.json`.
    pub governance_policy: Value,
    /// `cleanroom-policy-in.json`.
    pub policy_input: Value,
    /// `cleanroom-pod.yaml`.
    pub pod_manifest: String,
}

impl Deployment {
    /// The policy's hostdata.
    pub fn hostdata(&self) -> String {
        policy::hostdata(&self.rego)
    }

    /// Writes the five files into `dir` (created if missing), each atomically; their paths.
    ///
    /// # Errors
    /// [`DeploymentError::Write`] naming the file.
    pub fn write_to(&self, dir: &Path) -> Result<Vec<PathBuf>, DeploymentError> {
        let failed = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DeploymentError::Write { path, source }
        };
        std::fs::create_dir_all(dir).map_err(failed(dir))?;
        let pretty = |v: &Value| serde_json::to_string_pretty(v).expect("JSON") + "\n";
        let files = [
            (ARM_TEMPLATE_FILE, pretty(&self.arm_template)),
            (POLICY_FILE, self.rego.clone()),
            (GOVERNANCE_POLICY_FILE, pretty(&self.governance_policy)),
            (POLICY_INPUT_FILE, pretty(&self.policy_input)),
            (POD_MANIFEST_FILE, self.pod_manifest.clone()),
        ];
        let mut written = Vec::new();
        for (name, text) in files {
            let path = dir.join(name);
            let mut file = tempfile::NamedTempFile::new_in(dir).map_err(failed(&path))?;
            std::io::Write::write_all(&mut file, text.as_bytes()).map_err(failed(&path))?;
            file.as_file().sync_all().map_err(failed(&path))?;
            file.persist(&path).map_err(|e| failed(&path)(e.error))?;
            written.push(path);
        }
        Ok(written)
    }
}

/// The clean-room policy governance accepts for a policy text (`deployment policy propose`).
pub fn governance_policy(rego: &str) -> Value {
    json!({
        "type": "add",
        "policyType": "snp-caci",
        "claims": {
            "x-ms-sevsnpvm-is-debuggable": false,
            "x-ms-sevsnpvm-hostdata": policy::hostdata(rego),
        },
    })
}

fn is_container_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// The checks generation makes before it writes anything: `config validate`'s
/// ([`crate::spec::validate()`]: every name an application uses exists, `DataStoreNotFound` /
/// `DatasinkNotFound` as the reference, paths do not overlap, protection modes are coherent),
/// then what containers need: names unique and usable as container names, every access point
/// with a protection mode.
///
/// # Errors
/// [`DeploymentError::Spec`] naming the entry.
pub fn validate_spec(spec: &Spec) -> Result<(), DeploymentError> {
    let error = |entry: String, message: String| Err(DeploymentError::Spec { entry, message });
    if let Some(first) = crate::spec::validate(spec, None).errors.first() {
        return error(
            "clean-room spec".into(),
            format!("{:?}: {}", first.code, first.message),
        );
    }
    let mut names = std::collections::BTreeSet::new();
    for app in &spec.applications {
        let entry = format!("application {:?}", app.name);
        if !is_container_name(&app.name) {
            return error(
                entry,
                "the name must be lower-case letters, digits and '-' (at most 63)".into(),
            );
        }
        if !names.insert(app.name.clone()) {
            return error(entry, "the name is used twice".into());
        }
        for name in app.datasources.iter().flat_map(|m| m.keys()) {
            if !spec.datasources.iter().any(|a| &a.name == name) {
                return error(
                    entry,
                    format!("DataStoreNotFound: no datasource named {name:?}"),
                );
            }
        }
        for name in app.datasinks.iter().flat_map(|m| m.keys()) {
            if !spec.datasinks.iter().any(|a| &a.name == name) {
                return error(
                    entry,
                    format!("DatasinkNotFound: no datasink named {name:?}"),
                );
            }
        }
    }
    let mut access_names = std::collections::BTreeSet::new();
    for (access, _) in containers::access_points(spec) {
        let entry = format!("access point {:?}", access.name);
        if !is_container_name(&access.name) {
            return error(
                entry,
                "the name must be lower-case letters, digits and '-' (at most 63)".into(),
            );
        }
        if !access_names.insert(access.name.clone()) {
            return error(entry, "the name is used twice".into());
        }
        containers::encryption_mode(access)?;
    }
    for (list, name) in [
        (&spec.datasources, "datasources"),
        (&spec.datasinks, "datasinks"),
    ] {
        let mut seen = std::collections::BTreeSet::new();
        for access in list {
            if !seen.insert(&access.name) {
                return error(
                    format!("access point {:?}", access.name),
                    format!("listed twice in {name}"),
                );
            }
        }
    }
    Ok(())
}

/// Generates the deployment of `spec`.
///
/// # Errors
/// [`DeploymentError::Spec`] when [`validate_spec`] refuses the spec.
pub fn generate(spec: &Spec, options: &GenerateOptions) -> Result<Deployment, DeploymentError> {
    validate_spec(spec)?;
    let (init, containers) = containers::containers(spec, options)?;
    let rego = match options.security_policy {
        SecurityPolicyOption::AllowAll => ALLOW_ALL.to_owned(),
        SecurityPolicyOption::Generate => {
            let agreed: Vec<_> = init
                .iter()
                .chain(&containers)
                .map(ContainerDefinition::policy_container)
                .collect();
            policy::render(&agreed)
        }
    };
    let cce_policy = STANDARD.encode(&rego);
    Ok(Deployment {
        arm_template: render::arm_template(&options.contract_id, &cce_policy, &init, &containers),
        governance_policy: governance_policy(&rego),
        policy_input: render::policy_input(&init, &containers),
        pod_manifest: render::pod_manifest(&options.contract_id, &cce_policy, &init, &containers),
        rego,
    })
}

#[cfg(test)]
mod tests;
