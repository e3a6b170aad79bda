"""A new user's mistakes: each is a short, clear error or warning naming it, or does what was meant."""

from __future__ import annotations

import logging
import traceback
from datetime import datetime, timedelta, timezone
from typing import Iterator

import pytest

from flowyml_lite import PipelineScheduler, SchedulerConfig
from flowyml_lite.errors import CronError, ScheduleError, TimezoneError


@pytest.fixture
def scheduler() -> Iterator[PipelineScheduler]:
    sched = PipelineScheduler(SchedulerConfig(persist_schedules=False))
    yield sched
    sched.close()


CALLED = []


def _etl() -> str:
    CALLED.append(1)  # a declaration must never call the user's function
    return "0 9 * * *"


def _frames_inside_the_package(exc: BaseException) -> list:
    return [f for f in traceback.extract_tb(exc.__traceback__) if "flowyml_lite" in f.filename]


@pytest.mark.parametrize(
    "declare, error, words",
    [
        (lambda s: s.schedule_cron("a", print, "0 9 * * MON-FRII"), CronError, "'FRII' is not a day name"),
        (lambda s: s.schedule_interval("a", print, second=5), ScheduleError, "unknown option(s) second"),
        (lambda s: s.schedule_daily("a", print, hour=25), ScheduleError, "hour must be an integer"),
        (
            lambda s: s.schedule_daily("a", print, hour=3, timezone="Mars/Olympus"),
            TimezoneError,
            "Mars/Olympus",
        ),
        (
            lambda s: s.schedule_hourly("a", print, minute=5, retris=2),
            ScheduleError,
            "unknown option(s) retris",
        ),
        (lambda s: s.schedule_cron("a", print, None), ScheduleError, "cron_expression must be text"),
        (lambda s: s.schedule_cron("a", print, 5), ScheduleError, "got int"),
        (
            lambda s: s.schedule_cron("a", "0 9 * * *", _etl),
            ScheduleError,
            "got _etl (the function comes before the expression",
        ),
        (lambda s: s.schedule_daily("a", hour=3), ScheduleError, "no function to run"),
        (
            lambda s: s.schedule_interval("a", lambda path: path, seconds=5),
            ScheduleError,
            "needs argument(s) path: a job is called with none",
        ),
        (lambda s: s.schedule_once("a", print), ScheduleError, "schedule_once needs at="),
        (lambda s: s.schedule_daily("a", print, func=print), ScheduleError, "give the function once"),
    ],
    ids=[
        "cron",
        "interval-typo",
        "daily-hour",
        "zone",
        "option-typo",
        "cron-none",
        "cron-int",
        "cron-swapped",
        "no-function",
        "function-needs-arguments",
        "once-without-instant",
        "function-twice",
    ],
)
def test_a_bad_declaration_is_a_short_error_that_names_the_problem(
    scheduler: PipelineScheduler, declare: object, error: type, words: str
) -> None:
    with pytest.raises(error) as caught:
        declare(scheduler)  # type: ignore[operator]
    assert words in str(caught.value)
    inside = _frames_inside_the_package(caught.value)
    assert len(inside) <= 2, [f"{f.filename}:{f.lineno}" for f in inside]  # the facade, not the parser
    assert scheduler.list_schedules() == []
    assert CALLED == []


def test_the_function_may_be_passed_as_func_as_flowyml_s_api_reference_spells_it(
    scheduler: PipelineScheduler,
) -> None:
    schedule = scheduler.schedule_daily(name="report", func=_etl, hour=3)
    assert schedule.pipeline_func is _etl and CALLED == []


def test_a_one_off_long_past_is_refused_as_it_would_never_run(scheduler: PipelineScheduler) -> None:
    with pytest.raises(ScheduleError, match="would never run"):
        scheduler.schedule_once("past", print, at=datetime(2020, 1, 1, tzinfo=timezone.utc))
    soon = scheduler.schedule_once("soon", print, at=datetime.now(timezone.utc) + timedelta(hours=1))
    assert soon.next_run is not None


def test_declaring_a_name_twice_in_one_process_with_another_definition_warns(
    scheduler: PipelineScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    scheduler.schedule_daily("report", print, hour=3)
    with caplog.at_level(logging.WARNING, logger="flowyml_lite"):
        scheduler.schedule_daily("report", print, hour=3)  # the same: no warning
        assert "already declared" not in caplog.text
        replaced = scheduler.schedule_daily("report", print, hour=4)
    assert "'report' was already declared in this process with another definition" in caplog.text
    assert replaced.schedule_value == "04:00"
    assert len(scheduler.list_schedules()) == 1


def test_declaring_a_name_again_with_another_function_warns_and_the_new_one_runs(
    scheduler: PipelineScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    ran = []

    def load() -> None:
        ran.append("load")

    def report() -> None:
        ran.append("report")

    scheduler.schedule_daily("nightly", load, hour=1)
    with caplog.at_level(logging.WARNING, logger="flowyml_lite"):
        scheduler.schedule_daily("nightly", load, hour=1)  # the same function again: no warning
        assert "already declared" not in caplog.text
        scheduler.schedule_daily("nightly", report, hour=1)  # a copy-pasted name
    assert "'nightly' was already declared in this process with another function" in caplog.text
    assert "report replaces it" in caplog.text
    scheduler.run_now("nightly", wait=True)
    assert ran == ["report"]


@pytest.mark.parametrize("executor", ["thread", "async"])
def test_a_job_written_as_a_generator_runs_its_body_to_the_end(
    scheduler: PipelineScheduler, executor: str
) -> None:
    seen = []

    def steps():  # type: ignore[no-untyped-def]
        seen.append("extract")
        yield
        seen.append("load")

    scheduler.schedule_daily("etl", steps, hour=3, executor=executor)
    entry = scheduler.run_now("etl", wait=True)
    assert entry["status"] == "succeeded"
    assert seen == ["extract", "load"]


def test_a_zoneinfo_object_is_taken_by_its_name_and_a_fixed_offset_is_refused(
    scheduler: PipelineScheduler,
) -> None:
    from zoneinfo import ZoneInfo

    schedule = scheduler.schedule_daily("a", print, hour=3, timezone=ZoneInfo("Europe/London"))
    assert schedule.timezone == "Europe/London"
    with pytest.raises(ScheduleError, match="must be an IANA name"):
        scheduler.schedule_daily("b", print, hour=3, timezone=timezone(timedelta(hours=2)))
