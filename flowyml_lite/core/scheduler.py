"""``PipelineScheduler``: the seed guide's API over the runtime (DESIGN §2, §4).

The facade declares schedules, changes their state and answers questions, each through a
collaborator of its own in ``core/``: ``declarations.py`` (a ``schedule_*`` call's arguments made a
definition), ``catalog.py`` (look up, pause, resume, remove), ``scheduler_reports.py`` (schedules,
history, status, health) and ``serving.py`` (this node among its peers). It starts and stops the
rooms of ``flowyml_lite.runtime`` that do the work of firing, wired here:

    TimerLoop (when) → Claims (whether, once: one store transaction per wake) → Runner (how:
    executors, leases, timeouts, retries) → OutcomeWriter (what happened, group-committed)
    Housekeeping (who is alive: heartbeats, lost nodes, membership; other processes' changes)
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys
import threading
import time
import uuid
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from ..clock import SYSTEM_CLOCK, Clock
from ..errors import CronError, ScheduleError, TimezoneError
from ..executors.child_import import importing_job_code, starts_held
from ..locks.base import Lock
from ..runtime import gc_pause
from ..runtime.claims import Claims
from ..runtime.clock_watch import ClockWatch
from ..runtime.context import RunContext, current_run
from ..runtime.gc_pause import GCPause
from ..runtime.health import Troubles
from ..runtime.housekeeping import Housekeeping
from ..runtime.loop import TimerLoop
from ..runtime.membership import Membership
from ..runtime.outcomes import OutcomeWriter
from ..runtime.runner import HOOKS_AT_STOP_SECONDS, Runner
from ..runtime.sync import Sync
from ..runtime.table import ScheduleTable
from ..stores.base import SKIPPED, RunRecord, Store
from . import at_exit
from .backends import open_lock, open_store
from .catalog import Catalog
from .declarations import (
    cron_value,
    daily_value,
    define,
    first_fire,
    function_name,
    hourly_value,
    interval_value,
)
from .options import check_option_names
from .schedule import Schedule
from .scheduler_config import SchedulerConfig
from .scheduler_reports import Reports
from .serving import Serving
from .triggers import once_value
from .views import Localizer, history_entry, iso

logger = logging.getLogger("flowyml_lite.scheduler")

#: Store upkeep that stalls writers (SQLite's WAL restart) waits until no fire that still needs a
#: claim is due this soon (runs claimed ahead start without the store).
QUIET_SECONDS = 0.05
#: Declarations logged one by one at INFO; the later ones at DEBUG (an app declaring 100,000
#: schedules at each start would write 100,000 lines, and spend a third of its start on them).
LOGGED_DECLARATIONS = 100

Hook = Callable[[Dict[str, Any]], Any]


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
        self._declarations = 0  # declarations made, for LOGGED_DECLARATIONS
        self._sync = Sync(
            self._table,
            self._store,
            lambda record: self._catalog.trigger_for(record, rebuild=True),
            self.node_id,
            defer_collections=cfg.gc_pause_in_bursts,
        )
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
            adopt=lambda record: self._sync.adopt(record, {record.name}),
            busy=self._runner.busy,
            claim_ahead=cfg.claim_ahead,
        )
        self._serving = Serving(
            self._store,
            self._table,
            self._membership,
            self._claims,
            self._sync,
            self.node_id,
            lambda: self._runner.rebase(self._clock.now()),
        )
        self._catalog = Catalog(
            self._store, self._table, self._sync, self._claims, self._serving, self._clock, cfg
        )
        self._loop = TimerLoop(
            self._table,
            self._clock,
            self._claims.process,
            self._troubles,
            cfg.heartbeat_seconds,
            self._claims.prepare,
            GCPause(cfg.gc_pause_in_bursts),
            self._claims.may_prepare,
            self._claims.wants_room,
            self._runner.starting,
        )
        self._clock_watch = ClockWatch(self._table, self._troubles, self._clock.now)
        self._housekeeping = Housekeeping(
            self._store,
            self._clock,
            self._troubles,
            self._membership,
            self.node_id,
            cfg.heartbeat_seconds,
            cfg.node_timeout_seconds,
            self._serving.resync,
            cfg.history_retention_days,
            cfg.history_max_runs,
            self._lock,
            self._runner.announce,
            self._serving.digest,
            quiet=lambda: self._table.quiet_for(QUIET_SECONDS, self._clock.now()),
            quiet_for=lambda seconds: (  # a collection stalls every thread: not while runs wait to start
                not self._runner.starting()
                and self._table.quiet_for(seconds, self._clock.now(), self._claims.claimed_ahead.first())
            ),
            adopt_changes=lambda: self._sync.sync(quick=True),
            clock_watch=self._clock_watch,
            take_over=lambda: self._serving.mark_declared(list(self._table.funcs)),
        )
        self._reports = Reports(
            self._store,
            self._table,
            self._loop,
            self._runner,
            self._writer,
            self._housekeeping,
            self._membership,
            self._troubles,
            self._clock,
            Localizer(cfg.timezone_provider),
            self.node_id,
            cfg.heartbeat_seconds,
            lambda: self._claims.in_store_since,
            self._claims.held,
            lambda: self._claims.answer_seconds,
        )

    # -- declaring ---------------------------------------------------------------------

    def schedule_cron(
        self,
        name: str,
        pipeline_func: Optional[Callable[[], Any]] = None,
        cron_expression: Optional[str] = None,
        timezone: Optional[str] = None,
        **options: Any,
    ) -> Schedule:
        """Run ``pipeline_func`` on a cron expression (5 to 7 fields, see docs/cron.md) in ``timezone``."""
        value = lambda: cron_value(cron_expression)  # noqa: E731 (checked after the options' names)
        return self._declare(name, pipeline_func, "cron", value, timezone, options)

    def schedule_daily(
        self,
        name: str,
        pipeline_func: Optional[Callable[[], Any]] = None,
        hour: int = 0,
        minute: int = 0,
        timezone: Optional[str] = None,
        **options: Any,
    ) -> Schedule:
        """Run every day at ``hour:minute`` wall-clock time in ``timezone`` (fixed-time DST rules)."""
        value = lambda: daily_value(hour, minute)  # noqa: E731 (checked after the options' names)
        return self._declare(name, pipeline_func, "daily", value, timezone, options)

    def schedule_hourly(
        self,
        name: str,
        pipeline_func: Optional[Callable[[], Any]] = None,
        minute: int = 0,
        timezone: Optional[str] = None,
        **options: Any,
    ) -> Schedule:
        """Run every hour at ``minute`` past the hour (every real hour, DST included)."""
        return self._declare(name, pipeline_func, "hourly", lambda: hourly_value(minute), timezone, options)

    def schedule_interval(
        self,
        name: str,
        pipeline_func: Optional[Callable[[], Any]] = None,
        hours: float = 0,
        minutes: float = 0,
        seconds: float = 0,
        timezone: Optional[str] = None,
        *,
        days: float = 0,
        **options: Any,
    ) -> Schedule:
        """Run every ``hours``/``minutes``/``seconds`` of elapsed time, on a fixed grid from the epoch."""
        value = lambda: interval_value(days, hours, minutes, seconds)  # noqa: E731
        return self._declare(name, pipeline_func, "interval", value, timezone, options)

    def schedule_once(
        self,
        name: str,
        pipeline_func: Optional[Callable[[], Any]] = None,
        at: Union[datetime, str, None] = None,
        timezone: Optional[str] = None,
        **options: Any,
    ) -> Schedule:
        """Run once at ``at`` (an aware datetime or ISO 8601 text with an offset); listed until removed."""
        return self._declare(name, pipeline_func, "once", lambda: once_value(at), timezone, options)

    def _declare(
        self,
        name: str,
        func: Optional[Callable[[], Any]],
        schedule_type: str,
        value: Callable[[], str],
        timezone: Optional[str],
        options: Dict[str, Any],
    ) -> Schedule:
        """Declare a schedule; ``value`` works out its stored timetable value from the call's
        arguments (after the options' names are checked, so a misspelt option is said first)."""
        try:
            if "func" in options:  # the spelling of flowyml's API reference
                alias = options.pop("func")
                if func is not None:
                    raise ScheduleError(f"{name!r}: give the function once, as pipeline_func or func")
                func = alias
            if func is None:
                raise ScheduleError(f"{name!r}: no function to run: pass pipeline_func (the job to run)")
            if options:
                check_option_names(options, name if isinstance(name, str) else None)
            text = value()
            new = define(self.config, name, func, schedule_type, text, timezone, options, self._runner.check)
        except (CronError, ScheduleError, TimezoneError) as exc:  # bad input: said here, not deep inside
            raise exc.with_traceback(None) from None
        record = new.record
        if importing_job_code():  # a process run's child importing this module: the store is the app's
            record.next_fire = first_fire(new, self._clock.now())
            return self._reports.schedule(record, new.options)
        before = self._table.records.get(record.name) if record.name in self._table.funcs else None
        before_func = self._table.funcs.get(record.name) if before is not None else None
        try:
            stored = self._sync.declare(record, func, new.trigger, lambda: first_fire(new, self._clock.now()))
        except ScheduleError as exc:
            raise exc.with_traceback(None) from None
        if before is not None and before.definition_hash != record.definition_hash:
            logger.warning(
                "%r was already declared in this process with another definition: this one replaces it",
                record.name,
            )
        elif before_func is not None and function_name(before_func) != function_name(func):
            logger.warning(
                "%r was already declared in this process with another function (%s): %s replaces it",
                record.name,
                function_name(before_func),
                function_name(func),
            )
        self._serving.changed(declared=[record.name])
        self._declarations += 1
        level = logging.INFO if self._declarations <= LOGGED_DECLARATIONS else logging.DEBUG
        if logger.isEnabledFor(level):
            logger.log(
                level,
                "scheduled %r (%s %s, %s): next fire %s",
                record.name,
                schedule_type,
                text,
                record.timezone,
                iso(stored.next_fire),
            )
            if self._declarations == LOGGED_DECLARATIONS:
                logger.info("more schedules declared from here on are logged at DEBUG level only")
        ours = stored.definition_hash == record.definition_hash  # else another declaration's
        return self._reports.schedule(stored, new.options if ours else None)

    # -- state changes -----------------------------------------------------------------

    def enable(self, name: str) -> None:
        """Resume a schedule; it fires next at its first instant after now (no catch-up of the pause)."""
        self._catalog.enable(name)

    def disable(self, name: str) -> None:
        """Pause a schedule; it stays paused across restarts until enabled."""
        self._catalog.disable(name)

    def unschedule(self, name: str) -> None:
        """Remove a schedule and its history (a run in progress finishes)."""
        self._catalog.unschedule(name)

    def clear(self) -> None:
        """Remove every schedule and all history from the store."""
        self._catalog.clear()

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
        return self._reports.schedules(include_orphans)

    def get_schedule(self, name: str) -> Schedule:
        """One schedule (registered or orphan); ScheduleNotFoundError if there is none."""
        return self._reports.schedule(self._catalog.require(name))

    def get_history(self, schedule_name: str, limit: int = 50) -> List[Dict[str, Any]]:
        """Runs of a schedule, newest fire first: flowyml's keys plus fire_time, status, node, reason.

        A run's outcome reaches the store a few milliseconds after it ends (group commit).
        """
        return self._reports.history(schedule_name, limit)

    def run_records(self, schedule_name: str, limit: int = 50) -> List[RunRecord]:
        """The ``RunRecord``s behind ``get_history`` (newest fire first), for tools such as the
        dashboard: a run claimed here that still waits for a free worker shows ``queued``."""
        return self._reports.runs(schedule_name, limit)

    def run_records_of(self, names: Sequence[str], limit: int = 50) -> Dict[str, List[RunRecord]]:
        """``run_records`` of many schedules, read together (one query per thousand schedules on
        PostgreSQL); a schedule with no run is left out."""
        return self._reports.runs_of(names, limit)

    def status(self) -> str:
        """``running``, ``degraded`` (something is wrong: see ``health_check()``) or ``stopped``; no I/O."""
        return self._reports.status()

    def problems(self) -> List[Dict[str, Any]]:
        """What is wrong right now (source, message, for how long); empty when healthy. No I/O."""
        return self._reports.problems()

    def health_check(self) -> Dict[str, Any]:
        """Status (running / stopped / degraded, and why), run counts, start lag and the next runs."""
        return self._reports.health()

    # -- running -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop and housekeeping threads; returns at once (idempotent)."""
        if self.running:
            return
        if self._ignored_in_child("start()"):
            return
        at_exit.watch(self)
        self._runner.stopping.clear()
        self._claims.claimed_ahead.reopen()
        self._writer.serving = True
        self._runner.rebase(self._clock.now())
        self._housekeeping.stop(1.0)  # a heartbeat-only thread of run_now() hands over
        self._serving.start()
        self._housekeeping.beat()  # heartbeat and reap crashed nodes before the first fire
        self._sync.sync()
        self._clock_watch.check()  # a process started after the clock stepped back
        self._serving.mark_declared(list(self._table.funcs))
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
        deadline = time.monotonic() + limit

        def left(floor: float = 0.0) -> float:
            """What is left of ``limit`` (each step waits ``floor`` at least: a stuck store or
            thread makes stop() last about ``limit`` plus a few of these, never a multiple)."""
            return max(deadline - time.monotonic(), floor)

        self._runner.stopping.set()
        gc_pause.forgive_owed()  # a full collection put off by declarations: the collector's again
        loop_ended = self._loop.stop(left(1.0))
        if not loop_ended:
            logger.warning(
                "stop: the scheduler loop is still in a store call after %.1fs; it ends when the call "
                "returns, and the runs that call claimed are recorded skipped, not started",
                limit,
            )
        self._claims.claimed_ahead.at_stop(self._clock.now)  # started at their instant
        if self._store.shared:  # its peers take its share over now, while its runs finish
            self._serving.withdraw(lambda: self._housekeeping.beat(judge=False), left(1.0))
        self._runner.end_waiting()
        drained = self._runner.wait_idle(left())
        written = self._writer.stop(left(1.0) if drained else 1.0)
        self._housekeeping.stop(left(1.0))
        if drained:  # runs still going keep their executor: they end, and are recorded, when they do
            # The executors get what is left (an abandoned run, timed out, is not waited for again);
            # the hooks of the runs that ended get their own few seconds, however late those ended.
            self._runner.shutdown(wait=True, timeout=left(1.0), hooks=min(HOOKS_AT_STOP_SECONDS, limit))
        else:
            logger.warning(
                "stop: runs still active after %.1fs (%s); they will be recorded as lost if this "
                "process exits first",
                limit,
                ", ".join(self._runner.active_names()),
            )
            self._runner.let_go()
        self._serving.stop(drained and written, left(1.0))
        logger.info("scheduler stopped")
        return drained and written and loop_ended

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
        """Start (if needed) and block until ``stop()``, Ctrl-C or SIGTERM (``docker stop``,
        systemd), then stop cleanly: runs in flight finish and are recorded."""
        import signal

        if self._ignored_in_child("serve_forever()"):
            return
        stop = threading.Event()
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        self.start()
        say = f"scheduler running: {len(self._table.funcs)} schedule(s); Ctrl-C or SIGTERM stops it"
        logger.info("%s", say)
        if not logging.getLogger().hasHandlers():  # no logging set up: say it where it is seen
            print(f"flowyml_lite: {say}", file=sys.stderr, flush=True)
        try:
            while self.running and not stop.wait(0.5):
                pass
            if stop.is_set():
                logger.info("SIGTERM: stopping")
        except KeyboardInterrupt:
            logger.info("interrupted: stopping")
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            self.stop()

    @staticmethod
    def _ignored_in_child(call: str) -> bool:
        """True (and a warning) in a process run's child importing this module: no scheduler there;
        True (and a note) while a one-shot command imports the app for its declarations."""
        if starts_held():
            logger.info("%s not run: this module is imported by a one-shot command (run-now)", call)
            return True
        if not importing_job_code():
            return False
        logger.warning(
            "%s ignored: a process run's child is importing this module to run its job; "
            "keep start() and serve_forever() under `if __name__ == \"__main__\":`",
            call,
        )
        return True

    def wait_for_runs(self, timeout: Optional[float] = None) -> bool:
        """Block until every run handed to the runner has ended, its outcome is in the store and
        its hooks have been called."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._runner.wait_idle(timeout):
            return False
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        if not self._writer.flush(left):
            return False
        left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        return self._runner.wait_hooks(left)

    def run_pending(self) -> int:
        """Process every fire due now, in the calling thread; returns how many schedules were due.

        The loop does this by itself; tests with a FakeClock call it instead of starting threads.
        """
        now = self._clock.now()
        with self._table.lock:
            due = self._table.pop_due(now)
        self._claims.process(due, now)
        return len(due)

    def run_now(self, name: str, wait: bool = False, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Fire a schedule now, outside its timetable (respecting ``max_instances``); returns its entry.

        With ``wait``, returns the run's final entry (its outcome). A scheduler that was never
        started registers as a node first, so its run is recorded ``lost`` if this process dies.
        """
        record = self._catalog.require(name)
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
        self._catalog.refresh(name)
        entry = history_entry(stored[0])
        if stored[0].status == SKIPPED:
            self._runner.announce(stored[0])
            return entry
        ticket = self._runner.submit(name, func, stored, opts, manual=True)
        if wait and ticket is not None:
            deadline = None if timeout is None else time.monotonic() + timeout
            final = ticket.wait(timeout)
            if final is not None:
                left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                self._writer.flush(left)  # its row says what the entry says when this returns
                return final
        return entry


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
