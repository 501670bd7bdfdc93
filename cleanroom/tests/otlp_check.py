"""Parses OTLP/JSON telemetry files (one Export*ServiceRequest per line) with OpenTelemetry's own
protobuf definitions (PyPI opentelemetry-proto), strictly: an unknown field, a wrong type or a bad
enum fails. As the OTLP/JSON specification says a receiver must, trace and span ids are read as
hex (protobuf's JSON mapping would read bytes as base64). Then checks what the protobuf types do
not: id lengths, non-zero times, end >= start. Prints, as JSON, per file the number of spans,
metric points and log records, the span names, the trace ids and the resources' service names.

usage: otlp_check.py FILE...   (the kind comes from the name: traces / metrics / logs)
"""
import base64
import json
import sys

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

ID_FIELDS = {"traceId": 16, "spanId": 8, "parentSpanId": 8}


def hex_ids_to_base64(value):
    """OTLP/JSON ids are hex; protobuf's JSON parser wants base64 for bytes."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in ID_FIELDS and isinstance(item, str):
                raw = bytes.fromhex(item)
                if len(raw) != ID_FIELDS[key]:
                    raise ValueError(f"{key} {item!r} is {len(raw)} bytes, not {ID_FIELDS[key]}")
                out[key] = base64.b64encode(raw).decode()
            else:
                out[key] = hex_ids_to_base64(item)
        return out
    if isinstance(value, list):
        return [hex_ids_to_base64(v) for v in value]
    return value


def services(resource):
    return [a.value.string_value for a in resource.attributes if a.key == "service.name"]


def check(path):
    kind = next(k for k in ("traces", "metrics", "logs") if k in path.rsplit("/", 1)[-1])
    message = {"traces": ExportTraceServiceRequest, "metrics": ExportMetricsServiceRequest,
               "logs": ExportLogsServiceRequest}[kind]
    summary = {"kind": kind, "items": 0, "names": [], "trace_ids": [], "services": []}
    with open(path) as lines:
        for number, line in enumerate(lines, 1):
            request = message()
            try:
                json_format.ParseDict(hex_ids_to_base64(json.loads(line)), request)
            except Exception as error:  # noqa: BLE001 - reported with the line
                raise SystemExit(f"{path}:{number}: not OTLP/JSON: {error}")
            if kind == "traces":
                for rs in request.resource_spans:
                    summary["services"] += services(rs.resource)
                    for ss in rs.scope_spans:
                        for span in ss.spans:
                            assert len(span.trace_id) == 16 and len(span.span_id) == 8, path
                            assert span.start_time_unix_nano > 0, (path, number)
                            assert span.end_time_unix_nano >= span.start_time_unix_nano, (path, number)
                            summary["items"] += 1
                            summary["names"].append(span.name)
                            summary["trace_ids"].append(span.trace_id.hex())
            elif kind == "metrics":
                for rm in request.resource_metrics:
                    summary["services"] += services(rm.resource)
                    for sm in rm.scope_metrics:
                        for metric in sm.metrics:
                            assert metric.WhichOneof("data") == "gauge", metric.name
                            for point in metric.gauge.data_points:
                                assert point.time_unix_nano > 0
                                summary["items"] += 1
                            summary["names"].append(metric.name)
            else:
                for rl in request.resource_logs:
                    summary["services"] += services(rl.resource)
                    for sl in rl.scope_logs:
                        for record in sl.log_records:
                            assert record.time_unix_nano > 0 and record.body.string_value
                            summary["items"] += 1
                            summary["trace_ids"].append(record.trace_id.hex())
    for key in ("names", "trace_ids", "services"):
        summary[key] = sorted(set(summary[key]))
    return summary


print(json.dumps({path: check(path) for path in sys.argv[1:]}))
