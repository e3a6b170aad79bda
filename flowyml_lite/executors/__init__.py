"""Executors: where a run's function runs (a thread, an event loop, a child process).

The contract and the outcome rules are in ``base``; the built-ins are ``thread``
(``ThreadExecutor``), ``async`` (``asyncio_loop.AsyncExecutor``) and ``process``
(``process.ProcessExecutor``), found by name through ``flowyml_lite.plugins.get("executors", name)``.
"""

from __future__ import annotations

from .base import Done, Executor, Handle, Job, JobResult, from_exception, interpret, reference, result_of

__all__ = [
    "Done",
    "Executor",
    "Handle",
    "Job",
    "JobResult",
    "from_exception",
    "interpret",
    "reference",
    "result_of",
]
