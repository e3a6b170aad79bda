"""Membership: live nodes split the schedules between them, and a change moves only a share."""

from __future__ import annotations

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
