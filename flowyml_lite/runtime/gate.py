"""Who has the interpreter around a fire: the loop first, the HTTP handlers of the same process after.

Python runs one thread at a time. When the API's handler threads are busy, a loop thread that
wakes for a fire queues for the interpreter behind them (tens of milliseconds with 50 clients). So
the loop closes this gate a little before each fire and opens it shortly after the fire is
claimed and handed over; handler threads pass it between requests, waiting (a bounded time)
while it is closed. A gate that stays closed (fires closer together than the lead) stops holding.
"""

from __future__ import annotations

import threading
import time

#: How long before a fire the loop closes the gate: time for the requests already being answered
#: to finish (8 handler threads of a few ms of work each, sharing the interpreter; with 25 ms some
#: were still running at the fire, and each of a SQLite claim's store calls waited behind them).
LEAD_SECONDS = 0.06
#: How long after handing fires over the loop keeps it closed: time for their runs to start.
TAIL_SECONDS = 0.01
#: A handler waits at most this long at a closed gate, so the API never stops answering.
PASS_LIMIT_SECONDS = 0.1
#: A gate closed this long (fires closer together than the lead, or a claim that hangs on its
#: store) no longer holds anyone: the API would otherwise answer every request 100 ms late.
MAX_CLOSED_SECONDS = 0.2


class FireGate:
    """Closed while any scheduler loop in this process is about to fire (or firing)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._closed = 0  # how many loops hold it closed
        self._since = 0.0  # when it last closed (monotonic)

    @property
    def closed(self) -> bool:
        return self._closed > 0

    def close(self) -> None:
        with self._cond:
            if not self._closed:
                self._since = time.monotonic()
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
            left = min(limit, self._since + MAX_CLOSED_SECONDS - time.monotonic())
            if left > 0:
                self._cond.wait_for(lambda: not self._closed, left)


#: The process's gate: every scheduler loop closes it, every API server passes it.
GATE = FireGate()
