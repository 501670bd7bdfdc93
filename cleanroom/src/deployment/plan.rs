//! Reading a deployment template back: what the local clean room runs. The template is the one
//! governance accepted, so everything the runner starts comes from here — the contract id, the
//! policy text (the decoded `ccePolicy`, whose hash must be the accepted hostdata) and each
//! container's command, environment, mounts and ports, with the application decoded from its
//! code launcher's `--application-base-64`. Every malformed field is an error naming the
//! container and the field; nothing is guessed.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use super::containers::{ContainerDefinition, VolumeMount};
use super::render::{CONTAINER_GROUP_TYPE, CONTRACT_TAG};
use crate::policy::{self, PolicyError, SecurityPolicy};
use crate::spec::Application;

/// A template that cannot be run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// A field is missing or has the wrong shape.
    #[error("deployment template: {at}: {message}")]
    Malformed {
        /// Where: the container and field (`container "skr": properties.command`).
        at: String,
        /// What is wrong.
        message: String,
    },
}

/// The deployment a template describes.
#[derive(Debug, Clone)]
pub struct DeploymentPlan {
    /// The contract (`tags.accr-contract-id`).
    pub contract_id: String,
    /// The security policy text (`confidentialComputeProperties.ccePolicy`, decoded).
    pub rego: String,
    /// The volumes (emptyDir names).
    pub volumes: Vec<String>,
    /// The init containers, in order.
    pub init_containers: Vec<PlannedContainer>,
    /// The containers, in order.
    pub containers: Vec<PlannedContainer>,
}

/// One container of a [`DeploymentPlan`].
#[derive(Debug, Clone)]
pub struct PlannedContainer {
    /// Name, image, command, environment, mounts, ports, privilege, resources.
    pub definition: ContainerDefinition,
    /// The application, for a code launcher (`--application-base-64`, decoded).
    pub application: Option<Application>,
}

impl DeploymentPlan {
    /// The policy's hostdata (SHA-256 hex of [`Self::rego`]).
    pub fn hostdata(&self) -> String {
        policy::hostdata(&self.rego)
    }

    /// The compiled security policy.
    ///
    /// # Errors
    /// [`PolicyError`] when the text is not a usable policy.
    pub fn security_policy(&self) -> Result<SecurityPolicy, PolicyError> {
        SecurityPolicy::parse(&self.rego)
    }

    /// The container named `name` (init containers included).
    pub fn container(&self, name: &str) -> Option<&PlannedContainer> {
        self.init_containers
            .iter()
            .chain(&self.containers)
            .find(|c| c.definition.name == name)
    }

    /// The applications of the code launchers, in order.
    pub fn applications(&self) -> impl Iterator<Item = &Application> {
        self.containers.iter().filter_map(|c| c.application.as_ref())
    }
}

fn malformed(at: impl Into<String>, message: impl Into<String>) -> PlanError {
    PlanError::Malformed {
        at: at.into(),
        message: message.into(),
    }
}

fn string_at<'a>(value: &'a Value, at: &str, field: &str) -> Result<&'a str, PlanError> {
    value
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| malformed(format!("{at}: {field}"), "missing or not a string"))
}

fn array_at<'a>(value: &'a Value, at: &str, field: &str) -> Result<&'a [Value], PlanError> {
    match value.get(field) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(malformed(format!("{at}: {field}"), "not a list")),
    }
}

fn container(entry: &Value, index: usize, list: &str) -> Result<PlannedContainer, PlanError> {
    let name = entry
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed(format!("{list}[{index}]"), "the container has no name"))?
        .to_owned();
    let at = format!("container {name:?}");
    let properties = entry
        .get("properties")
        .filter(|p| p.is_object())
        .ok_or_else(|| malformed(format!("{at}: properties"), "missing or not an object"))?;
    let at_props = format!("{at}: properties");
    let image = string_at(properties, &at_props, "image")?.to_owned();
    let command = array_at(properties, &at_props, "command")?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| malformed(format!("{at}: properties.command[{i}]"), "not a string"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if command.is_empty() {
        return Err(malformed(format!("{at}: properties.command"), "missing or empty"));
    }
    let mut env = Vec::new();
    for (i, e) in array_at(properties, &at_props, "environmentVariables")?.iter().enumerate() {
        let at_env = format!("{at}: properties.environmentVariables[{i}]");
        let key = string_at(e, &at_env, "name")?;
        if e.get("secureValue").is_some() {
            return Err(malformed(
                at_env,
                "secureValue is not supported: the policy agrees every value",
            ));
        }
        let value = string_at(e, &format!("{at_env} ({key})"), "value")?;
        env.push((key.to_owned(), value.to_owned()));
    }
    let mut mounts = Vec::new();
    for (i, m) in array_at(properties, &at_props, "volumeMounts")?.iter().enumerate() {
        let at_mount = format!("{at}: properties.volumeMounts[{i}]");
        let read_only = match m.get("readOnly") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(malformed(format!("{at_mount}: readOnly"), "not a boolean")),
        };
        mounts.push(VolumeMount {
            volume: string_at(m, &at_mount, "name")?.to_owned(),
            mount_path: string_at(m, &at_mount, "mountPath")?.to_owned(),
            read_only,
        });
    }
    let mut ports = Vec::new();
    for (i, p) in array_at(properties, &at_props, "ports")?.iter().enumerate() {
        let port = p
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| malformed(format!("{at}: properties.ports[{i}].port"), "not a port number"))?;
        ports.push(port);
    }
    let privileged = properties
        .pointer("/securityContext/privileged")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let requests = properties.pointer("/resources/requests");
    let number = |field: &str| requests.and_then(|r| r.get(field)).and_then(Value::as_f64).unwrap_or(0.0);
    let application = application(&at, &command)?;
    Ok(PlannedContainer {
        definition: ContainerDefinition {
            name,
            image,
            command,
            env,
            mounts,
            ports,
            privileged,
            cpu: number("cpu"),
            memory_gb: number("memoryInGB"),
        },
        application,
    })
}

