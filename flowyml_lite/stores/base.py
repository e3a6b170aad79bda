"""The store contract: where schedules, runs (history) and nodes live.

One store is shared by every process (and host) that schedules the same jobs. The scheduler
never touches state except through these methods, and every method is one transaction.
Instants are aware UTC datetimes at the API (microsecond precision; stores may keep integer
microseconds). Implementations: ``memory``, ``sqlite`` (here), ``sqlalchemy`` (extra). The
contract test suite in ``tests/stores/`` runs against each of them.
"""

from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Callable, ContextManager, Dict, List, NamedTuple, Optional, Sequence

# Run statuses. "queued" is a catch-up fire claimed in a batch and waiting for its turn.
RUNNING = "running"
QUEUED = "queued"
SUCCEEDED = "succeeded"
FAILED = "failed"
MISSED = "missed"
SKIPPED = "skipped"
LOST = "lost"
TIMED_OUT = "timed_out"
ACTIVE_STATUSES = (RUNNING, QUEUED)
FINAL_STATUSES = (SUCCEEDED, FAILED, TIMED_OUT, MISSED, SKIPPED, LOST)
#: Longest ``traceback`` and ``output`` text a store keeps for a run (the tail is kept).
MAX_RUN_TEXT = 64 * 1024


@dataclass
class ScheduleRecord:
    """A persisted schedule: its definition and its state.

    ``definition_hash`` identifies the definition (type, value, zone, options): re-declaring a
    schedule with the same hash keeps the stored state; a different hash replaces the
    definition and ``next_fire`` but keeps ``enabled``.
    """

    name: str
    schedule_type: str  # "cron" | "daily" | "hourly" | "interval"
    schedule_value: str  # the cron expression, or the interval in seconds
    timezone: str
    definition_hash: str
    options: Dict[str, Any] = field(default_factory=dict)
    context: Dict[str, Any] = field(default_factory=dict)
    enabled: bool = True
    next_fire: Optional[datetime] = None
    last_fire: Optional[datetime] = None
    created_at: Optional[datetime] = None
    updated_at: Optional[datetime] = None
    #: The node that last declared this schedule in code, and when (the store's clock): a schedule
    #: whose declaring node is alive is served; one no live node declared is an orphan. Set by
    #: ``Store.mark_declared`` (or given with a schedule's first declaration).
    declared_by: Optional[str] = None
    declared_at: Optional[datetime] = None


class ScheduleState(NamedTuple):
    """A stored schedule's hash and state, without its definition (see ``Store.schedule_states``)."""

    definition_hash: str
    enabled: bool
    next_fire: Optional[datetime]
    last_fire: Optional[datetime]
    created_at: Optional[datetime]
    updated_at: Optional[datetime]


@dataclass
class RunRecord:
    """One fire of a schedule and what became of it (a history entry)."""

    run_key: str  # unique id of this row (uuid hex), distinct from the pipeline's run_id
    schedule: str
    fire_time: datetime
    status: str
    node_id: str = ""
    started_at: Optional[datetime] = None
    completed_at: Optional[datetime] = None
    duration_seconds: Optional[float] = None
    error: Optional[str] = None
    run_id: Optional[str] = None
    reason: Optional[str] = None  # why missed/skipped/lost, or a summary ("37 missed instants ...")
    attempt: int = 1  # 1-based; a retry of the same fire bumps it on the same row
    traceback: Optional[str] = None  # of a failed attempt, at most MAX_RUN_TEXT (tail kept)
    output: Optional[str] = None  # captured log records / stdout+stderr, at most MAX_RUN_TEXT (tail)
    next_attempt_at: Optional[datetime] = None  # a queued retry starts then

    def with_status(self, status: str, reason: Optional[str] = None) -> RunRecord:
        return replace(self, status=status, reason=reason)


