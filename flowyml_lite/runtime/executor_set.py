"""The executors of one scheduler: plugins created on first use, and which one a schedule uses."""

from __future__ import annotations

import inspect
import logging
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from .. import plugins
from ..core.schedule import Options
from ..executors.base import Executor, reference

logger = logging.getLogger("flowyml_lite.scheduler.runner")


class ExecutorSet:
    """Executor plugins by name (``thread``, ``process``, ``async``, ...), each made once."""

    def __init__(self, max_workers: int) -> None:
        self._max_workers = max_workers
        self._executors: Dict[str, Executor] = {}
        self._funcs: Dict[int, Tuple[Callable[[], Any], bool, Optional[str]]] = {}
        self._lock = threading.Lock()

    def name_for(self, func: Callable[[], Any], opts: Options) -> str:
        """The executor a schedule's runs use: ``async`` for an ``async def`` on the default one."""
        if opts.executor == "thread" and self.about(func)[0]:
            return "async"
        return opts.executor

    def about(self, func: Callable[[], Any]) -> Tuple[bool, Optional[str]]:
        """(is it an ``async def``, its ``module:qualname``), worked out once per function."""
        key = id(func)
        found = self._funcs.get(key)
        if found is None or found[0] is not func:
            found = (func, inspect.iscoroutinefunction(func), reference(func))
            if len(self._funcs) > 100_000:
                self._funcs.clear()
            self._funcs[key] = found
        return found[1], found[2]

    def resolve(self, func: Callable[[], Any], opts: Options) -> Tuple[Executor, Optional[str]]:
        """The executor a run of ``func`` with ``opts`` goes to, and the function's reference."""
        is_async, reference = self.about(func)
        name = "async" if is_async and opts.executor == "thread" else opts.executor
        found = self._executors.get(name)
        return (found if found is not None else self.get(name)), reference

    def get(self, name: str) -> Executor:
        """The executor plugin ``name``, created on first use (PluginError if there is none)."""
        found = self._executors.get(name)
        if found is not None:
            return found
        with self._lock:
            found = self._executors.get(name)
            if found is None:
                factory = plugins.get("executors", name)
                found = factory(max_workers=self._max_workers) if isinstance(factory, type) else factory
                self._executors[name] = found
        return found

    def check(self, func: Callable[[], Any], opts: Options) -> None:
        """At declaration: ScheduleError if the schedule's executor cannot run ``func``."""
        executor, reference = self.resolve(func, opts)
        executor.check(func, reference)

    def waiting(self) -> bool:
        """Whether runs handed over to an executor still wait for a worker to start."""
        for executor in list(self._executors.values()):
            try:
                if executor.waiting():
                    return True
            except Exception:  # a plugin that cannot say: it has none waiting, as far as we know
                continue
        return False

    def problems(self) -> List[Tuple[str, str]]:
        """(executor name, what is wrong) of every executor that says something is (see Executor.problem)."""
        found = []
        for name, executor in list(self._executors.items()):
            try:
                problem = executor.problem()
            except Exception as exc:
                problem = f"could not tell its state: {type(exc).__name__}: {exc}"
            if problem:
                found.append((name, problem))
        return found

    def close(self) -> None:
        """Let go of every executor made so far without ending its runs: an executor with a
        ``close()`` lets its idle workers go now and the others when their runs end (the next
        start makes new executors)."""
        for executor in list(self._executors.values()):
            close = getattr(executor, "close", None)
            if close is None:
                continue
            try:
                close()
            except Exception:
                logger.exception("executor close failed")
        self._executors.clear()

    def shutdown(self, wait: bool, timeout: Optional[float]) -> None:
        """Stop every executor made so far, within one ``timeout`` for them all (not one each); a
        failure is logged, the others still stop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for executor in list(self._executors.values()):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                executor.shutdown(wait=wait, timeout=left)
            except Exception:
                logger.exception("executor shutdown failed")
        self._executors.clear()
