"""``PipelineScheduler``: the seed guide's API on an event-driven loop (DESIGN §2, §4).

The main loop (``_loop``) keeps a heap of (next fire instant, schedule) and sleeps on a
condition variable until the earliest fire or a change. A due fire goes through the misfire
check and ``Store.claim`` (compare-and-set + unique run row + overlap count, one transaction),
and only the process whose claim succeeded hands it to the bounded thread pool. Runs record
their outcome through the store. Nothing here blocks the loop on a run.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import logging
import os
import socket
import statistics
import threading
import time
import traceback
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from datetime import datetime, timedelta, tzinfo
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Set, Tuple, Union

from .. import plugins, stores
from ..clock import SYSTEM_CLOCK, Clock
from ..errors import ScheduleError, ScheduleNotFoundError
from ..locks.base import Lease, Lock
from ..runtime.context import CURRENT_RUN as _CURRENT_RUN
from ..runtime.context import RunContext, current_run
from ..stores.base import (
    ACTIVE_STATUSES,
    FAILED,
    MISSED,
    QUEUED,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    NodeRecord,
    RunRecord,
    ScheduleRecord,
    ScheduleState,
    Store,
)
from ..timezones import UTC, get_zone
from .schedule import (
    Options,
    Schedule,
    as_stored,
    definition_hash,
    interval_seconds,
    shared_options_dict,
    to_schedule,
    validate_context,
    validate_name,
    validate_options,
    validate_timezone,
)
from .scheduler_config import SchedulerConfig
from .triggers import Trigger, build_trigger

logger = logging.getLogger("flowyml_lite.scheduler")

Hook = Callable[[Dict[str, Any]], Any]
_US = timedelta(microseconds=1)
MISSED_DETAIL_LIMIT = 20  # more missed instants than this are recorded as one summary row
_RETRY_MAX_SECONDS = 5.0
_MAINTENANCE_SECONDS = 1.0
_PRUNE_EVERY_SECONDS = 600.0  # history retention: one pruning pass every 10 minutes
_PRUNE_ROWS_PER_TICK = 5000  # a backlog is pruned over several ticks, so heartbeats never wait long
# Declarations between two syncs after which the stored states of all schedules are read at once.
_BULK_READ_AFTER = 256


def _run_key(fire: datetime) -> str:
    """A unique run key that sorts by fire instant, so the store's index grows at its end."""
    return f"{int(fire.timestamp() * 1_000_000):014x}{uuid.uuid4().hex[:18]}"


def _iso(moment: Optional[datetime]) -> Optional[str]:
    return moment.isoformat() if moment is not None else None


def history_entry(run: RunRecord) -> Dict[str, Any]:
    """A history entry as ``get_history`` returns it (flowyml's keys plus ours)."""
    return {
        "schedule_name": run.schedule,
        "fire_time": _iso(run.fire_time),
        "started_at": _iso(run.started_at),
        "completed_at": _iso(run.completed_at),
        "success": run.status == SUCCEEDED,
        "status": run.status,
        "duration_seconds": run.duration_seconds if run.duration_seconds is not None else 0.0,
        "error": run.error,
        "run_id": run.run_id,
        "node": run.node_id,
        "reason": run.reason,
        "start_lag_seconds": (run.started_at - run.fire_time).total_seconds() if run.started_at else None,
    }


def open_store(config: SchedulerConfig) -> Store:
    """The store the config names (or the instance it carries), opened."""
    chosen = config.resolved_store()
    if isinstance(chosen, str):
        factory = plugins.get("stores", chosen)
        if hasattr(factory, "from_config"):
            chosen = factory.from_config(config)
        elif chosen == "sqlite":
            return stores.open_store("sqlite", path=config.db_path, synchronous=config.sqlite_synchronous)
    return stores.open_store(chosen)


def open_lock(config: SchedulerConfig) -> Optional[Lock]:
    """The lock backend when ``distributed`` is set, else None."""
    if not config.distributed:
        return None
    factory = plugins.get("locks", config.lock_backend)
    if hasattr(factory, "from_config"):
        return factory.from_config(config)  # type: ignore[no-any-return]
    if config.lock_backend == "file":
        return factory(config.resolved_lock_dir())  # type: ignore[no-any-return]
    if config.lock_backend == "redis":
        return factory(config.redis_url)  # type: ignore[no-any-return]
    return factory()  # type: ignore[no-any-return]


def _outcome(result: Any) -> Tuple[bool, Optional[str], Optional[str]]:
    """(success, run_id, error) of a job's return value; a PipelineResult counts by ``success``."""
    if result is not None and hasattr(result, "success") and hasattr(result, "run_id"):
        success = bool(result.success)
        error = getattr(result, "error", None)
        return success, result.run_id, (str(error) if error and not success else None)
    return True, None, None


