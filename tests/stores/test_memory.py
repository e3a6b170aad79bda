"""The in-process store keeps finished runs as plain tuples: every field of a RunRecord, in order."""

from __future__ import annotations

import gc
from dataclasses import fields
from datetime import datetime, timedelta, timezone

from flowyml_lite.stores import memory
from flowyml_lite.stores.base import Outcome, RunRecord, ScheduleRecord
from flowyml_lite.stores.memory import MemoryStore


def test_a_row_holds_every_field_of_a_run_in_its_order() -> None:
    values = {f.name: f"value-{i}" for i, f in enumerate(fields(RunRecord))}
    run = RunRecord(**values)  # type: ignore[arg-type]
    assert memory._row(run) == tuple(values.values())
    assert memory._record(memory._row(run)) == run
    assert memory._record(run) == run and memory._record(run) is not run


def test_finished_runs_read_back_whole_and_are_not_tracked_by_the_collector() -> None:
    store = MemoryStore()
    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    store.declare_schedule(ScheduleRecord("s", "once", "", "UTC", "h", next_fire=at))
    run = RunRecord("k1", "s", at, "running", "node", started_at=at)
    assert store.claim("s", at, None, [run], 1) is not None
    done = at + timedelta(seconds=2)
    outcome = Outcome(
        "k1", "failed", done, 2.0, "ValueError: x", "r-1", at, None, 1, "tb", "out", None, "node"
    )
    assert store.finish_runs([outcome]) == [True]
    [entry] = store.history("s")
    assert (entry.status, entry.completed_at, entry.duration_seconds) == ("failed", done, 2.0)
    assert entry.error == "ValueError: x"
    assert (entry.run_id, entry.traceback, entry.output, entry.started_at) == ("r-1", "tb", "out", at)
    gc.collect()
    assert not gc.is_tracked(store._runs["k1"])
    assert store.stats("s").failed == 1 and store.active_runs() == []
