"""The claims: fires planned before their instant are claimed as planned only while nothing they
were planned from has changed, and a schedule whose next instant cannot be worked out is reported,
never silenced, without holding up the others."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any, List, Optional, Set

import pytest

from flowyml_lite.clock import FakeClock
from flowyml_lite.core.triggers import build_trigger
from flowyml_lite.errors import StoreError
from flowyml_lite.runtime.claims import CLAIM_GROUP, PLAN_RETRY_SECONDS, Claims, group_sizes
from flowyml_lite.runtime.health import Troubles
from flowyml_lite.runtime.membership import Membership
from flowyml_lite.runtime.outcomes import OutcomeWriter
from flowyml_lite.runtime.table import ScheduleTable
from flowyml_lite.stores.base import (
    FAILED,
    LOST,
    MISSED,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    Claim,
    Outcome,
    RunRecord,
    ScheduleRecord,
)
from flowyml_lite.stores.memory import MemoryStore

DUE = datetime(2024, 1, 1, 9, 0, tzinfo=timezone.utc)
WRITERS: List[OutcomeWriter] = []


@pytest.fixture(autouse=True)
def _stop_writers() -> Any:
    """The outcome writers a test made are stopped after it (their thread would outlive it)."""
    yield
    while WRITERS:
        writer = WRITERS.pop()
        if not isinstance(writer, HeldWriter):  # which has no thread
            writer.stop(5)


class HeldWriter(OutcomeWriter):
    """An outcome writer without its thread: outcomes reach the store only with a claim."""

    def _ensure_thread(self) -> None:
        pass


def world(count: int = 3, interval: int = 60, held: bool = False, ahead: bool = False) -> SimpleNamespace:
    """``count`` interval schedules due at DUE on a memory store, and the claims that serve them;
    ``started`` collects (name, runs) as the runner would get them. ``held``: the outcome writer
    has no thread of its own. ``ahead``: fires planned before their instant are claimed then."""
    clock = FakeClock(DUE - timedelta(seconds=0.05))  # in the loop's lead before the instant
    store = MemoryStore()
    store.open()
    table = ScheduleTable()
    troubles = Troubles()
    started: List[Any] = []
    writer = (HeldWriter if held else OutcomeWriter)(store, troubles)
    WRITERS.append(writer)
    claims = Claims(
        table,
        store,
        writer,
        Membership("a"),
        troubles,
        clock,
        "a",
        lambda name, func, runs, opts: started.append((name, runs)),
        busy=lambda: dict.fromkeys(busy, 1),
        claim_ahead=ahead,
    )
    busy: Set[str] = set()
    names = [f"job-{i}" for i in range(count)]
    for name in names:
        record = ScheduleRecord(name, "interval", str(interval), "UTC", f"h-{name}", next_fire=DUE)
        stored = store.declare_schedule(record)
        with table.cond:
            table.serve(name, lambda: None, build_trigger("interval", str(interval), "UTC", name))
            table.set_record(stored)
    return SimpleNamespace(
        clock=clock,
        store=store,
        table=table,
        claims=claims,
        troubles=troubles,
        names=names,
        started=started,
        writer=writer,
        busy=busy,
    )


def stage(w: SimpleNamespace) -> List[Any]:
    """What the loop does in the lead: pop the instant's fires and have them planned (and claimed,
    if the world claims ahead); the fires left for the instant."""
    with w.table.cond:
        due = w.table.pop_due(DUE)
    claimed = w.claims.prepare(due, w.clock.now())
    return [fire for fire in due if fire not in claimed]


def planned_keys(w: SimpleNamespace) -> dict:
    return {name: ahead.claim.runs[0].run_key for (name, _), ahead in w.claims._ahead.items()}


class TestFiresPlannedBeforeTheirInstant:
    def test_at_the_instant_the_plans_are_claimed_as_made_and_started_now(self) -> None:
        w = world()
        due = stage(w)
        keys = planned_keys(w)
        assert sorted(keys) == w.names and w.started == []  # planned, nothing claimed yet
        w.clock.set(DUE + timedelta(milliseconds=3))
        w.claims.process(due, w.clock.now())
        assert {name: runs[0].run_key for name, runs in w.started} == keys
        assert all(runs[0].started_at == DUE + timedelta(milliseconds=3) for _, runs in w.started)
        assert not w.claims._ahead
        for name in w.names:  # claimed once, and the schedule moved on to its next instant
            assert [r.fire_time for r in w.store.history(name)] == [DUE]
            assert w.store.get_schedule(name).next_fire == DUE + timedelta(seconds=60)

    def test_a_schedule_paused_in_the_lead_does_not_run(self) -> None:
        w = world()
        due = stage(w)
        assert w.store.set_enabled("job-1", False, DUE)  # paused, its next instant kept
        with w.table.cond:
            w.table.set_record(w.store.get_schedule("job-1"))
        w.clock.set(DUE)
        w.claims.process(due, w.clock.now())
        assert sorted(name for name, _ in w.started) == ["job-0", "job-2"]
        assert w.store.history("job-1") == []

    def test_a_schedule_redefined_in_the_lead_is_planned_again_by_its_new_timetable(self) -> None:
        w = world()
        due = stage(w)
        old_key = planned_keys(w)["job-0"]
        record = w.table.records["job-0"]
        new = ScheduleRecord("job-0", "interval", "10", "UTC", "h-new", next_fire=DUE)
        with w.table.cond:
            w.table.serve("job-0", lambda: None, build_trigger("interval", "10", "UTC", "job-0"))
            w.table.set_record(w.store.declare_schedule(new))
        assert w.table.records["job-0"] is not record
        w.clock.set(DUE)
        w.claims.process(due, w.clock.now())
        runs = dict(w.started)["job-0"]
        assert runs[0].run_key != old_key
        assert w.store.get_schedule("job-0").next_fire == DUE + timedelta(seconds=10)

    def test_a_plan_made_too_long_ago_is_decided_again_by_the_misfire_policy(self) -> None:
        w = world()
        due = stage(w)
        w.clock.set(DUE + timedelta(seconds=61.5))  # past the 60 s grace and the next instant
        w.claims.process(due, w.clock.now())
        history = w.store.history("job-0")
        assert [r.status for r in history if r.status == MISSED]  # the stale plan was not used
        assert w.store.get_schedule("job-0").next_fire == DUE + timedelta(seconds=120)

    def test_when_the_next_instant_is_due_as_well_the_later_one_runs(self) -> None:
        w = world(count=1, interval=1)
        due = stage(w)
        w.clock.set(DUE + timedelta(seconds=1.2))  # a stall: DUE and DUE+1 s both due, within grace
        w.claims.process(due, w.clock.now())
        runs = dict(w.started)["job-0"]
        assert [r.fire_time for r in runs] == [DUE + timedelta(seconds=1)]
        assert w.store.get_schedule("job-0").next_fire == DUE + timedelta(seconds=2)


class TestFiresClaimedBeforeTheirInstant:
    """With real time the loop stages an instant's fires half a second ahead: they are planned and
    claimed then, so at the instant only their start is left."""

    def test_the_claim_is_made_ahead_and_the_runs_start_at_the_instant_not_before(self) -> None:
        w = world(ahead=True)
        assert stage(w) == []  # every fire claimed: nothing left for the instant
        assert w.started == []  # claimed, not started
        for name in w.names:
            assert [(r.fire_time, r.status) for r in w.store.history(name)] == [(DUE, RUNNING)]
            assert w.store.get_schedule(name).next_fire == DUE + timedelta(seconds=60)
        w.claims.process([], DUE - timedelta(milliseconds=1))
        assert w.started == []  # not a moment early
        w.clock.set(DUE + timedelta(milliseconds=2))
        w.claims.process([], w.clock.now())
        assert sorted(name for name, _ in w.started) == w.names
        assert all(runs[0].fire_time == DUE and runs[0].started_at == DUE for _, runs in w.started)
        w.claims.process([], w.clock.now())
        assert len(w.started) == 3  # started once

    def test_a_schedule_with_a_run_in_flight_here_is_claimed_at_its_instant(self) -> None:
        """Its run may end before the instant: claimed now, the fire would be skipped for overlap."""
        w = world(ahead=True)
        w.busy.add("job-1")
        left = stage(w)
        assert left == [("job-1", DUE)]
        assert w.store.history("job-1") == []
        w.clock.set(DUE)
        w.claims.process(left, DUE)
        assert sorted(name for name, _ in w.started) == w.names

    def test_fires_of_several_instants_claimed_together_each_start_at_their_own(self) -> None:
        """A steady flow of fires is claimed a group at a time: one claim for many instants."""
        w = world(count=1, interval=1, ahead=True)
        later = [(f"late-{i}", DUE + timedelta(milliseconds=100 * i)) for i in range(1, 4)]
        for name, at in later:
            record = ScheduleRecord(name, "interval", "60", "UTC", f"h-{name}", next_fire=at)
            with w.table.cond:
                w.table.serve(name, lambda: None, build_trigger("interval", "60", "UTC", name))
                w.table.set_record(w.store.declare_schedule(record))
        with w.table.cond:
            due = w.table.pop_due(DUE + timedelta(seconds=0.5))
        assert len(due) == 4
        assert w.claims.prepare(due, w.clock.now()) == set(due)  # one call, every instant
        for name, at in later:
            w.clock.set(at - timedelta(milliseconds=1))
            w.claims.process([], w.clock.now())
            assert name not in [n for n, _ in w.started]  # not a moment early
            w.clock.set(at)
            w.claims.process([], w.clock.now())
            assert [runs[0].fire_time for n, runs in w.started if n == name] == [at]
        assert len(w.started) == 4  # job-0 at DUE with the first, each once

    def test_the_next_instant_of_a_schedule_held_for_an_earlier_one_is_claimed_at_its_instant(
        self,
    ) -> None:
        """Claimed beside the held run, it would count that run against ``max_instances`` (the
        held run ends before the next instant comes) and be skipped for overlap."""
        w = world(count=1, interval=1, ahead=True)
        assert stage(w) == []  # DUE held
        with w.table.cond:
            nxt = w.table.pop_due(DUE + timedelta(seconds=1))
        assert nxt == [("job-0", DUE + timedelta(seconds=1))]
        assert w.claims.prepare(nxt, w.clock.now()) == set()  # left for its instant
        w.clock.set(DUE)
        w.claims.process([], DUE)
        (name, runs), = w.started
        w.writer.put(Outcome(runs[0].run_key, SUCCEEDED, DUE, node_id="a"), name)
        w.clock.set(DUE + timedelta(seconds=1))
        w.claims.process(nxt, w.clock.now())
        assert [(r.fire_time, r.status) for r in w.store.history("job-0")][:1] == [
            (DUE + timedelta(seconds=1), RUNNING)
        ]
        assert [runs[0].fire_time for _, runs in w.started] == [DUE, DUE + timedelta(seconds=1)]

    @pytest.mark.parametrize("change", ["paused", "removed", "redefined"])
    def test_a_schedule_changed_here_after_its_claim_does_not_start(self, change: str) -> None:
        w = world(ahead=True, held=True)
        stage(w)
        with w.table.cond:
            if change == "paused":
                assert w.store.set_enabled("job-1", False, None)
                w.table.set_record(w.store.get_schedule("job-1"))
            elif change == "removed":
                w.table.forget("job-1")
            else:  # a new timetable that no longer fires at DUE
                later = DUE + timedelta(seconds=5)
                new = ScheduleRecord("job-1", "interval", "10", "UTC", "h-new", next_fire=later)
                w.table.serve("job-1", lambda: None, build_trigger("interval", "10", "UTC", "job-1"))
                w.table.set_record(w.store.declare_schedule(new))
        w.clock.set(DUE)
        w.claims.process([], DUE)
        assert sorted(name for name, _ in w.started) == ["job-0", "job-2"]
        w.store.finish_runs(w.writer.take())
        (row,) = w.store.history("job-1")
        assert row.status == SKIPPED and change in (row.reason or "") and "before its instant" in row.reason

    def test_a_store_that_fails_ahead_leaves_the_claims_to_the_instant_and_reports_nothing(self) -> None:
        w = world(ahead=True)
        real = w.store.claim_many
        w.store.claim_many = lambda claims, outcomes=(): (_ for _ in ()).throw(StoreError("disk I/O error"))
        left = stage(w)
        assert sorted(left) == [(name, DUE) for name in w.names]
        assert w.troubles.problems() == []  # the claim at the instant says so if it fails too
        w.store.claim_many = real
        w.clock.set(DUE)
        w.claims.process(left, DUE)
        assert sorted(name for name, _ in w.started) == w.names

    def test_a_claim_refused_ahead_is_made_at_the_instant(self) -> None:
        w = world(ahead=True)
        real = w.store.claim_many
        w.store.claim_many = lambda claims, outcomes=(): [None for _ in claims]  # another node's claim
        left = stage(w)
        assert len(left) == 3 and w.started == []
        w.store.claim_many = real
        w.clock.set(DUE)
        w.claims.process(left, DUE)
        assert sorted(name for name, _ in w.started) == w.names

    @pytest.mark.parametrize(
        ("late", "interval", "catchup", "runs"),
        [
            (30, 3600, "skip", True),  # late, within the 60 s grace: it runs
            (90, 3600, "skip", False),  # past the grace, and the policy skips misfires
            (90, 3600, "latest", True),  # past the grace: the latest instant runs as a catch-up
            (61, 60, "latest", False),  # the next instant is due too: it runs instead
            (61, 60, "all", True),  # every instant runs
        ],
    )
    def test_a_process_held_up_past_the_instant_decides_as_the_misfire_policy_would(
        self, late: int, interval: int, catchup: str, runs: bool
    ) -> None:
        """A frozen process (SIGSTOP, a stalled VM) resumed after the instant of a run it claimed ahead."""
        w = world(count=1, ahead=True, held=True)
        options = {"catchup": catchup, "misfire_grace_seconds": 60}
        every = str(interval)
        record = ScheduleRecord("job-0", "interval", every, "UTC", "h2", next_fire=DUE, options=options)
        with w.table.cond:
            w.table.serve("job-0", lambda: None, build_trigger("interval", str(interval), "UTC", "job-0"))
            w.table.set_record(w.store.declare_schedule(record))
        stage(w)
        w.clock.set(DUE + timedelta(seconds=late))
        w.claims.process([], w.clock.now())
        assert bool(w.started) is runs
        w.store.finish_runs(w.writer.take())
        row = next(r for r in w.store.history("job-0") if r.fire_time == DUE)
        assert (row.status == MISSED) is not runs

    def test_at_stop_a_run_claimed_ahead_starts_at_its_instant_if_it_comes_soon(self) -> None:
        w = world(count=1, ahead=True)
        stage(w)
        began = time.monotonic()
        w.claims.claimed_ahead.at_stop(lambda: DUE - timedelta(seconds=0.05 - (time.monotonic() - began)))
        assert [name for name, _ in w.started] == ["job-0"]
        assert time.monotonic() - began >= 0.05  # at its instant, not before

    def test_at_stop_one_claimed_for_a_later_instant_is_recorded_skipped(self) -> None:
        w = world(count=1, ahead=True, held=True)
        stage(w)
        w.claims.claimed_ahead.at_stop(lambda: DUE - timedelta(seconds=5))
        assert w.started == []
        w.store.finish_runs(w.writer.take())
        (row,) = w.store.history("job-0")
        assert row.status == SKIPPED and "stopped before" in (row.reason or "")

    def test_a_claim_answered_after_stop_is_recorded_not_left_running(self) -> None:
        """stop() gave up waiting for a loop stuck in a claim ahead; the claim then commits."""
        w = world(count=1, ahead=True, held=True)
        w.claims.claimed_ahead.at_stop(lambda: DUE)
        stage(w)
        assert w.started == []
        w.store.finish_runs(w.writer.take())
        (row,) = w.store.history("job-0")
        assert row.status == SKIPPED and "stopped before" in (row.reason or "")

    def due_now(self, w: SimpleNamespace) -> List[Any]:
        w.clock.set(DUE)
        with w.table.cond:
            return w.table.pop_due(DUE)

    def remove_and_declare_here(self, w: SimpleNamespace, name: str) -> None:
        """What ``unschedule`` then ``schedule_interval`` do in this process (the next fire: DUE)."""
        assert w.store.delete_schedule(name)
        with w.table.cond:
            w.table.forget(name)
        w.claims.claimed_ahead.drop(name)
        record = ScheduleRecord(name, "interval", "60", "UTC", f"h-{name}", next_fire=DUE)
        with w.table.cond:
            w.table.serve(name, lambda: None, build_trigger("interval", "60", "UTC", name))
            w.table.set_record(w.store.declare_schedule(record))

    def test_paused_and_resumed_before_the_instant_it_runs_once(self) -> None:
        w = world(ahead=True)
        stage(w)
        for enabled, next_fire in ((False, None), (True, DUE)):  # resume: next after now is DUE again
            assert w.store.set_enabled("job-1", enabled, next_fire)
            with w.table.cond:
                w.table.set_record(w.store.get_schedule("job-1"))
        w.claims.process(self.due_now(w), DUE)
        assert sorted(name for name, _ in w.started) == w.names  # job-1 once
        assert [r.fire_time for r in w.store.history("job-1")] == [DUE]
        assert w.store.get_schedule("job-1").next_fire == DUE + timedelta(seconds=60)  # moved past

    def test_removed_and_declared_again_before_the_instant_it_runs_once(self) -> None:
        w = world(ahead=True)
        stage(w)
        self.remove_and_declare_here(w, "job-1")  # its held row goes with the removal
        w.claims.process(self.due_now(w), DUE)
        assert sorted(name for name, _ in w.started) == w.names  # job-1 once, by its new claim
        assert [r.status for r in w.store.history("job-1")] == [RUNNING]

    def test_removed_and_declared_again_elsewhere_it_runs_once(self) -> None:
        """Another process removed and declared it again: this one only syncs the new row."""
        w = world(ahead=True)
        stage(w)
        assert w.store.delete_schedule("job-1")
        record = ScheduleRecord("job-1", "interval", "60", "UTC", "h-job-1", next_fire=DUE)
        stored = w.store.declare_schedule(record)
        with w.table.cond:
            w.table.set_record(stored)
        w.claims.process(self.due_now(w), DUE)
        assert sorted(name for name, _ in w.started) == w.names  # the held row is gone: not started
        assert len(w.store.history("job-1")) == 1

    def test_removed_and_declared_again_elsewhere_seen_only_after_the_instant_it_runs_once(self) -> None:
        """The held run starts (nothing here says the schedule changed); the new row, synced just
        after, has the same instant due: it is recorded without running it again."""
        w = world(ahead=True)
        stage(w)
        assert w.store.delete_schedule("job-1")
        record = ScheduleRecord("job-1", "interval", "60", "UTC", "h-job-1", next_fire=DUE)
        stored = w.store.declare_schedule(record)
        w.claims.process(self.due_now(w), DUE)
        assert sorted(name for name, _ in w.started) == w.names  # started from its claim ahead
        with w.table.cond:
            w.table.set_record(stored)  # the sync, a moment later
        w.clock.set(DUE + timedelta(seconds=0.3))
        with w.table.cond:
            due = w.table.pop_due(w.clock.now())
        w.claims.process(due, w.clock.now())
        assert sorted(name for name, _ in w.started) == w.names  # not a second time
        (row,) = w.store.history("job-1")
        assert row.status == SKIPPED and "already run here" in (row.reason or "")
        assert w.store.get_schedule("job-1").next_fire == DUE + timedelta(seconds=60)

    def test_re_created_elsewhere_while_its_instant_is_being_claimed_it_runs_once(self) -> None:
        """A sync between two chunks of a claim ahead queues the re-created schedule's instant again:
        it is not claimed ahead a second time, and the run held under the removed row, whose
        schedule changed, finds its row gone and does not start."""
        w = world(ahead=True)
        stage(w)
        assert w.store.delete_schedule("job-1")
        record = ScheduleRecord("job-1", "interval", "60", "UTC", "h-job-1", next_fire=DUE)
        with w.table.cond:
            w.table.set_record(w.store.declare_schedule(record))  # the sync
            again = w.table.pop_due(DUE)
        assert ("job-1", DUE) in again
        assert w.claims.prepare(again, w.clock.now()) == set()  # held already: not twice
        w.claims.process(self.due_now(w) + again, DUE)
        assert sorted(name for name, _ in w.started) == w.names  # job-1 once, by its new row
        assert [r.status for r in w.store.history("job-1")] == [RUNNING]

    def test_removed_here_after_its_instant_ran_and_declared_again_it_runs_again(self) -> None:
        """Removed in this process, the schedule forgets that its instant ran (its history went
        with it): declared again within the grace, the instant runs, as it would unclaimed."""
        w = world(ahead=True)
        stage(w)
        w.claims.process(self.due_now(w), DUE)
        self.remove_and_declare_here(w, "job-1")
        with w.table.cond:
            due = w.table.pop_due(DUE + timedelta(seconds=1))
        w.claims.process(due, DUE + timedelta(seconds=1))
        assert [name for name, _ in w.started].count("job-1") == 2
        assert [r.status for r in w.store.history("job-1")] == [RUNNING]

    def test_runs_started_late_are_checked_with_one_read_of_the_store_not_a_write_each(self) -> None:
        w = world(count=200, ahead=True)
        stage(w)
        reads, writes = [], []
        recent, start_run = w.store.recent_runs, w.store.start_run
        w.store.recent_runs = lambda names, limit=10: reads.append(len(names)) or recent(names, limit)
        w.store.start_run = lambda key, at: writes.append(key) or start_run(key, at)
        w.clock.set(DUE + timedelta(seconds=5))  # a frozen process, resumed
        w.claims.process([], w.clock.now())
        assert len(w.started) == 200 and writes == []
        assert sum(reads) == 200 and len(reads) <= 5  # one read per group of the hand-over

    def test_each_group_of_a_long_release_is_judged_on_the_time_it_is_handed_over(self) -> None:
        """The first group's hand-over took a minute (a stalled process): the later groups are
        past the misfire grace by then, and a schedule that skips misfires records them missed."""
        w = world(count=50, ahead=True, held=True)
        options = {"catchup": "skip", "misfire_grace_seconds": 60}
        with w.table.cond:
            for name in w.names:
                record = w.store.get_schedule(name)
                record.options = options
                w.table.set_record(w.store.declare_schedule(record))
        stage(w)
        submit = w.claims.claimed_ahead._submit

        def slow(name: str, func: Any, runs: Any, opts: Any) -> None:
            submit(name, func, runs, opts)
            w.clock.set(DUE + timedelta(seconds=90))

        w.claims.claimed_ahead._submit = slow
        w.claims.process(self.due_now(w), DUE)
        assert len(w.started) == 10  # the first group, on time
        w.store.finish_runs(w.writer.take())
        missed = [n for n in w.names if w.store.history(n)[0].status == MISSED]
        assert len(missed) == 40

    def test_a_run_that_cannot_be_handed_over_is_recorded_failed_not_left_running(self) -> None:
        w = world(count=2, ahead=True, held=True)
        stage(w)

        def refuse(name: str, func: Any, runs: Any, opts: Any) -> None:
            if name == "job-0":
                raise RuntimeError("no thread to be had")
            w.started.append((name, runs))

        w.claims.claimed_ahead._submit = refuse
        w.claims.process(self.due_now(w), DUE)
        assert [name for name, _ in w.started] == ["job-1"]
        w.store.finish_runs(w.writer.take())
        (row,) = w.store.history("job-0")
        assert row.status == FAILED and "no thread to be had" in (row.reason or row.error or "")

    def test_redefined_with_the_same_next_instant_it_runs_as_now_defined(self) -> None:
        w = world(ahead=True)
        stage(w)
        options = {"timeout_seconds": 5.0}
        record = ScheduleRecord("job-1", "interval", "60", "UTC", "h-new", next_fire=DUE, options=options)
        with w.table.cond:
            w.table.set_record(w.store.declare_schedule(record))
        w.claims.process(self.due_now(w), DUE)
        runs = [opts for name, opts in w.started if name == "job-1"]
        assert len(runs) == 1
        assert [r.fire_time for r in w.store.history("job-1")] == [DUE]

    def test_a_run_judged_lost_while_the_process_was_frozen_does_not_start(self) -> None:
        w = world(count=1, ahead=True)
        stage(w)
        (row,) = w.store.history("job-0")
        lost = Outcome(row.run_key, LOST, DUE, reason="node a judged lost", node_id="b")
        assert w.store.finish_runs([lost]) == [True]  # a peer's verdict while this one was stopped
        w.clock.set(DUE + timedelta(seconds=5))
        w.claims.process([], w.clock.now())
        assert w.started == []


class _Broken:
    """A trigger whose next instant cannot be worked out (until it is mended)."""

    def __init__(self, good: Any) -> None:
        self.good = good
        self.broken = True

    def next_after(self, after: datetime) -> Optional[datetime]:
        if self.broken:
            raise OverflowError("date value out of range")
        return self.good.next_after(after)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.good, name)


class TestATriggerThatRaises:
    def test_it_is_reported_and_retried_while_the_others_of_its_group_run(self, caplog) -> None:  # type: ignore[no-untyped-def]
        w = world()
        broken = _Broken(w.table.triggers["job-1"])
        w.table.triggers["job-1"] = broken
        w.clock.set(DUE)
        with w.table.cond:
            due = w.table.pop_due(DUE)
        with caplog.at_level(logging.ERROR, logger="flowyml_lite.scheduler.claims"):
            w.claims.process(due, w.clock.now())
        assert sorted(name for name, _ in w.started) == ["job-0", "job-2"]
        problems = w.troubles.problems()
        assert len(problems) == 1 and "job-1" in str(problems[0]) and "OverflowError" in str(problems[0])
        assert "cannot be worked out" in caplog.text
        with w.table.cond:  # looked at again later, not forgotten
            assert ("job-1", DUE) not in w.table.pop_due(DUE + timedelta(seconds=PLAN_RETRY_SECONDS - 1))
        broken.broken = False
        later = DUE + timedelta(seconds=PLAN_RETRY_SECONDS)
        w.clock.set(later)
        with w.table.cond:
            again = w.table.pop_due(later)
        assert ("job-1", DUE) in again
        w.claims.process(again, later)
        assert "job-1" in [name for name, _ in w.started]
        assert w.troubles.problems() == []

    def test_in_the_lead_it_is_left_to_the_instant(self) -> None:
        w = world()
        w.table.triggers["job-1"] = _Broken(w.table.triggers["job-1"])
        stage(w)
        assert sorted(planned_keys(w)) == ["job-0", "job-2"]
        assert w.troubles.problems() == []  # said once, at the instant, not ahead of it


class TestAGroupAfterASlowClaim:
    def test_is_planned_on_the_time_it_is_claimed_at_not_the_wakes(self) -> None:
        """The first group's claim waited 10 s on the store (a cut link): the next group must run the
        instant due now, not one 10 s old (which would then refuse the on-time fire for overlap)."""
        w = world(count=20, interval=1)
        w.clock.set(DUE)
        real = w.store.claim_many
        calls = []

        def slow_first(claims: Any, outcomes: Any = ()) -> Any:
            calls.append(len(claims))
            if len(calls) == 1:
                w.clock.set(DUE + timedelta(seconds=10))  # the store answered 10 s later
            return real(claims, outcomes)

        w.store.claim_many = slow_first
        with w.table.cond:
            due = w.table.pop_due(DUE)
        w.claims.process(due, DUE)
        assert calls[0] < 20  # claimed in groups
        later = [name for name, runs in w.started if runs[0].fire_time == DUE + timedelta(seconds=10)]
        stale = [name for name, runs in w.started if runs[0].fire_time == DUE]
        assert len(later) == 20 - calls[0]
        assert stale == []  # the first group's claim came back late: superseded (the test below)

    def test_a_claim_answered_after_the_next_instant_was_due_is_superseded_not_run(self) -> None:
        """The claim itself waited 10 s: its instant is 10 s old and later ones are due. Running it
        would refuse the on-time fire for overlap; it is recorded missed, and the next pass runs
        the instant due now."""
        w = world(count=3, interval=1)
        w.clock.set(DUE)
        real = w.store.claim_many

        def slow(claims: Any, outcomes: Any = ()) -> Any:
            w.clock.set(DUE + timedelta(seconds=10))
            return real(claims, outcomes)

        w.store.claim_many = slow
        with w.table.cond:
            due = w.table.pop_due(DUE)
        w.claims.process(due, DUE)
        assert w.started == []
        w.store.claim_many = real
        w.claims._writer.flush(5)
        row = w.store.history("job-0")[0]
        assert (row.fire_time, row.status) == (DUE, MISSED) and "store took 10.0 s" in (row.reason or "")
        with w.table.cond:
            again = w.table.pop_due(w.clock.now())
        w.claims.process(again, w.clock.now())
        runs = dict(w.started)["job-0"]
        assert [r.fire_time for r in runs] == [DUE + timedelta(seconds=10)]

    def test_a_store_that_keeps_answering_late_runs_its_fires_late_and_health_says_so(self) -> None:
        """Slow, not stuck: only the first late answer supersedes; the next ones run (late), and
        health names the slow store until a claim is answered promptly again."""
        w = world(count=1, interval=1)
        w.clock.set(DUE)
        real = w.store.claim_many
        delay = [1.5]

        def slow(claims: Any, outcomes: Any = ()) -> Any:
            w.clock.set(w.clock.now() + timedelta(seconds=delay[0]))
            return real(claims, outcomes)

        w.store.claim_many = slow

        def a_pass() -> None:
            now = w.clock.now()
            with w.table.cond:
                due = w.table.pop_due(now)
            w.claims.process(due, now)
            for _, runs in w.started:  # the jobs are quick: over before the next pass
                w.store.finish_run(runs[0].run_key, "succeeded", w.clock.now(), 0.001)

        for _ in range(4):
            a_pass()
        assert len(w.started) == 3  # one superseded, then every pass runs
        assert any(p["source"] == "claims:slow" for p in w.troubles.problems())
        delay[0] = 0.0
        for _ in range(5):  # prompt again: health says so once the answers stay prompt
            w.clock.set(w.clock.now() + timedelta(seconds=1))
            a_pass()
        assert len(w.started) == 8 and w.troubles.problems() == []

    def test_the_first_claim_after_the_store_came_back_gives_way_to_an_instant_due_meanwhile(self) -> None:
        """The store was down 9.6 s; the first claim after it is back is answered in 0.5 s (quick),
        but the schedule's next instant came due meanwhile: running the old instant 10 s late would
        make the one due now skipped for overlap. It is recorded missed and the new one runs."""
        w = world(count=1, interval=10)
        w.clock.set(DUE)
        real = w.store.claim_many
        calls = [0]

        def down_then_back(claims: Any, outcomes: Any = ()) -> Any:
            calls[0] += 1
            if calls[0] == 1:
                raise StoreError("connection refused")
            w.clock.set(w.clock.now() + timedelta(seconds=0.5))
            return real(claims, outcomes)

        w.store.claim_many = down_then_back
        with w.table.cond:
            due = w.table.pop_due(DUE)
        w.claims.process(due, DUE)  # the store is down: queued again
        w.clock.set(DUE + timedelta(seconds=9.6))  # back; the retry comes
        with w.table.cond:
            again = w.table.pop_due(w.clock.now())
        w.claims.process(again, w.clock.now())
        assert w.started == []
        w.claims._writer.flush(5)
        (missed,) = w.store.history("job-0")
        assert missed.fire_time == DUE and missed.status == MISSED
        assert "waited for the store to come back" in (missed.reason or "")
        with w.table.cond:
            latest = w.table.pop_due(w.clock.now())
        w.claims.process(latest, w.clock.now())
        assert [r.fire_time for r in dict(w.started)["job-0"]] == [DUE + timedelta(seconds=10)]

    def test_a_store_slow_by_turns_supersedes_nothing_and_health_does_not_flap(self) -> None:
        """Answers of 0.8 s and 1.6 s by turns (a slow link): slow, never stuck."""
        w = world(count=1, interval=1)
        w.clock.set(DUE)
        real = w.store.claim_many
        turn = [0]

        def slow(claims: Any, outcomes: Any = ()) -> Any:
            turn[0] += 1
            w.clock.set(w.clock.now() + timedelta(seconds=0.8 if turn[0] % 2 else 1.6))
            return real(claims, outcomes)

        w.store.claim_many = slow
        slow_seen = []
        for _ in range(8):
            fire = w.table.records["job-0"].next_fire
            if fire > w.clock.now():  # the loop sleeps until the next instant
                w.clock.set(fire)
            now = w.clock.now()
            with w.table.cond:
                due = w.table.pop_due(now)
            w.claims.process(due, now)
            for _, runs in w.started:
                w.store.finish_run(runs[0].run_key, "succeeded", w.clock.now(), 0.001)
            slow_seen.append(any(p["source"] == "claims:slow" for p in w.troubles.problems()))
        assert len(w.started) == 8  # every pass ran its fire, late
        superseded = [r for r in w.store.history("job-0", 50) if "store took" in (r.reason or "")]
        assert superseded == []
        assert slow_seen[1:] == [True] * 7  # said from the first slow answer on, without flapping


class TestPlansAheadAreCheckedAtTheInstant:
    def test_a_plan_past_its_grace_is_not_used_even_before_the_next_instant(self) -> None:
        w = world(count=1, interval=3600)
        due = stage(w)
        w.clock.set(DUE + timedelta(seconds=61))  # past the 60 s grace; the next instant is an hour off
        w.claims.process(due, w.clock.now())
        (runs,) = [runs for _, runs in w.started]
        assert runs[0].reason == "catch-up"  # planned again, as a misfire: not the plan made on time

    def test_a_fire_planned_ahead_and_queued_again_meanwhile_is_claimed_once(self) -> None:
        w = world(count=2)
        due = stage(w)
        with w.table.cond:  # a change of the split queues every owned fire again
            w.table.reown()
            again = w.table.pop_due(DUE)
        assert sorted(again) == sorted(due)
        w.clock.set(DUE)
        w.claims.process(due + again, w.clock.now())
        assert sorted(name for name, _ in w.started) == ["job-0", "job-1"]
        assert [r.fire_time for r in w.store.history("job-0")] == [DUE]


class TestAScheduleWhoseTriggerRaised:
    def test_is_forgotten_by_health_when_paused_or_when_a_plan_made_ahead_works(self) -> None:
        w = world(count=2)
        for name in ("job-0", "job-1"):
            w.table.triggers[name] = _Broken(w.table.triggers[name])
        w.clock.set(DUE)
        with w.table.cond:
            due = w.table.pop_due(DUE)
        w.claims.process(due, DUE)
        assert {p["source"] for p in w.troubles.problems()} == {"plan:job-0", "plan:job-1"}
        w.claims.unblock("job-0")  # paused, removed or handed to another node
        assert {p["source"] for p in w.troubles.problems()} == {"plan:job-1"}
        w.table.triggers["job-1"].broken = False
        later = DUE + timedelta(seconds=PLAN_RETRY_SECONDS)
        w.clock.set(later - timedelta(seconds=0.05))
        with w.table.cond:
            ahead = [fire for fire in w.table.pop_due(later) if fire[0] == "job-1"]
        w.claims.prepare(ahead, w.clock.now())
        w.clock.set(later)
        w.claims.process(ahead, later)
        assert w.troubles.problems() == []


class TestMissedInstantsAreLoggedByTheClaimsWinner:
    def test_a_won_claim_logs_its_missed_rows_once(self, caplog: pytest.LogCaptureFixture) -> None:
        w = world(count=1, interval=1)
        late = DUE + timedelta(seconds=120)  # a frozen process: 120 instants, far past the grace
        w.clock.set(late)
        with w.table.cond:
            due = w.table.pop_due(late)
        with caplog.at_level(logging.INFO, logger="flowyml_lite.scheduler.claims"):
            w.claims.process(due, late)
        lines = [r for r in caplog.records if "missed row(s)" in r.getMessage()]
        assert len(lines) == 1 and lines[0].levelno == logging.WARNING
        assert "'job-0'" in lines[0].getMessage() and "misfire" in lines[0].getMessage()

    def test_a_refused_claim_logs_no_missed_instants_it_did_not_own(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A node resuming from a freeze plans instants another node already claimed: its claim
        is refused and it must not report them missed (the store says what happened)."""
        w = world(count=1, interval=1)
        late = DUE + timedelta(seconds=120)
        w.clock.set(late)
        record = w.store.get_schedule("job-0")
        w.store.claim("job-0", DUE, late + timedelta(seconds=1), [], 1)  # another node moved it on
        assert w.store.get_schedule("job-0").next_fire != record.next_fire
        with w.table.cond:
            due = w.table.pop_due(late)
        with caplog.at_level(logging.INFO, logger="flowyml_lite.scheduler.claims"):
            w.claims.process(due, late)
        assert not [r for r in caplog.records if "missed" in r.getMessage()]


