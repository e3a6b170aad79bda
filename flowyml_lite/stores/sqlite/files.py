"""The SQLite store's file: is the path still the file it opened (device and inode, its -wal log too),
and what an SQLite error means for it (the hint its StoreError gives)."""

from __future__ import annotations

import logging
import os
from typing import Optional, Tuple

from ...errors import StoreError, StoreFileReplacedError
from ..base import Store

logger = logging.getLogger("flowyml_lite.stores.sqlite")


def _identity_of(path: str) -> Optional[Tuple[int, int]]:
    """(st_dev, st_ino) of ``path``, or None if there is no such file."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


class _FileChecks(Store):
    """The checks and error messages about the store's file (the connections are in connection.py)."""

    path: str
    busy_timeout: float
    _file: Optional[str]
    _identity: Optional[Tuple[int, int]]
    _wal: Optional[Tuple[int, int]]
    _replaced: Optional[str]

    def _error(self, exc: BaseException) -> StoreError:
        text = str(exc)
        lowered = text.lower()
        if "disk is full" in lowered:
            hint = "free space on the file system that holds it; a later write may succeed"
        elif "readonly" in lowered or "read-only" in lowered:
            hint = self._path_problem() or (
                "make the file, its -wal and -shm files and its directory writable by this process"
            )
        elif "unable to open" in lowered:
            hint = self._path_problem() or (
                "check that its directory exists and that the file system is mounted writable "
                "(SQLite's WAL needs to create files beside the database)"
            )
        elif "locked" in lowered or "busy" in lowered:
            hint = (
                f"another connection held the write lock longer than busy_timeout={self.busy_timeout:g} s; "
                "a later write may succeed"
            )
        else:
            hint = ""
        return StoreError(f"sqlite store {self.path!r}: {text}" + (f" ({hint})" if hint else ""))

    def _path_problem(self) -> Optional[str]:
        """What about the path keeps SQLite from opening or writing it, when that can be seen."""
        path = self._file
        if path is None:
            return None
        folder = os.path.dirname(path)
        if os.path.isdir(path):
            return f"it is a directory: give the path of a file, e.g. {os.path.join(path, 'scheduler.db')}"
        if not os.path.isdir(folder):
            return f"its directory {folder} does not exist"
        who = f"this process (uid {os.getuid()})" if hasattr(os, "getuid") else "this process"
        beside = "SQLite creates the -wal and -shm files beside the database"
        if hasattr(os, "statvfs") and os.statvfs(folder).f_flag & getattr(os, "ST_RDONLY", 1):
            return f"the file system holding {folder} is mounted read-only: {beside}, so it must be writable"
        if not os.access(folder, os.W_OK):
            return (
                f"{who} may not create files in {folder}: make it writable for this user ({beside}); "
                "the CLI's read commands open such a file read-only"
            )
        if os.path.exists(path) and not os.access(path, os.W_OK):
            return f"{who} may not write {path}: make it (and its -wal and -shm files) writable for this user"
        return None

    def _file_error(self, what: str) -> StoreFileReplacedError:
        self._replaced = (
            f"sqlite store {self.path!r}: the database file {what} while this process had it open. "
            "Writing on would record fires in a file no other process sees, so this store refuses "
            "every call. Stop this process; to keep the old data, restore the file from a backup and "
            "delete the '-wal' and '-shm' files beside it (they belong to the file that was open, "
            "and SQLite would replay them into the restored one); then start it again: it opens the "
            "file at the path (a new, empty one if there is none)"
        )
        logger.error("%s", self._replaced)
        return StoreFileReplacedError(self._replaced)

    def _check_file(self) -> None:
        """StoreFileReplacedError if the path no longer names the file this store opened (an os.stat)."""
        if self._replaced is not None:
            raise StoreFileReplacedError(self._replaced)
        identity = self._identity
        if identity is None or self._file is None:
            return
        try:
            info = os.stat(self._file)
        except FileNotFoundError:
            raise self._file_error("was deleted (or its directory was)") from None
        except OSError as exc:  # e.g. a permission taken away: not proof of a replacement
            raise StoreError(f"sqlite store {self.path!r}: cannot check the file: {exc}") from exc
        if (info.st_dev, info.st_ino) != identity:
            raise self._file_error("was replaced by another file")
        wal = self._wal
        if wal is not None:
            try:
                info = os.stat(self._file + "-wal")
            except FileNotFoundError:
                raise self._wal_error("was deleted") from None
            except OSError:
                return
            if (info.st_dev, info.st_ino) != wal:
                raise self._wal_error("was replaced by another file")

    def _wal_error(self, what: str) -> StoreFileReplacedError:
        self._replaced = (
            f"sqlite store {self.path!r}: the database's write-ahead log ({self._file}-wal) {what} while "
            "this process had it open. Its latest commits are only in this process's open copy, and "
            "other processes cannot open the database (disk I/O error), so this store refuses every "
            "call. Stop this process cleanly (closing the store writes the log it holds into the "
            "database file), then start it again"
        )
        logger.error("%s", self._replaced)
        return StoreFileReplacedError(self._replaced)
