"""Stress tests of the thread executor's lock-free fast path (b4a0201): races between the run
threads (``popleft``, the per-run ``settled`` lock), ``cancel()`` and ``shutdown()``.

Each test runs with ``sys.setswitchinterval(1e-6)`` so the interpreter switches threads between
almost any two bytecodes, and checks properties that do not depend on timing:

- ``done`` is called exactly once per submitted job;
- ``cancel()`` returns True exactly when the job never ran; a "cancelled while running" result
  means the job did run (on an abandoned thread);
- at most ``max_workers`` jobs run at once on threads that were not abandoned;
- ``_idle`` does not drift: a quiet pool has every thread idle and waiting;
- ``shutdown(wait=False)`` leaves no job to finish with a real result after it returned;
  ``shutdown(wait=True)`` returns with no thread of the pool left (abandoned ones aside).

Some tests also widen a race window with a tiny yield at a point of the run thread's fast path
(a test double for ``capture.OutputBuffer`` or for the running-set), which changes timing only,
and a few drive one interleaving step by step. Nothing here asserts a duration: the waits are
safety nets.

What they found in b4a0201 (see the review): a job taken but not yet in ``_running`` is missed
by shutdown (``..._no_job_to_finish_for_real_afterwards[widened]``); a cancel() landing between
``task.worker = me`` and the ``settled.locked()`` check says "abandoned while running" (False)
for a job that never runs (``test_cancel_as_the_job_is_taken[widened]``); and, older than
b4a0201, shutdown(wait=False) lets the threads start queued jobs while it cancels them one by
one, and shutdown(wait=True) neither waits for threads started after it began nor stops waiting
for a thread abandoned meanwhile (the last four tests).
"""

from __future__ import annotations

import itertools
import random
import sys
import threading
import time
from typing import Any, Callable, Iterator, List, Optional

import pytest
from executor_helpers import context, eventually

from flowyml_lite.executors import capture
from flowyml_lite.executors.base import Handle, Job, JobResult
from flowyml_lite.executors.thread import ThreadExecutor

#: A safety net for waits that should end in milliseconds (nothing is timed).
SETTLE = 30.0
_names = itertools.count(1)


