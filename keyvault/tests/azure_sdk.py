"""The Azure SDK for Python against the local key vault (driven by azure_sdk.rs).

Environment: VAULT_URL, VAULT_CA (PEM file the vault's TLS chains to), AZURE_POD_IDENTITY_AUTHORITY_HOST
(the identity router, which ManagedIdentityCredential's IMDS client then calls), TARGET_TOKEN_FILE
(an attestation token for the release), RELEASE_POLICY_FILE (the policy JSON), KEY_NAME.
Prints one JSON object: the imported key's private PKCS#8 (base64) so the Rust side can compare
the released key, the JWS of the release, what get_key returned, the secret read back and the
api-version the SDK sent.
"""
import base64
import json
import os
import sys

from azure.identity import ManagedIdentityCredential
from azure.keyvault.keys import JsonWebKey, KeyClient, KeyReleasePolicy, KeyType
from azure.keyvault.secrets import SecretClient
from azure.core.exceptions import HttpResponseError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def b(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def main() -> None:
    vault_url = os.environ["VAULT_URL"]
    ca = os.environ["VAULT_CA"]
    name = os.environ["KEY_NAME"]
    credential = ManagedIdentityCredential()
    keys = KeyClient(vault_url, credential, verify_challenge_resource=False, connection_verify=ca)
    secrets = SecretClient(vault_url, credential, verify_challenge_resource=False, connection_verify=ca)

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = private.private_numbers()
    jwk = JsonWebKey(
        kty=KeyType.rsa_hsm,
        key_ops=["encrypt", "decrypt", "wrapKey", "unwrapKey"],
        n=b(numbers.public_numbers.n), e=b(numbers.public_numbers.e), d=b(numbers.d),
        p=b(numbers.p), q=b(numbers.q), dp=b(numbers.dmp1), dq=b(numbers.dmq1), qi=b(numbers.iqmp),
    )
    with open(os.environ["RELEASE_POLICY_FILE"], "rb") as f:
        policy = f.read()
    imported = keys.import_key(
        name, jwk, hardware_protected=True, exportable=True,
        release_policy=KeyReleasePolicy(policy, immutable=False),
    )
    got = keys.get_key(name)
    assert got.key.d is None, "get_key returned a private part"
    assert got.properties.exportable is True
    assert json.loads(got.properties.release_policy.encoded_policy) == json.loads(policy)
    assert got.key.n == b(numbers.public_numbers.n)
    assert got.id == imported.id

    with open(os.environ["TARGET_TOKEN_FILE"]) as f:
        target = f.read().strip()
    released = keys.release_key(name, target)

    refused = None
    try:
        keys.release_key(name, target + "x")
    except HttpResponseError as error:
        refused = {"status": error.status_code, "code": error.error.code if error.error else None}

    secrets.set_secret("wrapped-ds-dek-kek", "c2VjcmV0LXZhbHVl")
    secret = secrets.get_secret("wrapped-ds-dek-kek")

    pkcs8 = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    print(json.dumps({
        "pkcs8": base64.b64encode(pkcs8).decode(),
        "jws": released.value,
        "kid": got.id,
        "kty": str(got.key_type),
        "secret": secret.value,
        "secret_id": secret.id,
        "refused": refused,
        "api_version": keys.api_version,
        "secrets_api_version": secrets.api_version,
    }))


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # the Rust test prints this
        print(f"azure_sdk.py failed: {type(error).__name__}: {error}", file=sys.stderr)
        raise