def a_run_still_recorded_active(w: SimpleNamespace, name: str) -> RunRecord:
    """A run of ``name`` an instant before DUE that has ended, its outcome waiting in the writer."""
    if w.store.get_schedule(name) is None:
        w.store.declare_schedule(ScheduleRecord(name, "interval", "60", "UTC", f"h-{name}", next_fire=DUE))
    earlier = DUE - timedelta(seconds=60)
    run = RunRecord(f"{name}-earlier", name, earlier, RUNNING, "a", started_at=earlier)
    assert w.store.claim(name, DUE, DUE, [run], 1) is not None
    w.writer.put(Outcome(run.run_key, SUCCEEDED, DUE - timedelta(seconds=1), 59.0, node_id="a"), name)
    return run


def claim_the_instant(w: SimpleNamespace) -> None:
    """What the loop does at DUE: pop its fires and have them claimed."""
    w.clock.set(DUE)
    with w.table.cond:
        due = w.table.pop_due(DUE)
    w.claims.process(due, DUE)


def claiming_with_outcomes(w: SimpleNamespace) -> List[int]:
    """Spy on the store: the number of outcomes each claim transaction carries."""
    carried: List[int] = []
    real = w.store.claim_many

    def spy(claims: Any, outcomes: Any = ()) -> Any:
        carried.append(len(outcomes))
        return real(claims, outcomes)

    w.store.claim_many = spy
    return carried


