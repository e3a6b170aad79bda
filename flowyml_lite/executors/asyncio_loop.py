"""The ``async`` executor: ``async def`` jobs as tasks on one event loop, on one thread it owns.

The loop starts at the first submit. At most ``max_workers`` runs are awaited at once (an
``asyncio.Semaphore``); more wait their turn as tasks. ``cancel()`` cancels the task. A sync
function given to this executor runs on a thread pool of its own (a ``ThreadExecutor``), with
that executor's semantics (a thread cannot be stopped).

A job can stop the loop under every other run (``asyncio.get_running_loop().stop()``), or a
callback can end its thread: the runs in flight on it are then ended failed, a new loop on a new
thread takes the next runs, and the runs whose function had not been called yet move to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import os
import threading
import time
import weakref
from typing import Any, Dict, List, Optional, Set

from ..errors import EventLoopStoppedError
from ..runtime.context import CURRENT_RUN
from . import capture
from .base import (
    Done,
    Executor,
    Handle,
    Job,
    JobResult,
    describe,
    drained,
    from_exception,
    leave_forked_child,
    result_of,
)
from .thread import ThreadExecutor, deliver

logger = logging.getLogger("flowyml_lite.executors.async")

#: How long ``shutdown`` waits for cancelled tasks to end before it reports them as stopped anyway.
CANCEL_GRACE_SECONDS = 2.0
#: The loop marks that it goes round this often; not marked for BLOCKED_SECONDS, it is blocked.
TICK_SECONDS = 0.25
BLOCKED_SECONDS = 1.0


def is_async(func: Any) -> bool:
    """Whether calling ``func`` gives a coroutine (``async def``, a partial of one, an async ``__call__``)."""
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(func, "__call__", None)  # noqa: B004 - an instance whose __call__ is async
    return not inspect.isfunction(func) and call is not None and inspect.iscoroutinefunction(call)


class _AsyncHandle(Handle):
    def __init__(
        self, executor: AsyncExecutor, job: Job, done: Done, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.executor = executor
        self.job = job
        self.loop = loop  # where it runs: a new loop if this one stops before the run starts
        self.done = done
        self.buffer = capture.OutputBuffer()
        self.lock = threading.Lock()
        self.finished = threading.Event()
        self.cancel_requested = False
        self.task: Optional[asyncio.Task[None]] = None
        self.began = False  # its function was called (it had its turn among max_workers)

    def cancel(self) -> bool:
        with self.lock:
            if self.finished.is_set():
                return False
            self.cancel_requested = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: its runs are ended without it
            self.loop.call_soon_threadsafe(self._cancel_in_loop)
        return True

    def _cancel_in_loop(self) -> None:
        if self.task is not None:
            self.task.cancel()  # not started yet: _start sees cancel_requested


class AsyncExecutor(Executor):
    """Awaits ``async def`` jobs on its own event loop thread, ``max_workers`` at a time."""

    name = "async"

    def __init__(self, max_workers: int = 4) -> None:
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"max_workers must be an integer >= 1, got {max_workers!r}")
        self.max_workers = max_workers
        self._lock = threading.Lock()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._slots: Optional[asyncio.Semaphore] = None  # made on the loop's thread
        self._handles: Set[_AsyncHandle] = set()
        self._threads: Optional[ThreadExecutor] = None
        self._closed = False
        self._tick = time.monotonic()  # when the loop last went round (see problem())
        self._down: Optional[str] = None  # why no loop could be started, until one is
        self._pid = os.getpid()  # a job that forks: its child must not go on with this loop's runs
        _EXECUTORS.add(self)

    # -- the contract ---------------------------------------------------------------------

    def submit(self, job: Job, done: Done) -> Handle:
        if not is_async(job.func):
            with self._lock:
                if self._closed:
                    raise RuntimeError("the async executor is shut down: it takes no new jobs")
                if self._threads is None:
                    self._threads = ThreadExecutor(self.max_workers, thread_name="flowyml-async-sync")
                threads = self._threads
            return threads.submit(job, done)
        capture.install()
        with self._lock:
            if self._closed:
                raise RuntimeError("the async executor is shut down: it takes no new jobs")
            loop = self._ensure_loop()
            handle = _AsyncHandle(self, job, done, loop)
            self._handles.add(handle)
        # A loop a job just stopped takes the call all the same: _recover moves the run to the next.
        loop.call_soon_threadsafe(self._start, handle)
        return handle

    def problem(self) -> Optional[str]:
        """No event loop could be started (the runs fail to start), or the loop is blocked by a run
        (a blocking call in an ``async def``): every other async run waits behind it, and health
        should name the culprit, not its victims."""
        down = self._down
        if down is not None:
            return down
        loop = self._loop
        stuck = time.monotonic() - self._tick
        if loop is None or stuck < BLOCKED_SECONDS or not self._handles or loop.is_closed():
            return None
        try:
            task = asyncio.current_task(loop)  # the task whose step holds the loop (read from here)
        except RuntimeError:
            task = None
        names = [h.job.context.schedule for h in list(self._handles) if h.task is not None and h.task is task]
        by = f" by the run of {names[0]!r}" if names else ""
        return (
            f"the async executor's event loop has been blocked for {stuck:.0f} s{by}: a blocking call in "
            "an async def (await it, or use asyncio.to_thread); every other async run waits"
        )

    def shutdown(self, wait: bool = True, timeout: Optional[float] = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._closed = True
            handles = list(self._handles)
            loop, thread, threads = self._loop, self._thread, self._threads
        if threads is not None:
            threads.shutdown(wait, timeout)
        if wait:  # a run a timeout already asked to stop had its time to answer: not waited for again
            for handle in handles:
                if not handle.cancel_requested:
                    handle.finished.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        left = [h for h in handles if not h.finished.is_set()]
        asked = {h for h in left if h.cancel_requested}
        for handle in left:
            handle.cancel()
        # A blocked loop cannot deliver a cancellation, nor stop: then nothing is waited for.
        going = self._going_round()
        grace = time.monotonic() + (CANCEL_GRACE_SECONDS if going else 0.0)
        for handle in left:
            if handle in asked or not handle.finished.wait(max(0.0, grace - time.monotonic())):
                # A coroutine that swallows its cancellation or blocks the loop: reported stopped.
                self._finish(handle, _abandoned(going))
        if loop is not None and thread is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
            thread.join(CANCEL_GRACE_SECONDS if going else 0.0)

    # -- inside ----------------------------------------------------------------------------

    def _going_round(self) -> bool:
        """Whether the loop went round lately: it can still act on a cancel or a stop."""
        return time.monotonic() - self._tick < BLOCKED_SECONDS

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        """The loop, started on a thread of its own at the first call and after one stopped (lock held)."""
        if self._loop is not None:
            return self._loop
        loop: Optional[asyncio.AbstractEventLoop] = None
        try:
            loop = asyncio.new_event_loop()
            loop.set_exception_handler(_on_loop_error)
            thread = threading.Thread(
                target=self._serve, args=(loop,), name="flowyml-async-loop", daemon=True
            )
            self._tick = time.monotonic()
            thread.start()
        except Exception as exc:  # e.g. no thread or file descriptor to be had
            if loop is not None:
                loop.close()
            self._down = (
                f"the async executor could not start an event loop ({describe(exc)}): its runs fail "
                "to start until it can"
            )
            raise
        self._loop, self._thread, self._slots, self._down = loop, thread, None, None
        return loop

    def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)

        def tick() -> None:
            self._tick = time.monotonic()
            loop.call_later(TICK_SECONDS, tick)

        failure: Optional[BaseException] = None
        try:
            loop.call_soon(tick)
            loop.run_forever()
        except BaseException as exc:  # a callback raised SystemExit or KeyboardInterrupt
            failure = exc
        finally:
            if os.getpid() != self._pid:  # a forked child whose job awaited: it ends, runs nothing more
                leave_forked_child(None, False)
            stranded = self._detach(loop)
            if stranded is not None:  # stopped, but not by shutdown(): by a job, or it failed
                self._recover(stranded, failure)
            elif failure is not None:
                logger.error("the async executor's event loop failed", exc_info=failure)
            _close(loop, cancel_tasks=stranded is not None)

    def _detach(self, loop: asyncio.AbstractEventLoop) -> Optional[List[_AsyncHandle]]:
        """The runs on ``loop``, which stopped while still in use (the next submit starts a new
        loop); None if it was shutdown() that stopped it."""
        with self._lock:
            if self._closed or self._loop is not loop:
                return None
            self._loop = self._thread = None
            return [h for h in self._handles if h.loop is loop]

    def _recover(self, handles: List[_AsyncHandle], failure: Optional[BaseException]) -> None:
        """On the thread of a loop that stopped under its runs: start a new loop, end the runs in
        flight on the old one (failed, never left running), and move the runs not started yet."""
        how = "a job stopped it (loop.stop())" if failure is None else f"it failed: {describe(failure)}"
        try:  # first, so that whoever hears of the runs ended below finds the executor as it now is
            with self._lock:
                loop = None if self._closed else self._ensure_loop()
            then = "a new event loop takes the next runs" if loop is not None else "the executor is shut down"
        except Exception as exc:
            loop, how = None, f"{how}, and no new one could be started: {describe(exc)}"
            then = "async runs fail to start until one can"
        started = [h for h in handles if h.began]
        logger.error(
            "the async executor's event loop stopped while in use: %s; %d run(s) in flight on it ended "
            "failed (%s); %s",
            how,
            len(started),
            ", ".join(sorted({repr(h.job.context.schedule) for h in started})) or "none",
            then,
            exc_info=failure,
        )
        for handle in started:
            self._finish(handle, _stopped_under(handle, f"while the run was in flight: {how}"))
        for handle in (h for h in handles if not h.began):
            if loop is not None:  # its old task, if any, is cancelled with the old loop: not its own then
                handle.loop, handle.task = loop, None  # first: _start on the old loop now lets it be
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._start, handle)
                    continue
            self._finish(handle, _stopped_under(handle, f"before the run started: {how}"))

    def _start(self, handle: _AsyncHandle) -> None:
        """On the loop: make the run's task, in a context of its own holding its run and buffer."""
        try:
            loop = asyncio.get_running_loop()
            if handle.loop is not loop:
                return  # this loop stopped before the run started: it was moved to the next one
            if handle.cancel_requested:
                self._finish(
                    handle,
                    JobResult(success=False, cancelled=True, error="the run was cancelled before it started"),
                )
                return
            context = contextvars.copy_context()
            context.run(_enter, handle)
            handle.task = context.run(loop.create_task, self._main(handle))
        except BaseException as exc:
            logger.exception("could not start an async run")
            self._finish(handle, from_exception(exc))

    async def _main(self, handle: _AsyncHandle) -> None:
        try:
            if self._slots is None:
                self._slots = asyncio.Semaphore(self.max_workers)
            async with self._slots:
                handle.began = True
                value = handle.job.func()
                if inspect.isawaitable(value):
                    value = await value
            result = result_of(drained(value))
        except asyncio.CancelledError:
            result = JobResult(
                success=False, cancelled=True, error="the run was cancelled (its task was cancelled)"
            )
        except BaseException as exc:  # SystemExit and KeyboardInterrupt too: the loop must live on
            result = from_exception(exc)
        if not _in_its_task(handle):  # closed from outside (garbage collected, its loop gone): the
            return  # run was reported then, and the context here is another run's
        if os.getpid() != self._pid:  # the job forked, and its child returned from it
            leave_forked_child(handle.job.context.schedule, result.success)
        result.output = handle.buffer.text()
        CURRENT_RUN.set(None)  # done() runs in this task's context: it is not part of the run
        capture.CURRENT_OUTPUT.set(None)
        self._finish(handle, result)

    def _finish(self, handle: _AsyncHandle, result: JobResult) -> None:
        if os.getpid() != self._pid:
            return  # in a forked child: the parent records its runs
        with handle.lock:
            if handle.finished.is_set():
                return
            handle.finished.set()
        with self._lock:
            self._handles.discard(handle)
        deliver(handle.done, result)


