"""The timer loop: sleeps until the earliest fire (or a change), then hands what is due to the claims.

It never runs a job and never waits on one; the only thing it waits on besides the condition is
the claim transaction. Any error is logged and reported, and the loop goes on.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from datetime import datetime
from typing import Callable, List, Optional, Tuple

from ..clock import Clock
from .health import Troubles
from .table import ScheduleTable

logger = logging.getLogger("flowyml_lite.scheduler.loop")


class TimerLoop:
    """One thread: pop the due fires of the table's heap, pass them to ``process``, sleep."""

    def __init__(
        self,
        table: ScheduleTable,
        clock: Clock,
        process: Callable[[List[Tuple[str, datetime]], datetime], None],
        troubles: Troubles,
        idle_seconds: float,
    ) -> None:
        self._table = table
        self._clock = clock
        self._process = process
        self._troubles = troubles
        self._idle = idle_seconds
        self.stopping = threading.Event()
        self.beat = time.monotonic()  # when the loop last went round: health's liveness check
        self._thread: Optional[threading.Thread] = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self.stopping.clear()
        self.beat = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="flowyml_lite-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self.stopping.set()
        with self._table.cond:
            self._table.cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        self._thread = None

    def stale(self, limit: float) -> bool:
        """True if the loop has not gone round for ``limit`` seconds (stuck in a claim or dead)."""
        return time.monotonic() - self.beat > limit

    def _run(self) -> None:
        table = self._table
        while not self.stopping.is_set():
            try:
                with table.cond:
                    now = self._clock.now()
                    self.beat = time.monotonic()
                    due = table.pop_due(now)
                    if not due:
                        timeout = self._idle
                        wake = table.next_wake()
                        if wake is not None:
                            timeout = min(timeout, max((wake - now).total_seconds(), 0.0))
                        self._clock.wait(table.cond, timeout)
                        continue
                self._process(due, now)
            except Exception:  # the loop must survive anything; health shows it
                self._troubles.last_error = traceback.format_exc(limit=3)
                logger.exception("scheduler loop error (continuing)")
                self.stopping.wait(0.1)
