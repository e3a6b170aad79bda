"""The ``process`` executor: each run in a child process of its own.

Children come from a ``forkserver`` (POSIX) or ``spawn`` multiprocessing context, never from a
plain ``fork`` of the (threaded) scheduler process. The function crosses over by reference
(``module:qualname``, imported in the child) or, for a bound method or a partial, pickled, so
``check`` refuses what a child cannot import: lambdas, nested functions and closures, functions
of ``__main__``, methods of objects that cannot be pickled.

The child starts its own session (process group), writes stdout and stderr into one pipe that a
monitor thread here reads as it comes (the last 64 KiB are kept, so a chatty child can never
block on a full pipe), logs INFO and above into it too, interprets the return value itself
(``interpret``) and sends back only that verdict, as text. A child that crashes, is killed or
exits early is a failed run with its exit code or signal; ``cancel()`` kills the whole process
group (SIGTERM, then SIGKILL after ``grace_seconds``). One monitor thread per running child; at
most ``max_workers`` children at once.

As with every multiprocessing start method except fork, a child imports the main module of the
program (under the name ``__mp_main__``): a script that declares schedules must keep
``scheduler.start()`` under ``if __name__ == "__main__":``. Declarations made while a child imports
(``child_import``) are not written to the store, and ``start()`` there does nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import inspect
import logging
import os
import pickle
import selectors
import signal as _signal
import sys
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, Optional, Set, Tuple

from ..errors import ScheduleError
from ..runtime.context import CURRENT_RUN, RunContext
from ..stores.base import MAX_RUN_TEXT
from ..stores.schema import clip_text
from . import child_import
from .base import (
    Done,
    Executor,
    Handle,
    Job,
    JobResult,
    describe,
    drained,
    from_exception,
    interpret,
    reference,
)
from .thread import deliver, deliver_later

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

logger = logging.getLogger("flowyml_lite.executors.process")

_QUEUED, _STARTING, _RUNNING, _FINISHED = "queued", "starting", "running", "finished"
#: After a child exits, how long its pipes may stay open (a grandchild holding them) before we stop reading.
DRAIN_SECONDS = 1.0
#: multiprocessing reads a child's exit status from one pipe, in ``join()`` and also in every
#: ``start()`` (it polls the other children): two threads reading it at once make one of them see
#: EOF, reported as exit code 255. Our starts and joins take turns.
_MP_LOCK = threading.Lock()
#: Windows has no SIGKILL: os.kill with SIGTERM already ends the process there (TerminateProcess).
_SIGKILL = getattr(_signal, "SIGKILL", _signal.SIGTERM)
#: Longest wait in the monitor's select, so a SIGKILL after the grace period is never late by more.
_TICK = 0.25


def default_start_method() -> str:
    """``forkserver`` where the platform has it (Linux, macOS), else ``spawn`` (Windows)."""
    import multiprocessing  # imported where used: importing it aliases __main__ as __mp_main__

    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def _resolve(ref: str) -> Any:
    module_name, _, qualname = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def why_not(func: Callable[..., Any], ref: Optional[str] = None) -> Optional[str]:
    """Why a child process could not run ``func`` (None if it can)."""
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or type(func).__name__
    if getattr(func, "__name__", None) == "<lambda>":
        return "it is a lambda, which has no name a child process could import"
    if isinstance(name, str) and "<locals>" in name:
        return (
            "it is defined inside another function (a nested function or closure), "
            "which a child process cannot import"
        )
    if (
        getattr(func, "__module__", None) == "__main__"
        or getattr(getattr(func, "__self__", None), "__module__", None) == "__main__"
    ):
        return (
            "it is defined in __main__ (the script being run), which a child process "
            "does not import under that name"
        )
    if inspect.isfunction(func) or inspect.isbuiltin(func):
        target = ref or reference(func)
        if target is None:
            return "it has no importable name"
        try:
            found = _resolve(target)
        except Exception as exc:
            return f"its name {target!r} does not import ({describe(exc)})"
        if found is not func and getattr(found, "__wrapped__", None) is not func:
            return f"its name {target!r} refers to another object (a decorator without functools.wraps?)"
        return None
    try:
        pickle.dumps(func)
    except Exception as exc:
        kind = (
            f"a method of a {type(func.__self__).__name__} object" if inspect.ismethod(func) else "a callable"
        )
        return f"it is {kind} that cannot be pickled ({describe(exc)})"
    return None


_live_executors: weakref.WeakSet[ProcessExecutor] = weakref.WeakSet()


def _kill_children_at_exit() -> None:
    """At interpreter exit, kill the process groups of runs still going.

    multiprocessing would only SIGTERM each child and then wait for it, forever for a child that
    ignores SIGTERM; runs left over at exit were not shut down by the scheduler anyway.
    """
    for executor in list(_live_executors):
        with executor._lock:
            pids = [h.pid for h in executor._active if h.pid is not None]
        for pid in pids:
            _kill_group(pid, _SIGKILL)


_exit_hook_registered = False


def _register_exit_hook() -> None:
    """Register ``_kill_children_at_exit`` after multiprocessing's own exit hook, so it runs first."""
    global _exit_hook_registered
    if not _exit_hook_registered:
        import multiprocessing.util  # noqa: F401 - registers its exit hook first (atexit: last in, first out)

        atexit.register(_kill_children_at_exit)
        _exit_hook_registered = True


