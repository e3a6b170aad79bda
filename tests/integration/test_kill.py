"""Durable: a scheduler process killed with SIGKILL mid-run, and a new one started on the same file.

The first worker runs ``slow`` (every second, its job sleeps 30 s) and has disabled ``paused``; the
test kills it once the job's log shows the run started and two later fires were skipped for overlap
(the 30 s job of a 1 s schedule is never started twice at once). What must hold: the file is intact,
the claim and the disabled flag survived, the new process records the killed run as ``lost`` (naming
the dead node) without running that fire again, the schedule goes on, and ``paused`` stays disabled
although the new process declares it again.

Run alone: ``python -m pytest tests/integration/test_kill.py -q -s``.
"""

from __future__ import annotations

import collections
import pathlib
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from typing import Any, Dict, List

import pytest

from flowyml_lite import PipelineScheduler, SchedulerConfig
from tests.integration.workers.joblog import LogLine, Worker, read_json, read_log, wait_for


def _integrity(db: pathlib.Path) -> List[Any]:
    conn = sqlite3.connect(str(db))
    try:
        return conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()


def _stored(db: pathlib.Path) -> Dict[str, Any]:
    """What the file holds, read through a fresh scheduler that is never started (so it reaps nothing)."""
    reader = PipelineScheduler(SchedulerConfig(db_path=str(db)))
    try:
        return {
            "history": reader.get_history("slow", limit=100_000),
            "paused_history": reader.get_history("paused", limit=100_000),
            "enabled": {s.pipeline_name: s.enabled for s in reader.list_schedules(include_orphans=True)},
        }
    finally:
        reader.close()


def _skipped(db: pathlib.Path) -> List[Dict[str, Any]]:
    return [e for e in _stored(db)["history"] if e["status"] == "skipped"]


def _fire(entry: Dict[str, Any]) -> float:
    return datetime.fromisoformat(entry["fire_time"]).timestamp()


def _starts(lines: List[LogLine], pid: int) -> List[LogLine]:
    return [line for line in lines if line.schedule == "slow" and line.event == "start" and line.pid == pid]


@pytest.mark.slow
class TestKillAndRestart:
    """kill -9 in the middle of a run, then a restart with the same declarations."""

    def test_the_killed_run_is_lost_not_rerun_and_the_schedules_keep_their_state(
        self, tmp_path: pathlib.Path
    ) -> None:
        db, log = tmp_path / "durable.db", tmp_path / "runs.log"

        def worker(name: str, job_seconds: str, *extra: str) -> Worker:
            args = [
                str(db),
                str(log),
                str(tmp_path / f"{name}.ready"),
                str(tmp_path / f"{name}.stop"),
                str(tmp_path / f"{name}.result"),
                job_seconds,
                *extra,
                "90",
            ]
            return Worker(name, "kill_worker.py", args, tmp_path)

        first = worker("first", "30", "--disable-paused")
        try:
            wait_for(lambda: (tmp_path / "first.ready").exists(), 60, "the first worker to start", [first])
            started = wait_for(
                lambda: _starts(read_log(log), first.pid), 30, "the slow run to start", [first]
            )
            # Let two more fires come due while the 30 s run lasts: they are skipped (overlap), not started.
            wait_for(lambda: len(_skipped(db)) >= 2, 30, "two fires skipped for overlap", [first])
        finally:
            first.kill()  # SIGKILL, then reaped: a zombie's pid would still look alive
        first_ready = read_json(tmp_path / "first.ready")
        assert first.popen.returncode == -9
        assert first_ready["declared_enabled"] == {"slow": True, "paused": True}
        (killed,) = started
        lost_fire = killed.fire_seen
        assert lost_fire is not None and lost_fire <= killed.wall_time

        # Right after the kill: the file is intact and holds the claim and the disabled flag.
        assert _integrity(db) == [("ok",)]
        after_kill = _stored(db)
        assert {_fire(e): e["status"] for e in after_kill["history"] if e["status"] == "running"} == {
            lost_fire: "running"
        }
        assert after_kill["enabled"] == {"slow": True, "paused": False}
        skipped = [e for e in after_kill["history"] if e["status"] == "skipped"]
        assert len(skipped) >= 2 and all(_fire(e) > lost_fire and e["reason"] == "overlap" for e in skipped)

        second = worker("second", "0.05")
        try:
            wait_for(
                lambda: (tmp_path / "second.ready").exists(), 60, "the restarted worker to start", [second]
            )
            wait_for(
                lambda: [line for line in read_log(log) if line.pid == second.pid and line.event == "end"],
                30,
                "a later fire to complete in the restarted worker",
                [second],
            )
            (tmp_path / "second.stop").touch()
            code = second.wait_exit(60)
        finally:
            second.kill()
        assert code == 0, second.stderr_text()
        second_ready = read_json(tmp_path / "second.ready")
        result = read_json(tmp_path / "second.result")

        lines = read_log(log)
        starts = [line for line in lines if line.schedule == "slow" and line.event == "start"]
        ends = [line for line in lines if line.schedule == "slow" and line.event == "end"]
        print(
            f"\nkill/restart: killed pid {first.pid} during fire {lost_fire}; restarted pid {second.pid} ran "
            f"{len(_starts(lines, second.pid))} fire(s); log starts={len(starts)} ends={len(ends)}"
        )

        # Nothing ran twice: each fire started at most once, the lost one never again, and never finished.
        fires_started = collections.Counter(line.fire_seen for line in starts)
        assert None not in fires_started
        assert [f for f, n in fires_started.items() if n > 1] == []
        assert [line.pid for line in starts if line.fire_seen == lost_fire] == [first.pid]
        assert [line for line in ends if line.fire_seen == lost_fire] == []
        assert all(
            line.fire_seen is not None and line.fire_seen > lost_fire for line in _starts(lines, second.pid)
        )

        # The store: the killed run is lost and names the dead node; the schedule went on.
        final = _stored(db)
        by_fire = {_fire(e): e for e in final["history"]}
        assert len(by_fire) == len(final["history"])
        lost = by_fire[lost_fire]
        assert lost["status"] == "lost" and lost["success"] is False
        assert first_ready["node_id"] in lost["reason"] and str(first.pid) in lost["reason"], lost
        succeeded = [e for e in final["history"] if e["status"] == "succeeded"]
        assert succeeded and all(
            _fire(e) > lost_fire and e["node"] == second_ready["node_id"] for e in succeeded
        )
        # Every run the store says was executed is in the log, started by the process the store names.
        executed = {_fire(e) for e in final["history"] if e["status"] in ("succeeded", "failed", "lost")}
        assert executed == set(fires_started)
        assert {_fire(e) for e in succeeded} == {line.fire_seen for line in ends}
        assert {e["status"] for e in final["history"]} == {"lost", "skipped", "succeeded"}
        assert {_fire(e) for e in skipped} <= {_fire(e) for e in final["history"] if e["status"] == "skipped"}

        # The disabled schedule stays disabled across the re-declaration, and never ran.
        assert second_ready["declared_enabled"] == {"slow": True, "paused": False}
        assert result["schedules"]["paused"]["enabled"] is False
        assert final["enabled"] == {"slow": True, "paused": False}
        assert [line for line in lines if line.schedule == "paused"] == []
        assert final["paused_history"] == []

        assert _integrity(db) == [("ok",)]


_UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]


def _can_unshare_pid_namespace() -> bool:
    try:
        return subprocess.run([*_UNSHARE, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.slow
@pytest.mark.skipif(
    not sys.platform.startswith("linux") or not _can_unshare_pid_namespace(),
    reason="needs Linux and the right to create a pid namespace (unshare --pid, root)",
)
class TestLostDetectionAcrossPidNamespaces:
    """Containers that share a hostname and the database file, each with its own pid namespace."""

    def test_a_live_node_in_another_pid_namespace_is_not_taken_for_dead(self, tmp_path: pathlib.Path) -> None:
        db, log = tmp_path / "shared.db", tmp_path / "runs.log"

        def worker(name: str, job_seconds: str, prefix: List[str]) -> Worker:
            args = [
                str(db),
                str(log),
                str(tmp_path / f"{name}.ready"),
                str(tmp_path / f"{name}.stop"),
                str(tmp_path / f"{name}.result"),
                job_seconds,
                "60",
            ]
            return Worker(name, "kill_worker.py", args, tmp_path, prefix)

        host = worker("host", "20", [])  # runs slow's first fire for 20 s, alive all along
        contained: List[Worker] = []
        try:
            wait_for(lambda: _starts(read_log(log), host.pid), 60, "the host worker's run to start", [host])
            contained.append(worker("contained", "0.05", _UNSHARE))
            wait_for(lambda: (tmp_path / "contained.ready").exists(), 60, "the contained worker", contained)
            # Three heartbeats (1 s each) of the contained node, while the host's run goes on.
            deadline = time.monotonic() + 3.5
            while time.monotonic() < deadline:
                time.sleep(0.05)
            (tmp_path / "contained.stop").touch()
            contained[0].wait_exit(60)
            lines = read_log(log)
            stored = _stored(db)
        finally:
            for w in [host, *contained]:
                w.kill()
        lost = [e for e in stored["history"] if e["status"] == "lost"]
        print(
            f"\npid namespaces: {len(lost)} run(s) of a live node marked lost; "
            f"{len(_starts(lines, host.pid))} slow run(s) started by the live host worker"
        )
        assert lost == []
        assert len([line for line in lines if line.schedule == "slow" and line.event == "start"]) == 1
