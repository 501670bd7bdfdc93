//! Azure credentials for the CLI: from files or the environment, never from the command line,
//! and handed to a re-executed child (`mount --daemon`, the mount's allocator restart) through
//! its environment rather than its argv.
//!
//! A process's command line is readable by every user of the machine (`ps`, `/proc/PID/cmdline`);
//! its environment only by its owner and root. So the value flags `--account-key`, `--sas-token`
//! and `--connection-string` are refused with a pointer to the file form, and a child gets the
//! resolved credential as `AZURE_STORAGE_*` variables, with the file flags and any SAS in the
//! store URL taken off its argv (the parent already read the files: a `<(…)` pipe could not be
//! read twice).

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use base64::Engine;
use encfs_store::azure::{ContainerUrl, Credentials, parse_connection_string};
use zeroize::Zeroizing;

use crate::args::StoreAccess;

/// The file flags, each taking a path.
const FILE_FLAGS: [&str; 3] = [
    "--connection-string-file",
    "--account-key-file",
    "--sas-token-file",
];
/// The environment variables that carry Azure credentials ([`encfs_store::azure`]).
const CREDENTIAL_VARIABLES: [&str; 4] = [
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
];

/// Refuses a secret given as a flag value (it is already in this process's command line; saying
/// so is all that is left to do) — without repeating the value.
fn refuse_values(access: &StoreAccess) -> Result<()> {
    let given = [
        (
            access.connection_string.is_some(),
            "--connection-string",
            "--connection-string-file FILE or AZURE_STORAGE_CONNECTION_STRING",
        ),
        (
            access.account_key.is_some(),
            "--account-key",
            "--account-key-file FILE or AZURE_STORAGE_ACCOUNT + AZURE_STORAGE_KEY",
        ),
        (
            access.sas_token.is_some(),
            "--sas-token",
            "--sas-token-file FILE or AZURE_STORAGE_SAS_TOKEN",
        ),
    ];
    if let Some((_, flag, instead)) = given.iter().find(|(given, ..)| *given) {
        bail!(
            "{flag} puts a secret on the command line, where every user of this machine can read \
             it (ps, /proc/PID/cmdline); use {instead} (a file readable only by you)"
        );
    }
    Ok(())
}

/// A secret from a file: its text without surrounding white space; an empty file is an error.
fn read_secret(path: &Path, what: &str) -> Result<Zeroizing<String>> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the {what} file {}", path.display()))?,
    );
    let trimmed = Zeroizing::new(text.trim().to_owned());
    if trimmed.is_empty() {
        bail!("the {what} file {} is empty", path.display());
    }
    Ok(trimmed)
}

/// The credentials the file flags give for `address` (`None`: none given; the store then looks
/// at the URL's SAS and the environment).
pub fn from_files(access: &StoreAccess, address: &str) -> Result<Option<Credentials>> {
    refuse_values(access)?;
    let given = [
        access.connection_string_file.is_some(),
        access.account_key_file.is_some(),
        access.sas_token_file.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        bail!("give only one of {}", FILE_FLAGS.join(", "));
    }
    if let Some(path) = &access.connection_string_file {
        let text = read_secret(path, "connection string")?;
        let (credentials, _) = parse_connection_string(&text)
            .with_context(|| format!("connection string in {}", path.display()))?;
        return Ok(Some(credentials));
    }
    if let Some(path) = &access.account_key_file {
        let account = ContainerUrl::parse(address)
            .context("--account-key-file needs an Azure URL (the account comes from it)")?
            .account;
        let key = read_secret(path, "account key")?;
        let credentials = Credentials::shared_key(&account, &key)
            .with_context(|| format!("account key in {}", path.display()))?;
        return Ok(Some(credentials));
    }
    if let Some(path) = &access.sas_token_file {
        let sas = read_secret(path, "SAS token")?;
        return Ok(Some(Credentials::Sas(Zeroizing::new(
            sas.trim_start_matches('?').to_owned(),
        ))));
    }
    Ok(None)
}