class _ProcessHandle(Handle):
    def __init__(self, executor: ProcessExecutor, job: Job, done: Done) -> None:
        self.executor = executor
        self.job = job
        self.done = done
        self.state = _QUEUED
        self.pid: Optional[int] = None
        self.cancel_requested = False
        self.kill_at: Optional[float] = None  # monotonic time to escalate to SIGKILL

    def cancel(self) -> bool:
        return self.executor._cancel(self, "cancelled")


class ProcessExecutor(Executor):
    """Runs each job in a child process (``forkserver`` or ``spawn``), ``max_workers`` at a time."""

    name = "process"

    def __init__(
        self, max_workers: int = 4, start_method: Optional[str] = None, grace_seconds: float = 2.0
    ) -> None:
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"max_workers must be an integer >= 1, got {max_workers!r}")
        method = start_method or default_start_method()
        if method == "fork":
            raise ValueError(
                "the process executor never forks the threaded scheduler: use 'forkserver' or 'spawn'"
            )
        self.max_workers = max_workers
        self.start_method = method
        self.grace_seconds = grace_seconds
        import multiprocessing

        self._context: Any = multiprocessing.get_context(method)
        self._lock = threading.Lock()
        self._queue: Deque[_ProcessHandle] = deque()
        self._active: Set[_ProcessHandle] = set()
        self._monitors = 0
        self._closed = False
        self._idle = threading.Condition(self._lock)
        _live_executors.add(self)
        _register_exit_hook()
        if method == "forkserver":
            # The fork server imports this module once, so a child need not (best effort: the
            # server may already run, started by other code of this program).
            self._context.set_forkserver_preload(["__main__", __name__])

    # -- the contract ---------------------------------------------------------------------

    def check(self, func: Callable[..., Any], ref: Optional[str]) -> None:
        if os.name == "nt":  # the monitor selects on pipes, which Windows' select() cannot
            raise ScheduleError(
                "the process executor needs a POSIX system (Linux, macOS); on Windows use "
                "executor='thread' or 'async'"
            )
        problem = why_not(func, ref)
        if problem is not None:
            name = getattr(func, "__qualname__", None) or repr(func)
            raise ScheduleError(
                f"the process executor cannot run {name}: {problem}. Define the function with "
                "`def` at module level in an importable module (not the script you run) and "
                "schedule that one, or use executor='thread'"
            )

    def submit(self, job: Job, done: Done) -> Handle:
        handle = _ProcessHandle(self, job, done)
        with self._lock:
            if self._closed:
                raise RuntimeError("the process executor is shut down: it takes no new jobs")
            self._queue.append(handle)
            if self._monitors < self.max_workers:
                self._monitors += 1
                threading.Thread(target=self._monitor, name="flowyml-process-run", daemon=True).start()
        return handle

    def shutdown(self, wait: bool = True, timeout: Optional[float] = None) -> None:
        with self._lock:
            self._closed = True
            if wait:
                deadline = None if timeout is None else time.monotonic() + timeout
                while self._monitors and (deadline is None or time.monotonic() < deadline):
                    self._idle.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
            left = list(self._queue) + list(self._active)
        for handle in left:
            self._cancel(handle, "stopped")
        with self._lock:  # the children are killed; let their monitors report and reap them
            end = time.monotonic() + self.grace_seconds + DRAIN_SECONDS + 2.0
            while self._monitors and time.monotonic() < end:
                self._idle.wait(max(0.0, end - time.monotonic()))

    # -- inside ----------------------------------------------------------------------------

    def _monitor(self) -> None:
        """One monitor thread: runs queued jobs one after another until the queue is empty."""
        try:
            self._serve_queue()
        except BaseException:  # never silently: the slot is given back and the failure logged
            logger.exception("a monitor thread of the process executor failed")
            with self._lock:
                self._monitors -= 1
                self._idle.notify_all()
                restart = bool(self._queue) and self._monitors < self.max_workers
                if restart:
                    self._monitors += 1
            if restart:
                threading.Thread(target=self._monitor, name="flowyml-process-run", daemon=True).start()

    def _serve_queue(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._monitors -= 1
                    self._idle.notify_all()
                    return
                handle = self._queue.popleft()
                handle.state = _STARTING
                self._active.add(handle)
            try:
                result = self._run(handle)
            except BaseException as exc:
                logger.exception("the process executor failed to run %r", handle.job.context.schedule)
                result = from_exception(exc)
            with self._lock:
                self._active.discard(handle)
                mine = handle.state != _FINISHED
                handle.state = _FINISHED
            if mine:
                deliver(handle.done, result)

    @property
    def cancel_answer_seconds(self) -> float:  # type: ignore[override]
        """SIGTERM, then SIGKILL after ``grace_seconds``: the run's answer comes once it is dead and
        its pipes are drained (a tick of the monitor, the drain time), with a second to spare."""
        return self.grace_seconds + _TICK + DRAIN_SECONDS + 1.0

    def _cancel(self, handle: _ProcessHandle, why: str) -> bool:
        with self._lock:
            if handle.state == _FINISHED:
                return False
            if handle.state == _QUEUED:
                self._queue.remove(handle)
                handle.state = _FINISHED
                queued = True
            else:
                queued = False
                handle.cancel_requested = True
                if handle.kill_at is None:
                    handle.kill_at = time.monotonic() + self.grace_seconds
                pid = handle.pid
        if queued:
            deliver_later(
                handle.done,
                JobResult(success=False, cancelled=True, error=f"the run was {why} before it started"),
            )
        elif pid is not None:
            _kill_group(pid, _signal.SIGTERM)
        # else: still starting; the monitor kills the child as soon as it has its pid
        return True

    def _run(self, handle: _ProcessHandle) -> JobResult:
        job = handle.job
        func = job.func
        ref = job.ref if job.ref and (inspect.isfunction(func) or inspect.isbuiltin(func)) else None
        if ref is None and (inspect.isfunction(func) or inspect.isbuiltin(func)):
            ref = reference(func)
        try:
            payload: Optional[bytes] = None if ref is not None else pickle.dumps(func)
        except Exception as exc:
            return JobResult(
                success=False, error=f"the run's function cannot be sent to a child process: {describe(exc)}"
            )
        from multiprocessing.connection import Connection

        out_r, out_w = os.pipe()
        res_r, res_w = self._context.Pipe(duplex=False)
        out_conn = Connection(out_w, readable=False)
        process = self._context.Process(
            target=_child_main,
            args=(out_conn, res_w, ref, payload, job.context),
            name=f"flowyml-run-{job.context.schedule}",
            daemon=True,  # multiprocessing terminates it if this program exits first
        )
        try:
            try:
                with _MP_LOCK:
                    process.start()
            finally:
                out_conn.close()  # the child has its copies; ours would hold the pipes open
                res_w.close()
            pid = process.pid
            with self._lock:
                handle.pid = pid
                handle.state = _RUNNING
                kill_now = handle.cancel_requested
            if kill_now:
                _kill_group(pid, _signal.SIGTERM)
            verdict, output = self._watch(handle, process, out_r, res_r)
            with _MP_LOCK:  # it has exited: this only reads its status
                process.join()
                code = process.exitcode
        except BaseException as exc:
            with _MP_LOCK:
                running = process.pid is not None and process.exitcode is None
            if running:
                _kill_group(process.pid, _SIGKILL)
                with _MP_LOCK:
                    process.join(5)
            return JobResult(success=False, error=f"the run's process could not be run: {describe(exc)}")
        finally:
            os.close(out_r)
            res_r.close()
            with _MP_LOCK, contextlib.suppress(ValueError):  # still running after a failed start
                process.close()
        if handle.cancel_requested:
            _kill_group(pid, _SIGKILL)  # what is left of its group
        return _result(verdict, output, code, handle.cancel_requested)

    def _watch(
        self, handle: _ProcessHandle, process: Any, out_r: int, res_r: Connection
    ) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
        """Read the child's output and verdict until it exits and its pipes close (or drain time ends)."""
        tail = _Tail(MAX_RUN_TEXT)
        verdict: Optional[Dict[str, Any]] = None
        exited_at: Optional[float] = None
        killed = False
        with selectors.DefaultSelector() as selector:
            selector.register(out_r, selectors.EVENT_READ, "out")
            selector.register(res_r.fileno(), selectors.EVENT_READ, "result")
            selector.register(process.sentinel, selectors.EVENT_READ, "exit")
            while True:
                now = time.monotonic()
                if exited_at is not None and (
                    now - exited_at > DRAIN_SECONDS or len(selector.get_map()) == 0
                ):
                    break
                if not killed and handle.kill_at is not None and now >= handle.kill_at and exited_at is None:
                    killed = True
                    _kill_group(process.pid, _SIGKILL)
                for key, _ in selector.select(_TICK):
                    if key.data == "out":
                        chunk = os.read(out_r, 65536)
                        if chunk:
                            tail.add(chunk)
                        else:
                            selector.unregister(out_r)
                    elif key.data == "result":
                        try:
                            received = res_r.recv()
                            if isinstance(received, dict):
                                verdict = received
                        except (EOFError, OSError):
                            pass
                        except Exception:  # a verdict that does not unpickle: report the run as failed
                            logger.exception("the verdict of a process run could not be read")
                        selector.unregister(res_r.fileno())
                    else:
                        selector.unregister(process.sentinel)
                        exited_at = time.monotonic()
        return verdict, tail.text()


def _result(
    verdict: Optional[Dict[str, Any]], output: Optional[str], code: Optional[int], cancelled: bool
) -> JobResult:
    """The run's result from the child's verdict and its exit status."""
    signum = -code if code is not None and code < 0 else None
    if cancelled:
        how = f"killed by signal {_signal_name(signum)}" if signum else f"ended with code {code}"
        return JobResult(
            success=False,
            cancelled=True,
            output=output,
            signal=signum,
            exit_code=code if code and code > 0 else None,
            error=f"the run's process was stopped ({how})",
        )
    if verdict is not None and code == 0:
        return JobResult(
            success=bool(verdict.get("success")),
            run_id=verdict.get("run_id"),
            error=verdict.get("error"),
            exception_type=verdict.get("exception_type"),
            exception_types=tuple(verdict.get("exception_types") or ()),
            traceback=verdict.get("traceback"),
            output=output,
        )
    if signum:
        error = f"the run's process was killed by signal {_signal_name(signum)}"
    elif code:
        error = f"the run's process exited with code {code}"
    else:
        error = "the run's process exited without reporting a result (did the job call os._exit?)"
    return JobResult(
        success=False,
        error=error,
        output=output,
        exit_code=code if code and code > 0 else None,
        signal=signum,
    )


def _signal_name(signum: Optional[int]) -> str:
    try:
        return _signal.Signals(signum or 0).name
    except ValueError:
        return str(signum)


def _kill_group(pid: Optional[int], signum: int) -> None:
    """Send ``signum`` to the child's process group (its session), or to the child alone."""
    if pid is None:
        return
    killpg = getattr(os, "killpg", None)
    try:
        if killpg is not None:
            try:
                killpg(pid, signum)
                return
            except ProcessLookupError:  # not yet its own group leader (or gone): the child alone
                pass
            except PermissionError:  # the group id is someone else's already
                return
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError, OSError):
        pass


