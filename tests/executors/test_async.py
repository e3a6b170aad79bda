"""The async executor: async def jobs as tasks on one owned loop, concurrent, cancellable."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Iterator, List

import pytest
from executor_helpers import SAFETY, eventually, run, submit

from flowyml_lite import PipelineScheduler, SchedulerConfig
from flowyml_lite.executors.asyncio_loop import AsyncExecutor, is_async
from flowyml_lite.runtime.context import current_run


@pytest.fixture
def executor() -> Iterator[AsyncExecutor]:
    ex = AsyncExecutor(max_workers=4)
    yield ex
    ex.shutdown(wait=False)


class TestRuns:
    def test_an_async_job_is_awaited_with_its_context(self, executor: AsyncExecutor) -> None:
        async def job() -> str:
            await asyncio.sleep(0)
            run_ = current_run()
            return f"{run_.schedule if run_ else None} on {threading.current_thread().name}"

        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # "coroutine ... was never awaited"
            result = run(executor, job, schedule="etl")
        assert result.success and result.value == "etl on flowyml-async-loop"

    def test_an_exception_fails_the_run(self, executor: AsyncExecutor) -> None:
        async def job() -> None:
            await asyncio.sleep(0)
            raise ConnectionError("upstream down")

        result = run(executor, job)
        assert not result.success and result.error == "ConnectionError: upstream down"
        assert result.traceback is not None and "in job" in result.traceback

    def test_a_sync_function_runs_on_a_thread(self, executor: AsyncExecutor) -> None:
        result = run(executor, lambda: threading.current_thread().name)
        assert result.success and result.value.startswith("flowyml-async-sync")

    def test_the_loop_outlives_a_job_raising_system_exit(self, executor: AsyncExecutor) -> None:
        async def leave() -> None:
            raise SystemExit(1)

        async def fine() -> int:
            return 1

        assert run(executor, leave).error == "SystemExit: 1"
        assert run(executor, fine).value == 1

    def test_is_async_sees_partials_and_async_callables(self) -> None:
        async def job(x: int) -> int:
            return x

        class Callable_:
            async def __call__(self) -> None:
                pass

        assert is_async(job) and is_async(functools.partial(job, 1)) and is_async(Callable_())
        assert not is_async(lambda: None)


class TestConcurrency:
    def test_jobs_run_concurrently_on_the_one_loop(self, executor: AsyncExecutor) -> None:
        inside = [0]
        threads: List[str] = []

        async def job() -> None:
            threads.append(threading.current_thread().name)
            inside[0] += 1
            while inside[0] < 3:  # passes only if all three are inside at once
                await asyncio.sleep(0.01)

        outcomes = [submit(executor, job)[1] for _ in range(3)]
        assert all(o.wait().success for o in outcomes)
        assert set(threads) == {"flowyml-async-loop"}

    def test_no_more_than_max_workers_are_awaited_at_once(self) -> None:
        executor = AsyncExecutor(max_workers=2)
        running = [0]
        peak = [0]
        gate = threading.Event()

        async def job() -> None:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            while not gate.is_set():
                await asyncio.sleep(0.01)
            running[0] -= 1

        outcomes = [submit(executor, job)[1] for _ in range(5)]
        assert eventually(lambda: running[0] == 2)
        gate.set()
        assert all(o.wait().success for o in outcomes)
        assert peak[0] == 2
        executor.shutdown()


class TestCancel:
    def test_cancel_cancels_the_task(self, executor: AsyncExecutor) -> None:
        entered = threading.Event()
        saw: List[str] = []

        async def job() -> None:
            entered.set()
            try:
                await asyncio.sleep(SAFETY * 10)
            except asyncio.CancelledError:
                saw.append("cancelled")
                raise

        handle, outcome = submit(executor, job)
        assert entered.wait(SAFETY)
        assert handle.cancel() is True
        result = outcome.wait()
        assert result.cancelled and not result.success and saw == ["cancelled"]
        assert handle.cancel() is False
        assert len(outcome.results) == 1

    def test_a_waiting_task_cancelled_never_runs(self) -> None:
        executor = AsyncExecutor(max_workers=1)
        gate = threading.Event()
        ran: List[str] = []

        async def blocker() -> None:
            while not gate.is_set():
                await asyncio.sleep(0.01)

        async def waiting() -> None:
            ran.append("ran")

        _, first = submit(executor, blocker)
        handle, second = submit(executor, waiting)
        assert handle.cancel() is True
        assert second.wait().cancelled
        gate.set()
        assert first.wait().success and ran == []
        executor.shutdown()

    def test_shutdown_reports_running_tasks(self) -> None:
        executor = AsyncExecutor(max_workers=2)
        entered = threading.Event()

        async def forever() -> None:
            entered.set()
            await asyncio.sleep(SAFETY * 10)

        _, outcome = submit(executor, forever)
        assert entered.wait(SAFETY)
        executor.shutdown(wait=False)
        assert outcome.wait().cancelled
        with pytest.raises(RuntimeError, match="shut down"):
            submit(executor, forever)


class TestBlockedLoop:
    def test_a_run_blocking_the_loop_is_named_while_it_blocks(self, executor: AsyncExecutor) -> None:
        """A blocking call in an async def holds the one loop: the executor says so, naming the run,
        so health blames it and not the async runs that wait behind it."""
        import time

        release = threading.Event()

        async def blocking() -> None:
            release.wait(SAFETY)  # a synchronous wait inside a coroutine: the loop stops going round

        assert executor.problem() is None
        _, outcome = submit(executor, blocking, schedule="hog")
        try:
            assert eventually(lambda: executor.problem() is not None)
            problem = executor.problem() or ""
            assert "event loop has been blocked" in problem and "by the run of 'hog'" in problem
        finally:
            release.set()
        assert outcome.wait().success
        deadline = time.monotonic() + SAFETY
        while executor.problem() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert executor.problem() is None


def child_ended(pid: int) -> bool:
    """Whether child ``pid`` exits within 20 s (else it is killed, and False)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return False


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
class TestAJobThatForks:
    """A forked child that goes back to the event loop must not go on with (or end) the parent's
    other runs, nor outlive them holding its sockets: it exits, and only the parent reports."""

    @pytest.mark.parametrize("child_awaits", [False, True], ids=["child-returns", "child-awaits"])
    def test_the_child_runs_none_of_the_loops_other_runs_and_exits(
        self, executor: AsyncExecutor, tmp_path: Path, capfd: pytest.CaptureFixture[str], child_awaits: bool
    ) -> None:
        log = tmp_path / "ends"

        async def slow() -> None:
            await asyncio.sleep(0.5)
            with open(log, "a") as out:
                out.write(f"{os.getpid()}\n")

        async def forker() -> int:
            child = os.fork()
            if child == 0 and child_awaits:
                await asyncio.sleep(0.1)  # the child's copy of the loop stops here
            return child  # 0 in the child: back into the executor without os._exit

        _, slow_outcome = submit(executor, slow)
        _, fork_outcome = submit(executor, forker, schedule="forker")
        forked = fork_outcome.wait(SAFETY)
        assert forked is not None and forked.success and forked.value > 0
        assert child_ended(forked.value), "the forked child went on running the parent's loop"
        assert slow_outcome.wait(SAFETY) is not None
        assert log.read_text().split() == [str(os.getpid())]  # the rest of `slow` ran once, here
        assert len(fork_outcome.results) == 1
        assert "went back to the scheduler: it exits here" in capfd.readouterr().err