def _enter(handle: _AsyncHandle) -> None:
    CURRENT_RUN.set(handle.job.context)
    capture.CURRENT_OUTPUT.set(handle.buffer)


def _in_its_task(handle: _AsyncHandle) -> bool:
    """Whether this is a step of the run's own task, not its coroutine closed from outside."""
    try:
        return asyncio.current_task() is handle.task
    except RuntimeError:  # no loop running on this thread
        return False


def _abandoned(going_round: bool) -> JobResult:
    """The result of a run shutdown() could not stop: it ignored its cancellation or blocks the loop."""
    why = "its task ignored cancellation" if going_round else "it blocks the event loop (cannot be cancelled)"
    return JobResult(success=False, cancelled=True, error=f"the run was stopped: {why}")


def _stopped_under(handle: _AsyncHandle, when: str) -> JobResult:
    """The failed result of a run whose event loop stopped under it (``when``: how and when)."""
    error = EventLoopStoppedError(
        f"the async executor's event loop stopped {when}; the run was ended (a job must not stop or "
        "close the running event loop)"
    )
    result = from_exception(error)
    result.output = handle.buffer.text()
    return result


def _close(loop: asyncio.AbstractEventLoop, cancel_tasks: bool) -> None:
    """Close ``loop`` on its thread; after a stop in use its tasks are cancelled first, as
    ``asyncio.run`` does (their ``finally`` blocks run), for CANCEL_GRACE_SECONDS at most."""
    try:
        tasks = asyncio.all_tasks(loop) if cancel_tasks else set()
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.wait(tasks, timeout=CANCEL_GRACE_SECONDS))
        loop.run_until_complete(loop.shutdown_asyncgens())
    except BaseException:
        logger.exception("closing the async executor's event loop failed")
    loop.close()


def _on_loop_error(loop: asyncio.AbstractEventLoop, context: Dict[str, Any]) -> None:
    exc = context.get("exception")
    logger.error(
        "async executor: %s",
        context.get("message", "unhandled error in the event loop"),
        exc_info=(type(exc), exc, exc.__traceback__) if isinstance(exc, BaseException) else None,
    )


# Executors of this process, so that a job forking on one's loop thread stops that loop in the child.
_EXECUTORS: weakref.WeakSet[AsyncExecutor] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """In a child forked by a job on an executor's loop thread, the loop stops once the job's step
    is over: the runs in flight are the parent's, and must not go on (or end) twice."""
    for executor in list(_EXECUTORS):
        loop, thread = executor._loop, executor._thread
        if loop is not None and thread is threading.current_thread():
            loop.stop()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)
