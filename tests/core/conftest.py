"""Scheduler fixtures: a PipelineScheduler on each store (memory, SQLite in tmp_path) with a FakeClock.

Tests with a fake clock drive the scheduler through ``run_pending()`` (no loop thread): the
``drive`` helper moves the clock to an instant, processes what is due there and waits for the
pool's runs, so a test reads as "at 02:30, then at 03:00, ...".
"""

from __future__ import annotations

import os
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from flowyml_lite.clock import Clock, FakeClock
from flowyml_lite.core.scheduler import PipelineScheduler
from flowyml_lite.core.scheduler_config import SchedulerConfig

#: Where fake time starts unless a test says otherwise: 30 s after a round minute, hour and day.
START = datetime(2024, 1, 1, 0, 0, 30, tzinfo=timezone.utc)
BACKENDS = ("memory", "sqlite")


@pytest.fixture(autouse=True)
def _no_scheduler_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see no FLOWYML_SCHEDULER_* settings from the machine they run on."""
    for variable in list(os.environ):
        if variable.upper().startswith("FLOWYML_SCHEDULER_"):
            monkeypatch.delenv(variable)


@pytest.fixture
def clock() -> FakeClock:
    """Fake time at START; it moves only when the test moves it."""
    return FakeClock(START)


class SchedulerFactory:
    """Builds schedulers on a store backend and stops and closes every one of them at teardown."""

    def __init__(self, tmp_path: Path, clock: FakeClock) -> None:
        self.tmp_path = tmp_path
        self.clock = clock
        self.db_path = str(tmp_path / "scheduler.db")
        self.made: List[PipelineScheduler] = []

    def __call__(
        self,
        backend: str = "memory",
        *,
        clock: Optional[Clock] = None,
        db_path: Optional[str] = None,
        **settings: Any,
    ) -> PipelineScheduler:
        """A scheduler on ``backend`` ("memory" or "sqlite", the latter on one shared file by default)."""
        base: Dict[str, Any] = {"shutdown_timeout_seconds": 5.0}
        if backend == "memory":
            base.update(persist_schedules=False)
        elif backend == "sqlite":
            base.update(persist_schedules=True, db_path=db_path or self.db_path)
        else:
            raise ValueError(f"unknown backend {backend!r}")
        base.update(settings)
        scheduler = PipelineScheduler(
            SchedulerConfig(**base), clock=clock if clock is not None else self.clock
        )
        self.made.append(scheduler)
        return scheduler

    def close_all(self) -> None:
        for scheduler in reversed(self.made):
            scheduler.stop(timeout=5.0)
            scheduler.store.close()


@pytest.fixture
def make_scheduler(tmp_path: Path, clock: FakeClock) -> Iterator[SchedulerFactory]:
    """``make_scheduler(backend, **config)``: schedulers that are stopped and closed after the test."""
    factory = SchedulerFactory(tmp_path, clock)
    yield factory
    factory.close_all()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each store backend in turn."""
    return str(request.param)


@pytest.fixture
def scheduler(make_scheduler: SchedulerFactory, backend: str) -> PipelineScheduler:
    """A scheduler with a FakeClock (at START), on a MemoryStore and on a SQLiteStore in tmp_path."""
    return make_scheduler(backend)


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """An event that blocking runs wait on; it is set at teardown so no run outlives its test."""
    event = threading.Event()
    yield event
    event.set()


class Driver:
    """Moves fake time and processes due fires synchronously (``run_pending``), as the loop would.

    Instants are compared in UTC: ``Schedule.next_run`` is in the schedule's zone, where Python
    compares by wall time and would take the two 01:00s of a fall-back night for the same instant.
    """

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock

    def at(self, scheduler: PipelineScheduler, when: datetime, wait: bool = True) -> int:
        """Set the clock to ``when``, process every due fire there, and wait for the runs it started."""
        if when > self.clock.now():
            self.clock.set(when)
        due = scheduler.run_pending()
        if wait:
            assert scheduler.wait_for_runs(10.0), "runs did not finish within 10 s"
        return due

    def through(self, scheduler: PipelineScheduler, name: str, until: datetime, lateness: float = 0.0) -> int:
        """Step the clock from fire to fire of ``name`` (``lateness`` seconds after each) up to ``until``."""
        fired = 0
        while True:
            upcoming = _utc(scheduler.get_schedule(name).next_run)
            if upcoming is None or upcoming > until:
                return fired
            fired += self.at(scheduler, upcoming + timedelta(seconds=lateness))
            after = _utc(scheduler.get_schedule(name).next_run)
            assert after != upcoming, f"{name!r} did not advance past {upcoming.isoformat()}"

    def until(self, scheduler: PipelineScheduler, until: datetime) -> int:
        """Step the clock from fire to fire of every enabled schedule, soonest first, up to ``until``."""
        steps = 0
        while True:
            upcoming = [
                s.next_run.astimezone(timezone.utc)
                for s in scheduler.list_schedules()
                if s.enabled and s.next_run is not None
            ]
            if not upcoming or min(upcoming) > until:
                return steps
            assert steps < 10_000, "runaway schedule"
            self.at(scheduler, min(upcoming))
            steps += 1


def _utc(moment: Optional[datetime]) -> Optional[datetime]:
    # Aware datetimes in one zone compare by wall time, ignoring fold: 01:00 EDT == 01:00 EST.
    return moment.astimezone(timezone.utc) if moment is not None else None


@pytest.fixture
def drive(clock: FakeClock) -> Driver:
    """``drive.at(scheduler, instant)`` and ``drive.through(scheduler, name, until)`` on the fake clock."""
    return Driver(clock)


def fire_times(scheduler: PipelineScheduler, name: str, status: Optional[str] = None) -> List[datetime]:
    """Fire instants of ``name`` from its history (oldest first), optionally of one status only."""
    entries = scheduler.get_history(name, limit=10_000)
    return sorted(
        datetime.fromisoformat(e["fire_time"]) for e in entries if status is None or e["status"] == status
    )


@pytest.fixture
def fires() -> Any:
    """``fires(scheduler, name, status=None)``: the fire instants in a schedule's history, oldest first."""
    return fire_times
