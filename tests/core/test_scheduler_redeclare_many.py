"""Re-declaring many schedules at start (DESIGN §4): after ``_BULK_READ_AFTER`` declarations the
stored states are read in one query; an unchanged definition keeps its state without a write,
anything else goes through the store's transaction, and changes made elsewhere are still adopted.

Each test runs on a MemoryStore shared by the "processes" and on one SQLite file, with counting
subclasses of the real stores (the scheduler is what is under test).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

from flowyml_lite import PipelineScheduler, Schedule, SchedulerConfig
from flowyml_lite.clock import FakeClock
from flowyml_lite.runtime.sync import BULK_READ_AFTER as _BULK_READ_AFTER
from flowyml_lite.stores.base import ScheduleRecord, ScheduleState, Store
from flowyml_lite.stores.memory import MemoryStore
from flowyml_lite.stores.sqlite import SQLiteStore

UTC = timezone.utc
START = datetime(2024, 1, 1, 0, 0, 30, tzinfo=UTC)
MANY = _BULK_READ_AFTER + 40  # enough for the bulk read to serve the last 41 declarations
FIRST_ROUND = datetime(2024, 1, 1, 0, 1, 10, tzinfo=UTC)  # every interval schedule has fired once


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def noop() -> None:
    return None


class Counting:
    """Counts the schedule reads and writes a scheduler makes, and can run a hook after a read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: Counter[str] = Counter()
        self.after_read: Optional[Callable[[], None]] = None

    def _read_done(self) -> None:
        hook, self.after_read = self.after_read, None
        if hook is not None:
            hook()

    def get_schedule(self, name: str) -> Optional[ScheduleRecord]:
        self.calls["get_schedule"] += 1
        found = super().get_schedule(name)  # type: ignore[misc]
        self._read_done()
        return found  # type: ignore[no-any-return]

    def schedule_states(self) -> Dict[str, ScheduleState]:
        self.calls["schedule_states"] += 1
        found = super().schedule_states()  # type: ignore[misc]
        self._read_done()
        return found  # type: ignore[no-any-return]

    def declare_schedule(self, record: ScheduleRecord) -> ScheduleRecord:
        self.calls["declare_schedule"] += 1
        return super().declare_schedule(record)  # type: ignore[misc,no-any-return]

    def set_enabled(self, name: str, enabled: bool, next_fire: Optional[datetime]) -> bool:
        self.calls["set_enabled"] += 1
        return super().set_enabled(name, enabled, next_fire)  # type: ignore[misc,no-any-return]


class CountingMemoryStore(Counting, MemoryStore):
    pass


class CountingSQLiteStore(Counting, SQLiteStore):
    pass


class Processes:
    """Schedulers on one store: the shared MemoryStore, or each on its own connection to one file."""

    def __init__(self, backend: str, tmp_path: Path, clock: FakeClock) -> None:
        self.backend = backend
        self.path = tmp_path / "scheduler.db"
        self.clock = clock
        self.shared_memory = CountingMemoryStore()
        self.made: List[PipelineScheduler] = []

    def new(self, **settings: Any) -> PipelineScheduler:
        store: Store = self.shared_memory if self.backend == "memory" else CountingSQLiteStore(self.path)
        config = SchedulerConfig(shutdown_timeout_seconds=5.0, **settings)
        scheduler = PipelineScheduler(config, store=store, clock=self.clock)
        self.made.append(scheduler)
        return scheduler

    def close_all(self) -> None:
        for scheduler in reversed(self.made):
            scheduler.stop(timeout=5.0)
            if self.backend == "sqlite":
                scheduler.store.close()


@pytest.fixture(params=["memory", "sqlite"])
def processes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Processes]:
    made = Processes(str(request.param), tmp_path, FakeClock(START))
    yield made
    made.close_all()


def calls(scheduler: PipelineScheduler) -> Counter[str]:
    return scheduler.store.calls  # type: ignore[attr-defined,no-any-return]


