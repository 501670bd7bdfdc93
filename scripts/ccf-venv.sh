#!/usr/bin/env bash
# Creates (once) the Python virtual environment with CCF's own client tools (PyPI `ccf`: ccf.cose
# signing, ccf.receipt verification) that governance/tests/ccf_python.rs runs as an independent
# client. `ccf` needs cryptography < 47; the system Python ships 48, hence the venv.
# cbor2 is pinned below 6 as well: cbor2 6 decodes tagged arrays as tuples, which pycose 1.1
# (ccf.cose's COSE library) does not recognise, so `validate_cose_sign1` refuses every message.
# Prints the venv's python path on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${ENCFS_CCF_VENV:-$PWD/target/ccf-venv}
check='import ccf.cose, ccf.receipt; from importlib.metadata import version as v; assert int(v("cbor2").split(".")[0]) < 6 and int(v("cryptography").split(".")[0]) < 47'
if ! "$venv/bin/python" -c "$check" 2>/dev/null; then
  echo "== creating $venv (pip: ccf, cryptography<47, cbor2<6)" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "ccf" "cryptography<47" "cbor2<6" >&2
  "$venv/bin/python" -c "$check" >&2
fi
echo "$venv/bin/python"
