"""Runs claimed before their instant: kept here until it comes, then started together.

With real time, the loop plans and claims the next instant's fires within a moment before it
(``loop.STAGE_SECONDS``), so that when it comes only the hand-over to the executors is left: the
store's transaction (milliseconds for a burst on SQLite, a round trip on PostgreSQL) is no longer
between the instant and the start. A run whose schedule was paused, removed or redefined in this
process (or by another, once synced) before its instant does not start: it is recorded ``skipped``.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import Any, Callable, ContextManager, List, NamedTuple, Optional, Tuple

from ..core.schedule import Options
from ..stores.base import MISSED, SKIPPED, Outcome, RunRecord
from .outcomes import OutcomeWriter
from .table import ScheduleTable

logger = logging.getLogger("flowyml_lite.scheduler.claims")

#: Why a run claimed ahead was not started.
PAUSED_BEFORE = "the schedule was paused after this fire was claimed, before its instant"
REMOVED_BEFORE = "the schedule was removed after this fire was claimed, before its instant"
REDEFINED_BEFORE = "the schedule was redefined after this fire was claimed, before its instant"
STOPPED_BEFORE_INSTANT = "the scheduler stopped before this fire's instant"


class Held(NamedTuple):
    """A won claim's runs, waiting for ``instant``; ``definition`` is the schedule's at the claim."""

    instant: datetime
    name: str
    func: Callable[[], Any]
    runs: List[RunRecord]
    opts: Options
    definition: str


Submit = Callable[[str, Callable[[], Any], List[RunRecord], Options], Any]


class ClaimedAhead:
    """The runs claimed ahead of their instant, in the order they were claimed."""

    def __init__(
        self,
        table: ScheduleTable,
        writer: OutcomeWriter,
        submit: Submit,
        batch: Callable[[], ContextManager[None]],
        announce: Callable[[RunRecord], None],
        node_id: str,
        sizes: Callable[[int], List[int]],
    ) -> None:
        self._table = table
        self._sizes = sizes
        self._writer = writer
        self._submit = submit
        self._batch = batch
        self._announce = announce
        self._node = node_id
        self._held: List[Held] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._held)

    def add(self, held: List[Held]) -> None:
        with self._lock:
            self._held.extend(held)

    def start_due(self, now: datetime) -> int:
        """Start the held runs whose instant is ``now`` or earlier, together; how many there were."""
        if not self._held:
            return 0
        with self._lock:
            due = [h for h in self._held if h.instant <= now]
            if not due:
                return 0
            if len(due) == len(self._held):
                self._held = []
            else:
                self._held = [h for h in self._held if h.instant > now]
        self._release(due, now)
        return len(due)

    def at_stop(self, limit: float, now: Callable[[], datetime]) -> None:
        """At stop: a held run whose instant comes within ``limit`` seconds starts at it (its fire
        is this node's: no other can claim it now); one further off is recorded ``skipped``."""
        deadline = time.monotonic() + limit
        while self._held:
            first = min(h.instant for h in self._held)
            wait = (first - now()).total_seconds()
            if wait > deadline - time.monotonic():
                break
            if wait > 0:
                time.sleep(wait)
            self.start_due(max(now(), first))  # a wall clock that drifts from the sleep's is not waited for
        with self._lock:
            rest, self._held = self._held, []
        for held in rest:
            self._end(held, SKIPPED, STOPPED_BEFORE_INSTANT, now())

    def _release(self, due: List[Held], now: datetime) -> None:
        """Start ``due`` a group at a time (a small one first: its runs start while the rest are
        handed over), except runs whose schedule changed since their claim, or whose instant is no
        longer theirs to run (the process was held up past it): those are recorded as they would
        have been had they been claimed at ``now``."""
        begin = 0
        for size in self._sizes(len(due)):
            if begin:
                time.sleep(0)  # let the run threads just woken take the interpreter and start
            group, begin = due[begin : begin + size], begin + size
            start, ended = self._judge(group, now)
            if start:
                with self._batch():
                    for held in start:
                        self._submit(held.name, held.func, held.runs, held.opts)
            for held, status, why in ended:
                self._end(held, status, why, now)

    def _judge(self, group: List[Held], now: datetime) -> Tuple[List[Held], List[Tuple[Held, str, str]]]:
        """Which of ``group`` start now, and the others with their status and reason."""
        table = self._table
        start: List[Held] = []
        ended: List[Tuple[Held, str, str]] = []
        with table.lock:
            for held in group:
                record = table.records.get(held.name)
                func = table.funcs.get(held.name)
                if record is None or func is None:
                    ended.append((held, SKIPPED, REMOVED_BEFORE))
                elif not record.enabled:
                    ended.append((held, SKIPPED, PAUSED_BEFORE))
                elif record.definition_hash != held.definition:
                    ended.append((held, SKIPPED, REDEFINED_BEFORE))
                else:
                    why = _stale(held, record.next_fire, now) if held.instant < now else ""
                    if why:
                        ended.append((held, MISSED, why))
                    else:  # a re-declaration with the same timetable may bring a new function
                        start.append(held if func is held.func else held._replace(func=func))
        return start, ended

    def _end(self, held: Held, status: str, why: str, now: datetime) -> None:
        level = logging.WARNING if status == MISSED else logging.INFO
        logger.log(level, "%r: fire %s not started: %s", held.name, held.instant.isoformat(), why)
        for run in held.runs:
            self._writer.put(Outcome(run.run_key, status, now, reason=why, node_id=self._node), held.name)
            self._announce(run.with_status(status, why))


def _stale(held: Held, next_fire: Optional[datetime], now: datetime) -> str:
    """Why a run claimed ahead no longer runs at ``now`` (the process was held up past its instant),
    as planning at ``now`` would decide (``planning.plan``); empty if it still runs."""
    opts = held.opts
    if opts.catchup == "all":
        return ""
    if next_fire is not None and next_fire <= now:
        return "superseded by a later instant due at the same time (the process was held up after its claim)"
    late = (now - held.instant).total_seconds()
    if late > opts.misfire_grace_seconds and opts.catchup == "skip":
        held_up = f"the process was held up {late:.1f} s past its instant after its claim"
        return f"misfire: {held_up} (catchup=skip)"
    return ""
