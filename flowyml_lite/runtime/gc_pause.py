"""Python's automatic garbage collection held off while a burst of fires is claimed and started.

A burst allocates a few objects per fire, nearly all freed at once by reference counting; the
cyclic collector still scans them, and every so often scans every object of the process (a
scheduler of 10,000 schedules: 40-70 ms, a fifth of a 10,000-fire burst). Collection is put off
while the loop works through a burst by setting the collector's first threshold to 0 (which
turns automatic collection off) and restoring it after: ``gc.disable()``, ``gc.enable()`` and
``gc.collect()`` keep working as the application expects, during the pause too. A watchdog
thread, alive only during a pause, ends one that lasts ``MAX_PAUSE_SECONDS`` whatever the loop
is doing (a claim stuck on its store, say). Process-wide, like the collector itself, so several
schedulers in one process share one pause; a forked child always starts without it.

Declarations in bulk (a process declaring 100,000 schedules as it starts) allocate objects that
all live on, so the collector's full collections, each a scan of the whole growing heap, find
nothing: a third of the time re-declaring them took. While declarations come in bulk, full
collections are deferred (the oldest generation's threshold raised; the young generations are
still collected) until ``DEFER_IDLE_SECONDS`` after the last one, or the scheduler's next sync.
Ended by a running scheduler's sync, the full collection put off is owed, and made at a moment
no fire is due soon (``collect_owed``, from the housekeeping thread: with 10,000 schedules it
holds the interpreter 40-60 ms, which made the first fires after ``start()`` that late), or left
to the collector again after ``MAX_OWED_SECONDS`` or when the scheduler stops.
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
#: Full collections resume this long after the last declaration of a burst of them.
DEFER_IDLE_SECONDS = 1.0
#: The longest a deferral lasts, however long declarations go on; none follows for as long.
MAX_DEFER_SECONDS = 10.0
#: After a deferral, the longest its full collection waits for a quiet moment.
MAX_OWED_SECONDS = 30.0
#: The oldest generation's threshold while full collections are deferred: never reached in a burst.
_FAR = 1_000_000

_cond = threading.Condition()
_holders = 0  # pauses held now, by the loops of this process
_since = 0.0  # when the pause began (monotonic); 0.0 while there is none
_saved = 0  # the collector's first threshold before the pause
_deferred: Optional[int] = None  # the oldest generation's threshold a deferral replaced
_defer_until = 0.0  # when a deferral ends (monotonic), renewed by each declaration
_defer_began = 0.0  # when the deferral began (monotonic)
_rested_until = 0.0  # no deferral before this (monotonic): the last one reached its limit
_owed_until = 0.0  # nonzero: the deferral is over, its collection owed until then (monotonic)
_watchdog: Optional[threading.Thread] = None
_watched = False  # the watchdog runs and will see a new pause (it clears this as it leaves)


class GCPause:
    """One loop's hold on the process's pause: ``hold`` at a burst, ``release`` after it."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._held = False
        self._began = 0.0  # when this hold began (monotonic)

    @property
    def holding(self) -> bool:
        """Whether this pause is held (a burst is being handed over)."""
        return self._held

    def held_for(self) -> float:
        """How long this pause has been held (seconds; 0.0 if it is not)."""
        return time.monotonic() - self._began if self._held else 0.0

    def hold(self, fires: int) -> None:
        """A pass of the loop takes ``fires`` fires: hold the pause if that is a burst."""
        if self._held or not self.enabled or fires < BURST_FIRES:
            return
        global _holders, _since, _saved
        with _cond:
            _holders += 1
            self._held, self._began = True, time.monotonic()
            if _holders > 1 or not gc.isenabled():
                return  # paused already, or collection is off: nothing to put off
            thresholds = gc.get_threshold()
            if thresholds[0] == 0 or not _watching():
                return  # automatic collection is off already; or no watchdog, no pause
            _saved, _since = thresholds[0], time.monotonic()
            gc.set_threshold(0, *thresholds[1:])

    def release(self) -> None:
        """The burst is over: collection goes on as before (at once, if it was due)."""
        if not self._held:
            return
        global _holders
        with _cond:
            self._held = False
            _holders -= 1
            if not _holders:
                _resume()

    def close(self) -> None:
        """``release``, and wait (briefly) for the watchdog to end unless another pause needs it:
        a stopped scheduler leaves no thread behind."""
        self.release()
        with _cond:
            watchdog = None if _since or _deferred is not None else _watchdog
        if watchdog is not None and watchdog is not threading.current_thread():
            watchdog.join(0.5)


def paused() -> bool:
    """Whether a pause holds collection off now."""
    return _since > 0.0


