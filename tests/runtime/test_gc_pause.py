"""Automatic garbage collection is put off while a burst is claimed and started: only for a burst,
never past a second, never against the application's own settings, shared by every loop of the
process, not inherited by a forked child, and with no thread left once it is over. Declarations in
bulk defer only the full collections, until they stop or the scheduler starts."""

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
from tests.waiting import until

WATCHDOG = "flowyml_lite-gc-pause"


def collecting() -> bool:
    """Whether Python collects garbage automatically now."""
    return gc.isenabled() and gc.get_threshold()[0] > 0


def watchdog_alive() -> bool:
    return WATCHDOG in [t.name for t in threading.enumerate()]


@pytest.fixture(autouse=True)
def collector_as_it_was() -> Iterator[None]:
    thresholds = gc.get_threshold()
    gc.enable()
    yield
    gc_pause.end_deferral()
    gc_pause.forgive_owed()
    gc.enable()  # process-wide: leave the test process as it was
    gc.set_threshold(*thresholds)


class TestAPause:
    def test_a_burst_puts_collection_off_until_it_is_released(self) -> None:
        thresholds = gc.get_threshold()
        pause = GCPause()
        pause.hold(BURST_FIRES)
        assert not collecting() and gc_pause.paused() and watchdog_alive()
        pause.close()
        assert collecting() and not gc_pause.paused() and gc.get_threshold() == thresholds
        assert not watchdog_alive()  # no thread left behind

    def test_a_pass_of_a_few_fires_leaves_collection_alone(self) -> None:
        pause = GCPause()
        pause.hold(BURST_FIRES - 1)
        assert collecting() and not gc_pause.paused()
        pause.release()
        assert collecting()

    def test_a_pause_that_is_off_does_nothing(self) -> None:
        pause = GCPause(enabled=False)
        pause.hold(10 * BURST_FIRES)
        assert collecting()

    def test_collection_turned_off_before_the_burst_stays_off(self) -> None:
        gc.disable()
        pause = GCPause()
        pause.hold(BURST_FIRES)
        assert not gc_pause.paused()
        pause.close()
        assert not gc.isenabled()

    def test_collection_turned_off_by_a_job_during_the_burst_stays_off(self) -> None:
        pause = GCPause()
        pause.hold(BURST_FIRES)
        gc.disable()  # a job of the burst
        pause.close()
        assert not gc.isenabled()
        gc.enable()
        assert collecting()  # the thresholds are back

    def test_thresholds_the_application_sets_during_the_burst_are_kept(self) -> None:
        pause = GCPause()
        pause.hold(BURST_FIRES)
        gc.set_threshold(5000, 20, 20)
        pause.close()
        assert gc.get_threshold() == (5000, 20, 20)

    def test_an_explicit_collection_works_during_the_pause(self) -> None:
        class Cycle:
            pass

        pause = GCPause()
        pause.hold(BURST_FIRES)
        try:
            a, b = Cycle(), Cycle()
            a.other, b.other = b, a  # type: ignore[attr-defined]
            del a, b
            assert gc.collect() >= 2
        finally:
            pause.close()

    def test_holding_twice_is_one_hold(self) -> None:
        pause = GCPause()
        pause.hold(BURST_FIRES)
        pause.hold(BURST_FIRES)
        pause.close()
        assert collecting()

    def test_collection_resumes_when_the_last_of_several_loops_releases(self) -> None:
        first, second = GCPause(), GCPause()
        first.hold(BURST_FIRES)
        second.hold(BURST_FIRES)
        first.release()
        assert not collecting()
        second.close()
        assert collecting()

    def test_a_release_does_not_wait_for_the_watchdog_another_loop_needs(self) -> None:
        first, second = GCPause(), GCPause()
        first.hold(BURST_FIRES)
        first.release()
        second.hold(BURST_FIRES)  # the next burst, at once: the same watchdog watches it
        watchdog = gc_pause._watchdog
        assert watchdog is not None
        joined = []
        watchdog.join = lambda timeout=None: joined.append(timeout)  # type: ignore[method-assign]
        first.close()  # the first loop stops meanwhile: it must not wait for the second's watchdog
        del watchdog.join
        assert joined == [] and not collecting() and watchdog_alive()
        second.close()
        assert collecting()

    def test_a_pause_ends_after_its_limit_even_while_held(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(gc_pause, "MAX_PAUSE_SECONDS", 0.05)
        pause = GCPause()
        pause.hold(BURST_FIRES)  # e.g. a claim stuck on its store: the loop never gets to release
        assert not collecting()
        until(collecting, 30)
        assert collecting() and not gc_pause.paused()
        pause.release()
        assert collecting()
        pause.hold(BURST_FIRES)  # the next burst pauses again
        assert not collecting()
        pause.close()
        assert collecting()

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
    def test_a_child_forked_during_a_pause_collects(self) -> None:
        pause = GCPause()
        pause.hold(BURST_FIRES)
        try:
            pid = os.fork()
            if pid == 0:  # the child: exit status 0 if it collects
                os._exit(0 if collecting() else 1)
            _, status = os.waitpid(pid, 0)
        finally:
            pause.close()
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        assert collecting()


def full_collections_deferred() -> bool:
    return gc.get_threshold()[2] >= gc_pause._FAR


def settle() -> None:
    """Declarations end, and the full collection they put off is made."""
    gc_pause.end_deferral()
    assert gc_pause.collect_owed()


class TestDeclarationsInBulk:
    def test_full_collections_wait_and_the_young_generations_are_still_collected(self) -> None:
        thresholds = gc.get_threshold()
        gc_pause.defer_full_collections()
        assert full_collections_deferred() and gc_pause.deferring() and watchdog_alive()
        assert gc.get_threshold()[:2] == thresholds[:2] and collecting()
        gc_pause.end_deferral()
        assert not gc_pause.deferring() and gc_pause.owed() and full_collections_deferred()
        assert gc_pause.collect_owed()  # made at a quiet moment: then the collector goes on
        assert gc.get_threshold() == thresholds and not gc_pause.owed()
        assert not gc_pause.collect_owed()  # once

    def test_an_owed_collection_with_no_quiet_moment_is_left_to_the_collector(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(gc_pause, "MAX_OWED_SECONDS", 0.1)
        thresholds = gc.get_threshold()
        gc_pause.defer_full_collections()
        gc_pause.end_deferral()
        until(lambda: not gc_pause.owed(), 30)
        assert gc.get_threshold() == thresholds

    def test_the_deferral_ends_once_declarations_stop(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(gc_pause, "DEFER_IDLE_SECONDS", 0.05)
        thresholds = gc.get_threshold()
        monkeypatch.setattr(gc_pause, "MAX_OWED_SECONDS", 0.05)
        gc_pause.defer_full_collections()  # e.g. a script that declares and never starts
        deadline = time.monotonic() + 30
        while full_collections_deferred() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gc.get_threshold() == thresholds
        while watchdog_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not watchdog_alive()  # and the watchdog is gone

    def test_each_declaration_renews_it(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(gc_pause, "DEFER_IDLE_SECONDS", 0.3)
        ends = time.monotonic() + 1.0
        while time.monotonic() < ends:
            gc_pause.defer_full_collections()
            time.sleep(0.02)
            assert full_collections_deferred()  # never ended while declarations keep coming
        gc_pause.end_deferral()

    def test_with_collection_off_nothing_is_deferred(self) -> None:
        gc.disable()
        gc_pause.defer_full_collections()
        assert not gc_pause.deferring()

    def test_a_threshold_the_application_sets_meanwhile_is_kept(self) -> None:
        gc_pause.defer_full_collections()
        gc.set_threshold(5000, 20, 30)
        settle()
        assert gc.get_threshold() == (5000, 20, 30)

    def test_a_burst_pause_inside_a_deferral_restores_both(self) -> None:
        thresholds = gc.get_threshold()
        pause = GCPause()
        gc_pause.defer_full_collections()
        pause.hold(BURST_FIRES)
        settle()  # ends first: the pause's own threshold stays off
        assert not collecting() and not full_collections_deferred()
        pause.close()
        assert gc.get_threshold() == thresholds
        pause.hold(BURST_FIRES)
        gc_pause.defer_full_collections()
        pause.close()  # the other order
        assert collecting() and full_collections_deferred()
        settle()
        assert gc.get_threshold() == thresholds

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
    def test_a_child_forked_during_a_deferral_collects_as_before(self) -> None:
        thresholds = gc.get_threshold()
        gc_pause.defer_full_collections()
        try:
            pid = os.fork()
            if pid == 0:
                os._exit(0 if gc.get_threshold() == thresholds else 1)
            _, status = os.waitpid(pid, 0)
        finally:
            gc_pause.end_deferral()
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0

    @pytest.mark.parametrize("setting", [True, False])
    def test_a_scheduler_defers_while_declaring_in_bulk_and_start_ends_it(self, setting: bool) -> None:
        from flowyml_lite import PipelineScheduler, SchedulerConfig
        from flowyml_lite.runtime.sync import BULK_READ_AFTER

        thresholds = gc.get_threshold()
        scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False, gc_pause_in_bursts=setting))
        for i in range(BULK_READ_AFTER + 10):
            scheduler.schedule_interval(f"s{i}", lambda: None, hours=1)
        assert gc_pause.deferring() is setting
        try:
            scheduler.start()  # the full collection put off is made once no fire is due soon
            until(lambda: gc.get_threshold() == thresholds, 10)
            assert gc.get_threshold() == thresholds and not gc_pause.owed()
        finally:
            scheduler.stop(timeout=5)
        assert not watchdog_alive()

    def test_a_stop_while_declarations_defer_leaves_the_collector_as_it_was(self) -> None:
        from flowyml_lite import PipelineScheduler, SchedulerConfig
        from flowyml_lite.runtime.sync import BULK_READ_AFTER

        thresholds = gc.get_threshold()
        scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False))
        scheduler.start()
        for i in range(BULK_READ_AFTER + 10):  # declared while it runs, then stopped at once
            scheduler.schedule_interval(f"s{i}", lambda: None, hours=1)
        scheduler.stop(timeout=5)
        assert gc.get_threshold() == thresholds and not gc_pause.owed()
        assert until(lambda: not watchdog_alive(), 5)

    def test_the_collection_put_off_waits_while_a_fire_is_due_soon(self) -> None:
        from datetime import datetime, timedelta, timezone

        from flowyml_lite import PipelineScheduler, SchedulerConfig
        from flowyml_lite.runtime.sync import BULK_READ_AFTER

        scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False))
        for i in range(BULK_READ_AFTER + 10):
            scheduler.schedule_interval(f"s{i}", lambda: None, hours=1)
        first = datetime.now(timezone.utc) + timedelta(seconds=0.5)
        seen: list = []  # type: ignore[type-arg]
        for k in range(30):  # a fire every 0.1 s for 3 s: never a quiet moment
            at = first + timedelta(seconds=0.1 * k)
            scheduler.schedule_once(f"t{k}", lambda: seen.append(gc_pause.owed()), at=at)
        try:
            scheduler.start()
            deadline = time.monotonic() + 30
            while len(seen) < 30 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert seen == [True] * 30  # no full collection in the middle of them
            while gc_pause.owed() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert not gc_pause.owed()  # made once they were over
        finally:
            scheduler.stop(timeout=5)


