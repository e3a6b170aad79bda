"""The embedded store: one SQLite file shared by every process on the host (stdlib ``sqlite3``).

Writes: every write is one explicit ``BEGIN IMMEDIATE`` transaction on the store's one writer
connection (autocommit mode, ``isolation_level=None``), so the compare-and-set of a claim and its
inserts are atomic across processes; ``busy_timeout`` makes a writer wait for another process
instead of failing. Threads of one process queue on a lock (microseconds) rather than on SQLite's
busy handler, which sleeps in millisecond steps. A group of claims or outcomes is one transaction.

Reads: on connections of their own, taken from a small pool, never under the writer's lock. WAL
lets them read the last committed state beside a writer, so neither a long write in this process
nor another process holding the write lock makes ``history()`` or ``stats()`` wait.

The file: the store remembers which file it opened (device and inode) and checks, before each
write and read, that the path still names it. A file deleted or replaced under a running process
raises StoreFileReplacedError from then on instead of writing to a file nobody else sees.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple, TypeVar, Union
from urllib.parse import quote

from ..errors import ConfigurationError, StoreError, StoreFileReplacedError
from .base import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    LOST,
    SKIPPED,
    Claim,
    NodeRecord,
    Outcome,
    RunRecord,
    RunStats,
    ScheduleRecord,
    ScheduleState,
    Store,
)
from .schema import (
    ACTIVE_CONDITION,
    FINAL_CONDITION,
    PRUNE_BATCH_ROWS,
    SCHEMA_VERSION,
    STATE_COLUMNS,
    VERSION_TABLE_DDL,
    as_text,
    check_final,
    check_outcome_record,
    check_prune,
    check_run,
    clip_text,
    from_json,
    from_us,
    make_stats,
    migrations_after,
    opt_to_us,
    states_of,
    to_json,
    to_us,
)

__all__ = ["DEFAULT_PATH", "SQLiteStore"]

logger = logging.getLogger("flowyml_lite.stores.sqlite")

DEFAULT_PATH = ".flowyml_scheduler.db"
_IN_JSON_LIST = "IN (SELECT value FROM json_each(?))"


@functools.cache
def _has_json_each() -> bool:
    """Whether this SQLite has the JSON functions (built in since 3.38, often compiled in before)."""
    probe = sqlite3.connect(":memory:")
    try:
        probe.execute("SELECT value FROM json_each('[1]')").fetchall()
    except sqlite3.Error:
        return False
    finally:
        probe.close()
    return True
SYNCHRONOUS_MODES = ("normal", "full")

T = TypeVar("T")
Row = List[Any]

_SCHEDULE_COLUMNS = (
    "name, type, value, timezone, definition_hash, options, context, enabled, next_fire, last_fire, "
    "created_at, updated_at, declared_by, declared_at"
)
_RUN_COLUMNS = (
    "run_key, schedule, fire_time, status, node_id, started_at, completed_at, duration_seconds, error, "
    "run_id, reason, attempt, traceback, output, next_attempt_at"
)
# Positions in a run row (the order of _RUN_COLUMNS).
_FIRE, _STATUS, _REASON = 2, 3, 10
_SELECT_SCHEDULE = f"SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE name = ?"
_INSERT_SCHEDULE = f"INSERT INTO schedules ({_SCHEDULE_COLUMNS}) VALUES ({', '.join('?' * 14)})"
_REDEFINE_SCHEDULE = (
    "UPDATE schedules SET type = ?, value = ?, timezone = ?, definition_hash = ?, options = ?, "
    "context = ?, next_fire = ?, updated_at = ? WHERE name = ?"
)
_COUNT_ACTIVE = f"SELECT COUNT(*) FROM runs WHERE schedule = ? AND {ACTIVE_CONDITION}"
_ADVANCE = "UPDATE schedules SET next_fire = ? WHERE name = ? AND enabled = 1 AND next_fire = ?"
_ADVANCE_LAST = (
    "UPDATE schedules SET next_fire = ?, "
    "last_fire = CASE WHEN last_fire IS NULL OR last_fire < ? THEN ? ELSE last_fire END "
    "WHERE name = ? AND enabled = 1 AND next_fire = ?"
)
# A group claim reads the state of its schedules first, so it sets last_fire itself.
_ADVANCE_TO = (
    "UPDATE schedules SET next_fire = ?, last_fire = ? WHERE name = ? AND enabled = 1 AND next_fire = ?"
)
_INSERT_RUN = f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES ({', '.join('?' * 15)})"
_START_RUN = (
    "UPDATE runs SET status = 'running', started_at = ?, next_attempt_at = NULL "
    f"WHERE run_key = ? AND {ACTIVE_CONDITION}"
)
# One statement for every outcome: accepted while the run is active, or when it is lost and the
# outcome comes from the run's own node (the reason of that lost verdict is then replaced).
_FINISH_RUN = (
    "UPDATE runs SET status = ?, completed_at = ?, duration_seconds = ?, error = ?, run_id = ?, "
    "started_at = COALESCE(?, started_at), "
    f"reason = CASE WHEN status = '{LOST}' THEN ? ELSE COALESCE(?, reason) END, "
    "attempt = ?, traceback = ?, output = ?, next_attempt_at = ? "
    f"WHERE run_key = ? AND ({ACTIVE_CONDITION} OR (status = '{LOST}' AND node_id = ?))"
)
# finish_run: the one-outcome call of before retries; it keeps the fields it does not take.
_FINISH_ONE = (
    "UPDATE runs SET status = ?, completed_at = ?, duration_seconds = ?, error = ?, run_id = ?, "
    "started_at = COALESCE(?, started_at), reason = COALESCE(?, reason), next_attempt_at = NULL "
    f"WHERE run_key = ? AND {ACTIVE_CONDITION}"
)
# Spelled with ACTIVE_CONDITION so SQLite uses the partial indexes; without INDEXED BY the planner
# prefers scanning the whole table in (schedule, fire_time) order.
_ACTIVE_ALL = (
    f"SELECT {_RUN_COLUMNS} FROM runs INDEXED BY runs_schedule_status "
    f"WHERE {ACTIVE_CONDITION} ORDER BY schedule, fire_time"
)
_ACTIVE_OF = (
    f"SELECT {_RUN_COLUMNS} FROM runs INDEXED BY runs_schedule_status "
    f"WHERE schedule = ? AND {ACTIVE_CONDITION} ORDER BY fire_time"
)
_ACTIVE_OF_NODE = (
    f"SELECT {_RUN_COLUMNS} FROM runs WHERE node_id = ? AND {ACTIVE_CONDITION} ORDER BY schedule, fire_time"
)
_LOSE_OF_NODE = f"UPDATE runs SET status = ?, reason = ? WHERE node_id = ? AND {ACTIVE_CONDITION}"
_NODE_COLUMNS = "node_id, hostname, pid, started_at, heartbeat, serves"
# Pruning walks the UNIQUE (schedule, fire_time) index of one schedule from its oldest fire. A
# disabled criterion gets _NO_CUT, below every instant, so one statement serves every combination.
_NO_CUT = -(2**63)
_NEWEST_FIRE = "SELECT MAX(fire_time) FROM runs WHERE schedule = ?"
_KEEP_FROM = "SELECT fire_time FROM runs WHERE schedule = ? ORDER BY fire_time DESC LIMIT 1 OFFSET ?"
_PRUNABLE = (
    f"FROM runs WHERE schedule = ? AND fire_time < ? AND {FINAL_CONDITION} "
    "AND (fire_time < ? OR completed_at IS NULL OR completed_at < ?) ORDER BY fire_time LIMIT ?"
)
_ANY_PRUNABLE = f"SELECT 1 {_PRUNABLE}"
_PRUNE = f"DELETE FROM runs WHERE rowid IN (SELECT rowid {_PRUNABLE})"
# Statements with a list of names are built for at most this many (SQLite before 3.32 allows 999
# parameters in a statement).
_IN_CHUNK = 500
#: Idle read connections a store keeps open for its next reads (more are closed after use).
_IDLE_READERS = 8


def _states_of(count: int) -> str:
    marks = ", ".join("?" * count)
    return f"SELECT name, enabled, next_fire, last_fire FROM schedules WHERE name IN ({marks})"


def _active_counts_of(count: int) -> str:
    return (
        "SELECT schedule, COUNT(*) FROM runs INDEXED BY runs_schedule_status "
        f"WHERE schedule IN ({', '.join('?' * count)}) AND {ACTIVE_CONDITION} GROUP BY schedule"
    )


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


# Stores of this process, so a forked child drops the connections and locks it inherited.
_STORES: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()
# SQLite forbids using a connection across fork(); closing it in the child could also touch the
# parent's WAL files, so the child keeps the inherited connections here, unused, instead.
_INHERITED: List[Any] = []


def _identity_of(path: str) -> Optional[Tuple[int, int]]:
    """(st_dev, st_ino) of ``path``, or None if there is no such file."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


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


