"""The lock contract: keeps two processes from running one schedule at the same time.

Locks are advisory and complementary to the store: the store's claim is what makes a fire run
once; a lock keeps runs of one schedule from overlapping across processes (``distributed=True``).
Implementations: ``file`` (flock / LockFileEx, one host), ``local`` (one process), ``redis`` (extra).
"""

from __future__ import annotations

import abc
from typing import List, Optional, Sequence

#: ``Lock.renew_many``'s answers: the lease is extended; its key was gone (the server restarted
#: empty) and is held again by this lease; another holder has the key.
RENEWED, RETAKEN, LOST = "renewed", "retaken", "lost"


class Lease(abc.ABC):
    """A held lock. Release it exactly once; ``renew`` extends a lock that expires (Redis)."""

    key: str
    #: Set by ``release`` when the lock server had lost the lease before it (the key was gone or
    #: another holder had it): the run it guarded was not protected to its end.
    lost: bool = False

    @abc.abstractmethod
    def release(self) -> None:
        """Release the lock if this lease still owns it; never releases someone else's lock."""

    def renew(self, ttl_seconds: float) -> bool:
        """Extend the lease; False if it was lost. Locks that never expire return True."""
        return True

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Lock(abc.ABC):
    """A family of named mutexes sharing one backend (a directory, a Redis database...)."""

    #: True when the lock's lease lapses by itself after ``ttl_seconds`` unless renewed.
    expires: bool = False
    #: The lease length when ``acquire`` is given none (locks that expire).
    default_ttl_seconds: float = 60.0

    @abc.abstractmethod
    def acquire(
        self,
        key: str,
        ttl_seconds: Optional[float] = None,
        timeout: float = 0.0,
        owner: Optional[str] = None,
    ) -> Optional[Lease]:
        """Try to take the lock ``key`` for up to ``timeout`` seconds (0 = one try).

        Returns a Lease, or None if another holder has it. A holder that dies releases it:
        the kernel does for file locks, the TTL (``ttl_seconds``, None = ``default_ttl_seconds``)
        does for Redis, and ``release_owner`` does at once when the holder is known to be gone.
        ``owner`` (the scheduler's node id) is stored with the lease for ``release_owner``.
        Errors of the backend (unreachable server) raise LockError, within seconds.
        """

    def acquire_many(self, keys: Sequence[str], ttl_seconds: float, owner: str) -> List[Optional[Lease]]:
        """Try to take each of ``keys`` once, for ``owner``: one answer per key, in order (a Lease,
        or None where another holder has it; a key repeated in ``keys`` is taken once).

        Backends that can do it in one round trip override this (Redis: one script); the default
        calls ``acquire`` per key, without ``owner`` for plugins whose ``acquire`` takes none.
        A backend error raises like ``acquire`` (LockError), after releasing what this call took.
        """
        import inspect  # only for plugins that predate the owner parameter

        takes_owner = "owner" in inspect.signature(self.acquire).parameters
        taken: List[Optional[Lease]] = []
        try:
            for key in keys:
                if takes_owner:
                    taken.append(self.acquire(key, ttl_seconds, owner=owner))
                else:
                    taken.append(self.acquire(key, ttl_seconds))
        except BaseException:
            for lease in taken:
                if lease is not None:
                    lease.release()
            raise
        return taken

    def renew_many(self, leases: Sequence[Lease], ttl_seconds: float) -> List[str]:
        """Extend each of ``leases`` (all taken through this lock): one answer per lease, in order,
        RENEWED, RETAKEN or LOST. Backends that can do it in one round trip override this (Redis:
        a pipeline that also takes a vanished key again); the default renews each (never RETAKEN).
        A backend error raises LockError.
        """
        return [RENEWED if lease.renew(ttl_seconds) else LOST for lease in leases]

    def pending_releases(self) -> List[str]:
        """The keys whose release failed (the server did not answer) and that this lock deletes as
        soon as the server answers again; until then they keep their schedules from running
        elsewhere. Default: none (locks whose release cannot fail that way)."""
        return []

    def release_owner(self, owner: str) -> int:
        """Release every lease ``owner`` holds (its node was declared lost); return how many.

        Only what ``owner`` acquired with ``owner=`` is released, never another holder's lease.
        Default: 0, for locks the kernel releases when their holder's process dies (file, local).
        """
        return 0

    def claim_fire(self, key: str, ttl_seconds: float) -> bool:
        """Set a once-only marker for a fire; True for the first caller within ``ttl_seconds``.

        Only needed where processes share no store; backends without it return True.
        """
        return True

    def close(self) -> None:
        """Release resources (connections, file descriptors of released locks)."""
