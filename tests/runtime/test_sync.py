"""The sync: a change another process made to a schedule is adopted (a resume, a redefinition),
every second between heartbeats too; such a quick sync leaves the declarations' bulk read and their
epoch alone unless it finds a change, while a heartbeat's sync always starts a new epoch."""

from __future__ import annotations

import pathlib
import time
from datetime import datetime, timedelta, timezone
from typing import Iterator, List, Tuple

import pytest

from flowyml_lite.clock import FakeClock
from flowyml_lite.core.triggers import build_trigger
from flowyml_lite.runtime import housekeeping as housekeeping_module
from flowyml_lite.runtime.health import Troubles
from flowyml_lite.runtime.housekeeping import Housekeeping
from flowyml_lite.runtime.membership import Membership
from flowyml_lite.runtime.sync import BULK_READ_AFTER, Sync
from flowyml_lite.runtime.table import ScheduleTable
from flowyml_lite.stores.base import ScheduleRecord
from flowyml_lite.stores.sqlite import SQLiteStore
from tests.waiting import until

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


def rebuild(record: ScheduleRecord):  # type: ignore[no-untyped-def]
    return build_trigger(record.schedule_type, record.schedule_value, record.timezone, record.name)


@pytest.fixture
def node(tmp_path: pathlib.Path) -> Iterator[Tuple[Sync, ScheduleTable, SQLiteStore, SQLiteStore]]:
    """(sync, table, store, other): this node serves "tick"; ``other`` is another process's store."""
    path = str(tmp_path / "shared.db")
    store, other = SQLiteStore(path), SQLiteStore(path)
    store.open()
    other.open()
    table = ScheduleTable()
    sync = Sync(table, store, rebuild, "here")
    record = ScheduleRecord("tick", "interval", "60", "UTC", "h1")
    stored = sync.declare(record, lambda: None, rebuild(record), lambda: T0)
    assert stored.enabled
    sync.sync()  # the first sync: from here on, only rows changed since are read
    yield sync, table, store, other
    store.close()
    other.close()


class TestAQuickSync:
    def test_adopts_a_resume_made_by_another_process(self, node) -> None:  # type: ignore[no-untyped-def]
        sync, table, _store, other = node
        other.set_enabled("tick", False, None)
        sync.sync(quick=True)
        assert table.records["tick"].enabled is False
        other.set_enabled("tick", True, T0 + timedelta(minutes=1))
        sync.sync(quick=True)
        assert table.records["tick"].enabled is True
        assert table.records["tick"].next_fire == T0 + timedelta(minutes=1)

    def test_that_finds_nothing_keeps_the_epoch_and_the_bulk_read(self, node) -> None:  # type: ignore[no-untyped-def]
        sync, _table, _store, other = node
        for i in range(BULK_READ_AFTER + 1):  # declarations in bulk: the states are read at once
            sync.stored_state(f"new-{i}")
        assert sync._states is not None
        epoch = sync.epoch
        sync.sync(quick=True)
        assert sync.epoch == epoch and sync._states is not None
        other.set_enabled("tick", False, None)  # a change: the bulk read is older than it
        sync.sync(quick=True)
        assert sync.epoch == epoch + 1 and sync._states is None

    def test_a_change_committed_long_after_its_stamp_is_still_adopted(self, node) -> None:  # type: ignore[no-untyped-def]
        """A write stamped before several quick syncs and committed after them (a store that stamps
        before it holds the write lock) is adopted by the next heartbeat's sync, which reads since
        the heartbeat before it: passed by for a few seconds at most, never for good."""
        import sqlite3

        sync, table, store, other = node
        other.set_enabled("tick", False, None)
        sync.sync(quick=True)
        assert table.records["tick"].enabled is False
        stamped = datetime.now(timezone.utc)
        for _ in range(4):  # quick syncs go by, a second apart, while the write waits
            time.sleep(1)
            sync.sync(quick=True)
        raw = sqlite3.connect(store.path)
        with raw:
            raw.execute(
                "UPDATE schedules SET enabled = 1, next_fire = ?, updated_at = ? WHERE name = 'tick'",
                (round(T0.timestamp() * 1e6), round(stamped.timestamp() * 1e6)),
            )
        raw.close()
        sync.sync()  # the heartbeat's
        assert table.records["tick"].enabled is True

    def test_reads_only_since_the_sync_before_it(self, node, monkeypatch) -> None:  # type: ignore[no-untyped-def]
        """10,000 schedules declared just before start() are in the heartbeat's window for a few
        seconds: a quick sync, every second, does not read them all again each time."""
        sync, _table, store, _other = node
        asked = []
        versions = store.schedule_versions
        monkeypatch.setattr(store, "schedule_versions", lambda since: asked.append(since) or versions(since))
        sync.sync(quick=True)
        time.sleep(0.2)
        sync.sync(quick=True)
        assert asked[1] > asked[0]  # the second reads from the first's start on, less the margin

    def test_a_heartbeats_sync_always_starts_a_new_epoch(self, node) -> None:  # type: ignore[no-untyped-def]
        sync, _table, _store, _other = node
        for i in range(BULK_READ_AFTER + 1):
            sync.stored_state(f"new-{i}")
        epoch = sync.epoch
        sync.sync()
        assert sync.epoch == epoch + 1 and sync._states is None


def test_housekeeping_looks_for_changes_every_tick_between_heartbeats(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(housekeeping_module, "MAINTENANCE_SECONDS", 0.05)
    store = SQLiteStore(str(tmp_path / "x.db"))
    store.open()
    looked: List[float] = []
    synced: List[bool] = []
    keeper = Housekeeping(
        store,
        FakeClock(T0),
        Troubles(),
        Membership("here"),
        "here",
        5.0,  # a heartbeat every 5 s: the default
        30.0,
        synced.append,
        None,
        None,
        adopt_changes=lambda: looked.append(time.monotonic()),
    )
    keeper.start()
    try:
        until(lambda: len(looked) >= 5, 30, every=0.02)
    finally:
        keeper.stop(5)
        store.close()
    assert len(looked) >= 5 and synced == []  # five looks, and no heartbeat's sync yet
