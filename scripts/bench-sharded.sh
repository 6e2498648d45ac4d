#!/usr/bin/env bash
# Throughput of a sharded cluster on 3 local nodes with 1 and with 3 KV groups:
# `kv bench` (native shard clerk) and redis-benchmark through node 0's RESP port, at 50 and
# 200 clients, with each node process's CPU seconds over each run.
# Usage: scripts/bench-sharded.sh [kv binary] (default target/release/kv)
# Env: KV_BENCH_SECONDS (10), THREADS (each node's `--threads`; default: the node's own).
set -euo pipefail
KV=${1:-target/release/kv}
DUR=${KV_BENCH_SECONDS:-10}
cpu() { # total CPU seconds (user+system) of the given pids
  local t=0
  for p in "$@"; do
    read -r -a f < "/proc/$p/stat"
    t=$((t + f[13] + f[14]))
  done
  echo "$t"
}
for groups in 1 3; do
  dir=$(mktemp -d)
  "$KV" init --dir "$dir" --groups "$groups" --shards 64 --resp-port 26380 --peer-port 27380 --admin-port 29380 >/dev/null
  pids=()
  for id in 0 1 2; do
    "$KV" node --cluster "$dir/cluster.toml" --id "$id" ${THREADS:+--threads "$THREADS"} >"$dir/node-$id.log" 2>&1 &
    pids+=($!)
  done
  for _ in $(seq 100); do
    ready=0
    for port in 29380 29381 29382; do
      curl -sf "127.0.0.1:$port/readyz" >/dev/null && ready=$((ready + 1))
    done
    [ "$ready" = 3 ] && break
    sleep 0.2
  done
  hz=$(getconf CLK_TCK)
  for clients in 50 200; do
    before=(); for p in "${pids[@]}"; do before+=("$(cpu "$p")"); done
    out=$("$KV" bench --cluster "$dir/cluster.toml" --clients "$clients" --duration "$DUR" | tail -1)
    used=""; for i in 0 1 2; do used+=" $(( ($(cpu "${pids[$i]}") - before[i]) / hz ))s"; done
    echo "groups=$groups kv bench clients=$clients: $out   node CPU:$used"
  done
  for clients in 50 200; do
    before=(); for p in "${pids[@]}"; do before+=("$(cpu "$p")"); done
    out=$(redis-benchmark -p 26380 -t set,get -n 100000 -r 100000 -c "$clients" -q 2>/dev/null | tr '\r' '\n' | grep -E "^(SET|GET):.*requests per second" | tr '\n' ' ')
    used=""; for i in 0 1 2; do used+=" $(( ($(cpu "${pids[$i]}") - before[i]) / hz ))s"; done
    echo "groups=$groups redis-benchmark -c $clients: $out  node CPU:$used"
  done
  kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
  rm -rf "$dir"
done
