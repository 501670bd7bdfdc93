//! `encfs config add-application | set-logging | set-telemetry | view | validate`: the
//! clean-room specification verbs (ref §7) over `encfs_cleanroom::spec`. The telemetry verbs
//! create their datastore with `datastore add`'s code and add the datasink with
//! `add-datasink`'s, so a telemetry sink is an ordinary datastore its owner downloads and
//! decrypts like any other.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use encfs_cleanroom::spec::{
    self as spec, ApplicationRequest, Direction, SecretStoreKind, Spec, Stores, TelemetryKind,
    telemetry,
};
use serde_yaml::Value;

use super::owner_config::{add_access_point, mode_name};
use super::{datastore, secretstore};
use crate::args::{Mode, StoreAccess};
use crate::keyrelease_args::{AddAccessPointArgs, BackingStoreType};
use crate::spec_args::{AddApplicationArgs, SetTelemetryArgs, SpecCommand, ValidateArgs, ViewArgs};

/// Runs one spec verb.
pub fn run(command: SpecCommand, access: &StoreAccess) -> Result<()> {
    match command {
        SpecCommand::AddApplication(args) => add_application(&args),
        SpecCommand::SetLogging(args) => set_telemetry(&args, TelemetryKind::Application, access),
        SpecCommand::SetTelemetry(args) => {
            set_telemetry(&args, TelemetryKind::Infrastructure, access)
        }
        SpecCommand::View(args) => view(&args),
        SpecCommand::Validate(args) => validate(&args),
    }
}

/// `NAME=VALUE` pairs into a map; a pair without '=' or a name given twice is refused.
fn pairs(flag: &str, values: &[String]) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for value in values {
        let Some((name, rest)) = value.split_once('=') else {
            bail!("--{flag} takes NAME=VALUE pairs, not '{value}'");
        };
        if name.is_empty() {
            bail!("--{flag} '{value}' has an empty name");
        }
        if map.insert(name.to_owned(), rest.to_owned()).is_some() {
            bail!("--{flag} gives '{name}' twice");
        }
    }
    Ok(map)
}

fn add_application(args: &AddApplicationArgs) -> Result<()> {
    let request = ApplicationRequest {
        name: args.name.clone(),
        image: args.image.clone(),
        command: args.command.clone(),
        datasources: pairs("datasources", &args.datasources)?,
        datasinks: pairs("datasinks", &args.datasinks)?,
        environment: pairs("env", &args.env)?,
        cpu: args.cpu,
        memory_in_gb: args.memory,
        ports: args.ports.clone(),
        auto_start: args.auto_start,
    };
    let application = request.build()?;
    let replaced = Spec::load(&args.cleanroom_config)?
        .application(&application.name)
        .is_some();
    spec::add_application(&args.cleanroom_config, &application)?;
    println!(
        "application {} ({}, {} start) {} in {}",
        application.name,
        application.image.executable.backing_resource.id,
        application.start_type.to_lowercase(),
        if replaced { "replaced" } else { "added" },
        args.cleanroom_config.display()
    );
    Ok(())
}

