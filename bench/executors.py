"""What each executor costs: runs/s and start lag of a no-op job, thread vs async vs process.

    python bench/executors.py            # full run (~1 min on 2 cores)
    python bench/executors.py --quick    # smoke run
    python bench/executors.py --save     # also write bench/results/executors-<UTC time>.txt

*Start lag* = the monotonic clock at the job's first line minus the monotonic clock just before
``submit`` (CLOCK_MONOTONIC is one clock for every process of the machine, so a child's reading
compares with ours). The job returns that instant as its ``run_id``, so it crosses back from a child
process like any run id. Lag is measured one run at a time (submit, wait for the result, next);
*runs/s* submits a batch at once to an executor of 4 workers and counts until the last result.
Every executor is measured in the same process, one after the other; compare rows of one run.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Tuple

# Only light imports up here: a child process imports this file to find its job (and, as with any
# multiprocessing child, re-runs it as __mp_main__), so what it imports is part of the measured lag.
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (ROOT, HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)

if TYPE_CHECKING:
    from flowyml_lite.executors.base import Executor, JobResult
    from flowyml_lite.runtime.context import RunContext


class Entered:
    """What a no-op job returns: its entry instant as the run id."""

    success = True

    def __init__(self) -> None:
        self.run_id = repr(time.monotonic())


def noop() -> Entered:
    return Entered()


async def async_noop() -> Entered:
    return Entered()


def _context() -> RunContext:
    from datetime import datetime, timezone

    from flowyml_lite.runtime.context import RunContext

    now = datetime.now(timezone.utc)
    return RunContext("bench", now, "key", "node", now, False, 1)


def _percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]  # nearest rank


def start_lags(executor: Executor, func: Callable[[], Any], n: int) -> List[float]:
    """Lag in ms of ``n`` runs, one at a time."""
    import threading

    from flowyml_lite.executors.base import Job

    lags = []
    for _ in range(n):
        box: List[JobResult] = []
        done = threading.Event()

        def finished(result: JobResult, box: List[JobResult] = box, done: threading.Event = done) -> None:
            box.append(result)
            done.set()

        t0 = time.monotonic()
        executor.submit(Job(func, None, _context()), finished)
        if not done.wait(120):
            raise RuntimeError("a run took more than 120 s")
        result = box[0]
        if not result.success or result.run_id is None:
            raise RuntimeError(f"a no-op run failed: {result.error}\n{result.output}")
        lags.append((float(result.run_id) - t0) * 1000)
    return lags


def throughput(executor: Executor, func: Callable[[], Any], n: int) -> float:
    """Runs per second of ``n`` runs submitted at once."""
    import threading

    from flowyml_lite.executors.base import Job

    left = [n]
    failed: List[str] = []
    lock = threading.Lock()
    all_done = threading.Event()

    def finished(result: JobResult) -> None:
        with lock:
            if not result.success:
                failed.append(result.error or "?")
            left[0] -= 1
            if left[0] == 0:
                all_done.set()

    t0 = time.perf_counter()
    for _ in range(n):
        executor.submit(Job(func, None, _context()), finished)
    if not all_done.wait(600):
        raise RuntimeError("the batch took more than 600 s")
    elapsed = time.perf_counter() - t0
    if failed:
        raise RuntimeError(f"{len(failed)} runs failed, e.g. {failed[0]}")
    return n / elapsed


def measure(quick: bool) -> Tuple[List[str], Dict[str, Dict[str, float]]]:
    import executors as jobs  # this file again, as an importable module: a child imports its jobs

    from flowyml_lite.executors.asyncio_loop import AsyncExecutor
    from flowyml_lite.executors.process import ProcessExecutor
    from flowyml_lite.executors.thread import ThreadExecutor

    fast_lag, fast_batch = (100, 500) if quick else (1000, 5000)
    slow_lag, slow_batch = (20, 50) if quick else (100, 300)
    setups: List[Tuple[str, Callable[[], Executor], Callable[[], Any], int, int]] = [
        ("thread", lambda: ThreadExecutor(4), jobs.noop, fast_lag, fast_batch),
        ("async", lambda: AsyncExecutor(4), jobs.async_noop, fast_lag, fast_batch),
        ("process (forkserver)", lambda: ProcessExecutor(4), jobs.noop, slow_lag, slow_batch),
        (
            "process (spawn)",
            lambda: ProcessExecutor(4, start_method="spawn"),
            jobs.noop,
            slow_lag // 2,
            slow_batch // 3,
        ),
    ]
    rows: Dict[str, Dict[str, float]] = {}
    lines = [
        f"{'executor':<22} {'runs/s':>9} {'lag p50 ms':>11} {'p90':>8} {'max':>8} {'lag n':>6} {'batch':>6}",
    ]
    for name, make, func, n_lag, n_batch in setups:
        executor = make()
        try:
            start_lags(executor, func, 3)  # warm up: threads, loop, fork server
            lags = start_lags(executor, func, n_lag)
            rate = throughput(executor, func, n_batch)
        finally:
            executor.shutdown(wait=True, timeout=60)
        row = {
            "runs_per_s": rate,
            "p50": _percentile(lags, 0.5),
            "p90": _percentile(lags, 0.9),
            "max": max(lags),
        }
        rows[name] = row
        lines.append(
            f"{name:<22} {rate:>9,.0f} {row['p50']:>11.3f} {row['p90']:>8.3f} {row['max']:>8.1f} "
            f"{n_lag:>6} {n_batch:>6}"
        )
        print(lines[-1], flush=True)
    thread, proc = rows["thread"], rows["process (forkserver)"]
    lines.append("")
    lines.append(
        f"process (forkserver) / thread: runs/s x{proc['runs_per_s'] / thread['runs_per_s']:.4f} "
        f"(1/{thread['runs_per_s'] / proc['runs_per_s']:.0f}), "
        f"start lag p50 x{proc['p50'] / max(thread['p50'], 1e-9):.0f}"
    )
    return lines, rows


def _header() -> List[str]:
    import platform
    import subprocess
    from datetime import datetime, timezone

    try:
        commit = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", ROOT, "status", "--porcelain", "flowyml_lite/executors"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit, dirty = "?", ""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return [
        f"bench/executors.py at {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"flowyml_lite {commit}{' + uncommitted changes' if dirty else ''}; "
        f"Python {platform.python_version()}; "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores; load {load[0]:.2f}",
        "",
    ]


def main() -> None:
    import argparse
    from datetime import datetime, timezone
    from pathlib import Path

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    parser.add_argument("--save", action="store_true", help="write bench/results/executors-<UTC time>.txt")
    args = parser.parse_args()
    header = _header()
    print("\n".join(header), flush=True)
    lines, _ = measure(args.quick)
    print(lines[-1])
    end_load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    footer = f"load at the end {end_load:.2f}"
    print(footer)
    if args.save:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        path = Path(HERE) / "results" / f"executors-{stamp}.txt"
        path.write_text("\n".join([*header, *lines, footer]) + "\n", encoding="utf-8")
        print(f"saved {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
