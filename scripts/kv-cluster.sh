# Sourced by the bench scripts: starts a local 3-node kv cluster, and reads processes' CPU.
#
# kv_cluster_start DIR RESP PEER ADMIN [kv init flags...]
#   `kv init` in DIR with node i on ports RESP+i, PEER+i, ADMIN+i, then the three
#   `kv node` processes (logs in DIR/node-N.log; each with `--threads $KV_NODE_THREADS` if
#   that is set), appended to the caller's `pids` array; waits up to 30 s for each node's
#   /readyz and sets `target` to the three RESP addresses as `kv bench --target` takes them.
# Needs KV (the kv binary) and curl.
kv_cluster_start() {
  local dir=$1 resp=$2 peer=$3 admin=$4
  shift 4
  "$KV" init --dir "$dir" --resp-port "$resp" --peer-port "$peer" --admin-port "$admin" \
    "$@" >/dev/null
  local id
  for id in 0 1 2; do
    "$KV" node --cluster "$dir/cluster.toml" --id "$id" \
      ${KV_NODE_THREADS:+--threads "$KV_NODE_THREADS"} >"$dir/node-$id.log" 2>&1 &
    pids+=($!)
  done
  for id in 0 1 2; do
    local ok=""
    for _ in $(seq 150); do
      curl -sf "127.0.0.1:$((admin + id))/readyz" >/dev/null 2>&1 && { ok=1; break; }
      sleep 0.2
    done
    if [ -z "$ok" ]; then
      echo "kv node $id did not become ready; its log:" >&2
      tail -n 20 "$dir/node-$id.log" >&2
      return 1
    fi
  done
  target="redis://127.0.0.1:$resp,127.0.0.1:$((resp + 1)),127.0.0.1:$((resp + 2))"
}

# kv_cpu_ticks PID...: the CPU the processes used so far (user + system), in clock ticks
# (`getconf CLK_TCK` per second).
kv_cpu_ticks() {
  local t=0 p f
  for p in "$@"; do
    read -r -a f < "/proc/$p/stat"
    t=$((t + f[13] + f[14]))
  done
  echo "$t"
}
