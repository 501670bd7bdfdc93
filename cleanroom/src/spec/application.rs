//! `config add-application`: the reference's `Application` entry built from the verb's
//! arguments (ref §7): the image as an OCI `Document` in a container registry, the enforcement
//! policy `{"trustType":"https"}`, the command split like a POSIX shell would (`shlex`), the
//! access-name → mount-path maps and the resource requests. A command without an image is
//! allowed for the local clean room, which runs the command itself; the image is then the
//! placeholder [`LOCAL_COMMAND_IMAGE`], so the generated deployment still has the reference's
//! shape and readers can tell that no real image was named.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::{Application, Document, Image, Resource, ResourceRequests, ResourceSettings};
use super::{RuntimeSettings, ServiceEndpoint};

/// The image recorded for an application given only `--command` (the local clean room runs
/// the command; a real deployment needs a real image).
pub const LOCAL_COMMAND_IMAGE: &str = "encfs.local/command:latest";

/// The registry assumed for an image reference without a host, as Docker does.
const DEFAULT_REGISTRY: &str = "docker.io";

/// The enforcement policy document the reference writes for every image.
const TRUST_HTTPS_POLICY: &str = r#"{"trustType":"https"}"#;

/// What `add-application` was given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApplicationRequest {
    /// Application name.
    pub name: String,
    /// Image reference (`registry/repository:tag`); None for a command-only application.
    pub image: Option<String>,
    /// The command line as one string, split like a shell would.
    pub command: Option<String>,
    /// Datasource access name → mount path in the application.
    pub datasources: BTreeMap<String, String>,
    /// Datasink access name → mount path in the application.
    pub datasinks: BTreeMap<String, String>,
    /// Environment.
    pub environment: BTreeMap<String, String>,
    /// CPU cores requested.
    pub cpu: f64,
    /// Memory requested, GB.
    pub memory_in_gb: f64,
    /// Ports the application listens on.
    pub ports: Vec<u16>,
    /// Start once the execution consent check passes (`startType: Auto`).
    pub auto_start: bool,
}

/// Why an application request cannot become a spec entry.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplicationError {
    /// Neither an image nor a command.
    #[error("application '{0}' needs --image or --command (or both)")]
    NothingToRun(String),
    /// The name is empty or has characters a container name cannot have.
    #[error("application name '{0}' must be 1-63 letters, digits and '-' (it names a container)")]
    InvalidName(String),
    /// The command does not split (an unclosed quote, a trailing backslash).
    #[error("the --command of application '{name}' does not split into words: {command:?}")]
    UnsplittableCommand {
        /// The application.
        name: String,
        /// The command text.
        command: String,
    },
    /// The command is empty.
    #[error("the --command of application '{0}' is empty")]
    EmptyCommand(String),
    /// A negative or non-finite resource request.
    #[error("application '{name}': --{what} must be a finite number ≥ 0, not {value}")]
    InvalidResource {
        /// The application.
        name: String,
        /// `cpu` or `memory`.
        what: &'static str,
        /// The value given.
        value: f64,
    },
}

/// The registry host of an image reference: its first path component when that looks like a
/// host (has a '.' or ':' or is `localhost`), otherwise Docker's default registry.
pub fn registry_host(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => DEFAULT_REGISTRY,
    }
}

/// Splits a command line like a POSIX shell would (quotes, backslashes; no expansion).
pub fn split_command(name: &str, command: &str) -> Result<Vec<String>, ApplicationError> {
    let words = shlex::split(command).ok_or_else(|| ApplicationError::UnsplittableCommand {
        name: name.into(),
        command: command.into(),
    })?;
    if words.is_empty() {
        return Err(ApplicationError::EmptyCommand(name.into()));
    }
    Ok(words)
}

