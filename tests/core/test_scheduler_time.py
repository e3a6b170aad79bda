"""When fires happen: DST, the interval grid, misfires and catch-up, overlap, store hiccups, the real loop.

All but the last class run on a FakeClock through ``run_pending()``: the test moves time, the
scheduler processes what is due, and history (``fire_time``, ``status``, ``reason``) shows what
it decided. America/New_York in 2024:
  2024-03-10 02:00 EST -> 03:00 EDT (07:00 UTC): wall times 02:00-02:59 do not exist.
  2024-11-03 02:00 EDT -> 01:00 EST (06:00 UTC): wall times 01:00-01:59 happen twice.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Sequence
from zoneinfo import ZoneInfo

import pytest

from flowyml_lite import PipelineScheduler, SchedulerConfig
from flowyml_lite.clock import FakeClock
from flowyml_lite.errors import StoreError
from flowyml_lite.stores.base import Claim, Outcome, RunRecord
from flowyml_lite.stores.memory import MemoryStore
from tests.waiting import until

UTC = timezone.utc
NY = ZoneInfo("America/New_York")
START = datetime(2024, 1, 1, 0, 0, 30, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def noop() -> None:
    return None


def rows(scheduler: PipelineScheduler, name: str) -> List[Dict[str, Any]]:
    """The whole history of ``name``, oldest fire first."""
    return sorted(scheduler.get_history(name, limit=10_000), key=lambda e: e["fire_time"])


def at(entry: Dict[str, Any], key: str = "fire_time") -> datetime:
    return datetime.fromisoformat(entry[key])


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    assert until(predicate, timeout, every=0.005), "condition not reached in time"


# -- DST ------------------------------------------------------------------------------------------


class TestDaylightSavingFires:
    """DESIGN §3, checked from history: the instants a running scheduler actually fired."""

    def fire(
        self,
        make_scheduler: Any,
        backend: str,
        drive: Any,
        start: datetime,
        end: datetime,
        times: Dict[str, str],
    ) -> Dict[str, List[datetime]]:
        drive.clock.set(start)
        scheduler = make_scheduler(backend)
        for name, hhmm in times.items():
            hour, minute = map(int, hhmm.split(":"))
            scheduler.schedule_daily(name, noop, hour=hour, minute=minute, timezone="America/New_York")
        drive.until(scheduler, end)
        out = {}
        for name in times:
            history = rows(scheduler, name)
            assert {e["status"] for e in history} == {"succeeded"}
            assert all(at(e, "started_at") == at(e) for e in history)  # on time, not a misfire catch-up
            out[name] = [at(e) for e in history]
        return out

    def test_spring_forward_0230_fires_at_0300_edt_and_0900_stays_0900(
        self, make_scheduler: Any, backend: str, drive: Any
    ) -> None:
        got = self.fire(
            make_scheduler,
            backend,
            drive,
            utc(2024, 3, 8, 12),
            utc(2024, 3, 12),
            {"early": "02:30", "nine": "09:00"},
        )
        assert got["early"] == [utc(2024, 3, 9, 7, 30), utc(2024, 3, 10, 7, 0), utc(2024, 3, 11, 6, 30)]
        assert [f.astimezone(NY).strftime("%m-%d %H:%M %Z") for f in got["early"]] == [
            "03-09 02:30 EST",
            "03-10 03:00 EDT",
            "03-11 02:30 EDT",
        ]
        assert got["nine"] == [
            utc(2024, 3, 8, 14),
            utc(2024, 3, 9, 14),
            utc(2024, 3, 10, 13),
            utc(2024, 3, 11, 13),
        ]
        assert {f.astimezone(NY).strftime("%H:%M") for f in got["nine"]} == {"09:00"}

    def test_fall_back_0130_fires_once_at_0130_edt_and_0900_stays_0900(
        self, make_scheduler: Any, backend: str, drive: Any
    ) -> None:
        got = self.fire(
            make_scheduler,
            backend,
            drive,
            utc(2024, 11, 1, 12),
            utc(2024, 11, 5),
            {"early": "02:30", "repeated": "01:30", "nine": "09:00"},
        )
        assert got["repeated"] == [utc(2024, 11, 2, 5, 30), utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 30)]
        assert [f.astimezone(NY).strftime("%m-%d %H:%M %Z") for f in got["repeated"]] == [
            "11-02 01:30 EDT",
            "11-03 01:30 EDT",
            "11-04 01:30 EST",
        ]
        assert got["early"] == [utc(2024, 11, 2, 6, 30), utc(2024, 11, 3, 7, 30), utc(2024, 11, 4, 7, 30)]
        assert got["nine"] == [
            utc(2024, 11, 1, 13),
            utc(2024, 11, 2, 13),
            utc(2024, 11, 3, 14),
            utc(2024, 11, 4, 14),
        ]
        assert {f.astimezone(NY).strftime("%H:%M") for f in got["nine"]} == {"09:00"}

    @pytest.mark.parametrize("day, hours", [((2024, 3, 10), 23), ((2024, 11, 3), 25)])
    def test_hourly_fires_every_real_hour_of_a_short_and_a_long_day(
        self, scheduler: PipelineScheduler, drive: Any, clock: FakeClock, day: Sequence[int], hours: int
    ) -> None:
        midnight = datetime(*day, tzinfo=NY)
        clock.set(midnight - timedelta(minutes=1))
        scheduler.schedule_hourly("tick", noop, minute=0, timezone="America/New_York")
        next_midnight = datetime(day[0], day[1], day[2] + 1, tzinfo=NY)
        drive.through(scheduler, "tick", next_midnight - timedelta(seconds=1))
        fires = [at(e) for e in rows(scheduler, "tick")]
        assert len(fires) == hours
        assert [b - a for a, b in zip(fires, fires[1:])] == [timedelta(hours=1)] * (hours - 1)


# -- the interval grid ----------------------------------------------------------------------------


class TestIntervalGrid:
    def test_an_interval_fires_on_its_grid(self, scheduler: PipelineScheduler, drive: Any) -> None:
        scheduler.schedule_interval("sync", noop, seconds=60)
        drive.through(scheduler, "sync", utc(2024, 1, 1, 0, 5))
        assert [at(e) for e in rows(scheduler, "sync")] == [utc(2024, 1, 1, 0, m) for m in range(1, 6)]

    def test_a_slow_run_does_not_shift_later_fires(
        self, scheduler: PipelineScheduler, drive: Any, clock: FakeClock
    ) -> None:
        scheduler.schedule_interval("sync", lambda: clock.advance(45), seconds=60)  # each run takes 45 s
        drive.through(scheduler, "sync", utc(2024, 1, 1, 0, 4))
        history = rows(scheduler, "sync")
        assert [at(e) for e in history] == [utc(2024, 1, 1, 0, m) for m in range(1, 5)]
        assert [at(e, "completed_at") for e in history] == [utc(2024, 1, 1, 0, m, 45) for m in range(1, 5)]
        assert scheduler.get_schedule("sync").next_run == utc(2024, 1, 1, 0, 5)

    def test_a_run_longer_than_the_interval_leaves_the_next_fire_on_the_grid(
        self, scheduler: PipelineScheduler, drive: Any, clock: FakeClock
    ) -> None:
        durations = [90.0, 0.0]
        scheduler.schedule_interval("sync", lambda: clock.advance(durations.pop(0)), seconds=60)
        drive.at(scheduler, utc(2024, 1, 1, 0, 1))  # runs until 00:02:30
        assert scheduler.get_schedule("sync").next_run == utc(2024, 1, 1, 0, 2)
        drive.at(scheduler, clock.now())  # the 00:02 fire, 30 s late: within the minute of grace
        history = rows(scheduler, "sync")
        assert [(at(e), e["status"]) for e in history] == [
            (utc(2024, 1, 1, 0, 1), "succeeded"),
            (utc(2024, 1, 1, 0, 2), "succeeded"),
        ]
        assert at(history[1], "started_at") == utc(2024, 1, 1, 0, 2, 30)
        assert scheduler.get_schedule("sync").next_run == utc(2024, 1, 1, 0, 3)

    def test_a_clock_stepped_back_does_not_run_a_fire_again(
        self, scheduler: PipelineScheduler, drive: Any, clock: FakeClock
    ) -> None:
        scheduler.schedule_interval("sync", noop, seconds=60)
        drive.at(scheduler, utc(2024, 1, 1, 0, 1))
        clock.set(utc(2024, 1, 1, 0, 0, 10))  # NTP steps the clock back 50 s
        assert drive.at(scheduler, utc(2024, 1, 1, 0, 1)) == 0
        drive.at(scheduler, utc(2024, 1, 1, 0, 2))
        assert [at(e) for e in rows(scheduler, "sync")] == [utc(2024, 1, 1, 0, 1), utc(2024, 1, 1, 0, 2)]

    def test_fires_due_together_all_run(self, scheduler: PipelineScheduler, drive: Any) -> None:
        for i in range(5):
            scheduler.schedule_interval(f"job{i}", noop, seconds=60)
        assert drive.at(scheduler, utc(2024, 1, 1, 0, 1)) == 5
        assert all(len(rows(scheduler, f"job{i}")) == 1 for i in range(5))


# -- misfires and catch-up ------------------------------------------------------------------------


class TestMisfireGrace:
    def test_a_fire_picked_up_within_the_grace_runs_normally(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        scheduler.schedule_interval("sync", noop, seconds=60, misfire_grace_seconds=60, catchup="skip")
        drive.at(scheduler, utc(2024, 1, 1, 0, 1, 30))
        (entry,) = rows(scheduler, "sync")
        assert (entry["status"], at(entry), at(entry, "started_at")) == (
            "succeeded",
            utc(2024, 1, 1, 0, 1),
            utc(2024, 1, 1, 0, 1, 30),
        )
        assert entry["start_lag_seconds"] == pytest.approx(30.0)

    def test_the_grace_is_inclusive(self, scheduler: PipelineScheduler, drive: Any) -> None:
        scheduler.schedule_interval("sync", noop, seconds=600, misfire_grace_seconds=60, catchup="skip")
        drive.at(scheduler, utc(2024, 1, 1, 0, 11))
        assert [e["status"] for e in rows(scheduler, "sync")] == ["succeeded"]

    def test_a_fire_picked_up_after_the_grace_follows_the_catchup_policy(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        calls: List[int] = []
        scheduler.schedule_interval(
            "sync", lambda: calls.append(1), seconds=600, misfire_grace_seconds=60, catchup="skip"
        )
        drive.at(scheduler, utc(2024, 1, 1, 0, 11, 30))  # the 00:10 fire, 90 s late
        (entry,) = rows(scheduler, "sync")
        assert (entry["status"], at(entry), calls) == ("missed", utc(2024, 1, 1, 0, 10), [])
        assert "misfire" in entry["reason"] and "catchup=skip" in entry["reason"]
        assert scheduler.get_schedule("sync").next_run == utc(2024, 1, 1, 0, 20)

    def test_a_zero_grace_treats_any_lateness_as_a_misfire(
        self, scheduler: PipelineScheduler, drive: Any
    ) -> None:
        scheduler.schedule_interval("sync", noop, seconds=60, misfire_grace_seconds=0, catchup="skip")
        drive.at(scheduler, utc(2024, 1, 1, 0, 1, 0, 1000))
        assert [e["status"] for e in rows(scheduler, "sync")] == ["missed"]


class TestCatchUpAfterAThreeDayOutage:
    """Declared at 2024-01-01 00:00:30; the clock jumps 3 days; one ``run_pending`` decides."""

    OUTAGE = timedelta(days=3)  # until 2024-01-04 00:00:30

    def outage(self, scheduler: PipelineScheduler, drive: Any, clock: FakeClock) -> int:
        return drive.at(scheduler, clock.now() + self.OUTAGE)

    def test_latest_runs_once_for_the_most_recent_instant_and_summarizes_the_rest(
        self, scheduler: PipelineScheduler, drive: Any, clock: FakeClock
    ) -> None:
        calls: List[int] = []
        scheduler.schedule_hourly("hourly", lambda: calls.append(1), minute=0)  # catchup="latest" by default
        self.outage(scheduler, drive, clock)
        history = rows(scheduler, "hourly")
        assert calls == [1]
        assert [(e["status"], at(e)) for e in history] == [
            ("missed", utc(2024, 1, 1, 1)),
            ("succeeded", utc(2024, 1, 4, 0)),
        ]
        assert history[0]["reason"] == (
            "71 missed instants from 2024-01-01T01:00:00+00:00 to 2024-01-03T23:00:00+00:00 "
            "(misfire, catchup=latest)"
        )
        assert at(history[1], "started_at") == utc(2024, 1, 4, 0, 0, 30)
        assert scheduler.get_schedule("hourly").next_run == utc(2024, 1, 4, 1)
        assert scheduler.health_check()["metrics"]["missed_runs"] == 1

    def test_latest_records_each_of_a_few_missed_instants(
        self, scheduler: PipelineScheduler, drive: Any, clock: FakeClock
    ) -> None:
        scheduler.schedule_daily("daily", noop, hour=9, catchup="latest")
        self.outage(scheduler, drive, clock)
        assert [(e["status"], at(e)) for e in rows(scheduler, "daily")] == [
            ("missed", utc(2024, 1, 1, 9)),
            ("missed", utc(2024, 1, 2, 9)),
            ("succeeded", utc(2024, 1, 3, 9)),
        ]
        assert scheduler.get_schedule("daily").next_run == utc(2024, 1, 4, 9)

    def test_skip_runs_nothing_and_records_every_missed_instant(
        self, scheduler: PipelineScheduler, drive: Any, clock: FakeClock
    ) -> None:
        calls: List[int] = []
        scheduler.schedule_daily("daily", lambda: calls.append(1), hour=9, catchup="skip")
        self.outage(scheduler, drive, clock)
        history = rows(scheduler, "daily")
        assert calls == []
        assert [(e["status"], at(e)) for e in history] == [("missed", utc(2024, 1, d, 9)) for d in (1, 2, 3)]
        assert all(e["reason"] == "misfire (catchup=skip)" for e in history)
        assert scheduler.get_schedule("daily").next_run == utc(2024, 1, 4, 9)

    def test_skip_summarizes_many_missed_instants_and_runs_the_one_still_within_the_grace(
        self, scheduler: PipelineScheduler, drive: Any, clock: FakeClock
    ) -> None:
        scheduler.schedule_hourly("hourly", noop, minute=0, catchup="skip")
        self.outage(scheduler, drive, clock)  # back at 00:00:30: the 00:00 fire is 30 s late, on time
        summary, ran = rows(scheduler, "hourly")
        assert (summary["status"], at(summary), summary["success"]) == ("missed", utc(2024, 1, 1, 1), False)
        assert summary["reason"] == (
            "71 missed instants from 2024-01-01T01:00:00+00:00 to 2024-01-03T23:00:00+00:00 "
            "(misfire, catchup=skip)"
        )
        assert (ran["status"], at(ran)) == ("succeeded", utc(2024, 1, 4, 0))

    def test_all_runs_each_missed_instant_in_order(
        self, scheduler: PipelineScheduler, drive: Any, clock: FakeClock
    ) -> None:
        scheduler.schedule_daily("daily", lambda: clock.advance(1), hour=9, catchup="all")  # each run: 1 s
        self.outage(scheduler, drive, clock)
        history = rows(scheduler, "daily")
        assert [(e["status"], at(e)) for e in history] == [
            ("succeeded", utc(2024, 1, d, 9)) for d in (1, 2, 3)
        ]
        starts = [at(e, "started_at") for e in history]
        assert starts == sorted(starts) and len(set(starts)) == 3  # one after the other, oldest first
        assert scheduler.get_schedule("daily").next_run == utc(2024, 1, 4, 9)

    def test_all_runs_at_most_max_catchup_and_summarizes_the_older_ones(
        self, scheduler: PipelineScheduler, drive: Any, clock: FakeClock
    ) -> None:
        calls: List[int] = []

        def job() -> None:
            calls.append(1)
            clock.advance(1)

        scheduler.schedule_hourly("hourly", job, minute=0, catchup="all", max_catchup=5)
        self.outage(scheduler, drive, clock)
        history = rows(scheduler, "hourly")
        assert len(calls) == 5
        assert [(e["status"], at(e)) for e in history] == [("missed", utc(2024, 1, 1, 1))] + [
            ("succeeded", utc(2024, 1, 3, h)) for h in (20, 21, 22, 23)
        ] + [("succeeded", utc(2024, 1, 4, 0))]
        assert history[0]["reason"] == (
            "67 missed instants from 2024-01-01T01:00:00+00:00 to 2024-01-03T19:00:00+00:00 "
            "(misfire, catchup=all)"
        )
        starts = [at(e, "started_at") for e in history[1:]]
        assert starts == sorted(starts) and len(set(starts)) == 5

    def test_all_with_twenty_missed_keeps_one_row_each(
        self, scheduler: PipelineScheduler, drive: Any, clock: FakeClock
    ) -> None:
        scheduler.schedule_hourly("hourly", noop, minute=0, catchup="all", max_catchup=1)
        drive.at(scheduler, utc(2024, 1, 1, 21, 0, 30))  # 21 instants: 01:00 .. 21:00
        history = rows(scheduler, "hourly")
        assert [e["status"] for e in history] == ["missed"] * 20 + ["succeeded"]
        assert [at(e) for e in history] == [utc(2024, 1, 1, h) for h in range(1, 22)]

    def test_a_restart_after_the_outage_catches_up_from_the_stored_next_fire(
        self, make_scheduler: Any, drive: Any, clock: FakeClock
    ) -> None:
        first = make_scheduler("sqlite")
        first.schedule_daily("daily", noop, hour=9, catchup="all")
        first.close()
        clock.advance(self.OUTAGE)
        second = make_scheduler("sqlite")
        second.schedule_daily("daily", noop, hour=9, catchup="all")
        drive.at(second, clock.now())
        assert [(e["status"], at(e)) for e in rows(second, "daily")] == [
            ("succeeded", utc(2024, 1, d, 9)) for d in (1, 2, 3)
        ]


# -- overlap --------------------------------------------------------------------------------------


class TestSeveralInstantsDueWithinTheGrace:
    """A stop, a restart or a stall shorter than the grace leaves several instants due at once: the
    most recent runs (it is on time), the policy decides for the older ones, and nothing is refused
    for overlapping the runs of its own pile-up."""

    def pile_up(self, scheduler: PipelineScheduler, drive: Any, clock: FakeClock, catchup: str) -> List[Any]:
        calls: List[datetime] = []
        scheduler.schedule_interval("sync", lambda: calls.append(clock.now()), seconds=2, catchup=catchup)
        drive.at(scheduler, clock.now() + timedelta(seconds=8.5))  # 00:00:32, :34, :36 and :38 due
        return calls

    def test_latest_runs_the_most_recent_and_records_the_others_superseded(
        self, scheduler: PipelineScheduler, drive: Any, clock: FakeClock
    ) -> None:
        calls = self.pile_up(scheduler, drive, clock, "latest")
        history = rows(scheduler, "sync")
        assert len(calls) == 1
        assert [(e["status"], at(e).second) for e in history] == [
            ("missed", 32),
            ("missed", 34),
            ("missed", 36),
            ("succeeded", 38),
        ]
        assert history[0]["reason"] == "superseded by a later instant due at the same time (catchup=latest)"
        assert history[-1]["reason"] is None  # on time: not a catch-up
        assert scheduler.health_check()["problems"] == []

    def test_skip_also_runs_the_most_recent_it_is_on_time(
        self, scheduler: PipelineScheduler, drive: Any, clock: FakeClock
    ) -> None:
        calls = self.pile_up(scheduler, drive, clock, "skip")
        assert len(calls) == 1
        assert [e["status"] for e in rows(scheduler, "sync")] == ["missed"] * 3 + ["succeeded"]

    def test_all_runs_each_in_order_none_skipped(
        self, scheduler: PipelineScheduler, drive: Any, clock: FakeClock
    ) -> None:
        calls = self.pile_up(scheduler, drive, clock, "all")
        history = rows(scheduler, "sync")
        assert len(calls) == 4
        assert [(e["status"], at(e).second) for e in history] == [
            ("succeeded", s) for s in (32, 34, 36, 38)
        ]

    def test_many_are_summarized_in_one_row_that_says_why(
        self, scheduler: PipelineScheduler, drive: Any, clock: FakeClock
    ) -> None:
        scheduler.schedule_interval("tick", noop, seconds=1)
        drive.at(scheduler, clock.now() + timedelta(seconds=30.5))  # a 30 s stall: 00:00:31 to 00:01:00
        summary, ran = rows(scheduler, "tick")
        assert summary["reason"] == (
            "29 missed instants from 2024-01-01T00:00:31+00:00 to 2024-01-01T00:00:59+00:00 "
            "(superseded by a later instant due at the same time, catchup=latest)"
        )
        assert (ran["status"], at(ran)) == ("succeeded", utc(2024, 1, 1, 0, 1))

    def test_the_next_fire_is_the_first_instant_after_now(
        self, scheduler: PipelineScheduler, drive: Any, clock: FakeClock
    ) -> None:
        self.pile_up(scheduler, drive, clock, "latest")
        assert scheduler.get_schedule("sync").next_run == utc(2024, 1, 1, 0, 0, 40)


class TestOverlap:
    def test_a_fire_while_the_only_instance_runs_is_skipped_with_reason_overlap(
        self, scheduler: PipelineScheduler, drive: Any, gate: threading.Event
    ) -> None:
        calls: List[int] = []

        def blocking() -> None:
            calls.append(1)
            gate.wait(10)

        scheduler.schedule_interval("sync", blocking, seconds=60, max_instances=1)
        drive.at(scheduler, utc(2024, 1, 1, 0, 1), wait=False)
        wait_until(lambda: calls == [1])
        drive.at(scheduler, utc(2024, 1, 1, 0, 2), wait=False)
        history = rows(scheduler, "sync")
        assert [(e["status"], at(e)) for e in history] == [
            ("running", utc(2024, 1, 1, 0, 1)),
            ("skipped", utc(2024, 1, 1, 0, 2)),
        ]
        assert history[1]["reason"] == "overlap"
        gate.set()
        assert scheduler.wait_for_runs(10)
        drive.at(scheduler, utc(2024, 1, 1, 0, 3))
        assert [e["status"] for e in rows(scheduler, "sync")] == ["succeeded", "skipped", "succeeded"]
        assert len(calls) == 2
        assert scheduler.health_check()["metrics"]["skipped_runs"] == 1

    def test_max_instances_two_lets_two_runs_overlap_and_skips_the_third(
        self, scheduler: PipelineScheduler, drive: Any, gate: threading.Event
    ) -> None:
        running: List[int] = []
        both = threading.Event()

        def blocking() -> None:
            running.append(1)
            if len(running) == 2:
                both.set()
            gate.wait(10)

        scheduler.schedule_interval("sync", blocking, seconds=60, max_instances=2)
        drive.at(scheduler, utc(2024, 1, 1, 0, 1), wait=False)
        drive.at(scheduler, utc(2024, 1, 1, 0, 2), wait=False)
        assert both.wait(10), "the second run did not start while the first was running"
        drive.at(scheduler, utc(2024, 1, 1, 0, 3), wait=False)
        assert [e["status"] for e in rows(scheduler, "sync")] == ["running", "running", "skipped"]
        gate.set()
        assert scheduler.wait_for_runs(10)
        assert [e["status"] for e in rows(scheduler, "sync")] == ["succeeded", "succeeded", "skipped"]

    def test_overlap_counts_runs_of_other_processes_sharing_the_store(
        self, make_scheduler: Any, drive: Any, gate: threading.Event
    ) -> None:
        started = threading.Event()

        def blocking() -> None:
            started.set()
            gate.wait(10)

        a = make_scheduler("sqlite", node_id="a")
        b = make_scheduler("sqlite", node_id="b")
        a.schedule_interval("sync", blocking, seconds=60)
        b.schedule_interval("sync", blocking, seconds=60)
        drive.at(a, utc(2024, 1, 1, 0, 1), wait=False)
        assert started.wait(10)
        drive.at(b, utc(2024, 1, 1, 0, 1), wait=False)  # b loses the claim of 00:01 to a
        drive.at(b, utc(2024, 1, 1, 0, 2), wait=False)
        drive.at(b, utc(2024, 1, 1, 0, 2), wait=False)
        history = rows(b, "sync")
        assert [(e["status"], e["node"], at(e)) for e in history] == [
            ("running", "a", utc(2024, 1, 1, 0, 1)),
            ("skipped", "b", utc(2024, 1, 1, 0, 2)),
        ]
        gate.set()
        assert a.wait_for_runs(10) and b.wait_for_runs(10)

    def test_the_file_lock_keeps_processes_with_separate_stores_from_overlapping(
        self, make_scheduler: Any, drive: Any, gate: threading.Event, tmp_path: Any
    ) -> None:
        started = threading.Event()

        def blocking() -> None:
            started.set()
            gate.wait(10)

        locks = str(tmp_path / "locks")
        a = make_scheduler("memory", distributed=True, lock_backend="file", lock_dir=locks)
        b = make_scheduler("memory", distributed=True, lock_backend="file", lock_dir=locks)
        name = "etl/daily:eu"  # not a valid file name as it is
        a.schedule_interval(name, blocking, seconds=60)
        b.schedule_interval(name, noop, seconds=60)
        drive.at(a, utc(2024, 1, 1, 0, 1), wait=False)
        assert started.wait(10)
        drive.at(b, utc(2024, 1, 1, 0, 1))
        (entry,) = rows(b, name)
        assert (entry["status"], entry["success"]) == ("skipped", False)
        assert entry["reason"].startswith("overlap") and "lock" in entry["reason"]
        gate.set()
        assert a.wait_for_runs(10)
        assert [e["status"] for e in rows(a, name)] == ["succeeded"]
        drive.at(b, utc(2024, 1, 1, 0, 2))  # the lock was released: b runs its next fire
        assert [e["status"] for e in rows(b, name)] == ["skipped", "succeeded"]

    def test_a_catch_up_batch_counts_as_one_schedule_s_instances(
        self, scheduler: PipelineScheduler, drive: Any, clock: FakeClock, gate: threading.Event
    ) -> None:
        scheduler.schedule_daily("daily", lambda: gate.wait(10), hour=9, catchup="all")
        drive.at(scheduler, clock.now() + timedelta(days=3), wait=False)
        # The first starts at once (queued for the moment it waits for its thread), the rest wait for it.
        statuses = lambda: sorted(e["status"] for e in rows(scheduler, "daily"))  # noqa: E731
        wait_until(lambda: statuses() == ["queued", "queued", "running"])
        gate.set()
        assert scheduler.wait_for_runs(10)
        assert [e["status"] for e in rows(scheduler, "daily")] == ["succeeded"] * 3


class TestConcurrencyLimit:
    def test_the_pool_runs_at_most_max_concurrent_runs_at_once(
        self, make_scheduler: Any, backend: str, drive: Any, gate: threading.Event
    ) -> None:
        scheduler = make_scheduler(backend, max_concurrent_runs=2)
        active: List[int] = []
        peak: List[int] = [0]
        lock = threading.Lock()

        def job() -> None:
            with lock:
                active.append(1)
                peak[0] = max(peak[0], len(active))
            gate.wait(0.2)
            with lock:
                active.pop()

        for i in range(5):
            scheduler.schedule_interval(f"job{i}", job, seconds=60)
        drive.at(scheduler, utc(2024, 1, 1, 0, 1))
        assert peak[0] == 2
        assert all(rows(scheduler, f"job{i}")[0]["status"] == "succeeded" for i in range(5))


# -- resilience -----------------------------------------------------------------------------------


class FlakyStore(MemoryStore):
    """A memory store whose first ``failures`` claims fail, as a locked or unreachable database would."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def claim(
        self,
        name: str,
        expected_next: datetime,
        new_next: Optional[datetime],
        runs: Sequence[RunRecord],
        max_instances: int,
    ) -> Optional[List[RunRecord]]:
        self._maybe_fail()
        return super().claim(name, expected_next, new_next, runs, max_instances)

    def claim_many(self, claims: Sequence[Claim], outcomes: Sequence[Outcome] = ()) -> List[Any]:
        self._maybe_fail()
        return super().claim_many(claims, outcomes)

    def _maybe_fail(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("database is locked")


class TestStoreHiccups:
    def test_a_failed_claim_is_retried_and_the_fire_keeps_its_instant(
        self, clock: FakeClock, drive: Any
    ) -> None:
        scheduler = PipelineScheduler(
            SchedulerConfig(persist_schedules=False), store=FlakyStore(2), clock=clock
        )
        try:
            scheduler.schedule_interval("sync", noop, seconds=60)
            drive.at(scheduler, utc(2024, 1, 1, 0, 1))  # does not raise
            assert scheduler.get_history("sync") == []
            assert "database is locked" in (scheduler.health_check()["last_error"] or "")
            drive.at(scheduler, utc(2024, 1, 1, 0, 1, 1))
            drive.at(scheduler, utc(2024, 1, 1, 0, 1, 2))
            (entry,) = scheduler.get_history("sync")
            assert (entry["status"], at(entry)) == ("succeeded", utc(2024, 1, 1, 0, 1))
        finally:
            scheduler.stop(timeout=5)

    def test_the_loop_survives_a_failing_store_and_health_says_degraded(self, clock: FakeClock) -> None:
        store = FlakyStore(1)
        scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False), store=store, clock=clock)
        try:
            scheduler.schedule_interval("sync", noop, seconds=60)
            scheduler.start()
            assert clock.wait_for_waiters(1, timeout=5)
            clock.set(utc(2024, 1, 1, 0, 1))
            wait_until(lambda: store.failures == 0)
            wait_until(lambda: clock.waiting >= 1)
            assert scheduler.health_check()["status"] == "degraded"
            clock.advance(1)
            wait_until(lambda: [e["status"] for e in scheduler.get_history("sync")] == ["succeeded"])
            assert scheduler.running
            assert scheduler.health_check()["problems"] == []
        finally:
            scheduler.stop(timeout=5)


    def test_health_stays_degraded_while_claims_fail_though_heartbeats_succeed(self) -> None:
        """The claims and the heartbeat report on their own: a heartbeat that gets through does
        not clear the failing claims' problem (a lock on the schedules table, say)."""
        store = FlakyStore(10**9)
        scheduler = PipelineScheduler(
            SchedulerConfig(persist_schedules=False, heartbeat_seconds=0.05), store=store
        )
        try:
            scheduler.schedule_interval("sync", noop, seconds=0.2)
            scheduler.start()
            wait_until(lambda: scheduler.status() == "degraded")
            samples = []
            for _ in range(20):  # 1 s: twenty heartbeats, five failed claims
                time.sleep(0.05)
                samples.append(scheduler.status())
            assert set(samples) == {"degraded"}
            assert any("database is locked" in p["message"] for p in scheduler.problems())
            store.failures = 0
            wait_until(lambda: scheduler.status() == "running")
        finally:
            scheduler.stop(timeout=5)


