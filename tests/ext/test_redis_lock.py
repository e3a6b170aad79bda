"""RedisLock on a real Redis server: the lock contract suite, expiry, processes, fire markers, errors."""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Iterator, List, Optional, Tuple

import pytest

from flowyml_lite.core.scheduler import open_lock
from flowyml_lite.core.scheduler_config import SchedulerConfig
from flowyml_lite.errors import ConfigurationError, LockError
from flowyml_lite.locks.base import LOST, RENEWED, RETAKEN, Lease, Lock
from tests.locks import test_locks as lock_contract

pytest.importorskip("redis", reason="the redis extra is not installed")

from flowyml_lite_ext.redis_lock import RedisLock, mask_url

pytestmark = pytest.mark.redis

_ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def lock(redis_lock: RedisLock) -> Iterator[Lock]:
    """The contract suite's ``lock`` fixture, here a RedisLock."""
    yield redis_lock


class TestRedisLockContract(lock_contract.TestContract):
    """The same contract tests as LocalLock and FileLock, run against Redis."""

    # The one contract test that is about non-expiring backends; its Redis opposite is below.
    test_these_locks_do_not_expire = None  # type: ignore[assignment]

    def test_redis_locks_expire(self, lock: Lock) -> None:
        assert lock.expires is True


class TestKeysInRedis:
    def test_a_lock_is_a_namespaced_key_holding_a_random_token_with_a_ttl(
        self, redis_lock: RedisLock, redis_client: Any
    ) -> None:
        lease = redis_lock.acquire("job", ttl_seconds=30)
        assert lease is not None
        name = f"{redis_lock.prefix}lock:job"
        token = redis_client.get(name)
        assert token is not None and len(token) == 32
        assert 0 < redis_client.pttl(name) <= 30_000
        lease.release()
        assert redis_client.exists(name) == 0

    def test_two_acquisitions_use_different_tokens(self, redis_lock: RedisLock, redis_client: Any) -> None:
        tokens = []
        for _ in range(2):
            lease = redis_lock.acquire("job")
            assert lease is not None
            tokens.append(redis_client.get(f"{redis_lock.prefix}lock:job"))
            lease.release()
        assert tokens[0] != tokens[1]

    def test_the_default_prefix_is_flowyml_lite(self, redis_url: str, redis_client: Any) -> None:
        lock = RedisLock(redis_url)
        key = f"test-default-prefix-{os.getpid()}-{id(lock)}"
        lease = lock.acquire(key)
        assert lease is not None
        try:
            assert redis_client.exists(f"flowyml_lite:lock:{key}") == 1
        finally:
            lease.release()
            lock.close()

    def test_locks_under_different_prefixes_are_independent(
        self, redis_url: str, redis_lock: RedisLock
    ) -> None:
        other = RedisLock(redis_url, prefix=redis_lock.prefix + "other:")
        a, b = redis_lock.acquire("job"), other.acquire("job")
        assert a is not None and b is not None
        a.release()
        b.release()
        other.close()


class TestExpiry:
    def test_an_expired_lease_frees_the_lock_for_another_holder(self, redis_lock: RedisLock) -> None:
        first = redis_lock.acquire("job", ttl_seconds=0.05)
        assert first is not None
        second = redis_lock.acquire("job", ttl_seconds=30, timeout=30)
        assert second is not None
        assert first.renew(30) is False
        second.release()

    def test_renew_extends_the_ttl(self, redis_lock: RedisLock, redis_client: Any) -> None:
        lease = redis_lock.acquire("job", ttl_seconds=1)
        assert lease is not None
        name = f"{redis_lock.prefix}lock:job"
        assert redis_client.pttl(name) <= 1000
        assert lease.renew(600) is True
        assert redis_client.pttl(name) > 1000
        lease.release()

    def test_a_late_release_does_not_delete_the_next_holders_lock(
        self, redis_lock: RedisLock, redis_client: Any
    ) -> None:
        stale = redis_lock.acquire("job", ttl_seconds=0.05)
        assert stale is not None
        current = redis_lock.acquire("job", ttl_seconds=30, timeout=30)
        assert current is not None
        token = redis_client.get(f"{redis_lock.prefix}lock:job")
        stale.release()
        assert redis_client.get(f"{redis_lock.prefix}lock:job") == token
        assert redis_lock.acquire("job") is None
        assert current.renew(30) is True
        current.release()

    def test_a_late_renew_does_not_extend_the_next_holders_lock(
        self, redis_lock: RedisLock, redis_client: Any
    ) -> None:
        stale = redis_lock.acquire("job", ttl_seconds=0.05)
        assert stale is not None
        current = redis_lock.acquire("job", ttl_seconds=5, timeout=30)
        assert current is not None
        assert stale.renew(600) is False
        assert redis_client.pttl(f"{redis_lock.prefix}lock:job") <= 5000
        current.release()

    @pytest.mark.parametrize("ttl", [0, -1, float("inf"), float("nan")])
    def test_a_ttl_that_is_not_a_positive_finite_number_is_refused(
        self, redis_lock: RedisLock, ttl: float
    ) -> None:
        with pytest.raises(ValueError, match="ttl_seconds"):
            redis_lock.acquire("job", ttl_seconds=ttl)

    def test_close_releases_the_leases_still_held(self, redis_url: str, redis_prefix: str) -> None:
        lock = RedisLock(redis_url, prefix=redis_prefix)
        lease = lock.acquire("job", ttl_seconds=600)
        assert lease is not None
        lock.close()
        other = RedisLock(redis_url, prefix=redis_prefix)
        again = other.acquire("job")
        assert again is not None
        again.release()
        other.close()


