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
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

from .base import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    LOST,
    MAX_RUN_TEXT,
    QUEUED,
    RUNNING,
    SKIPPED,
    Claim,
    NodeRecord,
    Outcome,
    RunRecord,
    RunStats,
    ScheduleRecord,
    ScheduleState,
    Store,
)
from .schema import (
    as_text,
    check_aware,
    check_final,
    check_outcome_record,
    check_prune,
    check_run,
    clip_text,
    from_json,
    make_stats,
    to_json,
)

__all__ = ["MemoryStore"]

_UTC = timezone.utc


@dataclass
class _Schedule:
    record: ScheduleRecord  # options/context are left empty here; the JSON text below is the truth
    options: str
    context: str


def _utc(value: Optional[datetime], what: str) -> Optional[datetime]:
    return None if value is None else check_aware(value, what)


#: A finished run as the store keeps it: a plain tuple of RunRecord's fields in their order. Every
#: field is a string, an instant, a number or None, so the garbage collector stops tracking the
#: tuple at its first collection: a long history in memory costs the collector nothing (a RunRecord
#: instance stays tracked for good). A run still active is kept as the RunRecord it was claimed with.
_Row = Tuple[Any, ...]
_Kept = Union[RunRecord, _Row]
_STATUS, _NODE, _COMPLETED, _DURATION = 3, 4, 6, 7


def _record(kept: _Kept) -> RunRecord:
    """The RunRecord of a stored run (a new one: callers cannot change the store)."""
    return RunRecord(*kept) if type(kept) is tuple else _copy(kept)  # type: ignore[arg-type]


def _as_row(kept: _Kept) -> _Row:
    """The fields of a stored run, whichever way it is kept."""
    return kept if type(kept) is tuple else _row(kept)  # type: ignore[arg-type]


def _copy(run: RunRecord) -> RunRecord:
    """A shallow copy (every field is immutable): what callers get, so they cannot change the store."""
    return RunRecord(*_row(run))


def _row(run: RunRecord) -> _Row:
    """The stored row of ``run`` (its fields, in RunRecord's order)."""
    return (
        run.run_key,
        run.schedule,
        run.fire_time,
        run.status,
        run.node_id,
        run.started_at,
        run.completed_at,
        run.duration_seconds,
        run.error,
        run.run_id,
        run.reason,
        run.attempt,
        run.traceback,
        run.output,
        run.next_attempt_at,
    )


def _prepare_run(name: str, run: RunRecord) -> RunRecord:
    """``run`` as the store keeps it: checked, instants in UTC, texts bounded (``run`` itself when it
    is so already: records handed to a store are not changed afterwards, see Store.claim)."""
    check_run(name, run)
    # Inline checks: this runs once per claimed fire, and most fields are None or already UTC.
    fire, started, completed, after = run.fire_time, run.started_at, run.completed_at, run.next_attempt_at
    if (
        type(run) is RunRecord
        and fire.tzinfo is _UTC
        and (started is None or started.tzinfo is _UTC)
        and completed is None
        and after is None
        and run.error is None
        and run.run_id is None
        and run.traceback is None
        and run.output is None
        and (run.reason is None or (type(run.reason) is str and len(run.reason) <= MAX_RUN_TEXT))
    ):
        return run
    if fire.tzinfo is not _UTC:
        fire = check_aware(fire, "fire_time")
    if started is not None and started.tzinfo is not _UTC:
        started = check_aware(started, "started_at")
    if completed is not None or after is not None:
        completed, after = _utc(completed, "completed_at"), _utc(after, "next_attempt_at")
    error, run_id, reason, trace, output = run.error, run.run_id, run.reason, run.traceback, run.output
    if error is not None or run_id is not None or trace is not None or output is not None:
        error, run_id, trace, output = as_text(error), as_text(run_id), clip_text(trace), clip_text(output)
    if reason is not None:
        reason = as_text(reason)
    return RunRecord(
        run.run_key,
        name,
        fire,
        run.status,
        run.node_id,
        started,
        completed,
        run.duration_seconds,
        error,
        run_id,
        reason,
        run.attempt,
        trace,
        output,
        after,
    )


