"""Module-level job functions for the executor tests (a child process imports them by name)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any, List, Optional

from flowyml_lite.runtime.context import current_run

log = logging.getLogger("executor_jobs")


class Result:
    """A PipelineResult-like return value."""

    def __init__(self, success: Any, run_id: Any = None, error: Optional[str] = None) -> None:
        self.success = success
        self.run_id = run_id
        self.error = error


RUN_ID = uuid.UUID("12345678-1234-5678-1234-567812345678")


def succeed() -> None:
    return None


def chatty() -> Result:
    log.info("info from the child %d", os.getpid())
    print("printed by the job")
    print("to stderr", file=sys.stderr)
    run = current_run()
    print(f"current_run: {run.schedule if run else None} attempt {run.attempt if run else None}")
    return Result(True, RUN_ID)


def fail_with_error() -> Result:
    return Result(False, 7, "the pipeline's own error")


def string_success() -> Result:
    return Result("yes", None)


def raise_key_error() -> None:
    raise KeyError("missing")


def exit_3() -> None:
    os._exit(3)


def segfault() -> None:
    import ctypes

    ctypes.string_at(0)


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def hang_with_grandchild(pid_file: str) -> None:
    """Starts a grandchild, writes both pids to ``pid_file``, then hangs."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    with open(pid_file + ".tmp", "w") as f:
        f.write(f"{os.getpid()} {child.pid}\n")
    os.replace(pid_file + ".tmp", pid_file)
    time.sleep(600)


def hang_ignoring_sigterm(pid_file: str) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(pid_file + ".tmp", "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(pid_file + ".tmp", pid_file)
    time.sleep(600)


def ten_megabytes() -> str:
    chunk = "x" * 1023 + "\n"
    for _ in range(10 * 1024):
        sys.stdout.write(chunk)
    print("END OF OUTPUT")
    return "done"


async def async_job() -> Result:
    await asyncio.sleep(0)
    log.info("async job ran")
    return Result(True, "async-run")


class Pipeline:
    """A picklable object whose bound method is a job."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self) -> Result:
        print(f"pipeline {self.name}")
        return Result(True, self.name)


class Locked:
    """An object that cannot be pickled (it holds a lock): its bound methods cannot cross over."""

    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()

    def run(self) -> None:
        pass


def failing_pipeline() -> Any:
    """A real flowyml_lite Pipeline whose second step raises: its result has success=False."""
    from flowyml_lite import Pipeline, step

    @step(outputs=["rows"])
    def extract() -> List[int]:
        return [1, 2]

    @step(outputs=["total"])
    def load(rows: List[int]) -> int:
        raise ConnectionError("warehouse unreachable")

    return Pipeline("etl").add_step(extract).add_step(load).run()
