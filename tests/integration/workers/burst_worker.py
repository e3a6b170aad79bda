"""A scheduler process for the burst test: many one-off schedules due at one instant, on a shared file.

Usage: burst_worker.py DB LOG BOOTED GO READY STOP RESULT COUNT

Opens the scheduler on DB, writes BOOTED and waits for GO, a JSON file whose ``at`` is the instant
(ISO 8601 with an offset) the test chose once every worker had booted. It then declares
``schedule_once("burst-NNNN", job, at=at)`` for COUNT names, starts the loop, writes READY (pid,
node id, declaration time) and runs until STOP appears; then it stops the scheduler, draining runs,
and writes RESULT. Each run appends ``"<name> <pid>\\n"`` to LOG with one ``os.write`` on an
``O_APPEND`` descriptor, so lines from the three processes never interleave.
"""

from __future__ import annotations

import logging
import os
import pathlib
import sys
import time
from datetime import datetime
from typing import Callable, List

import joblog

from flowyml_lite import PipelineScheduler, SchedulerConfig


def burst_name(index: int) -> str:
    """The name of the ``index``-th one-off (the test builds the same names)."""
    return f"burst-{index:04d}"


def main(argv: List[str]) -> int:
    db, log, booted, go, ready, stop, result, count = argv
    # INFO would log one line per declaration (15,000 in all): warnings and errors are what matter.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
    )
    scheduler = PipelineScheduler(
        SchedulerConfig(db_path=db, heartbeat_seconds=1.0, node_timeout_seconds=15.0)
    )
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pid = os.getpid()

    def job_for(name: str) -> Callable[[], None]:
        line = f"{name} {pid}\n".encode()

        def job() -> None:
            if os.write(fd, line) != len(line):
                raise OSError(f"short append to {log}")

        return job

    joblog.write_json(booted, {"pid": pid})
    if not joblog.wait_for_file(go, 120):
        return 2
    at = datetime.fromisoformat(joblog.read_json(pathlib.Path(go))["at"])
    began = time.monotonic()
    for i in range(int(count)):
        name = burst_name(i)
        scheduler.schedule_once(name, job_for(name), at=at)
    declare_seconds = time.monotonic() - began
    scheduler.start()
    joblog.write_json(
        ready,
        {
            "pid": pid,
            "node_id": scheduler.node_id,
            "declare_seconds": declare_seconds,
            "ready_at": time.time(),
        },
    )
    stopped_by_test = joblog.wait_for_file(stop, 150)
    drained = scheduler.stop(timeout=30)
    joblog.write_json(
        result,
        {"pid": pid, "node_id": scheduler.node_id, "drained": drained, "stopped_by_test": stopped_by_test},
    )
    scheduler.close()
    os.close(fd)
    return 0 if drained and stopped_by_test else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
