#!/usr/bin/env bash
# FUSE mount throughput: encfs (cse, embedded store) vs gocryptfs vs rclone mount of a crypt
# remote (vfs-cache-mode off and full), with the fio jobs in benches/fio/; plus encfs on a store
# with 20 ms injected latency, and encfs's peak RSS while streaming a large file (alone, and while
# a second reader keeps one page of every MiB streamed in use).
#
#   benches/mount_vs_peers.sh          # full: 1 GiB files, 3 runs per cell, 4 GiB RSS stream
#   benches/mount_vs_peers.sh --short  # CI-sized: 256 MiB, 1 run, 1 GiB RSS stream
#
# Equal terms: every system's backing data (encfs store, gocryptfs cipher dir, rclone local
# remote, rclone's VFS cache) lives on tmpfs, warm in the page cache; every mount is made fresh
# before each run, so its own cache (and the kernel page cache of the mounted file) starts cold.
# fio's sequential write ends with fsync (end_fsync=1): encfs commits the blob then; gocryptfs
# and rclone write through to their backing files on tmpfs, where fsync costs nothing. encfs's
# parked copies of staged blocks (--scratch-dir; only for stores that cannot serve staged blocks
# back, so unused on the embedded store) would go to tmpfs too.
# Needs: fio, gocryptfs, rclone, fuse3 (apt-get install -y fio gocryptfs rclone fuse3), root.
# Writes bench-out/mount.md (table + ratios), bench-out/mount.json, and bench-out/mount.png when
# python3 has matplotlib.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=1024 runs=3 rss_gib=4 runtime=10
[[ "${1:-}" == "--short" ]] && size_mib=256 runs=1 rss_gib=1 runtime=4
for tool in fio gocryptfs rclone fusermount3 python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y fio gocryptfs rclone fuse3)" >&2; exit 1; }
done
bash benches/build-release.sh
encfs=$PWD/target/release/encfs
fio_dir=$PWD/benches/fio
bench_dir=$PWD/benches
out_dir=$PWD/bench-out && mkdir -p "$out_dir"
work=$(mktemp -d /dev/shm/encfs-mount.XXXXXX)
cleanup() {
  for m in "$work"/mnt-*; do mountpoint -q "$m" 2>/dev/null && fusermount3 -u -z "$m"; done
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
mkdir -p mnt-encfs mnt-gocryptfs mnt-rclone plain scratch
size=$((size_mib << 20))
head -c $size /dev/urandom > plain/f.bin

# --- the three systems, each holding the same file ---------------------------------------
"$encfs" key generate --out k.key >/dev/null
"$encfs" upload plain store/c --key k.key --create-container >/dev/null 2>&1
"$encfs" upload plain store/w --key k.key --create-container >/dev/null 2>&1  # the write container
echo pw > pw
mkdir gc
gocryptfs -q -init -passfile pw gc >/dev/null 2>&1
export RCLONE_CONFIG=$work/rclone.conf
printf "[loc]\ntype = local\n[cr]\ntype = crypt\nremote = loc:%s/rstore\npassword = %s\n" \
  "$work" "$(rclone obscure secret)" > "$RCLONE_CONFIG"
rclone copy plain cr:
gocryptfs -q -nosyslog -passfile pw gc mnt-gocryptfs >/dev/null 2>&1 && cp plain/f.bin mnt-gocryptfs/ && fusermount3 -u mnt-gocryptfs

wait_mounted() { for _ in $(seq 200); do mountpoint -q "$1" && return 0; sleep 0.05; done; echo "mount $1 failed" >&2; exit 1; }
unmount() { for _ in $(seq 100); do mountpoint -q "$1" || return 0; fusermount3 -u "$1" 2>/dev/null || sleep 0.1; done; fusermount3 -u -z "$1"; }
mount_system() {  # system [rw] -> prints the mount point
  case $1 in
    encfs|encfs-cold) "$encfs" mount store/c mnt-encfs --key k.key --daemon >/dev/null; echo mnt-encfs ;;
    encfs-rw) "$encfs" mount store/w mnt-encfs --key k.key --read-write --scratch-dir "$work/scratch" --daemon >/dev/null; echo mnt-encfs ;;
    encfs-20ms) ENCFS_DANGEROUS_INJECT_LATENCY_MS=20 "$encfs" mount store/c mnt-encfs --key k.key --daemon >/dev/null; echo mnt-encfs ;;
    # Ceilings: every segment already decrypted in encfs's cache, the kernel's page cache of the
    # mount dropped (what FUSE and the copies cost alone); and fio on the plaintext on tmpfs.
    encfs-warm)
      "$encfs" mount store/c mnt-encfs --key k.key --cache-size $((size_mib * 2))MiB --daemon >/dev/null
      python3 "$bench_dir/fill_cache.py" mnt-encfs/f.bin
      echo 1 > /proc/sys/vm/drop_caches
      echo mnt-encfs ;;
    tmpfs-plain) echo plain ;;
    gocryptfs|gocryptfs-rw) gocryptfs -q -nosyslog -passfile pw gc mnt-gocryptfs >/dev/null 2>&1; echo mnt-gocryptfs ;;
    rclone-off|rclone-off-rw) rclone mount cr: mnt-rclone --daemon --vfs-cache-mode off >/dev/null 2>&1; wait_mounted mnt-rclone; echo mnt-rclone ;;
    rclone-full|rclone-full-rw) rm -rf rcache; rclone mount cr: mnt-rclone --daemon --vfs-cache-mode full --cache-dir "$work/rcache" >/dev/null 2>&1; wait_mounted mnt-rclone; echo mnt-rclone ;;
  esac
}

