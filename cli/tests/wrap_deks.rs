//! `encfs config wrap-deks` / `create-kek` / `wrap-secret` through the binary against a real
//! governance service (a consortium that accepted a contract and its clean-room policy) and the
//! real local key vault (in process, HTTPS, a registered credential): the vault holds the KEK
//! with the reference's exact release policy for the policy's hostdata, exportable; the wrapped
//! DEK secret unwraps (with the KEK read back through the vault's own store, a test-only path:
//! releasing it needs an attested clean room) to the datastore's DEK; the datastore config gets
//! its `key_release`; a re-run keeps everything; a new authority replaces the KEK and re-wraps;
//! a policy without hostdata is refused; `--dry-run` changes nothing.

use std::path::Path;
use std::process::Output;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use encfs_crypto::kek::{KekPrivateKey, OaepHash};
use encfs_keyvault::identity::Credential;
use encfs_keyvault::server::Vault;
use encfs_keyvault::store::Store;
use serde_json::{Value, json};

mod support;
use support::governance::*;

/// The local vault served on a port of this test's range, on its own runtime thread.
struct LocalVault {
    url: String,
    data: std::path::PathBuf,
    _runtime: tokio::runtime::Runtime,
}

fn start_vault(data: &Path, credential_out: &Path) -> LocalVault {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let vault = Vault::open(data, Vec::<Vec<u8>>::new()).unwrap();
    let credential = Credential::create(vault.dir(), "publisher").unwrap();
    credential.save(credential_out).unwrap();
    let url = runtime.block_on(async {
        for port in 21350..21400 {
            if let Ok(running) = vault.serve(([127, 0, 0, 1], port).into()).await {
                let url = running.url();
                tokio::spawn(running.wait());
                return url;
            }
        }
        panic!("no free port in 21350-21399 for the vault");
    });
    LocalVault {
        url,
        data: data.to_owned(),
        _runtime: runtime,
    }
}

impl LocalVault {
    fn store(&self) -> Store {
        Store::open(&self.data).unwrap()
    }

    /// The KEK's latest version: (version, release policy JSON, exportable, private key).
    fn kek(&self, name: &str) -> Option<(String, Value, bool, KekPrivateKey)> {
        let key = self.store().key(name, None).unwrap()?;
        let policy = key.release_policy.as_ref().unwrap().data.clone().unwrap();
        let policy: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(policy.trim_end_matches('='))
                .unwrap(),
        )
        .unwrap();
        let private = KekPrivateKey::from_pkcs8_der(&key.pkcs8().unwrap()).unwrap();
        Some((key.version.clone(), policy, key.exportable, private))
    }

    /// The secret's latest version: (version, value).
    fn secret(&self, name: &str) -> Option<(String, String)> {
        let secret = self.store().secret(name, None).unwrap()?;
        Some((secret.version.clone(), secret.value().to_owned()))
    }
}

fn reference_policy(hostdata: &str, authority: &str) -> Value {
    json!({"anyOf": [{"allOf": [
                {"claim": "x-ms-sevsnpvm-hostdata", "equals": hostdata},
                {"claim": "x-ms-compliance-status", "equals": "azure-compliant-uvm"},
                {"claim": "x-ms-attestation-type", "equals": "sevsnpvm"}],
            "authority": authority}],
           "version": "1.0.0"})
}

fn owner(sb: &Sandbox, args: &[&str]) -> Output {
    sb.encfs(args)
        .env("ENCFS_CONFIG", sb.path("datastores.yaml"))
        .env("ENCFS_SECRETSTORE_CONFIG", sb.path("secretstores.yaml"))
        .output()
        .unwrap()
}

fn owner_ok(sb: &Sandbox, args: &[&str]) -> String {
    let out = owner(sb, args);
    assert!(
        out.status.success(),
        "encfs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn owner_json(sb: &Sandbox, args: &[&str]) -> Value {
    serde_json::from_str(&owner_ok(sb, args)).unwrap()
}

fn add_kv(sb: &Sandbox, vault: &LocalVault, authority: &str) {
    let ca = vault.data.join("ca.pem");
    owner_ok(
        sb,
        &[
            "secretstore",
            "add",
            "--name",
            "kv",
            "--backing-store-type",
            "azure-keyvault-premium",
            "--backing-store-id",
            &vault.url,
            "--attestation-endpoint",
            authority,
            "--credential",
            "owner-cred.json",
            "--ca",
            ca.to_str().unwrap(),
        ],
    );
}

fn datastores(sb: &Sandbox) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(sb.path("datastores.yaml")).unwrap()).unwrap()
}

