"""Fires are claimed in the half second before their instant (real time), so that at the instant
only their start is left: the claim is in the store before the instant, the run starts at it and
never before, and a pause, a removal or a stop in between is honoured and recorded."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from flowyml_lite import PipelineScheduler, SchedulerConfig
from tests.waiting import until


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[PipelineScheduler]:
    made = PipelineScheduler(SchedulerConfig(db_path=str(tmp_path / "s.db")))
    yield made
    made.stop(timeout=5)


def at_in(seconds: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=seconds)


def wait_for(check: Any, timeout: float = 10.0) -> bool:
    return until(check, timeout, every=0.005)


def wait_until_claimed(scheduler: PipelineScheduler, name: str) -> None:
    assert wait_for(
        lambda: any("claimed ahead" in (e["reason"] or "") for e in scheduler.get_history(name, limit=3)),
        timeout=5,
    )


class TestAFireClaimedAhead:
    def test_is_in_the_store_before_its_instant_shown_queued_and_starts_at_it(
        self, scheduler: PipelineScheduler
    ) -> None:
        started: List[datetime] = []
        at = at_in(1.2)
        scheduler.schedule_once("report", lambda: started.append(datetime.now(timezone.utc)), at=at)
        scheduler.start()
        assert wait_for(lambda: scheduler.get_history("report"))
        [entry] = scheduler.get_history("report")
        seen = datetime.now(timezone.utc)
        assert seen < at  # claimed before the instant
        assert entry["status"] == "queued" and "claimed ahead" in entry["reason"]
        assert entry["started_at"] is None
        assert wait_for(lambda: scheduler.get_history("report")[0]["status"] == "succeeded")
        assert len(started) == 1 and started[0] >= at  # never early

    def test_paused_after_its_claim_it_does_not_run_and_says_why(self, scheduler: PipelineScheduler) -> None:
        ran = threading.Event()
        at = at_in(1.2)
        scheduler.schedule_once("report", ran.set, at=at)
        scheduler.start()
        assert wait_for(lambda: scheduler.get_history("report"))
        scheduler.disable("report")
        time.sleep(max((at - datetime.now(timezone.utc)).total_seconds(), 0) + 0.3)
        assert not ran.is_set()
        assert wait_for(lambda: scheduler.get_history("report")[0]["status"] == "skipped")
        [entry] = scheduler.get_history("report")
        assert "paused" in entry["reason"] and "before its instant" in entry["reason"]
        assert scheduler.health_check()["status"] == "running"

    def test_stopped_after_its_claim_it_runs_at_its_instant(self, tmp_path: Path) -> None:
        config = SchedulerConfig(db_path=str(tmp_path / "s.db"))
        first = PipelineScheduler(config)
        started: List[datetime] = []
        at = at_in(1.2)
        first.schedule_once("report", lambda: started.append(datetime.now(timezone.utc)), at=at)
        first.start()
        assert wait_for(lambda: first.get_history("report"))
        assert first.stop(timeout=5)
        assert len(started) == 1 and started[0] >= at
        again = PipelineScheduler(config)
        again.schedule_once("report", lambda: None, at=at)
        history: List[Dict[str, Any]] = again.get_history("report")
        assert [e["status"] for e in history] == ["succeeded"]

    def test_switched_off_the_fire_is_claimed_at_its_instant(self, tmp_path: Path) -> None:
        scheduler = PipelineScheduler(SchedulerConfig(db_path=str(tmp_path / "s.db"), claim_ahead=False))
        at = at_in(1.2)
        scheduler.schedule_once("report", lambda: None, at=at)
        scheduler.start()
        try:
            wait_for(lambda: datetime.now(timezone.utc) >= at - timedelta(seconds=0.1), 5)
            assert scheduler.get_history("report") == []
            assert wait_for(lambda: scheduler.get_history("report")[:1] != [])
        finally:
            scheduler.stop(timeout=5)


class TestASteadyFlowOfFires:
    def test_a_schedule_due_several_times_within_the_window_runs_every_instant(
        self, scheduler: PipelineScheduler
    ) -> None:
        """Every 0.1 s: five of its instants fall within the half second claimed ahead; each runs
        once, none is skipped for overlap with a run claimed before it."""
        runs: List[datetime] = []
        scheduler.schedule_interval("tick", lambda: runs.append(datetime.now(timezone.utc)), seconds=0.1)
        scheduler.start()
        assert wait_for(lambda: len(runs) >= 20)
        scheduler.stop(timeout=5)
        statuses: Dict[str, int] = {}
        for entry in scheduler.get_history("tick", limit=100):
            statuses[entry["status"]] = statuses.get(entry["status"], 0) + 1
        assert set(statuses) == {"succeeded"}, statuses
        fires = sorted(e["fire_time"] for e in scheduler.get_history("tick", limit=100))
        assert len(fires) == len(set(fires)) >= 20

    def test_many_schedules_spread_over_a_second_each_run_once_at_or_after_their_instant(
        self, scheduler: PipelineScheduler
    ) -> None:
        started: Dict[str, datetime] = {}
        base = at_in(0.8)
        instants = {f"s{i:03d}": base + timedelta(milliseconds=5 * i) for i in range(200)}
        for name, at in instants.items():
            scheduler.schedule_once(
                name, lambda name=name: started.setdefault(name, datetime.now(timezone.utc)), at=at
            )
        scheduler.start()
        assert wait_for(lambda: len(started) == 200)
        assert scheduler.wait_for_runs(5)
        assert all(started[name] >= at for name, at in instants.items())  # never early
        assert all(scheduler.get_history(name)[0]["status"] == "succeeded" for name in instants)


class TestARunNowBesideAFireClaimedAhead:
    """The fire claimed ahead does not run yet: it does not count against ``max_instances``."""

    def claimed(self, scheduler: PipelineScheduler, job: Any) -> datetime:
        """A schedule every 3 s whose next fire is claimed ahead; that fire's instant."""
        scheduler.schedule_interval("report", job, seconds=3)
        scheduler.start()
        wait_until_claimed(scheduler, "report")
        [entry] = scheduler.get_history("report")
        return datetime.fromisoformat(entry["fire_time"])

    def test_runs_and_the_instant_runs_too_once_the_manual_run_is_over(
        self, scheduler: PipelineScheduler
    ) -> None:
        at = self.claimed(scheduler, lambda: None)
        entry = scheduler.run_now("report", wait=True)
        assert entry["status"] == "succeeded" and entry["reason"] == "manual"
        assert wait_for(lambda: datetime.now(timezone.utc) > at + timedelta(seconds=0.2))
        assert scheduler.wait_for_runs(5)
        statuses = {e["fire_time"]: e["status"] for e in scheduler.get_history("report")}
        assert statuses[entry["fire_time"]] == "succeeded" and statuses[at.isoformat()] == "succeeded"

    def test_still_running_at_the_instant_the_instant_is_skipped_for_overlap(
        self, scheduler: PipelineScheduler
    ) -> None:
        """As a fire claimed at its instant would be, with ``max_instances=1``."""
        release = threading.Event()
        at = self.claimed(scheduler, lambda: release.wait(5))
        assert scheduler.run_now("report", wait=False) is not None
        assert wait_for(lambda: datetime.now(timezone.utc) > at + timedelta(seconds=0.3))
        release.set()
        assert scheduler.wait_for_runs(5)
        by_fire = {e["fire_time"]: e for e in scheduler.get_history("report")}
        assert by_fire[at.isoformat()]["status"] == "skipped"
        assert by_fire[at.isoformat()]["reason"].startswith("overlap")
        assert [e["status"] for e in by_fire.values() if e["reason"] == "manual"] == ["succeeded"]


