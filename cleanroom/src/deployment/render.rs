//! The generated files' shapes: the ARM template of one confidential container group (the
//! reference's §8), the Kubernetes pod manifest of the same containers (AKS-style, the policy as
//! the virtual node's annotation), and confcom's policy input.

use serde_json::{Value, json};

use super::containers::{CODE_LAUNCHER_PORT, ContainerDefinition, VOLUMES};

/// The ARM resource type of the container group.
pub const CONTAINER_GROUP_TYPE: &str = "Microsoft.ContainerInstance/containerGroups";
/// Its API version (the reference's).
pub const CONTAINER_GROUP_API_VERSION: &str = "2023-05-01";
/// The tag that names the contract.
pub const CONTRACT_TAG: &str = "accr-contract-id";
/// The tag that names the generator's version.
pub const VERSION_TAG: &str = "accr-version";
/// The pod annotation that carries the policy (base64), as AKS virtual nodes read it.
pub const POD_POLICY_ANNOTATION: &str = "microsoft.containerinstance.virtualnode.ccepolicy";

fn arm_container(c: &ContainerDefinition) -> Value {
    let mut properties = json!({
        "image": c.image,
        "command": c.command,
        "environmentVariables": c.env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
        "volumeMounts": c.mounts.iter().map(|m| json!({
            "name": m.volume, "mountPath": m.mount_path, "readOnly": m.read_only,
        })).collect::<Vec<_>>(),
        "securityContext": {"privileged": c.privileged},
        "resources": {"requests": {"cpu": c.cpu, "memoryInGB": c.memory_gb}},
    });
    if !c.ports.is_empty() {
        properties["ports"] = c
            .ports
            .iter()
            .map(|p| json!({"port": p, "protocol": "TCP"}))
            .collect();
    }
    json!({"name": c.name, "properties": properties})
}

/// The ARM template.
pub(crate) fn arm_template(
    contract_id: &str,
    cce_policy_base64: &str,
    init: &[ContainerDefinition],
    containers: &[ContainerDefinition],
) -> Value {
    let mut init_containers: Vec<Value> = init.iter().map(arm_container).collect();
    for c in &mut init_containers {
        // Init containers take no resources or ports in ARM.
        if let Some(p) = c["properties"].as_object_mut() {
            p.remove("resources");
            p.remove("ports");
        }
    }
    json!({
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {
            "location": {"type": "string", "defaultValue": "[resourceGroup().location]"},
            "name": {"type": "string", "defaultValue": format!("cleanroom-{contract_id}")},
            "dnsNameLabel": {"type": "string", "defaultValue": format!("cleanroom-{contract_id}")},
        },
        "resources": [{
            "type": CONTAINER_GROUP_TYPE,
            "apiVersion": CONTAINER_GROUP_API_VERSION,
            "name": "[parameters('name')]",
            "location": "[parameters('location')]",
            "tags": {CONTRACT_TAG: contract_id, VERSION_TAG: env!("CARGO_PKG_VERSION")},
            "properties": {
                "sku": "Confidential",
                "osType": "Linux",
                "restartPolicy": "Never",
                "ipAddress": {
                    "type": "Public",
                    "dnsNameLabel": "[parameters('dnsNameLabel')]",
                    "ports": [{"port": CODE_LAUNCHER_PORT, "protocol": "TCP"}],
                },
                "confidentialComputeProperties": {"ccePolicy": cce_policy_base64},
                "volumes": VOLUMES.iter().map(|v| json!({"name": v, "emptyDir": {}})).collect::<Vec<_>>(),
                "initContainers": init_containers,
                "containers": containers.iter().map(arm_container).collect::<Vec<_>>(),
            },
        }],
    })
}

fn pod_container(c: &ContainerDefinition, with_resources: bool) -> Value {
    let mut container = json!({
        "name": c.name,
        "image": c.image,
        "command": c.command,
        "env": c.env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
        "volumeMounts": c.mounts.iter().map(|m| json!({
            "name": m.volume, "mountPath": m.mount_path, "readOnly": m.read_only,
        })).collect::<Vec<_>>(),
        "securityContext": {"privileged": c.privileged},
    });
    if with_resources {
        container["resources"] = json!({"requests": {
            "cpu": format!("{}", c.cpu),
            "memory": format!("{}G", c.memory_gb),
        }});
    }
    if !c.ports.is_empty() {
        container["ports"] = c
            .ports
            .iter()
            .map(|p| json!({"containerPort": p, "protocol": "TCP"}))
            .collect();
    }
    container
}

/// A DNS-1123 name for the pod (lower-case alphanumerics and `-`, at most 63).
fn pod_name(contract_id: &str) -> String {
    let mut name: String = format!("cleanroom-{contract_id}")
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    name.truncate(63);
    name.trim_end_matches('-').to_owned()
}

/// The Kubernetes pod manifest (YAML).
pub(crate) fn pod_manifest(
    contract_id: &str,
    cce_policy_base64: &str,
    init: &[ContainerDefinition],
    containers: &[ContainerDefinition],
) -> String {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(contract_id),
            "annotations": {
                POD_POLICY_ANNOTATION: cce_policy_base64,
                CONTRACT_TAG: contract_id,
                VERSION_TAG: env!("CARGO_PKG_VERSION"),
            },
        },
        "spec": {
            "restartPolicy": "Never",
            "initContainers": init.iter().map(|c| pod_container(c, false)).collect::<Vec<_>>(),
            "containers": containers.iter().map(|c| pod_container(c, true)).collect::<Vec<_>>(),
            "volumes": VOLUMES.iter().map(|v| json!({"name": v, "emptyDir": {}})).collect::<Vec<_>>(),
        },
    });
    serde_yaml::to_string(&pod).expect("a JSON value is YAML")
}

/// `cleanroom-policy-in.json`: confcom's input, every container (init first).
pub(crate) fn policy_input(init: &[ContainerDefinition], containers: &[ContainerDefinition]) -> Value {
    json!({
        "version": "1.0",
        "containers": init.iter().chain(containers).map(ContainerDefinition::policy_input).collect::<Vec<_>>(),
    })
}
