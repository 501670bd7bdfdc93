//! Reading and writing data-key files.
//!
//! Two on-disk forms are accepted wherever a `--key FILE` is taken:
//!
//! * **raw**: exactly 32 bytes, the key itself. This is how the reference clean-room system stores
//!   its DEKs (`<datastore>.bin`).
//! * **text** (what encfs writes), line oriented, `#` comments allowed:
//!
//! ```text
//! # encfs data key (AES-256). Secret: keep this file private.
//! encfs-data-key-v1
//! id: 0123456789abcdef0123456789abcdef
//! key: <64 lower-case hex digits>
//! ```
//!
//! The `id` line is checked against the key on load, which catches a hand-edited or damaged file.
//! Files are created with mode 0600 and never overwrite an existing file (losing a key loses the
//! data). Loading a file that group or others can read returns a [`PermissionWarning`] for the
//! caller to print.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use zeroize::Zeroizing;

use crate::keys::{DATA_KEY_LEN, decode_hex};
use crate::{DataKey, Error, KeyId, Result};

/// First non-comment line of a text key file.
const TEXT_KEY_MAGIC: &str = "encfs-data-key-v1";
/// Refuse to read anything larger: a key file is under 200 bytes.
const MAX_KEY_FILE_LEN: u64 = 4096;

/// Serializes a key to the text form (the returned buffer zeroizes on drop).
pub fn encode_text(key: &DataKey) -> Zeroizing<String> {
    let mut hex = Zeroizing::new(String::with_capacity(DATA_KEY_LEN * 2));
    for byte in key.dangerous_bytes() {
        hex.push(char::from_digit(u32::from(byte >> 4), 16).expect("nibble"));
        hex.push(char::from_digit(u32::from(byte & 0xf), 16).expect("nibble"));
    }
    Zeroizing::new(format!(
        "# encfs data key (AES-256). Secret: keep this file private.\n{TEXT_KEY_MAGIC}\nid: {}\nkey: {}\n",
        key.id(),
        hex.as_str()
    ))
}

/// Parses a key file's contents in either the raw or the text form.
pub fn decode(contents: &[u8]) -> Result<DataKey> {
    if contents.len() == DATA_KEY_LEN {
        return DataKey::from_slice(contents);
    }
    let text = std::str::from_utf8(contents).map_err(|_| {
        Error::MalformedKeyFile(format!(
            "neither a raw 32-byte key ({} bytes) nor a text key file",
            contents.len()
        ))
    })?;
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'));
    if lines.next() != Some(TEXT_KEY_MAGIC) {
        return Err(Error::MalformedKeyFile(format!(
            "expected a raw 32-byte key or a text file starting with '{TEXT_KEY_MAGIC}'"
        )));
    }
    let (mut id, mut key) = (None, None);
    for line in lines {
        let (name, value) = line.split_once(':').ok_or_else(|| {
            Error::MalformedKeyFile(format!("expected 'name: value', found '{}'", redact(line)))
        })?;
        match name.trim() {
            "id" => id = Some(value.trim()),
            "key" => key = Some(Zeroizing::new(value.trim().to_owned())),
            other => return Err(Error::MalformedKeyFile(format!("unknown field '{other}'"))),
        }
    }
    let key_hex = key.ok_or_else(|| Error::MalformedKeyFile("missing 'key:' line".into()))?;
    let bytes = Zeroizing::new(
        decode_hex(&key_hex).ok_or_else(|| Error::MalformedKeyFile("'key:' is not hex".into()))?,
    );
    let key = DataKey::from_slice(&bytes)?;
    if let Some(id) = id {
        let recorded = KeyId::from_hex(id)
            .ok_or_else(|| Error::MalformedKeyFile("'id:' is not a 32-digit hex key id".into()))?;
        if recorded != key.id() {
            return Err(Error::MalformedKeyFile(format!(
                "'id: {recorded}' does not match the key (its id is {}): the file is damaged",
                key.id()
            )));
        }
    }
    Ok(key)
}

