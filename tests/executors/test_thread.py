"""The thread executor: its own bounded pool, abandonment that keeps capacity, done exactly once."""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from typing import Any, Iterator, List

import pytest
from executor_helpers import SAFETY, context, eventually, run, submit

from flowyml_lite.executors.base import Job, JobResult
from flowyml_lite.executors.thread import ThreadExecutor
from flowyml_lite.runtime.context import RunContext, current_run


def _ignore(result: JobResult) -> None:
    """A done callback for runs whose results a test does not read."""


@pytest.fixture
def executor() -> Iterator[ThreadExecutor]:
    ex = ThreadExecutor(max_workers=2)
    yield ex
    ex.shutdown(wait=False)


class TestRuns:
    def test_the_value_and_outcome_are_reported(self, executor: ThreadExecutor) -> None:
        result = run(executor, lambda: 41 + 1)
        assert result.success and result.value == 42 and result.error is None

    def test_current_run_is_the_jobs_context_inside_and_none_after(self, executor: ThreadExecutor) -> None:
        seen: List[Any] = []
        result = run(executor, lambda: seen.append(current_run()), schedule="nightly")
        assert result.success
        assert isinstance(seen[0], RunContext) and seen[0].schedule == "nightly"

    def test_an_exception_fails_the_run_with_its_traceback(self, executor: ThreadExecutor) -> None:
        def boom() -> None:
            raise ValueError("bad row 7")

        result = run(executor, boom)
        assert not result.success and result.error == "ValueError: bad row 7"
        assert result.traceback is not None and "in boom" in result.traceback
        assert "builtins.ValueError" in result.exception_types

    def test_a_failed_pipeline_result_gives_its_error(self, executor: ThreadExecutor) -> None:
        import executor_jobs

        result = run(executor, executor_jobs.failing_pipeline)
        assert not result.success and result.run_id == result.value.run_id
        assert "warehouse unreachable" in (result.error or "")

    def test_system_exit_in_a_job_is_a_failed_run_not_a_dead_worker(self, executor: ThreadExecutor) -> None:
        def leave() -> None:
            raise SystemExit(2)

        assert run(executor, leave).error == "SystemExit: 2"
        assert run(executor, lambda: "still serving").value == "still serving"

    def test_an_async_function_is_awaited_not_dropped(self, executor: ThreadExecutor) -> None:
        ran: List[str] = []

        async def job() -> str:
            ran.append("yes")
            return "awaited"

        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # "coroutine ... was never awaited"
            result = run(executor, job)
        assert ran == ["yes"] and result.value == "awaited"

    def test_done_is_called_once_on_another_thread(self, executor: ThreadExecutor) -> None:
        _, outcome = submit(executor, lambda: None)
        outcome.wait()
        assert len(outcome.results) == 1
        assert outcome.threads[0] != threading.current_thread().name

    def test_a_failing_done_is_logged_and_the_pool_goes_on(
        self, executor: ThreadExecutor, caplog: pytest.LogCaptureFixture
    ) -> None:
        from executor_helpers import context

        from flowyml_lite.executors.base import Job

        called = threading.Event()

        def bad_done(result: Any) -> None:
            called.set()
            raise RuntimeError("callback broke")

        with caplog.at_level(logging.ERROR, logger="flowyml_lite.executors.thread"):
            executor.submit(Job(lambda: None, None, context()), bad_done)
            assert called.wait(SAFETY)
            assert eventually(lambda: any("done callback" in r.message for r in caplog.records))
        assert run(executor, lambda: 1).value == 1


