"""``GET /metrics``: the scheduler in the Prometheus text format (version 0.0.4).

Two kinds of numbers. Counters kept in this process (``RunMetrics``): runs by final status per
schedule, the last success and failure instants, a start-lag histogram. They only go up (a restart
starts them at zero again, which Prometheus' ``rate()`` understands) and do not depend on history,
which is pruned. Gauges read from the store at each scrape: schedules, their next fire, runs in flight.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from datetime import datetime
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from ..errors import StoreError
from .overview import store_answered

_STATUSES = ("running", "degraded", "stopped")
#: Upper bounds of the start-lag histogram, in seconds (fire instant to job start).
LAG_BUCKETS: Tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_FAILURES = ("failed", "timed_out", "lost")


class _Lines(List[str]):
    """Output lines, with the HELP and TYPE of each metric written before its first sample."""

    def __init__(self) -> None:
        super().__init__()
        self.described: Set[str] = set()

    def describe(self, name: str, kind: str, help_text: str) -> None:
        if name not in self.described:
            self.described.add(name)
            self.append(f"# HELP {name} {help_text}")
            self.append(f"# TYPE {name} {kind}")


def _line(
    out: _Lines, name: str, kind: str, help_text: str, value: Optional[float], labels: str = ""
) -> None:
    if value is None:
        return
    out.describe(name, kind, help_text)
    out.append(f"{name}{labels} {_number(value)}")


def _number(value: float) -> str:
    value = float(value)
    if value == float("inf"):
        return "+Inf"
    return repr(value)  # the shortest text read back as the same float: "0.005", not "0.0050000000000000001"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _timestamp(text: Any) -> float:
    """Unix time of an ISO 8601 instant from a history entry; now when it is missing or unreadable."""
    if isinstance(text, datetime):
        return text.timestamp()
    if isinstance(text, str):
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is not None:
                return moment.timestamp()
        except ValueError:
            pass
    return time.time()


class RunMetrics:
    """Counters of finished runs, kept in memory: thread-safe, never decreasing.

    ``observe(entry)`` takes a history entry (``schedule_name``, ``status``, ``start_lag_seconds``,
    ``completed_at``) once per final outcome of a run; the runtime calls it. ``render(out)`` writes
    the Prometheus samples.
    """

    def __init__(self, buckets: Sequence[float] = LAG_BUCKETS) -> None:
        self._lock = threading.Lock()
        self._buckets = tuple(sorted(float(b) for b in buckets))
        self._runs: Dict[Tuple[str, str], int] = {}
        self._last_success: Dict[str, float] = {}
        self._last_failure: Dict[str, float] = {}
        self._lag_counts = [0] * (len(self._buckets) + 1)  # the last one: above every bound (+Inf)
        self._lag_sum = 0.0
        self._lag_count = 0

    def observe(self, entry: Mapping[str, Any]) -> None:
        """Count one final outcome of a run (active statuses are ignored)."""
        name = str(entry.get("schedule_name") or "")
        status = str(entry.get("status") or ("succeeded" if entry.get("success") else "failed"))
        if not name or status in ("running", "queued"):
            return
        lag = entry.get("start_lag_seconds")
        when = _timestamp(entry.get("completed_at"))
        with self._lock:
            key = (name, status)
            self._runs[key] = self._runs.get(key, 0) + 1
            if status == "succeeded":
                self._last_success[name] = max(when, self._last_success.get(name, 0.0))
            elif status in _FAILURES:
                self._last_failure[name] = max(when, self._last_failure.get(name, 0.0))
            if isinstance(lag, (int, float)) and not isinstance(lag, bool) and lag == lag:
                seconds = max(float(lag), 0.0)
                index = 0
                while index < len(self._buckets) and seconds > self._buckets[index]:
                    index += 1
                self._lag_counts[index] += 1
                self._lag_sum += seconds
                self._lag_count += 1

    def runs(self, schedule: str, status: str) -> int:
        """How many runs of ``schedule`` ended in ``status`` since this process started."""
        with self._lock:
            return self._runs.get((schedule, status), 0)

    def render(self, out: _Lines) -> None:
        with self._lock:
            runs = sorted(self._runs.items())
            success = sorted(self._last_success.items())
            failure = sorted(self._last_failure.items())
            counts = list(self._lag_counts)
            lag_sum, lag_count = self._lag_sum, self._lag_count
        for (name, status), count in runs:
            _line(
                out,
                "flowyml_lite_runs_total",
                "counter",
                "Runs finished by this process, by schedule and final status",
                count,
                f'{{schedule="{_label(name)}",status="{_label(status)}"}}',
            )
        for metric, rows, what in (
            ("flowyml_lite_schedule_last_success_timestamp_seconds", success, "succeeded"),
            (
                "flowyml_lite_schedule_last_failure_timestamp_seconds",
                failure,
                "failed, timed out or was lost",
            ),
        ):
            for name, value in rows:
                _line(
                    out,
                    metric,
                    "gauge",
                    f"Unix time at which a run of the schedule last {what} (this process)",
                    value,
                    f'{{schedule="{_label(name)}"}}',
                )
        name = "flowyml_lite_start_lag_seconds"
        out.describe(name, "histogram", "Start lag of runs: fire instant to job start (this process)")
        cumulative = 0
        for bound, count in zip((*self._buckets, float("inf")), counts):
            cumulative += count
            out.append(f'{name}_bucket{{le="{_number(bound)}"}} {cumulative}')
        out.append(f"{name}_sum {_number(lag_sum)}")
        out.append(f"{name}_count {lag_count}")


_ATTACHED: weakref.WeakKeyDictionary[Any, RunMetrics] = weakref.WeakKeyDictionary()
_ATTACH_LOCK = threading.Lock()


def run_metrics_for(scheduler: Any) -> RunMetrics:
    """The scheduler's ``RunMetrics``: its own ``run_metrics`` when it keeps one, else one fed by hooks.

    The hooks see every final outcome of the runs in this process from the first call on
    (``on_finish``; a scheduler without it feeds successes and failures only).
    """
    own = getattr(scheduler, "run_metrics", None)
    if isinstance(own, RunMetrics):
        return own
    with _ATTACH_LOCK:
        found = _ATTACHED.get(scheduler)
        if found is None:
            found = RunMetrics()
            _ATTACHED[scheduler] = found
            if hasattr(scheduler, "on_finish"):
                scheduler.on_finish(found.observe)
            else:
                scheduler.on_success(found.observe)
                scheduler.on_failure(found.observe)
        return found


def _node_gauges(out: _Lines, scheduler: Any) -> None:
    """Worker processes (nodes that run schedules) sharing the store, by state, counted from one
    read of the node list: alert on fewer alive than you run."""
    from datetime import timezone

    from .overview import alive_nodes, silent_nodes

    store, config, now = scheduler.store, scheduler.config, datetime.now(timezone.utc)
    nodes = store.list_nodes()
    alive = alive_nodes(store, float(config.node_timeout_seconds), now, nodes)
    silent = silent_nodes(store, alive, float(config.heartbeat_seconds), now)
    workers = [n.node_id for n in nodes if n.serves is not None]
    counts = {
        "alive": sum(1 for n in workers if n in alive and n not in silent),
        "silent": sum(1 for n in workers if n in silent),
        "lost": sum(1 for n in workers if n not in alive),
    }
    for state, count in counts.items():
        _line(
            out,
            "flowyml_lite_nodes",
            "gauge",
            "Worker processes (nodes that run schedules) sharing the store, all nodes': alive, silent "
            "(two heartbeats missed) or lost (past the node timeout, not yet removed)",
            count,
            f'{{state="{state}"}}',
        )


def render_metrics(scheduler: Any) -> str:
    """The exposition: this process's run counters, then gauges from the scheduler and its store."""
    health = scheduler.health_check()
    m = health["metrics"]
    out = _Lines()
    for status in _STATUSES:
        _line(
            out,
            "flowyml_lite_up",
            "gauge",
            "1 for the scheduler's current status",
            float(health["status"] == status),
            f'{{status="{status}"}}',
        )
    _line(
        out,
        "flowyml_lite_schedules",
        "gauge",
        "Schedules with a function in this process",
        health["num_schedules"],
    )
    _line(
        out,
        "flowyml_lite_schedules_enabled",
        "gauge",
        "Enabled schedules in this process",
        health["enabled_schedules"],
    )
    _line(
        out,
        "flowyml_lite_schedules_orphan",
        "gauge",
        "Stored schedules without a function here",
        health["orphan_schedules"],
    )
    _line(out, "flowyml_lite_runs_running", "gauge", "Runs in progress (all nodes)", m["running_runs"])
    run_metrics_for(scheduler).render(out)
    schedules = []
    if store_answered(health):
        with contextlib.suppress(StoreError):  # health says degraded: the gauges above still count
            _node_gauges(out, scheduler)
            schedules = scheduler.list_schedules(include_orphans=True)
    labels = [f'{{schedule="{_label(s.pipeline_name)}"}}' for s in schedules]
    for schedule, label in zip(schedules, labels):  # each metric's samples form one group
        _line(
            out,
            "flowyml_lite_schedule_enabled",
            "gauge",
            "1 when the schedule is enabled",
            float(schedule.enabled),
            label,
        )
    for schedule, label in zip(schedules, labels):
        if isinstance(schedule.next_run, datetime):
            _line(
                out,
                "flowyml_lite_schedule_next_fire_timestamp_seconds",
                "gauge",
                "Unix time of the schedule's next fire",
                schedule.next_run.timestamp(),
                label,
            )
    return "\n".join(out) + "\n"


__all__ = ["LAG_BUCKETS", "RunMetrics", "render_metrics", "run_metrics_for"]
