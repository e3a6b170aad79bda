"""A Redis lock client for the in-flight request test: run inside a network namespace.

Usage: ghost_lock_worker.py REDIS_URL DIR

Takes and releases a lock once (so the lock's scripts are loaded on the server), writes DIR/ready,
waits for DIR/go (the test has cut the link), tries ``acquire("k", owner="node-a")`` and writes what
happened to DIR/acquired, waits for DIR/healed, then uses the lock until Redis answers again (writes
DIR/answered) and waits for DIR/done before closing the lock.
"""

from __future__ import annotations

import pathlib
import sys
import time

from flowyml_lite_ext.redis_lock import RedisLock


def wait(path: pathlib.Path, seconds: float = 120.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def main(url: str, directory: pathlib.Path) -> int:
    lock = RedisLock(url, prefix="ghost:")
    warm = lock.acquire("warm-up", ttl_seconds=5, owner="node-a")
    assert warm is not None
    warm.release()
    (directory / "ready").touch()
    wait(directory / "go")
    try:
        lease = lock.acquire("k", ttl_seconds=60, owner="node-a")
        (directory / "acquired").write_text(f"lease {lease!r}")
    except Exception as exc:
        (directory / "acquired").write_text(f"error {type(exc).__name__}: {exc}")
    wait(directory / "healed")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            again = lock.acquire("other", ttl_seconds=5, owner="node-a")
            if again is not None:
                again.release()
            break
        except Exception:
            time.sleep(0.2)
    (directory / "answered").touch()
    wait(directory / "done")
    lock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], pathlib.Path(sys.argv[2])))
