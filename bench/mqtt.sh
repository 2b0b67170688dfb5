#!/usr/bin/env bash
# MQTT QoS 1 publish throughput and PUBACK latency, and memory per idle MQTT
# connection: Veil's MQTT listener (log.flush = "sync": a PUBACK means
# fsynced) against Debian's mosquitto (in memory, persistence off) with the
# same load generator (bench/mqtt, rumqttc), in the same run.
#   [COUNTS="1 100 10000"] [TOTAL=100000] bench/mqtt.sh [VEIL_BIN] [REPS]
# Every connection count publishes about TOTAL messages of 100 bytes in all
# (at least 10 per connection), each connection to its own topic with up to
# 64 unacknowledged. Brokers listen on loopback ports 19192 (Kafka), 11883
# (Veil MQTT) and 11884 (mosquitto); data goes to a temporary directory.
# Build first:
#   cargo build --release -p veil-cli && (cd bench/mqtt && cargo build --release)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
VEIL="${1:-$here/../target/release/veil}"
REPS="${2:-3}"
GEN="$here/mqtt/target/release/veil-mqtt-bench"
COUNTS="${COUNTS:-1 100 10000}"
TOTAL="${TOTAL:-100000}"
command -v mosquitto >/dev/null || { echo "mosquitto is not installed (apt-get install mosquitto)" >&2; exit 1; }
# 10 000 connections need as many descriptors in the generator and in each broker.
ulimit -n "$(ulimit -Hn)"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing on port $1" >&2; exit 1; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

cat > "$work/veil.toml" <<TOML
[network]
max_connections = 30000
[mqtt]
enabled = true
[[mqtt.listeners]]
name = "MQTT"
bind = "127.0.0.1:11883"
allow_anonymous = true
[[mqtt.mappings]]
filter = "bench/#"
topic = "bench"
TOML
VEIL_LOG=warn "$VEIL" broker --config "$work/veil.toml" --data-dir "$work/veil" \
  --listen 127.0.0.1:19192 --admin-listen 127.0.0.1:0 > "$work/veil.out" 2> "$work/veil.log" &
veil_pid=$!; pids+=("$veil_pid")
wait_port 19192
# The port opens before the node has registered itself: retry briefly.
for _ in $(seq 1 50); do
  "$VEIL" topics --bootstrap 127.0.0.1:19192 create bench -p 4 >/dev/null 2>&1 && break
  sleep 0.2
done
wait_port 11883

cat > "$work/mosquitto.conf" <<CONF
listener 11884 127.0.0.1
allow_anonymous true
persistence false
max_connections -1
CONF
mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
mosq_pid=$!; pids+=("$mosq_pid")
wait_port 11884

median() { # reads JSON lines, prints one with medians
  python3 -c 'import json,sys,statistics
rows=[json.loads(l) for l in sys.stdin if l.strip()]
out=dict(rows[0])
for k in ("seconds","msgs_per_sec","p50_ms","p99_ms","max_ms","acked","failed_connections"):
    out[k]=round(statistics.median(r[k] for r in rows),2)
out["runs"]=len(rows); print(json.dumps(out))'
}

# Memory per idle connection, first (fresh brokers, before the publish runs
# grow their heaps): broker RSS with IDLE idle clients minus before.
idle=${IDLE:-10000}
for target in "veil 11883 $veil_pid" "mosquitto 11884 $mosq_pid"; do
  set -- $target
  before=$(rss_kb "$3")
  "$GEN" --port "$2" --connections "$idle" idle --seconds 5 > "$work/idle.out" &
  gen=$!
  for _ in $(seq 1 1200); do grep -q READY "$work/idle.out" 2>/dev/null && break; sleep 0.1; done
  sleep 1
  after=$(rss_kb "$3")
  held=$(awk '{print $2}' "$work/idle.out")
  wait "$gen" || true
  python3 -c "import json; print(json.dumps({'broker':'$1','idle_connections':$held,'rss_before_kb':$before,'rss_after_kb':$after,'bytes_per_connection':round(($after-$before)*1024/max($held,1))}))"
done

for n in $COUNTS; do
  per=$(( TOTAL / n )); [ "$per" -lt 10 ] && per=10
  for target in "veil 11883" "mosquitto 11884"; do
    set -- $target
    for _ in $(seq 1 "$REPS"); do
      "$GEN" --port "$2" --connections "$n" publish --messages "$per" --size 100 --inflight 64
    done | median | sed "s/^{/{\"broker\":\"$1\",/"
  done
done