# -- the real loop on real time -------------------------------------------------------------------


class TestRealLoop:
    def test_a_fifth_of_a_second_interval_fires_on_its_grid_with_small_lag(
        self, make_scheduler: Any, backend: str
    ) -> None:
        from flowyml_lite.clock import SYSTEM_CLOCK

        scheduler = make_scheduler(backend, clock=SYSTEM_CLOCK)
        calls: List[float] = []
        scheduler.schedule_interval("fast", lambda: calls.append(time.monotonic()), seconds=0.2)

        def boom() -> None:
            raise RuntimeError("user bug")

        scheduler.schedule_interval("failing", boom, seconds=0.3)
        scheduler.start()
        time.sleep(1.5)
        assert scheduler.stop(timeout=5)
        history = rows(scheduler, "fast")
        assert 3 <= len(history) <= 9, [e["fire_time"] for e in history]  # ~7 expected
        assert Counter(e["status"] for e in history) == Counter(succeeded=len(history))
        assert len(calls) == len(history)
        fires = [at(e) for e in history]
        assert len(set(fires)) == len(fires)
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        assert all((f - epoch) % timedelta(milliseconds=200) == timedelta(0) for f in fires)
        lags = [e["start_lag_seconds"] for e in history]
        assert statistics.median(lags) < 0.1  # generous: the promise is milliseconds
        failing = rows(scheduler, "failing")
        assert len(failing) >= 2 and {e["status"] for e in failing} == {"failed"}
        assert scheduler.health_check()["metrics"]["start_lag_ms"]["samples"] >= len(history)

    def test_the_loop_picks_up_a_schedule_declared_while_it_sleeps(
        self, scheduler: PipelineScheduler, clock: FakeClock
    ) -> None:
        scheduler.start()
        assert clock.wait_for_waiters(1, timeout=5)
        scheduler.schedule_interval("late", noop, seconds=60)
        assert clock.wait_for_waiters(1, timeout=5)
        clock.set(utc(2024, 1, 1, 0, 1))
        wait_until(lambda: [e["status"] for e in scheduler.get_history("late")] == ["succeeded"])


