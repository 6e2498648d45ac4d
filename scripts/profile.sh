#!/usr/bin/env bash
# Profiles a fresh 3-node kv cluster (the default sharded layout) under 50 RESP clients
# spread over its nodes, as scripts/compare.sh loads it: prints kv bench's CSV line, and
# records the three node processes with `perf record -g` for 8 s in the middle of the run.
#
# Usage: scripts/profile.sh SET|GET [OUT.data]
# Environment: KV (binary, default target/release/kv), LEASE_MS (read leases, default
#   off), THREADS (each node's --threads, default: kv's own), SECONDS_PER_RUN (default 15),
#   CLIENTS (default 50).
# Then: perf report -i OUT.data --no-children --sort dso,sym
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/kv-cluster.sh
OP=${1:?SET or GET}
OUT=${2:-target/profile-$OP.data}
KV=${KV:-target/release/kv}
DUR=${SECONDS_PER_RUN:-15}
CLIENTS=${CLIENTS:-50}
RESP=46480 PEER=47480 ADMIN=49480
command -v perf >/dev/null || { echo "profile.sh: needs perf (Debian: linux-perf)" >&2; exit 1; }
[ -x "$KV" ] || cargo build --release --bin kv

work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
init=()
[ -n "${LEASE_MS:-}" ] && init+=(--read-lease-ms "$LEASE_MS")
KV_NODE_THREADS=${THREADS:-} kv_cluster_start "$work" $RESP $PEER $ADMIN "${init[@]}"
if [ "$OP" = SET ]; then flags=(--reads 0); else flags=(--reads 100 --prefill); fi
nodes=$(IFS=,; echo "${pids[*]}")
(sleep 3; perf record -F 499 -g -o "$OUT" -p "$nodes" -- sleep 8 >/dev/null 2>&1) &
recorder=$!
"$KV" bench --target "$target" --clients "$CLIENTS" --duration "$DUR" "${flags[@]}" --csv
wait $recorder
echo "profile.sh: wrote $OUT" >&2
