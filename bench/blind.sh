#!/usr/bin/env bash
# Blind topics: (1) resolutions per second per core at 2048 and 3072 bits
# against the raw constant-time modexp rate, pure and over the wire; (2) the
# data path, produce/consume throughput on a blind topic vs a plain topic in
# the same run, both through `veil produce`/`veil consume` (librdkafka).
#   bench/blind.sh [VEIL_BIN] [RECORDS]
# Build first: cargo build --release -p veil-cli
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
VEIL="${1:-$here/../target/release/veil}"
N="${2:-200000}"
KAT="$here/../../shared/blind"
# shellcheck source=lib.sh
. "$here/lib.sh"
start_broker '[[listeners]]
name = "ANON"
protocol = "PLAINTEXT"
bind = "127.0.0.1:0"
# Measure the resolve path, not the per-principal limiter.
[blind]
transforms_per_second = 1000000.0
burst = 1000000'
ANON="$(listener ANON)"

echo "== resolutions per core (one thread; wire = one connection, uncached)"
for bits in 2048 3072; do
  as admin kms bench --kat "$KAT/kat-$bits.json" --seconds "${BENCH_SECONDS:-5}" --wire-principal User:admin
done

echo "== data path: $N records, blind vs plain, same broker"
add_alice
python3 -c "import sys
for i in range($N): sys.stdout.write('reading-%09d,%s\n' % (i, 'x'*80))" > "$work/in.txt"
# The plain topic is created on the anonymous listener.
asp admin acl add --allow-principal User:ANONYMOUS --operation create --topic plain-t >/dev/null
"$VEIL" topics --bootstrap "$ANON" create plain-t -p 1 >/dev/null

rate() { # label, command...
  local label="$1"; shift
  local t0 t1; t0=$(date +%s.%N); "$@" > /dev/null 2>"$work/err" || { cat "$work/err"; exit 1; }
  t1=$(date +%s.%N)
  python3 -c "print('%-16s %8.0f records/s' % ('$label', $N / ($t1 - $t0)))"
}
for rep in 1 2 3; do
  rate "produce plain" as alice produce --topic plain-t "$work/in.txt"
  rate "produce blind" as alice produce --blind "bench/$rep" --key-file "$KEY" "$work/in.txt"
done
for rep in 1 2 3; do
  rate "consume plain" as alice consume --topic plain-t --group "p$rep" --from-beginning --max-messages "$N"
  rate "consume blind" as alice consume --blind "bench/$rep" --key-file "$KEY" --group "b$rep" --from-beginning --max-messages "$N"
done