class _Abort(Exception):
    """Roll the current transaction (or savepoint) back: a refused claim."""


def _schedule(row: Sequence[Any]) -> ScheduleRecord:
    return ScheduleRecord(
        name=row[0],
        schedule_type=row[1],
        schedule_value=row[2],
        timezone=row[3],
        definition_hash=row[4],
        options=from_json(row[5]),
        context=from_json(row[6]),
        enabled=bool(row[7]),
        next_fire=from_us(row[8]),
        last_fire=from_us(row[9]),
        created_at=from_us(row[10]),
        updated_at=from_us(row[11]),
        declared_by=row[12],
        declared_at=from_us(row[13]),
    )


def _run(row: Sequence[Any]) -> RunRecord:
    return RunRecord(
        row[0],
        row[1],
        from_us(row[2]),  # type: ignore[arg-type]  # NOT NULL column
        row[3],
        row[4],
        from_us(row[5]),
        from_us(row[6]),
        row[7],
        row[8],
        row[9],
        row[10],
        row[11],
        row[12],
        row[13],
        from_us(row[14]),
    )


def _run_row(name: str, run: RunRecord) -> Row:
    """``run`` as a row of the runs table (checked, texts bounded)."""
    check_run(name, run)
    started, completed, retry = run.started_at, run.completed_at, run.next_attempt_at
    error, run_id, reason = run.error, run.run_id, run.reason
    return [
        run.run_key,
        name,
        to_us(run.fire_time, "fire_time"),
        run.status,
        run.node_id,
        None if started is None else to_us(started, "started_at"),
        None if completed is None else to_us(completed, "completed_at"),
        run.duration_seconds,
        None if error is None else as_text(error),
        None if run_id is None else as_text(run_id),
        None if reason is None else as_text(reason),
        run.attempt,
        clip_text(run.traceback),
        clip_text(run.output),
        None if retry is None else to_us(retry, "next_attempt_at"),
    ]


