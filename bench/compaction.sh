#!/usr/bin/env bash
# Log cleaner throughput, its effect on concurrent produce, and the cost of
# recompressing on append (topic-level compression.type):
#   [REPS=3] [N=1000000] [M=300000] [KEYS=10000] [SEGMENT=16777216] [TMPDIR=/dev/shm] \
#     bench/compaction.sh VEIL_BIN
# Per repetition, on a fresh broker (flush=none, data under TMPDIR):
#   1. fill: `veil produce` (librdkafka, acks=all, uncompressed) writes N
#      records of ~100 B over KEYS keys to a compacted topic whose
#      min.compaction.lag.ms keeps the cleaner away;
#   2. baseline: M records to a `delete` topic, records/s;
#   3. the lag is set to 0 and, at once, M more records go to another
#      `delete` topic while the cleaner compacts the filled one: records/s
#      during cleaning, and the cleaner's first pass (bytes read and
#      rewritten, MB/s, from the broker's "log cleaner pass" line);
#   4. M records to topics with compression.type=gzip and zstd (the broker
#      recompresses every batch) against compression.type=producer.
# Prints one JSON line per run and the medians. Needs python3.
set -euo pipefail
BIN="$1"
REPS="${REPS:-3}"
N="${N:-1000000}"
M="${M:-300000}"
KEYS="${KEYS:-10000}"
work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

python3 -c "import random, sys
w = sys.stdout.write
r = random.Random(7)
for i in range($N): w('device-%d=' % (i % $KEYS) + ('%09d' % i) + ''.join(r.choice('abcdefghij') for _ in range(90)) + '\n')" > "$work/fill.txt"
python3 -c "import sys
w = sys.stdout.write
for i in range($M): w('k%d=' % (i % 64) + ('%09d' % i) + 'x' * 90 + '\n')" > "$work/load.txt"

rate() { sed -n 's/^throughput .*: \([0-9]*\) records\/s$/\1/p' "$1"; }

produce() { # topic input -> records/s
  "$BIN" produce --bootstrap "$boot" --topic "$1" --key-separator = --throughput "$2" \
    >/dev/null 2> "$work/perr"
  local r; r="$(rate "$work/perr")"
  [ -n "$r" ] || { cat "$work/perr" >&2; exit 1; }
  echo "$r"
}

run() {
  local rep="$1"
  rm -rf "$work/data" "$work/addr"
  VEIL_LOG=info "$BIN" broker --data-dir "$work/data" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --set log.flush=none --set log.cleaner.backoff_ms=200 --print-addresses \
    > "$work/addr" 2> "$work/broker.log" &
  pid=$!
  for _ in $(seq 1 100); do grep -q '^LISTENING PLAINTEXT' "$work/addr" 2>/dev/null && break; sleep 0.1; done
  boot="$(awk '$1=="LISTENING" && $2=="PLAINTEXT" {print $3}' "$work/addr")"
  export VEIL_LOG=warn
  "$BIN" topics --bootstrap "$boot" create twins -p 1 --config cleanup.policy=compact \
    --config segment.bytes="${SEGMENT:-16777216}" --config min.cleanable.dirty.ratio=0.01 \
    --config min.compaction.lag.ms=3600000 >/dev/null
  for t in base during producer; do "$BIN" topics --bootstrap "$boot" create "$t" -p 1 >/dev/null; done
  "$BIN" topics --bootstrap "$boot" create gz -p 1 --config compression.type=gzip >/dev/null
  "$BIN" topics --bootstrap "$boot" create zs -p 1 --config compression.type=zstd >/dev/null
  produce twins "$work/fill.txt" >/dev/null
  local dirty_bytes; dirty_bytes="$(du -sb "$work/data/twins-0" | cut -f1)"
  local base; base="$(produce base "$work/load.txt")"
  "$BIN" topics --bootstrap "$boot" alter twins --set min.compaction.lag.ms=0 >/dev/null
  local during; during="$(produce during "$work/load.txt")"
  for _ in $(seq 1 600); do grep -q 'log cleaner pass' "$work/broker.log" && break; sleep 0.1; done
  local pass; pass="$(grep -m1 'log cleaner pass' "$work/broker.log")"
  [ -n "$pass" ] || { echo "no cleaner pass; is N large enough to fill two segments (SEGMENT)?" >&2; exit 1; }
  local producer; producer="$(produce producer "$work/load.txt")"
  local gz; gz="$(produce gz "$work/load.txt")"
  local zs; zs="$(produce zs "$work/load.txt")"
  python3 - "$pass" <<PY
import json, re, sys
f = dict(re.findall(r'(\w+)=([0-9.]+)', sys.argv[1]))
print(json.dumps({"rep": $rep, "fill_log_bytes": $dirty_bytes,
    "cleaner_bytes_read": int(f["bytes_read"]), "cleaner_bytes_written": int(f["bytes_written"]),
    "cleaner_mb_per_sec": round(float(f["mb_per_sec"]), 1),
    "produce_baseline_rps": $base, "produce_during_cleaning_rps": $during,
    "produce_topic_producer_rps": $producer, "produce_topic_gzip_rps": $gz,
    "produce_topic_zstd_rps": $zs}))
PY
  unset VEIL_LOG
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}

for rep in $(seq 1 "$REPS"); do
  run "$rep" > "$work/line"
  cat "$work/line" >> "$work/runs.jsonl"
  cat "$work/line"
done
python3 - "$work/runs.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
keys = [k for k in rows[0] if k != "rep"]
print(json.dumps({"median_of": len(rows), **{k: statistics.median(r[k] for r in rows) for k in keys}}))
PY
