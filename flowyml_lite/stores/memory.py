"""The in-process store (``persist_schedules=False``): the contract's semantics under one lock.

Nothing survives the process, and no other process can see it (``shared = False``). Values are
encoded as the SQL stores encode them (UTC instants, JSON round trip of options and context),
so code behaves the same whichever store it runs on.
"""

from __future__ import annotations

import heapq
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Dict, List, Optional, Sequence, Set

from .base import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    LOST,
    RUNNING,
    SKIPPED,
    NodeRecord,
    RunRecord,
    RunStats,
    ScheduleRecord,
    ScheduleState,
    Store,
)
from .schema import check_aware, check_final, check_prune, check_run, from_json, make_stats, to_json

__all__ = ["MemoryStore"]


@dataclass
class _Schedule:
    record: ScheduleRecord  # options/context are left empty here; the JSON text below is the truth
    options: str
    context: str


def _utc(value: Optional[datetime], what: str) -> Optional[datetime]:
    return None if value is None else check_aware(value, what)


class MemoryStore(Store):
    """Schedules, runs and nodes in dicts; every method holds one lock, so each is atomic."""

    shared = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._schedules: Dict[str, _Schedule] = {}
        self._runs: Dict[str, RunRecord] = {}  # run_key -> stored record (replaced, never mutated)
        self._fires: Dict[str, Dict[datetime, str]] = {}  # schedule -> fire_time -> run_key
        self._active: Dict[str, Set[str]] = {}  # schedule -> run_keys running or queued
        self._nodes: Dict[str, NodeRecord] = {}

    # -- schedules ------------------------------------------------------------------
    def _out(self, stored: _Schedule) -> ScheduleRecord:
        return replace(stored.record, options=from_json(stored.options), context=from_json(stored.context))

    def declare_schedule(self, record: ScheduleRecord) -> ScheduleRecord:
        """Insert if absent; keep state on the same hash; replace the definition on another."""
        where = f"schedule {record.name!r}"
        options = to_json(record.options, f"{where}: options")
        context = to_json(record.context, f"{where}: context")
        next_fire = _utc(record.next_fire, f"{where}: next_fire")
        last_fire = _utc(record.last_fire, f"{where}: last_fire")
        now = datetime.now(timezone.utc)
        created = _utc(record.created_at, f"{where}: created_at") or now
        updated = _utc(record.updated_at, f"{where}: updated_at") or now
        with self._lock:
            stored = self._schedules.get(record.name)
            if stored is None:
                new = replace(
                    record,
                    options={},
                    context={},
                    enabled=bool(record.enabled),
                    next_fire=next_fire,
                    last_fire=last_fire,
                    created_at=created,
                    updated_at=updated,
                )
                stored = self._schedules[record.name] = _Schedule(new, options, context)
                self._fires.setdefault(record.name, {})
                self._active.setdefault(record.name, set())
            elif stored.record.definition_hash != record.definition_hash:
                stored.record = replace(
                    stored.record,
                    schedule_type=record.schedule_type,
                    schedule_value=record.schedule_value,
                    timezone=record.timezone,
                    definition_hash=record.definition_hash,
                    next_fire=next_fire,
                    updated_at=updated,
                )
                stored.options, stored.context = options, context
            return self._out(stored)

    def get_schedule(self, name: str) -> Optional[ScheduleRecord]:
        """The stored schedule, or None."""
        with self._lock:
            stored = self._schedules.get(name)
            return None if stored is None else self._out(stored)

    def list_schedules(self) -> List[ScheduleRecord]:
        """Every stored schedule, ordered by name."""
        with self._lock:
            return [self._out(self._schedules[name]) for name in sorted(self._schedules)]

    def schedule_states(self) -> Dict[str, ScheduleState]:
        """``name -> ScheduleState`` of every schedule (no options or context decoded)."""
        with self._lock:
            records = [stored.record for stored in self._schedules.values()]
        return {
            r.name: ScheduleState(
                r.definition_hash, r.enabled, r.next_fire, r.last_fire, r.created_at, r.updated_at
            )
            for r in records
        }

    def set_enabled(self, name: str, enabled: bool, next_fire: Optional[datetime]) -> bool:
        """Set the enabled flag and next fire; False if the schedule does not exist."""
        next_fire = _utc(next_fire, "next_fire")
        now = datetime.now(timezone.utc)
        with self._lock:
            stored = self._schedules.get(name)
            if stored is None:
                return False
            stored.record = replace(stored.record, enabled=bool(enabled), next_fire=next_fire, updated_at=now)
            return True

    def _drop(self, name: str) -> None:
        for run_key in self._fires.pop(name, {}).values():
            del self._runs[run_key]
        self._active.pop(name, None)
        del self._schedules[name]

    def delete_schedule(self, name: str) -> bool:
        """Delete the schedule and its history; False if it did not exist."""
        with self._lock:
            if name not in self._schedules:
                return False
            self._drop(name)
            return True

    def delete_all(self) -> int:
        """Delete every schedule and all history; return how many schedules were deleted."""
        with self._lock:
            count = len(self._schedules)
            self._schedules.clear()
            self._runs.clear()
            self._fires.clear()
            self._active.clear()
            return count

    # -- fires ----------------------------------------------------------------------
    def claim(
        self,
        name: str,
        expected_next: datetime,
        new_next: Optional[datetime],
        runs: Sequence[RunRecord],
        max_instances: int,
    ) -> Optional[List[RunRecord]]:
        """Compare-and-set ``next_fire`` and insert ``runs``, all or nothing (see Store.claim)."""
        expected = check_aware(expected_next, "expected_next")
        new_next = _utc(new_next, "new_next")
        prepared = []
        for run in runs:
            check_run(name, run)
            prepared.append(
                replace(
                    run,
                    fire_time=check_aware(run.fire_time, "fire_time"),
                    started_at=_utc(run.started_at, "started_at"),
                    completed_at=_utc(run.completed_at, "completed_at"),
                )
            )
        with self._lock:
            stored = self._schedules.get(name)
            if stored is None or not stored.record.enabled or stored.record.next_fire != expected:
                return None
            fires = self._fires[name]
            new_fires = {run.fire_time for run in prepared}
            new_keys = {run.run_key for run in prepared}
            if (
                len(new_fires) != len(prepared)
                or len(new_keys) != len(prepared)
                or any(f in fires for f in new_fires)
                or any(k in self._runs for k in new_keys)
            ):
                return None
            active = self._active[name]
            if len(active) >= max_instances:
                prepared = [
                    r.with_status(SKIPPED, "overlap") if r.status in ACTIVE_STATUSES else r for r in prepared
                ]
            last_fire = stored.record.last_fire
            for run in prepared:
                self._runs[run.run_key] = run
                fires[run.fire_time] = run.run_key
                if run.status in ACTIVE_STATUSES:
                    active.add(run.run_key)
                    if last_fire is None or run.fire_time > last_fire:
                        last_fire = run.fire_time
            stored.record = replace(stored.record, next_fire=new_next, last_fire=last_fire)
            return [replace(run) for run in prepared]

    def start_run(self, run_key: str, started_at: datetime) -> bool:
        """Mark a queued (or running) run running; False if it is no longer active."""
        started_at = check_aware(started_at, "started_at")
        with self._lock:
            run = self._runs.get(run_key)
            if run is None or run.status not in ACTIVE_STATUSES:
                return False
            self._runs[run_key] = replace(run, status=RUNNING, started_at=started_at)
            return True

    def finish_run(
        self,
        run_key: str,
        status: str,
        completed_at: datetime,
        duration_seconds: Optional[float],
        error: Optional[str] = None,
        run_id: Optional[str] = None,
        started_at: Optional[datetime] = None,
        reason: Optional[str] = None,
    ) -> bool:
        """Record a run's outcome; False if the run is no longer active (e.g. already lost)."""
        check_final(status)
        completed_at = check_aware(completed_at, "completed_at")
        if started_at is not None:
            started_at = check_aware(started_at, "started_at")
        with self._lock:
            run = self._runs.get(run_key)
            if run is None or run.status not in ACTIVE_STATUSES:
                return False
            self._runs[run_key] = replace(
                run,
                status=status,
                completed_at=completed_at,
                duration_seconds=duration_seconds,
                error=error,
                run_id=run_id,
                started_at=started_at if started_at is not None else run.started_at,
                reason=reason if reason is not None else run.reason,
            )
            self._active[run.schedule].discard(run_key)
            return True

    def history(self, name: str, limit: int = 50) -> List[RunRecord]:
        """Runs of ``name``, newest fire first, at most ``limit``."""
        with self._lock:
            fires = self._fires.get(name, {})
            newest = heapq.nlargest(max(limit, 0), fires)
            return [replace(self._runs[fires[f]]) for f in newest]

    def prune_runs(
        self, older_than: Optional[datetime], keep_last: Optional[int], *, limit: Optional[int] = None
    ) -> int:
        """Delete old finished runs, keeping each schedule's newest (see Store.prune_runs)."""
        check_prune(older_than, keep_last, limit)
        if older_than is None and keep_last is None:
            return 0
        cutoff = _utc(older_than, "older_than")
        with self._lock:
            names = sorted(self._fires)
        deleted = 0
        for name in names:  # one schedule per lock hold, so claims are not held up by a long prune
            budget = None if limit is None else limit - deleted
            if budget is not None and budget <= 0:
                break
            with self._lock:
                deleted += self._prune_schedule(name, cutoff, keep_last, budget)
        return deleted

    def _prune_schedule(
        self, name: str, cutoff: Optional[datetime], keep_last: Optional[int], budget: Optional[int]
    ) -> int:
        fires = self._fires.get(name)
        if not fires:
            return 0
        ordered = sorted(fires)
        beyond = ordered[-keep_last] if keep_last is not None and len(ordered) > keep_last else None
        bounds = [b for b in (cutoff, beyond) if b is not None]
        if not bounds:
            return 0
        upper = max(bounds)
        deleted = 0
        for fire in ordered[:-1]:  # never the newest
            if fire >= upper or (budget is not None and deleted >= budget):
                break
            run = self._runs[fires[fire]]
            if run.status not in FINAL_STATUSES:
                continue
            too_old = cutoff is not None and fire < cutoff and (
                run.completed_at is None or run.completed_at < cutoff
            )
            if too_old or (beyond is not None and fire < beyond):
                del self._runs[fires.pop(fire)]
                deleted += 1
        return deleted

    def active_runs(self, name: Optional[str] = None) -> List[RunRecord]:
        """Runs still running or queued, ordered by schedule then fire time."""
        with self._lock:
            names = sorted(self._active) if name is None else [name]
            found = [self._runs[k] for n in names for k in self._active.get(n, ())]
            return [replace(r) for r in sorted(found, key=lambda r: (r.schedule, r.fire_time))]

    def stats(self, name: Optional[str] = None) -> RunStats:
        """Counts by status and the mean duration of finished runs."""
        with self._lock:
            if name is None:
                runs = list(self._runs.values())
            else:
                runs = [self._runs[k] for k in self._fires.get(name, {}).values()]
        counts: Dict[str, int] = {}
        durations = []
        for run in runs:
            counts[run.status] = counts.get(run.status, 0) + 1
            if run.status in FINAL_STATUSES and run.duration_seconds is not None:
                durations.append(run.duration_seconds)
        return make_stats(counts, sum(durations), len(durations))

    # -- nodes ----------------------------------------------------------------------
    def heartbeat(self, node: NodeRecord) -> None:
        """Insert or refresh this node's row."""
        stored = replace(
            node,
            started_at=check_aware(node.started_at, "started_at"),
            heartbeat=check_aware(node.heartbeat, "heartbeat"),
        )
        with self._lock:
            self._nodes[node.node_id] = stored

    def list_nodes(self) -> List[NodeRecord]:
        """Every node row, ordered by node id."""
        with self._lock:
            return [replace(self._nodes[k]) for k in sorted(self._nodes)]

    def mark_node_lost(self, node_id: str, reason: str) -> List[RunRecord]:
        """Turn the node's active runs into ``lost`` (reason given), delete its row; return them."""
        with self._lock:
            lost = []
            for name in sorted(self._active):
                active = self._active[name]
                for run_key in sorted(active, key=lambda k: self._runs[k].fire_time):
                    run = self._runs[run_key]
                    if run.node_id == node_id:
                        self._runs[run_key] = run = run.with_status(LOST, reason)
                        active.discard(run_key)
                        lost.append(replace(run))
            self._nodes.pop(node_id, None)
            return lost

    def remove_node(self, node_id: str) -> None:
        """Delete the node row."""
        with self._lock:
            self._nodes.pop(node_id, None)