@pytest.mark.skipif(sys.platform == "win32", reason="real-time loop on a POSIX machine")
class TestTheLoopPausesForABurst:
    def burst(self, **config: bool) -> list:  # type: ignore[type-arg]
        from datetime import datetime, timedelta, timezone

        from flowyml_lite import PipelineScheduler, SchedulerConfig

        seen = []
        scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False, **config))
        at = datetime.now(timezone.utc) + timedelta(seconds=1)
        for i in range(5 * BURST_FIRES):
            scheduler.schedule_once(f"b{i}", lambda: seen.append(collecting()), at=at)
        try:
            scheduler.start()
            until(lambda: len(seen) >= 5 * BURST_FIRES, 60)
            assert len(seen) == 5 * BURST_FIRES
            assert until(collecting, 30)  # the loop goes idle, and lets collection go on
        finally:
            scheduler.stop(timeout=5)
        assert not watchdog_alive()
        return seen

    def test_runs_of_a_burst_start_while_collection_is_off_and_it_is_on_after(self) -> None:
        assert False in self.burst()  # runs started during the pause

    def test_the_pause_lasts_while_runs_handed_over_wait_for_a_thread(self) -> None:
        from datetime import datetime, timedelta, timezone

        from flowyml_lite import PipelineScheduler, SchedulerConfig

        seen: list = []  # type: ignore[type-arg]  # (when the run started, collection on then)
        scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False, max_concurrent_runs=1))
        at = datetime.now(timezone.utc) + timedelta(seconds=1)

        def job() -> None:
            seen.append((time.monotonic(), collecting()))
            time.sleep(0.0005)  # one thread: the burst takes 0.2 s or more to start

        for i in range(2 * BURST_FIRES):
            scheduler.schedule_once(f"b{i}", job, at=at)
        try:
            scheduler.start()
            deadline = time.monotonic() + 60
            while len(seen) < 2 * BURST_FIRES and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            scheduler.stop(timeout=5)
        first = seen[0][0]
        # Well past the hand-over's tail (0.05 s) and short of the pause's own limit (1 s), the
        # runs still waiting for the one thread start with collection off.
        middle = [on for started, on in seen[:-5] if 0.1 < started - first < 0.6]
        assert len(middle) > 20 and not any(middle)

    def test_with_the_pause_off_collection_stays_on_throughout(self) -> None:
        assert set(self.burst(gc_pause_in_bursts=False)) == {True}

    def test_the_setting_is_read_from_the_environment(self) -> None:
        from flowyml_lite import SchedulerConfig

        assert SchedulerConfig().gc_pause_in_bursts is True
        env = {"FLOWYML_SCHEDULER_GC_PAUSE_IN_BURSTS": "false"}
        assert SchedulerConfig.from_env(env).gc_pause_in_bursts is False


def test_declarations_that_never_stop_defer_full_collections_for_a_while_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gc_pause, "MAX_DEFER_SECONDS", 0.3)
    monkeypatch.setattr(gc_pause, "DEFER_IDLE_SECONDS", 0.1)
    began = time.monotonic()
    seen = []
    while time.monotonic() - began < 1.5:  # a stream of declarations
        gc_pause.defer_full_collections()
        seen.append((time.monotonic() - began, full_collections_deferred()))
        time.sleep(0.01)
    gc_pause.end_deferral()
    assert any(deferred for _, deferred in seen)
    assert any(not deferred for at, deferred in seen if at > 0.3)  # collections had their turn