class Claim(NamedTuple):
    """One schedule's part of a group claim: the arguments of ``Store.claim``."""

    name: str
    expected_next: datetime
    new_next: Optional[datetime]
    runs: Sequence[RunRecord]
    max_instances: int
    #: Made before its instant: when ``max_instances`` runs are active it is refused (None, nothing
    #: written), not stored ``skipped`` for overlap; at its instant the claim is made again, and
    #: the runs active then decide (a peer's run claimed ahead for an earlier instant may be over).
    ahead: bool = False


@dataclass
class Outcome:
    """What became of a run, as the runner hands it to the store (``finish_runs``).

    ``status`` is final, or ``queued`` for a retry: the row stays active, its ``attempt`` becomes
    ``attempt`` and it waits until ``next_attempt_at``. ``node_id`` is the run's owner: its outcome
    is accepted even after another node judged the run ``lost`` (the owner was alive after all).

    How each field is written: a final status needs ``completed_at`` (ValueError without it) and
    clears ``next_attempt_at``; a retry stores ``completed_at`` as None whatever is given.
    ``duration_seconds``, ``error``, ``run_id``, ``attempt``, ``traceback``, ``output`` replace the
    stored values (None clears them: a fire's final row is its last attempt's). ``started_at`` and
    ``reason`` replace them only when not None (a retry keeps the failed attempt's start until the
    next ``start_run``), except that replacing a ``lost`` verdict always replaces its reason.
    ``run_id``, ``error`` and ``reason`` of any other type are stored as their ``str()``;
    ``error``, ``traceback`` and ``output`` are cut to their last MAX_RUN_TEXT characters.
    """

    run_key: str
    status: str
    completed_at: Optional[datetime]
    duration_seconds: Optional[float] = None
    error: Optional[str] = None
    run_id: Optional[str] = None
    started_at: Optional[datetime] = None
    reason: Optional[str] = None
    attempt: int = 1
    traceback: Optional[str] = None
    output: Optional[str] = None
    next_attempt_at: Optional[datetime] = None
    node_id: Optional[str] = None


@dataclass
class NodeRecord:
    """A scheduler process that shares the store, with its last heartbeat."""

    node_id: str
    hostname: str
    pid: int
    started_at: datetime
    heartbeat: datetime
    #: A digest of the set of schedules this node serves (its loop runs), or None when it serves
    #: none (a process that only runs things by hand): nodes with equal digests share those fires.
    serves: Optional[str] = None


@dataclass
class RunStats:
    """Aggregates over history, for ``health_check()``."""

    total: int = 0
    succeeded: int = 0
    failed: int = 0
    missed: int = 0
    skipped: int = 0
    lost: int = 0
    timed_out: int = 0
    running: int = 0
    avg_duration_seconds: Optional[float] = None


