#!/usr/bin/env bash
# The seed's multi-party collaboration, end to end on one machine (README command 1): three
# parties with separate key directories. The ISV hosts governance and the clean room; the
# publisher brings an encrypted dataset; the consumer brings the application and an encrypted
# output datasink. Every step of the walkthrough runs in order and prints as a transcript; then
# the negative paths. Everything runs on 127.0.0.1 in a fresh temporary directory, removed at the
# end. Needs root and /dev/fuse (the clean room mounts datasources and runs the application in
# namespaces); fuse3 is installed when missing.
#
#   examples/multi-party-collab/run.sh             # builds encfs (release) first
#   ENCFS_BIN=path/to/encfs examples/multi-party-collab/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
if ! command -v fusermount3 >/dev/null && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 >/dev/null
fi
if [[ -z ${ENCFS_BIN:-} ]]; then
  bash "$repo/benches/build-release.sh"
  ENCFS_BIN=$repo/target/release/encfs
fi
encfs=$ENCFS_BIN
work=$(mktemp -d "${TMPDIR:-/tmp}/encfs-collab.XXXXXX")
services=()
cleanup() {
  set +e
  [[ -f $work/isv/cleanroom/cleanroom.json ]] && "$encfs" cleanroom stop --data "$work/isv/cleanroom" >/dev/null 2>&1
  for ((i = ${#services[@]} - 1; i >= 0; i--)); do eval "${services[i]}" >/dev/null 2>&1; done
  grep -s ' fuse' /proc/mounts | awk '{print $2}' | grep "^$work" | xargs -r -n1 fusermount3 -u -z
  [[ -n ${ENCFS_KEEP_WORK:-} ]] && echo "(kept $work)" || rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
t0=$SECONDS
step() { printf '\n\033[1m[%s]$ %s\033[0m\n' "$party" "$*"; "$@"; }
say() { printf '\n\033[1;34m## %s\033[0m\n' "$*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }
# Each party has its own directory of keys and configs.
as() {
  party=$1
  export ENCFS_CONFIG=$work/$1/datastores.yaml
  export ENCFS_SECRETSTORE_CONFIG=$work/$1/secretstores.yaml
  export ENCFS_GOVERNANCE_CONFIG=$work/$1/governance-clients.yaml
  cd "$work/$1"
}
gov() { "$encfs" governance "$@"; }
q() { local query=$1; shift; "$encfs" governance "$@" --query "$query" --output tsv; }
mkdir -p isv publisher consumer

say "1. The platform and the consortium (ISV)"
as isv
# The INSECURE virtual attestation authority stands in for the SNP hardware and MAA.
step "$encfs" attestation serve --listen 127.0.0.1:0 --data authority --daemon
services+=("'$encfs' attestation stop --data '$work/isv/authority'")
authority=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["endpoint"])' authority/service.json)
authority_ca=$work/isv/authority/authority-ca.pem
# The key vault service (Azure Key Vault's REST API) with one identity per party.
step "$encfs" keyvault serve --listen 127.0.0.1:0 --data vault --trust-authority-ca "$authority_ca" --daemon
services+=("'$encfs' keyvault stop --data '$work/isv/vault'")
vault=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["endpoint"])' vault/service.json)
vault_ca=$work/isv/vault/ca.pem
for who in publisher consumer cleanroom; do
  "$encfs" keyvault identity create --data vault --name "$who" --out "$work/isv/$who-cred.json" >/dev/null
done
cp publisher-cred.json ../publisher/vault-cred.json
cp consumer-cred.json ../consumer/vault-cred.json
step gov member keygenerator --name isv --out keys
step gov service start --data ccf --listen 127.0.0.1:0 --initial-member keys/isv_cert.pem \
  --attestation-authority-ca "$authority_ca" --daemon
services+=("'$encfs' governance service stop --data '$work/isv/ccf'")
ccf=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["endpoint"])' ccf/service.json)
cp ccf/service_cert.pem ../publisher/ && cp ccf/service_cert.pem ../consumer/
step gov client deploy --ccf-endpoint "$ccf" --signing-cert keys/isv_cert.pem --signing-key keys/isv_privk.pem \
  --service-cert ccf/service_cert.pem --name isv
step gov member activate --governance-client isv
voters=(isv)
vote() { # vote PROPOSAL: every active member accepts
  local p=$1 who
  for who in "${voters[@]}"; do
    (as "$who"; gov proposal vote --proposal-id "$p" --action accept --governance-client "$who" >/dev/null)
  done
}
for who in publisher consumer; do
  as "$who"
  step gov member keygenerator --name "$who" --out keys
  cp "keys/${who}_cert.pem" ../isv/
  as isv
  p=$(q proposalId member add --certificate "${who}_cert.pem" --identifier "$who" --governance-client isv)
  vote "$p"
  as "$who"
  step gov client deploy --ccf-endpoint "$ccf" --signing-cert "keys/${who}_cert.pem" \
    --signing-key "keys/${who}_privk.pem" --service-cert service_cert.pem --name "$who"
  step gov member activate --governance-client "$who"
  voters+=("$who")
done

say "2. The publisher's encrypted dataset and log collection"
as publisher
mkdir -p dataset/mydata
python3 - <<'PY'
import random
r = random.Random(7)
with open("dataset/mydata/sales.csv", "w") as f:
    f.write("id,amount,region\n")
    f.writelines(f"{i},{r.random() * 1000:.2f},{r.choice(['eu', 'us', 'apac'])}\n" for i in range(50_000))
with open("dataset/mydata/regions.csv", "w") as f:
    f.write("region,name\neu,Europe\nus,United States\napac,Asia Pacific\n")
PY
# Its blob names are encrypted too: the storage account shows neither file names nor the tree.
step "$encfs" datastore add --name publisher-input --store "$work/storage/publisher-input" --encrypt-names
step "$encfs" upload dataset --datastore publisher-input --create-container
step ls "$work/storage/publisher-input/blobs"
! ls "$work/storage/publisher-input/blobs" | grep -q -e sales -e regions -e mydata || fail "a plaintext name in the store"
# The publisher seals the dataset with its member identity: the manifest (every blob's name,
# EBF header, size, segment-tag digest) is stored beside the data; the spec pins its digest.
step "$encfs" dataset seal --datastore publisher-input --governance-client publisher --output-file manifest.cose
step "$encfs" secretstore add --name publisher-kv --backing-store-type azure-keyvault-premium \
  --backing-store-id "$vault" --attestation-endpoint "$authority" --credential vault-cred.json --ca "$vault_ca"
step "$encfs" config init --cleanroom-config publisher.yaml
step "$encfs" config add-datasource --cleanroom-config publisher.yaml --datastore-name publisher-input \
  --dek-secret-store publisher-kv --kek-secret-store publisher-kv --kek-name publisher-kek \
  --manifest manifest.cose --manifest-signer-cert keys/publisher_cert.pem
digest=$(python3 -c 'import hashlib,sys; print("sha256:" + hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' manifest.cose)
grep -q "digest: $digest" publisher.yaml || fail "the spec does not pin the manifest"
step "$encfs" config set-logging --cleanroom-config publisher.yaml --storage-account "$work/storage" \
  --dek-secret-store publisher-kv --kek-secret-store publisher-kv --kek-name publisher-kek --encryption-mode cse
cp publisher.yaml ../consumer/

say "3. The consumer's output datasink and application"
as consumer
step "$encfs" datastore add --name consumer-output --store "$work/storage/consumer-output"
step "$encfs" secretstore add --name consumer-kv --backing-store-type azure-keyvault-premium \
  --backing-store-id "$vault" --attestation-endpoint "$authority" --credential vault-cred.json --ca "$vault_ca"
step "$encfs" config init --cleanroom-config consumer.yaml
step "$encfs" config add-datasink --cleanroom-config consumer.yaml --datastore-name consumer-output \
  --dek-secret-store consumer-kv --kek-secret-store consumer-kv --kek-name consumer-kek
# The application: reads every file of the publisher's dataset and writes it gzip-compressed.
app=$(cat "$here/app.py")
step "$encfs" config add-application --cleanroom-config consumer.yaml --name demo-app \
  --image localhost/demo-app:1 --command "python3 -c '$app'" \
  --datasources publisher-input=/mnt/remote/input --datasinks consumer-output=/mnt/remote/output \
  --env INPUT_LOCATION=/mnt/remote/input --env OUTPUT_LOCATION=/mnt/remote/output \
  --cpu 0.5 --memory 0.5 --auto-start
step "$encfs" config view --cleanroom-config consumer.yaml --configs publisher.yaml --output-file collab.yaml --no-print
step "$encfs" config validate --cleanroom-config collab.yaml

say "4. The contract, proposed and accepted by everyone"
step gov contract create --id collab --data @collab.yaml --governance-client consumer
version=$(q version contract show --id collab --governance-client consumer)
p=$(q proposalId contract propose --id collab --version "$version" --governance-client consumer)
for who in "${voters[@]}"; do
  (as "$who"; step gov contract vote --id collab --proposal-id "$p" --action accept --governance-client "$who" >/dev/null)
done
state=$(q state contract show --id collab --governance-client consumer)
[[ $state == Accepted ]] || fail "contract state $state"

say "5. The deployment: generated, proposed, accepted; logging and telemetry enabled"
as isv
step gov deployment generate --contract-id collab --governance-client isv --output-dir deployment \
  --attestation-authority "$authority"
step ls deployment
p=$(q proposalId deployment template propose --template-file deployment/cleanroom-arm-template.json --contract-id collab --governance-client isv); vote "$p"
p=$(q proposalId deployment policy propose --policy-file deployment/cleanroom-governance-policy.json --contract-id collab --governance-client isv); vote "$p"
for option in logging telemetry; do
  p=$(q proposalId contract runtime-option propose --option "$option" --action enable --contract-id collab --governance-client isv); vote "$p"
done
step gov deployment policy show --contract-id collab --governance-client isv

say "6. Each owner wraps its DEKs for exactly that clean room"
for who in publisher consumer; do
  as "$who"
  spec=$([[ $who == publisher ]] && echo publisher.yaml || echo consumer.yaml)
  step "$encfs" config wrap-deks --contract-id collab --cleanroom-config "$spec" --governance-client "$who"
done

say "7. The clean room runs (ISV)"
as isv
run_args=(--contract-id collab --governance-client isv --authority-ca "$authority_ca"
  --identity-credential cleanroom-cred.json --trust-ca "$vault_ca" --launcher-listen 127.0.0.1:0)
run_start=$(date +%s%N)
step "$encfs" cleanroom run "${run_args[@]}" --template deployment/cleanroom-arm-template.json --data cleanroom --verbose
run_end=$(date +%s%N)
first=$(python3 -c 'import json,sys; print(next(json.loads(l)["log"].split()[-1] for l in open(sys.argv[1]) if "started at" in l))' cleanroom/telemetry/application/demo-app.log)
echo "(clean room ran in $(( (run_end - run_start) / 1000000 )) ms; the application's first instruction came $(( (first - run_start) / 1000000 )) ms after 'cleanroom run' started)"
echo "startup_ms=$(( (first - run_start) / 1000000 ))" > "$work/startup.txt"
# The clean room's infrastructure telemetry is OpenTelemetry (OTLP/JSON): one trace whose root is
# the run, with the policy check, each container's start, the mounts and the application's run;
# the containers' logs as log records; gauges.
step ls cleanroom/telemetry/infrastructure
python3 - cleanroom/telemetry/infrastructure <<'PY' || fail "the clean room's OpenTelemetry is incomplete"
import json, os, sys
d = sys.argv[1]
def records(name, outer, inner, items):
    for line in open(os.path.join(d, name)):
        for r in json.loads(line)[outer]:
            service = next(a["value"]["stringValue"] for a in r["resource"]["attributes"] if a["key"] == "service.name")
            for s in r[inner]:
                for item in s[items]:
                    yield service, item
spans = list(records("traces.otlp.jsonl", "resourceSpans", "scopeSpans", "spans"))
names = {s["name"] for _, s in spans}
need = {"cleanroom.run", "cleanroom.policy_check", "cleanroom.container_start", "mount.start", "mount.serve", "application.run"}
assert need <= names, f"missing spans: {need - names}"
assert len({s["traceId"] for _, s in spans}) == 1, "more than one trace"
root = next(s for _, s in spans if s["name"] == "cleanroom.run")
assert "parentSpanId" not in root and all(s.get("parentSpanId") == root["spanId"] for _, s in spans if s is not root)
logs = list(records("logs.otlp.jsonl", "resourceLogs", "scopeLogs", "logRecords"))
services = {service for service, _ in logs}
metrics = {m["name"] for _, m in records("metrics.otlp.jsonl", "resourceMetrics", "scopeMetrics", "metrics")}
assert {"encfs.cleanroom.startup_duration", "encfs.mount.ready_duration", "encfs.application.exit_code"} <= metrics, metrics
print(f"{len(spans)} spans in one trace ({', '.join(sorted(names))}); {len(logs)} log records from {len(services)} containers; gauges {', '.join(sorted(metrics))}")
PY
# Where the test command made it (scripts/otel-venv.sh), OpenTelemetry's own protobuf types read them too.
if [[ -x $repo/target/otel-venv/bin/python ]]; then
  "$repo/target/otel-venv/bin/python" "$repo/cleanroom/tests/otlp_check.py" cleanroom/telemetry/infrastructure/*.otlp.jsonl >/dev/null \
    || fail "opentelemetry-proto does not read the clean room's telemetry"
  echo "(opentelemetry-proto parses every line as an OTLP export request)"
fi

say "8. The consumer downloads the output; the publisher reads the application log"
as consumer
step "$encfs" datasink download --cleanroom-config collab.yaml --name consumer-output --target-folder out
step gunzip -k out/consumer-output/mydata/sales.csv.gz
step cmp out/consumer-output/mydata/sales.csv ../publisher/dataset/mydata/sales.csv
as publisher
step "$encfs" logs download --cleanroom-config ../consumer/collab.yaml --target-folder logs
step cat logs/*/demo-app.log
as consumer
step gov contract event list --contract-id collab --governance-client consumer --all > events.txt
cat events.txt
grep -q "publisher-input serves the dataset of manifest $digest" events.txt || fail "no audit event names the manifest"
# The clean room sealed the output's manifest with a key its attestation binds: the consumer
# checks the token against the authority, its key against the signature, its hostdata against
# the accepted policy's, then every blob.
hostdata=$(gov deployment policy show --contract-id collab --governance-client consumer | python3 -c '
import json, sys
def find(v):
    if isinstance(v, dict):
        for k, x in v.items():
            found = (x[0] if isinstance(x, list) else x) if k == "x-ms-sevsnpvm-hostdata" else find(x)
            if found:
                return found
print(find(json.load(sys.stdin)))')
step "$encfs" dataset verify --datastore consumer-output --attestation-authority "$authority" \
  --authority-ca ../isv/authority/authority-ca.pem --hostdata "$hostdata"
if "$encfs" dataset verify --datastore consumer-output --attestation-authority "$authority" \
  --authority-ca ../isv/authority/authority-ca.pem --hostdata "$(printf '0%.0s' {1..64})" 2>err.txt; then
  fail "a manifest of another clean room's policy was accepted"
fi
cat err.txt
grep -q "not 0000" err.txt || fail "wrong refusal"

say "9. Negative paths"
# Two blobs of the publisher's store swapped by whoever can write to the storage account: the
# pinned manifest names each blob's version, so the clean room's mount refuses both (EIO at
# open) and the application fails, naming the file.
blobs=$work/storage/publisher-input/blobs
# The embedded store keeps one file per blob, its name percent-encoded; the names are encrypted,
# so the attacker sees two blobs in one directory (a '/', %2F, in their names), the names marker
# and the manifest at the root.
mapfile -t data_blobs < <(cd "$blobs" && ls | grep '%2F')
manifest_blob=$(cd "$blobs" && ls | grep -v '%2F' | grep -vx '%2Eencfs-names')
((${#data_blobs[@]} == 2)) && [[ -n $manifest_blob && $manifest_blob != *$'\n'* ]] || fail "unexpected store layout: $(ls "$blobs")"
swap_blobs() {
  mv "$blobs/${data_blobs[0]}" "$blobs/swap" && mv "$blobs/${data_blobs[1]}" "$blobs/${data_blobs[0]}" \
    && mv "$blobs/swap" "$blobs/${data_blobs[1]}"
}
swap_blobs
as isv
if "$encfs" cleanroom run "${run_args[@]}" --template deployment/cleanroom-arm-template.json --data cleanroom-swapped 2>err.txt; then
  fail "the clean room computed on swapped blobs"
fi
grep -h "Input/output error" cleanroom-swapped/telemetry/application/demo-app.log || fail "no EIO for a swapped blob"
gov contract event list --contract-id collab --governance-client isv --all | grep -o "Access point publisher-input refused blobs not as manifest $digest[^\"]*" \
  || fail "no audit event names the refused blobs"
(as publisher; "$encfs" dataset verify --datastore publisher-input --signer-cert keys/publisher_cert.pem 2>&1 || true) | tail -3
swap_blobs
# Another manifest put beside the data (here the publisher's own, sealed again): not the digest
# the contract pins, so the mount refuses it and the access point fails with a clear error.
cp "$blobs/$manifest_blob" pinned-manifest
(as publisher; "$encfs" dataset seal --datastore publisher-input --governance-client publisher >/dev/null)
if "$encfs" cleanroom run "${run_args[@]}" --template deployment/cleanroom-arm-template.json --data cleanroom-resealed 2>err.txt; then
  fail "the clean room mounted another manifest than the pinned one"
fi
cat cleanroom-resealed/volumestatus/publisher-input.volume.error; echo
grep -q "$digest" cleanroom-resealed/volumestatus/publisher-input.volume.error || fail "the volume error does not name the pinned digest"
cp pinned-manifest "$blobs/$manifest_blob"
# A modified template is refused before anything mounts.
python3 - <<'PY'
import json
t = json.load(open("deployment/cleanroom-arm-template.json"))
t["tags"] = dict(t.get("tags", {}), edited="yes")
json.dump(t, open("edited-template.json", "w"))
PY
if "$encfs" cleanroom run "${run_args[@]}" --template edited-template.json --data cleanroom-edited 2>err.txt; then
  fail "an edited template ran"
fi
cat err.txt
grep -q "not the deployment spec accepted" err.txt || fail "wrong refusal"
[[ -z $(ls cleanroom-edited/remote 2>/dev/null) ]] || fail "something was mounted"
echo "(refused before anything mounted)"
# An edited security policy, accepted as the deployment spec by mistake, is still refused: its
# hash is not the accepted clean-room policy's.
python3 - <<'PY'
import base64, json
t = json.load(open("deployment/cleanroom-arm-template.json"))
props = t["resources"][0]["properties"]["confidentialComputeProperties"]
props["ccePolicy"] = base64.b64encode(base64.b64decode(props["ccePolicy"]) + b"\n# edited\n").decode()
json.dump(t, open("edited-policy-template.json", "w"))
PY
p=$(q proposalId deployment template propose --template-file edited-policy-template.json --contract-id collab --governance-client isv); vote "$p"
if "$encfs" cleanroom run "${run_args[@]}" --template edited-policy-template.json --data cleanroom-edited 2>err.txt; then
  fail "an edited policy ran"
fi
cat err.txt
grep -q "is not the clean-room policy accepted" err.txt || fail "wrong refusal"
[[ -z $(ls cleanroom-edited/remote 2>/dev/null) ]] || fail "something was mounted"
p=$(q proposalId deployment template propose --template-file deployment/cleanroom-arm-template.json --contract-id collab --governance-client isv); vote "$p"

# A clean room declaring another policy gets no key: its skr attests the edited policy, and the
# key vault refuses the release.
cp "$work/isv/cleanroom/config/cleanroom-policy.rego" edited.rego && echo "# edited" >> edited.rego
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ip=$(free_port) sp=$(free_port) cp_=$(free_port)
"$encfs" sidecar identity --listen "127.0.0.1:$ip" --credential cleanroom-cred.json --daemon --run-dir other-identity >/dev/null
services+=("'$encfs' sidecar stop --run-dir '$work/isv/other-identity'")
"$encfs" sidecar skr --listen "127.0.0.1:$sp" --attestation virtual --authority "$authority" --authority-ca "$authority_ca" \
  --security-policy edited.rego --trust-ca "$vault_ca" --trust-ca "$authority_ca" --identity-endpoint "http://127.0.0.1:$ip" \
  --daemon --run-dir other-skr >/dev/null
services+=("'$encfs' sidecar stop --run-dir '$work/isv/other-skr'")
"$encfs" sidecar secrets --listen "127.0.0.1:$cp_" --skr "http://127.0.0.1:$sp" --identity-endpoint "http://127.0.0.1:$ip" \
  --trust-ca "$vault_ca" --daemon --run-dir other-secrets >/dev/null
services+=("'$encfs' sidecar stop --run-dir '$work/isv/other-secrets'")
as publisher
mkdir -p other-mnt
if "$encfs" mount other-mnt --datastore publisher-input --key-release "http://127.0.0.1:$cp_" 2>err.txt; then
  fail "a clean room with another policy got the DEK"
fi
cat err.txt
[[ -z $(ls other-mnt) ]] || fail "something was mounted"
echo "(no key for another policy: nothing mounted)"

# With execution consent withdrawn and logging disabled, the clean room's API refuses start
# and exportLogs with the reference's 403 bodies.
as consumer
step gov contract runtime-option set --option execution --action disable --contract-id collab --governance-client consumer
p=$(q proposalId contract runtime-option propose --option logging --action disable --contract-id collab --governance-client consumer)
echo "(logging disable proposal $p: accepted without votes)"
as isv
"$encfs" cleanroom run "${run_args[@]}" --template deployment/cleanroom-arm-template.json --data cleanroom-off \
  > cleanroom-off.log 2>&1 &
for _ in $(seq 600); do
  grep -qs '"running"' cleanroom-off/cleanroom.json && break
  sleep 0.1
done
launcher=$(python3 -c 'import json; print(json.load(open("cleanroom-off/cleanroom.json"))["launcher"])')
post() { python3 - "$@" <<'PY'
import sys, urllib.request, urllib.error
try:
    r = urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="POST", data=b""))
    print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
PY
}
start=$(post "$launcher/gov/demo-app/start"); echo "POST /gov/demo-app/start -> $start"
[[ $start == "403 "*ConsentCheckFailed*execution* ]] || fail "start was not refused"
export_=$(post "$launcher/gov/exportLogs"); echo "POST /gov/exportLogs -> $export_"
[[ $export_ == "403 "*ConsentCheckFailed*logging* ]] || fail "exportLogs was not refused"
other=$(post "$launcher/gov/anything"); echo "POST /gov/anything -> $other"
[[ $other == "403 "*RequestNotAllowed* ]] || fail "the inbound filter let a request through"
step "$encfs" cleanroom stop --data cleanroom-off
wait || true

echo
echo "multi-party collaboration OK in $((SECONDS - t0)) s: the consumer's output equals the publisher's input,"
echo "the publisher read the application log, the audit events are listed, and every negative path was refused."