def declare(scheduler: PipelineScheduler, i: int, **changes: Any) -> Schedule:
    """The i-th schedule of the set: interval, cron, daily and hourly in several zones and options."""
    name = f"job-{i:04d}"
    kind = changes.pop("kind", i % 4)
    if kind == 0:
        return scheduler.schedule_interval(name, noop, seconds=changes.pop("seconds", 60 + i % 7), **changes)
    if kind == 1:
        return scheduler.schedule_cron(
            name, noop, changes.pop("cron", f"{i % 60} */2 * * *"), timezone="America/New_York", **changes
        )
    if kind == 2:
        context = {"i": i, "pair": (i, "x")}  # comes back from a store as JSON gives it: a list
        hour = changes.pop("hour", i % 24)
        return scheduler.schedule_daily(
            name, noop, hour=hour, timezone="Europe/Paris", context=context, **changes
        )
    return scheduler.schedule_hourly(name, noop, minute=i % 60, max_instances=2, **changes)


def first_boot(processes: Processes, disabled: Any = (3, 10, 41)) -> Dict[str, Schedule]:
    """A process declares MANY schedules, runs a first round of fires, pauses some, and exits."""
    first = processes.new()
    for i in range(MANY):
        declare(first, i)
    processes.clock.set(FIRST_ROUND)
    first.run_pending()
    assert first.wait_for_runs(10)
    for i in disabled:
        first.disable(f"job-{i:04d}")
    stored = {s.name: s for s in first.list_schedules()}
    first.stop()
    return stored


def as_stored(processes: Processes, name: str) -> Schedule:
    """The schedule as a fresh process reads it from the store (where it has no function)."""
    return replace(processes.new().get_schedule(name), is_orphan=False)


def traced(scheduler: PipelineScheduler) -> List[str]:
    """Every statement the scheduler's SQLite connection runs from now on (none on a MemoryStore)."""
    statements: List[str] = []
    if isinstance(scheduler.store, SQLiteStore):
        scheduler.store._conn.set_trace_callback(statements.append)  # type: ignore[union-attr]
    return statements


class TestUnchangedReDeclarations:
    def test_many_unchanged_re_declarations_write_nothing_and_read_the_store_once_in_bulk(
        self, processes: Processes
    ) -> None:
        before = first_boot(processes)
        second = processes.new()
        calls(second).clear()
        statements = traced(second)
        again = [declare(second, i) for i in range(MANY)]
        assert calls(second)["declare_schedule"] == calls(second)["set_enabled"] == 0
        assert calls(second)["schedule_states"] == 1
        assert calls(second)["get_schedule"] == _BULK_READ_AFTER - 1
        assert not [s for s in statements if s.upper().startswith("BEGIN")]  # no write transaction
        assert {s.name: s for s in again} == before  # enabled, next/last run, options, context kept

    def test_a_bulk_served_schedule_is_what_the_store_gives_instants_in_its_zone_included(
        self, processes: Processes
    ) -> None:
        first_boot(processes)
        second = processes.new()
        again = [declare(second, i) for i in range(MANY)]
        for served in again[_BULK_READ_AFTER:]:
            stored = second.get_schedule(served.name)
            assert served == stored and served.pipeline_func is noop
            for ours, theirs in ((served.next_run, stored.next_run), (served.last_run, stored.last_run)):
                assert (ours is None) == (theirs is None)
                if ours is not None and theirs is not None:
                    assert ours.tzinfo == theirs.tzinfo and ours.isoformat() == theirs.isoformat()

    def test_a_bulk_served_context_is_the_stored_json_not_the_caller_s_objects(
        self, processes: Processes
    ) -> None:
        first_boot(processes)
        second = processes.new()
        calls(second).clear()
        for i in range(MANY - 2):
            declare(second, i)
        pair = [MANY - 2, "x"]
        context = {"i": MANY - 2, "pair": pair}
        served = second.schedule_daily(
            f"job-{MANY - 2:04d}", noop, hour=(MANY - 2) % 24, timezone="Europe/Paris", context=context
        )
        assert calls(second)["declare_schedule"] == 0
        assert served.context == {"i": MANY - 2, "pair": [MANY - 2, "x"]}
        pair.append("changed later by the caller")
        assert served.context["pair"] == [MANY - 2, "x"]
        assert served.context == as_stored(processes, served.name).context

    def test_paused_schedules_stay_paused_and_keep_their_last_run(self, processes: Processes) -> None:
        paused = [f"job-{i:04d}" for i in (1, _BULK_READ_AFTER + 1, MANY - 1)]  # read alone, in bulk
        before = first_boot(processes, disabled=(1, _BULK_READ_AFTER + 1, MANY - 1))
        second = processes.new()
        again = {s.name: s for s in (declare(second, i) for i in range(MANY))}
        history = {name: second.get_history(name) for name in paused}
        for name in paused:
            assert (again[name].enabled, again[name].next_run) == (False, None)
            assert again[name].last_run == before[name].last_run
        processes.clock.set(utc(2024, 1, 3))
        assert second.run_pending() == MANY - len(paused)
        assert second.wait_for_runs(10)
        assert {name: second.get_history(name) for name in paused} == history

    def test_schedules_not_re_declared_stay_orphans_as_stored(self, processes: Processes) -> None:
        before = first_boot(processes)
        second = processes.new()
        calls(second).clear()
        for i in range(MANY - 5):
            declare(second, i)
        orphans = [s for s in second.list_schedules(include_orphans=True) if s.is_orphan]
        assert orphans == [replace(before[f"job-{i:04d}"], is_orphan=True) for i in range(MANY - 5, MANY)]
        assert calls(second)["declare_schedule"] == 0


