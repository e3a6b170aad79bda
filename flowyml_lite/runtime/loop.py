"""The timer loop: sleeps until the earliest fire (or a change), then hands what is due to the claims.

Within the stage window before an instant (real time only) it pops that instant's fires and has
them planned and claimed, so at the instant only their start is left (``claimed_ahead.py``). It
never runs a job and never waits on one; the only thing it waits on besides the condition is the
claim transaction. Any error is logged and reported, the fires it held are queued again, and the
loop goes on.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from datetime import datetime, timedelta
from typing import AbstractSet, Callable, List, Optional, Tuple

from ..clock import Clock, SystemClock
from .gate import GATE, LEAD_SECONDS, TAIL_SECONDS
from .gc_pause import GCPause
from .health import Troubles
from .table import Fire, ScheduleTable

logger = logging.getLogger("flowyml_lite.scheduler.loop")

#: Due fires taken from the heap per pass: the first of 10,000 due together starts after popping
#: a thousand of them, not all (each pop compares instants), and a pass sees a fresh ``now``.
POP_LIMIT = 1000
#: The longest the loop sleeps without reading the clock again. Its sleeps count down on the
#: monotonic clock; a wall clock stepped forward (an NTP correction, a resumed VM) brings fires
#: closer meanwhile, and would make them late by up to the sleep: at most this, then.
MAX_SLEEP_SECONDS = 1.0
#: Fires of the next instant are planned and claimed before it (``prepare``) from this long before
#: it, so that a burst of thousands is claimed before its instant comes; the gate closes only at its lead.
STAGE_SECONDS = 0.5
#: They are planned this many at a time, stopping this long before the instant: planning must
#: never make the instant late.
STAGE_CHUNK = 250
STAGE_MARGIN_SECONDS = 0.003


class TimerLoop:
    """One thread: pop the due fires of the table's heap, pass them to ``process``, sleep."""

    def __init__(
        self,
        table: ScheduleTable,
        clock: Clock,
        process: Callable[[List[Fire], datetime, bool], None],
        troubles: Troubles,
        idle_seconds: float,
        prepare: Optional[Callable[[List[Fire], datetime, datetime], AbstractSet[Fire]]] = None,
        gc_pause: Optional[GCPause] = None,
    ) -> None:
        self._table = table
        self._clock = clock
        self._process = process
        self._prepare = prepare
        #: Fires of the next instant popped from the heap before it and planned, but not claimed
        #: then (real time only): taken first when it comes, put back into the heap if the loop stops.
        self._staged: List[Fire] = []  # their instant: table.staged_at
        self._claimed_ahead = 0  # how many of that instant's fires ``prepare`` claimed already
        self._troubles = troubles
        self._pause = gc_pause if gc_pause is not None else GCPause(False)
        self._idle = min(idle_seconds, MAX_SLEEP_SECONDS)
        self.stopping = threading.Event()
        self._gates = isinstance(clock, SystemClock)  # only real time has an interpreter to queue for
        self._gated = False
        self._hold_until = 0.0
        self.beat = time.monotonic()  # when the loop last went round: health's liveness check
        self._thread: Optional[threading.Thread] = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self.stopping.clear()
        self.beat = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="flowyml_lite-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self.stopping.set()
        with self._table.lock:
            self._table.cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        self._thread = None

    def stale(self, limit: float) -> bool:
        """True if the loop has not gone round for ``limit`` seconds (stuck in a claim or dead)."""
        return time.monotonic() - self.beat > limit

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._gate(False)
            self._pause.close()
            with self._table.lock:
                staged, self._staged, self._table.staged_at = self._staged, [], None
            self._claimed_ahead = 0
            self._put_back(staged, None)

    def _loop(self) -> None:
        table = self._table
        more = False  # the last pass left due fires in the heap: this one goes on with them
        while not self.stopping.is_set():
            due: List[Fire] = []
            now = None
            try:
                stage_at = None
                with table.lock:
                    now = self._clock.now()
                    self.beat = time.monotonic()
                    due, full, arrived = self._take_due(now)
                    if not due and not arrived:
                        more = False
                        self._pause.release()  # the burst is over: collection goes on
                        wake = table.next_wake()
                        staged_at = table.staged_at
                        if staged_at is not None:  # its fires are out of the heap, planned
                            wake = staged_at if wake is None or staged_at < wake else wake
                        until = None if wake is None else (wake - now).total_seconds()
                        # A fire within the staging window: plan its instant's fires; within the
                        # lead: have the interpreter to ourselves when it is due; a later one: wake
                        # again at the first of them. Idle (or a second) at most.
                        lead = LEAD_SECONDS if self._gates else 0.0
                        window = STAGE_SECONDS if self._gates else 0.0
                        soon = until is not None and until <= lead
                        ahead = self._prepare is not None and staged_at is None
                        if ahead and until is not None and 0 < until <= window:
                            stage_at = wake
                        else:
                            timeout = self._idle
                            if until is not None:
                                early = until - (window if ahead else lead)
                                timeout = min(timeout, max(until if soon else early, 0.0))
                            tail = self._hold_until - time.monotonic() if self._gated else 0.0
                            if not soon and tail > 0:  # the runs just handed over start first, too
                                self._clock.wait(table.cond, min(tail, timeout))
                                continue
                            self._gate(soon)
                            self._clock.wait(table.cond, timeout)
                            continue
                if stage_at is not None:
                    if (stage_at - now).total_seconds() <= LEAD_SECONDS:
                        self._gate(True)  # the instant is within the lead: the API waits from now
                    self._stage(stage_at, now)
                    continue
                claimed = 0
                if arrived:  # the fires claimed ahead start in this pass too
                    claimed, self._claimed_ahead = self._claimed_ahead, 0
                self._pause.hold(len(due) + claimed)
                self._process(due, now, not more)  # a burst's first pass starts with a small group
                more = full
                self._hold_until = time.monotonic() + TAIL_SECONDS
            except Exception:  # the loop must survive anything; health shows it
                self._gate(False)
                self._troubles.last_error = traceback.format_exc(limit=3)
                logger.exception("scheduler loop error (continuing)")
                # What was taken from the heap is looked at again (a fire claimed meanwhile is
                # stale by then and skipped): an error here never silences a schedule.
                self._put_back(due, now)
                self.stopping.wait(0.1)

    def _take_due(self, now: datetime) -> Tuple[List[Fire], bool, bool]:
        """The fires due at ``now`` (staged ones first), whether the heap may hold more due, and
        whether the staged instant came (its fires claimed ahead start now, even if none is left)."""
        popped = self._table.pop_due(now, POP_LIMIT)
        full = len(popped) == POP_LIMIT
        at = self._table.staged_at
        if at is None or at > now:
            return popped, full, False
        staged, self._staged, self._table.staged_at = self._staged, [], None
        if popped:
            known = set(staged)  # an entry queued again meanwhile (a re-own of the split) is the same fire
            staged.extend(fire for fire in popped if fire not in known)
        return staged, full, True

    def _stage(self, at: datetime, now: datetime) -> None:
        """Pop the fires due at ``at`` (the heap's next instant, within the stage window), plan and
        claim them, a chunk at a time, stopping a little before ``at``: what is left (not claimed
        ahead, or not reached) is taken at ``at``."""
        assert self._prepare is not None
        deadline = time.monotonic() + (at - now).total_seconds() - STAGE_MARGIN_SECONDS
        while not self.stopping.is_set():
            with self._table.lock:
                chunk = self._table.pop_due(at, STAGE_CHUNK)
                if not chunk:
                    return
                self._staged.extend(chunk)  # if prepare raises, the chunk is still taken at ``at``
                self._table.staged_at = at
            claimed = self._prepare(chunk, at, self._clock.now())
            if claimed:
                with self._table.lock:  # the chunk is the list's tail: only this thread adds to it
                    del self._staged[len(self._staged) - len(chunk) :]
                    self._staged.extend(fire for fire in chunk if fire not in claimed)
                self._claimed_ahead += len(claimed)
            if len(chunk) < STAGE_CHUNK or time.monotonic() >= deadline:
                return

    def _put_back(self, fires: List[Fire], now: Optional[datetime]) -> None:
        """Queue ``fires`` again (at once, or a second after ``now`` after an error)."""
        if not fires:
            return
        with self._table.lock:
            for name, fire in fires:
                self._table.push(fire if now is None else now + timedelta(seconds=1), name, fire)

    def _gate(self, closed: bool) -> None:
        """Close or open the process's gate for this loop (real time only)."""
        if closed == self._gated or not self._gates:
            return
        self._gated = closed
        if closed:
            GATE.close()
        else:
            GATE.open()
