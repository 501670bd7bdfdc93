#!/usr/bin/env bash
# README command 2: installs what the tests need, then runs every test in the workspace.
#
# Needs root (as on the project's machines) for apt-get and the FUSE mount tests. Installs: openssl
# (KEK interop tests), fuse3 (the kernel-mount tests), age, rclone, gocryptfs, fio and GNU time
# (benchmark peers and driver), Python's `cryptography` for the independent
# EBF reader in crypto/tests/vectors/verify_ebf.py, and the Azurite emulator from the npm registry
# (into target/azurite), which it starts on 127.0.0.1 for the Azure Blob tests and stops at exit;
# and three Python venvs from PyPI: CCF's tools (target/ccf-venv), the Azure SDK (target/kv-venv)
# and OpenTelemetry's protobuf definitions (target/otel-venv).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pair in openssl:openssl age:age fusermount3:fuse3 rclone:rclone /usr/bin/time:time gocryptfs:gocryptfs fio:fio; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair##*:}")
done
# The governance tests' venv (scripts/ccf-venv.sh) needs ensurepip, which Debian ships separately.
python3 -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if ((${#need_apt[@]})); then
  echo "== installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
python3 -c 'import cryptography' 2>/dev/null || python3 -m pip install -q cryptography
# azure-storage-blob mints the SAS that the rclone peer needs for Azurite in the benchmarks.
python3 -c 'import azure.storage.blob' 2>/dev/null || python3 -m pip install -q azure-storage-blob
# matplotlib draws the mount benchmark's plot (benches/mount_vs_peers.sh).
python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install -q matplotlib

azurite_dir=$PWD/target/azurite
if [[ ! -x $azurite_dir/node_modules/.bin/azurite-blob ]]; then
  echo "== installing Azurite (npm azurite@3)"
  mkdir -p "$azurite_dir"
  npm install --silent --no-audit --no-fund --prefix "$azurite_dir" azurite@3 >/dev/null
fi
port=${ENCFS_AZURITE_PORT:-10000}
data=$(mktemp -d)
"$azurite_dir/node_modules/.bin/azurite-blob" --location "$data" --blobHost 127.0.0.1 --blobPort "$port" \
  --skipApiVersionCheck --disableTelemetry --silent >"$data/azurite.log" 2>&1 &
azurite_pid=$!
trap 'kill $azurite_pid 2>/dev/null; wait $azurite_pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
  kill -0 $azurite_pid 2>/dev/null || { cat "$data/azurite.log"; echo "Azurite failed to start" >&2; exit 1; }
  sleep 0.2
done
export ENCFS_AZURITE_URL=http://127.0.0.1:$port/devstoreaccount1
# The mount tests need the FUSE device (present on these machines; load the module if not).
[[ -e /dev/fuse ]] || modprobe fuse 2>/dev/null || true

# governance: CCF's own Python tools (PyPI `ccf`) for governance/tests/ccf_python.rs, in a venv
# (target/ccf-venv) because they need cryptography < 47.
ENCFS_CCF_PYTHON=$(scripts/ccf-venv.sh)
export ENCFS_CCF_PYTHON
# clean room: OpenTelemetry's protobuf definitions (PyPI opentelemetry-proto) read the clean
# room's OTLP/JSON telemetry in cleanroom/tests/otel_python.rs, in a venv (target/otel-venv).
ENCFS_OTLP_PYTHON=$(scripts/otel-venv.sh)
export ENCFS_OTLP_PYTHON
# key vault: the Azure SDK for Python (azure-keyvault-keys, -secrets, azure-identity) as the real
# client of keyvault/tests/azure_sdk.rs, in its own venv (target/kv-venv).
ENCFS_KEYVAULT_PYTHON=$(scripts/keyvault-venv.sh)
export ENCFS_KEYVAULT_PYTHON

echo "== cargo test --workspace"
if cargo nextest --version >/dev/null 2>&1; then
  # (No doc tests exist yet; add `cargo test --doc` here when one does.)
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked
fi
