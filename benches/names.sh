#!/usr/bin/env bash
# Encrypted names: what they cost. Small-file upload and download, and a mount's `ls -lR` plus a
# lookup pass (`stat` of every file by name, in a fresh mount), with encfs's names encrypted vs
# plain, against rclone crypt (which encrypts names by default) and gocryptfs (likewise).
#
#   benches/names.sh          # 10,000 files of 4 KiB in 100 directories, 3 runs (medians)
#   benches/names.sh --short  # CI-sized: 1,000 files, 1 run
#
# Equal terms: every tree, store and cipher directory lives on tmpfs (/dev/shm). encfs uses the
# embedded store and cse mode; rclone a crypt remote over its local backend; gocryptfs its own
# directory. `ENCFS_BIN=target/debug/encfs benches/names.sh --short` checks the script with a
# debug build (no release build then; its figures mean nothing).
# Needs: rclone, gocryptfs, fuse3 (apt-get install -y rclone gocryptfs fuse3), root, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
files=10000 reps=3
[[ "${1:-}" == "--short" ]] && files=1000 reps=1
for tool in rclone gocryptfs fusermount3 python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y rclone gocryptfs fuse3)" >&2; exit 1; }
done
if [[ -n "${ENCFS_BIN:-}" ]]; then
  encfs=$(realpath "$ENCFS_BIN")
else
  bash benches/build-release.sh
  encfs=$PWD/target/release/encfs
fi
out_dir=$PWD/bench-out && mkdir -p "$out_dir"
work=$(mktemp -d /dev/shm/encfs-names.XXXXXX)
cleanup() {
  for m in "$work"/mnt-*; do mountpoint -q "$m" 2>/dev/null && fusermount3 -u -z "$m"; done
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
mkdir -p mnt-encfs mnt-gocryptfs mnt-rclone
python3 - "$files" <<'PY'
import os, sys
for i in range(int(sys.argv[1])):
    d = f"small/dir-{i % 100:03d}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/file-{i:05d}.dat", "wb") as f:
        f.write(os.urandom(4096))
PY
find small -type f | sed 's|^small/||' | sort > names.txt
export ENCFS_CONFIG=$work/datastores.yaml
export RCLONE_CONFIG=$work/rclone.conf
printf "[loc]\ntype = local\n[cr]\ntype = crypt\nremote = loc:%s/rstore\npassword = %s\n" \
  "$work" "$(rclone obscure secret)" > "$RCLONE_CONFIG"
echo pw > pw

seconds() {  # wall seconds of CMD...
  local t0 t1
  t0=$(date +%s.%N); "$@" >/dev/null 2>"$work/last.err" || { cat "$work/last.err" >&2; echo "FAILED: $*" >&2; exit 1; }
  t1=$(date +%s.%N)
  python3 -c "print($t1 - $t0)"
}
results=results.txt; : > $results
record() { echo "$1 $2" | tee -a $results; }   # name seconds
wait_mounted() { for _ in $(seq 200); do mountpoint -q "$1" && return 0; sleep 0.05; done; echo "mount $1 failed" >&2; exit 1; }
unmount() { for _ in $(seq 100); do mountpoint -q "$1" || return 0; fusermount3 -u "$1" 2>/dev/null || sleep 0.1; done; fusermount3 -u -z "$1"; }
# The mount passes: `ls -lR` of the whole tree, then in a fresh mount a `stat` of every file by
# name (lookups the mount has not listed).
lookup_pass() { (cd "$1" && sed 's/^/.\//' "$work/names.txt" | xargs -n 500 stat -c %s >/dev/null); }
mount_passes() {  # name mount-command... (mounts at $mnt, given in the environment)
  local name=$1; shift
  "$@" >/dev/null; wait_mounted "$mnt"
  record "${name}_ls" "$(seconds ls -lR "$mnt")"
  unmount "$mnt"; sleep 0.5
  "$@" >/dev/null; wait_mounted "$mnt"
  record "${name}_lookup" "$(seconds lookup_pass "$mnt")"
  unmount "$mnt"; sleep 0.5
}

