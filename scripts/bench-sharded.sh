#!/usr/bin/env bash
# Throughput of a sharded cluster on 3 local nodes with 1 and with 3 KV groups, at 50 and
# 200 clients, with each node process's CPU seconds over each run:
# - `kv bench` (the native shard clerk, which goes to each group's leader);
# - redis-benchmark through node 0's RESP port (node 0 routes each key to its group);
# - `redis-benchmark --cluster` against a cluster made with `kv init --redis-cluster`
#   (the client sends each key to its slot's master, the owning group's leader); with 1
#   group, plain redis-benchmark to that group's leader, the one master.
# Usage: scripts/bench-sharded.sh [kv binary] (default target/release/kv)
# Env: KV_BENCH_SECONDS (10), THREADS (each node's `--threads`; default: the node's own),
# GROUPS_LIST ("1 3"), CLIENTS_LIST ("50 200").
set -euo pipefail
KV=${1:-target/release/kv}
DUR=${KV_BENCH_SECONDS:-10}
. scripts/kv-cluster.sh
pids=()
trap 'kill "${pids[@]:-}" 2>/dev/null' EXIT
hz=$(getconf CLK_TCK)
# measure LABEL COMMAND: evaluates the shell command COMMAND, prints LABEL, its output and
# the CPU seconds each node used meanwhile.
measure() {
  local label=$1 command=$2 before=() used="" out i
  for i in 0 1 2; do before+=("$(kv_cpu_ticks "${pids[$i]}")"); done
  out=$(eval "$command") || out="FAILED (no result)"
  for i in 0 1 2; do used+=" $(( ($(kv_cpu_ticks "${pids[$i]}") - before[i]) / hz ))s"; done
  echo "$label: $out   node CPU:$used"
}
redis_rates() { tr '\r' '\n' | grep -E "^(SET|GET):.*requests per second" | tr '\n' ' '; }
stop_cluster() { kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true; pids=(); }
for groups in ${GROUPS_LIST:-1 3}; do
  dir=$(mktemp -d)
  KV_NODE_THREADS=${THREADS:-} kv_cluster_start "$dir" 26380 27380 29380 --groups "$groups" --shards 64
  for clients in ${CLIENTS_LIST:-50 200}; do
    measure "groups=$groups kv bench -c $clients" \
      '"$KV" bench --cluster "$dir/cluster.toml" --clients $clients --duration $DUR | tail -1'
  done
  for clients in ${CLIENTS_LIST:-50 200}; do
    measure "groups=$groups redis-benchmark -c $clients" \
      'redis-benchmark -p 26380 -t set,get -n 100000 -r 100000 -c $clients -q 2>/dev/null | redis_rates'
  done
  stop_cluster
  rm -rf "$dir"

  dir=$(mktemp -d)
  KV_NODE_THREADS=${THREADS:-} kv_cluster_start "$dir" 26380 27380 29380 --groups "$groups" --shards 64 --redis-cluster
  if [ "$groups" = 1 ]; then
    # redis-benchmark --cluster refuses a cluster of one master ("Invalid cluster"); a
    # cluster client sends every key to that master, as plain redis-benchmark to it does.
    master=$(redis-cli -p 26380 cluster slots | sed -n 4p)
    how="-p $master"
  else
    how="--cluster -p 26380"
  fi
  for clients in ${CLIENTS_LIST:-50 200}; do
    measure "groups=$groups redis-benchmark $how -c $clients" \
      'redis-benchmark $how -t set,get -n 100000 -r 100000 -c $clients -q 2>/dev/null | redis_rates'
  done
  stop_cluster
  rm -rf "$dir"
done
