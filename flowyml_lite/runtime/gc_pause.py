"""Python's automatic garbage collection held off while a burst of fires is claimed and started.

A burst allocates a few objects per fire, nearly all freed at once by reference counting; the
cyclic collector still scans them, and every so often scans every object of the process (a
scheduler of 10,000 schedules: 40-70 ms, a fifth of a 10,000-fire burst). Collection is put
off while the loop works through a burst, and only when it was on: whatever it would have
collected is collected as soon as the pause ends. A watchdog thread, alive only during a pause,
ends one that lasts ``MAX_PAUSE_SECONDS`` whatever the loop is doing (a claim stuck on its
store, say). Process-wide,
like the collector itself, so several schedulers in one process share one pause; a forked child
always starts with collection on.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from typing import Optional

logger = logging.getLogger("flowyml_lite.scheduler.gc_pause")

#: Fires taken in one pass of the loop that make a burst worth pausing collection for.
BURST_FIRES = 100
#: The longest a pause lasts, however long the burst: garbage in cycles waits no longer.
MAX_PAUSE_SECONDS = 1.0

_cond = threading.Condition()
_holders = 0  # pauses held now, by the loops of this process
_since = 0.0  # when a pause turned collection off (monotonic); 0.0 while it has not
_watchdog: Optional[threading.Thread] = None


class GCPause:
    """One loop's hold on the process's pause: ``hold`` at a burst, ``release`` after it."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._held = False

    def hold(self, fires: int) -> None:
        """A pass of the loop takes ``fires`` fires: hold the pause if that is a burst."""
        if self._held or not self.enabled or fires < BURST_FIRES:
            return
        global _holders, _since
        with _cond:
            _holders += 1
            self._held = True
            if _holders == 1 and gc.isenabled():
                _since = time.monotonic()
                if _watching():
                    gc.disable()
                else:
                    _since = 0.0

    def release(self) -> None:
        """The burst is over: collection goes on as before (at once, if it was due), and the
        watchdog ends with the pause."""
        if not self._held:
            return
        global _holders
        with _cond:
            self._held = False
            _holders -= 1
            if _holders:
                return
            _resume()
            watchdog = _watchdog
        if watchdog is not None and watchdog is not threading.current_thread():
            watchdog.join(1.0)


def paused() -> bool:
    """Whether a pause holds collection off now."""
    return _since > 0.0


def _resume() -> None:
    """Turn collection on again if a pause turned it off, and let the watchdog go (``_cond`` held)."""
    global _since
    if _since:
        _since = 0.0
        gc.enable()
    _cond.notify_all()


def _watching() -> bool:
    """Start the watchdog if it is not running (``_cond`` held); False if no thread can be had."""
    global _watchdog
    if _watchdog is not None and _watchdog.is_alive():
        return True
    thread = threading.Thread(target=_watch, name="flowyml_lite-gc-pause", daemon=True)
    try:
        thread.start()
    except RuntimeError:  # no thread to be had: no pause either
        return False
    _watchdog = thread
    return True


def _watch() -> None:
    """The watchdog: end the pause once it has lasted ``MAX_PAUSE_SECONDS``; gone when it ends."""
    try:
        with _cond:
            while _since:
                left = _since + MAX_PAUSE_SECONDS - time.monotonic()
                if left > 0:
                    _cond.wait(left)
                    continue
                _resume()  # the holders still release theirs; collection is already on
                logger.debug("a burst kept garbage collection off for %.1f s: on again", MAX_PAUSE_SECONDS)
    except BaseException:  # pragma: no cover - a daemon thread ends with the interpreter
        logger.exception("the garbage-collection pause watchdog failed (the next pause starts another)")


def _in_child() -> None:
    """A child forked during a pause (a process executor's run) never inherits it."""
    global _cond, _holders, _since, _watchdog
    _cond = threading.Condition()
    _holders, _watchdog = 0, None
    if _since:
        _since = 0.0
        gc.enable()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_in_child)
