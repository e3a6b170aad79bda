"""The lease renewer: every lease checked often enough that a loss is seen within seconds, the leases
due together renewed in one round trip per lock, a vanished key taken again, a lost one reported."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, List, Optional, Sequence

import pytest

from flowyml_lite.locks.base import LOST, RENEWED, RETAKEN, Lease, Lock
from flowyml_lite.runtime import renewer as renewer_module
from flowyml_lite.runtime.health import Troubles
from flowyml_lite.runtime.leases import release
from flowyml_lite.runtime.renewer import Renewer
from tests.waiting import until


class _Lease(Lease):
    key = "schedule:s"

    def release(self) -> None:
        return None


class AnsweringLock(Lock):
    """Answers each ``renew_many`` with ``answers[name]`` (RENEWED by default), and counts the calls."""

    expires = True

    def __init__(self) -> None:
        self.answers: dict = {}
        self.calls: List[int] = []
        self.names: dict = {}
        self.lock = threading.Lock()

    def acquire(
        self, key: str, ttl_seconds: Optional[float] = None, timeout: float = 0.0, owner: Optional[str] = None
    ) -> Optional[Lease]:
        return _Lease()

    def renew_many(self, leases: Sequence[Lease], ttl_seconds: float) -> List[str]:
        with self.lock:
            self.calls.append(len(leases))
            return [self.answers.get(self.names.get(id(lease)), RENEWED) for lease in leases]


@pytest.fixture(autouse=True)
def _no_renewer_left_behind() -> Any:
    """Every test ends its renewals: the renewer's thread ends with the last of them."""
    yield
    assert until(lambda: not [t for t in threading.enumerate() if t.name == "flowyml_lite-renewer"], 5)


def test_a_long_ttl_is_still_checked_every_two_seconds() -> None:
    renewer = Renewer()
    renewal = renewer.add(_Lease(), 60.0, "s")
    short = renewer.add(_Lease(), 0.3, "t")
    try:
        assert renewal.interval == 2.0  # a third of the TTL would be 20 s: a loss unseen that long
        assert short.interval == pytest.approx(0.1)
    finally:
        renewal.set()
        short.set()


def test_the_leases_due_together_are_renewed_in_one_call_to_their_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(renewer_module, "RENEW_CHECK_SECONDS", 0.1)
    lock, renewer = AnsweringLock(), Renewer()
    renewals = [renewer.add(_Lease(), 60.0, f"s{i}", lock) for i in range(20)]
    try:
        assert until(lambda: len(lock.calls) >= 3)
        assert max(lock.calls) == 20 and sum(lock.calls) < 20 * len(lock.calls) + 20
    finally:
        for renewal in renewals:
            renewal.set()


def test_a_vanished_key_taken_again_is_a_warning_and_renewing_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(renewer_module, "RENEW_CHECK_SECONDS", 0.05)
    lock, renewer, lease = AnsweringLock(), Renewer(), _Lease()
    lock.names[id(lease)] = "s"
    lock.answers["s"] = RETAKEN
    with caplog.at_level(logging.WARNING, logger="flowyml_lite.scheduler"):
        renewal = renewer.add(lease, 60.0, "s", lock, Troubles())
        assert until(lambda: len(lock.calls) >= 1)
        lock.answers["s"] = RENEWED
        calls = len(lock.calls)
        assert until(lambda: len(lock.calls) > calls), "renewing stopped after the key was taken again"
        renewal.set()
    assert any("taken again" in r.getMessage() and "'s'" in r.getMessage() for r in caplog.records)
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)


def test_a_lease_another_process_holds_is_an_error_and_in_health_until_the_run_ends(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(renewer_module, "RENEW_CHECK_SECONDS", 0.05)
    lock, renewer, lease, troubles = AnsweringLock(), Renewer(), _Lease(), Troubles()
    lock.names[id(lease)] = "etl"
    lock.answers["etl"] = LOST
    with caplog.at_level(logging.ERROR, logger="flowyml_lite.scheduler"):
        renewal = renewer.add(lease, 60.0, "etl", lock, troubles)
        assert until(lambda: troubles.active("lock:lost:etl"))
        time.sleep(0.2)
        assert len(lock.calls) == 1  # not renewed again: it is someone else's
        assert troubles.active("lock:lost:etl")
        lease.lost = True  # its release finds it held by another: logged once, by the renewer
        release(lease, renewal, "etl")
    assert not troubles.active("lock:lost:etl")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "lost the lock of 'etl' while its run goes on" in errors[0]


def test_a_release_that_finds_its_lease_gone_logs_the_loss_once(caplog: pytest.LogCaptureFixture) -> None:
    lease = _Lease()
    lease.lost = True
    with caplog.at_level(logging.ERROR, logger="flowyml_lite.scheduler"):
        assert release(lease, None, "etl") is True
    assert [r.getMessage()[:44] for r in caplog.records] == ["lost the lock of 'etl' while its run goes on"]


def test_failing_renewals_are_logged_once_per_outage_not_per_lease_and_period(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(renewer_module, "RENEW_CHECK_SECONDS", 0.02)

    class DownLock(AnsweringLock):
        down = True

        def renew_many(self, leases: Sequence[Lease], ttl_seconds: float) -> List[str]:
            self.calls.append(len(leases))
            if self.down:
                raise ConnectionError("redis went away")
            return [RENEWED] * len(leases)

    lock, renewer = DownLock(), Renewer()
    with caplog.at_level(logging.WARNING, logger="flowyml_lite.scheduler"):
        renewals = [renewer.add(_Lease(), 60.0, f"s{i}", lock) for i in range(5)]
        assert until(lambda: len(lock.calls) >= 5)
        lock.down = False
        calls = len(lock.calls)
        assert until(lambda: len(lock.calls) > calls + 1)
        for renewal in renewals:
            renewal.set()
    failed = [r for r in caplog.records if "could not renew" in r.getMessage()]
    assert len(failed) == 1
    assert any("work again" in r.getMessage() for r in caplog.records)
