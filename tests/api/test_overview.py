"""A schedule's state as the fleet view and the CLI health check judge it from the store alone."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List

from flowyml_lite.api.overview import schedule_state
from flowyml_lite.stores.base import SUCCEEDED, NodeRecord, RunRecord, ScheduleRecord

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)


def node(node_id: str) -> NodeRecord:
    return NodeRecord(node_id, "host", 1, NOW - timedelta(hours=1), NOW)


def state(runs: List[RunRecord], alive: Dict[str, Any]) -> Dict[str, Any]:
    record = ScheduleRecord("nightly", "interval", "86400", "UTC", "h", next_fire=NOW + timedelta(hours=5))
    record.declared_by, record.declared_at = "admin-script", NOW - timedelta(days=2)  # long gone
    return schedule_state(record, runs, here=False, node_id="", alive=alive, orphan_window=60.0, now=NOW)


def ran_by(node_id: str) -> RunRecord:
    fired = NOW - timedelta(hours=19)
    return RunRecord("k1", "nightly", fired, SUCCEEDED, node_id, started_at=fired, completed_at=fired)


class TestWhoServesASchedule:
    def test_its_last_declarer_gone_the_live_node_that_ran_it_last_serves_it(self) -> None:
        """Re-declared by an admin script that runs nothing, then run by a worker: not orphaned."""
        found = state([ran_by("worker-1")], {"worker-1": node("worker-1")})
        assert (found["state"], found["served_by"]) == ("healthy", "worker-1")

    def test_with_no_live_node_declaring_or_running_it_it_is_orphaned(self) -> None:
        assert state([ran_by("worker-0")], {"worker-1": node("worker-1")})["state"] == "orphaned"
        assert state([], {"worker-1": node("worker-1")})["state"] == "orphaned"
