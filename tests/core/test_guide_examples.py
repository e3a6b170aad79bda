"""Every code example of the seed guide (``flowyml`` renamed ``flowyml_lite``) runs unchanged.

The guide's code sits in each test as the guide writes it; around it, the test supplies what the
guide leaves to the reader (``api``, ``run_report``...), a temporary working directory for the
default ``.flowyml_scheduler.db``, and assertions on what the example did. These schedulers use
real time: nothing here waits for a fire; ``run_now`` shows a run end to end.
"""

from __future__ import annotations

import re
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator, List
from zoneinfo import ZoneInfo

import pytest

from flowyml_lite import Pipeline, PipelineScheduler, step
from flowyml_lite.core.scheduler_config import SchedulerConfig
from flowyml_lite.errors import LockError, PluginError

api = SimpleNamespace(get_daily_data=lambda: {"rows": 3})
ran: List[str] = []


def run_report() -> None:
    ran.append("report")


def run_billing() -> None:
    ran.append("billing")


def run_morning_pipeline() -> None:
    ran.append("morning")


def run_sync_pipeline() -> None:
    ran.append("sync")


def run_check_pipeline() -> None:
    ran.append("check")


@pytest.fixture(autouse=True)
def in_tmp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The guide's default database (.flowyml_scheduler.db) lands in a fresh directory."""
    monkeypatch.chdir(tmp_path)
    ran.clear()
    return tmp_path


@pytest.fixture
def scheduler() -> Iterator[PipelineScheduler]:
    """``scheduler = PipelineScheduler()`` as the guide writes it, closed after the test."""
    made = PipelineScheduler()
    yield made
    made.close()


def no_scheduler_threads() -> bool:
    left = [t.name for t in threading.enumerate() if t.name.startswith("flowyml_lite") and t.is_alive()]
    if left:
        print("scheduler threads alive:", left)
    return not left


class TestQuickStart:
    def test_the_quick_start_schedules_a_pipeline_daily_at_2_am_new_york_and_starts(
        self, in_tmp_dir: Path
    ) -> None:
        # Define pipeline
        @step(outputs=["data"])
        def fetch_data():  # type: ignore[no-untyped-def]
            return api.get_daily_data()

        pipeline = Pipeline("daily_etl")
        pipeline.add_step(fetch_data)

        # Create scheduler (persistence enabled by default)
        scheduler = PipelineScheduler()

        # Schedule for daily execution at 2 AM New York time
        scheduler.schedule_daily(
            name="daily_etl_job",
            pipeline_func=lambda: pipeline.run(),
            hour=2,
            minute=0,
            timezone="America/New_York",
        )

        # Start the scheduler
        scheduler.start()

        try:
            assert scheduler.running
            assert (in_tmp_dir / ".flowyml_scheduler.db").exists()
            job = scheduler.schedules["daily_etl_job"]
            assert job.next_run is not None and job.next_run.tzinfo == ZoneInfo("America/New_York")
            assert (job.next_run.hour, job.next_run.minute) == (2, 0)
            assert timedelta(0) < job.next_run - datetime.now(timezone.utc) <= timedelta(hours=25)
            entry = scheduler.run_now("daily_etl_job", wait=True)
            assert (entry["status"], entry["success"]) == ("succeeded", True)
            assert re.fullmatch(r"[0-9a-f]{32}", entry["run_id"])
        finally:
            scheduler.stop()
        assert not scheduler.running and no_scheduler_threads()
        scheduler.close()

        restarted = PipelineScheduler()  # persistence: the schedule and its history survive a restart
        try:
            (kept,) = restarted.list_schedules(include_orphans=True)
            assert (kept.pipeline_name, kept.schedule_value, kept.timezone) == (
                "daily_etl_job",
                "02:00",
                "America/New_York",
            )
            assert [e["run_id"] for e in restarted.get_history("daily_etl_job")] == [entry["run_id"]]
        finally:
            restarted.close()