results=$out_dir/mount.jsonl
: > "$results"
run_once() {  # system job run (run 0: a warm-up, not recorded)
  local system=$1 job=$2 run=$3 mnt file
  {
    mnt=$(mount_system "$system$([[ $job == seqwrite ]] && echo -rw)")
    file=$mnt/f.bin
    [[ $job == seqwrite ]] && file=$mnt/w.bin && rm -f "$file"
    # The machine's busy CPUs during the job (from /proc/stat): on 2 cores the warm ceiling may
    # already keep both busy, which bounds what the cold read (more CPU per byte) can reach.
    read -r _ u0 n0 s0 i0 w0 q0 sq0 _ < /proc/stat
    if ! FILE=$file SIZE=$size RUNTIME=$runtime fio --output-format=json "$fio_dir/$job.fio" > fio.json 2> fio.err; then
      # rclone with --vfs-cache-mode off refuses files opened read-write, as fio opens them.
      echo "   $system $job failed: $(tail -1 fio.err)" >&2
      echo '{}' > fio.json
    fi
    read -r _ u1 n1 s1 i1 w1 q1 sq1 _ < /proc/stat
    busy=$(( (u1 + n1 + s1 + q1 + sq1) - (u0 + n0 + s0 + q0 + sq0) ))
    idle=$(( (i1 + w1) - (i0 + w0) ))
    [[ $run == 0 ]] || python3 - "$system" "$job" "$run" "$busy" "$idle" "$(nproc)" >> "$results" <<'PY'
import json, sys
jobs = json.load(open("fio.json")).get("jobs")
side = "write" if sys.argv[2] == "seqwrite" else "read"
bw = sum(j[side]["bw_bytes"] for j in jobs) if jobs else None
iops = sum(j[side]["iops"] for j in jobs) if jobs else None
busy, idle, cpus = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
cores = cpus * busy / (busy + idle) if busy + idle else None
print(json.dumps({"system": sys.argv[1], "job": sys.argv[2], "run": int(sys.argv[3]), "bw": bw, "iops": iops, "busy_cores": cores}))
PY
    [[ $job == seqwrite ]] && rm -f "$file"
    unmount "$mnt"
    # Let the unmounted daemon finish exiting (rclone takes up to 2 s) before the next run.
    sleep 2
  }
}
# Runs are interleaved, and the order of the systems rotates from run to run, so no system always
# runs first after another job (run back to back, encfs's first run of a cell was often slow).
systems=(encfs gocryptfs rclone-off rclone-full)
run_once encfs seqread 0
for job in seqread seqread4 randread seqwrite; do
  for run in $(seq "$runs"); do
    for k in 0 1 2 3; do
      system=${systems[$(((k + run - 1) % 4))]}
      echo "== $system $job run $run" >&2
      run_once "$system" "$job" "$run"
    done
  done
done
# The ceilings, each run beside a cold encfs run of its own (`encfs-cold`, the same mount as
# `encfs`): cold ÷ warm is the median of those pairs' ratios, taken minutes apart from nothing
# else (the peers' cells above leave rclone's and gocryptfs's daemons exiting, and a noisy machine
# drifts between the cells and this loop).
for run in $(seq "$runs"); do
  for system in encfs-20ms encfs-cold encfs-warm tmpfs-plain; do
    echo "== $system seqread run $run" >&2
    run_once "$system" seqread "$run"
  done
  for system in encfs-cold encfs-warm tmpfs-plain; do
    echo "== $system seqread4 run $run" >&2
    run_once "$system" seqread4 "$run"
  done
done

