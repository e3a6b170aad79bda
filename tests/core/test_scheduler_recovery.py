"""Recovery from odd states, and what a running job can learn about its own run."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, List, Optional

import pytest

from flowyml_lite import RunContext, SchedulerConfig, current_run
from flowyml_lite.clock import FakeClock
from flowyml_lite.core.scheduler import PipelineScheduler
from flowyml_lite.stores.sqlite import SQLiteStore


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)


class TestClockSteppedBack:
    def test_enabling_behind_an_instant_that_already_ran_skips_past_it_instead_of_stalling(
        self, scheduler: PipelineScheduler, clock: FakeClock, drive: Any
    ) -> None:
        ran: List[datetime] = []
        scheduler.schedule_interval("tick", lambda: ran.append(clock.now()), seconds=1)
        for second in range(31, 36):
            drive.at(scheduler, utc(2024, 1, 1, 0, 0, second))
        assert len(ran) == 5
        scheduler.disable("tick")
        clock.set(utc(2024, 1, 1, 0, 0, 32, 500_000))  # the host's clock is stepped back 2.5 s
        scheduler.enable("tick")  # next fire 00:00:33, which already ran
        assert scheduler.get_schedule("tick").next_run == utc(2024, 1, 1, 0, 0, 33)
        drive.at(scheduler, utc(2024, 1, 1, 0, 0, 33))
        assert scheduler.get_schedule("tick").next_run == utc(2024, 1, 1, 0, 0, 34)  # moved past it
        for second in (34, 35, 36):
            drive.at(scheduler, utc(2024, 1, 1, 0, 0, second))
        # 00:00:33..35 had run before the step; only 00:00:36 is new. Nothing ran twice.
        fires = sorted(e["fire_time"] for e in scheduler.get_history("tick", limit=100))
        assert len(fires) == len(set(fires)) == 6
        assert len(ran) == 6


class TestCurrentRun:
    def test_a_job_learns_its_schedule_and_fire_instant(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        seen: List[Optional[RunContext]] = []
        scheduler.schedule_interval("etl", lambda: seen.append(current_run()), minutes=1)
        drive.at(scheduler, utc(2024, 1, 1, 0, 1, 0) + timedelta(milliseconds=40))
        (context,) = seen
        assert context is not None
        assert (context.schedule, context.fire_time, context.manual) == ("etl", utc(2024, 1, 1, 0, 1), False)
        assert context.run_key == scheduler.store.history("etl", 1)[0].run_key
        assert context.node_id == scheduler.node_id

    def test_outside_a_run_there_is_none(self) -> None:
        assert current_run() is None

    def test_a_manual_run_says_so(self, scheduler: PipelineScheduler) -> None:
        seen: List[Optional[RunContext]] = []
        scheduler.schedule_interval("etl", lambda: seen.append(current_run()), minutes=1)
        scheduler.run_now("etl", wait=True)
        assert seen[0] is not None and seen[0].manual


class TestExpiringLocks:
    def test_an_expiring_lease_is_renewed_while_the_run_lasts_and_not_after(self) -> None:
        import threading
        import time

        from flowyml_lite.locks.base import Lease
        from flowyml_lite.runtime.runner import keep_renewed as _keep_renewed

        class RecordingLease(Lease):
            key = "schedule:etl"

            def __init__(self) -> None:
                self.renewals = 0
                self.renewed = threading.Event()

            def release(self) -> None:
                pass

            def renew(self, ttl_seconds: float) -> bool:
                self.renewals += 1
                if self.renewals >= 3:
                    self.renewed.set()
                return True

        lease = RecordingLease()
        done = _keep_renewed(lease, ttl=0.15, name="etl")  # renews every 0.05 s
        assert lease.renewed.wait(5)
        done.set()
        time.sleep(0.2)
        count = lease.renewals
        time.sleep(0.2)
        assert lease.renewals == count


class TestChangesMadeElsewhere:
    def test_a_schedule_enabled_by_another_process_starts_firing_here(
        self, make_scheduler: Any, clock: FakeClock
    ) -> None:
        import time

        here = make_scheduler("sqlite", heartbeat_seconds=0.05, node_timeout_seconds=5)
        ran: List[datetime] = []
        here.schedule_interval("etl", lambda: ran.append(clock.now()), minutes=1)
        here.disable("etl")
        here.start()
        elsewhere = make_scheduler("sqlite")  # another process on the same file, e.g. the CLI
        elsewhere.enable("etl")
        clock.set(utc(2024, 1, 1, 0, 1, 0))
        deadline = time.monotonic() + 10
        while not ran and time.monotonic() < deadline:
            time.sleep(0.02)
            clock.advance(0)  # wake the loop in case it slept before the heartbeat adopted the change
        assert ran == [utc(2024, 1, 1, 0, 1, 0)]

    def test_a_schedule_redefined_by_another_process_fires_on_its_new_timetable_here(
        self, make_scheduler: Any, clock: FakeClock
    ) -> None:
        import time

        here = make_scheduler("sqlite", heartbeat_seconds=0.05, node_timeout_seconds=5)
        ran: List[datetime] = []
        here.schedule_interval("etl", lambda: ran.append(clock.now()), hours=1)
        here.start()
        elsewhere = make_scheduler("sqlite")  # a newer release of the app, deployed on another host
        elsewhere.schedule_interval("etl", lambda: None, minutes=10)
        deadline = time.monotonic() + 10
        while here._table.triggers["etl"].next_after(utc(2024, 1, 1)) != utc(2024, 1, 1, 0, 10):
            assert time.monotonic() < deadline, "the new definition was not adopted"
            time.sleep(0.02)
        elsewhere.stop()
        clock.set(utc(2024, 1, 1, 0, 10, 0))
        while not ran and time.monotonic() < deadline:
            time.sleep(0.02)
            clock.advance(0)
        assert ran == [utc(2024, 1, 1, 0, 10, 0)]


    def test_enabling_here_a_schedule_redefined_elsewhere_uses_its_new_timetable(
        self, make_scheduler: Any, clock: FakeClock
    ) -> None:
        here = make_scheduler("sqlite")
        here.schedule_interval("etl", lambda: None, hours=1)
        here.disable("etl")
        elsewhere = make_scheduler("sqlite")  # a newer release of the app, on another host
        elsewhere.schedule_interval("etl", lambda: None, minutes=10)
        here.enable("etl")  # before any sync here has seen the redefinition
        assert here._table.triggers["etl"].next_after(utc(2024, 1, 1)) == utc(2024, 1, 1, 0, 10)
        assert here.get_schedule("etl").next_run == utc(2024, 1, 1, 0, 10)


class TestHealthRecovers:
    def test_a_failed_heartbeat_degrades_health_until_the_next_one_succeeds(self) -> None:
        import time

        from flowyml_lite.errors import StoreError
        from flowyml_lite.stores.base import NodeRecord
        from flowyml_lite.stores.memory import MemoryStore

        class OneBadHeartbeat(MemoryStore):
            calls = 0

            def heartbeat(self, node: NodeRecord) -> None:
                OneBadHeartbeat.calls += 1
                if OneBadHeartbeat.calls == 2:
                    raise StoreError("disk I/O error")
                super().heartbeat(node)

        from flowyml_lite import SchedulerConfig

        scheduler = PipelineScheduler(
            SchedulerConfig(persist_schedules=False, heartbeat_seconds=0.2, node_timeout_seconds=5),
            store=OneBadHeartbeat(),
        )
        try:
            scheduler.start()
            deadline = time.monotonic() + 10
            while scheduler.health_check()["status"] != "degraded" and time.monotonic() < deadline:
                time.sleep(0.01)
            assert OneBadHeartbeat.calls == 2  # degraded by the failed heartbeat, not before
            assert scheduler.status() == "degraded"  # the cheap form that /api/health uses agrees
            assert "disk I/O error" in scheduler.health_check()["last_error"]
            while scheduler.health_check()["status"] != "running" and time.monotonic() < deadline:
                time.sleep(0.01)
            assert scheduler.health_check()["status"] == "running" == scheduler.status()
            assert OneBadHeartbeat.calls >= 3
        finally:
            scheduler.stop(timeout=5)
        assert scheduler.status() == "stopped"


class TestQuickRestart:
    def test_a_restart_shorter_than_the_grace_runs_the_latest_instant_and_refuses_none_for_overlap(
        self, tmp_path: Any
    ) -> None:
        """Real clock, SQLite: stopped 3.5 s with a 1 s schedule, the instants due meanwhile are not
        each attempted at once (each refused for overlap, health blaming the job), but caught up."""
        import time

        from flowyml_lite import SchedulerConfig

        config = SchedulerConfig(db_path=str(tmp_path / "s.db"), heartbeat_seconds=0.2)
        first = PipelineScheduler(config)
        first.schedule_interval("sync", lambda: None, seconds=1)
        first.start()
        time.sleep(1.5)
        first.stop()
        first.store.close()
        time.sleep(3.5)
        second = PipelineScheduler(config)
        second.schedule_interval("sync", lambda: None, seconds=1)
        second.start()
        try:
            time.sleep(1.5)
            assert second.wait_for_runs(5.0)
            history = second.get_history("sync", limit=100)
            reasons = [e["reason"] for e in history if e["status"] == "skipped"]
            assert reasons == []
            assert second.health_check()["problems"] == []
            superseded = [e for e in history if e["status"] == "missed"]
            assert superseded and all(e["reason"].startswith("superseded") for e in superseded)
        finally:
            second.stop()
            second.store.close()


class HangingStore(SQLiteStore):
    """A SQLite store whose claims and heartbeats hang while ``hang`` is set (a frozen disk)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.hang = threading.Event()
        self.thaw = threading.Event()
        self.removed: List[str] = []

    def remove_node(self, node_id: str) -> None:
        self.removed.append(node_id)
        super().remove_node(node_id)

    def claim_many(self, *args: Any, **kwargs: Any) -> Any:
        if self.hang.is_set():
            self.thaw.wait(60)
        return super().claim_many(*args, **kwargs)

    def heartbeat(self, *args: Any, **kwargs: Any) -> Any:
        if self.hang.is_set():
            self.thaw.wait(60)
        return super().heartbeat(*args, **kwargs)


