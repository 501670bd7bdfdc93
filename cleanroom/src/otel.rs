//! OpenTelemetry for the clean room's infrastructure: traces, metrics and logs written in the
//! OpenTelemetry Protocol's JSON encoding (OTLP/JSON, `opentelemetry-proto` v1), one
//! `Export{Trace,Metrics,Logs}ServiceRequest` per line, as the OpenTelemetry Collector's file
//! exporter writes them, into `<telemetry>/infrastructure/{traces,metrics,logs}.otlp.jsonl`
//! (each opened once per [`Telemetry`], in append mode).
//!
//! The reference runs an otel-collector container that the sidecars export to; the local clean
//! room has no collector: each part appends its own records (one `write(2)` of one line, on a
//! file opened with `O_APPEND`, so the processes of a clean room never interleave within a
//! line), and `exportTelemetry` copies the files into the `infrastructure-telemetry` datasink,
//! where any OTLP/JSON reader (the Collector's `otlpjsonfile` receiver) takes them.
//!
//! Every part of one clean room shares one trace: `encfs cleanroom run` draws the trace id and
//! its root span id and hands them to each container in the W3C `TRACEPARENT` variable (the
//! OpenTelemetry convention for propagation through the environment); a part's spans are
//! children of that root. Encoding as OTLP/JSON specifies: trace and span ids in lower-case hex,
//! times as decimal strings of nanoseconds since the epoch, enums as integers, 64-bit integers
//! as strings. Telemetry never fails the work it describes: a file that cannot be written is
//! reported once on stderr.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value, json};

/// The environment variable that names the telemetry volume (as the reference's containers get it).
pub const TELEMETRY_ENV: &str = "TELEMETRY_MOUNT_PATH";
/// The W3C trace-context variable that carries the clean room's trace into each container.
pub const TRACEPARENT_ENV: &str = "TRACEPARENT";
/// The spans' file, under `<telemetry>/infrastructure`.
pub const TRACES_FILE: &str = "traces.otlp.jsonl";
/// The metrics' file.
pub const METRICS_FILE: &str = "metrics.otlp.jsonl";
/// The log records' file.
pub const LOGS_FILE: &str = "logs.otlp.jsonl";
/// The instrumentation scope every record names.
const SCOPE: &str = "encfs.cleanroom";

/// `SPAN_KIND_INTERNAL`.
const SPAN_KIND_INTERNAL: u8 = 1;
/// `STATUS_CODE_OK` / `STATUS_CODE_ERROR`.
const STATUS_OK: u8 = 1;
const STATUS_ERROR: u8 = 2;

/// One attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    /// `stringValue`.
    Str(String),
    /// `intValue` (a decimal string on the wire).
    Int(i64),
    /// `boolValue`.
    Bool(bool),
    /// `doubleValue`.
    Double(f64),
}

impl From<&str> for AttrValue {
    fn from(v: &str) -> Self {
        Self::Str(v.to_owned())
    }
}
impl From<String> for AttrValue {
    fn from(v: String) -> Self {
        Self::Str(v)
    }
}
impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}
impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}
impl From<f64> for AttrValue {
    fn from(v: f64) -> Self {
        Self::Double(v)
    }
}

/// Key–value attributes, in order.
pub type Attributes = Vec<(&'static str, AttrValue)>;

fn any_value(value: &AttrValue) -> Value {
    match value {
        AttrValue::Str(s) => json!({"stringValue": s}),
        AttrValue::Int(i) => json!({"intValue": i.to_string()}),
        AttrValue::Bool(b) => json!({"boolValue": b}),
        AttrValue::Double(d) => json!({"doubleValue": d}),
    }
}

fn key_values<'a>(attributes: impl IntoIterator<Item = (&'a str, &'a AttrValue)>) -> Value {
    Value::Array(
        attributes
            .into_iter()
            .map(|(key, value)| json!({"key": key, "value": any_value(value)}))
            .collect(),
    )
}

/// Nanoseconds since the epoch, as OTLP/JSON writes a `fixed64`.
fn unix_nanos(time: SystemTime) -> String {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
        .to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random<const N: usize>() -> [u8; N] {
    let mut out = [0; N];
    // An all-zero id is invalid in OTLP; ring's generator failing is not expected.
    while out.iter().all(|&b| b == 0) {
        let _ = SystemRandom::new().fill(&mut out);
    }
    out
}

/// A trace and the span new spans are children of, as carried by `TRACEPARENT`
/// (`00-<32 hex trace id>-<16 hex parent id>-01`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace.
    pub trace_id: [u8; 16],
    /// The parent span, if any.
    pub parent: Option<[u8; 8]>,
}

