"""The process executor with real child processes: crashes, kills, big output, leaks, refusals."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set

import executor_jobs as jobs
import pytest
from executor_helpers import SAFETY, eventually, run, submit

from flowyml_lite.errors import ScheduleError
from flowyml_lite.executors.process import ProcessExecutor
from flowyml_lite.stores.base import MAX_RUN_TEXT

pytestmark = pytest.mark.skipif(not hasattr(os, "killpg"), reason="POSIX process groups")


@pytest.fixture(scope="module")
def executor() -> Iterator[ProcessExecutor]:
    ex = ProcessExecutor(max_workers=4, grace_seconds=1.0)
    yield ex
    ex.shutdown(wait=False)


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def descendants() -> Set[int]:
    """Every process below this one (children of the fork server included)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass
    found: Set[int] = set()
    frontier = {os.getpid()}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def open_fds() -> List[str]:
    return sorted(os.listdir("/proc/self/fd"))


def read_pids(path: Path) -> List[int]:
    assert eventually(path.exists), "the job never wrote its pids"
    return [int(p) for p in path.read_text().split()]


class TestOutcomes:
    def test_a_run_reports_its_verdict_output_and_context(self, executor: ProcessExecutor) -> None:
        result = run(executor, jobs.chatty, schedule="nightly")
        assert result.success and result.run_id == str(jobs.RUN_ID) and result.value is None
        output = result.output or ""
        assert "INFO executor_jobs: info from the child" in output
        assert "printed by the job" in output and "to stderr" in output
        assert "current_run: nightly attempt 1" in output
        assert f"child {os.getpid()}" not in output  # it ran in another process

    def test_a_failed_result_keeps_its_error_and_run_id_as_text(self, executor: ProcessExecutor) -> None:
        result = run(executor, jobs.fail_with_error)
        assert (result.success, result.run_id, result.error) == (False, "7", "the pipeline's own error")

    def test_a_success_that_is_not_a_bool_succeeds(self, executor: ProcessExecutor) -> None:
        assert run(executor, jobs.string_success).success

    def test_a_failed_pipeline_result_gives_its_error_and_run_id(self, executor: ProcessExecutor) -> None:
        result = run(executor, jobs.failing_pipeline)
        assert not result.success and result.run_id
        assert "warehouse unreachable" in (result.error or "")

    def test_an_exception_crosses_back_as_text(self, executor: ProcessExecutor) -> None:
        result = run(executor, jobs.raise_key_error)
        assert not result.success and result.error == "KeyError: 'missing'"
        assert result.exception_type == "KeyError"
        assert "builtins.LookupError" in result.exception_types
        assert result.traceback is not None and "in raise_key_error" in result.traceback

    def test_an_async_job_is_awaited_in_the_child(self, executor: ProcessExecutor) -> None:
        result = run(executor, jobs.async_job)
        assert result.success and result.run_id == "async-run"
        assert "async job ran" in (result.output or "")

    def test_a_bound_method_of_a_picklable_object_runs(self, executor: ProcessExecutor) -> None:
        pipeline = jobs.Pipeline("sales")
        executor.check(pipeline.run, None)
        result = run(executor, pipeline.run)
        assert result.success and result.run_id == "sales" and "pipeline sales" in (result.output or "")


class TestCrashes:
    def test_an_exit_code_fails_the_run(self, executor: ProcessExecutor) -> None:
        result = run(executor, jobs.exit_3)
        assert not result.success and result.exit_code == 3 and result.signal is None
        assert result.error == "the run's process exited with code 3"

    def test_a_segfault_fails_the_run_with_its_signal(self, executor: ProcessExecutor) -> None:
        result = run(executor, jobs.segfault)
        assert not result.success and result.signal == 11
        assert result.error == "the run's process was killed by signal SIGSEGV"
        assert "Fatal Python error" in (result.output or "")  # faulthandler's stack

    def test_a_killed_child_fails_the_run(self, executor: ProcessExecutor) -> None:
        result = run(executor, jobs.kill_self)
        assert result.signal == 9 and result.error == "the run's process was killed by signal SIGKILL"

    def test_the_executor_serves_on_after_crashes(self, executor: ProcessExecutor) -> None:
        for crash in (jobs.exit_3, jobs.segfault):
            run(executor, crash)
        assert run(executor, jobs.succeed).success