def _raise_system_exit() -> None:
    raise SystemExit(3)


class TestALoopStoppedUnderItsRuns:
    """A job that stops the one event loop, or a callback whose SystemExit ends its thread, must not
    end async runs for good: the runs in flight on it end failed, and a new loop runs the next ones."""

    @pytest.mark.parametrize("how", ["loop-stop", "callback-system-exit"])
    def test_the_next_run_starts_on_a_new_loop(self, executor: AsyncExecutor, how: str) -> None:
        threads: List[threading.Thread] = []

        async def bad() -> None:
            threads.append(threading.current_thread())
            loop = asyncio.get_running_loop()
            if how == "loop-stop":
                loop.stop()
            else:
                loop.call_soon(_raise_system_exit)  # out of run_forever: the loop's thread ends
            await asyncio.sleep(SAFETY)

        async def good() -> str:
            await asyncio.sleep(0)
            return threading.current_thread().name

        submit(executor, bad, schedule="bad")
        assert eventually(lambda: bool(threads) and not threads[0].is_alive())
        result = run(executor, good)
        assert result.success and result.value == "flowyml-async-loop"

    def test_the_runs_in_flight_on_it_end_failed_and_say_why(
        self, executor: AsyncExecutor, caplog: pytest.LogCaptureFixture
    ) -> None:
        entered = threading.Event()

        async def victim() -> None:
            entered.set()
            await asyncio.sleep(SAFETY)

        async def bad() -> None:
            asyncio.get_running_loop().stop()
            await asyncio.sleep(SAFETY)

        _, victim_outcome = submit(executor, victim, schedule="victim")
        assert entered.wait(SAFETY)
        ended = run(executor, bad, schedule="bad")  # no timeout: nothing but the executor ends it
        for result in (ended, victim_outcome.wait()):
            assert not result.success and not result.cancelled
            assert result.exception_type == "EventLoopStoppedError"
            assert "event loop stopped while the run was in flight: a job stopped it" in (result.error or "")
        assert len(victim_outcome.results) == 1
        assert "event loop stopped while in use" in caplog.text and "'bad', 'victim'" in caplog.text

    def test_a_run_still_waiting_for_its_turn_moves_to_the_new_loop(self) -> None:
        executor = AsyncExecutor(max_workers=2)
        entered, handed = threading.Event(), threading.Event()
        threads: List[threading.Thread] = []

        async def victim() -> None:
            threads.append(threading.current_thread())
            entered.set()
            await asyncio.sleep(SAFETY)

        async def bad() -> None:
            while not handed.is_set():
                await asyncio.sleep(0.01)
            for _ in range(5):  # the waiting run's task is made, and waits for a free slot
                await asyncio.sleep(0)
            asyncio.get_running_loop().stop()
            await asyncio.sleep(SAFETY)

        async def waiting() -> threading.Thread:
            return threading.current_thread()

        try:
            _, victim_outcome = submit(executor, victim, schedule="victim")
            assert entered.wait(SAFETY)
            _, bad_outcome = submit(executor, bad, schedule="bad")
            _, waiting_outcome = submit(executor, waiting, schedule="waiting")
            handed.set()
            assert not victim_outcome.wait().success and not bad_outcome.wait().success
            moved = waiting_outcome.wait()
            assert moved.success and moved.value is not threads[0]
            assert len(waiting_outcome.results) == 1
        finally:
            executor.shutdown(wait=False)

    def test_health_says_so_while_no_new_loop_can_be_started(
        self, executor: AsyncExecutor, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async def bad() -> None:
            asyncio.get_running_loop().stop()
            await asyncio.sleep(SAFETY)

        async def good() -> int:
            return 1

        assert run(executor, good).value == 1 and executor.problem() is None

        def no_thread(self: threading.Thread) -> None:
            raise RuntimeError("can't start new thread")

        monkeypatch.setattr(threading.Thread, "start", no_thread)  # a pids limit
        assert not run(executor, bad).success
        problem = executor.problem() or ""
        assert "could not start an event loop" in problem and "can't start new thread" in problem
        with pytest.raises(RuntimeError, match="can't start new thread"):
            submit(executor, good)
        monkeypatch.undo()
        assert run(executor, good).value == 1 and executor.problem() is None


class TestASchedulerWithAJobThatStopsTheLoop:
    def test_its_run_ends_and_the_next_run_of_another_async_schedule_succeeds(self) -> None:
        async def bad() -> None:
            asyncio.get_running_loop().stop()
            await asyncio.sleep(SAFETY)

        async def good() -> None:
            await asyncio.sleep(0)

        scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False))
        scheduler.schedule_interval("bad", bad, seconds=3600)  # no timeout: it must end all the same
        scheduler.schedule_interval("good", good, seconds=3600, timeout_seconds=60)
        try:
            ended = scheduler.run_now("bad", wait=True, timeout=SAFETY)
            assert ended["status"] == "failed" and "EventLoopStoppedError" in ended["error"]
            assert scheduler.run_now("good", wait=True, timeout=SAFETY)["status"] == "succeeded"
            assert scheduler.run_now("good", wait=True, timeout=SAFETY)["status"] == "succeeded"
        finally:
            scheduler.stop(timeout=5)


