"""The store and the lock a ``SchedulerConfig`` names, found through the plugin registry."""

from __future__ import annotations

from typing import Optional

from .. import plugins, stores
from ..locks.base import Lock
from ..stores.base import Store
from .scheduler_config import SchedulerConfig


def open_store(config: SchedulerConfig) -> Store:
    """The store the config names (or the instance it carries), opened."""
    chosen = config.resolved_store()
    if isinstance(chosen, str):
        factory = plugins.get("stores", chosen)
        if hasattr(factory, "from_config"):
            chosen = factory.from_config(config)
        elif chosen == "sqlite":
            return stores.open_store("sqlite", path=config.db_path, synchronous=config.sqlite_synchronous)
    return stores.open_store(chosen)


def open_lock(config: SchedulerConfig) -> Optional[Lock]:
    """The lock backend when ``distributed`` is set, else None."""
    if not config.distributed:
        return None
    factory = plugins.get("locks", config.lock_backend)
    if hasattr(factory, "from_config"):
        return factory.from_config(config)  # type: ignore[no-any-return]
    if config.lock_backend == "file":
        return factory(config.resolved_lock_dir())  # type: ignore[no-any-return]
    if config.lock_backend == "redis":
        return factory(config.redis_url)  # type: ignore[no-any-return]
    return factory()  # type: ignore[no-any-return]
