"""Schedule leases from the lock backend (``distributed=True`` with a ``lock_backend``).

The store's claim is what makes a fire once; a lease adds mutual exclusion of a schedule's runs
across processes that do not share a store. Leases are taken off the loop thread, many in one
round trip where the backend can, and while the lock server is unreachable runs go on with the
store's claim alone (health says so) instead of failing.
"""

from __future__ import annotations

import heapq
import inspect
import itertools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

from ..locks.base import Lease, Lock
from .health import Troubles

logger = logging.getLogger("flowyml_lite.scheduler.leases")

LOCK_RETRY_SECONDS = 2.0  # while the lock backend is down, a probe asks it again this often
#: A run may go on without a lease: the lock server is down, and the store's claim keeps it once.
WITHOUT_LEASE = "without-lease"
Taken = Union[Lease, None, str]  # a lease; None: another process holds it; or WITHOUT_LEASE


class Leases:
    """Takes and releases the schedule leases of runs, off the loop thread."""

    def __init__(self, lock: Lock, ttl: float, node_id: str, troubles: Troubles) -> None:
        self.lock = lock
        self._ttl = ttl
        self._node = node_id
        self._troubles = troubles
        #: The lock server failed: runs go on without a lease at once, and one probe thread asks
        #: it every LOCK_RETRY_SECONDS until it answers (a run never waits on a server known down:
        #: against a server cut off, each try hangs for its socket timeouts).
        self._probing: Optional[threading.Thread] = None  # set while the server is known down
        self._closed = threading.Event()
        self._takes_owner = "owner" in inspect.signature(lock.acquire).parameters
        self._pool: Optional[ThreadPoolExecutor] = None
        self._pool_lock = threading.Lock()

    def later(self, func: Callable[..., Any], *args: Any) -> None:
        """Run ``func(*args)`` on a lease thread: a lock server round trip stays off the loop."""
        with self._pool_lock:
            if self._pool is None:
                self._closed.clear()  # open again after a close (a scheduler started again)
                self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="flowyml_lite-lease")
            pool = self._pool
        pool.submit(_logged, func, *args)

    def take(self, names: Sequence[str]) -> List[Taken]:
        """One answer per schedule name, in one round trip where the backend can batch."""
        if self._probing is not None:
            return [WITHOUT_LEASE] * len(names)
        keys = [f"schedule:{name}" for name in names]
        try:
            if not self._takes_owner:  # a lock plugin written before leases had owners
                taken: List[Optional[Lease]] = [self.lock.acquire(k, ttl_seconds=self._ttl) for k in keys]
            elif len(keys) > 1 and hasattr(self.lock, "acquire_many"):
                taken = list(self.lock.acquire_many(keys, ttl_seconds=self._ttl, owner=self._node))
            else:
                taken = [self.lock.acquire(k, ttl_seconds=self._ttl, owner=self._node) for k in keys]
        except Exception as exc:
            self._went_down(exc)
            return [WITHOUT_LEASE] * len(names)
        if self._troubles.active("lock"):  # answered again without a probe (none could start)
            self._answers_again()
        return list(taken)

    def _answers_again(self) -> None:
        """Health forgets the lock server's trouble, and the log says how long it lasted."""
        lasted = self._troubles.clear("lock")
        if lasted is not None:
            logger.warning("lock backend answers again after %.1f s", lasted)

    def _went_down(self, exc: BaseException) -> None:
        message = _unreachable(exc)
        if self._troubles.report("lock", message):
            logger.warning("%s", message)
        with self._pool_lock:
            if self._probing is not None or self._closed.is_set():
                return
            probe = threading.Thread(target=self._probe, name="flowyml_lite-lock-probe", daemon=True)
            try:
                probe.start()
            except RuntimeError:  # no thread to be had: the next take tries the server itself
                return
            self._probing = probe

    def _probe(self) -> None:
        """Ask the lock server every LOCK_RETRY_SECONDS until it answers; then leases are taken again."""
        key = f"probe:{self._node}"
        try:
            while not self._closed.wait(LOCK_RETRY_SECONDS):
                try:
                    if self._takes_owner:
                        lease = self.lock.acquire(key, ttl_seconds=LOCK_RETRY_SECONDS * 2, owner=self._node)
                    else:
                        lease = self.lock.acquire(key, ttl_seconds=LOCK_RETRY_SECONDS * 2)
                    if lease is not None:
                        lease.release()
                except Exception as exc:  # still down: health keeps saying so, with the latest error
                    self._troubles.report("lock", _unreachable(exc))
                    continue
                self._answers_again()
                return
        finally:  # answered, closed, or the probe itself failed: takes ask the server again
            with self._pool_lock:
                self._probing = None

    def renewed(self, lease: Lease, name: str) -> Optional[Renewal]:
        """Keep an expiring lease renewed while its run goes on (``set()`` it to stop)."""
        return keep_renewed(lease, self._ttl, name) if self.lock.expires else None

    def close(self) -> None:
        self._closed.set()
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