impl TraceContext {
    /// A new trace with a root span id drawn for its root: `(context for children, root id)`.
    pub fn new_root() -> (Self, [u8; 8]) {
        let root = random::<8>();
        (
            Self {
                trace_id: random::<16>(),
                parent: Some(root),
            },
            root,
        )
    }

    /// The trace of `$TRACEPARENT`, or a new one when it is unset or not a trace context.
    pub fn from_env() -> Self {
        std::env::var(TRACEPARENT_ENV)
            .ok()
            .and_then(|v| Self::parse(&v))
            .unwrap_or_else(|| Self::new_root().0)
    }

    /// The `TRACEPARENT` value (version 00, sampled).
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-01",
            hex(&self.trace_id),
            hex(&self.parent.unwrap_or([0; 8]))
        )
    }

    /// Parses a `TRACEPARENT` value; `None` for anything but version 00 with non-zero ids.
    pub fn parse(value: &str) -> Option<Self> {
        let parts: Vec<&str> = value.trim().split('-').collect();
        let [version, trace, parent, _flags] = parts.as_slice() else {
            return None;
        };
        let decode = |text: &str, out: &mut [u8]| -> Option<()> {
            if text.len() != out.len() * 2 {
                return None;
            }
            for (i, byte) in out.iter_mut().enumerate() {
                *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
            }
            Some(())
        };
        let (mut trace_id, mut parent_id) = ([0; 16], [0; 8]);
        decode(trace, &mut trace_id)?;
        decode(parent, &mut parent_id)?;
        if *version != "00" || trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            parent: Some(parent_id),
        })
    }
}

/// Log severities (OTLP `SeverityNumber`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// 9.
    Info,
    /// 13.
    Warn,
    /// 17.
    Error,
}

impl Severity {
    fn number(self) -> u8 {
        match self {
            Self::Info => 9,
            Self::Warn => 13,
            Self::Error => 17,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Self::Info => "INFO",
            Self::Warn => "WARN",
            Self::Error => "ERROR",
        }
    }

    /// A guess from a log line's words, as a filelog receiver's severity parser would make.
    pub fn of_line(line: &str) -> Self {
        let lower = line.to_ascii_lowercase();
        if lower.contains("error") || lower.contains("failed") || lower.contains("cannot") {
            Self::Error
        } else if lower.contains("warning") || lower.contains("refused") {
            Self::Warn
        } else {
            Self::Info
        }
    }
}

/// One log record.
#[derive(Clone, Debug)]
pub struct LogRecord {
    /// When it happened.
    pub time: SystemTime,
    /// How severe.
    pub severity: Severity,
    /// The text.
    pub body: String,
}

/// A span finished by [`Telemetry::span`].
#[derive(Clone, Debug)]
pub struct Span {
    /// Its name.
    pub name: &'static str,
    /// Start.
    pub start: SystemTime,
    /// End.
    pub end: SystemTime,
    /// Whether it succeeded (`STATUS_CODE_OK`) or not (`STATUS_CODE_ERROR`, with `message`).
    pub error: Option<String>,
    /// Its attributes.
    pub attributes: Attributes,
}

