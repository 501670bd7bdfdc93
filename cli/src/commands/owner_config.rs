//! `encfs config …`, the data owner's side of secure key release (ref §7, §9): the clean-room
//! spec's datasources and datasinks, then `create-kek` / `wrap-deks` / `wrap-secret`, which read
//! the contract's accepted clean-room policy from governance, create each RSA-2048 KEK in memory,
//! import it exportable behind the release policy for that policy's hostdata, wrap DEKs (or any
//! value) with RSA-OAEP-SHA-256 and store them as secrets. A KEK's private part exists only in
//! this process's memory (zeroized on drop) and inside the vault.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use encfs_crypto::kek::{KekPrivateKey, KekPublicKey, KekSize, OaepHash};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::key_release::{KekRef, KeyRelease, SecretRef, host_of};
use super::keys::load_data_key;
use super::secretstore::{self, Backend, SecretStore};
use super::{datastore, governance};
use crate::args::{Mode, OutputArgs};
use crate::governance_args::ClientSelection;
use crate::keyrelease_args::{
    AddAccessPointArgs, ConfigCommand, KekArgs, WrapDeksArgs, WrapSecretArgs,
};
use encfs_cleanroom::spec::{
    self as spec, AccessPoint, CleanroomSecret, Direction, EncryptionSecret, EncryptionSecrets,
    PrivacyProxySettings, Resource, ServiceEndpoint, Spec,
};

/// The claim whose first value the release policy names.
const HOSTDATA_CLAIM: &str = "x-ms-sevsnpvm-hostdata";

