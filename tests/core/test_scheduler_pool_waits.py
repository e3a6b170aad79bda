"""A run that waits for a free run thread has not started: its timeout, its recorded start and
duration, and its start lag count from when its function starts, and health says why fires
started late when every thread was busy."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Iterator

import pytest

from flowyml_lite import PipelineScheduler, SchedulerConfig


@pytest.fixture
def one_thread() -> Iterator[PipelineScheduler]:
    scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False, max_concurrent_runs=1))
    yield scheduler
    scheduler.stop(timeout=5)


def soon(seconds: float = 0.5) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


def ended(scheduler: PipelineScheduler, *names: str) -> bool:
    """Wait until every schedule of ``names`` has a run in a final status (a safety net of 60 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        entries = [scheduler.get_history(name) for name in names]
        if all(e and e[0]["status"] not in ("running", "queued") for e in entries):
            return scheduler.wait_for_runs(60)
        time.sleep(0.05)
    return False


class TestARunWaitingForAThread:
    def test_its_timeout_counts_from_its_start_not_from_its_claim(
        self, one_thread: PipelineScheduler
    ) -> None:
        at = soon()
        one_thread.schedule_once("first", lambda: time.sleep(1.0), at=at)
        # Waits ~1 s for the only thread, then runs 0.8 s: within its 1.5 s from its start.
        one_thread.schedule_once("second", lambda: time.sleep(0.8), at=at, timeout_seconds=1.5)
        one_thread.start()
        assert ended(one_thread, "first", "second")
        [first] = one_thread.get_history("first")
        [second] = one_thread.get_history("second")
        assert second["status"] == "succeeded", second
        assert parse(second["started_at"]) >= parse(first["completed_at"]) - timedelta(milliseconds=50)
        assert second["duration_seconds"] < 1.4  # its own run time, not its wait

    def test_it_still_times_out_once_running_past_its_timeout(self, one_thread: PipelineScheduler) -> None:
        at = soon()
        one_thread.schedule_once("first", lambda: time.sleep(0.5), at=at)
        one_thread.schedule_once("second", lambda: time.sleep(30), at=at, timeout_seconds=0.5)
        one_thread.start()
        assert ended(one_thread, "first", "second")
        [second] = one_thread.get_history("second")
        assert second["status"] == "timed_out"

    def test_health_says_fires_start_late_because_every_thread_is_busy(
        self, one_thread: PipelineScheduler
    ) -> None:
        at = soon()
        one_thread.schedule_once("long", lambda: time.sleep(1.5), at=at)
        for i in range(5):
            one_thread.schedule_once(f"short{i}", lambda: None, at=at)
        one_thread.start()
        assert ended(one_thread, "long", *(f"short{i}" for i in range(5)))
        health = one_thread.health_check()
        assert health["status"] == "degraded"
        [late] = [p for p in health["problems"] if p["source"] == "late"]
        assert "5 of 6 fire(s)" in late["message"] and "for a free worker" in late["message"]

    def test_its_history_and_the_dashboard_say_queued_until_it_starts(
        self, one_thread: PipelineScheduler
    ) -> None:
        from flowyml_lite.api.overview import overview

        gate = threading.Event()
        at = soon()
        one_thread.schedule_once("first", gate.wait, at=at)
        one_thread.schedule_once("second", lambda: None, at=at)
        one_thread.start()
        deadline = time.monotonic() + 30

        def one_running() -> bool:
            seen = [one_thread.get_history(n) for n in ("first", "second")]
            return all(seen) and any(entries[0]["status"] == "running" for entries in seen)

        while not one_running() and time.monotonic() < deadline:
            time.sleep(0.02)
        entries = {n: one_thread.get_history(n)[0] for n in ("first", "second")}
        waiting = next(e for e in entries.values() if e["status"] == "queued")  # which one is the thread's
        running = next(e for e in entries.values() if e is not waiting)
        assert running["status"] == "running" and running["started_at"] is not None
        assert waiting["started_at"] is None and "waiting for a free worker" in waiting["reason"]
        shown = {s["name"]: s["runs"][0]["status"] for s in overview(one_thread)["schedules"]}
        assert shown[waiting["schedule_name"]] == "queued"
        gate.set()
        assert ended(one_thread, "first", "second")
        for name in ("first", "second"):
            [entry] = one_thread.get_history(name)
            assert entry["status"] == "succeeded" and entry["reason"] is None
            assert entry["started_at"] is not None