class TestAChangeWhileAFireIsClaimedAhead:
    """Whatever is done to a schedule while its next fire is held, it goes on firing."""

    @pytest.mark.parametrize("change", ["pause and resume", "remove and declare again", "declare again"])
    def test_the_schedule_keeps_firing_after_it(self, scheduler: PipelineScheduler, change: str) -> None:
        runs: List[datetime] = []

        def job() -> None:
            runs.append(datetime.now(timezone.utc))

        scheduler.schedule_interval("tick", job, seconds=1)
        scheduler.start()
        wait_until_claimed(scheduler, "tick")
        if change == "pause and resume":
            scheduler.disable("tick")
            scheduler.enable("tick")
        elif change == "remove and declare again":
            scheduler.unschedule("tick")
            scheduler.schedule_interval("tick", job, seconds=1)
        else:
            scheduler.schedule_interval("tick", job, seconds=1, timeout_seconds=30)
        changed = datetime.now(timezone.utc)
        assert wait_for(lambda: sum(1 for r in runs if r > changed) >= 3, timeout=6)


class TestRunNowBesideAHeldFireWithSeveralInstances:
    def test_never_more_runs_at_once_than_max_instances(self, scheduler: PipelineScheduler) -> None:
        lock = threading.Lock()
        now_running, peak = [0], [0]

        def job() -> None:
            with lock:
                now_running[0] += 1
                peak[0] = max(peak[0], now_running[0])
            time.sleep(1.5)
            with lock:
                now_running[0] -= 1

        scheduler.schedule_interval("report", job, seconds=3, max_instances=2)
        scheduler.start()
        wait_until_claimed(scheduler, "report")
        scheduler.run_now("report")
        scheduler.run_now("report")
        time.sleep(1.0)  # the held instant comes while both manual runs go on
        assert scheduler.wait_for_runs(10)
        assert peak[0] <= 2
        skipped = [e for e in scheduler.get_history("report", limit=10) if e["status"] == "skipped"]
        assert skipped and skipped[0]["reason"].startswith("overlap")
