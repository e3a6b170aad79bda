#!/usr/bin/env python3
"""Scheduler benchmark: flowyml_lite against APScheduler 3 and flowyml 2.2.1, in one run.

Measures (see bench/README.md for what each number means and how it is obtained):
  lag         start lag p50/p99/max of one-shot fires spread evenly over a window (1, 1,000, 10,000 schedules)
  throughput  claimed-and-recorded fires per second, as fast as the loop goes (SQLite, one process)
  load        load time and max RSS with 100,000 persisted schedules, in fresh processes
  blocking    20 schedules every 0.1 s whose jobs block 5 ms (a short query): start lag, fires skipped

    python bench/scheduler.py                  # everything (about 15 minutes on 2 cores)
    python bench/scheduler.py --quick          # small sizes, a smoke run (about 2 minutes)
    python bench/scheduler.py --only lag --save

Every measurement runs in its own subprocess (``... scheduler.py child '<json spec>'``) with a
timeout, so one peer that hangs or runs out of memory cannot spoil the others.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# bench/ holds modules named like the standard library's (bench/http.py): it goes last on the path,
# so `import http.client` finds the standard library, and `import executors` still finds bench's.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE] + [HERE]
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LITE_SYSTEMS = ("lite-memory", "lite-sqlite")
APS_SYSTEMS = ("aps-memory", "aps-sqlalchemy")
FLOWYML_SYSTEMS = ("flowyml-memory", "flowyml-sqlite")
LABELS = {
    "lite-memory": "flowyml_lite, memory store",
    "lite-sqlite": "flowyml_lite, SQLite store",
    "aps-memory": "APScheduler 3.11, MemoryJobStore",
    "aps-sqlalchemy": "APScheduler 3.11, SQLAlchemyJobStore (SQLite)",
    "flowyml-memory": "flowyml 2.2.1, persist_schedules=False",
    "flowyml-sqlite": "flowyml 2.2.1, SQLite persistence",
    "lite": "flowyml_lite, SQLite store, interval schedules",
    "lite-mixed": "flowyml_lite, SQLite store, mixed cron/daily/hourly/interval in 5 zones",
    "aps": "APScheduler 3.11, SQLAlchemyJobStore (SQLite)",
    "flowyml": "flowyml 2.2.1, SQLite persistence",
}


# =====================================================================================
# Child side: one measurement per process, result printed as a "RESULT {json}" line.
# =====================================================================================


def emit(kind: str, payload: Dict[str, Any]) -> None:
    sys.stdout.write(f"{kind} {json.dumps(payload)}\n")
    sys.stdout.flush()


def maxrss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def us_to_dt(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def ceil_ms_us(seconds: float) -> int:
    """A Unix time in whole milliseconds (as microseconds) at or after ``seconds``."""
    return math.ceil(seconds * 1000) * 1000


class LogTally(logging.Handler):
    """Counts WARNING+ log records and keeps the first few distinct messages (the errors column)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.samples: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.samples) < 4:
            try:
                text = f"{record.levelname} {record.name}: {record.getMessage()}"
            except Exception:  # a peer's malformed log call must not break the tally
                text = f"{record.levelname} {record.name}: {record.msg!r}"
            text = text.splitlines()[0][:200] if text else text
            if text not in self.samples:
                self.samples.append(text)


TALLY = LogTally()


class Recorder:
    """What the jobs report: (schedule index, time.time() at entry minus intended instant)."""

    def __init__(self) -> None:
        self.hits: List[Tuple[int, float]] = []
        self.target = 0
        self.done = threading.Event()

    def expect(self, count: int) -> None:
        self.target = count
        self.done.clear()
        if len(self.hits) >= count:
            self.done.set()

    def hit(self, i: int, intended: float) -> None:
        self.hits.append((i, time.time() - intended))  # list.append is atomic: safe from any thread
        if len(self.hits) >= self.target:
            self.done.set()


REC = Recorder()


def aps_job(i: int, intended: float) -> None:
    """APScheduler's job: module level so its SQLAlchemy store can pickle a reference to it."""
    REC.hit(i, intended)


def aps_noop() -> None:
    """The job of the APScheduler load test."""


def noop() -> None:
    """The job of the flowyml_lite and flowyml load tests."""


def lite_job(i: int, intended: float) -> Callable[[], None]:
    def job() -> None:
        REC.hit(i, intended)

    return job


def flowyml_job(i: int, intended: float) -> Callable[[], bool]:
    def job() -> bool:
        REC.hit(i, intended)
        return True  # flowyml 2.2.1 counts a falsy return value as a failure

    return job


def lag_summary(n: int, extra: Dict[str, Any]) -> Dict[str, Any]:
    """Percentiles over the first call of each schedule; duplicates and drops counted."""
    first: Dict[int, float] = {}
    calls = 0
    for i, lag in list(REC.hits):
        calls += 1
        if i not in first:
            first[i] = lag
    lags = sorted(first.values())
    # Where the worst lags fell (schedule index = position in the window), to tell bursts from noise.
    worst = sorted(first.items(), key=lambda item: -item[1])[:8]
    out: Dict[str, Any] = {
        "expected": n,
        "fired": len(first),
        "duplicates": calls - len(first),
        "log_warnings": TALLY.count,
        "log_samples": TALLY.samples,
    }
    if lags:
        out.update(
            p50_ms=pct(lags, 0.50) * 1000,
            p99_ms=pct(lags, 0.99) * 1000,
            max_ms=lags[-1] * 1000,
            min_ms=lags[0] * 1000,
            worst=[[i, round(lag * 1000, 2)] for i, lag in worst],
            over_1ms=sum(1 for lag in lags if lag > 0.001),
            over_3ms=sum(1 for lag in lags if lag > 0.003),
        )
    out.update(extra)
    return out