class TestClaimFire:
    def test_only_the_first_claim_of_a_fire_succeeds(self, redis_lock: RedisLock, redis_client: Any) -> None:
        assert redis_lock.claim_fire("etl@2024-03-10T06:00:00Z", 60) is True
        assert redis_lock.claim_fire("etl@2024-03-10T06:00:00Z", 60) is False
        name = f"{redis_lock.prefix}fire:etl@2024-03-10T06:00:00Z"
        assert redis_client.get(name) == "1"
        assert 0 < redis_client.pttl(name) <= 60_000

    def test_different_fires_are_claimed_independently(self, redis_lock: RedisLock) -> None:
        assert redis_lock.claim_fire("etl@1", 60) is True
        assert redis_lock.claim_fire("etl@2", 60) is True

    def test_a_fire_marker_does_not_block_a_lock_of_the_same_key(self, redis_lock: RedisLock) -> None:
        assert redis_lock.claim_fire("job", 60) is True
        lease = redis_lock.acquire("job")
        assert lease is not None
        lease.release()

    def test_racing_threads_have_exactly_one_winner(self, redis_url: str, redis_prefix: str) -> None:
        locks = [RedisLock(redis_url, prefix=redis_prefix) for _ in range(8)]
        barrier = threading.Barrier(len(locks))
        results: List[bool] = []

        def contender(lock: RedisLock) -> None:
            barrier.wait()
            results.append(lock.claim_fire("etl@now", 60))

        threads = [threading.Thread(target=contender, args=(lock,)) for lock in locks]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(results) == [False] * 7 + [True]
        for lock in locks:
            lock.close()

    def test_a_fire_can_be_claimed_again_once_its_marker_expired(self, redis_lock: RedisLock) -> None:
        assert redis_lock.claim_fire("etl@1", 0.01) is True
        deadline = time.monotonic() + 30  # the marker lives 10 ms; this only bounds a broken run
        while not redis_lock.claim_fire("etl@1", 60):
            assert time.monotonic() < deadline, "the fire marker never expired"
            time.sleep(0.005)


_HOLDER = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
from flowyml_lite_ext.redis_lock import RedisLock
url, prefix, mode = sys.argv[2], sys.argv[3], sys.argv[4]
lock = RedisLock(url, prefix=prefix)
if mode == "hold":
    lease = lock.acquire("job", ttl_seconds=float(sys.argv[5]))
    print("locked" if lease else "busy", flush=True)
    sys.stdin.readline()
else:  # "loop": take the lock many times, writing enter/exit lines to a shared log while holding it
    log, go, rounds = sys.argv[5], sys.argv[6], int(sys.argv[7])
    while not os.path.exists(go):
        time.sleep(0.002)
    for _ in range(rounds):
        lease = lock.acquire("job", ttl_seconds=60, timeout=120)
        assert lease is not None
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"enter {os.getpid()}\\n".encode())
        os.write(fd, f"exit {os.getpid()}\\n".encode())
        os.close(fd)
        lease.release()
