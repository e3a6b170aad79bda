"""One thread that calls short callbacks at monotonic deadlines: delayed starts, retries, timeouts."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Callable, List, Optional, Tuple

logger = logging.getLogger("flowyml_lite.scheduler.timers")


class Timer:
    """A pending callback; ``cancel()`` keeps it from running (if it has not run yet)."""

    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    """A heap of (deadline, Timer) served by one daemon thread, started on first use."""

    def __init__(self, name: str = "flowyml_lite-timers") -> None:
        self._name = name
        self._cond = threading.Condition()
        self._heap: List[Tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._thread: Optional[threading.Thread] = None
        self._closing = False

    def after(self, seconds: float, callback: Callable[[], None]) -> Timer:
        """Call ``callback`` on the timer thread ``seconds`` from now; it must not block for long."""
        timer = Timer(callback)
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + max(seconds, 0.0), next(self._seq), timer))
            self._cond.notify()
            self._closing = False
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        return timer

    def __len__(self) -> int:
        return sum(1 for _, _, t in self._heap if not t.cancelled)

    def close(self, timeout: float = 1.0) -> None:
        """Drop every pending callback and end the thread (a later ``after`` starts a new one)."""
        with self._cond:
            self._heap.clear()
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if not self._heap:
                        if self._closing:
                            return
                        self._cond.wait()
                        continue
                    deadline, _, timer = self._heap[0]
                    left = deadline - time.monotonic()
                    if left > 0:
                        self._cond.wait(left)
                        continue
                    heapq.heappop(self._heap)
                    break
            if timer.cancelled:
                continue
            try:
                timer.callback()
            except Exception:
                logger.exception("timer callback failed")