# -- stopping and crashed nodes -------------------------------------------------------------------


class TestStopAndLostRuns:
    def test_catch_up_runs_still_queued_at_stop_are_recorded_skipped_not_left_queued(
        self, scheduler: PipelineScheduler, drive: Any, clock: FakeClock, gate: threading.Event
    ) -> None:
        started = threading.Event()

        def blocking() -> None:
            started.set()
            gate.wait(10)

        scheduler.schedule_daily("daily", blocking, hour=9, catchup="all")
        drive.at(scheduler, clock.now() + timedelta(days=3), wait=False)
        assert started.wait(10)
        assert scheduler.stop(timeout=0.1) is False  # the first catch-up run is still running
        gate.set()
        wait_until(lambda: all(e["status"] not in ("running", "queued") for e in rows(scheduler, "daily")))
        history = rows(scheduler, "daily")
        assert [e["status"] for e in history] == ["succeeded", "skipped", "skipped"]
        assert history[1]["reason"] == "scheduler stopped before this catch-up run"

    def test_a_run_of_a_node_whose_heartbeat_expired_is_lost_and_not_run_again(
        self, make_scheduler: Any, clock: FakeClock, gate: threading.Event
    ) -> None:
        started = threading.Event()

        def blocking() -> None:
            started.set()
            gate.wait(10)

        # Its own heartbeat thread (real time) must not beat again during the test.
        crashed = make_scheduler(
            "sqlite", node_id="crashed", heartbeat_seconds=3600, node_timeout_seconds=7200
        )
        crashed.schedule_daily("etl", blocking, hour=9)
        crashed.start()  # first heartbeat at 00:00:30
        assert clock.wait_for_waiters(1, timeout=5)
        clock.set(utc(2024, 1, 1, 9))
        assert started.wait(10)
        clock.advance(120)  # no heartbeat for two minutes (node_timeout_seconds is 30)

        survivor = make_scheduler("sqlite", node_id="survivor")
        survivor.schedule_daily("etl", noop, hour=9)
        survivor.start()  # reaps expired nodes before its first fire
        (entry,) = rows(survivor, "etl")
        assert (entry["status"], entry["node"], at(entry)) == ("lost", "crashed", utc(2024, 1, 1, 9))
        assert "crashed" in entry["reason"] and "heartbeat" in entry["reason"]
        gate.set()
        assert crashed.wait_for_runs(10)
        # The node was alive after all: its own outcome replaces the verdict, and nothing ran twice.
        (entry,) = rows(survivor, "etl")
        assert (entry["status"], entry["node"]) == ("succeeded", "crashed")
        assert survivor.get_schedule("etl").next_run == utc(2024, 1, 2, 9)