@pytest.fixture(autouse=True)
def switch_often() -> Iterator[None]:
    """Switch threads as often as the interpreter can, restored after the test."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def pool(max_workers: int) -> ThreadExecutor:
    return ThreadExecutor(max_workers=max_workers, thread_name=f"race{next(_names)}-run")


class Rec:
    """One submitted job: what its function did, what ``done`` and ``cancel()`` said."""

    def __init__(self, i: int) -> None:
        self.i = i
        self.starts = 0
        self.ended = False
        self.started_after_shutdown = False
        self.ended_after_shutdown = False
        self.results: List[JobResult] = []
        self.cancels: List[bool] = []
        self.handle: Optional[Handle] = None
        self.on_done: Optional[Callable[[], None]] = None

    def done(self, result: JobResult) -> None:
        self.results.append(result)
        if self.on_done is not None:
            self.on_done()

    def __repr__(self) -> str:
        errors = [r.error for r in self.results]
        return (
            f"<job {self.i}: starts={self.starts} ended={self.ended} cancels={self.cancels} results={errors}>"
        )


class Runs:
    """The jobs of one test, and the flag set once ``shutdown`` returned."""

    def __init__(self, seed: int) -> None:
        self.recs: List[Rec] = []
        self.lock = threading.Lock()
        self.shut = threading.Event()
        self.rng = random.Random(seed)
        self.on_start: Optional[Callable[[], None]] = None

    def job(self, kind: int) -> Any:
        rec = Rec(len(self.recs))
        self.recs.append(rec)
        shut, on_start = self.shut, self.on_start

        def run() -> int:
            rec.starts += 1
            rec.started_after_shutdown = shut.is_set()
            if on_start is not None:
                on_start()
            if kind == 1:
                for _ in range(200):
                    pass
            elif kind == 2:
                time.sleep(0)
            elif kind == 3:
                time.sleep(0.0005)
            rec.ended = True
            rec.ended_after_shutdown = shut.is_set()
            return rec.i

        return rec, Job(run, None, context(f"job-{rec.i}"))

    def submit(self, executor: ThreadExecutor, count: int, kinds: Any = (0, 1, 2, 3)) -> List[Rec]:
        """Submit ``count`` jobs, singly or in bursts; stops quietly once the pool is shut down."""
        out: List[Rec] = []
        while len(out) < count:
            n = min(count - len(out), self.rng.choice((1, 1, 2, 5, 9)))
            with self.lock:  # Rec numbering and the recs list only
                pairs = [self.job(self.rng.choice(kinds)) for _ in range(n)]
            try:
                handles = executor.submit_many([(job, rec.done) for rec, job in pairs])
            except RuntimeError:  # shut down: these were never accepted
                with self.lock:
                    for rec, _ in pairs:
                        self.recs.remove(rec)
                return out
            for (rec, _), handle in zip(pairs, handles):
                rec.handle = handle
                out.append(rec)
        return out


def cancel(rec: Rec) -> None:
    handle = rec.handle
    if handle is not None:
        rec.cancels.append(handle.cancel())


def threads(*targets: Callable[[], None]) -> List[threading.Thread]:
    started = [threading.Thread(target=t, daemon=True) for t in targets]
    for t in started:
        t.start()
    return started


def join(started: List[threading.Thread]) -> None:
    for t in started:
        t.join(SETTLE)
        assert not t.is_alive(), "a test thread hung"


def settle(executor: ThreadExecutor, recs: List[Rec]) -> None:
    """Wait until every job has a result, abandoned threads ended and late deliveries are in."""
    assert eventually(lambda: all(r.results for r in recs), SETTLE), [r for r in recs if not r.results][:5]
    assert eventually(lambda: executor.abandoned_threads == 0, SETTLE)
    for t in threading.enumerate():
        if t.name == "flowyml-run-done":
            t.join(SETTLE)


def assert_done_once_and_consistent(recs: List[Rec]) -> None:
    for r in recs:
        assert len(r.results) == 1, f"done called {len(r.results)} times: {r!r}"
        assert r.starts <= 1, f"ran twice: {r!r}"
        result = r.results[0]
        if not result.cancelled:
            assert result.success and result.value == r.i and r.ended, r
        elif "before it started" in (result.error or ""):
            assert r.starts == 0, f"reported as never started, but it ran: {r!r}"
        else:  # cancelled while running: the thread was abandoned, the job did run
            assert "while running" in (result.error or ""), r
            assert r.starts == 1, f"reported as abandoned while running, but it never ran: {r!r}"
        trues = r.cancels.count(True)
        assert trues <= 1, f"cancel() said True twice: {r!r}"
        if trues:
            assert result.cancelled and r.starts == 0, f"cancel() said stopped, but: {r!r}"
        if "was cancelled before it started" in (result.error or ""):
            assert trues == 1, f"cancelled before it started, yet cancel() said False: {r!r}"


def assert_quiet_pool(executor: ThreadExecutor) -> None:
    """Every thread of the pool idle, waiting for work, and counted idle exactly once."""

    def quiet() -> bool:
        with executor._cond:
            return executor._idle == len(executor._workers) == len(executor._cond._waiters)  # type: ignore[attr-defined]

    if not eventually(quiet, SETTLE):
        with executor._cond:
            state = (executor._idle, len(executor._workers), len(executor._cond._waiters))  # type: ignore[attr-defined]
        pytest.fail(f"the pool never went quiet: idle={state[0]} workers={state[1]} waiting={state[2]}")
    assert executor.live_threads <= executor.max_workers


def assert_no_pool_thread_left(executor: ThreadExecutor) -> None:
    prefix = executor._thread_name
    assert eventually(lambda: not any(t.name.startswith(prefix) for t in threading.enumerate()), SETTLE)


def wind_down(executor: ThreadExecutor, runs: Runs) -> None:
    """Every run settled, each ended once, the pool quiet; then shut down with nothing left behind."""
    settle(executor, runs.recs)
    assert_done_once_and_consistent(runs.recs)
    assert_quiet_pool(executor)
    executor.shutdown(wait=True)
    assert_no_pool_thread_left(executor)


# -- done exactly once, cancel() tells the truth -----------------------------------------------


def test_random_cancels_done_exactly_once_and_cancel_tells_whether_it_ran() -> None:
    executor = pool(4)
    runs = Runs(seed=1)
    stop = threading.Event()

    def submitter() -> None:
        runs.submit(executor, 300)

    def canceller(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            recs = runs.recs
            if recs:
                cancel(recs[rng.randrange(len(recs))])
            else:
                time.sleep(0)

    cancellers = threads(lambda: canceller(2), lambda: canceller(3))
    join(threads(submitter, submitter, submitter))
    stop.set()
    join(cancellers)
    settle(executor, runs.recs)
    assert_done_once_and_consistent(runs.recs)
    for r in runs.recs:  # cancelling a finished job changes nothing
        if not r.results[0].cancelled:
            assert r.handle is not None and r.handle.cancel() is False
    settle(executor, runs.recs)
    assert_done_once_and_consistent(runs.recs)
    assert_quiet_pool(executor)
    executor.shutdown(wait=True)
    assert executor.live_threads == 0
    assert_no_pool_thread_left(executor)


class _YieldingSet(set):  # type: ignore[type-arg]
    """The running-set with a thread switch in ``add``: widens take -> start (a test double)."""

    def add(self, item: Any) -> None:
        super().add(item)
        time.sleep(0)


@pytest.mark.parametrize("widen", [False, True], ids=["plain", "widened"])
def test_cancel_as_the_job_is_taken(widen: bool) -> None:
    """Cancel each job at about the moment a thread takes it: True only if it never runs, and a
    result saying "abandoned while running" only for a job that did run."""
    executor = pool(3)
    if widen and isinstance(getattr(executor, "_running", None), set):
        executor._running = _YieldingSet()  # type: ignore[assignment]
    runs = Runs(seed=4)
    for _ in range(40):
        batch = runs.submit(executor, 12, kinds=(0, 1))
        for r in batch:  # head first: the ones the threads are taking now
            cancel(r)
        settle(executor, batch)
    wind_down(executor, runs)


# -- capacity and the idle count ------------------------------------------------------------------


def test_at_most_max_workers_run_at_once_outside_abandoned_threads() -> None:
    executor = pool(3)
    runs = Runs(seed=5)
    gauge = {"now": 0, "peak": 0}
    gauge_lock = threading.Lock()
    violations: List[str] = []

    def on_start() -> None:
        with gauge_lock:
            gauge["now"] += 1
            gauge["peak"] = max(gauge["peak"], gauge["now"])
            abandoned = len(executor._abandoned)
            workers = len(executor._workers)
            if gauge["now"] > executor.max_workers + abandoned or workers > executor.max_workers:
                violations.append(f"running={gauge['now']} abandoned={abandoned} workers={workers}")
        time.sleep(0)
        with gauge_lock:
            gauge["now"] -= 1

    runs.on_start = on_start
    stop = threading.Event()

    def submitter() -> None:
        runs.submit(executor, 200, kinds=(1, 2, 3))

    def canceller() -> None:
        rng = random.Random(6)
        while not stop.is_set():
            recs = runs.recs
            if recs:
                cancel(recs[rng.randrange(len(recs))])
            time.sleep(0.0005)

    cancellers = threads(canceller)
    join(threads(submitter, submitter, submitter))
    stop.set()
    join(cancellers)
    wind_down(executor, runs)
    assert violations == []


def test_idle_count_never_drifts_over_many_submit_drain_cycles() -> None:
    executor = pool(4)
    runs = Runs(seed=7)
    for cycle in range(25):
        batches: List[List[Rec]] = []
        submitters = threads(
            *[lambda batches=batches: batches.append(runs.submit(executor, 15)) for _ in range(3)]
        )
        if cycle % 3 == 0:  # some cancels too, of queued and running jobs
            while not batches:
                time.sleep(0)
            for r in list(batches[0])[:5]:
                cancel(r)
        join(submitters)
        settle(executor, runs.recs)
        assert_quiet_pool(executor)
    assert_done_once_and_consistent(runs.recs)
    # Still serving, at full width.
    last = runs.submit(executor, 20)
    settle(executor, last)
    assert all(not r.results[0].cancelled for r in last)
    assert_quiet_pool(executor)
    executor.shutdown(wait=True)
    assert executor.live_threads == 0
    assert_no_pool_thread_left(executor)


# -- shutdown while busy ----------------------------------------------------------------------


def slow_buffers(monkeypatch: pytest.MonkeyPatch, until: List[threading.Event]) -> None:
    """Make a pool thread pause as it makes a run's output buffer (after it took the run, before
    it starts it) until ``until[0]`` is set, 20 ms at most: widens take -> start (a test double)."""

    class SlowBuffer(capture.OutputBuffer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if threading.current_thread().name.startswith("race"):
                until[0].wait(0.02)

    monkeypatch.setattr(capture, "OutputBuffer", SlowBuffer)


def shutdown_moment(rng: random.Random) -> float:
    return rng.choice((0.0, 0.0, rng.random() * 0.001, rng.random() * 0.005))


@pytest.mark.parametrize("widen", [False, True], ids=["plain", "widened"])
def test_shutdown_without_wait_leaves_no_job_to_finish_for_real_afterwards(
    widen: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After shutdown(wait=False) returns, every job still going was cancelled: none of them may
    end later with a real (non-cancelled) result (its thread kept in the pool)."""
    current = [threading.Event()]
    if widen:
        slow_buffers(monkeypatch, current)
    late: List[Rec] = []
    for iteration in range(30):
        executor = pool(3)
        runs = Runs(seed=100 + iteration)
        current[0] = runs.shut
        go = threading.Event()

        def submitter(
            executor: ThreadExecutor = executor, runs: Runs = runs, go: threading.Event = go
        ) -> None:
            go.set()
            runs.submit(executor, 60, kinds=(1, 2, 3))

        submitters = threads(submitter, submitter)
        assert go.wait(SETTLE)
        time.sleep(shutdown_moment(runs.rng))
        executor.shutdown(wait=False)
        runs.shut.set()
        join(submitters)
        settle(executor, runs.recs)
        assert_done_once_and_consistent(runs.recs)
        late += [r for r in runs.recs if not r.results[0].cancelled and r.ended_after_shutdown]
        assert eventually(lambda executor=executor: executor.live_threads == 0, SETTLE)
        assert_no_pool_thread_left(executor)
    assert late == [], f"jobs that ended with a real result after shutdown(wait=False) returned: {late[:5]}"