def _unreachable(exc: BaseException) -> str:
    """Health's word while the lock server does not answer."""
    return (
        f"lock backend unreachable ({type(exc).__name__}: {exc}); runs go on with the store's "
        "claim alone (max_instances is still enforced by the store)"
    )


def _logged(func: Callable[..., Any], *args: Any) -> None:
    """A pool thread's top: whatever escapes is logged (a Future would keep it unseen)."""
    try:
        func(*args)
    except BaseException:
        logger.exception("a lease thread's task failed")


class Renewal:
    """One lease kept renewed by the process's renewer until ``set()`` (the run ended)."""

    __slots__ = ("lease", "name", "renewer", "stopped", "ttl")

    def __init__(self, renewer: Renewer, lease: Lease, ttl: float, name: str) -> None:
        self.renewer, self.lease, self.ttl, self.name = renewer, lease, ttl, name
        self.stopped = False

    def set(self) -> None:
        self.renewer.stop(self)


class Renewer:
    """One thread renews every expiring lease of the process, each every third of its TTL.

    A thread per lease cost a burst of 10,000 locked runs 10,000 threads; this one is started
    when there is something to renew and ends as soon as nothing is left.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: List[Tuple[float, int, Renewal]] = []
        self._count = itertools.count()
        self._thread: Optional[threading.Thread] = None
        self._live = 0  # renewals not stopped

    def add(self, lease: Lease, ttl: float, name: str) -> Renewal:
        renewal = Renewal(self, lease, ttl, name)
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
        heapq.heappush(self._heap, (time.monotonic() + renewal.ttl / 3, next(self._count), renewal))

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
                while True:
                    while self._heap and self._heap[0][2].stopped:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        self._thread = None
                        return
                    due, _, renewal = self._heap[0]
                    left = due - time.monotonic()
                    if left <= 0:
                        heapq.heappop(self._heap)
                        break
                    self._cond.wait(left)
            if self._renew(renewal):
                with self._cond:
                    if not renewal.stopped:
                        self._push(renewal)
            else:
                self.stop(renewal)

    @staticmethod
    def _renew(renewal: Renewal) -> bool:
        """Renew once; False when the lease is lost (logged), True to keep renewing."""
        if renewal.stopped:
            return False
        try:
            if not renewal.lease.renew(renewal.ttl):
                why = "expired before renewal"
                logger.error("lost the lock of %r while its run goes on (%s)", renewal.name, why)
                return False
        except Exception as exc:
            logger.warning("could not renew the lock of %r: %s", renewal.name, exc)
        return True


RENEWER = Renewer()


def release(lease: Optional[Lease], renewing: Optional[Renewal], name: str) -> None:
    """Stop renewing and release; a failure is logged (the lease expires or its owner is released)."""
    if renewing is not None:
        renewing.set()
    if lease is not None:
        try:
            lease.release()
        except Exception as exc:
            logger.warning("could not release the lock of %r: %s", name, exc)


def keep_renewed(lease: Lease, ttl: float, name: str) -> Renewal:
    """Renew an expiring lease every third of its TTL until the returned renewal is ``set()``."""
    return RENEWER.add(lease, ttl, name)