class TestOutcomesAndClaims:
    def test_a_single_claim_transaction_carries_every_outcome_waiting(self) -> None:
        w = world(count=3, held=True)
        a_run_still_recorded_active(w, "job-0")
        a_run_still_recorded_active(w, "other")  # of a schedule this pass does not claim
        carried = claiming_with_outcomes(w)
        claim_the_instant(w)
        assert carried == [2]
        assert w.writer.pending == 0

    def test_a_burst_leaves_the_outcomes_of_other_schedules_to_the_writer(self) -> None:
        """Claims of a burst come one group after another: none waits for outcomes it does not need
        (of runs it started itself, or of other schedules); they are written after the burst."""
        w = world(count=60, held=True)
        a_run_still_recorded_active(w, "other")
        carried = claiming_with_outcomes(w)
        claim_the_instant(w)
        assert len(carried) > 1 and carried == [0] * len(carried)
        assert len(w.started) == 60
        assert w.writer.pending == 1

    def test_outcomes_a_claim_failed_with_are_written_by_the_writer_when_it_goes_through_without_them(
        self,
    ) -> None:
        """The store refused the claim carrying an outcome (at once) and took it without: the
        outcome is the writer's to write on its own; it must land, not wait for ever."""
        w = world(count=1)
        a_run_still_recorded_active(w, "other")
        real = w.store.claim_many
        refused: List[int] = []

        def refuses_outcomes(claims: Any, outcomes: Any = ()) -> Any:
            if outcomes and not refused:
                refused.append(len(outcomes))
                raise StoreError("refused by a trigger")
            return real(claims, outcomes)

        w.store.claim_many = refuses_outcomes
        claim_the_instant(w)
        assert refused == [1] and "job-0" in dict(w.started)
        assert w.writer.flush(5), "the outcome was left waiting"
        assert [r.status for r in w.store.history("other")] == [SUCCEEDED]

    def test_a_claim_met_by_a_lock_is_not_taken_for_a_refusal_of_its_outcomes(self) -> None:
        """A busy store (another writer's lock) answers at once too: its claim fails as a whole,
        retried later with the outcomes, which are not made the writer's alone."""
        w = world(count=1, held=True)
        a_run_still_recorded_active(w, "job-0")
        calls: List[int] = []
        real = w.store.claim_many

        def locked_once(claims: Any, outcomes: Any = ()) -> Any:
            calls.append(len(outcomes))
            if len(calls) == 1:
                raise StoreError("sqlite store 'x.db': database is locked")
            return real(claims, outcomes)

        w.store.claim_many = locked_once
        claim_the_instant(w)
        assert calls == [1] and w.started == []
        # Waiting in the writer: the outcome the claim carried (given back, not set apart), and the
        # claim's own run settled `missed` (a claim that raised may have committed).
        taken = w.writer.take()
        assert sorted(o.status for o in taken) == ["missed", "succeeded"]

    def test_in_a_burst_a_run_that_ended_does_not_count_against_its_schedules_next_fire(self) -> None:
        """The outcome of job-30's last run waits in the writer when its next fire is claimed in a
        burst: it rides along with that claim, so the fire runs instead of being skipped for overlap."""
        w = world(count=60, held=True)
        a_run_still_recorded_active(w, "job-30")
        carried = claiming_with_outcomes(w)
        claim_the_instant(w)
        assert sorted(carried, reverse=True)[:2] == [1, 0]
        assert "job-30" in dict(w.started)
        assert [r.status for r in w.store.history("job-30")] == [RUNNING, SUCCEEDED]