class TestScheduleTypes:
    def test_cron_every_weekday_at_9_am_london(self, scheduler: PipelineScheduler) -> None:
        # Run every weekday at 9 AM
        scheduler.schedule_cron(
            name="weekday_report",
            pipeline_func=run_report,
            cron_expression="0 9 * * 1-5",
            timezone="Europe/London",
        )
        s = scheduler.schedules["weekday_report"]
        assert (s.schedule_type, s.schedule_value, s.timezone) == ("cron", "0 9 * * 1-5", "Europe/London")
        assert s.next_run is not None and s.next_run.tzinfo == ZoneInfo("Europe/London")
        assert (s.next_run.hour, s.next_run.minute) == (9, 0) and s.next_run.isoweekday() <= 5
        assert s.next_run - datetime.now(timezone.utc) <= timedelta(days=3, hours=1)

    def test_cron_on_the_first_day_of_every_month(self, scheduler: PipelineScheduler) -> None:
        # Run on the first day of every month
        scheduler.schedule_cron(
            name="monthly_billing", pipeline_func=run_billing, cron_expression="0 0 1 * *", timezone="UTC"
        )
        s = scheduler.schedules["monthly_billing"]
        assert s.next_run is not None and (s.next_run.day, s.next_run.hour, s.next_run.minute) == (1, 0, 0)
        assert s.next_run - datetime.now(timezone.utc) <= timedelta(days=31)
        scheduler.run_now("monthly_billing", wait=True)
        assert ran == ["billing"]

    def test_daily_at_9_30_tokyo(self, scheduler: PipelineScheduler) -> None:
        scheduler.schedule_daily(
            name="morning_report",
            pipeline_func=run_morning_pipeline,
            hour=9,  # 9 AM
            minute=30,  # 9:30 AM
            timezone="Asia/Tokyo",
        )
        s = scheduler.schedules["morning_report"]
        assert (s.schedule_type, s.schedule_value) == ("daily", "09:30")
        assert s.next_run is not None and s.next_run.isoformat()[10:] == "T09:30:00+09:00"

    def test_hourly_at_15_past(self, scheduler: PipelineScheduler) -> None:
        scheduler.schedule_hourly(
            name="hourly_sync",
            pipeline_func=run_sync_pipeline,
            minute=15,  # Run at :15 past each hour (1:15, 2:15, 3:15, ...)
        )
        s = scheduler.schedules["hourly_sync"]
        assert (s.schedule_type, s.schedule_value, s.timezone) == ("hourly", "15", "UTC")
        assert s.next_run is not None and (s.next_run.minute, s.next_run.second) == (15, 0)
        assert timedelta(0) < s.next_run - datetime.now(timezone.utc) <= timedelta(hours=1)

    def test_interval_every_30_minutes(self, scheduler: PipelineScheduler) -> None:
        # Run every 30 minutes
        scheduler.schedule_interval(name="frequent_check", pipeline_func=run_check_pipeline, minutes=30)
        s = scheduler.schedules["frequent_check"]
        assert (s.schedule_type, s.schedule_value) == ("interval", "1800")
        assert s.next_run is not None
        assert timedelta(0) < s.next_run - datetime.now(timezone.utc) <= timedelta(minutes=30)
        assert s.next_run.timestamp() % 1800 == 0  # on the grid


