"""The file lock: one lock file per key, held with an exclusive OS lock, for the processes of one host.

POSIX uses ``fcntl.flock``, Windows ``msvcrt.locking``; the choice is made once, at import.
The kernel releases the lock when the holder's process dies, however it dies (even ``kill -9``).
Locks over NFS depend on the NFS client and server; use the ``redis`` lock across hosts.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import threading
import time
from typing import Dict, Optional, Union

from ..errors import LockError
from .base import Lease, Lock

_POLL_SECONDS = 0.01
_MAX_POLL_SECONDS = 0.1

if sys.platform == "win32":  # pragma: no cover - exercised on Windows CI only
    import msvcrt

    class _OSLock:
        """Byte 0 of the file, locked with ``msvcrt.locking`` (LockFile under the hood)."""

        open_flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0)

        @staticmethod
        def try_lock(fd: int) -> bool:
            os.lseek(fd, 0, os.SEEK_SET)
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            except OSError:
                return False
            return True

        @staticmethod
        def unlock(fd: int) -> None:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    class _OSLock:
        """The whole file, locked with ``flock`` (per open file description, not per process)."""

        open_flags = os.O_RDWR | os.O_CREAT

        @staticmethod
        def try_lock(fd: int) -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # EWOULDBLOCK: someone else holds it
                return False
            return True

        @staticmethod
        def unlock(fd: int) -> None:
            fcntl.flock(fd, fcntl.LOCK_UN)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def lock_file_name(key: str) -> str:
    """A safe, collision-free file name for ``key``: a readable prefix plus a hash of the whole key."""
    readable = _UNSAFE.sub("_", key).strip("._")[:60] or "lock"
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return f"{readable}.{digest}.lock"


class _FileLease(Lease):
    def __init__(self, owner: FileLock, key: str, fd: int) -> None:
        self.key = key
        self._owner = owner
        self._fd: Optional[int] = fd

    def release(self) -> None:
        """Unlock and close the file once; later calls do nothing."""
        self._owner._release(self)

    def renew(self, ttl_seconds: float) -> bool:
        """File locks never expire: True while this lease holds the lock."""
        return self._fd is not None

    def __repr__(self) -> str:
        return f"<FileLease {self.key!r}{'' if self._fd is not None else ' released'}>"


class FileLock(Lock):
    """Named mutexes shared by the processes of one host, one lock file per key in ``directory``.

    The lock files are never deleted. Within one process a held key is busy too: a second
    ``acquire`` of it (same or another thread, same or another FileLock) waits up to ``timeout``
    and returns None while it is held, so the lock is not reentrant. A process that forks while
    holding a lease shares it with the child until both have released it.
    """

    expires = False

    def __init__(self, directory: Union[str, os.PathLike[str]]) -> None:
        self.directory = os.path.abspath(os.fspath(directory))
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as exc:
            raise LockError(
                f"cannot create the lock directory {self.directory!r}: {exc}; "
                "set SchedulerConfig.lock_dir to a writable directory"
            ) from exc
        self._held: Dict[str, _FileLease] = {}
        self._mutex = threading.Lock()

    def path_for(self, key: str) -> str:
        """The lock file that guards ``key``."""
        return os.path.join(self.directory, lock_file_name(key))

    def acquire(
        self,
        key: str,
        ttl_seconds: Optional[float] = None,
        timeout: float = 0.0,
        owner: Optional[str] = None,
    ) -> Optional[Lease]:
        """Take ``key`` within ``timeout`` seconds (0 = one try); None if another holder keeps it.

        File locks never expire (``ttl_seconds`` is ignored) and need no ``owner``: the kernel
        releases them when the holding process dies, so ``release_owner`` has nothing to do.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        delay = _POLL_SECONDS
        while True:
            lease = self._try_acquire(key)
            if lease is not None:
                return lease
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, _MAX_POLL_SECONDS)

    def _try_acquire(self, key: str) -> Optional[_FileLease]:
        with self._mutex:
            if key in self._held:
                return None
            path = self.path_for(key)
            try:
                fd = os.open(path, _OSLock.open_flags, 0o644)
            except OSError as exc:
                raise LockError(f"cannot open the lock file {path!r}: {exc}") from exc
            try:
                locked = _OSLock.try_lock(fd)
            except OSError as exc:  # e.g. ENOLCK on a file system without locks
                os.close(fd)
                raise LockError(f"cannot lock {path!r}: {exc}; put lock_dir on a local disk") from exc
            if not locked:
                os.close(fd)
                return None
            lease = self._held[key] = _FileLease(self, key, fd)
            return lease

    def _release(self, lease: _FileLease) -> None:
        with self._mutex:
            fd, lease._fd = lease._fd, None
            if fd is None:
                return
            if self._held.get(lease.key) is lease:
                del self._held[lease.key]
        # The file stays. Deleting it would break mutual exclusion: a process that already opened
        # the old file locks it (a now nameless inode) once we let go, while another process creates
        # and locks a new file under the same name, and both hold "the" lock
        # (tox-dev/filelock issues #27 and #574).
        try:
            _OSLock.unlock(fd)
        finally:
            os.close(fd)  # closing alone releases a flock; the explicit unlock is for Windows

    def close(self) -> None:
        """Release every lease still held through this FileLock."""
        with self._mutex:
            leases = list(self._held.values())
        for lease in leases:
            lease.release()

    def __repr__(self) -> str:
        return f"FileLock({self.directory!r})"
