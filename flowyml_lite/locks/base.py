"""The lock contract: keeps two processes from running one schedule at the same time.

Locks are advisory and complementary to the store: the store's claim is what makes a fire run
once; a lock keeps runs of one schedule from overlapping across processes (``distributed=True``).
Implementations: ``file`` (flock / LockFileEx, one host), ``local`` (one process), ``redis`` (extra).
"""

from __future__ import annotations

import abc
from typing import Optional


class Lease(abc.ABC):
    """A held lock. Release it exactly once; ``renew`` extends a lock that expires (Redis)."""

    key: str

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

    @abc.abstractmethod
    def acquire(self, key: str, ttl_seconds: float = 60.0, timeout: float = 0.0) -> Optional[Lease]:
        """Try to take the lock ``key`` for up to ``timeout`` seconds (0 = one try).

        Returns a Lease, or None if another holder has it. A holder that dies releases it:
        the kernel does for file locks, the TTL does for Redis.
        """

    def claim_fire(self, key: str, ttl_seconds: float) -> bool:
        """Set a once-only marker for a fire; True for the first caller within ``ttl_seconds``.

        Only needed where processes share no store; backends without it return True.
        """
        return True

    def close(self) -> None:
        """Release resources (connections, file descriptors of released locks)."""
