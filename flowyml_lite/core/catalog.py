"""The schedules' rows, changed in the store and in this process's table together: looked up,
re-read, paused, resumed and removed (declaring them is ``runtime/sync.py``'s ``declare``)."""

from __future__ import annotations

import logging

from ..clock import Clock
from ..errors import ScheduleNotFoundError
from ..runtime.claims import Claims
from ..runtime.sync import Sync
from ..runtime.table import ScheduleTable
from ..stores.base import ScheduleRecord, Store
from .declarations import stored_trigger
from .scheduler_config import SchedulerConfig
from .serving import Serving
from .triggers import Trigger
from .views import iso

logger = logging.getLogger("flowyml_lite.scheduler")


class Catalog:
    """``PipelineScheduler``'s state changes (its methods' docstrings say what each means to users).

    Each drops ``Sync``'s bulk-read state of the schedule before writing, so a stale copy cannot
    undo the change; pausing and removing also end ``Claims``' overlap report on it.
    """

    def __init__(
        self,
        store: Store,
        table: ScheduleTable,
        sync: Sync,
        claims: Claims,
        serving: Serving,
        clock: Clock,
        config: SchedulerConfig,
    ) -> None:
        self._store = store
        self._table = table
        self._sync = sync
        self._claims = claims
        self._serving = serving
        self._clock = clock
        self._config = config

    def require(self, name: str) -> ScheduleRecord:
        """The stored row of ``name``; ScheduleNotFoundError if there is none."""
        record = self._store.get_schedule(name)
        if record is None:
            raise ScheduleNotFoundError(name)
        return record

    def refresh(self, name: str) -> None:
        """Re-read the row of ``name`` into the table after this process changed it."""
        record = self._store.get_schedule(name)
        if record is not None:  # redefined meanwhile by another process: its trigger is rebuilt
            self._sync.adopt(record, {name})
            return
        with self._table.lock:
            self._table.records.pop(name, None)

    def trigger_for(self, record: ScheduleRecord, rebuild: bool = False) -> Trigger:
        """The schedule's trigger in the table, or one built from its row (if ``rebuild``, or none there)."""
        mine = self._table.records.get(record.name)
        if mine is not None and mine.definition_hash != record.definition_hash:
            rebuild = True  # the row was redefined by another process since this one read it
        trigger = None if rebuild else self._table.triggers.get(record.name)
        return trigger if trigger is not None else stored_trigger(self._config, record)

    def enable(self, name: str) -> None:
        record = self.require(name)
        if record.enabled and record.next_fire is not None:
            return
        next_fire = self.trigger_for(record).next_after(self._clock.now())
        self._sync.forget_state(name)
        self._store.set_enabled(name, True, next_fire)
        self.refresh(name)
        logger.info("enabled %r: next fire %s", name, iso(next_fire))

    def disable(self, name: str) -> None:
        self.require(name)
        self._claims.unblock(name)
        self._sync.forget_state(name)
        self._store.set_enabled(name, False, None)
        self.refresh(name)
        logger.info("disabled %r", name)

    def unschedule(self, name: str) -> None:
        self._sync.forget_state(name)
        if not self._store.delete_schedule(name) and name not in self._table.funcs:
            raise ScheduleNotFoundError(name)
        with self._table.lock:
            self._table.forget(name)
        self._claims.claimed_ahead.drop(name)  # its rows went with it
        self._claims.unblock(name)
        self._serving.changed()
        logger.info("unscheduled %r", name)

    def clear(self) -> None:
        self._sync.forget_state()
        count = self._store.delete_all()
        with self._table.lock:
            self._table.clear()
        self._claims.claimed_ahead.drop()
        self._claims.unblock()
        self._serving.changed()
        logger.info("cleared %d schedule(s)", count)
