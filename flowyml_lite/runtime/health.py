"""What is wrong right now, by source: the one place ``status()`` and ``health_check()`` read.

Each part of the runtime reports its own trouble under a key ("store", "lock", "outcomes", ...)
and clears it when it is over; the scheduler is ``degraded`` while any key is set.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Dict, List, Optional, Tuple

logger = logging.getLogger("flowyml_lite.scheduler.health")


class Troubles:
    """Current problems by source, with when each began; thread-safe, no I/O."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._now: Dict[str, Tuple[str, float]] = {}  # key -> (message, monotonic start)
        self.last_error: Optional[str] = None

    def report(self, key: str, message: str) -> bool:
        """Set (or update) the problem of ``key``; True if it is new (the caller logs it once)."""
        with self._lock:
            new = key not in self._now
            started = time.monotonic() if new else self._now[key][1]
            self._now[key] = (message, started)
            self.last_error = message
        return new

    def clear(self, key: str) -> Optional[float]:
        """The problem of ``key`` is over: how long it lasted in seconds, or None if there was none."""
        with self._lock:
            found = self._now.pop(key, None)
        if found is None:
            return None
        return time.monotonic() - found[1]

    def active(self, key: str) -> bool:
        with self._lock:
            return key in self._now

    def any(self) -> bool:
        return bool(self._now)

    def problems(self) -> List[Dict[str, object]]:
        """The current problems, oldest first: source, message and for how long (seconds)."""
        now = time.monotonic()
        with self._lock:
            items = sorted(self._now.items(), key=lambda item: item[1][1])
        return [
            {"source": key, "message": message, "for_seconds": round(now - since, 3)}
            for key, (message, since) in items
        ]
