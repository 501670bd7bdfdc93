#!/usr/bin/env bash
# Dataset manifests (issue #14): three paired comparisons on one cse datastore of many small
# blobs (embedded store on tmpfs, so the store is not the limit).
#  1. `encfs dataset verify` of N small blobs against a plain `encfs download` of the same blobs
#     (target: verify >= 0.8x download, in blobs per second);
#  2. open + read of the first byte of M files through a mount, with and without `--manifest`
#     (a python loop; target: manifest mount <= 1.1x the plain mount's time);
#  3. `encfs upload --seal` against an unsealed upload of the same tree into a fresh datastore
#     (target: sealed >= 0.97x unsealed throughput), for the N small files and for a few large
#     ones (8 x 128 MiB; --short 4 x 64 MiB).
# Runs alternate the two sides of each pair; medians and the median of the paired ratios are
# reported.
#
#   benches/dataset.sh          # 100,000 blobs, 2,000 opens, 9 pairs (the ratios are noise-bound)
#   benches/dataset.sh --short  # 5,000 blobs, 2,000 opens, 3 pairs
#   ENCFS_BIN=target/debug/encfs benches/dataset.sh --short   # another build (e.g. debug)
#
# Needs root and /dev/fuse for the mount part. Writes bench-out/dataset.md.
set -euo pipefail
cd "$(dirname "$0")/.."
blobs=100000 opens=2000 runs=9 big_files=8 big_mib=128
[[ "${1:-}" == "--short" ]] && blobs=5000 runs=3 big_files=4 big_mib=64
if [[ -z ${ENCFS_BIN:-} ]]; then
  bash benches/build-release.sh
  ENCFS_BIN=$PWD/target/release/encfs
