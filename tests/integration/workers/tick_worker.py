"""A scheduler process for the exactly-once test: a 1 s interval schedule on a shared SQLite file.

Usage: tick_worker.py DB LOG READY STOP RESULT [--max-seconds N] [--memory]

Declares ``schedule_interval("tick", job, seconds=1)``, starts the real loop, writes READY (its pid
and node id) and runs until the file STOP appears (or N seconds pass), then stops the scheduler,
draining runs, and writes RESULT: its node id, whether the drain finished and the history it sees.
Each run of the job appends one line to LOG (see joblog.py). ``--memory`` uses the in-process
store instead of DB (the control experiment: nothing is shared, so every process runs every fire).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List

import joblog

from flowyml_lite import PipelineScheduler, SchedulerConfig


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser()
    for name in ("db", "log", "ready", "stop", "result"):
        parser.add_argument(name)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--memory", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
    )
    config = SchedulerConfig(
        db_path=args.db, persist_schedules=not args.memory, heartbeat_seconds=1.0, node_timeout_seconds=10.0
    )
    scheduler = PipelineScheduler(config)

    def job() -> None:
        joblog.append_line(args.log, "tick", "run", joblog.fire_seen(scheduler, "tick"))

    scheduler.schedule_interval("tick", job, seconds=1)
    scheduler.start()
    joblog.write_json(args.ready, {"pid": os.getpid(), "node_id": scheduler.node_id})
    stopped_by_test = joblog.wait_for_file(args.stop, args.max_seconds)
    drained = scheduler.stop(timeout=20)
    history = scheduler.get_history("tick", limit=100_000)
    joblog.write_json(
        args.result,
        {
            "pid": os.getpid(),
            "node_id": scheduler.node_id,
            "drained": drained,
            "stopped_by_test": stopped_by_test,
            "history": history,
        },
    )
    scheduler.close()
    return 0 if drained and stopped_by_test else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