def _prepare_outcome(outcome: Outcome) -> Outcome:
    """``outcome`` checked, instants in UTC, texts bounded (a new record; see Store.finish_runs)."""
    retry = check_outcome_record(outcome)
    completed, started, after = outcome.completed_at, outcome.started_at, outcome.next_attempt_at
    if retry:
        completed, after = None, _utc(after, "next_attempt_at")
    else:
        after = None
        if completed is not None and completed.tzinfo is not _UTC:
            completed = check_aware(completed, "completed_at")
    if started is not None and started.tzinfo is not _UTC:
        started = check_aware(started, "started_at")
    error, run_id, reason, trace, output = (
        outcome.error,
        outcome.run_id,
        outcome.reason,
        outcome.traceback,
        outcome.output,
    )
    if (
        error is not None
        or run_id is not None
        or reason is not None
        or trace is not None
        or output is not None
    ):
        error, run_id, reason = as_text(error), as_text(run_id), as_text(reason)
        trace, output = clip_text(trace), clip_text(output)
    if (
        completed is outcome.completed_at
        and started is outcome.started_at
        and after is outcome.next_attempt_at
        and error is outcome.error
        and run_id is outcome.run_id
        and reason is outcome.reason
        and trace is outcome.traceback
        and output is outcome.output
    ):
        return outcome  # read once, never kept: it needs no copy
    return Outcome(
        outcome.run_key,
        outcome.status,
        completed,
        outcome.duration_seconds,
        error,
        run_id,
        started,
        reason,
        outcome.attempt,
        trace,
        output,
        after,
        outcome.node_id,
    )


