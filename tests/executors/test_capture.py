"""Output capture in thread and async runs: logging records and prints, per run, bounded."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from typing import Iterator

import pytest
from executor_helpers import SAFETY, run, submit

from flowyml_lite.executors import capture
from flowyml_lite.executors.asyncio_loop import AsyncExecutor
from flowyml_lite.executors.capture import OutputBuffer
from flowyml_lite.executors.thread import ThreadExecutor
from flowyml_lite.stores.base import MAX_RUN_TEXT

log = logging.getLogger("capture_test")


@pytest.fixture
def threads() -> Iterator[ThreadExecutor]:
    ex = ThreadExecutor(max_workers=4)
    yield ex
    ex.shutdown(wait=False)


class TestBuffer:
    def test_small_text_is_kept_as_is(self) -> None:
        buffer = OutputBuffer(100)
        buffer.write("a\n")
        buffer.write("b\n")
        assert buffer.text() == "a\nb\n"

    def test_nothing_written_is_none(self) -> None:
        assert OutputBuffer().text() is None

    def test_the_tail_is_kept_within_the_bound_with_a_marker(self) -> None:
        buffer = OutputBuffer(1000)
        for i in range(10_000):
            buffer.write(f"line {i}\n")
        text = buffer.text()
        assert text is not None and len(text) <= 1000
        assert text.startswith("[... ") and "characters cut" in text
        assert text.endswith("line 9999\n")
        cut = int(text[len("[... ") :].split(" ")[0])
        kept = text.split("\n", 1)[1]
        assert cut + len(kept) == sum(len(f"line {i}\n") for i in range(10_000))


class TestLogging:
    def test_info_records_of_a_run_are_captured_whatever_the_root_level(
        self, threads: ThreadExecutor
    ) -> None:
        def job() -> None:
            log.info("an info line from the job")
            logging.getLogger("some.library").warning("a library warning")

        output = run(threads, job).output or ""
        assert "INFO capture_test: an info line from the job" in output
        assert "WARNING some.library: a library warning" in output

    def test_records_outside_runs_are_not_captured(self, threads: ThreadExecutor) -> None:
        started, go = threading.Event(), threading.Event()

        def job() -> None:
            started.set()
            go.wait(SAFETY)
            log.warning("inside")

        _, outcome = submit(threads, job)
        assert started.wait(SAFETY)
        log.warning("outside, from the test thread")
        go.set()
        output = outcome.wait().output or ""
        assert "inside" in output and "outside" not in output

    def test_concurrent_runs_do_not_mix(self, threads: ThreadExecutor) -> None:
        barrier = threading.Barrier(3, timeout=SAFETY)

        def job(name: str) -> None:
            barrier.wait()  # all three log at the same time
            for i in range(200):
                log.warning("%s %d", name, i)

        outcomes = [submit(threads, lambda n=n: job(n), schedule=n)[1] for n in ("alpha", "beta", "gamma")]
        for name, outcome in zip(("alpha", "beta", "gamma"), outcomes):
            lines = (outcome.wait().output or "").splitlines()
            assert len(lines) == 200
            assert all(f" {name} " in line for line in lines)

    def test_a_thread_the_job_starts_is_not_its_run(self, threads: ThreadExecutor) -> None:
        def job() -> None:
            worker = threading.Thread(target=lambda: log.warning("from a helper thread"))
            worker.start()
            worker.join()
            log.warning("from the job")

        output = run(threads, job).output or ""
        assert "from the job" in output and "helper" not in output

    def test_the_run_output_is_bounded(self, threads: ThreadExecutor) -> None:
        def job() -> None:
            for i in range(5000):
                log.warning("line %d %s", i, "x" * 50)

        output = run(threads, job).output or ""
        assert len(output) <= MAX_RUN_TEXT and output.rstrip().endswith("line 4999 " + "x" * 50)

    def test_the_users_root_handlers_still_see_records(self, threads: ThreadExecutor) -> None:
        seen = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                seen.append(record.getMessage())

        keep = Keep(logging.WARNING)
        logging.getLogger().addHandler(keep)
        try:
            run(threads, lambda: log.warning("to both"))
        finally:
            logging.getLogger().removeHandler(keep)
        assert "to both" in seen


class TestPrint:
    def test_prints_of_a_run_are_captured_and_still_written(
        self, threads: ThreadExecutor, capsys: pytest.CaptureFixture[str]
    ) -> None:
        output = run(threads, lambda: print("hello from print")).output or ""
        assert "hello from print\n" in output
        assert "hello from print" in capsys.readouterr().out

    def test_prints_outside_runs_are_not_captured(self, threads: ThreadExecutor) -> None:
        started, go = threading.Event(), threading.Event()

        def job() -> None:
            started.set()
            go.wait(SAFETY)
            print("job print")

        _, outcome = submit(threads, job)
        assert started.wait(SAFETY)
        print("test print")
        go.set()
        output = outcome.wait().output or ""
        assert "job print" in output and "test print" not in output

    def test_streams_are_wrapped_once(self, threads: ThreadExecutor) -> None:
        import sys

        run(threads, lambda: None)
        run(threads, lambda: None)
        assert isinstance(sys.stdout, capture.RunStream)
        assert not isinstance(sys.stdout._target, capture.RunStream)


class TestAsyncCapture:
    def test_concurrent_tasks_do_not_mix(self) -> None:
        executor = AsyncExecutor(max_workers=4)
        entered = [0]

        async def job(name: str) -> None:
            entered[0] += 1
            while entered[0] < 2:  # both tasks are inside before either logs
                await asyncio.sleep(0.01)
            for i in range(50):
                log.warning("%s %d", name, i)
                print(f"print {name} {i}")
                await asyncio.sleep(0)

        outcomes = [submit(executor, functools.partial(job, n))[1] for n in ("left", "right")]
        try:
            for name, outcome in zip(("left", "right"), outcomes):
                lines = (outcome.wait().output or "").splitlines()
                assert len(lines) == 100
                assert all(name in line for line in lines)
        finally:
            executor.shutdown()


class TestInstall:
    def test_uninstall_restores_root_level_handlers_and_streams(self) -> None:
        import sys

        capture.uninstall()
        root = logging.getLogger()
        before_level = root.level
        before_out = sys.stdout
        mine = logging.NullHandler()
        root.addHandler(mine)
        root.setLevel(logging.WARNING)
        try:
            capture.install()
            assert root.level == logging.INFO and mine.level == logging.WARNING
            assert isinstance(sys.stdout, capture.RunStream)
            capture.uninstall()
            assert root.level == logging.WARNING and mine.level == logging.NOTSET
            assert sys.stdout is before_out
            assert not any(isinstance(h, capture.RunLogHandler) for h in root.handlers)
        finally:
            root.removeHandler(mine)
            root.setLevel(before_level)

    def test_without_handlers_warnings_outside_runs_still_reach_stderr(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        root = logging.getLogger()
        saved = root.handlers[:]
        for handler in saved:
            root.removeHandler(handler)
        try:
            capture.install()
            logging.getLogger("nobody.configured").warning("still visible")
            logging.getLogger("nobody.configured").info("not shown, as before")
        finally:
            capture.uninstall()
            for handler in saved:
                root.addHandler(handler)
        err = capsys.readouterr().err
        assert "still visible" in err and "not shown" not in err

    def test_without_handlers_a_runs_warning_is_captured_once_and_still_shown(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        root = logging.getLogger()
        saved = root.handlers[:]
        for handler in saved:
            root.removeHandler(handler)
        executor = ThreadExecutor(max_workers=1)
        try:
            output = run(executor, lambda: logging.getLogger("job").warning("careful")).output or ""
        finally:
            executor.shutdown()
            capture.uninstall()
            for handler in saved:
                root.addHandler(handler)
        assert output.count("careful") == 1
        assert "careful" in capsys.readouterr().err

    def test_a_handler_writing_to_the_wrapped_stderr_does_not_double_the_record(self) -> None:
        import sys

        executor = ThreadExecutor(max_workers=1)
        run(executor, lambda: None)  # capture installed: sys.stderr is wrapped
        late = logging.StreamHandler(sys.stderr)  # as a logging.basicConfig() after the first run
        logging.getLogger().addHandler(late)
        try:
            output = run(executor, lambda: logging.getLogger("job").warning("once only")).output or ""
        finally:
            logging.getLogger().removeHandler(late)
            executor.shutdown()
        assert output.count("once only") == 1
