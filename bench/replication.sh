#!/usr/bin/env bash
# What replication costs (issue "Replication", benchmark): the same
# librdkafka load generator (bench/, veil-bench) against one node with a
# replication-factor-1 topic and against three nodes (127.0.0.1/.2/.3, all
# voters, plaintext loopback) with a replication-factor-3 topic and
# min.insync.replicas=2. Both use `log.flush = "sync"`: on three nodes an
# acks=all answer waits for the leader's fsync and for the fsync of every
# in-sync follower.
#   [N100=300000] [N1K=100000] [NLAT=2000] [REPS=3] [KILLS=10] bench/replication.sh [VEIL_BIN]
# Scenarios, REPS times each on a fresh topic, medians printed as JSON lines:
#   produce 100 B and 1 KB, acks=all, linger.ms=5 (throughput);
#   produce 100 B acks=all, linger.ms=0, one record at a time (latency of a
#   lone request: p50/p99).
# Then KILLS times (default 10) on three nodes with default timeouts,
# alternating a leader that is not the controller and one that is: a
# producer sends one acks=all record at a time (idempotent) while the
# partition leader is killed with SIGKILL; the longest wait for one
# acknowledgement is the unavailability window (kill to the first
# acknowledgement by the new leader, plus at most one request). The killed
# node is restarted and back in the ISR before the next round.
# Build first: cargo build --release -p veil-cli && (cd bench && cargo build --release)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
VEIL="${1:-$here/../target/release/veil}"
GEN="$here/target/release/veil-bench"
REPS="${REPS:-3}"
# shellcheck source=bench/nodes.sh
. "$here/nodes.sh"
start_sync() { start "$1" "$2" --set log.flush=sync; }

median() {
  python3 -c 'import json,sys,statistics
rows=[json.loads(l) for l in sys.stdin if l.strip()]
out=dict(rows[0])
for k in ("secs","records_per_sec","mb_per_sec","p50_ms","p99_ms"):
    if k in out: out[k]=round(statistics.median(r[k] for r in rows),2)
out["runs"]=len(rows); print(json.dumps(out))'
}

scenario() { # label rf generator-args...
  local label="$1" rf="$2"; shift 2
  for i in $(seq 1 "$REPS"); do
    local topic="t$RANDOM$i"
    "$VEIL" topics --bootstrap "127.0.0.1:$KAFKA" create "$topic" -p 1 -r "$rf" >/dev/null
    "$GEN" --bootstrap "127.0.0.1:$KAFKA" --topic "$topic" "$@"
  done | median | sed "s/^{/{\"scenario\":\"$label\",/"
}

run_all() { # prefix rf
  scenario "$1 produce 100B acks=all" "$2" produce --records "${N100:-300000}" --size 100 --acks all
  scenario "$1 produce 1KB acks=all" "$2" produce --records "${N1K:-100000}" --size 1024 --acks all
  scenario "$1 latency 100B acks=all linger=0 one at a time" "$2" produce --records "${NLAT:-2000}" \
    --size 100 --acks all --linger-ms 0 --one-at-a-time
}

if [ -z "${FAILOVER_ONLY:-}" ]; then
  start_sync 1 0
  ready 1
  run_all "one node RF1:" 1
  stop_all
fi
for id in 1 2 3; do start_sync "$id" 1; done
ready 1 2 3
[ -n "${FAILOVER_ONLY:-}" ] || run_all "three nodes RF3:" 3

# Failover: kill -9 the leader under a one-at-a-time acks=all producer.
"$VEIL" topics --bootstrap "127.0.0.1:$KAFKA" create failover -p 1 -r 3 >/dev/null
for k in $(seq 1 "${KILLS:-10}"); do
  all="127.0.0.1:$KAFKA,127.0.0.2:$KAFKA,127.0.0.3:$KAFKA"
  controller=""
  for _ in $(seq 1 100); do
    for n in 1 2 3; do
      c="$(curl -sf "http://127.0.0.$n:$ADMIN/metrics" 2>/dev/null | awk '$1=="veil_controller_id" {print int($2)}' || true)"
      if [ -n "$c" ] && [ "$c" -gt 0 ]; then controller=$c; break 2; fi
    done
    sleep 0.1
  done
  [ -n "$controller" ] || { echo "no controller" >&2; exit 1; }
  # Odd rounds kill a leader that is not the controller, even rounds the
  # controller while it leads: the partition's preferred replica is set to
  # that node and elected before the kill.
  want=$controller
  if (( k % 2 == 1 )); then want=$(( controller % 3 + 1 )); fi
  others=$(for n in 1 2 3; do if [ "$n" != "$want" ]; then printf ',%s' "$n"; fi; done)
  "$VEIL" partitions reassign -b "127.0.0.1:$KAFKA" --topic failover --partition 0 --replicas "$want$others" >/dev/null
  for _ in $(seq 1 300); do
    "$VEIL" partitions elect-leaders -b "127.0.0.1:$KAFKA" --topic failover >/dev/null 2>&1 || true
    [ "$(python3 "$here/leader.py" "$all" failover)" = "$want" ] && break
    sleep 0.2
  done
  "$GEN" --bootstrap "127.0.0.1:$KAFKA,127.0.0.2:$KAFKA,127.0.0.3:$KAFKA" --topic failover produce \
    --records 6000 --size 100 --acks all --linger-ms 0 --one-at-a-time --set enable.idempotence=true \
    > "$work/failover-$k.json" &
  gen=$!
  sleep 3
  victim="$(python3 "$here/leader.py" "$all" failover)"
  killed_at=$(date +%s%N)
  kill -9 "${pids[$victim]}"
  # Broker side: until metadata names another leader.
  for _ in $(seq 1 600); do
    now="$(python3 "$here/leader.py" "$all" failover || true)"
    [ -n "$now" ] && [ "$now" != "$victim" ] && break
    sleep 0.02
  done
  elected_ms=$(( ($(date +%s%N) - killed_at) / 1000000 ))
  wait "$gen"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({"round":int(sys.argv[2]),"killed":int(sys.argv[3]),"was_controller":sys.argv[3]==sys.argv[5],"new_leader_in_metadata_ms":int(sys.argv[4]),"unavailable_ms":r["max_ms"]}))' \
    "$work/failover-$k.json" "$k" "$victim" "$elected_ms" "$controller" | tee -a "$work/failover.json"
  start_sync "$victim" 1
  ready "$victim"
  for _ in $(seq 1 600); do
    python3 "$here/leader.py" "127.0.0.1:$KAFKA,127.0.0.2:$KAFKA,127.0.0.3:$KAFKA" failover --in-sync "$victim" && break
    sleep 0.1
  done
done
python3 -c 'import json,statistics,sys
rows=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for ctl in (False, True):
    sel=[r for r in rows if r["was_controller"]==ctl]
    if not sel: continue
    for key in ("unavailable_ms","new_leader_in_metadata_ms"):
        v=[r[key] for r in sel]
        print(json.dumps({"scenario":"three nodes RF3: kill -9 of the leader"+(" (also the controller)" if ctl else " (not the controller)")+", "+key,"median":round(statistics.median(v),1),"min":min(v),"max":max(v),"runs":len(v)}))' "$work/failover.json"
