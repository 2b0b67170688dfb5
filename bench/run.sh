#!/usr/bin/env bash
# Whole-system benchmark of a Veil broker with librdkafka (bench/ load generator).
#   [PEER=host:port] [N100=records] [N1K=records] bench/run.sh [VEIL_BIN] [REPS]
# Starts its own brokers on loopback ports 19092/19093 with temporary data
# directories, runs every scenario REPS times (default 3) and prints the
# median of each as one JSON line. With PEER=host:port (e.g. a Tansu broker
# from ../shared/peers/tansu.sh) the produce/consume scenarios also run
# against that broker, with the same client, in the same run. Build first:
#   cargo build --release -p veil-cli && (cd bench && cargo build --release)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
VEIL="${1:-$here/../target/release/veil}"
REPS="${2:-3}"
GEN="$here/target/release/veil-bench"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

start() { # name port flush
  "$VEIL" broker --data-dir "$work/$1" --listen "127.0.0.1:$2" --admin-listen 127.0.0.1:0 \
    --set "log.flush=$3" > "$work/$1.out" 2> "$work/$1.log" &
  pids+=($!)
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0; sleep 0.1; done
  echo "broker $1 did not start" >&2; exit 1
}

median() { # field, reads JSON lines on stdin
  python3 -c 'import json,sys,statistics
rows=[json.loads(l) for l in sys.stdin if l.strip()]
out=dict(rows[0]); f=sys.argv[1:]
for k in ("secs","records_per_sec","mb_per_sec","p50_ms","p99_ms"):
    if k in out: out[k]=round(statistics.median(r[k] for r in rows),2)
out["runs"]=len(rows); print(json.dumps(out))'
}

scenario() { # label port topic-prefix generator-args...
  local label="$1" port="$2" prefix="$3"; shift 3
  for i in $(seq 1 "$REPS"); do
    "$VEIL" topics --bootstrap "127.0.0.1:$port" create "$prefix-$i" -p 1 >/dev/null
    "$GEN" --bootstrap "127.0.0.1:$port" --topic "$prefix-$i" "$@"
  done | median | sed "s/^{/{\"scenario\":\"$label\",/"
}

start sync 19092 sync
start none 19093 none
scenario "produce 100B acks=all flush=sync" 19092 p100 produce --records "${N100:-300000}" --size 100 --acks all
scenario "produce 100B acks=1 flush=sync" 19092 p100a1 produce --records "${N100:-300000}" --size 100 --acks 1
scenario "produce 100B acks=all flush=none" 19093 p100n produce --records "${N100:-300000}" --size 100 --acks all
scenario "produce 1KB acks=all flush=sync" 19092 p1k produce --records "${N1K:-100000}" --size 1024 --acks all
scenario "produce 1KB acks=all lz4 flush=sync" 19092 p1kz produce --records "${N1K:-100000}" --size 1024 --acks all --compression lz4
if [ -n "${PEER:-}" ]; then
  peer_port="${PEER##*:}"
  scenario "peer: produce 100B acks=all" "$peer_port" peer100 produce --records "${N100:-300000}" --size 100 --acks all
  scenario "peer: produce 1KB acks=all" "$peer_port" peer1k produce --records "${N1K:-100000}" --size 1024 --acks all
fi
# Consume what the first scenario wrote (topic p100-1 holds 300000 records).
for i in $(seq 1 "$REPS"); do
  "$GEN" --bootstrap 127.0.0.1:19092 --topic p100-1 consume --records "${N100:-300000}"
done | median | sed 's/^{/{"scenario":"consume 100B",/'
for i in $(seq 1 "$REPS"); do
  "$GEN" --bootstrap 127.0.0.1:19092 --topic p1k-1 consume --records "${N1K:-100000}"
done | median | sed 's/^{/{"scenario":"consume 1KB",/'
if [ -n "${PEER:-}" ]; then
  for i in $(seq 1 "$REPS"); do
    "$GEN" --bootstrap "$PEER" --topic peer100-1 consume --records "${N100:-300000}"
  done | median | sed 's/^{/{"scenario":"peer: consume 100B",/'
fi