/// Runs one `encfs config …` command.
pub fn run(command: ConfigCommand, access: &crate::args::StoreAccess) -> Result<()> {
    match command {
        ConfigCommand::Spec(command) => super::spec_config::run(command, access),
        ConfigCommand::Init { cleanroom_config } => {
            if spec::init(&cleanroom_config)? {
                println!("clean-room spec {} written", cleanroom_config.display());
            } else {
                println!(
                    "clean-room spec {} exists; left as it is",
                    cleanroom_config.display()
                );
            }
            Ok(())
        }
        ConfigCommand::AddDatasource(args) => add_access_point(&args, Direction::Source),
        ConfigCommand::AddDatasink(args) => add_access_point(&args, Direction::Sink),
        ConfigCommand::CreateKek(args) => {
            let result = runtime()?.block_on(setup(&args, None))?;
            print_result(&result, &args.output)
        }
        ConfigCommand::WrapDeks(args) => {
            let result = runtime()?.block_on(setup(&args.kek, Some(&args)))?;
            print_result(&result, &args.kek.output)
        }
        ConfigCommand::WrapSecret(args) => {
            let result = runtime()?.block_on(wrap_secret(&args))?;
            match args.output.structured() {
                Some(format) => args.output.print(&result, format),
                None => {
                    println!("{}", serde_json::to_string_pretty(&result)?);
                    Ok(())
                }
            }
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The reference's secure key release policy for `hostdata` and `authority` (ref §9, exact).
pub fn release_policy(hostdata: &str, authority: &str) -> Value {
    json!({
        "anyOf": [{
            "allOf": [
                {"claim": "x-ms-sevsnpvm-hostdata", "equals": hostdata},
                {"claim": "x-ms-compliance-status", "equals": "azure-compliant-uvm"},
                {"claim": "x-ms-attestation-type", "equals": "sevsnpvm"},
            ],
            "authority": authority,
        }],
        "version": "1.0.0",
    })
}

/// The hostdata of a clean-room policy as `GET …/cleanroompolicy` returns it: the first value of
/// `x-ms-sevsnpvm-hostdata` (the reference takes the first only).
pub fn hostdata_of(contract_id: &str, answer: &Value) -> Result<String> {
    let policy = answer.get("policy").unwrap_or(answer);
    match policy.get(HOSTDATA_CLAIM).and_then(|v| v.get(0)) {
        Some(Value::String(hostdata)) if !hostdata.is_empty() => Ok(hostdata.clone()),
        _ => bail!(
            "No clean room policy found under contract '{contract_id}' (no {HOSTDATA_CLAIM} claim \
             in its accepted clean-room policy; propose and accept one first)"
        ),
    }
}

/// Reads the accepted clean-room policy of `contract_id` and returns its hostdata.
async fn contract_hostdata(client: &ClientSelection, contract_id: &str) -> Result<String> {
    let governance = governance::open_client(client)?;
    let answer = governance
        .clean_room_policy(contract_id)
        .await
        .with_context(|| {
            format!(
                "cannot read the clean-room policy of contract '{contract_id}' through governance client {:?} ({})",
                client.client,
                governance.endpoint()
            )
        })?;
    hostdata_of(contract_id, &answer)
}

// ---------------------------------------------------------------------------------------------
// add-datasource / add-datasink

pub(super) fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Cse => "CSE",
        Mode::Cpk => "CPK",
        Mode::Sse => "SSE",
    }
}

pub(super) fn add_access_point(args: &AddAccessPointArgs, direction: Direction) -> Result<()> {
    let entry = datastore::find(args.datastore_config.as_deref(), &args.datastore_name)?;
    let mode = args.encryption_mode.unwrap_or(entry.mode);
    let store_type = spec::store_type(&entry.store);
    let container = entry
        .store
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    if entry.encrypt_names && direction == Direction::Sink {
        bail!(
            "datastore '{}' has encrypted names: a datasink with encrypted names is not supported \
             (the clean room seals a datasink's manifest by its stored names); use a datastore \
             without --encrypt-names for the output",
            entry.name
        );
    }
    let manifest = match &args.manifest {
        Some(path) if direction == Direction::Sink => bail!(
            "--manifest {}: a datasink pins no manifest (the clean room seals the datasink's \
             manifest at the end of the run)",
            path.display()
        ),
        Some(path) => {
            let pin = super::manifest_pin::pin_of_file(path, args.manifest_signer_cert.as_deref())?;
            // The clean room's mount reads the manifest of the prefix it serves (the datastore's,
            // under --subdirectory): a manifest sealed for another prefix would fail there.
            let selection = crate::args::DatastoreSelection {
                datastore: Some(entry.name.clone()),
                subdirectory: args.subdirectory.clone(),
                config: args.datastore_config.clone(),
            };
            let (address, ..) = super::transfer::address_of(&selection, None, None, None)?;
            let served = encfs_store::open_store_with(
                &address,
                None,
                encfs_store::retry::RetryPolicy::default(),
            )
            .with_context(|| {
                format!(
                    "invalid store address {}",
                    encfs_store::redact::redact(&address)
                )
            })?
            .prefix;
            let expected = encfs_dataset::manifest_blob_name(&served);
            if pin.blob != expected {
                bail!(
                    "--manifest {}: it was sealed for the blob {}, but this datasource serves \
                     prefix \"{served}\" of datastore '{}', whose manifest is {expected} (seal \
                     it with the same --subdirectory)",
                    path.display(),
                    pin.blob,
                    entry.name
                );
            }
            Some(pin)
        }
        None => None,
    };
    let current = Spec::load(&args.cleanroom_config)?;
    let identity = match &args.identity {
        Some(name) => Some(spec::identity(&current, name).with_context(|| {
            format!(
                "no identity named '{name}' in the clean-room spec {}",
                args.cleanroom_config.display()
            )
        })?),
        None => None,
    };
    let encryption_secrets = if mode == Mode::Sse {
        None
    } else {
        let path = secretstore::config_path(args.secretstore_config.as_deref())?;
        let stores = secretstore::load(&path)?;
        let dek_name = args.dek_secret_store.as_deref().with_context(|| {
            format!(
                "--encryption-mode {} needs --dek-secret-store",
                mode_name(mode).to_lowercase()
            )
        })?;
        let kek_store_name = args.kek_secret_store.as_deref().with_context(|| {
            format!(
                "--encryption-mode {} needs --kek-secret-store",
                mode_name(mode).to_lowercase()
            )
        })?;
        let dek_store = stores.find(dek_name, &path)?;
        let kek_store = stores.find(kek_store_name, &path)?;
        if !dek_store.is_vault() {
            bail!(
                "secret store '{dek_name}' is local; a wrapped DEK must be in a key vault the clean room can reach"
            );
        }
        if !kek_store.supports_key_release() {
            bail!(
                "secret store '{kek_store_name}' cannot hold a KEK behind a release policy (use an azure-keyvault-premium store)"
            );
        }
        let kek_name = match &args.kek_name {
            Some(name) => name.clone(),
            None => spec::default_kek_name(&args.cleanroom_config)?,
        };
        secretstore::check_object_name(&kek_name)?;
        let secret_name = spec::wrapped_dek_name(&entry.name, &kek_name);
        secretstore::check_object_name(&secret_name)?;
        Some(EncryptionSecrets {
            dek: EncryptionSecret {
                name: secret_name,
                secret: CleanroomSecret {
                    secret_type: "Key".into(),
                    backing_resource: Resource {
                        name: dek_store.name.clone(),
                        kind: "AzureKeyVault".into(),
                        id: dek_store.name.clone(),
                        provider: Some(ServiceEndpoint {
                            protocol: "AzureKeyVault_Secret".into(),
                            url: dek_store.url().to_owned(),
                            configuration: None,
                        }),
                    },
                },
            },
            kek: Some(EncryptionSecret {
                name: kek_name.clone(),
                secret: CleanroomSecret {
                    secret_type: "Key".into(),
                    backing_resource: Resource {
                        name: kek_name,
                        kind: "AzureKeyVault".into(),
                        id: kek_store.name.clone(),
                        provider: Some(ServiceEndpoint {
                            protocol: "AzureKeyVault_SecureKey".into(),
                            url: kek_store.url().to_owned(),
                            configuration: Some(spec::kek_configuration(&kek_store.authority()?)),
                        }),
                    },
                },
            }),
        })
    };
    let access_point = AccessPoint {
        name: args.name.clone().unwrap_or_else(|| entry.name.clone()),
        kind: direction.volume().into(),
        path: String::new(),
        store: Resource {
            name: container,
            kind: store_type.into(),
            id: entry.name.clone(),
            provider: Some(ServiceEndpoint {
                protocol: store_type.into(),
                url: encfs_store::redact::redact(&entry.store),
                configuration: None,
            }),
        },
        identity,
        protection: PrivacyProxySettings {
            proxy_type: spec::proxy_type(store_type, direction),
            proxy_mode: "Secure".into(),
            configuration: Some(spec::protection_configuration(mode_name(mode))),
            encryption_secrets,
        },
        subdirectory: args.subdirectory.clone(),
        manifest,
        encrypt_names: entry.encrypt_names,
    };
    spec::add_access_point(&args.cleanroom_config, direction, &access_point)?;
    println!(
        "{} {} (datastore {}, {}{}) in {}",
        match direction {
            Direction::Source => "datasource",
            Direction::Sink => "datasink",
        },
        access_point.name,
        entry.name,
        mode_name(mode),
        access_point
            .manifest
            .as_ref()
            .map(|pin| format!(", pinned to manifest {}", pin.digest))
            .unwrap_or_default(),
        args.cleanroom_config.display()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// create-kek / wrap-deks

/// What happens (or, with `--dry-run`, would happen) to one KEK or secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// It did not exist: created.
    Create,
    /// It exists as wanted: kept.
    Keep,
    /// It exists for another hostdata or authority: a new version.
    Replace,
}

impl Action {
    fn word(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Keep => "keep",
            Action::Replace => "replace",
        }
    }
}

/// One KEK after `ensure_kek`.
struct KekState {
    action: Action,
    kid: Option<String>,
    /// None only in a dry run that would create or replace it.
    public: Option<KekPublicKey>,
    store: SecretStore,
    authority: String,
}

/// Creates the KEK `name` in `store` behind the release policy for `hostdata`, keeps it if its
/// policy already is that one, or imports a new version if not.
async fn ensure_kek(
    store: &SecretStore,
    name: &str,
    hostdata: &str,
    dry_run: bool,
) -> Result<KekState> {
    if !store.supports_key_release() {
        bail!(
            "secret store '{}' cannot hold KEK '{name}' behind a release policy (use an azure-keyvault-premium store)",
            store.name
        );
    }
    secretstore::check_object_name(name)?;
    let authority = store.authority()?;
    let wanted = release_policy(hostdata, &authority);
    let backend = Backend::open(store)?;
    let existing = backend
        .get_kek(name)
        .await
        .with_context(|| format!("cannot read KEK '{name}' in secret store '{}'", store.name))?;
    let action = match &existing {
        Some(kek) if kek.release_policy.as_ref() == Some(&wanted) => Action::Keep,
        Some(_) => Action::Replace,
        None => Action::Create,
    };
    let (kid, public) = match (action, existing) {
        (Action::Keep, Some(kek)) => (Some(kek.kid), Some(kek.public)),
        _ if dry_run => (None, None),
        _ => {
            let private = KekPrivateKey::generate(KekSize::Rsa2048)
                .context("cannot generate an RSA-2048 KEK")?;
            let kid = backend
                .import_kek(name, &private, &wanted)
                .await
                .with_context(|| {
                    format!(
                        "cannot import KEK '{name}' into secret store '{}'",
                        store.name
                    )
                })?;
            (Some(kid), Some(private.public_key()))
        }
    };
    Ok(KekState {
        action,
        kid,
        public,
        store: store.clone(),
        authority,
    })
}

/// `create-kek` (`wrap_deks` = None) and `wrap-deks`.
async fn setup(args: &KekArgs, wrap_deks: Option<&WrapDeksArgs>) -> Result<Value> {
    let spec = Spec::load(&args.cleanroom_config)?;
    let releases = spec.key_releases()?;
    let stores_path = secretstore::config_path(args.secretstore_config.as_deref())?;
    let stores = secretstore::load(&stores_path)?;
    let hostdata = contract_hostdata(&args.client, &args.contract_id).await?;

    let mut keks: BTreeMap<(String, String), KekState> = BTreeMap::new();
    for release in &releases {
        let key = (release.kek_store.clone(), release.kek_name.clone());
        if keks.contains_key(&key) {
            continue;
        }
        let store = stores.find(&release.kek_store, &stores_path)?;
        let state = ensure_kek(store, &release.kek_name, &hostdata, args.dry_run).await?;
        keks.insert(key, state);
    }
    let kek_report: Vec<Value> = keks
        .iter()
        .map(|((store, name), state)| {
            json!({"name": name, "store": store, "kid": state.kid,
                   "authority": state.authority, "action": state.action.word()})
        })
        .collect();

    let mut dek_report = Vec::new();
    if let Some(wrap) = wrap_deks {
        let datastores_path = datastore::config_path(wrap.datastore_config.as_deref())?;
        let mut datastores = datastore::load(&datastores_path)?;
        let mut changed = false;
        for release in &releases {
            let kek = &keks[&(release.kek_store.clone(), release.kek_name.clone())];
            let entry = datastores
                .datastores
                .iter_mut()
                .find(|d| d.name == release.datastore)
                .with_context(|| {
                    format!(
                        "access point '{}' names datastore '{}', which is not in {}",
                        release.access_name,
                        release.datastore,
                        datastores_path.display()
                    )
                })?;
            let dek = load_data_key(&entry.key)
                .with_context(|| format!("the DEK of datastore '{}'", release.datastore))?;
            let dek_store = stores.find(&release.dek_store, &stores_path)?;
            if !dek_store.is_vault() {
                bail!(
                    "secret store '{}' of the wrapped DEK '{}' is local; the clean room cannot reach it",
                    dek_store.name,
                    release.dek_secret
                );
            }
            let backend = Backend::open(dek_store)?;
            let exists = backend
                .get_secret(&release.dek_secret)
                .await
                .with_context(|| {
                    format!(
                        "cannot read secret '{}' in secret store '{}'",
                        release.dek_secret, dek_store.name
                    )
                })?
                .is_some();
            let action = match (kek.action, exists) {
                (Action::Keep, true) => Action::Keep,
                (_, true) => Action::Replace,
                (_, false) => Action::Create,
            };
            if action != Action::Keep && !args.dry_run {
                let public = kek.public.as_ref().expect("a KEK exists outside a dry run");
                let wrapped = public
                    .wrap(&dek)
                    .with_context(|| format!("cannot wrap the DEK of '{}'", release.datastore))?;
                backend
                    .set_secret(&release.dek_secret, &STANDARD.encode(wrapped))
                    .await
                    .with_context(|| {
                        format!(
                            "cannot store secret '{}' in secret store '{}'",
                            release.dek_secret, dek_store.name
                        )
                    })?;
            }
            let identity = spec
                .datasources
                .iter()
                .chain(&spec.datasinks)
                .find(|ap| ap.name == release.access_name)
                .and_then(|ap| ap.identity.as_ref());
            let text_of = |field: &str| {
                identity
                    .and_then(|i| i.get(field))
                    .and_then(serde_yaml::Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
            };
            let record = KeyRelease {
                secret: SecretRef {
                    kid: release.dek_secret.clone(),
                    akv_endpoint: dek_store.url().to_owned(),
                },
                kek: KekRef {
                    kid: release.kek_name.clone(),
                    akv_endpoint: host_of(kek.store.url()),
                    maa_endpoint: host_of(&kek.authority),
                },
                client_id: text_of("clientId"),
                tenant_id: text_of("tenantId"),
            };
            let unwrap_request = record.unwrap_request();
            if entry.key_release.as_ref() != Some(&record) {
                entry.key_release = Some(record);
                changed = true;
            }
            dek_report.push(json!({
                "accessName": release.access_name,
                "datastore": release.datastore,
                "secret": release.dek_secret,
                "store": dek_store.name,
                "kek": release.kek_name,
                "action": action.word(),
                "unwrapRequest": unwrap_request,
            }));
        }
        if changed && !args.dry_run {
            datastore::save(&datastores_path, &datastores)?;
        }
    }
    Ok(json!({
        "contractId": args.contract_id,
        "hostdata": hostdata,
        "dryRun": args.dry_run,
        "keks": kek_report,
        "deks": dek_report,
    }))
}

fn print_result(result: &Value, output: &OutputArgs) -> Result<()> {
    if let Some(format) = output.structured() {
        return output.print(result, format);
    }
    let prefix = if result["dryRun"] == true {
        "would "
    } else {
        ""
    };
    println!(
        "contract {}: hostdata {}",
        result["contractId"].as_str().unwrap_or_default(),
        result["hostdata"].as_str().unwrap_or_default()
    );
    for kek in result["keks"].as_array().into_iter().flatten() {
        println!(
            "{prefix}{} KEK {} in {}",
            kek["action"].as_str().unwrap_or_default(),
            kek["name"].as_str().unwrap_or_default(),
            kek["store"].as_str().unwrap_or_default()
        );
    }
    for dek in result["deks"].as_array().into_iter().flatten() {
        println!(
            "{prefix}{} secret {} in {} (DEK of datastore {})",
            dek["action"].as_str().unwrap_or_default(),
            dek["secret"].as_str().unwrap_or_default(),
            dek["store"].as_str().unwrap_or_default(),
            dek["datastore"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// wrap-secret

async fn wrap_secret(args: &WrapSecretArgs) -> Result<Value> {
    let stores_path = secretstore::config_path(args.secretstore_config.as_deref())?;
    let stores = secretstore::load(&stores_path)?;
    let secret_store = stores.find(&args.secret_store, &stores_path)?;
    let kek_store = stores.find(&args.kek_secret_store, &stores_path)?;
    secretstore::check_object_name(&args.name)?;
    let value = Zeroizing::new(
        std::fs::read(&args.value_file)
            .with_context(|| format!("cannot read {}", args.value_file.display()))?,
    );
    let kek = match (&args.contract_id, &args.governance_client) {
        (Some(contract_id), Some(client)) => {
            let selection = ClientSelection {
                client: client.clone(),
                config: args.governance_config.clone(),
            };
            let hostdata = contract_hostdata(&selection, contract_id).await?;
            ensure_kek(kek_store, &args.kek_name, &hostdata, false).await?
        }
        (None, None) => {
            let authority = kek_store.authority()?;
            let existing = Backend::open(kek_store)?
                .get_kek(&args.kek_name)
                .await
                .with_context(|| {
                    format!("cannot read KEK '{}' in secret store '{}'", args.kek_name, kek_store.name)
                })?
                .with_context(|| {
                    format!(
                        "no KEK '{}' in secret store '{}'; pass --contract-id and --governance-client to create it",
                        args.kek_name, kek_store.name
                    )
                })?;
            KekState {
                action: Action::Keep,
                kid: Some(existing.kid),
                public: Some(existing.public),
                store: kek_store.clone(),
                authority,
            }
        }
        _ => bail!("--contract-id and --governance-client go together"),
    };
    let public = kek.public.as_ref().expect("not a dry run");
    let wrapped = public
        .encrypt_oaep(OaepHash::Sha256, &value)
        .with_context(|| {
            format!(
                "cannot wrap {} ({} bytes; RSA-OAEP-256 with a {}-bit KEK takes at most {} bytes)",
                args.value_file.display(),
                value.len(),
                public.bits(),
                public.bits() / 8 - 66
            )
        })?;
    Backend::open(secret_store)?
        .set_secret(&args.name, &STANDARD.encode(wrapped))
        .await
        .with_context(|| {
            format!(
                "cannot store secret '{}' in secret store '{}'",
                args.name, secret_store.name
            )
        })?;
    Ok(json!({
        "kid": args.name,
        "akvEndpoint": secret_store.url(),
        "kek": {
            "kid": args.kek_name,
            "akvEndpoint": host_of(kek.store.url()),
            "maaEndpoint": host_of(&kek.authority),
        },
    }))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn the_release_policy_is_the_reference_text() {
        assert_eq!(
            release_policy("ab12", "https://maa.example").to_string(),
            r#"{"anyOf":[{"allOf":[{"claim":"x-ms-sevsnpvm-hostdata","equals":"ab12"},{"claim":"x-ms-compliance-status","equals":"azure-compliant-uvm"},{"claim":"x-ms-attestation-type","equals":"sevsnpvm"}],"authority":"https://maa.example"}],"version":"1.0.0"}"#
        );
    }

    #[test]
    fn hostdata_is_the_first_value_and_its_absence_is_refused() {
        let answer = json!({"proposalIds": [], "policy": {HOSTDATA_CLAIM: ["aa", "bb"]}});
        assert_eq!(hostdata_of("c", &answer).unwrap(), "aa");
        for policy in [
            json!({}),
            json!({"policy": {}}),
            json!({"policy": {HOSTDATA_CLAIM: []}}),
        ] {
            let error = hostdata_of("c1", &policy).unwrap_err().to_string();
            assert!(
                error.contains("No clean room policy found under contract 'c1'"),
                "{error}"
            );
        }
    }

    #[test]
    fn an_unused_path_is_not_a_spec() {
        assert!(Spec::load(Path::new("/nonexistent/spec.yaml")).is_err());
    }
}