@pytest.mark.parametrize("cancelling", [False, True], ids=["quiet", "with-cancels"])
def test_shutdown_with_wait_returns_with_no_thread_of_the_pool_left(cancelling: bool) -> None:
    """shutdown(wait=True) joins the pool: when it returns no (non-abandoned) thread is left, every
    job has its one result, and no job ends for real afterwards."""
    problems: List[str] = []
    for iteration in range(30):
        executor = pool(3)
        runs = Runs(seed=200 + iteration)
        go = threading.Event()
        stop = threading.Event()

        def submitter(
            executor: ThreadExecutor = executor, runs: Runs = runs, go: threading.Event = go
        ) -> None:
            go.set()
            runs.submit(executor, 40, kinds=(1, 2, 3))

        def canceller(runs: Runs = runs, stop: threading.Event = stop) -> None:
            rng = random.Random(runs.rng.random())
            while not stop.is_set():
                with runs.lock:
                    candidates = [r for r in runs.recs if r.handle is not None]
                if candidates:
                    cancel(rng.choice(candidates))
                time.sleep(0.0003)

        submitters = threads(submitter, submitter)
        cancellers = threads(canceller) if cancelling else []
        assert go.wait(SETTLE)
        time.sleep(shutdown_moment(runs.rng))
        executor.shutdown(wait=True, timeout=SETTLE)
        runs.shut.set()
        left = executor.live_threads
        if left:
            problems.append(
                f"iteration {iteration}: {left} pool thread(s) still in the pool after shutdown(wait=True)"
            )
        stop.set()
        join(submitters + cancellers)
        settle(executor, runs.recs)
        assert_done_once_and_consistent(runs.recs)
        for r in runs.recs:
            if not r.results[0].cancelled and r.ended_after_shutdown:
                problems.append(
                    f"iteration {iteration}: {r!r} ended for real after shutdown(wait=True) returned"
                )
            if "was stopped" in (r.results[0].error or ""):  # no timeout ran out: nothing is left to stop
                problems.append(f"iteration {iteration}: {r!r} stopped by shutdown(wait=True) instead of run")
        assert_no_pool_thread_left(executor)
    assert problems == []


