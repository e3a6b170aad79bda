"""A program that ends while its scheduler runs is told its schedules end with it, and what to do;
one that stopped its scheduler, or never started one, ends quietly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from flowyml_lite import PipelineScheduler, SchedulerConfig
scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False))
scheduler.schedule_interval("report", lambda: None, minutes=5)
if "start" in sys.argv:
    scheduler.start()
if "stop" in sys.argv:
    scheduler.stop()
"""


def ending(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stderr


def test_a_script_that_falls_off_its_end_after_start_is_warned() -> None:
    err = ending("start")
    assert "the program is ending while the scheduler runs 1 schedule(s): they stop with it" in err
    assert "serve_forever()" in err


@pytest.mark.parametrize("args", [("start", "stop"), ()])
def test_a_stopped_or_never_started_scheduler_ends_quietly(args: tuple) -> None:  # type: ignore[type-arg]
    assert "the program is ending" not in ending(*args)
