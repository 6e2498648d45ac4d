#!/usr/bin/env bash
# CPU per operation, operations per Paxos instance and per fsync of a local 3-node cluster
# with 1 and with 3 KV groups: `kv bench --clients N` on a fresh cluster, the nodes' CPU
# seconds from /proc, the instances decided and the fsyncs (all three nodes') from /metrics.
# Usage: scripts/bench-cpu-per-op.sh [kv binary] (default target/release/kv)
# Env: CLIENTS (50), DUR (8 s), GROUPS_LIST ("1 3"), TMPBASE (parent of the data
# directories, e.g. /dev/shm to take fsync out of the picture), THREADS (each node's
# `--threads`; default: the node's own default).
set -uo pipefail
KV=${1:-target/release/kv}
CLIENTS=${CLIENTS:-50}
DUR=${DUR:-8}
. scripts/kv-cluster.sh
pids=()
trap 'kill "${pids[@]:-}" 2>/dev/null' EXIT
decided() { curl -s 127.0.0.1:29380/metrics | awk '/^kv_decided_index\{node="[0-9]+",group="[0-9]+"\}/ {s += $2} END {print s + 0}'; }
# Each node's fsyncs (its log writer's, the same on every group's line: the first one).
fsyncs() { for port in 29380 29381 29382; do curl -s "127.0.0.1:$port/metrics" | awk '/^kv_fsyncs_total/ {print $2; exit}'; done | awk '{s += $1} END {print s + 0}'; }
hz=$(getconf CLK_TCK)
for groups in ${GROUPS_LIST:-1 3}; do
  dir=$(mktemp -d ${TMPBASE:+-p "$TMPBASE"})
  pids=()
  KV_NODE_THREADS=${THREADS:-} kv_cluster_start "$dir" 26380 27380 29380 --groups "$groups" --shards 64 || exit 1
  b=$(kv_cpu_ticks "${pids[@]}"); i0=$(decided); f0=$(fsyncs)
  out=$("$KV" bench --cluster "$dir/cluster.toml" --clients "$CLIENTS" --duration "$DUR" | tail -1)
  a=$(kv_cpu_ticks "${pids[@]}"); i1=$(decided); f1=$(fsyncs)
  rate=$(echo "$out" | sed -n 's/.*ops\/s: *\([0-9]*\).*/\1/p')
  python3 - "$groups" "$rate" "$DUR" "$((a - b))" "$hz" "$((i1 - i0))" "$((f1 - f0))" "$out" <<'PY'
import sys
groups, rate, dur, ticks, hz, inst, syncs, out = sys.argv[1:]
ops = int(rate) * float(dur)
print(f"groups={groups}: {out}")
print(f"  node CPU {int(ticks)/int(hz):.1f} s = {int(ticks)/int(hz)*1e6/ops:.0f} us/op; "
      f"{int(inst)} instances = {ops/max(int(inst),1):.1f} ops/instance; "
      f"{int(syncs)} fsyncs = {ops/max(int(syncs),1):.1f} ops/fsync")
PY
  kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null
  pids=()
  rm -rf "$dir"
done