/// One part's telemetry: its resource (`service.name`, …), the trace it belongs to, and the
/// directory of the three files.
#[derive(Debug)]
pub struct Telemetry {
    dir: PathBuf,
    resource: Value,
    context: TraceContext,
    warned: AtomicBool,
    /// The files opened so far (`O_APPEND`), by name: opened once, not per record.
    files: std::sync::Mutex<Vec<(&'static str, std::fs::File)>>,
}

impl Telemetry {
    /// Telemetry of `service` (the container's name) into `dir`, in trace `context`.
    pub fn new(dir: &Path, service: &str, context: TraceContext) -> Self {
        let pid = AttrValue::Int(i64::from(std::process::id()));
        let name = AttrValue::Str(service.to_owned());
        let version = AttrValue::Str(env!("CARGO_PKG_VERSION").to_owned());
        let resource = json!({"attributes": key_values([
            ("service.name", &name),
            ("service.namespace", &AttrValue::Str("encfs-cleanroom".into())),
            ("service.version", &version),
            ("process.pid", &pid),
        ])});
        Self {
            dir: dir.to_path_buf(),
            resource,
            context,
            warned: AtomicBool::new(false),
            files: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The telemetry a container gets from its environment: `$TELEMETRY_MOUNT_PATH/
    /// infrastructure`, in the trace of `$TRACEPARENT` (a new trace without one); `None` outside
    /// a clean room (no `TELEMETRY_MOUNT_PATH`).
    pub fn from_env(service: &str) -> Option<Self> {
        let root = std::env::var_os(TELEMETRY_ENV)?;
        Some(Self::new(
            &Path::new(&root).join("infrastructure"),
            service,
            TraceContext::from_env(),
        ))
    }

    /// The trace this telemetry writes into.
    pub fn context(&self) -> TraceContext {
        self.context
    }

    fn scope() -> Value {
        json!({"name": SCOPE, "version": env!("CARGO_PKG_VERSION")})
    }

    fn append(&self, file: &'static str, record: &Value) {
        let mut line = record.to_string();
        line.push('\n');
        let path = self.dir.join(file);
        let mut files = self
            .files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let written = match files.iter_mut().find(|(name, _)| *name == file) {
            Some((_, handle)) => handle.write_all(line.as_bytes()),
            None => std::fs::create_dir_all(&self.dir)
                .and_then(|()| {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                })
                .and_then(|mut handle| {
                    let written = handle.write_all(line.as_bytes());
                    files.push((file, handle));
                    written
                }),
        };
        if let Err(e) = written
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            eprintln!(
                "encfs: warning: cannot write telemetry to {}: {e}",
                path.display()
            );
        }
    }

    /// Writes a finished span (child of the context's parent) with the given id, or a new one;
    /// returns its id.
    pub fn span_with_id(&self, span: &Span, id: Option<[u8; 8]>) -> [u8; 8] {
        let id = id.unwrap_or_else(random::<8>);
        let mut body = json!({
            "traceId": hex(&self.context.trace_id),
            "spanId": hex(&id),
            "name": span.name,
            "kind": SPAN_KIND_INTERNAL,
            "startTimeUnixNano": unix_nanos(span.start),
            "endTimeUnixNano": unix_nanos(span.end),
            "attributes": key_values(span.attributes.iter().map(|(k, v)| (*k, v))),
            "status": match &span.error {
                None => json!({"code": STATUS_OK}),
                Some(message) => json!({"code": STATUS_ERROR, "message": message}),
            },
        });
        if let Some(parent) = self.context.parent.filter(|p| *p != id) {
            body["parentSpanId"] = json!(hex(&parent));
        }
        self.append(
            TRACES_FILE,
            &json!({"resourceSpans": [{
                "resource": self.resource,
                "scopeSpans": [{"scope": Self::scope(), "spans": [body]}],
            }]}),
        );
        id
    }

    /// Writes a finished span; returns its id.
    pub fn span(&self, span: &Span) -> [u8; 8] {
        self.span_with_id(span, None)
    }

    /// Writes gauges measured now: `(name, unit, value, attributes)` each.
    pub fn gauges(&self, gauges: &[(&str, &str, f64, Attributes)]) {
        let now = unix_nanos(SystemTime::now());
        let metrics: Vec<Value> = gauges
            .iter()
            .map(|(name, unit, value, attributes)| {
                json!({"name": name, "unit": unit, "gauge": {"dataPoints": [{
                    "timeUnixNano": now,
                    "asDouble": value,
                    "attributes": key_values(attributes.iter().map(|(k, v)| (*k, v))),
                }]}})
            })
            .collect();
        self.append(
            METRICS_FILE,
            &json!({"resourceMetrics": [{
                "resource": self.resource,
                "scopeMetrics": [{"scope": Self::scope(), "metrics": metrics}],
            }]}),
        );
    }

    /// Writes log records, in the context's trace.
    pub fn logs(&self, records: &[LogRecord]) {
        if records.is_empty() {
            return;
        }
        let observed = unix_nanos(SystemTime::now());
        let trace = hex(&self.context.trace_id);
        let records: Vec<Value> = records
            .iter()
            .map(|r| {
                let mut record = json!({
                    "timeUnixNano": unix_nanos(r.time),
                    "observedTimeUnixNano": observed,
                    "severityNumber": r.severity.number(),
                    "severityText": r.severity.text(),
                    "body": {"stringValue": r.body},
                    "traceId": trace,
                });
                if let Some(parent) = self.context.parent {
                    record["spanId"] = json!(hex(&parent));
                }
                record
            })
            .collect();
        self.append(
            LOGS_FILE,
            &json!({"resourceLogs": [{
                "resource": self.resource,
                "scopeLogs": [{"scope": Self::scope(), "logRecords": records}],
            }]}),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn lines(dir: &Path, file: &str) -> Vec<Value> {
        std::fs::read_to_string(dir.join(file))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn is_hex(v: &Value, len: usize) -> bool {
        v.as_str()
            .is_some_and(|s| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    #[test]
    fn traceparent_round_trips_and_bad_values_are_refused() {
        let (context, root) = TraceContext::new_root();
        assert_eq!(context.parent, Some(root));
        let text = context.traceparent();
        assert_eq!(text.len(), 55);
        assert_eq!(TraceContext::parse(&text), Some(context));
        for bad in [
            "",
            "00-00000000000000000000000000000000-0000000000000001-01",
            "00-00000000000000000000000000000001-0000000000000000-01",
            "01-00000000000000000000000000000001-0000000000000001-01",
            "00-0000000000000000000000000000001-0000000000000001-01",
            "00-zz000000000000000000000000000001-0000000000000001-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn spans_metrics_and_logs_are_otlp_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (context, root) = TraceContext::new_root();
        let telemetry = Telemetry::new(dir.path(), "pub-in-encfs-mount", context);
        let start = SystemTime::now();
        let end = start + Duration::from_millis(12);
        let child = telemetry.span(&Span {
            name: "mount.start",
            start,
            end,
            error: None,
            attributes: vec![("encfs.access_name", "pub-in".into()), ("n", 3i64.into())],
        });
        telemetry.span(&Span {
            name: "mount.failed",
            start,
            end,
            error: Some("no key".into()),
            attributes: Vec::new(),
        });
        telemetry.gauges(&[(
            "encfs.mount.ready_duration",
            "ms",
            12.5,
            vec![("ok", true.into())],
        )]);
        telemetry.logs(&[LogRecord {
            time: start,
            severity: Severity::of_line("encfs: cannot open x"),
            body: "encfs: cannot open x".into(),
        }]);

        let spans = lines(dir.path(), TRACES_FILE);
        assert_eq!(spans.len(), 2);
        let resource = &spans[0]["resourceSpans"][0]["resource"]["attributes"];
        assert_eq!(resource[0]["key"], "service.name");
        assert_eq!(resource[0]["value"]["stringValue"], "pub-in-encfs-mount");
        assert!(resource[3]["value"]["intValue"].is_string());
        let span = &spans[0]["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], hex(&context.trace_id));
        assert!(is_hex(&span["traceId"], 32) && is_hex(&span["spanId"], 16));
        assert_eq!(span["spanId"], hex(&child));
        assert_eq!(span["parentSpanId"], hex(&root));
        assert_eq!(span["kind"], 1);
        assert_eq!(span["status"]["code"], 1);
        let (s, e) = (
            span["startTimeUnixNano"].as_str().unwrap(),
            span["endTimeUnixNano"].as_str().unwrap(),
        );
        assert_eq!(
            e.parse::<u128>().unwrap() - s.parse::<u128>().unwrap(),
            12_000_000
        );
        assert_eq!(span["attributes"][1]["value"]["intValue"], "3");
        let failed = &spans[1]["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(failed["status"], json!({"code": 2, "message": "no key"}));

        let metrics = lines(dir.path(), METRICS_FILE);
        let metric = &metrics[0]["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0];
        assert_eq!(metric["name"], "encfs.mount.ready_duration");
        assert_eq!(metric["gauge"]["dataPoints"][0]["asDouble"], 12.5);
        assert_eq!(
            metric["gauge"]["dataPoints"][0]["attributes"][0]["value"]["boolValue"],
            true
        );

        let logs = lines(dir.path(), LOGS_FILE);
        let record = &logs[0]["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0];
        assert_eq!(record["severityNumber"], 17);
        assert_eq!(record["body"]["stringValue"], "encfs: cannot open x");
        assert_eq!(record["spanId"], hex(&root));
    }

    #[test]
    fn an_unwritable_directory_does_not_fail_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"").unwrap();
        let telemetry = Telemetry::new(&file.join("below"), "x", TraceContext::new_root().0);
        telemetry.gauges(&[("m", "1", 1.0, Vec::new())]);
        telemetry.gauges(&[("m", "1", 1.0, Vec::new())]);
        assert!(telemetry.warned.load(Ordering::Relaxed));
    }
}
