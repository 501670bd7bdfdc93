//! The clean room's OTLP/JSON telemetry read by OpenTelemetry's own protobuf definitions (PyPI
//! `opentelemetry-proto`, in the venv of `scripts/otel-venv.sh`): spans (one failed), gauges and
//! log records written through [`encfs_cleanroom::otel::Telemetry`] parse strictly as
//! `Export{Trace,Metrics,Logs}ServiceRequest`s, with the ids, times, names and services written.

use std::process::Command;
use std::time::{Duration, SystemTime};

use encfs_cleanroom::otel::{self, LogRecord, Severity, Span, Telemetry, TraceContext};
use serde_json::Value;

#[test]
fn opentelemetry_proto_reads_the_telemetry_files() {
    let python = std::env::var("ENCFS_OTLP_PYTHON").expect(
        "ENCFS_OTLP_PYTHON is not set: run the tests with scripts/test-all.sh, which creates the \
         virtual environment with opentelemetry-proto (scripts/otel-venv.sh) and sets it",
    );
    let dir = tempfile::tempdir().unwrap();
    let (context, root) = TraceContext::new_root();
    let platform = Telemetry::new(dir.path(), "cleanroom-platform", context);
    let mount = Telemetry::new(dir.path(), "pub-in-encfs-mount", context);
    let start = SystemTime::now();
    let end = start + Duration::from_millis(40);
    mount.span(&Span {
        name: "mount.start",
        start,
        end,
        error: None,
        attributes: vec![
            ("encfs.access_name", "pub-in".into()),
            ("encfs.read_write", false.into()),
            ("encfs.exit_code", 0i64.into()),
            ("ratio", 0.5.into()),
        ],
    });
    mount.span(&Span {
        name: "mount.serve",
        start: end,
        end: end + Duration::from_secs(1),
        error: Some("the mount ended with exit status: 1".into()),
        attributes: Vec::new(),
    });
    platform.span_with_id(
        &Span {
            name: "cleanroom.run",
            start,
            end: end + Duration::from_secs(2),
            error: None,
            attributes: vec![("encfs.contract_id", "collab".into())],
        },
        Some(root),
    );
    mount.gauges(&[
        (
            "encfs.mount.ready_duration",
            "ms",
            40.0,
            vec![("encfs.access_name", "pub-in".into())],
        ),
        ("encfs.mount.manifest.refused", "{blob}", 0.0, Vec::new()),
    ]);
    platform.logs(&[
        LogRecord {
            time: start,
            severity: Severity::Info,
            body: "encfs: pub-in mounted".into(),
        },
        LogRecord {
            time: end,
            severity: Severity::Error,
            body: "encfs: cannot \"quote\" \u{1f}".into(),
        },
    ]);

    let files = [otel::TRACES_FILE, otel::METRICS_FILE, otel::LOGS_FILE]
        .map(|f| dir.path().join(f).display().to_string());
    let out = Command::new(&python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/otlp_check.py"))
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "otlp_check.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let trace = &summary[&files[0]];
    assert_eq!(trace["items"], 3, "{summary}");
    assert_eq!(
        trace["names"],
        serde_json::json!(["cleanroom.run", "mount.serve", "mount.start"])
    );
    let trace_id: String = context
        .trace_id
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(trace["trace_ids"], serde_json::json!([trace_id]));
    assert_eq!(
        trace["services"],
        serde_json::json!(["cleanroom-platform", "pub-in-encfs-mount"])
    );
    assert_eq!(summary[&files[1]]["items"], 2, "{summary}");
    assert_eq!(summary[&files[2]]["items"], 2, "{summary}");
    assert_eq!(
        summary[&files[2]]["trace_ids"],
        serde_json::json!([trace_id])
    );
}