class TestCancel:
    def test_cancel_kills_the_whole_process_group(self, executor: ProcessExecutor, tmp_path: Path) -> None:
        pid_file = tmp_path / "pids"
        handle, outcome = submit(executor, functools.partial(jobs.hang_with_grandchild, str(pid_file)))
        child, grandchild = read_pids(pid_file)
        assert alive(child) and alive(grandchild)
        assert handle.cancel() is True
        result = outcome.wait()
        # SIGTERM ends it; SIGKILL only if a very busy machine let the grace period pass first.
        assert result.cancelled and not result.success and result.signal in (15, 9)
        assert eventually(lambda: not alive(child) and not alive(grandchild))
        assert handle.cancel() is False

    def test_a_child_ignoring_sigterm_gets_sigkill(self, executor: ProcessExecutor, tmp_path: Path) -> None:
        pid_file = tmp_path / "pid"
        handle, outcome = submit(executor, functools.partial(jobs.hang_ignoring_sigterm, str(pid_file)))
        (child,) = read_pids(pid_file)
        handle.cancel()
        result = outcome.wait()
        assert result.cancelled and result.signal == 9
        assert eventually(lambda: not alive(child))

    def test_a_queued_job_cancelled_never_starts(self, tmp_path: Path) -> None:
        executor = ProcessExecutor(max_workers=1, grace_seconds=1.0)
        pid_file = tmp_path / "pid"
        first, first_outcome = submit(executor, functools.partial(jobs.hang_ignoring_sigterm, str(pid_file)))
        second, second_outcome = submit(executor, jobs.succeed)
        assert second.cancel() is True
        assert "before it started" in (second_outcome.wait().error or "")
        read_pids(pid_file)
        first.cancel()
        assert first_outcome.wait().cancelled
        executor.shutdown()

    def test_shutdown_without_wait_kills_running_children(self, tmp_path: Path) -> None:
        executor = ProcessExecutor(max_workers=2, grace_seconds=1.0)
        pid_file = tmp_path / "pids"
        _, outcome = submit(executor, functools.partial(jobs.hang_with_grandchild, str(pid_file)))
        child, grandchild = read_pids(pid_file)
        executor.shutdown(wait=False)
        assert outcome.wait().cancelled
        assert eventually(lambda: not alive(child) and not alive(grandchild))


class TestOutput:
    def test_ten_megabytes_of_stdout_neither_deadlock_nor_grow(self, executor: ProcessExecutor) -> None:
        result = run(executor, jobs.ten_megabytes)
        assert result.success
        output = result.output or ""
        assert len(output) <= MAX_RUN_TEXT
        assert output.rstrip().endswith("END OF OUTPUT")
        assert "bytes cut" in output


@pytest.mark.slow
class TestLeaks:
    def test_two_hundred_runs_leak_no_process_and_no_descriptor(self, executor: ProcessExecutor) -> None:
        assert run(executor, jobs.succeed).success  # the fork server is up
        fds_before, procs_before = open_fds(), descendants()
        outcomes = [submit(executor, jobs.chatty if i % 2 else jobs.exit_3)[1] for i in range(200)]
        results = [o.wait() for o in outcomes]
        assert sum(r.success for r in results) == 100
        # Concurrent starts and exits never garble an exit status (multiprocessing's shared status pipe).
        assert {r.exit_code for r in results if not r.success} == {3}
        assert all(len(o.results) == 1 for o in outcomes)
        assert eventually(lambda: descendants() == procs_before), descendants() - procs_before
        assert eventually(lambda: open_fds() == fds_before), (fds_before, open_fds())


