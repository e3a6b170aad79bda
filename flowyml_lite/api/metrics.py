"""``GET /metrics``: the scheduler's health in the Prometheus text format (version 0.0.4)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, List, Optional, Set

_STATUSES = ("running", "degraded", "stopped")


class _Lines(List[str]):
    """Output lines, with the HELP and TYPE of each metric written before its first sample."""

    def __init__(self) -> None:
        super().__init__()
        self.described: Set[str] = set()


def _line(
    out: _Lines, name: str, kind: str, help_text: str, value: Optional[float], labels: str = ""
) -> None:
    if value is None:
        return
    if name not in out.described:
        out.described.add(name)
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
    out.append(f"{name}{labels} {float(value):.17g}")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_metrics(scheduler: Any) -> str:
    """Counters of runs by outcome, schedule counts, start lag and, per schedule, the next fire time."""
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
    for outcome, key in (
        ("succeeded", "successful_runs"),
        ("failed", "failed_runs"),
        ("missed", "missed_runs"),
        ("skipped", "skipped_runs"),
        ("lost", "lost_runs"),
    ):
        _line(
            out,
            "flowyml_lite_runs_recorded",
            "gauge",
            "Runs in the store's history, by outcome",
            m[key],
            f'{{outcome="{outcome}"}}',
        )
    _line(out, "flowyml_lite_runs_running", "gauge", "Runs in progress (all nodes)", m["running_runs"])
    _line(
        out,
        "flowyml_lite_run_duration_seconds_avg",
        "gauge",
        "Mean duration of finished runs",
        m["avg_duration_seconds"],
    )
    lag = m["start_lag_ms"]
    for quantile, key in (("0.5", "p50"), ("0.99", "p99"), ("1", "max")):
        value = lag[key]
        _line(
            out,
            "flowyml_lite_start_lag_seconds",
            "gauge",
            "Start lag of recent runs in this process (fire instant to job start)",
            None if value is None else value / 1000,
            f'{{quantile="{quantile}"}}',
        )
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