class TestChangedReDeclarations:
    def test_changed_definitions_among_unchanged_ones_are_written_and_keep_enabled(
        self, processes: Processes
    ) -> None:
        interval, daily, hourly = _BULK_READ_AFTER, _BULK_READ_AFTER + 2, MANY - 1  # kinds: i % 4
        first_boot(processes, disabled=(daily,))
        second = processes.new()
        calls(second).clear()
        changed: Dict[int, Dict[str, Any]] = {interval: {"seconds": 3600}, daily: {"hour": 23}}
        changed[daily + 1] = {"catchup": "skip"}
        changed[hourly] = {"context": {"new": True}}
        again = {i: declare(second, i, **changed.get(i, {})) for i in range(MANY)}
        assert calls(second)["declare_schedule"] == len(changed)
        assert (again[interval].schedule_value, again[interval].next_run) == ("3600", utc(2024, 1, 1, 1))
        assert (again[daily].schedule_value, again[daily].enabled, again[daily].next_run) == (
            "23:00",
            False,
            None,
        )
        assert again[daily + 1].catchup == "skip"
        assert again[hourly].context == {"new": True}
        for schedule in again.values():
            assert as_stored(processes, schedule.name) == schedule

    def test_a_second_declaration_of_a_bulk_served_name_asks_the_store_which_keeps_it_paused(
        self, processes: Processes
    ) -> None:
        first_boot(processes)
        second = processes.new()
        for i in range(MANY):
            declare(second, i)
        name = f"job-{MANY - 2:04d}"
        second.disable(name)
        calls(second).clear()
        again = declare(second, MANY - 2)
        assert calls(second)["declare_schedule"] == 1  # its bulk entry served once; the store decides
        assert (again.enabled, again.next_run) == (False, None)


