#!/usr/bin/env bash
# Sealed records vs plain blind topics, same broker, same client (`veil
# produce`/`veil consume`, librdkafka underneath), 100 B and 1 KB values:
#   - throughput: N records produced as fast as possible, then consumed;
#   - latency: a consumer already subscribed while a producer sends at a
#     fixed rate; p50/p99 of (arrival − record CreateTime), so sealing and
#     opening are both inside the measured path.
#   [SIZES="100 1024"] bench/sealed.sh [VEIL_BIN] [RECORDS] [RATE]
# Build first: cargo build --release -p veil-cli
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
VEIL="${1:-$here/../target/release/veil}"
N="${2:-200000}"
RATE="${3:-5000}"
work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

export VEIL_LOG=warn
"$VEIL" user hash-plain admin <<<"admin-pw" > "$work/users.toml" 2>/dev/null
cat > "$work/veil.toml" <<TOML
[[listeners]]
name = "SASL"
protocol = "SASL_PLAINTEXT"
bind = "127.0.0.1:0"
[sasl]
plain_users_file = "$work/users.toml"
[authorizer]
enabled = true
super_users = ["User:admin"]
TOML
"$VEIL" broker --config "$work/veil.toml" --data-dir "$work/data" --admin-listen 127.0.0.1:0 \
  --print-addresses > "$work/addr" 2> "$work/broker.log" &
pid=$!
for _ in $(seq 1 100); do grep -q '^LISTENING SASL' "$work/addr" 2>/dev/null && break; sleep 0.1; done
BOOT="$(awk '$1=="LISTENING" && $2=="SASL" {print $3}' "$work/addr")"

conn() {
  local mech=SCRAM-SHA-512; [ "$1" = admin ] && mech=PLAIN
  echo --bootstrap "$BOOT" --security-protocol SASL_PLAINTEXT --sasl-mechanism "$mech" --user "$1"
}
as() { local u="$1"; shift
  # shellcheck disable=SC2046
  VEIL_PASSWORD="$u-pw" "$VEIL" "$@" $(conn "$u"); }
asp() { local u="$1" c="$2"; shift 2
  # shellcheck disable=SC2046
  VEIL_PASSWORD="$u-pw" "$VEIL" "$c" $(conn "$u") "$@"; }

VEIL_USER_PASSWORD=alice-pw asp admin user add alice >/dev/null
for r in topic group; do
  asp admin acl add --allow-principal User:alice --operation all --$r '*' >/dev/null
done
export VEIL_KMS_DIR="$work/kms" VEIL_KMS_PASSPHRASE=bench
"$VEIL" kms init --kid bench-e1 --tenant bench --bits 2048 --insecure-fast-kdf >/dev/null 2>&1
as admin kms add-user alice >/dev/null
KEY="$work/kms/alice.key"

rate() { # label, count, command...
  local label="$1" n="$2"; shift 2
  local t0 t1; t0=$(date +%s.%N); "$@" > /dev/null 2>"$work/err" || { cat "$work/err"; exit 1; }
  t1=$(date +%s.%N)
  python3 -c "print('%-28s %9.0f records/s %7.1f MB/s' % ('$label', $n / ($t1 - $t0), $n * $SIZE / ($t1 - $t0) / 1e6))"
}

for SIZE in ${SIZES:-100 1024}; do
  python3 -c "import sys
for i in range($N): sys.stdout.write(('%09d' % i) + 'x' * ($SIZE - 9) + '\n')" > "$work/in-$SIZE.txt"
  head -n $((RATE * 5)) "$work/in-$SIZE.txt" > "$work/lat-$SIZE.txt"
  echo "== $SIZE B values, $N records"
  for rep in 1 2 3; do
    rate "produce blind  $SIZE B" "$N" as alice produce --blind "p$SIZE/$rep" --key-file "$KEY" "$work/in-$SIZE.txt"
    rate "produce sealed $SIZE B" "$N" as alice produce --blind "s$SIZE/$rep" --key-file "$KEY" --seal "$work/in-$SIZE.txt"
  done
  for rep in 1 2 3; do
    rate "consume blind  $SIZE B" "$N" as alice consume --blind "p$SIZE/$rep" --key-file "$KEY" --group "gp$SIZE-$rep" --from-beginning --max-messages "$N"
    rate "consume sealed $SIZE B" "$N" as alice consume --blind "s$SIZE/$rep" --key-file "$KEY" --group "gs$SIZE-$rep" --from-beginning --max-messages "$N"
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