/// A command that re-runs this program with `args` (this process's arguments, minus whatever the
/// caller dropped), carrying no secret on its argv: the file flags are removed, a SAS in a store
/// URL is cut off it, and the credential in force for `address` travels in the child's
/// environment instead.
pub fn child_command(
    program: &Path,
    args: impl IntoIterator<Item = OsString>,
    access: &StoreAccess,
    address: &str,
) -> Result<Command> {
    let mut command = Command::new(program);
    let mut sas_in_url: Option<Zeroizing<String>> = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        if FILE_FLAGS.contains(&text.as_ref()) {
            args.next();
            continue;
        }
        if FILE_FLAGS
            .iter()
            .any(|flag| text.starts_with(&format!("{flag}=")))
        {
            continue;
        }
        if (text.starts_with("http://") || text.starts_with("https://"))
            && let Some((url, query)) = text.split_once('?')
        {
            sas_in_url = Some(Zeroizing::new(query.to_owned()));
            command.arg(url);
            continue;
        }
        command.arg(arg);
    }
    // Precedence as in the store: a SAS in the URL, then the files, then the environment (which
    // the child inherits as it is).
    let credentials = match sas_in_url {
        Some(sas) => Some(Credentials::Sas(sas)),
        None => from_files(access, address)?,
    };
    match credentials {
        Some(Credentials::SharedKey { account, key }) => {
            clear_credential_variables(&mut command);
            let key = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*key));
            command
                .env("AZURE_STORAGE_ACCOUNT", account)
                .env("AZURE_STORAGE_KEY", key.as_str());
        }
        Some(Credentials::Sas(sas)) => {
            clear_credential_variables(&mut command);
            command.env("AZURE_STORAGE_SAS_TOKEN", sas.as_str());
        }
        Some(Credentials::ManagedIdentity { .. } | Credentials::Anonymous) | None => {}
    }
    Ok(command)
}

fn clear_credential_variables(command: &mut Command) {
    for variable in CREDENTIAL_VARIABLES {
        command.env_remove(variable);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> StoreAccess {
        StoreAccess {
            connection_string_file: None,
            account_key_file: None,
            sas_token_file: None,
            connection_string: None,
            account_key: None,
            sas_token: None,
            request_timeout: std::time::Duration::from_secs(60),
        }
    }

    fn argv(command: &Command) -> Vec<String> {
        command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn env(command: &Command, name: &str) -> Option<String> {
        command
            .get_envs()
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
    }

    #[test]
    fn value_flags_are_refused_without_echoing_the_value() {
        let mut given = access();
        given.account_key = Some("c2VjcmV0LWtleQ==".into());
        let error = from_files(&given, "https://a.blob.core.windows.net/c")
            .unwrap_err()
            .to_string();
        assert!(error.contains("--account-key-file"), "{error}");
        assert!(!error.contains("c2VjcmV0"), "{error}");
    }

    #[test]
    fn children_get_secrets_in_their_environment_only() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("key");
        std::fs::write(&key_file, "c2VjcmV0LWtleQ==\n").unwrap();
        let mut given = access();
        given.account_key_file = Some(key_file.clone());
        let url = "http://127.0.0.1:1/acct/cont";
        let args = [
            "mount",
            url,
            "/mnt",
            "--account-key-file",
            key_file.to_str().unwrap(),
        ]
        .map(OsString::from);
        let command = child_command(Path::new("encfs"), args, &given, url).unwrap();
        assert_eq!(argv(&command), ["mount", url, "/mnt"]);
        assert_eq!(
            env(&command, "AZURE_STORAGE_KEY").as_deref(),
            Some("c2VjcmV0LWtleQ==")
        );
        assert_eq!(
            env(&command, "AZURE_STORAGE_ACCOUNT").as_deref(),
            Some("acct")
        );
        // A SAS in the URL comes off the argv and wins over the files.
        let with_sas = format!("{url}?sv=1&sig=s3cret");
        let args = ["mount", with_sas.as_str(), "/mnt"].map(OsString::from);
        let command = child_command(Path::new("encfs"), args, &given, &with_sas).unwrap();
        assert_eq!(argv(&command), ["mount", url, "/mnt"]);
        assert_eq!(
            env(&command, "AZURE_STORAGE_SAS_TOKEN").as_deref(),
            Some("sv=1&sig=s3cret")
        );
        assert!(
            command
                .get_envs()
                .any(|(k, v)| k == "AZURE_STORAGE_KEY" && v.is_none()),
            "other credential variables are cleared"
        );
    }
}
