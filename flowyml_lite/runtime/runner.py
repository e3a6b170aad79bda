"""The runner: how a claimed run is carried out, and that it always ends in a final status.

For each run: an optional delay (jitter), the schedule's lock lease when a lock backend is set,
the job on its executor (thread, process, async or a plugin), a watchdog at its timeout, retries
with backoff, and the outcome handed to the outcome writer. Whatever the job, the lock server or
the executor does, the run reaches exactly one final outcome; the runner never raises into them.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Tuple

from .. import plugins
from ..clock import Clock
from ..core.schedule import Options, matches_retry_on, retry_delay
from ..core.triggers import jitter_delay
from ..errors import ScheduleError
from ..executors.base import Executor, Handle, Job, JobResult, reference
from ..locks.base import Lease, Lock
from ..stores.base import (
    FAILED,
    QUEUED,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    TIMED_OUT,
    Outcome,
    RunRecord,
    Store,
)
from .context import RunContext
from .health import Troubles
from .outcomes import OutcomeWriter
from .timers import Timer, Timers

logger = logging.getLogger("flowyml_lite.scheduler.runner")

Hook = Callable[[Dict[str, Any]], Any]
CANCEL_ANSWER_SECONDS = 5.0  # how long a timed-out run waits for its executor's answer to cancel
STOPPED_BEFORE = "scheduler stopped before this catch-up run"
LOCK_RETRY_SECONDS = 2.0  # while the lock backend is down, it is tried again at most this often
_TIMEOUT_TYPES = ("builtins.TimeoutError",)


class Ticket:
    """A submitted run: ``wait()`` for its final history entry (``run_now(wait=True)``)."""

    __slots__ = ("_done", "_lock", "entry", "run")

    def __init__(self, run: RunRecord) -> None:
        self.run = run
        self.entry: Optional[Dict[str, Any]] = None
        self._done: Optional[threading.Event] = None  # made only when someone waits
        self._lock = _TICKETS

    def wait(self, timeout: Optional[float] = None) -> Optional[Dict[str, Any]]:
        with self._lock:
            if self._done is None:
                self._done = threading.Event()
                if self.entry is not None:
                    self._done.set()
            done = self._done
        done.wait(timeout)
        return self.entry

    def set(self, entry: Optional[Dict[str, Any]]) -> None:
        with self._lock:
            self.entry = entry if entry is not None else {}
            if self._done is not None:
                self._done.set()


_TICKETS = threading.Lock()


@dataclass
class _Run:
    """One run in flight: its row as this process knows it, and what is needed to end it."""

    name: str
    func: Callable[[], Any]
    run: RunRecord
    opts: Options
    manual: bool
    ticket: Ticket
    rest: Deque[RunRecord]  # queued catch-up runs of the same claim, started one after another
    lock: threading.Lock = field(default_factory=threading.Lock)
    finished: bool = False
    timing_out: bool = False  # the watchdog fired; the executor's answer to its cancel is awaited
    stopped: bool = False  # the executor stopped the timed-out work (a thread cannot be)
    handle: Optional[Handle] = None
    watchdog: Optional[Timer] = None
    lease: Optional[Lease] = None
    renewing: Optional[threading.Event] = None
    t0: float = 0.0


class Runner:
    """Carries out claimed runs on executors and reports every outcome to the writer."""

    def __init__(
        self,
        store: Store,
        writer: OutcomeWriter,
        troubles: Troubles,
        clock: Clock,
        node_id: str,
        max_workers: int,
        lock: Optional[Lock] = None,
        lock_ttl: float = 60.0,
        entry: Callable[[RunRecord], Dict[str, Any]] = lambda run: {},
    ) -> None:
        self._store = store
        self._writer = writer
        self._troubles = troubles
        self._clock = clock
        self._node = node_id
        self._max_workers = max_workers
        self._lock = lock
        self._lock_ttl = lock_ttl
        self._entry = entry
        self._executors: Dict[str, Executor] = {}
        self._funcs: Dict[int, Tuple[Callable[[], Any], bool, Optional[str]]] = {}
        self._batch = threading.local()  # .held: runs waiting for the end of batch() on this thread
        self._executors_lock = threading.Lock()
        self._timers = Timers()
        self._leasing: Optional[ThreadPoolExecutor] = None
        self._lock_down_until = 0.0
        self._lock_takes_owner = lock is not None and "owner" in inspect.signature(lock.acquire).parameters
        self._cond = threading.Condition()
        self._inflight: Dict[str, _Run] = {}  # run_key -> run, from submit to its final outcome
        self.stopping = threading.Event()
        self.lags: Deque[float] = deque(maxlen=10_000)
        self.on_success: List[Hook] = []
        self.on_failure: List[Hook] = []
        self.on_finish: List[Hook] = []

    # -- executors --------------------------------------------------------------------
    def executor_name(self, func: Callable[[], Any], opts: Options) -> str:
        """The executor a schedule's runs use: ``async`` for an ``async def`` on the default one."""
        if opts.executor == "thread" and self._about(func)[0]:
            return "async"
        return opts.executor

    def _about(self, func: Callable[[], Any]) -> Tuple[bool, Optional[str]]:
        """(is it an ``async def``, its ``module:qualname``), worked out once per function."""
        key = id(func)
        found = self._funcs.get(key)
        if found is None or found[0] is not func:
            found = (func, inspect.iscoroutinefunction(func), reference(func))
            if len(self._funcs) > 100_000:
                self._funcs.clear()
            self._funcs[key] = found
        return found[1], found[2]

    def executor(self, name: str) -> Executor:
        """The executor plugin ``name``, created on first use (PluginError if there is none)."""
        found = self._executors.get(name)
        if found is not None:
            return found
        with self._executors_lock:
            found = self._executors.get(name)
            if found is None:
                factory = plugins.get("executors", name)
                found = factory(max_workers=self._max_workers) if isinstance(factory, type) else factory
                self._executors[name] = found
        return found

    def check(self, func: Callable[[], Any], opts: Options) -> None:
        """At declaration: ScheduleError if the schedule's executor cannot run ``func``."""
        self.executor(self.executor_name(func, opts)).check(func, self._about(func)[1])

    # -- runs in flight -----------------------------------------------------------------
    @property
    def active(self) -> int:
        return len(self._inflight)

    def active_names(self) -> List[str]:
        with self._cond:
            return sorted({r.name for r in self._inflight.values()})

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        """Block until no run is in flight here; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._inflight:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def submit(
        self, name: str, func: Callable[[], Any], runs: List[RunRecord], opts: Options, manual: bool = False
    ) -> Ticket:
        """Carry out ``runs`` (one claim's active runs: the first running, the rest queued) in order."""
        first = runs[0]
        state = _Run(name, func, first, opts, manual, Ticket(first), deque(runs[1:]))
        with self._cond:
            self._inflight[first.run_key] = state
            for run in state.rest:
                self._inflight[run.run_key] = state
        self._schedule_start(state)
        return state.ticket

    def _schedule_start(self, state: _Run) -> None:
        delay = 0.0
        if state.opts.jitter_seconds and not state.manual and state.run.attempt == 1:
            delay = jitter_delay(state.name, state.run.fire_time, state.opts.jitter_seconds)
        if state.run.next_attempt_at is not None:
            delay = max(delay, (state.run.next_attempt_at - self._clock.now()).total_seconds())
        if delay > 0:
            self._timers.after(delay, lambda: self._start(state))
        elif self._lock is not None:
            if self._leasing is None:
                self._leasing = ThreadPoolExecutor(max_workers=4, thread_name_prefix="flowyml_lite-lease")
            self._leasing.submit(self._start, state)  # a lock server round trip stays off the loop
        else:
            self._start(state)

    def _start(self, state: _Run) -> None:
        try:
            self._begin(state)
        except BaseException as exc:  # never leave a claimed run without an outcome
            logger.exception(
                "could not start the run of %r fired %s", state.name, state.run.fire_time.isoformat()
            )
            self._end(state, FAILED, None, f"could not start: {type(exc).__name__}: {exc}", None)

    def _begin(self, state: _Run) -> None:
        run = state.run
        if run.status == QUEUED:
            if self.stopping.is_set() and run.attempt == 1:
                self._end(state, SKIPPED, None, None, None, reason=STOPPED_BEFORE)
                return
            try:
                if not self._store.start_run(run.run_key, self._clock.now()):
                    logger.info(
                        "run of %r fired %s is no longer active; not started", state.name, run.fire_time
                    )
                    self._release(state, None)
                    return
            except Exception as exc:  # the row is ours either way: run, and let the outcome say so
                logger.warning(
                    "could not mark the run of %r running (running it anyway): %s", state.name, exc
                )
            run.status = RUNNING
        if self._lock is not None and not self._take_lease(state):
            return
        started = self._clock.now()
        run.started_at = started
        lag = (started - run.fire_time).total_seconds()
        if not state.manual and run.attempt == 1:
            self.lags.append(lag)
        ctx = RunContext(
            state.name, run.fire_time, run.run_key, self._node, started, state.manual, run.attempt
        )
        executor = self.executor(self.executor_name(state.func, state.opts))
        state.t0 = time.perf_counter()
        timeout = state.opts.timeout_seconds
        job = Job(state.func, self._about(state.func)[1], ctx, timeout)
        with state.lock:
            state.finished = state.timing_out = state.stopped = False
        held = getattr(self._batch, "held", None)
        if held is not None:  # inside batch(): handed over together when it ends
            held.setdefault(id(executor), (executor, []))[1].append((job, state))
            return
        self._handed(state, executor.submit(job, lambda result: self._done(state, result)))

    def _handed(self, state: _Run, handle: Handle) -> None:
        """The executor took the run: keep its handle and arm the watchdog (unless it is over)."""
        timeout = state.opts.timeout_seconds
        with state.lock:
            state.handle = handle
            if timeout is not None and not state.finished:
                state.watchdog = self._timers.after(timeout, lambda: self._timed_out(state))

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Runs started on this thread inside the block reach their executors together at its end
        (one hand-over per executor instead of one per run: a burst's fires start sooner)."""
        if getattr(self._batch, "held", None) is not None:
            yield
            return
        held: Dict[int, Tuple[Executor, List[Tuple[Job, _Run]]]] = {}
        self._batch.held = held
        try:
            yield
        finally:
            self._batch.held = None
            for executor, items in held.values():
                self._hand_over(executor, items)

    def _hand_over(self, executor: Executor, items: List[Tuple[Job, _Run]]) -> None:
        try:
            handles = executor.submit_many([(job, self._done_for(state)) for job, state in items])
        except Exception as exc:  # e.g. shut down: every run still gets its outcome
            for _, state in items:
                with state.lock:
                    if state.finished:
                        continue
                    state.finished = True
                self._end(state, FAILED, None, f"could not start: {type(exc).__name__}: {exc}", None)
            return
        for (_, state), handle in zip(items, handles):
            self._handed(state, handle)

    def _done_for(self, state: _Run) -> Callable[[JobResult], None]:
        return lambda result: self._done(state, result)

    def _take_lease(self, state: _Run) -> bool:
        """The schedule's lease; False if another process holds it (recorded skipped) or on error."""
        assert self._lock is not None
        if time.monotonic() < self._lock_down_until:
            return True  # the lock server is down: the store's claim alone keeps the fire once
        try:
            key = f"schedule:{state.name}"
            if self._lock_takes_owner:
                lease = self._lock.acquire(key, ttl_seconds=self._lock_ttl, owner=self._node)
            else:  # a lock plugin written before leases had owners
                lease = self._lock.acquire(key, ttl_seconds=self._lock_ttl)
        except Exception as exc:
            self._lock_down_until = time.monotonic() + LOCK_RETRY_SECONDS
            message = (
                f"lock backend unreachable ({type(exc).__name__}: {exc}); runs go on with the store's "
                "claim alone (max_instances is still enforced by the store)"
            )
            if self._troubles.report("lock", message):
                logger.warning("%s", message)
            return True
        if self._troubles.active("lock"):
            lasted = self._troubles.clear("lock")
            logger.warning("lock backend answers again after %.1f s", lasted or 0.0)
        if lease is None:
            self._end(
                state,
                SKIPPED,
                None,
                None,
                None,
                reason="overlap: the schedule's lock is held by another process",
            )
            return False
        state.lease = lease
        if self._lock.expires:
            state.renewing = keep_renewed(lease, self._lock_ttl, state.name)
        return True

    # -- endings ------------------------------------------------------------------------
    def _done(self, state: _Run, result: JobResult) -> None:
        with state.lock:
            if state.finished:  # already timed out: a late result of an abandoned run is ignored
                logger.info(
                    "run of %r fired %s returned after its timeout; result ignored",
                    state.name,
                    state.run.fire_time,
                )
                return
            state.finished = True
            timing_out = state.timing_out
            if state.watchdog is not None:
                state.watchdog.cancel()
        if timing_out:  # the executor's answer to the watchdog's cancel
            self._record_timeout(state, result)
            return
        duration = time.perf_counter() - state.t0
        if result.success:
            self._end(state, SUCCEEDED, duration, None, result.run_id, output=result.output)
            return
        if result.traceback:
            logger.error(
                "run of %r (fire %s) failed:\n%s",
                state.name,
                state.run.fire_time.isoformat(),
                result.traceback,
            )
        else:
            logger.error(
                "run of %r (fire %s) failed: %s", state.name, state.run.fire_time.isoformat(), result.error
            )
        retryable = matches_retry_on(state.opts, result.exception_types or ())
        self._end(
            state,
            FAILED,
            duration,
            result.error,
            result.run_id,
            traceback=result.traceback,
            output=result.output,
            retryable=retryable,
        )

    def _timed_out(self, state: _Run) -> None:
        """The watchdog: stop the run if its executor can, then record it ``timed_out``.

        The executor answers a cancel with a result of its own (the output so far and, for a
        thread, where it hangs), which ``_done`` records; if none comes within a few seconds the
        run is recorded without it, so a run always ends.
        """
        with state.lock:
            if state.finished or state.timing_out:
                return
            state.timing_out = True
            handle = state.handle
        try:
            state.stopped = bool(handle.cancel()) if handle is not None else False
        except Exception:
            logger.exception("could not stop the timed-out run of %r", state.name)
        self._timers.after(CANCEL_ANSWER_SECONDS, lambda: self._timed_out_without_answer(state))

    def _timed_out_without_answer(self, state: _Run) -> None:
        with state.lock:
            if state.finished:
                return
            state.finished = True
        self._record_timeout(state, None)

    def _record_timeout(self, state: _Run, result: Optional[JobResult]) -> None:
        limit = state.opts.timeout_seconds
        how = (
            "it was stopped"
            if state.stopped
            else "its thread cannot be stopped and may still be running; its result will be ignored"
        )
        reason = f"timed out after {limit:g} s: {how}"
        logger.error("run of %r (fire %s) %s", state.name, state.run.fire_time.isoformat(), reason)
        self._end(
            state,
            TIMED_OUT,
            time.perf_counter() - state.t0,
            f"TimeoutError: {reason}",
            None,
            reason=reason,
            traceback=result.traceback if result is not None else None,
            output=result.output if result is not None else None,
            retryable=matches_retry_on(state.opts, _TIMEOUT_TYPES),
        )

    def _end(
        self,
        state: _Run,
        status: str,
        duration: Optional[float],
        error: Optional[str],
        run_id: Optional[str],
        reason: Optional[str] = None,
        traceback: Optional[str] = None,
        output: Optional[str] = None,
        retryable: bool = False,
    ) -> None:
        """Record the attempt's outcome: a retry (the row stays queued) or the run's final status."""
        run = state.run
        now = self._clock.now()
        if retryable and run.attempt <= state.opts.retries and not self.stopping.is_set():
            delay = retry_delay(state.opts, run.attempt)
            at = now + timedelta(seconds=delay)
            why = error or reason
            note = f"attempt {run.attempt} {status}: {why}; attempt {run.attempt + 1} at {at.isoformat()}"
            self._writer.put(
                Outcome(
                    run.run_key,
                    QUEUED,
                    None,
                    duration,
                    error,
                    run_id,
                    run.started_at,
                    note,
                    run.attempt + 1,
                    traceback,
                    output,
                    at,
                    self._node,
                )
            )
            logger.warning("retrying %r fire %s: %s", state.name, run.fire_time.isoformat(), note)
            self._release_lease(state)
            state.run = replace(run, status=QUEUED, attempt=run.attempt + 1, next_attempt_at=at, reason=note)
            state.handle = state.watchdog = None
            self._schedule_start(state)
            return
        self._writer.put(
            Outcome(
                run.run_key,
                status,
                now,
                duration,
                error,
                run_id,
                run.started_at,
                reason,
                run.attempt,
                traceback,
                output,
                None,
                self._node,
            )
        )
        hooks = self.on_success if status == SUCCEEDED else []
        if status in (FAILED, TIMED_OUT):
            hooks = self.on_failure
        entry: Optional[Dict[str, Any]] = None
        if hooks or self.on_finish or state.manual:  # an entry for the hooks, or run_now(wait)
            final = replace(
                run,
                status=status,
                completed_at=now,
                duration_seconds=duration,
                error=error,
                run_id=run_id,
                reason=reason or run.reason,
                traceback=traceback,
                output=output,
                next_attempt_at=None,
            )
            entry = self._entry(final)
        if logger.isEnabledFor(logging.DEBUG):  # one line a run, at no cost when off
            logger.debug(
                "%s %r fire %s lag %.1f ms in %.3fs run_id=%s",
                status,
                state.name,
                run.fire_time.isoformat(),
                ((run.started_at or now) - run.fire_time).total_seconds() * 1000,
                duration or 0.0,
                run_id or "-",
            )
        if entry is not None:
            for hook in [*hooks, *self.on_finish]:
                try:
                    hook(entry)
                except Exception:
                    logger.exception("a run hook failed for %r", state.name)
        self._release(state, entry)

    def announce(self, run: RunRecord) -> None:
        """Tell the ``on_finish`` hooks about a run that ended without running here (missed,
        skipped at its claim, or found lost)."""
        if not self.on_finish:
            return
        entry = self._entry(run)
        for hook in self.on_finish:
            try:
                hook(entry)
            except Exception:
                logger.exception("a run hook failed for %r", run.schedule)

    def _release_lease(self, state: _Run) -> None:
        if state.renewing is not None:
            state.renewing.set()
            state.renewing = None
        if state.lease is not None:
            lease, state.lease = state.lease, None
            try:
                lease.release()
            except Exception as exc:
                logger.warning("could not release the lock of %r: %s", state.name, exc)

    def _release(self, state: _Run, entry: Optional[Dict[str, Any]]) -> None:
        """The run is over here: free its lease, wake waiters, start the next queued run of its claim."""
        self._release_lease(state)
        if state.ticket.run.run_key == state.run.run_key:
            state.ticket.set(entry)
        with self._cond:
            self._inflight.pop(state.run.run_key, None)
            if not state.rest:
                self._cond.notify_all()
        if state.rest:
            nxt = state.rest.popleft()
            following = _Run(state.name, state.func, nxt, state.opts, state.manual, Ticket(nxt), state.rest)
            with self._cond:
                self._inflight[nxt.run_key] = following
            self._schedule_start(following)

    def end_waiting(self) -> int:
        """At stop: end the runs that wait to start (queued catch-up runs, retries); how many."""
        with self._cond:
            unique = {id(s): s for s in self._inflight.values()}.values()
            waiting = [s for s in unique if s.run.status == QUEUED and s.handle is None]
        for state in waiting:
            with state.lock:
                if state.finished and state.handle is not None:
                    continue
                state.finished = True
            rest = list(state.rest)
            state.rest.clear()
            attempt = state.run.attempt
            if attempt == 1:
                self._end(state, SKIPPED, None, None, None, reason=STOPPED_BEFORE)
            else:
                reason = f"scheduler stopped before attempt {attempt}"
                self._end(state, FAILED, None, state.run.error, None, reason=reason)
            for run in rest:
                self._writer.put(
                    Outcome(
                        run.run_key,
                        SKIPPED,
                        self._clock.now(),
                        reason=STOPPED_BEFORE,
                        node_id=self._node,
                    )
                )
                with self._cond:
                    self._inflight.pop(run.run_key, None)
        with self._cond:
            self._cond.notify_all()
        return len(waiting)

    def shutdown(self, wait: bool, timeout: Optional[float]) -> None:
        """Stop the executors (after ``wait_idle`` when ``wait``)."""
        for executor in list(self._executors.values()):
            try:
                executor.shutdown(wait=wait, timeout=timeout)
            except Exception:
                logger.exception("executor shutdown failed")
        self._executors.clear()
        self._timers.close()
        if self._leasing is not None:
            self._leasing.shutdown(wait=True)
            self._leasing = None


def keep_renewed(lease: Lease, ttl: float, name: str) -> threading.Event:
    """Renew an expiring lease every third of its TTL until the returned event is set."""
    done = threading.Event()

    def renew() -> None:
        while not done.wait(ttl / 3):
            try:
                if not lease.renew(ttl):
                    logger.error("lost the lock of %r while its run goes on (expired before renewal)", name)
                    return
            except Exception as exc:
                logger.warning("could not renew the lock of %r: %s", name, exc)

    threading.Thread(target=renew, name=f"flowyml_lite-renew-{name}", daemon=True).start()
    return done


def unknown_executor(name: str) -> ScheduleError:
    return ScheduleError(
        f"unknown executor {name!r}: the executors are {', '.join(plugins.available('executors'))}"
    )
