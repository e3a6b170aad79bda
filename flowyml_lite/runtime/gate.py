"""Who has the interpreter around a fire: the loop first, the HTTP handlers of the same process after.

Python runs one thread at a time. When the API's handler threads are busy, a loop thread that
wakes for a fire queues for the interpreter behind them (tens of milliseconds with 50 clients). So
the loop closes this gate a little before each fire and opens it shortly after the fire is
claimed and handed over (its run has started by then); handler threads pass it between
requests, waiting (a bounded time) while it is closed.
"""

from __future__ import annotations

import threading

#: How long before a fire the loop closes the gate: time for busy handlers to finish their request.
LEAD_SECONDS = 0.025
#: How long after handing fires over the loop keeps it closed: time for their runs to start.
TAIL_SECONDS = 0.01
#: A handler waits at most this long at a closed gate, so the API never stops answering.
PASS_LIMIT_SECONDS = 0.05


class FireGate:
    """Closed while any scheduler loop in this process is about to fire (or firing)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._closed = 0  # how many loops hold it closed

    @property
    def closed(self) -> bool:
        return self._closed > 0

    def close(self) -> None:
        with self._cond:
            self._closed += 1

    def open(self) -> None:
        with self._cond:
            self._closed = max(0, self._closed - 1)
            if not self._closed:
                self._cond.notify_all()

    def pass_through(self, limit: float = PASS_LIMIT_SECONDS) -> None:
        """Return when the gate is open, or after ``limit`` seconds (background work's yield point)."""
        if not self._closed:  # the common case: no lock
            return
        with self._cond:
            self._cond.wait_for(lambda: not self._closed, limit)


#: The process's gate: every scheduler loop closes it, every API server passes it.
GATE = FireGate()
