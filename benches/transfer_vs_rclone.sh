#!/usr/bin/env bash
# Upload/download throughput: encfs (cse mode) vs rclone with a crypt remote, on the same local
# backend and against the same Azurite, plus encfs on a latency-injected store and encfs's peak RSS.
#
#   benches/transfer_vs_rclone.sh          # full: one 1 GiB file and 10,000 files of 64 KiB
#   benches/transfer_vs_rclone.sh --short  # CI-sized: 256 MiB and 1,000 files
#
# Equal terms: every tree, store and download lives on tmpfs (/dev/shm), so neither tool's fsync
# behaviour matters (encfs fsyncs each committed blob and download; rclone's local backend does
# not; on tmpfs fsync costs nothing). Both encrypt client-side. rclone runs with its defaults
# (4 transfers); encfs with its defaults (32 files, 8 MiB blocks, 256 MiB memory budget).
# Needs: rclone, GNU time (apt-get install -y rclone time), npm (Azurite), python3 + pip
# (azure-storage-blob, to mint the SAS that Debian's rclone needs for Azurite).
set -euo pipefail
cd "$(dirname "$0")/.."
big_mib=1024 small_files=10000 reps=3
[[ "${1:-}" == "--short" ]] && big_mib=256 small_files=1000 reps=1
for tool in rclone /usr/bin/time python3 npm; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y rclone time)" >&2; exit 1; }
done
bash benches/build-release.sh
encfs=$PWD/target/release/encfs
azurite_dir=$PWD/target/azurite
[[ -x $azurite_dir/node_modules/.bin/azurite-blob ]] || npm install --silent --no-audit --no-fund --prefix "$azurite_dir" azurite@3 >/dev/null
python3 -c 'import azure.storage.blob' 2>/dev/null || python3 -m pip install -q azure-storage-blob
out_dir=$PWD/bench-out && mkdir -p "$out_dir"
work=$(mktemp -d /dev/shm/encfs-xfer.XXXXXX)
port=10100
"$azurite_dir/node_modules/.bin/azurite-blob" --location "$work/azurite" --blobHost 127.0.0.1 --blobPort $port \
  --skipApiVersionCheck --disableTelemetry --silent >/dev/null 2>&1 &
azurite_pid=$!
trap 'kill $azurite_pid 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"

mkdir -p big small
head -c $((big_mib << 20)) /dev/urandom > big/big.bin
python3 - "$small_files" <<'PY'
import os, sys
for i in range(int(sys.argv[1])):
    d = f"small/d{i // 1000:02d}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/f{i:05d}", "wb") as f:
        f.write(os.urandom(64 * 1024))
PY
cat big/big.bin > /dev/null
big_bytes=$(stat -c %s big/big.bin)
small_bytes=$((small_files * 65536))
"$encfs" key generate --out k.key >/dev/null

export RCLONE_CONFIG=$work/rclone.conf
azurite=http://127.0.0.1:$port/devstoreaccount1
sas=$(python3 - "$azurite" <<'PY'
import sys, datetime
from azure.storage.blob import BlobServiceClient, generate_container_sas, ContainerSasPermissions
key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
svc = BlobServiceClient(account_url=sys.argv[1], credential={"account_name": "devstoreaccount1", "account_key": key})
svc.create_container("rclone")
print(generate_container_sas("devstoreaccount1", "rclone", account_key=key,
      permission=ContainerSasPermissions(read=True, add=True, create=True, write=True, delete=True, list=True),
      expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)))
PY
)
password=$(rclone obscure benchmark-secret)
cat > rclone.conf <<EOF2
[loc]
type = local
[cr]
type = crypt
remote = loc:$work/rclone-store
password = $password
[az]
type = azureblob
sas_url = $azurite/rclone?$sas
[azc]
type = crypt
remote = az:rclone
password = $password
EOF2
export AZURE_STORAGE_CONNECTION_STRING="DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=$azurite"

# seconds CMD...: wall seconds of one run.
seconds() {
  local t0 t1
  t0=$(date +%s.%N); "$@" >/dev/null 2>"$work/last.err" || { cat "$work/last.err" >&2; echo "FAILED: $*" >&2; exit 1; }
  t1=$(date +%s.%N)
  python3 -c "print($t1 - $t0)"
}
results=results.txt; : > $results
record() { echo "$1 $2 $3" | tee -a $results; }   # name bytes seconds

case_run() { # name bytes cmd...
  local name=$1 bytes=$2; shift 2
  record "$name" "$bytes" "$(seconds "$@")"
}

for what in big small; do
  bytes=$big_bytes n=$reps; [[ $what == small ]] && bytes=$small_bytes n=1
  # Local backend, `reps` paired runs for the big file (median reported), each run writing to
  # destinations of its own, checked and removed before the next. `cp` of the same file is the
  # file-to-file ceiling on this machine.
  for i in $(seq $n); do
    case_run "encfs_upload_local_$what" $bytes "$encfs" upload $what "$work/enc-$what-$i" --key k.key --create-container
    case_run "encfs_download_local_$what" $bytes "$encfs" download "$work/enc-$what-$i" "dl-enc-$what-$i" --key k.key
    case_run "rclone_upload_local_$what" $bytes rclone copy $what "cr:rc-$what-$i"
    case_run "rclone_download_local_$what" $bytes rclone copy "cr:rc-$what-$i" "dl-rc-$what-$i"
    [[ $what == big ]] && case_run cp_local_big $bytes cp big/big.bin "cp-$i.bin"
    diff -r $what "dl-enc-$what-$i" >/dev/null || { echo "encfs download $what differs from its source" >&2; exit 1; }
    rclone purge "cr:rc-$what-$i"
    rm -rf "$work/enc-$what-$i" "dl-enc-$what-$i" "dl-rc-$what-$i" "cp-$i.bin"
  done
  # Azurite.
  case_run "encfs_upload_azurite_$what" $bytes "$encfs" upload $what "$azurite/enc$what" --key k.key --create-container
  case_run "encfs_download_azurite_$what" $bytes "$encfs" download "$azurite/enc$what" "dl-az-enc-$what" --key k.key
  case_run "rclone_upload_azurite_$what" $bytes rclone copy $what "azc:rc-$what"
  case_run "rclone_download_azurite_$what" $bytes rclone copy "azc:rc-$what" "dl-az-rc-$what"
