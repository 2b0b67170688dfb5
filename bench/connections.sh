#!/usr/bin/env bash
# IoT-scale idle connections on one broker (issue item 8):
#   [REPS=3] [RATE=500] [SECS=10] bench/connections.sh [VEIL_BIN] [CONNECTIONS] [SOURCES]
# Per repetition, on a fresh broker (plaintext loopback listener, data in a
# temp dir): the broker's RSS before and after CONNECTIONS idle connections
# (opened by SOURCES client processes, one per source address 127.0.0.2 ..,
# each having done one ApiVersions), and an active producer's request
# latency (Produce v3, acks=1, one 100-byte record per request, RATE
# requests/s for SECS s, one in flight) without and with those connections
# held. Prints one JSON line per repetition and the medians. Needs python3.
# The broker needs CONNECTIONS open files: the script raises RLIMIT_NOFILE,
# and its hard limit too where permitted (CAP_SYS_RESOURCE).
# Build first: cargo build --release -p veil-cli
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
VEIL="${1:-$here/../target/release/veil}"
N="${2:-50000}"
SOURCES="${3:-8}"
REPS="${REPS:-3}"
RATE="${RATE:-500}"
SECS="${SECS:-10}"
want=$((N + 512))
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$want" ]; then
  ulimit -Hn "$want" 2>/dev/null || {
    echo "the broker needs $want open files; the hard limit is $(ulimit -Hn) and cannot be raised here" >&2
    exit 1
  }
fi
ulimit -n "$want"
work="$(mktemp -d)"
pid="" holders=()
cleanup() {
  for h in "${holders[@]}"; do kill "$h" 2>/dev/null || true; done
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
export VEIL_LOG=warn

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

for rep in $(seq 1 "$REPS"); do
  rm -rf "$work/data" "$work/addr"
  "$VEIL" broker --data-dir "$work/data" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --set "network.max_connections=$((N + 1000))" --set log.flush=none \
    --print-addresses > "$work/addr" 2> "$work/broker.log" &
  pid=$!
  for _ in $(seq 1 100); do grep -q '^LISTENING PLAINTEXT' "$work/addr" 2>/dev/null && break; sleep 0.1; done
  boot="$(awk '$1=="LISTENING" && $2=="PLAINTEXT" {print $3}' "$work/addr")"
  "$VEIL" topics --bootstrap "$boot" create lat -p 1 >/dev/null
  idle_lat="$(python3 "$here/connections.py" latency --bootstrap "$boot" --topic lat --rate "$RATE" --seconds "$SECS")"
  sleep 1
  before="$(rss_kib "$pid")"
  rm -f "$work"/hold.*
  for s in $(seq 1 "$SOURCES"); do
    n=$(( N / SOURCES + (s <= N % SOURCES ? 1 : 0) ))
    python3 "$here/connections.py" hold --bootstrap "$boot" --connections "$n" \
      --source "127.0.0.$((s + 1))" > "$work/hold.$s" &
    holders+=($!)
  done
  for _ in $(seq 1 1200); do
    [ "$(cat "$work"/hold.* 2>/dev/null | grep -c '^READY')" -eq "$SOURCES" ] && break; sleep 0.5
  done
  [ "$(cat "$work"/hold.* | grep -c '^READY')" -eq "$SOURCES" ] \
    || { echo "connections not opened; broker log:" >&2; tail "$work/broker.log" >&2; exit 1; }
  open_secs="$(cat "$work"/hold.* | awk '{ if ($3 > m) m = $3 } END { print m }')"
  sleep 2
  after="$(rss_kib "$pid")"
  held_lat="$(python3 "$here/connections.py" latency --bootstrap "$boot" --topic lat --rate "$RATE" --seconds "$SECS")"
  python3 - "$rep" "$N" "$before" "$after" "$open_secs" "$idle_lat" "$held_lat" <<'PY'
import json, sys
rep, n, before, after, open_secs, idle, held = sys.argv[1:]
n, before, after = int(n), int(before), int(after)
idle, held = json.loads(idle), json.loads(held)
print(json.dumps({"rep": int(rep), "connections": n, "open_secs": float(open_secs),
                  "rss_before_mib": round(before / 1024, 1), "rss_after_mib": round(after / 1024, 1),
                  "bytes_per_connection": round((after - before) * 1024 / n),
                  "p50_ms_without": idle["p50_ms"], "p99_ms_without": idle["p99_ms"],
                  "p50_ms_with": held["p50_ms"], "p99_ms_with": held["p99_ms"]}))
PY
  for h in "${holders[@]}"; do kill "$h"; wait "$h" 2>/dev/null || true; done; holders=()
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
done | tee "$work/runs.jsonl"
python3 - "$work/runs.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
keys = [k for k in rows[0] if k not in ("rep", "connections")]
print(json.dumps({"median_of": len(rows), "connections": rows[0]["connections"],
                  **{k: statistics.median(r[k] for r in rows) for k in keys}}))
PY
