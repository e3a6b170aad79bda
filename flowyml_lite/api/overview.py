"""What the dashboard and the operator routes show: each schedule's state, its runs, the nodes.

Everything here reads the scheduler's store; nothing writes. A schedule's state, the first that
applies:

- ``paused``: disabled by a person;
- ``orphaned``: no function here, no live node declared it lately, and the node that ran it last
  is gone (nothing will run it);
- ``failing``: its latest finished runs failed, timed out or were lost (``streak`` of them);
- ``late``: enabled, served, and its next fire is more than ``LATE_AFTER_SECONDS`` in the past;
- ``running``: a run is in flight;
- ``healthy``: none of the above.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import AbstractSet, Any, Dict, Iterable, List, Optional, Sequence, Set

from ..core.views import start_lag
from ..runtime.housekeeping import silent_after
from ..runtime.membership import owner_among
from ..stores.base import ACTIVE_STATUSES, FAILED, LOST, MISSED, SKIPPED, SUCCEEDED, TIMED_OUT, RunRecord

UTC = timezone.utc
#: A served schedule whose next fire is this far in the past is late (its process is stuck or down).
LATE_AFTER_SECONDS = 60.0
#: Key of a schedule's context that names the registered pipeline it runs (set by POST /api/schedules).
PIPELINE_KEY = "pipeline"
_BAD = (FAILED, TIMED_OUT, LOST)


def _iso(moment: Optional[datetime]) -> Optional[str]:
    return moment.isoformat() if moment is not None else None


def run_json(run: RunRecord, now: Optional[datetime] = None, *, details: bool = False) -> Dict[str, Any]:
    """A run as the API shows it: the history entry's keys plus the run key, attempt and times.

    ``success`` is None while the run is active; a skipped or missed run never started, so it has
    no ``started_at`` or lag; a running run has ``elapsed_seconds`` instead of a duration.
    ``details`` adds the traceback and captured output (up to 64 KiB each).
    """
    active = run.status in ACTIVE_STATUSES
    started = run.started_at if run.status not in (SKIPPED, MISSED) else None
    out: Dict[str, Any] = {
        "run_key": run.run_key,
        "schedule_name": run.schedule,
        "fire_time": _iso(run.fire_time),
        "started_at": _iso(started),
        "completed_at": _iso(run.completed_at),
        "success": None if active else run.status == SUCCEEDED,
        "status": run.status,
        "duration_seconds": run.duration_seconds,
        "error": run.error,
        "run_id": run.run_id,
        "node": run.node_id,
        "reason": run.reason,
        "attempt": getattr(run, "attempt", 1),
        "next_attempt_at": _iso(getattr(run, "next_attempt_at", None)),
        "start_lag_seconds": start_lag(run, started),
        "elapsed_seconds": None,
        "has_traceback": bool(getattr(run, "traceback", None)),
        "has_output": bool(getattr(run, "output", None)),
    }
    if run.status == "running":  # the store may not have its start yet: count from the fire
        since = started or run.fire_time
        out["elapsed_seconds"] = max(((now or datetime.now(UTC)) - since).total_seconds(), 0.0)
    if details:
        out["traceback"] = getattr(run, "traceback", None)
        out["output"] = getattr(run, "output", None)
    return out


def failing_streak(runs: Sequence[RunRecord]) -> int:
    """How many of the newest finished runs (newest first) failed, timed out or were lost in a row.

    Skipped and missed fires neither break nor extend a streak: they say nothing about the job.
    """
    streak = 0
    for run in runs:
        if run.status in ACTIVE_STATUSES or run.status in (SKIPPED, MISSED):
            continue
        if run.status not in _BAD:
            break
        streak += 1
    return streak


def alive_nodes(
    store: Any, timeout_seconds: float, now: datetime, nodes: Optional[List[Any]] = None
) -> Dict[str, Any]:
    """``node_id -> NodeRecord`` of the nodes whose heartbeat is recent (the store's judgement), of
    ``nodes`` if given (``store.list_nodes()`` read already)."""
    nodes = store.list_nodes() if nodes is None else nodes
    expired = {n.node_id for n in store.expired_nodes(timeout_seconds, now)}
    return {n.node_id: n for n in nodes if n.node_id not in expired}


def silent_nodes(store: Any, alive: Dict[str, Any], heartbeat_seconds: float, now: datetime) -> Set[str]:
    """Live nodes (not judged lost yet) that have missed two heartbeats: frozen, cut off or dead.
    What they run does not fire until they answer or are judged lost. Judged by the store, on the
    clock that stamps heartbeats (the database server's on PostgreSQL), as expiry is."""
    quiet = store.expired_nodes(silent_after(heartbeat_seconds), now)
    return {node.node_id for node in quiet if node.node_id in alive}


def describe(schedule_type: str, value: str, name: str) -> str:
    """The timetable in words: a cron expression explained, an interval with its unit."""
    if schedule_type == "cron":
        from ..cron.explain import explain

        try:
            return explain(value, hash_key=name)
        except Exception:  # an expression another engine accepts: show it as written
            return value
    if schedule_type == "interval":
        return "Every " + seconds_text(float(value))
    if schedule_type == "daily":
        return f"Every day at {value}"
    if schedule_type == "hourly":
        return f"Every hour at minute {int(value):02d}" if value.isdigit() else f"Every hour at {value}"
    if schedule_type == "once":
        return f"Once, at {value}"
    return f"{schedule_type} {value}"


def seconds_text(seconds: float) -> str:
    """``6`` -> ``6 s``, ``300`` -> ``5 min``, ``7200`` -> ``2 h``, ``86400`` -> ``1 day``."""
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if unit == 'day' and count != 1 else ''}"
    return f"{seconds:g} s"


def upcoming(scheduler: Any, record: Any, count: int, now: datetime) -> List[datetime]:
    """The next ``count`` fires of a stored schedule after ``now`` (aware, in its zone)."""
    from ..core.triggers import build_trigger

    config = scheduler.config
    trigger = build_trigger(
        record.schedule_type,
        record.schedule_value,
        record.timezone,
        record.name,
        config.cron_engine,
        config.timezone_provider,
    )
    fires: List[datetime] = []
    after = now
    while len(fires) < count:
        fire = trigger.next_after(after)
        if fire is None or fire <= after:
            break
        fires.append(fire)
        after = fire
    return [_in_zone(f, record.timezone, config.timezone_provider) for f in fires]


def _in_zone(moment: datetime, zone_name: str, provider: Any) -> datetime:
    from ..timezones import get_zone

    try:
        return moment.astimezone(get_zone(zone_name, provider).tzinfo)
    except Exception:  # a zone this process lacks, or an instant at the end of time: UTC
        return moment


def schedule_state(
    record: Any,
    runs: Sequence[RunRecord],
    *,
    here: bool,
    node_id: str,
    alive: Dict[str, Any],
    orphan_window: float,
    now: datetime,
    silent: AbstractSet[str] = frozenset(),
) -> Dict[str, Any]:
    """The state of one schedule (see the module's docstring) and who serves it; a schedule whose
    node is ``silent`` is late as soon as its next fire is past."""
    declared_by = getattr(record, "declared_by", None)
    declared_at = getattr(record, "declared_at", None)
    served_by: Optional[str] = None
    if here:
        served_by = node_id
    elif declared_by and declared_by in alive:
        served_by = declared_by
    elif declared_by and declared_at is not None and (now - declared_at).total_seconds() <= orphan_window:
        served_by = declared_by  # declared moments ago: its node may not have sent a heartbeat yet
    else:  # declared last by a node since gone (or a process that runs nothing): who ran it last?
        ran_by = next((run.node_id for run in runs if run.node_id), None)
        if ran_by in alive:
            served_by = ran_by
    serving = alive.get(served_by) if served_by is not None else None
    digest = getattr(serving, "serves", None)
    if digest is not None:  # it shares these schedules with its live peers: the split decides
        peers = [n for n, node in alive.items() if getattr(node, "serves", None) == digest]
        if len(peers) > 1:
            served_by = owner_among(record.name, peers)
    in_flight = [r for r in runs if r.status in ACTIVE_STATUSES]
    streak = failing_streak(runs)
    next_fire = record.next_fire
    stalled = served_by is not None and served_by in silent
    late = bool(
        record.enabled
        and served_by is not None
        and next_fire is not None
        and (now - next_fire).total_seconds() > (0.0 if stalled else LATE_AFTER_SECONDS)
    )
    if not record.enabled:
        state = "paused"
    elif served_by is None:
        state = "orphaned"
    elif streak:
        state = "failing"
    elif late:
        state = "late"
    elif in_flight:
        state = "running"
    else:
        state = "healthy"
    failing_since = None
    if streak:
        bad = [r for r in runs if r.status in _BAD][:streak]
        failing_since = _iso(bad[-1].fire_time) if bad else None
    finished = [r for r in runs if r.status not in ACTIVE_STATUSES and r.status not in (SKIPPED, MISSED)]
    return {
        "state": state,
        "streak": streak,
        "failing_since": failing_since,
        "running": len(in_flight),
        "late": late,
        "served_by": served_by,
        "served_by_silent": stalled,
        "declared_by": declared_by,
        "declared_at": _iso(declared_at),
        "last_outcome": finished[0].status if finished else None,
    }


def node_rows(
    store: Any, alive: Dict[str, Any], active: Iterable[RunRecord], silent: AbstractSet[str] = frozenset()
) -> List[Dict[str, Any]]:
    """The nodes sharing the store: host, pid, heartbeat, runs in flight, and their state: ``alive``,
    ``silent`` (two heartbeats missed) or ``lost`` (past ``node_timeout_seconds``, until a node
    judges it so and removes its row)."""
    in_flight: Dict[str, int] = {}
    for run in active:
        in_flight[run.node_id] = in_flight.get(run.node_id, 0) + 1
    rows = []
    for node in store.list_nodes():
        state = "lost" if node.node_id not in alive else "silent" if node.node_id in silent else "alive"
        rows.append(
            {
                "node_id": node.node_id,
                "hostname": node.hostname,
                "pid": node.pid,
                "started_at": _iso(node.started_at),
                "heartbeat": _iso(node.heartbeat),
                "runs_in_flight": in_flight.get(node.node_id, 0),
                "alive": node.node_id in alive,
                "state": state,
            }
        )
    return rows


def overview(scheduler: Any, runs_per_schedule: int = 30, now: Optional[datetime] = None) -> Dict[str, Any]:
    """Everything the dashboard's main page shows, in one answer."""
    from .app import schedule_json

    now = now or datetime.now(UTC)
    store = scheduler.store
    config = scheduler.config
    timeout = float(config.node_timeout_seconds)
    alive = alive_nodes(store, timeout, now)
    silent = silent_nodes(store, alive, float(config.heartbeat_seconds), now)
    window = max(2 * timeout, 3 * float(config.heartbeat_seconds))
    active = store.active_runs()
    records = {r.name: r for r in store.list_schedules()}
    schedules = []
    listed = scheduler.list_schedules(include_orphans=True)
    recent = scheduler.run_records_of([s.pipeline_name for s in listed], runs_per_schedule)
    for schedule in listed:
        record = records.get(schedule.pipeline_name)
        if record is None:  # removed between the two reads
            continue
        runs = recent.get(record.name, [])
        item = schedule_json(schedule)
        item.update(
            schedule_state(
                record,
                runs,
                here=not schedule.is_orphan,
                node_id=scheduler.node_id,
                alive=alive,
                orphan_window=window,
                now=now,
                silent=silent,
            )
        )
        item["description"] = describe(record.schedule_type, record.schedule_value, record.name)
        item["runs"] = [run_json(r, now) for r in runs]
        schedules.append(item)
    counts: Dict[str, int] = {}
    for item in schedules:
        counts[item["state"]] = counts.get(item["state"], 0) + 1
    return {
        "now": now.isoformat(),
        "status": scheduler.status(),
        "node_id": scheduler.node_id,
        "counts": counts,
        "schedules": schedules,
        "nodes": node_rows(store, alive, active, silent),
    }


def find_run(scheduler: Any, name: str, run_key: str, limit: int) -> Optional[RunRecord]:
    """The run ``run_key`` of ``name`` among its newest ``limit`` runs, or None."""
    for run in scheduler.run_records(name, limit):
        if run.run_key == run_key:
            return run  # type: ignore[no-any-return]
    return None


def store_answered(health: Dict[str, Any]) -> bool:
    """Whether ``health_check()`` just read the store: if not, answers must not wait on it."""
    return bool(health.get("store_read", "ok") == "ok")


def problems(scheduler: Any, now: Optional[datetime] = None) -> Dict[str, List[str]]:
    """Names of the schedules that will not run (orphaned) or run late (overdue), for health."""
    now = now or datetime.now(UTC)
    store = scheduler.store
    config = scheduler.config
    timeout = float(config.node_timeout_seconds)
    alive = alive_nodes(store, timeout, now)
    silent = silent_nodes(store, alive, float(config.heartbeat_seconds), now)
    window = max(2 * timeout, 3 * float(config.heartbeat_seconds))
    here = {s.pipeline_name for s in scheduler.list_schedules()}
    orphaned, overdue = [], []
    for record in store.list_schedules():
        state = schedule_state(
            record, (), here=record.name in here, node_id=scheduler.node_id, alive=alive,
            orphan_window=window, now=now, silent=silent,
        )  # fmt: skip
        if state["state"] == "orphaned":
            orphaned.append(record.name)
        elif state["late"]:
            overdue.append(record.name)
    return {"orphaned": orphaned, "overdue": overdue}