class TestGroups:
    @pytest.mark.parametrize(
        ("count", "small_first", "sizes"),
        [
            (1, True, [1]),
            (12, True, [12]),  # a remainder of a quarter of a group rides along
            (60, True, [10, 50]),
            (1000, True, [10, 40, 160, 790]),
            (1249, False, [1000, 249]),  # never past CLAIM_GROUP
            (2249, True, [10, 40, 160, 640, 1000, 399]),
        ],
    )
    def test_a_burst_is_claimed_in_growing_groups_never_over_the_limit(
        self, count: int, small_first: bool, sizes: List[int]
    ) -> None:
        assert group_sizes(count, small_first) == sizes
        assert max(sizes) <= CLAIM_GROUP and sum(sizes) == count

    def test_refused_claims_are_looked_into_after_the_writer_may_commit_again(self) -> None:
        """Re-reading a refused schedule is a store round trip each: outcomes do not wait for them."""
        w = world(count=30, held=True)
        w.clock.set(DUE)
        with w.table.cond:
            due = w.table.pop_due(DUE)
        for name in w.names[::3]:  # another node claimed these first
            w.store.set_enabled(name, True, DUE + timedelta(seconds=60))
        held_while_rereading: List[bool] = []
        real = w.store.get_schedule

        def rereading(name: str) -> Any:
            held_while_rereading.append(w.writer.commit_lock.locked())
            return real(name)

        w.store.get_schedule = rereading
        w.claims.process(due, DUE)
        assert len(held_while_rereading) == 10 and not any(held_while_rereading)
        assert len(w.started) == 20


