#!/usr/bin/env bash
# The application's sequential read of a datasource through the clean room's sandbox, against the
# same read on a plain `encfs mount` (target: sandbox >= 0.9x plain). Both read one file with
# `dd bs=1M` from a fresh read-only mount of a cse datastore (embedded store on tmpfs, so the
# store is not the limit), mounted --allow-other for uid 1000 as the clean room mounts it; the
# sandboxed read runs `dd` inside `encfs cleanroom sandbox` (namespaces, its own root, the mount
# bound read-only, uid 1000). The figure is dd's own rate, so the sandbox's start-up is not in it.
# Runs alternate host/sandbox (paired); medians are reported.
#
#   benches/cleanroom_read.sh          # 1 GiB, 5 pairs
#   benches/cleanroom_read.sh --short  # 256 MiB, 3 pairs
#   ENCFS_BIN=path/to/encfs benches/cleanroom_read.sh   # another build
#
# Needs root and /dev/fuse. Writes bench-out/cleanroom.md.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=1024 runs=5
[[ "${1:-}" == "--short" ]] && size_mib=256 runs=3
if [[ -z ${ENCFS_BIN:-} ]]; then
  bash benches/build-release.sh
  ENCFS_BIN=$PWD/target/release/encfs
fi
encfs=$ENCFS_BIN
out_dir=$PWD/bench-out && mkdir -p "$out_dir"
default_dir=/tmp
[[ -d /dev/shm && -w /dev/shm ]] && default_dir=/dev/shm
work=$(mktemp -d "${BENCH_DIR:-$default_dir}/encfs-cleanroom-bench.XXXXXX")
cleanup() {
  mountpoint -q "$work/mnt" 2>/dev/null && fusermount3 -u -z "$work/mnt"
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
export ENCFS_CONFIG=$work/datastores.yaml
mkdir -p data mnt
head -c $((size_mib << 20)) /dev/urandom > data/input.bin
"$encfs" datastore add --name bench --store "$work/store" >/dev/null
"$encfs" upload data --datastore bench >/dev/null
rm data/input.bin
chmod 755 "$work"

mount_fresh() {
  "$encfs" mount mnt --datastore bench --allow-other --uid 1000 --gid 1000 --daemon >/dev/null
}
unmount() { "$encfs" unmount mnt >/dev/null; }
# dd's last line: "N bytes (…) copied, T s, R GB/s" -> MB/s from N and T.
rate() { python3 -c 'import re,sys; m=re.search(r"^(\d+) bytes.*copied, ([0-9.]+) s", sys.stdin.read(), re.M); print(f"{int(m.group(1))/float(m.group(2))/1e6:.0f}")'; }
host=() sandbox=()
for ((i = 0; i < runs; i++)); do
  for side in host sandbox; do
    mount_fresh
    if [[ $side == host ]]; then
      r=$(setpriv --reuid 1000 --regid 1000 --clear-groups dd if=mnt/input.bin of=/dev/null bs=1M 2>&1 | rate)
      host+=("$r")
    else
      r=$("$encfs" cleanroom sandbox --bind "$work/mnt:/mnt/remote/input:ro" -- \
        dd if=/mnt/remote/input/input.bin of=/dev/null bs=1M 2>&1 | rate)
      sandbox+=("$r")
    fi
    unmount
  done
done
python3 - "$size_mib" "${host[*]}" "${sandbox[*]}" "$out_dir/cleanroom.md" <<'PY'
import statistics, sys
size, host, sandbox, out = sys.argv[1], [float(x) for x in sys.argv[2].split()], [float(x) for x in sys.argv[3].split()], sys.argv[4]
h, s = statistics.median(host), statistics.median(sandbox)
ratios = [b / a for a, b in zip(host, sandbox)]
text = f"""| {size} MiB sequential read, fresh cse mount | MB/s (median) | runs |
|---|---:|---|
| plain `encfs mount`, uid 1000 | {h:.0f} | {' '.join(f'{x:.0f}' for x in host)} |
| inside `encfs cleanroom sandbox` | {s:.0f} | {' '.join(f'{x:.0f}' for x in sandbox)} |

sandbox / plain: **{s / h:.2f}x** (median of paired ratios {statistics.median(ratios):.2f}x; target >= 0.9x)
"""
print(text)
open(out, "w").write(text)
PY