class TestChangesMadeBetweenTheBulkReadAndADeclaration:
    # Only on a shared file: a MemoryStore is not shared, no other process can change it.
    @pytest.mark.parametrize("processes", ["sqlite"], indirect=True)
    def test_rows_changed_elsewhere_after_the_bulk_read_are_adopted_by_the_sync_at_start(
        self, processes: Processes
    ) -> None:
        first_boot(processes, disabled=())
        second = processes.new()
        for i in range(_BULK_READ_AFTER):  # the last of these reads every state in bulk
            declare(second, i)
        assert calls(second)["schedule_states"] == 1
        elsewhere = processes.new()
        paused, redefined = f"job-{MANY - 4:04d}", f"job-{MANY - 3:04d}"  # an interval, a cron
        elsewhere.disable(paused)
        declare(elsewhere, MANY - 3, cron="0 12 * * *")
        for i in range(_BULK_READ_AFTER, MANY):  # the old definitions: served from the bulk read
            declare(second, i)
        second.start()  # its sync reads rows changed since the scheduler was built
        second.stop()
        assert second._table.records[paused].enabled is False
        assert second._table.triggers[redefined].next_after(utc(2024, 1, 1, 6)) == utc(2024, 1, 1, 17)
        processes.clock.set(utc(2024, 1, 1, 17))
        second.run_pending()
        assert second.wait_for_runs(10)
        assert [e["fire_time"] for e in second.get_history(redefined)][:1] == ["2024-01-01T17:00:00+00:00"]
        assert not [e for e in second.get_history(paused) if e["fire_time"] > FIRST_ROUND.isoformat()]

    def test_a_new_definition_is_written_over_a_row_changed_elsewhere_after_the_bulk_read(
        self, processes: Processes
    ) -> None:
        first_boot(processes, disabled=())
        second = processes.new()
        for i in range(_BULK_READ_AFTER):
            declare(second, i)
        elsewhere = processes.new()
        name = f"job-{MANY - 3:04d}"
        declare(elsewhere, MANY - 3, cron="0 12 * * *")
        elsewhere.disable(name)
        mine = declare(second, MANY - 3, cron="30 6 * * *")
        assert (mine.schedule_value, mine.enabled, mine.next_run) == ("30 6 * * *", False, None)
        assert as_stored(processes, name) == mine

    def test_this_scheduler_s_own_changes_after_the_bulk_read_are_not_undone_by_it(
        self, processes: Processes
    ) -> None:
        first_boot(processes, disabled=())
        second = processes.new()
        for i in range(_BULK_READ_AFTER):
            declare(second, i)
        paused, removed = f"job-{MANY - 2:04d}", f"job-{MANY - 1:04d}"
        second.disable(paused)  # still an orphan here: declared below
        second.unschedule(removed)
        assert declare(second, MANY - 2).enabled is False
        back = declare(second, MANY - 1)
        assert back.enabled and back.last_run is None and second.get_history(removed) == []
        assert as_stored(processes, removed) == back
        second.clear()
        again = declare(second, 0)
        assert again.last_run is None and as_stored(processes, again.name) == again

    def test_the_bulk_read_is_dropped_at_start_and_read_again_only_after_another_burst(
        self, processes: Processes
    ) -> None:
        first_boot(processes)
        second = processes.new()
        for i in range(MANY):
            declare(second, i)
        second.start()
        second.stop()
        assert second._sync._states is None  # nothing held for the orphans after start
        calls(second).clear()
        declare(second, 0)
        assert (calls(second)["get_schedule"], calls(second)["schedule_states"]) == (1, 0)

    @pytest.mark.parametrize("read", ["get_schedule", "schedule_states"])
    def test_a_sync_between_reading_a_row_and_registering_it_does_not_pass_the_change_by(
        self, processes: Processes, read: str
    ) -> None:
        first_boot(processes, disabled=())
        second = processes.new()
        second.store.clock_skew_seconds = 0.0  # type: ignore[misc]  # the sync looks back no further
        count = _BULK_READ_AFTER - 1 if read == "schedule_states" else 5
        for i in range(count):
            declare(second, i)
        name = f"job-{count:04d}"
        elsewhere = processes.new()

        def meanwhile() -> None:  # another process pauses it; then the heartbeat thread syncs
            elsewhere.disable(name)
            second._sync.sync()

        second.store.after_read = meanwhile  # type: ignore[attr-defined]
        declared = declare(second, count)
        assert calls(second)[read] >= 1 and second.store.after_read is None  # type: ignore[attr-defined]
        assert declared.enabled is False and second._table.records[name].enabled is False
        processes.clock.set(utc(2024, 1, 1, 1))
        second.run_pending()
        assert second.wait_for_runs(10)
        assert not [e for e in second.get_history(name) if e["fire_time"] > FIRST_ROUND.isoformat()]


def test_every_schedule_fires_after_a_bulk_re_declaration(processes: Processes) -> None:
    first_boot(processes, disabled=())
    second = processes.new()
    for i in range(MANY):
        declare(second, i)
    processes.clock.set(utc(2024, 1, 3))
    assert second.run_pending() == MANY
    assert second.wait_for_runs(10)
    assert all(second.get_history(f"job-{i:04d}")[0]["fire_time"] > "2024-01-02" for i in range(MANY))


class TestDeclarationsInTheLog:
    def test_the_first_hundred_are_logged_at_info_the_rest_at_debug_after_one_note(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        from flowyml_lite.core.scheduler import LOGGED_DECLARATIONS

        scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False), clock=FakeClock(START))
        with caplog.at_level(logging.DEBUG, logger="flowyml_lite.scheduler"):
            for i in range(LOGGED_DECLARATIONS + 5):
                scheduler.schedule_interval(f"job-{i:03d}", noop, seconds=60)
        said = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "flowyml_lite.scheduler"]
        declared = [(level, text) for level, text in said if text.startswith("scheduled ")]
        assert [level for level, _ in declared] == [logging.INFO] * LOGGED_DECLARATIONS + [logging.DEBUG] * 5
        assert "'job-104'" in declared[-1][1]
        notes = [text for level, text in said if level == logging.INFO and "DEBUG level" in text]
        assert len(notes) == 1
