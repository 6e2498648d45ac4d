"""redis-py's `info()` against one kv node: the sections and fields Redis tooling reads.

Usage: python3 redis_info.py PORT

Writes a few keys, runs commands, then checks what `info()` parses: the default
sections, single sections, `all` with commandstats, and the keyspace line as a dict.
Prints "info ok" then "ok"; any mismatch raises, which exits with a failing status.
"""

import os
import sys

import redis

DEFAULT = [
    "redis_version",
    "redis_mode",
    "os",
    "arch_bits",
    "process_id",
    "tcp_port",
    "uptime_in_seconds",
    "connected_clients",
    "used_memory",
    "used_memory_human",
    "loading",
    "aof_enabled",
    "rdb_changes_since_last_save",
    "rdb_bgsave_in_progress",
    "rdb_last_save_time",
    "rdb_last_bgsave_status",
    "total_connections_received",
    "total_commands_processed",
    "instantaneous_ops_per_sec",
    "keyspace_hits",
    "keyspace_misses",
    "role",
    "connected_slaves",
    "cluster_enabled",
]


def main() -> None:
    port = int(sys.argv[1])
    r = redis.Redis(host="127.0.0.1", port=port, protocol=2)
    for i in range(5):
        r.set(f"info:{i}", i)
    assert r.get("info:1") == b"1"
    assert r.get("info:missing") is None

    info = r.info()
    missing = [field for field in DEFAULT if field not in info]
    assert not missing, f"default INFO lacks {missing}: {info}"
    assert info["redis_mode"] == "standalone", info
    assert info["tcp_port"] == port, info
    assert info["process_id"] != os.getpid() and info["process_id"] > 0, info
    assert info["arch_bits"] == 64, info
    assert info["loading"] == 0, info
    assert info["aof_enabled"] == 1, info
    assert info["role"] == "master", info
    assert info["connected_clients"] >= 1, info
    assert isinstance(info["used_memory"], int) and info["used_memory"] > 0, info
    assert isinstance(info["used_memory_human"], str), info
    assert info["total_commands_processed"] >= 7, info
    assert info["keyspace_hits"] >= 1 and info["keyspace_misses"] >= 1, info
    assert info["db0"] == {"keys": 5, "expires": 0, "avg_ttl": 0}, info["db0"]
    assert not any(k.startswith("cmdstat_") for k in info), "commandstats is not default"

    server = r.info("server")
    assert "redis_version" in server and "connected_clients" not in server, server
    assert r.info("keyspace") == {"db0": {"keys": 5, "expires": 0, "avg_ttl": 0}}
    assert r.info("nosuchsection") == {}

    everything = r.info("all")
    for field in DEFAULT:
        assert field in everything, f"INFO all lacks {field}"
    stats = everything["cmdstat_set"]
    assert stats["calls"] >= 5, stats
    for key in ["usec", "usec_per_call", "rejected_calls", "failed_calls"]:
        assert key in stats, stats
    assert everything["cmdstat_get"]["calls"] >= 2, everything["cmdstat_get"]
    commandstats = r.info("commandstats")
    assert "cmdstat_set" in commandstats and "redis_version" not in commandstats

    print("info ok")
    r.close()
    print("ok")


if __name__ == "__main__":
    main()
