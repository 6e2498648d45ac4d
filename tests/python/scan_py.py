"""redis-py's scan_iter and keys against kv, as applications use them.

Usage: python3 scan_py.py PORT PREFIX N ITERATIONS [cluster]

Walks the keys matching PREFIX* with scan_iter (COUNT 7) ITERATIONS times; every walk must
return each of PREFIX0 .. PREFIX{N-1} (the keys present throughout: the driving test may
move shards and write other keys meanwhile), and nothing that does not match. The first
walk is checked against KEYS PREFIX* and against a walk without MATCH too. With "cluster",
the client is a RedisCluster, whose scan_iter walks every master (each node scans its own
slots), and KEYS is sent to every master. The generic retry is off (`Retry(NoBackoff(), 0)`): a read never needs it. Prints
one line per walk, then "ok"; a failure raises (a traceback and a failing exit status).
"""

import sys

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry


def main() -> None:
    port, prefix, n, iterations = (
        int(sys.argv[1]),
        sys.argv[2],
        int(sys.argv[3]),
        int(sys.argv[4]),
    )
    retry = Retry(NoBackoff(), 0)
    everywhere = {}
    if sys.argv[5:] == ["cluster"]:
        r = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", port)], retry=retry)
        # KEYS goes to one node by default; each node lists its own slots.
        everywhere = {"target_nodes": RedisCluster.PRIMARIES}
    else:
        r = redis.Redis(host="127.0.0.1", port=port, retry=retry)
    expected = {f"{prefix}{i}".encode() for i in range(n)}
    for walk in range(iterations):
        returned = list(r.scan_iter(match=f"{prefix}*", count=7))
        seen = set(returned)
        missing = expected - seen
        assert not missing, f"walk {walk}: {len(missing)} keys missing, e.g. {sorted(missing)[:5]}"
        stray = [k for k in seen if not k.startswith(prefix.encode())]
        assert not stray, f"walk {walk}: keys not matching: {stray[:5]}"
        print(f"walk {walk}: {len(returned)} keys, {len(seen)} distinct", flush=True)
        if walk == 0:
            everything = set(r.scan_iter())
            assert expected <= everything, "a walk without MATCH misses keys"
            listed = set(r.keys(f"{prefix}*", **everywhere))
            assert expected <= listed, "KEYS misses keys"
            assert all(k.startswith(prefix.encode()) for k in listed)
    r.close()
    print("ok")


if __name__ == "__main__":
    main()