# --- peak RSS of encfs streaming a large file ------------------------------------------------
truncate -s "${rss_gib}G" plain-rss.bin
mkdir rss && mv plain-rss.bin rss/big.bin
"$encfs" upload rss store/rss --key k.key --create-container >/dev/null 2>&1
rm -rf rss
status=$("$encfs" mount store/rss mnt-encfs --key k.key --cache-size 256MiB --daemon)
pid=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["pid"])' "$status")
cat mnt-encfs/big.bin > /dev/null
hwm_kib=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
unmount mnt-encfs
# The same stream while a second reader keeps one 4 KiB page of every MiB streamed so far in use
# (that page dropped from the kernel's page cache before each read, so every read reaches the
# mount and touches its segment): the budget must bound the memory the cache keeps alive, not
# only what it counts (a segment that kept its whole 2 MiB fetch buffer alive made this grow with
# the file).
status=$("$encfs" mount store/rss mnt-encfs --key k.key --cache-size 256MiB --daemon)
pid=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["pid"])' "$status")
python3 - mnt-encfs/big.bin <<'PY'
import os, sys
path = sys.argv[1]
size, mib = os.path.getsize(path), 1 << 20
stream, hot = os.open(path, os.O_RDONLY), os.open(path, os.O_RDONLY)
os.posix_fadvise(hot, 0, 0, os.POSIX_FADV_RANDOM)
done = 0
while done < size:
    for _ in range(16):
        n = len(os.read(stream, mib))
        done += n
    for off in range(0, max(done - mib, 0), mib):
        os.posix_fadvise(hot, off, 4096, os.POSIX_FADV_DONTNEED)
        os.pread(hot, 4096, off)
    if n == 0:
        break
PY
hot_hwm_kib=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
unmount mnt-encfs
rm -rf store/rss

python3 - "$results" "$out_dir" "$size_mib" "$runs" "$hwm_kib" "$rss_gib" "$hot_hwm_kib" <<'PY'
import json, os, statistics, sys
results, out_dir, size_mib, runs, hwm_kib, rss_gib, hot_hwm_kib = sys.argv[1:]
rows = [json.loads(l) for l in open(results)]
def med(system, job, key):
    xs = [r[key] for r in rows if r["system"] == system and r["job"] == job and r.get(key) is not None]
    return statistics.median(xs) if xs else float("nan")
def busy(system, job):
    return med(system, job, "busy_cores")
def cpu_per_gib(system, job):  # busy cores ÷ GiB per second = CPU-seconds per GiB
    return busy(system, job) / (med(system, job, "bw") / (1 << 30))
systems = ["encfs", "gocryptfs", "rclone-off", "rclone-full"]
jobs = [("seqread", "bw", "seq read 1 MiB, 1 job", "GB/s"), ("seqread4", "bw", "seq read 1 MiB, 4 jobs", "GB/s"),
        ("randread", "iops", "random read 4 KiB", "IOPS"), ("seqwrite", "bw", "seq write 1 MiB + fsync", "GB/s")]
fmt = lambda v, unit: "failed" if v != v else (f"{v/1e9:.2f}" if unit == "GB/s" else f"{v:,.0f}")
lines = [f"File: {size_mib} MiB, median of {runs} run(s) per cell, fresh mount per run, backing data on tmpfs.", "",
         "| test | unit | " + " | ".join(systems) + " | encfs / gocryptfs | encfs / rclone (off) | encfs / rclone (full) |",
         "|---|---|" + "---|" * (len(systems) + 3)]
summary = {}
for job, key, label, unit in jobs:
    vals = {s: med(s, job, key) for s in systems}
    summary[job] = vals
    ratios = [vals["encfs"] / vals[s] if vals[s] else float("nan") for s in ("gocryptfs", "rclone-off", "rclone-full")]
    lines.append(f"| {label} | {unit} | " + " | ".join(fmt(vals[s], unit) for s in systems) + " | " +
                 " | ".join("—" if r != r else f"{r:.2f}×" for r in ratios) + " |")
lat = med("encfs-20ms", "seqread", "bw")
base = summary["seqread"]["encfs"]
rss_mib = int(hwm_kib) / 1024
hot_rss_mib = int(hot_hwm_kib) / 1024
warm, plain = med("encfs-warm", "seqread", "bw"), med("tmpfs-plain", "seqread", "bw")
goc = summary["seqread"]["gocryptfs"]
warm4, plain4 = med("encfs-warm", "seqread4", "bw"), med("tmpfs-plain", "seqread4", "bw")
goc4 = summary["seqread4"]["gocryptfs"]
def paired(job):  # median over runs of encfs-cold ÷ encfs-warm, each pair run back to back
    by_run = lambda system: {r["run"]: r["bw"] for r in rows if r["system"] == system and r["job"] == job and r.get("bw")}
    cold, hot = by_run("encfs-cold"), by_run("encfs-warm")
    ratios = [cold[r] / hot[r] for r in sorted(cold) if r in hot]
    return statistics.median(ratios) if ratios else float("nan"), ratios
