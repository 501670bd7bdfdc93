#!/usr/bin/env bash
# Creates (once) the Python virtual environment with OpenTelemetry's own protobuf definitions
# (PyPI `opentelemetry-proto`), which cleanroom/tests/otlp_check.py uses to parse the clean
# room's OTLP/JSON telemetry as a real OTLP reader would (cleanroom/tests/otel_python.rs).
# Idempotent. Prints the venv's python path on stdout; the test command exports it as
# ENCFS_OTLP_PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${ENCFS_OTLP_VENV:-$PWD/target/otel-venv}
check='import opentelemetry.proto.collector.trace.v1.trace_service_pb2, google.protobuf.json_format'
if ! "$venv/bin/python" -c "$check" 2>/dev/null; then
  echo "== creating $venv (pip: opentelemetry-proto)" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check opentelemetry-proto >&2
  "$venv/bin/python" -c "$check" >&2
fi
echo "$venv/bin/python"