class TestStopAfterAnAsyncRunTimedOut:
    """An async run past its timeout that blocks the loop or swallows its cancellation is abandoned:
    stop(timeout) does not wait for it again, and keeps to its timeout."""

    @pytest.mark.parametrize("hang", ["blocks-the-loop", "ignores-cancellation"])
    def test_stop_keeps_to_its_timeout(self, hang: str) -> None:
        release = threading.Event()

        async def blocks() -> None:
            release.wait(SAFETY)  # a synchronous wait: the loop stops going round

        async def ignores() -> None:
            while not release.is_set():
                with contextlib.suppress(asyncio.CancelledError):  # swallowed: the job goes on
                    await asyncio.sleep(0.05)

        scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False))
        job = blocks if hang == "blocks-the-loop" else ignores
        scheduler.schedule_interval("hung", job, seconds=3600, timeout_seconds=1)
        scheduler.start()
        try:
            assert scheduler.run_now("hung", wait=True, timeout=SAFETY)["status"] == "timed_out"
            began = time.monotonic()
            scheduler.stop(timeout=2)
            # The documented bound: its timeout, plus a second or two for the steps that wait.
            assert time.monotonic() - began < 2 + 2
        finally:
            release.set()
            scheduler.stop(timeout=5)


class TestAnAbandonedTask:
    def test_collected_later_it_leaves_the_collecting_runs_capture_alone(self) -> None:
        """A task that swallowed its cancellation is left pending on the closed loop; when the
        garbage collector closes its coroutine, on whatever thread, that run's own output goes on."""
        from flowyml_lite.executors import capture

        entered = threading.Event()

        async def ignores() -> None:
            entered.set()
            while True:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(0.05)

        executor = AsyncExecutor(max_workers=1)
        handle, outcome = submit(executor, ignores)
        assert entered.wait(SAFETY)
        executor.shutdown(wait=False)
        assert outcome.wait().cancelled
        buffer = capture.OutputBuffer()
        token = capture.CURRENT_OUTPUT.set(buffer)  # as on the thread of another run
        try:
            del executor, handle
            gc.collect()
            assert capture.CURRENT_OUTPUT.get() is buffer
        finally:
            capture.CURRENT_OUTPUT.reset(token)
