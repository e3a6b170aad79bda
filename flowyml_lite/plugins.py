"""The registry of backends: cron engines, zone providers, stores, locks and executors.

Built-ins are registered here in code, so a vendored copy (no package metadata) works.
Third-party and extra backends are found lazily through the entry-point groups
``flowyml_lite.cron``, ``flowyml_lite.timezones``, ``flowyml_lite.stores``,
``flowyml_lite.locks`` and ``flowyml_lite.executors``; an entry point's object is loaded only
when it is asked for.
"""

from __future__ import annotations

import importlib
import logging
import threading
from typing import Any, Dict, List, Optional, Tuple

from .errors import PluginError, PluginNotInstalledError

logger = logging.getLogger("flowyml_lite.plugins")

KINDS: Tuple[str, ...] = ("cron", "timezones", "stores", "locks", "executors", "servers")

# kind -> name -> object, or "module:attribute" to import on first use (a leading dot is relative
# to this package, so a copy vendored under another name still finds its built-ins).
_BUILTINS: Dict[str, Dict[str, Any]] = {
    "cron": {"native": ".cron.native:NativeEngine"},
    "timezones": {"zoneinfo": ".timezones:ZoneinfoProvider"},
    "stores": {
        "memory": ".stores.memory:MemoryStore",
        "sqlite": ".stores.sqlite:SQLiteStore",
    },
    "locks": {
        "file": ".locks.file:FileLock",
        "local": ".locks.local:LocalLock",
    },
    # Built as factory(max_workers=N); see executors/base.py for the contract.
    "executors": {
        "thread": ".executors.thread:ThreadExecutor",
        "process": ".executors.process:ProcessExecutor",
        "async": ".executors.asyncio_loop:AsyncExecutor",
    },
    # 'serve --server NAME' beside the built-in server: serve(scheduler, host, port, *, ready, access_log,
    # **ApiServer options), blocking until SIGINT/SIGTERM; see flowyml_lite_ext/uvicorn_server.py.
    "servers": {},
}

# Backends shipped in flowyml_lite_ext: (module:attribute, the pip extra that brings their dependencies).
_EXTRAS: Dict[str, Dict[str, Tuple[str, str]]] = {
    "cron": {"croniter": ("flowyml_lite_ext.croniter_engine:CroniterEngine", "croniter")},
    "timezones": {"pytz": ("flowyml_lite_ext.pytz_zones:PytzProvider", "pytz")},
    "stores": {
        "sqlalchemy": ("flowyml_lite_ext.sqlalchemy_store:SQLAlchemyStore", "sqlalchemy"),
        "postgresql": ("flowyml_lite_ext.sqlalchemy_store:SQLAlchemyStore", "postgres"),
    },
    "locks": {"redis": ("flowyml_lite_ext.redis_lock:RedisLock", "redis")},
    "servers": {"uvicorn": ("flowyml_lite_ext.uvicorn_server:serve", "asgi")},
}

_registry: Dict[str, Dict[str, Any]] = {kind: dict(names) for kind, names in _BUILTINS.items()}
_entry_points_loaded = False
_mutex = threading.RLock()


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise PluginError(f"unknown plugin kind {kind!r}; the kinds are {', '.join(KINDS)}")


def register(kind: str, name: str, obj: Any) -> None:
    """Register ``obj`` (a class, factory or instance) as backend ``name`` of ``kind``.

    A later registration of the same name replaces the earlier one.
    """
    _check_kind(kind)
    if not name or not isinstance(name, str):
        raise PluginError("a plugin name must be a non-empty string")
    with _mutex:
        _registry[kind][name] = obj


def _entry_points(group: str) -> List[Any]:
    from importlib import metadata

    eps: Any = metadata.entry_points()
    if hasattr(eps, "select"):
        return list(eps.select(group=group))
    return list(eps.get(group, []))  # Python 3.9: a dict of group -> entry points


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    with _mutex:
        if _entry_points_loaded:
            return
        for kind in KINDS:
            try:
                found = _entry_points(f"flowyml_lite.{kind}")
            except Exception as exc:  # broken metadata must not break the built-ins
                logger.warning("could not read entry points of flowyml_lite.%s: %s", kind, exc)
                continue
            for ep in found:
                # Code registration wins over metadata for the same name.
                _registry[kind].setdefault(ep.name, ep)
        _entry_points_loaded = True


def _resolve(spec: Any) -> Any:
    if isinstance(spec, str) and ":" in spec:
        module_name, _, attr = spec.partition(":")
        return getattr(importlib.import_module(module_name, package=__package__), attr)
    if hasattr(spec, "load") and hasattr(spec, "group"):  # an importlib.metadata.EntryPoint
        return spec.load()
    return spec


def _install_hint(kind: str, name: str) -> Optional[str]:
    extra = _EXTRAS.get(kind, {}).get(name)
    return f"pip install 'flowyml-lite[{extra[1]}]'" if extra else None


def get(kind: str, name: str) -> Any:
    """Return the backend ``name`` of ``kind`` (loading it on first use).

    Raises PluginNotInstalledError with the pip command when a known optional backend
    lacks its dependencies, PluginError when the name is unknown.
    """
    _check_kind(kind)
    with _mutex:
        spec = _registry[kind].get(name)
    if spec is None:
        _load_entry_points()
        with _mutex:
            spec = _registry[kind].get(name)
    if spec is None and name in _EXTRAS.get(kind, {}):
        spec = _EXTRAS[kind][name][0]  # vendored flowyml_lite_ext without metadata
    if spec is None:
        known = ", ".join(sorted(available(kind)))
        raise PluginError(f"no {kind} backend named {name!r}; available: {known}")
    try:
        obj = _resolve(spec)
    except ImportError as exc:
        hint = _install_hint(kind, name)
        if hint:
            raise PluginNotInstalledError(
                f"the {kind} backend {name!r} is not installed ({exc}): run `{hint}`"
            ) from exc
        raise PluginError(f"the {kind} backend {name!r} failed to import: {exc}") from exc
    with _mutex:
        _registry[kind][name] = obj
    return obj


def available(kind: str) -> List[str]:
    """Names of every backend of ``kind`` known here (built-in, registered, entry points, extras)."""
    _check_kind(kind)
    _load_entry_points()
    with _mutex:
        return sorted(set(_registry[kind]) | set(_EXTRAS.get(kind, {})))
