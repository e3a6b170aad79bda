"""A warning when the program ends while a scheduler still runs: its schedules end with it.

``start()`` returns at once and the jobs run on daemon threads, so a script that calls it and
reaches its end exits within a second, silently, having run nothing. The warning says what to do.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from typing import Any

logger = logging.getLogger("flowyml_lite.scheduler")

_started: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()
_registered = False


def watch(scheduler: Any) -> None:
    """Remember a started scheduler, to warn if it still runs when the program ends."""
    global _registered
    with _lock:
        _started.add(scheduler)
        if not _registered:
            atexit.register(_warn)
            _registered = True


def _warn() -> None:
    for scheduler in list(_started):
        try:
            served = len(scheduler._table.funcs)
            if not scheduler.running or not served:
                continue
        except Exception:  # a half-torn-down scheduler at exit: nothing to say
            continue
        logger.warning(
            "the program is ending while the scheduler runs %d schedule(s): they stop with it. In a "
            "script, block at its end with scheduler.serve_forever() (or run it with `python3 -m "
            "flowyml_lite serve module:scheduler`); in an app server, call scheduler.stop() as it "
            "shuts down, which also lets runs in flight finish and be recorded",
            served,
        )
