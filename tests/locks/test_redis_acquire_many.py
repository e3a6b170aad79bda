"""RedisLock.acquire_many on a real Redis: many leases in one round trip, owned like any other.

Needs ``FLOWYML_TEST_REDIS_URL`` (skipped without it, failed without it in CI); every test works
under a key prefix of its own, deleted afterwards. The contract tests of acquire_many run on Redis
too, through tests/ext/test_redis_lock.py.
"""

from __future__ import annotations

import uuid
from typing import Any, Iterator, List

import pytest

from flowyml_lite.errors import LockError

pytest.importorskip("redis", reason="the redis extra is not installed")

import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from flowyml_lite_ext.redis_lock import RedisLock

pytestmark = pytest.mark.redis


class CountingClient(redis.Redis):  # type: ignore[type-arg]
    """A redis-py client that records the name of every command it sends (one per round trip),
    and can fail one: before it reaches Redis (``down``) or after Redis ran it (``lose_reply``)."""

    sent: List[str]
    down: str = ""
    lose_reply: str = ""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        name = str(args[0]).upper()
        self.sent.append(name)
        if self.down == name:
            self.down = ""
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        reply = super().execute_command(*args, **options)
        if self.lose_reply == name:
            self.lose_reply = ""
            raise RedisConnectionError("the link went down before the reply came")
        return reply


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    chosen = f"flowyml_lite_test:{uuid.uuid4().hex[:12]}:"
    yield chosen
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=chosen + "*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def client(redis_url: str) -> Iterator[CountingClient]:
    counting = CountingClient.from_url(redis_url, decode_responses=False)
    counting.sent = []
    yield counting
    counting.close()


@pytest.fixture
def lock(redis_url: str, prefix: str, client: CountingClient) -> Iterator[RedisLock]:
    made = RedisLock(redis_url, prefix=prefix, client=client)
    yield made
    made.close()


def test_a_thousand_keys_are_one_round_trip(lock: RedisLock, client: CountingClient) -> None:
    warm = lock.acquire_many(["warm"], 30.0, "node-a")  # the script is loaded on first use
    client.sent.clear()
    taken = lock.acquire_many([f"schedule:{i}" for i in range(1000)], 30.0, "node-a")
    assert client.sent == ["EVALSHA"]
    assert all(lease is not None for lease in taken)
    for lease in (*taken, *warm):
        assert lease is not None
        lease.release()


def test_the_leases_are_owned_and_expire_like_those_of_acquire(
    lock: RedisLock, client: CountingClient
) -> None:
    other = lock.acquire("b", ttl_seconds=30, owner="node-b")
    assert other is not None
    taken = lock.acquire_many(["a", "b", "c"], 20.0, "node-a")
    assert [lease is not None for lease in taken] == [True, False, True]
    for name in ("a", "c"):
        token = client.get(f"{lock.prefix}lock:{name}")
        assert token is not None and token.startswith(b"node-a:") and len(token) == len("node-a:") + 32
        assert 0 < client.pttl(f"{lock.prefix}lock:{name}") <= 20_000
    owner_set = f"{lock.prefix}owner:node-a"
    assert client.smembers(owner_set) == {f"{lock.prefix}lock:a".encode(), f"{lock.prefix}lock:c".encode()}
    assert client.pttl(owner_set) > 0
    assert lock.release_owner("node-a") == 2  # node-a declared lost: its leases go at once
    assert client.exists(f"{lock.prefix}lock:a", f"{lock.prefix}lock:c") == 0
    assert client.exists(f"{lock.prefix}lock:b") == 1  # node-b's lease stays
    other.release()


def test_a_lease_renews_and_never_releases_the_next_holders_lock(lock: RedisLock) -> None:
    (lease,) = lock.acquire_many(["job"], 30.0, "node-a")
    assert lease is not None and lease.renew(30.0) is True
    lease.release()
    assert lease.renew(30.0) is False
    current = lock.acquire("job", owner="node-b")
    assert current is not None
    lease.release()  # stale: must not free node-b's lock
    assert lock.acquire("job") is None
    current.release()


def test_locks_taken_by_a_call_whose_reply_was_lost_are_released_when_redis_answers_again(
    lock: RedisLock, client: CountingClient
) -> None:
    lock.acquire_many(["warm"], 30.0, "node-a")
    client.lose_reply = "EVALSHA"
    with pytest.raises(LockError):
        lock.acquire_many(["a", "b"], 30.0, "node-a")
    assert client.exists(f"{lock.prefix}lock:a", f"{lock.prefix}lock:b") == 2  # Redis did take them
    again = lock.acquire_many(["a", "b"], 30.0, "node-a")  # the next call deletes them first
    assert [lease is not None for lease in again] == [True, True]
    for lease in again:
        assert lease is not None
        lease.release()


def test_an_unreachable_server_is_a_lock_error_naming_it(lock: RedisLock, client: CountingClient) -> None:
    lock.acquire_many(["warm"], 30.0, "node-a")
    client.down = "EVALSHA"
    with pytest.raises(LockError, match="redis lock at redis://"):
        lock.acquire_many(["a"], 30.0, "node-a")
    (lease,) = lock.acquire_many(["a"], 30.0, "node-a")  # nothing was taken: free for the next call
    assert lease is not None
    lease.release()
