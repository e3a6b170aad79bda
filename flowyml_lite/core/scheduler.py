"""``PipelineScheduler``: the seed guide's API over the runtime (DESIGN §2, §4).

The facade declares schedules, changes their state and answers questions; the work of firing is
done by the rooms of ``flowyml_lite.runtime``, wired here:

    TimerLoop (when) → Claims (whether, once: one store transaction per wake) → Runner (how:
    executors, leases, timeouts, retries) → OutcomeWriter (what happened, group-committed)
    Housekeeping (who is alive: heartbeats, lost nodes, membership; other processes' changes)
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import time
import uuid
from datetime import datetime, timedelta
from typing import Any, Callable, Dict, List, Optional, Union

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import ScheduleError, ScheduleNotFoundError
from ..locks.base import Lock
from ..runtime.claims import Claims
from ..runtime.context import RunContext, current_run
from ..runtime.health import Troubles, health_report
from ..runtime.housekeeping import Housekeeping
from ..runtime.loop import TimerLoop
from ..runtime.membership import Membership
from ..runtime.outcomes import OutcomeWriter
from ..runtime.runner import Runner
from ..runtime.sync import Sync
from ..runtime.table import ScheduleTable
from ..stores.base import (
    SKIPPED,
    ScheduleRecord,
    Store,
)
from .backends import open_lock, open_store
from .schedule import (
    Options,
    Schedule,
    definition_hash,
    interval_seconds,
    parse_options,
    shared_options_dict,
    to_schedule,
    validate_context,
    validate_name,
    validate_timezone,
)
from .scheduler_config import SchedulerConfig
from .triggers import Trigger, build_trigger, once_value
from .views import Localizer, history_entry, iso

logger = logging.getLogger("flowyml_lite.scheduler")

Hook = Callable[[Dict[str, Any]], Any]
_US = timedelta(microseconds=1)


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
        cfg = self.config
        self._clock: Clock = clock if clock is not None else SYSTEM_CLOCK
        self._store: Store = store if store is not None else open_store(cfg)
        if store is not None:
            store.open()
        self._lock: Optional[Lock] = lock if lock is not None else open_lock(cfg)
        self.node_id = cfg.node_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._table = ScheduleTable()
        self._sync = Sync(self._table, self._store, lambda record: self._trigger_for(record, rebuild=True))
        self._troubles = Troubles()
        self._membership = Membership(self.node_id)
        self._writer = OutcomeWriter(self._store, self._troubles)
        self._runner = Runner(
            self._store,
            self._writer,
            self._troubles,
            self._clock,
            self.node_id,
            cfg.max_concurrent_runs,
            self._lock,
            cfg.lock_ttl_seconds,
            history_entry,
        )
        self._claims = Claims(
            self._table,
            self._store,
            self._writer,
            self._membership,
            self._troubles,
            self._clock,
            self.node_id,
            self._runner.submit,
            self._runner.announce,
            self._runner.batch,
        )
        self._loop = TimerLoop(
            self._table, self._clock, self._claims.process, self._troubles, cfg.heartbeat_seconds
        )
        self._housekeeping = Housekeeping(
            self._store,
            self._clock,
            self._troubles,
            self._membership,
            self.node_id,
            cfg.heartbeat_seconds,
            cfg.node_timeout_seconds,
            self._resync,
            cfg.history_retention_days,
            cfg.history_max_runs,
            self._lock,
            self._runner.announce,
            self._serving,
        )
        self._started = False
        self._localize = Localizer(cfg.timezone_provider)

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

    def schedule_once(
        self,
        name: str,
        pipeline_func: Callable[[], Any],
        at: Union[datetime, str],
        timezone: Optional[str] = None,
        **options: Any,
    ) -> Schedule:
        """Run once at ``at`` (an aware datetime or ISO 8601 text with an offset); listed until removed."""
        return self._declare(name, pipeline_func, "once", once_value(at), timezone, options)

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
        opts = parse_options(options, self.config, name)
        context = validate_context(options.pop("context", None))
        self._runner.check(func, opts)
        zone_name = validate_timezone(
            timezone if timezone is not None else self.config.timezone, self.config.timezone_provider
        )
        trigger = self._build_trigger(name, schedule_type, value, zone_name, opts)
        digest = definition_hash(schedule_type, value, zone_name, opts, context)
        candidate = ScheduleRecord(
            name, schedule_type, value, zone_name, digest, shared_options_dict(opts), context
        )  # created_at/updated_at come from the store's own clock: other processes sync on them
        stored = self._sync.declare(
            candidate, func, trigger, lambda: self._first_fire(schedule_type, trigger, opts)
        )
        if self._started:
            self._mark_declared([name])
            self._reshare()
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "scheduled %r (%s %s, %s): next fire %s",
                name,
                schedule_type,
                value,
                zone_name,
                iso(stored.next_fire),
            )
        return self._to_schedule(stored, opts if stored.definition_hash == digest else None)

    def _first_fire(self, schedule_type: str, trigger: Trigger, opts: Options) -> Optional[datetime]:
        """The first fire of a new definition: after now; a one-off whose instant passed less than
        ``misfire_grace_seconds`` ago still fires (at once), like a fire picked up late."""
        now = self._clock.now()
        if schedule_type == "once":
            return trigger.next_after(now - timedelta(seconds=opts.misfire_grace_seconds) - _US)
        return trigger.next_after(now)

    def _build_trigger(self, name: str, schedule_type: str, value: str, zone: str, opts: Options) -> Trigger:
        return build_trigger(
            schedule_type,
            value,
            zone,
            name,
            self.config.cron_engine,
            self.config.timezone_provider,
            start_date=opts.start_date,
            end_date=opts.end_date,
        )

    def _resync(self, everything: bool) -> None:
        """Housekeeping's call: other processes' changes, or (``everything``) a new share of the
        schedules after a change of peers, whose old overlap reports no longer apply."""
        if everything:
            self._claims.unblock()
        self._sync.sync(everything)

    def _serving(self) -> Optional[str]:
        """The digest of the schedules this node's loop serves, or None while it is not started
        (a process that only runs things by hand must not be handed anyone's fires)."""
        return self._table.served.digest if self._started else None

    def _reshare(self) -> None:
        """This node's set of schedules changed: it splits its fires with other peers from now on
        (other nodes see the change at their next heartbeat), and re-reads the states it now owns."""
        if self._membership.serve(self._serving()) and self._store.shared:
            try:
                self._resync(True)
            except Exception as exc:  # the next heartbeat's sync reads them
                logger.warning("could not re-read the schedules after a change of peers: %s", exc)

    def _mark_declared(self, names: List[str]) -> None:
        try:
            self._store.mark_declared(self.node_id, names)
        except Exception as exc:  # only the fleet view depends on it: never fatal
            logger.warning("could not record that this node serves %d schedule(s): %s", len(names), exc)

    # -- state changes -----------------------------------------------------------------

    def enable(self, name: str) -> None:
        """Resume a schedule; it fires next at its first instant after now (no catch-up of the pause)."""
        record = self._require(name)
        if record.enabled and record.next_fire is not None:
            return
        next_fire = self._trigger_for(record).next_after(self._clock.now())
        self._sync.forget_state(name)
        self._store.set_enabled(name, True, next_fire)
        self._refresh(name)
        logger.info("enabled %r: next fire %s", name, iso(next_fire))

    def disable(self, name: str) -> None:
        """Pause a schedule; it stays paused across restarts until enabled."""
        self._require(name)
        self._claims.unblock(name)
        self._sync.forget_state(name)
        self._store.set_enabled(name, False, None)
        self._refresh(name)
        logger.info("disabled %r", name)

    def unschedule(self, name: str) -> None:
        """Remove a schedule and its history (a run in progress finishes)."""
        self._sync.forget_state(name)
        if not self._store.delete_schedule(name) and name not in self._table.funcs:
            raise ScheduleNotFoundError(name)
        with self._table.cond:
            self._table.forget(name)
        self._claims.unblock(name)
        if self._started:
            self._reshare()
        logger.info("unscheduled %r", name)

    def clear(self) -> None:
        """Remove every schedule and all history from the store."""
        self._sync.forget_state()
        count = self._store.delete_all()
        with self._table.cond:
            self._table.clear()
        self._claims.unblock()
        if self._started:
            self._reshare()
        logger.info("cleared %d schedule(s)", count)

    def on_success(self, hook: Hook) -> Hook:
        """Call ``hook(entry)`` with the history entry after each successful run; usable as a decorator."""
        self._runner.on_success.append(hook)
        return hook

    def on_failure(self, hook: Hook) -> Hook:
        """Call ``hook(entry)`` after each failed or timed-out run (its final attempt); a decorator too."""
        self._runner.on_failure.append(hook)
        return hook

    def on_finish(self, hook: Hook) -> Hook:
        """Call ``hook(entry)`` with every run's final history entry, whatever its status."""
        self._runner.on_finish.append(hook)
        return hook

    # -- reading -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._loop.alive

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
        funcs = self._table.funcs
        out = []
        while records:  # popped as converted, so records and Schedules are not all alive at once
            record = records.pop()
            if record.name in funcs or include_orphans:
                out.append(self._to_schedule(record))
        return out

    def get_schedule(self, name: str) -> Schedule:
        """One schedule (registered or orphan); ScheduleNotFoundError if there is none."""
        return self._to_schedule(self._require(name))

    def get_history(self, schedule_name: str, limit: int = 50) -> List[Dict[str, Any]]:
        """Runs of a schedule, newest fire first: flowyml's keys plus fire_time, status, node, reason.

        A run's outcome reaches the store a few milliseconds after it ends (group commit).
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ScheduleError(f"limit must be an integer >= 1, got {limit!r}")
        return [history_entry(run) for run in self._store.history(schedule_name, limit)]

    def status(self) -> str:
        """``running``, ``degraded`` (something is wrong: see ``health_check()``) or ``stopped``; no I/O."""
        if not self.running:
            return "stopped"
        stale = self._loop.stale(3 * self.config.heartbeat_seconds + 1)
        return "degraded" if stale or self._troubles.any() else "running"

    def problems(self) -> List[Dict[str, Any]]:
        """What is wrong right now (source, message, for how long); empty when healthy. No I/O."""
        found = self._troubles.problems()
        if self.running and self._loop.stale(3 * self.config.heartbeat_seconds + 1):
            found.append(
                {"source": "loop", "message": "the scheduler loop has not gone round", "for_seconds": None}
            )
        return found

    def health_check(self) -> Dict[str, Any]:
        """Status (running / stopped / degraded, and why), run counts, start lag and the next runs."""
        return health_report(
            self.status(),
            self.problems(),
            self._store.list_schedules(),
            self._table.funcs,
            self._store.stats(),
            sorted(self._runner.lags),
            self._clock.now(),
            self._localize,
            running=self.running,
            node_id=self.node_id,
            nodes=list(self._membership.nodes),
            last_heartbeat=self._housekeeping.last_heartbeat,
            pending_outcomes=self._writer.pending,
            last_error=self._troubles.last_error,
        )

    # -- running -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop and housekeeping threads; returns at once (idempotent)."""
        if self.running:
            return
        self._runner.stopping.clear()
        self._housekeeping.stop(1.0)  # a heartbeat-only thread of run_now() hands over
        self._started = True
        self._membership.serve(self._serving())
        self._housekeeping.beat()  # heartbeat and reap crashed nodes before the first fire
        self._sync.sync()
        self._mark_declared(list(self._table.funcs))
        if self.config.gc_freeze:
            # Long-lived objects (schedules, triggers, the heap) leave the collector's generations,
            # so gen-2 collections stop pausing the loop for tens of milliseconds. Process-wide.
            gc.collect()
            gc.freeze()
            logger.info("gc_freeze: %d objects moved out of the collector's reach", gc.get_freeze_count())
        self._loop.start()
        self._housekeeping.start()
        logger.info(
            "scheduler started: node %s, %d schedule(s), store %s",
            self.node_id,
            len(self._table.funcs),
            type(self._store).__name__,
        )

    def stop(self, timeout: Optional[float] = None) -> bool:
        """Stop firing, wait up to ``timeout`` (config default) for running runs; True if all finished."""
        limit = self.config.shutdown_timeout_seconds if timeout is None else timeout
        self._runner.stopping.set()
        self._loop.stop(max(limit, 1.0))
        self._runner.end_waiting()
        drained = self._runner.wait_idle(limit)
        written = self._writer.stop(max(limit, 1.0) if drained else 1.0)
        self._housekeeping.stop(max(limit, 1.0))
        if drained:  # runs still going keep their executor: they end, and are recorded, when they do
            self._runner.shutdown(wait=True, timeout=limit)
        if drained and written:
            try:
                self._store.remove_node(self.node_id)
            except Exception as exc:
                logger.warning("could not remove this node's row (it expires by itself): %s", exc)
        elif not drained:
            logger.warning(
                "stop: runs still active after %.1fs (%s); they will be recorded as lost if this "
                "process exits first",
                limit,
                ", ".join(self._runner.active_names()),
            )
        self._started = False
        logger.info("scheduler stopped")
        return drained and written

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
        """Block until every run handed to the runner has ended and its outcome is in the store."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._runner.wait_idle(timeout):
            return False
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        return self._writer.flush(left)

    def run_pending(self) -> int:
        """Process every fire due now, in the calling thread; returns how many schedules were due.

        The loop does this by itself; tests with a FakeClock call it instead of starting threads.
        """
        now = self._clock.now()
        with self._table.cond:
            due = self._table.pop_due(now)
        self._claims.process(due, now)
        return len(due)

    def run_now(self, name: str, wait: bool = False, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Fire a schedule now, outside its timetable (respecting ``max_instances``); returns its entry.

        With ``wait``, returns the run's final entry (its outcome). A scheduler that was never
        started registers as a node first, so its run is recorded ``lost`` if this process dies.
        """
        record = self._require(name)
        func = self._table.funcs.get(name)
        if func is None:
            raise ScheduleError(
                f"{name!r} has no function registered in this process (an orphan): declare it "
                "with schedule_* before running it"
            )
        if not self.running and not self._housekeeping.alive:
            self._housekeeping.beat(judge=False)
            self._housekeeping.start(prune=False)
        opts = self._claims.options(record)
        stored = self._claims.manual(record, opts)
        self._refresh(name)
        entry = history_entry(stored[0])
        if stored[0].status == SKIPPED:
            self._runner.announce(stored[0])
            return entry
        ticket = self._runner.submit(name, func, stored, opts, manual=True)
        if wait:
            deadline = None if timeout is None else time.monotonic() + timeout
            final = ticket.wait(timeout)
            if final is not None:
                left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                self._writer.flush(left)  # its row says what the entry says when this returns
                return final
        return entry

    # -- internals ---------------------------------------------------------------------

    def _refresh(self, name: str) -> Optional[ScheduleRecord]:
        record = self._store.get_schedule(name)
        with self._table.cond:
            if record is None:
                self._table.records.pop(name, None)
            else:
                self._table.set_record(record)
        return record

    def _require(self, name: str) -> ScheduleRecord:
        record = self._store.get_schedule(name)
        if record is None:
            raise ScheduleNotFoundError(name)
        return record

    def _trigger_for(self, record: ScheduleRecord, rebuild: bool = False) -> Trigger:
        trigger = None if rebuild else self._table.triggers.get(record.name)
        if trigger is None:
            opts = Options.from_dict(record.options)
            trigger = self._build_trigger(
                record.name, record.schedule_type, record.schedule_value, record.timezone, opts
            )
        return trigger

    def _to_schedule(self, record: ScheduleRecord, options: Optional[Options] = None) -> Schedule:
        return to_schedule(
            record,
            self._table.funcs.get(record.name),
            lambda moment: self._localize(record.timezone, moment) or moment,
            options,
        )


def _check_int(arg: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ScheduleError(f"{arg} must be an integer from {low} to {high}, got {value!r}")


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
