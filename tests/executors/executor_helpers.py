"""Helpers for the executor tests: a run's context, and waiting for a result (with a safety net).

Not in conftest.py: every test folder has one, and ``import conftest`` finds whichever came first.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any, Callable, List, Optional, Tuple

from flowyml_lite.executors.base import Executor, Handle, Job, JobResult
from flowyml_lite.runtime.context import RunContext
from tests.waiting import until

#: A safety net only: a result that takes this long means the test failed (nothing is timed).
SAFETY = 120.0


def context(schedule: str = "job", attempt: int = 1) -> RunContext:
    now = datetime.now(timezone.utc)
    return RunContext(schedule, now, f"key-{schedule}", "node-1", now, False, attempt)


class Outcome:
    """Collects what ``done`` receives, to check it is called exactly once."""

    def __init__(self) -> None:
        self.results: List[JobResult] = []
        self.threads: List[str] = []
        self.event = threading.Event()

    def done(self, result: JobResult) -> None:
        self.results.append(result)
        self.threads.append(threading.current_thread().name)
        self.event.set()

    def wait(self, timeout: float = SAFETY) -> JobResult:
        assert self.event.wait(timeout), "no result within the safety timeout"
        return self.results[0]


def submit(
    executor: Executor, func: Callable[[], Any], schedule: str = "job", ref: Optional[str] = None
) -> Tuple[Handle, Outcome]:
    outcome = Outcome()
    handle = executor.submit(Job(func, ref, context(schedule)), outcome.done)
    return handle, outcome


def run(executor: Executor, func: Callable[[], Any], schedule: str = "job") -> JobResult:
    return submit(executor, func, schedule)[1].wait()


def eventually(predicate: Callable[[], bool], timeout: float = SAFETY) -> bool:
    """Poll ``predicate`` until it holds (a safety net, not a timing assertion)."""
    return until(predicate, timeout, every=0.02)