class TestStopOnAHungStore:
    def test_stop_keeps_to_its_timeout_and_says_what_it_could_not_do(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        store = HangingStore(str(tmp_path / "frozen.db"))
        scheduler = PipelineScheduler(SchedulerConfig(heartbeat_seconds=1), store=store)
        scheduler.schedule_interval("tick", lambda: None, seconds=1)
        scheduler.start()
        try:
            time.sleep(1.5)
            store.hang.set()  # the loop's next claim hangs; so does stop()'s goodbye heartbeat
            time.sleep(1.5)
            result: List[bool] = []
            began = time.monotonic()
            stopping = threading.Thread(target=lambda: result.append(scheduler.stop(timeout=1)))
            stopping.start()
            stopping.join(30)  # the disk stays frozen for 60 s
            assert not stopping.is_alive() and result, "stop() waited for the frozen store"
            # 1 s, plus at most a second or so for each of the few steps that waited on the store.
            assert time.monotonic() - began < 10
            assert "the store did not answer" in caplog.text
            # Its goodbye heartbeat still waits: removing the row now would let that bring it back.
            assert store.removed == []
        finally:
            store.thaw.set()
            scheduler.close()


class TestStopWithoutThreads:
    def test_stop_finishes_its_work_when_no_thread_can_be_started(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A process at its pids limit: stop()'s bounded store calls are skipped with a warning, and
        the rest of stop() (the drain, the outcome writer, housekeeping) still runs."""
        ran = threading.Event()
        scheduler = PipelineScheduler(SchedulerConfig(db_path=str(tmp_path / "s.db"), heartbeat_seconds=1))
        scheduler.schedule_interval("tick", ran.set, seconds=1)
        scheduler.start()
        try:
            assert ran.wait(10)
            start = threading.Thread.start

            def no_thread(self: threading.Thread) -> None:
                if self.name == "flowyml_lite-stopping":
                    raise RuntimeError("can't start new thread")
                start(self)

            monkeypatch.setattr(threading.Thread, "start", no_thread)
            assert scheduler.stop(timeout=5) is True
            assert "no thread to do it on" in caplog.text
            assert [r.status for r in scheduler.store.active_runs()] == []
        finally:
            monkeypatch.undo()
            scheduler.close()