class TestCapacity:
    def test_no_more_than_max_workers_run_at_once(self) -> None:
        executor = ThreadExecutor(max_workers=2)
        lock = threading.Lock()
        running = [0]
        peak = [0]
        release = threading.Event()

        def job() -> None:
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            release.wait(SAFETY)
            with lock:
                running[0] -= 1

        outcomes = [submit(executor, job)[1] for _ in range(6)]
        assert eventually(lambda: running[0] == 2)
        release.set()
        for o in outcomes:
            assert o.wait().success
        assert peak[0] == 2 and executor.live_threads <= 2
        executor.shutdown()

    def test_a_burst_of_short_jobs_is_drained_by_the_thread_already_awake(self, monkeypatch: Any) -> None:
        # Every awake thread counts as about to take the next run: no other thread joins in.
        monkeypatch.setattr("flowyml_lite.executors.thread.BUSY_SECONDS", 3600.0)
        executor = ThreadExecutor(max_workers=8)
        threads: List[str] = []
        items = [(Job(lambda: threads.append(threading.current_thread().name), None, context()), _ignore)]
        executor.submit_many(items * 500)
        assert eventually(lambda: len(threads) == 500)
        assert len(set(threads)) == 1 and executor.live_threads <= 2  # one runs, one watches
        executor.shutdown()

    def test_jobs_of_a_few_milliseconds_that_block_get_threads_of_their_own(self) -> None:
        # None lasts the 10 ms that marks a long job, but together one after another they would
        # start the last one 100 ms late: the pool sees jobs take milliseconds, and grows.
        executor = ThreadExecutor(max_workers=10)
        lock = threading.Lock()
        running = [0]
        peak = [0]

        def job() -> None:
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.005)  # a short query
            with lock:
                running[0] -= 1

        done: List[JobResult] = []
        for _ in range(3):  # fires of a 0.1 s schedule group, 20 at a time
            executor.submit_many([(Job(job, None, context()), done.append) for _ in range(20)])
            assert eventually(lambda: running[0] == 0 and not executor.waiting())
        assert eventually(lambda: len(done) == 60)
        assert peak[0] >= 5
        executor.shutdown()

    def test_runs_queued_behind_jobs_that_block_each_get_a_thread(self) -> None:
        executor = ThreadExecutor(max_workers=4)
        release = threading.Event()
        started = [threading.Event() for _ in range(4)]

        def blocking(i: int) -> None:
            started[i].set()
            release.wait(SAFETY)

        items = [(Job(lambda i=i: blocking(i), None, context()), _ignore) for i in range(4)]
        executor.submit_many(items)
        assert all(event.wait(SAFETY) for event in started)  # all four at once, one thread each
        release.set()
        executor.shutdown()

    def test_a_run_submitted_while_the_only_awake_thread_blocks_gets_another(self) -> None:
        executor = ThreadExecutor(max_workers=2)
        release, entered = threading.Event(), threading.Event()
        _, blocked = submit(executor, lambda: (entered.set(), release.wait(SAFETY)))
        assert entered.wait(SAFETY)
        assert run(executor, lambda: "not behind the blocked one").value == "not behind the blocked one"
        assert not blocked.event.is_set()
        release.set()
        assert blocked.wait().success
        executor.shutdown()

    def test_a_run_gets_a_thread_while_another_thread_is_held_up_ending_its_run(self) -> None:
        # The thread that ran A is inside A's done callback (for the scheduler: recording it,
        # starting the next catch-up run on a slow store): B does not wait for it.
        executor = ThreadExecutor(max_workers=2)
        in_callback, release = threading.Event(), threading.Event()

        def slow_done(result: JobResult) -> None:
            in_callback.set()
            release.wait(SAFETY)

        executor.submit(Job(lambda: None, None, context("a")), slow_done)
        assert in_callback.wait(SAFETY)
        _, b = submit(executor, lambda: "b ran")
        try:
            assert b.wait(30).value == "b ran"
        finally:
            release.set()
        executor.shutdown()

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
    def test_a_process_forked_after_the_pool_has_threads_runs_jobs_on_its_own(self) -> None:
        executor = ThreadExecutor(max_workers=2)
        assert run(executor, lambda: "parent").value == "parent"
        pid = os.fork()
        if pid == 0:  # the child: its pool starts threads of its own
            ok = False
            try:
                ok = all(run(executor, lambda i=i: i, schedule=f"c{i}").value == i for i in range(3))
            finally:
                os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        assert run(executor, lambda: "parent again").value == "parent again"
        executor.shutdown()

    def test_a_pool_full_of_hung_runs_names_them_once_runs_wait_long_for_a_thread(
        self, monkeypatch: Any
    ) -> None:
        monkeypatch.setattr("flowyml_lite.executors.thread.POOL_FULL_SECONDS", 0.3)
        executor = ThreadExecutor(max_workers=2)
        release = threading.Event()
        hung = [submit(executor, lambda: release.wait(SAFETY), schedule=f"hang{i}")[1] for i in range(2)]
        waiting = [submit(executor, lambda: None, schedule=f"canary{i}")[1] for i in range(3)]
        assert executor.problem() is None  # waiting a moment for a thread is no problem
        assert eventually(lambda: executor.problem() is not None)
        problem = executor.problem() or ""
        assert problem.startswith("all 2 run threads are busy and 3 run(s) wait for one")
        assert "'hang0' for" in problem and "'hang1' for" in problem and "canary" not in problem
        release.set()
        for o in hung + waiting:
            assert o.wait().success
        assert executor.problem() is None
        executor.shutdown()

    def test_an_abandoned_thread_is_replaced_and_its_late_result_discarded(self) -> None:
        executor = ThreadExecutor(max_workers=1)
        entered, release = threading.Event(), threading.Event()

        def hung() -> str:
            entered.set()
            release.wait(SAFETY)
            return "late"

        handle, hung_outcome = submit(executor, hung, schedule="hung")
        assert entered.wait(SAFETY)
        assert handle.cancel() is False  # a thread cannot be stopped
        result = hung_outcome.wait()
        assert result.cancelled and not result.success
        assert "cannot be stopped" in (result.error or "")
        assert result.traceback is not None and "in hung" in result.traceback  # where it hangs
        assert executor.abandoned_threads == 1

        # The pool's only slot was taken by the hung job, yet new work runs.
        assert run(executor, lambda: "fresh").value == "fresh"

        release.set()
        assert eventually(lambda: executor.abandoned_threads == 0)
        assert len(hung_outcome.results) == 1  # the late "late" result was discarded
        assert handle.cancel() is False  # already reported
        executor.shutdown()

    def test_many_hung_jobs_never_take_the_capacity(self) -> None:
        executor = ThreadExecutor(max_workers=2)
        release = threading.Event()
        for _ in range(5):
            started = threading.Event()

            def hung(started: threading.Event = started) -> None:
                started.set()
                release.wait(SAFETY)

            handle, outcome = submit(executor, hung)
            assert started.wait(SAFETY)
            handle.cancel()
            outcome.wait()
        assert executor.abandoned_threads == 5 and executor.live_threads <= 2
        assert [run(executor, lambda i=i: i).value for i in range(4)] == [0, 1, 2, 3]
        release.set()
        executor.shutdown()

    def test_a_queued_job_cancelled_never_runs(self) -> None:
        executor = ThreadExecutor(max_workers=1)
        release = threading.Event()
        ran: List[str] = []
        _, first = submit(executor, lambda: release.wait(SAFETY))
        handle, queued = submit(executor, lambda: ran.append("ran"))
        assert handle.cancel() is True
        result = queued.wait()
        assert result.cancelled and "before it started" in (result.error or "")
        release.set()
        first.wait()
        executor.shutdown()
        assert ran == [] and len(queued.results) == 1


