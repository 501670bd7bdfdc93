//! `encfs governance deployment generate`: reads a contract through the governance client,
//! parses its data as the clean-room spec, and writes the deployment that
//! `encfs_cleanroom::deployment::generate` makes of it.

use std::path::Path;

use anyhow::{Context, Result};
use encfs_cleanroom::deployment::{self, Attestation, GenerateOptions, SecurityPolicyOption};
use encfs_cleanroom::spec::Spec;
use serde_json::{Value, json};

use crate::governance_args::{ClientSelection, SecurityPolicyCreationOption};

/// The command's arguments.
pub(super) struct Request<'a> {
    pub contract_id: &'a str,
    pub output_dir: &'a Path,
    pub policy: SecurityPolicyCreationOption,
    pub image_registry: &'a str,
    pub attestation_authority: Option<&'a str>,
    pub client: &'a ClientSelection,
}

/// Generates and writes the deployment; what it wrote.
pub(super) fn run(request: &Request<'_>, runtime: tokio::runtime::Runtime) -> Result<Value> {
    let (client, service_cert_pem) =
        super::governance::open_client_with_service_cert(request.client)?;
    let contract = runtime
        .block_on(client.contract(request.contract_id))
        .with_context(|| {
            format!(
                "cannot read contract {:?} from governance client {:?} ({})",
                request.contract_id,
                request.client.client,
                client.endpoint()
            )
        })?;
    let data = contract["data"].as_str().with_context(|| {
        format!(
            "contract {:?} has no spec: its data is not a string",
            request.contract_id
        )
    })?;
    let origin = format!("(data of contract {})", request.contract_id);
    let spec = Spec::parse(data, Path::new(&origin))?;
    let options = GenerateOptions {
        contract_id: request.contract_id.to_owned(),
        governance_endpoint: client.endpoint().to_owned(),
        service_cert_pem,
        image_registry: request.image_registry.to_owned(),
        security_policy: match request.policy {
            SecurityPolicyCreationOption::AllowAll => SecurityPolicyOption::AllowAll,
            SecurityPolicyCreationOption::Generate => SecurityPolicyOption::Generate,
        },
        attestation: match request.attestation_authority {
            Some(url) => Attestation::Virtual {
                authority: url.to_owned(),
            },
            None => Attestation::Azure,
        },
    };
    let generated = deployment::generate(&spec, &options)
        .with_context(|| format!("contract {:?}", request.contract_id))?;
    let files = generated.write_to(request.output_dir)?;
    Ok(json!({
        "contractId": request.contract_id,
        "contractState": contract["state"],
        "outputDir": request.output_dir,
        "files": files,
        "hostdata": generated.hostdata(),
        "securityPolicyCreationOption": match request.policy {
            SecurityPolicyCreationOption::AllowAll => "allow-all",
            SecurityPolicyCreationOption::Generate => "generate",
        },
    }))
}
