"""Keeping this process's view of the schedules in step with the store other processes write too.

Two jobs: declarations in bulk (after many declarations without a sync, the stored states of all
schedules are read in one query and each declaration takes its own from there), and the sync that
adopts what other processes changed (enabled there, redefined there) — incrementally, by the
rows' versions, or in full when ownership moved here and every state must be re-read.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Callable, Dict, Optional, Set, Tuple, Union

from ..core.schedule import as_stored
from ..core.triggers import Trigger
from ..stores.base import ScheduleRecord, ScheduleState, Store
from ..timezones import UTC
from .gc_pause import defer_full_collections, end_deferral
from .table import ScheduleTable

logger = logging.getLogger("flowyml_lite.scheduler.sync")

# Declarations between two syncs after which the stored states of all schedules are read at once.
BULK_READ_AFTER = 256
# A heartbeat's sync looks at least this far before the one before it began.
HEARTBEAT_MARGIN_SECONDS = 5.0
# Changed rows a sync reads one by one; more are read in one query.
_READ_ONE_BY_ONE = 100
_NEW = object()  # the version of a row the last sync did not see: none equals it


class Sync:
    """The declarations' bulk read and the adoption of other processes' changes."""

    def __init__(
        self,
        table: ScheduleTable,
        store: Store,
        rebuild: Callable[[ScheduleRecord], Trigger],
        node_id: Optional[str] = None,
        defer_collections: bool = False,
    ) -> None:
        self._node = node_id
        self._defer_collections = defer_collections
        self._table = table
        self._store = store
        self._rebuild = rebuild
        # Rows changed after this are what the first sync reads (declarations here are known).
        self._synced_at: Optional[datetime] = datetime.now(UTC)
        # Every sync bumps the epoch. A declaration that read the store in an older epoch than the
        # one it registers in re-reads its row: that sync may have passed its name by.
        self.epoch = 0
        # The stored states of every schedule, read at once for a burst of declarations. An entry
        # serves one declaration; each sync drops the lot, and this process's own writes to a name
        # (enable, disable, unschedule, clear) drop its entry.
        self._states: Optional[Dict[str, ScheduleState]] = None
        self._declared = 0  # declarations since the last sync
        self._syncing = threading.Lock()  # one sync at a time: housekeeping's, or a change of peers'
        # The versions the last incremental sync read: a row this process does not serve counts as
        # changed once per version, not at every sync while it is within the window.
        self._seen: Dict[str, Optional[datetime]] = {}
        self._quick_at: Optional[datetime] = None  # when the last sync of any kind began

    def stored_state(self, name: str) -> Tuple[int, Union[ScheduleRecord, ScheduleState, None]]:
        """The sync epoch now, and the stored row of ``name`` (its state only, if read in bulk).

        After ``BULK_READ_AFTER`` declarations without a sync, the states of all rows are read in
        one query and the next declarations take theirs from there (an entry serves once). None
        means no row, or none left in the bulk read: the caller writes, and the store decides.
        Declarations in bulk also defer the garbage collector's full collections (``gc_pause``).
        """
        table = self._table
        with table.lock:
            epoch = self.epoch
            states = self._states
            if states is not None:
                if self._defer_collections:
                    defer_full_collections()
                return epoch, states.pop(name, None)
            self._declared += 1
            bulk = self._declared >= BULK_READ_AFTER
        if not bulk:
            return epoch, self._store.get_schedule(name)
        if self._defer_collections:
            defer_full_collections()
        states = self._store.schedule_states()
        with table.lock:
            found = states.pop(name, None)
            if self.epoch == epoch and self._states is None:
                self._states = states
        return epoch, found

    def declare(
        self,
        candidate: ScheduleRecord,
        func: Callable[[], Any],
        trigger: Trigger,
        first_fire: Callable[[], Optional[datetime]],
    ) -> ScheduleRecord:
        """Register a declaration and return the schedule's row as stored.

        An unchanged definition (same hash) keeps the stored state without a write; a new or
        changed one goes to the store, which re-reads the row in its transaction and decides
        (``first_fire`` gives its next fire). The table then serves ``func`` on ``trigger``.
        """
        name = candidate.name
        epoch, known = self.stored_state(name)
        if known is not None and known.definition_hash == candidate.definition_hash:
            if isinstance(known, ScheduleRecord):
                stored = known
            else:  # read in bulk: the definition is ours (same hash), the state is the row's
                stored = candidate  # made for this call: completed in place, not copied
                stored.context = as_stored(candidate.context)
                stored.enabled, stored.next_fire, stored.last_fire = (
                    known.enabled,
                    known.next_fire,
                    known.last_fire,
                )
                stored.created_at, stored.updated_at = known.created_at, known.updated_at
        else:
            if isinstance(known, ScheduleRecord) and self._declared_by_a_peer(known):
                logger.warning(
                    "%r: this declaration (%s) replaces the definition node %s declared (%s): every "
                    "node follows this one now, each running its own function for the name",
                    name,
                    describe(candidate),
                    known.declared_by,
                    describe(known),
                )
            record = replace(candidate, options=dict(candidate.options), enabled=True, next_fire=first_fire())
            stored = self._store.declare_schedule(record)
            if stored.options == candidate.options:
                # The declaration's dict, shared by every schedule with equal options: the claims
                # parse options once per dict, so a burst of new schedules parses them once.
                stored.options = candidate.options
        if not stored.enabled and stored.next_fire is not None:
            # A paused schedule whose definition changed: it keeps no next fire until enabled.
            self._store.set_enabled(name, False, None)
            stored.next_fire = None
        table = self._table
        with table.lock:
            table.serve(name, func, trigger)
            table.set_record(stored)
            missed_sync = self.epoch != epoch
        if missed_sync:
            fresh = self._store.get_schedule(name)
            if fresh is not None:
                self.adopt(fresh, {name})
                stored = fresh
        return stored

    def _declared_by_a_peer(self, known: ScheduleRecord) -> bool:
        """Whether ``known`` was declared by another node still listed in the store (a declaration
        that differs from it changes what that node's peers run, not only this process)."""
        other = known.declared_by
        if not self._store.shared or other is None or other == self._node:
            return False
        try:
            return any(node.node_id == other for node in self._store.list_nodes())
        except Exception:  # only a warning depends on it
            return False

    def forget_state(self, name: Optional[str] = None) -> None:
        """Drop the bulk-read state of ``name`` (of every schedule if None) before writing it."""
        with self._table.lock:
            if name is None:
                self._states = None
                end_deferral()
            elif self._states is not None:
                self._states.pop(name, None)

    def sync(self, everything: bool = False, quick: bool = False) -> None:
        """Adopt changes other processes made to our schedules (enabled there, redefined there).

        Other changes heal by themselves: a claim refused because another process advanced or
        disabled a schedule re-reads it. Only a shared store can change behind our back, and only
        rows changed since the last sync (with the store's clock-skew margin) are read, unless
        ``everything`` (ownership moved: every state is read, and the table queues the fires this
        node owns now; a failed full read is redone by the next sync). A ``quick`` sync (every second
        between heartbeats) reads the same window as the next heartbeat's will, so it only finds a
        change sooner, and skips its turn while another sync is at work. A sync that finds a change
        drops the declarations' bulk read, which is older than what it has seen; a heartbeat's
        sync always does.
        """
        end_deferral()
        if not self._syncing.acquire(blocking=not quick):
            return
        try:
            self._sync(everything, quick)
        finally:
            self._syncing.release()

    def _sync(self, everything: bool, quick: bool) -> None:
        if everything:
            self._synced_at = None
        started = datetime.now(UTC)
        if not self._store.shared:
            if not quick:
                with self._table.lock:
                    self._new_epoch()
            return
        synced_at = self._synced_at
        full = synced_at is None
        if synced_at is None:
            with self._table.lock:
                names = self._new_epoch()
            records = self._store.list_schedules() if names else []
            self._seen = {}
        else:
            # Names and versions first (cheap): rows re-read within the skew margin are skipped. A
            # quick sync reads only since the sync before it: the store stamps a change once it
            # holds the write lock, so it commits well within the margin; the heartbeat's sync
            # reads since the heartbeat's before, in case one did not.
            start = synced_at if not quick else max(synced_at, self._quick_at or synced_at)
            margin = self._store.clock_skew_seconds
            if not quick:  # the safety net: a commit that came seconds after its stamp (a pause, a GC)
                margin = max(margin, HEARTBEAT_MARGIN_SECONDS)
            since = start - timedelta(seconds=margin)
            versions = self._store.schedule_versions(since)
            seen = self._seen
            known, funcs = self._table.records, self._table.funcs  # looked up, not iterated: no lock
            changed = [
                n
                for n, v in versions.items()
                if v != (getattr(known.get(n), "updated_at", None) if n in funcs else seen.get(n, _NEW))
            ]
            if quick:
                seen.update(versions)
            else:
                self._seen = versions
            names = set()
            if changed or not quick:
                with self._table.lock:
                    # A change to a name being declared right now makes that declaration re-read it.
                    names = self._new_epoch()
            wanted = [n for n in changed if n in names]
            if len(wanted) > _READ_ONE_BY_ONE:  # e.g. a peer redefined them all: one query
                chosen = set(wanted)
                records = [r for r in self._store.changed_since(since) if r.name in chosen]
            else:
                records = [r for r in map(self._store.get_schedule, wanted) if r is not None]
        self._quick_at = started
        if not quick:
            self._synced_at = started
        for record in records:
            self.adopt(record, names)
        if full:  # the split may have changed: queue the fires this node owns now, and only those
            with self._table.lock:
                self._table.reown()

    def _new_epoch(self) -> Set[str]:
        """Start a sync epoch (``table.lock`` held): drop the bulk read; the names served now."""
        self.epoch += 1
        self._states = None
        self._declared = 0
        return set(self._table.funcs)

    def adopt(self, record: ScheduleRecord, names: Set[str]) -> None:
        """Take a row another process may have changed (enabled, redefined) as this process's."""
        if record.name not in names:
            return
        trigger = None
        table = self._table
        with table.lock:
            mine = table.records.get(record.name)
        if mine is not None and mine.definition_hash != record.definition_hash:
            trigger = self._rebuild(record)  # redefined by another process
            if (mine.schedule_type, mine.schedule_value, mine.timezone) != (
                record.schedule_type,
                record.schedule_value,
                record.timezone,
            ) or mine.options != record.options:
                logger.warning(
                    "%r was redefined by another process: %s, was %s; this process runs its function "
                    "on the new definition",
                    record.name,
                    describe(record),
                    describe(mine),
                )
        with table.lock:
            if trigger is not None:
                table.triggers[record.name] = trigger
            if mine is None or (mine.next_fire, mine.enabled, mine.definition_hash) != (
                record.next_fire,
                record.enabled,
                record.definition_hash,
            ):
                table.set_record(record)
            else:
                mine.updated_at = record.updated_at


def describe(record: ScheduleRecord) -> str:
    """A schedule's definition in a few words, for the log: its timetable and zone."""
    return f"{record.schedule_type} {record.schedule_value} {record.timezone}"
