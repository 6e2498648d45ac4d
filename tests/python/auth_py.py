"""redis-py against a kv node that has a password (requirepass).

Usage: python3 auth_py.py PORT PASSWORD

For each protocol (redis-py's default, which opens connections with HELLO 3 AUTH ..., and
protocol=2, which sends AUTH): with `password=` every command works; without it, or with a
wrong one, redis-py raises AuthenticationError. Prints "ok" at the end; any mismatch
raises, which exits with a failing status and a traceback.
"""

import sys

import redis


def expect_refused(**options) -> str:
    try:
        redis.Redis(host="127.0.0.1", port=PORT, **options).get("py:auth")
    except redis.exceptions.AuthenticationError as e:
        return str(e)
    raise AssertionError(f"{options} was not refused")


def main() -> None:
    password = sys.argv[2]
    for protocol in ({}, {"protocol": 2}):
        r = redis.Redis(host="127.0.0.1", port=PORT, password=password, **protocol)
        assert r.ping() is True
        assert r.set("py:auth", "v") is True
        assert r.get("py:auth") == b"v"
        missing = expect_refused(**protocol)
        assert "Authentication required" in missing or "HELLO must be called" in missing, missing
        wrong = expect_refused(password=password + "x", **protocol)
        assert "invalid username-password pair" in wrong, wrong
        print(f"{protocol or 'default protocol'}: refused without a password ({missing})")
    print("ok")


PORT = int(sys.argv[1])
main()
