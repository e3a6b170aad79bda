"""The runner: every claimed run reaches exactly one final outcome, whatever stop(), the lock server
or the executor do meanwhile. A Runner on a stand-in store and a recording writer."""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import pytest

from flowyml_lite.clock import SYSTEM_CLOCK
from flowyml_lite.core.options import Options
from flowyml_lite.executors.base import Done, Handle, Job
from flowyml_lite.executors.thread import ThreadExecutor
from flowyml_lite.locks.base import Lease, Lock
from flowyml_lite.runtime.health import Troubles
from flowyml_lite.runtime.runner import Runner
from flowyml_lite.stores.base import FINAL_STATUSES, QUEUED, RUNNING, Outcome, RunRecord
from tests.waiting import until


class Store:
    """start_run answers False once a run has a final outcome (as a real store would)."""

    def __init__(self) -> None:
        self.finished: Set[str] = set()

    def start_run(self, key: str, at: datetime) -> bool:
        return key not in self.finished


class Writer:
    """Records every outcome put, in order, by run key."""

    def __init__(self, store: Store, write_through: bool = True) -> None:
        self.store = store
        self.write_through = write_through
        self.outcomes: Dict[str, List[Tuple[str, Optional[str]]]] = defaultdict(list)
        self._lock = threading.Lock()

    def put(self, outcome: Outcome, schedule: str) -> None:
        with self._lock:
            self.outcomes[outcome.run_key].append((outcome.status, outcome.reason or outcome.error))
        if outcome.status in FINAL_STATUSES and self.write_through:
            self.store.finished.add(outcome.run_key)

    def finals(self, run: RunRecord) -> List[Tuple[str, Optional[str]]]:
        return [o for o in self.outcomes[run.run_key] if o[0] in FINAL_STATUSES]


class _Lease(Lease):
    def release(self) -> None:
        return None

    def renew(self, ttl_seconds: float) -> bool:
        return True


class SlowLock(Lock):
    """Answers the first acquire at once; later ones wait for ``go`` (a slow lock server)."""

    expires = False

    def __init__(self) -> None:
        self.go = threading.Event()
        self.calls = 0

    def acquire(
        self, key: str, ttl_seconds: Optional[float] = None, timeout: float = 0.0, owner: Optional[str] = None
    ) -> Optional[Lease]:
        self.calls += 1
        if self.calls > 1:
            self.go.wait(10)
        return _Lease()

    def release_owner(self, owner: str) -> int:
        return 0


MADE: List[Runner] = []


@pytest.fixture(autouse=True)
def _shut_runners() -> Any:
    """Every runner a test made is shut down after it, so no timer thread outlives the test."""
    yield
    while MADE:
        MADE.pop().shutdown(wait=False, timeout=1)


def make(lock: Optional[Lock] = None, write_through: bool = True) -> Tuple[Runner, Writer]:
    store = Store()
    writer = Writer(store, write_through)
    runner = Runner(store, writer, Troubles(), SYSTEM_CLOCK, "node-1", 4, lock=lock)  # type: ignore[arg-type]
    MADE.append(runner)
    return runner, writer


def run(name: str, status: str = RUNNING) -> RunRecord:
    return RunRecord(uuid.uuid4().hex, name, datetime.now(timezone.utc), status, "node-1")


def test_a_queued_run_whose_lease_is_on_its_way_at_stop_ends_once_and_never_starts() -> None:
    lock = SlowLock()
    runner, writer = make(lock)
    first, catch_up = run("s"), run("s", QUEUED)
    runner.submit("s", lambda: None, [first, catch_up], Options())
    assert until(lambda: lock.calls >= 2), "the catch-up run never asked for its lease"
    runner.stopping.set()
    assert runner.end_waiting() == 1
    lock.go.set()  # the lease arrives after stop() ended the run
    assert runner.wait_idle(5)
    time.sleep(0.2)
    assert writer.finals(catch_up) == [("skipped", "scheduler stopped before this catch-up run")]
    assert [s for s, _ in writer.finals(first)] == ["succeeded"]
    runner.shutdown(wait=True, timeout=5)


def test_a_retry_waiting_for_its_lease_at_stop_fails_once_and_never_runs() -> None:
    lock = SlowLock()
    runner, writer = make(lock, write_through=False)  # its first outcome not yet in the store
    ran: List[float] = []

    def job() -> None:
        ran.append(time.monotonic())
        if len(ran) == 1:
            raise ValueError("the first attempt fails")

    first = run("s")
    runner.submit("s", job, [first], Options(retries=1, retry_delay_seconds=0.05))
    assert until(lambda: lock.calls >= 2), "the retry never asked for its lease"
    runner.stopping.set()
    assert runner.end_waiting() == 1
    assert runner.wait_idle(5)
    runner.shutdown(wait=True, timeout=5)
    lock.go.set()
    time.sleep(0.3)
    assert len(ran) == 1, "the retry ran after stop"
    statuses = [s for s, _ in writer.outcomes[first.run_key]]
    assert statuses == ["queued", "failed"], writer.outcomes[first.run_key]


