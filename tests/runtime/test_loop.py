"""The timer loop (real time): the next instant's fires are planned (and claimed) in the half second
before it, taken first when it comes, and never lost: not when the loop stops with fires planned,
not when handing fires over raises."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, List, Optional, Set, Tuple

from flowyml_lite.clock import SystemClock
from flowyml_lite.runtime.gate import GATE, LEAD_SECONDS
from flowyml_lite.runtime.health import Troubles
from flowyml_lite.runtime.loop import STAGE_SECONDS, TimerLoop
from flowyml_lite.runtime.table import ScheduleTable
from flowyml_lite.stores.base import ScheduleRecord
from tests.waiting import until

Fire = Tuple[str, datetime]


def table_due_in(seconds: float, count: int) -> Tuple[ScheduleTable, datetime]:
    table = ScheduleTable()
    at = datetime.now(timezone.utc) + timedelta(seconds=seconds)
    with table.cond:
        for i in range(count):
            name = f"job-{i}"
            table.serve(name, lambda: None, object())  # type: ignore[arg-type]
            table.set_record(ScheduleRecord(name, "once", "", "UTC", "h", next_fire=at))
    return table, at


def heap_fires(table: ScheduleTable) -> List[Fire]:
    return sorted((name, fire) for _, _, name, fire in table.heap if fire is not None)


class TestTheNextInstantIsPlannedInItsLead:
    def test_the_instant_s_fires_are_planned_before_it_and_handed_over_once_at_it(self) -> None:
        table, at = table_due_in(0.3, 600)
        planned: List[Tuple[float, List[Fire]]] = []
        handed: List[Tuple[datetime, List[Fire]]] = []
        done = threading.Event()

        def process(due: List[Fire], now: datetime, small_first: bool, given_up: Any = None) -> None:
            handed.append((now, list(due)))
            if sum(len(d) for _, d in handed) >= 600:
                done.set()

        quiet: List[bool] = []

        def prepare(due: List[Fire], now: datetime, patience: Optional[float] = None) -> Set[Fire]:
            planned.append((time.time(), due))
            quiet.append(table.quiet_for(1.0, now))  # upkeep that stalls writers must wait
            return set()

        loop = TimerLoop(table, SystemClock(), process, Troubles(), 1.0, prepare)
        loop.start()
        try:
            assert done.wait(5)
        finally:
            loop.stop(2)
        assert sum(len(due) for _, due in planned) == 600  # all of them, in chunks
        assert max(t for t, _ in planned) < at.timestamp()  # before the instant
        fires = [fire for _, due in handed for fire in due]
        assert sorted(fires) == sorted((f"job-{i}", at) for i in range(600))  # each once
        assert all(now >= at for now, _ in handed)  # and never early
        assert table.heap == []
        assert quiet and not any(quiet)  # the planned fires count as due soon, out of the heap or not

    def test_a_burst_too_big_for_the_lead_is_planned_before_it_without_holding_the_api(self) -> None:
        table, at = table_due_in(0.8, 3000)
        planned: List[Tuple[float, bool, int]] = []
        handed: List[Fire] = []
        done = threading.Event()

        def prepare(due: List[Fire], now: datetime, patience: Optional[float] = None) -> Set[Fire]:
            planned.append((time.time(), GATE.closed, len(due)))
            time.sleep(0.01)  # planning a chunk of a big burst takes a while
            return set()

        def process(due: List[Fire], now: datetime, small_first: bool, given_up: Any = None) -> None:
            handed.extend(due)
            if len(handed) >= 3000:
                done.set()

        loop = TimerLoop(table, SystemClock(), process, Troubles(), 1.0, prepare)
        loop.start()
        try:
            assert done.wait(5)
        finally:
            loop.stop(2)
        assert sum(n for _, _, n in planned) == 3000  # 12 chunks of 10 ms: more than the lead holds
        assert planned[0][0] < at.timestamp() - STAGE_SECONDS + 0.1  # planning starts half a second ahead
        assert not any(closed for t, closed, _ in planned if t < at.timestamp() - 2 * LEAD_SECONDS)
        assert sorted(handed) == sorted((f"job-{i}", at) for i in range(3000))

    def test_a_loop_stopped_with_fires_planned_puts_them_back(self) -> None:
        table, at = table_due_in(0.3, 50)
        before = heap_fires(table)
        staged = threading.Event()
        handed: List[Fire] = []
        loop = TimerLoop(
            table,
            SystemClock(),
            lambda due, now, first: handed.extend(due),
            Troubles(),
            1.0,
            lambda due, now, patience=None: staged.set() or set(),
        )
        loop.start()
        assert staged.wait(2)
        loop.stop(2)
        assert handed == [] and datetime.now(timezone.utc) < at  # stopped in the lead
        assert heap_fires(table) == before  # every fire queued again for its instant

    def test_an_error_handing_fires_over_queues_them_again(self) -> None:
        table, _ = table_due_in(0.05, 3)
        calls: List[List[Fire]] = []
        troubles = Troubles()
        done = threading.Event()

        def process(due: List[Fire], now: datetime, small_first: bool, given_up: Any = None) -> None:
            calls.append(list(due))
            if len(calls) == 1:
                raise RuntimeError("a bug on the fire path")
            done.set()

        loop = TimerLoop(table, SystemClock(), process, troubles, 1.0, lambda due, now, patience=None: set())
        loop.start()
        try:
            assert done.wait(5)
        finally:
            loop.stop(2)
        assert sorted(calls[1]) == sorted(calls[0]) and len(calls[0]) == 3
        assert "a bug on the fire path" in (troubles.last_error or "")

    def test_a_fire_queued_again_while_planned_is_handed_over_once(self) -> None:
        table, at = table_due_in(0.3, 20)
        handed: List[Fire] = []
        done = threading.Event()

        def prepare(due: List[Fire], now: datetime, patience: Optional[float] = None) -> Set[Fire]:
            with table.cond:  # a change of the split meanwhile queues every owned fire again
                table.reown()
            return set()

        def process(due: List[Fire], now: datetime, small_first: bool, given_up: Any = None) -> None:
            handed.extend(due)
            done.set()

        loop = TimerLoop(table, SystemClock(), process, Troubles(), 1.0, prepare)
        loop.start()
        try:
            assert done.wait(5)
            time.sleep(0.1)
        finally:
            loop.stop(2)
        assert sorted(handed) == sorted((f"job-{i}", at) for i in range(20))


def passes_with(
    prepare: Callable[..., Set[Fire]], count: int
) -> Tuple[List[Tuple[datetime, List[Fire]]], datetime]:
    """The passes the loop makes over ``count`` fires due in 0.3 s, staged with ``prepare``."""
    table, at = table_due_in(0.3, count)
    passes: List[Tuple[datetime, List[Fire]]] = []
    done = threading.Event()

    def process(due: List[Fire], now: datetime, small_first: bool, given_up: Any = None) -> None:
        passes.append((now, list(due)))
        done.set()

    loop = TimerLoop(table, SystemClock(), process, Troubles(), 1.0, prepare)
    loop.start()
    try:
        assert done.wait(5)
        time.sleep(0.2)
    finally:
        loop.stop(2)
    return passes, at


class TestFiresClaimedAheadAreStartedAtTheirInstant:
    def test_the_instant_comes_to_the_claims_even_with_no_fire_left_to_claim(self) -> None:
        """Fires claimed ahead are not handed over again at the instant; the pass comes once, and
        not before the instant."""
        passes, at = passes_with(lambda due, *_: {fire for fire in due if fire[0] != "job-7"}, 40)
        assert [due for _, due in passes] == [[("job-7", at)]]  # the one left for the instant
        assert passes[0][0] >= at

    def test_with_all_claimed_ahead_the_pass_comes_with_none(self) -> None:
        """It starts the runs claimed ahead."""
        passes, at = passes_with(lambda due, now, patience=None: set(due), 5)
        assert len(passes) == 1 and passes[0][1] == [] and passes[0][0] >= at


def table_spread(offsets: List[float]) -> Tuple[ScheduleTable, List[Fire]]:
    """One schedule per offset (seconds from now), each due once then."""
    table = ScheduleTable()
    now = datetime.now(timezone.utc)
    fires: List[Fire] = []
    with table.cond:
        for i, offset in enumerate(offsets):
            name, at = f"job-{i}", now + timedelta(seconds=offset)
            table.serve(name, lambda: None, object())  # type: ignore[arg-type]
            table.set_record(ScheduleRecord(name, "once", "", "UTC", "h", next_fire=at))
            fires.append((name, at))
    return table, fires


class TestASteadyFlowOfFiresIsClaimedInGroups:
    def test_fires_of_many_instants_are_claimed_together_and_each_instant_is_passed_at_itself(
        self,
    ) -> None:
        """100 instants 2 ms apart: a claim ahead for several at a time, not 100; the loop comes
        back at each instant (the claims start its runs then), never before it."""
        table, fires = table_spread([0.3 + 0.002 * i for i in range(100)])
        prepared: List[List[Fire]] = []
        passes: List[datetime] = []
        done = threading.Event()

        def prepare(due: List[Fire], now: datetime, patience: Optional[float] = None) -> Set[Fire]:
            prepared.append(list(due))
            return set(due)

        def process(due: List[Fire], now: datetime, small_first: bool, given_up: Any = None) -> None:
            assert due == []  # every fire was claimed ahead
            passes.append(now)
            if now >= fires[-1][1]:
                done.set()

        loop = TimerLoop(table, SystemClock(), process, Troubles(), 1.0, prepare)
        loop.start()
        try:
            assert done.wait(5)
        finally:
            loop.stop(2)
        assert sorted(f for chunk in prepared for f in chunk) == sorted(fires)  # each claimed once
        assert len(prepared) <= 34  # in groups
        assert max(len(chunk) for chunk in prepared) > 1
        for _, at in fires:  # a pass at (or just after) each instant, none early for it
            assert any(at <= now < at + timedelta(seconds=0.009) for now in passes)

    def test_nothing_is_claimed_ahead_while_the_store_holds_claims_off(self) -> None:
        """The store's upkeep (SQLite restarting its WAL) would hold the loop up in the claim, and
        with it the start of runs claimed before: fires are then taken at their instant."""
        table, fires = table_spread([0.2, 0.25])
        prepared: List[List[Fire]] = []
        handed: List[Tuple[datetime, List[Fire]]] = []
        done = threading.Event()

        def process(due: List[Fire], now: datetime, small_first: bool, given_up: Any = None) -> None:
            handed.append((now, list(due)))
            if sum(len(d) for _, d in handed) == 2:
                done.set()

        loop = TimerLoop(
            table,
            SystemClock(),
            process,
            Troubles(),
            1.0,
            lambda due, now, patience=None: prepared.append(due) or set(due),
            may_prepare=lambda: False,
        )
        loop.start()
        try:
            assert done.wait(5)
        finally:
            loop.stop(2)
        assert prepared == []
        assert [due for _, due in handed] == [[fires[0]], [fires[1]]]
        assert all(now >= due[0][1] for now, due in handed)


class TestARetryIsTakenAtItsOwnTime:
    def test_a_fire_queued_again_for_later_is_neither_claimed_ahead_nor_taken_early(self) -> None:
        """Outcomes backed up (a store outage) or a failed claim queue a fire again half a second
        on: it comes at that time, not staged under its own (past) instant at once, over and over."""
        table, fires = table_spread([-0.2])  # its instant has passed
        name, fire = fires[0]
        with table.cond:
            table.heap.clear()
            table.push(datetime.now(timezone.utc) + timedelta(seconds=0.3), name, fire)
        prepared: List[List[Fire]] = []
        handed: List[datetime] = []

        def process(due: List[Fire], now: datetime, small_first: bool, given_up: Any = None) -> None:
            if due:
                handed.append(now)
                with table.cond:  # still backed up: again in half a second
                    table.push(now + timedelta(seconds=0.5), name, fire)

        loop = TimerLoop(
            table, SystemClock(), process, Troubles(), 1.0, lambda due, *_: prepared.append(due) or set()
        )
        loop.start()
        time.sleep(1.5)
        loop.stop(2)
        assert prepared == []
        assert 2 <= len(handed) <= 4  # at 0.3, 0.8, 1.3 s: not hundreds of passes


class TestALoopStuckInAClaimAtStop:
    """stop() gives up on a loop stuck in a claim (a store that hangs) after its timeout; that loop
    must end when the claim returns, not go on beside the loop a later start() begins."""

    def test_a_start_after_it_leaves_one_loop_running(self) -> None:
        table, _ = table_due_in(0.05, 1)
        inside, release = threading.Event(), threading.Event()

        def process(due: List[Fire], now: datetime, small_first: bool, given_up: Any = None) -> None:
            if due:
                inside.set()
                release.wait(5)  # the store hangs on this claim

        loop = TimerLoop(table, SystemClock(), process, Troubles(), 1.0)
        loop.start()
        try:
            assert inside.wait(5)
            assert loop.stop(0.1) is False  # gives up waiting for the stuck loop, and says so
            loop.start()
            release.set()
            time.sleep(0.3)
            loops = [t for t in threading.enumerate() if t.name == "flowyml_lite-scheduler" and t.is_alive()]
            assert len(loops) == 1
        finally:
            release.set()
            loop.stop(1.0)


class TestTheBurstPauseWhileRunsWaitForAThread:
    def test_it_ends_at_the_pause_limit_even_if_runs_still_wait(self) -> None:
        from flowyml_lite.runtime.gc_pause import BURST_FIRES, MAX_PAUSE_SECONDS, GCPause

        table, _ = table_due_in(0.05, BURST_FIRES)
        pause = GCPause(True)
        loop = TimerLoop(
            table, SystemClock(), lambda *args: None, Troubles(), 1.0, gc_pause=pause, starting=lambda: True
        )
        loop.start()
        try:
            assert until(lambda: pause.holding, 5)  # the burst: collection paused
            time.sleep(0.3)
            assert pause.holding  # runs wait for a thread (a full pool): it goes on
            # ...but not beyond the pause's own limit, and the loop stops looking every 5 ms
            assert until(lambda: not pause.holding, MAX_PAUSE_SECONDS + 2)
        finally:
            loop.stop(2)
