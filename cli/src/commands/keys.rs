//! `encfs key …` and `encfs kek …`: DEK and KEK files.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use encfs_crypto::kek::{KekPrivateKey, KekPublicKey, KekSize};
use encfs_crypto::{DataKey, key_file};
use zeroize::Zeroizing;

use crate::args::{KekCommand, KeyCommand};

/// Loads a DEK, warning on stderr when the file is readable by others.
pub fn load_data_key(path: &Path) -> Result<DataKey> {
    let (key, warning) =
        key_file::read(path).with_context(|| format!("cannot load key {}", path.display()))?;
    if let Some(warning) = warning {
        eprintln!("encfs: warning: {}: {warning}", path.display());
    }
    Ok(key)
}

fn save_data_key(path: &Path, key: &DataKey, raw: bool) -> Result<()> {
    let written = if raw {
        key_file::write_raw(path, key)
    } else {
        key_file::write(path, key)
    };
    written.with_context(|| format!("cannot write key {}", path.display()))
}

fn read_secret(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    fs::read(path)
        .map(Zeroizing::new)
        .with_context(|| format!("cannot read {}", path.display()))
}

/// `encfs key …`
pub fn key(command: KeyCommand) -> Result<()> {
    match command {
        KeyCommand::Generate { out, raw } => {
            let key = DataKey::generate()?;
            save_data_key(&out, &key, raw)?;
            println!("{}\t{}", key.id(), out.display());
        }
        KeyCommand::Wrap {
            kek_public,
            key,
            out,
        } => {
            let public = KekPublicKey::from_pem(&read_secret(&kek_public)?)
                .with_context(|| format!("cannot load public KEK {}", kek_public.display()))?;
            let dek = load_data_key(&key)?;
            let wrapped = public
                .wrap(&dek)
                .with_context(|| format!("cannot wrap {}", key.display()))?;
            key_file::write_secret(&out, &wrapped)
                .with_context(|| format!("cannot write {}", out.display()))?;
        }
        KeyCommand::Unwrap {
            kek_private,
            input,
            out,
            raw,
        } => {
            let private = KekPrivateKey::from_pem(&read_secret(&kek_private)?)
                .with_context(|| format!("cannot load private KEK {}", kek_private.display()))?;
            let wrapped =
                fs::read(&input).with_context(|| format!("cannot read {}", input.display()))?;
            let dek = private.unwrap(&wrapped).with_context(|| {
                format!(
                    "cannot unwrap {} with {}",
                    input.display(),
                    kek_private.display()
                )
            })?;
            save_data_key(&out, &dek, raw)?;
            println!("{}\t{}", dek.id(), out.display());
        }
        KeyCommand::Id { key } => println!("{}", load_data_key(&key)?.id()),
    }
    Ok(())
}

/// `encfs kek …`
pub fn kek(command: KekCommand) -> Result<()> {
    let KekCommand::Generate {
        out_private,
        out_public,
        bits,
    } = command;
    let Some(size) = KekSize::from_bits(bits) else {
        bail!("--bits must be 2048, 3072 or 4096, not {bits}");
    };
    if out_public.exists() {
        bail!(
            "{} already exists; refusing to overwrite",
            out_public.display()
        );
    }
    let private = KekPrivateKey::generate(size)?;
    let public_pem = private.public_key().to_pem()?;
    key_file::write_secret(&out_private, private.to_pem()?.as_bytes())
        .with_context(|| format!("cannot write {}", out_private.display()))?;
    fs::write(&out_public, public_pem)
        .with_context(|| format!("cannot write {}", out_public.display()))?;
    Ok(())
}
