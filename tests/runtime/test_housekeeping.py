"""Housekeeping's judgment of other nodes: a lost node's locks are released by every node that has
the lock backend, whichever process declared it lost."""

from __future__ import annotations

import pathlib
from datetime import datetime, timedelta, timezone
from typing import List, Optional

from flowyml_lite.clock import FakeClock
from flowyml_lite.locks.base import Lease, Lock
from flowyml_lite.runtime.health import Troubles
from flowyml_lite.runtime.housekeeping import Housekeeping
from flowyml_lite.runtime.membership import Membership
from flowyml_lite.stores.base import NodeRecord
from flowyml_lite.stores.sqlite import SQLiteStore

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


class RecordingLock(Lock):
    """Remembers whose locks it was asked to release."""

    expires = True

    def __init__(self) -> None:
        self.released: List[str] = []

    def acquire(
        self, key: str, ttl_seconds: Optional[float] = None, timeout: float = 0.0, owner: Optional[str] = None
    ) -> Optional[Lease]:
        return None

    def release_owner(self, owner: str) -> int:
        self.released.append(owner)
        return 1


def housekeeping(store: SQLiteStore, clock: FakeClock, node: str, lock: Optional[Lock]) -> Housekeeping:
    return Housekeeping(
        store, clock, Troubles(), Membership(node), node, 1.0, 10.0, lambda everything: None, None, None, lock
    )


class TestALostNodesLocks:
    def test_are_released_by_a_node_with_the_lock_when_another_without_it_declared_it_lost(
        self, tmp_path: pathlib.Path
    ) -> None:
        store = SQLiteStore(str(tmp_path / "shared.db"))
        store.open()
        clock = FakeClock(T0)
        store.heartbeat(NodeRecord("dead", "another-host", 4242, T0, T0))
        lock = RecordingLock()
        worker = housekeeping(store, clock, "worker", lock)
        admin = housekeeping(store, clock, "admin", None)  # an admin server: no lock backend
        worker.beat()  # sees "dead" alive
        admin.beat()
        assert lock.released == []
        clock.set(T0 + timedelta(seconds=30))  # "dead" stopped sending heartbeats
        admin.beat()  # the admin judges first: it declares "dead" lost, and cannot free its locks
        assert "dead" not in {n.node_id for n in store.list_nodes()}
        worker.beat()  # the worker never sees it expire, only gone
        assert lock.released == ["dead"]
        worker.beat()  # once
        assert lock.released == ["dead"]
        store.close()
