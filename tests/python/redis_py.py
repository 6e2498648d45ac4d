"""redis-py against one kv node, as an application would use it.

Usage: python3 redis_py.py PORT [PROTOCOL]

Without PROTOCOL the client keeps every default (redis-py 8 then speaks RESP3, opening
each connection with HELLO 3); with it, `protocol=PROTOCOL` is passed. Prints the
redis-py version and the protocol the connection negotiated, then "ok"; any mismatch
raises, which exits with a failing status and a traceback.
"""

import sys

import redis


def main() -> None:
    port = int(sys.argv[1])
    options = {} if len(sys.argv) < 3 else {"protocol": int(sys.argv[2])}
    r = redis.Redis(host="127.0.0.1", port=port, **options)
    hello = r.execute_command("HELLO")
    proto = hello[b"proto"] if isinstance(hello, dict) else dict(
        zip(hello[::2], hello[1::2])
    )[b"proto"]
    print(f"redis-py {redis.__version__}, protocol {proto}")
    if not options:
        assert proto == 3, f"redis-py defaults negotiated protocol {proto}"

    assert r.ping() is True
    assert r.set("py:k", "v1") is True
    assert r.get("py:k") == b"v1"
    assert r.get("py:missing") is None
    assert r.append("py:k", "-more") == 7
    assert r.exists("py:k", "py:missing") == 1
    assert r.mget("py:k", "py:missing") == [b"v1-more", None]
    assert r.echo("hi") == b"hi"
    assert r.dbsize() >= 1
    info = r.info()
    assert info["redis_mode"] == "standalone", info
    assert r.config_get("maxmemory") == {}

    pipe = r.pipeline(transaction=False)
    for i in range(20):
        pipe.set(f"py:p{i}", i)
    for i in range(20):
        pipe.get(f"py:p{i}")
    replies = pipe.execute()
    assert replies[:20] == [True] * 20, replies
    assert replies[20:] == [str(i).encode() for i in range(20)], replies

    assert r.delete("py:k", "py:missing") == 1
    assert r.get("py:k") is None
    try:
        r.execute_command("NOSUCH")
        raise AssertionError("an unknown command was accepted")
    except redis.ResponseError as e:
        assert "unknown command" in str(e), e
    r.close()
    print("ok")


if __name__ == "__main__":
    main()
