"""The timer loop: sleeps until the earliest fire (or a change), then hands what is due to the claims.

Fires due within the stage window (real time only) are popped ahead of their instants and
planned and claimed a group at a time, so at each instant only their start is left
(``claimed_ahead.py``); a steady flow of fires is claimed in groups rather than one claim per
instant. It never runs a job and never waits on one; the only thing it waits on besides the
condition is the claim transaction. Any error is logged and reported, the fires it held are queued
again, and the loop goes on.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from datetime import datetime, timedelta
from typing import AbstractSet, Callable, List, Optional, Tuple

from ..clock import Clock, SystemClock
from .by_instant import ByInstant
from .claim_troubles import GivenUp
from .gate import GATE, LEAD_SECONDS, TAIL_SECONDS
from .gc_pause import MAX_PAUSE_SECONDS, GCPause
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
#: Fires due within this long are planned and claimed before their instant (``prepare``), so that
#: a burst of thousands is claimed before its instant comes; the gate closes only at its lead.
STAGE_SECONDS = 0.5
#: Staging starts again when the fires popped already reach less than this past the first of
#: them, and then reaches twice as far: a steady flow of fires is claimed a group at a time, not
#: one claim (one transaction) per instant, and not much further ahead than that (a run held half
#: a second outlives young garbage collections and, at a thousand a second, brings on full ones).
#: While the store wants a quiet moment for upkeep, STAGE_WIDE_SPAN_SECONDS: the claims then run
#: ahead of it.
STAGE_SPAN_SECONDS = 0.025
STAGE_WIDE_SPAN_SECONDS = 0.12
#: Fires are planned and claimed this many at a time while the next instant already popped is
#: STAGE_ROOM_SECONDS away or more; closer, STAGE_SMALL_CHUNK at a time, one chunk between the
#: loop's looks at the clock; within STAGE_MARGIN_SECONDS of it, none: staging must never make an
#: instant late.
STAGE_CHUNK = 250
STAGE_ROOM_SECONDS = 0.03
STAGE_SMALL_CHUNK = 8
STAGE_MARGIN_SECONDS = 0.0005
#: A burst's pause of the garbage collector lasts this long after its last hand-over: the runs
#: handed over start on their threads meanwhile, not beside a full collection.
PAUSE_TAIL_SECONDS = 0.05
#: After that, while runs handed over still wait for a worker, the pause goes on (up to the
#: pause's own limit), and the loop looks again this often whether they have all started.
PAUSE_LOOK_SECONDS = 0.005
#: While the store holds writers off for upkeep, or another transaction of this process is under
#: way, the loop looks again this often whether it may claim ahead (it claims at the instant
#: anyway, if that comes first).
STAGE_RETRY_SECONDS = 0.001


class TimerLoop:
    """One thread: pop the due fires of the table's heap, pass them to ``process``, sleep."""

    def __init__(
        self,
        table: ScheduleTable,
        clock: Clock,
        process: Callable[[List[Fire], datetime, bool, GivenUp], None],
        troubles: Troubles,
        idle_seconds: float,
        prepare: Optional[Callable[[List[Fire], datetime, Optional[float]], AbstractSet[Fire]]] = None,
        gc_pause: Optional[GCPause] = None,
        may_prepare: Optional[Callable[[], bool]] = None,
        wants_room: Optional[Callable[[], bool]] = None,
        starting: Optional[Callable[[], bool]] = None,
    ) -> None:
        self._table = table
        self._clock = clock
        self._process = process
        self._prepare = prepare
        self._may_prepare = may_prepare if may_prepare is not None else (lambda: True)
        self._wants_room = wants_room if wants_room is not None else (lambda: False)
        self._starting = starting if starting is not None else (lambda: False)  # runs wait for a worker
        self._held_off_since: Optional[float] = None  # since when ``may_prepare`` said not now
        self._pause_until = 0.0  # a burst's collection pause lasts until then at least
        #: Fires popped from the heap before their instant and planned, but not claimed then (real
        #: time only): taken first when it comes, put back into the heap if the loop stops.
        self._staged: ByInstant[Fire] = ByInstant()  # its first instant: table.staged_at
        #: Fires ``prepare`` claimed ahead: at each of their instants the loop passes (even with
        #: nothing else due), and the claims start their runs.
        self._claimed: ByInstant[Fire] = ByInstant()
        self._troubles = troubles
        self._pause = gc_pause if gc_pause is not None else GCPause(False)
        self._idle = min(idle_seconds, MAX_SLEEP_SECONDS)
        #: Set by ``stop()``. Each loop thread has its own: a thread still stuck in a store call
        #: after a stop never sees the event of the next ``start()`` (it ends when the call does).
        self.stopping = threading.Event()
        #: Set when ``stop()`` gave up waiting for the loop thread: the runs its late claim won are
        #: recorded skipped, not started (a claim that returns while stop() waits starts them).
        self._given_up = GivenUp()
        self._gates = isinstance(clock, SystemClock)  # only real time has an interpreter to queue for
        self._gated = False
        self._hold_until = 0.0
        self.beat = time.monotonic()  # when the loop last went round: health's liveness check
        self._thread: Optional[threading.Thread] = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        stopping = self.stopping = threading.Event()
        given_up = self._given_up = GivenUp()
        self.beat = time.monotonic()
        self._thread = threading.Thread(
            target=self._run, args=(stopping, given_up), name="flowyml_lite-scheduler", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Stop the loop thread; False if it did not end within ``timeout`` (stuck in a store
        call: it ends when the call returns, and starts none of the runs that call won)."""
        self.stopping.set()
        with self._table.lock:
            self._table.cond.notify_all()
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        thread.join(timeout=timeout)
        if thread.is_alive():
            self._given_up.give_up()
            return False
        return True

    def stale(self, limit: float) -> bool:
        """True if the loop has not gone round for ``limit`` seconds (stuck in a claim or dead)."""
        return time.monotonic() - self.beat > limit

    def _run(self, stopping: threading.Event, given_up: GivenUp) -> None:
        try:
            self._loop(stopping, given_up)
        finally:
            # A loop stuck past its stop leaves the shared state alone if a later start() runs a
            # loop of its own: what it staged and claimed ahead is that loop's now.
            if stopping is self.stopping:
                self._gate(False)
                self._pause.close()
                with self._table.lock:
                    staged = self._staged.clear()
                    self._table.staged_at = None
                    self._claimed.clear()
                self._put_back(staged, None)

    def _loop(self, stopping: threading.Event, given_up: GivenUp) -> None:
        table = self._table
        more = False  # the last pass left due fires in the heap: this one goes on with them
        while not stopping.is_set():
            due: List[Fire] = []
            now = None
            try:
                stage = False
                with table.lock:
                    now = self._clock.now()
                    self.beat = time.monotonic()
                    due, full, arrived = self._take_due(now)
                    if not due and not arrived:
                        more = False
                        after_burst = self._pause_until - time.monotonic()
                        holding = self._pause.holding and self._pause.held_for() < MAX_PAUSE_SECONDS
                        if after_burst <= 0 and holding and self._starting():
                            after_burst = PAUSE_LOOK_SECONDS  # its runs are not all started yet
                            self._pause_until = time.monotonic() + after_burst
                        if after_burst <= 0:
                            self._pause.release()  # the burst is over, its runs started: collection goes on
                        stage, timeout, soon = self._next_step(now)
                        if not stage:
                            if self._pause.holding:
                                timeout = min(timeout, max(after_burst, 0.0))
                            tail = self._hold_until - time.monotonic() if self._gated else 0.0
                            if not soon and tail > 0:  # the runs just handed over start first, too
                                self._clock.wait(table.cond, min(tail, timeout))
                                continue
                            self._gate(soon)
                            self._clock.wait(table.cond, timeout)
                            continue
                if stage:
                    self._stage(now, stopping)
                    continue
                claimed = len(self._claimed.pop_due(now)) if arrived and self._claimed else 0
                self._pause.hold(len(due) + claimed)
                self._process(due, now, not more, given_up)  # a burst's first pass: a small group first
                more = full
                self._hold_until = time.monotonic() + TAIL_SECONDS
                self._pause_until = time.monotonic() + PAUSE_TAIL_SECONDS
            except Exception:  # the loop must survive anything; health shows it
                self._gate(False)
                self._troubles.last_error = traceback.format_exc(limit=3)
                logger.exception("scheduler loop error (continuing)")
                # What was taken from the heap is looked at again (a fire claimed meanwhile is
                # stale by then and skipped): an error here never silences a schedule.
                self._put_back(due, now)
                stopping.wait(0.1)

    def _next_step(self, now: datetime) -> Tuple[bool, float, bool]:
        """With nothing due: whether to stage fires now; else how long to sleep, and whether an
        instant is within the lead (the gate closes). Table lock held."""
        lead = LEAD_SECONDS if self._gates else 0.0
        window = STAGE_SECONDS if self._gates else 0.0
        pending = self._pending()  # popped already: due at their instant, nothing to stage
        until = None if pending is None else (pending - now).total_seconds()
        heap = self._table.next_wake()
        after = None if heap is None else (heap - now).total_seconds()
        staging = self._prepare is not None and after is not None and 0 < after <= window
        if staging and self._table.first_is_a_retry():
            staging = False  # a retry first: it is taken at its own time, claims ahead after it
        if staging and heap is not None and pending is not None:
            # far enough ahead already: more when the first instants have come
            staging = heap <= pending + timedelta(seconds=self._span())
        if not staging:
            self._held_off_since = None
        held_off = False  # the store's upkeep holds claims off: look again soon
        if staging and (until is None or until > STAGE_MARGIN_SECONDS):
            if self._may_prepare():
                self._held_off_since = None
                if until is not None and until <= lead:
                    self._gate(True)  # an instant within the lead: the API waits from now
                return True, 0.0, False
            held_off = True
            if self._held_off_since is None:
                self._held_off_since = time.monotonic()
        timeout = self._idle
        soon = False
        if until is not None:
            soon = until <= lead
            timeout = min(timeout, max(until if soon else until - lead, 0.0))
        if after is not None:
            if after <= lead:
                soon = True
            if held_off:  # every millisecond at first; a store that hangs: every 20 ms
                since = self._held_off_since or time.monotonic()
                retry = STAGE_RETRY_SECONDS if time.monotonic() - since < 0.05 else 20 * STAGE_RETRY_SECONDS
                timeout = min(timeout, retry, after)
            elif self._prepare is not None and not staging and after > window:
                timeout = min(timeout, after - window)
            else:
                timeout = min(timeout, max(after if after <= lead else after - lead, 0.0))
        return False, timeout, soon

    def _span(self) -> float:
        return STAGE_WIDE_SPAN_SECONDS if self._wants_room() else STAGE_SPAN_SECONDS

    def _pending(self) -> Optional[datetime]:
        """The first instant of the fires popped already (staged, or claimed ahead)."""
        staged, claimed = self._staged.first(), self._claimed.first()
        if staged is None or (claimed is not None and claimed < staged):
            return claimed
        return staged

    def _take_due(self, now: datetime) -> Tuple[List[Fire], bool, bool]:
        """The fires due at ``now`` (staged ones first), whether the heap may hold more due, and
        whether an instant of fires popped ahead came (those claimed ahead start now, even if
        none is left to claim)."""
        popped = self._table.pop_due(now, POP_LIMIT)
        full = len(popped) == POP_LIMIT
        claimed = self._claimed.first()
        arrived = claimed is not None and claimed <= now
        first = self._staged.first()
        if first is None or first > now:
            return popped, full, arrived
        staged = self._staged.pop_due(now)
        self._table.staged_at = self._staged.first()
        if popped:
            known = set(staged)  # an entry queued again meanwhile (a re-own of the split) is the same fire
            staged.extend(fire for fire in popped if fire not in known)
        return staged, full, True

    def _stage(self, now: datetime, stopping: threading.Event) -> None:
        """Pop the fires due within the stage window (and its span), plan and claim them a chunk
        at a time, the chunks small while an instant popped already is near: what is not claimed
        ahead is taken at its instant."""
        assert self._prepare is not None
        table = self._table
        with table.lock:
            base = self._pending() or table.next_wake()
        if base is None:
            return
        limit = min(base + timedelta(seconds=2 * self._span()), now + timedelta(seconds=STAGE_SECONDS))
        while not stopping.is_set():
            with table.lock:
                pending = self._pending()
                room = None if pending is None else (pending - self._clock.now()).total_seconds()
                if room is not None and room <= STAGE_MARGIN_SECONDS:
                    return
                size = STAGE_CHUNK if room is None or room >= STAGE_ROOM_SECONDS else STAGE_SMALL_CHUNK
                popped = table.pop_ahead(limit, size)
                if not popped:
                    return
                # If prepare raises, the chunk is still taken at its instants. A fire queued again
                # (a re-own of the split, a resume or a re-declaration) is staged once; one claimed
                # already is the claims' to tell apart (held: planned again at its instant).
                chunk = [f for f in popped if self._staged.add(f[1], f)]
                table.staged_at = self._staged.first()
            # Runs held for an earlier instant start then only if this claim gives up in time.
            patience = None if room is None else max(room - STAGE_MARGIN_SECONDS, STAGE_MARGIN_SECONDS)
            claimed = self._prepare(chunk, self._clock.now(), patience) if chunk else ()
            if claimed:
                with table.lock:
                    for fire in claimed:
                        self._staged.discard(fire[1], (fire,))
                        self._claimed.add(fire[1], fire)
                    table.staged_at = self._staged.first()
            if len(popped) < size or size == STAGE_SMALL_CHUNK or not self._may_prepare():
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
