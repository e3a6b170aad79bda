"""The SQLite store's connections: the writer (pragmas, WAL, schema migration) and its transactions,
with the bounded wait for another writer (``waiting_at_most``); the pool of read connections; and
the connections a forked child inherits, set aside unused."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
import weakref
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, Union
from urllib.parse import quote

from ...errors import ConfigurationError, StoreError
from ..schema import SCHEMA_VERSION, VERSION_TABLE_DDL, migrations_after
from .files import _FileChecks, _identity_of
from .rows import T

logger = logging.getLogger("flowyml_lite.stores.sqlite")

DEFAULT_PATH = ".flowyml_scheduler.db"
SYNCHRONOUS_MODES = ("normal", "full")
#: Idle read connections a store keeps open for its next reads (more are closed after use).
_IDLE_READERS = 8
# About 2 s of writes at 1,000 fires/s (9-10 pages a fire): see SQLiteStore.maintain.
_WAL_RESTART_FRAMES = 16384
# The writer connection's page cache, in KiB (SQLite's default is 2,000).
_WRITER_CACHE_KIB = 16384


class _Abort(Exception):
    """Roll the current transaction (or savepoint) back: a refused claim."""


def _reopen_after(exc: sqlite3.Error) -> bool:
    """True for errors a fresh connection may not repeat: a file opened read-only (since made
    writable) or an I/O error. A busy lock, a full disk or a constraint need no new connection."""
    text = str(exc).lower()
    return "readonly" in text or "disk i/o" in text


# Stores of this process, so a forked child drops the connections and locks it inherited.
_STORES: weakref.WeakSet[_Connections] = weakref.WeakSet()
# SQLite forbids using a connection across fork(); closing it in the child could also touch the
# parent's WAL files, so the child keeps the inherited connections here, unused, instead.
_INHERITED: List[Any] = []


def _after_fork_in_child() -> None:
    for store in list(_STORES):
        for conn in (store._conn, store._checkpointer, *(reader for _, reader in store._readers)):
            if conn is not None:
                _INHERITED.append(conn)
        store._conn = store._checkpointer = None
        store._wal = None  # the parent may end the log it had open
        store._readers = []
        store._generation += 1
        store._lock = threading.Lock()
        store._maintenance_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Connections(_FileChecks):
    """The store's file opened: its writer connection and write transactions, and its readers."""

    def __init__(
        self,
        path: Union[str, os.PathLike[str]] = DEFAULT_PATH,
        busy_timeout: float = 30.0,
        synchronous: str = "normal",
        read_only: bool = False,
    ) -> None:
        if not isinstance(synchronous, str) or synchronous.lower() not in SYNCHRONOUS_MODES:
            raise ConfigurationError(
                f"sqlite synchronous={synchronous!r}: use 'normal' (fsync at checkpoints) or 'full' "
                "(fsync at every commit: power-loss durable, slower)"
            )
        self.path = os.fspath(path)
        self.busy_timeout = busy_timeout
        #: "normal" or "full": SQLite's PRAGMA synchronous on every connection of this store.
        self.synchronous = synchronous.lower()
        #: Opened to read only (``mode=ro``): nothing is created or migrated, every write is refused.
        #: For reading a file this process may not write (the CLI's read commands fall back to it).
        self.read_only = bool(read_only)
        self._immutable = False  # read-only and nobody writing: read without the -shm file
        # The file, absolute (a later chdir does not move it); None for SQLite's private in-memory
        # database, which exists only on its one connection: reads then share the writer.
        self._file: Optional[str] = None if self.path in ("", ":memory:") else os.path.abspath(self.path)
        self._lock = threading.Lock()  # the writer connection and its transactions
        self._conn: Optional[sqlite3.Connection] = None
        self._checkpointer: Optional[sqlite3.Connection] = None
        self._patience = threading.local()  # ``waiting_at_most``: seconds a write may wait, this thread
        self._maintenance_lock = threading.Lock()
        # Idle read connections, each with the generation it was opened in: close() bumps the
        # generation, so a reader opened before it is closed when next seen, never used again.
        self._readers: List[Tuple[int, sqlite3.Connection]] = []
        self._generation = 0
        self._wal: Optional[Tuple[int, int]] = None  # (st_dev, st_ino) of the -wal file while it is open
        # (st_dev, st_ino) of the file opened; kept across reconnections, forgotten by close().
        self._identity: Optional[Tuple[int, int]] = None
        self._replaced: Optional[str] = None  # set once the file is found deleted or replaced
        self._checkpoints_here = False  # maintain() checkpoints: the writer's automatic ones are off
        _STORES.add(self)

    def _connect(self) -> sqlite3.Connection:
        """Open the writer connection (with the lock held): WAL, pragmas, schema, the file's identity."""
        if self._identity is not None:
            self._check_file()  # reconnecting (after fork): never to another file at the path
        if self.read_only:
            return self._connect_read_only()
        # timeout= is sqlite3_busy_timeout: a writer waits this long for another process's lock.
        conn = sqlite3.connect(
            self._file or self.path,
            timeout=self.busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            self._enable_wal(conn)
            # In WAL mode synchronous=NORMAL fsyncs at checkpoints, not at each commit: a committed
            # transaction survives a crash or kill -9 of the process, but the last ones before a
            # power loss or OS crash may be rolled back (the file is never corrupted). FULL fsyncs
            # the log at every commit, which closes that window at the cost of one fsync per write.
            conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            conn.execute("PRAGMA foreign_keys=ON")
            # Once a WAL restarts, keep its file at most this big (it is reused, not regrown).
            conn.execute(f"PRAGMA journal_size_limit={_WAL_RESTART_FRAMES * 4096}")
            # A group of 10,000 claims and outcomes dirties more pages than SQLite's default 2 MB
            # cache holds, and spilling them mid-transaction doubled its cost (measured); 16 MB is
            # allocated only as pages are used, by the writer alone (readers keep the default).
            conn.execute(f"PRAGMA cache_size=-{_WRITER_CACHE_KIB}")
            if self._checkpoints_here:
                conn.execute("PRAGMA wal_autocheckpoint=0")
            self._migrate(conn)
            if self._file is not None:
                info = os.stat(self._file)
                identity = (info.st_dev, info.st_ino)
                if self._identity is None:
                    self._identity = identity
                elif identity != self._identity:
                    raise self._file_error("was replaced by another file")
                self._wal = _identity_of(self._file + "-wal")  # the log this connection keeps open
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _open_uri(self, mode: str) -> sqlite3.Connection:
        """A connection to the file in ``mode`` (``rw``: never creates it; ``ro``), as read-only
        stores and every reader open it."""
        assert self._file is not None
        # A Windows path gets the leading "/" of the URI form file:/C:/dir/file.db.
        path = self._file.replace(os.sep, "/")
        uri = "file:" + quote(path if path.startswith("/") else "/" + path, safe="/:") + f"?mode={mode}"
        if self._immutable:
            uri += "&immutable=1"
        timeout = self.busy_timeout
        return sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False)

    def _connect_read_only(self) -> sqlite3.Connection:
        """The connection of a read-only store: ``mode=ro``, the schema checked, nothing written.

        With no -wal file beside the database no process has it open for writing, and it is read
        as immutable, which creates no file (a -shm file made by another user could lock the app
        out of its own database). Otherwise the writer's -wal and -shm files are read as they are.
        """
        if self._file is None:
            raise StoreError(f"sqlite store {self.path!r}: an in-memory database cannot be opened read-only")
        if not os.path.isfile(self._file):
            why = self._path_problem() or "no database file to read"
            raise StoreError(f"sqlite store {self.path!r}: {why}")
        self._immutable = not os.path.exists(self._file + "-wal")
        conn = self._open_uri("ro")
        try:
            try:
                row = conn.execute("SELECT version FROM schema_version WHERE id = 1").fetchone()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    raise StoreError(f"sqlite store {self.path!r}: not a flowyml_lite database") from None
                raise
            version = 0 if row is None else int(row[0])
            if version > SCHEMA_VERSION:
                migrations_after(version, repr(self.path))  # raises SchemaVersionError
            if version < SCHEMA_VERSION:
                raise StoreError(
                    f"sqlite store {self.path!r}: schema version {version}, older than this "
                    f"flowyml_lite's {SCHEMA_VERSION}; open it once with write access to migrate it"
                )
            info = os.stat(self._file)
            self._identity = self._identity or (info.st_dev, info.st_ino)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        # Switching a fresh file to WAL needs an exclusive lock, and SQLite reports "locked" at once
        # when another process holds it instead of calling the busy handler: retry until the timeout.
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        if mode.lower() not in ("wal", "memory"):
            logger.warning("sqlite store %r: journal_mode is %s, not WAL (file system?)", self.path, mode)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        # A file already at this version is only read: opening it never waits for another process
        # that holds the write lock (a CLI reading history beside a busy scheduler).
        try:
            row = conn.execute("SELECT version FROM schema_version WHERE id = 1").fetchone()
        except sqlite3.OperationalError:  # no such table: a new file
            row = None
        if row is not None and int(row[0]) == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(VERSION_TABLE_DDL)
            row = conn.execute("SELECT version FROM schema_version WHERE id = 1").fetchone()
            version = 0 if row is None else int(row[0])
            fresh = version == 0
            for target, statements in migrations_after(version, repr(self.path)):
                for statement in statements:
                    conn.execute(statement)
                if version == 0:
                    conn.execute("INSERT INTO schema_version (id, version) VALUES (1, ?)", (target,))
                else:
                    conn.execute("UPDATE schema_version SET version = ? WHERE id = 1", (target,))
                if not fresh:
                    logger.info("sqlite store %r: schema migrated to version %d", self.path, target)
                version = target
            if fresh:
                logger.info("sqlite store %r: new database, schema version %d", self.path, version)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def open(self) -> None:
        """Open the file, switch it to WAL, create or migrate the schema. Idempotent."""
        with self._lock:
            if self._conn is None:
                try:
                    self._connect()
                except sqlite3.Error as exc:
                    raise self._error(exc) from exc

    def close(self) -> None:
        """Close every connection; any later call opens the file at the path again.

        Closing also forgets the file's identity: after a StoreFileReplacedError, ``close()`` then
        a new call opens whatever file is at the path now (what a restart does).
        """
        with self._maintenance_lock:
            if self._checkpointer is not None:
                checkpointer, self._checkpointer = self._checkpointer, None
                checkpointer.close()
        with self._lock:
            readers, self._readers = self._readers, []
            self._generation += 1
            self._identity = self._replaced = self._wal = None
            conn, self._conn = self._conn, None
        for _, reader in readers:
            reader.close()
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    def _open_reader(self) -> sqlite3.Connection:
        # mode=rw: a reader never creates a file (the path may have been deleted since).
        conn = self._open_uri("ro" if self.read_only else "rw")
        try:
            conn.execute("PRAGMA query_only=ON")
        except BaseException:
            conn.close()
            raise
        return conn

    def _read(self, sql: str, params: Sequence[Any] = ()) -> List[Any]:
        """Rows of one SELECT, on a read connection of the pool (never waiting on the write lock)."""
        if self._file is None:
            with self._lock:
                try:
                    return (self._conn or self._connect()).execute(sql, params).fetchall()
                except sqlite3.Error as exc:
                    raise self._error(exc) from exc
        if self._identity is None:
            self.open()  # once: create or migrate the file before anyone reads it
        self._check_file()
        generation = self._generation
        conn = None
        while conn is None:
            try:
                opened, conn = self._readers.pop()  # atomic: no lock needed
            except IndexError:
                try:
                    conn = self._open_reader()
                except sqlite3.Error as exc:
                    raise self._error(exc) from exc
            else:
                if opened != generation:  # pooled by a read that overlapped close()
                    conn.close()
                    conn = None
        try:
            rows = conn.execute(sql, params).fetchall()
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise self._error(exc) from exc
            raise
        if len(self._readers) < _IDLE_READERS:
            self._readers.append((generation, conn))
        else:
            conn.close()
        return rows

    def _write(self, body: Callable[[sqlite3.Connection], T]) -> Optional[T]:
        """Run ``body`` in one BEGIN IMMEDIATE transaction; None if it raised _Abort (rolled back).

        The file is checked once the write lock is held, so nothing is written to a file that was
        deleted or replaced, even one replaced while this write waited for the lock.
        """
        if self.read_only:
            raise StoreError(f"sqlite store {self.path!r} is opened read-only: it takes no writes")
        patience = getattr(self._patience, "seconds", None)
        if patience is None:
            with self._lock:
                return self._write_locked(body, None)
        if not self._lock.acquire(timeout=patience):
            raise StoreError(f"sqlite store {self.path!r}: another write of this process is under way")
        try:
            return self._write_locked(body, patience)
        finally:
            self._lock.release()

    def _write_locked(
        self, body: Callable[[sqlite3.Connection], T], patience: Optional[float]
    ) -> Optional[T]:
        """``_write`` with this process's write lock held; ``patience``: how long (seconds) to wait
        for another process's, if not ``busy_timeout``."""
        try:
            conn = self._conn or self._connect()
            if patience is not None:
                conn.execute(f"PRAGMA busy_timeout={max(1, int(patience * 1000))}")
                try:
                    conn.execute("BEGIN IMMEDIATE")
                finally:
                    conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
            else:
                conn.execute("BEGIN IMMEDIATE")
            try:
                self._check_file()
                result = body(conn)
                conn.execute("COMMIT")
                return result
            except _Abort:
                conn.execute("ROLLBACK")
                return None
            except BaseException:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        logger.exception("sqlite store %r: rollback failed", self.path)
                raise
        except sqlite3.Error as exc:
            if self._conn is not None and _reopen_after(exc):
                self._drop_writer()
            raise self._error(exc) from exc

    @contextlib.contextmanager
    def waiting_at_most(self, seconds: float) -> Iterator[None]:
        """This thread's writes in the block wait ``seconds`` at most for another writer."""
        before = getattr(self._patience, "seconds", None)
        self._patience.seconds = seconds
        try:
            yield
        finally:
            self._patience.seconds = before

    def _drop_writer(self) -> None:
        """Close the writer (with the lock held): the next write opens it again, on the same file."""
        conn, self._conn = self._conn, None
        self._wal = None  # closing it may end the log (the last connection): the reconnect takes the new one
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                logger.exception("sqlite store %r: closing the writer connection failed", self.path)
