"""The lease renewer: one thread keeps every expiring lease of the process alive while its run goes on.

It looks at each lease every third of its TTL, and at least every ``RENEW_CHECK_SECONDS`` (2 s), so
a lease the lock server lost (Redis restarted without persistence, another holder took the key) is
seen within seconds, not a third of a minute later. The leases due together are renewed in one
round trip per lock (``Lock.renew_many``). A key found gone is taken again by the lock (a warning);
one another process holds is an error, and health says so until the run ends.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

from ..locks.base import LOST, RENEWED, RETAKEN, Lease, Lock
from .health import Troubles

logger = logging.getLogger("flowyml_lite.scheduler.leases")

#: The longest a lease goes unchecked: a lost lease is noticed within this (plus a round trip).
RENEW_CHECK_SECONDS = 2.0


def lost_message(name: str, why: str) -> str:
    """The error logged (and said in health) when the lock of a running schedule is lost."""
    return f"lost the lock of {name!r} while its run goes on ({why})"


class Renewal:
    """One lease kept renewed by the process's renewer until ``set()`` (the run ended)."""

    __slots__ = ("interval", "lease", "lock", "lost", "name", "renewer", "stopped", "troubles", "ttl")

    def __init__(
        self,
        renewer: Renewer,
        lease: Lease,
        ttl: float,
        name: str,
        lock: Optional[Lock] = None,
        troubles: Optional[Troubles] = None,
    ) -> None:
        self.renewer, self.lease, self.ttl, self.name = renewer, lease, ttl, name
        self.lock, self.troubles = lock, troubles
        self.interval = min(ttl / 3, RENEW_CHECK_SECONDS)
        self.stopped = False
        self.lost = False  # the loss was logged (and reported to health until set())

    def set(self) -> None:
        """The run ended: stop renewing, and health forgets a loss it was told of."""
        self.renewer.stop(self)
        if self.lost and self.troubles is not None:
            self.troubles.clear(f"lock:lost:{self.name}")