/// The application of a code launcher's command line (`encfs cleanroom code-launcher …
/// --application-base-64 B`), checked against its `--application-name`.
fn application(at: &str, command: &[String]) -> Result<Option<Application>, PlanError> {
    let is_launcher = command.len() >= 3 && command[1] == "cleanroom" && command[2] == "code-launcher";
    if !is_launcher {
        return Ok(None);
    }
    let flag = |name: &str| {
        command
            .iter()
            .position(|a| a == name)
            .and_then(|i| command.get(i + 1))
            .ok_or_else(|| malformed(format!("{at}: properties.command"), format!("the code launcher has no {name}")))
    };
    let encoded = flag("--application-base-64")?;
    let name = flag("--application-name")?;
    let at_app = format!("{at}: --application-base-64");
    let bytes = STANDARD
        .decode(encoded)
        .map_err(|e| malformed(&at_app, format!("not base64: {e}")))?;
    let app: Application = serde_json::from_slice(&bytes)
        .map_err(|e| malformed(&at_app, format!("not an Application: {e}")))?;
    if &app.name != name {
        return Err(malformed(
            at_app,
            format!("the application is {:?} but --application-name says {name:?}", app.name),
        ));
    }
    Ok(Some(app))
}

/// Reads a deployment template (`cleanroom-arm-template.json`).
///
/// # Errors
/// [`PlanError::Malformed`] naming the container and field.
pub fn plan(template: &Value) -> Result<DeploymentPlan, PlanError> {
    let resources = template
        .get("resources")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed("resources", "missing or not a list"))?;
    let groups: Vec<&Value> = resources
        .iter()
        .filter(|r| r.get("type").and_then(Value::as_str) == Some(CONTAINER_GROUP_TYPE))
        .collect();
    let group = match groups.as_slice() {
        [one] => *one,
        [] => return Err(malformed("resources", format!("no {CONTAINER_GROUP_TYPE}"))),
        _ => return Err(malformed("resources", format!("more than one {CONTAINER_GROUP_TYPE}"))),
    };
    let contract_id = group
        .pointer(&format!("/tags/{CONTRACT_TAG}"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| malformed(format!("tags.{CONTRACT_TAG}"), "missing or not a string"))?
        .to_owned();
    let properties = group
        .get("properties")
        .filter(|p| p.is_object())
        .ok_or_else(|| malformed("properties", "missing or not an object"))?;
    let encoded = properties
        .pointer("/confidentialComputeProperties/ccePolicy")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("properties.confidentialComputeProperties.ccePolicy", "missing or not a string"))?;
    let rego = STANDARD
        .decode(encoded)
        .map_err(|e| malformed("properties.confidentialComputeProperties.ccePolicy", format!("not base64: {e}")))
        .and_then(|bytes| {
            String::from_utf8(bytes).map_err(|_| {
                malformed("properties.confidentialComputeProperties.ccePolicy", "not UTF-8 text")
            })
        })?;
    let volumes = array_at(properties, "properties", "volumes")?
        .iter()
        .enumerate()
        .map(|(i, v)| string_at(v, &format!("properties.volumes[{i}]"), "name").map(str::to_owned))
        .collect::<Result<Vec<_>, _>>()?;
    let read = |list: &str| -> Result<Vec<PlannedContainer>, PlanError> {
        array_at(properties, "properties", list)?
            .iter()
            .enumerate()
            .map(|(i, c)| container(c, i, list))
            .collect()
    };
    let init_containers = read("initContainers")?;
    let containers = read("containers")?;
    if containers.is_empty() {
        return Err(malformed("properties.containers", "no container"));
    }
    let mut names = std::collections::BTreeSet::new();
    for c in init_containers.iter().chain(&containers) {
        let at = format!("container {:?}", c.definition.name);
        if !names.insert(c.definition.name.clone()) {
            return Err(malformed(at, "the name is used twice"));
        }
        for m in &c.definition.mounts {
            if !volumes.contains(&m.volume) {
                return Err(malformed(
                    format!("{at}: properties.volumeMounts ({})", m.mount_path),
                    format!("no volume named {:?}", m.volume),
                ));
            }
        }
    }
    Ok(DeploymentPlan {
        contract_id,
        rego,
        volumes,
        init_containers,
        containers,
    })
}
