//! The mount launchers' volume status files (the reference's `mountpoint_utilities.py`):
//! `<dir>/<access>.volume.ready` holds `{"mount_path": "<path>"}` once the access point is
//! mounted, `<dir>/<access>.volume.error` holds `{"error_code": <exit code>}` when its mount
//! failed. The launcher waits for one or the other, bounded, before it starts an app or exports.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How often the status files are looked at while waiting.
const POLL: Duration = Duration::from_millis(50);

/// Why a mount is not available.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    /// The mount launcher wrote an error file.
    #[error(
        "Mount point for {access} is not available. The encfs mount exited with error : {code}"
    )]
    Failed {
        /// The access name.
        access: String,
        /// The error code from the file.
        code: String,
    },
    /// Neither file appeared in time.
    #[error("Mount point for {access} is not available: no {ready} within {waited:?}")]
    Timeout {
        /// The access name.
        access: String,
        /// The ready file waited for.
        ready: PathBuf,
        /// How long it waited.
        waited: Duration,
    },
    /// A status file is not what a mount launcher writes.
    #[error("Mount point for {access} is not available: {path} is malformed ({reason})")]
    Malformed {
        /// The access name.
        access: String,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The ready and error files of `access` in `dir`.
pub fn status_files(dir: &Path, access: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{access}.volume.ready")),
        dir.join(format!("{access}.volume.error")),
    )
}

fn read_json(access: &str, path: &Path) -> Result<Option<Value>, MountError> {
    let malformed = |reason: String| MountError::Malformed {
        access: access.to_owned(),
        path: path.to_owned(),
        reason,
    };
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| malformed(format!("not JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(malformed(e.to_string())),
    }
}

/// Looks once: `Some(mount path)` if mounted, an error if failed, `None` if not yet known.
pub fn check(dir: &Path, access: &str) -> Result<Option<PathBuf>, MountError> {
    let (ready, error) = status_files(dir, access);
    if let Some(value) = read_json(access, &error)? {
        let code = match &value["error_code"] {
            Value::Null => "unknown".to_owned(),
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        return Err(MountError::Failed {
            access: access.to_owned(),
            code,
        });
    }
    match read_json(access, &ready)? {
        Some(value) => match value["mount_path"].as_str() {
            Some(path) if !path.is_empty() => Ok(Some(PathBuf::from(path))),
            _ => Err(MountError::Malformed {
                access: access.to_owned(),
                path: ready,
                reason: "no mount_path".into(),
            }),
        },
        None => Ok(None),
    }
}

/// Waits up to `wait` for `access`'s mount; its mount path.
pub async fn wait_for_mount(
    dir: &Path,
    access: &str,
    wait: Duration,
) -> Result<PathBuf, MountError> {
    let start = Instant::now();
    loop {
        if let Some(path) = check(dir, access)? {
            return Ok(path);
        }
        if start.elapsed() >= wait {
            return Err(MountError::Timeout {
                access: access.to_owned(),
                ready: status_files(dir, access).0,
                waited: wait,
            });
        }
        tokio::time::sleep(POLL.min(wait)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_error_and_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("in.volume.ready"), r#"{"mount_path": "/mnt/in"}"#).unwrap();
        std::fs::write(d.join("bad.volume.error"), r#"{"error_code": 3}"#).unwrap();
        std::fs::write(d.join("odd.volume.ready"), "{").unwrap();
        assert_eq!(
            wait_for_mount(d, "in", Duration::ZERO).await.unwrap(),
            PathBuf::from("/mnt/in")
        );
        let failed = wait_for_mount(d, "bad", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(
            failed.to_string(),
            "Mount point for bad is not available. The encfs mount exited with error : 3"
        );
        assert!(matches!(
            wait_for_mount(d, "odd", Duration::ZERO).await,
            Err(MountError::Malformed { .. })
        ));
        let start = Instant::now();
        let late = wait_for_mount(d, "late", Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(late, MountError::Timeout { .. }), "{late}");
        assert!(start.elapsed() >= Duration::from_millis(200));
        // A mount that becomes ready while waiting.
        let path = d.to_owned();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            std::fs::write(path.join("soon.volume.ready"), r#"{"mount_path": "/m"}"#).unwrap();
        });
        assert_eq!(
            wait_for_mount(d, "soon", Duration::from_secs(5))
                .await
                .unwrap(),
            PathBuf::from("/m")
        );
        writer.await.unwrap();
    }
}
