"""A scheduler process for the kill/restart test, on a SQLite file that outlives it.

Usage: kill_worker.py DB LOG READY STOP RESULT JOB_SECONDS [--disable-paused] [MAX_SECONDS]

Declares two schedules the same way on every start: ``slow`` (every second; its job logs ``start``,
sleeps JOB_SECONDS, logs ``end``) and ``paused`` (every second; its job logs ``run``). With
``--disable-paused`` it disables ``paused`` through the API before starting. It writes READY (pid,
node id, the ``enabled`` flag each declaration returned) once the loop runs, then runs until STOP
appears and writes RESULT (the schedules and histories it sees). The test SIGKILLs the first one
mid-run and starts a second one without ``--disable-paused``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import List

import joblog

from flowyml_lite import PipelineScheduler, SchedulerConfig


def main(argv: List[str]) -> int:
    db, log, ready, stop, result, job_seconds = argv[:6]
    disable_paused = "--disable-paused" in argv[6:]
    rest = [a for a in argv[6:] if a != "--disable-paused"]
    max_seconds = float(rest[0]) if rest else 120.0
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
    )
    scheduler = PipelineScheduler(
        SchedulerConfig(db_path=db, heartbeat_seconds=1.0, node_timeout_seconds=10.0)
    )

    def slow() -> None:
        joblog.append_line(log, "slow", "start", joblog.fire_seen(scheduler, "slow"))
        time.sleep(float(job_seconds))
        joblog.append_line(log, "slow", "end", joblog.fire_seen(scheduler, "slow"))

    def paused() -> None:
        joblog.append_line(log, "paused", "run", joblog.fire_seen(scheduler, "paused"))

    declared = {
        "slow": scheduler.schedule_interval("slow", slow, seconds=1).enabled,
        "paused": scheduler.schedule_interval("paused", paused, seconds=1).enabled,
    }
    if disable_paused:
        scheduler.disable("paused")
    scheduler.start()
    joblog.write_json(ready, {"pid": os.getpid(), "node_id": scheduler.node_id, "declared_enabled": declared})
    stopped_by_test = joblog.wait_for_file(stop, max_seconds)
    drained = scheduler.stop(timeout=20)
    schedules = {
        s.pipeline_name: {"enabled": s.enabled, "next_run": s.next_run.isoformat() if s.next_run else None}
        for s in scheduler.list_schedules()
    }
    histories = {name: scheduler.get_history(name, limit=100_000) for name in ("slow", "paused")}
    joblog.write_json(
        result,
        {
            "pid": os.getpid(),
            "node_id": scheduler.node_id,
            "drained": drained,
            "stopped_by_test": stopped_by_test,
            "schedules": schedules,
            "history": histories,
        },
    )
    scheduler.close()
    return 0 if drained and stopped_by_test else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
