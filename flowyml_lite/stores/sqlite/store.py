"""The SQLite store: its parts, each in a module of this package, put together."""

from __future__ import annotations

from .claims import _Claims
from .maintenance import _Maintenance
from .nodes import _Nodes
from .schedules import _Schedules


class SQLiteStore(_Claims, _Schedules, _Maintenance, _Nodes):
    """Schedules, runs and nodes in one SQLite file (default ``.flowyml_scheduler.db``)."""

    shared = True
    # Every writer is on this host (SQLite over NFS is not supported) and stamps a change once it
    # holds the write lock, so it commits within milliseconds of its stamp.
    clock_skew_seconds = 0.5

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"
