#!/usr/bin/env bash
# Metadata throughput on one node and on three, and how long metadata writes
# stop when the controller is killed (issue "Cluster", benchmark):
#   [N=2000] [CONC=8] [REPS=3] [KILLS=10] bench/cluster.sh [VEIL_BIN]
# One node: a broker on 127.0.0.1 with the authorizer on (ANONYMOUS is a
# super user, so CreateAcls is allowed). Three nodes: 127.0.0.1/.2/.3, every
# node a voter, the same settings. On each, REPS times: N CreateTopics of
# 1-partition topics (replication factor: the default, 1) and N CreateAcls,
# CONC connections each with one request in flight (bench/cluster.py, the
# same client for both), fresh data every repetition. Then KILLS times on
# three nodes: kill -9 the controller, and measure from the kill to the
# first metadata write (CreateTopics through either survivor, retried every
# 20 ms) that is acknowledged; the killed node is restarted and the cluster
# settles before the next kill. Prints one JSON line per measurement and the
# medians. Needs python3. Build first: cargo build --release -p veil-cli
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
VEIL="${1:-$here/../target/release/veil}"
N="${N:-2000}"
CONC="${CONC:-8}"
REPS="${REPS:-3}"
KILLS="${KILLS:-10}"
# shellcheck source=bench/nodes.sh
. "$here/nodes.sh"
# The authorizer on, ANONYMOUS a super user (so CreateAcls is allowed).
start_authz() {
  start "$1" "$2" --set authorizer.enabled=true --set 'authorizer.super_users=["User:ANONYMOUS"]'
}

controller() { # the controller as node $1 reports it in /metrics
  curl -sf "http://127.0.0.$1:$ADMIN/metrics" | awk '$1=="veil_controller_id" {print int($2)}'
}

median() { # key; JSON lines on stdin
  python3 -c 'import json,statistics,sys
k=sys.argv[1]; v=[json.loads(l)[k] for l in sys.stdin if l.strip()]
print(json.dumps({"median_"+k: round(statistics.median(v),1), "min": min(v), "max": max(v), "runs": len(v)}))' "$1"
}

throughput() { # label nodes...
  local label="$1"; shift
  for op in topics acls; do
    for rep in $(seq 1 "$REPS"); do
      stop_all; rm -rf "$work"/node*
      for id in "$@"; do start_authz "$id" "$([ $# -gt 1 ] && echo 1 || echo 0)"; done
      ready "$@"
      python3 "$here/cluster.py" "$op" --bootstrap "127.0.0.1:$KAFKA" --count "$N" \
        --concurrency "$CONC" --prefix "r$rep" | tee -a "$work/$label-$op.json"
    done
    echo "$label $op: $(median ops_per_sec < "$work/$label-$op.json")"
  done
}

throughput one-node 1
throughput three-nodes 1 2 3

# Failover: kill -9 the controller, time the next acknowledged write.
stop_all; rm -rf "$work"/node*
for id in 1 2 3; do start_authz "$id" 1; done
ready 1 2 3
for k in $(seq 1 "$KILLS"); do
  c=""
  for _ in $(seq 1 100); do c="$(controller 1)"; [ -n "$c" ] && [ "$c" -ge 1 ] && break; sleep 0.1; done
  survivors=""
  for id in 1 2 3; do [ "$id" != "$c" ] && survivors="$survivors,127.0.0.$id:$KAFKA"; done
  since="$(date +%s%N)"
  kill -9 "${pids[$c]}"
  wait "${pids[$c]}" 2>/dev/null || true
  python3 "$here/cluster.py" until-written --bootstrap "${survivors#,}" --since-ns "$since" \
    --name "failover-$k" | tee -a "$work/failover.json"
  start_authz "$c" 1
  ready 1 2 3
  sleep 2
done
echo "failover: $(median ms < "$work/failover.json")"