def pct(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def plan_instants(n: int, window: float, start_us: int) -> List[int]:
    """n fire instants (µs) spread evenly over [start, start + window)."""
    window_us = round(window * 1_000_000)
    return [start_us + (i * window_us) // n for i in range(n)]


def calibrated_start(per_op: float, n: int, minimum_lead: float = 2.0) -> int:
    """The first fire instant: far enough ahead that declaring n schedules finishes before it."""
    lead = 1.5 * per_op * n + minimum_lead
    return ceil_ms_us(time.time() + lead)


# -- flowyml_lite ---------------------------------------------------------------------


def lite_config(system: str, directory: str, name: str = "lite.db") -> Any:
    """The benchmark's SchedulerConfig; FLOWYML_BENCH_CONFIG='{"gc_freeze": true}' adds settings."""
    from flowyml_lite import SchedulerConfig

    extra = json.loads(os.environ.get("FLOWYML_BENCH_CONFIG") or "{}")
    if system == "lite-memory":
        return SchedulerConfig(persist_schedules=False, **extra)
    return SchedulerConfig(db_path=os.path.join(directory, name), **extra)


def lite_declare_once(sched: Any, name: str, i: int, at_us: int) -> bool:
    """A one-shot fire at ``at_us`` through the public API: an interval whose period is that Unix time.

    The interval grid is anchored at the epoch, so the first grid point after now is the instant
    itself (1 x period) and the next one is decades away (2 x period).
    """
    seconds = at_us / 1_000_000
    schedule = sched.schedule_interval(name, lite_job(i, seconds), seconds=seconds)
    return bool(schedule.next_run == us_to_dt(at_us))


def lite_calibrate(system: str, directory: str, count: int = 200) -> float:
    """Seconds per declaration on a throwaway scheduler of the same kind."""
    from flowyml_lite import PipelineScheduler

    sched = PipelineScheduler(lite_config(system, directory, "calibrate.db"))
    far = ceil_ms_us(time.time() + 3600)
    t0 = time.perf_counter()
    for i in range(count):
        lite_declare_once(sched, f"calibrate-{i}", i, far + i * 1000)
    per_op = (time.perf_counter() - t0) / count
    sched.store.close()
    return per_op


def lite_lag(spec: Dict[str, Any]) -> Dict[str, Any]:
    from flowyml_lite import PipelineScheduler

    system, n, window, directory = spec["system"], spec["n"], spec["window"], spec["dir"]
    sched = PipelineScheduler(lite_config(system, directory))
    bad_plan = 0
    if n == 1:
        rounds = spec["rounds"]
        sched.start()
        for r in range(rounds):
            name = f"once-{r}"
            REC.expect(r + 1)
            at = ceil_ms_us(time.time() + spec["round_lead"])
            bad_plan += not lite_declare_once(sched, name, r, at)
            REC.done.wait(timeout=spec["round_lead"] + 5)
            sched.wait_for_runs(5)
            if system == "lite-sqlite":
                history = sched.get_history(name, limit=5)
                bad_plan += not (len(history) == 1 and history[0]["status"] == "succeeded")
            sched.unschedule(name)
        sched.stop()
        return lag_summary(rounds, {"rounds": rounds, "setup_errors": bad_plan})
    per_op = lite_calibrate(system, directory)
    start_us = calibrated_start(per_op, n)
    instants = plan_instants(n, window, start_us)
    t0 = time.perf_counter()
    for i, at in enumerate(instants):
        bad_plan += not lite_declare_once(sched, f"s{i:06d}", i, at)
    setup = time.perf_counter() - t0
    overran = time.time() > start_us / 1e6 - 0.2
    if spec.get("probe"):
        PROBE.install(sched)
    profiler = profile_loop(sched, spec["profile_loop"] == "cpu") if spec.get("profile_loop") else None
    REC.expect(n)
    sched.start()
    REC.done.wait(timeout=max(0.0, instants[-1] / 1e6 - time.time()) + spec["grace"])
    sched.wait_for_runs(10)
    if profiler is not None:
        print_profile(
            profiler, f"the loop thread's claim step ({spec['profile_loop']}), {n:,} spread fires", n
        )
    health = sched.health_check()
    sched.stop()
    stats = sched.store.stats()
    summary = lag_summary(
        n,
        {
            "setup_s": setup,
            "setup_overran": overran,
            "setup_errors": bad_plan,
            "recorded_succeeded": stats.succeeded,
            "recorded_other": stats.total - stats.succeeded,
            "health_status": health["status"],
            "scheduler_p99_ms": health["metrics"]["start_lag_ms"]["p99"],
            "probe": PROBE.summary(start_us / 1e6 - 0.5, instants[-1] / 1e6 + 1.0),
        },
    )
    explain_worst(summary, [at / 1e6 for at in instants])
    return summary


def lite_throughput(spec: Dict[str, Any]) -> Dict[str, Any]:
    """n schedules whose single fire is the same instant: all due at once; time until the last is recorded."""
    from flowyml_lite import PipelineScheduler

    system, n, directory = spec["system"], spec["n"], spec["dir"]
    sched = PipelineScheduler(lite_config(system, directory))
    per_op = lite_calibrate(system, directory)
    at = calibrated_start(per_op, n)
    names = [f"t{i:06d}" for i in range(n)]
    t0 = time.perf_counter()
    bad = sum(not lite_declare_once(sched, name, i, at) for i, name in enumerate(names))
    setup = time.perf_counter() - t0
    REC.expect(n)
    sched.start()
    REC.done.wait(timeout=max(0.0, at / 1e6 - time.time()) + spec["timeout_run"])
    sched.wait_for_runs(30)
    sched.stop()
    completed: List[float] = []
    statuses: Dict[str, int] = {}
    for name in names:
        for run in sched.store.history(name, 5):
            statuses[run.status] = statuses.get(run.status, 0) + 1
            if run.status == "succeeded" and run.completed_at is not None:
                completed.append(run.completed_at.timestamp())
    return rate_summary(
        n,
        at / 1e6,
        completed,
        {
            "setup_s": setup,
            "setup_errors": bad,
            "statuses": statuses,
            "measured_from": "history rows (completed_at)",
        },
    )


def rate_summary(n: int, fire_at: float, done_at: List[float], extra: Dict[str, Any]) -> Dict[str, Any]:
    done_at = sorted(done_at)
    out: Dict[str, Any] = {
        "expected": n,
        "completed": len(done_at),
        "log_warnings": TALLY.count,
        "log_samples": TALLY.samples,
    }
    if done_at:
        span = max(done_at[-1] - fire_at, 1e-9)
        out["elapsed_s"] = span
        out["fires_per_s"] = len(done_at) / span
        if len(done_at) >= 20:
            lo, hi = done_at[len(done_at) // 10], done_at[(len(done_at) * 9) // 10]
            out["sustained_fires_per_s"] = (len(done_at) * 0.8) / max(hi - lo, 1e-9)
        out["first_done_after_s"] = done_at[0] - fire_at
    out.update(extra)
    return out


# -- APScheduler 3 --------------------------------------------------------------------


def aps_scheduler(system: str, directory: str, name: str = "aps.db", **job_defaults: Any) -> Any:
    from apscheduler.schedulers.background import BackgroundScheduler

    jobstores: Dict[str, Any] = {}
    if system == "aps-sqlalchemy":
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

        jobstores["default"] = SQLAlchemyJobStore(url=f"sqlite:///{os.path.join(directory, name)}")
    return BackgroundScheduler(jobstores=jobstores, timezone=UTC, job_defaults=job_defaults)


def aps_add_once(sched: Any, i: int, at_us: int) -> None:
    sched.add_job(aps_job, "date", run_date=us_to_dt(at_us), args=[i, at_us / 1e6], id=f"s{i:06d}")


def aps_calibrate(system: str, directory: str, count: int = 200) -> float:
    sched = aps_scheduler(system, directory, "calibrate.db")
    sched.start(paused=True)
    far = ceil_ms_us(time.time() + 3600)
    t0 = time.perf_counter()
    for i in range(count):
        aps_add_once(sched, i, far + i * 1000)
    per_op = (time.perf_counter() - t0) / count
    sched.shutdown(wait=False)
    return per_op


def aps_lag(spec: Dict[str, Any]) -> Dict[str, Any]:
    system, n, window, directory = spec["system"], spec["n"], spec["window"], spec["dir"]
    sched = aps_scheduler(system, directory)  # defaults: misfire_grace_time=1 s, ThreadPoolExecutor(10)
    if n == 1:
        rounds = spec["rounds"]
        sched.start()
        for r in range(rounds):
            REC.expect(r + 1)
            aps_add_once(sched, r, ceil_ms_us(time.time() + spec["round_lead"]))
            REC.done.wait(timeout=spec["round_lead"] + 5)
        sched.shutdown(wait=True)
        return lag_summary(rounds, {"rounds": rounds})
    per_op = aps_calibrate(system, directory)
    start_us = calibrated_start(per_op, n)
    instants = plan_instants(n, window, start_us)
    sched.start(paused=True)  # add_job then writes straight to the job store
    t0 = time.perf_counter()
    for i, at in enumerate(instants):
        aps_add_once(sched, i, at)
    setup = time.perf_counter() - t0
    overran = time.time() > start_us / 1e6 - 0.2
    REC.expect(n)
    sched.resume()
    REC.done.wait(timeout=max(0.0, instants[-1] / 1e6 - time.time()) + spec["grace"])
    time.sleep(0.2)
    left = len(sched.get_jobs())
    sched.shutdown(wait=True)
    return lag_summary(n, {"setup_s": setup, "setup_overran": overran, "jobs_left_in_store": left})


def aps_throughput(spec: Dict[str, Any]) -> Dict[str, Any]:
    system, n, directory = spec["system"], spec["n"], spec["dir"]
    # misfire_grace_time=60 like flowyml_lite's default, so a slow store shows as time, not as drops.
    sched = aps_scheduler(system, directory, misfire_grace_time=60)
    per_op = aps_calibrate(system, directory)
    at = calibrated_start(per_op, n)
    sched.start(paused=True)
    t0 = time.perf_counter()
    for i in range(n):
        sched.add_job(aps_job, "date", run_date=us_to_dt(at), args=[i, at / 1e6], id=f"t{i:06d}")
    setup = time.perf_counter() - t0
    REC.expect(n)
    sched.resume()
    REC.done.wait(timeout=max(0.0, at / 1e6 - time.time()) + spec["timeout_run"])
    done_at = [at / 1e6 + lag for _, lag in REC.hits]
    time.sleep(0.2)
    left = len(sched.get_jobs())
    sched.shutdown(wait=True)
    return rate_summary(
        n,
        at / 1e6,
        done_at,
        {
            "setup_s": setup,
            "jobs_left_in_store": left,
            "measured_from": "job entry times (APScheduler keeps no history)",
        },
    )


# -- flowyml 2.2.1 --------------------------------------------------------------------


def flowyml_scheduler(system: str, directory: str, name: str = "flowyml.db") -> Any:
    from flowyml.core.scheduler import PipelineScheduler
    from flowyml.core.scheduler_config import SchedulerConfig

    persist = system == "flowyml-sqlite"
    # Its defaults (check_interval_seconds=10), as its users get them.
    return PipelineScheduler(
        SchedulerConfig(persist_schedules=persist, db_path=os.path.join(directory, name))
    )


def flowyml_declare_once(sched: Any, name: str, i: int, at_us: int) -> None:
    """flowyml has no one-shot either: an interval of ~4 months whose next_run is then set (and re-saved)."""
    import pytz

    schedule = sched.schedule_interval(name, flowyml_job(i, at_us / 1e6), seconds=10_000_000)
    schedule.next_run = us_to_dt(at_us).astimezone(pytz.utc)
    if sched._persistence is not None:
        sched._persistence.save_schedule(schedule)  # its loop reloads persisted schedules at start


def flowyml_calibrate(system: str, directory: str, count: int = 100) -> float:
    sched = flowyml_scheduler(system, directory, "calibrate.db")
    far = ceil_ms_us(time.time() + 3600)
    t0 = time.perf_counter()
    for i in range(count):
        flowyml_declare_once(sched, f"calibrate-{i}", i, far)
    return (time.perf_counter() - t0) / count


def flowyml_lag(spec: Dict[str, Any]) -> Dict[str, Any]:
    system, n, window, directory = spec["system"], spec["n"], spec["window"], spec["dir"]
    sched = flowyml_scheduler(system, directory)
    poll = float(sched.config.check_interval_seconds)
    if n == 1:
        rounds = spec["flowyml_rounds"]
        sched.start()
        for r in range(rounds):
            REC.expect(r + 1)
            flowyml_declare_once(sched, f"once-{r}", r, ceil_ms_us(time.time() + spec["round_lead"]))
            REC.done.wait(timeout=spec["round_lead"] + poll + 5)
            emit("PROGRESS", {"round": r + 1, "fired": len(REC.hits)})
        sched.running = False  # stop() joins a loop that may sleep 10 s more; the process ends anyway
        return lag_summary(rounds, {"rounds": rounds, "poll_interval_s": poll})
    per_op = flowyml_calibrate(system, directory)
    start_us = calibrated_start(per_op, n)
    instants = plan_instants(n, window, start_us)
    t0 = time.perf_counter()
    for i, at in enumerate(instants):
        flowyml_declare_once(sched, f"s{i:06d}", i, at)
        if i % 1000 == 999:
            emit("PROGRESS", {"declared": i + 1, "elapsed_s": time.perf_counter() - t0})
    setup = time.perf_counter() - t0
    overran = time.time() > start_us / 1e6 - 0.2
    REC.expect(n)
    sched.start()
    REC.done.wait(timeout=max(0.0, instants[-1] / 1e6 - time.time()) + poll + spec["grace"])
    time.sleep(1.0)  # let stragglers started by the last poll report
    sched.running = False
    threads = threading.active_count()
    return lag_summary(
        n,
        {
            "setup_s": setup,
            "setup_overran": overran,
            "poll_interval_s": poll,
            "threads_alive_at_end": threads,
        },
    )


def flowyml_throughput(spec: Dict[str, Any]) -> Dict[str, Any]:
    system, n, directory = spec["system"], spec["n"], spec["dir"]
    sched = flowyml_scheduler(system, directory)
    per_op = flowyml_calibrate(system, directory)
    at = calibrated_start(per_op, n)
    t0 = time.perf_counter()
    for i in range(n):
        flowyml_declare_once(sched, f"t{i:06d}", i, at)
        if i % 1000 == 999:
            emit("PROGRESS", {"declared": i + 1, "elapsed_s": time.perf_counter() - t0})
    setup = time.perf_counter() - t0
    REC.expect(n)
    sched.start()
    REC.done.wait(timeout=max(0.0, at / 1e6 - time.time()) + spec["timeout_run"])
    deadline = time.time() + 30
    recorded = None
    while (
        sched._persistence is not None and time.time() < deadline
    ):  # executions rows are written after the job returns
        recorded = flowyml_count_executions(sched)
        if recorded is not None and recorded >= len(REC.hits):
            break
        time.sleep(0.5)
    done_at = [at / 1e6 + lag for _, lag in REC.hits]
    sched.running = False
    return rate_summary(
        n,
        at / 1e6,
        done_at,
        {"setup_s": setup, "executions_rows": recorded, "measured_from": "job entry times"},
    )


def flowyml_count_executions(sched: Any) -> int:
    from sqlalchemy import func, select

    persistence = sched._persistence
    with persistence.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(persistence.executions)).scalar() or 0)


# -- load: 100,000 persisted schedules ------------------------------------------------

MIXED_ZONES = ("UTC", "America/New_York", "Europe/Paris", "Asia/Kolkata", "Australia/Lord_Howe")


def lite_definition(i: int, mixed: bool) -> Tuple[str, Dict[str, Any]]:
    """The i-th schedule of the load test: (method, keyword arguments)."""
    if not mixed or i % 4 == 0:
        return "schedule_interval", {"seconds": 60 + i % 3600}
    zone = MIXED_ZONES[i % len(MIXED_ZONES)]
    if i % 4 == 1:
        return "schedule_cron", {"cron_expression": f"{i % 60} */{1 + i % 6} * * {i % 7}", "timezone": zone}
    if i % 4 == 2:
        return "schedule_daily", {"hour": i % 24, "minute": i % 60, "timezone": zone}
    return "schedule_hourly", {"minute": i % 60, "timezone": zone}


def lite_declare_all(sched: Any, n: int, mixed: bool, t0: float) -> None:
    for i in range(n):
        method, kwargs = lite_definition(i, mixed)
        getattr(sched, method)(f"job-{i:06d}", noop, **kwargs)
        if i % 5000 == 4999:
            emit("PROGRESS", {"done": i + 1, "elapsed_s": time.perf_counter() - t0})


def load_create(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Create the database of n persisted schedules; time it (and, for peers, extrapolate their API)."""
    system, n, db = spec["system"], spec["n"], spec["db"]
    t0 = time.perf_counter()
    if system in ("lite", "lite-mixed"):
        from flowyml_lite import PipelineScheduler, SchedulerConfig

        sched = PipelineScheduler(SchedulerConfig(db_path=db))
        lite_declare_all(sched, n, system == "lite-mixed", t0)
        sched.store.close()
        return {"created": n, "create_s": time.perf_counter() - t0, "method": "public API (schedule_*)"}
    sample = spec["api_sample"]
    if system == "aps":
        api = aps_create_api_sample(os.path.dirname(db), sample)
        t0 = time.perf_counter()
        aps_bulk_create(db, n)
    else:
        api = flowyml_create_api_sample(os.path.dirname(db), sample)
        t0 = time.perf_counter()
        flowyml_bulk_create(db, n)
    return {
        "created": n,
        "create_s": time.perf_counter() - t0,
        "method": "bulk SQL insert (one transaction)",
        "api_per_schedule_ms": api * 1000,
        "api_estimate_s": api * n,
        "api_sample": sample,
    }


def aps_trigger(i: int) -> Any:
    from apscheduler.triggers.interval import IntervalTrigger

    return IntervalTrigger(seconds=60 + i % 3600, start_date=EPOCH, timezone=UTC)


def aps_create_api_sample(directory: str, count: int) -> float:
    sched = aps_scheduler("aps-sqlalchemy", directory, "sample.db")
    sched.start(paused=True)
    t0 = time.perf_counter()
    for i in range(count):
        sched.add_job(aps_noop, aps_trigger(i), id=f"job-{i:06d}")
    per_op = (time.perf_counter() - t0) / count
    sched.shutdown(wait=False)
    return per_op


def aps_bulk_create(db: str, n: int) -> None:
    """Rows exactly as SQLAlchemyJobStore writes them (pickled job state), inserted in one transaction."""
    import pickle

    from apscheduler.util import datetime_to_utc_timestamp

    directory = os.path.dirname(db)
    sched = aps_scheduler("aps-sqlalchemy", directory, os.path.basename(db))
    sched.start(paused=True)
    template = sched.add_job(aps_noop, aps_trigger(0), id="job-000000")
    store = sched._lookup_jobstore("default")
    state = template.__getstate__()
    now = datetime.now(UTC)
    rows = []
    for i in range(1, n):
        trigger = aps_trigger(i)
        next_run = trigger.get_next_fire_time(None, now)
        job_state = dict(state, id=f"job-{i:06d}", trigger=trigger, next_run_time=next_run)
        rows.append(
            {
                "id": job_state["id"],
                "next_run_time": datetime_to_utc_timestamp(next_run),
                "job_state": pickle.dumps(job_state, store.pickle_protocol),
            }
        )
    with store.engine.begin() as conn:
        conn.execute(store.jobs_t.insert(), rows)
    sched.shutdown(wait=False)


def flowyml_create_api_sample(directory: str, count: int) -> float:
    sched = flowyml_scheduler("flowyml-sqlite", directory, "sample.db")
    t0 = time.perf_counter()
    for i in range(count):
        sched.schedule_interval(f"job-{i:06d}", noop, seconds=60 + i % 3600)
    return (time.perf_counter() - t0) / count


def flowyml_bulk_create(db: str, n: int) -> None:
    """Rows exactly as flowyml's save_schedule writes them (JSON of Schedule.to_dict), in one transaction."""
    from flowyml.core.scheduler import Schedule, SchedulerPersistence

    persistence = SchedulerPersistence(db)
    now = datetime.now(UTC)
    rows = []
    for i in range(n):
        seconds = 60 + i % 3600
        schedule = Schedule(
            pipeline_name=f"job-{i:06d}",
            schedule_type="interval",
            schedule_value=str(seconds),
            pipeline_func=noop,
            next_run=now + timedelta(seconds=seconds),
            timezone="UTC",
        )
        rows.append({"name": schedule.pipeline_name, "data": json.dumps(schedule.to_dict())})
    with persistence.engine.begin() as conn:
        conn.execute(persistence.schedules.insert(), rows)


def load_open(spec: Dict[str, Any]) -> Dict[str, Any]:
    """(a) a fresh process opens the store and lists every schedule."""
    system, n, db = spec["system"], spec["n"], spec["db"]
    t_import = time.perf_counter()
    if system in ("lite", "lite-mixed"):
        from flowyml_lite import PipelineScheduler, SchedulerConfig

        import_s, base = time.perf_counter() - t_import, maxrss_mb()
        t0 = time.perf_counter()
        sched = PipelineScheduler(SchedulerConfig(db_path=db))
        listed = len(sched.list_schedules(include_orphans=True))
        what = "PipelineScheduler(SchedulerConfig(db_path)) + list_schedules(include_orphans=True)"
    elif system == "aps":
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore  # noqa: F401
        from apscheduler.schedulers.background import BackgroundScheduler  # noqa: F401

        import_s, base = time.perf_counter() - t_import, maxrss_mb()
        t0 = time.perf_counter()
        sched = aps_scheduler("aps-sqlalchemy", os.path.dirname(db), os.path.basename(db))
        sched.start(paused=True)
        listed = len(sched.get_jobs())
        what = "BackgroundScheduler(SQLAlchemyJobStore).start(paused=True) + get_jobs()"
    else:
        from flowyml.core.scheduler import SchedulerPersistence

        import_s, base = time.perf_counter() - t_import, maxrss_mb()
        t0 = time.perf_counter()
        listed = len(SchedulerPersistence(db).list_all_schedules())
        what = "SchedulerPersistence(db_path).list_all_schedules()"
    return {
        "listed": listed,
        "expected": n,
        "load_s": time.perf_counter() - t0,
        "import_s": import_s,
        "rss_after_import_mb": base,
        "max_rss_mb": maxrss_mb(),
        "what": what,
    }


def load_start(spec: Dict[str, Any]) -> Dict[str, Any]:
    """(b) a fresh process re-declares every schedule with its function and starts the scheduler."""
    system, n, db = spec["system"], spec["n"], spec["db"]
    t_import = time.perf_counter()
    if system in ("lite", "lite-mixed"):
        from flowyml_lite import PipelineScheduler, SchedulerConfig

        import_s, base = time.perf_counter() - t_import, maxrss_mb()
        t0, cpu0 = time.perf_counter(), time.process_time()
        sched = PipelineScheduler(SchedulerConfig(db_path=db))
        lite_declare_all(sched, n, system == "lite-mixed", t0)
        sched.start()
        elapsed = time.perf_counter() - t0
        cpu_s = time.process_time() - cpu0
        table_ = sched._table  # private: the loop's heap, read once for the report
        extra = {
            "heap_entries": len(table_.heap),
            "schedules_registered": len(table_.funcs),
            "cpu_s": cpu_s,  # CPU time of the process: the cost whatever else loads the machine
        }
        sched.stop()
        what = "PipelineScheduler(...) + schedule_*(name, func, ...) x n + start()"
    elif system == "aps":
        from apscheduler.schedulers.background import BackgroundScheduler  # noqa: F401

        import_s, base = time.perf_counter() - t_import, maxrss_mb()
        t0 = time.perf_counter()
        sched = aps_scheduler("aps-sqlalchemy", os.path.dirname(db), os.path.basename(db))
        sched.start(paused=True)
        for i in range(n):
            sched.add_job(aps_noop, aps_trigger(i), id=f"job-{i:06d}", replace_existing=True)
            if i % 1000 == 999:
                emit("PROGRESS", {"done": i + 1, "elapsed_s": time.perf_counter() - t0})
        sched.resume()
        elapsed = time.perf_counter() - t0
        extra = {}
        sched.shutdown(wait=False)
        what = "start(paused=True) + add_job(..., replace_existing=True) x n + resume()"
    else:
        from flowyml.core.scheduler import PipelineScheduler

        import_s, base = time.perf_counter() - t_import, maxrss_mb()
        t0 = time.perf_counter()
        sched = flowyml_scheduler("flowyml-sqlite", os.path.dirname(db), os.path.basename(db))
        for i in range(n):
            sched.schedule_interval(f"job-{i:06d}", noop, seconds=60 + i % 3600)
            if i % 1000 == 999:
                emit("PROGRESS", {"done": i + 1, "elapsed_s": time.perf_counter() - t0})
        sched.start()
        elapsed = time.perf_counter() - t0
        extra = {}
        sched.running = False
        what = "PipelineScheduler(...) + schedule_interval(...) x n + start()"
    out = {
        "expected": n,
        "load_s": elapsed,
        "import_s": import_s,
        "rss_after_import_mb": base,
        "max_rss_mb": maxrss_mb(),
        "what": what,
    }
    out.update(extra)
    return out


# -- probes: what was going on when a fire started late --------------------------------


class Probe:
    """Timestamps (``time.time()``) of GC pauses, store transactions and loop wakes in a child.

    Installed on a flowyml_lite scheduler before ``start()``: ``gc.callbacks`` for collections, and
    thin wrappers around the store's ``claim_many`` / ``finish_runs`` and the loop's claim step
    (bench instrumentation only; the library is not changed). Each event is (start, seconds, what,
    batch size), so a late fire can be matched with what overlapped its wait.
    """

    def __init__(self) -> None:
        self.gc: List[Tuple[float, float, int, int]] = []  # start, seconds, generation, collected
        self.calls: List[Tuple[float, float, str, int]] = []  # start, seconds, method, batch size
        self.cpu: Dict[str, float] = {}  # CPU seconds of the calling thread, per wrapped method
        self._gc_start = (0.0, 0.0, 0.0)
        self.gc_cpu: Dict[int, float] = {}  # generation -> CPU seconds of the collecting threads
        self._installed = False

    def install(self, sched: Any) -> None:
        import gc

        def on_gc(phase: str, info: Dict[str, int]) -> None:
            if phase == "start":
                self._gc_start = (time.time(), time.perf_counter(), time.thread_time())
            else:
                wall, t0, c0 = self._gc_start
                self.gc.append((wall, time.perf_counter() - t0, info["generation"], info.get("collected", 0)))
                self.gc_cpu[info["generation"]] = (
                    self.gc_cpu.get(info["generation"], 0.0) + time.thread_time() - c0
                )

        gc.callbacks.append(on_gc)
        store = sched.store
        for method in ("claim_many", "finish_runs"):
            setattr(store, method, self._timed(getattr(store, method), method))
        loop = sched._loop  # private: the timer loop's claim step, timed per wake
        loop._process = self._timed(loop._process, "wake")
        self._installed = True

    def _timed(self, func: Callable[..., Any], what: str) -> Callable[..., Any]:
        calls = self.calls

        cpu = self.cpu

        def timed(*args: Any, **kwargs: Any) -> Any:
            wall, t0, c0 = time.time(), time.perf_counter(), time.thread_time()
            try:
                return func(*args, **kwargs)
            finally:
                size = len(args[0]) if args and hasattr(args[0], "__len__") else 0
                calls.append((wall, time.perf_counter() - t0, what, size))
                cpu[what] = cpu.get(what, 0.0) + time.thread_time() - c0

        return timed

    def summary(self, since: float, until: float) -> Dict[str, Any]:
        """Totals of what happened in [since, until]."""
        if not self._installed:
            return {}
        out: Dict[str, Any] = {}
        gcs = [g for g in self.gc if since <= g[0] <= until]
        out["gc"] = {
            "count": len(gcs),
            "by_generation": {str(k): sum(1 for g in gcs if g[2] == k) for k in (0, 1, 2)},
            "total_ms": sum(g[1] for g in gcs) * 1000,
            "max_ms": max((g[1] for g in gcs), default=0.0) * 1000,
            "max_gen2_ms": max((g[1] for g in gcs if g[2] == 2), default=0.0) * 1000,
            "cpu_ms_by_generation": {str(k): v * 1000 for k, v in sorted(self.gc_cpu.items())},
        }
        for what in ("wake", "claim_many", "finish_runs"):
            calls = sorted(
                (c for c in self.calls if c[2] == what and since <= c[0] <= until), key=lambda c: c[1]
            )
            if not calls:
                continue
            out[what] = {
                "count": len(calls),
                "total_ms": sum(c[1] for c in calls) * 1000,
                "p50_ms": calls[len(calls) // 2][1] * 1000,
                "max_ms": calls[-1][1] * 1000,
                "mean_batch": sum(c[3] for c in calls) / len(calls),
                "max_batch": max(c[3] for c in calls),
                "cpu_ms": self.cpu.get(what, 0.0) * 1000,  # whole run, not only [since, until]
            }
        return out

    def explain(self, start: float, lag: float) -> str:
        """What overlapped [start, start + lag]: GC pauses and store calls / wakes over 0.5 ms."""
        end = start + max(lag, 0.0)
        parts = []
        for wall, secs, gen, _ in self.gc:
            if wall <= end and wall + secs >= start and secs >= 0.0005:
                parts.append(f"gc gen{gen} {secs * 1000:.1f} ms")
        for wall, secs, what, size in self.calls:
            if wall <= end and wall + secs >= start and secs >= 0.0005:
                parts.append(f"{what}({size}) {secs * 1000:.1f} ms")
        return ", ".join(parts[:6]) if parts else "nothing recorded (scheduling/GIL/CPU contention)"


PROBE = Probe()


def explain_worst(summary: Dict[str, Any], instants_s: Sequence[float]) -> None:
    """Annotate the worst fires of a lag summary with what overlapped them."""
    if not PROBE._installed or "worst" not in summary:
        return
    summary["worst_explained"] = [
        [i, ms, PROBE.explain(instants_s[i], ms / 1000)] for i, ms in summary["worst"][:5]
    ]


# -- burst: many schedules due at one instant (real clock) ----------------------------


def profile_loop(sched: Any, cpu: bool = False) -> Any:
    """cProfile the timer loop's claim step (cProfile sees one thread: the loop's).

    ``cpu``: the loop thread's CPU time (``time.thread_time``), without the time it waits for the
    GIL while run threads hold it; otherwise wall time.
    """
    import cProfile

    profiler = cProfile.Profile(time.thread_time) if cpu else cProfile.Profile()
    loop = sched._loop  # private: the claim step the loop calls per wake
    process = loop._process

    def profiled(*args: Any) -> Any:
        return profiler.runcall(process, *args)

    loop._process = profiled
    return profiler


def print_profile(profiler: Any, what: str, fires: int) -> None:
    """Top functions by own time, with µs per fire, to stderr (the parent shows it)."""
    import pstats

    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])  # type: ignore[attr-defined]
    err = sys.stderr
    err.write(f"cProfile of {what}: {total * 1000:.1f} ms in all, {total / fires * 1e6:.1f} us per fire\n")
    err.write("  own%   own us/fire  cum us/fire   calls/fire  function (file:line)\n")
    for (path, line, func), (_, ncalls, tt, ct, _) in rows[:30]:
        where = path.replace(ROOT + os.sep, "")
        err.write(
            f"  {100 * tt / total:5.1f}  {tt / fires * 1e6:10.2f}  {ct / fires * 1e6:11.2f}  "
            f"{ncalls / fires:10.2f}  {func} ({where}:{line})\n"
        )


def cpu_at(at_s: float) -> float:
    """The process's CPU time just before the instant ``at_s`` (the burst's CPU is counted from it)."""
    time.sleep(max(0.0, at_s - time.time() - 0.02))
    return time.process_time()


def burst_summary(n: int, at_s: float, extra: Dict[str, Any]) -> Dict[str, Any]:
    starts = sorted(at_s + lag for _, lag in REC.hits)
    out: Dict[str, Any] = {
        "expected": n,
        "ran": len({i for i, _ in REC.hits}),
        "calls": len(REC.hits),
        "log_warnings": TALLY.count,
        "log_samples": TALLY.samples,
    }
    if starts:
        last = starts[-1] - at_s
        out.update(
            first_start_ms=(starts[0] - at_s) * 1000,
            p50_start_ms=(pct(starts, 0.5) - at_s) * 1000,
            last_start_ms=last * 1000,
            start_fires_per_s=len(starts) / max(last, 1e-9),
        )
        if len(starts) >= 20:
            lo, hi = starts[len(starts) // 10], starts[(len(starts) * 9) // 10]
            out["sustained_fires_per_s"] = (len(starts) * 0.8) / max(hi - lo, 1e-9)
    out.update(extra)
    return out


def lite_burst(spec: Dict[str, Any]) -> Dict[str, Any]:
    """n one-shot schedules (schedule_once) due at the same instant; job start times against it."""
    from flowyml_lite import PipelineScheduler

    system, n, directory = spec["system"], spec["n"], spec["dir"]
    sched = PipelineScheduler(lite_config(system, directory))
    per_op = lite_calibrate(system, directory)
    at = calibrated_start(per_op, n)
    at_s, at_dt = at / 1e6, us_to_dt(at)
    t0 = time.perf_counter()
    bad = 0
    for i in range(n):
        schedule = sched.schedule_once(f"b{i:06d}", lite_job(i, at_s), at=at_dt)
        bad += schedule.next_run != at_dt
    setup = time.perf_counter() - t0
    overran = time.time() > at_s - 0.2
    if spec.get("probe", True):
        PROBE.install(sched)
    profiler = profile_loop(sched, spec["profile_loop"] == "cpu") if spec.get("profile_loop") else None
    REC.expect(n)
    sched.start()
    cpu0 = cpu_at(at_s)
    REC.done.wait(timeout=max(0.0, at_s - time.time()) + spec["timeout_run"])
    flushed = sched.wait_for_runs(120)
    cpu_s = time.process_time() - cpu0
    if profiler is not None:
        clock = "CPU time" if spec["profile_loop"] == "cpu" else "wall time"
        print_profile(profiler, f"the loop thread's claim step ({clock}), {n:,} fires at one instant", n)
    recorded_at = time.time()  # every outcome committed (wait_for_runs flushes the group writer)
    stats = sched.store.stats()
    sched.stop()
    extra: Dict[str, Any] = {
        "setup_s": setup,
        "setup_overran": overran,
        "setup_errors": bad,
        "flushed": flushed,
        "recorded_succeeded": stats.succeeded,
        "recorded_other": stats.total - stats.succeeded,
        "all_recorded_ms": (recorded_at - at_s) * 1000,
        "recorded_fires_per_s": stats.succeeded / max(recorded_at - at_s, 1e-9),
        "cpu_us_per_fire": cpu_s / n * 1e6,
        "probe": PROBE.summary(at_s - 0.5, recorded_at),
    }
    return burst_summary(n, at_s, extra)


def aps_burst(spec: Dict[str, Any]) -> Dict[str, Any]:
    system, n, directory = spec["system"], spec["n"], spec["dir"]
    # misfire_grace_time=60 (flowyml_lite's default grace): a slow store shows as time, not as drops.
    sched = aps_scheduler(system, directory, misfire_grace_time=60)
    per_op = aps_calibrate(system, directory)
    at = calibrated_start(per_op, n)
    at_s, run_date = at / 1e6, us_to_dt(at)
    sched.start(paused=True)
    t0 = time.perf_counter()
    for i in range(n):
        sched.add_job(aps_job, "date", run_date=run_date, args=[i, at_s], id=f"b{i:06d}")
    setup = time.perf_counter() - t0
    overran = time.time() > at_s - 0.2
    REC.expect(n)
    sched.resume()
    cpu0 = cpu_at(at_s)
    REC.done.wait(timeout=max(0.0, at_s - time.time()) + spec["timeout_run"])
    cpu_s = time.process_time() - cpu0
    time.sleep(0.2)
    left = len(sched.get_jobs())
    sched.shutdown(wait=True)
    extra = {
        "setup_s": setup,
        "setup_overran": overran,
        "jobs_left_in_store": left,
        "cpu_us_per_fire": cpu_s / n * 1e6,
    }
    return burst_summary(n, at_s, extra)


# -- schedules due together whose jobs block a few milliseconds (I/O, not CPU) -------------------

BLOCKING_SCHEDULES = 20
BLOCKING_PERIOD_S = 0.1
BLOCKING_JOB_S = 0.005


def blocking_summary(lags_ms: List[float], skipped: int, seconds: float) -> Dict[str, Any]:
    lags = sorted(lags_ms)
    return {
        "ran": len(lags),
        "skipped": skipped,
        "expected": int(BLOCKING_SCHEDULES * seconds / BLOCKING_PERIOD_S),
        "p50_ms": pct(lags, 0.5) if lags else None,
        "p99_ms": pct(lags, 0.99) if lags else None,
        "max_ms": lags[-1] if lags else None,
    }


def lite_blocking(spec: Dict[str, Any]) -> Dict[str, Any]:
    """BLOCKING_SCHEDULES interval schedules every 0.1 s, each job sleeping 5 ms; lag of each start."""
    from flowyml_lite import PipelineScheduler, current_run

    sched = PipelineScheduler(lite_config(spec["system"], spec["dir"]))
    lags: List[float] = []

    def job() -> None:
        run = current_run()
        assert run is not None
        lags.append((time.time() - run.fire_time.timestamp()) * 1000)
        time.sleep(BLOCKING_JOB_S)

    for i in range(BLOCKING_SCHEDULES):
        sched.schedule_interval(f"q{i:02d}", job, seconds=BLOCKING_PERIOD_S)
    sched.start()
    time.sleep(1.0)  # the first instants after start() are not the steady state measured
    del lags[:]
    began = time.time()
    time.sleep(spec["seconds"])
    cutoff = datetime.fromtimestamp(began, UTC)
    kept = list(lags)
    sched.stop()
    skipped = sum(
        1
        for i in range(BLOCKING_SCHEDULES)
        for r in sched.run_records(f"q{i:02d}", limit=1000)
        if r.status == "skipped" and r.fire_time >= cutoff
    )
    return blocking_summary(kept, skipped, spec["seconds"])


def aps_blocking(spec: Dict[str, Any]) -> Dict[str, Any]:
    from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED

    sched = aps_scheduler(spec["system"], spec["dir"])
    lags: List[float] = []
    skipped = [0]
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    start_s = start.timestamp()

    def job() -> None:
        now = time.time()
        intended = start_s + math.floor((now - start_s) / BLOCKING_PERIOD_S + 1e-9) * BLOCKING_PERIOD_S
        lags.append((now - intended) * 1000)  # a start over a period late reads as on time: see README
        time.sleep(BLOCKING_JOB_S)

    def count(event: Any) -> None:
        skipped[0] += 1

    sched.add_listener(count, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
    for i in range(BLOCKING_SCHEDULES):
        sched.add_job(job, "interval", seconds=BLOCKING_PERIOD_S, start_date=start, id=f"q{i:02d}")
    sched.start()
    time.sleep(max(0.0, start_s - time.time()) + 1.0)
    del lags[:]
    skipped[0] = 0
    time.sleep(spec["seconds"])
    kept, dropped = list(lags), skipped[0]
    sched.shutdown(wait=True)
    return blocking_summary(kept, dropped, spec["seconds"])


BLOCKING_SYSTEMS = ("lite-memory", "lite-sqlite", "aps-memory")


def bench_blocking(args: argparse.Namespace, tmp: str, say: Report, results: Dict[str, Any]) -> None:
    seconds = 3.0 if args.quick else 10.0
    systems = [s for s in BLOCKING_SYSTEMS if s in args.systems]
    say(
        f"## Blocking jobs: {BLOCKING_SCHEDULES} schedules every {BLOCKING_PERIOD_S:g} s, due together, "
        f"each job blocking {BLOCKING_JOB_S * 1000:g} ms (a short query), {seconds:g} s "
        f"({args.repeat} run(s) each)"
    )
    say()
    out: Dict[str, List[Dict[str, Any]]] = {}
    for system in systems:
        for k in range(args.repeat):
            directory = tempfile.mkdtemp(dir=tmp)
            spec = {"task": "blocking", "system": system, "dir": directory, "seconds": seconds}
            say(f"  ... {system} run {k + 1}")
            out.setdefault(system, []).append(run_child(spec, 120, say))
            shutil.rmtree(directory, ignore_errors=True)
    results["blocking"] = out
    rows = []
    for system in systems:
        for k, r in enumerate(out[system]):
            label = LABELS[system] + (f" #{k + 1}" if args.repeat > 1 else "")
            if "failed" in r:
                rows.append([label, "-", "-", "-", "-", "-"])
                continue
            started = f"{r['ran']:,}/{r['expected']:,}"
            rows.append([label, started, r["skipped"], r["p50_ms"], r["p99_ms"], r["max_ms"]])
    table(say, ["system", "started", "skipped", "lag p50 ms", "lag p99 ms", "lag max ms"], rows)
    say()


# -- a 1 s schedule while 50 HTTP clients hammer the API of the same process --------------


def lite_api(spec: Dict[str, Any]) -> Dict[str, Any]:
    import http.client

    from flowyml_lite import PipelineScheduler
    from flowyml_lite.api.server import ApiServer
    from flowyml_lite.runtime.context import current_run

    system, directory, seconds, clients = spec["system"], spec["dir"], spec["seconds"], spec["clients"]
    sched = PipelineScheduler(lite_config(system, directory))
    for i in range(spec["other_schedules"]):  # something for /api/schedules to list
        sched.schedule_daily(f"daily-{i:03d}", noop, hour=i % 24, minute=i % 60)
    ticks: List[Tuple[float, float]] = []  # (fire instant, lag)

    def tick() -> None:
        ctx = current_run()
        now = time.time()
        if ctx is not None:
            fire = ctx.fire_time.timestamp()
            ticks.append((fire, now - fire))

    sched.schedule_interval("tick", tick, seconds=1)
    PROBE.install(sched)
    threads_kw = {"threads": spec["server_threads"]} if spec.get("server_threads") else {}
    server = ApiServer(sched, port=0, **threads_kw).start()
    sched.start()
    stop = threading.Event()
    statuses: Dict[str, int] = {}
    latencies: List[float] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        paths = ("/api/schedules", "/api/health")
        mine: List[float] = []
        seen: Dict[str, int] = {}
        j = k
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                conn.request("GET", paths[j % 2])
                resp = conn.getresponse()
                resp.read()
                key = str(resp.status)
            except Exception as exc:
                key = type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            mine.append(time.perf_counter() - t0)
            seen[key] = seen.get(key, 0) + 1
            j += 1
        conn.close()
        with lock:
            latencies.extend(mine)
            for key, count in seen.items():
                statuses[key] = statuses.get(key, 0) + count

    if spec.get("client_mode") == "none":  # the baseline: the same scheduler and server, no clients
        t_start = time.time()
        time.sleep(seconds)
        t_end = time.time()
    elif spec.get("client_mode", "threads") == "process":
        # The clients in another process (asyncio, one keep-alive connection each): only the
        # server's own threads share this process's GIL with the scheduler, as with real clients.
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "apiclient",
            json.dumps({"port": server.port, "clients": clients, "seconds": seconds}),
        ]
        t_start = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        t_end = time.time()
        reply = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
        latencies.extend(reply.get("latencies", []))
        statuses.update(reply.get("statuses", {"client failed: " + proc.stderr[-200:]: 1}))
    else:
        threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
        t_start = time.time()
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        stop.set()
        t_end = time.time()
        for thread in threads:
            thread.join(timeout=30)
    sched.wait_for_runs(10)
    history = sched.get_history("tick", limit=1000)
    server.stop()
    sched.stop()
    # Fires expected: every whole second from the first one after the clients started to the last
    # one that had 0.5 s to start before they stopped.
    expected = list(range(math.ceil(t_start), math.floor(t_end - 0.5) + 1))
    by_fire = {round(fire): lag for fire, lag in ticks}
    lags = sorted(by_fire[s] for s in expected if s in by_fire)
    history_status: Dict[str, int] = {}
    for run in history:
        fire = datetime.fromisoformat(str(run["fire_time"])).timestamp() if run.get("fire_time") else None
        if fire is not None and math.ceil(t_start) <= fire <= expected[-1]:
            history_status[run["status"]] = history_status.get(run["status"], 0) + 1
    latencies.sort()
    out: Dict[str, Any] = {
        "expected": len(expected),
        "fired": len(lags),
        "skipped": len(expected) - len(lags),
        "history_statuses": history_status,
        "requests": len(latencies),
        "requests_per_s": len(latencies) / max(t_end - t_start, 1e-9),
        "http_statuses": statuses,
        "log_warnings": TALLY.count,
        "log_samples": TALLY.samples,
        "probe": PROBE.summary(t_start, t_end),
    }
    if lags:
        out.update(p50_ms=pct(lags, 0.5) * 1000, p99_ms=pct(lags, 0.99) * 1000, max_ms=lags[-1] * 1000)
        worst = sorted(((s, by_fire[s]) for s in expected if s in by_fire), key=lambda x: -x[1])[:3]
        out["worst_explained"] = [[s, round(lag * 1000, 2), PROBE.explain(s, lag)] for s, lag in worst]
    if latencies:
        out.update(
            request_p50_ms=pct(latencies, 0.5) * 1000,
            request_p99_ms=pct(latencies, 0.99) * 1000,
            request_max_ms=latencies[-1] * 1000,
        )
    return out


def api_client_main(raw: str) -> None:
    """``scheduler.py apiclient '<json>'``: N asyncio keep-alive clients, GETs for a while; JSON out."""
    import asyncio

    spec = json.loads(raw)
    port, clients, seconds = spec["port"], spec["clients"], spec["seconds"]
    latencies: List[float] = []
    statuses: Dict[str, int] = {}

    async def one(k: int, deadline: float) -> None:
        paths = ("/api/schedules", "/api/health")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        j = k
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            try:
                path = paths[j % 2]
                writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
                head = await reader.readuntil(b"\r\n\r\n")
                status = head.split(b" ", 2)[1].decode()
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                key = status
            except Exception as exc:
                key = type(exc).__name__
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            latencies.append(time.perf_counter() - t0)
            statuses[key] = statuses.get(key, 0) + 1
            j += 1
        writer.close()

    async def main() -> None:
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(one(k, deadline) for k in range(clients)))

    asyncio.run(main())
    print(json.dumps({"latencies": latencies, "statuses": statuses}))


# -- the process executor beside the thread executor, through the scheduler ----------


def lite_executor(spec: Dict[str, Any]) -> Dict[str, Any]:
    """n one-shots of bench/executors.py's no-op (it returns its entry instant as run id) at one instant."""
    import executors as jobs  # bench/executors.py: its no-op job, importable by a child process

    from flowyml_lite import PipelineScheduler, SchedulerConfig

    n, kind = spec["n"], spec["executor"]
    sched = PipelineScheduler(SchedulerConfig(persist_schedules=False))
    at = ceil_ms_us(time.time() + 2.0 + n * 0.001)
    at_s, at_dt = at / 1e6, us_to_dt(at)
    names = [f"x{i:05d}" for i in range(n)]
    for name in names:
        sched.schedule_once(name, jobs.noop, at=at_dt, executor=kind)
    sched.start()
    time.sleep(max(0.0, at_s - time.time()))
    deadline = time.time() + spec["timeout_run"]
    while time.time() < deadline:
        stats = sched.store.stats()
        if stats.total - stats.running >= n:
            break
        time.sleep(0.05)
    sched.wait_for_runs(30)
    sched.stop()
    offset = time.time() - time.monotonic()  # CLOCK_MONOTONIC is shared by every process of the machine
    lags: List[float] = []
    completed: List[float] = []
    statuses: Dict[str, int] = {}
    for name in names:
        for run in sched.store.history(name, 2):
            statuses[run.status] = statuses.get(run.status, 0) + 1
            if run.status == "succeeded" and run.run_id:
                lags.append(float(run.run_id) + offset - at_s)
            if run.completed_at is not None:
                completed.append(run.completed_at.timestamp())
    lags.sort()
    out: Dict[str, Any] = {"expected": n, "executor": kind, "statuses": statuses, "ran": len(lags)}
    if lags:
        out.update(
            first_start_ms=lags[0] * 1000,
            p50_start_ms=pct(lags, 0.5) * 1000,
            last_start_ms=lags[-1] * 1000,
        )
    if completed:
        out["runs_per_s"] = len(completed) / max(max(completed) - at_s, 1e-9)
    return out


CHILD_TASKS: Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]] = {
    "lag": lambda s: {"lite": lite_lag, "aps": aps_lag, "flowyml": flowyml_lag}[s["system"].split("-")[0]](s),
    "throughput": lambda s: {"lite": lite_throughput, "aps": aps_throughput, "flowyml": flowyml_throughput}[
        s["system"].split("-")[0]
    ](s),
    "burst": lambda s: {"lite": lite_burst, "aps": aps_burst}[s["system"].split("-")[0]](s),
    "blocking": lambda s: {"lite": lite_blocking, "aps": aps_blocking}[s["system"].split("-")[0]](s),
    "api": lite_api,
    "executor": lite_executor,
    "load_create": load_create,
    "load_open": load_open,
    "load_start": load_start,
}


