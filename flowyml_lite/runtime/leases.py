"""Schedule leases from the lock backend (``distributed=True`` with a ``lock_backend``).

The store's claim is what makes a fire once; a lease adds mutual exclusion of a schedule's runs
across processes that do not share a store. Leases are taken off the loop thread, many in one
round trip where the backend can, and while the lock server is unreachable runs go on with the
store's claim alone (health says so) instead of failing. A release the server did not answer is
kept by the lock and done when it answers again; health is ``degraded`` until then.
"""

from __future__ import annotations

import inspect
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, List, Optional, Sequence, Union

from ..locks.base import Lease, Lock
from .health import Troubles
from .renewer import RENEWER, Renewal, Renewer, keep_renewed, lost_message

__all__ = ["WITHOUT_LEASE", "Leases", "Renewal", "Renewer", "keep_renewed", "release"]

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
            self._went_down(self._down(exc))
            return [WITHOUT_LEASE] * len(names)
        if self._troubles.active("lock"):  # answered again without a probe (none could start)
            self._answers_again()
        return list(taken)

    def release(self, lease: Optional[Lease], renewing: Optional[Renewal], name: str) -> None:
        """Release a run's lease; while the lock keeps releases the server did not answer, health
        says so (naming them) and a probe asks the server until it answers and they are done."""
        release(lease, renewing, name)
        if lease is not None:
            pending = self._pending()
            if pending:  # the lock logged it, once per outage
                self._went_down(_unreleased(pending), log=False)

    def _pending(self) -> List[str]:
        try:
            return list(self.lock.pending_releases()) if hasattr(self.lock, "pending_releases") else []
        except Exception:  # a plugin's bug must not end a run badly: nothing known pending
            logger.exception("the lock backend could not say which releases wait")
            return []

    def _answers_again(self) -> None:
        """Health forgets the lock server's trouble once nothing waits for it, and the log says
        how long it lasted."""
        pending = self._pending()
        if pending:
            self._troubles.report("lock", _unreleased(pending))
            return
        lasted = self._troubles.clear("lock")
        if lasted is not None:
            logger.warning("lock backend answers again after %.1f s", lasted)

    def _down(self, exc: BaseException) -> str:
        """Health's word for the lock server's failure ``exc``, naming the releases that wait."""
        pending = self._pending()
        return _unreachable(exc) + (f"; {_unreleased(pending)}" if pending else "")

    def _went_down(self, message: str, log: bool = True) -> None:
        if self._troubles.report("lock", message) and log:
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
                    self._troubles.report("lock", self._down(exc))
                    continue
                self._answers_again()
                if not self._troubles.active("lock"):
                    return
        finally:  # answered, closed, or the probe itself failed: takes ask the server again
            with self._pool_lock:
                self._probing = None

    def renewed(self, lease: Lease, name: str) -> Optional[Renewal]:
        """Keep an expiring lease renewed while its run goes on (``set()`` it to stop)."""
        if not self.lock.expires:
            return None
        return RENEWER.add(lease, self._ttl, name, self.lock, self._troubles)

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


def _unreleased(keys: Sequence[str]) -> str:
    """Health's word while releases wait for the lock server."""
    shown = ", ".join(repr(key) for key in keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    return (
        f"lock backend: the release of {len(keys)} lock(s) of this node failed ({shown}); done as soon "
        "as it answers again, runs go on with the store's claim alone meanwhile"
    )


def _logged(func: Callable[..., Any], *args: Any) -> None:
    """A pool thread's top: whatever escapes is logged (a Future would keep it unseen)."""
    try:
        func(*args)
    except BaseException:
        logger.exception("a lease thread's task failed")


def release(lease: Optional[Lease], renewing: Optional[Renewal], name: str) -> bool:
    """Stop renewing and release; True if the lease turned out lost before (logged once per run,
    unless the renewer already did). A failure is logged: the lock keeps the release for later
    (Redis) or the lease expires."""
    if renewing is not None:
        renewing.set()
    if lease is None:
        return False
    try:
        lease.release()
    except Exception as exc:
        logger.warning("could not release the lock of %r: %s", name, exc)
        return False
    lost = bool(getattr(lease, "lost", False))
    if lost and not (renewing is not None and renewing.lost):
        logger.error("%s", lost_message(name, "it was gone, or another process held it, when the run ended"))
    return lost