def holding_rows(w: SimpleNamespace, times: int, only_with_runs: bool = False) -> None:
    """The store skips locked rows, and refuses the next ``times`` claims as if another writer held
    their rows (with ``only_with_runs``, only claims that insert runs count)."""
    store = w.store
    store.skips_locked_rows = True
    left = [times]
    claim_many = store.claim_many

    def held(claims, outcomes=()):  # type: ignore[no-untyped-def]
        if left[0] and (claims[0].runs or not only_with_runs):
            left[0] -= 1
            return [None for _ in claims]
        return claim_many(claims, outcomes)

    store.claim_many = held
    store.claim = lambda *args: held([Claim(*args)])[0]


class TestARowHeldAtEachLook:
    def test_the_instant_is_recorded_missed_not_moved_past_without_a_row(self) -> None:
        """A store that skips locked rows refuses a claim twice (the row held by a write that is not a
        claim, e.g. a worker's start marking its schedules): when the row is free again, the instant
        has no run, and it gets a row of its own (missed, saying why) before the schedule moves on."""
        w = world(count=1)
        store = w.store
        holding_rows(w, 2)
        name = w.names[0]
        for _ in range(3):  # the first look, the look again, then past the instant
            w.clock.set(DUE + timedelta(seconds=1))
            with w.table.cond:
                due = w.table.pop_due(w.clock.now() + timedelta(seconds=10))
            if due:
                w.claims.process(due, w.clock.now())
        rows = [(r.fire_time, r.status) for r in store.history(name)]
        assert (DUE, "missed") in rows, rows


