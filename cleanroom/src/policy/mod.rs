//! The clean room's security policy: a CCE-style Rego (v0) document that lists exactly the
//! containers the parties agreed to (command, environment, mounts, working directory) and
//! carries the rules that decide from them, evaluated here with regorus.
//!
//! ACI's guest supplies its own framework rules (`data.framework`) next to the policy; a local
//! clean room has no such guest, so encfs writes its own rules into the same file
//! (`framework.rego`). The hash that attestation binds (`hostdata`, SHA-256 of the UTF-8 text,
//! as the reference) therefore covers the decisions as well as the data: an edit of either
//! changes the hostdata, and no key is released to the edited clean room.
//!
//! [`render`] writes the policy of a set of containers, [`ALLOW_ALL`] is the fixed allow-all
//! policy, [`SecurityPolicy::parse`] compiles either, and [`SecurityPolicy::check_container`]
//! asks the policy's `create_container` rule whether a container may start.

mod render;

pub use render::{ALLOW_ALL, PolicyContainer, PolicyMount, render};

use std::fmt;

use ring::digest::{SHA256, digest};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The input API version the policy declares (the reference's CCE policies declare 0.10.0).
pub const API_VERSION: &str = "0.10.0";
/// The version of encfs's own framework rules.
pub const FRAMEWORK_VERSION: &str = "encfs-0.1.0";
/// The longest line a policy may have. Each agreed container is one line of compact JSON, and a
/// code launcher's line holds its whole application in base64, so regorus's default (1024
/// columns) is far too short; the file itself stays within regorus's 1 MiB.
const MAX_LINE_LENGTH: std::num::NonZeroU32 = std::num::NonZeroU32::new(1 << 20).unwrap();
/// The rule every container start is decided by.
const CREATE_CONTAINER_RULE: &str = "data.policy.create_container";

/// The hostdata of a policy: lower-case hex SHA-256 of its UTF-8 text (the reference's
/// `hashlib.sha256(rego.encode("utf-8")).hexdigest()`; the text, not its base64).
pub fn hostdata(rego: &str) -> String {
    digest(&SHA256, rego.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A policy that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The text does not parse as Rego v0 (the engine's message, with line and column).
    #[error("the security policy does not parse: {0}")]
    Parse(String),
    /// The text parses but is not a clean-room policy (no `package policy` or no
    /// `create_container` rule).
    #[error("not a clean-room security policy: {0}")]
    NotAPolicy(String),
}

/// A container a clean room is about to start, as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRequest {
    /// The container's name in the deployment (`demo-app-code-launcher`, `skr`, …).
    pub name: String,
    /// The command line, program first.
    pub command: Vec<String>,
    /// The environment, `NAME=value` each.
    pub env: Vec<String>,
    /// The mounts.
    pub mounts: Vec<MountRequest>,
    /// The working directory.
    pub working_dir: String,
}

/// One mount of a [`ContainerRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRequest {
    /// Where the container sees it.
    pub destination: String,
    /// The volume it comes from: the deployment's volume name (`remotemounts`,
    /// `telemetrymounts`, `volumestatusmounts`), whatever host directory stands for it.
    pub source: String,
    /// Read-only (`ro`) or read-write (`rw`).
    pub read_only: bool,
}

impl MountRequest {
    /// The mount options the policy compares, CCE's bind-mount form.
    pub fn options(&self) -> [&'static str; 3] {
        ["rbind", "rshared", if self.read_only { "ro" } else { "rw" }]
    }
}

impl ContainerRequest {
    /// The `input` document of `create_container` (CCE's field names).
    fn input(&self) -> Value {
        let mounts: Vec<Value> = self
            .mounts
            .iter()
            .map(|m| {
                json!({
                    "destination": m.destination,
                    "source": m.source,
                    "type": "bind",
                    "options": m.options(),
                })
            })
            .collect();
        json!({
            "name": self.name,
            "argList": self.command,
            "envList": self.env,
            "workingDir": self.working_dir,
            "mounts": mounts,
        })
    }
}

/// One way a request differs from what the policy agreed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDifference {
    /// The rule that refused (`create_container`).
    pub rule: String,
    /// The field that differed: `name`, `command`, `env`, `mounts`, `working_dir` (or
    /// `evaluation` when the policy could not decide, which refuses too).
    pub field: String,
    /// What differed. Environment variables are named, never their values.
    pub message: String,
}

/// The policy refused a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRefusal {
    /// The container refused.
    pub container: String,
    /// Every difference, at least one.
    pub differences: Vec<PolicyDifference>,
}

