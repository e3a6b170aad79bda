"""The clock the scheduler reads and sleeps on, injectable so tests move time instead of sleeping.

``SystemClock`` is real time. ``FakeClock`` is time that moves only when a test says so: its
``wait`` never sleeps on real time for a timeout, and ``advance``/``set`` wake every waiter.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Dict, List, Optional, Protocol, Union

__all__ = ["SYSTEM_CLOCK", "Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    """What the scheduler needs from time: the instant, elapsed time, and a wait that time can end."""

    def now(self) -> datetime:
        """The current instant, an aware UTC datetime."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, for measuring durations and deadlines."""
        ...

    def wait(self, condition: threading.Condition, timeout: Optional[float]) -> None:
        """Wait on ``condition`` (held by the caller) until notified or ``timeout`` seconds pass.

        Like ``Condition.wait`` it may return early; callers re-check their state in a loop.
        ``timeout=None`` waits until notified.
        """
        ...


class SystemClock:
    """Real time: ``datetime.now(UTC)``, ``time.monotonic`` and ``Condition.wait``."""

    def now(self) -> datetime:
        """The current instant, an aware UTC datetime."""
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def wait(self, condition: threading.Condition, timeout: Optional[float]) -> None:
        """``condition.wait(timeout)``; a negative timeout returns at once."""
        condition.wait(None if timeout is None else max(0.0, timeout))

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()

_DEFAULT_START = datetime(2024, 1, 1, tzinfo=timezone.utc)


class FakeClock:
    """Time that moves only through ``advance`` and ``set``; for tests.

    ``wait`` returns when the condition is notified (by anyone), when the clock is moved, or at
    once if the deadline has already passed; it never waits on real time for a timeout.
    The deadline of a wait counts from the fake time this thread last read (``now`` or
    ``monotonic``), so a clock moved between the caller's read and its wait wakes it early
    (harmless: callers re-check) instead of leaving it asleep past its deadline.
    ``advance``/``set`` take each waiter's condition to notify it: call them without holding a
    waiter's condition unless it is reentrant (``threading.Condition()``'s default RLock is).
    """

    def __init__(self, start: Optional[datetime] = None, monotonic_start: float = 1000.0) -> None:
        self._now = _aware_utc(start if start is not None else _DEFAULT_START)
        self._mono = float(monotonic_start)
        self._mutex = threading.Lock()
        self._changed = threading.Condition(self._mutex)  # signals "waiters changed"
        self._waiting: Dict[int, List[threading.Condition]] = {}  # id(condition) -> one entry per waiter
        self._last_read = threading.local()

    # -- reading -------------------------------------------------------------------------

    def now(self) -> datetime:
        """The fake instant (aware UTC)."""
        with self._mutex:
            self._last_read.mono = self._mono
            return self._now

    def monotonic(self) -> float:
        """The fake monotonic seconds; they advance with ``advance`` and forward ``set``."""
        with self._mutex:
            self._last_read.mono = self._mono
            return self._mono

    @property
    def waiting(self) -> int:
        """How many threads are inside ``wait`` right now."""
        with self._mutex:
            return sum(len(conds) for conds in self._waiting.values())

    # -- moving --------------------------------------------------------------------------

    def advance(self, delta: Union[float, timedelta]) -> datetime:
        """Move time forward by ``delta`` seconds (or a timedelta), wake every waiter, return the new now."""
        seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
        if seconds < 0:
            raise ValueError(f"a FakeClock cannot advance by a negative amount ({seconds} s); use set()")
        with self._mutex:
            self._now += timedelta(seconds=seconds)
            self._mono += seconds
            now = self._now
        self._wake_all()
        return now

    def set(self, when: datetime) -> datetime:
        """Jump the wall clock to ``when`` and wake every waiter.

        Monotonic time moves forward by the jump when it goes forward and stays put when it goes
        back, as a real monotonic clock does when the system clock is stepped back.
        """
        target = _aware_utc(when)
        with self._mutex:
            forward = (target - self._now).total_seconds()
            if forward > 0:
                self._mono += forward
            self._now = target
        self._wake_all()
        return target

    # -- waiting -------------------------------------------------------------------------

    def wait(self, condition: threading.Condition, timeout: Optional[float]) -> None:
        """Wait on ``condition`` (held by the caller) until notified, time moves, or the deadline passed."""
        with self._mutex:
            if timeout is not None:
                base = getattr(self._last_read, "mono", self._mono)
                if self._mono >= base + timeout:
                    return
            self._waiting.setdefault(id(condition), []).append(condition)
            self._changed.notify_all()
        try:
            # The clock can only notify us after we released `condition` inside wait(): it takes
            # `condition` before notifying, so a move made after we registered is never lost.
            condition.wait()
        finally:
            with self._mutex:
                conds = self._waiting[id(condition)]
                conds.remove(condition)
                if not conds:
                    del self._waiting[id(condition)]
                self._changed.notify_all()

    def wait_for_waiters(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Block (on real time, at most ``timeout`` s) until ``count`` threads are inside ``wait``.

        Lets a test advance time only once the thread under test has gone back to sleep.
        """
        deadline = time.monotonic() + timeout
        with self._mutex:
            while sum(len(c) for c in self._waiting.values()) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def _wake_all(self) -> None:
        # Never hold our mutex while taking a waiter's condition: the waiter holds its condition
        # when it takes our mutex to register, so the opposite order could deadlock.
        with self._mutex:
            conditions = {id(c): c for conds in self._waiting.values() for c in conds}
        for condition in conditions.values():
            with condition:
                condition.notify_all()

    def __repr__(self) -> str:
        return f"FakeClock({self._now.isoformat()})"


def _aware_utc(when: datetime) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"a FakeClock needs an aware datetime, got naive {when!r}")
    return when.astimezone(timezone.utc)
