#!/usr/bin/env bash
# README command 1: builds encfs and walks the main job on the embedded default store (no cloud
# account): add a datastore (container + DEK), encrypt-upload a sample dataset, mount it read-only
# and read it with ordinary tools, write a result through a read-write mount of a second
# datastore, download and verify both; then the key flow of the clean room: wrap the DEK with an
# RSA KEK, unwrap it, and decrypt a blob with the unwrapped key; finally show that tampering is
# refused. Work happens in a fresh temporary directory, removed at the end. The mounts need FUSE
# (root and /dev/fuse; fuse3 is installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v fusermount3 >/dev/null && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 >/dev/null
fi
cargo build --release --locked -p encfs-cli
encfs=$PWD/target/release/encfs
work=$(mktemp -d)
cleanup() {
  for m in "$work"/input "$work"/output; do mountpoint -q "$m" 2>/dev/null && fusermount3 -u -z "$m"; done
  rm -rf "$work"
}
trap cleanup EXIT
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

# Inside the clean room: the datasource mounted read-only, the datasink read-write. Applications
# see plain files; the stores only ever receive ciphertext.
step "$encfs" datastore add --name consumer-output --store "file://$work/store/consumer-output"
mkdir input output
step "$encfs" mount --datastore publisher-input input --daemon
step "$encfs" mount --datastore consumer-output output --read-write --daemon
step ls -lR input
step head -3 input/2025/sales-01.csv
step cmp input/2026/images.bin dataset/2026/images.bin
mkdir output/report
# The "application": total sales per region over the mounted dataset, written to the datasink.
step sh -c "cat input/2025/*.csv | awk -F, 'NR > 1 && \$1 != \"id\" { s[\$3] += \$2 } END { for (r in s) printf \"%s,%.2f\\n\", r, s[r] }' | sort > output/report/totals.csv"
cat dataset/2025/*.csv | awk -F, 'NR > 1 && $1 != "id" { s[$3] += $2 } END { for (r in s) printf "%s,%.2f\n", r, s[r] }' | sort > expected-totals.csv
step cat output/report/totals.csv
step "$encfs" unmount output
step "$encfs" unmount input
step "$encfs" download --datastore consumer-output result
step cmp result/report/totals.csv expected-totals.csv
if grep -rqF "id,amount,region" "$work/store" || grep -rqF "$(head -1 expected-totals.csv)" "$work/store"; then
  echo "plaintext found in the store" >&2; exit 1
fi
echo "(the stores hold only ciphertext: grep finds no plaintext in them)"

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
echo; echo "demo OK: dataset round trip verified, mounted read-only and read with ordinary tools, result written through a read-write mount and verified, stores hold only ciphertext, key wrap/unwrap works, tampering refused with no partial output."
