"""The lock contract on LocalLock and FileLock; what only the file lock does: processes, crashes, files."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import threading
from typing import Iterator, List, Optional

import pytest

from flowyml_lite.errors import LockError
from flowyml_lite.locks.base import Lease, Lock
from flowyml_lite.locks.file import FileLock, lock_file_name
from flowyml_lite.locks.local import LocalLock

_ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(params=["local", "file"])
def lock(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[Lock]:
    backend: Lock = LocalLock() if request.param == "local" else FileLock(str(tmp_path / "locks"))
    yield backend
    backend.close()


class TestContract:
    """What every lock backend guarantees (see flowyml_lite/locks/base.py)."""

    def test_a_free_key_is_acquired_and_the_lease_names_it(self, lock: Lock) -> None:
        lease = lock.acquire("job")
        assert isinstance(lease, Lease) and lease.key == "job"
        lease.release()

    def test_a_held_key_cannot_be_acquired_again(self, lock: Lock) -> None:
        lease = lock.acquire("job")
        assert lease is not None
        assert lock.acquire("job") is None
        lease.release()

    def test_a_released_key_can_be_acquired_again(self, lock: Lock) -> None:
        first = lock.acquire("job")
        assert first is not None
        first.release()
        second = lock.acquire("job")
        assert second is not None
        second.release()

    def test_different_keys_are_independent(self, lock: Lock) -> None:
        a, b = lock.acquire("a"), lock.acquire("b")
        assert a is not None and b is not None
        a.release()
        b.release()

    def test_release_is_idempotent(self, lock: Lock) -> None:
        lease = lock.acquire("job")
        assert lease is not None
        lease.release()
        lease.release()
        again = lock.acquire("job")
        assert again is not None
        again.release()

    def test_a_stale_lease_never_releases_the_next_holders_lock(self, lock: Lock) -> None:
        stale = lock.acquire("job")
        assert stale is not None
        stale.release()
        current = lock.acquire("job")
        assert current is not None
        stale.release()  # must not free `current`
        assert lock.acquire("job") is None
        current.release()

    def test_renew_reports_whether_the_lease_is_still_held(self, lock: Lock) -> None:
        lease = lock.acquire("job")
        assert lease is not None
        assert lease.renew(30.0) is True
        lease.release()
        assert lease.renew(30.0) is False

    def test_a_lease_releases_when_its_with_block_ends(self, lock: Lock) -> None:
        lease = lock.acquire("job")
        assert lease is not None
        with lease:
            assert lock.acquire("job") is None
        again = lock.acquire("job")
        assert again is not None
        again.release()

    def test_acquire_keeps_its_positional_arguments_and_takes_an_owner(self, lock: Lock) -> None:
        lease = lock.acquire("job", 30.0, 0.0)
        assert lease is not None
        lease.release()
        owned = lock.acquire("job", owner="node-a")
        assert owned is not None and lock.acquire("job", owner="node-a") is None
        owned.release()

    def test_release_owner_never_frees_another_owners_lease(self, lock: Lock) -> None:
        theirs = lock.acquire("theirs", owner="node-b")
        unowned = lock.acquire("unowned")
        assert theirs is not None and unowned is not None
        assert isinstance(lock.release_owner("node-a"), int)
        assert lock.acquire("theirs") is None and lock.acquire("unowned") is None
        theirs.release()
        unowned.release()

    def test_these_locks_do_not_expire(self, lock: Lock) -> None:
        assert lock.expires is False

    def test_a_timeout_gives_up_with_none_while_the_key_stays_held(self, lock: Lock) -> None:
        lease = lock.acquire("job")
        assert lease is not None
        assert lock.acquire("job", timeout=0.05) is None
        lease.release()

    def test_a_waiting_acquire_gets_the_key_when_the_holder_releases(self, lock: Lock) -> None:
        lease = lock.acquire("job")
        assert lease is not None
        got: List[Optional[Lease]] = []
        waiter = threading.Thread(target=lambda: got.append(lock.acquire("job", timeout=30.0)))
        waiter.start()
        lease.release()
        waiter.join(30.0)
        assert got and got[0] is not None
        got[0].release()

    def test_threads_are_mutually_excluded(self, lock: Lock) -> None:
        inside = 0
        most_inside = 0
        entries = 0
        guard = threading.Lock()

        def worker() -> None:
            nonlocal inside, most_inside, entries
            for _ in range(20):
                lease = lock.acquire("shared", timeout=30.0)
                assert lease is not None
                with guard:
                    inside += 1
                    entries += 1
                    most_inside = max(most_inside, inside)
                with guard:
                    inside -= 1
                lease.release()

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60.0)
        assert entries == 80
        assert most_inside == 1

    # -- many keys at once ---------------------------------------------------------------
    def test_acquire_many_answers_each_key_in_order_with_none_where_it_is_held(self, lock: Lock) -> None:
        held = lock.acquire("b", owner="node-b")
        assert held is not None
        taken = lock.acquire_many(["a", "b", "c"], 30.0, "node-a")
        assert [None if t is None else t.key for t in taken] == ["a", None, "c"]
        assert lock.acquire("a") is None and lock.acquire("c") is None
        for lease in (*taken, held):
            if lease is not None:
                lease.release()
        again = lock.acquire_many(["a", "b", "c"], 30.0, "node-a")
        assert all(lease is not None for lease in again)
        for lease in again:
            assert lease is not None
            lease.release()

    def test_acquire_many_takes_a_repeated_key_once(self, lock: Lock) -> None:
        first, second = lock.acquire_many(["job", "job"], 30.0, "node-a")
        assert first is not None and second is None
        first.release()

    def test_acquire_many_of_no_keys_is_an_empty_answer(self, lock: Lock) -> None:
        assert lock.acquire_many([], 30.0, "node-a") == []


class _WithoutOwner(Lock):
    """A lock plugin written before leases had owners: ``acquire`` takes no ``owner``."""

    def __init__(self, fail_on: Optional[str] = None) -> None:
        self.inner = LocalLock()
        self.fail_on = fail_on

    def acquire(self, key, ttl_seconds=None, timeout=0.0):  # type: ignore[no-untyped-def,override]
        if key == self.fail_on:
            raise LockError("the lock server went away")
        return self.inner.acquire(key, ttl_seconds, timeout)


class TestAcquireManyByDefault:
    """The contract's default acquire_many: one acquire per key, for any plugin."""

    def test_a_plugin_whose_acquire_takes_no_owner_still_acquires_many(self) -> None:
        lock = _WithoutOwner()
        taken = lock.acquire_many(["a", "b"], 30.0, "node-a")
        assert [t is not None for t in taken] == [True, True]
        assert lock.inner.acquire("a") is None
        for lease in taken:
            assert lease is not None
            lease.release()

    def test_an_error_midway_raises_after_releasing_what_the_call_took(self) -> None:
        lock = _WithoutOwner(fail_on="c")
        with pytest.raises(LockError):
            lock.acquire_many(["a", "b", "c", "d"], 30.0, "node-a")
        for key in ("a", "b", "d"):
            lease = lock.inner.acquire(key)
            assert lease is not None, key
            lease.release()


