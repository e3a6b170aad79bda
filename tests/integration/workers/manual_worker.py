"""A process that runs one schedule by hand (``run_now``) from a scheduler it never starts.

Usage: manual_worker.py DB LOG READY — declares ``report`` (daily; its job logs ``start`` and
sleeps 60 s), writes READY (pid, node id), then ``run_now("report", wait=True)``. The test
SIGKILLs it mid-run: the run must be recorded ``lost`` by the next scheduler on the file.
"""

from __future__ import annotations

import os
import sys
import time
from typing import List

import joblog

from flowyml_lite import PipelineScheduler, SchedulerConfig


def main(argv: List[str]) -> int:
    db, log, ready = argv[:3]
    scheduler = PipelineScheduler(
        SchedulerConfig(db_path=db, heartbeat_seconds=1.0, node_timeout_seconds=5.0)
    )

    def report() -> None:
        joblog.append_line(log, "report", "start")
        time.sleep(60)

    scheduler.schedule_daily("report", report, hour=3)
    joblog.write_json(ready, {"pid": os.getpid(), "node_id": scheduler.node_id})
    scheduler.run_now("report", wait=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