fn set_telemetry(args: &SetTelemetryArgs, kind: TelemetryKind, access: &StoreAccess) -> Result<()> {
    let spec_path = &args.cleanroom_config;
    // The spec must be readable before anything is created for it.
    Spec::load(spec_path)?;
    let mode = args.encryption_mode;
    if mode != Mode::Sse && (args.dek_secret_store.is_none() || args.kek_secret_store.is_none()) {
        bail!(
            "--encryption-mode {} needs --dek-secret-store and --kek-secret-store (where the \
             wrapped DEK and its KEK will live)",
            mode_name(mode)
        );
    }
    let name = telemetry::datastore_name(kind, spec_path)?;
    let container = telemetry::container_name(kind, args.container_suffix.as_deref())
        .unwrap_or_else(|| name.clone());
    let store = format!("{}/{container}", args.storage_account.trim_end_matches('/'));
    let datastores_path = datastore::config_path(args.datastore_config.as_deref())?;
    let existing = datastore::load(&datastores_path)?
        .datastores
        .into_iter()
        .find(|d| d.name == name);
    match existing {
        Some(entry) if entry.store == store && entry.mode == mode => {
            println!(
                "datastore {name}: exists in {}, kept",
                datastores_path.display()
            );
        }
        Some(entry) => bail!(
            "datastore '{name}' exists in {} with another store or mode ({}, {}); remove it or \
             use another --container-suffix",
            datastores_path.display(),
            encfs_store::redact::redact(&entry.store),
            mode_name(entry.mode)
        ),
        None => {
            let key_dir = match &args.datastore_secretstore {
                Some(store_name) => {
                    let stores_path = secretstore::config_path(args.secretstore_config.as_deref())?;
                    let stores = secretstore::load(&stores_path)?;
                    let store = stores.find(store_name, &stores_path)?;
                    if store.backing_store_type != BackingStoreType::Local {
                        bail!(
                            "--datastore-secretstore '{store_name}' is a key vault; the datastore's \
                             DEK file goes into a local secret store"
                        );
                    }
                    Some(std::path::PathBuf::from(&store.backing_store_id))
                }
                None => None,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let added = runtime.block_on(datastore::add(
                &datastores_path,
                &name,
                &store,
                mode,
                access,
                key_dir.as_deref(),
                false,
            ))?;
            println!(
                "datastore {name}: {} ({}), key {} (id {})",
                added.location,
                if added.created {
                    "container created"
                } else {
                    "container existed"
                },
                added.datastore.key.display(),
                added.key_id
            );
        }
    }
    add_access_point(
        &AddAccessPointArgs {
            cleanroom_config: spec_path.clone(),
            datastore_name: name.clone(),
            name: Some(kind.access_name().into()),
            datastore_config: Some(datastores_path),
            secretstore_config: args.secretstore_config.clone(),
            dek_secret_store: args.dek_secret_store.clone(),
            kek_secret_store: args.kek_secret_store.clone(),
            kek_name: args.kek_name.clone(),
            encryption_mode: Some(mode),
            subdirectory: None,
            identity: args.identity.clone(),
            manifest: None,
            manifest_signer_cert: None,
        },
        Direction::Sink,
    )?;
    let current = Spec::load(spec_path)?;
    let sink = current
        .datasinks
        .iter()
        .find(|d| d.name == kind.access_name())
        .with_context(|| {
            format!(
                "datasink '{}' vanished from {}",
                kind.access_name(),
                spec_path.display()
            )
        })?;
    telemetry::set_telemetry(spec_path, kind, sink)?;
    println!(
        "governance.telemetry.{} → datasink {} in {}",
        kind.key(),
        kind.access_name(),
        spec_path.display()
    );
    Ok(())
}

/// A spec file as a YAML document, checked to be a spec (errors name the file and line).
fn load_document(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the clean-room spec {}", path.display()))?;
    Spec::parse(&text, path)?;
    let document: Value = serde_yaml::from_str(&text)
        .with_context(|| format!("malformed clean-room spec {}", path.display()))?;
    if !document.is_mapping() && !document.is_null() {
        bail!(
            "the clean-room spec {} is not a YAML mapping",
            path.display()
        );
    }
    Ok(document)
}

fn view(args: &ViewArgs) -> Result<()> {
    let mut merged = load_document(&args.cleanroom_config)?;
    for (index, path) in args.configs.iter().enumerate() {
        let incoming = load_document(path)?;
        spec::merge(&mut merged, &incoming).with_context(|| {
            let before: Vec<String> = std::iter::once(&args.cleanroom_config)
                .chain(&args.configs[..index])
                .map(|p| p.display().to_string())
                .collect();
            format!(
                "cannot merge {} into {}",
                path.display(),
                before.join(" + ")
            )
        })?;
    }
    if let Some(out) = &args.output_file {
        spec::save(out, &merged)?;
    }
    if !args.no_print {
        print!(
            "{}",
            serde_yaml::to_string(&merged).expect("a YAML value serialises")
        );
    }
    Ok(())
}

fn validate(args: &ValidateArgs) -> Result<()> {
    let path = &args.cleanroom_config;
    let current = Spec::load(path)?;
    let stores = if args.datastore_config.is_some() || args.secretstore_config.is_some() {
        let datastores = match &args.datastore_config {
            Some(file) => Some(
                datastore::load(file)?
                    .datastores
                    .into_iter()
                    .map(|d| (d.name, mode_name(d.mode).to_owned()))
                    .collect(),
            ),
            None => None,
        };
        let secret_stores = match &args.secretstore_config {
            Some(file) => Some(
                secretstore::load(file)?
                    .secretstores
                    .into_iter()
                    .map(|s| {
                        let kind = match s.backing_store_type {
                            BackingStoreType::Local => SecretStoreKind::Local,
                            BackingStoreType::AzureKeyvault => SecretStoreKind::Vault,
                            BackingStoreType::AzureKeyvaultPremium => {
                                SecretStoreKind::KeyReleaseVault
                            }
                        };
                        (s.name, kind)
                    })
                    .collect(),
            ),
            None => None,
        };
        Some(Stores {
            datastores,
            secret_stores,
        })
    } else {
        None
    };
    let report = spec::validate(&current, stores.as_ref());
    match args.output.structured() {
        Some(format) => {
            let value = serde_json::to_value(&report).expect("a report serialises");
            args.output.print(&value, format)?;
        }
        None => {
            for finding in &report.errors {
                println!("error {:?}: {}", finding.code, finding.message);
            }
            for finding in &report.warnings {
                println!("warning {:?}: {}", finding.code, finding.message);
            }
            if report.is_valid() {
                println!(
                    "clean-room spec {} is valid ({} warning{})",
                    path.display(),
                    report.warnings.len(),
                    if report.warnings.len() == 1 { "" } else { "s" }
                );
            }
        }
    }
    if !report.is_valid() {
        bail!(
            "clean-room spec {} is not valid: {} error{}",
            path.display(),
            report.errors.len(),
            if report.errors.len() == 1 { "" } else { "s" }
        );
    }
    Ok(())
}
