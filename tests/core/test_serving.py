"""Who serves a schedule, as the store records it: a worker that dies leaves its declarations to
the peers that serve the same schedules, so the fleet view does not call them orphaned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from flowyml_lite import PipelineScheduler
from flowyml_lite.api.overview import problems

ROOT = Path(__file__).resolve().parents[2]
APP = """
import sys, time
from flowyml_lite import PipelineScheduler, SchedulerConfig

def nightly():
    return None

def build(db):
    scheduler = PipelineScheduler(SchedulerConfig(db_path=db, heartbeat_seconds=0.5, node_timeout_seconds=3))
    for i in range(3):
        scheduler.schedule_daily(f"nightly-{i}", nightly, hour=3)
    return scheduler

if __name__ == "__main__":
    worker = build(sys.argv[1])
    worker.start()
    print(worker.node_id, flush=True)
    time.sleep(60)
"""


def declared_by(scheduler: PipelineScheduler) -> set:
    return {record.declared_by for record in scheduler.store.list_schedules()}


class TestAWorkerThatDies:
    def test_leaves_its_declarations_to_a_live_peer_and_no_schedule_is_orphaned(self, tmp_path: Path) -> None:
        (tmp_path / "app.py").write_text(textwrap.dedent(APP))
        sys.path.insert(0, str(tmp_path))
        try:
            import app  # type: ignore[import-not-found]
        finally:
            sys.path.remove(str(tmp_path))
        db = str(tmp_path / "s.db")
        survivor = app.build(db)
        survivor.start()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        child = subprocess.Popen(
            [sys.executable, str(tmp_path / "app.py"), db], stdout=subprocess.PIPE, text=True, env=env
        )
        try:
            assert child.stdout is not None
            dying = child.stdout.readline().strip()
            assert dying and declared_by(survivor) == {dying}  # the last to start declared them
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
            deadline = time.monotonic() + 15
            while declared_by(survivor) != {survivor.node_id} and time.monotonic() < deadline:
                time.sleep(0.1)
            assert declared_by(survivor) == {survivor.node_id}
            assert problems(survivor)["orphaned"] == []
        finally:
            if child.poll() is None:
                child.kill()
            survivor.stop(timeout=5)
            sys.modules.pop("app", None)
