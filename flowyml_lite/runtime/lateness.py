"""How late this process's runs start: the start lags health reports, and when fires start late.

Each run's first attempt is measured from its fire instant (plus the jitter it was given) to its
start. Catch-up runs, retries, manual runs and instants that came due before the scheduler started
are not counted as late: they are late on purpose, or because the process was not running.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Deque, List, Optional, Tuple

#: A fire that starts more than this after its instant started late.
LATE_START_SECONDS = 1.0
#: Health looks at the starts of this last stretch of time.
WINDOW_SECONDS = 60.0
#: Fires started late in the window that make health ``degraded``: a tenth of them, or at least
#: this many if they are at least a hundredth (a few late in thousands on time, a hiccup, are not).
LATE_SHARE = 0.1
LATE_COUNT = 3
LATE_FLOOR = 0.01
#: ``problem()`` is worked out again at most this often.
REREAD_SECONDS = 0.25
#: This many starts on time in a row since the last late one: the cause is over (a store back after
#: an outage, a peer's share taken over), whatever the window still holds.
ON_TIME_AGAIN = 20


class StartLags:
    """The start lags of the last 10,000 runs started here, each with when it was measured."""

    def __init__(self) -> None:
        self._starts: Deque[Tuple[float, float]] = deque(maxlen=10_000)  # (monotonic, lag in seconds)
        self._answer: Tuple[float, Optional[str]] = (-1.0, None)  # (monotonic, problem()): probes come often
        #: (monotonic, seconds): the last wait for a free worker longer than LATE_START_SECONDS
        self._queued: Tuple[float, float] = (-WINDOW_SECONDS, 0.0)

    def add(self, lag: float, queued: float = 0.0) -> None:
        """One run started ``lag`` seconds after it was due, ``queued`` of them waiting for a worker."""
        now = time.monotonic()
        self._starts.append((now, lag))
        if queued > LATE_START_SECONDS:
            at, worst = self._queued
            self._queued = (now, queued if now - at > WINDOW_SECONDS else max(worst, queued))

    def sorted(self) -> List[float]:
        """Every lag kept, ascending (for the percentiles of ``health_check()``)."""
        return sorted(lag for _, lag in list(self._starts))

    def problem(self) -> Optional[str]:
        """What health says while fires start late, or None: within the last minute a tenth of the
        starts, or three and a hundredth of them, came over ``LATE_START_SECONDS`` late, and fewer
        than ``ON_TIME_AGAIN`` have started on time since the last late one. Worked out at most
        every ``REREAD_SECONDS`` (an HTTP health probe may ask hundreds of times a second)."""
        now = time.monotonic()
        at, answer = self._answer
        if now - at < REREAD_SECONDS:
            return answer
        answer = self._problem(now)
        self._answer = (now, answer)
        return answer

    def _problem(self, now: float) -> Optional[str]:
        since = now - WINDOW_SECONDS
        count = late = 0
        worst = 0.0
        for at, lag in reversed(list(self._starts)):
            if at < since:
                break
            count += 1
            if lag > LATE_START_SECONDS:
                late += 1
                worst = max(worst, lag)
            elif not late and count >= ON_TIME_AGAIN:
                return None  # the newest starts are on time: whatever made the others late is over
        if not late:
            return None
        if late < LATE_SHARE * count and (late < LATE_COUNT or late < LATE_FLOOR * count):
            return None
        message = (
            f"{late} of {count} fire(s) in the last {WINDOW_SECONDS:.0f} s started more than "
            f"{LATE_START_SECONDS:g} s after their instant (the worst {worst:.1f} s late)"
        )
        at, waited = self._queued
        if now - at < WINDOW_SECONDS:
            message += (
                f"; runs waited up to {waited:.1f} s for a free worker (every one was busy: raise "
                "max_concurrent_runs, or give jobs that hang a timeout_seconds)"
            )
        return message
