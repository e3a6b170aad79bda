"""What is wrong right now, by source: the one place ``status()`` and ``health_check()`` read.

Each part of the runtime reports its own trouble under a key ("store", "lock", "outcomes", ...)
and clears it when it is over; the scheduler is ``degraded`` while any key is set.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from datetime import datetime
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ..core.schedule import Options
from ..core.views import iso
from ..stores.base import RunStats, ScheduleRecord

logger = logging.getLogger("flowyml_lite.scheduler.health")


class Troubles:
    """Current problems by source, with when each began; thread-safe, no I/O."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._now: Dict[str, Tuple[str, float]] = {}  # key -> (message, monotonic start)
        self.last_error: Optional[str] = None

    def report(self, key: str, message: str) -> bool:
        """Set (or update) the problem of ``key``; True if it is new (the caller logs it once)."""
        with self._lock:
            new = key not in self._now
            started = time.monotonic() if new else self._now[key][1]
            self._now[key] = (message, started)
            self.last_error = message
        return new

    def clear(self, key: str) -> Optional[float]:
        """The problem of ``key`` is over: how long it lasted in seconds, or None if there was none."""
        with self._lock:
            found = self._now.pop(key, None)
        if found is None:
            return None
        return time.monotonic() - found[1]

    def active(self, key: str) -> bool:
        with self._lock:
            return key in self._now

    def any(self) -> bool:
        return bool(self._now)

    def problems(self) -> List[Dict[str, object]]:
        """The current problems, oldest first: source, message and for how long (seconds)."""
        now = time.monotonic()
        with self._lock:
            items = sorted(self._now.items(), key=lambda item: item[1][1])
        return [
            {"source": key, "message": message, "for_seconds": round(now - since, 3)}
            for key, (message, since) in items
        ]


def health_report(
    status: str,
    problems: List[Dict[str, Any]],
    records: Sequence[ScheduleRecord],
    funcs: Mapping[str, Any],
    stats: RunStats,
    lags: Sequence[float],
    now: datetime,
    localize: Callable[[str, Optional[datetime]], Optional[datetime]],
    *,
    running: bool,
    node_id: str,
    nodes: List[str],
    last_heartbeat: Optional[datetime],
    pending_outcomes: int,
    last_error: Optional[str],
) -> Dict[str, Any]:
    """``health_check()``'s answer: the status and its problems (overdue schedules included),
    counts over history, this process's start lags (sorted, seconds) and the next five fires."""
    executed = stats.succeeded + stats.failed + stats.timed_out
    ours = [r for r in records if r.name in funcs]
    overdue = [
        r.name
        for r in ours
        if r.enabled
        and r.next_fire is not None
        and (now - r.next_fire).total_seconds() > Options.from_dict(r.options).misfire_grace_seconds + 5
    ]
    if overdue and running:
        late = f"{len(overdue)} schedule(s) overdue: {', '.join(overdue[:5])}"
        problems.append({"source": "schedules", "message": late, "for_seconds": None})
        status = "degraded"
    upcoming = sorted((r for r in records if r.enabled and r.next_fire), key=lambda r: r.next_fire)  # type: ignore[arg-type,return-value]
    return {
        "status": status,
        "problems": problems,
        "node_id": node_id,
        "nodes": nodes,
        "num_schedules": len(ours),
        "enabled_schedules": len([r for r in ours if r.enabled]),
        "orphan_schedules": len(records) - len(ours),
        "metrics": {
            "total_runs": executed,
            "successful_runs": stats.succeeded,
            "failed_runs": stats.failed,
            "timed_out_runs": stats.timed_out,
            "missed_runs": stats.missed,
            "skipped_runs": stats.skipped,
            "lost_runs": stats.lost,
            "running_runs": stats.running,
            "success_rate": stats.succeeded / max(executed, 1),
            "avg_duration_seconds": stats.avg_duration_seconds or 0.0,
            "last_heartbeat": iso(last_heartbeat),
            "pending_outcomes": pending_outcomes,
            "start_lag_ms": {
                "samples": len(lags),
                "p50": lags[len(lags) // 2] * 1000 if lags else None,
                "p99": lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1000 if lags else None,
                "max": lags[-1] * 1000 if lags else None,
                "mean": statistics.fmean(lags) * 1000 if lags else None,
            },
        },
        "last_error": last_error,
        "next_runs": [
            {"name": r.name, "next_run": iso(localize(r.timezone, r.next_fire))} for r in upcoming[:5]
        ],
    }