def _as_stored(run: RunRecord, row: Row) -> RunRecord:
    """What ``_run(row)`` gives for the row made from ``run``, built from ``run`` (a few times faster),
    or ``run`` itself when it is that already.

    The row's values replace the ones a claim may change (status and reason for overlap, texts
    converted or cut); instants are the caller's, in UTC (the store keeps whole microseconds, as
    a datetime does).
    """
    if (
        type(run) is RunRecord
        and row[_STATUS] is run.status
        and row[_REASON] is run.reason
        and row[8] is run.error
        and row[9] is run.run_id
        and row[12] is run.traceback
        and row[13] is run.output
        and row[1] == run.schedule
        and run.fire_time.tzinfo is timezone.utc
        and (run.started_at is None or run.started_at.tzinfo is timezone.utc)
        and run.completed_at is None
        and run.next_attempt_at is None
    ):
        return run  # stored as given (records handed to a store are not changed afterwards)
    stored = RunRecord.__new__(RunRecord)
    fields = stored.__dict__
    fields.update(run.__dict__)
    fields["schedule"], fields["status"] = row[1], row[_STATUS]
    fields["error"], fields["run_id"], fields["reason"] = row[8], row[9], row[_REASON]
    fields["traceback"], fields["output"] = row[12], row[13]
    for key in ("fire_time", "started_at", "completed_at", "next_attempt_at"):
        value = fields[key]
        if value is not None and value.tzinfo is not timezone.utc:
            fields[key] = value.astimezone(timezone.utc)
    return stored


def _outcome_params(outcome: Outcome) -> Tuple[Any, ...]:
    """``outcome`` as the parameters of _FINISH_RUN (checked, texts bounded)."""
    retry = check_outcome_record(outcome)
    reason = as_text(outcome.reason)
    return (
        outcome.status,
        None if retry else to_us(outcome.completed_at, "completed_at"),  # type: ignore[arg-type]
        outcome.duration_seconds,
        as_text(outcome.error),
        as_text(outcome.run_id),
        opt_to_us(outcome.started_at, "started_at"),
        reason,
        reason,
        outcome.attempt,
        clip_text(outcome.traceback),
        clip_text(outcome.output),
        opt_to_us(outcome.next_attempt_at, "next_attempt_at") if retry else None,
        outcome.run_key,
        outcome.node_id,
    )


class _PreparedClaim:
    """A claim's values as the runs and schedules tables hold them."""

    __slots__ = ("any_active", "expected", "max_instances", "name", "new", "rows", "runs")

    def __init__(self, claim: Claim) -> None:
        name = self.name = claim.name
        self.expected = to_us(claim.expected_next, "expected_next")
        self.new = None if claim.new_next is None else to_us(claim.new_next, "new_next")
        self.runs = claim.runs
        self.rows = rows = [_run_row(name, run) for run in claim.runs]
        self.max_instances = claim.max_instances
        self.any_active = False
        for row in rows:
            if row[_STATUS] in ACTIVE_STATUSES:
                self.any_active = True
                break

    def stored(self, rows: Optional[List[Row]]) -> Optional[List[RunRecord]]:
        """The records of this claim as stored (None for a refused claim)."""
        return None if rows is None else [_as_stored(r, row) for r, row in zip(self.runs, rows)]


