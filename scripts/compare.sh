#!/usr/bin/env bash
# kv beside Redis and etcd, loaded by one generator (`kv bench`) in one run:
#   Redis 7: one node, `appendonly yes`, `appendfsync always` (every write fsynced);
#   etcd 3.4: 3 members (every write fsynced by a majority; reads linearizable);
#   kv: `kv init` + 3 `kv node` processes (the default sharded cluster; every write
#       fsynced by a majority of its group; reads at a read index), each with its share
#       of the CPUs (`--threads`), as `kv up` runs them;
#   kvlease (only if SYSTEMS names it): the same with `--read-lease-ms 300`.
# Redis and kv are loaded through RESP (kv's clients round-robin over its 3 nodes' RESP
# ports), etcd through its gRPC API (clients round-robin over its 3 members). For each
# system and each client count: SET (100 B values over 10,000 keys), then GET of the same
# keys, all written first. Everything runs on 127.0.0.1, in a temp dir removed at exit.
#
# Usage: scripts/compare.sh [results dir]   (default target/compare)
# Environment: KV (kv binary, default target/release/kv, built if missing),
#   CLIENTS (default "1 10 50 100"), SECONDS_PER_RUN (default 10), SYSTEMS (default
#   "redis etcd kv"; add kvlease for kv with read leases).
# Writes RESULTS/results.csv (one row per run), RESULTS/machine.txt, and prints a markdown
# table (scripts/chart.py RESULTS/results.csv --table); scripts/chart.py RESULTS/results.csv
# docs/compare.svg draws the chart.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/kv-cluster.sh
RESULTS=${1:-target/compare}
KV=${KV:-target/release/kv}
CLIENTS=${CLIENTS:-"1 10 50 100"}
DUR=${SECONDS_PER_RUN:-10}
SYSTEMS=${SYSTEMS:-"redis etcd kv"}
REDIS_PORT=46379
ETCD_PORTS=(42379 42381 42383) # each member's peer port is its client port + 1
KV_RESP=36380 KV_PEER=37380 KV_ADMIN=39380

# What it needs, from Debian.
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v etcd >/dev/null || missing+=(etcd-server)
command -v etcdctl >/dev/null || missing+=(etcd-client)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
[ -x "$KV" ] || cargo build --release --bin kv

work=$(mktemp -d)
pids=()
declare -A targets servers
stop_all() {
  if [ ${#pids[@]} -gt 0 ]; then
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT

wait_until() { # wait_until WHAT COMMAND...: polls COMMAND for up to 30 s
  local what=$1; shift
  for _ in $(seq 150); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "compare.sh: $what did not start; logs in $work:" >&2
  tail -n 20 "$work"/*.log >&2 || true
  exit 1
}

start_redis() {
  mkdir "$work/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$work/redis" --save "" \
    --appendonly yes --appendfsync always --protected-mode no >"$work/redis.log" 2>&1 &
  pids+=($!)
  wait_until redis redis-cli -p "$REDIS_PORT" ping
  target="redis://127.0.0.1:$REDIS_PORT"
}

start_etcd() {
  local members=() urls=() i
  for i in 0 1 2; do members+=("m$i=http://127.0.0.1:$((ETCD_PORTS[i] + 1))"); done
  local cluster; cluster=$(IFS=,; echo "${members[*]}")
  for i in 0 1 2; do
    local client="http://127.0.0.1:${ETCD_PORTS[i]}" peer="http://127.0.0.1:$((ETCD_PORTS[i] + 1))"
    etcd --name "m$i" --data-dir "$work/etcd-$i" \
      --listen-client-urls "$client" --advertise-client-urls "$client" \
      --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
      --initial-cluster "$cluster" --initial-cluster-token kv-compare \
      --initial-cluster-state new --logger zap --log-outputs stderr >"$work/etcd-$i.log" 2>&1 &
    pids+=($!)
    urls+=("127.0.0.1:${ETCD_PORTS[i]}")
  done
  local endpoints; endpoints=$(IFS=,; echo "${urls[*]}")
  wait_until etcd env ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health
  target="etcd://$endpoints"
}

start_kv_named() { # NAME PORT_OFFSET [kv init flags...]
  local name=$1 offset=$2; shift 2
  mkdir -p "$work/$name"
  # Each node gets its share of the machine's CPUs, as `kv up` gives it.
  KV_NODE_THREADS=$(( $(nproc) / 3 > 0 ? $(nproc) / 3 : 1 )) kv_cluster_start "$work/$name" \
    $((KV_RESP + offset)) $((KV_PEER + offset)) $((KV_ADMIN + offset)) "$@"
}

start_kv() { start_kv_named kv 0; }

# The same cluster with leader leases for reads (`kv init --read-lease-ms 300`).
start_kvlease() { start_kv_named kvlease 10 --read-lease-ms 300; }

mkdir -p "$RESULTS"
csv="$RESULTS/results.csv"
echo "system,op,clients,ops_per_s,p50_ms,p99_ms,p999_ms,errors,server_cpu_s,load1" >"$csv"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "cpus: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "redis: $(redis-server --version)"
  echo "etcd: $(etcd --version | head -1)"
  echo "kv: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$RESULTS/machine.txt"
hz=$(getconf CLK_TCK)

# All three run for the whole session, and each row's three measurements are taken one
# after the other, so the machine's other load hits them alike.
for system in $SYSTEMS; do
  first=${#pids[@]}
  "start_$system"
  targets[$system]=$target
  servers[$system]="${pids[*]:$first}"
done
for clients in $CLIENTS; do
  for op in SET GET; do
    if [ "$op" = SET ]; then flags=(--reads 0); else flags=(--reads 100 --prefill); fi
    for system in $SYSTEMS; do
      read -r -a mine <<<"${servers[$system]}"
      before=$(kv_cpu_ticks "${mine[@]}")
      row=$("$KV" bench --target "${targets[$system]}" --clients "$clients" --duration "$DUR" \
        "${flags[@]}" --csv)
      used=$(($(kv_cpu_ticks "${mine[@]}") - before))
      load=$(cut -d' ' -f1 /proc/loadavg)
      line="$system,$op,${row%%,*},$(echo "$row" | cut -d, -f3-),$(awk "BEGIN{printf \"%.1f\", $used/$hz}"),$load"
      echo "$line" >>"$csv"
      echo "$line" >&2
    done
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RESULTS/machine.txt"

python3 scripts/chart.py "$csv" --table