#[test]
fn wrap_deks_against_governance_and_the_local_vault() {
    let sb = Sandbox::new();
    let _service = consortium(&sb);
    let hostdata = "73973b78d70cc68353426de188db5dfc57e5b766e399935fb73a61127ea26d20";
    accepted_contract_with_policy(
        &sb,
        "collab",
        "applications: []\n",
        &json!({"type": "add", "policyType": "snp-caci",
                "claims": {"x-ms-sevsnpvm-is-debuggable": false,
                           "x-ms-sevsnpvm-hostdata": hostdata}})
        .to_string(),
    );
    accepted_contract_with_policy(
        &sb,
        "nohost",
        "applications: []\n",
        r#"{"type":"add","policyType":"snp-caci","claims":{"x-ms-sevsnpvm-is-debuggable":false}}"#,
    );
    let vault = start_vault(&sb.path("vault"), &sb.path("owner-cred.json"));
    let authority = "https://127.0.0.1:21349";
    add_kv(&sb, &vault, authority);

    let store = sb.path("store").display().to_string();
    owner_ok(
        &sb,
        &["datastore", "add", "--name", "pub-in", "--store", &store],
    );
    owner_ok(&sb, &["config", "init", "--cleanroom-config", "spec.yaml"]);
    owner_ok(
        &sb,
        &[
            "config",
            "add-datasource",
            "--cleanroom-config",
            "spec.yaml",
            "--datastore-name",
            "pub-in",
            "--dek-secret-store",
            "kv",
            "--kek-secret-store",
            "kv",
            "--kek-name",
            "pub-kek",
        ],
    );
    let wrap = |extra: &[&str]| {
        let mut args = vec![
            "config",
            "wrap-deks",
            "--contract-id",
            "collab",
            "--cleanroom-config",
            "spec.yaml",
            "--governance-client",
            "publisher",
            "--output",
            "json",
        ];
        args.extend_from_slice(extra);
        owner_json(&sb, &args)
    };
    let secret_name = "wrapped-pub-in-dek-pub-kek";

    // Dry run: the plan, nothing created.
    let plan = wrap(&["--dry-run"]);
    assert_eq!(plan["hostdata"], hostdata);
    assert_eq!(plan["dryRun"], true);
    assert_eq!(plan["keks"][0]["action"], "create");
    assert_eq!(plan["deks"][0]["action"], "create");
    assert!(vault.kek("pub-kek").is_none());
    assert!(vault.secret(secret_name).is_none());
    assert!(
        datastores(&sb)["datastores"][0]
            .get("key_release")
            .is_none()
    );

    // The real run.
    let done = wrap(&[]);
    assert_eq!(done["keks"][0]["action"], "create");
    assert_eq!(done["deks"][0]["action"], "create");
    let (kek_version, policy, exportable, private) = vault.kek("pub-kek").unwrap();
    assert_eq!(policy, reference_policy(hostdata, authority));
    assert!(exportable);
    assert_eq!(private.bits(), 2048);
    let (secret_version, wrapped) = vault.secret(secret_name).unwrap();
    let (dek, _) = encfs_crypto::key_file::read(&sb.path("keys/pub-in.key")).unwrap();
    assert_eq!(
        private
            .decrypt_oaep(OaepHash::Sha256, &STANDARD.decode(&wrapped).unwrap())
            .unwrap()
            .as_slice(),
        dek.dangerous_bytes()
    );
    let vault_host = vault.url.trim_start_matches("https://").to_owned();
    let expected_release = json!({
        "secret": {"kid": secret_name, "akv_endpoint": vault.url},
        "kek": {"kid": "pub-kek", "akv_endpoint": vault_host, "maa_endpoint": "127.0.0.1:21349"},
    });
    let recorded: Value =
        serde_json::to_value(&datastores(&sb)["datastores"][0]["key_release"]).unwrap();
    assert_eq!(recorded, expected_release);
    assert_eq!(
        done["deks"][0]["unwrapRequest"],
        json!({"clientId": "", "tenantId": "", "kid": secret_name, "akvEndpoint": vault.url,
               "kek": {"kid": "pub-kek", "akvEndpoint": vault_host,
                       "maaEndpoint": "127.0.0.1:21349"}})
    );
    // No key material beside the configs.
    for entry in std::fs::read_dir(sb.path(".")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(!name.contains("kek"), "{name}");
    }

    // Re-run: everything kept.
    let again = wrap(&[]);
    assert_eq!(again["keks"][0]["action"], "keep");
    assert_eq!(again["deks"][0]["action"], "keep");
    assert_eq!(vault.kek("pub-kek").unwrap().0, kek_version);
    assert_eq!(vault.secret(secret_name).unwrap().0, secret_version);

    // Another authority: a new KEK version with the new policy, the DEK re-wrapped.
    let other = "https://127.0.0.1:21348";
    add_kv(&sb, &vault, other);
    let replaced = wrap(&[]);
    assert_eq!(replaced["keks"][0]["action"], "replace");
    assert_eq!(replaced["deks"][0]["action"], "replace");
    let (new_version, policy, _, private) = vault.kek("pub-kek").unwrap();
    assert_ne!(new_version, kek_version);
    assert_eq!(policy, reference_policy(hostdata, other));
    let (_, wrapped) = vault.secret(secret_name).unwrap();
    assert_eq!(
        private
            .unwrap(&STANDARD.decode(&wrapped).unwrap())
            .unwrap()
            .id(),
        dek.id()
    );
    assert_eq!(
        datastores(&sb)["datastores"][0]["key_release"]["kek"]["maa_endpoint"],
        "127.0.0.1:21348"
    );

    // A policy without hostdata (and a contract without any policy) is refused; nothing changes.
    accepted_contract(&sb, "bare", "applications: []\n");
    for contract in ["nohost", "bare"] {
        let out = owner(
            &sb,
            &[
                "config",
                "wrap-deks",
                "--contract-id",
                contract,
                "--cleanroom-config",
                "spec.yaml",
                "--governance-client",
                "publisher",
            ],
        );
        assert!(!out.status.success());
        let error = String::from_utf8_lossy(&out.stderr);
        assert!(
            error.contains(&format!(
                "No clean room policy found under contract '{contract}'"
            )),
            "{error}"
        );
        assert_eq!(vault.kek("pub-kek").unwrap().0, new_version);
    }

    // create-kek alone: the KEK as it is (kept).
    let kek_only = owner_json(
        &sb,
        &[
            "config",
            "create-kek",
            "--contract-id",
            "collab",
            "--cleanroom-config",
            "spec.yaml",
            "--governance-client",
            "publisher",
            "--output",
            "json",
        ],
    );
    assert_eq!(kek_only["keks"][0]["action"], "keep");
    assert_eq!(kek_only["deks"], json!([]));

    // wrap-secret: any value, with the same KEK; prints the unwrap request shape.
    std::fs::write(sb.path("value.txt"), b"a connection string").unwrap();
    let shape = owner_json(
        &sb,
        &[
            "config",
            "wrap-secret",
            "--name",
            "app-secret",
            "--value-file",
            "value.txt",
            "--secret-store",
            "kv",
            "--kek-secret-store",
            "kv",
            "--kek-name",
            "pub-kek",
            "--output",
            "json",
        ],
    );
    assert_eq!(
        shape,
        json!({"kid": "app-secret", "akvEndpoint": vault.url,
               "kek": {"kid": "pub-kek", "akvEndpoint": vault_host,
                       "maaEndpoint": "127.0.0.1:21348"}})
    );
    let (_, wrapped) = vault.secret("app-secret").unwrap();
    assert_eq!(
        private
            .decrypt_oaep(OaepHash::Sha256, &STANDARD.decode(&wrapped).unwrap())
            .unwrap()
            .as_slice(),
        b"a connection string"
    );
    // A KEK that does not exist is not created without a contract.
    let out = owner(
        &sb,
        &[
            "config",
            "wrap-secret",
            "--name",
            "x",
            "--value-file",
            "value.txt",
            "--secret-store",
            "kv",
            "--kek-secret-store",
            "kv",
            "--kek-name",
            "no-such-kek",
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no KEK 'no-such-kek'"));
}
