"""A wall clock behind the last fire of a schedule served here (stepped back, or another host's clock
ahead) is reported as ``clock`` trouble, naming the schedules and how far behind, until the clock
passes their last fires; a process started after the step reports it from its start."""

from __future__ import annotations

import pathlib
import sqlite3
from datetime import datetime, timedelta, timezone

from flowyml_lite import PipelineScheduler, SchedulerConfig
from flowyml_lite.clock import FakeClock
from flowyml_lite.core.triggers import build_trigger
from flowyml_lite.runtime.clock_watch import BEHIND_AFTER_SECONDS, ClockWatch
from flowyml_lite.runtime.health import Troubles
from flowyml_lite.runtime.table import ScheduleTable
from flowyml_lite.stores.base import ScheduleRecord

T0 = datetime(2030, 1, 1, 12, tzinfo=timezone.utc)


def served(table: ScheduleTable, name: str, last_fire: datetime) -> None:
    record = ScheduleRecord(name, "interval", "1", "UTC", "h", last_fire=last_fire, next_fire=last_fire)
    with table.lock:
        table.serve(name, lambda: None, build_trigger("interval", "1", "UTC", name))
        table.set_record(record)


class TestTheWatch:
    def test_a_last_fire_ahead_of_the_clock_is_trouble_until_the_clock_passes_it(self) -> None:
        clock, table, troubles = FakeClock(T0), ScheduleTable(), Troubles()
        served(table, "tick", T0 + timedelta(hours=1))  # run before the clock stepped back an hour
        served(table, "fine", T0 - timedelta(seconds=1))
        watch = ClockWatch(table, troubles, clock.now)
        watch.check()
        (problem,) = troubles.problems()
        assert problem["source"] == "clock"
        assert "3600 s behind the last fire of 1 schedule(s) (tick)" in str(problem["message"])
        clock.set(T0 + timedelta(hours=1, seconds=1))
        watch.check()
        assert troubles.problems() == []

    def test_clocks_a_little_apart_are_not_trouble(self) -> None:
        clock, table, troubles = FakeClock(T0), ScheduleTable(), Troubles()
        served(table, "tick", T0 + timedelta(seconds=BEHIND_AFTER_SECONDS / 2))
        ClockWatch(table, troubles, clock.now).check()
        assert troubles.problems() == []

    def test_a_schedule_not_served_here_is_not_this_processes_concern(self) -> None:
        clock, table, troubles = FakeClock(T0), ScheduleTable(), Troubles()
        theirs = ScheduleRecord("theirs", "interval", "1", "UTC", "h", last_fire=T0 + timedelta(1))
        with table.lock:
            table.set_record(theirs)
        ClockWatch(table, troubles, clock.now).check()
        assert troubles.problems() == []


def test_a_scheduler_started_after_the_clock_stepped_back_says_so_at_once(tmp_path: pathlib.Path) -> None:
    db = str(tmp_path / "s.db")
    first = PipelineScheduler(SchedulerConfig(db_path=db))
    first.schedule_interval("tick", lambda: None, seconds=1)
    first.close()
    # What a process whose clock ran 10 minutes ahead left behind: its last fire, and the next.
    ahead = round((datetime.now(timezone.utc) + timedelta(minutes=10)).timestamp() * 1_000_000)
    raw = sqlite3.connect(db)
    with raw:
        raw.execute("UPDATE schedules SET last_fire = ?, next_fire = ?", (ahead, ahead + 1_000_000))
    raw.close()
    second = PipelineScheduler(SchedulerConfig(db_path=db))
    second.schedule_interval("tick", lambda: None, seconds=1)
    try:
        second.start()
        health = second.health_check()
        assert health["status"] == "degraded"
        assert [p["source"] for p in health["problems"]] == ["clock"]
    finally:
        second.stop(timeout=5)


class TestAStep:
    def test_a_step_back_of_the_wall_clock_is_looked_at_at_once(self, monkeypatch) -> None:  # type: ignore[no-untyped-def]
        import time as time_module

        from flowyml_lite.runtime import clock_watch

        clock, table, troubles = FakeClock(T0), ScheduleTable(), Troubles()
        served(table, "tick", T0 + timedelta(minutes=10))
        watch = ClockWatch(table, troubles, clock.now)
        watch.tick(heartbeat=False)  # no heartbeat, no step: not looked at
        assert troubles.problems() == []
        wall = time_module.time()
        monkeypatch.setattr(clock_watch.time, "time", lambda: wall - 600)  # the wall clock goes back
        watch.tick(heartbeat=False)
        assert [p["source"] for p in troubles.problems()] == ["clock"]
        clock.set(T0 + timedelta(minutes=11))  # the clock caught up: looked at every tick meanwhile
        watch.tick(heartbeat=False)
        assert troubles.problems() == []
