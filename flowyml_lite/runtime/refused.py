"""What becomes of a refused claim: the schedule's row is re-read; a fire that still waits is looked
at again soon (another node's claim may have held the row), then moved past its instant, recorded
``missed`` if it has no run yet; a row that stays held is looked at less and less often, and health
names the schedules waiting on one (``refusals.py``)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Callable, List, Optional

from ..stores.base import ACTIVE_STATUSES, MISSED, Claim, ScheduleRecord, Store
from .health import Troubles
from .refusals import Refusals
from .table import ScheduleTable

logger = logging.getLogger("flowyml_lite.scheduler.claims")

#: Why an instant whose claim kept meeting its row held is recorded missed.
ROW_HELD = "its row in the store was held by another transaction at each look, until past its instant"


class RefusedClaims:
    """Deals with the claims the store refused, one at a time, after the pass that made them."""

    def __init__(
        self,
        table: ScheduleTable,
        store: Store,
        refusals: Refusals,
        troubles: Troubles,
        adopt: Callable[[ScheduleRecord], None],
    ) -> None:
        self._table = table
        self._store = store
        self._refusals = refusals
        self._troubles = troubles
        self._adopt = adopt

    def held(self) -> List[str]:
        """The schedules whose fire waits on a row held in the store (for health; no I/O)."""
        if not self._refusals.holding:
            return []
        records = self._table.records

        def still(name: str, fire: datetime) -> bool:
            record = records.get(name)
            return record is not None and record.enabled and record.next_fire == fire

        with self._table.lock:
            return self._refusals.waiting(still)

    def look_again(self, claim: Claim, now: datetime) -> None:
        """Another node claimed first, changed the schedule, holds its row, or the instant has a run."""
        name, fire = claim.name, claim.expected_next
        try:
            fresh = self._store.get_schedule(name)
        except Exception as exc:
            self._troubles.report("claims", f"re-reading {name!r}: {type(exc).__name__}: {exc}")
            with self._table.lock:
                self._table.push(now + timedelta(seconds=1), name, fire)
            return
        with self._table.lock:
            if not self._take_fresh(name, fire, fresh):
                self._refusals.settled(name)  # it moved on (or is gone): nothing to try again
                return
            if self._refusals.count(name, fire) == 0 and self._store.skips_locked_rows:
                # Maybe another node's claim of this row was in progress: look again soon.
                self._table.push(now + timedelta(seconds=self._refusals.again(name, fire)), name, fire)
                return
        self._move_past(claim, now)

    def _take_fresh(self, name: str, fire: datetime, fresh: Optional[ScheduleRecord]) -> bool:
        """Cache the row re-read after a refusal (table lock held); True if it still waits at ``fire``."""
        table = self._table
        if fresh is None:
            table.records.pop(name, None)
            return False
        mine = table.records.get(name)
        if mine is not None and mine.definition_hash != fresh.definition_hash:
            self._adopt(fresh)  # redefined elsewhere: its trigger is rebuilt too
        elif mine is not None and (mine.enabled, mine.next_fire) == (fresh.enabled, fresh.next_fire):
            table.records[name] = fresh  # the same fire: retried later by the caller (set_record: now)
        else:
            table.set_record(fresh)
        return bool(fresh.enabled and fresh.next_fire == fire)

    def _move_past(self, claim: Claim, now: datetime) -> None:
        """The row looked unchanged (twice where rows can be locked). Either the instant has a run
        already (a clock stepped back, then enable or a re-declaration): it is done, and next_fire
        moves past it. Or the row is held by a transaction that does not end (a lock taken by hand,
        a frozen peer), and moving it is refused too: the fire waits, looked at less and less often."""
        name, fire = claim.name, claim.expected_next
        error = None
        # First with the instant recorded missed: if its row was only held for a moment by a write
        # that is not a claim (a worker's start marking the schedules it declares), the instant has
        # no run yet, and moving past it with none would leave it without a row. A claim planned
        # late carries the instants a later one superseded, already missed: they go with it, or
        # they too would be left without a row.
        missed = [r.with_status(MISSED, ROW_HELD) if r.status in ACTIVE_STATUSES else r for r in claim.runs]
        recorded = None
        try:
            if missed:
                recorded = self._store.claim(name, fire, claim.new_next, missed, claim.max_instances)
            # Refused with its rows: past it without them only if the instant has its run. The
            # refusal may as well have met the row held again (another node's claim or a write
            # that is not a claim, at a change of the split): moved past then, it had no row.
            if recorded is None and (not missed or self._store.run_at(name, fire) is not None):
                moved = self._store.claim(name, fire, claim.new_next, [], claim.max_instances)
            else:
                moved = recorded
            fresh = self._store.get_schedule(name) if moved is not None else None
        except Exception as exc:  # the store's own trouble, said as such: not a held row
            moved, error = None, f"{type(exc).__name__}: {exc}"
        if moved is None:
            delay = self._refusals.again(name, fire)
            if error is None:
                self._refusals.held(name, fire)
            else:
                self._troubles.report("claims", f"moving {name!r} past a taken instant: {error}")
            with self._table.lock:
                self._table.push(now + timedelta(seconds=delay), name, fire)
            return
        self._refusals.settled(name)
        if recorded:
            last = recorded[-1].fire_time
            held = fire.isoformat() if last == fire else f"{fire.isoformat()} to {last.isoformat()}"
            logger.warning("%r: fire %s recorded missed: %s", name, held, ROW_HELD)
        else:
            logger.warning("%r: fire %s already has a run; moved past it", name, fire.isoformat())
        if fresh is not None:
            with self._table.lock:
                self._adopt(fresh)
