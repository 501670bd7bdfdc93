#!/usr/bin/env bash
# README command 1: builds encfs and walks the main job on local files: generate a DEK and an RSA
# KEK, wrap the DEK, encrypt a sample dataset, inspect it, decrypt it with the unwrapped DEK, and
# verify every byte. Work happens in a fresh temporary directory, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p encfs-cli
encfs=$PWD/target/release/encfs
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

head -c $((48 << 20)) /dev/urandom > dataset.csv   # a 48 MiB sample "dataset"
step "$encfs" key generate --out publisher.key
step "$encfs" kek generate --out-private kek.pem --out-public kek.pub
step "$encfs" key wrap --kek-public kek.pub --key publisher.key --out publisher.key.wrapped
step "$encfs" encrypt --key publisher.key dataset.csv dataset.csv.ebf
step "$encfs" inspect dataset.csv.ebf
# The clean room receives only the wrapped DEK and unwraps it with the released KEK.
step "$encfs" key unwrap --kek-private kek.pem --in publisher.key.wrapped --out cleanroom.key
step "$encfs" decrypt --key cleanroom.key dataset.csv.ebf dataset.out.csv
step cmp dataset.csv dataset.out.csv
# Tampering is refused and leaves no output behind.
printf '\x01' | dd of=dataset.csv.ebf bs=1 seek=1000000 conv=notrunc status=none
if "$encfs" decrypt --key cleanroom.key dataset.csv.ebf tampered.csv; then
  echo "tampered blob was accepted" >&2; exit 1
fi
test ! -e tampered.csv
echo; echo "demo OK: round trip verified, tampering refused, no partial output."
