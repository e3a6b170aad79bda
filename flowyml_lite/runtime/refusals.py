"""Refused claims tried again: how soon, and when health says a schedule's row is held.

A claim is refused when another node claimed first, the schedule changed, or its row is locked
(PostgreSQL's SKIP LOCKED). Most refusals end at the next look; a row held by a transaction that
does not end (a lock taken by hand, a frozen peer mid-claim) is looked at less and less often, and
health names the schedules waiting on one, in one problem however many there are.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Dict, Optional, Tuple

from .health import Troubles

logger = logging.getLogger("flowyml_lite.scheduler.claims")

RECHECK_SECONDS = 0.05  # the first look again after a refusal; each later one waits twice as long
RETRY_MAX_SECONDS = 5.0
HELD_AFTER = 3  # refusals of a row that cannot be moved on before health reports it held
HELD_KEY = "held"


class Refusals:
    """Refusals in a row of each schedule's waiting fire, and the schedules whose row is held."""

    def __init__(self, troubles: Troubles) -> None:
        self._troubles = troubles
        self._tries: Dict[str, Tuple[datetime, int]] = {}  # name -> (fire, refusals in a row)
        self._held: Dict[str, datetime] = {}  # name -> its fire that waits on a held row

    def __bool__(self) -> bool:
        return bool(self._tries)

    def count(self, name: str, fire: datetime) -> int:
        """Refusals in a row of ``fire`` of ``name`` (0 for another fire)."""
        found = self._tries.get(name)
        return found[1] if found is not None and found[0] == fire else 0

    def again(self, name: str, fire: datetime) -> float:
        """One more refusal of ``fire``: the seconds to wait before looking again."""
        tries = self._tries[name] = (fire, self.count(name, fire) + 1)
        return float(min(RECHECK_SECONDS * 2 ** min(tries[1], 10), RETRY_MAX_SECONDS))

    def held(self, name: str, fire: datetime) -> None:
        """``fire`` of ``name`` can be neither claimed nor moved past: after a few, health says so."""
        if self.count(name, fire) < HELD_AFTER or self._held.get(name) == fire:
            return
        self._held[name] = fire
        self._report()

    def settled(self, name: Optional[str] = None) -> None:
        """The claims of ``name`` (of every schedule if None) are no longer refused, or no longer
        this node's to make (paused, removed, owned elsewhere): forget its refusals."""
        if name is None:
            self._tries.clear()
        else:
            self._tries.pop(name, None)
        if self._held and (name is None or name in self._held):
            if name is None:
                self._held.clear()
            else:
                self._held.pop(name, None)
            self._report()

    def _report(self) -> None:
        if not self._held:
            lasted = self._troubles.clear(HELD_KEY)
            if lasted is not None:
                logger.warning("no schedule's row in the store is held any more (after %.1f s)", lasted)
            return
        names = sorted(self._held)
        listed = ", ".join(repr(n) for n in names[:5])
        if len(names) > 5:
            listed += f" and {len(names) - 5} more"
        message = (
            f"{len(names)} schedule(s) whose row in the store is held by a transaction that does not end "
            f"(a lock taken outside this scheduler, or a frozen process): their fires wait: {listed}"
        )
        if self._troubles.report(HELD_KEY, message):
            logger.error("%s", message)