class TestShutdown:
    def test_shutdown_without_wait_reports_every_job(self) -> None:
        executor = ThreadExecutor(max_workers=1)
        release = threading.Event()
        entered = threading.Event()

        def hung() -> None:
            entered.set()
            release.wait(SAFETY)

        _, running = submit(executor, hung)
        assert entered.wait(SAFETY)
        _, queued = submit(executor, lambda: None)
        executor.shutdown(wait=False)
        assert running.wait().cancelled and queued.wait().cancelled
        release.set()

    def test_shutdown_with_wait_lets_queued_jobs_finish(self) -> None:
        executor = ThreadExecutor(max_workers=1)
        outcomes = [submit(executor, lambda i=i: i)[1] for i in range(5)]
        executor.shutdown(wait=True, timeout=SAFETY)
        assert [o.wait().value for o in outcomes] == [0, 1, 2, 3, 4]

    def test_submit_after_shutdown_is_refused(self) -> None:
        executor = ThreadExecutor(max_workers=1)
        executor.shutdown()
        with pytest.raises(RuntimeError, match="shut down"):
            submit(executor, lambda: None)

    def test_max_workers_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="max_workers"):
            ThreadExecutor(max_workers=0)


class TestNoThreadToBeHad:
    """A process out of threads (``can't start new thread``): runs are refused or go on, never lost."""

    def test_with_no_thread_at_all_submit_refuses_and_queues_nothing(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        ex = ThreadExecutor(max_workers=2)

        def no_thread(self: threading.Thread) -> None:
            raise RuntimeError("can't start new thread")

        monkeypatch.setattr(threading.Thread, "start", no_thread)
        with pytest.raises(RuntimeError, match="can't start new thread"):
            submit(ex, lambda: None)
        assert ex.live_threads == 0 and len(ex._queue) == 0
        monkeypatch.undo()
        assert run(ex, lambda: 7).value == 7  # threads again: the pool works
        ex.shutdown(wait=True, timeout=SAFETY)

    def test_with_one_thread_the_runs_still_all_end(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        ex = ThreadExecutor(max_workers=4)
        assert run(ex, lambda: 1).value == 1  # one thread is there
        real_start = threading.Thread.start

        def only_pool_threads_fail(self: threading.Thread) -> None:
            if self.name.startswith("flowyml-run"):
                raise RuntimeError("can't start new thread")
            real_start(self)

        monkeypatch.setattr(threading.Thread, "start", only_pool_threads_fail)
        with caplog.at_level(logging.WARNING, logger="flowyml_lite.executors.thread"):
            outcomes = [submit(ex, lambda i=i: i)[1] for i in range(20)]
            assert [o.wait().value for o in outcomes] == list(range(20))
        assert ex.live_threads == 1
        assert "could not start another run thread" in caplog.text
        monkeypatch.undo()
        ex.shutdown(wait=True, timeout=SAFETY)


class TestShutdownFromInside:
    def test_a_run_that_shuts_its_own_pool_down_does_not_wait_for_itself(self) -> None:
        import time

        ex = ThreadExecutor(max_workers=2)
        took: List[float] = []

        def job() -> None:
            began = time.monotonic()
            ex.shutdown(wait=True, timeout=60)
            took.append(time.monotonic() - began)

        _, outcome = submit(ex, job)
        result = outcome.wait()  # once: the run is ended by its own shutdown (stopped) or by itself
        assert eventually(lambda: len(took) == 1)
        assert took[0] < 30, "shutdown(wait=True) inside a run waited for that run's own thread"
        assert result is not None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
class TestAJobThatForks:
    def test_a_child_returning_from_the_job_exits_and_only_the_parent_reports(self, capfd: Any) -> None:
        """A forked child that falls back into the run thread must not record the run or serve
        runs: it exits (as if it had called os._exit) and the parent's result is the run's."""
        executor = ThreadExecutor(max_workers=1)

        def job() -> Any:
            child = os.fork()
            if child == 0:
                return "child"  # forgot os._exit
            _, status = os.waitpid(child, 0)  # the child must end for this to return
            return ("parent", status >> 8)  # its exit code

        _, outcome = submit(executor, job, schedule="forker")
        result = outcome.wait(30)
        assert result.success and len(outcome.results) == 1
        assert result.value == ("parent", 0)
        assert "the child process" in capfd.readouterr().err
        executor.shutdown()