/// Keeps a malformed line out of error messages when it might hold key material.
fn redact(line: &str) -> String {
    if line.len() > 16 {
        format!("{}…", &line[..line.floor_char_boundary(16)])
    } else {
        line.to_owned()
    }
}

/// A key file others can read: still loaded, but the caller should warn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionWarning {
    /// The file's permission bits.
    pub mode: u32,
}

impl std::fmt::Display for PermissionWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "key file is readable by group or others (mode {:o}); run chmod 600 on it",
            self.mode & 0o777
        )
    }
}

/// Loads a data key from `path`, returning a warning when the file's mode is too open.
pub fn read(path: &Path) -> Result<(DataKey, Option<PermissionWarning>)> {
    let file = fs::File::open(path)?;
    let meta = file.metadata()?;
    if meta.len() > MAX_KEY_FILE_LEN {
        return Err(Error::MalformedKeyFile(format!(
            "{} bytes is too large for a key file",
            meta.len()
        )));
    }
    let mut contents = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    file.take(MAX_KEY_FILE_LEN).read_to_end(&mut contents)?;
    let key = decode(&contents)?;
    let mode = meta.permissions().mode();
    let warning = (mode & 0o077 != 0).then_some(PermissionWarning { mode });
    Ok((key, warning))
}

/// Writes secret bytes to a new file with mode 0600; never replaces an existing file. On failure
/// the partly written file is removed.
pub fn write_secret(path: &Path, contents: &[u8]) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    if let Err(error) = written {
        drop(file);
        let _ = fs::remove_file(path);
        return Err(error.into());
    }
    Ok(())
}

/// Writes `key` to a new file at `path` in the text form, mode 0600.
pub fn write(path: &Path, key: &DataKey) -> Result<()> {
    write_secret(path, encode_text(key).as_bytes())
}

/// Writes `key` as a raw 32-byte file (the reference system's form), mode 0600.
pub fn write_raw(path: &Path, key: &DataKey) -> Result<()> {
    write_secret(path, key.dangerous_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        let key = DataKey::generate().unwrap();
        let text = encode_text(&key);
        assert_eq!(decode(text.as_bytes()).unwrap(), key);
    }

    #[test]
    fn raw_32_bytes_accepted() {
        assert_eq!(decode(&[9; 32]).unwrap(), DataKey::from_bytes([9; 32]));
    }

    #[test]
    fn malformed_files_rejected() {
        let key = DataKey::from_bytes([1; 32]);
        let good = encode_text(&key).to_string();
        for bad in [
            String::new(),
            "hello".to_owned(),
            good.replace("encfs-data-key-v1", "encfs-data-key-v9"),
            good.replace("key: ", "key: zz"),
            good.replace("key: 01", "key: 02"),
            good.lines()
                .filter(|l| !l.starts_with("key"))
                .collect::<Vec<_>>()
                .join("\n"),
            good.clone() + "extra: 1\n",
        ] {
            assert!(
                matches!(decode(bad.as_bytes()), Err(Error::MalformedKeyFile(_))),
                "{bad:?}"
            );
        }
        let error = decode(good.replace("key: 01", "key: 02").as_bytes())
            .unwrap_err()
            .to_string();
        assert!(error.contains("damaged"), "{error}");
    }

    #[test]
    fn files_are_0600_not_overwritten_and_open_modes_warn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let key = DataKey::generate().unwrap();
        write(&path, &key).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (loaded, warning) = read(&path).unwrap();
        assert_eq!(loaded, key);
        assert_eq!(warning, None);
        assert!(
            write(&path, &DataKey::generate().unwrap()).is_err(),
            "must not overwrite"
        );
        assert_eq!(read(&path).unwrap().0, key);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read(&path).unwrap().1.is_some());
    }
}
