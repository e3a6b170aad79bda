"""Who has the interpreter around a fire: the loop first, the HTTP handlers of the same process after.

Python runs one thread at a time. When the API's handler threads are busy, a loop thread that
wakes for a fire queues for the interpreter behind them (tens of milliseconds with 50 clients). So
the loop closes this gate a little before each fire and opens it shortly after the fire is
claimed and handed over; handler threads pass it between requests, waiting (a bounded time)
while it is closed. A gate that stays closed (fires closer together than the lead) stops holding.

While the gate is closed the interpreter also switches threads every ``SWITCH_SECONDS`` instead of
every 5 ms (``sys.setswitchinterval``): a thread already busy when the gate closed then keeps the
loop waiting a fraction of a millisecond each time the loop gives the interpreter up (a store call
does, several times per claim), not 5 ms. The process's own interval is put back when it opens.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Optional

#: How long before a fire the loop closes the gate: time for busy handlers to finish their request.
LEAD_SECONDS = 0.025
#: How long after handing fires over the loop keeps it closed: time for their runs to start.
TAIL_SECONDS = 0.01
#: A handler waits at most this long at a closed gate, so the API never stops answering.
PASS_LIMIT_SECONDS = 0.05
#: A gate closed this long (fires closer together than the lead, or a claim that hangs on its
#: store) no longer holds anyone: the API would otherwise answer every request 50 ms late.
MAX_CLOSED_SECONDS = 0.1
#: The interpreter's switch interval while the gate is closed (Python's default is 5 ms).
SWITCH_SECONDS = 0.0005


class FireGate:
    """Closed while any scheduler loop in this process is about to fire (or firing)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._closed = 0  # how many loops hold it closed
        self._since = 0.0  # when it last closed (monotonic)
        self._interval: Optional[float] = None  # the switch interval to put back when it opens

    @property
    def closed(self) -> bool:
        return self._closed > 0

    def close(self) -> None:
        with self._cond:
            if not self._closed:
                self._since = time.monotonic()
                interval = sys.getswitchinterval()
                if interval > SWITCH_SECONDS:
                    self._interval = interval
                    sys.setswitchinterval(SWITCH_SECONDS)
            self._closed += 1

    def open(self) -> None:
        with self._cond:
            self._closed = max(0, self._closed - 1)
            if not self._closed:
                interval, self._interval = self._interval, None
                # Someone else's change meanwhile (the value is no longer ours) is left alone.
                if interval is not None and abs(sys.getswitchinterval() - SWITCH_SECONDS) < 1e-7:
                    sys.setswitchinterval(interval)
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
