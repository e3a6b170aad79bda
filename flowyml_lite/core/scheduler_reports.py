"""The scheduler's read-only answers: schedules and runs as users see them, status and health.

``PipelineScheduler``'s reading methods delegate here. Nothing here changes a room's state;
``status()`` and ``problems()`` do no I/O either (probes may call them every second).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ..clock import Clock
from ..errors import ScheduleError
from ..runtime.health import Troubles, health_report
from ..runtime.housekeeping import Housekeeping
from ..runtime.loop import TimerLoop
from ..runtime.membership import Membership
from ..runtime.outcomes import OutcomeWriter
from ..runtime.runner import Runner
from ..runtime.table import ScheduleTable
from ..stores.base import ScheduleRecord, Store
from .schedule import Options, Schedule, to_schedule
from .views import Localizer, history_entry


class Reports:
    """Reads the rooms ``PipelineScheduler`` wires; ``node_id`` and ``heartbeat_seconds`` are its config's."""

    def __init__(
        self,
        store: Store,
        table: ScheduleTable,
        loop: TimerLoop,
        runner: Runner,
        writer: OutcomeWriter,
        housekeeping: Housekeeping,
        membership: Membership,
        troubles: Troubles,
        clock: Clock,
        localize: Localizer,
        node_id: str,
        heartbeat_seconds: float,
    ) -> None:
        self._store = store
        self._table = table
        self._loop = loop
        self._runner = runner
        self._writer = writer
        self._housekeeping = housekeeping
        self._membership = membership
        self._troubles = troubles
        self._clock = clock
        self._localize = localize
        self._node_id = node_id
        self._heartbeat_seconds = heartbeat_seconds

    # -- schedules and runs ------------------------------------------------------------

    def schedule(self, record: ScheduleRecord, options: Optional[Options] = None) -> Schedule:
        """The Schedule of a stored row, its instants shown in its zone (``options``: already parsed)."""
        return to_schedule(
            record,
            self._table.funcs.get(record.name),
            lambda moment: self._localize(record.timezone, moment) or moment,
            options,
        )

    def schedules(self, include_orphans: bool) -> List[Schedule]:
        """Schedules registered here; with ``include_orphans``, also stored ones with no function here."""
        records = self._store.list_schedules()
        records.reverse()
        funcs = self._table.funcs
        out = []
        while records:  # popped as converted, so records and Schedules are not all alive at once
            record = records.pop()
            if record.name in funcs or include_orphans:
                out.append(self.schedule(record))
        return out

    def history(self, schedule_name: str, limit: int) -> List[Dict[str, Any]]:
        """Runs of a schedule, newest fire first, as history entries."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ScheduleError(f"limit must be an integer >= 1, got {limit!r}")
        return [history_entry(run) for run in self._store.history(schedule_name, limit)]

    # -- health ------------------------------------------------------------------------

    def status(self) -> str:
        """``running``, ``degraded`` or ``stopped``."""
        if not self._loop.alive:
            return "stopped"
        return "degraded" if self._loop_stalled() or self._troubles.any() else "running"

    def problems(self) -> List[Dict[str, Any]]:
        """What is wrong right now (source, message, for how long); empty when healthy."""
        found = self._troubles.problems()
        if self._loop.alive and self._loop_stalled():
            found.append(
                {"source": "loop", "message": "the scheduler loop has not gone round", "for_seconds": None}
            )
        return found

    def health(self) -> Dict[str, Any]:
        """``health_check()``'s answer, computed by ``runtime/health.py`` from what every room reports."""
        return health_report(
            self.status(),
            self.problems(),
            self._store.list_schedules(),
            self._table.funcs,
            self._store.stats(),
            sorted(self._runner.lags),
            self._clock.now(),
            self._localize,
            running=self._loop.alive,
            node_id=self._node_id,
            nodes=list(self._membership.nodes),
            last_heartbeat=self._housekeeping.last_heartbeat,
            pending_outcomes=self._writer.pending,
            last_error=self._troubles.last_error,
        )

    def _loop_stalled(self) -> bool:
        """The loop has not gone round in three heartbeats and a second (stuck in a claim, or dead)."""
        return self._loop.stale(3 * self._heartbeat_seconds + 1)
