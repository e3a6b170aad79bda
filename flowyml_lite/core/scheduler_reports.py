"""The scheduler's read-only answers: schedules and runs as users see them, status and health.

``PipelineScheduler``'s reading methods delegate here. Nothing here changes a room's state;
``status()`` and ``problems()`` do no I/O either (probes may call them every second).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..clock import Clock
from ..errors import ScheduleError
from ..runtime.health import Troubles, health_report
from ..runtime.housekeeping import Housekeeping
from ..runtime.loop import TimerLoop
from ..runtime.membership import Membership
from ..runtime.outcomes import OutcomeWriter
from ..runtime.refusals import held_message
from ..runtime.runner import Runner
from ..runtime.table import ScheduleTable
from ..stores.base import RunRecord, RunStats, ScheduleRecord, Store
from .schedule import Options, Schedule, to_schedule
from .views import Localizer, history_entry

#: A claim the store takes this long to answer is named as a cause when fires start late.
SLOW_CLAIM_HINT_SECONDS = 0.2


class Reports:
    """Reads the rooms ``PipelineScheduler`` wires; ``node_id`` and ``heartbeat_seconds`` are its config's."""

    def __init__(
        self,
        store: Store,
        table: ScheduleTable,
        loop: TimerLoop,
        runner: Runner,
        writer: OutcomeWriter,
        housekeeping: Housekeeping,
        membership: Membership,
        troubles: Troubles,
        clock: Clock,
        localize: Localizer,
        node_id: str,
        heartbeat_seconds: float,
        claiming_since: Callable[[], Optional[float]] = lambda: None,
        held: Callable[[], List[str]] = lambda: [],
        claim_seconds: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self._store = store
        self._claiming_since = claiming_since  # when the claim the loop waits on began, if it does
        self._held = held  # schedules whose fire waits on a row held in the store
        self._claim_seconds = claim_seconds  # how long the store takes to answer claims lately
        self._table = table
        self._loop = loop
        self._runner = runner
        self._writer = writer
        self._housekeeping = housekeeping
        self._membership = membership
        self._troubles = troubles
        self._clock = clock
        self._localize = localize
        self._node_id = node_id
        self._heartbeat_seconds = heartbeat_seconds
        self._glance = StoreGlance(store, lambda: list(table.records.values()))

    # -- schedules and runs ------------------------------------------------------------

    def schedule(self, record: ScheduleRecord, options: Optional[Options] = None) -> Schedule:
        """The Schedule of a stored row, its instants shown in its zone (``options``: already parsed)."""
        func = self._table.funcs.get(record.name)
        o = Options.from_dict(record.options) if options is None else options
        return to_schedule(
            record,
            func,
            lambda moment: self._localize(record.timezone, moment) or moment,
            o,
            None if func is None else self._runner.executor_name(func, o),  # known per function
        )

    def schedules(self, include_orphans: bool) -> List[Schedule]:
        """Schedules registered here; with ``include_orphans``, also stored ones with no function here."""
        records = self._store.list_schedules()
        records.reverse()
        funcs = self._table.funcs
        out = []
        while records:  # popped as converted, so records and Schedules are not all alive at once
            record = records.pop()
            if record.name in funcs or include_orphans:
                out.append(self.schedule(record))
        return out

    def history(self, schedule_name: str, limit: int) -> List[Dict[str, Any]]:
        """Runs of a schedule, newest fire first, as history entries."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ScheduleError(f"limit must be an integer >= 1, got {limit!r}")
        return [history_entry(run) for run in self.runs(schedule_name, limit)]

    def runs(self, schedule_name: str, limit: int) -> List[RunRecord]:
        """The store's newest runs of a schedule, as this process knows them (``Runner.seen_here``)."""
        return self._runner.seen_here(self._store.history(schedule_name, limit))

    def runs_of(self, names: Sequence[str], limit: int) -> Dict[str, List[RunRecord]]:
        """``runs`` of many schedules, read together (``Store.recent_runs``)."""
        recent = self._store.recent_runs(names, limit)
        return {name: self._runner.seen_here(runs) for name, runs in recent.items()}

    # -- health ------------------------------------------------------------------------

    def status(self) -> str:
        """``running``, ``degraded`` or ``stopped``."""
        if not self._loop.alive:
            return "stopped"
        if self._loop_stalled() or self._troubles.any() or self._runner.executor_problems() or self._held():
            return "degraded"
        if self._housekeeping.heartbeat_problem() is not None:
            return "degraded"
        if self._runner.lags.problem() is not None or self._runner.hook_problem() is not None:
            return "degraded"
        return "running"

    def problems(self) -> List[Dict[str, Any]]:
        """What is wrong right now (source, message, for how long); empty when healthy."""
        found = self._troubles.problems()
        held = self._held()
        if held:
            found.append({"source": "held", "message": held_message(held), "for_seconds": None})
        for name, problem in self._runner.executor_problems():
            found.append({"source": f"executor:{name}", "message": problem, "for_seconds": None})
        hooks = self._runner.hook_problem()
        if hooks is not None:
            found.append({"source": "hooks", "message": hooks, "for_seconds": None})
        beat = self._housekeeping.heartbeat_problem()
        if beat is not None:
            found.append({"source": "heartbeat", "message": beat, "for_seconds": None})
        late = self._runner.lags.problem()
        if late is not None:
            answer = self._claim_seconds()
            if answer >= SLOW_CLAIM_HINT_SECONDS:
                late += f"; the store takes up to {answer:.1f} s to answer a claim"
            found.append({"source": "late", "message": late, "for_seconds": None})
        if self._loop.alive and self._loop_stalled():
            since = self._claiming_since()
            message = "the scheduler loop has not gone round"
            if since is not None:
                message = (
                    f"the scheduler loop has waited {time.monotonic() - since:.0f} s for the store to take "
                    "a claim (the database is unreachable or slow, or a lock it needs is held)"
                )
            found.append({"source": "loop", "message": message, "for_seconds": None})
        return found

    def health(self) -> Dict[str, Any]:
        """``health_check()``'s answer, computed by ``runtime/health.py`` from what every room reports.

        Never raises and never waits long for the store: when it fails or is slow to answer, the
        answer is ``degraded`` with why, and its counts are the last ones read.
        """
        (records, stats), trouble, read = self._glance.read()
        # After the read, which may wait up to its limit: the status as it is when the answer goes.
        status, problems = self.status(), self.problems()
        if trouble is not None:
            problems.append({"source": "health", "message": trouble, "for_seconds": None})
            if status == "running":
                status = "degraded"
        report = health_report(
            status,
            problems,
            records,
            self._table.funcs,
            stats,
            self._runner.lags.sorted(),
            self._clock.now(),
            self._localize,
            running=self._loop.alive,
            node_id=self._node_id,
            nodes=list(self._membership.nodes),
            last_heartbeat=self._housekeeping.last_heartbeat,
            pending_outcomes=self._writer.pending,
            last_error=self._troubles.last_error,
        )
        report["store_read"] = read  # "ok", or "slow" / "failed": the counts are the last ones read
        return report

    def _loop_stalled(self) -> bool:
        """The loop has not gone round in three heartbeats and a second (stuck in a claim, or dead)."""
        return self._loop.stale(3 * self._heartbeat_seconds + 1)


class StoreGlance:
    """The store's part of ``health_check()`` (schedules and run counts), read on a thread of its own
    and waited for ``limit`` seconds at most: a store that hangs (a frozen database server whose
    kernel still answers TCP) cannot hang a health probe. One read at a time; a probe that comes
    while one is still stuck is answered at once from the last read (or this process's own
    schedules before any). A failed read is a problem at once; a slow one after ``slow_after``
    seconds (a big store on a busy host may take a few)."""

    def __init__(
        self,
        store: Store,
        own: Callable[[], List[ScheduleRecord]],
        limit: float = 2.0,
        slow_after: float = 10.0,
    ) -> None:
        self._store = store
        self._own = own
        self.limit = limit
        self.slow_after = slow_after
        self._lock = threading.Lock()
        self._pending: Optional[threading.Event] = None  # set when the read in flight ends
        self._since = 0.0
        self._error: Optional[str] = None
        self._last: Optional[Tuple[List[ScheduleRecord], RunStats]] = None
        self._read_at = 0.0

    def read(self) -> Tuple[Tuple[List[ScheduleRecord], RunStats], Optional[str], str]:
        """(schedules, stats), what is wrong with the store (None: nothing yet), and how the read
        went: ``ok``, ``slow`` (not answered within ``limit``) or ``failed``; then the counts are
        the last ones read, or this process's own schedules."""
        with self._lock:
            done = self._pending
            if done is None:
                done = self._pending = threading.Event()
                self._since = time.monotonic()
                reader = threading.Thread(target=self._run, args=(done,), name="flowyml_lite-health")
                reader.daemon = True
                try:
                    reader.start()
                except RuntimeError as exc:  # no thread to be had: say so, and try again next time
                    self._pending = None
                    why = f"health could not start its store read: {exc}"
                    return (self._own(), RunStats()), why, "failed"
            since = self._since
        answered = done.wait(max(0.0, self.limit - (time.monotonic() - since)))
        with self._lock:
            error, last = self._error, self._last
        if not answered:
            waited, how, error = time.monotonic() - since, "slow", None
            if waited >= self.slow_after:
                error = f"the store has not answered health's read for {waited:.0f} s"
        elif error is not None:
            how, error = "failed", f"health could not read the store: {error}"
        else:
            how = "ok"
        if last is None:
            return (self._own(), RunStats()), error, how
        if error is not None:
            error += f" (schedules and counts as read {time.monotonic() - self._read_at:.0f} s ago)"
        return last, error, how

    def _run(self, done: threading.Event) -> None:
        value: Optional[Tuple[List[ScheduleRecord], RunStats]] = None
        error: Optional[str] = "the read ended without an answer"
        try:
            value, error = (self._store.list_schedules(), self._store.stats()), None
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:  # whatever ends the read, the next probe starts another
            with self._lock:
                if value is not None:
                    self._last, self._read_at = value, time.monotonic()
                self._error = error
                self._pending = None
            done.set()
