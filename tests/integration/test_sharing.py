"""Schedulers sharing a store split the fires of the schedules they all serve, and a schedule only
some of them serve (another app's, or one just added through the API) still runs every time.

Two schedulers in this process on one SQLite file (two nodes; real clock, heartbeats every 0.2 s).
"""

from __future__ import annotations

import collections
import pathlib
import threading
import time
from typing import Dict, List

import pytest

from flowyml_lite import PipelineScheduler, SchedulerConfig
from tests.waiting import until


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    assert until(predicate, timeout, every=0.02), f"timed out waiting for {what}"


def two_nodes(tmp_path: pathlib.Path) -> List[PipelineScheduler]:
    """Nodes "a" and "b" on one SQLite file, heartbeats every 0.2 s."""
    return [
        PipelineScheduler(
            SchedulerConfig(
                db_path=str(tmp_path / "shared.db"),
                node_id=node,
                heartbeat_seconds=0.2,
                node_timeout_seconds=2,
            )
        )
        for node in ("a", "b")
    ]


@pytest.mark.slow
def test_shared_schedules_are_split_and_a_schedule_served_by_one_node_alone_still_runs(
    tmp_path: pathlib.Path,
) -> None:
    ran: Dict[str, List[str]] = collections.defaultdict(list)
    lock = threading.Lock()

    def job(node: str, name: str):  # type: ignore[no-untyped-def]
        def run() -> None:
            with lock:
                ran[name].append(node)

        return run

    nodes = two_nodes(tmp_path)
    for scheduler in nodes:
        for i in range(20):
            scheduler.schedule_interval(f"shared-{i}", job(scheduler.node_id, f"shared-{i}"), seconds=0.5)
    a, b = nodes
    try:
        a.start()
        b.start()
        wait_for(lambda: len(a.health_check()["nodes"]) == 2, 10, "both nodes to see each other")
        time.sleep(1.0)  # past the first heartbeats: the split is in force
        with lock:
            ran.clear()
        time.sleep(2.0)
        with lock:
            by_node = collections.Counter(node for runs in ran.values() for node in runs)
        assert by_node["a"] > 0 and by_node["b"] > 0, by_node  # both take a share
        from flowyml_lite.api.overview import overview

        for view in (overview(a), overview(b)):  # each side names the node that runs each schedule
            for item in view["schedules"]:
                with lock:
                    who = set(ran[item["name"]])
                assert who == {item["served_by"]}, (item["name"], who, item["served_by"])

        # Added on one node only (as POST /api/schedules does): the other cannot run it.
        a.schedule_interval("only-on-a", job("a", "only-on-a"), seconds=0.5)
        wait_for(lambda: len(ran["only-on-a"]) >= 4, 10, "the schedule only node a serves to run")
        b.schedule_interval("only-on-b", job("b", "only-on-b"), seconds=0.5)
        wait_for(lambda: len(ran["only-on-b"]) >= 4, 10, "the schedule only node b serves to run")
        assert set(ran["only-on-a"]) == {"a"} and set(ran["only-on-b"]) == {"b"}
    finally:
        for scheduler in nodes:
            scheduler.stop(timeout=5)
    for scheduler in nodes:
        for name in ("shared-0", "only-on-a", "only-on-b"):
            fires = collections.Counter(e["fire_time"] for e in scheduler.get_history(name, limit=1000))
            assert [f for f, n in fires.items() if n > 1] == []
        scheduler.close()