class TestCheck:
    def _refusal(self, func: object) -> str:
        with pytest.raises(ScheduleError) as info:
            ProcessExecutor(max_workers=1).check(func, None)  # type: ignore[arg-type]
        return str(info.value)

    def test_a_lambda_is_refused_with_why_and_what_to_do(self) -> None:
        message = self._refusal(lambda: None)
        assert "lambda" in message and "module level in an importable module" in message

    def test_a_closure_is_refused(self) -> None:
        secret = 3

        def closure() -> int:
            return secret

        assert "defined inside another function" in self._refusal(closure)

    def test_a_function_of_main_is_refused(self) -> None:
        def job() -> None:
            pass

        job.__module__ = "__main__"
        job.__qualname__ = "job"
        assert "__main__" in self._refusal(job)

    def test_a_method_of_an_unpicklable_object_is_refused(self) -> None:
        message = self._refusal(jobs.Locked().run)
        assert "a method of a Locked object that cannot be pickled" in message

    def test_module_level_functions_are_accepted(self) -> None:
        executor = ProcessExecutor(max_workers=1)
        for func in (jobs.succeed, jobs.async_job, functools.partial(jobs.hang_ignoring_sigterm, "x")):
            executor.check(func, None)

    def test_fork_is_refused(self) -> None:
        with pytest.raises(ValueError, match="never forks"):
            ProcessExecutor(start_method="fork")


def test_the_spawn_start_method_works_too() -> None:
    executor = ProcessExecutor(max_workers=1, start_method="spawn")
    try:
        result = run(executor, jobs.chatty)
        assert result.success and "printed by the job" in (result.output or "")
        assert run(executor, jobs.exit_3).exit_code == 3
    finally:
        executor.shutdown()
    assert sys.modules.get("__main__") is not None


SCHEDULER = r"""
import functools, os, signal, sys, time
sys.path[:0] = [{root!r}, {here!r}]
from datetime import datetime, timezone
import executor_jobs as jobs
from flowyml_lite.executors.base import Job
from flowyml_lite.executors.process import ProcessExecutor
from flowyml_lite.runtime.context import RunContext

now = datetime.now(timezone.utc)
executor = ProcessExecutor(max_workers=1)
job = functools.partial(getattr(jobs, {job!r}), {pid_file!r})
executor.submit(Job(job, None, RunContext("s", now, "k", "n", now, False)), lambda result: None)
while not os.path.exists({pid_file!r}):
    time.sleep(0.05)
if {how!r} == "kill -9":
    os.kill(os.getpid(), signal.SIGKILL)
# else: the program just ends, its run still going
"""


class TestSchedulerExit:
    def _scheduler(self, tmp_path: Path, job: str, how: str) -> List[int]:
        import subprocess

        pid_file = tmp_path / "pids"
        code = SCHEDULER.format(
            root=str(Path(__file__).resolve().parents[2]),
            here=str(Path(__file__).resolve().parent),
            job=job,
            pid_file=str(pid_file),
            how=how,
        )
        subprocess.run([sys.executable, "-c", code], timeout=SAFETY, check=False)
        return read_pids(pid_file)

    def test_a_run_dies_with_a_killed_scheduler(self, tmp_path: Path) -> None:
        pids = self._scheduler(tmp_path, "hang_with_grandchild", "kill -9")
        assert eventually(lambda: not any(alive(pid) for pid in pids)), pids

    def test_a_run_ignoring_sigterm_does_not_hold_up_the_programs_exit(self, tmp_path: Path) -> None:
        pids = self._scheduler(tmp_path, "hang_ignoring_sigterm", "exit")  # returns: exit did not hang
        assert eventually(lambda: not any(alive(pid) for pid in pids)), pids


APP = r"""
import os
from flowyml_lite import PipelineScheduler, SchedulerConfig


def load():
    print("loading")


def report():
    print("report")


scheduler = PipelineScheduler(SchedulerConfig(db_path=os.environ["APP_DB"]))
scheduler.schedule_daily("load", load, hour=2, executor="process")
scheduler.schedule_daily("report", report, hour=8)
scheduler.start()  # not under `if __name__ == "__main__":`, as it should be
"""

