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
