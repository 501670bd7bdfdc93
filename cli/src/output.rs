//! Output files that appear only when complete, and progress bars that appear only on a TTY.
//!
//! Every command that writes a data file writes it under a temporary name in the destination's
//! directory and renames it into place after the last byte is written (and, by default, synced),
//! so a failed or interrupted `decrypt` never leaves a partial file that looks complete.

use std::fs::{File, Metadata};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use tempfile::NamedTempFile;

/// Files smaller than this finish too fast for a progress bar to help.
const PROGRESS_MIN_BYTES: u64 = 64 << 20;

/// A file being written under a temporary name (mode 0600); removed unless committed.
pub struct AtomicOutput {
    temp: NamedTempFile,
    path: PathBuf,
}

impl AtomicOutput {
    /// Creates the temporary file next to `path`.
    pub fn create(path: &Path) -> Result<Self> {
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".encfs-partial")
            .tempfile_in(dir)
            .with_context(|| format!("cannot create output in {}", dir.display()))?;
        Ok(Self {
            temp,
            path: path.to_owned(),
        })
    }

    /// The open temporary file.
    pub fn file(&mut self) -> &mut File {
        self.temp.as_file_mut()
    }

    /// Syncs (unless `fsync` is false) and renames the file into place.
    pub fn commit(self, fsync: bool) -> Result<()> {
        if fsync {
            self.temp
                .as_file()
                .sync_all()
                .with_context(|| format!("cannot sync {}", self.path.display()))?;
        }
        let path = self.path;
        self.temp
            .persist(&path)
            .map_err(|e| e.error)
            .with_context(|| format!("cannot rename output into {}", path.display()))?;
        Ok(())
    }
}

/// A byte-count progress bar on stderr when it is a terminal and the job is large; hidden otherwise.
pub fn progress_bar(total: u64, label: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() || total < PROGRESS_MIN_BYTES {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(label.to_owned());
    bar
}

/// Opens an input file and reads its metadata, with the path in any error.
pub fn open_input(path: &Path) -> Result<(File, Metadata)> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let metadata = file
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?;
    Ok((file, metadata))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn uncommitted_output_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        {
            let mut output = AtomicOutput::create(&path).unwrap();
            output.file().write_all(b"partial").unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let mut output = AtomicOutput::create(&path).unwrap();
        output.file().write_all(b"done").unwrap();
        output.commit(true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"done");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
