"""The demo behind ``python -m flowyml_lite demo``: a few pipelines on the embedded SQLite store.

It prints each run as it happens (fire time, start lag, outcome, run_id) and a history and
health summary at the end. Nothing to install: the standard library is enough.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional

from .core.pipeline import Pipeline, PipelineResult, step
from .core.scheduler import PipelineScheduler
from .core.scheduler_config import SchedulerConfig


@step(outputs=["rows"])
def extract() -> List[Dict[str, Any]]:
    """Pretend to fetch a few rows from an API."""
    return [{"id": i, "value": random.randint(1, 100)} for i in range(5)]


@step(outputs=["total"])
def transform(rows: List[Dict[str, Any]]) -> int:
    return sum(row["value"] for row in rows)


@step
def load(total: int) -> None:
    logging.getLogger("flowyml_lite.demo").debug("loaded total %d", total)


def _etl() -> PipelineResult:
    return Pipeline("demo_etl").add_step(extract).add_step(transform).add_step(load).run()


def _report() -> None:
    time.sleep(0.05)  # a report that takes a moment


def _flaky() -> None:
    raise RuntimeError("upstream API returned HTTP 503 (this failure is part of the demo)")


def _print_run(entry: Dict[str, Any]) -> None:
    lag = entry.get("start_lag_seconds")
    lag_text = f"{lag * 1000:6.1f} ms" if lag is not None else "     -   "
    outcome = "ok    " if entry["success"] else "FAILED"
    detail = f"run_id={entry['run_id']}" if entry.get("run_id") else (entry.get("error") or "")
    print(
        f"  {entry['fire_time']:<32} {entry['schedule_name']:<16} lag {lag_text}  {outcome}  {detail}",
        flush=True,
    )


def invocation() -> str:
    """The command this process was started as, for hints: ``flowyml-lite`` or ``python3 -m flowyml_lite``."""
    if os.path.basename(sys.argv[0]).startswith("flowyml-lite"):
        return "flowyml-lite"
    orig = getattr(sys, "orig_argv", None)  # Python 3.10+: the interpreter as it was typed
    python = os.path.basename(orig[0]) if orig else os.path.basename(sys.executable) or "python3"
    return f"{python} -m flowyml_lite"


def run_demo(seconds: float = 65.0, db_path: Optional[str] = None, verbose: bool = False) -> int:
    """Run the demo scheduler for ``seconds`` (Ctrl-C stops early); returns an exit code."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        logging.getLogger("flowyml_lite.scheduler").setLevel(logging.CRITICAL)  # the demo prints runs itself
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds:g}")
    temporary = None
    if db_path is None:  # removed at the end: pass db_path to keep the history
        temporary = tempfile.mkdtemp(prefix="flowyml_lite_demo_")
        db_path = os.path.join(temporary, "demo.db")
    try:
        return _run(seconds, db_path, temporary is not None)
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


def _run(seconds: float, db_path: str, temporary: bool) -> int:
    config = SchedulerConfig(persist_schedules=True, db_path=db_path)
    scheduler = PipelineScheduler(config)
    scheduler.on_success(_print_run)
    scheduler.on_failure(_print_run)
    scheduler.schedule_interval("etl_every_2s", _etl, seconds=2)
    scheduler.schedule_cron("report_each_min", _report, "* * * * *", timezone="Europe/London")
    scheduler.schedule_interval("flaky_every_5s", _flaky, seconds=5)

    print(f"flowyml_lite demo: SQLite store at {db_path}, running for {seconds:g} s (Ctrl-C to stop)")
    for s in scheduler.list_schedules():
        next_run = s.next_run.isoformat() if s.next_run else "-"
        print(f"  {s.pipeline_name:<16} {s.schedule_type:<8} {s.schedule_value:<10} next {next_run}")
    print(f"\n  {'fire time':<32} {'schedule':<16} {'start lag':<13} outcome")

    stop = threading.Event()
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    scheduler.start()
    try:
        stop.wait(seconds)
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
    finally:
        scheduler.stop(timeout=10)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)

    health = scheduler.health_check()
    metrics = health["metrics"]
    lag = metrics["start_lag_ms"]
    print("\nsummary")
    for s in scheduler.list_schedules():
        runs = scheduler.get_history(s.pipeline_name, limit=1000)
        ok = sum(1 for r in runs if r["success"])
        print(f"  {s.pipeline_name:<16} runs {len(runs):>3}  succeeded {ok:>3}  failed {len(runs) - ok:>3}")
    if metrics["total_runs"]:
        print(
            f"  total {metrics['total_runs']} runs, success rate {metrics['success_rate']:.1%}, "
            f"start lag p50 {_ms(lag['p50'])} p99 {_ms(lag['p99'])} max {_ms(lag['max'])}"
        )
    else:
        print("  no runs finished yet (run the demo for longer, e.g. --seconds 20)")
    if temporary:
        print(f"  scheduler status after stop: {health['status']}; the temporary store is removed")
        print(f"  to keep the history: {invocation()} demo --db demo.db")
    else:
        print(f"  scheduler status after stop: {health['status']}; history kept in {db_path}")
        print(f"  inspect it: {invocation()} history etl_every_2s --db {db_path}")
    scheduler.close()
    return 0 if metrics["total_runs"] > 0 or seconds < 2 else 1


def _ms(value: Optional[float]) -> str:
    return f"{value:.1f} ms" if value is not None else "-"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_demo(float(sys.argv[1]) if len(sys.argv) > 1 else 65.0))


__all__ = ["run_demo"]