def child_main(raw: str) -> None:
    spec = json.loads(raw)
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    root.addHandler(TALLY)
    if spec.get("profile"):
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        result = CHILD_TASKS[spec["task"]](spec)
        profiler.disable()
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats("cumulative").print_stats(35)
        stats.sort_stats("tottime").print_stats(25)
    else:
        result = CHILD_TASKS[spec["task"]](spec)
    emit("RESULT", result)
    sys.stdout.flush()
    os._exit(0)  # peers leave non-daemon threads behind (flowyml's run threads); don't wait for them


# =====================================================================================
# Parent side: run the children, print the tables, check the targets.
# =====================================================================================


class Report:
    """Prints as it goes and keeps the text, so --save writes exactly what was shown."""

    def __init__(self) -> None:
        self.lines: List[str] = []

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)


def run_child(spec: Dict[str, Any], timeout: float, say: Report) -> Dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "child", json.dumps(spec)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        out, err, code = proc.stdout, proc.stderr, proc.returncode
        timed_out = False
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        code, timed_out = None, True
    wall = time.perf_counter() - t0
    result: Optional[Dict[str, Any]] = None
    progress: Optional[Dict[str, Any]] = None
    for line in out.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
        elif line.startswith("PROGRESS "):
            progress = json.loads(line[9:])
    if spec.get("profile") and err:
        say(f"---- cProfile of {spec['task']} {spec['system']} n={spec.get('n')} ----")
        for line in err.splitlines():
            say("  " + line)
    if result is None:
        tail = " | ".join(err.strip().splitlines()[-3:])[-400:]
        why = f"timeout after {timeout:.0f} s" if timed_out else f"exit code {code}"
        result = {"failed": why, "stderr_tail": tail, "last_progress": progress}
    result["wall_s"] = wall
    return result


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(say: Report, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in header]] + [[fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for k, row in enumerate(cells):
        say(
            "  "
            + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        )
        if k == 0:
            say("  " + "  ".join("-" * w for w in widths))


def ratio(peer: Optional[float], ours: Optional[float]) -> str:
    if peer is None or ours is None or ours <= 0:
        return "-"
    value = peer / ours
    return f"{value:.1f}x" if value >= 1 else f"{value:.2g}x"


def failure_note(result: Dict[str, Any]) -> str:
    if "failed" not in result:
        return ""
    note = f"FAILED ({result['failed']})"
    if result.get("last_progress"):
        note += f" last progress {result['last_progress']}"
    if result.get("stderr_tail"):
        note += f"; stderr: {result['stderr_tail']}"
    return note


def bench_lag(args: argparse.Namespace, tmp: str, say: Report, results: Dict[str, Any]) -> None:
    sizes = (1, 100, 1000) if args.quick else (1, 1000, 10000)
    window = 2.0 if args.quick else 10.0
    say(
        f"## 1. Start lag: one-shot fires spread evenly over {window:g} s (1 schedule: "
        f"{args.rounds} sequential one-shots, declared {0.3:g} s ahead while running)"
    )
    say()
    out: Dict[str, Dict[str, Any]] = {}
    for n in sizes:
        for system in args.systems:
            directory = tempfile.mkdtemp(dir=tmp)
            spec = {
                "task": "lag",
                "system": system,
                "n": n,
                "window": window,
                "dir": directory,
                "rounds": args.rounds,
                "flowyml_rounds": 2,
                "round_lead": 0.3,
                "grace": 5.0,
                "profile": args.profile and system.startswith("lite"),
            }
            timeout = 120 + n * 0.02 if system.startswith("lite") else 60 + window + n * 0.012
            if system.startswith("flowyml") or system == "aps-sqlalchemy":
                timeout = 120 + window + n * 0.02
            say(f"  ... {system} n={n:,}")
            out[f"{system}/{n}"] = run_child(spec, timeout, say)
            shutil.rmtree(directory, ignore_errors=True)
    results["lag"] = {"window_s": window, "sizes": sizes, "runs": out}
    say()
    rows = []
    notes = []
    for n in sizes:
        for system in args.systems:
            r = out[f"{system}/{n}"]
            if "failed" in r:
                rows.append([LABELS[system], f"{n:,}", "-", "-", "-", "-", "-", "-", "-", "-"])
                notes.append(f"{system} n={n}: {failure_note(r)}")
                continue
            rows.append(
                [
                    LABELS[system],
                    f"{n:,}",
                    f"{r['fired']:,}/{r['expected']:,}",
                    r["duplicates"],
                    r.get("p50_ms"),
                    r.get("p99_ms"),
                    r.get("max_ms"),
                    r.get("over_1ms"),
                    r.get("over_3ms"),
                    r["log_warnings"],
                ]
            )
            extra = []
            if r.get("setup_overran"):
                extra.append("setup overran the first fire")
            if r.get("setup_errors"):
                extra.append(f"{r['setup_errors']} setup/verification errors")
            if "recorded_succeeded" in r and r["recorded_succeeded"] != r["expected"]:
                extra.append(
                    f"history has {r['recorded_succeeded']} succeeded rows, {r['recorded_other']} other"
                )
            if r["log_warnings"]:
                extra.append("logs: " + " || ".join(r["log_samples"][:2]))
            if extra:
                notes.append(f"{system} n={n}: " + "; ".join(extra))
    table(
        say,
        [
            "system",
            "schedules",
            "fired",
            "dup",
            "p50 ms",
            "p99 ms",
            "max ms",
            ">1 ms",
            ">3 ms",
            "warn/err logs",
        ],
        rows,
    )
    say()
    for note in notes:
        say("  note: " + note)
    say()
    say("  p99 ratio, peer / flowyml_lite (above 1x: flowyml_lite is that many times faster):")
    for n in sizes:
        parts = []
        for ours in LITE_SYSTEMS:
            mine = out.get(f"{ours}/{n}", {})
            for peer in [s for s in args.systems if not s.startswith("lite")]:
                theirs = out.get(f"{peer}/{n}", {})
                if (
                    mine
                    and theirs
                    and ours.split("-")[1] == peer.split("-")[1].replace("sqlalchemy", "sqlite")
                ):
                    parts.append(f"{peer} vs {ours}: {ratio(theirs.get('p99_ms'), mine.get('p99_ms'))}")
        if parts:
            say(f"    n={n:,}: " + ", ".join(parts))
    say()


def bench_throughput(args: argparse.Namespace, tmp: str, say: Report, results: Dict[str, Any]) -> None:
    n = 2000 if args.quick else 20000
    say(f"## 2. Claimed-and-recorded fires per second: {n:,} fires all due at one instant, one process")
    say()
    out: Dict[str, Dict[str, Any]] = {}
    for system in args.systems:
        directory = tempfile.mkdtemp(dir=tmp)
        spec = {
            "task": "throughput",
            "system": system,
            "n": n,
            "dir": directory,
            "timeout_run": 120,
            "profile": args.profile and system == "lite-sqlite",
        }
        timeout = 200 + n * 0.005 if not system.startswith(("flowyml", "aps-sqlalchemy")) else 240 + n * 0.01
        say(f"  ... {system} n={n:,}")
        out[system] = run_child(spec, timeout, say)
        shutil.rmtree(directory, ignore_errors=True)
    results["throughput"] = {"n": n, "runs": out}
    say()
    rows, notes = [], []
    for system in args.systems:
        r = out[system]
        if "failed" in r:
            rows.append([LABELS[system], "-", "-", "-", "-"])
            notes.append(f"{system}: {failure_note(r)}")
            continue
        rows.append(
            [
                LABELS[system],
                f"{r['completed']:,}/{r['expected']:,}",
                r.get("elapsed_s"),
                r.get("fires_per_s"),
                r.get("sustained_fires_per_s"),
            ]
        )
        if r.get("log_warnings"):
            notes.append(
                f"{system}: {r['log_warnings']} warning/error logs: " + " || ".join(r["log_samples"][:2])
            )
        if r.get("statuses") and set(r["statuses"]) != {"succeeded"}:
            notes.append(f"{system}: history statuses {r['statuses']}")
    table(say, ["system", "completed", "seconds", "fires/s", "fires/s (10-90%)"], rows)
    for note in notes:
        say("  note: " + note)
    ours = out.get("lite-sqlite", {}).get("fires_per_s")
    for peer in [s for s in args.systems if not s.startswith("lite")]:
        theirs = out.get(peer, {}).get("fires_per_s")
        if ours and theirs:
            say(f"  flowyml_lite SQLite / {peer}: {ours / theirs:.1f}x the fires per second")
    say()


def bench_load(args: argparse.Namespace, tmp: str, say: Report, results: Dict[str, Any]) -> None:
    n = 5000 if args.quick else 100000
    say(f"## 3. Load: {n:,} persisted schedules, fresh processes")
    say()
    out: Dict[str, Dict[str, Any]] = {}
    load_timeout = 60 if args.quick else 200
    for system in ("lite", "lite-mixed", "aps", "flowyml"):
        if system.startswith("lite") and not any(s.startswith("lite") for s in args.systems):
            continue
        if system == "aps" and "aps-sqlalchemy" not in args.systems:
            continue
        if system == "flowyml" and "flowyml-sqlite" not in args.systems:
            continue
        directory = tempfile.mkdtemp(dir=tmp)
        db = os.path.join(directory, f"{system}.db")
        base = {"system": system, "n": n, "db": db, "api_sample": 500 if args.quick else 1000}
        say(f"  ... {system}: create")
        created = run_child(dict(base, task="load_create"), 900, say)
        size = os.path.getsize(db) if os.path.exists(db) else 0
        created["db_mb"] = size / 1e6
        say(f"  ... {system}: (a) open + list")
        opened = run_child(dict(base, task="load_open"), load_timeout, say)
        say(f"  ... {system}: (b) re-declare + start")
        started = run_child(
            dict(base, task="load_start", profile=args.profile and system == "lite"), load_timeout, say
        )
        out[system] = {"create": created, "open": opened, "start": started}
        shutil.rmtree(directory, ignore_errors=True)
    results["load"] = {"n": n, "runs": out}
    say()
    rows, notes = [], []
    for system, r in out.items():
        c, a, b = r["create"], r["open"], r["start"]
        create = f"{fmt(c.get('create_s'))} s" if "failed" not in c else "FAILED"
        if c.get("api_estimate_s") is not None:
            create += " (bulk)"
            notes.append(
                f"{system} create: bulk SQL insert of rows in the library's own format; through its API "
                f"{fmt(c['api_per_schedule_ms'])} ms per schedule (measured on {c.get('api_sample', '?')}) "
                f"= ~{fmt(c['api_estimate_s'], 0)} s for {n:,}"
            )
        rows.append(
            [
                LABELS[system],
                create,
                a.get("load_s"),
                a.get("max_rss_mb"),
                b.get("load_s"),
                b.get("max_rss_mb"),
                a.get("import_s"),
                a.get("rss_after_import_mb"),
            ]
        )
        for label, part in (("create", c), ("(a)", a), ("(b)", b)):
            if "failed" in part:
                note = failure_note(part)
                progress = part.get("last_progress")
                if progress and progress.get("done"):
                    rate = progress["done"] / max(progress["elapsed_s"], 1e-9)
                    note += f" -> ~{n / rate:,.0f} s for all {n:,} at that rate"
                notes.append(f"{system} {label}: {note}")
            elif label != "create" and part.get("listed", part.get("expected")) != part.get("expected"):
                notes.append(f"{system} {label}: listed {part.get('listed')} of {part.get('expected')}")
    table(
        say,
        [
            "system",
            "create",
            "(a) open+list s",
            "(a) max RSS MB",
            "(b) redeclare+start s",
            "(b) max RSS MB",
            "import s",
            "RSS after import MB",
        ],
        rows,
    )
    say()
    for label, key in (("(a)", "open"), ("(b)", "start")):
        seen: Dict[str, List[str]] = {}
        for system, r in out.items():
            seen.setdefault(r[key].get("what", "-"), []).append(system)
        say(f"  {label} = " + "; ".join(f"{', '.join(names)}: {what}" for what, names in seen.items()))
    for system, r in out.items():
        if r["start"].get("cpu_s") is not None:
            say(
                f"  note: {system} (b) used {r['start']['cpu_s']:.2f} s of CPU "
                f"in {fmt(r['start'].get('load_s'))} s"
            )
    for note in notes:
        say("  note: " + note)
    say()


BURST_SYSTEMS = ("lite-memory", "lite-sqlite", "aps-memory", "aps-sqlalchemy")


def probe_note(r: Dict[str, Any]) -> str:
    """One line from a child's Probe summary: loop wall/CPU, store calls, GC."""
    p = r.get("probe") or {}
    parts = []
    wake = p.get("wake")
    if wake:
        parts.append(
            f"loop claim step {wake['total_ms']:.0f} ms wall / {wake['cpu_ms']:.0f} ms CPU "
            f"in {wake['count']} wake(s)"
        )
    for what in ("claim_many", "finish_runs"):
        c = p.get(what)
        if c:
            parts.append(
                f"{what} x{c['count']} {c['total_ms']:.1f} ms (max {c['max_ms']:.1f} ms, "
                f"batch mean {c['mean_batch']:.0f} max {c['max_batch']})"
            )
    g = p.get("gc")
    if g:
        parts.append(
            f"gc x{g['count']} (gen0/1/2 {g['by_generation']['0']}/{g['by_generation']['1']}/"
            f"{g['by_generation']['2']}) {g['total_ms']:.1f} ms, max {g['max_ms']:.1f} ms, CPU by generation "
            + "/".join(f"{v:.1f}" for v in g.get("cpu_ms_by_generation", {}).values())
            + " ms"
        )
    return "; ".join(parts)


def bench_burst(args: argparse.Namespace, tmp: str, say: Report, results: Dict[str, Any]) -> None:
    sizes = (100, 1000) if args.quick else (1000, 10000)
    systems = [s for s in BURST_SYSTEMS if s in args.systems]
    say(
        f"## 4. Burst: {' and '.join(f'{n:,}' for n in sizes)} one-shot schedules due at ONE instant, "
        f"trivial jobs, real clock ({args.repeat} run(s) each)"
    )
    say()
    out: Dict[str, List[Dict[str, Any]]] = {}
    for n in sizes:
        for system in systems:
            if system == "aps-sqlalchemy" and n > 1000 and not args.aps_sqlite_big:
                continue  # ~100 fires/s: 10,000 would take minutes (--aps-sqlite-big to run it)
            for k in range(args.repeat):
                directory = tempfile.mkdtemp(dir=tmp)
                spec = {"task": "burst", "system": system, "n": n, "dir": directory, "timeout_run": 300}
                say(f"  ... {system} n={n:,} run {k + 1}")
                out.setdefault(f"{system}/{n}", []).append(run_child(spec, 600, say))
                shutil.rmtree(directory, ignore_errors=True)
    results["burst"] = {"sizes": sizes, "runs": out}
    say()
    rows, notes = [], []
    for n in sizes:
        for system in systems:
            for k, r in enumerate(out.get(f"{system}/{n}", [])):
                label = f"{LABELS[system]}" + (f" #{k + 1}" if args.repeat > 1 else "")
                if "failed" in r:
                    rows.append([label, f"{n:,}"] + ["-"] * 8)
                    notes.append(f"{system} n={n} #{k + 1}: {failure_note(r)}")
                    continue
                recorded = r.get("recorded_succeeded")
                rows.append(
                    [
                        label,
                        f"{n:,}",
                        f"{r['ran']:,}/{n:,}",
                        r.get("first_start_ms"),
                        r.get("p50_start_ms"),
                        r.get("last_start_ms"),
                        r.get("start_fires_per_s"),
                        r.get("all_recorded_ms"),
                        f"{recorded:,}" if recorded is not None else "no history",
                        r.get("cpu_us_per_fire"),
                    ]
                )
                extra = []
                if r.get("setup_overran"):
                    extra.append("setup overran the instant")
                if r.get("setup_errors"):
                    extra.append(f"{r['setup_errors']} schedules not planned at the instant")
                if r.get("calls", n) != r.get("ran", n):
                    extra.append(f"{r['calls'] - r['ran']} duplicate calls")
                if r.get("log_warnings"):
                    extra.append("logs: " + " || ".join(r["log_samples"][:2]))
                if r.get("probe"):
                    extra.append(probe_note(r))
                if extra:
                    notes.append(f"{system} n={n:,} #{k + 1}: " + "; ".join(extra))
    table(
        say,
        [
            "system",
            "schedules",
            "ran",
            "first start ms",
            "p50 start ms",
            "LAST start ms",
            "fires/s (starts)",
            "all recorded ms",
            "rows recorded",
            "CPU us/fire",
        ],
        rows,
    )
    say()
    say("  first/p50/LAST start = job entry (time.time()) minus the instant; fires/s = fires / LAST start;")
    say("  all recorded = when wait_for_runs() returned (every outcome committed) minus the instant;")
    say("  CPU us/fire = the process's CPU time (all threads) from the instant to the last start")
    say("  (APScheduler) or to all recorded (flowyml_lite), per fire: what a fire costs, whatever else")
    say("  loads the machine.")
    for note in notes:
        say("  note: " + note)
    say()


def bench_spread(args: argparse.Namespace, tmp: str, say: Report, results: Dict[str, Any]) -> None:
    n, window = (1000, 2.0) if args.quick else (10000, 10.0)
    systems = [s for s in ("lite-memory", "lite-sqlite", "aps-memory", "aps-sqlalchemy") if s in args.systems]
    say(
        f"## 5. Spread: {n:,} one-shot fires evenly over {window:g} s ({n / window:,.0f} fires/s), "
        f"{args.spread_runs} consecutive runs of flowyml_lite, 1 of APScheduler"
    )
    say()
    out: Dict[str, List[Dict[str, Any]]] = {}
    for system in systems:
        runs = args.spread_runs if system.startswith("lite") else 1
        for k in range(runs):
            directory = tempfile.mkdtemp(dir=tmp)
            spec = {
                "task": "lag",
                "system": system,
                "n": n,
                "window": window,
                "dir": directory,
                "grace": 5.0,
                "probe": system.startswith("lite"),
            }
            say(f"  ... {system} run {k + 1}")
            out.setdefault(system, []).append(run_child(spec, 300 + n * 0.02, say))
            shutil.rmtree(directory, ignore_errors=True)
    results["spread"] = {"n": n, "window_s": window, "runs": out}
    say()
    rows, notes = [], []
    for system in systems:
        for k, r in enumerate(out.get(system, [])):
            label = f"{LABELS[system]} #{k + 1}"
            if "failed" in r:
                rows.append([label] + ["-"] * 7)
                notes.append(f"{system} #{k + 1}: {failure_note(r)}")
                continue
            rows.append(
                [
                    label,
                    f"{r['fired']:,}/{r['expected']:,}",
                    r["duplicates"],
                    r.get("p50_ms"),
                    r.get("p99_ms"),
                    r.get("max_ms"),
                    r.get("over_1ms"),
                    r.get("over_3ms"),
                ]
            )
            extra = []
            if "recorded_succeeded" in r and r["recorded_succeeded"] != r["expected"]:
                extra.append(
                    f"history has {r['recorded_succeeded']} succeeded rows, {r['recorded_other']} other"
                )
            if r.get("setup_overran"):
                extra.append("setup overran the first fire")
            if r.get("probe"):
                extra.append(probe_note(r))
            for i, ms, why in r.get("worst_explained", [])[:3]:
                extra.append(f"fire {i} late {ms} ms: {why}")
            if extra:
                notes.append(f"{system} #{k + 1}: " + "; ".join(extra))
    table(say, ["system", "fired", "dup", "p50 ms", "p99 ms", "max ms", ">1 ms", ">3 ms"], rows)
    say()
    for note in notes:
        say("  note: " + note)
    say()


def bench_api(args: argparse.Namespace, tmp: str, say: Report, results: Dict[str, Any]) -> None:
    seconds = 8.0 if args.quick else 30.0
    systems = [s for s in LITE_SYSTEMS if s in args.systems]
    modes = ["none", "process", "threads"] if args.api_clients == "both" else [args.api_clients]
    say(
        f"## 6. A 1 s interval schedule while {args.clients} HTTP clients (keep-alive) GET /api/schedules "
        f"and /api/health of an ApiServer in the scheduler's process, for {seconds:g} s; clients in "
        + " / ".join(
            {
                "none": "none (baseline)",
                "process": "another process (asyncio)",
                "threads": "this process (threads)",
            }[m]
            for m in modes
        )
    )
    say(f"  ApiServer handler threads: {args.api_threads or 'its default'}")
    say()
    out: Dict[str, List[Dict[str, Any]]] = {}
    for system, mode in [(s, m) for m in modes for s in systems]:
        for k in range(args.repeat):
            directory = tempfile.mkdtemp(dir=tmp)
            spec = {
                "task": "api",
                "system": system,
                "dir": directory,
                "seconds": seconds,
                "clients": args.clients,
                "other_schedules": 100,
                "client_mode": mode,
                "server_threads": args.api_threads,
            }
            say(f"  ... {system}, clients in {mode}, run {k + 1}")
            out.setdefault(f"{system}/{mode}", []).append(run_child(spec, 120 + seconds, say))
            shutil.rmtree(directory, ignore_errors=True)
    results["api"] = {"seconds": seconds, "clients": args.clients, "runs": out}
    say()
    rows, notes = [], []
    for key in out:
        system, mode = key.split("/")
        for k, r in enumerate(out[key]):
            label = f"{LABELS[system]}, clients: {mode} #{k + 1}"
            if "failed" in r:
                rows.append([label] + ["-"] * 8)
                notes.append(f"{system}, clients: {mode} #{k + 1}: {failure_note(r)}")
                continue
            rows.append(
                [
                    label,
                    f"{r['fired']}/{r['expected']}",
                    r["skipped"],
                    r.get("p50_ms"),
                    r.get("p99_ms"),
                    r.get("max_ms"),
                    r.get("requests_per_s"),
                    r.get("request_p50_ms"),
                    r.get("request_p99_ms"),
                ]
            )
            extra = [f"HTTP {r['http_statuses']}", f"history {r['history_statuses']}"]
            if r.get("probe"):
                extra.append(probe_note(r))
            for s, ms, why in r.get("worst_explained", [])[:2]:
                extra.append(f"fire {s} late {ms} ms: {why}")
            if r.get("log_warnings"):
                extra.append("logs: " + " || ".join(r["log_samples"][:2]))
            notes.append(f"{system}, clients: {mode} #{k + 1}: " + "; ".join(extra))
    table(
        say,
        [
            "system",
            "fired",
            "skipped",
            "lag p50 ms",
            "lag p99 ms",
            "lag max ms",
            "requests/s",
            "request p50 ms",
            "request p99 ms",
        ],
        rows,
    )
    say()
    for note in notes:
        say("  note: " + note)
    say()


def bench_executors(args: argparse.Namespace, tmp: str, say: Report, results: Dict[str, Any]) -> None:
    sizes = {"thread": 200 if args.quick else 1000, "process": 20 if args.quick else 100}
    say(
        "## 7. Executors through the scheduler: one-shots of bench/executors.py's no-op due at one "
        "instant, memory store, max_concurrent_runs=10"
    )
    say()
    out: Dict[str, List[Dict[str, Any]]] = {}
    for kind, n in sizes.items():
        for k in range(args.repeat):
            spec = {"task": "executor", "executor": kind, "n": n, "timeout_run": 240}
            say(f"  ... executor={kind} n={n} run {k + 1}")
            out.setdefault(kind, []).append(run_child(spec, 300, say))
    results["executors"] = {"runs": out}
    say()
    rows = []
    for kind in sizes:
        for k, r in enumerate(out[kind]):
            if "failed" in r:
                rows.append([f'executor="{kind}" #{k + 1}', "-", "-", "-", "-", "-"])
                say("  note: " + failure_note(r))
                continue
            rows.append(
                [
                    f'executor="{kind}" #{k + 1}',
                    f"{r['ran']}/{r['expected']}",
                    r.get("runs_per_s"),
                    r.get("first_start_ms"),
                    r.get("p50_start_ms"),
                    r.get("last_start_ms"),
                ]
            )
    table(say, ["executor", "ran", "runs/s", "first start ms", "p50 start ms", "last start ms"], rows)
    thread = best(out.get("thread", []), "runs_per_s", high=True)
    proc = best(out.get("process", []), "runs_per_s", high=True)
    if thread and proc:
        say(f"  process / thread: {proc / thread:.3g}x the runs per second (1/{thread / proc:.0f})")
    say("  The executors alone (no scheduler): python bench/executors.py (bench/results/executors-*.txt).")
    say()


def best(runs: List[Dict[str, Any]], key: str, high: bool = False) -> Optional[float]:
    values = [r[key] for r in runs if r.get(key) is not None]
    if not values:
        return None
    return max(values) if high else min(values)


def worst(runs: List[Dict[str, Any]], key: str, high: bool = False) -> Optional[float]:
    values = [r[key] for r in runs if r.get(key) is not None]
    if not values:
        return None
    return min(values) if high else max(values)


def check_fire_targets(results: Dict[str, Any], say: Report, quick: bool) -> None:
    """The burst / spread / API / re-declare targets: measured (worst of the runs), the peer, met or not."""
    say(
        "## Targets: bursts, spread, API load, re-declare" + (" -- QUICK RUN: smaller sizes" if quick else "")
    )
    say()
    say("  Worst of this run's repetitions; ratio = APScheduler / flowyml_lite for times, flowyml_lite /")
    say("  APScheduler for rates (above 1x: flowyml_lite is better).")
    say()
    rows: List[List[Any]] = []
    verdicts: List[Dict[str, Any]] = []
    burst = results.get("burst", {}).get("runs", {})
    sizes = results.get("burst", {}).get("sizes", ())

    def add(
        target: str, ours: Optional[float], unit: str, limit: float, peer: Optional[float], higher: bool
    ) -> None:
        met = ours is not None and (ours >= limit if higher else ours <= limit)
        if peer is not None and ours:
            r = ours / peer if higher else peer / ours
            rtext = f"{r:.2f}x"
        else:
            rtext = "-"
        rows.append(
            [
                target,
                f"{fmt(ours)} {unit}" if ours is not None else "-",
                f"{fmt(peer)} {unit}" if peer is not None else "-",
                rtext,
                "met" if met else "NOT MET",
            ]
        )
        verdicts.append({"target": target, "measured": ours, "peer": peer, "met": met})

    if sizes:
        small, big = sizes[0], sizes[-1]
        add(
            f"{small:,} at one instant, memory: LAST start <= 20 ms",
            worst(burst.get(f"lite-memory/{small}", []), "last_start_ms"),
            "ms",
            20,
            worst(burst.get(f"aps-memory/{small}", []), "last_start_ms"),
            False,
        )
        add(
            f"{small:,} at one instant, SQLite claimed+recorded: LAST start <= 40 ms",
            worst(burst.get(f"lite-sqlite/{small}", []), "last_start_ms"),
            "ms",
            40,
            worst(burst.get(f"aps-sqlalchemy/{small}", []), "last_start_ms"),
            False,
        )
        add(
            f"{small:,} at one instant, SQLite: all recorded <= 40 ms (stricter reading)",
            worst(burst.get(f"lite-sqlite/{small}", []), "all_recorded_ms"),
            "ms",
            40,
            None,
            False,
        )
        add(
            f"{big:,} at one instant, memory: >= 40,000 fires/s",
            worst(burst.get(f"lite-memory/{big}", []), "start_fires_per_s", True),
            "fires/s",
            40000,
            worst(burst.get(f"aps-memory/{big}", []), "start_fires_per_s", True),
            True,
        )
        add(
            f"{big:,} at one instant, SQLite: >= 10,000 claimed-and-recorded fires/s",
            worst(burst.get(f"lite-sqlite/{big}", []), "recorded_fires_per_s", True),
            "fires/s",
            10000,
            worst(burst.get(f"aps-sqlalchemy/{big}", []), "start_fires_per_s", True),
            True,
        )
    spread = results.get("spread", {}).get("runs", {})
    rate = results.get("spread", {}).get("n", 0) / results.get("spread", {}).get("window_s", 1.0)
    for system, limit in (("lite-memory", 1.0), ("lite-sqlite", 3.0)):
        runs = spread.get(system)
        if runs:
            peer = "aps-memory" if system == "lite-memory" else "aps-sqlalchemy"
            clean = all(
                "failed" not in r and r["fired"] == r["expected"] and r["duplicates"] == 0 for r in runs
            )
            add(
                f"spread {results['spread']['n']:,} @ {rate:,.0f}/s, "
                f"{system.split('-')[1]}: p99 <= {limit:g} ms, "
                f"all {len(runs)} runs" + ("" if clean else " (some fires missing/duplicated!)"),
                worst(runs, "p99_ms"),
                "ms",
                limit,
                worst(spread.get(peer, []), "p99_ms"),
                False,
            )
            rows.append(
                [
                    f"  (max start lag over the {len(runs)} runs, {system.split('-')[1]})",
                    f"{fmt(worst(runs, 'max_ms'))} ms",
                    f"{fmt(worst(spread.get(peer, []), 'max_ms'))} ms",
                    "",
                    "",
                ]
            )
    api = results.get("api", {}).get("runs", {})
    for key, runs in api.items():
        system = key.replace("/", "-")
        add(
            f"{results['api']['clients']} API clients ({system.split('-')[2]}), {system.split('-')[1]}: "
            "1 s schedule lag p99 <= 10 ms",
            worst(runs, "p99_ms"),
            "ms",
            10,
            None,
            False,
        )
        add(
            f"{results['api']['clients']} API clients ({system.split('-')[2]}), {system.split('-')[1]}: "
            "fires skipped == 0",
            worst(runs, "skipped"),
            "",
            0,
            None,
            False,
        )
    load = results.get("load", {}).get("runs", {})
    for system in ("lite", "lite-mixed"):
        part = load.get(system, {}).get("start")
        if part:
            n = results["load"]["n"]
            peer = load.get("aps", {}).get("start", {})
            add(
                f"re-declare {n:,} ({system}) + start(): <= 2 s",
                part.get("load_s"),
                "s",
                2.0,
                peer.get("load_s"),
                False,
            )
            add(
                f"re-declare {n:,} ({system}) + start(): max RSS <= 200 MB",
                part.get("max_rss_mb"),
                "MB",
                200,
                peer.get("max_rss_mb"),
                False,
            )
    if rows:
        table(say, ["target", "flowyml_lite", "APScheduler (same run)", "ratio", "verdict"], rows)
    results["fire_targets"] = verdicts
    say()


def check_targets(results: Dict[str, Any], say: Report, quick: bool) -> None:
    say("## Targets (issue 3)" + (" -- QUICK RUN: sizes are smaller than the targets'" if quick else ""))
    say()
    lines: List[Tuple[str, str, str]] = []
    lag = results.get("lag", {}).get("runs", {})
    big = max(results.get("lag", {}).get("sizes", (0,)))
    for system, limit in (("lite-memory", 1.0), ("lite-sqlite", 3.0)):
        r = lag.get(f"{system}/{big}")
        if not r:
            continue
        if "failed" in r:
            lines.append(
                (
                    f"start lag p99 <= {limit:g} ms, {LABELS[system]}, {big:,} schedules",
                    "NOT MET",
                    failure_note(r),
                )
            )
            continue
        dropped = r["expected"] - r["fired"]
        recorded_ok = r.get("recorded_succeeded", r["expected"]) == r["expected"]
        ok = r.get("p99_ms", 1e9) <= limit and dropped == 0 and r["duplicates"] == 0 and recorded_ok
        detail = (
            f"p99 {fmt(r.get('p99_ms'))} ms (p50 {fmt(r.get('p50_ms'))}, max {fmt(r.get('max_ms'))}), "
            f"dropped {dropped}, duplicates {r['duplicates']}"
        )
        if "recorded_succeeded" in r:
            detail += f", {r['recorded_succeeded']:,} succeeded rows recorded"
        lines.append(
            (
                f"start lag p99 <= {limit:g} ms, nothing dropped: {LABELS[system]}, {big:,} schedules",
                "met" if ok else "NOT MET",
                detail,
            )
        )
    t = results.get("throughput", {}).get("runs", {}).get("lite-sqlite")
    if t:
        rate = t.get("fires_per_s")
        ok = rate is not None and rate >= 2000 and t.get("completed") == t.get("expected")
        lines.append(
            (
                ">= 2,000 claimed-and-recorded fires/s, SQLite, one process",
                "met" if ok else "NOT MET",
                failure_note(t)
                or f"{fmt(rate, 0)} fires/s overall, {fmt(t.get('sustained_fires_per_s'), 0)} "
                f"in the 10-90% span; {t.get('completed'):,} of {t.get('expected'):,}",
            )
        )
    load = results.get("load", {}).get("runs", {})
    for system in ("lite", "lite-mixed"):
        r = load.get(system)
        if not r:
            continue
        for label, part in (("(a) open+list", r["open"]), ("(b) re-declare+start", r["start"])):
            secs, rss = part.get("load_s"), part.get("max_rss_mb")
            ok = secs is not None and rss is not None and secs <= 2.0 and rss <= 200
            lines.append(
                (
                    f"{results['load']['n']:,} schedules load <= 2 s within <= 200 MB: {system} {label}",
                    "met" if ok else "NOT MET",
                    failure_note(part) or f"{fmt(secs)} s, max RSS {fmt(rss, 0)} MB",
                )
            )
    for what, verdict, detail in lines:
        say(f"  [{verdict}] {what}: {detail}")
    results["targets"] = [{"target": w, "verdict": v, "detail": d} for w, v, d in lines]
    say()


def environment(say: Report) -> Dict[str, Any]:
    def version(module: str) -> str:
        try:
            from importlib.metadata import version as v

            return v(module)
        except Exception:
            return "not installed"

    try:
        commit = subprocess.run(
            ["git", "-C", ROOT, "log", "-1", "--format=%h", "--", "flowyml_lite"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()  # the last commit that changed the package, not whatever HEAD is
        dirty = subprocess.run(
            ["git", "-C", ROOT, "status", "--porcelain", "--", "flowyml_lite"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        if dirty:  # a run on a working tree others are editing: say so, or the commit misleads
            commit += f" + uncommitted changes in {len(dirty.splitlines())} file(s)"
    except Exception:
        commit = "?"
    snapshot = os.path.join(ROOT, ".bench-commit")  # a `git archive` copy of a commit (see README)
    if os.path.exists(snapshot):
        with open(snapshot) as f:
            commit = f"{f.read().strip()} (snapshot of that commit in {ROOT})"
    env = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "flowyml_lite_commit": commit,
        "apscheduler": version("apscheduler"),
        "sqlalchemy": version("sqlalchemy"),
        "flowyml": version("flowyml"),
        "sqlite": __import__("sqlite3").sqlite_version,
    }
    say(f"# Scheduler benchmark, {env['when']}")
    say(
        f"  Python {env['python']} on {env['platform']}, {env['cpus']} CPUs, load average at start "
        f"{env['loadavg_start']}; SQLite {env['sqlite']}"
    )
    if os.environ.get("FLOWYML_BENCH_CONFIG"):
        say(f"  flowyml_lite SchedulerConfig settings added: {os.environ['FLOWYML_BENCH_CONFIG']}")
    say(
        f"  flowyml_lite @ {commit}; APScheduler {env['apscheduler']} (SQLAlchemy {env['sqlalchemy']}); "
        f"flowyml {env['flowyml']}"
    )
    say()
    return env


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark flowyml_lite's scheduler against its peers.")
    parser.add_argument("--quick", action="store_true", help="small sizes and a 2 s window: a smoke run")
    parser.add_argument(
        "--only",
        choices=("lag", "throughput", "load", "burst", "spread", "blocking", "api", "executors"),
        action="append",
        help="run only this part (repeatable)",
    )
    parser.add_argument(
        "--systems",
        default=",".join(LITE_SYSTEMS + APS_SYSTEMS + FLOWYML_SYSTEMS),
        help="comma-separated subset of: " + ", ".join(LITE_SYSTEMS + APS_SYSTEMS + FLOWYML_SYSTEMS),
    )
    parser.add_argument("--rounds", type=int, default=20, help="one-shots in the 1-schedule lag case")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each burst / api / executors row")
    parser.add_argument("--spread-runs", type=int, default=5, help="consecutive flowyml_lite spread runs")
    parser.add_argument("--clients", type=int, default=50, help="HTTP clients of the api part")
    parser.add_argument(
        "--api-threads", type=int, default=0, help="ApiServer(threads=...) in the api part (0: its default)"
    )
    parser.add_argument(
        "--api-clients",
        choices=("none", "process", "threads", "both"),
        default="both",
        help="api part: clients in another process (asyncio), threads of this process, none, or all three",
    )
    parser.add_argument(
        "--aps-sqlite-big",
        action="store_true",
        help="also run APScheduler SQLAlchemy with 10,000 at one instant",
    )
    parser.add_argument("--tag", default="", help="suffix of the --save file names, e.g. burst")
    parser.add_argument("--profile", action="store_true", help="cProfile the flowyml_lite children (slower)")
    parser.add_argument("--save", action="store_true", help="write the report and raw JSON to bench/results/")
    args = parser.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(args.systems) - set(LITE_SYSTEMS + APS_SYSTEMS + FLOWYML_SYSTEMS)
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    parts = args.only or ["lag", "throughput", "load", "burst", "spread", "blocking", "api", "executors"]
    say = Report()
    results: Dict[str, Any] = {"environment": environment(say), "quick": args.quick}
    tmp = tempfile.mkdtemp(prefix="flowyml_lite-bench-")
    try:
        if "lag" in parts:
            bench_lag(args, tmp, say, results)
        if "throughput" in parts:
            bench_throughput(args, tmp, say, results)
        if "load" in parts:
            bench_load(args, tmp, say, results)
        if "burst" in parts:
            bench_burst(args, tmp, say, results)
        if "spread" in parts:
            bench_spread(args, tmp, say, results)
        if "blocking" in parts:
            bench_blocking(args, tmp, say, results)
        if "api" in parts:
            bench_api(args, tmp, say, results)
        if "executors" in parts:
            bench_executors(args, tmp, say, results)
        if {"lag", "throughput", "load"} & set(parts):
            check_targets(results, say, args.quick)
        if {"burst", "spread", "api", "load"} & set(parts):
            check_fire_targets(results, say, args.quick)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_end = os.getloadavg() if hasattr(os, "getloadavg") else None
    results["environment"]["loadavg_end"] = load_end
    say(f"  load average at end {load_end}")
    if args.save:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        tag = f"-{args.tag}" if args.tag else "-" + "-".join(parts) if args.only else ""
        name = f"scheduler-{stamp}{tag}{'-quick' if args.quick else ''}"
        directory = os.path.join(ROOT, "bench", "results")
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, name + ".txt"), "w") as f:
            f.write("\n".join(say.lines) + "\n")
        with open(os.path.join(directory, name + ".json"), "w") as f:
            json.dump(results, f, indent=1, default=str)
        print(f"saved bench/results/{name}.txt and .json")
    return 0


def pyspy_top(path: str, thread: Optional[str] = None, lines: int = 30) -> None:
    """Own time per line and inclusive time per function of a ``py-spy record -f raw`` file."""
    import collections
    import re

    pattern = re.compile(thread) if thread else None
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as f:
        for raw in f:
            stack, _, count = raw.rstrip().rpartition(" ")
            frames = stack.split(";")
            if pattern is not None and not pattern.search(frames[0]):
                continue
            n = int(count)
            total += n
            threads[re.sub(r" ?\(\d+\)", "", frames[0])] += n
            if len(frames) < 2:
                continue
            own[frames[-1]] += n
            for func in {re.sub(r":\d+\)$", ")", frame) for frame in frames[1:]}:
                inclusive[func] += n
    print(f"{total} samples; threads: {dict(threads.most_common(8))}")
    print("own time (line):")
    for frame, n in own.most_common(lines):
        print(f"  {100 * n / max(total, 1):5.1f}%  {frame}")
    print("inclusive time (function):")
    for frame, n in inclusive.most_common(lines + 15):
        print(f"  {100 * n / max(total, 1):5.1f}%  {frame}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "child":
        child_main(sys.argv[2])
    if len(sys.argv) == 3 and sys.argv[1] == "apiclient":
        api_client_main(sys.argv[2])
        sys.exit(0)
    if len(sys.argv) in (3, 4) and sys.argv[1] == "pyspy-top":
        pyspy_top(sys.argv[2], sys.argv[3] if len(sys.argv) == 4 else None)
        sys.exit(0)
    sys.exit(main())