class Store(abc.ABC):
    """What a store guarantees. Every method is atomic; every method may raise StoreError."""

    #: True when other processes may share this store (so claims must be durable and atomic).
    shared: bool = False
    #: How far the clocks of the processes writing ``updated_at`` may disagree, in seconds: a
    #: process syncing ``changed_since(t)`` looks this far before ``t``. One host (SQLite): small.
    clock_skew_seconds: float = 60.0
    #: True when ``claim_many`` refuses a claim whose schedule row another transaction holds
    #: (SKIP LOCKED) instead of waiting: a refused claim with an unchanged row may then be a claim
    #: in progress elsewhere, which the scheduler looks at again shortly before moving past it.
    skips_locked_rows: bool = False
    #: True while ``maintain`` holds this process's writers off (e.g. SQLite restarting its WAL):
    #: the loop claims nothing ahead meanwhile, so that only fires claimed before it wait.
    maintaining: bool = False
    #: True while ``maintain`` waits for a quiet moment (upkeep due, fires close together): the
    #: loop then claims further ahead, so that a moment comes when no fire needs the store soon.
    wants_quiet: bool = False

    def waiting_at_most(self, seconds: float) -> ContextManager[None]:
        """Within the block, this thread's writes wait ``seconds`` at most for another writer (in
        this process or another) and raise StoreError after: a claim made ahead of its instant
        must not hold up the runs already claimed. Default: writes wait as they always do."""
        return contextlib.nullcontext()

    def open(self) -> None:
        """Create or migrate the schema. Idempotent."""

    def close(self) -> None:
        """Release connections. The store may be opened again."""

    # -- schedules ------------------------------------------------------------------
    @abc.abstractmethod
    def declare_schedule(self, record: ScheduleRecord) -> ScheduleRecord:
        """Insert ``record`` if no schedule has its name; return what is stored afterwards.

        If one exists with the same ``definition_hash``, it is returned unchanged (state kept).
        If its hash differs, its definition fields (type, value, zone, hash, options, context)
        and ``next_fire`` are replaced by ``record``'s; ``enabled``, ``last_fire``, ``declared_by``,
        ``declared_at`` and history are kept (a new row takes ``record``'s ``declared_by`` and
        ``declared_at``). Concurrent first declarations from many processes race safely.
        """

    @abc.abstractmethod
    def get_schedule(self, name: str) -> Optional[ScheduleRecord]:
        """The stored schedule, or None."""

    @abc.abstractmethod
    def list_schedules(self) -> List[ScheduleRecord]:
        """Every stored schedule, ordered by name."""

    def schedule_states(self) -> Dict[str, ScheduleState]:
        """``name -> ScheduleState`` of every stored schedule, in one read (no options or context).

        A process re-declaring many schedules reads this once instead of one row per declaration:
        an unchanged definition (same hash) takes its state from here. Stores override the default.
        """
        return {
            r.name: ScheduleState(
                r.definition_hash, r.enabled, r.next_fire, r.last_fire, r.created_at, r.updated_at
            )
            for r in self.list_schedules()
        }

    def changed_since(self, since: datetime) -> List[ScheduleRecord]:
        """Schedules whose row was declared, redefined, enabled or disabled at or after ``since``.

        Measured by ``updated_at`` (the store's real clock; claims do not count). Lets a process
        adopt other processes' changes without reading every schedule. Default: filter the list.
        """
        return [r for r in self.list_schedules() if r.updated_at is None or r.updated_at >= since]

    def schedule_versions(self, since: datetime) -> Dict[str, Optional[datetime]]:
        """``name -> updated_at`` of the rows ``changed_since(since)`` would return, without reading them.

        Cheap enough to call every heartbeat over many schedules; stores override the default.
        """
        return {r.name: r.updated_at for r in self.changed_since(since)}

    def maintain(self, quiet: Optional[Callable[[], bool]] = None) -> None:
        """Periodic upkeep off the hot path, called by the scheduler's heartbeat (default: none).

        ``quiet()`` is True while no fire that still needs a claim is due in the next few tens of
        milliseconds (runs claimed ahead need no store to start): upkeep that holds writers off (a
        stall of a claim) should wait for such a moment when it can, and set ``maintaining``
        meanwhile.
        """

    @abc.abstractmethod
    def set_enabled(self, name: str, enabled: bool, next_fire: Optional[datetime]) -> bool:
        """Set the enabled flag and next fire; False if the schedule does not exist."""

    @abc.abstractmethod
    def delete_schedule(self, name: str) -> bool:
        """Delete the schedule and its history; False if it did not exist."""

    @abc.abstractmethod
    def delete_all(self) -> int:
        """Delete every schedule and all history; return how many schedules were deleted."""

    # -- fires ----------------------------------------------------------------------
    @abc.abstractmethod
    def claim(
        self,
        name: str,
        expected_next: datetime,
        new_next: Optional[datetime],
        runs: Sequence[RunRecord],
        max_instances: int,
    ) -> Optional[List[RunRecord]]:
        """Claim fires of ``name`` and advance it, atomically; the heart of "exactly once".

        Succeeds only if the schedule exists, is enabled, and its stored ``next_fire`` equals
        ``expected_next`` (compare-and-set); otherwise nothing changes and None is returned
        (another process claimed first, or the schedule changed). On success ``next_fire``
        becomes ``new_next``, ``last_fire`` the latest ``fire_time`` among ``runs`` whose status
        is active, and every record of ``runs`` is inserted, UNIQUE on (schedule, fire_time):
        a duplicate fire_time makes the whole claim fail with None. Overlap: if the active runs
        (running or queued) of the schedule already number ``max_instances`` or more, every
        active record of ``runs`` is stored as ``skipped`` with reason "overlap" instead.
        Returns the records as stored (texts converted and bounded as for ``Outcome``).
        Records are values: a store may keep the very records it is given and hand them back, so
        neither those nor the ones returned are changed afterwards (``dataclasses.replace``
        makes a changed one).
        """

    @abc.abstractmethod
    def start_run(self, run_key: str, started_at: datetime) -> bool:
        """Mark a queued run running (sets ``started_at``, clears ``next_attempt_at``); False if it
        is no longer active."""

    @abc.abstractmethod
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
        """Record a run's outcome; False if the run is no longer active (e.g. already lost).

        ``started_at`` (when the function began; None keeps the stored value) and ``reason``
        (why a run was skipped at start, e.g. a held lock) are stored with it. The one-outcome
        form of ``finish_runs`` without its extras: ``attempt``, ``traceback`` and ``output`` are
        kept, ``next_attempt_at`` is cleared, a ``lost`` run is never overridden; texts are stored
        as for ``Outcome`` (a ``run_id`` of any type as its ``str()``).
        """

    def claim_many(
        self, claims: Sequence[Claim], outcomes: Sequence[Outcome] = ()
    ) -> List[Optional[List[RunRecord]]]:
        """Write ``outcomes`` (as ``finish_runs``), then make every claim, in one transaction.

        Each claim succeeds or fails on its own exactly as ``claim`` would (a refused claim refuses
        only itself; claims of one schedule are judged in order, each seeing what the earlier ones
        wrote); the result has one entry per claim, in order. Every claim and outcome is checked
        first: an invalid one (ValueError) writes nothing of the group. Writing the outcomes first means
        a run that just finished never counts against ``max_instances`` of the next fire. A store
        shared by several processes skips a schedule row another transaction holds locked (it is
        another process's claim in progress: None) rather than waiting for it. Default: one call
        each, not atomic; stores override it.
        """
        if outcomes:
            self.finish_runs(outcomes)
        return [self.claim(c.name, c.expected_next, c.new_next, c.runs, c.max_instances) for c in claims]

    def finish_runs(self, outcomes: Sequence[Outcome]) -> List[bool]:
        """Record many outcomes in one transaction (group commit); one bool per outcome, in order.

        An outcome is written when its run is active, or when it is ``lost`` and ``node_id`` is the
        run's own node (the owner's real outcome replaces another node's verdict); otherwise it is
        refused (False). Outcomes of one run apply in order (a retry, then its final outcome). A
        ``queued`` outcome is a retry (see ``Outcome``). Every outcome is checked before anything is
        written (ValueError: a status neither final nor ``queued``, a final one without
        ``completed_at``, a naive instant). Default: one ``finish_run`` each (no retries, no lost
        override); stores override it.
        """
        results = []
        for o in outcomes:
            results.append(
                self.finish_run(
                    o.run_key,
                    o.status,
                    o.completed_at,  # type: ignore[arg-type]
                    o.duration_seconds,
                    o.error,
                    o.run_id,
                    started_at=o.started_at,
                    reason=o.reason,
                )
            )
        return results

    @abc.abstractmethod
    def history(self, name: str, limit: int = 50) -> List[RunRecord]:
        """Runs of ``name``, newest fire first, at most ``limit``."""

    def run_at(self, name: str, fire_time: datetime) -> Optional[RunRecord]:
        """The run of ``name`` for the instant ``fire_time``, if it has one (a read: what a claim
        refused for it ran into, a row or a lock, is told apart by it). Stores override this
        with one lookup of the unique (schedule, fire_time) key; this default reads the history."""
        return next((run for run in self.history(name, 100_000) if run.fire_time == fire_time), None)

    @abc.abstractmethod
    def prune_runs(
        self, older_than: Optional[datetime], keep_last: Optional[int], *, limit: Optional[int] = None
    ) -> int:
        """Delete old finished runs so history stays bounded; return how many rows were deleted.

        A run is deleted if its status is final (never running or queued) and either it fired
        before ``older_than`` and did not complete at or after it, or it is not among the newest
        ``keep_last`` runs of its schedule (by fire time, active runs included in the count). The
        newest run of every schedule is always kept. None turns a criterion off (both None: no-op).
        Deletes oldest first, schedules in name order, in transactions of bounded size (claims go
        on in between); ``limit`` stops after that many rows so a caller can spread a backlog.
        """

    def recent_runs(self, names: Sequence[str], limit: int = 10) -> Dict[str, List[RunRecord]]:
        """The newest ``limit`` runs of each schedule of ``names`` (as ``history``), by name; a
        schedule with none is left out. Default: one ``history`` call each; a store whose reads are
        round trips overrides it (a health check over 50,000 schedules)."""
        found: Dict[str, List[RunRecord]] = {}
        for name in names:
            runs = self.history(name, limit)
            if runs:
                found[name] = runs
        return found

    @abc.abstractmethod
    def active_runs(self, name: Optional[str] = None) -> List[RunRecord]:
        """Runs still running or queued (of ``name``, or of every schedule)."""

    def active_run_nodes(self) -> List[str]:
        """The nodes with runs still running or queued, sorted: what the heartbeat's judgment of lost
        nodes needs (stores answer it without reading the runs themselves, where they can)."""
        return sorted({run.node_id for run in self.active_runs()})

    @abc.abstractmethod
    def stats(self, name: Optional[str] = None) -> RunStats:
        """Counts by status and the mean duration of finished runs."""

    # -- nodes ----------------------------------------------------------------------
    @abc.abstractmethod
    def heartbeat(self, node: NodeRecord) -> None:
        """Insert or refresh this node's row (its ``heartbeat`` field is the new instant)."""

    @abc.abstractmethod
    def list_nodes(self) -> List[NodeRecord]:
        """Every node row."""

    @abc.abstractmethod
    def mark_node_lost(self, node_id: str, reason: str) -> List[RunRecord]:
        """Turn the node's active runs into ``lost`` (reason given), delete its row; return them."""

    @abc.abstractmethod
    def remove_node(self, node_id: str) -> None:
        """Delete the node row (clean shutdown, after its runs finished)."""

    def expired_nodes(self, timeout_seconds: float, now: datetime) -> List[NodeRecord]:
        """Nodes whose last heartbeat is more than ``timeout_seconds`` old, on the store's clock.

        A store whose writers share one clock (memory, SQLite on one host) judges by ``now``; a
        server store (PostgreSQL) stamps heartbeats with its own clock and judges by it, ignoring
        ``now``, so hosts with skewed clocks never declare each other dead. Default: by ``now``.
        """
        return [n for n in self.list_nodes() if (now - n.heartbeat).total_seconds() > timeout_seconds]

    def mark_declared(self, node_id: str, names: Sequence[str]) -> None:
        """Record that ``node_id`` declared (serves) the schedules ``names``, now (the store's clock).

        Sets ``declared_by``/``declared_at``; unknown names are ignored. Not a change of definition:
        ``updated_at`` (and so ``changed_since``) is left alone. Default: nothing (such a store
        shows every schedule as served by whoever lists it)."""