def _answers_lost(w: SimpleNamespace) -> Any:
    """The store commits each claim but its answer is lost (PostgreSQL's connection reset during
    COMMIT): the claims raise. Returns the real ``claim_many``."""
    real = w.store.claim_many

    def claim_many(claims: Any, outcomes: Any = ()) -> Any:
        real(claims, outcomes)
        raise StoreError("server closed the connection unexpectedly")

    w.store.claim_many = claim_many
    return real


class TestAClaimCommittedWhoseAnswerWasLost:
    """A claim whose transaction raised may have been committed all the same: its rows must reach
    a final status, not stay ``running`` under a live node (holding ``max_instances`` for good)."""

    def test_at_the_instant_its_rows_are_recorded_missed_not_left_running(self) -> None:
        w = world()
        real = _answers_lost(w)
        w.clock.set(DUE)
        with w.table.cond:
            due = w.table.pop_due(DUE)
        w.claims.process(due, DUE)
        w.store.claim_many = real
        assert w.started == [] and w.writer.flush(5)
        assert w.store.active_runs() == []
        for name in w.names:
            (row,) = w.store.history(name)
            assert row.status == MISSED and "did not answer its claim" in (row.reason or "")

    def test_ahead_its_rows_are_recorded_missed_and_the_instant_runs_nowhere(self) -> None:
        w = world(ahead=True)
        real = _answers_lost(w)
        left = stage(w)
        w.store.claim_many = real
        w.clock.set(DUE)
        w.claims.process(left, DUE)
        assert w.started == [] and w.writer.flush(5)
        assert w.store.active_runs() == []
        assert all(w.store.history(name)[0].status == MISSED for name in w.names)

    def test_a_claim_that_failed_without_committing_runs_when_made_again(self) -> None:
        w = world(ahead=True)
        real = w.store.claim_many
        w.store.claim_many = lambda claims, outcomes=(): (_ for _ in ()).throw(StoreError("timeout"))
        left = stage(w)
        w.store.claim_many = real
        w.clock.set(DUE)
        w.claims.process(left, DUE)  # planned again at the instant (new run keys): they run
        assert sorted(name for name, _ in w.started) == w.names
        assert w.writer.flush(5)
        assert [r.status for r in w.store.active_runs()] == [RUNNING] * 3

