"""A burst across real processes: 5,000 one-offs due at one instant, three schedulers, one SQLite file.

Each of three worker processes declares the same 5,000 ``schedule_once`` schedules for the same
instant and starts its loop; the instant is chosen once all three have booted, far enough ahead
for them to declare and see each other. Every job appends ``"<name> <pid>"`` to one shared log (one
``O_APPEND`` write per line). What must hold: every name is in the log exactly once, and the store
agrees: one succeeded run per schedule, at that instant, by the process that logged it, and no
schedule left to fire. The nodes split the fires by rendezvous hashing among live peers, so with
all three started in time each runs a share.

Run alone: ``python -m pytest tests/integration/test_burst_processes.py -q -s`` (``-s`` prints the shares).
"""

from __future__ import annotations

import collections
import math
import pathlib
import time
from datetime import datetime, timezone
from typing import Any, Dict, List, Tuple

import pytest

from flowyml_lite import PipelineScheduler, SchedulerConfig
from tests.integration.workers.joblog import Worker, read_json, wait_for, write_json

WORKERS = 3
SCHEDULES = 5_000
# From the boot barrier to the fire instant: declaring 5,000 schedules takes each worker about
# 1.5 s on an idle 2-core machine (the first writes the rows, the others find them), and a
# started node learns of its peers at its next heartbeat (every 1 s).
DECLARE_MARGIN_SECONDS = 8
# A worker ready this long before the instant has seen (and been seen by) the others: 3 heartbeats.
PEERS_KNOWN_SECONDS = 3.0


def _names() -> List[str]:
    return [f"burst-{i:04d}" for i in range(SCHEDULES)]  # as burst_worker.py names them


def _read_log(path: pathlib.Path) -> List[Tuple[str, int]]:
    """Every complete ``name pid`` line of the log (a missing file is an empty log)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    out = []
    for raw in text.splitlines(keepends=True):
        if raw.endswith("\n"):  # else a line being written right now
            name, pid = raw.split()
            out.append((name, int(pid)))
    return out


def _sample(items: Any, n: int = 10) -> str:
    items = sorted(items)
    return f"{len(items)}: {items[:n]}{' ...' if len(items) > n else ''}"


def _stored(db: pathlib.Path, names: List[str]) -> Dict[str, Any]:
    """What the file holds, read through a fresh scheduler that is never started (so it reaps nothing)."""
    reader = PipelineScheduler(SchedulerConfig(db_path=str(db)))
    try:
        return {
            "stats": reader.store.stats(),
            "history": {name: reader.get_history(name, limit=10) for name in names},
            "schedules": {s.pipeline_name: s for s in reader.list_schedules(include_orphans=True)},
        }
    finally:
        reader.close()


@pytest.mark.slow
class TestBurstAcrossProcesses:
    """Three processes, 5,000 one-offs due at the same instant, one SQLite file."""

    def test_every_fire_of_the_burst_ran_exactly_once_in_one_of_the_processes(
        self, tmp_path: pathlib.Path
    ) -> None:
        db, log, go, stop = tmp_path / "shared.db", tmp_path / "runs.log", tmp_path / "go", tmp_path / "stop"
        names = _names()
        workers: List[Worker] = []
        started = time.monotonic()
        try:
            for i in range(WORKERS):
                args = [
                    str(db),
                    str(log),
                    str(tmp_path / f"booted{i}"),
                    str(go),
                    str(tmp_path / f"ready{i}"),
                    str(stop),
                    str(tmp_path / f"result{i}"),
                    str(SCHEDULES),
                ]
                workers.append(Worker(f"w{i}", "burst_worker.py", args, tmp_path))
            wait_for(
                lambda: all((tmp_path / f"booted{i}").exists() for i in range(WORKERS)),
                60,
                "every worker to boot",
                workers,
            )
            fire_ts = math.ceil(time.time() + DECLARE_MARGIN_SECONDS)
            at = datetime.fromtimestamp(fire_ts, timezone.utc)
            write_json(str(go), {"at": at.isoformat()})
            wait_for(
                lambda: all((tmp_path / f"ready{i}").exists() for i in range(WORKERS)),
                120,
                "every worker to declare the schedules and start",
                workers,
            )
            wait_for(
                lambda: len(_read_log(log)) >= SCHEDULES,
                max(fire_ts - time.time(), 0) + 120,
                f"{SCHEDULES} log lines",
                workers,
            )
            stop.touch()
            codes = [w.wait_exit(60) for w in workers]
        finally:
            for w in workers:
                w.kill()
        assert codes == [0] * WORKERS, [w.stderr_text() for w in workers]
        ready = [read_json(tmp_path / f"ready{i}") for i in range(WORKERS)]
        results = [read_json(tmp_path / f"result{i}") for i in range(WORKERS)]
        assert all(r["drained"] and r["stopped_by_test"] for r in results), results
        node_pid = {r["node_id"]: r["pid"] for r in ready}
        assert sorted(node_pid.values()) == sorted(w.pid for w in workers)

        lines = _read_log(log)
        per_pid = collections.Counter(pid for _, pid in lines)
        shares = {f"w{i} (pid {w.pid})": per_pid[w.pid] for i, w in enumerate(workers)}
        lead = {f"w{i}": round(fire_ts - r["ready_at"], 1) for i, r in enumerate(ready)}
        declared = {f"w{i}": round(r["declare_seconds"], 2) for i, r in enumerate(ready)}
        report = f"shares {shares}; ready s before the instant {lead}; declaring took s {declared}"
        print(
            f"\nburst: {len(lines)} log lines for {SCHEDULES} one-offs in {WORKERS} processes; {report}; "
            f"{time.monotonic() - started:.1f}s in all"
        )

        # The log alone: every name ran exactly once, and only the test's workers ran anything.
        counts = collections.Counter(name for name, _ in lines)
        assert {n: c for n, c in counts.items() if c > 1} == {}, f"names run more than once; {report}"
        assert set(names) - set(counts) == set(), f"never ran {_sample(set(names) - set(counts))}; {report}"
        assert set(counts) - set(names) == set(), f"unknown names {_sample(set(counts) - set(names))}"
        assert set(per_pid) <= set(node_pid.values()), f"a process the test did not start ran jobs: {per_pid}"

        # The store agrees: one succeeded run per schedule, for the instant, by the process that logged it.
        stored = _stored(db, names)
        stats = stored["stats"]
        assert (stats.total, stats.succeeded) == (SCHEDULES, SCHEDULES), stats
        ran_by = dict(lines)
        wrong = {}
        for name, history in stored["history"].items():
            entries = [
                (e["status"], datetime.fromisoformat(e["fire_time"]), node_pid.get(e["node"]))
                for e in history
            ]
            if entries != [("succeeded", at, ran_by[name])]:
                wrong[name] = entries
        assert wrong == {}, (
            f"histories that are not one succeeded run by the logging process {_sample(wrong.items(), 3)}"
        )
        # And nothing is left to fire: each one-off ran at its instant and has no next run.
        schedules = stored["schedules"]
        assert set(schedules) == set(names)
        pending = [n for n, s in schedules.items() if s.next_run is not None or s.last_run != at]
        assert pending == [], f"one-offs not marked as run at {at}: {_sample(pending)}"

        # The split: three live peers each run a share, when all were up and heartbeating in time.
        if all(fire_ts - r["ready_at"] >= PEERS_KNOWN_SECONDS for r in ready):
            assert all(per_pid[w.pid] > 0 for w in workers), f"a process ran no fire; {report}"