cold1, cold1_runs = paired("seqread")
cold4, cold4_runs = paired("seqread4")
show = lambda xs: ", ".join(f"{x:.0%}" for x in xs)
lines += ["", f"encfs seq read with 20 ms per store request: {lat/1e9:.2f} GB/s = {lat/base:.0%} of no latency (target ≥ 50%).",
          f"Ceilings of the 1-job seq read here: encfs with every segment already in its cache (no store read, no decryption; "
          f"the kernel page cache dropped) {warm/1e9:.2f} GB/s = {warm/goc:.2f}× gocryptfs; fio on the plaintext on tmpfs, "
          f"no FUSE, {plain/1e9:.2f} GB/s = {plain/goc:.2f}× gocryptfs. 2× gocryptfs is {2*goc/1e9:.2f} GB/s.",
          f"Ceilings of the 4-job seq read, the same way: encfs warm {warm4/1e9:.2f} GB/s = {warm4/goc4:.2f}× gocryptfs; "
          f"fio on tmpfs {plain4/1e9:.2f} GB/s = {plain4/goc4:.2f}× gocryptfs.",
          f"encfs cold ÷ warm (target ≥ 75%), median of pairs run back to back: {cold1:.0%} with 1 job ({show(cold1_runs)}), "
          f"{cold4:.0%} with 4 jobs ({show(cold4_runs)}); the paired cold runs gave {med('encfs-cold', 'seqread', 'bw')/1e9:.2f} / "
          f"{med('encfs-cold', 'seqread4', 'bw')/1e9:.2f} GB/s.",
          f"Busy CPUs during those reads (of {os.cpu_count()}): encfs cold {busy('encfs-cold', 'seqread'):.2f} (1 job) / "
          f"{busy('encfs-cold', 'seqread4'):.2f} (4 jobs), warm {busy('encfs-warm', 'seqread'):.2f} / {busy('encfs-warm', 'seqread4'):.2f}; "
          f"CPU-seconds per GiB read: cold {cpu_per_gib('encfs-cold', 'seqread'):.2f} / {cpu_per_gib('encfs-cold', 'seqread4'):.2f}, "
          f"warm {cpu_per_gib('encfs-warm', 'seqread'):.2f} / {cpu_per_gib('encfs-warm', 'seqread4'):.2f}.",
          f"encfs peak RSS streaming a {rss_gib} GiB file with --cache-size 256MiB: {rss_mib:.0f} MiB (target ≤ 320 MiB); "
          f"the same while a second reader keeps one 4 KiB page of every MiB streamed in use: {hot_rss_mib:.0f} MiB (target ≤ 320 MiB).", "",
          "Targets: seq read ≥ 2× gocryptfs and ≥ 4× rclone mount; seq write ≥ 2× gocryptfs; random read ≥ 1.5× gocryptfs.",
          "\"failed\": rclone with --vfs-cache-mode off refuses files opened read-write, which is how fio opens files it writes."]
text = "\n".join(lines)
print(text)
open(f"{out_dir}/mount.md", "w").write(text + "\n")
json.dump({"size_mib": int(size_mib), "runs": int(runs), "medians": summary, "latency_20ms_seqread": lat,
           "ceiling_encfs_warm_seqread": warm, "ceiling_tmpfs_plain_seqread": plain,
           "ceiling_encfs_warm_seqread4": warm4, "ceiling_tmpfs_plain_seqread4": plain4,
           "cold_over_warm_seqread": cold1, "cold_over_warm_seqread4": cold4,
           "peak_rss_mib": rss_mib, "peak_rss_hot_pages_mib": hot_rss_mib,
           "busy_cores": {f"{s}/{j}": busy(s, j) for s in ("encfs", "encfs-cold", "encfs-warm") for j in ("seqread", "seqread4")}}, open(f"{out_dir}/mount.json", "w"), indent=1)
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("(matplotlib not installed: no plot)")
    sys.exit(0)
fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
colors = ["#2a6f97", "#e09f3e", "#9e2a2b", "#540b0e"]
for ax, (job, key, label, unit) in zip(axes, jobs):
    vals = [0 if summary[job][s] != summary[job][s] else summary[job][s] / (1e9 if unit == "GB/s" else 1) for s in systems]
    ax.bar(systems, vals, color=colors)
    ax.set_title(label, fontsize=10)
    ax.set_ylabel(unit)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
fig.suptitle(f"FUSE mounts, {size_mib} MiB file, backing on tmpfs (median of {runs})", fontsize=11)
fig.tight_layout()
fig.savefig(f"{out_dir}/mount.png", dpi=110)
print(f"plot: {out_dir}/mount.png")
PY