class TestOwnersOfKernelReleasedLocks:
    """The kernel frees a file or local lock when its process dies: release_owner has nothing to do."""

    @pytest.mark.parametrize("kind", ["local", "file"])
    def test_release_owner_is_a_no_op_that_returns_zero(self, kind: str, tmp_path: pathlib.Path) -> None:
        backend: Lock = LocalLock() if kind == "local" else FileLock(str(tmp_path / "locks"))
        lease = backend.acquire("job", owner="node-a")
        assert lease is not None
        assert backend.release_owner("node-a") == 0
        assert lease.renew(1.0) is True
        backend.close()


class TestFileLockFiles:
    def test_the_directory_is_created_when_missing(self, tmp_path: pathlib.Path) -> None:
        directory = tmp_path / "a" / "b"
        FileLock(str(directory))
        assert directory.is_dir()

    def test_a_path_object_is_accepted(self, tmp_path: pathlib.Path) -> None:
        assert FileLock(tmp_path).directory == str(tmp_path)

    def test_one_file_per_key_inside_the_directory(self, tmp_path: pathlib.Path) -> None:
        lock = FileLock(str(tmp_path))
        for key in ("a", "b"):
            lease = lock.acquire(key)
            assert lease is not None
            lease.release()
        expected = sorted([lock_file_name("a"), lock_file_name("b")])
        assert sorted(p.name for p in tmp_path.iterdir()) == expected

    def test_the_lock_file_is_never_deleted(self, tmp_path: pathlib.Path) -> None:
        lock = FileLock(str(tmp_path))
        lease = lock.acquire("job")
        assert lease is not None
        path = pathlib.Path(lock.path_for("job"))
        inode = path.stat().st_ino
        lease.release()
        lock.close()
        assert path.exists() and path.stat().st_ino == inode

    @pytest.mark.parametrize(
        "key", ["../../etc/passwd", "a/b", "a\\b", "nul", "", " ", "é✓", "x" * 500, "a:b*?"]
    )
    def test_any_key_maps_to_a_safe_file_inside_the_directory(self, tmp_path: pathlib.Path, key: str) -> None:
        lock = FileLock(str(tmp_path))
        path = pathlib.Path(lock.path_for(key))
        assert path.parent == tmp_path
        assert len(path.name) < 100
        assert all(c.isalnum() or c in "._-" for c in path.name)
        lease = lock.acquire(key)
        assert lease is not None
        lease.release()

    def test_keys_that_sanitize_alike_get_different_files(self) -> None:
        names = {lock_file_name(k) for k in ("a/b", "a_b", "a b", "a\\b", "A/B")}
        assert len(names) == 5

    def test_keys_that_sanitize_alike_do_not_exclude_each_other(self, tmp_path: pathlib.Path) -> None:
        lock = FileLock(str(tmp_path))
        a, b = lock.acquire("a/b"), lock.acquire("a_b")
        assert a is not None and b is not None
        a.release()
        b.release()

    def test_an_unusable_directory_raises_a_lock_error_that_says_what_to_set(
        self, tmp_path: pathlib.Path
    ) -> None:
        blocker = tmp_path / "file"
        blocker.write_text("")
        with pytest.raises(LockError, match="lock_dir"):
            FileLock(str(blocker / "sub"))

    def test_close_releases_what_is_still_held(self, tmp_path: pathlib.Path) -> None:
        first = FileLock(str(tmp_path))
        assert first.acquire("job") is not None
        first.close()
        second = FileLock(str(tmp_path))
        lease = second.acquire("job")
        assert lease is not None
        lease.release()


