#!/usr/bin/env python3
"""Independent EBF v1 reader, written from docs/format.md with Python's `cryptography` package.

Usage: verify_ebf.py VECTOR_DIR
Opens every ok_*.json to its plaintext and checks that every fail_*.json is refused with the
recorded error class. Exit status 0 when all agree.
"""
import json
import pathlib
import sys

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

HEADER_LEN, OVERHEAD = 76, 28


class Refused(Exception):
    pass


def hkdf_expand(prk: bytes, info: bytes) -> bytes:
    return HKDFExpand(algorithm=hashes.SHA256(), length=32, info=info).derive(prk)


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    h = hmac.HMAC(salt if salt else b"\0" * 32, hashes.SHA256())
    h.update(ikm)
    return h.finalize()


def key_id(key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=16, salt=None, info=b"encfs/v1/key-id").derive(key)


def open_blob(key: bytes, blob: bytes) -> bytes:
    if blob[:8] != b"encfsEBF":
        raise Refused("not_ebf")
    if len(blob) < HEADER_LEN:
        raise Refused("invalid_length")
    if blob[8] != 1:
        raise Refused("unsupported_version")
    if blob[9] != 1 or not 12 <= blob[10] <= 24 or blob[11] != 0:
        raise Refused("corrupt")
    seg = 1 << blob[10]
    if blob[12:28] != key_id(key):
        raise Refused("key_mismatch")
    authenticated, salt, tag = blob[:60], blob[28:60], blob[60:76]
    prk = hkdf_extract(salt, key)
    mac = hmac.HMAC(hkdf_expand(prk, b"encfs/v1/ebf/header-mac"), hashes.SHA256())
    mac.update(authenticated)
    if mac.finalize()[:16] != tag:
        raise Refused("corrupt")
    aead = AESGCM(hkdf_expand(prk, b"encfs/v1/ebf/segment-key" + authenticated))
    body = blob[HEADER_LEN:]
    full, final_len = divmod(len(body), seg + OVERHEAD)
    if final_len < OVERHEAD:
        raise Refused("invalid_length")
    out = []
    for index in range(full + 1):
        chunk = body[index * (seg + OVERHEAD):(index + 1) * (seg + OVERHEAD)]
        aad = index.to_bytes(8, "big") + bytes([index == full])
        try:
            out.append(aead.decrypt(chunk[:12], chunk[12:], aad))
        except Exception:
            raise Refused("corrupt")
    return b"".join(out)


def main() -> int:
    directory = pathlib.Path(sys.argv[1])
    failures = 0
    files = sorted(directory.glob("*.json"))
    for path in files:
        vector = json.loads(path.read_text())
        key, blob = bytes.fromhex(vector["key"]), bytes.fromhex(vector["blob"])
        try:
            result = ("accepted", open_blob(key, blob))
        except Refused as refusal:
            result = (str(refusal), None)
        if path.name.startswith("ok_"):
            good = result[1] == bytes.fromhex(vector["plaintext"])
        else:
            good = result[0] == vector["error"]
        if not good:
            failures += 1
            print(f"MISMATCH {path.name}: got {result[0]}")
    print(f"verify_ebf.py: {len(files) - failures} passed, {failures} failed")
    return 1 if failures or not files else 0


if __name__ == "__main__":
    sys.exit(main())