impl PolicyRefusal {
    fn evaluation(container: &str, message: String) -> Self {
        Self {
            container: container.to_owned(),
            differences: vec![PolicyDifference {
                rule: "create_container".to_owned(),
                field: "evaluation".to_owned(),
                message,
            }],
        }
    }

    /// Whether some difference is in `field`.
    pub fn concerns(&self, field: &str) -> bool {
        self.differences.iter().any(|d| d.field == field)
    }
}

impl fmt::Display for PolicyRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the security policy refuses container {:?}:",
            self.container
        )?;
        for (i, d) in self.differences.iter().enumerate() {
            let sep = if i == 0 { " " } else { "; " };
            write!(f, "{sep}{} {}: {}", d.rule, d.field, d.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyRefusal {}

/// A compiled security policy.
#[derive(Clone)]
pub struct SecurityPolicy {
    engine: regorus::Engine,
    hostdata: String,
}

impl fmt::Debug for SecurityPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecurityPolicy")
            .field("hostdata", &self.hostdata)
            .finish_non_exhaustive()
    }
}

impl SecurityPolicy {
    /// Compiles a policy's text (Rego v0, `package policy`, with a `create_container` rule).
    ///
    /// # Errors
    /// [`PolicyError::Parse`] with the engine's position, [`PolicyError::NotAPolicy`].
    pub fn parse(rego: &str) -> Result<Self, PolicyError> {
        let mut engine = regorus::Engine::new();
        engine.set_rego_v0(true);
        engine.set_policy_length_config(regorus::PolicyLengthConfig {
            max_col: MAX_LINE_LENGTH,
            ..regorus::PolicyLengthConfig::default()
        });
        let package = engine
            .add_policy("cleanroom-policy.rego".to_owned(), rego.to_owned())
            .map_err(|e| PolicyError::Parse(e.to_string()))?;
        if package != "data.policy" {
            return Err(PolicyError::NotAPolicy(format!(
                "its package is {package}, not policy"
            )));
        }
        let declared = engine
            .has_declared_rule_rooted_at("cleanroom-policy.rego", "create_container")
            .map_err(|e| PolicyError::NotAPolicy(e.to_string()))?;
        if !declared {
            return Err(PolicyError::NotAPolicy(
                "it has no create_container rule".to_owned(),
            ));
        }
        let policy = Self {
            engine,
            hostdata: hostdata(rego),
        };
        // Resolve the rules once (also catches a rule that cannot be evaluated at all).
        let probe = ContainerRequest {
            name: String::new(),
            command: Vec::new(),
            env: Vec::new(),
            mounts: Vec::new(),
            working_dir: String::new(),
        };
        policy
            .decide(&probe)
            .map_err(|e| PolicyError::NotAPolicy(format!("create_container: {e}")))?;
        Ok(policy)
    }

    /// The policy's hostdata ([`hostdata`] of its text).
    pub fn hostdata(&self) -> &str {
        &self.hostdata
    }

    /// Whether the policy admits `request`. A policy that cannot decide refuses.
    ///
    /// # Errors
    /// [`PolicyRefusal`] naming the rule and every field that differed.
    pub fn check_container(&self, request: &ContainerRequest) -> Result<(), PolicyRefusal> {
        let decision = self
            .decide(request)
            .map_err(|e| PolicyRefusal::evaluation(&request.name, e))?;
        if decision["allowed"] == json!(true) {
            return Ok(());
        }
        let mut differences: Vec<PolicyDifference> = decision["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| serde_json::from_value(e.clone()).ok())
                    .collect()
            })
            .unwrap_or_default();
        if differences.is_empty() {
            differences.push(PolicyDifference {
                rule: "create_container".to_owned(),
                field: "evaluation".to_owned(),
                message: "the policy refuses without saying why".to_owned(),
            });
        }
        Err(PolicyRefusal {
            container: request.name.clone(),
            differences,
        })
    }

    /// Evaluates `create_container` for `request`: its decision object.
    fn decide(&self, request: &ContainerRequest) -> Result<Value, String> {
        let mut engine = self.engine.clone();
        let input = regorus::Value::from_json_str(&request.input().to_string())
            .map_err(|e| e.to_string())?;
        engine.set_input(input);
        let value = engine
            .eval_rule(CREATE_CONTAINER_RULE.to_owned())
            .map_err(|e| e.to_string())?;
        let text = value.to_json_str().map_err(|e| e.to_string())?;
        let decision: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        if !decision["allowed"].is_boolean() {
            return Err(format!("create_container answered {decision}"));
        }
        Ok(decision)
    }
}

#[cfg(test)]
mod tests;
