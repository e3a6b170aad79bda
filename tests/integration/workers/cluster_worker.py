"""One worker of the several-hosts cluster test: a PipelineScheduler on PostgreSQL (and Redis).

Usage: cluster_worker.py --url URL --log LOG --dir DIR --name NAME [--redis URL] [--hostname H]
       [--schedules N] [--heartbeat S] [--node-timeout S] [--grace S] [--max-seconds S]

Declares the cluster's schedules (``tick``: a 1 s interval; ``cron_sec``: ``* * * * * *``; ``sNNN``:
N intervals of 2, 3, 5 and 10 s, all on the epoch's grid), starts the real loop and runs until the
file DIR/stop appears. Each run appends ``start`` and ``end`` lines to LOG (joblog.py) with the fire
instant the run is for (``current_run().fire_time``), so the test can tell a duplicate from a late run.

Every 0.2 s the worker writes DIR/NAME.status (its ``status()``, ``problems()`` and the live nodes it
sees), and appends to DIR/NAME.statuslog each time its status or the sources of its problems change,
so the test sees health during a fault even when the fault is short. DIR/NAME.ready holds its pid,
node id and host name once started; DIR/NAME.result what ``stop()`` said.

``--hostname`` sets the host name first (the test starts the worker in its own UTS namespace with
``unshare --uts`` when it is root, so each worker is its own host). Standard library plus flowyml_lite.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Tuple

import joblog

from flowyml_lite import PipelineScheduler, SchedulerConfig, current_run

TICK_SECONDS = 0.15  # tick and cron_sec run this long: a kill -9 or a SIGSTOP finds runs in flight
OTHER_SECONDS = 0.05
PERIODS = (2, 3, 5, 10)


def schedule_plan(count: int) -> List[Tuple[str, str, str]]:
    """(name, kind, value) of every schedule of the cluster: kind ``interval`` (seconds) or ``cron``."""
    plan = [("tick", "interval", "1"), ("cron_sec", "cron", "* * * * * *")]
    plan += [(f"s{i:03d}", "interval", str(PERIODS[i % len(PERIODS)])) for i in range(count)]
    return plan


def make_job(log: str, name: str, seconds: float) -> Callable[[], None]:
    def job() -> None:
        run = current_run()
        fire = run.fire_time.timestamp() if run is not None else None
        joblog.append_line(log, name, "start", fire)
        time.sleep(seconds)
        joblog.append_line(log, name, "end", fire)

    job.__name__ = f"job_{name}"
    return job


def report_health(scheduler: PipelineScheduler, directory: str, name: str, stop: threading.Event) -> None:
    """Write the status file every 0.2 s; append to the status log whenever health changes."""
    status_path = os.path.join(directory, f"{name}.status")
    log_path = os.path.join(directory, f"{name}.statuslog")
    last: Tuple[str, Tuple[str, ...]] = ("", ())
    while not stop.wait(0.2):
        try:
            status = scheduler.status()
            problems = scheduler.problems()
            nodes = list(scheduler._membership.nodes)  # the split this worker uses
        except Exception as exc:  # never let the reporter die: the test reads its silence as a hang
            status, problems, nodes = "error", [{"source": "reporter", "message": repr(exc)}], []
        now = time.time()
        data: Dict[str, Any] = {"t": now, "status": status, "problems": problems, "nodes": nodes}
        joblog.write_json(status_path, data)
        key = (status, tuple(sorted({str(p.get("source")) for p in problems})))
        if key != last:
            last = key
            line = json.dumps({"t": now, "status": status, "problems": problems}, default=str) + "\n"
            fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--redis", default=None)
    parser.add_argument("--hostname", default=None)
    parser.add_argument("--schedules", type=int, default=200)
    parser.add_argument("--heartbeat", type=float, default=0.5)
    parser.add_argument("--node-timeout", type=float, default=3.0)
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args(argv)
    if args.hostname:
        socket.sethostname(args.hostname)
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s {args.name} %(process)d %(name)s %(levelname)s %(message)s"
    )
    config = SchedulerConfig(
        store="postgresql",
        store_url=args.url,
        distributed=args.redis is not None,
        lock_backend="redis",
        redis_url=args.redis,
        heartbeat_seconds=args.heartbeat,
        node_timeout_seconds=args.node_timeout,
        misfire_grace_seconds=args.grace,
        max_concurrent_runs=64,
    )
    scheduler = PipelineScheduler(config)
    for name, kind, value in schedule_plan(args.schedules):
        seconds = TICK_SECONDS if name in ("tick", "cron_sec") else OTHER_SECONDS
        job = make_job(args.log, name, seconds)
        if kind == "cron":
            scheduler.schedule_cron(name, job, value)
        else:
            scheduler.schedule_interval(name, job, seconds=int(value))
    scheduler.start()
    stop_reporting = threading.Event()
    reporter = threading.Thread(
        target=report_health, args=(scheduler, args.dir, args.name, stop_reporting), daemon=True
    )
    reporter.start()
    joblog.write_json(
        os.path.join(args.dir, f"{args.name}.ready"),
        {"pid": os.getpid(), "node_id": scheduler.node_id, "hostname": socket.gethostname()},
    )
    stopped_by_test = joblog.wait_for_file(os.path.join(args.dir, "stop"), args.max_seconds)
    began = time.monotonic()
    drained = scheduler.stop(timeout=20)
    stop_reporting.set()
    reporter.join(2)
    joblog.write_json(
        os.path.join(args.dir, f"{args.name}.result"),
        {
            "pid": os.getpid(),
            "node_id": scheduler.node_id,
            "drained": drained,
            "stopped_by_test": stopped_by_test,
            "stop_seconds": time.monotonic() - began,
        },
    )
    scheduler.close()
    return 0 if drained and stopped_by_test else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