class _ManyLock(Lock):
    expires = True

    def __init__(self, answers: Optional[int] = None) -> None:
        self.answers = answers

    def acquire(
        self, key: str, ttl_seconds: Optional[float] = None, timeout: float = 0.0, owner: Optional[str] = None
    ) -> Optional[Lease]:
        return _Lease()

    def acquire_many(self, keys: Sequence[str], ttl_seconds: float, owner: str) -> List[Optional[Lease]]:
        count = len(keys) if self.answers is None else self.answers
        return [_Lease() for _ in range(count)]

    def release_owner(self, owner: str) -> int:
        return 0


def _batch_of_three(runner: Runner) -> List[RunRecord]:
    runs = [run(f"s{i}") for i in range(3)]
    with runner.batch():
        for each in runs:
            runner.submit(each.schedule, lambda: None, [each], Options())
    return runs


def test_a_lease_batch_that_fails_after_its_round_trip_still_ends_every_run() -> None:
    runner, writer = make(_ManyLock())

    def renewed(lease: Lease, name: str) -> Any:
        raise RuntimeError("can't start new thread")

    runner._leases.renewed = renewed  # type: ignore[union-attr,method-assign]
    runs = _batch_of_three(runner)
    assert runner.wait_idle(5), f"{runner.active} run(s) left in flight"
    for each in runs:
        assert [s for s, _ in writer.finals(each)] == ["failed"]
        assert "can't start new thread" in (writer.finals(each)[0][1] or "")


def test_a_lock_backend_that_answers_fewer_leases_than_asked_fails_the_batch_clearly() -> None:
    runner, writer = make(_ManyLock(answers=1))
    runs = _batch_of_three(runner)
    assert runner.wait_idle(5), f"{runner.active} run(s) left in flight"
    for each in runs:
        ((status, why),) = writer.finals(each)
        assert status == "failed" and "answered 1 of 3" in (why or "")


class LateSubmitter(ThreadExecutor):
    """Hands an attempt-1 job to its thread, then returns late (a caller descheduled right after)."""

    def submit(self, job: Job, done: Done) -> Handle:
        handle = super().submit(job, done)
        if job.context.attempt == 1:
            time.sleep(0.3)
        return handle


def test_a_retry_started_before_its_first_attempt_s_handle_is_kept_gets_its_own_watchdog() -> None:
    runner, writer = make()
    executor = LateSubmitter(max_workers=4)
    runner._executors._executors["thread"] = executor
    ran: List[float] = []

    def job() -> None:
        ran.append(time.monotonic())
        if len(ran) == 1:
            raise ValueError("fail fast")
        time.sleep(2.0)  # attempt 2 outlives its 1 s timeout

    first = run("s")
    runner.submit("s", job, [first], Options(retries=1, retry_delay_seconds=0, timeout_seconds=1.0))
    assert runner.wait_idle(15)
    statuses = [s for s, _ in writer.outcomes[first.run_key]]
    assert statuses == ["queued", "timed_out"], writer.outcomes[first.run_key]
    assert executor.abandoned_threads == 1, "the watchdog cancelled attempt 1's finished handle"
    runner.shutdown(wait=False, timeout=1)


def test_hundreds_of_queued_catch_up_runs_ended_at_stop_each_end_once() -> None:
    runner, writer = make()
    runs = [run("s")] + [run("s", QUEUED) for _ in range(400)]
    runner.stopping.set()
    runner.submit("s", lambda: None, runs, Options())
    assert runner.wait_idle(10)
    assert runner.active == 0
    assert all(len(writer.finals(each)) == 1 for each in runs)
    assert [s for s, _ in writer.finals(runs[1])] == ["skipped"]


def test_the_renewer_keeps_renewing_and_a_failed_renewal_is_logged_not_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from flowyml_lite.runtime.leases import Renewer

    class Flaky(_Lease):
        def __init__(self) -> None:
            self.calls = 0

        def renew(self, ttl_seconds: float) -> bool:
            self.calls += 1
            if self.calls == 1:
                raise ConnectionError("redis went away")
            return True

    renewer, lease = Renewer(), Flaky()
    renewal = renewer.add(lease, 0.03, "etl")  # renewed every 10 ms
    assert until(lambda: lease.calls >= 3), "not renewed after a failed renewal"
    renewal.set()
    assert until(lambda: renewer._thread is None), "the renewer thread outlived its last lease"
    assert "could not renew the lock of 'etl'" in caplog.text


def test_fires_due_before_a_rebase_are_not_measured_for_lateness() -> None:
    """Fires taken over from a stopped or lost peer (a share change), or due before start(),
    start late through no fault of this node: health's late-start count leaves them out."""
    runner, _ = make()
    before = RunRecord(
        uuid.uuid4().hex, "taken-over", datetime.now(timezone.utc) - timedelta(seconds=5), RUNNING, "n"
    )
    runner.rebase(datetime.now(timezone.utc) - timedelta(seconds=1))
    after = run("own")
    for record in (before, after):
        runner.submit(record.schedule, lambda: None, [record], Options())
    assert runner.wait_idle(10)
    assert len(runner.lags.sorted()) == 1 and runner.lags.sorted()[0] < 1.0  # only the fire due after

