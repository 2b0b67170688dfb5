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
[[listeners]]
name = "ANON"
protocol = "PLAINTEXT"
bind = "127.0.0.1:0"
[sasl]
plain_users_file = "$work/users.toml"
[authorizer]
enabled = true
super_users = ["User:admin"]
# Measure the resolve path, not the per-principal limiter.
[blind]
transforms_per_second = 1000000.0
burst = 1000000
TOML
"$VEIL" broker --config "$work/veil.toml" --data-dir "$work/data" --admin-listen 127.0.0.1:0 \
  --print-addresses > "$work/addr" 2> "$work/broker.log" &
pid=$!
for _ in $(seq 1 100); do grep -q '^LISTENING SASL' "$work/addr" 2>/dev/null && break; sleep 0.1; done
BOOT="$(awk '$1=="LISTENING" && $2=="SASL" {print $3}' "$work/addr")"
ANON="$(awk '$1=="LISTENING" && $2=="ANON" {print $3}' "$work/addr")"

conn() { # user: the connection flags
  local mech=SCRAM-SHA-512; [ "$1" = admin ] && mech=PLAIN
  echo --bootstrap "$BOOT" --security-protocol SASL_PLAINTEXT --sasl-mechanism "$mech" --user "$1"
}
as() { # user, command line; flags last (kms, produce, consume)
  local u="$1"; shift
  # shellcheck disable=SC2046
  VEIL_PASSWORD="$u-pw" "$VEIL" "$@" $(conn "$u")
}
asp() { # user, command, rest; flags right after the command (topics, acl, user)
  local u="$1" c="$2"; shift 2
  # shellcheck disable=SC2046
  VEIL_PASSWORD="$u-pw" "$VEIL" "$c" $(conn "$u") "$@"
}

echo "== resolutions per core (one thread; wire = one connection, uncached)"
for bits in 2048 3072; do
  as admin kms bench --kat "$KAT/kat-$bits.json" --seconds "${BENCH_SECONDS:-5}" --wire-principal User:admin
done

echo "== data path: $N records, blind vs plain, same broker"
VEIL_USER_PASSWORD=alice-pw asp admin user add alice >/dev/null
for r in topic group; do
  asp admin acl add --allow-principal User:alice --operation all --$r '*' >/dev/null
done
export VEIL_KMS_DIR="$work/kms" VEIL_KMS_PASSPHRASE=bench
"$VEIL" kms init --kid bench-e1 --tenant bench --bits 2048 >/dev/null 2>&1
as admin kms add-user alice >/dev/null
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
  rate "produce blind" as alice produce --blind "bench/$rep" --key-file "$work/kms/alice.key" "$work/in.txt"
done
for rep in 1 2 3; do
  rate "consume plain" as alice consume --topic plain-t --group "p$rep" --from-beginning --max-messages "$N"
  rate "consume blind" as alice consume --blind "bench/$rep" --key-file "$work/kms/alice.key" --group "b$rep" --from-beginning --max-messages "$N"
done
