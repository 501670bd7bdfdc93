#!/usr/bin/env bash
# Key release requests per second against the local key vault, next to this machine's RSA-2048
# rates measured in the same run (`openssl speed rsa2048`: the vault signs one RSA-2048 JWS and
# makes one RSA-OAEP encryption per release; the SKR sidecar then decrypts once).
#
#   benches/keyvault_release.sh          # 1, 2, 4, 8 clients, 10 s each
#   benches/keyvault_release.sh --short  # 1 and 4 clients, 3 s each
#
# Writes bench-out/keyvault.md. The vault, the test authority and the clients share this
# process's machine (and the 2 cores of a small CI box), so the figure is a lower bound.
# KEYVAULT_BENCH_PROFILE=dev builds with the dev profile instead of --release (dependencies,
# where the RSA work is, are optimised at opt-level 2 there; the vault's own code is not).
set -euo pipefail
cd "$(dirname "$0")/.."
clients_list="1 2 4 8" seconds=10 speed_seconds=3
[[ "${1:-}" == "--short" ]] && clients_list="1 4" seconds=3

target=${CARGO_TARGET_DIR:-$PWD/target}
profile=${KEYVAULT_BENCH_PROFILE:-release}
if [[ $profile == dev ]]; then
  cargo build --locked -q -p encfs-benches --bin keyvault-release
  load=$target/debug/keyvault-release
else
  bash benches/build-release.sh
  load=$target/release/keyvault-release
fi

# OpenSSL 3.0/3.1 print "rsa 2048 bits <sign s> <verify s> <sign/s> <verify/s>"; 3.2+ add encrypt and
# decrypt: "... <sign/s> <verify/s> <encr./s> <decr./s>". Without a decrypt column, decrypt (a
# private-key operation like sign) is reported as the sign rate.
speed_line=$(openssl speed -seconds "$speed_seconds" rsa2048 2>/dev/null | awk '/^rsa 2048 bits/' | tail -1)
read -r sign_rate verify_rate decrypt_rate < <(python3 -c '
import sys
f = sys.argv[1].split()[3:]
rates = [x for x in f if not x.endswith("s")]
if len(rates) >= 4:
    print(rates[0], rates[1], rates[3])
else:
    print(rates[0], rates[1], rates[0] + "(=sign)")
' "$speed_line")
echo "openssl speed rsa2048 (1 core): sign ${sign_rate}/s, verify ${verify_rate}/s, decrypt ${decrypt_rate}/s"

mkdir -p bench-out
report=bench-out/keyvault.md
{
  echo "# Key release against the local key vault"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, mode ${1:---full}, build profile $profile."
  echo "openssl speed rsa2048 (one core, same run): sign ${sign_rate}/s, decrypt ${decrypt_rate}/s, verify ${verify_rate}/s."
  echo
  echo "| clients | releases/s | p50 ms | p99 ms | of openssl RSA-2048 sign/s |"
  echo "|---:|---:|---:|---:|---:|"
} >"$report"
for n in $clients_list; do
  line=$("$load" --clients "$n" --seconds "$seconds")
  read -r rps p50 p99 < <(python3 -c 'import json,sys;j=json.loads(sys.argv[1]);print(round(j["releases_per_second"]),round(j["p50_ms"],2),round(j["p99_ms"],2))' "$line")
  share=$(python3 -c "print(f'{$rps/float(\"$sign_rate\")*100:.0f} %')")
  printf '| %d | %d | %s | %s | %s |\n' "$n" "$rps" "$p50" "$p99" "$share" | tee -a "$report"
done
echo "wrote $report"
