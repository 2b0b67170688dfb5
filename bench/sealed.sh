#!/usr/bin/env bash
# Sealed records vs plain blind topics, same broker, same client (`veil
# produce`/`veil consume`, librdkafka underneath), 100 B and 1 KB values:
#   - throughput: N records produced as fast as possible, then consumed,
#     REPS alternating runs, medians and the sealed/blind ratio at the end;
#   - latency: a consumer already subscribed while a producer sends at a
#     fixed rate; p50/p99 of (arrival − record CreateTime), so sealing and
#     opening are both inside the measured path.
#   [TMPDIR=/dev/shm] [SIZES="100 1024"] [REPS=5] bench/sealed.sh [VEIL_BIN] [RECORDS] [RATE]
# TMPDIR=/dev/shm keeps the broker's log in memory, so disk and page-cache
# behaviour (which varies a lot on shared VMs) stay out of the comparison.
# Build first: cargo build --release -p veil-cli
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
VEIL="${1:-$here/../target/release/veil}"
N="${2:-200000}"
RATE="${3:-5000}"
# shellcheck source=lib.sh
. "$here/lib.sh"
start_broker

add_alice --insecure-fast-kdf

# Run a command, print the records/s it reports with --throughput (timed
# inside the client from the first record, so process start-up, SASL and
# the consumer group join are not counted) and the client's CPU time per
# record (user + system, whole process), and keep both for the medians.
rate() { # label, command...
  local label="$1"; shift
  local cpu; cpu="$( { TIMEFORMAT='%3U %3S'; time "$@" --throughput > /dev/null 2>"$work/err"; } 2>&1 )" \
    || { cat "$work/err"; exit 1; }
  local r; r="$(sed -n 's/^throughput .*: \([0-9]*\) records\/s$/\1/p' "$work/err")"
  [ -n "$r" ] || { cat "$work/err"; exit 1; }
  local us; us="$(python3 -c "u, s = '$cpu'.split(); print('%.2f' % ((float(u) + float(s)) * 1e6 / $N))")"
  printf '%-28s %9s records/s %7.1f MB/s  client CPU %s us/record\n' "$label" "$r" \
    "$(python3 -c "print($r * $SIZE / 1e6)")" "$us"
  local f; f="$work/$(echo "$label" | tr -s ' ' _)"
  echo "$r" >> "$f.rates"; echo "$us" >> "$f.cpu"
}
median() { sort -n "$work/$1" | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

REPS="${REPS:-5}"
for SIZE in ${SIZES:-100 1024}; do
  # Random printable values: as incompressible as the sealed ones, so the
  # plain baseline gets no help from compression anywhere below the broker
  # (this VM's storage reads highly compressible pages back much faster).
  python3 -c "import base64, os, sys
w = sys.stdout.write
for i in range($N): w(('%09d' % i) + base64.b64encode(os.urandom($SIZE)).decode()[:$SIZE - 9] + '\n')" > "$work/in-$SIZE.txt"
  head -n $((RATE * 5)) "$work/in-$SIZE.txt" > "$work/lat-$SIZE.txt"
  echo "== $SIZE B values, $N records, $REPS alternating runs"
  # Each topic is consumed right after it is produced: the broker then
  # serves it from the page cache in both cases (this VM's memory reclaim
  # evicts cold page cache within minutes, which made consume throughput
  # depend on run order rather than on sealing).
  for rep in $(seq 1 "$REPS"); do
    rate "produce blind  $SIZE" as alice produce --blind "p$SIZE/$rep" --key-file "$KEY" "$work/in-$SIZE.txt"
    rate "consume blind  $SIZE" as alice consume --blind "p$SIZE/$rep" --key-file "$KEY" --group "gp$SIZE-$rep" --from-beginning --max-messages "$N"
    rate "produce sealed $SIZE" as alice produce --blind "s$SIZE/$rep" --key-file "$KEY" --seal "$work/in-$SIZE.txt"
    rate "consume sealed $SIZE" as alice consume --blind "s$SIZE/$rep" --key-file "$KEY" --group "gs$SIZE-$rep" --from-beginning --max-messages "$N"
  done
  for op in produce consume; do
    p="$(median "${op}_blind_$SIZE.rates")" s="$(median "${op}_sealed_$SIZE.rates")"
    pc="$(median "${op}_blind_$SIZE.cpu")" sc="$(median "${op}_sealed_$SIZE.cpu")"
    printf '%-28s blind %9s  sealed %9s  sealed/blind %.3f   CPU us/record %s vs %s (%+.0f%%)\n' \
      "median $op $SIZE B" "$p" "$s" "$(python3 -c "print($s / $p)")" "$pc" "$sc" \
      "$(python3 -c "print(($sc / $pc - 1) * 100)")"
  done
  echo "== $SIZE B values, end-to-end latency at $RATE records/s for 5 s"
  for kind in blind sealed; do
    seal=""; [ "$kind" = sealed ] && seal="--seal"
    t="lat-$kind-$SIZE"
    # Create (and seal) the topic first so the consumer resolves it.
    echo warmup | as alice produce --blind "$t" --key-file "$KEY" $seal >/dev/null 2>&1
    as alice consume --blind "$t" --key-file "$KEY" --group "g$t" --max-messages $((RATE * 5)) \
      --timeout-ms 20000 --latency >/dev/null 2>"$work/lat.err" &
    cpid=$!
    sleep 2
    as alice produce --blind "$t" --key-file "$KEY" $seal --rate "$RATE" "$work/lat-$SIZE.txt" >/dev/null 2>&1
    wait "$cpid"
    printf '%-28s %s\n' "latency $kind $SIZE B" "$(grep '^latency' "$work/lat.err")"
  done
done