class TestMovingPastAHeldInstant:
    """A fire whose row was held at each look is moved past with rows for every instant it covers."""

    def test_the_instants_a_late_claim_superseded_keep_their_rows_when_it_moves_past(self) -> None:
        """The claim refused at each look was planned late: it carries ``missed`` rows for the
        instants a later one superseded. Moving past the held instant writes them too, or those
        instants would be left without a row (seen with a SIGSTOPped PostgreSQL peer)."""
        w = world(count=1, interval=1)
        store = w.store
        holding_rows(w, 2)
        name = w.names[0]
        w.clock.set(DUE + timedelta(seconds=3.5))  # DUE, +1 and +2 superseded by +3
        for _ in range(3):
            with w.table.cond:
                due = w.table.pop_due(w.clock.now() + timedelta(seconds=10))
            if due:
                w.claims.process(due, w.clock.now())
        rows = {r.fire_time: r.status for r in store.history(name)}
        assert [rows.get(DUE + timedelta(seconds=s)) for s in range(4)] == [MISSED] * 4, rows

    def test_a_row_held_again_at_the_move_is_not_taken_for_a_run_of_the_instant(self) -> None:
        """Refused at its two looks and once more when recorded missed (the row held again: another
        node's claim or marking at a change of the split), the instant has no run: the schedule
        must not be moved past it without a row, as if it had one (seen at a PostgreSQL peer's
        kill -9). It waits and is claimed at a later look."""
        w = world(count=1)
        store = w.store
        holding_rows(w, 3, only_with_runs=True)
        name = w.names[0]
        for step in range(1, 8):
            w.clock.set(DUE + timedelta(seconds=step))
            with w.table.cond:
                due = w.table.pop_due(w.clock.now())
            if due:
                w.claims.process(due, w.clock.now())
        assert store.run_at(name, DUE) is not None, store.history(name)
        assert [r.fire_time for r in store.history(name)] == [DUE]


