#!/usr/bin/env bash
# Primary/backup beside Paxos on this machine, in one run: each mode's local cluster (Paxos:
# one unsharded group on 3 nodes; primary/backup: the view service and 3 servers), then
# `kv bench` puts and gets (100 B values, 10,000 keys; gets after the puts wrote them) with
# 1 and with 50 clients. Prints one line per run: mode, op, clients, then kv bench's result.
# Usage: scripts/bench-pb.sh [kv binary] (default target/release/kv)
set -euo pipefail
KV=${1:-target/release/kv}
DUR=${KV_BENCH_SECONDS:-10}
for mode in paxos primary-backup; do
  dir=$(mktemp -d)
  if [ "$mode" = paxos ]; then
    "$KV" init --dir "$dir" --groups 0 --replicas 3 --resp-port 26380 --peer-port 27380 --admin-port 29380 >/dev/null
  else
    "$KV" init --dir "$dir" --mode primary-backup --replicas 3 --resp-port 26380 --peer-port 27380 --admin-port 29380 >/dev/null
  fi
  nodes=$(grep -c '^\[\[node\]\]' "$dir/cluster.toml")
  pids=()
  for id in $(seq 0 $((nodes - 1))); do
    "$KV" node --cluster "$dir/cluster.toml" --id "$id" >"$dir/node-$id.log" 2>&1 &
    pids+=($!)
  done
  # Ready: one write answered (Paxos: a leader; primary/backup: a primary and a backup).
  for _ in $(seq 100); do
    "$KV" put ready yes --cluster "$dir/cluster.toml" --timeout 2 >/dev/null 2>&1 && break
    sleep 0.2
  done
  if [ "$mode" = primary-backup ]; then
    for _ in $(seq 100); do
      "$KV" admin view --cluster "$dir/cluster.toml" | grep -q '^backup: node' && break
      sleep 0.2
    done
  fi
  for op in puts gets; do
    reads=0; [ "$op" = gets ] && reads=100
    for clients in 1 50; do
      out=$("$KV" bench --cluster "$dir/cluster.toml" --clients "$clients" --duration "$DUR" --reads "$reads" | tail -1)
      echo "$mode $op clients=$clients: $out"
    done
  done
  kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null || true
  rm -rf "$dir"
done
