"""Waiting in tests: poll a condition on real time until it holds (a safety net, not a timing assertion).

Imported as ``tests.waiting``: the repository root is on sys.path (``pythonpath`` in pyproject.toml). Not in
a conftest.py: every test folder has one, and ``import conftest`` finds whichever came first.
"""

from __future__ import annotations

import time
from typing import Any, Callable


def until(condition: Callable[[], Any], timeout: float = 10.0, every: float = 0.01) -> bool:
    """Whether ``condition()`` held within ``timeout`` seconds (checked every ``every`` seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True
