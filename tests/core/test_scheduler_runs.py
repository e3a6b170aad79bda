"""Runs a pipeline team can trust: whatever a job returns, raises or hangs, its run ends in a final
status, and the schedule goes on. Timeouts, retries, async jobs, one-offs, start/end dates, jitter.

Each test drives a scheduler on every store (memory, SQLite) with a fake clock through
``run_pending`` (see conftest); jobs run on real executor threads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List
from unittest import mock

import pytest

from flowyml_lite.core.scheduler import PipelineScheduler
from flowyml_lite.errors import ScheduleError
from tests.waiting import until

START = datetime(2024, 1, 1, 0, 0, 30, tzinfo=timezone.utc)  # the fake clock's start (conftest)
T1 = START + timedelta(seconds=30)  # the first fire of a 60 s interval after START


def noop() -> None:
    return None


class Result:
    """A PipelineResult look-alike with whatever fields a test gives it."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


def history(scheduler: PipelineScheduler, name: str) -> List[Dict[str, Any]]:
    return scheduler.get_history(name, limit=1000)


def statuses(scheduler: PipelineScheduler, name: str) -> List[str]:
    return [e["status"] for e in reversed(history(scheduler, name))]


class TestAnyReturnValue:
    @pytest.mark.parametrize(
        "value",
        [uuid.UUID(int=7), mock.MagicMock(), 42, b"bytes", object()],
        ids=["uuid", "magicmock", "int", "bytes", "object"],
    )
    def test_a_result_whose_run_id_is_not_text_is_recorded_as_text_and_the_schedule_goes_on(
        self, scheduler: PipelineScheduler, drive: Any, value: Any
    ) -> None:
        scheduler.schedule_interval("etl", lambda: Result(success=True, run_id=value), seconds=60)
        drive.at(scheduler, T1)
        drive.at(scheduler, T1 + timedelta(seconds=60))
        entries = history(scheduler, "etl")
        assert [e["status"] for e in entries] == ["succeeded", "succeeded"]
        assert entries[0]["run_id"] == str(value)

    def test_success_is_read_only_from_a_real_bool(self, scheduler: PipelineScheduler, drive: Any) -> None:
        scheduler.schedule_interval("a", lambda: Result(success=False, run_id="r1", error="boom"), seconds=60)
        scheduler.schedule_interval("b", lambda: Result(success="no", run_id="r2"), seconds=60)
        scheduler.schedule_interval("c", lambda: Result(success=mock.MagicMock(), run_id="r3"), seconds=60)
        drive.at(scheduler, T1)
        assert history(scheduler, "a")[0]["status"] == "failed"
        assert history(scheduler, "a")[0]["error"] == "boom"
        assert history(scheduler, "b")[0]["status"] == "succeeded"
        assert history(scheduler, "c")[0]["status"] == "succeeded"

    def test_a_job_returning_none_succeeds(self, scheduler: PipelineScheduler, drive: Any) -> None:
        scheduler.schedule_interval("etl", noop, seconds=60)
        drive.at(scheduler, T1)
        assert history(scheduler, "etl")[0]["success"] is True

    def test_a_failed_run_keeps_its_full_traceback_and_the_logs_it_emitted(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        def job() -> None:
            logging.getLogger("my.pipeline").warning("loading 42 rows")
            raise ValueError("bad row 17")

        scheduler.schedule_interval("etl", job, seconds=60)
        drive.at(scheduler, T1)
        entry = history(scheduler, "etl")[0]
        assert entry["status"] == "failed"
        assert entry["error"] == "ValueError: bad row 17"
        assert "Traceback" in entry["traceback"] and "in job" in entry["traceback"]
        assert "loading 42 rows" in (entry["output"] or "")


class Unprintable(BaseException):
    """An exception whose every text raises another of itself (a broken library's error)."""

    def __str__(self) -> str:
        raise Unprintable()

    def __repr__(self) -> str:
        raise Unprintable()


async def raises_unprintable_async() -> None:
    raise Unprintable()


def raises_unprintable() -> None:
    raise Unprintable()


class TestAnyException:
    @pytest.mark.parametrize("job", [raises_unprintable, raises_unprintable_async], ids=["thread", "async"])
    def test_an_exception_that_cannot_be_printed_fails_its_run_and_the_schedule_goes_on(
        self, scheduler: PipelineScheduler, drive: Any, job: Any
    ) -> None:
        scheduler.schedule_interval("etl", job, seconds=60)
        drive.at(scheduler, T1)
        drive.at(scheduler, T1 + timedelta(seconds=60))
        entries = history(scheduler, "etl")
        assert [e["status"] for e in entries] == ["failed", "failed"]
        assert entries[0]["error"].startswith("Unprintable")

    def test_an_error_text_no_store_can_keep_fails_its_run_and_every_schedule_goes_on(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        """A file name that is not UTF-8 (``os.fsdecode`` gives lone surrogates) or a NUL in an
        exception's message: its outcome must reach the store, escaped, or it waits forever and
        every later claim, which carries it, fails with it: every schedule silent."""

        def bad_file() -> None:
            raise FileNotFoundError(2, "No such file", os.fsdecode(b"/data/caf\xe9\x00.csv"))

        scheduler.schedule_interval("etl", bad_file, seconds=60)
        scheduler.schedule_interval("other", lambda: None, seconds=60)
        drive.at(scheduler, T1)
        drive.at(scheduler, T1 + timedelta(seconds=60))
        assert statuses(scheduler, "etl") == ["failed", "failed"]
        assert statuses(scheduler, "other") == ["succeeded", "succeeded"]
        assert "caf\\udce9\\x00.csv" in history(scheduler, "etl")[0]["error"]
        assert scheduler.problems() == []

    def test_the_value_a_job_returns_is_let_go_when_its_run_ends(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        """Not kept by the idle run thread until its next job (a big frame held in memory, or a
        finalizer that would delay another schedule's run)."""
        released = threading.Event()

        class Big:
            def __del__(self) -> None:
                released.set()

        scheduler.schedule_interval("etl", Big, seconds=60)
        drive.at(scheduler, T1)
        assert history(scheduler, "etl")[0]["status"] == "succeeded"
        assert released.wait(5)


class TestTimeouts:
    def test_a_hung_job_is_recorded_timed_out_and_later_fires_start(
        self, scheduler: PipelineScheduler, drive: Any, gate: threading.Event
    ) -> None:
        started: List[float] = []

        def hang() -> None:
            started.append(time.monotonic())
            if len(started) == 1:
                gate.wait(60)

        scheduler.schedule_interval("hang", hang, seconds=60, timeout_seconds=0.3)
        drive.at(scheduler, T1)  # waits for the run's end: its timeout
        first = history(scheduler, "hang")[0]
        assert first["status"] == "timed_out"
        assert "timed out after 0.3 s" in first["reason"]
        assert "cannot be stopped" in first["reason"]  # a thread: the docs say why
        assert "in hang" in (first["traceback"] or "")  # where the thread hangs
        drive.at(scheduler, T1 + timedelta(seconds=60))
        assert statuses(scheduler, "hang") == ["timed_out", "succeeded"]
        assert len(started) == 2

    def test_a_timed_out_thread_run_is_not_retried_beside_itself(
        self, scheduler: PipelineScheduler, drive: Any, gate: threading.Event
    ) -> None:
        """A thread cannot be stopped: a retry would run the fire twice at once."""
        calls: List[float] = []

        def hang() -> None:
            calls.append(time.monotonic())
            gate.wait(60)

        scheduler.schedule_interval(
            "hang", hang, seconds=60, timeout_seconds=0.2, retries=2, retry_delay_seconds=0.01
        )
        drive.at(scheduler, T1)
        entry = history(scheduler, "hang")[0]
        assert (entry["status"], entry["attempt"]) == ("timed_out", 1)
        time.sleep(0.2)  # a retry would have started by now
        assert len(calls) == 1

    def test_the_config_default_timeout_applies_when_a_schedule_sets_none(
        self, make_scheduler: Any, drive: Any, gate: threading.Event
    ) -> None:
        scheduler = make_scheduler("memory", default_timeout_seconds=0.2)
        scheduler.schedule_interval("hang", lambda: gate.wait(60), seconds=60)
        drive.at(scheduler, T1)
        assert history(scheduler, "hang")[0]["status"] == "timed_out"

    def test_a_timeout_is_part_of_the_definition(self, make_scheduler: Any) -> None:
        first = make_scheduler("sqlite")
        first.schedule_interval("etl", noop, seconds=60, timeout_seconds=10)
        assert first.get_schedule("etl").timeout_seconds == 10
        second = make_scheduler("sqlite")
        second.schedule_interval("etl", noop, seconds=60, timeout_seconds=20)
        assert second.get_schedule("etl").timeout_seconds == 20

    def test_a_bad_timeout_is_refused_at_declaration(self, scheduler: PipelineScheduler) -> None:
        with pytest.raises(ScheduleError, match="timeout_seconds"):
            scheduler.schedule_interval("etl", noop, seconds=60, timeout_seconds=-1)


class TestBlockedSchedules:
    def test_health_says_degraded_while_a_long_run_makes_its_schedule_skip_fire_after_fire(
        self, scheduler: PipelineScheduler, drive: Any, gate: threading.Event
    ) -> None:
        scheduler.schedule_interval("stuck", lambda: gate.wait(60), seconds=60)
        drive.at(scheduler, T1, wait=False)
        for minute in range(1, 4):
            drive.at(scheduler, T1 + timedelta(minutes=minute), wait=False)
        (problem,) = [p for p in scheduler.problems() if p["source"] == "blocked:stuck"]
        assert "3 fires in a row skipped" in problem["message"] and "timeout_seconds" in problem["message"]
        gate.set()
        assert scheduler.wait_for_runs(10)
        drive.at(scheduler, T1 + timedelta(minutes=4))
        assert not [p for p in scheduler.problems() if p["source"] == "blocked:stuck"]


class Flaky:
    """Fails ``times`` times with ``error``, then succeeds."""

    def __init__(self, times: int, error: type = ConnectionError) -> None:
        self.times, self.error, self.calls = times, error, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.times:
            raise self.error(f"attempt {self.calls} failed")
        return "ok"


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    assert until(predicate, timeout), "condition not met in time"


class TestRetries:
    def test_a_failing_attempt_is_retried_on_the_same_fire_and_the_last_attempt_decides(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        job = Flaky(2)
        scheduler.schedule_interval(
            "etl", job, seconds=60, retries=3, retry_delay_seconds=0.05, retry_backoff=1
        )
        drive.at(scheduler, T1)
        entries = history(scheduler, "etl")
        assert len(entries) == 1  # one row per fire: attempts are never new claims
        assert entries[0]["status"] == "succeeded"
        assert entries[0]["attempt"] == 3
        assert job.calls == 3
        # its row keeps the last attempt's start: a lag from the fire would count the retry delays
        assert entries[0]["start_lag_seconds"] is None

    def test_a_first_attempt_has_its_start_lag(self, scheduler: PipelineScheduler, drive: Any) -> None:
        scheduler.schedule_interval("etl", lambda: None, seconds=60)
        drive.at(scheduler, T1)
        assert history(scheduler, "etl")[0]["start_lag_seconds"] is not None

    def test_retries_run_out_and_the_fire_fails_with_its_last_error(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        job = Flaky(10)
        scheduler.schedule_interval("etl", job, seconds=60, retries=2, retry_delay_seconds=0.01)
        drive.at(scheduler, T1)
        entry = history(scheduler, "etl")[0]
        assert (entry["status"], entry["attempt"], entry["error"]) == (
            "failed",
            3,
            "ConnectionError: attempt 3 failed",
        )

    def test_retry_on_limits_retries_to_those_exception_types(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        job = Flaky(5, error=KeyError)
        scheduler.schedule_interval(
            "etl", job, seconds=60, retries=3, retry_delay_seconds=0.01, retry_on=OSError
        )
        drive.at(scheduler, T1)
        assert job.calls == 1
        assert history(scheduler, "etl")[0]["attempt"] == 1

    def test_a_subclass_of_a_retry_on_type_is_retried(self, scheduler: PipelineScheduler, drive: Any) -> None:
        job = Flaky(1, error=ConnectionResetError)
        scheduler.schedule_interval(
            "etl", job, seconds=60, retries=1, retry_delay_seconds=0.01, retry_on=(OSError,)
        )
        drive.at(scheduler, T1)
        assert history(scheduler, "etl")[0]["status"] == "succeeded"

    def test_while_waiting_history_shows_the_next_attempt_and_the_row_stays_active(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        job = Flaky(1)
        scheduler.schedule_interval("etl", job, seconds=60, retries=1, retry_delay_seconds=30)
        drive.at(scheduler, T1, wait=False)
        # A retry waits with its next attempt's instant (a run waiting for a worker is queued too).
        wait_for(lambda: history(scheduler, "etl")[0]["next_attempt_at"] is not None)
        entry = history(scheduler, "etl")[0]
        assert entry["status"] == "queued" and entry["attempt"] == 2
        assert entry["next_attempt_at"] is not None
        assert "attempt 2 at" in entry["reason"]
        scheduler.stop(timeout=1)
        final = history(scheduler, "etl")[0]
        assert final["status"] == "failed" and "stopped before attempt 2" in final["reason"]


class TestAsyncJobs:
    def test_an_async_def_job_is_awaited(self, scheduler: PipelineScheduler, drive: Any) -> None:
        ran: List[str] = []

        async def job() -> str:
            await asyncio.sleep(0.01)
            ran.append("yes")
            return "done"

        declared = scheduler.schedule_interval("etl", job, seconds=60)
        assert declared.executor == scheduler.get_schedule("etl").executor == "async"  # where it runs
        drive.at(scheduler, T1)
        assert ran == ["yes"]
        assert history(scheduler, "etl")[0]["status"] == "succeeded"

    def test_an_async_job_past_its_timeout_is_cancelled(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        cancelled: List[bool] = []

        async def job() -> None:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

        scheduler.schedule_interval("etl", job, seconds=60, timeout_seconds=0.2)
        drive.at(scheduler, T1)
        entry = history(scheduler, "etl")[0]
        assert entry["status"] == "timed_out" and "stopped" in entry["reason"]
        wait_for(lambda: cancelled == [True])


class TestOneOffs:
    def test_a_one_off_fires_once_then_has_no_next_run_and_stays_listed(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        at = START + timedelta(minutes=5)
        schedule = scheduler.schedule_once("report", noop, at=at)
        assert schedule.schedule_type == "once"
        assert schedule.next_run == at
        drive.at(scheduler, at)
        drive.at(scheduler, at + timedelta(days=1))
        assert statuses(scheduler, "report") == ["succeeded"]
        assert scheduler.get_schedule("report").next_run is None
        assert "report" in scheduler.schedules

    def test_iso_text_is_accepted_and_a_naive_instant_refused(self, scheduler: PipelineScheduler) -> None:
        scheduler.schedule_once("a", noop, at="2024-01-01T02:00:00+01:00")
        assert scheduler.get_schedule("a").next_run == datetime(2024, 1, 1, 1, tzinfo=timezone.utc)
        with pytest.raises(ScheduleError, match="no time zone"):
            scheduler.schedule_once("b", noop, at=datetime(2024, 1, 1))

    def test_a_one_off_declared_just_after_its_instant_still_fires_but_one_long_past_is_refused(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        scheduler.schedule_once("just", noop, at=START - timedelta(seconds=5))
        with pytest.raises(ScheduleError, match=r"'long' .* in the past, so it would never run"):
            scheduler.schedule_once("long", noop, at=START - timedelta(hours=5))
        assert "long" not in [s.pipeline_name for s in scheduler.list_schedules()]
        drive.at(scheduler, START)
        assert statuses(scheduler, "just") == ["succeeded"]

    def test_a_one_off_that_already_ran_is_declared_again_without_an_error(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        at = START + timedelta(minutes=1)
        scheduler.schedule_once("migrate", noop, at=at)
        drive.at(scheduler, at)
        drive.at(scheduler, at + timedelta(hours=3))
        again = scheduler.schedule_once("migrate", noop, at=at)  # e.g. at every start of the app
        assert again.next_run is None
        assert statuses(scheduler, "migrate") == ["succeeded"]

    def test_a_one_off_missed_while_down_follows_the_misfire_policy(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        at = START + timedelta(minutes=5)
        scheduler.schedule_once("report", noop, at=at)
        drive.at(scheduler, at + timedelta(hours=2))  # far past the grace: catchup=latest runs it once
        assert statuses(scheduler, "report") == ["succeeded"]


class TestBounds:
    def test_start_and_end_dates_bound_the_fires(self, scheduler: PipelineScheduler, drive: Any) -> None:
        start = START + timedelta(minutes=10)
        end = START + timedelta(minutes=13)
        scheduler.schedule_interval("etl", noop, seconds=60, start_date=start, end_date=end)
        assert scheduler.get_schedule("etl").next_run >= start
        drive.until(scheduler, START + timedelta(hours=1))
        fired = [datetime.fromisoformat(e["fire_time"]) for e in history(scheduler, "etl")]
        assert fired and min(fired) >= start and max(fired) <= end
        assert scheduler.get_schedule("etl").next_run is None

    def test_jitter_delays_the_start_but_not_the_fire_instant(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        scheduler.schedule_interval("etl", noop, seconds=60, jitter_seconds=0.3)
        drive.at(scheduler, T1)
        entry = history(scheduler, "etl")[0]
        assert datetime.fromisoformat(entry["fire_time"]) == T1


class TestHooks:
    def test_on_finish_sees_every_final_outcome(self, scheduler: PipelineScheduler, drive: Any) -> None:
        seen: List[str] = []
        scheduler.on_finish(lambda entry: seen.append(entry["status"]))
        scheduler.schedule_interval("ok", noop, seconds=60)
        scheduler.schedule_interval("bad", Flaky(10), seconds=60)
        drive.at(scheduler, T1)
        assert sorted(seen) == ["failed", "succeeded"]

    def test_on_finish_also_hears_of_runs_missed_or_skipped_at_their_claim(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        seen: List[str] = []
        scheduler.on_finish(lambda entry: seen.append(entry["status"]))
        scheduler.schedule_interval("etl", noop, seconds=600, catchup="skip")
        drive.at(scheduler, T1 + timedelta(minutes=35))  # every instant far past the grace: missed
        assert seen and set(seen) == {"missed"}


def refuse_outcomes_of(db_path: str, schedule: str, only_with_error: bool = False) -> None:
    """A real SQLite trigger that refuses to finish the runs of ``schedule`` (every outcome, or
    only one that carries an error text): a store that fails some statements, not all."""
    condition = f"NEW.schedule = '{schedule}' AND NEW.status <> 'running'"
    if only_with_error:
        condition += " AND NEW.error IS NOT NULL"
    with sqlite3.connect(db_path) as conn:
        conn.execute(
            f"CREATE TRIGGER refuse BEFORE UPDATE ON runs WHEN {condition} "
            "BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
        )


class TestAnOutcomeTheStoreRefuses:
    def test_the_other_schedules_go_on_firing_and_health_names_the_outcome_left(
        self, make_scheduler: Any, drive: Any
    ) -> None:
        """Carried by every claim, an outcome the store refuses failed every claim: every schedule
        of the process silent. Claims now go through without it; the writer keeps it."""
        scheduler = make_scheduler("sqlite")
        scheduler.schedule_interval("bad", lambda: None, seconds=60)
        scheduler.schedule_interval("good", lambda: None, seconds=60)
        refuse_outcomes_of(make_scheduler.db_path, "bad")
        for minute in range(3):  # "bad"'s run never ends in the store: not waited for
            drive.at(scheduler, T1 + timedelta(minutes=minute), wait=False)
            time.sleep(0.5)  # the runs, and the writer's attempts
        assert statuses(scheduler, "good")[:2] == ["succeeded", "succeeded"]
        assert len(statuses(scheduler, "good")) == 3
        assert statuses(scheduler, "bad")[0] == "running"  # the store will not finish it
        assert any(p["source"] == "outcomes" for p in scheduler.problems())

    def test_an_outcome_refused_for_its_texts_is_recorded_without_them_saying_why(
        self, make_scheduler: Any, drive: Any
    ) -> None:
        scheduler = make_scheduler("sqlite")

        def fails() -> None:
            raise ValueError("boom")

        scheduler.schedule_interval("bad", fails, seconds=60)
        scheduler.schedule_interval("good", lambda: None, seconds=60)
        refuse_outcomes_of(make_scheduler.db_path, "bad", only_with_error=True)
        for minute in range(3):
            drive.at(scheduler, T1 + timedelta(minutes=minute))
            time.sleep(0.3)
        assert statuses(scheduler, "good") == ["succeeded"] * 3
        entries = history(scheduler, "bad")
        assert [e["status"] for e in entries] == ["failed"] * 3
        assert "the store refused this run's outcome as reported" in entries[-1]["reason"]
        assert "refused by a trigger" in entries[-1]["reason"]
        assert scheduler.problems() == []


class TestAClaimTheStoreRefuses:
    def test_on_sqlite_the_others_go_on_and_its_instants_are_not_moved_past_without_a_row(
        self, make_scheduler: Any, drive: Any
    ) -> None:
        """A real SQLite trigger refuses the run rows of one schedule: SQLite takes it for a
        claim refused, and its fire was moved past as if it had run ("already has a run"),
        leaving the instant without a row. It waits instead; the other schedules go on."""
        scheduler = make_scheduler("sqlite")
        for name in ("a", "bad", "c"):
            scheduler.schedule_interval(name, lambda: None, seconds=60)
        with sqlite3.connect(make_scheduler.db_path) as conn:
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON runs WHEN NEW.schedule = 'bad' "
                "BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
            )
        drive.at(scheduler, T1)
        drive.at(scheduler, T1 + timedelta(seconds=1))  # looked at again
        drive.at(scheduler, T1 + timedelta(seconds=60))
        for name in ("a", "c"):
            assert statuses(scheduler, name) == ["succeeded", "succeeded"], name
        assert statuses(scheduler, "bad") == []
        with sqlite3.connect(make_scheduler.db_path) as conn:
            conn.execute("DROP TRIGGER refuse")
        drive.at(scheduler, T1 + timedelta(seconds=70))  # past its retry
        fires = [e["fire_time"] for e in history(scheduler, "bad")]
        assert [_as_utc(f) for f in fires] == [T1 + timedelta(seconds=60), T1], history(scheduler, "bad")


def _as_utc(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.astimezone(timezone.utc)
