"""The run hooks (``on_success``, ``on_failure``, ``on_finish``): told of each run's final entry.

Hooks are user code and may be slow, hang or raise: they are called on a thread of their own, in
the order runs ended, never on the scheduler loop or a run thread, so a hook can delay only other
hook calls, never a fire or a run's outcome. One that raises (anything, ``SystemExit`` included) is
logged and never changes the run's outcome or stops the other hooks; one that hangs is named by
health.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections import deque
from dataclasses import replace
from datetime import datetime
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from ..stores.base import FAILED, SUCCEEDED, TIMED_OUT, RunRecord

logger = logging.getLogger("flowyml_lite.scheduler.runner")

Hook = Callable[[Dict[str, Any]], Any]
#: A hook call running longer than this is a problem health reports (later calls wait behind it).
SLOW_HOOK_SECONDS = 10.0
#: Hook calls waiting at most; beyond, the oldest waiting ones are dropped (and logged).
MAX_WAITING = 100_000

_HOOK_THREAD = threading.local()  # .on: this thread calls hooks


def on_hook_thread() -> bool:
    """Whether the calling code runs inside a hook (on a hook thread): it must not wait for hooks."""
    return getattr(_HOOK_THREAD, "on", False)


# (status, schedule, entry or the run to make it from, what to call once told, monotonic queued at)
_Call = Tuple[str, str, Any, Optional[Callable[[Optional[Dict[str, Any]]], None]], float]


class RunHooks:
    """The hooks of one scheduler, the history entry they are given, and the thread calling them."""

    def __init__(self, entry: Callable[[RunRecord], Dict[str, Any]]) -> None:
        self._entry = entry
        self.on_success: List[Hook] = []
        self.on_failure: List[Hook] = []
        self.on_finish: List[Hook] = []
        self._cond = threading.Condition()
        self._waiting: Deque[_Call] = deque()
        self._thread: Optional[threading.Thread] = None
        self._calling: Optional[Tuple[str, str, float]] = None  # (hook kind, schedule, monotonic start)
        self._dropped = 0
        self._closing = False  # the thread ends once nothing waits
        self._busy = False  # a call taken from the queue is being made (under _cond)
        _ALL.add(self)

    def wanted(self, status: str) -> bool:
        """Whether a run ending as ``status`` has a hook to tell."""
        return bool(self.on_finish or self._group(status)[1])

    def final_entry(self, run: RunRecord, status: str, now: datetime, **ending: Any) -> Dict[str, Any]:
        """The history entry of ``run`` ended as ``status``."""
        final = replace(run, status=status, completed_at=now, next_attempt_at=None, **ending)
        return self._entry(final)

    def tell(
        self,
        status: str,
        entry: Dict[str, Any],
        name: str,
        then: Optional[Callable[[Optional[Dict[str, Any]]], None]] = None,
    ) -> None:
        """Have the hooks of ``status``, then the ``on_finish`` hooks, called with ``entry`` on the
        hook thread; ``then(entry)`` is called after them (a ``run_now(wait=True)`` waiting)."""
        self._queue((status, name, entry, then, time.monotonic()))

    def announce(self, run: RunRecord) -> None:
        """Tell the ``on_finish`` hooks about a run that ended without running here (missed,
        skipped at its claim, or found lost)."""
        if self.on_finish:
            self._queue((run.status, run.schedule, run, None, time.monotonic()))

    def problem(self) -> Optional[str]:
        """What health says while a hook call has run, or one has waited, over ``SLOW_HOOK_SECONDS``
        (hooks slower than the runs they hear of fall ever further behind), or None."""
        now = time.monotonic()
        calling = self._calling
        if calling is not None and now - calling[2] >= SLOW_HOOK_SECONDS:
            kind, name, since = calling
            return (
                f"an {kind} hook has been running for {now - since:.0f} s (run of {name!r}); "
                f"{len(self._waiting)} later hook call(s) wait for it (runs and fires are not held up)"
            )
        try:
            oldest = self._waiting[0][4]
        except IndexError:
            return None
        if now - oldest < SLOW_HOOK_SECONDS:
            return None
        return (
            f"hooks are {now - oldest:.0f} s behind the runs they hear of: {len(self._waiting)} call(s) "
            "wait (a hook is slower than the runs; runs and fires are not held up)"
        )

    def drain(self, timeout: Optional[float]) -> bool:
        """Wait (``timeout`` seconds at most) for the hook calls queued so far; False if some are left.
        A hook calling this (``wait_for_runs()`` in a hook) is not kept waiting for itself."""
        if on_hook_thread():
            return not self._waiting
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._waiting or self._busy:
                if self._thread is None or not self._thread.is_alive():
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return not self._waiting

    def close(self, timeout: Optional[float]) -> bool:
        """``drain``, then let the hook thread end (a later call starts another); False if calls
        were left waiting (they are still made, by the thread that keeps running for them)."""
        drained = self.drain(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if drained and thread is not None and thread is not threading.current_thread():
            thread.join(1.0)
        return drained

    # -- the hook thread ---------------------------------------------------------------------

    def _queue(self, call: _Call) -> None:
        with self._cond:
            if len(self._waiting) >= MAX_WAITING:
                dropped = self._waiting.popleft()
                if dropped[3] is not None:
                    dropped[3](None)  # a run_now(wait=True) waiting on it hears now
                self._dropped += 1
                if self._dropped == 1 or self._dropped % 10_000 == 0:
                    logger.error(
                        "%d hook call(s) dropped: %d wait behind a slow hook", self._dropped, MAX_WAITING
                    )
            self._waiting.append(call)
            self._closing = False
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="flowyml_lite-hooks", daemon=True)
                self._thread.start()
            else:
                self._cond.notify()

    def _serve(self) -> None:
        _HOOK_THREAD.on = True
        while True:
            with self._cond:
                while not self._waiting:
                    self._cond.notify_all()  # drain() waits for the queue to empty
                    if self._closing or (not self._cond.wait(60.0) and not self._waiting):
                        self._thread = None  # closed, or idle a minute: the next call starts another
                        return
                status, name, entry, then, _ = self._waiting.popleft()
                self._busy = True
            try:
                self._call(status, name, entry, then)
            except BaseException:  # the hook thread must never die with calls waiting
                logger.exception("hook dispatch failed for %r", name)
            finally:
                with self._cond:
                    self._busy = False

    def _call(
        self,
        status: str,
        name: str,
        entry: Any,
        then: Optional[Callable[[Optional[Dict[str, Any]]], None]],
    ) -> None:
        if isinstance(entry, RunRecord):
            entry = self._entry(entry)
        kind, hooks = self._group(status)
        for kind, hook in [*((kind, h) for h in hooks), *(("on_finish", h) for h in self.on_finish)]:
            self._calling = (kind, name, time.monotonic())
            try:
                hook(entry)
            except BaseException:
                logger.exception("a run hook failed for %r", name)
            finally:
                self._calling = None
        if then is not None:
            then(entry)

    def _group(self, status: str) -> Tuple[str, List[Hook]]:
        """The hooks a run ended as ``status`` is told to besides ``on_finish``, and their name."""
        if status == SUCCEEDED:
            return "on_success", self.on_success
        if status in (FAILED, TIMED_OUT):
            return "on_failure", self.on_failure
        return status, []


_ALL: weakref.WeakSet[RunHooks] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child has no hook thread, and the parent's queued calls are not its own."""
    for hooks in list(_ALL):
        hooks._cond = threading.Condition()
        hooks._waiting = deque()
        hooks._thread = None
        hooks._calling = None
        hooks._busy = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
