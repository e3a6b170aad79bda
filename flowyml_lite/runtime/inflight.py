"""Runs in flight: each claimed run from its hand-off to the runner until its final outcome.

A run's state object carries what is needed to end it whatever happens (the job's result, its
watchdog, the lock server, a stop); the table of them answers "what is running here" without a
lock on the fire path (a dict's single operations are atomic), and wakes ``wait_idle`` callers.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any, Callable, Deque, Dict, List, Optional

from ..core.schedule import Options
from ..executors.base import Handle, JobResult
from ..locks.base import Lease
from ..stores.base import RunRecord
from .hooks import on_hook_thread
from .leases import Renewal
from .timers import Timer

#: How long a waiting ``run_now`` waits for the run's hooks after its outcome (they may queue
#: behind a slow or hung hook of another run).
HOOKS_WAIT_SECONDS = 2.0


class Ticket:
    """A submitted run: ``wait()`` for its final history entry and its hooks (``run_now(wait=True)``)."""

    __slots__ = ("_done", "_heard", "entry", "run")

    def __init__(self, run: RunRecord) -> None:
        self.run = run
        self.entry: Optional[Dict[str, Any]] = None
        self._done = threading.Event()
        self._heard = threading.Event()  # the run's hooks have been called

    def wait(self, timeout: Optional[float] = None) -> Optional[Dict[str, Any]]:
        """The final entry once the run's hooks have been called (``timeout`` seconds at most, and
        ``HOOKS_WAIT_SECONDS`` for the hooks); on the hook thread (a hook waiting for a run) only
        the entry: its hooks come after this one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._done.wait(timeout) and not on_hook_thread():
            left = HOOKS_WAIT_SECONDS if deadline is None else max(0.0, deadline - time.monotonic())
            self._heard.wait(min(left, HOOKS_WAIT_SECONDS))  # hooks queued behind a hung one: not forever
        return self.entry

    def set(self, entry: Optional[Dict[str, Any]], hooks_follow: bool = False) -> None:
        """The run's final entry; ``hooks_follow``: its hooks are yet to be called (``heard()``)."""
        self.entry = entry if entry is not None else {}
        if not hooks_follow:
            self._heard.set()
        self._done.set()

    def heard(self, entry: Optional[Dict[str, Any]] = None) -> None:
        self._heard.set()


class RunState:
    """One run in flight: its row as this process knows it, and what is needed to end it."""

    __slots__ = (
        "began",
        "finished",
        "func",
        "handle",
        "lease",
        "lock",
        "manual",
        "name",
        "on_result",
        "on_started",
        "opts",
        "renewing",
        "rest",
        "run",
        "started",
        "starting",
        "stopped",
        "t0",
        "ticket",
        "timing_out",
        "watchdog",
        "withdrawn",
    )

    def __init__(
        self,
        name: str,
        func: Callable[[], Any],
        run: RunRecord,
        opts: Options,
        manual: bool,
        ticket: Optional[Ticket],
        rest: Optional[Deque[RunRecord]],
        on_result: Callable[[RunState, JobResult], None],
        on_started: Callable[[RunState], None],
    ) -> None:
        self.name = name
        self.func = func
        self.run = run
        self.opts = opts
        self.manual = manual
        self.ticket = ticket  # only a manual run has one: someone may wait for it
        self.rest = rest  # queued catch-up runs of the same claim, started one after another (or None)
        self.on_result = on_result
        self.on_started = on_started
        self.lock = threading.Lock()
        # Who ends a run that waits to start (a lease round trip, jitter, a retry's delay): the
        # thread that starts it (``starting``) or stop() (``withdrawn``), decided under ``lock``.
        self.starting = False
        self.withdrawn = False
        self.finished = False
        self.timing_out = False  # the watchdog fired; the executor's answer to its cancel is awaited
        self.stopped = False  # the executor stopped the timed-out work (a thread cannot be)
        self.handle: Optional[Handle] = None
        self.watchdog: Optional[Timer] = None
        self.lease: Optional[Lease] = None
        self.renewing: Optional[Renewal] = None
        self.t0 = 0.0
        self.started: Optional[datetime] = None  # its attempt's start (the claimed record stays as claimed)
        #: perf_counter when its attempt's function started, None while it waits for a worker of an
        #: executor that reports starts; -1.0 when the executor does not (started at the hand-over).
        self.began: Optional[float] = -1.0

    def __call__(self, result: JobResult) -> None:
        """The run's ``done`` callback for its executor (the state itself: no object more a run)."""
        self.on_result(self, result)

    def started_now(self) -> None:
        """The run's ``Job.on_start``: its function starts now, after its wait for a worker."""
        self.on_started(self)


class InFlight:
    """run_key -> RunState for every run not yet ended here; ``wait_idle`` until it is empty."""

    def __init__(self) -> None:
        self._runs: Dict[str, RunState] = {}
        self._cond = threading.Condition()
        self._waiters = 0

    def __len__(self) -> int:
        return len(self._runs)

    def add(self, key: str, state: RunState) -> None:
        self._runs[key] = state

    def get(self, key: str) -> Optional[RunState]:
        return self._runs.get(key)

    def remove(self, key: str) -> None:
        """Forget ``key``; wake the waiters when nothing is left (only then is the lock taken)."""
        self._runs.pop(key, None)
        if self._waiters and not self._runs:
            with self._cond:
                self._cond.notify_all()

    def states(self) -> List[RunState]:
        """Every distinct state in flight (a claim's queued runs share theirs)."""
        return list({id(s): s for s in list(self._runs.values())}.values())

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        """Block until nothing is in flight; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._waiters += 1  # before looking: a remove() after this look will notify
            try:
                while self._runs:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return False
                    self._cond.wait(left if left is not None and left < 1.0 else 1.0)
            finally:
                self._waiters -= 1
        return True
