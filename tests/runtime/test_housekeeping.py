"""Housekeeping's judgment of other nodes: a lost node's locks are released by every node that has
the lock backend, whichever process declared it lost; a peer that goes silent is reported before it
is judged lost (its share of the schedules fires nowhere meanwhile)."""

from __future__ import annotations

import pathlib
from datetime import datetime, timedelta, timezone
from typing import List, Optional

import pytest

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


def housekeeping(
    store: SQLiteStore, clock: FakeClock, node: str, lock: Optional[Lock], troubles: Optional[Troubles] = None
) -> Housekeeping:
    return Housekeeping(
        store,
        clock,
        troubles or Troubles(),
        Membership(node),
        node,
        1.0,
        10.0,
        lambda everything: None,
        None,
        None,
        lock,
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


class TestASilentPeer:
    def test_is_reported_after_two_missed_heartbeats_and_forgotten_when_it_answers_or_is_lost(
        self, tmp_path: pathlib.Path
    ) -> None:
        store = SQLiteStore(str(tmp_path / "shared.db"))
        store.open()
        clock = FakeClock(T0)
        troubles = Troubles()
        worker = housekeeping(store, clock, "worker", None, troubles)
        store.heartbeat(NodeRecord("frozen", "another-host", 4242, T0, T0, serves="abc"))
        store.heartbeat(NodeRecord("admin", "another-host", 4243, T0, T0))  # serves nothing
        worker.beat()
        clock.set(T0 + timedelta(seconds=2.5))  # heartbeats every 1 s: under two missed
        worker.beat()
        assert troubles.problems() == []
        clock.set(T0 + timedelta(seconds=4))  # a SIGSTOP, a VM pause, a cut link
        worker.beat()
        (problem,) = troubles.problems()
        assert problem["source"] == "silent:frozen"  # not the admin server: it runs no schedules
        assert "no heartbeat for 4 s" in str(problem["message"])
        assert "judged lost (after node_timeout_seconds=10)" in str(problem["message"])
        store.heartbeat(NodeRecord("frozen", "another-host", 4242, T0, clock.now(), serves="abc"))
        worker.beat()  # it answers again
        assert troubles.problems() == []
        clock.set(T0 + timedelta(seconds=8))
        worker.beat()
        assert [p["source"] for p in troubles.problems()] == ["silent:frozen"]
        clock.set(T0 + timedelta(seconds=16))
        worker.beat()  # judged lost: its schedules are taken over, nothing to report
        assert troubles.problems() == []
        store.close()


class ServerClockStore(SQLiteStore):
    """Stamps heartbeats with the database server's clock (as PostgreSQL's store does)."""

    server_now = T0

    def heartbeat(self, node: NodeRecord) -> None:
        super().heartbeat(
            NodeRecord(node.node_id, node.hostname, node.pid, node.started_at, self.server_now, node.serves)
        )


def test_silence_is_measured_on_the_stores_clock_not_this_hosts(tmp_path: pathlib.Path) -> None:
    """This host's clock runs 8 s ahead of the database server's: a peer that beat a moment ago
    is not silent, and health says the clocks disagree."""
    store = ServerClockStore(str(tmp_path / "shared.db"))
    store.open()
    troubles = Troubles()
    worker = housekeeping(store, FakeClock(T0 + timedelta(seconds=8)), "worker", None, troubles)
    store.server_now = T0 + timedelta(seconds=0.5)
    store.heartbeat(NodeRecord("peer", "another-host", 4242, T0, T0, serves="abc"))
    store.server_now = T0 + timedelta(seconds=1)
    worker.beat()
    (skew,) = troubles.problems()
    assert skew["source"] == "clock-skew" and "7.0 s ahead of the store's" in str(skew["message"])
    store.server_now = T0 + timedelta(seconds=5)  # the peer froze at 0.5 s on the server's clock
    worker.beat()
    assert sorted(p["source"] for p in troubles.problems()) == ["clock-skew", "silent:peer"]
    store.close()


def test_a_node_judged_lost_is_logged_even_without_runs_in_flight(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SQLiteStore(str(tmp_path / "shared.db"))
    store.open()
    clock = FakeClock(T0)
    store.heartbeat(NodeRecord("dead", "another-host", 4242, T0, T0))
    worker = housekeeping(store, clock, "worker", None)
    worker.beat()
    clock.set(T0 + timedelta(seconds=30))
    with caplog.at_level("WARNING", logger="flowyml_lite.scheduler.housekeeping"):
        worker.beat()
    said = [r.message for r in caplog.records]
    assert any("node dead is judged lost: node dead stopped sending heartbeats" in m for m in said)
    store.close()


def test_a_node_whose_heartbeats_are_overdue_says_so(tmp_path: pathlib.Path) -> None:
    """Pruning that takes long on a slow store holds up the heartbeats of the same thread: the
    node's own health says so, as the others see it silent."""
    import threading
    import time

    release = threading.Event()

    class SlowPruning(SQLiteStore):
        def prune_runs(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            release.wait(30)
            return 0

    store = SlowPruning(str(tmp_path / "slow.db"))
    store.open()
    clock, troubles = FakeClock(T0), Troubles()
    sync = lambda everything: None  # noqa: E731
    keeper = Housekeeping(store, clock, troubles, Membership("here"), "here", 0.2, 10.0, sync, 90, None)
    keeper.beat()  # the first heartbeat, as start() sends it
    keeper.start()
    try:
        deadline = time.monotonic() + 30
        while keeper.heartbeat_problem() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        problem = keeper.heartbeat_problem()
        assert problem is not None and "has sent no heartbeat for" in problem
        release.set()
        while keeper.heartbeat_problem() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert keeper.heartbeat_problem() is None
    finally:
        release.set()
        keeper.stop(5)
        store.close()


def test_a_forward_step_of_the_wall_clock_does_not_get_live_peers_judged_lost(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host's clock jumps 20 s forward (node timeout 10 s): the peers' heartbeats, stamped
    before the jump, look 20 s old. The judgment waits for their next heartbeats, and health says
    the clock jumped."""
    import time

    from flowyml_lite.runtime import clock_watch
    from flowyml_lite.runtime.clock_watch import ClockWatch
    from flowyml_lite.runtime.table import ScheduleTable

    store = SQLiteStore(str(tmp_path / "shared.db"))
    store.open()
    clock, troubles = FakeClock(T0), Troubles()
    watch = ClockWatch(ScheduleTable(), troubles, clock.now)
    keeper = Housekeeping(
        store, clock, troubles, Membership("here"), "here", 1.0, 10.0, lambda e: None, None, None,
        clock_watch=watch,
    )  # fmt: skip
    store.heartbeat(NodeRecord("peer", "another-host", 4242, T0, T0, "1:ab"))
    keeper.beat()
    wall = time.time()
    monkeypatch.setattr(clock_watch.time, "time", lambda: wall + 20)
    clock.set(T0 + timedelta(seconds=20))
    watch.tick(heartbeat=True)
    keeper.beat()
    assert "peer" in {n.node_id for n in store.list_nodes()}  # not judged lost
    assert "clock-step" in [p["source"] for p in troubles.problems()]
    store.close()


def test_a_slow_heartbeat_round_trip_is_not_taken_for_clock_skew(tmp_path: pathlib.Path) -> None:
    store = SQLiteStore(str(tmp_path / "x.db"))
    store.open()
    troubles = Troubles()
    keeper = housekeeping(store, FakeClock(T0), "here", None, troubles)
    sent, taken = T0, T0 + timedelta(seconds=3)  # the store took 3 s to answer
    keeper._watch_skew(T0 + timedelta(seconds=2.5), sent, taken)  # stamped within the round trip
    assert troubles.problems() == []
    keeper._watch_skew(taken + timedelta(seconds=2.5), sent, taken)  # after it: the store's clock is ahead
    assert [p["source"] for p in troubles.problems()] == ["clock-skew"]
    store.close()