def test_shutdown_without_wait_starts_none_of_the_queued_jobs() -> None:
    """Jobs still queued when shutdown(wait=False) is called are cancelled, never started, even
    when the running job ends (and its thread looks for more) while shutdown cancels them."""
    started_late: List[str] = []
    for iteration in range(30):
        executor = pool(1)
        runs = Runs(seed=300 + iteration)
        release = threading.Event()
        runs.on_start = lambda release=release: release.wait(SETTLE) and None
        blocker, job = runs.job(0)
        runs.on_start = None
        blocker.handle = executor.submit(job, blocker.done)
        assert eventually(lambda blocker=blocker: blocker.starts == 1, SETTLE)
        queued = runs.submit(executor, 30, kinds=(0,))  # the only thread is busy: all queued
        queued[0].on_done = release.set
        executor.shutdown(wait=False)  # the first cancelled job's done lets the running one end
        release.set()
        settle(executor, runs.recs)
        assert_done_once_and_consistent(runs.recs)
        started_late += [f"iteration {iteration}: {r!r}" for r in queued if r.starts]
        assert_no_pool_thread_left(executor)
    assert started_late == []


def test_shutdown_with_wait_waits_for_a_replacement_thread_started_after_it_began() -> None:
    """A job abandoned during shutdown(wait=True) gets a replacement thread for the queued jobs;
    shutdown must wait for that thread too, not stop ("cancel") the job it runs."""
    executor = pool(2)
    runs = Runs(seed=400)
    first_threads: List[str] = []
    hang, hold = threading.Event(), threading.Event()
    returned = threading.Event()

    def blocking(event: threading.Event) -> Callable[[], None]:
        def on_start() -> None:
            first_threads.append(threading.current_thread().name)
            event.wait(SETTLE)

        return on_start

    later: List[str] = []

    def later_thread_waits() -> None:  # a thread started after shutdown began holds on to its job
        if threading.current_thread().name not in first_threads:
            later.append(threading.current_thread().name)
            returned.wait(0.5)

    recs = []
    for event in (hang, hold):
        runs.on_start = blocking(event)
        rec, job = runs.job(0)
        rec.handle = executor.submit(job, rec.done)
        recs.append(rec)
    assert eventually(lambda: len(first_threads) == 2, SETTLE)
    runs.on_start = later_thread_waits
    queued = runs.submit(executor, 4, kinds=(0,))
    after: List[int] = []

    def shut() -> None:
        executor.shutdown(wait=True, timeout=SETTLE)
        after.append(executor.live_threads)
        returned.set()

    shutter = threads(shut)
    assert eventually(lambda: executor._closed, SETTLE)
    cancel(recs[0])  # abandons its thread: a replacement takes the first queued job
    assert recs[0].cancels == [False]
    assert eventually(lambda: len(later) == 1, SETTLE)
    hang.set()
    hold.set()
    join(shutter)
    settle(executor, runs.recs)
    assert_done_once_and_consistent(runs.recs)
    assert after == [0]
    assert [r.results[0].cancelled for r in queued] == [False] * 4, queued
    assert_no_pool_thread_left(executor)


def test_shutdown_with_wait_does_not_wait_for_a_thread_abandoned_meanwhile() -> None:
    """A hung job cancelled (abandoned) while shutdown(wait=True) waits: its thread is no longer
    the pool's, so shutdown returns without waiting for the hung job to end."""
    executor = pool(1)
    runs = Runs(seed=500)
    hang = threading.Event()
    runs.on_start = lambda: hang.wait(SETTLE) and None
    rec, job = runs.job(0)
    rec.handle = executor.submit(job, rec.done)
    assert eventually(lambda: rec.starts == 1, SETTLE)
    shutter = threads(lambda: executor.shutdown(wait=True))
    assert eventually(lambda: executor._closed, SETTLE)
    cancel(rec)
    try:
        shutter[0].join(5.0)  # a safety net: shutdown has nothing left to wait for
        assert not shutter[0].is_alive(), "shutdown(wait=True) still waits for an abandoned thread"
    finally:
        hang.set()
        join(shutter)
    settle(executor, runs.recs)
    assert_done_once_and_consistent(runs.recs)
