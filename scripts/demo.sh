#!/usr/bin/env bash
# README command 1: builds encfs and walks the main job on the embedded default store (no cloud
# account): add a datastore (container + DEK), encrypt-upload a sample dataset, list it, download
# and verify it; then the key flow of the clean room: wrap the DEK with an RSA KEK, unwrap it, and
# decrypt a blob with the unwrapped key; finally show that tampering is refused. Work happens in a
# fresh temporary directory, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p encfs-cli
encfs=$PWD/target/release/encfs
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

export ENCFS_CONFIG=$work/config/datastores.yaml
mkdir -p dataset/2025 dataset/2026
python3 - <<'PY'
import random
for month in range(1, 7):
    r = random.Random(month)
    with open(f"dataset/2025/sales-{month:02d}.csv", "w") as f:
        f.write("id,amount,region\n")
        f.writelines(f"{i},{r.random() * 1000:.2f},{r.choice(['eu', 'us', 'apac'])}\n" for i in range(200_000))
PY
head -c $((64 << 20)) /dev/urandom > dataset/2026/images.bin
step "$encfs" datastore add --name publisher-input --store "file://$work/store/publisher-input"
step "$encfs" upload --datastore publisher-input dataset
step "$encfs" ls -r "file://$work/store/publisher-input"
step "$encfs" download --datastore publisher-input downloaded
step diff -r dataset downloaded
if grep -rqF "id,amount,region" "$work/store"; then echo "plaintext found in the store" >&2; exit 1; fi
echo "(the store holds only ciphertext: grep finds no plaintext in it)"

# The clean-room key flow: the publisher wraps the datastore's DEK with a KEK; the clean room
# unwraps it and decrypts a blob fetched as stored (--mode sse: the raw EBF ciphertext).
step "$encfs" kek generate --out-private kek.pem --out-public kek.pub
step "$encfs" key wrap --kek-public kek.pub --key config/keys/publisher-input.key --out publisher-input.wrapped
step "$encfs" key unwrap --kek-private kek.pem --in publisher-input.wrapped --out cleanroom.key
step "$encfs" download "file://$work/store/publisher-input/2026/images.bin" images.ebf --mode sse
step "$encfs" inspect images.ebf
step "$encfs" decrypt --key cleanroom.key images.ebf images.out
step cmp dataset/2026/images.bin images.out
# Tampering is refused and leaves no output behind.
printf '\x01' | dd of=images.ebf bs=1 seek=1000000 conv=notrunc status=none
if "$encfs" decrypt --key cleanroom.key images.ebf tampered.out; then
  echo "tampered blob was accepted" >&2; exit 1
fi
test ! -e tampered.out
echo; echo "demo OK: dataset round trip verified, store holds only ciphertext, key wrap/unwrap works, tampering refused with no partial output."
