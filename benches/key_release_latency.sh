#!/usr/bin/env bash
# Key release latency: from "sidecars ready" (the skr's runtime key already generated, skr and
# secrets sidecars listening) to "DEK returned by POST /secrets/unwrap", over N requests, with the
# real virtual attestation authority, key vault and identity endpoint on loopback (in one
# process: sidecars/tests/release_chain.rs, test `key_release_latency`). Target: median <= 200 ms.
# Prints the table and writes it to bench-out/key_release.md.
#
#   benches/key_release_latency.sh          # full: 200 requests, release build
#   benches/key_release_latency.sh --short  # CI: 20 requests, the test (debug) profile, run by
#                                           # nextest over the workspace so it reuses the test
#                                           # suite's build instead of building the crate again
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--short" ]] && cargo nextest --version >/dev/null 2>&1; then
  ENCFS_BENCH_REQUESTS=20 cargo nextest run --workspace --locked --run-ignored only --no-capture \
    -E 'binary(release_chain) & test(=key_release_latency)'
  exit
fi
requests=200 profile=(--release)
[[ "${1:-}" == "--short" ]] && requests=20 profile=()
ENCFS_BENCH_REQUESTS=$requests cargo test --locked -q "${profile[@]}" -p encfs-sidecars \
  --test release_chain -- --ignored --exact key_release_latency --nocapture
