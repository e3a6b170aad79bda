"""Python's automatic garbage collection held off while a burst of fires is claimed and started.

A burst allocates a few objects per fire, nearly all freed at once by reference counting; the
cyclic collector still scans them, and every so often scans every object of the process (a
scheduler of 10,000 schedules: 40-70 ms, a fifth of a 10,000-fire burst). Collection is put
off while the loop works through a burst, never for longer than ``MAX_PAUSE_SECONDS``, and only
when it was on: whatever it would have collected is collected as soon as the pause ends.
Process-wide, like the collector itself, so several schedulers in one process share one pause;
a forked child always starts with collection on.
"""

from __future__ import annotations

import gc
import os
import threading
import time

#: Fires taken in one pass of the loop that make a burst worth pausing collection for.
BURST_FIRES = 100
#: The longest a pause lasts, however long the burst: garbage in cycles waits no longer.
MAX_PAUSE_SECONDS = 1.0

_lock = threading.Lock()
_holders = 0  # pauses held now, by the loops of this process
_disabled_here = False  # the collector was on and a pause turned it off


class GCPause:
    """One loop's hold on the process's pause: ``hold`` at a burst, ``release`` after it."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._since = 0.0  # when this loop's hold began (monotonic), 0.0 when it holds none

    def hold(self, fires: int) -> None:
        """A pass of the loop takes ``fires`` fires: hold the pause if that is a burst."""
        if self._since or not self.enabled or fires < BURST_FIRES:
            return
        global _holders, _disabled_here
        with _lock:
            _holders += 1
            if _holders == 1 and gc.isenabled():
                gc.disable()
                _disabled_here = True
        self._since = time.monotonic()

    def overdue(self) -> bool:
        """This loop has held the pause for ``MAX_PAUSE_SECONDS`` (the loop then releases it)."""
        return bool(self._since) and time.monotonic() - self._since >= MAX_PAUSE_SECONDS

    def release(self) -> None:
        """The burst is over (or the pause lasted long enough): collection goes on as before."""
        if not self._since:
            return
        self._since = 0.0
        global _holders, _disabled_here
        with _lock:
            _holders -= 1
            if _holders == 0 and _disabled_here:
                _disabled_here = False
                gc.enable()


def _in_child() -> None:
    """A child forked during a pause (a process executor's run) never inherits it."""
    global _lock, _holders, _disabled_here
    _lock = threading.Lock()
    _holders = 0
    if _disabled_here:
        _disabled_here = False
        gc.enable()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_in_child)
