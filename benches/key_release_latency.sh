#!/usr/bin/env bash
# Key release latency, two measurements (target for both: median <= 200 ms):
#  1. "sidecars ready" (the skr's runtime key already generated, skr and secrets sidecars
#     listening) to "DEK returned by POST /secrets/unwrap", over N requests, with the real
#     virtual attestation authority, key vault and identity endpoint on loopback (in one process:
#     sidecars/tests/release_chain.rs, test `key_release_latency`);
#  2. "sidecars ready" to "DEK in the mount": the whole `encfs mount --key-release` start, spawn
#     to ready status file, every service a real `encfs` daemon (cli/tests/key_release_chain.rs,
#     test `dek_in_the_mount_latency`), paired with the same mount from a key file. It drives the
#     shared release build of `encfs` (benches/build-release.sh) through ENCFS_BENCH_BIN.
# Prints the tables and writes them to bench-out/key_release.md and key_release_mount.md.
#
#   benches/key_release_latency.sh          # full: 200 requests, 30 mount pairs, release build
#   benches/key_release_latency.sh --short  # CI: 20 requests, 5 mount pairs; the harnesses are
#                                           # the test suite's (debug) build, run by nextest over
#                                           # the workspace so nothing is built again
set -euo pipefail
cd "$(dirname "$0")/.."
bash benches/build-release.sh
export ENCFS_BENCH_BIN=$PWD/target/release/encfs
requests=200 mounts=30
[[ "${1:-}" == "--short" ]] && requests=20 mounts=5
export ENCFS_BENCH_REQUESTS=$requests ENCFS_BENCH_MOUNTS=$mounts
mount_test='binary(key_release_chain) & test(=dek_in_the_mount_latency)'
if [[ "${1:-}" == "--short" ]]; then
  cargo nextest run --workspace --locked --run-ignored only --no-capture --test-threads 1 \
    -E "binary(release_chain) & test(=key_release_latency) | $mount_test"
  exit
fi
cargo test --locked -q --release -p encfs-sidecars --test release_chain -- --ignored --exact \
  key_release_latency --nocapture
cargo nextest run --workspace --locked --run-ignored only --no-capture -E "$mount_test"