class MemoryStore(Store):
    """Schedules, runs and nodes in dicts; every method holds one lock, so each is atomic."""

    shared = False

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._schedules: Dict[str, _Schedule] = {}
        self._runs: Dict[str, _Kept] = {}  # run_key -> stored run (replaced, never mutated)
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
                    declared_at=_utc(record.declared_at, f"{where}: declared_at"),
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
        with self._lock:  # a claim changes a stored record in place
            return {
                r.name: ScheduleState(
                    r.definition_hash, r.enabled, r.next_fire, r.last_fire, r.created_at, r.updated_at
                )
                for r in (stored.record for stored in self._schedules.values())
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
        claim = self._prepare_claim(Claim(name, expected_next, new_next, runs, max_instances))
        with self._lock:
            return self._claim(*claim)

    def claim_many(
        self, claims: Sequence[Claim], outcomes: Sequence[Outcome] = ()
    ) -> List[Optional[List[RunRecord]]]:
        """Write ``outcomes``, then make each claim on its own, under one hold of the lock."""
        finished = [_prepare_outcome(o) for o in outcomes]
        prepared = [self._prepare_claim(c) for c in claims]
        with self._lock:
            self._finish(finished)
            return [self._claim(*claim) for claim in prepared]

    @staticmethod
    def _prepare_claim(
        claim: Claim,
    ) -> Tuple[str, datetime, Optional[datetime], List[RunRecord], int, bool]:
        name, expected, new_next = claim.name, claim.expected_next, claim.new_next
        if expected.tzinfo is not _UTC:
            expected = check_aware(expected, "expected_next")
        if new_next is not None and new_next.tzinfo is not _UTC:
            new_next = check_aware(new_next, "new_next")
        runs = [_prepare_run(name, run) for run in claim.runs]
        return (name, expected, new_next, runs, claim.max_instances, claim.ahead)

    def _claim(
        self,
        name: str,
        expected: datetime,
        new_next: Optional[datetime],
        prepared: List[RunRecord],
        max_instances: int,
        ahead: bool = False,
    ) -> Optional[List[RunRecord]]:
        """One claim, with the lock held: None (nothing changed) unless it is wholly valid."""
        stored = self._schedules.get(name)
        if stored is None or not stored.record.enabled or stored.record.next_fire != expected:
            return None
        fires = self._fires[name]
        runs = self._runs
        if len(prepared) == 1:  # the common case, without building sets
            if prepared[0].fire_time in fires or prepared[0].run_key in runs:
                return None
        else:
            new_fires = {run.fire_time for run in prepared}
            new_keys = {run.run_key for run in prepared}
            if (
                len(new_fires) != len(prepared)
                or len(new_keys) != len(prepared)
                or any(f in fires for f in new_fires)
                or any(k in runs for k in new_keys)
            ):
                return None
        active = self._active[name]
        if len(active) >= max_instances:
            if ahead and any(r.status in ACTIVE_STATUSES for r in prepared):
                return None  # claimed again at its instant: the runs active then decide
            prepared = [
                r.with_status(SKIPPED, "overlap") if r.status in ACTIVE_STATUSES else r for r in prepared
            ]
        record = stored.record  # never handed out (callers get copies), so changed in place
        last_fire = record.last_fire
        for run in prepared:
            fires[run.fire_time] = run.run_key
            if run.status not in ACTIVE_STATUSES:
                runs[run.run_key] = _row(run)  # missed, or skipped for overlap: final at once
            else:
                runs[run.run_key] = run
                active.add(run.run_key)
                if last_fire is None or run.fire_time > last_fire:
                    last_fire = run.fire_time
        record.next_fire, record.last_fire = new_next, last_fire
        return prepared  # records are values: the caller's are handed back as they are

    def start_run(self, run_key: str, started_at: datetime) -> bool:
        """Mark a queued (or running) run running; False if it is no longer active."""
        started_at = check_aware(started_at, "started_at")
        with self._lock:
            kept = self._runs.get(run_key)
            if kept is None:
                return False
            run = _record(kept)
            if run.status not in ACTIVE_STATUSES:
                return False
            self._runs[run_key] = replace(run, status=RUNNING, started_at=started_at, next_attempt_at=None)
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
        started_at = _utc(started_at, "started_at")
        with self._lock:
            kept = self._runs.get(run_key)
            if kept is None:
                return False
            run = _record(kept)
            if run.status not in ACTIVE_STATUSES:
                return False
            self._runs[run_key] = _row(
                replace(
                    run,
                    status=status,
                    completed_at=completed_at,
                    duration_seconds=duration_seconds,
                    error=as_text(error),
                    run_id=as_text(run_id),
                    started_at=started_at if started_at is not None else run.started_at,
                    reason=as_text(reason) if reason is not None else run.reason,
                    next_attempt_at=None,
                )
            )
            self._active[run.schedule].discard(run_key)
            return True

    def finish_runs(self, outcomes: Sequence[Outcome]) -> List[bool]:
        """Record many outcomes under one hold of the lock (see Store.finish_runs)."""
        finished = [_prepare_outcome(o) for o in outcomes]
        with self._lock:
            return self._finish(finished)

    def _finish(self, outcomes: Sequence[Outcome]) -> List[bool]:
        results = []
        for o in outcomes:
            kept = self._runs.get(o.run_key)
            if kept is None:
                results.append(False)
                continue
            run = kept if type(kept) is RunRecord else RunRecord(*kept)  # type: ignore[misc]
            was_active = run.status in ACTIVE_STATUSES
            overrides_lost = run.status == LOST and o.node_id is not None and o.node_id == run.node_id
            if not (was_active or overrides_lost):
                results.append(False)
                continue
            row = (
                run.run_key,
                run.schedule,
                run.fire_time,
                o.status,
                run.node_id,
                o.started_at if o.started_at is not None else run.started_at,
                o.completed_at,
                o.duration_seconds,
                o.error,
                o.run_id,
                # A lost verdict's reason does not describe the owner's real outcome.
                o.reason if o.reason is not None or overrides_lost else run.reason,
                o.attempt,
                o.traceback,
                o.output,
                o.next_attempt_at,
            )
            if o.status == QUEUED:  # a retry waits: active again
                self._runs[o.run_key] = RunRecord(*row)
                self._active[run.schedule].add(o.run_key)
            else:
                self._runs[o.run_key] = row
                self._active[run.schedule].discard(o.run_key)
            results.append(True)
        return results

    def run_at(self, name: str, fire_time: datetime) -> Optional[RunRecord]:
        """The run of ``name`` for ``fire_time``, if any (see Store.run_at)."""
        instant = check_aware(fire_time, "fire_time")
        with self._lock:
            key = self._fires.get(name, {}).get(instant)
            return None if key is None else _record(self._runs[key])

    def history(self, name: str, limit: int = 50) -> List[RunRecord]:
        """Runs of ``name``, newest fire first, at most ``limit``."""
        with self._lock:
            fires = self._fires.get(name, {})
            newest = heapq.nlargest(max(limit, 0), fires)
            return [_record(self._runs[fires[f]]) for f in newest]

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
            row = _as_row(self._runs[fires[fire]])
            if row[_STATUS] not in FINAL_STATUSES:
                continue
            completed = row[_COMPLETED]
            too_old = cutoff is not None and fire < cutoff and (completed is None or completed < cutoff)
            if too_old or (beyond is not None and fire < beyond):
                del self._runs[fires.pop(fire)]
                deleted += 1
        return deleted

    def active_runs(self, name: Optional[str] = None) -> List[RunRecord]:
        """Runs still running or queued, ordered by schedule then fire time."""
        with self._lock:
            names = sorted(self._active) if name is None else [name]
            found = [_record(self._runs[k]) for n in names for k in self._active.get(n, ())]
            return sorted(found, key=lambda r: (r.schedule, r.fire_time))

    def stats(self, name: Optional[str] = None) -> RunStats:
        """Counts by status and the mean duration of finished runs."""
        with self._lock:
            if name is None:
                runs = list(self._runs.values())
            else:
                runs = [self._runs[k] for k in self._fires.get(name, {}).values()]
        counts: Dict[str, int] = {}
        durations = []
        for kept in runs:
            row = _as_row(kept)
            status, duration = row[_STATUS], row[_DURATION]
            counts[status] = counts.get(status, 0) + 1
            if status in FINAL_STATUSES and duration is not None:
                durations.append(duration)
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
                for run_key in sorted(active, key=lambda k: _as_row(self._runs[k])[2]):
                    row = _as_row(self._runs[run_key])
                    if row[_NODE] == node_id:
                        run = _record(row).with_status(LOST, reason)
                        self._runs[run_key] = _row(run)
                        active.discard(run_key)
                        lost.append(run)
            self._nodes.pop(node_id, None)
            return lost

    def remove_node(self, node_id: str) -> None:
        """Delete the node row."""
        with self._lock:
            self._nodes.pop(node_id, None)

    def expired_nodes(self, timeout_seconds: float, now: datetime) -> List[NodeRecord]:
        """Nodes whose last heartbeat is more than ``timeout_seconds`` before ``now``."""
        now = check_aware(now, "now")
        with self._lock:
            return [
                replace(self._nodes[k])
                for k in sorted(self._nodes)
                if (now - self._nodes[k].heartbeat).total_seconds() > timeout_seconds
            ]

    def mark_declared(self, node_id: str, names: Sequence[str]) -> None:
        """Record that ``node_id`` declared the schedules ``names`` (now); unknown names are ignored."""
        now = datetime.now(timezone.utc)
        with self._lock:
            for name in names:
                stored = self._schedules.get(name)
                if stored is not None:
                    stored.record = replace(stored.record, declared_by=node_id, declared_at=now)
