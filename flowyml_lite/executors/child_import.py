"""Whether this process is a process executor's child importing the code of a job.

A child imports the module of its job (and, when multiprocessing bootstraps it, the program's main
module). Their top level often builds a ``PipelineScheduler`` and declares the schedules: the
module an app serves does. In a child those declarations must not reach the store, where they
would bring back schedules deleted or changed since the app started, and ``start()`` must not
start a second scheduler there.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

_importing = 0


def importing_job_code() -> bool:
    """True while a process executor's child imports its job's module or the program's main module."""
    if _importing:
        return True
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is None:
        return False
    try:  # multiprocessing's own mark while a child (or a forkserver) re-imports the main module
        return bool(getattr(multiprocessing.current_process(), "_inheriting", False))
    except Exception:
        return False


@contextlib.contextmanager
def importing() -> Iterator[None]:
    """Mark the import of a job's code in a child (``importing_job_code()`` is True inside)."""
    global _importing
    _importing += 1
    try:
        yield
    finally:
        _importing -= 1


_holding_starts = 0


def starts_held() -> bool:
    """True while a command imports an app only to use its declarations (``holding_starts``)."""
    return bool(_holding_starts)


@contextlib.contextmanager
def holding_starts() -> Iterator[None]:
    """Import an app's module with its ``start()`` and ``serve_forever()`` calls ignored: a
    one-shot command (``run-now``) needs the schedules' functions, not a scheduler that would take
    its share of every other schedule's fires and leave them in flight when it exits."""
    global _holding_starts
    _holding_starts += 1
    try:
        yield
    finally:
        _holding_starts -= 1