for i in $(seq "$reps"); do
  # encfs, plain names and encrypted names (a datastore each).
  "$encfs" datastore add --name plain-$i --store "$work/enc-plain-$i" >/dev/null
  "$encfs" datastore add --name names-$i --store "$work/enc-names-$i" --encrypt-names >/dev/null
  for kind in plain names; do
    record "encfs_${kind}_upload" "$(seconds "$encfs" upload --datastore $kind-$i small)"
    record "encfs_${kind}_download" "$(seconds "$encfs" download --datastore $kind-$i dl-$kind-$i)"
    diff -r small dl-$kind-$i >/dev/null || { echo "encfs $kind download differs" >&2; exit 1; }
    rm -rf dl-$kind-$i
    mnt=mnt-encfs mount_passes "encfs_${kind}" "$encfs" mount --datastore $kind-$i mnt-encfs --daemon
  done
  # rclone crypt (names encrypted by default).
  record rclone_upload "$(seconds rclone copy small cr:r$i)"
  record rclone_download "$(seconds rclone copy cr:r$i dl-rclone-$i)"
  diff -r small dl-rclone-$i >/dev/null || { echo "rclone download differs" >&2; exit 1; }
  rm -rf dl-rclone-$i
  mnt=mnt-rclone mount_passes rclone rclone mount cr:r$i mnt-rclone --daemon --vfs-cache-mode off
  # gocryptfs (names encrypted by default): "upload" is a copy into the mount, "download" out.
  mkdir gc-$i && gocryptfs -q -init -passfile pw gc-$i >/dev/null 2>&1
  gocryptfs -q -nosyslog -passfile pw gc-$i mnt-gocryptfs >/dev/null 2>&1
  record gocryptfs_upload "$(seconds cp -r small/. mnt-gocryptfs/)"
  record gocryptfs_download "$(seconds cp -r mnt-gocryptfs/. dl-gc-$i)"
  unmount mnt-gocryptfs
  diff -r small dl-gc-$i >/dev/null || { echo "gocryptfs copy differs" >&2; exit 1; }
  rm -rf dl-gc-$i
  mnt=mnt-gocryptfs mount_passes gocryptfs gocryptfs -q -nosyslog -passfile pw gc-$i mnt-gocryptfs
  # The encrypted-name store lists no plaintext name.
  if find "$work/enc-names-$i" | grep -q 'file-0\|dir-0'; then echo "plaintext names in the store" >&2; exit 1; fi
  rm -rf "$work/enc-plain-$i" "$work/enc-names-$i" "$work/rstore/r$i" gc-$i
done

python3 - $results "$files" "$reps" > "$out_dir/names.md" <<'PY'
import statistics, sys
runs = {}
for name, s in (l.split() for l in open(sys.argv[1])):
    runs.setdefault(name, []).append(float(s))
m = {k: statistics.median(v) for k, v in runs.items()}
files, reps = sys.argv[2], sys.argv[3]
print(f"{files} files of 4 KiB in 100 directories; tmpfs; seconds, median of {reps} run(s).\n")
print("| pass | encfs plain | encfs encrypted names | names ÷ plain | rclone crypt | gocryptfs | names ÷ rclone | names ÷ gocryptfs |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for p, label in (("upload", "upload (gocryptfs: cp in)"), ("download", "download (gocryptfs: cp out)"),
                 ("ls", "mount: ls -lR"), ("lookup", "mount: stat each file, fresh mount")):
    plain, names = m[f"encfs_plain_{p}"], m[f"encfs_names_{p}"]
    rc, gc = m[f"rclone_{p}"], m[f"gocryptfs_{p}"]
    print(f"| {label} | {plain:.2f} | {names:.2f} | {names / plain:.2f}× | {rc:.2f} | {gc:.2f} | {names / rc:.2f}× | {names / gc:.2f}× |")
print("\nRatios are of times: below 1× is faster than the other system.")
PY
echo; cat "$out_dir/names.md"
