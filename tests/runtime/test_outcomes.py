"""The outcome writer: group commits, and nothing lost while the store fails."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any, List, Sequence

from flowyml_lite.errors import StoreError
from flowyml_lite.runtime.health import Troubles
from flowyml_lite.runtime.outcomes import OutcomeWriter
from flowyml_lite.stores.base import RUNNING, SUCCEEDED, Outcome, RunRecord, ScheduleRecord
from flowyml_lite.stores.memory import MemoryStore

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


class FlakyStore(MemoryStore):
    """A memory store whose finish_runs fails while ``down`` is set, counting transactions."""

    def __init__(self) -> None:
        super().__init__()
        self.down = threading.Event()
        self.commits: List[int] = []

    def finish_runs(self, outcomes: Sequence[Outcome]) -> List[bool]:
        if self.down.is_set():
            raise StoreError("disk I/O error")
        self.commits.append(len(outcomes))
        return super().finish_runs(outcomes)


def claimed(store: Any, count: int) -> List[RunRecord]:
    store.declare_schedule(ScheduleRecord("s", "interval", "1", "UTC", "h", next_fire=T0))
    runs = [
        RunRecord(f"k{i}", "s", T0.replace(second=i % 60, minute=i // 60), RUNNING, "me")
        for i in range(count)
    ]
    assert store.claim("s", T0, T0, runs, count + 1) is not None
    return runs


def outcome(run: RunRecord) -> Outcome:
    return Outcome(run.run_key, SUCCEEDED, T0, 0.1, node_id="me")


def test_outcomes_put_together_are_committed_in_few_transactions() -> None:
    store = FlakyStore()
    runs = claimed(store, 200)
    writer = OutcomeWriter(store, Troubles())
    for run in runs:
        writer.put(outcome(run), run.schedule)
    assert writer.flush(10)
    assert sum(store.commits) == 200
    assert len(store.commits) < 50
    assert {r.status for r in store.history("s", 500)} == {SUCCEEDED}
    assert writer.stop(5)  # its thread ends: nothing left running after the test


def test_while_the_store_fails_outcomes_wait_health_says_why_and_all_land_when_it_is_back() -> None:
    store = FlakyStore()
    runs = claimed(store, 30)
    troubles = Troubles()
    writer = OutcomeWriter(store, troubles)
    store.down.set()
    for run in runs:
        writer.put(outcome(run), run.schedule)
    assert not writer.flush(0.5)
    assert troubles.active("outcomes")
    assert "disk I/O error" in troubles.problems()[0]["message"]
    assert writer.pending == 30
    store.down.clear()
    assert writer.flush(15)
    assert not troubles.active("outcomes")
    assert {r.status for r in store.history("s", 100)} == {SUCCEEDED}
    assert writer.stop(5)  # its thread ends: nothing left running after the test


def test_the_loop_can_take_pending_outcomes_and_give_them_back_in_order() -> None:
    store = FlakyStore()
    runs = claimed(store, 3)
    writer = OutcomeWriter(store, Troubles())
    store.down.set()
    for run in runs:
        writer.put(outcome(run), run.schedule)
    taken = writer.take()
    writer.give_back(taken)
    again = writer.take()
    assert [o.run_key for o in again[:3]] == [r.run_key for r in runs]
    writer.give_back(again)
    store.down.clear()
    assert writer.flush(15)
    assert writer.stop(5)  # its thread ends: nothing left running after the test


def test_a_backlog_past_the_limit_is_reported_so_the_loop_stops_claiming() -> None:
    store = FlakyStore()
    runs = claimed(store, 5)
    writer = OutcomeWriter(store, Troubles(), limit=3)
    store.down.set()
    for run in runs:
        writer.put(outcome(run), run.schedule)
    assert writer.backlogged
    store.down.clear()
    assert writer.flush(15)
    assert not writer.backlogged
    assert writer.stop(5)  # its thread ends: nothing left running after the test