"""


def _python(*args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(_ROOT), *args], text=True, stdout=subprocess.PIPE, **kwargs
    )


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
class TestAcrossProcesses:
    def test_a_key_held_by_another_process_cannot_be_acquired(
        self, redis_url: str, redis_prefix: str, redis_lock: RedisLock
    ) -> None:
        child = _python(redis_url, redis_prefix, "hold", "600", stdin=subprocess.PIPE)
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "locked"
            assert redis_lock.acquire("job") is None
            assert redis_lock.acquire("job", timeout=0.05) is None
        finally:
            child.kill()
            child.wait()

    def test_the_ttl_frees_the_lock_of_a_killed_holder(
        self, redis_url: str, redis_prefix: str, redis_lock: RedisLock
    ) -> None:
        child = _python(redis_url, redis_prefix, "hold", "1", stdin=subprocess.PIPE)
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "locked"
            assert redis_lock.acquire("job") is None
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        lease = redis_lock.acquire("job", timeout=30)
        assert lease is not None
        lease.release()

    def test_two_processes_are_mutually_excluded(
        self, redis_url: str, redis_prefix: str, tmp_path: pathlib.Path
    ) -> None:
        log, go, rounds = tmp_path / "log", tmp_path / "go", 40
        args = (redis_url, redis_prefix, "loop", str(log), str(go), str(rounds))
        children = [_python(*args) for _ in range(2)]
        go.touch()
        for child in children:
            assert child.wait(120) == 0
        lines = log.read_text().splitlines()
        assert len(lines) == 2 * 2 * rounds
        holder: Optional[str] = None
        for line in lines:
            what, pid = line.split()
            if what == "enter":
                assert holder is None, f"{pid} entered while {holder} held the lock"
                holder = pid
            else:
                assert holder == pid
                holder = None
        assert len({line.split()[1] for line in lines}) == 2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestErrors:
    def test_an_unreachable_server_is_a_lock_error_naming_the_url_with_a_hint(self) -> None:
        url = f"redis://127.0.0.1:{_closed_port()}/0"
        with pytest.raises(LockError, match="redis_url") as info:
            RedisLock(url, socket_timeout=2)
        assert url in str(info.value)

    def test_the_password_never_appears_in_the_error(self) -> None:
        url = f"redis://:hunter2@127.0.0.1:{_closed_port()}/0"
        with pytest.raises(LockError) as info:
            RedisLock(url, socket_timeout=2)
        assert "hunter2" not in str(info.value)
        assert ":***@127.0.0.1" in str(info.value)

    def test_a_url_of_another_scheme_is_a_configuration_error(self) -> None:
        with pytest.raises(ConfigurationError, match="redis://localhost:6379/0"):
            RedisLock("http://localhost:6379/0")

    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("redis://user:pw@host:1/0", "redis://user:***@host:1/0"),
            ("redis://:pw@host/0", "redis://:***@host/0"),
            ("redis://host:6379/0", "redis://host:6379/0"),
        ],
    )
    def test_mask_url_hides_only_the_password(self, url: str, shown: str) -> None:
        assert mask_url(url) == shown

    def test_repr_masks_the_password(self, redis_url: str) -> None:
        lock = RedisLock(redis_url)
        assert "RedisLock(" in repr(lock)
        lock.close()


class TestConfiguration:
    def test_the_guide_config_opens_a_redis_lock(self, redis_url: str, tmp_path: pathlib.Path) -> None:
        config = SchedulerConfig(
            distributed=True, lock_backend="redis", redis_url=redis_url, db_path=str(tmp_path / "s.db")
        )
        lock = open_lock(config)
        assert isinstance(lock, RedisLock) and lock.url == redis_url
        lease = lock.acquire(f"test-config-{os.getpid()}-{id(lock)}")
        assert isinstance(lease, Lease)
        lease.release()
        lock.close()

    def test_from_config_needs_a_redis_url(self) -> None:
        with pytest.raises(ConfigurationError, match="redis_url"):
            RedisLock.from_config(SchedulerConfig())


class LongRun:
    """A scheduler with a Redis lock (TTL 1.2 s) whose job ``long`` runs until ``finish()``."""

    def __init__(self, lock: RedisLock, ttl: float = 1.2, started: bool = False) -> None:
        from flowyml_lite import PipelineScheduler

        self.started, self.release = threading.Event(), threading.Event()
        self.outcome: List[Any] = []
        self.scheduler = PipelineScheduler(
            SchedulerConfig(persist_schedules=False, lock_ttl_seconds=ttl), lock=lock
        )
        self.scheduler.schedule_interval("long", self._job, hours=1)
        if started:  # its health says degraded, not stopped
            self.scheduler.start()
        self.runner = threading.Thread(
            target=lambda: self.outcome.append(self.scheduler.run_now("long", wait=True, timeout=30))
        )

    def _job(self) -> None:
        self.started.set()
        self.release.wait(20)

    def begin(self) -> None:
        self.runner.start()
        assert self.started.wait(10)

    def finish(self) -> str:
        """Let the job return; the run's recorded status."""
        self.release.set()
        self.runner.join(10)
        assert self.outcome
        return str(self.outcome[0]["status"])

    def close(self) -> None:
        self.release.set()
        if self.runner.is_alive():
            self.runner.join(10)
        self.scheduler.close()


