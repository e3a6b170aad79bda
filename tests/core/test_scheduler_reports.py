"""health_check() when the store fails or hangs, or fires start late: an answer, at once, that says so."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, List

import pytest

from flowyml_lite import PipelineScheduler, SchedulerConfig
from flowyml_lite.errors import StoreError
from flowyml_lite.stores.base import RunStats, ScheduleRecord
from flowyml_lite.stores.memory import MemoryStore


class UnsteadyStore(MemoryStore):
    """A memory store whose reads for health fail or hang while told to."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False
        self.open_gate = threading.Event()
        self.open_gate.set()

    def list_schedules(self) -> List[ScheduleRecord]:
        if self.failing:
            raise StoreError("connection refused")
        return super().list_schedules()

    def stats(self, schedule: Any = None) -> RunStats:
        self.open_gate.wait()  # a frozen database server: the call neither answers nor fails
        return super().stats(schedule)


@pytest.fixture
def unsteady() -> Any:
    store = UnsteadyStore()
    scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False), store=store)
    scheduler.schedule_hourly("etl", lambda: None)
    scheduler.start()
    yield scheduler, store
    store.open_gate.set()
    scheduler.stop(timeout=5)


class TestHealthWhenTheStoreFails:
    def test_a_failing_store_gives_degraded_with_its_error_not_an_exception(self, unsteady: Any) -> None:
        scheduler, store = unsteady
        assert scheduler.health_check()["num_schedules"] == 1
        store.failing = True
        health = scheduler.health_check()
        assert health["status"] == "degraded"
        (problem,) = [p for p in health["problems"] if p["source"] == "health"]
        assert "health could not read the store: StoreError: connection refused" in problem["message"]
        assert health["num_schedules"] == 1  # the last counts read, said to be so
        assert "as read" in problem["message"]
        store.failing = False
        assert scheduler.health_check()["status"] == "running"

    def test_a_hanging_store_is_waited_for_two_seconds_then_not_again(self, unsteady: Any) -> None:
        scheduler, store = unsteady
        store.open_gate.clear()
        started = time.monotonic()
        health = scheduler.health_check()
        assert 1.5 <= time.monotonic() - started < 10
        assert health["num_schedules"] == 1  # this process's own schedules: a slow store is not yet a problem
        assert health["store_read"] == "slow"
        scheduler._reports._glance.slow_after = 1.0  # private: not wait 10 s for "slow" in a test
        started = time.monotonic()
        health = scheduler.health_check()
        assert time.monotonic() - started < 1.0  # the stuck read is not waited for again
        assert health["status"] == "degraded"
        assert any("has not answered health's read" in p["message"] for p in health["problems"])
        store.open_gate.set()
        deadline = time.monotonic() + 5
        while scheduler.health_check()["status"] != "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert scheduler.health_check()["status"] == "running"

    def test_before_any_read_the_answer_counts_this_processs_own_schedules(self, unsteady: Any) -> None:
        scheduler, store = unsteady
        store.failing = True
        health = scheduler.health_check()
        assert health["num_schedules"] == 1 and health["status"] == "degraded"