done

# Azurite is done: check its encfs downloads, then stop it and free its data, so that neither its
# background work (it persists its blob index) nor a fuller tmpfs weighs on the cells below.
cmp big/big.bin dl-az-enc-big/big.bin
diff -r small dl-az-enc-small >/dev/null
kill $azurite_pid 2>/dev/null && wait $azurite_pid 2>/dev/null || true
rm -rf "$work/azurite" dl-az-*

# Latency-injected store (20 ms per request) vs none, the big file, local backend: `reps` pairs,
# each 20 ms run right after a no-latency run of its own (ratio of the medians).
for i in $(seq $reps); do
  case_run encfs_upload_local_big_0ms $big_bytes "$encfs" upload big "$work/enc-fast" --key k.key --create-container
  case_run encfs_download_local_big_0ms $big_bytes "$encfs" download "$work/enc-fast" dl-fast --key k.key
  case_run encfs_upload_local_big_20ms $big_bytes env ENCFS_DANGEROUS_INJECT_LATENCY_MS=20 \
    "$encfs" upload big "$work/enc-slow" --key k.key --create-container
  case_run encfs_download_local_big_20ms $big_bytes env ENCFS_DANGEROUS_INJECT_LATENCY_MS=20 \
    "$encfs" download "$work/enc-slow" dl-slow --key k.key
  cmp big/big.bin dl-fast/big.bin && cmp big/big.bin dl-slow/big.bin
  rm -rf "$work/enc-fast" dl-fast "$work/enc-slow" dl-slow
done

# Peak RSS with the default 256 MiB memory budget.
up_kib=$(/usr/bin/time -f %M "$encfs" upload big "$work/enc-rss" --key k.key --create-container 2>&1 >/dev/null | tail -1)
down_kib=$(/usr/bin/time -f %M "$encfs" download "$work/enc-rss" dl-rss --key k.key 2>&1 >/dev/null | tail -1)
echo "rss_upload_kib $up_kib" >> rss.txt; echo "rss_download_kib $down_kib" >> rss.txt
# Every encfs download above was checked against its source (a benchmark of wrong output is
# worthless); this one too.
cmp big/big.bin dl-rss/big.bin

python3 - $results rss.txt "$big_mib" "$small_files" > "$out_dir/transfer.md" <<'PY'
import statistics, sys
runs = {}
for n, b, s in (l.split() for l in open(sys.argv[1])):
    runs.setdefault(n, []).append(int(b) / float(s) / 1e6)
rows = {n: statistics.median(v) for n, v in runs.items()}
rss = {k: int(v) for k, v in (l.split() for l in open(sys.argv[2]))}
big, small = sys.argv[3], sys.argv[4]
reps = len(runs["encfs_upload_local_big"])
print(f"One {big} MiB file and {small} files of 64 KiB; tmpfs; MB/s = 10^6 bytes/s; big file on the local "
      f"backend: median of {reps} paired runs; every other cell: one run.\n")
print("| data | backend | direction | encfs MB/s | rclone crypt MB/s | encfs ÷ rclone |")
print("|---|---|---|---:|---:|---:|")
for what, label in (("big", f"1 × {big} MiB"), ("small", f"{small} × 64 KiB")):
    for backend in ("local", "azurite"):
        for direction in ("upload", "download"):
            e, r = rows[f"encfs_{direction}_{backend}_{what}"], rows[f"rclone_{direction}_{backend}_{what}"]
            print(f"| {label} | {backend} | {direction} | {e:.0f} | {r:.0f} | {e / r:.1f}× |")
print(f"\n| encfs, big file, local backend, {reps} paired runs (medians) | no latency MB/s | 20 ms per request MB/s | ratio |")
print("|---|---:|---:|---:|")
for direction in ("upload", "download"):
    slow, fast = rows[f"encfs_{direction}_local_big_20ms"], rows[f"encfs_{direction}_local_big_0ms"]
    print(f"| {direction} | {fast:.0f} | {slow:.0f} | {slow / fast:.2f} |")
cp = rows["cp_local_big"]
print(f"\n`cp` of the big file on the same tmpfs (the file-to-file ceiling): {cp:.0f} MB/s = "
      f"{cp / rows['rclone_download_local_big']:.1f}× rclone's download, {cp / rows['rclone_upload_local_big']:.1f}× its upload; "
      f"encfs download reaches {rows['encfs_download_local_big'] / cp:.2f}× cp, upload {rows['encfs_upload_local_big'] / cp:.2f}× cp.")
print(f"\nPeak RSS with --memory-budget 256MiB (limit 320 MiB): upload {rss['rss_upload_kib'] / 1024:.0f} MiB, download {rss['rss_download_kib'] / 1024:.0f} MiB.")
PY
echo; cat "$out_dir/transfer.md"
