//! Writing a policy's text: the header (`package policy`, versions), the agreed containers as
//! compact JSON with sorted keys (one per line, so a reviewer can diff two policies), the
//! guest-operation flags, then the framework rules. The same containers always give the same
//! bytes, so every party that generates the policy from the same contract gets the same
//! hostdata.

use serde_json::{Value, json};

use super::{API_VERSION, FRAMEWORK_VERSION, MountRequest};

/// The framework rules every generated policy carries (see the module's documentation).
const FRAMEWORK: &str = include_str!("framework.rego");

/// The fixed allow-all policy (`--security-policy-creation-option allow-all`): every
/// enforcement point admits everything. encfs's own text, so its hostdata is not the
/// reference's allow-all hostdata (`73973b78…`).
pub const ALLOW_ALL: &str = include_str!("allow_all.rego");

/// One container as the policy agrees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyContainer {
    /// Its name in the deployment.
    pub name: String,
    /// Its command line, program first.
    pub command: Vec<String>,
    /// Its environment, `NAME=value` each (exact values).
    pub env: Vec<String>,
    /// Its mounts.
    pub mounts: Vec<PolicyMount>,
    /// Its working directory.
    pub working_dir: String,
}

/// One agreed mount (a bind mount of a deployment volume).
pub type PolicyMount = MountRequest;

impl PolicyContainer {
    /// The container's entry in `containers` (CCE's field names where CCE has one).
    pub fn to_json(&self) -> Value {
        let env_rules: Vec<Value> = self
            .env
            .iter()
            .map(|pattern| json!({"pattern": pattern, "required": true, "strategy": "string"}))
            .collect();
        let mounts: Vec<Value> = self
            .mounts
            .iter()
            .map(|m| {
                json!({
                    "destination": m.destination,
                    "options": m.options(),
                    "source": m.source,
                    "type": "bind",
                })
            })
            .collect();
        json!({
            "command": self.command,
            "env_rules": env_rules,
            "exec_processes": [],
            "mounts": mounts,
            "name": self.name,
            "signals": [],
            "working_dir": self.working_dir,
        })
    }
}

/// Compact JSON with object keys sorted, whatever `serde_json`'s map order is.
pub(crate) fn canonical_json(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical_json(&map[k])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical_json).collect();
            format!("[{}]", items.join(","))
        }
        other => other.to_string(),
    }
}

/// The policy text for exactly `containers`, in their order.
pub fn render(containers: &[PolicyContainer]) -> String {
    let entries: Vec<String> = containers
        .iter()
        .map(|c| canonical_json(&c.to_json()))
        .collect();
    format!(
        "package policy\n\n\
         api_version := \"{API_VERSION}\"\n\
         framework_version := \"{FRAMEWORK_VERSION}\"\n\n\
         containers := [\n{}\n]\n\n\
         allow_properties_access := false\n\
         allow_dump_stacks := false\n\
         allow_runtime_logging := false\n\
         allow_environment_variable_dropping := false\n\
         allow_unencrypted_scratch := false\n\
         allow_capability_dropping := false\n\
         {FRAMEWORK}",
        entries.join(",\n")
    )
}
