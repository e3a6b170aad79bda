"""Refused claims: looked at again less and less often, and health names the schedules whose row
is held, in one problem, until they are settled, paused, removed or owned elsewhere."""

from __future__ import annotations

from datetime import datetime, timezone

from flowyml_lite.runtime.health import Troubles
from flowyml_lite.runtime.refusals import HELD_AFTER, RETRY_MAX_SECONDS, Refusals

FIRE = datetime(2024, 1, 1, tzinfo=timezone.utc)
LATER = datetime(2024, 1, 1, 0, 1, tzinfo=timezone.utc)


def held(refusals: Refusals, name: str, times: int = HELD_AFTER) -> None:
    for _ in range(times):
        refusals.again(name, FIRE)
        refusals.held(name, FIRE)


def test_each_look_waits_twice_as_long_up_to_the_cap_however_long_it_lasts() -> None:
    refusals = Refusals(Troubles())
    delays = [refusals.again("etl", FIRE) for _ in range(5000)]  # hours of a held row
    assert delays[:3] == [0.1, 0.2, 0.4]
    assert delays == sorted(delays) and delays[-1] == RETRY_MAX_SECONDS


def test_another_fire_starts_counting_again() -> None:
    refusals = Refusals(Troubles())
    refusals.again("etl", FIRE)
    refusals.again("etl", FIRE)
    assert refusals.count("etl", FIRE) == 2 and refusals.count("etl", LATER) == 0


def test_held_rows_are_one_problem_naming_them_and_settling_clears_it() -> None:
    troubles = Troubles()
    refusals = Refusals(troubles)
    held(refusals, "etl", HELD_AFTER - 1)
    assert troubles.problems() == []  # not after one or two refusals: a claim in progress elsewhere
    for name in ("etl", "report", "sync"):
        held(refusals, name)
    (problem,) = troubles.problems()
    assert problem["source"] == "held" and problem["message"].startswith("3 schedule(s) whose row")
    assert "'etl', 'report', 'sync'" in problem["message"]
    refusals.settled("etl")
    assert "2 schedule(s)" in troubles.problems()[0]["message"]
    refusals.settled()  # paused, removed, or this node's share changed
    assert troubles.problems() == [] and not refusals
