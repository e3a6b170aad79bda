"""History retention: the housekeeping thread prunes old runs, keeps each schedule's newest, survives errors.

The scheduler runs its real housekeeping thread (real-time ticks of ``heartbeat_seconds``) on a
FakeClock: pruning is due on the first tick after start and then every 10 minutes of the fake
monotonic clock, so a test moves fake time to make the next pass due.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, List, Optional, Tuple

import pytest

from flowyml_lite import PipelineScheduler, SchedulerConfig
from flowyml_lite.clock import FakeClock
from flowyml_lite.errors import StoreError
from flowyml_lite.stores.base import MISSED, SUCCEEDED, NodeRecord, RunRecord
from flowyml_lite.stores.memory import MemoryStore

FAST = {"heartbeat_seconds": 0.05, "node_timeout_seconds": 5.0}


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)


def wait_until(predicate: Callable[[], Any], clock: Optional[FakeClock] = None, timeout: float = 10) -> None:
    """Poll ``predicate`` on real time; nudge the fake clock so a loop asleep on it re-checks."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)
        if clock is not None:
            clock.advance(0)


class CountingStore(MemoryStore):
    """A memory store that records the arguments of each prune and counts heartbeats."""

    def __init__(self, fail_prunes: bool = False) -> None:
        super().__init__()
        self.fail_prunes = fail_prunes
        self.prunes: List[Tuple[Optional[datetime], Optional[int], Optional[int]]] = []
        self.heartbeats = 0

    def prune_runs(
        self, older_than: Optional[datetime], keep_last: Optional[int], *, limit: Optional[int] = None
    ) -> int:
        self.prunes.append((older_than, keep_last, limit))
        if self.fail_prunes:
            raise StoreError("database is locked")
        return super().prune_runs(older_than, keep_last, limit=limit)

    def heartbeat(self, node: NodeRecord) -> None:
        self.heartbeats += 1
        super().heartbeat(node)


@pytest.fixture
def scheduler_on(clock: FakeClock) -> Any:
    """``scheduler_on(store, **config)``: a scheduler on the fake clock, stopped after the test."""
    made: List[PipelineScheduler] = []

    def make(store: CountingStore, **settings: Any) -> PipelineScheduler:
        settings = {"persist_schedules": False, "shutdown_timeout_seconds": 5.0, **FAST, **settings}
        config = SchedulerConfig(**settings)
        made.append(PipelineScheduler(config, store=store, clock=clock))
        return made[-1]

    yield make
    for scheduler in made:
        scheduler.stop(timeout=5.0)