fi
encfs=$(realpath "$ENCFS_BIN")
out_dir=$PWD/bench-out && mkdir -p "$out_dir"
default_dir=/tmp
[[ -d /dev/shm && -w /dev/shm ]] && default_dir=/dev/shm
work=$(mktemp -d "${BENCH_DIR:-$default_dir}/encfs-dataset-bench.XXXXXX")
cleanup() {
  mountpoint -q "$work/mnt" 2>/dev/null && fusermount3 -u -z "$work/mnt"
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
export ENCFS_CONFIG=$work/datastores.yaml
mkdir -p data mnt
python3 - "$blobs" <<'PY'
import os, sys
n = int(sys.argv[1])
for i in range(n):
    d = f"data/d{i // 1000:03d}"
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(f"{d}/f{i:06d}.csv", "wb") as f:
        f.write(os.urandom(1024 + i % 3072))
PY
"$encfs" governance member keygenerator --name bench --out keys >/dev/null
sign=(--signing-cert keys/bench_cert.pem --signing-key keys/bench_privk.pem)
"$encfs" datastore add --name ds --store "$work/store" >/dev/null
"$encfs" upload data --datastore ds >/dev/null
digest=$("$encfs" dataset seal --datastore ds "${sign[@]}" 2>/dev/null)

# Seconds of one command, as a float.
seconds() {
  local start end
  start=$(date +%s.%N)
  "$@" >/dev/null 2>&1
  end=$(date +%s.%N)
  python3 -c "print($end - $start)"
}

verify=() download=()
for ((i = 0; i < runs; i++)); do
  verify+=("$(seconds "$encfs" dataset verify --datastore ds --digest "$digest")")
  rm -rf dl
  download+=("$(seconds "$encfs" download --datastore ds dl)")
done

# Open + first byte of the first $opens files, on a fresh mount each run.
open_loop() {
  python3 - "$work/mnt" "$opens" <<'PY'
import os, sys, time
root, n = sys.argv[1], int(sys.argv[2])
paths = []
for d in sorted(os.listdir(root)):
    for f in sorted(os.listdir(os.path.join(root, d))):
        paths.append(os.path.join(root, d, f))
        if len(paths) == n:
            break
    if len(paths) == n:
        break
start = time.perf_counter()
for p in paths:
    with open(p, "rb") as f:
        f.read(1)
print(time.perf_counter() - start)
PY
}
plain_open=() pinned_open=()
if [[ -e /dev/fuse ]]; then
  for ((i = 0; i < runs; i++)); do
    for side in plain pinned; do
      extra=()
      [[ $side == pinned ]] && extra=(--manifest-from-store --manifest-digest "$digest")
      "$encfs" mount mnt --datastore ds --daemon "${extra[@]}" >/dev/null
      t=$(open_loop)
      "$encfs" unmount mnt >/dev/null
      while mountpoint -q mnt; do sleep 0.05; done
      if [[ $side == plain ]]; then plain_open+=("$t"); else pinned_open+=("$t"); fi
    done
  done
fi

# Upload throughput, sealed and not, each into a fresh datastore: the small files above (where a
# manifest's fixed cost, one listing and one signed document of every entry, weighs most), and a
# few large files (where the data path does).
mkdir -p big
for ((i = 0; i < big_files; i++)); do head -c $((big_mib << 20)) /dev/urandom > "big/f$i.bin"; done
upload_pairs() {  # SOURCE: prints the unsealed times, "|", then the sealed times
  local unsealed=() sealed=() i side t
  # One upload first, not counted: the first upload of a tree ran up to 30% slower (the page
  # cache and the store's tmpfs warming up), which flattered whichever side came second.
  rm -rf "$work/up" && "$encfs" datastore add --name "warm$1" --store "$work/up" >/dev/null
  "$encfs" upload "$1" --datastore "warm$1" >/dev/null 2>&1
  for ((i = 0; i < runs; i++)); do
    # Alternate which side goes first: a fixed order let drift (the store's tmpfs reclaiming the
    # previous run's pages) favour one side.
    local order=(unsealed sealed)
    ((i % 2)) && order=(sealed unsealed)
    for side in "${order[@]}"; do
      rm -rf "$work/up" && "$encfs" datastore add --name "up$1$i$side" --store "$work/up" >/dev/null
      extra=()
      [[ $side == sealed ]] && extra=(--seal "${sign[@]}")
      t=$(seconds "$encfs" upload "$1" --datastore "up$1$i$side" "${extra[@]}")
      if [[ $side == sealed ]]; then sealed+=("$t"); else unsealed+=("$t"); fi
    done
  done
  rm -rf "$work/up"
  echo "${unsealed[*]}|${sealed[*]}"
}
small_pairs=$(upload_pairs data)
big_pairs=$(upload_pairs big)
unsealed=(${small_pairs%|*}) sealed=(${small_pairs#*|})
big_unsealed=(${big_pairs%|*}) big_sealed=(${big_pairs#*|})

python3 - "$blobs" "$opens" "$encfs" "$out_dir/dataset.md" \
  "${verify[*]}" "${download[*]}" "${plain_open[*]:-}" "${pinned_open[*]:-}" \
  "${unsealed[*]}" "${sealed[*]}" "${big_unsealed[*]}" "${big_sealed[*]}" "$big_files" "$big_mib" <<'PY'
import statistics, sys
blobs, opens, binary, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
series = [[float(x) for x in a.split()] for a in sys.argv[5:13]]
verify, download, plain, pinned, unsealed, sealed, big_unsealed, big_sealed = series
big_files, big_mib = int(sys.argv[13]), int(sys.argv[14])
med = statistics.median
def paired(a, b):
    return med([x / y for x, y in zip(a, b)]) if a and b else float("nan")
lines = [
    f"binary: `{binary}`; {blobs} blobs of 1-4 KiB; medians of {len(verify)} paired runs",
    "",
    "| comparison | side | seconds (median) | runs |",
    "|---|---|---:|---|",
    f"| verify vs download | `dataset verify` | {med(verify):.2f} | {' '.join(f'{x:.2f}' for x in verify)} |",
    f"| | `download` | {med(download):.2f} | {' '.join(f'{x:.2f}' for x in download)} |",
]
if plain:
    lines += [
        f"| open + first byte of {opens} files | plain mount | {med(plain):.3f} | {' '.join(f'{x:.3f}' for x in plain)} |",
        f"| | `--manifest` mount | {med(pinned):.3f} | {' '.join(f'{x:.3f}' for x in pinned)} |",
    ]
lines += [
    f"| upload, {blobs} small files | unsealed | {med(unsealed):.2f} | {' '.join(f'{x:.2f}' for x in unsealed)} |",
    f"| | `--seal` | {med(sealed):.2f} | {' '.join(f'{x:.2f}' for x in sealed)} |",
    f"| upload, {big_files} × {big_mib} MiB | unsealed | {med(big_unsealed):.2f} | {' '.join(f'{x:.2f}' for x in big_unsealed)} |",
    f"| | `--seal` | {med(big_sealed):.2f} | {' '.join(f'{x:.2f}' for x in big_sealed)} |",
    "",
    f"verify / download throughput: **{paired(download, verify):.2f}x** (target >= 0.8x)",
]
if plain:
    lines.append(f"manifest / plain open latency: **{paired(pinned, plain):.2f}x** (target <= 1.1x)")
else:
    lines.append("mount open latency: skipped (no /dev/fuse)")
lines.append(f"sealed / unsealed upload throughput, small files: **{paired(unsealed, sealed):.2f}x**, "
             f"{big_files} × {big_mib} MiB: **{paired(big_unsealed, big_sealed):.2f}x** (target >= 0.97x)")
text = "\n".join(lines) + "\n"
print(text)
open(out, "w").write(text)
PY
