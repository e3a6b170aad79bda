"""What a run records goes through every store the same way: odd return values, retries on the
fire's one row, timeouts, tracebacks and output, a catch-up batch whose start write fails once.
Runs on memory, SQLite, SQLAlchemy on SQLite, and real PostgreSQL (FLOWYML_TEST_POSTGRES_URL)."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator, List

import pytest

from flowyml_lite import PipelineScheduler, SchedulerConfig
from flowyml_lite.clock import FakeClock
from flowyml_lite.errors import StoreError
from flowyml_lite.stores.base import Store
from tests.stores.conftest import STORE_FACTORIES

START = datetime(2024, 1, 1, 0, 0, 30, tzinfo=timezone.utc)
T1 = START + timedelta(seconds=30)


@pytest.fixture(params=sorted(STORE_FACTORIES))
def on_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """``on_store(wrap=None)``: a scheduler with a fake clock on a fresh store of each kind."""
    made: List[PipelineScheduler] = []
    clock = FakeClock(START)

    def make(wrap: Any = None) -> PipelineScheduler:
        store: Store = STORE_FACTORIES[request.param](request, tmp_path)
        if wrap is not None:
            store = wrap(store)
        scheduler = PipelineScheduler(SchedulerConfig(shutdown_timeout_seconds=5), store=store, clock=clock)
        made.append(scheduler)
        return scheduler

    make.clock = clock  # type: ignore[attr-defined]
    yield make
    for scheduler in made:
        scheduler.stop(timeout=5)
        scheduler.store.close()


def at(scheduler: PipelineScheduler, clock: FakeClock, when: datetime) -> None:
    clock.set(when)
    scheduler.run_pending()
    assert scheduler.wait_for_runs(20)


class Result:
    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


def test_a_run_id_of_any_type_is_stored_as_text(on_store: Any) -> None:
    scheduler = on_store()
    value = uuid.UUID(int=5)
    scheduler.schedule_interval("etl", lambda: Result(success=True, run_id=value), seconds=60)
    at(scheduler, on_store.clock, T1)
    (entry,) = scheduler.get_history("etl")
    assert (entry["status"], entry["run_id"]) == ("succeeded", str(value))


def test_retries_keep_one_row_with_the_attempt_count_traceback_and_output(on_store: Any) -> None:
    scheduler = on_store()
    calls: List[int] = []

    def job() -> None:
        calls.append(1)
        print(f"attempt {len(calls)} starting")
        raise OSError(f"disk {len(calls)} missing")

    scheduler.schedule_interval("etl", job, seconds=60, retries=2, retry_delay_seconds=0.01)
    at(scheduler, on_store.clock, T1)
    (entry,) = scheduler.get_history("etl")
    assert (entry["status"], entry["attempt"], entry["error"]) == ("failed", 3, "OSError: disk 3 missing")
    assert "Traceback" in entry["traceback"] and "attempt 3 starting" in entry["output"]
    assert len(calls) == 3


def test_a_timed_out_run_is_recorded_and_the_next_fire_runs(on_store: Any) -> None:
    scheduler = on_store()
    gate = threading.Event()
    runs: List[int] = []

    def job() -> None:
        runs.append(1)
        if len(runs) == 1:
            gate.wait(30)

    scheduler.schedule_interval("etl", job, seconds=60, timeout_seconds=0.2)
    try:
        at(scheduler, on_store.clock, T1)
        at(scheduler, on_store.clock, T1 + timedelta(minutes=1))
    finally:
        gate.set()
    assert [e["status"] for e in scheduler.get_history("etl")] == ["succeeded", "timed_out"]


class FailingStartRun:
    """Wraps a store so that its first ``start_run`` fails, as a locked database would."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.failed = False

    def start_run(self, run_key: str, started_at: datetime) -> bool:
        if not self.failed:
            self.failed = True
            raise StoreError("database is locked")
        return self._store.start_run(run_key, started_at)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_a_failing_start_write_in_a_catch_up_batch_leaves_no_run_queued(on_store: Any) -> None:
    wrapped: List[FailingStartRun] = []

    def wrap(store: Store) -> Any:
        wrapped.append(FailingStartRun(store))
        return wrapped[0]

    scheduler = on_store(wrap)
    ran: List[int] = []
    scheduler.schedule_interval("etl", lambda: ran.append(1), seconds=60, catchup="all", max_catchup=3)
    at(scheduler, on_store.clock, START + timedelta(minutes=10))
    statuses = [e["status"] for e in scheduler.get_history("etl", limit=50)]
    assert wrapped[0].failed
    assert statuses.count("succeeded") == 3 and len(ran) == 3
    assert not {"queued", "running"} & set(statuses)
