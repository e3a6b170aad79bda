"""Stores: where schedules, run history and nodes live. The contract is ``base.Store``.

Backends are imported only when chosen (``open_store("sqlite", path=...)``), so ``sqlite3`` is
not loaded by a scheduler that keeps everything in memory.
"""

from __future__ import annotations

from typing import Any, Union

from .base import (
    ACTIVE_STATUSES,
    FAILED,
    FINAL_STATUSES,
    LOST,
    MISSED,
    QUEUED,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    NodeRecord,
    RunRecord,
    RunStats,
    ScheduleRecord,
    ScheduleState,
    Store,
)

__all__ = [
    "ACTIVE_STATUSES",
    "FAILED",
    "FINAL_STATUSES",
    "LOST",
    "MISSED",
    "QUEUED",
    "RUNNING",
    "SKIPPED",
    "SUCCEEDED",
    "NodeRecord",
    "RunRecord",
    "RunStats",
    "ScheduleRecord",
    "ScheduleState",
    "Store",
    "open_store",
]


def open_store(store: Union[str, Store] = "sqlite", **options: Any) -> Store:
    """Return ``store`` opened: an instance as is, or a backend name built with ``options``.

    ``open_store("sqlite", path="jobs.db")``, ``open_store("memory")``; names come from the
    plugin registry (``flowyml_lite.stores`` entry points included).
    """
    if isinstance(store, str):
        from .. import plugins

        backend = plugins.get("stores", store)
        if isinstance(backend, Store) and options:
            raise TypeError(f"open_store: the store {store!r} is a registered instance; it takes no options")
        store = backend if isinstance(backend, Store) else backend(**options)
    elif options:
        raise TypeError("open_store: options are only accepted with a backend name, not an instance")
    if not isinstance(store, Store):
        raise TypeError(f"open_store: {store!r} is not a Store")
    store.open()
    return store
