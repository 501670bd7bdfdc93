#!/usr/bin/env bash
# Creates (once) the Python virtual environment with the Azure SDK for Python that
# keyvault/tests/azure_sdk.rs drives against the local key vault as a real client:
# azure-keyvault-keys (import, get, release), azure-keyvault-secrets (set, get), azure-identity
# (ManagedIdentityCredential against the identity router), cryptography (the RSA key to import).
# Idempotent: does nothing when the venv already imports them. Prints the venv's python path on
# stdout; the test command exports it as ENCFS_KEYVAULT_PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${ENCFS_KEYVAULT_VENV:-$PWD/target/kv-venv}
check='import azure.keyvault.keys, azure.keyvault.secrets, azure.identity, cryptography'
if ! "$venv/bin/python" -c "$check" 2>/dev/null; then
  echo "== creating $venv (pip: azure-keyvault-keys, azure-keyvault-secrets, azure-identity, cryptography)" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    azure-keyvault-keys azure-keyvault-secrets azure-identity cryptography >&2
  "$venv/bin/python" -c "$check" >&2
fi
echo "$venv/bin/python"
