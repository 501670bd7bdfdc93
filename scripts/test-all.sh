#!/usr/bin/env bash
# README command 2: installs what the tests need, then runs every test in the workspace.
#
# Needs root (as on the project's machines) for apt-get. Installs: openssl (KEK interop tests),
# age and fuse3 (peers and the mount tests to come), and Python's `cryptography` for the
# independent EBF reader in crypto/tests/vectors/verify_ebf.py.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pair in openssl:openssl age:age fusermount3:fuse3; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair##*:}")
done
if ((${#need_apt[@]})); then
  echo "== installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
python3 -c 'import cryptography' 2>/dev/null || python3 -m pip install -q cryptography

echo "== cargo test --workspace"
if cargo nextest --version >/dev/null 2>&1; then
  # (No doc tests exist yet; add `cargo test --doc` here when one does.)
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked
fi