class TestTheSchedulerRenewsItsLeaseDuringARun:
    """A scheduler holding a Redis lock around a run longer than the lock's TTL, end to end."""

    @pytest.fixture
    def long_run(self, redis_lock: RedisLock) -> Iterator[LongRun]:
        run = LongRun(redis_lock)
        yield run
        run.close()

    def test_a_run_three_ttls_long_keeps_the_lock_until_it_ends_then_frees_it(
        self, long_run: LongRun, redis_url: str, redis_prefix: str, redis_client: Any
    ) -> None:
        other_host = RedisLock(redis_url, prefix=redis_prefix)
        try:
            long_run.begin()
            name = f"{redis_prefix}lock:schedule:long"
            deadline = time.monotonic() + 3 * 1.2
            checks = 0
            while time.monotonic() < deadline:  # without renewal the key would vanish after 1.2 s
                assert other_host.acquire("schedule:long", ttl_seconds=5) is None
                assert redis_client.pttl(name) > 0
                checks += 1
                time.sleep(0.1)
            assert checks > 20
            assert long_run.finish() == "succeeded"
            assert redis_client.exists(name) == 0  # released when the run ended, not left to expire
            lease = other_host.acquire("schedule:long", ttl_seconds=5)
            assert lease is not None
            lease.release()
        finally:
            other_host.close()

    def test_a_lease_lost_mid_run_is_logged_and_the_run_still_finishes(
        self, long_run: LongRun, redis_prefix: str, redis_client: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        name = f"{redis_prefix}lock:schedule:long"
        with caplog.at_level("ERROR", logger="flowyml_lite.scheduler"):
            long_run.begin()
            redis_client.set(name, "someone-else")  # e.g. after a failover
            time.sleep(1.2)  # more than one renewal period (0.4 s)
            assert long_run.finish() == "succeeded"
        assert any("lost the lock of 'long'" in r.getMessage() for r in caplog.records)
        assert redis_client.get(name) == "someone-else"  # not deleted


class TestOwners:
    """A lease taken for a node is released at once when that node is declared lost."""

    def test_release_owner_frees_every_lease_of_that_owner_and_no_other(
        self, redis_lock: RedisLock, redis_url: str, redis_prefix: str
    ) -> None:
        mine = [redis_lock.acquire(f"job-{i}", ttl_seconds=60, owner="node-a") for i in range(3)]
        theirs = redis_lock.acquire("other", ttl_seconds=60, owner="node-b")
        plain = redis_lock.acquire("plain", ttl_seconds=60)
        assert all(mine) and theirs is not None and plain is not None
        assert redis_lock.release_owner("node-a") == 3
        other_host = RedisLock(redis_url, prefix=redis_prefix)
        try:
            for i in range(3):  # free for anyone at once, not at the TTL
                lease = other_host.acquire(f"job-{i}", ttl_seconds=5)
                assert lease is not None
                lease.release()
            assert other_host.acquire("other") is None and other_host.acquire("plain") is None
        finally:
            other_host.close()
        assert redis_lock.release_owner("node-a") == 0

    def test_a_key_another_node_took_after_the_lease_lapsed_is_left_alone(
        self, redis_lock: RedisLock, redis_client: Any
    ) -> None:
        stale = redis_lock.acquire("job", ttl_seconds=0.05, owner="node-a")
        assert stale is not None
        time.sleep(0.1)
        current = redis_lock.acquire("job", ttl_seconds=60, owner="node-b")
        assert current is not None
        assert redis_lock.release_owner("node-a") == 0
        assert redis_lock.acquire("job") is None
        current.release()

    def test_the_owner_set_lives_as_long_as_the_longest_lease_and_renewal_extends_it(
        self, redis_lock: RedisLock, redis_client: Any
    ) -> None:
        lease = redis_lock.acquire("job", ttl_seconds=2, owner="node-a")
        assert lease is not None
        owner_key = f"{redis_lock.prefix}owner:node-a"
        assert redis_client.smembers(owner_key) == {f"{redis_lock.prefix}lock:job"}
        assert 0 < redis_client.pttl(owner_key) <= 2000
        assert redis_client.get(f"{redis_lock.prefix}lock:job").startswith("node-a:")
        assert lease.renew(30) is True
        assert redis_client.pttl(owner_key) > 2000
        lease.release()

    @pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
    def test_the_lease_of_a_killed_holder_is_freed_by_release_owner_before_its_ttl(
        self, redis_lock: RedisLock, redis_url: str, redis_prefix: str
    ) -> None:
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; sys.path.insert(0, sys.argv[1]);"
                "from flowyml_lite_ext.redis_lock import RedisLock;"
                "lock = RedisLock(sys.argv[2], prefix=sys.argv[3]);"
                "print('locked' if lock.acquire('job', 600, owner='dead-node') else 'busy', flush=True);"
                "sys.stdin.readline()",
                str(_ROOT),
                redis_url,
                redis_prefix,
            ],
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
            holder.kill()
            holder.wait(30)
            assert redis_lock.acquire("job") is None  # the TTL (600 s) would hold it for ten minutes
            assert redis_lock.release_owner("dead-node") == 1
            lease = redis_lock.acquire("job")
            assert lease is not None
            lease.release()
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait(30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_server_binary() -> str:
    """The redis-server to start; a missing one skips the test, except in CI, where it fails it."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("FLOWYML_TEST_REQUIRE_SERVICES") == "1" or os.environ.get("CI", "").lower() in (
            "1",
            "true",
            "yes",
            "on",
        ):
            pytest.fail(f"{message}; CI must not skip it", pytrace=False)
        pytest.skip(message)
    return binary


@pytest.fixture
def own_redis(tmp_path: pathlib.Path) -> Iterator[Tuple[str, subprocess.Popen[bytes]]]:
    """A throw-away redis-server of this test's own (to stop, freeze and restart), and its URL."""
    binary = _redis_server_binary()
    port = _free_port()
    args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    args += ["--dir", str(tmp_path)]
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    _wait_for_port(port)
    yield url, server
    if server.poll() is None:
        server.send_signal(signal.SIGCONT)
        server.kill()
        server.wait(30)


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 30  # bounds a broken start only
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"redis-server on port {port} did not start"
            time.sleep(0.05)


class TestAServerThatWantsAPassword:
    def test_the_error_says_to_put_the_password_in_the_url(self, own_redis: Tuple[str, Any]) -> None:
        import redis

        url, _ = own_redis
        redis.Redis.from_url(url).config_set("requirepass", "s3cret")  # set after the worker started
        with pytest.raises(LockError) as info:  # said when the lock connects, or at its first acquire
            RedisLock(url).acquire("k", 10)
        assert "wants a password" in str(info.value) and "redis://:PASSWORD@host" in str(info.value)
        assert "s3cret" not in str(info.value)
        right = RedisLock(url.replace("redis://", "redis://:s3cret@"))
        try:
            assert right.acquire("k", 10) is not None
        finally:
            right.close()


@pytest.mark.skipif(sys.platform == "win32", reason="signals are POSIX")
class TestAnUnreachableServer:
    """Every Redis failure is a LockError, quickly: the scheduler then runs on the store's claim alone."""

    def test_the_client_fails_fast_by_design(self, own_redis: Tuple[str, Any]) -> None:
        lock = RedisLock(own_redis[0])
        try:
            client = lock._client
            assert client.connection_pool.connection_kwargs["socket_timeout"] == 1.5
            assert client.connection_pool.connection_kwargs["socket_connect_timeout"] == 1.5
            retry = client.get_retry() or client.connection_pool.connection_kwargs.get("retry")
            assert retry is not None and retry._retries <= 1
        finally:
            lock.close()

    def test_a_stopped_server_is_a_lock_error_for_every_operation_then_the_lock_works_again(
        self, own_redis: Tuple[str, subprocess.Popen[bytes]]
    ) -> None:
        url, server = own_redis
        lock = RedisLock(url, socket_timeout=0.5)
        held = lock.acquire("held", ttl_seconds=60, owner="node-a")
        assert held is not None
        server.terminate()
        server.wait(30)
        with pytest.raises(LockError, match="redis_url"):
            lock.acquire("job", owner="node-a")
        with pytest.raises(LockError):
            lock.release_owner("node-a")
        with pytest.raises(LockError):
            held.renew(60)
        with pytest.raises(LockError):
            lock.claim_fire("fire", 60)
        held.release()  # logged, not raised: the TTL frees it
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        restarted = subprocess.Popen(
            [
                str(server.args[0]),
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for_port(port)
            lease = lock.acquire("job", owner="node-a")  # the same RedisLock reconnects by itself
            assert lease is not None
            lease.release()
        finally:
            lock.close()
            restarted.kill()
            restarted.wait(30)

    def test_a_frozen_server_is_a_lock_error_not_a_hang(
        self, own_redis: Tuple[str, subprocess.Popen[bytes]]
    ) -> None:
        url, server = own_redis
        lock = RedisLock(url, socket_timeout=0.5)
        try:
            server.send_signal(signal.SIGSTOP)  # accepts connections (the kernel does), never answers
            with pytest.raises(LockError, match="Timeout"):
                lock.acquire("job", owner="node-a")
            server.send_signal(signal.SIGCONT)
            lease = lock.acquire("job", owner="node-a")
            assert lease is not None
            lease.release()
        finally:
            server.send_signal(signal.SIGCONT)
            lock.close()


class TestLocksOfLostReplies:
    def test_an_acquire_waits_for_the_release_of_its_own_nodes_stale_lock_in_progress(
        self, redis_lock: RedisLock
    ) -> None:
        """At a heal, one lease thread deletes the locks of acquires whose reply was lost while another
        acquires: the second must not find its own node's stale lock and take it for another's."""
        redis_key = f"{redis_lock.prefix}lock:schedule:s5"
        token = "node-a:lost-reply"
        assert redis_lock._client.set(redis_key, token, px=60_000)  # Redis took it; the reply was lost
        pending = redis_lock._pending
        pending.unsure([(redis_key, token)])
        real = pending._delete

        def slow_release(*args: Any, **kwargs: Any) -> Any:
            time.sleep(0.3)
            return real(*args, **kwargs)

        pending._delete = slow_release  # type: ignore[method-assign]
        cleaner = threading.Thread(target=pending.release)
        cleaner.start()
        time.sleep(0.05)  # the cleanup has taken the list and is deleting
        lease = redis_lock.acquire("schedule:s5", ttl_seconds=30, owner="node-a")
        cleaner.join(5)
        assert lease is not None, "the node's own stale lock was taken for another process's"
        lease.release()


class RedisServer:
    """A redis-server of the test's own without persistence: paused, or restarted empty, at will."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.binary, self.directory, self.port = _redis_server_binary(), directory, _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.start()

    def start(self) -> None:
        args = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.directory)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def restart_empty(self) -> None:
        """What ``SHUTDOWN NOSAVE`` and a start do: every key, lock or not, is gone."""
        self.stop()
        self.start()

    def pause(self, ms: int) -> None:
        """``CLIENT PAUSE``: every client's commands wait ``ms``; a request that times out meanwhile is
        dropped, not done later (the lock's socket timeout is set below the pause)."""
        import redis

        admin = redis.Redis.from_url(self.url)
        admin.client_pause(ms)
        admin.close()


@pytest.fixture
def server(tmp_path: pathlib.Path) -> Iterator[RedisServer]:
    made = RedisServer(tmp_path)
    yield made
    made.stop()


def _held_by(url: str, key: str) -> Optional[str]:
    import redis

    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return client.get(f"flowyml_lite:lock:{key}")  # type: ignore[no-any-return]
    finally:
        client.close()


@pytest.mark.skipif(sys.platform == "win32", reason="redis-server is POSIX")
class TestAReleaseRedisDidNotAnswer:
    """A release that fails while Redis is paused or cut off is kept and done as soon as it answers:
    the node's own stale lock never holds its schedule up for the rest of the TTL (60 s)."""

    def test_the_next_acquire_of_the_key_releases_the_stale_lock_first_and_gets_it(
        self, server: RedisServer
    ) -> None:
        lock = RedisLock(server.url, socket_timeout=0.3)
        try:
            lease = lock.acquire("schedule:s", ttl_seconds=60, owner="node-a")
            assert lease is not None
            server.pause(1000)
            lease.release()  # times out: kept, not left to its TTL
            time.sleep(1.1)
            again = lock.acquire("schedule:s", ttl_seconds=60, owner="node-a")
            assert again is not None, "the node's own stale lock was taken for another process's"
            assert lock.pending_releases() == []
            again.release()
        finally:
            lock.close()

    def test_any_call_that_reaches_redis_does_the_kept_releases_so_other_nodes_can_take_the_key(
        self, server: RedisServer, caplog: pytest.LogCaptureFixture
    ) -> None:
        lock, other_node = RedisLock(server.url, socket_timeout=0.3), RedisLock(server.url)
        try:
            leases = [lock.acquire(f"schedule:s{i}", ttl_seconds=60, owner="node-a") for i in range(3)]
            busy = lock.acquire("schedule:busy", ttl_seconds=60, owner="node-a")
            assert all(leases) and busy is not None
            server.pause(1000)
            with caplog.at_level(logging.WARNING, logger="flowyml_lite.locks.redis"):
                for lease in leases:
                    assert lease is not None
                    lease.release()
                assert sorted(lock.pending_releases()) == ["schedule:s0", "schedule:s1", "schedule:s2"]
                time.sleep(1.1)
                assert lock.renew_many([busy], 60) == [RENEWED]  # the renewer's round trip, say
            assert lock.pending_releases() == []
            for i in range(3):
                taken = other_node.acquire(f"schedule:s{i}", ttl_seconds=5)
                assert taken is not None
                taken.release()
            failures = [r for r in caplog.records if "could not release" in r.getMessage()]
            assert len(failures) == 1, "one warning per outage, not one per lease"
            assert any("released the 3 lock(s)" in r.getMessage() for r in caplog.records)
        finally:
            lock.close()
            other_node.close()

    def test_a_scheduler_is_degraded_naming_the_lock_until_the_release_is_done_then_runs_the_schedule(
        self, server: RedisServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from flowyml_lite.runtime import leases

        monkeypatch.setattr(leases, "LOCK_RETRY_SECONDS", 0.2)
        run = LongRun(RedisLock(server.url, socket_timeout=0.3), ttl=60.0, started=True)
        try:
            run.begin()
            server.pause(1500)
            paused = time.monotonic()
            assert run.finish() == "succeeded"  # its release times out, after the run is recorded
            deadline = time.monotonic() + 5
            while "'schedule:long'" not in str(run.scheduler.health_check()["problems"]):
                assert time.monotonic() < deadline, "health did not name the lock whose release failed"
                time.sleep(0.05)
            assert run.scheduler.health_check()["status"] == "degraded"
            while time.monotonic() - paused < 1.5:
                time.sleep(0.05)
            deadline = time.monotonic() + 3
            while _held_by(server.url, "schedule:long") is not None:  # before: 60 s of skipped fires
                assert time.monotonic() < deadline, "the kept release was not done when Redis answered"
                time.sleep(0.05)
            while run.scheduler.health_check()["problems"]:
                assert time.monotonic() < deadline, run.scheduler.health_check()["problems"]
                time.sleep(0.05)
            again = run.scheduler.run_now("long", wait=True, timeout=10)
            assert again is not None and again["status"] == "succeeded", again
        finally:
            run.close()


@pytest.mark.skipif(sys.platform == "win32", reason="redis-server is POSIX")
class TestALeaseRedisLost:
    """Redis restarted empty (no persistence) while runs hold leases: the loss is seen within
    seconds; a vanished key is taken again, one another process took is an error in the log and
    in health until the run ends."""

    def test_renew_many_takes_a_vanished_key_again_and_reports_one_another_holder_took(
        self, server: RedisServer
    ) -> None:
        lock, other_node = RedisLock(server.url), RedisLock(server.url)
        try:
            kept = lock.acquire("schedule:a", ttl_seconds=60, owner="node-a")
            taken = lock.acquire("schedule:b", ttl_seconds=60, owner="node-a")
            assert kept is not None and taken is not None
            token = _held_by(server.url, "schedule:a")
            server.restart_empty()
            assert other_node.acquire("schedule:b", ttl_seconds=60, owner="node-b") is not None
            assert lock.renew_many([kept, taken], 60) == [RETAKEN, LOST]
            assert _held_by(server.url, "schedule:a") == token
            import redis

            client = redis.Redis.from_url(server.url, decode_responses=True)
            assert client.smembers("flowyml_lite:owner:node-a") == {"flowyml_lite:lock:schedule:a"}
            assert 0 < client.pttl("flowyml_lite:lock:schedule:a") <= 60_000
            client.close()
            assert lock.renew_many([kept], 60) == [RENEWED]
        finally:
            lock.close()
            other_node.close()

    def test_a_key_this_process_holds_is_not_granted_again_when_redis_lost_it(
        self, server: RedisServer
    ) -> None:
        lock = RedisLock(server.url)
        try:
            held = lock.acquire("schedule:a", ttl_seconds=60, owner="node-a")
            assert held is not None
            server.restart_empty()
            assert lock.acquire("schedule:a", ttl_seconds=60, owner="node-a") is None
            assert lock.acquire_many(["schedule:a", "schedule:b"], 60, "node-a")[0] is None
        finally:
            lock.close()

    def test_a_release_that_finds_the_key_gone_or_held_by_another_marks_the_lease_lost(
        self, server: RedisServer
    ) -> None:
        lock, other_node = RedisLock(server.url), RedisLock(server.url)
        try:
            gone = lock.acquire("schedule:a", ttl_seconds=60, owner="node-a")
            taken = lock.acquire("schedule:b", ttl_seconds=60, owner="node-a")
            fine = lock.acquire("schedule:c", ttl_seconds=60, owner="node-a")
            assert gone is not None and taken is not None and fine is not None
            server.restart_empty()
            theirs = other_node.acquire("schedule:b", ttl_seconds=60, owner="node-b")
            assert theirs is not None
            assert lock.renew_many([fine], 60) == [RETAKEN]
            for lease in (gone, taken, fine):
                lease.release()
            assert (gone.lost, taken.lost, fine.lost) == (True, True, False)
            assert _held_by(server.url, "schedule:b") is not None  # theirs, left alone
        finally:
            lock.close()
            other_node.close()

    def test_a_running_schedule_takes_its_lock_again_within_seconds_of_a_restart(
        self, server: RedisServer, caplog: pytest.LogCaptureFixture
    ) -> None:
        run = LongRun(RedisLock(server.url), ttl=60.0)  # renewed every 20 s before: unseen that long
        try:
            with caplog.at_level(logging.WARNING, logger="flowyml_lite.scheduler"):
                run.begin()
                token = _held_by(server.url, "schedule:long")
                server.restart_empty()
                deadline = time.monotonic() + 3
                while _held_by(server.url, "schedule:long") != token:
                    assert time.monotonic() < deadline, "the vanished lock was not taken again"
                    time.sleep(0.05)
                other_node = RedisLock(server.url)
                assert other_node.acquire("schedule:long", ttl_seconds=5) is None  # exclusion is back
                other_node.close()
                assert run.finish() == "succeeded"
            assert any("taken again" in r.getMessage() for r in caplog.records)
            assert _held_by(server.url, "schedule:long") is None
        finally:
            run.close()

    def test_a_lock_another_process_took_meanwhile_is_an_error_and_in_health_until_the_run_ends(
        self, server: RedisServer, caplog: pytest.LogCaptureFixture
    ) -> None:
        run, other_node = LongRun(RedisLock(server.url), ttl=60.0, started=True), RedisLock(server.url)
        try:
            with caplog.at_level(logging.ERROR, logger="flowyml_lite.scheduler"):
                run.begin()
                server.restart_empty()
                theirs = other_node.acquire("schedule:long", ttl_seconds=60, owner="node-b")
                assert theirs is not None
                deadline = time.monotonic() + 3  # seen within a renewal check (2 s), not 20 s
                while "lock:lost:long" not in [p["source"] for p in run.scheduler.health_check()["problems"]]:
                    assert time.monotonic() < deadline, "health did not say the lease was lost"
                    time.sleep(0.05)
                assert run.scheduler.health_check()["status"] == "degraded"
                assert run.finish() == "succeeded"
            sources = [p["source"] for p in run.scheduler.health_check()["problems"]]
            assert "lock:lost:long" not in sources  # the run ended
            said = "lost the lock of 'long' while its run goes on"
            lost = [r for r in caplog.records if said in r.getMessage()]
            assert len(lost) == 1, "logged once per run"
            assert _held_by(server.url, "schedule:long") is not None  # theirs, left alone
        finally:
            run.close()
            other_node.close()

    def test_a_run_that_ends_after_its_lock_vanished_logs_the_loss(
        self, server: RedisServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from flowyml_lite.runtime import renewer

        monkeypatch.setattr(renewer, "RENEW_CHECK_SECONDS", 30.0)  # no renewal before the run ends
        run = LongRun(RedisLock(server.url), ttl=60.0)
        try:
            with caplog.at_level(logging.ERROR, logger="flowyml_lite.scheduler"):
                run.begin()
                server.restart_empty()
                assert run.finish() == "succeeded"
                deadline = time.monotonic() + 3  # the release comes just after the outcome
                while not any("lost the lock of 'long'" in r.getMessage() for r in caplog.records):
                    assert time.monotonic() < deadline, "the release did not log the lost lock"
                    time.sleep(0.05)
            assert len([r for r in caplog.records if "lost the lock of 'long'" in r.getMessage()]) == 1
        finally:
            run.close()
