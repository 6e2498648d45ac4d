#!/usr/bin/env python3
"""CPU and wall time of one 4 KiB write + fdatasync on this machine's disk, overwriting
blocks the file already owns (as kv's recycled WAL segments do) and appending to an empty
file. Usage: scripts/fsync-cost.py [directory] (default: the current one) [count]"""
import os
import sys
import time

directory = sys.argv[1] if len(sys.argv) > 1 else "."
count = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
path = os.path.join(directory, f"fsync-cost-{os.getpid()}.bin")
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
try:
    os.write(fd, b"\0" * (4096 * count))
    os.fdatasync(fd)
    for mode in ("overwrite", "append"):
        if mode == "append":
            os.ftruncate(fd, 0)
            os.fdatasync(fd)
        os.lseek(fd, 0, os.SEEK_SET)
        t0, w0 = os.times(), time.monotonic()
        for _ in range(count):
            os.write(fd, b"x" * 4096)
            os.fdatasync(fd)
        t1, w1 = os.times(), time.monotonic()
        cpu = (t1.user - t0.user) + (t1.system - t0.system)
        print(f"{mode}: {count / (w1 - w0):,.0f} fdatasyncs/s, "
              f"{(w1 - w0) / count * 1e6:.0f} us wall and {cpu / count * 1e6:.0f} us of this "
              f"process's CPU per write + fdatasync")
finally:
    os.close(fd)
    os.unlink(path)
