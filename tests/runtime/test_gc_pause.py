"""Automatic garbage collection is put off while a burst is claimed and started: only for a burst,
never past a second, only when it was on, shared by every loop of the process, never inherited
by a forked child."""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from typing import Iterator

import pytest

from flowyml_lite.runtime import gc_pause
from flowyml_lite.runtime.gc_pause import BURST_FIRES, GCPause


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    gc.enable()
    yield
    gc.enable()  # process-wide: leave the test process as it was


class TestAPause:
    def test_a_burst_puts_collection_off_until_it_is_released(self) -> None:
        pause = GCPause()
        pause.hold(BURST_FIRES)
        assert not gc.isenabled() and gc_pause.paused()
        assert "flowyml_lite-gc-pause" in [t.name for t in threading.enumerate()]  # its watchdog
        pause.release()
        assert gc.isenabled() and not gc_pause.paused()
        assert "flowyml_lite-gc-pause" not in [t.name for t in threading.enumerate()]  # gone with it

    def test_a_pass_of_a_few_fires_leaves_collection_alone(self) -> None:
        pause = GCPause()
        pause.hold(BURST_FIRES - 1)
        assert gc.isenabled()
        pause.release()
        assert gc.isenabled()

    def test_a_pause_that_is_off_does_nothing(self) -> None:
        pause = GCPause(enabled=False)
        pause.hold(10 * BURST_FIRES)
        assert gc.isenabled()

    def test_collection_turned_off_by_the_application_stays_off(self) -> None:
        gc.disable()
        pause = GCPause()
        pause.hold(BURST_FIRES)
        pause.release()
        assert not gc.isenabled()

    def test_holding_twice_is_one_hold(self) -> None:
        pause = GCPause()
        pause.hold(BURST_FIRES)
        pause.hold(BURST_FIRES)
        pause.release()
        assert gc.isenabled()

    def test_collection_resumes_when_the_last_of_several_loops_releases(self) -> None:
        first, second = GCPause(), GCPause()
        first.hold(BURST_FIRES)
        second.hold(BURST_FIRES)
        first.release()
        assert not gc.isenabled()
        second.release()
        assert gc.isenabled()

    def test_a_pause_ends_after_its_limit_even_while_held(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(gc_pause, "MAX_PAUSE_SECONDS", 0.05)
        pause = GCPause()
        pause.hold(BURST_FIRES)  # e.g. a claim stuck on its store: the loop never gets to release
        assert not gc.isenabled()
        deadline = time.monotonic() + 30
        while not gc.isenabled() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gc.isenabled() and not gc_pause.paused()
        pause.release()
        assert gc.isenabled()
        pause.hold(BURST_FIRES)  # the next burst pauses again
        assert not gc.isenabled()
        pause.release()
        assert gc.isenabled()

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
    def test_a_child_forked_during_a_pause_collects(self) -> None:
        pause = GCPause()
        pause.hold(BURST_FIRES)
        try:
            pid = os.fork()
            if pid == 0:  # the child: exit status 0 if its collector is on
                os._exit(0 if gc.isenabled() else 1)
            _, status = os.waitpid(pid, 0)
        finally:
            pause.release()
        assert os.WEXITSTATUS(status) == 0
        assert gc.isenabled()


@pytest.mark.skipif(sys.platform == "win32", reason="real-time loop on a POSIX machine")
class TestTheLoopPausesForABurst:
    def test_runs_of_a_burst_start_while_collection_is_off_and_it_is_on_after(self) -> None:
        from datetime import datetime, timedelta, timezone

        from flowyml_lite import PipelineScheduler, SchedulerConfig

        seen = []
        scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False))
        at = datetime.now(timezone.utc) + timedelta(seconds=1)
        for i in range(5 * BURST_FIRES):
            scheduler.schedule_once(f"b{i}", lambda: seen.append(gc.isenabled()), at=at)
        try:
            scheduler.start()
            assert scheduler.wait_for_runs(60)
            deadline = time.monotonic() + 30
            while len(seen) < 5 * BURST_FIRES and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(seen) == 5 * BURST_FIRES
            assert False in seen  # runs started during the pause
            deadline = time.monotonic() + 30  # the loop goes idle, and lets collection go on
            while not gc.isenabled() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert gc.isenabled()
        finally:
            scheduler.stop(timeout=5)

    def test_with_the_pause_off_collection_stays_on_throughout(self) -> None:
        from datetime import datetime, timedelta, timezone

        from flowyml_lite import PipelineScheduler, SchedulerConfig

        seen = []
        scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False, gc_pause_in_bursts=False))
        at = datetime.now(timezone.utc) + timedelta(seconds=1)
        for i in range(5 * BURST_FIRES):
            scheduler.schedule_once(f"b{i}", lambda: seen.append(gc.isenabled()), at=at)
        try:
            scheduler.start()
            assert scheduler.wait_for_runs(60)
            deadline = time.monotonic() + 30
            while len(seen) < 5 * BURST_FIRES and time.monotonic() < deadline:
                time.sleep(0.01)
            assert seen == [True] * (5 * BURST_FIRES)
        finally:
            scheduler.stop(timeout=5)

    def test_the_setting_is_read_from_the_environment(self) -> None:
        from flowyml_lite import SchedulerConfig

        assert SchedulerConfig().gc_pause_in_bursts is True
        env = {"FLOWYML_SCHEDULER_GC_PAUSE_IN_BURSTS": "false"}
        assert SchedulerConfig.from_env(env).gc_pause_in_bursts is False
