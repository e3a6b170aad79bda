"""The run hooks (``on_success``, ``on_failure``, ``on_finish``): told of each run's final entry.

A hook that raises is logged and never changes the run's outcome or stops the other hooks.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional

from ..stores.base import FAILED, SUCCEEDED, TIMED_OUT, RunRecord

logger = logging.getLogger("flowyml_lite.scheduler.runner")

Hook = Callable[[Dict[str, Any]], Any]


class RunHooks:
    """The hooks of one scheduler, and the history entry they are given."""

    def __init__(self, entry: Callable[[RunRecord], Dict[str, Any]]) -> None:
        self._entry = entry
        self.on_success: List[Hook] = []
        self.on_failure: List[Hook] = []
        self.on_finish: List[Hook] = []

    def final_entry(
        self,
        run: RunRecord,
        status: str,
        now: datetime,
        wanted: bool,
        **ending: Any,
    ) -> Optional[Dict[str, Any]]:
        """The history entry of ``run`` ended as ``status`` if a hook (or ``wanted``) needs it."""
        if not (wanted or self.on_finish or self._for(status)):
            return None
        final = replace(run, status=status, completed_at=now, next_attempt_at=None, **ending)
        return self._entry(final)

    def tell(self, status: str, entry: Dict[str, Any], name: str) -> None:
        """Call the hooks of ``status``, then the ``on_finish`` hooks, with ``entry``."""
        for hook in [*self._for(status), *self.on_finish]:
            try:
                hook(entry)
            except Exception:
                logger.exception("a run hook failed for %r", name)

    def announce(self, run: RunRecord) -> None:
        """Tell the ``on_finish`` hooks about a run that ended without running here (missed,
        skipped at its claim, or found lost)."""
        if self.on_finish:
            self.tell(run.status, self._entry(run), run.schedule)

    def _for(self, status: str) -> List[Hook]:
        if status == SUCCEEDED:
            return self.on_success
        if status in (FAILED, TIMED_OUT):
            return self.on_failure
        return []
