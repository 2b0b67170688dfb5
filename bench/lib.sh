# Shared by bench/blind.sh and bench/sealed.sh (source it after setting
# VEIL): a broker with a SASL_PLAINTEXT listener, PLAIN user admin (password
# admin-pw, super user) and ACLs on, in a temp dir removed on exit, plus the
# helpers that run veil as a user.
#   start_broker [EXTRA_TOML]   EXTRA_TOML: more listeners or sections
# Sets work, pid, BOOT (the SASL listener) and exports VEIL_LOG=warn.
work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
export VEIL_LOG=warn

start_broker() {
  "$VEIL" user hash-plain admin <<<"admin-pw" > "$work/users.toml" 2>/dev/null
  cat > "$work/veil.toml" <<TOML
[[listeners]]
name = "SASL"
protocol = "SASL_PLAINTEXT"
bind = "127.0.0.1:0"
${1:-}
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
  BOOT="$(listener SASL)"
  [ -n "$BOOT" ] || { cat "$work/broker.log"; exit 1; }
}

listener() { awk -v n="$1" '$1=="LISTENING" && $2==n {print $3}' "$work/addr"; }

conn() { # user: the connection flags (admin logs in with PLAIN, users with SCRAM)
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

add_alice() { # [extra `kms init` flags]: SCRAM user alice with ALL on every
  # topic and group, a KMS (kid bench-e1, tenant bench, 2048 bits) in
  # $work/kms and alice's key at $KEY.
  VEIL_USER_PASSWORD=alice-pw asp admin user add alice >/dev/null
  for r in topic group; do
    asp admin acl add --allow-principal User:alice --operation all --$r '*' >/dev/null
  done
  export VEIL_KMS_DIR="$work/kms" VEIL_KMS_PASSPHRASE=bench
  "$VEIL" kms init --kid bench-e1 --tenant bench --bits 2048 "$@" >/dev/null 2>&1
  as admin kms add-user alice >/dev/null
  KEY="$work/kms/alice.key"
}
