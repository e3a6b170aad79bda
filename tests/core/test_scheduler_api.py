"""PipelineScheduler's API: declaring, validating, state changes, runs and their history, hooks,
run_now, health, start/stop, the environment, re-declaration and orphans.

Every test runs on fake time (START = 2024-01-01 00:00:30 UTC, a Monday) through ``run_pending``
unless it is about the loop thread itself; ``scheduler`` runs each test on a MemoryStore and on
a SQLiteStore.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List
from zoneinfo import ZoneInfo

import pytest

from flowyml_lite import Pipeline, PipelineResult, PipelineScheduler, Schedule, SchedulerConfig, step
from flowyml_lite.clock import FakeClock
from flowyml_lite.errors import (
    CronError,
    ScheduleError,
    ScheduleNotFoundError,
    TimezoneError,
    UnknownTimezoneError,
)
from flowyml_lite.stores.memory import MemoryStore
from flowyml_lite.stores.sqlite import SQLiteStore

UTC = timezone.utc
START = datetime(2024, 1, 1, 0, 0, 30, tzinfo=UTC)
HISTORY_KEYS = {
    "started_at",
    "completed_at",
    "success",
    "duration_seconds",
    "error",
    "run_id",
    "fire_time",
    "status",
    "node",
}


def noop() -> None:
    return None


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def when(entry: Dict[str, Any], key: str = "fire_time") -> datetime:
    return datetime.fromisoformat(entry[key])


def flowyml_threads() -> List[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("flowyml_lite") and t.is_alive()]


# -- declaring ---------------------------------------------------------------------------------


class TestDeclaringReturnsTheSchedule:
    def test_schedule_cron_returns_the_guide_s_fields_with_next_run_in_its_zone(
        self, scheduler: PipelineScheduler
    ) -> None:
        s = scheduler.schedule_cron("weekday_report", noop, "0 9 * * 1-5", timezone="Europe/London")
        assert isinstance(s, Schedule)
        assert (s.pipeline_name, s.schedule_type, s.schedule_value) == (
            "weekday_report",
            "cron",
            "0 9 * * 1-5",
        )
        assert (s.enabled, s.timezone, s.context, s.last_run) == (True, "Europe/London", {}, None)
        assert s.next_run is not None and s.next_run.isoformat() == "2024-01-01T09:00:00+00:00"
        assert s.next_run.tzinfo == ZoneInfo("Europe/London")

    def test_schedule_daily_fires_at_the_wall_time_of_its_zone(self, scheduler: PipelineScheduler) -> None:
        s = scheduler.schedule_daily("morning_report", noop, hour=9, minute=30, timezone="Asia/Tokyo")
        assert (s.schedule_type, s.schedule_value, s.timezone) == ("daily", "09:30", "Asia/Tokyo")
        assert s.next_run is not None and s.next_run.isoformat() == "2024-01-01T09:30:00+09:00"
        assert s.next_run == utc(2024, 1, 1, 0, 30)

    def test_schedule_hourly_fires_at_its_minute_past_each_hour(self, scheduler: PipelineScheduler) -> None:
        s = scheduler.schedule_hourly("hourly_sync", noop, minute=15)
        assert (s.schedule_type, s.schedule_value, s.timezone) == ("hourly", "15", "UTC")
        assert s.next_run == utc(2024, 1, 1, 0, 15)

    def test_schedule_interval_adds_its_parts_and_fires_on_the_grid(
        self, scheduler: PipelineScheduler
    ) -> None:
        s = scheduler.schedule_interval("frequent_check", noop, minutes=30)
        assert (s.schedule_type, s.schedule_value) == ("interval", "1800")
        assert s.next_run == utc(2024, 1, 1, 0, 30)
        mixed = scheduler.schedule_interval("mixed", noop, hours=1, minutes=1, seconds=1)
        assert mixed.schedule_value == "3661"

    def test_an_interval_may_be_given_in_days(self, scheduler: PipelineScheduler) -> None:
        s = scheduler.schedule_interval("weekly", noop, days=7)
        assert s.schedule_value == str(7 * 86400)
        assert s.next_run == utc(2024, 1, 4)  # the grid counts from 1970-01-01, a Thursday

    def test_a_fractional_interval_keeps_its_fraction(self, scheduler: PipelineScheduler) -> None:
        s = scheduler.schedule_interval("fast", noop, seconds=0.5)
        assert s.schedule_value == "0.5"
        assert s.next_run == utc(2024, 1, 1, 0, 0, 30) + timedelta(seconds=0.5)

    def test_options_and_context_are_stored_and_shown(self, scheduler: PipelineScheduler) -> None:
        scheduler.schedule_interval(
            "etl",
            noop,
            minutes=5,
            misfire_grace_seconds=5,
            catchup="all",
            max_catchup=3,
            max_instances=2,
            context={"region": "eu", "batch": [1, 2]},
        )
        s = scheduler.get_schedule("etl")
        assert (s.misfire_grace_seconds, s.catchup, s.max_catchup, s.max_instances) == (5.0, "all", 3, 2)
        assert s.context == {"region": "eu", "batch": [1, 2]}

    def test_options_default_to_the_config(self, make_scheduler: Any, backend: str) -> None:
        scheduler = make_scheduler(backend, misfire_grace_seconds=7, catchup="skip", max_catchup=9)
        s = scheduler.schedule_interval("etl", noop, minutes=5)
        assert (s.misfire_grace_seconds, s.catchup, s.max_catchup, s.max_instances) == (7.0, "skip", 9, 1)

    def test_a_schedule_without_a_zone_takes_the_config_s_zone(
        self, make_scheduler: Any, backend: str
    ) -> None:
        scheduler = make_scheduler(backend, timezone="Asia/Tokyo")
        s = scheduler.schedule_daily("morning", noop, hour=10)
        assert s.timezone == "Asia/Tokyo"
        assert s.next_run is not None and s.next_run.isoformat() == "2024-01-01T10:00:00+09:00"

    def test_schedules_maps_names_to_schedules_and_list_is_ordered_by_name(
        self, scheduler: PipelineScheduler
    ) -> None:
        for name in ("b", "c", "a"):
            scheduler.schedule_interval(name, noop, minutes=1)
        assert [s.pipeline_name for s in scheduler.list_schedules()] == ["a", "b", "c"]
        assert sorted(scheduler.schedules) == ["a", "b", "c"]
        assert scheduler.schedules["b"].schedule_value == "60"
        assert scheduler.schedules["b"].pipeline_func is noop


class TestRejectingBadInput:
    """Bad input raises a clear error before anything is stored."""

    CASES: ClassVar[Dict[str, Any]] = {
        "zero interval": (
            lambda s: s.schedule_interval("x", noop, seconds=0),
            ScheduleError,
            "at least 1 ms",
        ),
        "no interval given": (lambda s: s.schedule_interval("x", noop), ScheduleError, "minutes=30"),
        "interval of millennia": (
            lambda s: s.schedule_interval("x", noop, seconds=1e12),
            ScheduleError,
            "at most 100 years",
        ),
        "negative interval": (lambda s: s.schedule_interval("x", noop, minutes=-5), ScheduleError, "minutes"),
        "hour 24": (lambda s: s.schedule_daily("x", noop, hour=24, minute=0), ScheduleError, "hour"),
        "minute 60": (lambda s: s.schedule_daily("x", noop, hour=1, minute=60), ScheduleError, "minute"),
        "hourly minute 60": (lambda s: s.schedule_hourly("x", noop, minute=60), ScheduleError, "minute"),
        "hour as text": (lambda s: s.schedule_daily("x", noop, hour="9"), ScheduleError, "hour"),
        "unknown zone": (
            lambda s: s.schedule_daily("x", noop, hour=9, timezone="Mars/Olympus"),
            UnknownTimezoneError,
            "Mars/Olympus",
        ),
        "unknown zone on an interval": (
            lambda s: s.schedule_interval("x", noop, minutes=1, timezone="Nowhere"),
            TimezoneError,
            "Nowhere",
        ),
        "bad cron field": (lambda s: s.schedule_cron("x", noop, "0 9 * * 8"), CronError, "day-of-week"),
        "cron with too few fields": (
            lambda s: s.schedule_cron("x", noop, "0 9 *"),
            CronError,
            "5 to 7 fields",
        ),
        "never-matching cron": (lambda s: s.schedule_cron("x", noop, "0 0 30 2 *"), CronError, "never"),
        "empty name": (lambda s: s.schedule_interval("", noop, minutes=1), ScheduleError, "name"),
        "blank name": (lambda s: s.schedule_interval("  ", noop, minutes=1), ScheduleError, "name"),
        "non-callable": (
            lambda s: s.schedule_interval("x", "not a function", minutes=1),
            ScheduleError,
            "callable",
        ),
        "unknown option": (
            lambda s: s.schedule_interval("x", noop, minutes=1, retrys=3),
            ScheduleError,
            "retrys",
        ),
        "non-JSON context": (
            lambda s: s.schedule_interval("x", noop, minutes=1, context={"f": noop}),
            ScheduleError,
            "JSON",
        ),
        "bad catchup": (
            lambda s: s.schedule_interval("x", noop, minutes=1, catchup="sometimes"),
            ScheduleError,
            "catchup",
        ),
        "zero max_instances": (
            lambda s: s.schedule_interval("x", noop, minutes=1, max_instances=0),
            ScheduleError,
            "max_instances",
        ),
        "negative grace": (
            lambda s: s.schedule_interval("x", noop, minutes=1, misfire_grace_seconds=-1),
            ScheduleError,
            "misfire_grace_seconds",
        ),
    }

    @pytest.mark.parametrize("case", sorted(CASES))
    def test_bad_input_raises_and_stores_nothing(self, scheduler: PipelineScheduler, case: str) -> None:
        call, error, text = self.CASES[case]
        with pytest.raises(error, match=text):
            call(scheduler)
        assert scheduler.store.list_schedules() == []
        assert scheduler.schedules == {} and scheduler.list_schedules(include_orphans=True) == []

    def test_a_bad_re_declaration_leaves_the_existing_schedule_as_it_was(
        self, scheduler: PipelineScheduler
    ) -> None:
        before = scheduler.schedule_cron("report", noop, "0 9 * * *")
        with pytest.raises(CronError):
            scheduler.schedule_cron("report", noop, "0 25 * * *")
        after = scheduler.get_schedule("report")
        assert (after.schedule_value, after.next_run) == ("0 9 * * *", before.next_run)

    def test_scheduler_errors_are_value_errors_and_not_found_is_a_key_error(self) -> None:
        assert issubclass(ScheduleError, ValueError) and issubclass(CronError, ValueError)
        assert issubclass(ScheduleNotFoundError, KeyError)
        assert str(ScheduleNotFoundError("etl")) == "no schedule named 'etl'"


# -- state changes ------------------------------------------------------------------------------


class TestEnableDisableRemove:
    def test_a_disabled_schedule_does_not_fire_at_its_instant(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        calls: List[int] = []
        scheduler.schedule_interval("sync", lambda: calls.append(1), minutes=1)
        scheduler.disable("sync")
        s = scheduler.get_schedule("sync")
        assert (s.enabled, s.next_run) == (False, None)
        assert drive.at(scheduler, utc(2024, 1, 1, 0, 1)) == 0
        assert drive.at(scheduler, utc(2024, 1, 1, 0, 5)) == 0
        assert calls == [] and scheduler.get_history("sync") == []

    def test_enable_resumes_at_the_first_instant_after_now_without_catching_up_the_pause(
        self, scheduler: PipelineScheduler, drive: Any, clock: FakeClock
    ) -> None:
        scheduler.schedule_interval("sync", noop, minutes=1)
        scheduler.disable("sync")
        clock.set(utc(2024, 1, 1, 0, 5, 10))
        scheduler.enable("sync")
        s = scheduler.get_schedule("sync")
        assert (s.enabled, s.next_run) == (True, utc(2024, 1, 1, 0, 6))
        drive.at(scheduler, utc(2024, 1, 1, 0, 6))
        assert [e["status"] for e in scheduler.get_history("sync")] == ["succeeded"]

    def test_enabling_an_enabled_schedule_changes_nothing(
        self, scheduler: PipelineScheduler, clock: FakeClock
    ) -> None:
        before = scheduler.schedule_interval("sync", noop, minutes=10)
        clock.advance(700)  # past the first fire, which is now due
        scheduler.enable("sync")
        assert scheduler.get_schedule("sync").next_run == before.next_run

    def test_unschedule_removes_the_schedule_and_its_history(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        scheduler.schedule_interval("sync", noop, minutes=1)
        scheduler.schedule_interval("keep", noop, minutes=1)
        drive.at(scheduler, utc(2024, 1, 1, 0, 1))
        scheduler.unschedule("sync")
        assert [s.pipeline_name for s in scheduler.list_schedules(include_orphans=True)] == ["keep"]
        assert "sync" not in scheduler.schedules
        assert scheduler.get_history("sync") == []
        assert len(scheduler.get_history("keep")) == 1
        assert drive.at(scheduler, utc(2024, 1, 1, 0, 2)) == 1  # only "keep"

    def test_clear_removes_every_schedule_and_a_name_can_then_be_declared_afresh(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        scheduler.schedule_interval("a", noop, minutes=1)
        scheduler.schedule_daily("b", noop, hour=9)
        drive.at(scheduler, utc(2024, 1, 1, 0, 1))
        scheduler.clear()
        assert scheduler.list_schedules(include_orphans=True) == [] and scheduler.schedules == {}
        assert scheduler.store.list_schedules() == [] and scheduler.get_history("a") == []
        assert drive.at(scheduler, utc(2024, 1, 1, 0, 2)) == 0
        s = scheduler.schedule_interval("a", noop, minutes=1)
        assert (s.enabled, s.next_run, s.last_run) == (True, utc(2024, 1, 1, 0, 3), None)

    @pytest.mark.parametrize("action", ["enable", "disable", "unschedule", "run_now", "get_schedule"])
    def test_unknown_names_raise_schedule_not_found(self, scheduler: PipelineScheduler, action: str) -> None:
        scheduler.schedule_interval("known", noop, minutes=1)
        with pytest.raises(ScheduleNotFoundError, match="nope"):
            getattr(scheduler, action)("nope")

    def test_unscheduling_twice_raises_the_second_time(self, scheduler: PipelineScheduler) -> None:
        scheduler.schedule_interval("sync", noop, minutes=1)
        scheduler.unschedule("sync")
        with pytest.raises(ScheduleNotFoundError):
            scheduler.unschedule("sync")


# -- runs and history ---------------------------------------------------------------------------


class TestRunOutcomes:
    def fire_once(self, scheduler: PipelineScheduler, drive: Any, func: Callable[[], Any]) -> Dict[str, Any]:
        scheduler.schedule_interval("job", func, minutes=1)
        assert drive.at(scheduler, utc(2024, 1, 1, 0, 1)) == 1
        (entry,) = scheduler.get_history("job")
        return entry

    def test_returning_none_is_success(self, scheduler: PipelineScheduler, drive: Any) -> None:
        entry = self.fire_once(scheduler, drive, noop)
        assert (entry["status"], entry["success"], entry["error"], entry["run_id"]) == (
            "succeeded",
            True,
            None,
            None,
        )

    def test_an_exception_is_a_failure_with_its_type_and_message(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        def boom() -> None:
            raise ValueError("the API is down")

        entry = self.fire_once(scheduler, drive, boom)
        assert (entry["status"], entry["success"]) == ("failed", False)
        assert "ValueError" in entry["error"] and "the API is down" in entry["error"]

    def test_a_successful_pipeline_result_is_linked_by_its_run_id(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        results: List[PipelineResult] = []

        @step(outputs=["data"])
        def fetch() -> int:
            return 42

        pipeline = Pipeline("etl").add_step(fetch)
        entry = self.fire_once(scheduler, drive, lambda: results.append(pipeline.run()) or results[-1])
        assert (entry["status"], entry["success"]) == ("succeeded", True)
        assert entry["run_id"] == results[0].run_id and results[0].outputs == {"data": 42}

    def test_a_pipeline_result_with_success_false_is_a_failure_and_still_linked(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        results: List[PipelineResult] = []

        def broken() -> None:
            raise RuntimeError("disk full")

        pipeline = Pipeline("etl").add_step(broken)
        entry = self.fire_once(scheduler, drive, lambda: results.append(pipeline.run()) or results[-1])
        assert (entry["status"], entry["success"]) == ("failed", False)
        assert entry["run_id"] == results[0].run_id
        assert entry["error"] and "disk full" in entry["error"]

    def test_an_entry_has_flowyml_s_keys_and_ours(
        self, scheduler: PipelineScheduler, drive: Any, clock: FakeClock
    ) -> None:
        entry = self.fire_once(scheduler, drive, lambda: clock.advance(2.5))
        assert set(entry) >= HISTORY_KEYS
        assert entry["schedule_name"] == "job" and entry["node"] == scheduler.node_id
        assert when(entry) == utc(2024, 1, 1, 0, 1)
        assert when(entry, "started_at") == utc(2024, 1, 1, 0, 1)
        assert when(entry, "completed_at") == utc(2024, 1, 1, 0, 1, 2, 500000)
        assert isinstance(entry["duration_seconds"], float) and entry["duration_seconds"] >= 0

    def test_a_running_run_shows_when_it_started(
        self, scheduler: PipelineScheduler, drive: Any, gate: threading.Event
    ) -> None:
        started = threading.Event()

        def blocking() -> None:
            started.set()
            gate.wait(10)

        scheduler.schedule_interval("job", blocking, minutes=1)
        drive.at(scheduler, utc(2024, 1, 1, 0, 1, 0, 5000), wait=False)
        assert started.wait(10)
        (entry,) = scheduler.get_history("job")
        assert entry["status"] == "running"
        assert entry["started_at"] is not None and when(entry, "started_at") == utc(2024, 1, 1, 0, 1, 0, 5000)
        assert entry["start_lag_seconds"] == pytest.approx(0.005)

    def test_the_guide_s_history_loop_can_print_entries_of_every_status(
        self, scheduler: PipelineScheduler, drive: Any, clock: FakeClock, gate: threading.Event
    ) -> None:
        def boom() -> None:
            raise RuntimeError("x")

        scheduler.schedule_interval("job", lambda: gate.wait(10), minutes=1, catchup="skip")
        drive.at(scheduler, utc(2024, 1, 1, 0, 1, 30), wait=False)  # running
        drive.at(scheduler, utc(2024, 1, 1, 0, 2), wait=False)  # skipped: overlap
        drive.at(scheduler, utc(2024, 1, 1, 0, 5), wait=False)  # missed: 00:03, 00:04, 00:05
        scheduler.schedule_interval("bad", boom, minutes=1)
        drive.at(scheduler, utc(2024, 1, 1, 0, 6), wait=False)
        deadline = time.monotonic() + 10
        while scheduler.get_history("bad")[0]["status"] != "failed":
            assert time.monotonic() < deadline
            time.sleep(0.005)
        entries = scheduler.get_history("job") + scheduler.get_history("bad")
        assert {e["status"] for e in entries} >= {"running", "skipped", "missed", "failed"}
        for execution in entries:
            status = "✅" if execution["success"] else "❌"
            line = f"{status} {execution['started_at']} - {execution['duration_seconds']:.2f}s"
            assert line.endswith("s") and isinstance(execution["success"], bool)
        gate.set()

    def test_last_run_is_the_latest_fire_in_the_schedule_s_zone(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        scheduler.schedule_interval("job", noop, minutes=1, timezone="Asia/Tokyo")
        drive.at(scheduler, utc(2024, 1, 1, 0, 1))
        s = scheduler.get_schedule("job")
        assert s.last_run is not None and s.last_run.isoformat() == "2024-01-01T09:01:00+09:00"
        assert s.next_run is not None and s.next_run.isoformat() == "2024-01-01T09:02:00+09:00"

    def test_history_is_newest_fire_first_and_limited(self, scheduler: PipelineScheduler, drive: Any) -> None:
        scheduler.schedule_interval("job", noop, minutes=1)
        drive.through(scheduler, "job", utc(2024, 1, 1, 0, 5))
        assert [when(e) for e in scheduler.get_history("job", limit=3)] == [
            utc(2024, 1, 1, 0, 5),
            utc(2024, 1, 1, 0, 4),
            utc(2024, 1, 1, 0, 3),
        ]
        assert len(scheduler.get_history("job")) == 5

    def test_the_default_history_limit_is_50(self, scheduler: PipelineScheduler, drive: Any) -> None:
        scheduler.schedule_interval("job", noop, seconds=1)
        drive.through(scheduler, "job", START + timedelta(seconds=55))
        assert len(scheduler.get_history("job")) == 50
        assert len(scheduler.get_history("job", limit=100)) == 55

    @pytest.mark.parametrize("limit", [0, -1, "5", 2.5])
    def test_a_bad_history_limit_is_rejected(self, scheduler: PipelineScheduler, limit: Any) -> None:
        scheduler.schedule_interval("job", noop, minutes=1)
        with pytest.raises(ScheduleError, match="limit"):
            scheduler.get_history("job", limit=limit)

    def test_one_failing_schedule_does_not_stop_the_others(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        def boom() -> None:
            raise KeyError("x")

        scheduler.schedule_interval("bad", boom, minutes=1)
        scheduler.schedule_interval("good", noop, minutes=1)
        drive.through(scheduler, "good", utc(2024, 1, 1, 0, 3))
        assert [e["status"] for e in scheduler.get_history("bad")] == ["failed"] * 3
        assert [e["status"] for e in scheduler.get_history("good")] == ["succeeded"] * 3


class TestHooks:
    def test_on_success_is_called_with_the_history_entry(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        seen: List[Dict[str, Any]] = []
        scheduler.on_success(seen.append)
        scheduler.schedule_interval("job", noop, minutes=1)
        drive.at(scheduler, utc(2024, 1, 1, 0, 1))
        assert len(seen) == 1
        assert (seen[0]["status"], seen[0]["schedule_name"], when(seen[0])) == (
            "succeeded",
            "job",
            utc(2024, 1, 1, 0, 1),
        )
        assert seen[0]["completed_at"] is not None

    def test_on_failure_is_called_with_the_error_and_on_success_is_not(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        good: List[Dict[str, Any]] = []
        bad: List[Dict[str, Any]] = []

        @scheduler.on_failure
        def alert(entry: Dict[str, Any]) -> None:
            bad.append(entry)

        scheduler.on_success(good.append)

        def boom() -> None:
            raise RuntimeError("nope")

        scheduler.schedule_interval("job", boom, minutes=1)
        drive.at(scheduler, utc(2024, 1, 1, 0, 1))
        assert good == [] and len(bad) == 1
        assert bad[0]["status"] == "failed" and "nope" in bad[0]["error"]
        assert callable(alert)  # the decorator gives the function back

    def test_a_failing_hook_breaks_neither_the_run_nor_other_hooks_nor_later_fires(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        seen: List[str] = []

        def broken(entry: Dict[str, Any]) -> None:
            raise RuntimeError("hook bug")

        scheduler.on_success(broken)
        scheduler.on_success(lambda entry: seen.append(entry["fire_time"]))
        scheduler.schedule_interval("job", noop, minutes=1)
        drive.through(scheduler, "job", utc(2024, 1, 1, 0, 3))
        assert [e["status"] for e in scheduler.get_history("job")] == ["succeeded"] * 3
        assert len(seen) == 3


class TestRunNow:
    def test_run_now_runs_outside_the_timetable_and_leaves_it_alone(
        self, scheduler: PipelineScheduler, clock: FakeClock
    ) -> None:
        calls: List[int] = []
        before = scheduler.schedule_daily("report", lambda: calls.append(1), hour=9)
        clock.advance(100)
        entry = scheduler.run_now("report", wait=True)
        assert calls == [1]
        assert (entry["status"], entry["success"], when(entry)) == (
            "succeeded",
            True,
            START + timedelta(seconds=100),
        )
        assert [e["status"] for e in scheduler.get_history("report")] == ["succeeded"]
        assert scheduler.get_schedule("report").next_run == before.next_run

    def test_run_now_without_waiting_returns_the_running_entry(
        self, scheduler: PipelineScheduler, gate: threading.Event
    ) -> None:
        scheduler.schedule_daily("report", lambda: gate.wait(10), hour=9)
        entry = scheduler.run_now("report")
        assert entry["status"] == "running"
        gate.set()
        assert scheduler.wait_for_runs(10)
        assert [e["status"] for e in scheduler.get_history("report")] == ["succeeded"]

    def test_run_now_respects_max_instances(
        self, scheduler: PipelineScheduler, gate: threading.Event, clock: FakeClock
    ) -> None:
        scheduler.schedule_daily("report", lambda: gate.wait(10), hour=9)
        scheduler.run_now("report")
        clock.advance(1)
        second = scheduler.run_now("report", wait=True)
        assert (second["status"], second["reason"]) == ("skipped", "overlap")
        gate.set()
        assert scheduler.wait_for_runs(10)

    def test_run_now_reports_a_failure_and_sets_last_run(self, scheduler: PipelineScheduler) -> None:
        def boom() -> None:
            raise RuntimeError("manual failure")

        scheduler.schedule_daily("report", boom, hour=9)
        entry = scheduler.run_now("report", wait=True)
        assert (entry["status"], entry["success"]) == ("failed", False)
        assert "manual failure" in entry["error"]
        assert scheduler.get_schedule("report").last_run == START

    def test_run_now_of_a_disabled_schedule_is_refused(self, scheduler: PipelineScheduler) -> None:
        scheduler.schedule_daily("report", noop, hour=9)
        scheduler.disable("report")
        with pytest.raises(ScheduleError, match="disabled"):
            scheduler.run_now("report")

    def test_run_now_at_the_instant_a_scheduled_fire_ran_still_runs(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        scheduler.schedule_interval("sync", noop, minutes=1)
        drive.at(scheduler, utc(2024, 1, 1, 0, 1))  # the scheduled fire runs at 00:01:00.000000
        entry = scheduler.run_now("sync", wait=True)  # the clock still reads 00:01:00.000000
        assert entry["status"] == "succeeded"
        assert len(scheduler.get_history("sync")) == 2


# -- health ---------------------------------------------------------------------------------------


class TestHealth:
    def test_a_new_scheduler_is_stopped_with_empty_metrics(self, scheduler: PipelineScheduler) -> None:
        health = scheduler.health_check()
        assert health["status"] == "stopped"
        metrics = health["metrics"]
        assert {
            "total_runs",
            "successful_runs",
            "failed_runs",
            "success_rate",
            "avg_duration_seconds",
            "last_heartbeat",
            "start_lag_ms",
        } <= set(metrics)
        assert (metrics["total_runs"], metrics["successful_runs"], metrics["failed_runs"]) == (0, 0, 0)
        assert isinstance(metrics["success_rate"], float) and 0.0 <= metrics["success_rate"] <= 1.0
        assert health["next_runs"] == []

    def test_metrics_count_runs_by_outcome(
        self, scheduler: PipelineScheduler, drive: Any, clock: FakeClock
    ) -> None:
        def boom() -> None:
            raise RuntimeError

        scheduler.schedule_interval("good", lambda: clock.advance(0), minutes=1)
        scheduler.schedule_interval("bad", boom, minutes=1)
        drive.at(scheduler, utc(2024, 1, 1, 0, 1, 0, 2000))  # both fire 2 ms late
        metrics = scheduler.health_check()["metrics"]
        assert (metrics["total_runs"], metrics["successful_runs"], metrics["failed_runs"]) == (2, 1, 1)
        assert metrics["success_rate"] == pytest.approx(0.5)
        assert metrics["avg_duration_seconds"] >= 0.0
        lag = metrics["start_lag_ms"]
        assert lag["samples"] == 2 and lag["p50"] == pytest.approx(2.0) and lag["max"] == pytest.approx(2.0)

    def test_next_runs_lists_enabled_schedules_soonest_first_in_their_zones(
        self, scheduler: PipelineScheduler
    ) -> None:
        scheduler.schedule_daily("tokyo", noop, hour=9, minute=30, timezone="Asia/Tokyo")  # 00:30 UTC
        scheduler.schedule_hourly("soon", noop, minute=15)  # 00:15 UTC
        scheduler.schedule_daily("paused", noop, hour=1)
        scheduler.disable("paused")
        assert scheduler.health_check()["next_runs"] == [
            {"name": "soon", "next_run": "2024-01-01T00:15:00+00:00"},
            {"name": "tokyo", "next_run": "2024-01-01T09:30:00+09:00"},
        ]

    def test_status_follows_the_loop_and_a_heartbeat_is_recorded(self, scheduler: PipelineScheduler) -> None:
        assert scheduler.health_check()["metrics"]["last_heartbeat"] is None
        scheduler.start()
        health = scheduler.health_check()
        assert health["status"] == "running"
        assert health["metrics"]["last_heartbeat"] == START.isoformat()
        scheduler.stop()
        assert scheduler.health_check()["status"] == "stopped"


# -- the loop thread ------------------------------------------------------------------------------


class TestStartStop:
    def test_the_hooks_of_a_run_ending_just_before_the_timeout_are_still_called(self) -> None:
        """stop() gives the hooks of the runs that ended a few seconds of their own, however late in
        its timeout those runs ended (here 0.5 s before it, with a hook of 0.9 s)."""
        scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False))
        told: List[str] = []
        scheduler.on_success(lambda entry: time.sleep(0.9) or told.append(entry["status"]))
        started = threading.Event()
        scheduler.schedule_once(
            "job",
            lambda: started.set() or time.sleep(1.5),
            at=datetime.now(timezone.utc) + timedelta(seconds=0.2),
        )
        scheduler.start()
        assert started.wait(10)
        assert scheduler.stop(timeout=2.0) is True
        assert told == ["succeeded"]

    def test_start_is_idempotent_and_stop_leaves_no_thread_behind(
        self, scheduler: PipelineScheduler, clock: FakeClock
    ) -> None:
        assert not scheduler.running
        scheduler.schedule_interval("sync", noop, minutes=1)
        before = set(flowyml_threads())
        scheduler.start()
        scheduler.start()
        assert scheduler.running
        started = [n for n in flowyml_threads() if n not in before]
        assert started.count("flowyml_lite-scheduler") == 1
        assert scheduler.stop() is True
        assert scheduler.stop() is True
        assert not scheduler.running
        assert flowyml_threads() == []

    def test_the_loop_runs_a_fire_when_fake_time_reaches_it(
        self, scheduler: PipelineScheduler, clock: FakeClock
    ) -> None:
        scheduler.schedule_interval("sync", noop, minutes=1)
        scheduler.start()
        assert clock.wait_for_waiters(1, timeout=5)
        clock.set(utc(2024, 1, 1, 0, 1))
        deadline = time.monotonic() + 10
        while not scheduler.get_history("sync") or scheduler.get_history("sync")[0]["status"] == "running":
            assert time.monotonic() < deadline, "the loop did not run the due fire"
            time.sleep(0.01)
        assert when(scheduler.get_history("sync")[0]) == utc(2024, 1, 1, 0, 1)
        scheduler.stop()

    def test_a_stopped_scheduler_can_be_started_again(
        self, scheduler: PipelineScheduler, clock: FakeClock
    ) -> None:
        scheduler.schedule_interval("sync", noop, minutes=1)
        scheduler.start()
        scheduler.stop()
        scheduler.start()
        assert clock.wait_for_waiters(1, timeout=5)
        clock.set(utc(2024, 1, 1, 0, 1))
        deadline = time.monotonic() + 10
        while [e["status"] for e in scheduler.get_history("sync")] != ["succeeded"]:
            assert time.monotonic() < deadline, "the restarted loop did not run the due fire"
            time.sleep(0.01)
        scheduler.stop()
        assert flowyml_threads() == []

    def test_stop_before_start_is_harmless(self, scheduler: PipelineScheduler) -> None:
        assert scheduler.stop() is True
        assert not scheduler.running

    def test_stop_waits_for_a_running_run_to_finish(self, scheduler: PipelineScheduler) -> None:
        scheduler.schedule_daily("slow", lambda: time.sleep(0.3), hour=9)
        scheduler.start()
        scheduler.run_now("slow")
        assert scheduler.stop(timeout=10) is True
        assert [e["status"] for e in scheduler.get_history("slow")] == ["succeeded"]
        assert flowyml_threads() == []

    def test_stop_gives_up_after_its_timeout_and_says_so(
        self, scheduler: PipelineScheduler, gate: threading.Event
    ) -> None:
        scheduler.schedule_daily("stuck", lambda: gate.wait(10), hour=9)
        scheduler.start()
        scheduler.run_now("stuck")
        assert scheduler.stop(timeout=0.2) is False
        assert not scheduler.running

    def test_a_run_that_outlives_stop_is_recorded_and_leaves_no_thread_behind(
        self, scheduler: PipelineScheduler
    ) -> None:
        def ours() -> List[str]:  # the run threads and the scheduler's own
            names = [t.name for t in threading.enumerate() if t.is_alive()]
            return [n for n in names if n.startswith(("flowyml-run", "flowyml_lite"))]

        release = threading.Event()
        scheduler.schedule_daily("stuck", lambda: release.wait(30), hour=9)
        scheduler.schedule_daily("quick", noop, hour=9)
        scheduler.start()
        scheduler.run_now("stuck")
        scheduler.run_now("quick", wait=True)  # on a second thread of the pool, idle after it
        assert scheduler.stop(timeout=0.2) is False
        deadline = time.monotonic() + 30  # the idle thread leaves; the stuck run's stays with it
        while len(ours()) > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(ours()) == 1, ours()
        release.set()
        while ours() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ours() == []  # its thread, and the outcome writer that recorded it, are gone
        assert scheduler.get_history("stuck")[0]["status"] == "succeeded"

    def test_the_scheduler_is_a_context_manager(self, scheduler: PipelineScheduler) -> None:
        with scheduler as running:
            assert running is scheduler and scheduler.running
        assert not scheduler.running


class TestConfigurationFromTheEnvironment:
    """``PipelineScheduler()`` with no config reads FLOWYML_SCHEDULER_* and the guide's lower-case names."""

    def test_db_path_from_the_environment_is_where_schedules_are_kept(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("FLOWYML_SCHEDULER_DB_PATH", str(tmp_path / "from_env.db"))
        scheduler = PipelineScheduler()
        try:
            assert isinstance(scheduler.store, SQLiteStore)
            scheduler.schedule_interval("sync", noop, minutes=1)
        finally:
            scheduler.close()
        assert (tmp_path / "from_env.db").exists()
        assert not (tmp_path / ".flowyml_scheduler.db").exists()
        again = PipelineScheduler(SchedulerConfig(db_path=str(tmp_path / "from_env.db")))
        try:
            assert [s.pipeline_name for s in again.list_schedules(include_orphans=True)] == ["sync"]
        finally:
            again.close()

    def test_the_guide_s_lower_case_spelling_turns_persistence_off(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("flowyml_SCHEDULER_PERSIST", "false")
        scheduler = PipelineScheduler()
        try:
            assert isinstance(scheduler.store, MemoryStore)
            scheduler.schedule_interval("sync", noop, minutes=1)
        finally:
            scheduler.close()
        assert list(tmp_path.iterdir()) == []

    def test_the_default_zone_comes_from_the_environment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("FLOWYML_SCHEDULER_TIMEZONE", "Asia/Tokyo")
        monkeypatch.setenv("FLOWYML_SCHEDULER_PERSIST_SCHEDULES", "false")
        scheduler = PipelineScheduler()
        try:
            assert scheduler.config.timezone == "Asia/Tokyo"
            assert scheduler.schedule_daily("morning", noop, hour=9).timezone == "Asia/Tokyo"
        finally:
            scheduler.close()

    def test_without_any_setting_the_default_database_is_created_in_the_working_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        scheduler = PipelineScheduler()
        try:
            assert isinstance(scheduler.store, SQLiteStore)
            scheduler.schedule_interval("sync", noop, minutes=1)
        finally:
            scheduler.close()
        assert (tmp_path / ".flowyml_scheduler.db").exists()


# -- re-declaration, replicas, orphans ------------------------------------------------------------


class TestRedeclaring:
    """DESIGN §4: re-declaring keeps persisted state when the definition is unchanged."""

    def test_an_identical_re_declaration_after_a_restart_keeps_enabled_next_run_and_history(
        self, make_scheduler: Any, drive: Any, clock: FakeClock
    ) -> None:
        first = make_scheduler("sqlite")
        first.schedule_interval("sync", noop, minutes=1)
        drive.at(first, utc(2024, 1, 1, 0, 1))
        first.disable("sync")
        first.close()

        clock.set(utc(2024, 1, 1, 0, 7, 30))
        second = make_scheduler("sqlite")
        again = second.schedule_interval("sync", noop, minutes=1)
        assert (again.enabled, again.next_run) == (False, None)
        assert again.last_run == utc(2024, 1, 1, 0, 1)
        assert [when(e) for e in second.get_history("sync")] == [utc(2024, 1, 1, 0, 1)]
        assert drive.at(second, utc(2024, 1, 1, 0, 8)) == 0

    def test_a_re_declaration_after_downtime_keeps_the_missed_fire_so_it_is_caught_up(
        self, make_scheduler: Any, drive: Any, clock: FakeClock
    ) -> None:
        first = make_scheduler("sqlite")
        first.schedule_daily("etl", noop, hour=9)
        first.close()

        clock.set(utc(2024, 1, 1, 10, 0))  # the process was down at 09:00
        second = make_scheduler("sqlite")
        again = second.schedule_daily("etl", noop, hour=9)
        assert again.next_run == utc(2024, 1, 1, 9, 0)
        drive.at(second, clock.now())
        (entry,) = second.get_history("etl")
        assert (entry["status"], when(entry)) == ("succeeded", utc(2024, 1, 1, 9, 0))
        assert second.get_schedule("etl").next_run == utc(2024, 1, 2, 9, 0)

    def test_the_same_re_declaration_in_one_process_keeps_the_disabled_flag(
        self, scheduler: PipelineScheduler
    ) -> None:
        scheduler.schedule_interval("sync", noop, minutes=1)
        scheduler.disable("sync")
        assert scheduler.schedule_interval("sync", noop, minutes=1).enabled is False

    def test_a_changed_definition_is_updated_with_a_recomputed_next_run(
        self, make_scheduler: Any, drive: Any, clock: FakeClock
    ) -> None:
        first = make_scheduler("sqlite")
        first.schedule_daily("etl", noop, hour=9)
        drive.at(first, utc(2024, 1, 1, 9))
        first.close()

        clock.set(utc(2024, 1, 1, 12))
        second = make_scheduler("sqlite")
        changed = second.schedule_daily("etl", noop, hour=18, max_instances=2)
        assert (changed.schedule_value, changed.max_instances, changed.enabled) == ("18:00", 2, True)
        assert changed.next_run == utc(2024, 1, 1, 18)
        assert len(second.get_history("etl")) == 1

    def test_a_changed_definition_keeps_a_schedule_disabled(
        self, make_scheduler: Any, drive: Any, clock: FakeClock
    ) -> None:
        first = make_scheduler("sqlite")
        first.schedule_daily("etl", noop, hour=9)
        first.disable("etl")
        first.close()

        second = make_scheduler("sqlite")
        changed = second.schedule_daily("etl", noop, hour=18)
        assert (changed.schedule_value, changed.enabled) == ("18:00", False)
        assert drive.at(second, utc(2024, 1, 1, 18)) == 0
        assert second.get_history("etl") == []
        second.enable("etl")
        assert second.get_schedule("etl").next_run == utc(2024, 1, 2, 18)

    def test_a_disabled_schedule_shows_no_next_run_even_after_its_definition_changes(
        self, scheduler: PipelineScheduler
    ) -> None:
        scheduler.schedule_daily("etl", noop, hour=9)
        scheduler.disable("etl")
        changed = scheduler.schedule_daily("etl", noop, hour=18)
        assert (changed.enabled, changed.next_run) == (False, None)

    def test_re_declaring_in_the_same_process_replaces_the_function(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        calls: List[str] = []
        scheduler.schedule_interval("sync", lambda: calls.append("old"), minutes=1)
        scheduler.schedule_interval("sync", lambda: calls.append("new"), minutes=1)
        drive.at(scheduler, utc(2024, 1, 1, 0, 1))
        assert calls == ["new"]

    def test_three_replicas_declaring_at_different_moments_share_one_grid(self, make_scheduler: Any) -> None:
        offsets = (0, 12, 27)  # all before the first grid instant, 00:01:00
        shared = [make_scheduler("sqlite", clock=FakeClock(START + timedelta(seconds=s))) for s in offsets]
        alone = [make_scheduler("memory", clock=FakeClock(START + timedelta(seconds=s))) for s in offsets]
        for replica in shared + alone:
            replica.schedule_interval("sync", noop, seconds=60)
        assert {r.get_schedule("sync").next_run for r in shared} == {utc(2024, 1, 1, 0, 1)}
        assert {r.get_schedule("sync").next_run for r in alone} == {utc(2024, 1, 1, 0, 1)}

    def test_replicas_sharing_a_store_run_each_fire_once(self, make_scheduler: Any, clock: FakeClock) -> None:
        calls: List[str] = []
        replicas = [make_scheduler("sqlite", node_id=f"node{i}") for i in range(3)]
        for i, replica in enumerate(replicas):
            replica.schedule_interval("sync", lambda i=i: calls.append(f"node{i}"), seconds=60)
        for minute in (1, 2, 3):
            clock.set(utc(2024, 1, 1, 0, minute))
            for replica in replicas:
                replica.run_pending()
            for replica in replicas:
                assert replica.wait_for_runs(10)
        assert len(calls) == 3
        history = replicas[0].get_history("sync")
        assert sorted(when(e) for e in history) == [utc(2024, 1, 1, 0, m) for m in (1, 2, 3)]
        assert all(e["status"] == "succeeded" for e in history)

    def test_concurrent_first_declarations_store_one_schedule(self, make_scheduler: Any) -> None:
        replicas = [make_scheduler("sqlite") for _ in range(4)]
        barrier = threading.Barrier(len(replicas))
        errors: List[BaseException] = []

        def declare(replica: PipelineScheduler) -> None:
            barrier.wait(5)
            try:
                replica.schedule_interval("sync", noop, seconds=60)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=declare, args=(r,)) for r in replicas]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert errors == []
        assert [r.name for r in replicas[0].store.list_schedules()] == ["sync"]
        assert {r.get_schedule("sync").next_run for r in replicas} == {utc(2024, 1, 1, 0, 1)}


class TestOrphans:
    """Schedules stored by another process whose function is not registered here."""

    def test_orphans_are_listed_only_when_asked_for(self, make_scheduler: Any) -> None:
        here = make_scheduler("sqlite")
        elsewhere = make_scheduler("sqlite")
        here.schedule_interval("mine", noop, minutes=1)
        elsewhere.schedule_daily("theirs", noop, hour=9, timezone="Asia/Tokyo")
        assert [s.pipeline_name for s in here.list_schedules()] == ["mine"]
        listed = {s.pipeline_name: s for s in here.list_schedules(include_orphans=True)}
        assert sorted(listed) == ["mine", "theirs"]
        assert listed["theirs"].is_orphan and not listed["mine"].is_orphan
        assert listed["theirs"].pipeline_func is None
        assert listed["theirs"].next_run is not None
        assert listed["theirs"].next_run.isoformat() == "2024-01-02T09:00:00+09:00"
        assert here.get_schedule("theirs").is_orphan
        assert "theirs" not in here.schedules
        assert here.health_check()["orphan_schedules"] == 1

    def test_orphans_never_run_and_are_never_dropped(self, make_scheduler: Any, drive: Any) -> None:
        here = make_scheduler("sqlite")
        elsewhere = make_scheduler("sqlite")
        here.schedule_interval("mine", noop, minutes=1)
        elsewhere.schedule_interval("theirs", noop, minutes=1)
        drive.through(here, "mine", utc(2024, 1, 1, 0, 3))
        assert len(here.get_history("mine")) == 3
        assert here.get_history("theirs") == []
        assert here.get_schedule("theirs").next_run == utc(2024, 1, 1, 0, 1)  # untouched: still due
        with pytest.raises(ScheduleError, match="orphan"):
            here.run_now("theirs")
        elsewhere.run_pending()  # the process that has the function catches it up (catchup="latest")
        assert elsewhere.wait_for_runs(10)
        assert [(when(e), e["status"]) for e in elsewhere.get_history("theirs")] == [
            (utc(2024, 1, 1, 0, 3), "succeeded"),
            (utc(2024, 1, 1, 0, 2), "missed"),
            (utc(2024, 1, 1, 0, 1), "missed"),
        ]


class TestStopWhileTheLoopIsStuckInAClaim:
    """A store that hangs on a claim at stop(): stop() keeps to its timeout, and what it returns
    is true (True: nothing of this scheduler runs any more)."""

    def test_a_claim_answered_while_stop_waits_runs_its_fire(self) -> None:
        entered, release = threading.Event(), threading.Event()

        class Slow(MemoryStore):
            def claim_many(self, claims: Any, outcomes: Any = ()) -> Any:
                entered.set()
                release.wait(10)
                return super().claim_many(claims, outcomes)

        ran: List[str] = []
        config = SchedulerConfig(persist_schedules=False, claim_ahead=False)
        scheduler = PipelineScheduler(config, store=Slow())
        at = datetime.now(UTC) + timedelta(seconds=0.3)
        scheduler.schedule_once("slow", lambda: ran.append("slow"), at=at)
        scheduler.start()
        try:
            assert entered.wait(5)
            threading.Timer(0.2, release.set).start()  # answered while stop() waits for the loop
            assert scheduler.stop(timeout=5) is True
        finally:
            release.set()
        assert ran == ["slow"]
        assert [e["status"] for e in scheduler.get_history("slow")] == ["succeeded"]

    def test_no_run_starts_after_stop_returned_true(self) -> None:
        entered, release = threading.Event(), threading.Event()
        hang = threading.Event()

        class Hanging(MemoryStore):
            def claim_many(self, claims: Any, outcomes: Any = ()) -> Any:
                if hang.is_set():
                    entered.set()
                    release.wait(10)
                return super().claim_many(claims, outcomes)

        started_after: List[datetime] = []
        stopped = threading.Event()

        def job() -> None:
            if stopped.is_set():
                started_after.append(datetime.now(UTC))

        config = SchedulerConfig(persist_schedules=False, claim_ahead=False)
        scheduler = PipelineScheduler(config, store=Hanging())
        scheduler.schedule_once("stuck", job, at=datetime.now(UTC) + timedelta(seconds=0.3))
        hang.set()
        scheduler.start()
        try:
            assert entered.wait(5)
            finished = scheduler.stop(timeout=0.3)
            stopped.set()
            release.set()  # answered well within a second: the claim stands
            time.sleep(0.5)
            assert finished is False  # it said the loop had not stopped
            assert started_after == []  # and the claim it was stuck in started nothing
            (entry,) = scheduler.get_history("stuck")
            assert entry["status"] == "skipped" and "stopped while" in entry["reason"]
        finally:
            release.set()
            scheduler.stop(timeout=2)


class TestARunNowWhoseClaimAnswerWasLost:
    """run_now's claim may commit and still raise (a connection reset during COMMIT): the caller
    gets the error, and the row it may have written is not left ``running``."""

    def test_the_error_is_raised_and_the_row_ends_missed(self) -> None:
        from flowyml_lite.errors import StoreError

        class LosesAnswer(MemoryStore):
            lose = False

            def claim(self, *args: Any, **kwargs: Any) -> Any:
                stored = super().claim(*args, **kwargs)
                if self.lose:
                    raise StoreError("connection reset during COMMIT")
                return stored

        store = LosesAnswer()
        scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False), store=store)
        scheduler.schedule_interval("report", lambda: None, hours=1)
        store.lose = True
        try:
            with pytest.raises(StoreError, match="connection reset"):
                scheduler.run_now("report")
            store.lose = False
            assert scheduler.wait_for_runs(5)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and store.active_runs():
                time.sleep(0.02)
            assert store.active_runs() == []
            (entry,) = scheduler.get_history("report")
            assert entry["status"] == "missed" and "did not answer its claim" in entry["reason"]
        finally:
            scheduler.stop(timeout=5)  # its manual run started a heartbeat: nothing left behind