def defer_full_collections() -> None:
    """Declarations are arriving in bulk: put off full collections until ``DEFER_IDLE_SECONDS``
    after the last call (cheap enough to call for each declaration)."""
    global _defer_until, _deferred, _defer_began, _rested_until
    global _owed_until
    now = time.monotonic()
    if _deferred is not None:
        if now - _defer_began < MAX_DEFER_SECONDS:
            _defer_until = now + DEFER_IDLE_SECONDS
            if _owed_until:  # declarations again: the deferral goes on, and its watchdog waits on it
                with _cond:
                    _owed_until = 0.0
                    _cond.notify_all()
        else:  # at its limit: not renewed, and the next one waits as long
            _rested_until = _defer_began + 2 * MAX_DEFER_SECONDS
        return
    if now < _rested_until:
        return
    with _cond:
        if _deferred is not None or not gc.isenabled():
            return
        thresholds = gc.get_threshold()
        if thresholds[2] >= _FAR or not _watching():
            return  # deferred already by the application; or no watchdog, no deferral
        _deferred, _defer_began, _defer_until = thresholds[2], now, now + DEFER_IDLE_SECONDS
        gc.set_threshold(*thresholds[:2], _FAR)
        _cond.notify_all()


def end_deferral() -> None:
    """The declarations are over (the scheduler synced or started): the full collection put off
    is owed (``collect_owed``)."""
    if _deferred is not None and not _owed_until:
        with _cond:
            _owe()


def deferring() -> bool:
    """Whether declarations defer full collections now."""
    return _deferred is not None and not _owed_until


def owed() -> bool:
    """Whether a deferral is over and its full collection waits for a quiet moment."""
    return bool(_owed_until)


def collect_owed() -> bool:
    """Make the full collection a deferral put off (call it when no fire is due soon: it holds the
    interpreter for a scan of every object), and let the collector go on as before; False if
    none was owed."""
    if not _owed_until:
        return False
    gc.collect()
    with _cond:
        if _owed_until:  # not renewed by declarations meanwhile
            _undefer()
    return True


def forgive_owed() -> None:
    """The scheduler stops: a deferral, or the full collection it owes, is left to the collector."""
    if _deferred is not None:
        with _cond:
            _undefer()


def _owe() -> None:
    """Declarations stopped: the deferral's full collection is owed from now (``_cond`` held)."""
    global _owed_until
    if _deferred is not None and not _owed_until:
        _owed_until = time.monotonic() + MAX_OWED_SECONDS
        _cond.notify_all()


def _undefer() -> None:
    """Restore the threshold a deferral raised, unless the application set its own meanwhile
    (``_cond`` held)."""
    global _deferred, _owed_until
    if _deferred is not None:
        thresholds = gc.get_threshold()
        if thresholds[2] == _FAR:
            gc.set_threshold(*thresholds[:2], _deferred)
        _deferred, _owed_until = None, 0.0
        _cond.notify_all()


def _resume() -> None:
    """Restore the threshold a pause changed, unless the application set its own meanwhile, and
    let the watchdog go (``_cond`` held)."""
    global _since
    if _since:
        _since = 0.0
        thresholds = gc.get_threshold()
        if thresholds[0] == 0:
            gc.set_threshold(_saved, *thresholds[1:])
    _cond.notify_all()


def _watching() -> bool:
    """Start the watchdog if it is not running (``_cond`` held); False if no thread can be had."""
    global _watchdog, _watched
    if _watched:
        return True
    thread = threading.Thread(target=_watch, name="flowyml_lite-gc-pause", daemon=True)
    try:
        thread.start()
    except RuntimeError:  # no thread to be had: no pause either
        return False
    _watchdog, _watched = thread, True
    return True


def _watch() -> None:
    """The watchdog: end a pause once it has lasted ``MAX_PAUSE_SECONDS``, and a deferral once its
    declarations have stopped for ``DEFER_IDLE_SECONDS``; gone when neither is left."""
    global _watched
    try:
        with _cond:
            while True:
                if not _since and _deferred is None:
                    _cond.wait(0.1)  # the next burst's pause, if it comes at once, is watched too
                    if not _since and _deferred is None:
                        _watched = False
                        return
                    continue
                now = time.monotonic()
                if _deferred is not None and not _owed_until and _defer_until <= now:
                    _undefer()  # no scheduler's sync ended it (one would owe the collection)
                    logger.debug("declarations stopped: full garbage collections resume")
                if _owed_until and _owed_until <= now:
                    _undefer()
                    logger.debug("no quiet moment for the full collection put off: left to the collector")
                if _since and _since + MAX_PAUSE_SECONDS <= now:
                    _resume()  # the holders still release theirs; collection is already on
                    logger.debug("a burst kept collection off for %.1f s: on again", MAX_PAUSE_SECONDS)
                ends = [_since + MAX_PAUSE_SECONDS] if _since else []
                if _deferred is not None:
                    ends.append(_owed_until or _defer_until)
                if ends:
                    _cond.wait(max(0.0, min(ends) - now))
    except BaseException:  # pragma: no cover - a daemon thread ends with the interpreter
        _watched = False
        logger.exception("the garbage-collection pause watchdog failed (the next pause starts another)")


def _in_child() -> None:
    """A child forked during a pause (a process executor's run) never inherits it."""
    global _cond, _holders, _since, _watchdog, _watched, _deferred, _owed_until
    _cond = threading.Condition()
    _holders, _watchdog, _watched = 0, None, False
    thresholds = gc.get_threshold()
    if _since:
        _since = 0.0
        if thresholds[0] == 0:
            thresholds = (_saved, *thresholds[1:])
    if _deferred is not None:
        if thresholds[2] == _FAR:
            thresholds = (*thresholds[:2], _deferred)
        _deferred, _owed_until = None, 0.0
    gc.set_threshold(*thresholds)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_in_child)
