//! The app's stdout and stderr, appended to the log file in the shape of the reference's podman /
//! Docker `json-file` log driver: one JSON object per line,
//! `{"log":"<line>\n","stream":"stdout"|"stderr","time":"<RFC 3339, UTC, nanoseconds>"}`.
//!
//! One thread per stream drains its pipe (so a chatty app never blocks on a full pipe) and writes
//! each complete line as one `write` to the file opened `O_APPEND`, under a lock shared by the two
//! streams: entries interleave by line, never inside one. A line longer than
//! [`MAX_ENTRY_BYTES`] is cut into several entries, as Docker cuts at 16 KiB, so an app that never
//! writes a newline cannot make the host buffer without bound; the last entry of a stream that ends
//! without a newline has no `\n`, like Docker's. Bytes that are not UTF-8 are replaced (U+FFFD).

use std::fs::File;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The longest `log` value of one entry, in bytes of the app's output.
pub const MAX_ENTRY_BYTES: usize = 16 * 1024;

/// One line of the log file.
#[derive(Serialize)]
struct Entry<'a> {
    log: &'a str,
    stream: &'a str,
    time: String,
}

/// Formats `time` as RFC 3339 in UTC with nanoseconds: `2026-12-02T06:00:30.123456789Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let in_day = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60,
        since_epoch.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

/// Writes the entries of one stream.
struct StreamWriter {
    stream: &'static str,
    sink: Arc<Mutex<File>>,
}

impl StreamWriter {
    fn emit(&self, bytes: &[u8]) {
        let text = String::from_utf8_lossy(bytes);
        let entry = Entry {
            log: &text,
            stream: self.stream,
            time: rfc3339(SystemTime::now()),
        };
        let mut line = serde_json::to_vec(&entry).expect("an entry always serializes");
        line.push(b'\n');
        let mut file = self
            .sink
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // A failing log file must not stall the app: the pump keeps draining the pipe.
        let _ = file.write_all(&line);
    }
}

/// Splits a stream's bytes into entries: complete lines (with their `\n`), cut at
/// [`MAX_ENTRY_BYTES`], and the unterminated rest at the end.
fn pump(mut reader: impl Read, writer: &StreamWriter) {
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let read = match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        pending.extend_from_slice(&chunk[..read]);
        let mut start = 0;
        while let Some(newline) = pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + newline + 1;
            for piece in pending[start..end].chunks(MAX_ENTRY_BYTES) {
                writer.emit(piece);
            }
            start = end;
        }
        pending.drain(..start);
        while pending.len() >= MAX_ENTRY_BYTES {
            writer.emit(&pending[..MAX_ENTRY_BYTES]);
            pending.drain(..MAX_ENTRY_BYTES);
        }
    }
    if !pending.is_empty() {
        writer.emit(&pending);
    }
}

/// Starts the thread that copies `reader` (a pipe's read end) into `sink` as `stream` entries;
/// it ends at end-of-file, when every process of the sandbox has closed the pipe.
pub fn spawn_pump(
    reader: impl Read + Send + 'static,
    stream: &'static str,
    sink: Arc<Mutex<File>>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("sandbox-{stream}"))
        .spawn(move || pump(reader, &StreamWriter { stream, sink }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_in_utc_with_nanoseconds() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let leap_day = UNIX_EPOCH + Duration::new(951_782_400, 5);
        assert_eq!(rfc3339(leap_day), "2000-02-29T00:00:00.000000005Z");
        let new_years_eve = UNIX_EPOCH + Duration::new(1_798_761_599, 123_456_789);
        assert_eq!(rfc3339(new_years_eve), "2026-12-31T23:59:59.123456789Z");
    }

    fn entries(input: &[u8]) -> Vec<serde_json::Value> {
        let file = tempfile::NamedTempFile::new().unwrap();
        let sink = Arc::new(Mutex::new(file.reopen().unwrap()));
        pump(
            input,
            &StreamWriter {
                stream: "stderr",
                sink,
            },
        );
        std::fs::read_to_string(file.path())
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn lines_become_json_file_entries() {
        let found = entries(b"first\nsecond \xff\n\"quoted\" no newline");
        let logs: Vec<_> = found
            .iter()
            .map(|e| e["log"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            logs,
            ["first\n", "second \u{fffd}\n", "\"quoted\" no newline"]
        );
        assert!(found.iter().all(|e| e["stream"] == "stderr"));
        assert!(
            found
                .iter()
                .all(|e| e["time"].as_str().unwrap().ends_with('Z'))
        );
    }

    #[test]
    fn long_lines_are_cut() {
        let mut input = vec![b'a'; MAX_ENTRY_BYTES * 2 + 10];
        input.push(b'\n');
        let found = entries(&input);
        let lengths: Vec<_> = found
            .iter()
            .map(|e| e["log"].as_str().unwrap().len())
            .collect();
        assert_eq!(lengths, [MAX_ENTRY_BYTES, MAX_ENTRY_BYTES, 11]);
    }
}
