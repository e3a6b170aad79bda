"""A wall clock behind the fires already run: stepped back (NTP, a VM's clock), or another host's ahead.

Each instant of a schedule runs at most once, so after the wall clock steps back an hour a schedule
whose instants up to an hour ahead have run already fires again only once the clock passes its last
fire: a 1 s schedule is silent for that hour, a daily one does not run twice. That silence is the
price of "once", and health says so meanwhile (``clock``), naming the schedules and how far behind.
The schedules' last fires are read at every heartbeat and at once when this process sees its wall
clock step back against its monotonic clock; a process started after the step sees it at start.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import datetime, timedelta
from typing import Callable, List, Tuple

from .health import Troubles
from .table import ScheduleTable

logger = logging.getLogger("flowyml_lite.scheduler.clock")

#: How far the clock may be behind a last fire (clocks of hosts disagree a little) before health says so.
BEHIND_AFTER_SECONDS = 2.0
#: A step of the wall clock against the monotonic one (after a step back, the last fires are read at once).
STEP_SECONDS = 1.0
#: How long health says the wall clock jumped forward.
FORWARD_SAID_SECONDS = 60.0


class ClockWatch:
    """Reports ``clock`` trouble while the wall clock is behind the last fire of a schedule served here."""

    def __init__(self, table: ScheduleTable, troubles: Troubles, now: Callable[[], datetime]) -> None:
        self._table = table
        self._troubles = troubles
        self._now = now
        self._offset = time.time() - time.monotonic()
        self._jumped_at = -math.inf  # when the wall clock last jumped forward (monotonic)

    def jumped_within(self, seconds: float) -> bool:
        """Whether the wall clock jumped forward in the last ``seconds`` (read again now, so a jump
        since the last tick counts): heartbeats stamped before it look older than they are."""
        self._see_step()
        return time.monotonic() - self._jumped_at <= seconds

    def tick(self, heartbeat: bool) -> None:
        """Called every housekeeping tick: the last fires are read at a heartbeat, or after a step
        back; a step forward is said for a minute (the fires it jumped over were recorded missed)."""
        back = self._see_step()
        if back < -STEP_SECONDS:
            self._troubles.report(
                "clock-step",
                f"the wall clock jumped forward {-back:.0f} s: the fires it jumped over were recorded "
                "missed (or run late, within misfire_grace_seconds)",
            )
        elif time.monotonic() - self._jumped_at > FORWARD_SAID_SECONDS:
            self._troubles.clear("clock-step")
        if heartbeat or back > STEP_SECONDS or self._troubles.active("clock"):
            self.check()

    def _see_step(self) -> float:
        """How far the wall clock went back against the monotonic one since last asked (< 0: forward)."""
        offset = time.time() - time.monotonic()
        back = self._offset - offset
        self._offset = offset
        if abs(back) > STEP_SECONDS:
            if back < 0:
                self._jumped_at = time.monotonic()
            logger.warning("the wall clock went %s %.1f s", "back" if back > 0 else "forward", abs(back))
        return back

    def check(self) -> None:
        """Read the last fires of the schedules served here, and report or clear the trouble."""
        now = self._now()
        limit = now + timedelta(seconds=BEHIND_AFTER_SECONDS)
        table = self._table
        with table.lock:  # copied, and looked at with the lock free: the loop takes it for every fire
            records = list(table.records.values())
            funcs = set(table.funcs)
        ahead: List[Tuple[datetime, str]] = [
            (r.last_fire, r.name)
            for r in records
            if r.last_fire is not None and r.last_fire > limit and r.name in funcs
        ]
        if not ahead:
            lasted = self._troubles.clear("clock")
            if lasted is not None:
                logger.warning("the wall clock has passed the last fires again (after %.0f s)", lasted)
            return
        ahead.sort(reverse=True)
        behind = (ahead[0][0] - now).total_seconds()
        names = ", ".join(name for _, name in ahead[:5]) + (", ..." if len(ahead) > 5 else "")
        message = (
            f"the wall clock is up to {behind:.0f} s behind the last fire of {len(ahead)} schedule(s) "
            f"({names}): it was stepped back, or another host's clock is ahead; instants up to each "
            "last fire have run already, so each schedule fires again once the clock passes its last fire"
        )
        if self._troubles.report("clock", message):
            logger.warning("%s", message)
