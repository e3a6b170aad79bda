"""Leases while the lock server is cut off: runs never wait on a server known down (each try at one
that is cut off hangs for its timeouts); a probe finds it back, and leases are taken again."""

from __future__ import annotations

import threading
import time
from typing import Any, Iterator, List, Optional

import pytest

from flowyml_lite.errors import LockError
from flowyml_lite.locks.base import Lease, Lock
from flowyml_lite.runtime import leases as leases_module
from flowyml_lite.runtime.health import Troubles
from flowyml_lite.runtime.leases import WITHOUT_LEASE, Leases
from tests.waiting import until


class _Lease(Lease):
    def release(self) -> None:
        return None

    def renew(self, ttl_seconds: Optional[float] = None) -> bool:
        return True


class CutOffLock(Lock):
    """While ``cut``, every request hangs a while, then fails (a server behind a dead link)."""

    expires = True

    def __init__(self) -> None:
        self.cut = threading.Event()
        self.asked: List[str] = []

    def acquire(
        self, key: str, ttl_seconds: Optional[float] = None, timeout: float = 0.0, owner: Optional[str] = None
    ) -> Optional[Lease]:
        self.asked.append(key)
        if self.cut.is_set():
            time.sleep(0.2)
            raise LockError("Timeout connecting to server")
        return _Lease()


@pytest.fixture
def leases(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setattr(leases_module, "LOCK_RETRY_SECONDS", 0.05)
    lock = CutOffLock()
    troubles = Troubles()
    made = Leases(lock, 60.0, "node-a", troubles)
    yield lock, troubles, made
    made.close()


def test_runs_go_on_at_once_while_the_server_is_down_and_leases_come_back_with_it(leases: Any) -> None:
    lock, troubles, made = leases
    assert isinstance(made.take(["s1"])[0], Lease)
    lock.cut.set()
    assert made.take(["s1", "s2"]) == [WITHOUT_LEASE, WITHOUT_LEASE]  # the one try that finds it down
    assert troubles.active("lock")
    asked = len([k for k in lock.asked if k.startswith("schedule:")])
    for _ in range(20):  # while it is down, takes do not ask it: only the probe does
        assert made.take(["s1"]) == [WITHOUT_LEASE]
        time.sleep(0.01)
    assert len([k for k in lock.asked if k.startswith("schedule:")]) == asked
    assert any(k.startswith("probe:") for k in lock.asked)
    lock.cut.clear()
    assert until(lambda: not troubles.active("lock"), 5, every=0.02), "the probe did not find the server back"
    assert isinstance(made.take(["s1"])[0], Lease)


def test_a_closed_leases_object_starts_no_probe_and_is_usable_again(leases: Any) -> None:
    lock, troubles, made = leases
    made.close()
    lock.cut.set()
    assert made.take(["s1"]) == [WITHOUT_LEASE]
    assert made._probing is None  # not known down: the next take asks the server itself
    lock.cut.clear()
    made.later(lambda: None)  # a scheduler started again reopens it
    assert isinstance(made.take(["s1"])[0], Lease)
    assert not troubles.active("lock")


class PendingLock(CutOffLock):
    """A lock whose releases fail while ``cut``: it keeps them and does them when asked again."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: List[str] = []

    def acquire(
        self, key: str, ttl_seconds: Optional[float] = None, timeout: float = 0.0, owner: Optional[str] = None
    ) -> Optional[Lease]:
        lease = super().acquire(key, ttl_seconds, timeout, owner)  # raises while cut
        self.pending.clear()  # the server answers: the kept releases are done first
        return lease

    def pending_releases(self) -> List[str]:
        return list(self.pending)


def test_a_release_the_server_did_not_answer_keeps_health_degraded_naming_it_until_it_is_done(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(leases_module, "LOCK_RETRY_SECONDS", 0.05)
    lock, troubles = PendingLock(), Troubles()
    made = Leases(lock, 60.0, "node-a", troubles)
    try:
        lease = made.take(["s1"])[0]
        assert isinstance(lease, Lease)
        lock.cut.set()
        lock.pending.append("schedule:s1")  # its release timed out: the lock keeps it
        made.release(lease, None, "s1")
        assert troubles.active("lock")
        assert "'schedule:s1'" in str(troubles.problems()[0]["message"])
        assert made.take(["s1"]) == [WITHOUT_LEASE]  # runs go on meanwhile, none skipped
        time.sleep(0.2)
        assert troubles.active("lock"), "health forgot a release still waiting"
        lock.cut.clear()
        assert until(lambda: not troubles.active("lock"), 5), "the probe did not see the releases done"
        assert isinstance(made.take(["s1"])[0], Lease)
    finally:
        made.close()
