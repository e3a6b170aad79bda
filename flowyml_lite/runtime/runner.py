"""The runner: how a claimed run is carried out, and that it always ends in a final status.

For each run: an optional delay (jitter), the schedule's lock lease when a lock backend is set,
the job on its executor (thread, process, async or a plugin), a watchdog at its timeout, retries
with backoff, and the outcome handed to the outcome writer. Whatever the job, the lock server or
the executor does, the run reaches exactly one final outcome; the runner never raises into them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from ..clock import Clock
from ..core.schedule import Options, matches_retry_on, retry_delay
from ..core.triggers import jitter_delay
from ..executors.base import Executor, Handle, Job, JobResult
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
from .executor_set import ExecutorSet
from .health import Troubles
from .hooks import RunHooks
from .inflight import InFlight, RunState, Ticket
from .lateness import StartLags
from .leases import Leases, keep_renewed
from .outcomes import OutcomeWriter
from .timers import Timers

__all__ = ["Runner", "Ticket", "keep_renewed"]

logger = logging.getLogger("flowyml_lite.scheduler.runner")

#: How long a timed-out run waits for its executor's answer to cancel (its output, where it hangs)
#: before it is recorded without it, unless the executor says otherwise (Executor.cancel_answer_seconds:
#: a process executor waits out its kill grace). An async job blocking its event loop cannot answer.
CANCEL_ANSWER_SECONDS = 1.0
#: How a run claimed before its instant shows until the instant (``seen_here``).
CLAIMED_AHEAD = "claimed ahead of its instant: starts at it"
STOPPED_BEFORE = "scheduler stopped before this catch-up run"
#: How long stop() waits for the hook calls of runs that ended before it.
HOOKS_AT_STOP_SECONDS = 5.0
_TIMEOUT_TYPES = ("builtins.TimeoutError",)


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
        self._leases = Leases(lock, lock_ttl, node_id, troubles) if lock is not None else None
        self._executors = ExecutorSet(max_workers)
        self._batch = threading.local()  # .held: what waits for the end of batch() on this thread
        self._timers = Timers()
        self._inflight = InFlight()  # run_key -> state, from submit to its final outcome
        self.stopping = threading.Event()
        self.lags = StartLags()
        self.since = datetime.min.replace(tzinfo=timezone.utc)  # runs due before start() are not measured
        self._hooks = RunHooks(entry)
        self.on_success, self.on_failure = self._hooks.on_success, self._hooks.on_failure
        self.on_finish = self._hooks.on_finish
        self.announce = self._hooks.announce
        self._on_result = self._done  # each run's done callback calls this one bound method
        self._on_started = self._started_late

    def executor_name(self, func: Callable[[], Any], opts: Options) -> str:
        """The executor runs of ``func`` with ``opts`` go to (``async`` for an ``async def``)."""
        return self._executors.name_for(func, opts)

    def check(self, func: Callable[[], Any], opts: Options) -> None:
        """At declaration: ScheduleError if the schedule's executor cannot run ``func``."""
        self._executors.check(func, opts)

    def executor_problems(self) -> List[Tuple[str, str]]:
        """(executor name, what is wrong) for health: e.g. an event loop blocked by a run."""
        return self._executors.problems()

    # -- runs in flight -----------------------------------------------------------------
    @property
    def active(self) -> int:
        return len(self._inflight)

    def starting(self) -> bool:
        """Whether runs handed over still wait for a worker of their executor to start."""
        return self._executors.waiting()

    def busy(self) -> Dict[str, int]:
        """The schedules with a run in flight here, and how many each."""
        counts: Dict[str, int] = {}
        if self._inflight:
            for state in self._inflight.states():
                counts[state.name] = counts.get(state.name, 0) + 1
        return counts

    def active_names(self) -> List[str]:
        return sorted({state.name for state in self._inflight.states()})

    def seen_here(self, runs: List[RunRecord]) -> List[RunRecord]:
        """``runs`` as this process knows them: a run claimed here that still waits for a free
        worker of its executor is ``queued`` with no start yet (its row says ``running`` from its
        claim until its outcome: the start is not written, to spare a store write per run); so is a
        run this node claimed ahead of its instant, until the instant."""
        now = self._clock.now()
        seen = []
        for run in runs:
            if run.status == RUNNING:
                state = self._inflight.get(run.run_key) if self._inflight else None
                if state is not None and state.began is None and state.run.run_key == run.run_key:
                    waited = time.perf_counter() - state.t0
                    why = f"waiting for a free worker of its executor ({waited:.1f} s so far)"
                    run = replace(run, status=QUEUED, started_at=None, reason=why)
                elif state is None and run.node_id == self._node and run.started_at and run.started_at > now:
                    run = replace(run, status=QUEUED, started_at=None, reason=CLAIMED_AHEAD)
            seen.append(run)
        return seen

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        """Block until no run is in flight here; False on timeout."""
        return self._inflight.wait_idle(timeout)

    def submit(
        self, name: str, func: Callable[[], Any], runs: List[RunRecord], opts: Options, manual: bool = False
    ) -> Optional[Ticket]:
        """Carry out ``runs`` (one claim's active runs: the first running, the rest queued) in order;
        a manual run's ticket waits for its final entry."""
        first = runs[0]
        ticket = Ticket(first) if manual else None
        rest = deque(runs[1:]) if len(runs) > 1 else None
        state = RunState(name, func, first, opts, manual, ticket, rest, self._on_result, self._on_started)
        self._inflight.add(first.run_key, state)
        for run in rest or ():
            self._inflight.add(run.run_key, state)
        if self._leases is None and not opts.jitter_seconds and first.next_attempt_at is None:
            self._start(state)  # the common case: no delay, no lease to take first
        else:
            self._schedule_start(state)
        return ticket

    def _schedule_start(self, state: RunState) -> None:
        delay = 0.0
        if state.opts.jitter_seconds and not state.manual and state.run.attempt == 1:
            delay = jitter_delay(state.name, state.run.fire_time, state.opts.jitter_seconds)
        if state.run.next_attempt_at is not None:
            delay = max(delay, (state.run.next_attempt_at - self._clock.now()).total_seconds())
        if delay > 0:
            self._timers.after(delay, lambda: self._start_now(state))
        else:
            self._start_now(state)

    def _start_now(self, state: RunState) -> None:
        if self._leases is None:
            self._start(state)
            return
        held = getattr(self._batch, "held", None)
        if held is not None:  # inside batch(): leased together when it ends
            held[1].append(state)
        else:
            self._leases.later(self._lease_and_start, [state])

    def _lease_and_start(self, states: List[RunState]) -> None:
        """On a lease thread: take the leases of ``states`` together, then start those that got one."""
        assert self._leases is not None
        try:
            taken = self._leases.take([state.name for state in states])
            if len(taken) != len(states):
                raise RuntimeError(f"the lock backend answered {len(taken)} of {len(states)} lease requests")
        except BaseException as exc:  # never leave a claimed run without an outcome
            logger.exception("could not take the leases of %d run(s)", len(states))
            for state in states:
                self._end(state, FAILED, None, f"could not start: {type(exc).__name__}: {exc}", None)
            return
        with self.batch():
            for state, lease in zip(states, taken):
                try:
                    if lease is None:
                        reason = "overlap: the schedule's lock is held by another process"
                        self._end(state, SKIPPED, None, None, None, reason=reason)
                        continue
                    if isinstance(lease, Lease):
                        state.lease = lease
                        state.renewing = self._leases.renewed(lease, state.name)
                    self._start(state)
                except BaseException as exc:  # e.g. no thread for the renewal: the run still ends
                    logger.exception("could not start the run of %r", state.name)
                    self._end(state, FAILED, None, f"could not start: {type(exc).__name__}: {exc}", None)

    def _start(self, state: RunState) -> None:
        if state.run.status == QUEUED:  # only a run that waits to start can be withdrawn by stop()
            with state.lock:
                if state.withdrawn:  # stop() ended it while it waited
                    withdrawn = True
                else:
                    withdrawn, state.starting = False, True
            if withdrawn:
                self._release_lease(state)
                return
        try:
            self._begin(state)
        except BaseException as exc:  # never leave a claimed run without an outcome
            logger.exception(
                "could not start the run of %r fired %s", state.name, state.run.fire_time.isoformat()
            )
            self._end(state, FAILED, None, f"could not start: {type(exc).__name__}: {exc}", None)

    def _begin(self, state: RunState) -> None:
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
                    self._release(state, None, _ticket_of(state))
                    return
            except Exception as exc:  # the row is ours either way: run, and let the outcome say so
                logger.warning(
                    "could not mark the run of %r running (running it anyway): %s", state.name, exc
                )
            state.run = run = replace(run, status=RUNNING)  # the claimed record stays as the store has it
        started = state.started = self._clock.now()
        executor, reference = self._executors.resolve(state.func, state.opts)
        waits = getattr(executor, "reports_start", False)  # runs may wait for a worker: started then
        if not waits:
            self._measure(state, started)
        ctx = RunContext(
            state.name, run.fire_time, run.run_key, self._node, started, state.manual, run.attempt
        )
        state.t0 = time.perf_counter()
        if waits:
            state.began = None
            job = Job(state.func, reference, ctx, state.opts.timeout_seconds, state.started_now)
        else:
            state.began = -1.0
            job = Job(state.func, reference, ctx, state.opts.timeout_seconds)
        if run.attempt > 1:  # a retry: the last attempt's ending is behind it
            with state.lock:
                state.finished = state.timing_out = state.stopped = False
        held = getattr(self._batch, "held", None)
        if held is not None:  # inside batch(): handed over together when it ends
            waiting = held[0].get(id(executor))
            if waiting is None:
                waiting = held[0][id(executor)] = (executor, [])
            waiting[1].append((job, state))
            return
        handle = executor.submit(job, state)  # a RunState is its run's done callback
        if state.opts.timeout_seconds is not None:
            self._handed(state, handle, run.attempt)

    def _measure(self, state: RunState, started: datetime, queued: float = 0.0) -> None:
        """Count the start lag of ``state``'s run for health, if it is one that should be on time
        (``queued``: how long of it the run waited for a worker)."""
        run = state.run
        if not state.manual and run.attempt == 1 and run.reason is None and run.fire_time >= self.since:
            lag = (started - run.fire_time).total_seconds()  # a catch-up run has a reason: late on purpose
            if state.opts.jitter_seconds:
                lag -= jitter_delay(state.name, run.fire_time, state.opts.jitter_seconds)
            self.lags.add(lag, queued)

    def _started_late(self, state: RunState) -> None:
        """On the run's thread, as its function starts after waiting for a worker: its start (in
        history), duration and timeout count from now, and its start lag is measured now."""
        started = self._clock.now()
        now = time.perf_counter()
        queued, state.started, state.t0, state.began = now - state.t0, started, now, now
        self._measure(state, started, queued)

    def _handed(self, state: RunState, handle: Handle, attempt: int) -> None:
        """The executor took an attempt with a timeout: keep its handle (only the watchdog cancels
        through it) and arm the watchdog, unless the attempt is already over."""
        timeout = state.opts.timeout_seconds
        with state.lock:
            if state.finished or state.run.attempt != attempt:
                return  # already over: a trivial job can end (and even retry) before this
            state.handle = handle
            if timeout is not None:
                state.watchdog = self._timers.after(timeout, lambda: self._timed_out(state))

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Runs started on this thread inside the block reach their executors (and the lock
        server) together at its end: one hand-over per executor instead of one per run."""
        if getattr(self._batch, "held", None) is not None:
            yield
            return
        held: Tuple[Dict[int, Tuple[Executor, List[Tuple[Job, RunState]]]], List[RunState]] = ({}, [])
        self._batch.held = held
        try:
            yield
        finally:
            self._batch.held = None
            if held[1] and self._leases is not None:
                self._leases.later(self._lease_and_start, held[1])
            for executor, items in held[0].values():
                self._hand_over(executor, items)

    def _hand_over(self, executor: Executor, items: List[Tuple[Job, RunState]]) -> None:
        try:
            handles = executor.submit_many(items)  # a RunState is its run's done callback
        except Exception as exc:  # e.g. shut down: every run still gets its outcome
            for _, state in items:
                with state.lock:
                    if state.finished:
                        continue
                    state.finished = True
                self._end(state, FAILED, None, f"could not start: {type(exc).__name__}: {exc}", None)
            return
        for (job, state), handle in zip(items, handles):
            if job.timeout is not None:  # without one, nothing cancels through the handle
                self._handed(state, handle, job.context.attempt)

    # -- endings ------------------------------------------------------------------------
    def _done(self, state: RunState, result: JobResult) -> None:
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
        retryable = matches_retry_on(state.opts, result.exception_types or ())
        if not (retryable and self._retries(state)):  # a retry logs a line of its own instead
            fire = state.run.fire_time.isoformat()
            if result.traceback:
                logger.error("run of %r (fire %s) failed:\n%s", state.name, fire, result.traceback)
            else:
                logger.error("run of %r (fire %s) failed: %s", state.name, fire, result.error)
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

    def _timed_out(self, state: RunState) -> None:
        """The watchdog: stop the run if its executor can, then record it ``timed_out``.

        The executor answers a cancel with a result of its own (the output so far and, for a
        thread, where it hangs), which ``_done`` records; if none comes within the executor's
        ``cancel_answer_seconds`` (1 s; a process's kill grace and 1 s) the run is recorded without
        it, so a run always ends.
        """
        with state.lock:
            if state.finished or state.timing_out:
                return
            began = state.began
            if began is None or began >= 0:  # its executor reports starts: from its start, not before
                left = state.opts.timeout_seconds or 0.0
                if began is not None:
                    left = began + left - time.perf_counter()
                if left > 0.001:
                    state.watchdog = self._timers.after(left, lambda: self._timed_out(state))
                    return
            state.timing_out = True
            handle = state.handle
        try:
            state.stopped = bool(handle.cancel()) if handle is not None else False
        except Exception:
            logger.exception("could not stop the timed-out run of %r", state.name)
        wait = self._answer_seconds(state)
        self._timers.after(wait, lambda: self._timed_out_without_answer(state, wait))

    def _answer_seconds(self, state: RunState) -> float:
        """How long the run's executor may take to answer a cancel (its ``cancel_answer_seconds``,
        kept within 0.1 s to 10 min; 1 s when it says nothing usable)."""
        try:
            executor, _ = self._executors.resolve(state.func, state.opts)
            wait = float(getattr(executor, "cancel_answer_seconds", CANCEL_ANSWER_SECONDS))
        except Exception:
            logger.exception("the executor of %r could not say how long a cancel takes", state.name)
            return CANCEL_ANSWER_SECONDS
        return min(max(wait, 0.1), 600.0) if wait == wait else CANCEL_ANSWER_SECONDS  # NaN: the default

    def _timed_out_without_answer(self, state: RunState, waited: float) -> None:
        with state.lock:
            if state.finished:
                return
            state.finished = True
        self._record_timeout(state, None, waited)

    def _record_timeout(self, state: RunState, result: Optional[JobResult], waited: float = 0.0) -> None:
        limit = state.opts.timeout_seconds
        if not state.stopped:
            how = "its thread cannot be stopped and may still be running; its result will be ignored"
        elif result is None:
            how = f"asked to stop, it had not ended {waited:g} s later: its result will be ignored"
        else:
            how = "it was stopped"
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
            # A retry beside an attempt still running would run the fire twice at once: a
            # timed-out attempt is retried only if its executor stopped it (not a thread).
            retryable=state.stopped and matches_retry_on(state.opts, _TIMEOUT_TYPES),
        )

    def _end(
        self,
        state: RunState,
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
        if retryable and self._retries(state):
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
                    state.started,
                    note,
                    run.attempt + 1,
                    traceback,
                    output,
                    at,
                    self._node,
                ),
                state.name,
            )
            logger.warning("retrying %r fire %s: %s", state.name, run.fire_time.isoformat(), note)
            self._release_lease(state)
            state.run = replace(run, status=QUEUED, attempt=run.attempt + 1, next_attempt_at=at, reason=note)
            with state.lock:
                state.handle = state.watchdog = None
                state.starting = False  # waiting again: stop() may end it before it starts
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
                state.started,
                reason,
                run.attempt,
                traceback,
                output,
                None,
                self._node,
            ),
            state.name,
        )
        hooks = self._hooks
        entry = None
        told = hooks.wanted(status)
        if state.manual or told:  # else nobody reads it (run_now(wait=True) waits for the entry)
            entry = hooks.final_entry(
                run,
                status,
                now,
                duration_seconds=duration,
                error=error,
                run_id=run_id,
                reason=reason or run.reason,
                started_at=state.started or run.started_at,
                traceback=traceback,
                output=output,
            )
        if logger.isEnabledFor(logging.DEBUG):  # one line a run, at no cost when off
            logger.debug(
                "%s %r fire %s lag %.1f ms in %.3fs run_id=%s",
                status,
                state.name,
                run.fire_time.isoformat(),
                ((state.started or now) - run.fire_time).total_seconds() * 1000,
                duration or 0.0,
                run_id or "-",
            )
        ticket = _ticket_of(state)
        if told and entry is not None:  # on the hook thread; a waiting run_now hears after the hooks
            try:
                hooks.tell(status, entry, state.name, ticket.heard if ticket is not None else None)
            except Exception:  # e.g. no thread to be had: the run still ends, its hooks are skipped
                logger.exception("could not hand the hooks of %r their entry", state.name)
                told = False
        self._release(state, entry, ticket, told)

    def _retries(self, state: RunState) -> bool:
        """Whether a failed attempt of ``state`` that may be retried will be."""
        return state.run.attempt <= state.opts.retries and not self.stopping.is_set()

    def _release_lease(self, state: RunState) -> None:
        lease, renewing = state.lease, state.renewing
        if lease is None and renewing is None:  # most runs: no lock server
            return
        state.lease = state.renewing = None
        if self._leases is not None:
            self._leases.release(lease, renewing, state.name)

    def _release(
        self,
        state: RunState,
        entry: Optional[Dict[str, Any]],
        ticket: Optional[Ticket] = None,
        hooks_follow: bool = False,
    ) -> None:
        """The run is over here: free its lease, wake ``ticket``'s waiter, start the next queued run
        of its claim."""
        self._release_lease(state)
        state.handle = state.watchdog = None  # its handle refers back to it: a cycle only the GC would free
        if ticket is not None:
            ticket.set(entry, hooks_follow)
        if not state.rest:
            self._inflight.remove(state.run.run_key)
            return
        nxt = state.rest.popleft()
        following = RunState(
            state.name,
            state.func,
            nxt,
            state.opts,
            state.manual,
            None,
            state.rest,
            self._on_result,
            self._on_started,
        )
        self._inflight.add(nxt.run_key, following)
        self._inflight.remove(state.run.run_key)
        queue = getattr(self._batch, "following", None)
        if queue is not None:  # inside a start below on this thread: queued, not nested
            queue.append(following)
            return
        # A run that ends without starting releases the next one here: a loop, not a recursion
        # (a few hundred queued catch-up runs ended at a stop would overflow the stack).
        self._batch.following = queue = deque([following])
        try:
            while queue:
                self._schedule_start(queue.popleft())
        finally:
            self._batch.following = None

    def end_waiting(self) -> int:
        """At stop: end the runs that wait to start (queued catch-up runs, retries); how many."""
        ended = 0
        for state in self._inflight.states():
            with state.lock:
                if state.starting or state.withdrawn or state.run.status != QUEUED:
                    continue  # starting or running: it ends by itself
                state.withdrawn = True
            ended += 1
            rest, state.rest = list(state.rest or ()), None
            attempt = state.run.attempt
            if attempt == 1:
                self._end(state, SKIPPED, None, None, None, reason=STOPPED_BEFORE)
            else:
                reason = f"scheduler stopped before attempt {attempt}"
                self._end(state, FAILED, None, state.run.error, None, reason=reason)
            for run in rest:
                when, node = self._clock.now(), self._node
                skipped = Outcome(run.run_key, SKIPPED, when, reason=STOPPED_BEFORE, node_id=node)
                self._writer.put(skipped, state.name)
                self._inflight.remove(run.run_key)
        return ended

    def shutdown(self, wait: bool, timeout: Optional[float], hooks: Optional[float] = None) -> None:
        """Stop the lease threads, the timers, then the executors (after ``wait_idle`` when ``wait``):
        whatever a lease or timer thread still starts reaches an executor that is still open. The
        executors share ``timeout``; the hook calls still waiting get ``hooks`` seconds of their own
        (default: ``timeout``, at most HOOKS_AT_STOP_SECONDS)."""
        if self._leases is not None:
            self._leases.close()
        self._timers.close()
        self._executors.shutdown(wait, timeout)
        patience = HOOKS_AT_STOP_SECONDS if timeout is None else min(HOOKS_AT_STOP_SECONDS, timeout)
        if hooks is not None:
            patience = hooks
        if not self._hooks.close(patience if wait else 0.0):
            logger.warning(
                "stopped with hook calls still waiting: a hook is slow or hangs (%s)", self._hooks.problem()
            )

    def let_go(self) -> None:
        """At a stop that leaves runs going: executors take no new runs and their idle workers
        leave now; the runs still going end, and are recorded, when they do."""
        self._executors.close()

    def rebase(self, now: datetime) -> None:
        """Fires due before ``now`` are not measured for lateness: the scheduler (re)started, or
        this node's share changed (fires taken over from a stopped or lost peer start late)."""
        self.since = max(self.since, now)

    def wait_hooks(self, timeout: Optional[float]) -> bool:
        """Block until the hooks of every run ended so far have been called; False on timeout."""
        return self._hooks.drain(timeout)

    def hook_problem(self) -> Optional[str]:
        """What health says while a hook call hangs, or None."""
        return self._hooks.problem()


def _ticket_of(state: RunState) -> Optional[Ticket]:
    """The ticket a ``run_now(wait=True)`` waits on, if it is for the run ``state`` carries now."""
    ticket = state.ticket
    return ticket if ticket is not None and ticket.run.run_key == state.run.run_key else None