impl ApplicationRequest {
    /// The spec entry, in the reference's shape.
    pub fn build(&self) -> Result<Application, ApplicationError> {
        let name = &self.name;
        let valid_name = !name.is_empty()
            && name.len() <= 63
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !name.starts_with('-');
        if !valid_name {
            return Err(ApplicationError::InvalidName(name.clone()));
        }
        if self.image.is_none() && self.command.is_none() {
            return Err(ApplicationError::NothingToRun(name.clone()));
        }
        for (what, value) in [("cpu", self.cpu), ("memory", self.memory_in_gb)] {
            if !value.is_finite() || value < 0.0 {
                return Err(ApplicationError::InvalidResource {
                    name: name.clone(),
                    what,
                    value,
                });
            }
        }
        let command = match &self.command {
            Some(text) => split_command(name, text)?,
            None => Vec::new(),
        };
        let image = self.image.as_deref().unwrap_or(LOCAL_COMMAND_IMAGE);
        let executable = Document {
            document_type: "OCI".into(),
            authenticity_receipt: String::new(),
            identity: None,
            backing_resource: Resource {
                name: name.clone(),
                kind: "AzureContainerRegistry".into(),
                id: image.into(),
                provider: Some(ServiceEndpoint {
                    protocol: "AzureContainerRegistry".into(),
                    url: registry_host(image).into(),
                    configuration: None,
                }),
            },
        };
        let enforcement_policy = serde_yaml::to_value(BTreeMap::from([(
            "policy",
            BTreeMap::from([("policyDocument", STANDARD.encode(TRUST_HTTPS_POLICY))]),
        )]))
        .expect("a map of strings serialises");
        let mut ports = self.ports.clone();
        ports.sort_unstable();
        ports.dedup();
        Ok(Application {
            name: name.clone(),
            image: Image {
                executable,
                protection: None,
                enforcement_policy,
            },
            start_type: if self.auto_start { "Auto" } else { "Manual" }.into(),
            command,
            environment_variables: self.environment.clone(),
            datasources: Some(self.datasources.clone()),
            datasinks: Some(self.datasinks.clone()),
            runtime_settings: RuntimeSettings {
                ports,
                resource: ResourceSettings {
                    requests: ResourceRequests {
                        cpu: self.cpu,
                        memory_in_gb: self.memory_in_gb,
                    },
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ApplicationRequest {
        ApplicationRequest {
            name: "demo-app".into(),
            image: Some("docker.io/golang@sha256:abc".into()),
            command: Some(r#"bash -c "gzip -c \"$INPUT\" > '/mnt/out/a b.gz'""#.into()),
            datasources: BTreeMap::from([("publisher-input".into(), "/mnt/remote/input".into())]),
            datasinks: BTreeMap::from([("consumer-output".into(), "/mnt/remote/output".into())]),
            environment: BTreeMap::from([("INPUT".into(), "/mnt/remote/input/a".into())]),
            cpu: 0.5,
            memory_in_gb: 4.0,
            ports: vec![8080, 80, 8080],
            auto_start: true,
        }
    }

    #[test]
    fn the_entry_has_the_reference_shape() {
        let app = request().build().unwrap();
        let value = serde_yaml::to_value(&app).unwrap();
        let executable = &value["image"]["executable"];
        assert_eq!(executable["documentType"], "OCI");
        assert_eq!(executable["authenticityReceipt"], "");
        assert_eq!(
            executable["backingResource"]["id"],
            "docker.io/golang@sha256:abc"
        );
        assert_eq!(executable["backingResource"]["name"], "demo-app");
        assert_eq!(
            executable["backingResource"]["type"],
            "AzureContainerRegistry"
        );
        assert_eq!(
            executable["backingResource"]["provider"]["protocol"],
            "AzureContainerRegistry"
        );
        assert_eq!(
            executable["backingResource"]["provider"]["url"],
            "docker.io"
        );
        let policy = value["image"]["enforcementPolicy"]["policy"]["policyDocument"]
            .as_str()
            .unwrap();
        assert_eq!(
            STANDARD.decode(policy).unwrap(),
            TRUST_HTTPS_POLICY.as_bytes()
        );
        assert_eq!(value["startType"], "Auto");
        assert_eq!(
            app.command,
            vec!["bash", "-c", r#"gzip -c "$INPUT" > '/mnt/out/a b.gz'"#]
        );
        assert_eq!(value["datasources"]["publisher-input"], "/mnt/remote/input");
        assert_eq!(
            value["runtimeSettings"]["ports"],
            serde_yaml::to_value([80, 8080]).unwrap()
        );
        assert_eq!(value["runtimeSettings"]["resource"]["requests"]["cpu"], 0.5);
    }

    #[test]
    fn manual_start_and_command_only_use_the_placeholder_image() {
        let app = ApplicationRequest {
            image: None,
            auto_start: false,
            ..request()
        }
        .build()
        .unwrap();
        assert_eq!(app.start_type, "Manual");
        assert_eq!(
            app.image.executable.backing_resource.id,
            LOCAL_COMMAND_IMAGE
        );
        assert_eq!(
            app.image.executable.backing_resource.provider.unwrap().url,
            "encfs.local"
        );
        let image_only = ApplicationRequest {
            command: None,
            ..request()
        }
        .build()
        .unwrap();
        assert!(image_only.command.is_empty());
    }

    #[test]
    fn bad_requests_are_refused_with_the_reason() {
        let nothing = ApplicationRequest {
            image: None,
            command: None,
            ..request()
        };
        assert_eq!(
            nothing.build().unwrap_err(),
            ApplicationError::NothingToRun("demo-app".into())
        );
        let unclosed = ApplicationRequest {
            command: Some("sh -c 'echo".into()),
            ..request()
        };
        assert!(matches!(
            unclosed.build().unwrap_err(),
            ApplicationError::UnsplittableCommand { .. }
        ));
        let empty = ApplicationRequest {
            command: Some("   ".into()),
            ..request()
        };
        assert_eq!(
            empty.build().unwrap_err(),
            ApplicationError::EmptyCommand("demo-app".into())
        );
        for name in ["", "a/b", "-x", "über"] {
            let bad = ApplicationRequest {
                name: name.into(),
                ..request()
            };
            assert!(matches!(
                bad.build().unwrap_err(),
                ApplicationError::InvalidName(_)
            ));
        }
        let negative = ApplicationRequest {
            cpu: -1.0,
            ..request()
        };
        assert!(matches!(
            negative.build().unwrap_err(),
            ApplicationError::InvalidResource { what: "cpu", .. }
        ));
    }

    #[test]
    fn registry_hosts() {
        assert_eq!(registry_host("golang:1.23"), "docker.io");
        assert_eq!(registry_host("library/golang"), "docker.io");
        assert_eq!(registry_host("myacr.azurecr.io/app:v1"), "myacr.azurecr.io");
        assert_eq!(registry_host("localhost:5000/app"), "localhost:5000");
        assert_eq!(registry_host("localhost/app"), "localhost");
    }
}
