"""``gc_freeze``: an opt-in that moves the objects alive at ``start()`` out of the collector's reach."""

from __future__ import annotations

import gc
import threading
from typing import Iterator

import pytest

from flowyml_lite import PipelineScheduler, SchedulerConfig


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the freeze is process-wide: leave the test process as it was


class TestGcFreeze:
    def test_is_off_by_default_and_start_leaves_the_collector_alone(self) -> None:
        assert SchedulerConfig().gc_freeze is False
        scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False))
        scheduler.schedule_interval("tick", lambda: None, hours=1)
        try:
            scheduler.start()
            assert gc.get_freeze_count() == 0
        finally:
            scheduler.stop(timeout=5)

    def test_when_on_start_freezes_the_schedules_and_they_still_run(self) -> None:
        ran = threading.Event()
        scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False, gc_freeze=True))
        scheduler.schedule_interval("tick", ran.set, seconds=0.2)
        try:
            scheduler.start()
            assert gc.get_freeze_count() > 1000  # at least the scheduler's own objects and this test's
            assert ran.wait(10)
            assert scheduler.health_check()["status"] == "running"
        finally:
            scheduler.stop(timeout=5)

    def test_is_read_from_the_environment(self) -> None:
        assert SchedulerConfig.from_env({"FLOWYML_SCHEDULER_GC_FREEZE": "true"}).gc_freeze is True
        assert SchedulerConfig.from_env({"flowyml_SCHEDULER_GC_FREEZE": "off"}).gc_freeze is False
