#!/usr/bin/env bash
# Whole-file encryption throughput: encfs vs raw AES-256-GCM (ring, aws-lc-rs, openssl) vs age,
# on one random file, in one run on one machine. Prints a ratio table and writes it to
# bench-out/crypto.md.
#
#   benches/crypto_vs_peers.sh          # full: 1 GiB file, 5 runs per measurement
#   benches/crypto_vs_peers.sh --short  # CI: 256 MiB file, 3 runs
#
# Fair terms: the input is warm in the page cache for every tool; outputs go to the same
# directory; no tool fsyncs (encfs runs with --no-fsync, age never syncs). Figures are medians.
# Files live in /dev/shm (tmpfs) by default so that disk write-back throttling, which made
# repeated 1 GiB writes vary 5× on these machines, does not drown the tools' own speed; set
# BENCH_DIR to measure on a disk instead.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=1024 runs=5
[[ "${1:-}" == "--short" ]] && size_mib=256 runs=3

for tool in age age-keygen openssl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y age openssl)" >&2; exit 1; }
done
bash benches/build-release.sh
encfs=$PWD/target/release/encfs probe=$PWD/target/release/aead-probe
out_dir=$PWD/bench-out && mkdir -p "$out_dir"
default_dir=/tmp
[[ -d /dev/shm && -w /dev/shm ]] && default_dir=/dev/shm
work=$(mktemp -d "${BENCH_DIR:-$default_dir}/encfs-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

head -c $((size_mib << 20)) /dev/urandom > plain
cat plain > /dev/null
bytes=$(stat -c %s plain)
"$encfs" key generate --out k.key >/dev/null
age-keygen -o age.id 2>/dev/null
recipient=$(age-keygen -y age.id)

# median_gbps NAME CMD...: runs CMD $runs times, prints "NAME <median GB/s>".
median_gbps() {
  local name=$1; shift
  local times=()
  for _ in $(seq "$runs"); do
    rm -f out.tmp
    local t0 t1
    t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N)
    times+=("$(python3 -c "print($t1 - $t0)")")
  done
  python3 -c "import statistics,sys; print('$name', $bytes / statistics.median(map(float, sys.argv[1:])) / 1e9)" "${times[@]}"
}

{
  "$probe" | awk '$1 ~ /^random_4k/ { print; next } $1 != "threads" { printf "%s %.3f\n", $1, $2 / 1e9 }'
  openssl speed -evp aes-256-gcm -bytes 65536 -seconds 3 2>/dev/null \
    | awk '/^AES-256-GCM/ { v = $NF; sub(/k$/, "", v); printf "openssl_aes256gcm_64k_1core %.3f\n", v * 1000 / 1e9 }'
  "$encfs" encrypt --key k.key plain blob
  median_gbps encfs_encrypt_1thread "$encfs" --threads 1 encrypt --no-fsync --key k.key plain out.tmp
  median_gbps encfs_encrypt_allthreads "$encfs" encrypt --no-fsync --key k.key plain out.tmp
  median_gbps encfs_decrypt_1thread "$encfs" --threads 1 decrypt --no-fsync --key k.key blob out.tmp
  median_gbps encfs_decrypt_allthreads "$encfs" decrypt --no-fsync --key k.key blob out.tmp
  age -r "$recipient" -o blob.age plain
  median_gbps age_encrypt age -r "$recipient" -o out.tmp plain
  median_gbps age_decrypt age -d -i age.id -o out.tmp blob.age
  median_gbps page_cache_copy cp plain out.tmp
} | tee results.txt

python3 - "$size_mib" "$runs" "$(nproc)" results.txt > "$out_dir/crypto.md" <<'PY'
import sys
size, runs, cores, path = sys.argv[1:]
r = {k: float(v) for k, v in (line.split() for line in open(path))}
raw = max(r["ring_aes256gcm_64k_1core"], r["awslc_aes256gcm_64k_1core"], r["openssl_aes256gcm_64k_1core"])
rows = [
    ("raw AES-256-GCM, ring, 64 KiB, 1 core", "ring_aes256gcm_64k_1core"),
    ("raw AES-256-GCM, aws-lc-rs, 64 KiB, 1 core", "awslc_aes256gcm_64k_1core"),
    ("raw AES-256-GCM, openssl speed, 64 KiB, 1 core", "openssl_aes256gcm_64k_1core"),
    ("EBF seal in memory, 1 thread", "ebf_seal_64k_1thread"),
    ("EBF open in memory, 1 thread", "ebf_open_64k_1thread"),
    (f"EBF seal in memory, {cores} threads", "ebf_seal_64k_allthreads"),
    (f"EBF open in memory, {cores} threads", "ebf_open_64k_allthreads"),
    ("`encfs encrypt --threads 1` file → file", "encfs_encrypt_1thread"),
    (f"`encfs encrypt` ({cores} threads) file → file", "encfs_encrypt_allthreads"),
    ("`encfs decrypt --threads 1` file → file", "encfs_decrypt_1thread"),
    (f"`encfs decrypt` ({cores} threads) file → file", "encfs_decrypt_allthreads"),
    ("`age` encrypt file → file", "age_encrypt"),
    ("`age -d` decrypt file → file", "age_decrypt"),
    ("`cp` file → file (page-cache ceiling)", "page_cache_copy"),
]
print(f"{size} MiB random file, median of {runs} runs, {cores} cores; no tool fsyncs; files in the benchmark directory (tmpfs unless BENCH_DIR says otherwise).\n")
print("| measurement | GB/s | × fastest raw AES-GCM | × age (same direction) |")
print("|---|---:|---:|---:|")
for label, key in rows:
    age = ""
    if key.startswith("encfs_encrypt"):
        age = f"{r[key] / r['age_encrypt']:.1f}×"
    if key.startswith("encfs_decrypt"):
        age = f"{r[key] / r['age_decrypt']:.1f}×"
    print(f"| {label} | {r[key]:.2f} | {r[key] / raw:.2f} | {age} |")
def check(name, value, target):
    print(f"| {name} | {value:.2f} | ≥ {target} | {'met' if value >= target else 'NOT met'} |")
print("\n| target | measured | required | |\n|---|---:|---:|---|")
check("EBF seal 1 thread ÷ fastest raw AES-GCM", r["ebf_seal_64k_1thread"] / raw, 0.8)
check("EBF open 1 thread ÷ fastest raw AES-GCM", r["ebf_open_64k_1thread"] / raw, 0.8)
check(f"EBF seal {cores} threads ÷ 1 thread", r["ebf_seal_64k_allthreads"] / r["ebf_seal_64k_1thread"], 1.8)
check(f"`encfs encrypt` {cores} threads ÷ 1 thread", r["encfs_encrypt_allthreads"] / r["encfs_encrypt_1thread"], 1.8)
check("`encfs encrypt` ÷ age encrypt", r["encfs_encrypt_allthreads"] / r["age_encrypt"], 10)
check("`encfs decrypt` ÷ age decrypt", r["encfs_decrypt_allthreads"] / r["age_decrypt"], 10)
print("\n| segment size | decrypt work per random 4 KiB read | µs (1 core) | storage overhead |")
print("|---|---:|---:|---:|")
for kib in (4, 64, 1024, 16384):
    print(f"| {kib} KiB | {kib // 4}× the bytes returned | {r[f'random_4k_read_decrypt_us_{kib}k']:.1f} | {28 / (kib * 1024) * 100:.4f} % |")
PY
echo; cat "$out_dir/crypto.md"
