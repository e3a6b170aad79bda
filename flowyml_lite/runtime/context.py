"""What a running job can learn about its own run (``current_run()``)."""

from __future__ import annotations

import contextvars
from datetime import datetime
from typing import NamedTuple, Optional


class RunContext(NamedTuple):
    """A run as its job sees it, through ``current_run()``."""

    schedule: str
    fire_time: datetime  # the instant the trigger computed (aware UTC), not when the run started
    run_key: str
    node_id: str
    started_at: datetime
    manual: bool
    attempt: int = 1


CURRENT_RUN: contextvars.ContextVar[Optional[RunContext]] = contextvars.ContextVar(
    "flowyml_lite_current_run", default=None
)


def current_run() -> Optional[RunContext]:
    """The run the calling code belongs to (inside a scheduled function), else None."""
    return CURRENT_RUN.get()
