"""Refused claims tried again: how soon, and which schedules wait on a row that stays held.

A claim is refused when another node claimed first, the schedule changed, or its row is locked
(PostgreSQL's SKIP LOCKED). Most refusals end at the next look; a row held by a transaction that
does not end (a lock taken by hand, a frozen peer mid-claim) is looked at less and less often, and
health names the schedules waiting on one, in one problem however many there are. Health asks
(``waiting``) rather than being told, so a schedule paused, removed or moved elsewhere meanwhile
drops out of the problem by itself.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Callable, Dict, List, Optional, Tuple

logger = logging.getLogger("flowyml_lite.scheduler.claims")

RECHECK_SECONDS = 0.05  # each look again waits twice as long as the one before: 0.1 s, 0.2 s, ...
RETRY_MAX_SECONDS = 5.0
HELD_AFTER = 3  # refusals of a row that cannot be moved on before health reports it held


class Refusals:
    """Refusals in a row of each schedule's waiting fire, and the schedules whose row is held."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: name -> (fire, refusals in a row); read without the lock on the claims' hot path.
        self.tries: Dict[str, Tuple[datetime, int]] = {}
        self._held: Dict[str, datetime] = {}  # name -> its fire that waits on a held row

    @property
    def holding(self) -> bool:
        """Whether any schedule was found waiting on a held row (lock-free: health asks often)."""
        return bool(self._held)

    def count(self, name: str, fire: datetime) -> int:
        """Refusals in a row of ``fire`` of ``name`` (0 for another fire)."""
        found = self.tries.get(name)
        return found[1] if found is not None and found[0] == fire else 0

    def again(self, name: str, fire: datetime) -> float:
        """One more refusal of ``fire``: the seconds to wait before looking again."""
        with self._lock:
            tries = self.count(name, fire) + 1
            self.tries[name] = (fire, tries)
        return float(min(RECHECK_SECONDS * 2 ** min(tries, 10), RETRY_MAX_SECONDS))

    def held(self, name: str, fire: datetime) -> None:
        """``fire`` of ``name`` could be neither claimed nor moved past (a refusal, not a store
        error): after a few in a row, health names it."""
        with self._lock:
            if self.count(name, fire) < HELD_AFTER or self._held.get(name) == fire:
                return
            self._held[name] = fire
        logger.error(
            "%r: its row in the store is held by a transaction that does not end (a lock taken outside "
            "this scheduler, or a frozen process): fire %s waits",
            name,
            fire.isoformat(),
        )

    def settled(self, name: Optional[str] = None) -> None:
        """The claims of ``name`` (of every schedule if None) are no longer refused, or no longer
        this node's to make (paused, removed, owned elsewhere): forget its refusals."""
        with self._lock:
            if name is None:
                self.tries.clear()
                freed = bool(self._held)
                self._held.clear()
            else:
                self.tries.pop(name, None)
                freed = self._held.pop(name, None) is not None
        if freed and name is not None:
            logger.warning("%r: its row in the store is no longer held", name)

    def waiting(self, still: Callable[[str, datetime], bool]) -> List[str]:
        """The schedules whose fire waits on a held row, as ``still(name, fire)`` confirms (the others
        moved on, were paused or removed, and are forgotten)."""
        with self._lock:
            if not self._held:
                return []
            for name, fire in list(self._held.items()):
                if not still(name, fire):
                    del self._held[name]
            return sorted(self._held)


def held_message(names: List[str]) -> str:
    """Health's one problem for the schedules waiting on held rows."""
    listed = ", ".join(repr(n) for n in names[:5])
    if len(names) > 5:
        listed += f" and {len(names) - 5} more"
    return (
        f"{len(names)} schedule(s) whose row in the store is held by a transaction that does not end "
        f"(a lock taken outside this scheduler, or a frozen process): their fires wait: {listed}"
    )
