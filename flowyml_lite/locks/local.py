"""An in-process lock: the lock contract on ``threading`` locks, for one process only."""

from __future__ import annotations

import threading
from typing import Dict, Optional

from .base import Lease, Lock


class _LocalLease(Lease):
    def __init__(self, key: str, lock: threading.Lock) -> None:
        self.key = key
        self._lock = lock
        self._released = False
        self._mutex = threading.Lock()

    def release(self) -> None:
        """Release once; later calls do nothing, so a stale lease cannot free a new holder's lock."""
        with self._mutex:
            if self._released:
                return
            self._released = True
        self._lock.release()

    def renew(self, ttl_seconds: float) -> bool:
        """Local locks never expire: True while this lease holds the lock."""
        return not self._released

    def __repr__(self) -> str:
        return f"<LocalLease {self.key!r}{' released' if self._released else ''}>"


class LocalLock(Lock):
    """Named mutexes shared by the threads of one process.

    Not reentrant: a second ``acquire`` of a held key, from any thread, waits up to ``timeout``
    and returns None if the key is still held.
    """

    expires = False

    def __init__(self) -> None:
        self._locks: Dict[str, threading.Lock] = {}
        self._mutex = threading.Lock()

    def acquire(
        self,
        key: str,
        ttl_seconds: Optional[float] = None,
        timeout: float = 0.0,
        owner: Optional[str] = None,
    ) -> Optional[Lease]:
        """Take ``key`` within ``timeout`` seconds (0 = one try); None if another holder keeps it.

        Local locks never expire (``ttl_seconds`` is ignored); ``owner`` is not needed: one
        process holds them all, and its death releases them.
        """
        with self._mutex:
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = threading.Lock()
        acquired = lock.acquire(timeout=timeout) if timeout > 0 else lock.acquire(blocking=False)
        return _LocalLease(key, lock) if acquired else None

    def __repr__(self) -> str:
        return "LocalLock()"