class _Tail:
    """The last ``limit`` bytes written to a pipe, and how many were cut before them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.cut = 0

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > 2 * self.limit:
            drop = len(self.data) - self.limit
            del self.data[:drop]
            self.cut += drop

    def text(self) -> Optional[str]:
        if not self.data and not self.cut:
            return None
        data, cut = bytes(self.data), self.cut
        if not cut and len(data) <= self.limit:
            return data.decode("utf-8", errors="replace")
        keep = self.limit - 48  # room for the marker; decoding never yields more characters than bytes
        cut += max(0, len(data) - keep)
        return clip_text(f"[... {cut} bytes cut ...]\n" + data[-keep:].decode("utf-8", errors="replace"))


# -- in the child ------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """If the scheduler dies (``kill -9``), end this run and its group instead of running on unseen.

    The run is recorded ``lost`` by the scheduler's peers (or at its restart) either way; an orphan
    that ran on would do work nobody records, and pile up across restarts.
    """
    import multiprocessing

    parent = multiprocessing.parent_process()
    sentinel = getattr(parent, "sentinel", None)
    if sentinel is None:
        return

    def watch() -> None:
        from multiprocessing.connection import wait

        wait([sentinel])  # ready when the scheduler's end of the pipe closes: it exited
        killpg = getattr(os, "killpg", None)
        if killpg is not None:
            with contextlib.suppress(OSError):
                killpg(0, _SIGKILL)
        os._exit(1)

    threading.Thread(target=watch, name="flowyml-parent-watch", daemon=True).start()


def _child_main(
    out: Connection, result: Connection, ref: Optional[str], payload: Optional[bytes], context: RunContext
) -> None:
    """The child's whole life: own session, output into the pipe, run, send the verdict, exit."""
    if hasattr(os, "setsid"):
        with contextlib.suppress(OSError):
            os.setsid()  # its own process group: cancel() kills it with everything it started
    _die_with_parent()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass
    fd = out.fileno()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    out.close()
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)  # noqa: SIM115
    try:
        import faulthandler

        faulthandler.enable(sys.stderr)  # a segfault leaves the Python stack in the run's output
    except Exception:
        pass
    root = logging.getLogger()
    if not root.handlers:  # handlers the program set up (main re-imported) write here already
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        if root.level > logging.INFO:
            root.setLevel(logging.INFO)
    import multiprocessing

    with contextlib.suppress(Exception):
        multiprocessing.current_process().daemon = False  # the job may start processes of its own
    CURRENT_RUN.set(context)
    try:
        with child_import.importing():  # the module's own declarations stay out of the store
            func = _resolve(ref) if ref is not None else pickle.loads(payload or b"")
        value = func()
        if inspect.isawaitable(value):
            import asyncio

            async def wait() -> Any:
                return await value

            value = asyncio.run(wait())
        success, run_id, error = interpret(drained(value))
        verdict: Dict[str, Any] = {"success": success, "run_id": run_id, "error": error}
    except BaseException as exc:
        failed = from_exception(exc)
        verdict = {
            "success": False,
            "error": failed.error,
            "exception_type": failed.exception_type,
            "exception_types": failed.exception_types,
            "traceback": failed.traceback,
        }
    with contextlib.suppress(Exception):
        logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        result.send(verdict)
        result.close()
    finally:
        # Straight out: no waiting for threads the job left behind, no atexit of the program's.
        os._exit(0)
