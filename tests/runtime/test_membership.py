"""Membership: live nodes split the schedules between them, and a change moves only a share."""

from __future__ import annotations

from flowyml_lite.runtime.membership import Membership

NAMES = [f"job-{i}" for i in range(4000)]


def cluster(*nodes: str) -> list:
    members = [Membership(n) for n in nodes]
    for m in members:
        m.update(nodes)
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


def test_this_node_is_always_a_member_and_update_reports_changes() -> None:
    m = Membership("a")
    assert m.update(["b"]) is True
    assert m.nodes == ("a", "b")
    assert m.update(["b", "a"]) is False
    assert m.update([]) is True
    assert m.nodes == ("a",)
