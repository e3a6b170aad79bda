"""The outcome writer: what happened to runs reaches the store in groups, and is never dropped.

Runners ``put`` outcomes; one thread commits whatever has gathered since its last commit in one
``Store.finish_runs`` transaction (group commit, a few milliseconds of delay at most). The loop
may ``take`` the pending outcomes into its own claim transaction, so a run that just finished
never counts against the overlap limit of its schedule's next fire; in a burst it takes them only
when they concern a schedule it claims, and the writer waits for the burst's claims to be done
(their runs start first, the burst's outcomes are committed together right after). While the
store fails, the outcomes wait in memory and the writer retries until the store is back; past
``limit`` pending outcomes the loop stops claiming new fires (``backlogged``) until the backlog
drains, so memory stays bounded and nothing is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import AbstractSet, Callable, List, Optional, Set, Tuple

from ..stores.base import Outcome, Store
from .health import Troubles

logger = logging.getLogger("flowyml_lite.scheduler.outcomes")

GATHER_SECONDS = 0.002  # how long a commit waits for more outcomes to join it
RETRY_MAX_SECONDS = 5.0
DEFAULT_LIMIT = 10_000


class OutcomeWriter:
    """Group-commits outcomes to the store on its own thread; retries forever while the store fails."""

    def __init__(
        self,
        store: Store,
        troubles: Troubles,
        limit: int = DEFAULT_LIMIT,
        on_written: Optional[Callable[[List[Outcome], List[bool]], None]] = None,
    ) -> None:
        self._store = store
        self._troubles = troubles
        self.limit = limit
        self._on_written = on_written
        self._lock = threading.Lock()  # entered directly: a Condition's own __enter__ is Python code
        self._cond = threading.Condition(self._lock)
        self._pending: List[Outcome] = []
        #: The schedules the pending outcomes (and those being written) are of: a superset, emptied
        #: once nothing is pending or being written.
        self._schedules: Set[str] = set()
        self._writing = 0  # outcomes taken by a transaction in flight (the writer's or the loop's)
        #: Run keys of outcomes the store refused while it took the rest (a claim went through
        #: without them): claims no longer carry them, the writer writes them alone.
        self._suspect: Set[str] = set()
        self._failures = 0
        self._stopping = False
        self._thread: Optional[threading.Thread] = None
        self._alive = False  # the thread is running (_run clears it as it ends, however it ends)
        #: While the scheduler runs the thread waits for outcomes; otherwise (before start(), after
        #: stop(): a manual run, a run that outlived a stop) it ends once it has written them.
        self.serving = False
        #: Held around every transaction that writes outcomes (the writer's and the loop's claims),
        #: so a claim never runs while taken outcomes are in another transaction not yet committed:
        #: it would count their runs as still active against the next fire's overlap limit.
        self.commit_lock = threading.Lock()

    # -- producers --------------------------------------------------------------------
    def put(self, outcome: Outcome, schedule: str) -> None:
        """Queue ``outcome`` of a run of ``schedule`` for the store."""
        with self._lock:
            self._pending.append(outcome)
            self._schedules.add(schedule)
            if len(self._pending) == 1:
                self._cond.notify_all()
        if not self._alive:
            self._ensure_thread()

    @property
    def pending(self) -> int:
        """Outcomes not yet in the store (waiting or being written)."""
        return len(self._pending) + self._writing

    @property
    def backlogged(self) -> bool:
        """True while so many outcomes wait that no new fire should be claimed."""
        return len(self._pending) >= self.limit

    # -- the loop's share: outcomes ride along with a claim transaction ---------------
    def take(self, concerning: Optional[AbstractSet[str]] = None, *, suspect: bool = False) -> List[Outcome]:
        """Every pending outcome, for the caller's transaction; ``done`` or ``give_back`` after it.

        With ``concerning`` (schedule names), none unless one of them may be of those schedules.
        Outcomes the store refused on their own (``suspect``) are left to the writer, which takes
        them with ``suspect=True``."""
        with self._lock:
            if concerning is not None and self._schedules.isdisjoint(concerning):
                return []
            taken, self._pending = self._pending, []
            if self._suspect and not suspect:
                self._pending = [o for o in taken if o.run_key in self._suspect]
                taken = [o for o in taken if o.run_key not in self._suspect]
            self._writing += len(taken)
        return taken

    def suspect(self, outcomes: List[Outcome]) -> None:
        """``outcomes`` (given back) made a claim fail that went through without them: the store
        refuses them, not every write. Claims no longer carry them (they would fail every claim,
        and every schedule with it); the writer writes them on their own, without their texts if
        need be (``_write_alone``)."""
        if not outcomes:
            return
        with self._lock:
            self._suspect.update(o.run_key for o in outcomes)
            self._cond.notify_all()

    def done(self, taken: List[Outcome], results: Optional[List[bool]] = None) -> None:
        """``taken`` is in the store."""
        with self._lock:
            self._writing -= len(taken)
            if not self._pending and not self._writing:
                self._schedules.clear()
            self._cond.notify_all()
        self._written(taken, results)

    def give_back(self, taken: List[Outcome]) -> None:
        """The caller's transaction failed: ``taken`` waits again, ahead of newer outcomes."""
        if not taken:
            return
        with self._lock:
            self._writing -= len(taken)
            self._pending[:0] = taken
            self._cond.notify_all()

    # -- the writer thread ------------------------------------------------------------
    def _ensure_thread(self) -> None:
        with self._lock:
            if self._stopping or self._alive:
                return
            self._thread = threading.Thread(target=self._run, name="flowyml_lite-outcomes", daemon=True)
            self._thread.start()  # may raise (no thread to be had): then the next put tries again
            self._alive = True

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException:
            logger.exception("the outcome writer thread failed; the next outcome starts a new one")
        finally:
            with self._lock:
                if self._thread is threading.current_thread():
                    self._alive = False

    def _serve(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._stopping:
                    if not self.serving and not self._writing:  # nothing left to write: done
                        self._alive = False
                        self._thread = None
                        return
                    self._cond.wait()
                if not self._pending and self._stopping:
                    return
            time.sleep(GATHER_SECONDS)  # let the runs finishing together share one commit
            with self.commit_lock:
                taken = self.take(suspect=True)
                if not taken:
                    continue
                try:
                    results: Optional[List[bool]] = self._store.finish_runs(taken)
                    error: Optional[Exception] = None
                except Exception as exc:
                    results, error = None, exc
                    if len(taken) > 1 or self._suspect:
                        written, left = self._write_alone(taken)
                        if written:  # the store takes writes: only ``left`` is refused
                            self.done(written)
                            taken = left
                            if not left:
                                continue
                    self.give_back(taken)
            if error is not None:
                self._failed(error, len(taken))
                delay = min(0.05 * 2 ** min(self._failures, 10), RETRY_MAX_SECONDS)
                with self._lock:
                    if not self._stopping:
                        self._cond.wait(delay)
                    elif self._failures > 3:
                        return  # stopping and the store stays down: flush() reports what is left
                continue
            self.done(taken, results)
            del taken  # not held while the writer waits (a burst's last thousand outcomes)

    def _write_alone(self, taken: List[Outcome]) -> Tuple[List[Outcome], List[Outcome]]:
        """A group commit failed: one outcome the store refuses (a text it cannot keep, a row it
        will not update) must not hold every other back. Written apart (the first alone and the
        rest together, or each alone once one is suspect) and, once the store has taken any (or
        a claim has gone through without them), each refused one alone, then without its texts,
        saying why; one refused even so waits, suspect, and health says so. Nothing is tried one
        by one while the store takes nothing (an outage). Commit lock held; (written, left)."""
        suspect = self._suspect
        if len(taken) > 1 and not any(o.run_key in suspect for o in taken):
            parts = [taken[:1], taken[1:]]
        else:
            parts = [[o] for o in taken]
        written: List[Outcome] = []
        refused: List[Tuple[Outcome, Exception, bool]] = []  # and whether it was tried alone
        for part in parts:
            try:
                self._store.finish_runs(part)
                written.extend(part)
            except Exception as exc:
                refused.extend((o, exc, len(part) == 1) for o in part)
        if not written and not any(o.run_key in suspect for o, _, _ in refused):
            return [], taken  # the store takes nothing: an outage, retried as a group
        left: List[Outcome] = []
        for outcome, first, alone in refused:
            reason: BaseException = first
            if not alone:
                try:  # refused in a group: alone, as it is
                    self._store.finish_runs([outcome])
                    written.append(outcome)
                    continue
                except Exception as exc:
                    reason = exc
            why = f"{type(reason).__name__}: {str(reason)[:300]}"
            bare = replace(
                outcome,
                error=None,
                traceback=None,
                output=None,
                run_id=None,
                reason=f"the store refused this run's outcome as reported ({why}); "
                "recorded without its error, traceback, output and run_id",
            )
            try:
                self._store.finish_runs([bare])
            except Exception:
                left.append(outcome)
                continue
            logger.error(
                "run %s: the store refused its outcome (%s); recorded without its texts", outcome.run_key, why
            )
            written.append(outcome)
        with self._lock:
            suspect.difference_update(o.run_key for o in written)
            suspect.update(o.run_key for o in left)
        return written, left

    def _failed(self, exc: BaseException, count: int) -> None:
        self._failures += 1
        message = (
            f"{self.pending} run outcome(s) wait in memory: the store refused them "
            f"({type(exc).__name__}: {exc}); retrying until it is back"
        )
        if self._troubles.report("outcomes", message):
            logger.error("could not record %d run outcome(s), will retry: %s", count, exc)
        else:
            logger.debug("outcome write failed again (%d pending): %s", self.pending, exc)

    def _written(self, taken: List[Outcome], results: Optional[List[bool]]) -> None:
        if self._failures:
            self._failures = 0
        if self._troubles.active("outcomes") and not self._pending:
            lasted = self._troubles.clear("outcomes")
            logger.warning("run outcomes recorded again after %.1f s of store errors", lasted or 0.0)
        if self._on_written is not None and results is not None:
            try:
                self._on_written(taken, results)
            except Exception:
                logger.exception("outcome callback failed")

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until every outcome put so far is in the store; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._ensure_thread()
        with self._lock:
            self._cond.notify_all()
            while self._pending or self._writing:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(0.05 if left is None else min(left, 0.05))
        return True

    def stop(self, timeout: float) -> bool:
        """Flush for up to ``timeout`` seconds, then stop the thread; True if nothing is left.
        Outcomes put later (runs that outlive the stop) start a thread that ends once they are in."""
        self.serving = False
        flushed = self.flush(timeout)
        with self._lock:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
        with self._lock:
            self._stopping = False  # later outcomes (run_pending after stop) start a new thread
        if not flushed:
            logger.error(
                "stopping with %d run outcome(s) not recorded (the store is unreachable): those runs "
                "will be recorded as lost by the next scheduler that sees this node's heartbeat expire",
                self.pending,
            )
        return flushed