class Renewer:
    """One thread renews every expiring lease of the process (see the module's docstring).

    A thread per lease cost a burst of 10,000 locked runs 10,000 threads; this one is started
    when there is something to renew and ends as soon as nothing is left.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: List[Tuple[float, int, Renewal]] = []
        self._count = itertools.count()
        self._thread: Optional[threading.Thread] = None
        self._live = 0  # renewals not stopped
        self._failing: Dict[int, float] = {}  # id(lock) -> when its renewals began to fail

    def add(
        self,
        lease: Lease,
        ttl: float,
        name: str,
        lock: Optional[Lock] = None,
        troubles: Optional[Troubles] = None,
    ) -> Renewal:
        """Renew ``lease`` (taken through ``lock``; health in ``troubles``) until the renewal is set."""
        renewal = Renewal(self, lease, ttl, name, lock, troubles)
        with self._cond:
            self._live += 1
            self._push(renewal)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="flowyml_lite-renewer", daemon=True)
                self._thread.start()
            else:
                self._cond.notify()
        return renewal

    def stop(self, renewal: Renewal) -> None:
        with self._cond:
            if renewal.stopped:
                return
            renewal.stopped = True
            self._live -= 1
            if not self._live:
                self._heap.clear()
                self._cond.notify()

    def _push(self, renewal: Renewal) -> None:
        heapq.heappush(self._heap, (time.monotonic() + renewal.interval, next(self._count), renewal))

    def _run(self) -> None:
        try:
            self._renew_until_none_left()
        except BaseException:  # a thread's top: logged; the next lease starts a new renewer
            logger.exception("the lease renewer failed")
            with self._cond:
                self._thread = None

    def _renew_until_none_left(self) -> None:
        while True:
            with self._cond:
                batch = self._next_batch()
                if batch is None:
                    self._thread = None
                    return
            for renewal in self._renew(batch):
                with self._cond:
                    if not renewal.stopped:
                        self._push(renewal)

    def _next_batch(self) -> Optional[List[Renewal]]:
        """Wait for the next due renewal; it and those due within half their period (renewing them
        a little early costs nothing and saves a round trip). None when nothing is left."""
        while True:
            while self._heap and self._heap[0][2].stopped:
                heapq.heappop(self._heap)
            if not self._heap:
                return None
            due, _, renewal = self._heap[0]
            now = time.monotonic()
            if due <= now:
                break
            self._cond.wait(due - now)
        batch: List[Renewal] = []
        while self._heap and self._heap[0][0] <= now + self._heap[0][2].interval / 2:
            renewal = heapq.heappop(self._heap)[2]
            if not renewal.stopped:
                batch.append(renewal)
        return batch

    def _renew(self, batch: List[Renewal]) -> List[Renewal]:
        """Renew ``batch``, one round trip per lock where it can; the renewals to keep renewing."""
        groups: Dict[Tuple[int, float], List[Renewal]] = {}
        for renewal in batch:
            groups.setdefault((id(renewal.lock), renewal.ttl), []).append(renewal)
        keep: List[Renewal] = []
        for (_, ttl), renewals in groups.items():
            renewals = [renewal for renewal in renewals if not renewal.stopped]
            if not renewals:
                continue
            lock = renewals[0].lock
            try:
                answers = _renew_many(lock, [renewal.lease for renewal in renewals], ttl)
            except Exception as exc:  # the server is away: try again next period; the TTL may hold
                self._failed(lock, renewals, exc)
                keep.extend(renewals)
                continue
            self._answered(lock)
            keep.extend(self._judge(renewals, answers))
        return keep

    def _failed(self, lock: Optional[Lock], renewals: Sequence[Renewal], exc: BaseException) -> None:
        """Log a failing renewal once per outage of its lock, not once per lease and period."""
        with self._cond:
            first = id(lock) not in self._failing
            if first:
                self._failing[id(lock)] = time.monotonic()
        if first:
            names = ", ".join(repr(renewal.name) for renewal in renewals[:5])
            more = f" and {len(renewals) - 5} more" if len(renewals) > 5 else ""
            logger.warning("could not renew the lock of %s%s: %s", names, more, exc)

    def _answered(self, lock: Optional[Lock]) -> None:
        with self._cond:
            began = self._failing.pop(id(lock), None)
        if began is not None:
            logger.warning("lease renewals work again after %.1f s", time.monotonic() - began)

    def _judge(self, renewals: Sequence[Renewal], answers: Sequence[str]) -> List[Renewal]:
        """Act on the lock's answers: the renewals to keep renewing."""
        keep: List[Renewal] = []
        retaken: List[str] = []
        for renewal, answer in zip(renewals, answers):
            if answer == RENEWED:
                keep.append(renewal)
            elif answer == RETAKEN:
                keep.append(renewal)
                retaken.append(renewal.name)
            else:
                self._lost(renewal)
        if retaken:
            logger.warning(
                "the lock server had lost the locks of %d running run(s) (%s; restarted without "
                "persistence?): taken again, each with its own token, unless another process took one first",
                len(retaken),
                ", ".join(repr(name) for name in retaken[:10]),
            )
        return keep

    def _lost(self, renewal: Renewal) -> None:
        """Log the loss of a running run's lease once, say it in health until the run ends (unless it
        just ended: its release then finds the loss and logs it), and stop renewing it."""
        lock = renewal.lock
        if lock is not None and type(lock).renew_many is not Lock.renew_many:  # it takes back a gone key
            why = "another process holds it now: runs of the schedule may overlap"
        else:
            why = "it expired before renewal, or another process took it"
        message = lost_message(renewal.name, why)
        with self._cond:  # against set(): a loss reported after the run ended would stay in health
            if renewal.stopped:
                return
            renewal.lost = True
            if renewal.troubles is not None:
                renewal.troubles.report(f"lock:lost:{renewal.name}", message)
        logger.error("%s", message)
        self.stop(renewal)


def _renew_many(lock: Optional[Lock], leases: List[Lease], ttl: float) -> List[str]:
    """The lock's answers for ``leases``; each lease on its own where there is no lock to ask."""
    if lock is not None and hasattr(lock, "renew_many"):
        answers = list(lock.renew_many(leases, ttl))
        if len(answers) != len(leases):
            raise RuntimeError(f"the lock answered {len(answers)} of {len(leases)} renewals")
        return answers
    return [RENEWED if lease.renew(ttl) else LOST for lease in leases]


RENEWER = Renewer()


def keep_renewed(
    lease: Lease, ttl: float, name: str, lock: Optional[Lock] = None, troubles: Optional[Troubles] = None
) -> Renewal:
    """Renew an expiring lease every third of its TTL (2 s at most) until the renewal is ``set()``."""
    return RENEWER.add(lease, ttl, name, lock, troubles)