class TestAdvancedFeatures:
    def test_persistence_config_keeps_schedules_in_the_given_database(self, in_tmp_dir: Path) -> None:
        db_path = str(in_tmp_dir / "scheduler.db")  # the guide's "/path/to/scheduler.db"
        config = SchedulerConfig(persist_schedules=True, db_path=db_path)
        scheduler = PipelineScheduler(config=config)
        try:
            scheduler.schedule_interval("frequent_check", run_check_pipeline, minutes=30)
        finally:
            scheduler.close()
        assert Path(db_path).exists() and not (in_tmp_dir / ".flowyml_scheduler.db").exists()
        again = PipelineScheduler(config=SchedulerConfig(persist_schedules=True, db_path=db_path))
        try:
            assert [s.pipeline_name for s in again.list_schedules(include_orphans=True)] == ["frequent_check"]
        finally:
            again.close()

    def test_distributed_file_locking_runs_under_the_lock(self, in_tmp_dir: Path) -> None:
        config = SchedulerConfig(
            distributed=True,
            lock_backend="file",
        )
        scheduler = PipelineScheduler(config=config)
        try:
            scheduler.schedule_interval("frequent_check", run_check_pipeline, minutes=30)
            entry = scheduler.run_now("frequent_check", wait=True)
            assert entry["status"] == "succeeded" and ran == ["check"]
            locks = in_tmp_dir / ".flowyml_scheduler.db.locks"
            assert locks.is_dir() and any(locks.iterdir())
        finally:
            scheduler.close()

    def test_distributed_redis_locking_constructs_as_in_the_guide(self) -> None:
        try:
            config = SchedulerConfig(
                distributed=True, lock_backend="redis", redis_url="redis://localhost:6379/0"
            )
            scheduler = PipelineScheduler(config=config)
        except PluginError as exc:
            pytest.skip(f"the redis extra is not installed: {exc}")
        except LockError as exc:
            pytest.skip(f"no Redis server at localhost:6379: {exc}")
        try:
            assert scheduler.config.lock_backend == "redis"
        finally:
            scheduler.close()

    def test_distributed_redis_locking_runs_under_the_lock_on_the_test_server(self, redis_url: str) -> None:
        try:
            scheduler = PipelineScheduler(
                SchedulerConfig(distributed=True, lock_backend="redis", redis_url=redis_url)
            )
        except PluginError as exc:
            pytest.skip(f"the redis extra is not installed: {exc}")
        try:
            scheduler.schedule_interval("frequent_check", run_check_pipeline, minutes=30)
            assert scheduler.run_now("frequent_check", wait=True)["status"] == "succeeded"
        finally:
            scheduler.close()


class TestMonitoring:
    def test_health_check_prints_status_and_success_rate(
        self, scheduler: PipelineScheduler, capsys: pytest.CaptureFixture[str]
    ) -> None:
        scheduler.schedule_interval("frequent_check", run_check_pipeline, minutes=30)
        scheduler.start()
        scheduler.run_now("frequent_check", wait=True)
        # Get health status
        health = scheduler.health_check()
        print(f"Status: {health['status']}")
        print(f"Success Rate: {health['metrics']['success_rate']:.1%}")
        assert capsys.readouterr().out == "Status: running\nSuccess Rate: 100.0%\n"

    def test_history_loop_prints_each_run_with_its_duration_and_run_id(
        self, scheduler: PipelineScheduler, capsys: pytest.CaptureFixture[str]
    ) -> None:
        pipeline = Pipeline("daily_etl").add_step(step(outputs=["data"])(lambda: api.get_daily_data()))
        scheduler.schedule_daily(
            "daily_etl_job", lambda: pipeline.run(), hour=2, minute=0, timezone="America/New_York"
        )
        first = scheduler.run_now("daily_etl_job", wait=True)

        def boom() -> None:
            raise RuntimeError("upstream down")

        scheduler.schedule_daily("daily_etl_job", boom, hour=2, minute=0, timezone="America/New_York")
        scheduler.run_now("daily_etl_job", wait=True)

        # Get execution history for a schedule
        history = scheduler.get_history("daily_etl_job", limit=50)
        for execution in history:
            status = "✅" if execution["success"] else "❌"
            print(f"{status} {execution['started_at']} - {execution['duration_seconds']:.2f}s")
            if execution.get("run_id"):
                print(f" Run ID: {execution['run_id']}")

        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 3
        assert re.fullmatch(r"❌ \d{4}-\d\d-\d\dT\S+ - \d+\.\d\ds", lines[0])
        assert re.fullmatch(r"✅ \d{4}-\d\d-\d\dT\S+ - \d+\.\d\ds", lines[1])
        assert lines[2] == f" Run ID: {first['run_id']}"
        assert history[1]["error"] is None and "upstream down" in history[0]["error"]


