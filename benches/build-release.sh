#!/usr/bin/env bash
# The one release build every benchmark script uses: the same packages and features each time, so
# the first script builds and the others find it done (a different package set would unify
# features differently and rebuild the dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q -p encfs-cli -p encfs-benches
