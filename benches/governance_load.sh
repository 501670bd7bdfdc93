#!/usr/bin/env bash
# The governance service under load, next to this machine's limits measured in the same run.
#
#   benches/governance_load.sh          # full: 1..64 members, 10 s each
#   benches/governance_load.sh --short  # CI: 1, 4, 16, 64 members, 3 s each
#
# N members (each on its own HTTPS connection) submit signed requests as fast as the service
# acknowledges them: a proposal, a ballot on it, its withdrawal. Every acknowledgement waits for
# the ledger's fsync (group commit). Limits, measured here: ECDSA P-384 verifications per second
# (`openssl speed ecdsap384`, one core: the service verifies one signature per request) and
# 4 KiB append + fdatasync per second on the ledger's disk. Target: throughput >= 50 % of the
# lower limit. Also the latency of one `encfs governance` CLI call (process start, TLS, COSE
# signing, round trip, commit wait): target median <= 50 ms.
set -euo pipefail
cd "$(dirname "$0")/.."
members_list="1 2 4 8 16 32 64" seconds=10 cli_runs=30
[[ "${1:-}" == "--short" ]] && members_list="1 4 16 64" seconds=3 cli_runs=15

bash benches/build-release.sh
encfs=$PWD/target/release/encfs load=$PWD/target/release/governance-load
work=$(mktemp -d "${TMPDIR:-/tmp}/gov-bench.XXXXXX")
cleanup() {
  [[ -f $work/svc/service.json ]] && "$encfs" governance service stop --data "$work/svc" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

verify_rate=$(openssl speed -seconds 2 ecdsap384 2>/dev/null | awk '/\(nistp384\)/ {print $NF}' | tail -1)
mkdir -p "$work/svc"
fsync_rate=$("$load" --fsync-rate "$work/svc" --seconds 2 | python3 -c 'import json,sys;print(round(json.load(sys.stdin)["fsyncs_per_second"]))')
limit=$(python3 -c "print(min(float('$verify_rate'), float('$fsync_rate')))")
echo "machine limits: ECDSA P-384 verify ${verify_rate}/s (1 core), fsync ${fsync_rate}/s  ->  lower: $limit/s"

max_members=64
initial=()
for i in $(seq 0 $((max_members - 1))); do
  "$encfs" governance member keygenerator --name "m$i" --out "$work/keys" >/dev/null
  initial+=(--initial-member "$work/keys/m${i}_cert.pem")
done
status=$("$encfs" governance service start --data "$work/svc" --listen 127.0.0.1:0 --daemon "${initial[@]}")
endpoint=$(python3 -c 'import json,sys;print(json.loads(sys.argv[1])["endpoint"])' "$status")
cert=$work/svc/service_cert.pem

"$load" --endpoint "$endpoint" --service-cert "$cert" --keys "$work/keys" --members $max_members --seconds 0 --activate >/dev/null

printf '\n| members | requests/s | p50 ms | p99 ms | of the lower limit |\n|---:|---:|---:|---:|---:|\n'
best=0
for n in $members_list; do
  line=$("$load" --endpoint "$endpoint" --service-cert "$cert" --keys "$work/keys" --members "$n" --seconds "$seconds")
  read -r rps p50 p99 < <(python3 -c 'import json,sys;j=json.loads(sys.argv[1]);print(round(j["requests_per_second"]),round(j["p50_ms"],2),round(j["p99_ms"],2))' "$line")
  share=$(python3 -c "print(f'{$rps/$limit*100:.0f} %')")
  printf '| %d | %d | %s | %s | %s |\n' "$n" "$rps" "$p50" "$p99" "$share"
  best=$(python3 -c "print(max($best, $rps))")
done

# One CLI call: a signed ballot (idempotent, so it can repeat) through a client profile.
export ENCFS_GOVERNANCE_CONFIG=$work/clients.yaml
"$encfs" governance client deploy --ccf-endpoint "$endpoint" --signing-cert "$work/keys/m0_cert.pem" \
  --signing-key "$work/keys/m0_privk.pem" --service-cert "$cert" --name m0 >/dev/null
proposal=$("$encfs" governance member set-tenant-id --tenant-id t --governance-client m0 --query proposalId --output tsv)
times=()
for _ in $(seq "$cli_runs"); do
  t0=$(date +%s%N)
  "$encfs" governance proposal vote --proposal-id "$proposal" --action accept --governance-client m0 >/dev/null
  times+=($(( ($(date +%s%N) - t0) / 1000 )))
done
cli_ms=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1000}')

"$encfs" governance service stop --data "$work/svc" >/dev/null
verified=$("$encfs" governance ledger verify "$work/svc" --query transactions --output tsv)
echo
echo "best throughput: $best requests/s = $(python3 -c "print(f'{$best/$limit*100:.0f} %')") of the lower limit (target >= 50 %)"
echo "one CLI call (signed ballot, process start to exit): median $cli_ms ms over $cli_runs (target <= 50 ms)"
echo "ledger after the run: $verified transactions, verified offline"