class TestManagingSchedules:
    def test_list_schedules_prints_state_type_and_next_run(
        self, scheduler: PipelineScheduler, capsys: pytest.CaptureFixture[str]
    ) -> None:
        scheduler.schedule_daily("daily_etl_job", run_report, hour=2, minute=0, timezone="America/New_York")
        scheduler.schedule_interval("frequent_check", run_check_pipeline, minutes=30)
        scheduler.disable("frequent_check")

        schedules = scheduler.list_schedules()
        for schedule in schedules:
            status = "✅ Enabled" if schedule.enabled else "⏸️ Paused"
            print(f"{status} {schedule.pipeline_name}")
            print(f" Type: {schedule.schedule_type}")
            print(f" Next run: {schedule.next_run} ({schedule.timezone})")

        lines = capsys.readouterr().out.splitlines()
        assert lines[0] == "✅ Enabled daily_etl_job"
        assert lines[1] == " Type: daily"
        assert re.fullmatch(r" Next run: \d{4}-\d\d-\d\d 02:00:00-0[45]:00 \(America/New_York\)", lines[2])
        assert lines[3:] == ["⏸️ Paused frequent_check", " Type: interval", " Next run: None (UTC)"]

    def test_disable_enable_unschedule_and_clear(self, scheduler: PipelineScheduler) -> None:
        scheduler.schedule_daily("daily_etl_job", run_report, hour=2, minute=0, timezone="America/New_York")
        scheduler.schedule_interval("frequent_check", run_check_pipeline, minutes=30)

        # Pause
        scheduler.disable("daily_etl_job")
        assert scheduler.schedules["daily_etl_job"].enabled is False
        # Resume
        scheduler.enable("daily_etl_job")
        assert scheduler.schedules["daily_etl_job"].enabled is True
        assert scheduler.schedules["daily_etl_job"].next_run is not None
        # Remove
        scheduler.unschedule("daily_etl_job")
        assert list(scheduler.schedules) == ["frequent_check"]
        # Clear all
        scheduler.clear()
        assert scheduler.list_schedules(include_orphans=True) == []


class TestEnvironmentVariables:
    def test_the_guide_s_variables_configure_a_scheduler_made_without_config(
        self, in_tmp_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("flowyml_SCHEDULER_PERSIST", "true")
        monkeypatch.setenv("flowyml_SCHEDULER_DB_PATH", str(in_tmp_dir / "env.db"))
        monkeypatch.setenv("flowyml_SCHEDULER_DISTRIBUTED", "true")
        monkeypatch.setenv("flowyml_SCHEDULER_REDIS_URL", "redis://localhost:6379/0")
        monkeypatch.setenv("flowyml_SCHEDULER_TIMEZONE", "Europe/Paris")
        scheduler = PipelineScheduler()
        try:
            c = scheduler.config
            assert (c.persist_schedules, c.db_path, c.distributed) == (True, str(in_tmp_dir / "env.db"), True)
            assert (c.redis_url, c.timezone, c.lock_backend) == (
                "redis://localhost:6379/0",
                "Europe/Paris",
                "file",
            )
            assert scheduler.schedule_daily("morning", run_report, hour=9).timezone == "Europe/Paris"
            assert scheduler.run_now("morning", wait=True)["status"] == "succeeded"
        finally:
            scheduler.close()
        assert (in_tmp_dir / "env.db").exists()


class TestApiReference:
    """The reference's positional signatures: ``schedule_daily(name, func, hour, minute, timezone)``..."""

    def test_the_schedule_methods_take_their_arguments_in_the_reference_s_order(
        self, scheduler: PipelineScheduler
    ) -> None:
        assert (
            scheduler.schedule_cron("c", run_report, "0 9 * * 1-5", "Europe/London").timezone
            == "Europe/London"
        )
        d = scheduler.schedule_daily("d", run_report, 9, 30, "Asia/Tokyo")
        assert (d.schedule_value, d.timezone) == ("09:30", "Asia/Tokyo")
        h = scheduler.schedule_hourly("h", run_report, 15, "Europe/Paris")
        assert (h.schedule_value, h.timezone) == ("15", "Europe/Paris")
        i = scheduler.schedule_interval("i", run_report, 1, 30, 15, "UTC")
        assert i.schedule_value == str(3600 + 1800 + 15)

    def test_the_public_names_import_from_the_package(self) -> None:
        import flowyml_lite

        for name in ("Pipeline", "PipelineScheduler", "SchedulerConfig", "step"):
            assert hasattr(flowyml_lite, name)
        assert flowyml_lite.SchedulerConfig is SchedulerConfig