def _overlapping(rows: List[Row]) -> List[Row]:
    """Copies of ``rows`` with every active run turned ``skipped`` for overlap."""
    out = []
    for row in rows:
        if row[_STATUS] in ACTIVE_STATUSES:
            row = list(row)
            row[_STATUS], row[_REASON] = SKIPPED, "overlap"
        out.append(row)
    return out


def _reopen_after(exc: sqlite3.Error) -> bool:
    """True for errors a fresh connection may not repeat: a file opened read-only (since made
    writable) or an I/O error. A busy lock, a full disk or a constraint need no new connection."""
    text = str(exc).lower()
    return "readonly" in text or "disk i/o" in text


def _now_us() -> int:
    return to_us(datetime.now(timezone.utc), "now")


# About 2 s of writes at 1,000 fires/s (9-10 pages a fire): see SQLiteStore.maintain.
_WAL_RESTART_FRAMES = 16384
# The writer connection's page cache, in KiB (SQLite's default is 2,000).
_WRITER_CACHE_KIB = 16384


class SQLiteStore(Store):
    """Schedules, runs and nodes in one SQLite file (default ``.flowyml_scheduler.db``)."""

    shared = True
    # Every writer is on this host (SQLite over NFS is not supported) and stamps a change once it
    # holds the write lock, so it commits within milliseconds of its stamp.
    clock_skew_seconds = 0.5

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

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # -- connection and transactions ------------------------------------------------
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

    # -- schedules ------------------------------------------------------------------
    def declare_schedule(self, record: ScheduleRecord) -> ScheduleRecord:
        """Insert if absent; keep state on the same hash; replace the definition on another."""
        where = f"schedule {record.name!r}"
        options = to_json(record.options, f"{where}: options")
        context = to_json(record.context, f"{where}: context")
        next_fire = opt_to_us(record.next_fire, f"{where}: next_fire")
        created_given = opt_to_us(record.created_at, f"{where}: created_at")
        updated_given = opt_to_us(record.updated_at, f"{where}: updated_at")
        definition = (
            record.schedule_type,
            record.schedule_value,
            record.timezone,
            record.definition_hash,
            options,
            context,
        )
        last_fire = opt_to_us(record.last_fire, f"{where}: last_fire")
        declared_at = opt_to_us(record.declared_at, f"{where}: declared_at")

        def body(conn: sqlite3.Connection) -> ScheduleRecord:
            # Stamped once the write lock is held: a sync reading rows changed since a moment
            # never misses a write that waited for the lock longer than its clock-skew margin.
            now = _now_us()
            updated = updated_given or now
            values = (
                record.name,
                *definition,
                int(bool(record.enabled)),
                next_fire,
                last_fire,
                created_given or now,
                updated,
                record.declared_by,
                declared_at,
            )
            row = conn.execute(_SELECT_SCHEDULE, (record.name,)).fetchone()
            if row is None:
                conn.execute(_INSERT_SCHEDULE, values)
                row = values
            elif row[4] != record.definition_hash:
                conn.execute(_REDEFINE_SCHEDULE, (*definition, next_fire, updated, record.name))
                row = conn.execute(_SELECT_SCHEDULE, (record.name,)).fetchone()
            return _schedule(row)

        result = self._write(body)
        assert result is not None
        return result

    def get_schedule(self, name: str) -> Optional[ScheduleRecord]:
        """The stored schedule, or None."""
        rows = self._read(_SELECT_SCHEDULE, (name,))
        return _schedule(rows[0]) if rows else None

    def list_schedules(self) -> List[ScheduleRecord]:
        """Every stored schedule, ordered by name."""
        rows = self._read(f"SELECT {_SCHEDULE_COLUMNS} FROM schedules ORDER BY name")
        rows.reverse()
        out = []
        while rows:  # popped as decoded, so the rows and the records are not all alive at once
            out.append(_schedule(rows.pop()))
        return out

    def schedule_states(self) -> Dict[str, ScheduleState]:
        """``name -> ScheduleState`` of every schedule: one SELECT of six columns, no JSON decoded."""
        return states_of(self._read(f"SELECT {', '.join(STATE_COLUMNS)} FROM schedules"))

    def changed_since(self, since: datetime) -> List[ScheduleRecord]:
        """Schedules whose row changed (declare, redefine, enable, disable) at or after ``since``."""
        rows = self._read(
            f"SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE updated_at >= ?", (to_us(since, "since"),)
        )
        return [_schedule(row) for row in rows]

    def schedule_versions(self, since: datetime) -> Dict[str, Optional[datetime]]:
        """``name -> updated_at`` of rows changed at or after ``since`` (two columns, no JSON)."""
        rows = self._read(
            "SELECT name, updated_at FROM schedules WHERE updated_at >= ?", (to_us(since, "since"),)
        )
        return {name: from_us(updated) for name, updated in rows}

    def maintain(self, quiet: Optional[Callable[[], bool]] = None) -> None:
        """Checkpoint the WAL on a connection of its own; the scheduler calls this every second.

        SQLite's automatic checkpoint runs inside whichever commit crosses its threshold, fsync
        included, and that commit may be a claim on the scheduler's hot path: once maintained, the
        store turns it off and checkpoints here instead (PASSIVE: writers go on meanwhile). Under
        continuous writes a side checkpoint never lets the WAL restart (new frames keep arriving),
        so when it has grown past ``_WAL_RESTART_FRAMES`` the tail is copied with this process's
        writers held off for one fsync, and the next write restarts the WAL. That stall waits for a
        ``quiet()`` moment (no fire that needs a claim due soon: ``wants_quiet`` asks the loop to
        claim further ahead meanwhile) unless the WAL has grown a quarter past the mark (the longer
        the WAL, the longer the stall: measured, waiting for four times the mark made it 80 ms).
        """
        if self.read_only:
            return  # nothing to checkpoint: this store writes nothing
        if self._identity is None and self._file is not None:
            self.open()
        self._check_file()  # never a checkpoint connection to a file that took the old one's place
        with self._maintenance_lock:
            try:
                if self._checkpointer is None:
                    self._checkpointer = sqlite3.connect(
                        self._file or self.path,
                        timeout=self.busy_timeout,
                        isolation_level=None,
                        check_same_thread=False,
                    )
                    with self._lock:
                        conn = self._conn or self._connect()
                        conn.execute("PRAGMA wal_autocheckpoint=0")
                        self._checkpoints_here = True
                _, frames, _ = self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                due = frames >= _WAL_RESTART_FRAMES
                now = due and (quiet is None or frames >= _WAL_RESTART_FRAMES * 5 // 4 or quiet())
                self.wants_quiet = due and not now  # the loop claims further ahead until the next look
                if now:
                    self.maintaining = True  # the loop claims nothing ahead until it is over
                    try:
                        with self._lock:
                            if self._conn is not None:
                                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    finally:
                        self.maintaining = False
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    def set_enabled(self, name: str, enabled: bool, next_fire: Optional[datetime]) -> bool:
        """Set the enabled flag and next fire; False if the schedule does not exist."""
        upcoming = opt_to_us(next_fire, "next_fire")
        return bool(
            self._write(
                lambda conn: (  # stamped with the write lock held (see declare_schedule)
                    conn.execute(
                        "UPDATE schedules SET enabled = ?, next_fire = ?, updated_at = ? WHERE name = ?",
                        (int(bool(enabled)), upcoming, _now_us(), name),
                    ).rowcount
                )
            )
        )

    def delete_schedule(self, name: str) -> bool:
        """Delete the schedule and its history; False if it did not exist."""

        def body(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM runs WHERE schedule = ?", (name,))
            return conn.execute("DELETE FROM schedules WHERE name = ?", (name,)).rowcount > 0

        return bool(self._write(body))

    def delete_all(self) -> int:
        """Delete every schedule and all history; return how many schedules were deleted."""

        def body(conn: sqlite3.Connection) -> int:
            conn.execute("DELETE FROM runs")
            return int(conn.execute("DELETE FROM schedules").rowcount)

        return self._write(body) or 0

    # -- fires ----------------------------------------------------------------------
    def claim(
        self,
        name: str,
        expected_next: datetime,
        new_next: Optional[datetime],
        runs: Sequence[RunRecord],
        max_instances: int,
    ) -> Optional[List[RunRecord]]:
        """Compare-and-set ``next_fire`` and insert ``runs`` in one transaction (see Store.claim)."""
        claim = _PreparedClaim(Claim(name, expected_next, new_next, runs, max_instances))
        return claim.stored(self._write(lambda conn: self._claim_one(conn, claim)))

    def claim_many(
        self, claims: Sequence[Claim], outcomes: Sequence[Outcome] = ()
    ) -> List[Optional[List[RunRecord]]]:
        """Write ``outcomes``, then every claim, in one BEGIN IMMEDIATE transaction (see Store).

        Every argument is checked before anything is written. The claims are judged in Python on
        the schedules' state read inside the transaction (one SELECT per 500 schedules), then
        written with one executemany for the schedules and one for the runs; only if a run collides
        with a stored one (a rewound ``next_fire``) are they redone one by one, each in a savepoint,
        so a refused claim refuses only itself.
        """
        finished = [_outcome_params(o) for o in outcomes]
        prepared = [_PreparedClaim(c) for c in claims]
        if not finished and not prepared:
            return []
        if not finished and len(prepared) == 1:
            # A lone claim needs no savepoint: refused, its whole transaction is rolled back. Two
            # statements fewer, each a moment the loop gives the interpreter up on a busy process.
            claim = prepared[0]
            rows = self._write(lambda conn: self._claim_one(conn, claim))
            return [claim.stored(rows)]

        def body(conn: sqlite3.Connection) -> List[Optional[List[Row]]]:
            if finished:
                self._finish(conn, finished)
            if len(prepared) == 1:
                return self._claim_each(conn, prepared)
            conn.execute("SAVEPOINT claims")
            try:
                stored = self._claim_group(conn, prepared)
            except sqlite3.IntegrityError:
                stored = None
            if stored is None:
                conn.execute("ROLLBACK TO claims")
                conn.execute("RELEASE claims")
                return self._claim_each(conn, prepared)
            conn.execute("RELEASE claims")
            return stored

        stored = self._write(body)
        assert stored is not None
        return [claim.stored(rows) for claim, rows in zip(prepared, stored)]

    def _claim_one(self, conn: sqlite3.Connection, claim: _PreparedClaim) -> List[Row]:
        """One claim on the database as it is (raises _Abort to refuse it): ``Store.claim``."""
        name, rows = claim.name, claim.rows
        if claim.any_active and conn.execute(_COUNT_ACTIVE, (name,)).fetchone()[0] >= claim.max_instances:
            rows = _overlapping(rows)
        last = max((row[_FIRE] for row in rows if row[_STATUS] in ACTIVE_STATUSES), default=None)
        if last is None:
            cursor = conn.execute(_ADVANCE, (claim.new, name, claim.expected))
        else:
            cursor = conn.execute(_ADVANCE_LAST, (claim.new, last, last, name, claim.expected))
        if cursor.rowcount != 1:
            raise _Abort
        try:
            if len(rows) == 1:
                conn.execute(_INSERT_RUN, rows[0])
            else:
                conn.executemany(_INSERT_RUN, rows)
        except sqlite3.IntegrityError:
            raise _Abort from None
        return rows

    def _claim_each(
        self, conn: sqlite3.Connection, claims: Sequence[_PreparedClaim]
    ) -> List[Optional[List[Row]]]:
        """The claims one by one, each in a savepoint of its own (a refusal undoes only itself)."""
        results: List[Optional[List[Row]]] = []
        for claim in claims:
            conn.execute("SAVEPOINT claim")
            try:
                results.append(self._claim_one(conn, claim))
            except _Abort:
                conn.execute("ROLLBACK TO claim")
                results.append(None)
            conn.execute("RELEASE claim")
        return results

    def _claim_group(
        self, conn: sqlite3.Connection, claims: Sequence[_PreparedClaim]
    ) -> Optional[List[Optional[List[Row]]]]:
        """The claims judged together on the state read now; None if the writes disagree with it.

        Raises IntegrityError when a run collides with a stored one (the caller redoes the claims
        one by one). Claims of one schedule are judged in order, each on the state the earlier
        ones leave, exactly as separate ``claim`` calls would be.
        """
        names = list(dict.fromkeys(c.name for c in claims))
        state: Dict[str, List[Any]] = {}  # name -> [enabled, next_fire, last_fire]
        for chunk in _chunks(names):
            for name, enabled, next_fire, last_fire in conn.execute(_states_of(len(chunk)), chunk):
                state[name] = [enabled, next_fire, last_fire]
        counting = list(dict.fromkeys(c.name for c in claims if c.any_active and c.name in state))
        active: Dict[str, int] = dict.fromkeys(counting, 0)
        for chunk in _chunks(counting):
            active.update(conn.execute(_active_counts_of(len(chunk)), chunk).fetchall())
        results: List[Optional[List[Row]]] = []
        advances: List[Tuple[Any, ...]] = []
        inserts: List[Row] = []
        fires: Set[Tuple[str, int]] = set()
        keys: Set[str] = set()
        for claim in claims:
            name, rows = claim.name, claim.rows
            current = state.get(name)
            if current is None or not current[0] or current[1] != claim.expected:
                results.append(None)
                continue
            if len(rows) == 1:  # the common case, without building sets
                fire, key = (name, rows[0][_FIRE]), rows[0][0]
                if fire in fires or key in keys:
                    results.append(None)
                    continue
                fires.add(fire)
                keys.add(key)
            elif rows:
                claim_fires = {(name, row[_FIRE]) for row in rows}
                claim_keys = {row[0] for row in rows}
                if (
                    len(claim_fires) != len(rows)
                    or len(claim_keys) != len(rows)
                    or not fires.isdisjoint(claim_fires)
                    or not keys.isdisjoint(claim_keys)
                ):
                    results.append(None)
                    continue
                fires |= claim_fires
                keys |= claim_keys
            if claim.any_active and active[name] >= claim.max_instances:
                rows = _overlapping(rows)
            last = current[2]
            if claim.any_active:
                for row in rows:
                    if row[_STATUS] in ACTIVE_STATUSES:
                        active[name] += 1
                        if last is None or row[_FIRE] > last:
                            last = row[_FIRE]
            advances.append((claim.new, last, name, claim.expected))
            current[1], current[2] = claim.new, last
            inserts.extend(rows)
            results.append(rows)
        if advances and conn.executemany(_ADVANCE_TO, advances).rowcount != len(advances):
            return None
        if inserts:
            conn.executemany(_INSERT_RUN, inserts)
        return results

    def start_run(self, run_key: str, started_at: datetime) -> bool:
        """Mark a queued (or running) run running; False if it is no longer active."""
        params = (to_us(started_at, "started_at"), run_key)
        return bool(self._write(lambda conn: conn.execute(_START_RUN, params).rowcount))

    def finish_run(
        self,
        run_key: str,
        status: str,
        completed_at: datetime,
        duration_seconds: Optional[float],
        error: Optional[str] = None,
        run_id: Optional[str] = None,
        started_at: Optional[datetime] = None,
        reason: Optional[str] = None,
    ) -> bool:
        """Record a run's outcome; False if the run is no longer active (e.g. already lost)."""
        check_final(status)
        params = (
            status,
            to_us(completed_at, "completed_at"),
            duration_seconds,
            as_text(error),
            as_text(run_id),
            opt_to_us(started_at, "started_at"),
            as_text(reason),
            run_key,
        )
        return bool(self._write(lambda conn: conn.execute(_FINISH_ONE, params).rowcount))

    def finish_runs(self, outcomes: Sequence[Outcome]) -> List[bool]:
        """Record many outcomes in one BEGIN IMMEDIATE transaction (see Store.finish_runs)."""
        finished = [_outcome_params(o) for o in outcomes]
        if not finished:
            return []
        return self._write(lambda conn: self._finish(conn, finished)) or []

    def _finish(self, conn: sqlite3.Connection, finished: Sequence[Tuple[Any, ...]]) -> List[bool]:
        """Apply _FINISH_RUN to each outcome, in order; which ones took.

        All at once (one executemany) when every one takes, as they nearly always do; when the count
        says some were refused, the batch is undone and redone one by one to learn which.
        """
        if len(finished) == 1:
            return [conn.execute(_FINISH_RUN, finished[0]).rowcount == 1]
        conn.execute("SAVEPOINT outcomes")
        if conn.executemany(_FINISH_RUN, finished).rowcount == len(finished):
            conn.execute("RELEASE outcomes")
            return [True] * len(finished)
        conn.execute("ROLLBACK TO outcomes")
        conn.execute("RELEASE outcomes")
        return [conn.execute(_FINISH_RUN, params).rowcount == 1 for params in finished]

    def history(self, name: str, limit: int = 50) -> List[RunRecord]:
        """Runs of ``name``, newest fire first, at most ``limit``."""
        sql = f"SELECT {_RUN_COLUMNS} FROM runs WHERE schedule = ? ORDER BY fire_time DESC LIMIT ?"
        return [_run(row) for row in self._read(sql, (name, max(limit, 0)))]

    def run_at(self, name: str, fire_time: datetime) -> Optional[RunRecord]:
        """The run of ``name`` for ``fire_time``, if any (see Store.run_at)."""
        sql = f"SELECT {_RUN_COLUMNS} FROM runs WHERE schedule = ? AND fire_time = ?"
        rows = self._read(sql, (name, to_us(fire_time, "fire_time")))
        return _run(rows[0]) if rows else None

    def prune_runs(
        self, older_than: Optional[datetime], keep_last: Optional[int], *, limit: Optional[int] = None
    ) -> int:
        """Delete old finished runs, keeping each schedule's newest (see Store.prune_runs).

        Per schedule: the bounds are read without the write lock, then each BEGIN IMMEDIATE
        transaction deletes at most PRUNE_BATCH_ROWS rows below the newest fire it sees.
        """
        check_prune(older_than, keep_last, limit)
        if older_than is None and keep_last is None:
            return 0
        cutoff = _NO_CUT if older_than is None else to_us(older_than, "older_than")
        deleted = 0
        for (name,) in self._read("SELECT name FROM schedules ORDER BY name"):
            if limit is not None and deleted >= limit:
                break
            beyond = _NO_CUT
            if keep_last is not None:
                found = self._read(_KEEP_FROM, (name, keep_last))  # the newest run not kept
                beyond = found[0][0] + 1 if found else _NO_CUT
            upper = max(cutoff, beyond)
            if upper == _NO_CUT or not self._read(_ANY_PRUNABLE, (name, upper, beyond, cutoff, 1)):
                continue
            while limit is None or deleted < limit:
                batch = PRUNE_BATCH_ROWS if limit is None else min(PRUNE_BATCH_ROWS, limit - deleted)
                count = self._prune_batch(name, upper, beyond, cutoff, batch)
                deleted += count
                if count < batch:
                    break
        return deleted

    def _prune_batch(self, name: str, upper: int, beyond: int, cutoff: int, batch: int) -> int:
        def body(conn: sqlite3.Connection) -> int:
            newest = conn.execute(_NEWEST_FIRE, (name,)).fetchone()[0]
            if newest is None:
                return 0
            return int(conn.execute(_PRUNE, (name, min(upper, newest), beyond, cutoff, batch)).rowcount)

        return self._write(body) or 0

    def active_runs(self, name: Optional[str] = None) -> List[RunRecord]:
        """Runs still running or queued, ordered by schedule then fire time."""
        rows = self._read(_ACTIVE_ALL) if name is None else self._read(_ACTIVE_OF, (name,))
        return [_run(row) for row in rows]

    def stats(self, name: Optional[str] = None) -> RunStats:
        """Counts by status and the mean duration of finished runs."""
        select = "SELECT status, COUNT(*), SUM(duration_seconds), COUNT(duration_seconds) FROM runs"
        if name is None:
            rows = self._read(f"{select} GROUP BY status")
        else:
            rows = self._read(f"{select} WHERE schedule = ? GROUP BY status", (name,))
        counts: Dict[str, int] = {}
        duration_sum, duration_count = 0.0, 0
        for status, count, total, timed in rows:
            counts[status] = count
            if status in FINAL_STATUSES and timed:
                duration_sum += total
                duration_count += timed
        return make_stats(counts, duration_sum, duration_count)

    # -- nodes ----------------------------------------------------------------------
    def heartbeat(self, node: NodeRecord) -> None:
        """Insert or refresh this node's row."""
        started, beat = to_us(node.started_at, "started_at"), to_us(node.heartbeat, "heartbeat")

        def body(conn: sqlite3.Connection) -> None:
            # UPDATE then INSERT rather than an upsert clause: portable and works on old SQLite.
            updated = conn.execute(
                "UPDATE nodes SET hostname = ?, pid = ?, started_at = ?, heartbeat = ?, serves = ? "
                "WHERE node_id = ?",
                (node.hostname, node.pid, started, beat, node.serves, node.node_id),
            ).rowcount
            if not updated:
                conn.execute(
                    f"INSERT INTO nodes ({_NODE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                    (node.node_id, node.hostname, node.pid, started, beat, node.serves),
                )

        self._write(body)

    def list_nodes(self) -> List[NodeRecord]:
        """Every node row, ordered by node id."""
        rows = self._read(f"SELECT {_NODE_COLUMNS} FROM nodes ORDER BY node_id")
        return [NodeRecord(r[0], r[1], r[2], from_us(r[3]), from_us(r[4]), r[5]) for r in rows]  # type: ignore[arg-type]

    def mark_node_lost(self, node_id: str, reason: str) -> List[RunRecord]:
        """Turn the node's active runs into ``lost`` (reason given), delete its row; return them."""

        def body(conn: sqlite3.Connection) -> List[RunRecord]:
            rows = conn.execute(_ACTIVE_OF_NODE, (node_id,)).fetchall()
            conn.execute(_LOSE_OF_NODE, (LOST, reason, node_id))
            conn.execute("DELETE FROM nodes WHERE node_id = ?", (node_id,))
            return [_run(row).with_status(LOST, reason) for row in rows]

        return self._write(body) or []

    def remove_node(self, node_id: str) -> None:
        """Delete the node row (clean shutdown, after its runs finished)."""
        self._write(lambda conn: conn.execute("DELETE FROM nodes WHERE node_id = ?", (node_id,)))

    def expired_nodes(self, timeout_seconds: float, now: datetime) -> List[NodeRecord]:
        """Nodes whose heartbeat is more than ``timeout_seconds`` before ``now`` (one host, one clock)."""
        bound = to_us(now, "now") - timeout_seconds * 1_000_000
        sql = f"SELECT {_NODE_COLUMNS} FROM nodes WHERE heartbeat < ? ORDER BY node_id"
        rows = self._read(sql, (bound,))
        return [NodeRecord(r[0], r[1], r[2], from_us(r[3]), from_us(r[4]), r[5]) for r in rows]  # type: ignore[arg-type]

    def mark_declared(self, node_id: str, names: Sequence[str]) -> None:
        """Record that ``node_id`` declared the schedules ``names``, now; unknown names are ignored."""
        if not names:
            return
        now = _now_us()
        sql = "UPDATE schedules SET declared_by = ?, declared_at = ? WHERE name "
        if _has_json_each():  # one statement for 100,000 names: SQLite loops, not Python
            listed = json.dumps(list(names))
            self._write(lambda conn: conn.execute(sql + _IN_JSON_LIST, (node_id, now, listed)))
            return
        params = [(node_id, now, name) for name in names]
        self._write(lambda conn: conn.executemany(sql + "= ?", params))
