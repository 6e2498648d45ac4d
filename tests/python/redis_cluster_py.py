"""redis-py's RedisCluster against a kv cluster in Redis Cluster mode, as applications use it.

Usage: python3 redis_cluster_py.py CONTROL_DIR PORT [PORT ...]

Two clients run side by side until the file CONTROL_DIR/stop appears (the driving test
kills nodes and moves shards meanwhile):

- the *writer*, a RedisCluster at its default settings (which follow MOVED, ASK and
  TRYAGAIN and retry connection errors), SETs unique keys and GETs earlier ones back. Any
  exception reaching it fails the run; at the end every acknowledged write is read back.
- the *appender*, a RedisCluster whose generic retry is off (`Retry(NoBackoff(), 0)`:
  redirections are still followed), APPENDs unique tokens to a few keys, for an
  at-most-once measurement: a command that fails with a connection error is
  indeterminate, any other error fails the run. At the end no token may appear twice,
  every acknowledged token must appear, and nothing else may.

Progress (operations done so far) is written to CONTROL_DIR/progress. Prints a summary,
then "ok"; any failure raises (a traceback and a failing exit status). SIGUSR1 prints
every thread's stack to stderr (the driving test sends it when progress stalls).
"""

import collections
import faulthandler
import os
import re
import signal
import sys
import threading
import time

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.retry import Retry

APPEND_KEYS = 48


def main() -> None:
    control = sys.argv[1]
    ports = [int(p) for p in sys.argv[2:]]
    nodes = [ClusterNode("127.0.0.1", p) for p in ports]
    writer = RedisCluster(startup_nodes=nodes)
    appender = RedisCluster(startup_nodes=nodes, retry=Retry(NoBackoff(), 0))
    print(f"redis-py {redis.__version__}")

    stop = threading.Event()
    counts = collections.Counter()
    doing = {}  # each client's operation in flight: (command, key, since)

    def report_stall(_signum, _frame) -> None:
        now = time.monotonic()
        for who, (command, key, since) in sorted(doing.items()):
            print(f"{who}: {command} {key} for {now - since:.1f}s", file=sys.stderr)
        faulthandler.dump_traceback(all_threads=True)
        sys.stderr.flush()

    signal.signal(signal.SIGUSR1, report_stall)
    failures = []
    written = {}
    acked = collections.defaultdict(list)
    indeterminate = collections.defaultdict(list)

    def write() -> None:
        i = 0
        while not stop.is_set():
            key, value = f"w:{i}", f"v{i}"
            doing["writer"] = ("SET", key, time.monotonic())
            assert writer.set(key, value) is True
            written[key] = value.encode()
            if i > 0:
                back = f"w:{i // 2}"
                doing["writer"] = ("GET", back, time.monotonic())
                got = writer.get(back)
                assert got == written[back], (back, got)
            counts["writer"] += 2
            i += 1

    def append() -> None:
        n = 0
        while not stop.is_set():
            key = f"a:{n % APPEND_KEYS}"
            token = f"<{n}>"
            doing["appender"] = ("APPEND", key, time.monotonic())
            try:
                appender.append(key, token)
                acked[key].append(token)
            except (redis.ConnectionError, redis.TimeoutError) as e:
                indeterminate[key].append(token)
                counts["indeterminate"] += 1
                counts[f"error {type(e).__name__}"] += 1
            counts["appender"] += 1
            n += 1

    def guarded(body):
        def run():
            try:
                body()
            except BaseException as e:  # any error reaching the application
                failures.append(e)
                stop.set()
                raise

        return run

    threads = [threading.Thread(target=guarded(f)) for f in (write, append)]
    for t in threads:
        t.start()
    stop_file = os.path.join(control, "stop")
    progress = os.path.join(control, "progress")
    while not stop.is_set() and not os.path.exists(stop_file):
        with open(progress + ".tmp", "w") as f:
            f.write(str(counts["writer"] + counts["appender"]))
        os.replace(progress + ".tmp", progress)
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]

    # Every acknowledged write reads back, through a fresh client.
    reader = RedisCluster(startup_nodes=nodes)
    for key, value in written.items():
        got = reader.get(key)
        assert got == value, (key, got, value)
    # They covered every slot range the cluster reports.
    ranges = reader.cluster_slots(target_nodes=RedisCluster.RANDOM)
    slots = {key_slot(k.encode()) for k in written}
    uncovered = [r for r in ranges if not any(r[0] <= s <= r[1] for s in slots)]
    assert not uncovered, f"no write in slot ranges {uncovered}"

    # At most once: no token twice; every acknowledged one once; nothing unasked.
    for j in range(APPEND_KEYS):
        key = f"a:{j}"
        value = (reader.get(key) or b"").decode()
        tokens = re.findall(r"<\d+>", value)
        seen = collections.Counter(tokens)
        twice = [t for t, c in seen.items() if c > 1]
        assert not twice, f"{key}: tokens applied twice: {twice}"
        missing = set(acked[key]) - set(seen)
        assert not missing, f"{key}: acknowledged tokens lost: {sorted(missing)}"
        unasked = set(seen) - set(acked[key]) - set(indeterminate[key])
        assert not unasked, f"{key}: tokens never sent: {sorted(unasked)}"
        # Acknowledged appends of one client apply in order.
        order = [t for t in tokens if t in set(acked[key])]
        assert order == acked[key], f"{key}: acknowledged appends out of order"

    print(
        f"writes {len(written)}, ops {counts['writer'] + counts['appender']}, "
        f"slot ranges {len(ranges)}, indeterminate appends {counts['indeterminate']}, "
        f"{dict(counts)}"
    )
    print("ok")


if __name__ == "__main__":
    main()
