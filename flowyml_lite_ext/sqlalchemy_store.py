"""The SQLAlchemy store: the store contract on PostgreSQL or SQLite, by URL.

Extras: ``pip install 'flowyml-lite[postgres]'`` (SQLAlchemy 2 and psycopg 3) or
``'flowyml-lite[sqlalchemy]'`` (SQLite only). SQLAlchemy Core, no ORM. The tables, the column
types and the migrations are the ones in ``flowyml_lite/stores/schema.py``, run as they are, so a
SQLite file written by ``SQLiteStore`` opens here and the other way round.

How a claim is made atomic (DESIGN §4):
- PostgreSQL (READ COMMITTED): ``SELECT ... FOR UPDATE`` of the schedule row serializes every claim
  of that schedule across processes and hosts; under that row lock the compare-and-set of
  ``next_fire``, the count of active runs and the inserts are consistent. A UNIQUE violation on
  (schedule, fire_time) rolls the whole transaction back.
- SQLite: every write transaction starts with ``BEGIN IMMEDIATE`` (the pysqlite recipe of the
  SQLAlchemy documentation: the driver's own BEGIN is turned off and an event emits ours), in WAL
  mode, so one writer at a time holds the database, as in ``SQLiteStore``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import weakref
from contextlib import nullcontext
from dataclasses import replace
from datetime import datetime, timezone
from functools import partial
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ContextManager,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

import sqlalchemy as sa  # ImportError here: the registry names the extra to install
from sqlalchemy import event
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from flowyml_lite.errors import ConfigurationError, PluginNotInstalledError, StoreError
from flowyml_lite.stores.base import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    LOST,
    SKIPPED,
    NodeRecord,
    RunRecord,
    RunStats,
    ScheduleRecord,
    ScheduleState,
    Store,
)
from flowyml_lite.stores.schema import (
    ACTIVE_CONDITION,
    PRUNE_BATCH_ROWS,
    VERSION_TABLE_DDL,
    check_final,
    check_prune,
    check_run,
    from_json,
    from_us,
    make_stats,
    migrations_after,
    opt_to_us,
    to_json,
    to_us,
)

if TYPE_CHECKING:
    from flowyml_lite.core.scheduler_config import SchedulerConfig

__all__ = ["SQLAlchemyStore"]

logger = logging.getLogger("flowyml_lite.stores.sqlalchemy")

T = TypeVar("T")

# The statements' view of the tables that schema.py creates (its DDL is the single definition;
# tests/ext/test_sqlalchemy_store.py checks that the two agree).
_META = sa.MetaData()
SCHEDULES = sa.Table(
    "schedules",
    _META,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("timezone", sa.Text, nullable=False),
    sa.Column("definition_hash", sa.Text, nullable=False),
    sa.Column("options", sa.Text, nullable=False),
    sa.Column("context", sa.Text, nullable=False),
    sa.Column("enabled", sa.Integer, nullable=False),
    sa.Column("next_fire", sa.BigInteger),
    sa.Column("last_fire", sa.BigInteger),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)
RUNS = sa.Table(
    "runs",
    _META,
    sa.Column("run_key", sa.Text, primary_key=True),
    sa.Column("schedule", sa.Text, nullable=False),
    sa.Column("fire_time", sa.BigInteger, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("node_id", sa.Text, nullable=False),
    sa.Column("started_at", sa.BigInteger),
    sa.Column("completed_at", sa.BigInteger),
    sa.Column("duration_seconds", sa.Float),
    sa.Column("error", sa.Text),
    sa.Column("run_id", sa.Text),
    sa.Column("reason", sa.Text),
)
NODES = sa.Table(
    "nodes",
    _META,
    sa.Column("node_id", sa.Text, primary_key=True),
    sa.Column("hostname", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.BigInteger, nullable=False),
    sa.Column("heartbeat", sa.BigInteger, nullable=False),
)
SCHEMA_VERSION_TABLE = sa.Table(
    "schema_version",
    _META,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
)

# Spelled as in the partial indexes' definitions, with literal values, so the planners use them.
_ACTIVE = sa.text(ACTIVE_CONDITION)
_DIALECTS = ("postgresql", "sqlite")
# Lower case only: search_path folds an unquoted name to lower case, CREATE SCHEMA "..." would not.
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Any constant: the key of the advisory lock that serializes concurrent migrations on PostgreSQL.
_MIGRATION_LOCK_KEY = 0x666C6F77796D6C  # "flowyml"
_READ_OPTION = "flowyml_lite_read"
_TEXT_ARRAY = pg_dialect.ARRAY(sa.Text)

# Stores of this process: a forked child must not use the pooled connections it inherited.
_STORES: weakref.WeakSet[SQLAlchemyStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_STORES):
        store._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Abort(Exception):
    """Roll the current transaction back and return None (a lost claim)."""


def _now_us() -> int:
    return to_us(datetime.now(timezone.utc), "now")


def _schedule(row: Mapping[Any, Any]) -> ScheduleRecord:
    return ScheduleRecord(
        name=row["name"],
        schedule_type=row["type"],
        schedule_value=row["value"],
        timezone=row["timezone"],
        definition_hash=row["definition_hash"],
        options=from_json(row["options"]),
        context=from_json(row["context"]),
        enabled=bool(row["enabled"]),
        next_fire=from_us(row["next_fire"]),
        last_fire=from_us(row["last_fire"]),
        created_at=from_us(row["created_at"]),
        updated_at=from_us(row["updated_at"]),
    )


def _run(row: Mapping[Any, Any]) -> RunRecord:
    return RunRecord(
        run_key=row["run_key"],
        schedule=row["schedule"],
        fire_time=from_us(row["fire_time"]),  # type: ignore[arg-type]  # NOT NULL column
        status=row["status"],
        node_id=row["node_id"],
        started_at=from_us(row["started_at"]),
        completed_at=from_us(row["completed_at"]),
        duration_seconds=row["duration_seconds"],
        error=row["error"],
        run_id=row["run_id"],
        reason=row["reason"],
    )


class SQLAlchemyStore(Store):
    """Schedules, runs and nodes in PostgreSQL or SQLite, shared by every process that opens the URL.

    ``url`` is an SQLAlchemy URL: ``postgresql+psycopg://user:password@host:5432/db`` or
    ``sqlite:///path/to/file.db``. ``schema`` (PostgreSQL) keeps the tables in that schema,
    created if missing. ``engine_options`` are passed to ``sqlalchemy.create_engine``.
    """

    shared = True

    def __init__(
        self,
        url: Union[str, URL] = "sqlite:///.flowyml_scheduler.db",
        *,
        schema: Optional[str] = None,
        busy_timeout: float = 30.0,
        engine_options: Optional[Dict[str, Any]] = None,
    ) -> None:
        try:
            parsed = sa.make_url(url)
        except ArgumentError as exc:
            raise ConfigurationError(
                f"store URL {url!r} is not an SQLAlchemy URL ({exc}); "
                "e.g. postgresql+psycopg://user:password@host:5432/db or sqlite:///flowyml.db"
            ) from exc
        self.url = parsed
        self.dialect = parsed.get_backend_name()
        self.schema = schema
        self.busy_timeout = busy_timeout
        if self.dialect not in _DIALECTS:
            raise ConfigurationError(
                f"store URL {self._shown_url}: the sqlalchemy store supports PostgreSQL and SQLite, "
                f"not {self.dialect!r}"
            )
        if schema is not None and (self.dialect != "postgresql" or not _SCHEMA_NAME.match(schema)):
            raise ConfigurationError(
                f"schema={schema!r}: a schema is a lower-case PostgreSQL identifier (a-z, 0-9, _), "
                "and only PostgreSQL URLs take one"
            )
        self._engine_options = dict(engine_options or {})
        self._engine = self._create_engine()
        # SQLite has one writer at a time anyway: threads of this process queue here (microseconds)
        # rather than in SQLite's busy handler (millisecond sleeps). PostgreSQL needs no such lock.
        self._serial: Optional[threading.Lock] = threading.Lock() if self.dialect == "sqlite" else None
        self._opened = False
        self._open_lock = threading.Lock()
        _STORES.add(self)

    @classmethod
    def from_config(cls, config: SchedulerConfig) -> SQLAlchemyStore:
        """The store of ``config.store_url``, or else of the SQLite file ``config.db_path``."""
        if config.store_url:
            return cls(config.store_url)
        if config.store == "postgresql":
            raise ConfigurationError(
                "SchedulerConfig.store='postgresql' needs a database URL: set store_url (or the "
                "FLOWYML_SCHEDULER_STORE_URL environment variable), "
                "e.g. postgresql+psycopg://user:password@host:5432/flowyml"
            )
        return cls(f"sqlite:///{config.db_path}")

    @property
    def _shown_url(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"SQLAlchemyStore({self._shown_url!r})"

    # -- engine, schema and transactions --------------------------------------------
    def _create_engine(self) -> Engine:
        options = dict(self._engine_options)
        connect_args: Dict[str, Any] = dict(options.pop("connect_args", {}))
        if self.dialect == "sqlite":
            connect_args.setdefault("timeout", self.busy_timeout)  # sqlite3_busy_timeout
            connect_args.setdefault("check_same_thread", False)
            if self.url.database in (None, "", ":memory:"):
                # One shared connection, or every pooled connection would see its own empty database.
                options.setdefault("poolclass", StaticPool)
        else:
            options.setdefault("pool_pre_ping", True)  # survive a server restart between calls
            if self.schema is not None:
                search_path = f"-c search_path={self.schema}"
                existing = connect_args.get("options")
                connect_args["options"] = f"{existing} {search_path}" if existing else search_path
        try:
            engine = sa.create_engine(self.url, connect_args=connect_args, **options)
        except (ImportError, NoSuchModuleError) as exc:
            extra = "postgres" if self.dialect == "postgresql" else "sqlalchemy"
            raise PluginNotInstalledError(
                f"store URL {self._shown_url}: the database driver is not installed ({exc}); "
                f"run `pip install 'flowyml-lite[{extra}]'`"
            ) from exc
        except (ArgumentError, TypeError) as exc:
            raise ConfigurationError(f"store URL {self._shown_url}: {exc}") from exc
        if self.dialect == "sqlite":
            event.listen(engine, "connect", self._on_sqlite_connect)
            event.listen(engine, "begin", self._on_sqlite_begin)
        return engine

    def _on_sqlite_connect(self, dbapi_connection: Any, connection_record: Any) -> None:
        # The SQLAlchemy pysqlite recipe: stop the driver from emitting BEGIN (and from committing
        # before DDL); _on_sqlite_begin emits the BEGIN we want.
        dbapi_connection.isolation_level = None
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                cursor = dbapi_connection.execute("PRAGMA journal_mode=WAL")
                mode = cursor.fetchone()[0]
                break
            except Exception as exc:  # sqlite3.OperationalError: "database is locked"
                # Switching a new file to WAL needs an exclusive lock and fails at once, without the
                # busy handler, while another process holds one: retry until the timeout.
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        if str(mode).lower() not in ("wal", "memory"):
            logger.warning(
                "sqlalchemy store %s: journal_mode is %s, not WAL (file system?)", self._shown_url, mode
            )
        # As in SQLiteStore: a committed transaction survives kill -9; see stores/sqlite.py.
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")
        dbapi_connection.execute("PRAGMA foreign_keys=ON")

    @staticmethod
    def _on_sqlite_begin(conn: Connection) -> None:
        # Reads take no write lock (plain deferred BEGIN); writes take it at once, so the
        # compare-and-set of a claim cannot interleave with another process's.
        read = conn.get_execution_options().get(_READ_OPTION, False)
        conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")

    def _after_fork(self) -> None:
        # The SQLAlchemy recipe for fork: drop the pool without closing the parent's connections.
        self._engine.dispose(close=False)
        self._serial = threading.Lock() if self.dialect == "sqlite" else None
        self._open_lock = threading.Lock()

    def _error(self, exc: BaseException) -> StoreError:
        detail = getattr(exc, "orig", None) or exc
        hint = ""
        if isinstance(exc, sa.exc.OperationalError) and self.dialect == "postgresql":
            hint = "; check the URL (FLOWYML_SCHEDULER_STORE_URL) and that PostgreSQL runs and is reachable"
        return StoreError(f"sqlalchemy store {self._shown_url}: {str(detail).strip()}{hint}")

    def _serialized(self) -> ContextManager[Any]:
        return self._serial if self._serial is not None else nullcontext()

    def _stored_version(self, conn: Connection) -> Optional[int]:
        if not sa.inspect(conn).has_table(SCHEMA_VERSION_TABLE.name):
            return None
        stored = conn.execute(
            sa.select(SCHEMA_VERSION_TABLE.c.version).where(SCHEMA_VERSION_TABLE.c.id == 1)
        ).scalar()
        return None if stored is None else int(stored)

    def _migrate(self) -> None:
        with self._serialized():
            # A database already at this version needs no DDL, so a role with only SELECT, INSERT,
            # UPDATE and DELETE can use it (PostgreSQL checks CREATE even for CREATE ... IF NOT EXISTS).
            with self._engine.connect() as conn:
                conn = conn.execution_options(**{_READ_OPTION: True})
                with conn.begin():
                    version = self._stored_version(conn)
            if version is not None and not migrations_after(version, self._shown_url):
                return
            self._create_or_upgrade()

    def _create_or_upgrade(self) -> None:
        with self._engine.begin() as conn:
            if self.dialect == "postgresql":
                # Concurrent CREATE TABLE IF NOT EXISTS can still collide in PostgreSQL's catalogs:
                # the first process migrates, the others wait here and then find it done.
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK_KEY)))
                if self.schema is not None:
                    conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            conn.exec_driver_sql(VERSION_TABLE_DDL)
            stored = conn.execute(
                sa.select(SCHEMA_VERSION_TABLE.c.version).where(SCHEMA_VERSION_TABLE.c.id == 1)
            ).scalar()
            version = 0 if stored is None else int(stored)
            for target, statements in migrations_after(version, self._shown_url):
                for statement in statements:
                    conn.exec_driver_sql(statement)
                if version == 0:
                    conn.execute(sa.insert(SCHEMA_VERSION_TABLE).values(id=1, version=target))
                else:
                    conn.execute(
                        sa.update(SCHEMA_VERSION_TABLE)
                        .where(SCHEMA_VERSION_TABLE.c.id == 1)
                        .values(version=target)
                    )
                logger.info("sqlalchemy store %s: schema migrated to version %d", self._shown_url, target)
                version = target

    def _ensure_open(self) -> None:
        if self._opened:
            return
        with self._open_lock:
            if self._opened:
                return
            try:
                self._migrate()
            except SQLAlchemyError as exc:
                raise self._error(exc) from exc
            self._opened = True

    def open(self) -> None:
        """Connect, create or migrate the schema. Idempotent."""
        self._ensure_open()

    def close(self) -> None:
        """Close the pooled connections; any later call opens the store again."""
        with self._open_lock:
            self._engine.dispose()
            self._opened = False

    def _read(self, body: Callable[[Connection], T]) -> T:
        self._ensure_open()
        try:
            with self._serialized(), self._engine.connect() as conn:
                conn = conn.execution_options(**{_READ_OPTION: True})
                with conn.begin():
                    return body(conn)
        except SQLAlchemyError as exc:
            raise self._error(exc) from exc

    def _write(self, body: Callable[[Connection], T]) -> Optional[T]:
        """Run ``body`` in one write transaction; None if it raised _Abort (rolled back)."""
        self._ensure_open()
        try:
            with self._serialized(), self._engine.begin() as conn:
                return body(conn)
        except _Abort:
            return None
        except SQLAlchemyError as exc:
            raise self._error(exc) from exc

    def _insert_if_absent(self, table: sa.Table, key: str) -> Any:
        # ON CONFLICT DO NOTHING on both engines: SQLite's INSERT OR IGNORE would also drop rows
        # that break a NOT NULL constraint, silently.
        module: Any = pg_dialect if self.dialect == "postgresql" else sqlite_dialect
        return module.insert(table).on_conflict_do_nothing(index_elements=[key])

    # -- schedules ------------------------------------------------------------------
    def declare_schedule(self, record: ScheduleRecord) -> ScheduleRecord:
        """Insert if absent; keep state on the same hash; replace the definition on another."""
        where = f"schedule {record.name!r}"
        now = _now_us()
        definition = {
            "type": record.schedule_type,
            "value": record.schedule_value,
            "timezone": record.timezone,
            "definition_hash": record.definition_hash,
            "options": to_json(record.options, f"{where}: options"),
            "context": to_json(record.context, f"{where}: context"),
        }
        next_fire = opt_to_us(record.next_fire, f"{where}: next_fire")
        updated = opt_to_us(record.updated_at, f"{where}: updated_at") or now
        values = {
            "name": record.name,
            **definition,
            "enabled": int(bool(record.enabled)),
            "next_fire": next_fire,
            "last_fire": opt_to_us(record.last_fire, f"{where}: last_fire"),
            "created_at": opt_to_us(record.created_at, f"{where}: created_at") or now,
            "updated_at": updated,
        }
        select_row = sa.select(SCHEDULES).where(SCHEDULES.c.name == record.name)

        def body(conn: Connection) -> ScheduleRecord:
            # Insert-if-absent, then read: concurrent first declarations all end on the winner's row.
            inserted = conn.execute(self._insert_if_absent(SCHEDULES, "name").values(**values)).rowcount
            if inserted == 1:
                return _schedule(values)
            row = conn.execute(select_row.with_for_update()).mappings().one()
            if row["definition_hash"] == record.definition_hash:
                return _schedule(row)
            conn.execute(
                sa.update(SCHEDULES)
                .where(SCHEDULES.c.name == record.name)
                .values(**definition, next_fire=next_fire, updated_at=updated)
            )
            return _schedule(conn.execute(select_row).mappings().one())

        result = self._write(body)
        assert result is not None
        return result

    def get_schedule(self, name: str) -> Optional[ScheduleRecord]:
        """The stored schedule, or None."""
        query = sa.select(SCHEDULES).where(SCHEDULES.c.name == name)
        row = self._read(lambda conn: conn.execute(query).mappings().first())
        return None if row is None else _schedule(row)

    def list_schedules(self) -> List[ScheduleRecord]:
        """Every stored schedule, ordered by name."""
        query = sa.select(SCHEDULES).order_by(SCHEDULES.c.name)
        return [_schedule(row) for row in self._read(lambda conn: conn.execute(query).mappings().all())]

    def schedule_states(self) -> Dict[str, ScheduleState]:
        """``name -> ScheduleState`` of every schedule: one SELECT of six columns, no JSON decoded."""
        c = SCHEDULES.c
        query = sa.select(
            c.name, c.definition_hash, c.enabled, c.next_fire, c.last_fire, c.created_at, c.updated_at
        )
        rows = self._read(lambda conn: conn.execute(query).all())
        return {
            row[0]: ScheduleState(
                row[1], bool(row[2]), from_us(row[3]), from_us(row[4]), from_us(row[5]), from_us(row[6])
            )
            for row in rows
        }

    def set_enabled(self, name: str, enabled: bool, next_fire: Optional[datetime]) -> bool:
        """Set the enabled flag and next fire; False if the schedule does not exist."""
        statement = (
            sa.update(SCHEDULES)
            .where(SCHEDULES.c.name == name)
            .values(
                enabled=int(bool(enabled)), next_fire=opt_to_us(next_fire, "next_fire"), updated_at=_now_us()
            )
        )
        return bool(self._write(lambda conn: conn.execute(statement).rowcount))

    def delete_schedule(self, name: str) -> bool:
        """Delete the schedule and its history; False if it did not exist."""

        def body(conn: Connection) -> bool:
            conn.execute(sa.delete(RUNS).where(RUNS.c.schedule == name))
            return conn.execute(sa.delete(SCHEDULES).where(SCHEDULES.c.name == name)).rowcount > 0

        return bool(self._write(body))

    def delete_all(self) -> int:
        """Delete every schedule and all history; return how many schedules were deleted."""

        def body(conn: Connection) -> int:
            conn.execute(sa.delete(RUNS))
            return int(conn.execute(sa.delete(SCHEDULES)).rowcount)

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
        expected = to_us(expected_next, "expected_next")
        new = opt_to_us(new_next, "new_next")
        rows: List[Dict[str, Any]] = []
        for run in runs:
            check_run(name, run)
            rows.append(
                {
                    "run_key": run.run_key,
                    "schedule": name,
                    "fire_time": to_us(run.fire_time, "fire_time"),
                    "status": run.status,
                    "node_id": run.node_id,
                    "started_at": opt_to_us(run.started_at, "started_at"),
                    "completed_at": opt_to_us(run.completed_at, "completed_at"),
                    "duration_seconds": run.duration_seconds,
                    "error": run.error,
                    "run_id": run.run_id,
                    "reason": run.reason,
                }
            )
        any_active = any(row["status"] in ACTIVE_STATUSES for row in rows)
        lock_row = (
            sa.select(SCHEDULES.c.enabled, SCHEDULES.c.next_fire)
            .where(SCHEDULES.c.name == name)
            .with_for_update()
        )
        count_active = sa.select(sa.func.count()).select_from(RUNS).where(RUNS.c.schedule == name, _ACTIVE)

        def body(conn: Connection) -> List[Dict[str, Any]]:
            # The row lock orders every claim of this schedule; the rest runs under it.
            current = conn.execute(lock_row).first()
            if current is None or not current.enabled or current.next_fire != expected:
                raise _Abort
            if any_active and conn.execute(count_active).scalar_one() >= max_instances:
                for row in rows:
                    if row["status"] in ACTIVE_STATUSES:
                        row["status"], row["reason"] = SKIPPED, "overlap"
            if rows:
                try:
                    conn.execute(sa.insert(RUNS), rows)
                except IntegrityError:
                    raise _Abort from None
            last = max((row["fire_time"] for row in rows if row["status"] in ACTIVE_STATUSES), default=None)
            advance: Dict[str, Any] = {"next_fire": new}
            if last is not None:
                advance["last_fire"] = sa.case(
                    (sa.or_(SCHEDULES.c.last_fire.is_(None), SCHEDULES.c.last_fire < last), last),
                    else_=SCHEDULES.c.last_fire,
                )
            conn.execute(sa.update(SCHEDULES).where(SCHEDULES.c.name == name).values(**advance))
            return rows

        stored = self._write(body)
        return None if stored is None else [_run(row) for row in stored]

    def start_run(self, run_key: str, started_at: datetime) -> bool:
        """Mark a queued (or running) run running; False if it is no longer active."""
        statement = (
            sa.update(RUNS)
            .where(RUNS.c.run_key == run_key, _ACTIVE)
            .values(status="running", started_at=to_us(started_at, "started_at"))
        )
        return bool(self._write(lambda conn: conn.execute(statement).rowcount))

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
        values: Dict[str, Any] = {
            "status": status,
            "completed_at": to_us(completed_at, "completed_at"),
            "duration_seconds": duration_seconds,
            "error": error,
            "run_id": run_id,
        }
        if started_at is not None:
            values["started_at"] = to_us(started_at, "started_at")
        if reason is not None:
            values["reason"] = reason
        statement = sa.update(RUNS).where(RUNS.c.run_key == run_key, _ACTIVE).values(**values)
        return bool(self._write(lambda conn: conn.execute(statement).rowcount))

    def history(self, name: str, limit: int = 50) -> List[RunRecord]:
        """Runs of ``name``, newest fire first, at most ``limit``."""
        query = (
            sa.select(RUNS)
            .where(RUNS.c.schedule == name)
            .order_by(RUNS.c.fire_time.desc())
            .limit(max(limit, 0))
        )
        return [_run(row) for row in self._read(lambda conn: conn.execute(query).mappings().all())]

    def prune_runs(
        self, older_than: Optional[datetime], keep_last: Optional[int], *, limit: Optional[int] = None
    ) -> int:
        """Delete old finished runs, keeping each schedule's newest (see Store.prune_runs).

        Per schedule: the bounds are read first, then each write transaction deletes at most
        PRUNE_BATCH_ROWS rows below the newest fire it sees, walking the (schedule, fire_time)
        index. On PostgreSQL, rows another transaction holds are skipped, not waited for.
        """
        check_prune(older_than, keep_last, limit)
        if older_than is None and keep_last is None:
            return 0
        cutoff = None if older_than is None else to_us(older_than, "older_than")
        list_names = sa.select(SCHEDULES.c.name).order_by(SCHEDULES.c.name)
        names: Sequence[str] = self._read(lambda conn: conn.execute(list_names).scalars().all())
        deleted = 0
        for name in names:
            if limit is not None and deleted >= limit:
                break
            prunable = self._read(partial(self._prunable, name=name, cutoff=cutoff, keep_last=keep_last))
            if prunable is None:
                continue
            while limit is None or deleted < limit:
                batch = PRUNE_BATCH_ROWS if limit is None else min(PRUNE_BATCH_ROWS, limit - deleted)
                count = self._prune_batch(name, prunable, batch)
                deleted += count
                if count < batch:
                    break
        return deleted

    def _prunable(
        self, conn: Connection, name: str, cutoff: Optional[int], keep_last: Optional[int]
    ) -> Optional[Tuple[int, Any]]:
        """(upper bound, condition) of the runs of ``name`` to prune, or None if there are none."""
        old: List[Any] = []
        if keep_last is not None:
            not_kept = conn.execute(
                sa.select(RUNS.c.fire_time)
                .where(RUNS.c.schedule == name)
                .order_by(RUNS.c.fire_time.desc())
                .limit(1)
                .offset(keep_last)
            ).scalar()
            if not_kept is not None:
                old.append((int(not_kept) + 1, RUNS.c.fire_time <= int(not_kept)))
        if cutoff is not None:
            finished = sa.or_(RUNS.c.completed_at.is_(None), RUNS.c.completed_at < cutoff)
            old.append((cutoff, sa.and_(RUNS.c.fire_time < cutoff, finished)))
        if not old:
            return None
        upper = max(bound for bound, _ in old)
        condition = sa.and_(RUNS.c.status.in_(FINAL_STATUSES), sa.or_(*(c for _, c in old)))
        probe = (
            sa.select(RUNS.c.fire_time)
            .where(RUNS.c.schedule == name, RUNS.c.fire_time < upper, condition)
            .limit(1)
        )
        return None if conn.execute(probe).first() is None else (upper, condition)

    def _prune_batch(self, name: str, prunable: Tuple[int, Any], batch: int) -> int:
        upper, condition = prunable
        newest_fire = sa.select(sa.func.max(RUNS.c.fire_time)).where(RUNS.c.schedule == name)

        def body(conn: Connection) -> int:
            newest = conn.execute(newest_fire).scalar()
            if newest is None:
                return 0
            below = sa.and_(RUNS.c.schedule == name, RUNS.c.fire_time < min(upper, int(newest)))
            doomed = sa.select(RUNS.c.run_key).where(below, condition).order_by(RUNS.c.fire_time).limit(batch)
            delete: Any
            if self.dialect == "postgresql":
                # Lock the batch first, skipping rows another pruner holds, then delete it by key.
                # Not as an IN subquery: PostgreSQL may rescan that per row, and a rescan skips the
                # rows this DELETE already removed and returns the next ones (more than ``batch``).
                keys: Sequence[str] = conn.execute(doomed.with_for_update(skip_locked=True)).scalars().all()
                if not keys:
                    return 0
                keyed = sa.bindparam("keys", list(keys), type_=_TEXT_ARRAY)
                delete = sa.delete(RUNS).where(RUNS.c.run_key == sa.any_(keyed))
            else:
                # ``below`` outside too, so SQLite reads the rows through the (schedule, fire_time) index.
                delete = sa.delete(RUNS).where(below, RUNS.c.run_key.in_(doomed))
            return int(conn.execute(delete).rowcount)

        return self._write(body) or 0

    def active_runs(self, name: Optional[str] = None) -> List[RunRecord]:
        """Runs still running or queued, ordered by schedule then fire time."""
        query: Any
        if self.dialect == "sqlite":
            # As in SQLiteStore: without INDEXED BY, SQLite walks the whole history in the UNIQUE
            # (schedule, fire_time) index order instead of the small partial index of active runs.
            where = ACTIVE_CONDITION if name is None else f"schedule = :name AND {ACTIVE_CONDITION}"
            columns = ", ".join(column.name for column in RUNS.c)
            query = sa.text(
                f"SELECT {columns} FROM runs INDEXED BY runs_schedule_status "
                f"WHERE {where} ORDER BY schedule, fire_time"
            )
            if name is not None:
                query = query.bindparams(name=name)
        else:
            query = sa.select(RUNS).where(_ACTIVE).order_by(RUNS.c.schedule, RUNS.c.fire_time)
            if name is not None:
                query = query.where(RUNS.c.schedule == name)
        return [_run(row) for row in self._read(lambda conn: conn.execute(query).mappings().all())]

    def stats(self, name: Optional[str] = None) -> RunStats:
        """Counts by status and the mean duration of finished runs."""
        query = sa.select(
            RUNS.c.status,
            sa.func.count(),
            sa.func.sum(RUNS.c.duration_seconds),
            sa.func.count(RUNS.c.duration_seconds),
        ).group_by(RUNS.c.status)
        if name is not None:
            query = query.where(RUNS.c.schedule == name)
        counts: Dict[str, int] = {}
        duration_sum, duration_count = 0.0, 0
        rows: Sequence[Any] = self._read(lambda conn: conn.execute(query).all())
        for status, count, total, timed in rows:
            counts[str(status)] = int(count)
            if status in FINAL_STATUSES and timed:
                duration_sum += float(total)
                duration_count += int(timed)
        return make_stats(counts, duration_sum, duration_count)

    # -- nodes ----------------------------------------------------------------------
    def heartbeat(self, node: NodeRecord) -> None:
        """Insert or refresh this node's row."""
        values = {
            "hostname": node.hostname,
            "pid": node.pid,
            "started_at": to_us(node.started_at, "started_at"),
            "heartbeat": to_us(node.heartbeat, "heartbeat"),
        }

        def body(conn: Connection) -> None:
            statement = sa.update(NODES).where(NODES.c.node_id == node.node_id).values(**values)
            if not conn.execute(statement).rowcount:
                conn.execute(sa.insert(NODES).values(node_id=node.node_id, **values))

        self._write(body)

    def list_nodes(self) -> List[NodeRecord]:
        """Every node row, ordered by node id."""
        query = sa.select(NODES).order_by(NODES.c.node_id)
        rows = self._read(lambda conn: conn.execute(query).mappings().all())
        return [
            NodeRecord(
                r["node_id"],
                r["hostname"],
                r["pid"],
                from_us(r["started_at"]),  # type: ignore[arg-type]  # NOT NULL column
                from_us(r["heartbeat"]),  # type: ignore[arg-type]
            )
            for r in rows
        ]

    def mark_node_lost(self, node_id: str, reason: str) -> List[RunRecord]:
        """Turn the node's active runs into ``lost`` (reason given), delete its row; return them."""
        mine = sa.and_(RUNS.c.node_id == node_id, _ACTIVE)

        def body(conn: Connection) -> List[RunRecord]:
            query = sa.select(RUNS).where(mine).order_by(RUNS.c.schedule, RUNS.c.fire_time).with_for_update()
            rows = conn.execute(query).mappings().all()
            conn.execute(sa.update(RUNS).where(mine).values(status=LOST, reason=reason))
            conn.execute(sa.delete(NODES).where(NODES.c.node_id == node_id))
            return [replace(_run(row), status=LOST, reason=reason) for row in rows]

        return self._write(body) or []

    def remove_node(self, node_id: str) -> None:
        """Delete the node row (clean shutdown, after its runs finished)."""
        self._write(lambda conn: conn.execute(sa.delete(NODES).where(NODES.c.node_id == node_id)))
