#!/usr/bin/env bash
# Fetch memory and cost, two broker binaries side by side (issue item 3):
#   [REPS=3] [MB=200] [TMPDIR=/dev/shm] bench/fetch.sh BEFORE_BIN AFTER_BIN
# Per repetition and binary, on a fresh broker (flush=none, data under
# TMPDIR) with one partition of MB MiB of 1 KiB random printable records:
#   - the recipe: 8 pipelined Fetch v4 for the whole partition
#     (max_bytes = partition_max_bytes = 2^31-1) on a socket never read;
#     the broker's RSS before and its peak over 5 s;
#   - consume: `veil consume` (librdkafka) reads the whole partition;
#     records/s timed inside the client from the first record, and the
#     broker's CPU time (user + system) per GiB served;
#   - produce, for the request path's frame reading: the same for the
#     `veil produce` (acks=all) that filled the partition.
# Prints one line per run and the medians per binary. Needs python3.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
BEFORE="$1"
AFTER="$2"
REPS="${REPS:-3}"
MB="${MB:-200}"
work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
export VEIL_LOG=warn
records=$((MB * 1024))
python3 -c "import base64, os, sys
w = sys.stdout.write
for i in range($records): w(('%09d' % i) + base64.b64encode(os.urandom(1024)).decode()[:1014] + '\n')" > "$work/in.txt"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tck="$(getconf CLK_TCK)"

run() { # label binary rep
  local label="$1" bin="$2" rep="$3"
  rm -rf "$work/data" "$work/addr"
  "$bin" broker --data-dir "$work/data" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --set log.flush=none --print-addresses > "$work/addr" 2> "$work/broker.log" &
  pid=$!
  for _ in $(seq 1 100); do grep -q '^LISTENING PLAINTEXT' "$work/addr" 2>/dev/null && break; sleep 0.1; done
  local boot; boot="$(awk '$1=="LISTENING" && $2=="PLAINTEXT" {print $3}' "$work/addr")"
  "$bin" topics --bootstrap "$boot" create big -p 1 >/dev/null
  local p0; p0="$(cpu_ticks "$pid")"
  "$bin" produce --bootstrap "$boot" --topic big --throughput "$work/in.txt" >/dev/null 2> "$work/perr"
  local p1; p1="$(cpu_ticks "$pid")"
  local prate; prate="$(sed -n 's/^throughput .*: \([0-9]*\) records\/s$/\1/p' "$work/perr")"
  [ -n "$prate" ] || { cat "$work/perr"; exit 1; }
  sleep 1
  local recipe; recipe="$(python3 "$here/fetch.py" unread --bootstrap "$boot" --topic big --pid "$pid")"
  sleep 1
  local t0; t0="$(cpu_ticks "$pid")"
  "$bin" consume --bootstrap "$boot" --topic big --group "g$rep" --from-beginning \
    --max-messages "$records" --throughput > /dev/null 2> "$work/err"
  local t1; t1="$(cpu_ticks "$pid")"
  local rate; rate="$(sed -n 's/^throughput .*: \([0-9]*\) records\/s$/\1/p' "$work/err")"
  [ -n "$rate" ] || { cat "$work/err"; exit 1; }
  python3 -c "import json, sys
r = json.loads(sys.argv[1])
cpu = ($t1 - $t0) / $tck
print(json.dumps({'binary': '$label', 'rep': $rep, **r, 'consume_records_per_sec': $rate,
                  'consume_mib_per_sec': round($rate * 1024 / 1048576, 1),
                  'consume_broker_cpu_s_per_gib': round(cpu / ($MB / 1024), 3),
                  'produce_records_per_sec': $prate,
                  'produce_broker_cpu_s_per_gib': round(($p1 - $p0) / $tck / ($MB / 1024), 3)}))" "$recipe"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}

for rep in $(seq 1 "$REPS"); do
  run before "$BEFORE" "$rep"
  run after "$AFTER" "$rep"
done | tee "$work/runs.jsonl"
python3 - "$work/runs.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for label in ("before", "after"):
    rs = [r for r in rows if r["binary"] == label]
    keys = [k for k in rs[0] if k not in ("binary", "rep")]
    print(json.dumps({"binary": label, "median_of": len(rs),
                      **{k: statistics.median(r[k] for r in rs) for k in keys}}))
PY