class TestHousekeepingPrunes:
    def test_old_runs_are_pruned_the_newest_stays_and_the_schedule_still_fires_once(
        self,
        make_scheduler: Any,
        backend: str,
        clock: FakeClock,
        drive: Any,
        fires: Any,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.INFO, logger="flowyml_lite.scheduler")
        scheduler = make_scheduler(backend, history_retention_days=1, history_max_runs=None, **FAST)
        ran: List[datetime] = []
        scheduler.schedule_interval("tick", lambda: ran.append(clock.now()), hours=1)
        drive.through(scheduler, "tick", utc(2024, 1, 1, 5))
        assert fires(scheduler, "tick") == [utc(2024, 1, 1, hour) for hour in range(1, 6)]
        scheduler.disable("tick")
        clock.set(utc(2024, 1, 3, 0, 30))  # two days on: every run is past the one-day retention

        scheduler.start()
        wait_until(lambda: "pruned 4 run(s) from history" in caplog.text)
        assert fires(scheduler, "tick") == [utc(2024, 1, 1, 5)]  # the newest run stays

        scheduler.enable("tick")
        for hour in (1, 2):
            clock.set(utc(2024, 1, 3, hour))  # also makes the next pruning pass due (fake minutes pass)
            wait_until(lambda hour=hour: ran and ran[-1] == utc(2024, 1, 3, hour), clock)
            assert scheduler.wait_for_runs(10.0)
        assert ran[5:] == [utc(2024, 1, 3, 1), utc(2024, 1, 3, 2)]  # each fire once, none re-run
        # Once no longer the newest, the last old run goes too, at the next pass.
        wait_until(lambda: fires(scheduler, "tick") == [utc(2024, 1, 3, 1), utc(2024, 1, 3, 2)])
        assert {e["status"] for e in scheduler.get_history("tick")} == {SUCCEEDED}
        assert scheduler.get_schedule("tick").next_run == utc(2024, 1, 3, 3)

    def test_pruning_runs_once_after_start_then_every_ten_minutes_with_the_configured_limits(
        self, scheduler_on: Any, clock: FakeClock
    ) -> None:
        store = CountingStore()
        scheduler = scheduler_on(store, history_retention_days=30, history_max_runs=500)
        scheduler.start()
        wait_until(lambda: store.prunes)
        assert store.prunes == [(clock.now() - timedelta(days=30), 500, 5000)]
        beats = store.heartbeats
        wait_until(lambda: store.heartbeats >= beats + 5)  # several housekeeping ticks later...
        assert len(store.prunes) == 1  # ...no second pass before ten minutes
        clock.advance(599)
        beats = store.heartbeats
        wait_until(lambda: store.heartbeats >= beats + 5)
        assert len(store.prunes) == 1
        clock.advance(1)
        wait_until(lambda: len(store.prunes) == 2)
        assert store.prunes[1] == (clock.now() - timedelta(days=30), 500, 5000)

    def test_a_backlog_is_pruned_over_several_ticks_and_logged_once_in_total(
        self, scheduler_on: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger="flowyml_lite.scheduler")
        store = CountingStore()
        scheduler = scheduler_on(store, history_retention_days=None, history_max_runs=1)
        scheduler.schedule_interval("tick", lambda: None, hours=1)
        next_fire = scheduler.store.get_schedule("tick").next_fire  # type: ignore[union-attr]
        # One tick's limit (5000) and 3 more rows, a second apart; the newest of them stays.
        base = utc(2023, 1, 1)
        old = [RunRecord(f"k{i}", "tick", base + timedelta(seconds=i), MISSED) for i in range(5003)]
        assert store.claim("tick", next_fire, next_fire, old, 1) is not None

        scheduler.start()
        wait_until(lambda: "pruned 5002 run(s) from history" in caplog.text)
        assert [limit for _, _, limit in store.prunes] == [5000, 5000]  # two ticks, no fake time passed
        assert [e["fire_time"] for e in scheduler.get_history("tick")] == ["2023-01-01T01:23:22+00:00"]
        assert caplog.text.count("pruned") == 1

    def test_with_both_limits_off_nothing_is_pruned(self, scheduler_on: Any) -> None:
        store = CountingStore()
        scheduler = scheduler_on(store, history_retention_days=0, history_max_runs=None)
        scheduler.start()
        beats = store.heartbeats
        wait_until(lambda: store.heartbeats >= beats + 5)
        assert store.prunes == []


class TestPruningErrors:
    def test_a_failing_prune_is_reported_and_housekeeping_goes_on(
        self, scheduler_on: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.WARNING, logger="flowyml_lite.scheduler")
        store = CountingStore(fail_prunes=True)
        scheduler = scheduler_on(store)
        scheduler.start()
        wait_until(lambda: store.prunes)
        wait_until(lambda: "pruning history" in caplog.text)
        assert "database is locked" in (scheduler.health_check()["last_error"] or "")
        beats = store.heartbeats
        wait_until(lambda: store.heartbeats >= beats + 5)  # heartbeats go on after the failure
        wait_until(lambda: scheduler.health_check()["status"] == "running")
        store.fail_prunes = False
        clock.advance(600)
        wait_until(lambda: len(store.prunes) == 2)  # retried at the next pass
        assert [r.levelname for r in caplog.records if "pruning history" in r.getMessage()] == ["WARNING"]