@pytest.mark.slow
def test_a_node_that_stops_hands_its_share_over_while_it_waits_for_its_runs(
    tmp_path: pathlib.Path,
) -> None:
    """A graceful stop waits for the runs in flight (30 s by default): meanwhile the node serves
    nothing, and its peers run its share of the fires at once, not after it is gone."""
    ran: Dict[str, List[float]] = collections.defaultdict(list)
    lock = threading.Lock()
    release = threading.Event()
    holding = threading.Event()

    def job(name: str):  # type: ignore[no-untyped-def]
        def run() -> None:
            with lock:
                ran[name].append(time.monotonic())

        return run

    def hold() -> None:
        holding.set()
        release.wait(20)

    nodes = two_nodes(tmp_path)
    for scheduler in nodes:
        for i in range(20):
            scheduler.schedule_interval(f"shared-{i}", job(f"shared-{i}"), seconds=0.5)
        scheduler.schedule_interval("hold", hold, hours=1)
    a, b = nodes
    stopping = None
    try:
        a.start()
        b.start()
        wait_for(lambda: len(a.health_check()["nodes"]) == 2, 10, "both nodes to see each other")
        time.sleep(1.0)  # past the first heartbeats: the split is in force
        a.run_now("hold")  # a run in flight on a: its stop waits for it
        assert holding.wait(5)
        stopping = threading.Thread(target=a.stop, kwargs={"timeout": 20})
        stopping.start()
        time.sleep(1.0)  # b's next heartbeats see a serving nothing
        since = time.monotonic()
        time.sleep(2.0)
        assert stopping.is_alive()  # a is still waiting for its run
        with lock:
            silent = sorted(name for name, times in ran.items() if not any(t >= since for t in times))
        assert silent == [], f"schedules that stopped firing while a node drained: {silent}"
    finally:
        release.set()
        if stopping is not None:
            stopping.join(20)
        for scheduler in nodes:
            scheduler.stop(timeout=5)
    for scheduler in nodes:
        fires = collections.Counter(e["fire_time"] for e in scheduler.get_history("shared-0", limit=1000))
        assert [f for f, n in fires.items() if n > 1] == []
        scheduler.close()


def test_a_schedule_declared_differently_by_two_nodes_is_warned_of_on_both(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One name, two definitions (a rolling deploy, a stale module, an API change): the last
    declaration wins for every node, and neither side is silent about it."""
    nodes = two_nodes(tmp_path)
    a, b = nodes
    try:
        a.schedule_cron("report", lambda: None, "0 * * * *")
        a.start()
        wait_for(lambda: a._store.get_schedule("report").declared_by == "a", 5, "a to mark its declaration")
        with caplog.at_level("WARNING", logger="flowyml_lite.scheduler.sync"):
            b.schedule_cron("report", lambda: None, "30 * * * *")
            said = "'report': this declaration (cron 30 * * * * UTC) replaces the definition node a"
            assert said in caplog.text
            heard = "'report' was redefined by another process: cron 30"
            wait_for(lambda: heard in caplog.text, 5, "a's warning")
        assert a._store.get_schedule("report").schedule_value == "30 * * * *"
        caplog.clear()
        with caplog.at_level("WARNING", logger="flowyml_lite.scheduler.sync"):
            b.schedule_cron("report", lambda: None, "30 * * * *")  # the same again: nothing to say
        assert "replaces" not in caplog.text
    finally:
        for scheduler in nodes:
            scheduler.stop(timeout=5)
            scheduler.close()


@pytest.mark.slow
def test_a_resume_from_another_process_is_taken_up_between_heartbeats(tmp_path: pathlib.Path) -> None:
    """An admin process (serving no schedule) pauses and resumes a 2 s schedule two workers share;
    they heartbeat every 5 s (the default) but check for changes every second: the owner runs the
    first instant after the resume, and no instant after it is recorded missed."""
    db = str(tmp_path / "shared.db")
    ran: List[float] = []
    workers = [
        PipelineScheduler(SchedulerConfig(db_path=db, node_id=node, heartbeat_seconds=5)) for node in "ab"
    ]
    admin = PipelineScheduler(SchedulerConfig(db_path=db, node_id="admin", heartbeat_seconds=5))
    for worker in workers:
        worker.schedule_interval("tick", lambda: ran.append(time.time()), seconds=2)
        worker.start()
    admin.start()
    try:
        wait_for(lambda: len(ran) >= 1, 10, "the first run")
        admin.disable("tick")
        time.sleep(7)  # past a heartbeat: the workers know it is paused
        resumed = time.time()
        admin.enable("tick")
        wait_for(lambda: any(t > resumed for t in ran), 10, "a run after the resume")
        time.sleep(4.5)  # two more instants
        after = [r for r in admin.store.history("tick", 50) if r.fire_time.timestamp() > resumed]
        statuses = sorted((r.fire_time.timestamp() - resumed, r.status) for r in after)
        assert len(statuses) >= 3 and {s for _, s in statuses} == {"succeeded"}, statuses
        assert statuses[0][0] <= 2.0  # the first instant after the resume ran
    finally:
        admin.stop(timeout=5)
        for worker in workers:
            worker.stop(timeout=5)
