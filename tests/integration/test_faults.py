"""Real faults under a running scheduler: each ends with the schedule still firing, no run row left
active without a live owner, no fire run twice, and health saying ``degraded`` (and why) meanwhile.

Faults: a full file system under the database (a real tmpfs, as root), the database file deleted
under the process, ``kill -9`` then a restart within a second, and a manual run's process killed.
"""

from __future__ import annotations

import collections
import os
import pathlib
import shutil
import subprocess
import sys
import time
from typing import Any, Dict, Iterator, List

import pytest

from flowyml_lite import PipelineScheduler, SchedulerConfig
from tests.integration.workers.joblog import Worker, read_json, read_log, wait_for

FINAL = {"succeeded", "failed", "timed_out", "missed", "skipped", "lost"}


def entries(scheduler: PipelineScheduler, name: str) -> List[Dict[str, Any]]:
    return scheduler.get_history(name, limit=100_000)


def no_duplicate_fires(history: List[Dict[str, Any]]) -> None:
    counts = collections.Counter(e["fire_time"] for e in history)
    assert [fire for fire, n in counts.items() if n > 1] == []


def settled(scheduler: PipelineScheduler, name: str) -> bool:
    """Every row final except at most the newest (which may be running right now)."""
    history = entries(scheduler, name)
    return all(e["status"] in FINAL for e in history[1:])


@pytest.fixture
def tmpfs(tmp_path: pathlib.Path) -> Iterator[pathlib.Path]:
    """A 4 MB tmpfs mounted for the test (root only)."""
    if os.geteuid() != 0 or not sys.platform.startswith("linux"):
        pytest.skip("mounting a tmpfs needs root on Linux")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: pathlib.Path) -> pathlib.Path:
    """Write a file until the file system is full; return it."""
    filler = directory / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    return filler


@pytest.mark.slow
class TestFullDisk:
    def test_a_full_disk_degrades_health_and_the_schedule_resumes_when_space_returns(
        self, tmpfs: pathlib.Path
    ) -> None:
        config = SchedulerConfig(
            db_path=str(tmpfs / "jobs.db"), heartbeat_seconds=0.5, node_timeout_seconds=5
        )
        scheduler = PipelineScheduler(config)
        ran: List[float] = []
        scheduler.schedule_interval("tick", lambda: ran.append(time.time()), seconds=0.2)
        scheduler.start()
        try:
            wait_for(lambda: len(ran) >= 3, 20, "a few fires before the fault")
            filler = fill(tmpfs)
            try:
                wait_for(lambda: scheduler.status() == "degraded", 20, "health to say degraded")
                problems = " ".join(p["message"] for p in scheduler.problems())
                assert "full" in problems.lower() or "disk" in problems.lower(), problems
                time.sleep(1.0)
            finally:
                filler.unlink()
            count = len(ran)
            wait_for(lambda: scheduler.status() == "running", 30, "health to recover")
            wait_for(lambda: len(ran) >= count + 3, 20, "fires after the fault")
            wait_for(lambda: settled(scheduler, "tick"), 10, "every earlier run to reach a final status")
        finally:
            scheduler.stop(timeout=5)
        history = entries(scheduler, "tick")
        no_duplicate_fires(history)
        assert {e["status"] for e in history} <= FINAL
        scheduler.close()


@pytest.mark.slow
class TestDatabaseDeleted:
    def test_a_deleted_database_stops_claims_and_says_why(self, tmp_path: pathlib.Path) -> None:
        folder = tmp_path / "data"
        folder.mkdir()
        config = SchedulerConfig(db_path=str(folder / "jobs.db"), heartbeat_seconds=0.5)
        scheduler = PipelineScheduler(config)
        ran: List[float] = []
        scheduler.schedule_interval("tick", lambda: ran.append(time.time()), seconds=0.2)
        scheduler.start()
        try:
            wait_for(lambda: len(ran) >= 2, 20, "fires before the fault")
            shutil.rmtree(folder)
            wait_for(lambda: scheduler.status() == "degraded", 20, "health to say degraded")
            time.sleep(0.5)
            count = len(ran)
            time.sleep(1.5)
            assert len(ran) <= count + 1  # at most a run claimed just before: no claims on a ghost file
            problems = " ".join(p["message"] for p in scheduler.problems())
            assert "jobs.db" in problems and ("deleted" in problems or "replaced" in problems), problems
        finally:
            scheduler.stop(timeout=2)


def _worker(tmp_path: pathlib.Path, name: str, db: pathlib.Path, log: pathlib.Path, job: str) -> Worker:
    args = [
        str(db),
        str(log),
        str(tmp_path / f"{name}.ready"),
        str(tmp_path / f"{name}.stop"),
        str(tmp_path / f"{name}.result"),
        job,
        "60",
    ]
    return Worker(name, "kill_worker.py", args, tmp_path)


@pytest.mark.slow
class TestKillAndQuickRestart:
    def test_a_restart_within_a_second_of_kill_9_runs_the_next_fire_without_an_overlap_skip(
        self, tmp_path: pathlib.Path
    ) -> None:
        db, log = tmp_path / "jobs.db", tmp_path / "runs.log"
        first = _worker(tmp_path, "first", db, log, "30")
        try:
            wait_for(
                lambda: [x for x in read_log(log) if x.pid == first.pid and x.event == "start"],
                60,
                "the first worker's long run to start",
                [first],
            )
        finally:
            first.kill()
        killed_at = time.time()
        second = _worker(tmp_path, "second", db, log, "0.05")
        try:
            wait_for(
                lambda: [x for x in read_log(log) if x.pid == second.pid and x.event == "end"],
                30,
                "a fire to complete in the restarted worker",
                [second],
            )
            (tmp_path / "second.stop").touch()
            assert second.wait_exit(60) == 0, second.stderr_text()
        finally:
            second.kill()
        result = read_json(tmp_path / "second.result")
        history = result["history"]["slow"]
        no_duplicate_fires(history)
        assert {e["status"] for e in history} <= FINAL
        lost = [e for e in history if e["status"] == "lost"]
        assert len(lost) == 1 and str(first.pid) in lost[0]["reason"]
        ready = read_json(tmp_path / "second.ready")
        assert ready["pid"] == second.pid
        skipped_after = [e for e in history if e["status"] == "skipped" and e["node"] == result["node_id"]]
        assert skipped_after == [], (
            f"restarted {time.time() - killed_at:.1f}s after the kill: {skipped_after}"
        )


@pytest.mark.slow
class TestManualRunKilled:
    def test_a_manual_run_whose_process_dies_is_recorded_lost(self, tmp_path: pathlib.Path) -> None:
        db, log = tmp_path / "jobs.db", tmp_path / "runs.log"
        manual = Worker(
            "manual", "manual_worker.py", [str(db), str(log), str(tmp_path / "m.ready")], tmp_path
        )
        try:
            wait_for(lambda: read_log(log), 60, "the manual run to start", [manual])
        finally:
            manual.kill()
        node = read_json(tmp_path / "m.ready")["node_id"]
        watcher = PipelineScheduler(
            SchedulerConfig(db_path=str(db), heartbeat_seconds=0.5, node_timeout_seconds=5)
        )
        watcher.schedule_daily("report", lambda: None, hour=3)
        watcher.start()
        try:
            wait_for(
                lambda: [e for e in entries(watcher, "report") if e["status"] == "lost"],
                30,
                "the killed manual run to be recorded lost",
            )
        finally:
            watcher.stop(timeout=2)
        (run,) = entries(watcher, "report")
        assert run["status"] == "lost" and node in run["reason"]
        watcher.close()
