"""The ``thread`` executor: runs jobs on a bounded pool of threads of its own.

Not ``concurrent.futures``: a Python thread cannot be stopped, so a run past its timeout is
*abandoned* (its thread keeps running in the background, its eventual result is discarded) and a
new thread takes its place, which a ``ThreadPoolExecutor`` cannot do. Capacity is therefore
never lost to hung jobs; the cost of a hung job is one idle-forever thread, logged.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import os
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Sequence, Set, Tuple

from ..runtime.context import CURRENT_RUN
from ..stores.schema import clip_text
from . import capture
from .base import (
    Done,
    Executor,
    Handle,
    Job,
    JobResult,
    drained,
    from_exception,
    leave_forked_child,
    result_of,
)

logger = logging.getLogger("flowyml_lite.executors.thread")

#: Runs waiting this long for a free thread make the executor report a problem to health (runs
#: beyond ``max_workers`` wait their turn; a minute is no longer a turn but a full pool).
POOL_FULL_SECONDS = 60.0
#: A thread inside a job (or ending one) for longer than this no longer counts as about to take
#: the next run: a waiting run then gets a thread of its own. Shorter jobs are drained by the
#: threads already awake, because under the GIL more threads only add switches between them.
#: Twice the interpreter's switch interval (5 ms): a thread that only waits for the GIL (held by
#: the loop through a burst) is not taken for one that blocks; with 0.5 ms, 3 bursts of 1,000 in
#: 8 woke all ten threads, each false alarm waking the next, and took 54 ms instead of 20-29 ms.
BUSY_SECONDS = max(0.0005, 2 * sys.getswitchinterval())
#: While most recent jobs took this long or longer (wall time), jobs are not short: runs that
#: wait get a thread at once, as for a job that has lasted ``BUSY_SECONDS``. Twenty 5 ms jobs due
#: together (a query each) otherwise ran one after another on one thread, the last starting 100 ms
#: late, since none of them alone lasted 10 ms. A count, not an average: a trivial job that waited
#: for the interpreter (a burst's hand-over holds it up to 5 ms) now and then must not wake every
#: thread of the pool.
SLOW_JOB_SECONDS = 0.001
SLOW_JOBS_MAX = 16  # the count goes up by one for each slow job, down by one for each other
SLOW_JOBS = 8  # from this count on, jobs are taken as slow
#: How long the watching idle thread waits before it looks again while runs wait and no awake
#: thread is in a job (they are between jobs: they take the next run themselves).
WATCH_SECONDS = 0.002

_PLAIN = frozenset({bool, int, float, str, bytes, dict, list, tuple})  # never awaitable nor generators


def _await(value: Any) -> Any:
    """Run an awaitable a sync-looking function returned to completion, here, on a new event loop."""
    import asyncio

    async def wait() -> Any:
        return await value

    return asyncio.run(wait())


def run_here(job: Job, buffer: capture.OutputBuffer) -> JobResult:
    """Run ``job`` in the calling thread with its ``current_run()`` and output capture set."""
    run_token = CURRENT_RUN.set(job.context)
    output_token = capture.CURRENT_OUTPUT.set(buffer)
    try:
        value = job.func()
        if value is not None and type(value) not in _PLAIN:
            if inspect.isawaitable(value):  # an async def (or a partial of one): awaited, never dropped
                value = _await(value)
            value = drained(value)
        result = result_of(value)
    except BaseException as exc:  # a run must never take its worker down, whatever it raises
        result = from_exception(exc)
    finally:
        capture.CURRENT_OUTPUT.reset(output_token)
        CURRENT_RUN.reset(run_token)
    result.output = buffer.text()
    return result


def deliver(done: Done, result: JobResult) -> None:
    """Call ``done(result)``; an exception there is logged, never propagated into the executor."""
    try:
        done(result)
    except BaseException:
        logger.exception("the done callback of a run failed")


def deliver_later(done: Done, result: JobResult) -> None:
    """``deliver`` on a short-lived thread: for results decided inside ``cancel()`` or ``shutdown()``."""
    threading.Thread(target=deliver, args=(done, result), name="flowyml-run-done", daemon=True).start()


class _Task(Handle):
    """A run in the pool, and its handle.

    Its thread and ``cancel()`` each draw a number from ``turns`` (``next()`` on a count is
    atomic): the thread once before running and once after, cancel once. So the first draw
    decides whether the run starts at all, and a cancel drawing 1 knows the run is going.
    """

    __slots__ = ("began", "buffer", "cancelled", "done", "executor", "job", "queued", "turns", "worker")

    def __init__(self, executor: ThreadExecutor, job: Job, done: Done, queued: float) -> None:
        self.executor = executor
        self.job = job
        self.done = done
        self.queued = queued  # monotonic: when it was handed over
        self.began = 0.0  # monotonic: when a thread took it
        self.turns = itertools.count()
        self.cancelled = False  # set under the pool's lock: a second cancel() does nothing
        self.worker: Optional[threading.Thread] = None  # set by the thread that took it
        self.buffer: Optional[capture.OutputBuffer] = None

    def cancel(self) -> bool:
        return self.executor._cancel(self, "cancelled")


class ThreadExecutor(Executor):
    """At most ``max_workers`` runs at once on threads of its own; abandoned threads are replaced.

    A busy thread takes its next run and ends the last one without the pool's lock (``popleft``
    on the queue and each run's ``turns`` are atomic): ten threads draining a burst of
    short runs would otherwise queue on that lock, each wait a context switch. The lock guards
    the rest: idle threads, growth, cancel and shutdown.

    Waiting runs wake an idle thread only when no awake thread is about to take them: every
    awake thread is inside a job that has lasted over ``BUSY_SECONDS``. One idle thread (the
    watcher) looks again while runs wait, so a run queued behind a job that turns out long gets
    a thread about ``BUSY_SECONDS`` after that job began, and the runs after it at once. A burst
    of short jobs is drained by one or two threads instead of every thread of the pool taking
    turns at the GIL, which costs more than the jobs; jobs that block or run long still get a
    thread each, up to ``max_workers``.
    """

    name = "thread"
    reports_start = True

    def __init__(self, max_workers: int = 4, thread_name: str = "flowyml-run") -> None:
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"max_workers must be an integer >= 1, got {max_workers!r}")
        self.max_workers = max_workers
        self._thread_name = thread_name
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: Deque[_Task] = deque()
        self._running: Set[_Task] = set()
        self._workers: Set[threading.Thread] = set()  # live and not abandoned
        self._abandoned: Set[threading.Thread] = set()  # abandoned and still running
        self._idle = 0
        #: Awake threads: when each entered its current job (perf_counter), or the negated time it
        #: took a run or ended its last job (it is between jobs).
        self._awake: Dict[threading.Thread, float] = {}
        self._watched = False  # an idle thread waits with a timeout, watching the queue
        #: Slow jobs lately (``SLOW_JOB_SECONDS``), from 0 to ``SLOW_JOBS_MAX``; counted by the run
        #: threads without the lock (a lost update only delays it by a job).
        self._slow = 0
        self._closed = False
        self._dropping = False  # shutdown is cancelling what is left
        self._numbers = itertools.count(1)
        _POOLS.add(self)

    def _forked(self) -> None:
        """In a forked child: the parent's threads are not here, nor are its runs this pool's."""
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue.clear()
        self._running.clear()
        self._workers.clear()
        self._abandoned.clear()
        self._awake.clear()
        self._idle = 0
        self._watched = False

    # -- the contract ---------------------------------------------------------------------

    def submit(self, job: Job, done: Done) -> Handle:
        return self.submit_many([(job, done)])[0]

    def submit_many(self, items: Sequence[Tuple[Job, Done]]) -> List[Handle]:
        """All of ``items`` queued under one lock, with one wake-up per idle thread."""
        capture.install()
        now = time.monotonic()
        tasks = [_Task(self, job, done, now) for job, done in items]
        with self._lock:
            if self._closed:
                raise RuntimeError("the thread executor is shut down: it takes no new jobs")
            self._queue.extend(tasks)
            try:
                self._grow()
            except RuntimeError:  # not one thread: the caller ends these runs itself
                for task in tasks:
                    self._queue.remove(task)
                raise
            if self._idle and (not self._watched or not self._busy(time.perf_counter())):
                self._cond.notify()  # it takes a run, or watches the queue
        handles: List[Handle] = [*tasks]  # each task is its own handle
        return handles

    def close(self) -> None:
        """Take no new runs and let the threads go: idle ones now, busy ones once their run (still
        reported) and the runs already handed over are done. For a stop that leaves runs going."""
        with self._lock:
            self._closed = True
            self._cond.notify_all()

    def shutdown(self, wait: bool = True, timeout: Optional[float] = None) -> None:
        with self._lock:
            self._closed = True
            self._cond.notify_all()
        if wait:  # until every thread of the pool has left it (an abandoned one is no longer its)
            deadline = None if timeout is None else time.monotonic() + timeout
            me = threading.current_thread()  # a run that shuts its own pool down waits for the others
            with self._lock:
                while self._workers and self._workers != {me}:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    self._cond.wait(remaining)
        with self._lock:
            self._dropping = True  # a run taken from the queue from now on is cancelled, not run
            left = list(self._queue) + list(self._running)
        for task in left:
            self._cancel(task, "stopped")

    # -- state -------------------------------------------------------------------------------

    def problem(self) -> Optional[str]:
        """Every thread busy and runs waiting for one for over ``POOL_FULL_SECONDS``: names the
        longest-running runs (hung jobs without a timeout fill a pool), not the runs that wait."""
        try:
            head = self._queue[0]
        except IndexError:
            return None
        now = time.monotonic()
        waited = now - head.queued
        if waited < POOL_FULL_SECONDS:
            return None
        running = sorted((t.began, t.job.context.schedule) for t in list(self._running) if t.began)
        longest = ", ".join(f"{name!r} for {now - began:.0f} s" for began, name in running[:3])
        return (
            f"all {len(self._workers)} run threads are busy and {len(self._queue)} run(s) wait for one, "
            f"the first for {waited:.0f} s, so runs start late; running longest: {longest or 'none'} "
            "(raise max_concurrent_runs, or give jobs that hang a timeout_seconds)"
        )

    def waiting(self) -> int:
        return len(self._queue)

    @property
    def abandoned_threads(self) -> int:
        """Threads abandoned by ``cancel()`` that are still running their job."""
        with self._lock:
            return len(self._abandoned)

    @property
    def live_threads(self) -> int:
        """Threads of the pool (not counting abandoned ones): at most ``max_workers``."""
        with self._lock:
            return len(self._workers)

    # -- inside ----------------------------------------------------------------------------

    def _busy(self, now: float) -> bool:
        """Whether an awake thread is about to take the next waiting run: each awake thread is in
        a job, or between two (its last one's ending), that began less than ``BUSY_SECONDS`` ago
        (once one has lasted longer, the next run gets a thread at once), and there is one."""
        if self._slow >= SLOW_JOBS:
            return False
        stamps = list(self._awake.values())
        return bool(stamps) and all(now - abs(stamp) < BUSY_SECONDS for stamp in stamps)

    def _watch_seconds(self, now: float) -> float:
        """How long the watcher waits: until the oldest job or ending in progress has lasted
        ``BUSY_SECONDS`` (``WATCH_SECONDS`` with no thread awake)."""
        stamps = list(self._awake.values())
        if not stamps:
            return WATCH_SECONDS
        return max(min(abs(stamp) for stamp in stamps) + BUSY_SECONDS - now, 0.0005)

    def _grow(self) -> None:
        """Start a thread when work waits and no thread is idle (lock held): it takes a run or
        watches the queue.

        One at a time: starting a thread takes a while, and the runs already queued should not
        wait for ten. A thread that takes a run and still sees work waiting starts the next.
        """
        if self._queue and not self._idle and len(self._workers) < self.max_workers:
            worker = threading.Thread(
                target=self._work, name=f"{self._thread_name}-{next(self._numbers)}", daemon=True
            )
            self._workers.add(worker)
            self._idle += 1  # counted idle until it takes its first task
            try:
                worker.start()
            except RuntimeError:  # no thread to be had (a process limit): go on with those there are
                self._workers.discard(worker)
                self._idle -= 1
                if not self._workers:
                    raise
                logger.warning("could not start another run thread; %d keep running", len(self._workers))

    def _wait_for_task(self, me: threading.Thread, counted: bool) -> Optional[_Task]:
        """Idle: wait for a run (None once the pool is closed and drained, or ``me`` was abandoned).

        A run waiting is taken when no awake thread is about to take it (``_busy``); else one idle
        thread watches, looking again when the oldest job in progress has lasted ``BUSY_SECONDS``
        (the others wait to be woken)."""
        with self._lock:
            self._awake.pop(me, None)
            if not counted:
                self._idle += 1
            try:
                while True:
                    if me not in self._workers:
                        return None
                    if self._queue:
                        now = time.perf_counter()
                        if self._closed or not self._busy(now):  # at shutdown every thread drains
                            try:
                                task = self._queue.popleft()
                            except IndexError:  # a busy thread took the last one meanwhile
                                continue
                            self._awake[me] = -now
                            if self._queue and not self._watched and self._idle > 1:
                                self._cond.notify()  # another idle thread watches what is left
                            return task
                        if not self._watched:
                            self._watched = True
                            try:
                                self._cond.wait(self._watch_seconds(now))
                            finally:
                                self._watched = False
                            continue
                    if self._closed:
                        self._workers.discard(me)
                        self._cond.notify_all()  # shutdown(wait=True) waits for the pool to empty
                        return None
                    self._cond.wait()
            finally:
                self._idle -= 1

    def _work(self) -> None:
        me = threading.current_thread()
        pid = os.getpid()  # a job that forks returns twice: in the child, this thread must not go on
        counted = True  # counted in _idle by _grow until its first wait for a task
        current: Optional[_Task] = None  # the run this thread took and has not yet ended
        drew = False  # whether it drew its first turn of `current`
        try:
            while True:
                current, drew = None, False
                task: Optional[_Task] = None
                if not counted:
                    try:  # noqa: SIM105 (contextlib.suppress costs a Python call a run)
                        task = self._queue.popleft()
                    except IndexError:
                        pass
                if task is None:
                    was_counted, counted = counted, False  # _wait_for_task uncounts it, however it ends
                    task = self._wait_for_task(me, was_counted)
                    if task is None:
                        return
                current = task
                if self._queue and not self._idle and len(self._workers) < self.max_workers:
                    with self._lock:
                        self._grow()
                buffer = task.buffer = capture.OutputBuffer()
                task.worker = me  # before the draw: a cancel() drawing 1 reads it
                task.began = time.monotonic()
                self._awake[me] = began = time.perf_counter()  # in a job since
                self._running.add(task)
                if self._dropping:  # shutdown's list of what is left may have missed this one
                    self._cancel(task, "stopped")
                drew = True
                if next(task.turns) != 0:  # cancelled as it was taken: it never runs
                    self._awake[me] = -time.perf_counter()
                    self._running.discard(task)
                    if self._left(me):
                        return
                    continue
                if task.job.on_start is not None:
                    _started(task)
                result = run_here(task.job, buffer)
                if os.getpid() != pid:
                    leave_forked_child(task.job.context.schedule, result.success)
                ended = time.perf_counter()
                self._awake[me] = -ended  # ending it since
                if ended - began >= SLOW_JOB_SECONDS:
                    if self._slow < SLOW_JOBS_MAX:
                        self._slow += 1
                elif self._slow:
                    self._slow -= 1
                self._running.discard(task)
                if next(task.turns) == 1:  # ended before any cancel
                    deliver(task.done, result)
                    # The job's return value goes now (its finalizers run here, as this run ends),
                    # not after the next job this thread runs, whose outcome would wait for them.
                    del result
                    continue
                if self._left(me):  # cancel() ended the run while it ran, and let this thread go
                    logger.warning(
                        "the abandoned run of %r (fire %s) finished after all (success=%s); "
                        "its result was discarded",
                        task.job.context.schedule,
                        task.job.context.fire_time.isoformat(),
                        result.success,
                    )
                    return
        except BaseException as exc:
            logger.exception("a run thread of the thread executor failed")
            if current is not None and next(current.turns) == (1 if drew else 0):
                self._running.discard(current)  # nobody else ends it: its outcome is this failure
                deliver_later(current.done, from_exception(exc))
            with self._lock:
                self._workers.discard(me)
                self._abandoned.discard(me)
                self._cond.notify_all()
                self._grow()
        finally:
            self._awake.pop(me, None)

    def _left(self, me: threading.Thread) -> bool:
        """Whether ``cancel()`` abandoned this thread (it then ends once its run is over)."""
        with self._lock:
            if me in self._abandoned:
                self._abandoned.discard(me)
                return True
            return False

    def _cancel(self, task: _Task, why: str) -> bool:
        with self._lock:
            if task.cancelled:
                return False
            task.cancelled = True
            try:
                self._queue.remove(task)
                queued = True
            except ValueError:  # taken by a thread, or over
                queued = False
            turn = next(task.turns)
            if turn >= 2:
                return False  # it ended first
            worker = task.worker
            if queued or turn == 0:  # not started: its thread (if any) draws 1 and skips it
                result = JobResult(
                    success=False, cancelled=True, error=f"the run was {why} before it started"
                )
                stopped = True
            else:  # running: a thread cannot be stopped; abandon it and replace it
                self._running.discard(task)
                self._awake.pop(worker, None)  # type: ignore[arg-type]
                if worker in self._workers:
                    self._workers.discard(worker)
                    self._abandoned.add(worker)
                    self._cond.notify_all()  # shutdown(wait=True) no longer waits for it
                self._grow()
                result = JobResult(
                    success=False,
                    cancelled=True,
                    error=(
                        f"the run was {why} while running: a thread cannot be stopped, so it was "
                        "abandoned and may still be running in the background"
                    ),
                    traceback=_where(worker),
                    output=task.buffer.text() if task.buffer is not None else None,
                )
                stopped = False
                abandoned = len(self._abandoned)
        if not stopped:
            logger.warning(
                "abandoned the run of %r (fire %s) on thread %s; %d abandoned thread(s) still running",
                task.job.context.schedule,
                task.job.context.fire_time.isoformat(),
                getattr(task.worker, "name", "?"),
                abandoned,
            )
        deliver_later(task.done, result)
        return stopped


def _started(task: _Task) -> None:
    """Tell the run's owner it starts now (after its wait for a thread); never raises."""
    try:
        task.job.on_start()  # type: ignore[misc]
    except Exception:
        logger.exception("the start callback of the run of %r failed", task.job.context.schedule)


def _where(thread: Optional[threading.Thread]) -> Optional[str]:
    """The stack a thread is executing now (where a hung run hangs), or None."""
    frames = getattr(sys, "_current_frames", None)
    if thread is None or thread.ident is None or frames is None:
        return None
    frame = frames().get(thread.ident)
    if frame is None:
        return None
    stack = "".join(traceback.format_stack(frame))
    return clip_text(f"the run's thread was here when it was abandoned:\n{stack}")


#: Every pool of this process, reset in a forked child (its threads did not come along).
_POOLS: weakref.WeakSet[ThreadExecutor] = weakref.WeakSet()


def _reset_pools_in_child() -> None:
    for pool in list(_POOLS):
        pool._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_pools_in_child)
