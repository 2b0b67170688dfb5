# Shared by bench/cluster.sh and bench/replication.sh (source it after
# setting VEIL): one node or three on 127.0.0.1/.2/.3 with fixed ports, in
# a temp dir removed on exit.
#   start ID CLUSTERED(0|1) [--set k=v ...]   a node (a voter of three if 1)
#   ready ID...                               wait for /healthz (60 s at most)
#   stop_all                                  stop every node, drop their data
# Sets work, pids (by node id), KAFKA, ADMIN and exports VEIL_LOG=warn.
work="$(mktemp -d)"
declare -A pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
export VEIL_LOG=warn

KAFKA=19092 ADMIN=19644
voters='["1@127.0.0.1:19292","2@127.0.0.2:19292","3@127.0.0.3:19292"]'

start() {
  local id="$1" clustered="$2" ip="127.0.0.$1"
  shift 2
  local args=(broker --data-dir "$work/node$id" --listen "$ip:$KAFKA" --admin-listen "$ip:$ADMIN"
    --set "node_id=$id" "$@")
  if [ "$clustered" = 1 ]; then args+=(--set "cluster.voters=$voters"); fi
  "$VEIL" "${args[@]}" > "$work/node$id.out" 2>> "$work/node$id.log" &
  pids[$id]=$!
}

ready() {
  for id in "$@"; do
    for _ in $(seq 1 600); do
      curl -sf "http://127.0.0.$id:$ADMIN/healthz" >/dev/null 2>&1 && continue 2
      sleep 0.1
    done
    echo "node $id not ready" >&2; tail -20 "$work/node$id.log" >&2; exit 1
  done
}

stop_all() {
  for id in "${!pids[@]}"; do kill "${pids[$id]}" 2>/dev/null || true; wait "${pids[$id]}" 2>/dev/null || true; done
  pids=()
  rm -rf "$work"/node*
}
