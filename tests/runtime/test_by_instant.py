"""Items by the instant they are due at: the earliest instant, what is due, each item once."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from flowyml_lite.runtime.by_instant import ByInstant

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def filled() -> ByInstant[str]:
    items: ByInstant[str] = ByInstant()
    for ms, item in [(30, "c"), (10, "a"), (20, "b1"), (20, "b2"), (40, "d")]:
        assert items.add(at(ms), item)
    return items


class TestByInstant:
    def test_the_earliest_instant_and_what_is_due_by_now_in_instant_order(self) -> None:
        items = filled()
        assert len(items) == 5 and items.first() == at(10)
        assert items.count_due(at(20)) == 3 and items.count_due(at(5)) == 0
        assert items.pop_due(at(25)) == ["a", "b1", "b2"]
        assert len(items) == 2 and items.first() == at(30)
        assert items.pop_due(at(25)) == []

    def test_an_item_added_twice_is_kept_once(self) -> None:
        items = filled()
        assert not items.add(at(20), "b1")
        assert len(items) == 5 and items.has(at(20), "b1") and not items.has(at(30), "b1")

    def test_discarding_and_keeping_only_keep_the_count_and_the_first_instant_true(self) -> None:
        items = filled()
        items.discard(at(10), ["a", "missing"])
        assert items.first() == at(20) and len(items) == 4
        assert sorted(items.keep_only(lambda item: not item.startswith("b"))) == ["b1", "b2"]
        assert items.first() == at(30) and len(items) == 2 and list(items) == ["c", "d"]
        assert items.clear() == ["c", "d"] and items.first() is None and len(items) == 0

    def test_counting_what_is_due_visits_every_due_instant_of_the_heap(self) -> None:
        items: ByInstant[int] = ByInstant()
        for ms in range(100, 0, -1):
            items.add(at(ms), ms)
        assert items.count_due(at(50)) == 50 and items.count_due(at(100)) == 100
