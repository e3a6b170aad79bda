"""The fire gate: the scheduler's loop has the interpreter to itself around a fire; the API waits a little."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, List, Optional

import pytest

from flowyml_lite import PipelineScheduler, SchedulerConfig
from flowyml_lite.api.server import ApiServer
from flowyml_lite.runtime.gate import GATE, FireGate
from tests.waiting import until


def test_an_open_gate_lets_background_work_through_at_once() -> None:
    gate = FireGate()
    t0 = time.monotonic()
    gate.pass_through(limit=5.0)
    assert time.monotonic() - t0 < 1.0
    assert not gate.closed


def test_a_closed_gate_holds_background_work_until_it_opens() -> None:
    gate = FireGate()
    gate.close()
    passed = threading.Event()

    def work() -> None:
        gate.pass_through(limit=30.0)
        passed.set()

    worker = threading.Thread(target=work)
    worker.start()
    assert not passed.wait(0.03), "went through a closed gate"
    gate.open()
    assert passed.wait(10), "still held after the gate opened"
    worker.join()


def test_a_gate_closed_by_two_loops_opens_when_both_have_opened_it() -> None:
    gate = FireGate()
    gate.close()
    gate.close()
    gate.open()
    assert gate.closed
    gate.open()
    assert not gate.closed
    gate.open()  # one open too many never makes the count negative
    gate.close()
    assert gate.closed


def test_a_gate_left_closed_holds_background_work_only_for_its_limit() -> None:
    gate = FireGate()
    gate.close()
    t0 = time.monotonic()
    gate.pass_through(limit=0.1)
    assert time.monotonic() - t0 < 5.0


def test_the_loop_closes_the_gate_for_its_fires_and_leaves_it_open_when_stopped() -> None:
    sched = PipelineScheduler(SchedulerConfig(persist_schedules=False))
    seen: List[bool] = []
    at = datetime.now(timezone.utc) + timedelta(seconds=0.6)
    for i in range(3):
        sched.schedule_once(f"once-{i}", lambda: None, at=at + timedelta(seconds=0.3 * i))
    process = sched._loop._process

    def watched(*args: Any) -> None:
        seen.append(GATE.closed)
        process(*args)

    sched._loop._process = watched
    sched.start()
    try:
        until(lambda: len(seen) >= 3, 30, every=0.05)
    finally:
        sched.stop()
    assert len(seen) >= 3, f"the loop processed {len(seen)} wakes"
    assert any(seen), "the gate was open at every fire"
    assert not GATE.closed, "a stopped scheduler left the gate closed"


def test_the_api_still_answers_while_the_gate_is_closed() -> None:
    sched = PipelineScheduler(SchedulerConfig(persist_schedules=False))
    GATE.close()
    try:
        with ApiServer(sched, port=0) as server:
            import urllib.request

            with urllib.request.urlopen(f"{server.url}/api/schedules", timeout=10) as response:
                assert response.status == 200
    finally:
        GATE.open()
        sched.close()


def test_a_gate_that_stays_closed_stops_holding_anyone() -> None:
    gate = FireGate()
    gate.close()  # fires closer together than the lead keep it closed
    time.sleep(0.15)
    t0 = time.monotonic()
    gate.pass_through(limit=30.0)
    assert time.monotonic() - t0 < 1.0, "a gate closed for good held a handler"


def test_a_loop_with_a_short_heartbeat_and_no_fire_due_leaves_the_gate_open() -> None:
    sched = PipelineScheduler(SchedulerConfig(persist_schedules=False, heartbeat_seconds=0.02))
    sched.schedule_interval("hourly", lambda: None, hours=1)
    sched.start()
    try:
        samples = []
        for _ in range(50):
            samples.append(GATE.closed)
            time.sleep(0.01)
    finally:
        sched.stop()
    assert samples.count(True) < 10, f"closed in {samples.count(True)} of 50 samples"


@pytest.mark.parametrize("heartbeat", [0.02, 0.05])
def test_a_loop_with_a_heartbeat_shorter_than_the_lead_sleeps_between_wakes(heartbeat: float) -> None:
    sched = PipelineScheduler(SchedulerConfig(persist_schedules=False, heartbeat_seconds=heartbeat))
    sched.schedule_interval("hourly", lambda: None, hours=1)
    sched.start()
    try:
        time.sleep(0.1)
        cpu = time.process_time()
        time.sleep(0.5)
        used = time.process_time() - cpu
    finally:
        sched.stop()
    assert used < 0.25, f"the idle scheduler used {used:.2f} s of CPU in 0.5 s: its loop spins"


def test_housekeeping_waits_at_a_closed_gate_before_its_store_work(monkeypatch: Any) -> None:
    from flowyml_lite.runtime import housekeeping

    gate = FireGate()
    monkeypatch.setattr(housekeeping, "GATE", gate)
    monkeypatch.setattr(housekeeping, "MAINTENANCE_SECONDS", 0.01)
    sched = PipelineScheduler(SchedulerConfig(persist_schedules=False))
    maintained: List[float] = []
    real = sched.store.maintain

    def maintain(quiet: Any = None) -> None:
        maintained.append(time.monotonic())
        real(quiet)

    monkeypatch.setattr(sched.store, "maintain", maintain)
    gate.close()  # as if a fire were due: the housekeeping's store work waits (0.1 s at most)
    started = time.monotonic()
    sched.start()
    try:
        assert until(lambda: maintained, 10), "housekeeping never ran"
        assert maintained[0] - started >= 0.08, "housekeeping wrote while a fire was due"
    finally:
        gate.open()
        sched.stop()


def test_the_loop_reads_the_clock_at_least_once_a_second_whatever_its_heartbeat() -> None:
    """A wall clock stepped forward (NTP, a resumed VM) makes a fire late by at most a second."""
    from flowyml_lite.clock import SystemClock
    from flowyml_lite.runtime.loop import MAX_SLEEP_SECONDS

    sleeps: List[float] = []

    class RecordingClock(SystemClock):
        def wait(self, condition: threading.Condition, timeout: Optional[float]) -> None:
            sleeps.append(float("inf") if timeout is None else timeout)
            super().wait(condition, timeout)

    sched = PipelineScheduler(
        SchedulerConfig(persist_schedules=False, heartbeat_seconds=30, node_timeout_seconds=120),
        clock=RecordingClock(),
    )
    sched.schedule_interval("hourly", lambda: None, hours=1)
    sched.start()
    try:
        time.sleep(0.3)
    finally:
        sched.stop()
    assert sleeps, "the loop never slept"
    assert max(sleeps) <= MAX_SLEEP_SECONDS == 1.0