class TestClaimsTheStoreRefusesOrLeavesInDoubt:
    """The failure paths of a claim: nothing is left running with nobody to run it, the claims the
    store takes go through, and health names only what is still refused."""

    def test_a_group_committed_before_its_error_is_settled_though_its_retry_comes_back_refused(
        self,
    ) -> None:
        w = world(3)
        real = w.store.claim_many
        calls = [0]

        def commits_then_raises_once(claims: Any, outcomes: Any = ()) -> Any:
            calls[0] += 1
            stored = real(claims, outcomes)
            if calls[0] == 1:
                raise StoreError("server closed the connection unexpectedly")
            return stored

        w.store.claim_many = commits_then_raises_once
        w.clock.set(DUE)
        with w.table.cond:
            due = w.table.pop_due(DUE)
        w.claims.process(due, DUE)
        assert w.writer.flush(5)
        assert w.started == [] and w.store.active_runs() == []
        assert all(w.store.history(name)[0].status == MISSED for name in w.names)

    def test_two_claims_refused_on_their_own_in_different_halves_leave_the_others_running(self) -> None:
        w = world(4)
        real = w.store.claim_many
        refused = {"job-0", "job-2"}

        def refuse(claims: Any, outcomes: Any = ()) -> Any:
            if any(c.name in refused for c in claims):
                raise ValueError("new row violates check constraint")
            return real(claims, outcomes)

        w.store.claim_many = refuse
        w.clock.set(DUE)
        with w.table.cond:
            due = w.table.pop_due(DUE)
        w.claims.process(due, DUE)
        assert sorted(name for name, _ in w.started) == ["job-1", "job-3"]
        sources = {p["source"] for p in w.troubles.problems()}
        assert sources == {"claims:job-0", "claims:job-2"}  # named, and no outage reported

    def test_an_outage_is_still_one_failure_of_the_group(self) -> None:
        w = world(4)

        def down(*args: Any, **kwargs: Any) -> Any:
            raise StoreError("connection refused")

        w.store.claim_many = down
        w.store.get_schedule = down  # type: ignore[method-assign]
        w.clock.set(DUE)
        with w.table.cond:
            due = w.table.pop_due(DUE)
        w.claims.process(due, DUE)
        assert w.started == []
        assert {p["source"] for p in w.troubles.problems()} == {"claims"}

    def test_a_schedule_refused_alone_is_no_longer_named_once_paused_or_moved_away(self) -> None:
        w = world(3)
        real = w.store.claim_many

        def refuse_job_1(claims: Any, outcomes: Any = ()) -> Any:
            if any(c.name == "job-1" for c in claims):
                raise ValueError("value too long for type character varying")
            return real(claims, outcomes)

        w.store.claim_many = refuse_job_1
        w.clock.set(DUE)
        with w.table.cond:
            due = w.table.pop_due(DUE)
        w.claims.process(due, DUE)
        assert "claims:job-1" in {p["source"] for p in w.troubles.problems()}
        w.claims.unblock("job-1")  # paused, removed, or owned by another node now
        assert "claims:job-1" not in {p["source"] for p in w.troubles.problems()}

    def test_once_stop_gave_up_on_the_loop_no_further_group_of_a_burst_is_claimed(self) -> None:
        from flowyml_lite.runtime.claim_troubles import GivenUp

        w = world(60)
        real = w.store.claim_many
        given_up = GivenUp()
        calls: List[int] = []

        def stuck_then_answered(claims: Any, outcomes: Any = ()) -> Any:
            calls.append(len(claims))
            given_up.give_up()  # stop() timed out while this claim waited for the store
            return real(claims, outcomes)

        w.store.claim_many = stuck_then_answered
        w.clock.set(DUE)
        with w.table.cond:
            due = w.table.pop_due(DUE)
        w.claims.process(due, DUE, True, given_up)
        assert len(calls) == 1 and w.started == []  # the group it was in: recorded, not started
        assert w.writer.flush(5)
        claimed = [name for name in w.names if w.store.history(name)]
        assert len(claimed) == calls[0]
        assert all(w.store.history(name)[0].status == SKIPPED for name in claimed)
        with w.table.cond:  # the rest are left to the next loop (or owner), not recorded skipped
            left = {name for name, _ in w.table.pop_due(DUE)}
        assert left == set(w.names) - set(claimed)
