"""Refused claims: looked at again less and less often, and the schedules whose row stays held
named for health until they are settled, paused, removed or owned elsewhere."""

from __future__ import annotations

from datetime import datetime, timezone

from flowyml_lite.runtime.refusals import HELD_AFTER, RETRY_MAX_SECONDS, Refusals, held_message

FIRE = datetime(2024, 1, 1, tzinfo=timezone.utc)
LATER = datetime(2024, 1, 1, 0, 1, tzinfo=timezone.utc)


def refuse(refusals: Refusals, name: str, times: int = HELD_AFTER) -> None:
    for _ in range(times):
        refusals.again(name, FIRE)
        refusals.held(name, FIRE)


def waiting(refusals: Refusals) -> list:
    return refusals.waiting(lambda name, fire: True)


def test_each_look_waits_twice_as_long_up_to_the_cap_however_long_it_lasts() -> None:
    refusals = Refusals()
    delays = [refusals.again("etl", FIRE) for _ in range(5000)]  # hours of a held row
    assert delays[:3] == [0.1, 0.2, 0.4]
    assert delays == sorted(delays) and delays[-1] == RETRY_MAX_SECONDS


def test_another_fire_starts_counting_again() -> None:
    refusals = Refusals()
    refusals.again("etl", FIRE)
    refusals.again("etl", FIRE)
    assert refusals.count("etl", FIRE) == 2 and refusals.count("etl", LATER) == 0


def test_a_row_is_held_after_a_few_refusals_and_settling_forgets_it() -> None:
    refusals = Refusals()
    refuse(refusals, "etl", HELD_AFTER - 1)
    assert waiting(refusals) == []  # not after one or two: a claim in progress elsewhere
    for name in ("etl", "report", "sync"):
        refuse(refusals, name)
    assert waiting(refusals) == ["etl", "report", "sync"]
    assert held_message(waiting(refusals)).startswith("3 schedule(s) whose row")
    refusals.settled("etl")
    assert waiting(refusals) == ["report", "sync"]
    refusals.settled()  # this node's share changed
    assert waiting(refusals) == [] and not refusals.tries and not refusals.holding


def test_a_schedule_that_moved_on_meanwhile_drops_out_by_itself() -> None:
    """Paused, removed or claimed elsewhere while its retry waited: nobody settles it, health asks."""
    refusals = Refusals()
    refuse(refusals, "etl")
    refuse(refusals, "report")
    assert refusals.waiting(lambda name, fire: name == "report") == ["report"]
    assert waiting(refusals) == ["report"]