class TestFileLockWithinAProcess:
    def test_a_second_acquire_through_the_same_instance_returns_none_not_reentrant(
        self, tmp_path: pathlib.Path
    ) -> None:
        lock = FileLock(str(tmp_path))
        lease = lock.acquire("job")
        assert lease is not None
        assert lock.acquire("job") is None
        lease.release()

    def test_two_instances_on_one_directory_exclude_each_other(self, tmp_path: pathlib.Path) -> None:
        one, two = FileLock(str(tmp_path)), FileLock(str(tmp_path))
        lease = one.acquire("job")
        assert lease is not None
        assert two.acquire("job") is None
        lease.release()
        other = two.acquire("job")
        assert other is not None
        assert one.acquire("job") is None
        other.release()

    def test_releasing_a_lease_closes_its_file_descriptor(self, tmp_path: pathlib.Path) -> None:
        if not os.path.isdir("/proc/self/fd"):
            pytest.skip("needs /proc to count descriptors")
        lock = FileLock(str(tmp_path))
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(50):
            lease = lock.acquire("job")
            assert lease is not None
            assert lock.acquire("job") is None
            lease.release()
        assert len(os.listdir("/proc/self/fd")) == before


_HOLDER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from flowyml_lite.locks.file import FileLock
lease = FileLock(sys.argv[2]).acquire(sys.argv[3], timeout=30)
print("locked" if lease else "busy", flush=True)
if sys.argv[4] == "hold":
    time.sleep(120)
"""


def _child(directory: pathlib.Path, key: str, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(_ROOT), str(directory), key, mode],
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
class TestFileLockAcrossProcesses:
    def test_a_key_held_by_another_process_cannot_be_acquired(self, tmp_path: pathlib.Path) -> None:
        child = _child(tmp_path, "job", "hold")
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "locked"
            assert FileLock(str(tmp_path)).acquire("job") is None
            assert FileLock(str(tmp_path)).acquire("job", timeout=0.05) is None
        finally:
            child.kill()
            child.wait()

    def test_the_kernel_releases_the_lock_when_the_holder_is_killed(self, tmp_path: pathlib.Path) -> None:
        child = _child(tmp_path, "job", "hold")
        lock = FileLock(str(tmp_path))
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "locked"
            assert lock.acquire("job") is None
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        assert child.returncode == -signal.SIGKILL
        lease = lock.acquire("job", timeout=10.0)
        assert lease is not None
        lease.release()

    def test_another_process_cannot_take_a_key_this_process_holds(self, tmp_path: pathlib.Path) -> None:
        lease = FileLock(str(tmp_path)).acquire("job")
        assert lease is not None
        try:
            child = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    _HOLDER.replace("timeout=30", "timeout=0"),
                    str(_ROOT),
                    str(tmp_path),
                    "job",
                    "once",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert child.stdout.strip() == "busy"
        finally:
            lease.release()
        after = _child(tmp_path, "job", "once")
        assert after.stdout is not None and after.stdout.readline().strip() == "locked"
        after.wait()