class SlowClaims(MemoryStore):
    """A memory store whose claims wait while told to (another connection holds the write lock)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()

    def claim_many(self, claims: Any, outcomes: Any = ()) -> Any:
        self.gate.wait()
        return super().claim_many(claims, outcomes)


def test_a_loop_waiting_on_a_claim_says_it_waits_for_the_store() -> None:
    store = SlowClaims()
    config = SchedulerConfig(persist_schedules=False, heartbeat_seconds=0.1)
    scheduler = PipelineScheduler(config, store=store)
    scheduler.schedule_interval("tick", lambda: None, seconds=0.2)
    store.gate.clear()
    scheduler.start()
    try:
        deadline = time.monotonic() + 10
        while not any(p["source"] == "loop" for p in scheduler.problems()) and time.monotonic() < deadline:
            time.sleep(0.05)
        (problem,) = [p for p in scheduler.problems() if p["source"] == "loop"]
        assert "for the store to take a claim" in problem["message"]
    finally:
        store.gate.set()
        scheduler.stop(timeout=5)


def test_health_names_an_async_run_that_blocks_the_event_loop() -> None:
    release = threading.Event()

    async def hog() -> None:
        release.wait(10)  # a blocking call in an async def

    scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False))
    scheduler.schedule_hourly("hog", hog)
    scheduler.start()
    try:
        scheduler.run_now("hog")
        deadline = time.monotonic() + 10
        while scheduler.status() != "degraded" and time.monotonic() < deadline:
            time.sleep(0.05)
        (problem,) = [p for p in scheduler.problems() if p["source"] == "executor:async"]
        assert "blocked" in problem["message"] and "'hog'" in problem["message"]
    finally:
        release.set()
        scheduler.stop(timeout=5)


class PausingClaims(MemoryStore):
    """A memory store that takes ``pause`` seconds to answer each claim (a slow database)."""

    def __init__(self, pause: float) -> None:
        super().__init__()
        self.pause = pause

    def claim_many(self, claims: Any, outcomes: Any = ()) -> Any:
        time.sleep(self.pause)
        return super().claim_many(claims, outcomes)


class TestFiresThatStartLate:
    def test_health_says_so_names_the_slow_store_and_forgets_it_once_starts_are_on_time(
        self, monkeypatch: Any
    ) -> None:
        """A store answering each claim in 0.7 s (under the 1 s "slow store" line): a burst's later
        claim groups start over a second late. Health says degraded and why, and is running again
        once a window passes with fires on time. (Claimed at their instant: claimed ahead, as by
        default, they start on time.)"""
        monkeypatch.setattr("flowyml_lite.runtime.lateness.WINDOW_SECONDS", 4.0)
        store = PausingClaims(0.7)
        config = SchedulerConfig(persist_schedules=False, claim_ahead=False)
        scheduler = PipelineScheduler(config, store=store)
        at = datetime.now(timezone.utc) + timedelta(seconds=1)
        for i in range(30):  # claimed 10, then 20: the second group waits for the first claim
            scheduler.schedule_once(f"report-{i}", lambda: None, at=at)
        scheduler.start()
        try:
            deadline = time.monotonic() + 10
            while store.stats().succeeded < 30 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert scheduler.status() == "degraded"
            (problem,) = [p for p in scheduler.problems() if p["source"] == "late"]
            assert "20 of 30 fire(s)" in problem["message"]
            assert "started more than 1 s after their instant" in problem["message"]
            assert "the store takes up to 0.7 s to answer a claim" in problem["message"]
            health = scheduler.health_check()
            assert health["status"] == "degraded" and any(p["source"] == "late" for p in health["problems"])
            store.pause = 0.0
            deadline = time.monotonic() + 10
            while scheduler.status() != "running" and time.monotonic() < deadline:
                time.sleep(0.1)
            assert scheduler.status() == "running"
        finally:
            scheduler.stop(timeout=5)

    def test_catch_up_runs_after_a_restart_are_not_late(self, tmp_path: Any) -> None:
        """Stopped 3.5 s with a 1 s schedule catching up every instant: its catch-up runs start
        seconds after their instants on purpose, and the process was not running: not news."""
        config = SchedulerConfig(db_path=str(tmp_path / "s.db"))
        first = PipelineScheduler(config)
        first.schedule_interval("tick", lambda: None, seconds=1, catchup="all", max_catchup=5)
        first.start()
        time.sleep(1.2)
        first.stop()
        first.store.close()
        time.sleep(3.5)
        second = PipelineScheduler(config)
        second.schedule_interval("tick", lambda: None, seconds=1, catchup="all", max_catchup=5)
        second.start()
        try:
            time.sleep(1.5)
            assert second.wait_for_runs(5.0)
            history = second.get_history("tick", limit=100)
            assert [e for e in history if e["reason"] == "catch-up" and e["status"] == "succeeded"]
            assert second.status() == "running", second.problems()
        finally:
            second.stop()
            second.store.close()
