//! Exporting telemetry: a recursive copy of a telemetry directory into a datasink's mount
//! (the reference's `shutil.copytree(src, dst, dirs_exist_ok=True)`): directories are merged,
//! files overwritten, symbolic links skipped (a link in the app's log directory must not make
//! the export copy a file from elsewhere).

use std::path::Path;

/// Copies the tree under `from` into `to`; a missing `from` copies nothing. Returns the number
/// of files copied.
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<u64> {
    let context = |path: &Path, e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
    };
    let entries = match std::fs::read_dir(from) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(context(from, e)),
    };
    std::fs::create_dir_all(to).map_err(|e| context(to, e))?;
    let mut copied = 0;
    for entry in entries {
        let entry = entry.map_err(|e| context(from, e))?;
        let kind = entry.file_type().map_err(|e| context(&entry.path(), e))?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copied += copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).map_err(|e| context(&target, e))?;
            copied += 1;
        }
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_overwrites_and_skips_links() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("from");
        let to = dir.path().join("to");
        std::fs::create_dir_all(from.join("sub")).unwrap();
        std::fs::write(from.join("app.log"), "new").unwrap();
        std::fs::write(from.join("sub/x"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", from.join("link")).unwrap();
        std::fs::create_dir_all(&to).unwrap();
        std::fs::write(to.join("app.log"), "old").unwrap();
        std::fs::write(to.join("kept"), "kept").unwrap();
        assert_eq!(copy_tree(&from, &to).unwrap(), 2);
        assert_eq!(std::fs::read_to_string(to.join("app.log")).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(to.join("sub/x")).unwrap(), "x");
        assert_eq!(std::fs::read_to_string(to.join("kept")).unwrap(), "kept");
        assert!(!to.join("link").exists());
        assert_eq!(copy_tree(&dir.path().join("none"), &to).unwrap(), 0);
    }
}
