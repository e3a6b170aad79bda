"""Exactly once across real processes: three schedulers share one SQLite file and one 1 s schedule.

The proof is the append-only log the job itself writes (one line per execution, one ``O_APPEND``
write each), not the store: between the first and the last fire every whole second was executed
exactly once (no duplicate, no gap). The store's history is then checked against the log. A control
run with the in-process memory store shows the same log check does catch duplicates.

Run alone: ``python -m pytest tests/integration/test_multiprocess.py -q -s`` (``-s`` prints the counts).
"""

from __future__ import annotations

import collections
import pathlib
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Dict, List

import pytest

from flowyml_lite import PipelineScheduler, SchedulerConfig
from tests.integration.workers.joblog import LogLine, Worker, read_json, read_log, wait_for

WORKERS = 3
WINDOW_SECONDS = 10  # the measured window: every worker runs the real loop at least this long


@dataclass
class Outcome:
    """What a run of several tick workers left behind."""

    lines: List[LogLine]
    ready: List[Dict[str, Any]]
    results: List[Dict[str, Any]]
    window_start: float


def _run_workers(tmp_path: pathlib.Path, count: int, window: float, *extra: str) -> Outcome:
    """Start ``count`` tick workers a little apart, wait until all run, measure ``window`` s, stop them."""
    log, stop = tmp_path / "runs.log", tmp_path / "stop"
    workers: List[Worker] = []
    try:
        for i in range(count):
            args = [
                str(tmp_path / "shared.db"),
                str(log),
                str(tmp_path / f"ready{i}"),
                str(stop),
                str(tmp_path / f"result{i}"),
                "--max-seconds",
                "90",
                *extra,
            ]
            workers.append(Worker(f"w{i}", "tick_worker.py", args, tmp_path))
            time.sleep(0.35)  # start them at slightly different moments
        # The barrier: every worker has declared the schedule and started its loop.
        wait_for(
            lambda: all((tmp_path / f"ready{i}").exists() for i in range(count)),
            60,
            "every worker to start its scheduler",
            workers,
        )
        window_start = time.time()
        wait_for(
            lambda: any(line.fire_second >= window_start + window for line in read_log(log)),
            window + 30,
            f"fires {window:.0f}s after the barrier",
            workers,
        )
        stop.touch()
        codes = [w.wait_exit(60) for w in workers]
    finally:
        for w in workers:
            w.kill()
    assert codes == [0] * count, [w.stderr_text() for w in workers]
    return Outcome(
        read_log(log),
        [read_json(tmp_path / f"ready{i}") for i in range(count)],
        [read_json(tmp_path / f"result{i}") for i in range(count)],
        window_start,
    )


def _duplicates(lines: List[LogLine]) -> Dict[int, int]:
    counts = collections.Counter(line.fire_second for line in lines)
    return {fire: n for fire, n in counts.items() if n > 1}


def _fire_second(entry: Dict[str, Any]) -> float:
    return datetime.fromisoformat(entry["fire_time"]).timestamp()


def _history_after_the_fact(db: pathlib.Path) -> List[Dict[str, Any]]:
    """The schedule's history read back through the public API of a fresh, never-started scheduler."""
    reader = PipelineScheduler(SchedulerConfig(db_path=str(db)))
    try:
        history: List[Dict[str, Any]] = reader.get_history("tick", limit=100_000)
        return history
    finally:
        reader.close()


def _assert_history_matches_log(
    history: List[Dict[str, Any]], logged: Dict[int, LogLine], node_pid: Dict[str, int]
) -> None:
    fire_times = [e["fire_time"] for e in history]
    assert len(fire_times) == len(set(fire_times)), "two history rows for one fire instant"
    for entry in history:
        fire = _fire_second(entry)
        assert fire.is_integer() and int(fire) in logged, f"history fire {entry} is not in the log"
        assert entry["status"] == "succeeded" and entry["success"] is True, entry
        assert entry["node"] in node_pid, f"a node the test did not start ran {entry}"
        assert node_pid[entry["node"]] == logged[int(fire)].pid, f"the log says another process ran {entry}"


@pytest.mark.slow
class TestExactlyOnceAcrossProcesses:
    """N processes, one schedule, one SQLite file: every fire instant runs once, in exactly one process."""

    def test_every_fire_between_the_first_and_the_last_ran_exactly_once(self, tmp_path: pathlib.Path) -> None:
        out = _run_workers(tmp_path, WORKERS, WINDOW_SECONDS)
        lines = out.lines
        assert lines and all(line.schedule == "tick" and line.event == "run" for line in lines)
        fires = [line.fire_second for line in lines]
        first, last = min(fires), max(fires)
        gaps = sorted(set(range(first, last + 1)) - set(fires))
        duplicates = _duplicates(lines)
        per_pid = collections.Counter(line.pid for line in lines)
        in_window = [f for f in fires if f >= out.window_start]
        print(
            f"\nexactly-once: {len(lines)} runs, fires {first}..{last} ({last - first + 1} instants), "
            f"{len(in_window)} after the barrier, duplicates={len(duplicates)}, gaps={len(gaps)}, "
            f"runs per pid={dict(per_pid)}, "
            f"max start lag={max(line.wall_time - line.fire_second for line in lines):.4f}s"
        )

        # The log alone: each whole second from the first fire to the last, executed exactly once.
        assert duplicates == {}
        assert gaps == []
        assert len(in_window) >= WINDOW_SECONDS
        # The log's fire (start rounded down) is the instant the scheduler says this run was for.
        assert [line for line in lines if line.fire_seen != line.fire_second] == []
        assert all(r["drained"] for r in out.results)

        # The store agrees with the log: one succeeded row per fire, run by the process that logged it.
        node_pid = {r["node_id"]: r["pid"] for r in out.ready}
        assert set(per_pid) <= set(node_pid.values())
        logged = {line.fire_second: line for line in lines}
        final = _history_after_the_fact(tmp_path / "shared.db")
        _assert_history_matches_log(final, logged, node_pid)
        assert {int(_fire_second(e)) for e in final} == set(logged)
        # Each process's own view (taken when it stopped) is part of that same history.
        for result in out.results:
            assert result["history"], f"worker {result['pid']} saw no history"
            # Its own runs are drained; another worker may still be recording one as it looks.
            still = [e for e in result["history"] if e["status"] == "running"]
            assert all(e["node"] != result["node_id"] for e in still), still
            seen = [e for e in result["history"] if e["status"] != "running"]
            _assert_history_matches_log(seen, logged, node_pid)

    def test_the_log_check_catches_duplicates_when_nothing_is_shared(self, tmp_path: pathlib.Path) -> None:
        # Control: with the memory store each process is alone, so both run every fire. This is the
        # documented limit of the memory store (one process only) and shows the check above can fail.
        out = _run_workers(tmp_path, 2, 3, "--memory")
        duplicates = _duplicates([line for line in out.lines if line.fire_second >= out.window_start])
        print(f"\nmemory-store control: {len(out.lines)} runs, {len(duplicates)} fire instants run twice")
        assert len(duplicates) >= 3
        assert not (tmp_path / "shared.db").exists()