SERVE_APP = r"""
import json
import {module} as app

app.scheduler.unschedule("report")  # e.g. DELETE /api/schedules/report on the served app
entry = app.scheduler.run_now("load", wait=True)  # its child imports the app module
names = [r.name for r in app.scheduler.store.list_schedules()]  # orphans included
app.scheduler.stop()
print(json.dumps({{"status": entry["status"], "output": entry["output"], "names": names}}))
"""


def run_app(tmp_path: Path, *args: str) -> Dict[str, Any]:
    """Run a program (``python *args``) with the repository and ``tmp_path`` importable; its last line."""
    import json
    import subprocess

    path = os.pathsep.join([str(Path(__file__).resolve().parents[2]), str(tmp_path)])
    env = dict(os.environ, PYTHONPATH=path, APP_DB=str(tmp_path / "app.db"))
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=SAFETY, env=env, cwd=str(tmp_path)
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: Dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


class TestChildImportsTheAppModule:
    def test_its_declarations_stay_out_of_the_store_and_its_start_is_ignored(self, tmp_path: Path) -> None:
        """A process run imports the module that declares the schedules (the module an app serves):
        that import must not declare them again in the store (bringing back a deleted one) nor
        start a second scheduler in the child."""
        (tmp_path / "served_app.py").write_text(APP)
        result = run_app(tmp_path, "-c", SERVE_APP.format(module="served_app"))
        assert result["status"] == "succeeded", result
        assert "loading" in result["output"]
        assert "start() ignored" in result["output"]
        assert result["names"] == ["load"]

    def test_the_main_scripts_declarations_stay_out_of_the_store_when_a_child_reimports_it(
        self, tmp_path: Path
    ) -> None:
        """multiprocessing re-imports the main script in a child (or its forkserver): its top-level
        declarations must not bring back a schedule removed since the script started."""
        (tmp_path / "app_jobs.py").write_text("def load():\n    print('loading')\n")
        (tmp_path / "main_app.py").write_text(MAIN_APP)
        assert run_app(tmp_path, str(tmp_path / "main_app.py")) == {"status": "succeeded", "names": ["load"]}


MAIN_APP = r"""
import json, os
from app_jobs import load
from flowyml_lite import PipelineScheduler, SchedulerConfig

scheduler = PipelineScheduler(SchedulerConfig(db_path=os.environ["APP_DB"]))
scheduler.schedule_daily("load", load, hour=2, executor="process")
scheduler.schedule_daily("report", load, hour=8)

if __name__ == "__main__":
    scheduler.unschedule("report")
    entry = scheduler.run_now("load", wait=True)
    names = [r.name for r in scheduler.store.list_schedules()]  # orphans included
    scheduler.stop()
    print(json.dumps({"status": entry["status"], "names": names}))
"""


class TestTimeoutThroughTheScheduler:
    def test_a_child_ignoring_sigterm_is_killed_after_the_grace_and_recorded_then(
        self, tmp_path: Path
    ) -> None:
        """SIGTERM at the timeout, SIGKILL after the executor's grace: the run is recorded when its
        process is dead, not while it may still run beside the next fire."""
        from flowyml_lite import PipelineScheduler, SchedulerConfig

        scheduler = PipelineScheduler(SchedulerConfig(persist_schedules=False))
        job = functools.partial(jobs.hang_ignoring_sigterm, str(tmp_path / "pid"))
        scheduler.schedule_interval("stubborn", job, seconds=5, timeout_seconds=0.5, executor="process")
        scheduler.start()
        try:
            assert eventually(lambda: len(scheduler.get_history("stubborn")) >= 2, timeout=SAFETY)
            assert eventually(lambda: scheduler.get_history("stubborn")[-1]["status"] != "running")
        finally:
            scheduler.stop(timeout=5)
        first = scheduler.get_history("stubborn")[-1]
        assert first["status"] == "timed_out" and "it was stopped" in first["reason"], first
        assert first["duration_seconds"] >= 0.5 + 2.0, first  # recorded once SIGKILL ended it, not before
        assert {e["status"] for e in scheduler.get_history("stubborn")} <= {"timed_out", "running"}
