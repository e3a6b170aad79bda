"""A change made on one scheduler is in force on the others sharing a PostgreSQL database.

Two ``PipelineScheduler`` nodes in this process (distinct node ids, ``heartbeat_seconds=0.5``) on one
PostgreSQL schema of the test's own, both serving ``tick``; only one of them (its owner by the split)
fires it. The other pauses, resumes or redefines ``tick``, as the CLI or the API would on any
worker; the owner must follow: no new run after a pause, runs again after a resume, the new
cadence after a redefinition. The owner learns of a change by a refused claim or by the sync it
runs every heartbeat (rows whose ``updated_at`` moved). Outcomes are polled with deadlines of many
heartbeats, never timed tightly; the bench (``bench/multinode.py``, the propagation scenario)
measures the delays.

Needs ``FLOWYML_TEST_POSTGRES_URL`` (``scripts/test.sh`` or ``source /tmp/dev/env.sh``); skips
without it.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator, List, Tuple

import pytest

from flowyml_lite import PipelineScheduler, SchedulerConfig
from flowyml_lite.stores.base import RunRecord
from tests.waiting import until

pytestmark = [pytest.mark.slow]

NAME = "tick"
HEARTBEAT = 0.5
BASE = 0.25  # tick's interval (s): a fire every 250 ms, so its owner claims often
REDEFINED = 0.4  # the redefined interval: its grid shares an instant with the base one every 2 s only
DEADLINE = 20.0  # 40 heartbeats: a change not in force by then is not propagated
QUIET = 3.0  # no run for this long: the schedule has stopped firing


def now() -> datetime:
    return datetime.now(timezone.utc)


def wait_until(predicate: Callable[[], bool], what: Callable[[], str], timeout: float = DEADLINE) -> None:
    if not until(predicate, timeout, every=0.05):
        pytest.fail(f"not within {timeout:.0f} s: {what()}", pytrace=False)


def started_after(scheduler: PipelineScheduler, after: datetime) -> List[RunRecord]:
    """Runs of ``tick`` started after ``after``, in fire order (read from the shared store)."""
    runs = [
        r for r in scheduler.store.history(NAME, 500) if r.started_at is not None and r.started_at > after
    ]
    return sorted(runs, key=lambda r: r.fire_time)


def on_grid(run: RunRecord, seconds: float) -> bool:
    micros = round(run.fire_time.timestamp() * 1_000_000)
    return micros % round(seconds * 1_000_000) == 0


def shown(runs: List[RunRecord]) -> str:
    return ", ".join(f"{r.fire_time.strftime('%S.%f')[:6]}@{r.node_id}" for r in runs[-12:]) or "no run"


def job() -> None:
    return None


@pytest.fixture
def pair(postgres_url: str) -> Iterator[Tuple[PipelineScheduler, PipelineScheduler]]:
    """(owner, other): two started nodes serving ``tick``; the owner is the one seen firing it."""
    pytest.importorskip("sqlalchemy", reason="the sqlalchemy extra is not installed")
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    from flowyml_lite_ext.sqlalchemy_store import SQLAlchemyStore
    from tests.ext.conftest import drop_schema

    schema = f"test_{uuid.uuid4().hex[:16]}"
    nodes: List[PipelineScheduler] = []
    try:
        for node in ("node-a", "node-b"):
            config = SchedulerConfig(
                store="postgresql",
                store_url=postgres_url,
                node_id=node,
                heartbeat_seconds=HEARTBEAT,
                node_timeout_seconds=5.0,
                history_retention_days=None,
                history_max_runs=None,
            )
            scheduler = PipelineScheduler(config, store=SQLAlchemyStore(postgres_url, schema=schema))
            scheduler.schedule_interval(NAME, job, seconds=BASE)
            nodes.append(scheduler)
        for scheduler in nodes:
            scheduler.start()
        a, b = nodes
        wait_until(
            lambda: len(a.health_check()["nodes"]) == 2 and len(b.health_check()["nodes"]) == 2,
            lambda: "both nodes to see each other",
        )
        time.sleep(2 * HEARTBEAT)  # past the next heartbeats: the split is in force
        since = now()
        wait_until(
            lambda: (
                len({r.node_id for r in started_after(a, since)[-4:]}) == 1
                and len(started_after(a, since)) >= 4
            ),
            lambda: f"one node to fire {NAME} (runs: {shown(started_after(a, since))})",
        )
        owner_id = started_after(a, since)[-1].node_id
        owner, other = (a, b) if owner_id == a.node_id else (b, a)
        yield owner, other
    finally:
        for scheduler in nodes:
            scheduler.close()
        drop_schema(postgres_url, schema)


def wait_quiet(scheduler: PipelineScheduler, since: datetime) -> None:
    """Until ``tick`` has not started a run for ``QUIET`` seconds (after ``since``)."""

    def quiet() -> bool:
        runs = started_after(scheduler, since)
        last = max([since] + [r.started_at for r in runs if r.started_at is not None])
        return now() - last >= timedelta(seconds=QUIET)

    wait_until(quiet, lambda: f"{NAME} to stop firing (runs since: {shown(started_after(scheduler, since))})")


def test_a_pause_on_one_node_stops_the_owner_firing(
    pair: Tuple[PipelineScheduler, PipelineScheduler],
) -> None:
    owner, other = pair
    other.disable(NAME)
    paused = now()
    wait_quiet(owner, paused)
    assert owner.get_schedule(NAME).enabled is False
    # Quiet for good: nothing more in another spell as long.
    time.sleep(QUIET)
    assert started_after(owner, now() - timedelta(seconds=QUIET)) == []


def test_a_resume_on_one_node_makes_the_owner_fire_again(
    pair: Tuple[PipelineScheduler, PipelineScheduler],
) -> None:
    owner, other = pair
    other.disable(NAME)
    wait_quiet(owner, now())
    other.enable(NAME)
    resumed = now()
    wait_until(
        lambda: len(started_after(owner, resumed)) >= 3,
        lambda: f"{NAME} to fire again after enable (runs since: {shown(started_after(owner, resumed))})",
    )
    assert owner.get_schedule(NAME).enabled is True


def test_a_redefinition_on_one_node_is_adopted_by_the_owner(
    pair: Tuple[PipelineScheduler, PipelineScheduler],
) -> None:
    """Redefined from the other node while the owner fires every 250 ms, back and forth: each time
    the owner ends up firing on the new definition's grid alone (the last four fires on it, spaced
    by its interval exactly)."""
    owner, other = pair
    # Five changes: the owner's claim and its sync race to see each one first (both must adopt it).
    for seconds in (REDEFINED, BASE, REDEFINED, BASE, REDEFINED):
        other.schedule_interval(NAME, job, seconds=seconds)
        changed = now()
        step = timedelta(seconds=seconds)

        def adopted(seconds: float = seconds, changed: datetime = changed, step: timedelta = step) -> bool:
            last = started_after(owner, changed)[-4:]
            return (
                len(last) == 4
                and all(on_grid(r, seconds) for r in last)
                and all(b.fire_time - a.fire_time == step for a, b in zip(last, last[1:]))
            )

        wait_until(
            adopted,
            lambda seconds=seconds, changed=changed: (
                f"the owner to fire {NAME} every {seconds:g} s after the other node redefined it "
                f"(stored: every {other.get_schedule(NAME).schedule_value} s; runs since: "
                f"{shown(started_after(owner, changed))})"
            ),
        )
        assert owner.get_schedule(NAME).schedule_value == repr(seconds)