class PipelineScheduler:
    """Schedules pipeline functions and runs each fire once, on time, in the right zone.

    ``PipelineScheduler()`` reads ``FLOWYML_SCHEDULER_*`` from the environment; pass a
    ``SchedulerConfig`` to set things in code. ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        config: Optional[SchedulerConfig] = None,
        *,
        store: Optional[Store] = None,
        lock: Optional[Lock] = None,
        clock: Optional[Clock] = None,
    ) -> None:
        self.config = config if config is not None else SchedulerConfig.from_env()
        self._clock: Clock = clock if clock is not None else SYSTEM_CLOCK
        self._store: Store = store if store is not None else open_store(self.config)
        if store is not None:
            store.open()
        self._lock: Optional[Lock] = lock if lock is not None else open_lock(self.config)
        self.node_id = self.config.node_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._started_at = self._clock.now()
        self._host = host_identity()
        self._cond = threading.Condition()
        self._funcs: Dict[str, Callable[[], Any]] = {}
        self._triggers: Dict[str, Trigger] = {}
        self._records: Dict[str, ScheduleRecord] = {}
        # (wake instant, sequence, name, the next_fire this entry is for); stale entries are skipped.
        self._heap: List[Tuple[datetime, int, str, Optional[datetime]]] = []
        self._seq = itertools.count()
        self._executor: Optional[ThreadPoolExecutor] = None
        self._futures: Dict[Future[None], str] = {}
        self._loop_thread: Optional[threading.Thread] = None
        self._housekeeper: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        self._loop_beat = 0.0
        self._last_heartbeat: Optional[datetime] = None
        self._next_prune: Optional[float] = None  # clock.monotonic() of the next pruning; None = next tick
        self._pruned = 0  # rows deleted so far by the pruning pass in progress
        # Rows changed after this are what the first sync reads (declarations here are known).
        self._synced_at: Optional[datetime] = datetime.now(UTC)
        # Every sync bumps the epoch. A declaration that read the store in an older epoch than the
        # one it registers in re-reads its row: that sync may have passed its name by.
        self._sync_epoch = 0
        # The stored states of every schedule, read at once for a burst of declarations (see
        # _stored_state). An entry serves one declaration; each sync drops the lot, and this
        # scheduler's own writes to a name (enable, disable, unschedule, clear) drop its entry.
        self._states: Optional[Dict[str, ScheduleState]] = None
        self._declared = 0  # declarations since the last sync
        self._tzinfos: Dict[str, Optional[tzinfo]] = {}  # zone name -> tzinfo (None: unknown here)
        self._store_failures = 0
        self._last_error: Optional[str] = None
        self._lags: Deque[float] = deque(maxlen=10_000)
        self._on_success: List[Hook] = []
        self._on_failure: List[Hook] = []

    # -- declaring ---------------------------------------------------------------------

    def schedule_cron(
        self,
        name: str,
        pipeline_func: Callable[[], Any],
        cron_expression: str,
        timezone: Optional[str] = None,
        **options: Any,
    ) -> Schedule:
        """Run ``pipeline_func`` on a cron expression (5 to 7 fields, see docs/cron.md) in ``timezone``."""
        return self._declare(name, pipeline_func, "cron", cron_expression, timezone, options)

    def schedule_daily(
        self,
        name: str,
        pipeline_func: Callable[[], Any],
        hour: int = 0,
        minute: int = 0,
        timezone: Optional[str] = None,
        **options: Any,
    ) -> Schedule:
        """Run every day at ``hour:minute`` wall-clock time in ``timezone`` (fixed-time DST rules)."""
        _check_int("hour", hour, 0, 23)
        _check_int("minute", minute, 0, 59)
        return self._declare(name, pipeline_func, "daily", f"{hour:02d}:{minute:02d}", timezone, options)

    def schedule_hourly(
        self,
        name: str,
        pipeline_func: Callable[[], Any],
        minute: int = 0,
        timezone: Optional[str] = None,
        **options: Any,
    ) -> Schedule:
        """Run every hour at ``minute`` past the hour (every real hour, DST included)."""
        _check_int("minute", minute, 0, 59)
        return self._declare(name, pipeline_func, "hourly", str(minute), timezone, options)

    def schedule_interval(
        self,
        name: str,
        pipeline_func: Callable[[], Any],
        hours: float = 0,
        minutes: float = 0,
        seconds: float = 0,
        timezone: Optional[str] = None,
        *,
        days: float = 0,
        **options: Any,
    ) -> Schedule:
        """Run every ``hours``/``minutes``/``seconds`` of elapsed time, on a fixed grid from the epoch."""
        total = interval_seconds(days, hours, minutes, seconds)
        value = str(int(total)) if float(total).is_integer() else repr(float(total))
        return self._declare(name, pipeline_func, "interval", value, timezone, options)

    def _declare(
        self,
        name: str,
        func: Callable[[], Any],
        schedule_type: str,
        value: str,
        timezone: Optional[str],
        options: Dict[str, Any],
    ) -> Schedule:
        name = validate_name(name)
        if not callable(func):
            raise ScheduleError(f"pipeline_func of {name!r} must be callable, got {type(func).__name__}")
        context = validate_context(options.pop("context", None))
        opts = validate_options(
            options.pop("misfire_grace_seconds", self.config.misfire_grace_seconds),
            options.pop("catchup", self.config.catchup),
            options.pop("max_catchup", self.config.max_catchup),
            options.pop("max_instances", 1),
        )
        if options:
            raise ScheduleError(
                f"unknown option(s) {', '.join(sorted(options))} for {name!r}; the options are "
                "misfire_grace_seconds, catchup, max_catchup, max_instances, context"
            )
        zone_name = validate_timezone(
            timezone if timezone is not None else self.config.timezone, self.config.timezone_provider
        )
        trigger = build_trigger(
            schedule_type, value, zone_name, name, self.config.cron_engine, self.config.timezone_provider
        )
        digest = definition_hash(schedule_type, value, zone_name, opts, context)
        epoch, known = self._stored_state(name)
        if known is not None and known.definition_hash == digest:  # unchanged: no write transaction
            if isinstance(known, ScheduleRecord):
                stored = known
            else:  # read in bulk: the definition is ours (same hash), the state is the row's
                stored = ScheduleRecord(
                    name,
                    schedule_type,
                    value,
                    zone_name,
                    digest,
                    shared_options_dict(opts),
                    as_stored(context),
                    known.enabled,
                    known.next_fire,
                    known.last_fire,
                    known.created_at,
                    known.updated_at,
                )
            if logger.isEnabledFor(logging.DEBUG) and stored.next_fire != trigger.next_after(
                self._clock.now()
            ):
                logger.debug(
                    "schedule %r re-declared: stored state kept (next fire %s)", name, _iso(stored.next_fire)
                )
        else:  # new or changed: the store re-reads the row in its transaction and decides
            record = ScheduleRecord(
                name=name,
                schedule_type=schedule_type,
                schedule_value=value,
                timezone=zone_name,
                definition_hash=digest,
                options=opts.to_dict(),
                context=context,
                enabled=True,
                next_fire=trigger.next_after(self._clock.now()),
            )  # created_at/updated_at come from the store's own clock: other processes sync on them
            stored = self._store.declare_schedule(record)
        if not stored.enabled and stored.next_fire is not None:
            # A paused schedule whose definition changed: it keeps no next fire until enabled.
            self._store.set_enabled(name, False, None)
            stored.next_fire = None
        with self._cond:
            self._funcs[name] = func
            self._triggers[name] = trigger
            self._set_record(stored)
            missed_sync = self._sync_epoch != epoch
        if missed_sync:
            fresh = self._store.get_schedule(name)
            if fresh is not None:
                self._adopt(fresh, {name})
                stored = fresh
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "scheduled %r (%s %s, %s): next fire %s",
                name,
                schedule_type,
                value,
                zone_name,
                _iso(stored.next_fire),
            )
        return self._to_schedule(stored, opts if stored.definition_hash == digest else None)

    def _stored_state(self, name: str) -> Tuple[int, Union[ScheduleRecord, ScheduleState, None]]:
        """The sync epoch now, and the stored row of ``name`` (its state only, if read in bulk).

        After ``_BULK_READ_AFTER`` declarations without a sync, the states of all rows are read in
        one query and the next declarations take theirs from there (an entry serves once). None
        means no row, or none left in the bulk read: the caller writes, and the store decides.
        """
        with self._cond:
            epoch = self._sync_epoch
            states = self._states
            if states is not None:
                return epoch, states.pop(name, None)
            self._declared += 1
            bulk = self._declared >= _BULK_READ_AFTER
        if not bulk:
            return epoch, self._store.get_schedule(name)
        states = self._store.schedule_states()
        with self._cond:
            found = states.pop(name, None)
            if self._sync_epoch == epoch and self._states is None:
                self._states = states
        return epoch, found

    def _forget_state(self, name: Optional[str] = None) -> None:
        """Drop the bulk-read state of ``name`` (of every schedule if None) before writing it."""
        with self._cond:
            if name is None:
                self._states = None
            elif self._states is not None:
                self._states.pop(name, None)

    # -- state changes -----------------------------------------------------------------

    def enable(self, name: str) -> None:
        """Resume a schedule; it fires next at its first instant after now (no catch-up of the pause)."""
        record = self._require(name)
        if record.enabled and record.next_fire is not None:
            return
        trigger = self._trigger_for(record)
        next_fire = trigger.next_after(self._clock.now())
        self._forget_state(name)
        self._store.set_enabled(name, True, next_fire)
        self._refresh(name)
        logger.info("enabled %r: next fire %s", name, _iso(next_fire))

    def disable(self, name: str) -> None:
        """Pause a schedule; it stays paused across restarts until enabled."""
        self._require(name)
        self._forget_state(name)
        self._store.set_enabled(name, False, None)
        self._refresh(name)
        logger.info("disabled %r", name)

    def unschedule(self, name: str) -> None:
        """Remove a schedule and its history (a run in progress finishes)."""
        self._forget_state(name)
        if not self._store.delete_schedule(name) and name not in self._funcs:
            raise ScheduleNotFoundError(name)
        with self._cond:
            self._funcs.pop(name, None)
            self._triggers.pop(name, None)
            self._records.pop(name, None)
            self._cond.notify_all()
        logger.info("unscheduled %r", name)

    def clear(self) -> None:
        """Remove every schedule and all history from the store."""
        self._forget_state()
        count = self._store.delete_all()
        with self._cond:
            self._funcs.clear()
            self._triggers.clear()
            self._records.clear()
            self._heap.clear()
            self._cond.notify_all()
        logger.info("cleared %d schedule(s)", count)

    def on_success(self, hook: Hook) -> Hook:
        """Call ``hook(entry)`` with the history entry after each successful run; usable as a decorator."""
        self._on_success.append(hook)
        return hook

    def on_failure(self, hook: Hook) -> Hook:
        """Call ``hook(entry)`` with the history entry after each failed run; usable as a decorator."""
        self._on_failure.append(hook)
        return hook

    # -- reading -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._loop_thread is not None and self._loop_thread.is_alive()

    @property
    def schedules(self) -> Dict[str, Schedule]:
        """The schedules registered in this process, by name (a snapshot)."""
        return {s.pipeline_name: s for s in self.list_schedules()}

    @property
    def store(self) -> Store:
        return self._store

    def list_schedules(self, include_orphans: bool = False) -> List[Schedule]:
        """Schedules registered here; with ``include_orphans``, also stored ones with no function here."""
        records = self._store.list_schedules()
        records.reverse()
        out = []
        while records:  # popped as converted, so records and Schedules are not all alive at once
            record = records.pop()
            if record.name in self._funcs or include_orphans:
                out.append(self._to_schedule(record))
        return out

    def get_schedule(self, name: str) -> Schedule:
        """One schedule (registered or orphan); ScheduleNotFoundError if there is none."""
        return self._to_schedule(self._require(name))

    def get_history(self, schedule_name: str, limit: int = 50) -> List[Dict[str, Any]]:
        """Runs of a schedule, newest fire first: flowyml's keys plus fire_time, status, node, reason."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ScheduleError(f"limit must be an integer >= 1, got {limit!r}")
        return [history_entry(run) for run in self._store.history(schedule_name, limit)]

    def status(self) -> str:
        """``running``, ``degraded`` (the loop stalled or the store is failing) or ``stopped``; no I/O."""
        if not self.running:
            return "stopped"
        stale = time.monotonic() - self._loop_beat > 3 * self.config.heartbeat_seconds + 1
        return "degraded" if stale or self._store_failures else "running"

    def health_check(self) -> Dict[str, Any]:
        """Status (running / stopped / degraded, from real loop liveness), metrics and the next runs."""
        stats = self._store.stats()
        executed = stats.succeeded + stats.failed
        lags = sorted(self._lags)
        status = self.status()
        records = self._store.list_schedules()
        upcoming = sorted((r for r in records if r.enabled and r.next_fire), key=lambda r: r.next_fire)  # type: ignore[arg-type,return-value]
        return {
            "status": status,
            "node_id": self.node_id,
            "num_schedules": len([r for r in records if r.name in self._funcs]),
            "enabled_schedules": len([r for r in records if r.name in self._funcs and r.enabled]),
            "orphan_schedules": len([r for r in records if r.name not in self._funcs]),
            "metrics": {
                "total_runs": executed,
                "successful_runs": stats.succeeded,
                "failed_runs": stats.failed,
                "missed_runs": stats.missed,
                "skipped_runs": stats.skipped,
                "lost_runs": stats.lost,
                "running_runs": stats.running,
                "success_rate": stats.succeeded / max(executed, 1),
                "avg_duration_seconds": stats.avg_duration_seconds or 0.0,
                "last_heartbeat": _iso(self._last_heartbeat),
                "start_lag_ms": {
                    "samples": len(lags),
                    "p50": lags[len(lags) // 2] * 1000 if lags else None,
                    "p99": lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1000 if lags else None,
                    "max": lags[-1] * 1000 if lags else None,
                    "mean": statistics.fmean(lags) * 1000 if lags else None,
                },
            },
            "last_error": self._last_error,
            "next_runs": [
                {"name": r.name, "next_run": _iso(self._localize(r, r.next_fire))} for r in upcoming[:5]
            ],
        }

    # -- running -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop and housekeeping threads; returns at once (idempotent)."""
        if self.running:
            return
        self._stopping.clear()
        self._next_prune = None  # prune once shortly after start, on the first housekeeping tick
        self._ensure_executor()
        self._housekeeping()  # heartbeat and reap crashed nodes before the first fire
        self._sync_records()
        if self.config.gc_freeze:
            # Long-lived objects (schedules, triggers, the heap) leave the collector's generations,
            # so gen-2 collections stop pausing the loop for tens of milliseconds. Process-wide.
            gc.collect()
            gc.freeze()
            logger.info("gc_freeze: %d objects moved out of the collector's reach", gc.get_freeze_count())
        self._loop_beat = time.monotonic()
        self._loop_thread = threading.Thread(target=self._loop, name="flowyml_lite-scheduler", daemon=True)
        self._housekeeper = threading.Thread(
            target=self._housekeeping_loop, name="flowyml_lite-heartbeat", daemon=True
        )
        self._loop_thread.start()
        self._housekeeper.start()
        logger.info(
            "scheduler started: node %s, %d schedule(s), store %s",
            self.node_id,
            len(self._funcs),
            type(self._store).__name__,
        )

    def stop(self, timeout: Optional[float] = None) -> bool:
        """Stop firing, wait up to ``timeout`` (config default) for running runs; True if all finished."""
        limit = self.config.shutdown_timeout_seconds if timeout is None else timeout
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        for thread in (self._loop_thread, self._housekeeper):
            if thread is not None:
                thread.join(timeout=max(limit, 1.0))
        self._loop_thread = self._housekeeper = None
        drained = self.wait_for_runs(limit)
        if self._executor is not None:
            self._executor.shutdown(wait=drained, cancel_futures=True)
            self._executor = None
        if drained:
            self._store.remove_node(self.node_id)
        else:
            logger.warning(
                "stop: runs still active after %.1fs (%s); they will be recorded as lost if this "
                "process exits first",
                limit,
                ", ".join(sorted(set(self._futures.values()))),
            )
        logger.info("scheduler stopped")
        return drained

    def close(self) -> None:
        """Stop and release the store and lock."""
        self.stop()
        self._store.close()
        if self._lock is not None:
            self._lock.close()

    def __enter__(self) -> PipelineScheduler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Start (if needed) and block until ``stop()`` or Ctrl-C."""
        self.start()
        try:
            while self.running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            logger.info("interrupted: stopping")
        finally:
            self.stop()

    def wait_for_runs(self, timeout: Optional[float] = None) -> bool:
        """Block until every run handed to the pool has finished; False on timeout."""
        with self._cond:
            pending = list(self._futures)
        if not pending:
            return True
        _, not_done = wait_futures(pending, timeout=timeout)
        return not not_done

    def run_pending(self) -> int:
        """Process every fire due now, in the calling thread; returns how many schedules were due.

        The loop does this by itself; tests with a FakeClock call it instead of starting threads.
        """
        self._ensure_executor()
        now = self._clock.now()
        with self._cond:
            due = self._pop_due(now)
        for name, fire in due:
            self._process(name, fire, now)
        return len(due)

    def run_now(self, name: str, wait: bool = False, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Fire a schedule now, outside its timetable (respecting ``max_instances``); returns its entry."""
        record = self._require(name)
        func = self._funcs.get(name)
        if func is None:
            raise ScheduleError(
                f"{name!r} has no function registered in this process (an orphan): declare it "
                "with schedule_* before running it"
            )
        now = self._clock.now()
        run = RunRecord(_run_key(now), name, now, RUNNING, self.node_id, reason="manual")
        opts = Options.from_dict(record.options)
        for _ in range(5):
            current = record.next_fire
            if not record.enabled or current is None:
                raise ScheduleError(f"{name!r} is disabled: enable({name!r}) first")
            stored = self._store.claim(name, current, current, [run], opts.max_instances)
            if stored is not None:
                break
            # Lost a race with the loop, or this instant is taken (two manual runs within one clock tick).
            run.fire_time += _US
            record = self._refresh(name) or record
        else:
            raise ScheduleError(f"could not claim a manual run of {name!r}: its state kept changing")
        self._refresh(name)
        future = self._submit(name, func, stored)
        if wait and future is not None:
            future.result(timeout)
            if stored[0].status != SKIPPED:
                # This run's own row (runs may have started since): manual fire instants are unique.
                for run in self._store.history(name, 200):
                    if run.fire_time == stored[0].fire_time:
                        return history_entry(run)
        return history_entry(stored[0])

    # -- the main loop -----------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                with self._cond:
                    now = self._clock.now()
                    self._loop_beat = time.monotonic()
                    due = self._pop_due(now)
                    if not due:
                        timeout = self.config.heartbeat_seconds
                        if self._heap:
                            timeout = min(timeout, max((self._heap[0][0] - now).total_seconds(), 0.0))
                        self._clock.wait(self._cond, timeout)
                        continue
                for name, fire in due:
                    self._process(name, fire, now)
            except Exception:  # the loop must survive anything; health shows it
                self._last_error = traceback.format_exc(limit=3)
                logger.exception("scheduler loop error (continuing)")
                self._stopping.wait(0.1)

    def _pop_due(self, now: datetime) -> List[Tuple[str, datetime]]:
        due: List[Tuple[str, datetime]] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, name, fire = heapq.heappop(heap)
            record = self._records.get(name)
            if record is None or fire is None or record.next_fire != fire or not record.enabled:
                continue
            if name in self._funcs:
                due.append((name, fire))
        return due

    def _process(self, name: str, fire: datetime, now: datetime) -> None:
        """Claim the fire (with its misfire policy) and hand the winning runs to the pool."""
        with self._cond:
            record = self._records.get(name)
            trigger = self._triggers.get(name)
            func = self._funcs.get(name)
        if record is None or trigger is None or func is None or record.next_fire != fire:
            return
        opts = Options.from_dict(record.options)
        try:
            runs, new_next = self._plan(name, trigger, fire, now, opts)
            stored = self._store.claim(name, fire, new_next, runs, opts.max_instances)
        except Exception as exc:
            self._store_trouble(exc, f"claiming {name!r} at {fire.isoformat()}")
            with self._cond:
                delay = min(0.1 * 2 ** min(self._store_failures, 10), _RETRY_MAX_SECONDS)
                self._push(now + timedelta(seconds=delay), name, fire)
            return
        self._store_failures = 0
        if stored is None:  # another process claimed it, or the schedule changed under us
            fresh = self._refresh(name)
            if fresh is not None and fresh.enabled and fresh.next_fire == fire:
                # Unchanged, so the claim hit an existing run row for this instant (a clock stepped
                # back, then enable or a re-declaration): that instant is done; move past it.
                logger.warning(
                    "%r: fire %s already has a run; skipping to the next instant", name, fire.isoformat()
                )
                self._store.claim(name, fire, new_next, [], opts.max_instances)
                self._refresh(name)
            return
        with self._cond:
            record.next_fire = new_next
            active = [r for r in stored if r.status in ACTIVE_STATUSES]
            if active:
                record.last_fire = max(r.fire_time for r in active)
            if new_next is not None and record.enabled:
                self._push(new_next, name, new_next)
        for run in stored:
            if run.status == SKIPPED:
                logger.warning("skipped %r fire %s: %s", name, run.fire_time.isoformat(), run.reason)
        if active:
            self._submit(name, func, active)

    def _plan(
        self, name: str, trigger: Trigger, fire: datetime, now: datetime, opts: Options
    ) -> Tuple[List[RunRecord], Optional[datetime]]:
        """The run rows to claim for a due fire, and the next fire, by the misfire policy (DESIGN §4)."""
        node = self.node_id
        if (now - fire).total_seconds() <= opts.misfire_grace_seconds:
            run = RunRecord(_run_key(fire), name, fire, RUNNING, node, started_at=now)
            return [run], trigger.next_after(fire)
        keep = max(opts.max_catchup, MISSED_DETAIL_LIMIT) + 1
        instants, count = trigger.fires_until(fire - _US, now, keep)
        new_next = trigger.next_after(now)
        if opts.catchup == "latest":
            to_run = instants[-1:]
        elif opts.catchup == "all":
            to_run = instants[-opts.max_catchup :]
        else:
            to_run = []
        missed_count = count - len(to_run)
        runs: List[RunRecord] = []
        if missed_count:
            policy = f"catchup={opts.catchup}"
            missed_known = instants[: len(instants) - len(to_run)]
            if missed_count <= MISSED_DETAIL_LIMIT and len(missed_known) == missed_count:
                runs += [
                    RunRecord(_run_key(t), name, t, MISSED, node, reason=f"misfire ({policy})")
                    for t in missed_known
                ]
            else:
                last = missed_known[-1] if missed_known else fire
                runs.append(
                    RunRecord(
                        _run_key(fire),
                        name,
                        fire,
                        MISSED,
                        node,
                        reason=f"{missed_count} missed instants from {fire.isoformat()} to "
                        f"{last.isoformat()} (misfire, {policy})",
                    )
                )
            logger.warning(
                "%r misfired: %d instant(s) from %s were missed (%s), %d will run now",
                name,
                missed_count,
                fire.isoformat(),
                policy,
                len(to_run),
            )
        runs += [
            RunRecord(
                _run_key(t),
                name,
                t,
                QUEUED if i else RUNNING,
                node,
                None if i else now,
                reason="catch-up",
            )
            for i, t in enumerate(to_run)
        ]
        return runs, new_next

    # -- runs --------------------------------------------------------------------------

    def _submit(
        self, name: str, func: Callable[[], Any], runs: Sequence[RunRecord]
    ) -> Optional[Future[None]]:
        runs = [r for r in runs if r.status in ACTIVE_STATUSES]
        if not runs:
            return None
        executor = self._ensure_executor()
        with self._cond:
            future = executor.submit(self._run_batch, name, func, runs)
            self._futures[future] = name
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future[None]) -> None:
        with self._cond:
            self._futures.pop(future, None)

    def _run_batch(self, name: str, func: Callable[[], Any], runs: Sequence[RunRecord]) -> None:
        for run in runs:
            if run.status == QUEUED:
                if self._stopping.is_set():
                    self._finish(run, SKIPPED, None, None, None, "scheduler stopped before this catch-up run")
                    continue
                if not self._store.start_run(run.run_key, self._clock.now()):
                    continue
            self._execute(name, func, run)

    def _execute(self, name: str, func: Callable[[], Any], run: RunRecord) -> None:
        lease: Optional[Lease] = None
        renewing: Optional[threading.Event] = None
        if self._lock is not None:
            ttl = self.config.lock_ttl_seconds
            try:
                lease = self._lock.acquire(f"schedule:{name}", ttl_seconds=ttl)
            except Exception as exc:  # the lock backend is down: say so in history, don't leave it running
                logger.error("lock backend failed for %r: %s", name, exc)
                self._finish(run, FAILED, None, f"lock backend: {type(exc).__name__}: {exc}", None)
                return
            if lease is None:
                self._finish(
                    run, SKIPPED, None, None, None, "overlap: the schedule's lock is held by another process"
                )
                return
            if self._lock.expires:
                renewing = _keep_renewed(lease, ttl, name)
        try:
            started = self._clock.now()
            lag = (started - run.fire_time).total_seconds()
            self._lags.append(lag)
            run.started_at = started
            t0 = time.perf_counter()
            token = _CURRENT_RUN.set(
                RunContext(name, run.fire_time, run.run_key, self.node_id, started, run.reason == "manual")
            )
            try:
                success, run_id, error = _outcome(func())
            except BaseException as exc:  # a run must never take the worker down, whatever it raises
                success, run_id, error = False, None, f"{type(exc).__name__}: {exc}"
                logger.error(
                    "run of %r (fire %s) raised:\n%s", name, run.fire_time.isoformat(), traceback.format_exc()
                )
            finally:
                _CURRENT_RUN.reset(token)
            duration = time.perf_counter() - t0
            status = SUCCEEDED if success else FAILED
            entry = self._finish(run, status, duration, error, run_id)
            logger.info(
                "%s %r fire %s lag %.1f ms in %.3fs run_id=%s",
                status,
                name,
                run.fire_time.isoformat(),
                lag * 1000,
                duration,
                run_id or "-",
            )
            for hook in self._on_success if success else self._on_failure:
                try:
                    hook(entry)
                except Exception:
                    logger.exception("%s hook failed for %r", "on_success" if success else "on_failure", name)
        finally:
            if renewing is not None:
                renewing.set()
            if lease is not None:
                lease.release()

    def _finish(
        self,
        run: RunRecord,
        status: str,
        duration: Optional[float],
        error: Optional[str],
        run_id: Optional[str],
        reason: Optional[str] = None,
    ) -> Dict[str, Any]:
        completed = self._clock.now()
        for attempt in range(5):
            try:
                self._store.finish_run(
                    run.run_key,
                    status,
                    completed,
                    duration,
                    error,
                    run_id,
                    started_at=run.started_at,
                    reason=reason,
                )
                break
            except Exception as exc:
                self._store_trouble(exc, f"recording run {run.run_key} of {run.schedule!r}")
                time.sleep(min(0.1 * 2**attempt, _RETRY_MAX_SECONDS))
        run.status, run.completed_at, run.duration_seconds, run.error, run.run_id = (
            status,
            completed,
            duration,
            error,
            run_id,
        )
        run.reason = reason or run.reason
        return history_entry(run)

    # -- housekeeping: heartbeats, crashed nodes, changes made by other processes -------

    def _housekeeping_loop(self) -> None:
        tick = min(self.config.heartbeat_seconds, _MAINTENANCE_SECONDS)
        next_beat = time.monotonic() + self.config.heartbeat_seconds
        while not self._stopping.wait(tick):
            try:
                self._store.maintain()  # e.g. SQLite's WAL checkpoint, kept out of the claims' commits
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.config.heartbeat_seconds
                    self._housekeeping()
                    self._sync_records()
                    self._store_failures = 0  # the store answers again: health is no longer degraded
            except Exception as exc:
                self._store_trouble(exc, "housekeeping")
            self._prune_history()

    def _prune_history(self) -> None:
        """Delete runs past the config's history limits: a pass every 10 minutes, bounded work a tick."""
        days, most = self.config.history_retention_days, self.config.history_max_runs
        mono = self._clock.monotonic()
        if (days is None and most is None) or (self._next_prune is not None and mono < self._next_prune):
            return
        older_than: Optional[datetime] = None
        if days is not None:
            try:
                older_than = self._clock.now() - timedelta(days=days)
            except OverflowError:  # a retention reaching before year 1: no age limit
                older_than = None
        try:
            count = self._store.prune_runs(older_than, most, limit=_PRUNE_ROWS_PER_TICK)
        except Exception as exc:  # never fatal to housekeeping: the next pass retries
            self._store_failures += 1
            self._last_error = f"pruning history: {type(exc).__name__}: {exc}"
            logger.warning(
                "store error while pruning history (retried in %.0f s): %s", _PRUNE_EVERY_SECONDS, exc
            )
            self._next_prune = mono + _PRUNE_EVERY_SECONDS
            return
        self._pruned += count
        if count >= _PRUNE_ROWS_PER_TICK:
            self._next_prune = mono  # a backlog: go on at the next tick, after its heartbeat
            return
        self._next_prune = mono + _PRUNE_EVERY_SECONDS
        if self._pruned:
            logger.info(
                "pruned %d run(s) from history (history_retention_days=%s, history_max_runs=%s)",
                self._pruned,
                days,
                most,
            )
        self._pruned = 0

    def _housekeeping(self) -> None:
        now = self._clock.now()
        host = self._host
        self._store.heartbeat(NodeRecord(self.node_id, host, os.getpid(), self._started_at, now))
        self._last_heartbeat = now
        expiry = timedelta(seconds=self.config.node_timeout_seconds)
        for node in self._store.list_nodes():
            if node.node_id == self.node_id:
                continue
            reason = None
            if now - node.heartbeat > expiry:
                reason = f"node {node.node_id} stopped sending heartbeats at {node.heartbeat.isoformat()}"
            elif node.hostname == host and not _pid_alive(node.pid):
                reason = f"node {node.node_id} (pid {node.pid} on this host) is no longer running"
            if reason:
                for run in self._store.mark_node_lost(node.node_id, reason):
                    logger.warning(
                        "run of %r fired %s is lost: %s", run.schedule, run.fire_time.isoformat(), reason
                    )

    def _sync_records(self) -> None:
        """Adopt changes other processes made to our schedules (enabled there, redefined there).

        Other changes heal by themselves: a claim refused because another process advanced or
        disabled a schedule re-reads it. Only a shared store can change behind our back, and only
        rows changed since the last sync (with a minute's margin for clock skew) are read. Every
        sync also drops the declarations' bulk read, which is older than what it has seen.
        """
        started = datetime.now(UTC)
        with self._cond:
            self._sync_epoch += 1
            self._states = None
            self._declared = 0
            names = set(self._funcs)
        if not self._store.shared or not names:
            return
        if self._synced_at is None:
            records = self._store.list_schedules()
        else:
            # Names and versions first (cheap): rows re-read within the skew margin are skipped.
            margin = timedelta(seconds=self._store.clock_skew_seconds)
            versions = self._store.schedule_versions(self._synced_at - margin)
            with self._cond:
                known = {n: r.updated_at for n, r in self._records.items()}
            stale = [n for n, v in versions.items() if n in names and known.get(n) != v]
            records = [r for r in map(self._store.get_schedule, stale) if r is not None]
        self._synced_at = started
        for record in records:
            self._adopt(record, names)

    def _adopt(self, record: ScheduleRecord, names: Set[str]) -> None:
        """Take a row another process may have changed (enabled, redefined) as this scheduler's."""
        if record.name not in names:
            return
        trigger = None
        with self._cond:
            mine = self._records.get(record.name)
        if mine is not None and mine.definition_hash != record.definition_hash:
            trigger = self._trigger_for(record, rebuild=True)  # redefined by another process
        with self._cond:
            if trigger is not None:
                self._triggers[record.name] = trigger
            if mine is None or (mine.next_fire, mine.enabled, mine.definition_hash) != (
                record.next_fire,
                record.enabled,
                record.definition_hash,
            ):
                self._set_record(record)
            else:
                mine.updated_at = record.updated_at

    # -- internals ---------------------------------------------------------------------

    def _set_record(self, record: ScheduleRecord) -> None:
        """Cache a record and (re)queue its next fire; caller holds ``_cond``."""
        self._records[record.name] = record
        if record.enabled and record.next_fire is not None:
            heapq.heappush(self._heap, (record.next_fire, next(self._seq), record.name, record.next_fire))
        self._cond.notify_all()

    def _push(self, when: datetime, name: str, fire: Optional[datetime]) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), name, fire))
        self._cond.notify_all()

    def _refresh(self, name: str) -> Optional[ScheduleRecord]:
        record = self._store.get_schedule(name)
        with self._cond:
            if record is None:
                self._records.pop(name, None)
            else:
                self._set_record(record)
        return record

    def _require(self, name: str) -> ScheduleRecord:
        record = self._store.get_schedule(name)
        if record is None:
            raise ScheduleNotFoundError(name)
        return record

    def _trigger_for(self, record: ScheduleRecord, rebuild: bool = False) -> Trigger:
        trigger = None if rebuild else self._triggers.get(record.name)
        if trigger is None:
            trigger = build_trigger(
                record.schedule_type,
                record.schedule_value,
                record.timezone,
                record.name,
                self.config.cron_engine,
                self.config.timezone_provider,
            )
        return trigger

    def _localize(self, record: ScheduleRecord, moment: Optional[datetime]) -> Optional[datetime]:
        if moment is None:
            return None
        try:
            zone = self._tzinfos[record.timezone]
        except KeyError:
            try:
                zone = get_zone(record.timezone, self.config.timezone_provider).tzinfo
            except Exception:  # an orphan from a machine with zones we lack: show UTC
                zone = None
            self._tzinfos[record.timezone] = zone
        if zone is None:
            return moment
        try:
            return moment.astimezone(zone)
        except Exception:  # e.g. an instant near year 9999 that the zone's offset pushes past it
            return moment

    def _to_schedule(self, record: ScheduleRecord, options: Optional[Options] = None) -> Schedule:
        return to_schedule(
            record,
            self._funcs.get(record.name),
            lambda moment: self._localize(record, moment) or moment,
            options,
        )

    def _ensure_executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.config.max_concurrent_runs, thread_name_prefix="flowyml_lite-run"
            )
        return self._executor

    def _store_trouble(self, exc: BaseException, doing: str) -> None:
        self._store_failures += 1
        self._last_error = f"{doing}: {type(exc).__name__}: {exc}"
        logger.error("store error while %s (attempt %d): %s", doing, self._store_failures, exc)


def _keep_renewed(lease: Lease, ttl: float, name: str) -> threading.Event:
    """Renew an expiring lease every third of its TTL until the returned event is set."""
    done = threading.Event()

    def renew() -> None:
        while not done.wait(ttl / 3):
            try:
                if not lease.renew(ttl):
                    logger.error("lost the lock of %r while its run goes on (expired before renewal)", name)
                    return
            except Exception as exc:
                logger.warning("could not renew the lock of %r: %s", name, exc)

    threading.Thread(target=renew, name=f"flowyml_lite-renew-{name}", daemon=True).start()
    return done


def _check_int(arg: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ScheduleError(f"{arg} must be an integer from {low} to {high}, got {value!r}")


def host_identity() -> str:
    """This host as seen by pids: hostname plus, on Linux, boot id and pid namespace.

    Two processes may judge each other's liveness by pid only when their identities are equal;
    containers sharing a hostname but not a pid namespace differ here.
    """
    parts = [socket.gethostname()]
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            parts.append(f.read().strip()[:8])
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        pass
    return "/".join(parts)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


__all__ = [
    "PipelineScheduler",
    "RunContext",
    "Schedule",
    "SchedulerConfig",
    "current_run",
    "history_entry",
    "open_lock",
    "open_store",
]
