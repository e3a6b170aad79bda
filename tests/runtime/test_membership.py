"""Membership: live nodes split the schedules between them, and a change moves only a share."""

from __future__ import annotations

from types import SimpleNamespace
from typing import List

from flowyml_lite.runtime.membership import Membership, ServedSet

NAMES = [f"job-{i}" for i in range(4000)]
SAME = "4000:same-set"


def cluster(*nodes: str) -> List[Membership]:
    """Nodes serving the same set of schedules, each seeing all the others."""
    members = [Membership(n) for n in nodes]
    for m in members:
        m.serve(SAME)
        m.update([(n, SAME) for n in nodes])
    return members


def test_a_lone_node_owns_every_schedule() -> None:
    alone = Membership("a")
    assert all(alone.owns(n) for n in NAMES)


def test_every_schedule_has_exactly_one_owner_among_nodes_that_agree() -> None:
    members = cluster("a", "b", "c", "d")
    for name in NAMES:
        assert sum(m.owns(name) for m in members) == 1


def test_the_shares_are_roughly_even() -> None:
    members = cluster("host1:100:x", "host2:200:y", "host3:300:z")
    shares = [sum(m.owns(n) for n in NAMES) for m in members]
    assert all(len(NAMES) / 3 * 0.8 < s < len(NAMES) / 3 * 1.2 for s in shares), shares


def test_a_node_leaving_moves_only_its_own_share() -> None:
    before = cluster("a", "b", "c")
    owners = {n: next(m.node_id for m in before if m.owns(n)) for n in NAMES}
    after = cluster("a", "b")
    for name, owner in owners.items():
        if owner != "c":
            assert next(m.node_id for m in after if m.owns(name)) == owner


def test_this_node_is_always_a_peer_and_update_reports_changes() -> None:
    m = Membership("a")
    m.serve(SAME)
    assert m.update([("b", SAME)]) is True
    assert m.peers == ("a", "b")
    assert m.update([("b", SAME), ("a", SAME)]) is False
    assert m.update([]) is True
    assert m.peers == ("a",)


def test_nodes_serving_other_schedules_are_not_peers_and_own_nothing_of_ours() -> None:
    m = Membership("a")
    m.serve(SAME)
    m.update([("b", "12:another-app"), ("c", None)])  # another app; a process that runs by hand
    assert m.peers == ("a",) and m.nodes == ("a", "b", "c")
    assert all(m.owns(n) for n in NAMES)


def test_a_node_whose_set_changes_takes_back_all_of_its_schedules_at_once() -> None:
    a, _ = cluster("a", "b")
    assert not all(a.owns(n) for n in NAMES)
    assert a.serve("4001:same-set-plus-one") is True  # a schedule was added here through the API
    assert all(a.owns(n) for n in NAMES)


def test_a_node_that_serves_nothing_here_owns_no_share_of_anyone() -> None:
    a = Membership("a")
    a.serve(None)
    a.update([("b", None)])
    assert a.peers == ("a",)


def test_the_served_digest_depends_on_the_set_not_the_order() -> None:
    one, two = ServedSet(), ServedSet()
    for name in NAMES:
        one.add(name)
    for name in reversed(NAMES):
        two.add(name)
    assert one.digest == two.digest
    two.discard("job-7")
    assert one.digest != two.digest
    two.add("job-7")
    assert one.digest == two.digest


# -- the table queues only the fires a node owns ---------------------------------------------


class TestANodeQueuesOnlyTheFiresItOwns:
    """A node keeps the schedules it does not own out of its timer heap (no timetable work for
    them), and when the split changes it re-reads the states and queues the newly owned fires."""

    @staticmethod
    def node(tmp_path, peers: List[str]) -> SimpleNamespace:  # type: ignore[no-untyped-def]
        """Node "a" on a SQLite file with ``peers`` live, 200 schedules due at one instant."""
        from datetime import datetime, timedelta, timezone

        from flowyml_lite.clock import FakeClock
        from flowyml_lite.core.triggers import build_trigger
        from flowyml_lite.runtime.claims import Claims
        from flowyml_lite.runtime.health import Troubles
        from flowyml_lite.runtime.outcomes import OutcomeWriter
        from flowyml_lite.runtime.sync import Sync
        from flowyml_lite.runtime.table import ScheduleTable
        from flowyml_lite.stores.base import ScheduleRecord
        from flowyml_lite.stores.sqlite import SQLiteStore

        due = datetime(2024, 1, 1, tzinfo=timezone.utc)
        clock = FakeClock(due)
        store = SQLiteStore(str(tmp_path / "shared.db"))
        store.open()
        table = ScheduleTable()
        membership = Membership("a")
        membership.serve(SAME)
        membership.update([(n, SAME) for n in peers])
        started: List[str] = []
        troubles = Troubles()
        claims = Claims(
            table,
            store,
            OutcomeWriter(store, troubles),
            membership,
            troubles,
            clock,
            "a",
            lambda name, func, runs, opts: started.append(name),
        )
        rebuild = lambda r: build_trigger(r.schedule_type, r.schedule_value, r.timezone, r.name)  # noqa: E731
        sync = Sync(table, store, rebuild)
        names = [f"job-{i}" for i in range(200)]
        for name in names:
            record = ScheduleRecord(name, "interval", "60", "UTC", "h", next_fire=due)
            stored = store.declare_schedule(record)
            with table.cond:
                table.serve(name, lambda: None, rebuild(stored))
                table.set_record(stored)
        return SimpleNamespace(
            clock=clock,
            store=store,
            table=table,
            membership=membership,
            claims=claims,
            sync=sync,
            names=names,
            started=started,
            later=due + timedelta(minutes=1),
        )

    def test_a_node_queues_the_fires_of_its_own_share_only(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        n = self.node(tmp_path, ["b", "c"])
        owned = {name for name in n.names if n.membership.owns(name)}
        assert 0 < len(owned) < len(n.names)
        assert {name for _, _, name, _ in n.table.heap} == owned
        with n.table.cond:
            due = n.table.pop_due(n.clock.now())
        n.claims.process(due, n.clock.now())
        assert sorted(n.started) == sorted(owned)
        assert {name for _, _, name, _ in n.table.heap} == owned  # their next fires
        n.store.close()

    def test_when_a_peer_is_lost_its_unclaimed_fires_are_queued_and_claimed_here(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        n = self.node(tmp_path, ["b"])
        with n.table.cond:
            due = n.table.pop_due(n.clock.now())
        n.claims.process(due, n.clock.now())
        mine = set(n.started)
        assert mine and mine != set(n.names)
        n.clock.set(n.later)  # node b died without claiming anything: its fires are a minute late
        assert n.membership.update([])  # b is declared lost: a owns everything now
        n.sync.sync(True)
        with n.table.cond:
            due = n.table.pop_due(n.clock.now())
        assert sorted(name for name, _ in due) == sorted(n.names)
        n.claims.process(due, n.clock.now())
        # b's share starts here; a's own fires of this minute overlap its runs still going.
        assert sorted(n.started) == sorted(n.names)
        assert len({name for _, _, name, _ in n.table.heap}) == len(n.names)
        n.store.close()

    def test_a_share_handed_to_a_new_peer_leaves_the_heap(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        n = self.node(tmp_path, [])
        assert {name for _, _, name, _ in n.table.heap} == set(n.names)
        assert n.membership.update([("b", SAME)])  # b joins: half of the schedules move there
        n.sync.sync(True)
        owned = {name for name in n.names if n.membership.owns(name)}
        assert {name for _, _, name, _ in n.table.heap} == owned != set(n.names)
        n.store.close()
