"""The SQLAlchemy store: the store contract on PostgreSQL or SQLite, by URL.

Extras: ``pip install 'flowyml-lite[postgres]'`` (SQLAlchemy 2 and psycopg 3) or
``'flowyml-lite[sqlalchemy]'`` (SQLite only). SQLAlchemy Core, no ORM. The tables, the column
types and the migrations are the ones in ``flowyml_lite/stores/schema.py``, run as they are, so a
SQLite file written by ``SQLiteStore`` opens here and the other way round.

How a claim is made atomic (DESIGN §4):
- PostgreSQL (READ COMMITTED): a group of claims, with the outcomes written before them, is one
  statement sent in autocommit (one round trip). It locks the schedule rows whose compare-and-set
  holds with ``FOR UPDATE SKIP LOCKED`` (a row another transaction holds is its claim in progress:
  refused at once, never waited for); under those locks the count of active runs and the inserts
  are consistent. A UNIQUE violation on (schedule, fire_time) fails the statement, and the group is
  redone claim by claim under savepoints, so it refuses only its own claim. Every session carries a
  ``lock_timeout``, a ``statement_timeout`` and an idle-in-transaction timeout; heartbeats,
  ``updated_at`` and liveness use the server's clock. A write whose reply was lost with its
  connection is decided by reading its run keys back.
- SQLite: every write transaction starts with ``BEGIN IMMEDIATE`` (the pysqlite recipe of the
  SQLAlchemy documentation: the driver's own BEGIN is turned off and an event emits ours), in WAL
  mode, so one writer at a time holds the database, as in ``SQLiteStore``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import weakref
from contextlib import nullcontext, suppress
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
    NamedTuple,
    Optional,
    Sequence,
    Set,
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
    MISSED,
    QUEUED,
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
from flowyml_lite.stores.schema import (
    ACTIVE_CONDITION,
    PRUNE_BATCH_ROWS,
    STATE_COLUMNS,
    VERSION_TABLE_DDL,
    check_final,
    check_outcome,
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
    sa.Column("declared_by", sa.Text),
    sa.Column("declared_at", sa.BigInteger),
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
    sa.Column("attempt", sa.Integer, nullable=False, server_default="1"),
    sa.Column("traceback", sa.Text),
    sa.Column("output", sa.Text),
    sa.Column("next_attempt_at", sa.BigInteger),
)
NODES = sa.Table(
    "nodes",
    _META,
    sa.Column("node_id", sa.Text, primary_key=True),
    sa.Column("hostname", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.BigInteger, nullable=False),
    sa.Column("heartbeat", sa.BigInteger, nullable=False),
    sa.Column("serves", sa.Text),
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
RECENT_RUNS_CHUNK = 1000  # schedules per recent_runs query
# Lower case only: search_path folds an unquoted name to lower case, CREATE SCHEMA "..." would not.
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Any constant: the key of the advisory lock that serializes concurrent migrations on PostgreSQL.
_MIGRATION_LOCK_KEY = 0x666C6F77796D6C  # "flowyml"
_READ_OPTION = "flowyml_lite_read"
_TEXT_ARRAY = pg_dialect.ARRAY(sa.Text)
# schedule_versions answers from its last answer, when unchanged, from this many rows up.
_VERSIONS_KEPT_FROM = 200
# A prune_runs call with a limit works this long at most (the rest of its pass waits for the next).
PRUNE_SECONDS_PER_CALL = 0.5
# The server's clock as integer microseconds since the epoch (PostgreSQL): heartbeats, updated_at
# and the liveness judgment all use it, so hosts whose clocks disagree never misjudge each other.
_SERVER_NOW_US: Any = sa.literal_column("CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)")

# The run columns a group claim passes (as JSON rows), with their PostgreSQL types.
_RUN_FIELDS = (
    ("run_key", "text"),
    ("fire_time", "bigint"),
    ("status", "text"),
    ("node_id", "text"),
    ("started_at", "bigint"),
    ("completed_at", "bigint"),
    ("duration_seconds", "float8"),
    ("error", "text"),
    ("run_id", "text"),
    ("reason", "text"),
    ("attempt", "int"),
    ("traceback", "text"),
    ("output", "text"),
    ("next_attempt_at", "bigint"),
)
_RUN_COLUMNS = ", ".join(column for column, _ in _RUN_FIELDS)
_ACTIVE_R = ACTIVE_CONDITION.replace("status", "r.status")

# The outcome columns a group of outcomes passes (as JSON rows), with their PostgreSQL types.
_OUTCOME_FIELDS = (
    ("run_key", "text"),
    ("status", "text"),
    ("completed_at", "bigint"),
    ("duration_seconds", "float8"),
    ("error", "text"),
    ("run_id", "text"),
    ("started_at", "bigint"),
    ("reason", "text"),
    ("attempt", "int"),
    ("traceback", "text"),
    ("output", "text"),
    ("next_attempt_at", "bigint"),
    ("node_id", "text"),
)
# Columns an outcome sets as given (started_at and reason have rules of their own).
_OUTCOME_VALUES = (
    "status",
    "completed_at",
    "duration_seconds",
    "error",
    "run_id",
    "attempt",
    "traceback",
    "output",
    "next_attempt_at",
)
# A group of outcomes (PostgreSQL): an active row takes its outcome; a row judged "lost" takes the
# outcome of its own node (the owner was alive after all), whose reason replaces the verdict's.
_OUTCOMES = f"""
SELECT * FROM json_to_recordset(CAST(:outcomes AS json))
    AS o (ord int, {", ".join(f"{n} {t}" for n, t in _OUTCOME_FIELDS)})
"""
_FINISH = f"""
UPDATE runs AS t SET
    {", ".join(f"{column} = o.{column}" for column in _OUTCOME_VALUES)},
    started_at = COALESCE(o.started_at, t.started_at),
    reason = CASE WHEN t.status = 'lost' THEN o.reason ELSE COALESCE(o.reason, t.reason) END
FROM o
WHERE t.run_key = o.run_key
    AND ({ACTIVE_CONDITION.replace("status", "t.status")} OR (t.status = 'lost' AND t.node_id = o.node_id))
RETURNING o.ord, t.run_key, o.status
"""
#: Returns the positions of the accepted outcomes.
_FINISH_GROUP = sa.text(f"WITH o AS ({_OUTCOMES}), finished AS ({_FINISH}) SELECT ord FROM finished")


def _claim_group_sql(with_outcomes: bool) -> Any:
    """Every claim of a group, and the outcomes before them, in one statement (PostgreSQL).

    ``locked`` takes the schedule rows whose compare-and-set holds, skipping rows another
    transaction holds (its claim in progress: refused, never waited for); under READ COMMITTED a
    row changed since the statement's snapshot is re-checked on its newest version before it is
    locked. A run whose (schedule, fire_time) or key exists already fails the whole statement (a
    unique violation: nothing is written), and the caller redoes the group claim by claim in a
    transaction, so such a claim refuses only itself (rare: checking every run against the history
    beforehand would cost a join with the whole runs table in every group). The statement is run
    on its own, in autocommit: one round trip for the whole group, outcomes included.

    ``judged.is_full`` is the overlap rule: the schedule's active runs before this claim's own
    (when full, every active run of the claim is stored skipped, so ``last``, its latest active
    fire, does not count; a claim made ahead of its instant is refused instead: not in ``ok``).
    Every part of a statement reads one snapshot, taken before the outcomes are written, so the
    count leaves out the active runs this statement's outcomes end: a run that just finished does
    not hold a slot against the next fire.
    """
    outcomes = ""
    freed = ""
    if with_outcomes:
        # A data-modifying CTE runs whether or not it is referenced. Outcomes of active runs are
        # always accepted, so the runs they end are the active ones named by a final outcome (NOT IN
        # an uncorrelated subquery: hashed once, probed per active run).
        outcomes = f"o AS ({_OUTCOMES}), finished AS ({_FINISH}), "
        freed = " AND run_key NOT IN (SELECT run_key FROM o WHERE status <> 'queued')"
    return sa.text(
        f"""
WITH {outcomes}c AS (
    SELECT * FROM json_to_recordset(CAST(:claims AS json))
        AS c (idx int, name text, expected bigint, new_next bigint, max_instances int, last bigint,
              ahead boolean)
), r AS (
    SELECT * FROM json_to_recordset(CAST(:runs AS json))
        AS r (idx int, {", ".join(f"{n} {t}" for n, t in _RUN_FIELDS)})
), locked AS (
    SELECT c.idx, c.name, c.new_next, c.max_instances, c.last, c.ahead
    FROM schedules s JOIN c ON s.name = c.name
    WHERE s.enabled = 1 AND s.next_fire = c.expected
    FOR UPDATE OF s SKIP LOCKED
), judged AS (
    SELECT l.idx, l.name, l.new_next, l.last, l.ahead,
        EXISTS (SELECT 1 FROM r WHERE r.idx = l.idx AND {_ACTIVE_R})
        AND (SELECT count(*) FROM runs WHERE schedule = l.name AND {ACTIVE_CONDITION}{freed})
            >= l.max_instances AS is_full
    FROM locked l
), ok AS (
    SELECT idx, name, new_next, last, is_full FROM judged WHERE NOT (is_full AND ahead)
), stored AS (
    SELECT r.idx, r.run_key, ok.name AS schedule, r.fire_time,
        CASE WHEN ok.is_full AND {_ACTIVE_R} THEN 'skipped' ELSE r.status END AS status,
        r.node_id, r.started_at, r.completed_at, r.duration_seconds, r.error, r.run_id,
        CASE WHEN ok.is_full AND {_ACTIVE_R} THEN 'overlap' ELSE r.reason END AS reason,
        r.attempt, r.traceback, r.output, r.next_attempt_at
    FROM r JOIN ok ON ok.idx = r.idx
), inserted AS (
    INSERT INTO runs (schedule, {_RUN_COLUMNS})
    SELECT schedule, {_RUN_COLUMNS} FROM stored
    RETURNING run_key
), advanced AS (
    UPDATE schedules s SET next_fire = ok.new_next,
        last_fire = CASE WHEN NOT ok.is_full AND ok.last IS NOT NULL
                              AND (s.last_fire IS NULL OR s.last_fire < ok.last)
                         THEN ok.last ELSE s.last_fire END
    FROM ok
    WHERE s.name = ok.name
    RETURNING ok.idx, ok.is_full
)
SELECT 'c' AS kind, idx, is_full, NULL AS run_key FROM advanced
UNION ALL
SELECT 'r', NULL, NULL, run_key FROM inserted
"""
    )


_CLAIM_GROUP = _claim_group_sql(False)
_CLAIM_GROUP_WITH_OUTCOMES = _claim_group_sql(True)

# Stores of this process: a forked child must not use the pooled connections it inherited.
_STORES: weakref.WeakSet[SQLAlchemyStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_STORES):
        store._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Abort(Exception):
    """Roll the current transaction back and return None (a lost claim)."""


class _Redo(Exception):
    """Roll the group claim back and make it again, claim by claim."""


class _PreparedClaim(NamedTuple):
    """A claim with its values encoded for the database."""

    name: str
    expected: int
    new: Optional[int]
    rows: List[Dict[str, Any]]
    max_instances: int
    #: The records given, where storing changes nothing in them (no text converted or cut), else
    #: None: a granted claim returns these as they are instead of decoding its rows again.
    records: List[Optional[RunRecord]]
    ahead: bool = False  # refused rather than skipped for overlap (Claim.ahead)


def _text(value: Any) -> Optional[str]:
    """A text column's value: None stays None, anything else is its ``str()``."""
    return value if value is None or isinstance(value, str) else str(value)


def _in_utc(run: RunRecord) -> bool:
    """True if every instant of ``run`` is already in UTC (as a store returns them)."""
    return all(
        value is None or value.tzinfo is timezone.utc
        for value in (run.fire_time, run.started_at, run.completed_at, run.next_attempt_at)
    )


def _json(rows: List[Dict[str, Any]]) -> str:
    """Rows for ``json_to_recordset``. NaN/Infinity are not JSON: ValueError (as the driver would)."""
    return json.dumps(rows, separators=(",", ":"), allow_nan=False)


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
        declared_by=row.get("declared_by"),
        declared_at=from_us(row.get("declared_at")),
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
        attempt=row.get("attempt") or 1,
        traceback=row.get("traceback"),
        output=row.get("output"),
        next_attempt_at=from_us(row.get("next_attempt_at")),
    )


def _node(row: Mapping[Any, Any]) -> NodeRecord:
    return NodeRecord(
        row["node_id"],
        row["hostname"],
        row["pid"],
        from_us(row["started_at"]),  # type: ignore[arg-type]  # NOT NULL column
        from_us(row["heartbeat"]),  # type: ignore[arg-type]
        row.get("serves"),
    )


#: A pooled PostgreSQL connection unused for longer than this is pinged before it is handed out.
PING_IDLE_SECONDS = 2.0


def _on_pg_checkin(dbapi_connection: Any, connection_record: Any) -> None:
    connection_record.info["flowyml_lite_used"] = time.monotonic()


def _on_pg_checkout(dbapi_connection: Any, connection_record: Any, connection_proxy: Any) -> None:
    # SQLAlchemy's pessimistic disconnect recipe, for idle connections only: a DisconnectionError
    # makes the pool drop this connection and hand out a new one (up to three tries).
    used = connection_record.info.get("flowyml_lite_used")
    if used is None or time.monotonic() - used < PING_IDLE_SECONDS:
        return
    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        dbapi_connection.rollback()
    except Exception as exc:  # the driver's OperationalError: the server went away meanwhile
        raise sa.exc.DisconnectionError(str(exc)) from exc


class SQLAlchemyStore(Store):
    """Schedules, runs and nodes in PostgreSQL or SQLite, shared by every process that opens the URL.

    ``url`` is an SQLAlchemy URL: ``postgresql+psycopg://user:password@host:5432/db`` or
    ``sqlite:///path/to/file.db``. ``schema`` (PostgreSQL) keeps the tables in that schema,
    created if missing. ``engine_options`` are passed to ``sqlalchemy.create_engine``.

    Bounds on PostgreSQL (seconds; set for every session at connect, so they cost no round trip):
    ``lock_timeout`` (a statement waiting for a row lock fails after this), ``statement_timeout``
    (any statement), ``idle_in_transaction_timeout`` (the server ends the session of a client
    frozen inside a transaction, releasing its row locks), ``connect_timeout`` and TCP keepalives /
    ``TCP_USER_TIMEOUT`` of ``connect_timeout`` (a dead server or a half-open connection fails
    within seconds), ``pool_timeout`` (waiting for a pooled connection).
    """

    shared = True

    def __init__(
        self,
        url: Union[str, URL] = "sqlite:///.flowyml_scheduler.db",
        *,
        schema: Optional[str] = None,
        busy_timeout: float = 30.0,
        lock_timeout: float = 2.0,
        statement_timeout: float = 10.0,
        idle_in_transaction_timeout: float = 15.0,
        connect_timeout: float = 5.0,
        pool_timeout: float = 10.0,
        engine_options: Optional[Dict[str, Any]] = None,
    ) -> None:
        for what, value in (
            ("lock_timeout", lock_timeout),
            ("statement_timeout", statement_timeout),
            ("idle_in_transaction_timeout", idle_in_transaction_timeout),
            ("connect_timeout", connect_timeout),
            ("pool_timeout", pool_timeout),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 86400:
                raise ConfigurationError(
                    f"SQLAlchemyStore: {what} must be seconds in (0, 86400), got {value!r}"
                )
        self.lock_timeout = float(lock_timeout)
        self.statement_timeout = float(statement_timeout)
        self.idle_in_transaction_timeout = float(idle_in_transaction_timeout)
        self.connect_timeout = float(connect_timeout)
        self.pool_timeout = float(pool_timeout)
        # Run keys of claims whose COMMIT reply was lost and could not be read back yet: resolved
        # (made final if they were committed) by the next write transaction that reaches the server.
        self._in_doubt: Dict[str, str] = {}
        # The last answer of schedule_versions: (its lower bound, [(name, µs, updated_at)]).
        self._versions: Optional[Tuple[int, List[Tuple[str, int, Optional[datetime]]]]] = None
        self._prune_pass: Optional[List[str]] = None  # the schedules a pass of prune_runs has yet to visit
        #: True after a limited prune_runs that left schedules to visit (call again soon).
        self.pruning_left = False
        try:
            parsed = sa.make_url(url)
        except ArgumentError as exc:
            raise ConfigurationError(
                f"store URL {url!r} is not an SQLAlchemy URL ({exc}); "
                "e.g. postgresql+psycopg://user:password@host:5432/db or sqlite:///flowyml.db"
            ) from exc
        if parsed.drivername == "postgres":  # libpq's and Heroku's spelling, which SQLAlchemy dropped
            parsed = parsed.set(drivername="postgresql+psycopg")
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
            # A pooled connection idle for a while is pinged before use (see _on_pg_checkout), so a
            # server restart between calls costs no error; a busy one is not: pool_pre_ping's round
            # trip on every checkout would be one more per claim transaction.
            ping_idle = not options.get("pool_pre_ping", False)
            options.setdefault("pool_timeout", self.pool_timeout)
            # Every session gets its bounds at connect (no SET LOCAL round trip per transaction).
            # Behind a transaction-mode pooler (PgBouncer) startup options are dropped: set them
            # on the role instead (ALTER ROLE ... SET lock_timeout = '2s').
            settings = [
                f"-c lock_timeout={int(self.lock_timeout * 1000)}",
                f"-c statement_timeout={int(self.statement_timeout * 1000)}",
                f"-c idle_in_transaction_session_timeout={int(self.idle_in_transaction_timeout * 1000)}",
            ]
            if self.schema is not None:
                settings.append(f"-c search_path={self.schema}")
            existing = connect_args.get("options") or self.url.query.get("options")
            if isinstance(existing, tuple):
                existing = " ".join(existing)
            connect_args["options"] = " ".join(([existing] if existing else []) + settings)
            # A dead server fails the connect within connect_timeout; a peer that vanished mid-query
            # (a half-open connection) is detected by keepalives when idle and by TCP_USER_TIMEOUT
            # when data is unacknowledged, instead of the kernel's ~15 minutes of retransmissions.
            connect_args.setdefault("connect_timeout", max(1, round(self.connect_timeout)))
            connect_args.setdefault("keepalives", 1)
            connect_args.setdefault("keepalives_idle", max(1, int(self.connect_timeout)))
            connect_args.setdefault("keepalives_interval", 1)
            connect_args.setdefault("keepalives_count", 3)
            connect_args.setdefault("tcp_user_timeout", int(self.connect_timeout * 1000))
        try:
            engine = sa.create_engine(self.url, connect_args=connect_args, **options)
        except (ImportError, NoSuchModuleError) as exc:
            driver = self.url.get_driver_name()
            if self.dialect == "postgresql" and driver not in ("", "psycopg"):
                hint = (  # the extra installs psycopg 3: say so rather than send the user round
                    f"install {driver} yourself, or use postgresql+psycopg:// (psycopg 3, which "
                    "`pip install 'flowyml-lite[postgres]'` installs)"
                )
            else:
                extra = "postgres" if self.dialect == "postgresql" else "sqlalchemy"
                hint = f"run `pip install 'flowyml-lite[{extra}]'`"
            raise PluginNotInstalledError(
                f"store URL {self._shown_url}: the database driver is not installed ({exc}); {hint}"
            ) from exc
        except (ArgumentError, TypeError) as exc:
            raise ConfigurationError(f"store URL {self._shown_url}: {exc}") from exc
        if self.dialect == "sqlite":
            event.listen(engine, "connect", self._on_sqlite_connect)
            event.listen(engine, "begin", self._on_sqlite_begin)
        elif ping_idle:
            event.listen(engine, "checkout", _on_pg_checkout)
            event.listen(engine, "checkin", _on_pg_checkin)
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
        # As in SQLiteStore: a committed transaction survives kill -9; see stores/sqlite/connection.py.
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

    def _write(
        self,
        body: Callable[[Connection], T],
        resolve: Optional[Callable[[T, BaseException], T]] = None,
    ) -> Optional[T]:
        """Run ``body`` in one write transaction; None if it raised _Abort (rolled back).

        ``resolve(result, error)`` decides a PostgreSQL transaction whose COMMIT was sent but whose
        reply never came (the connection broke): it reads back whether the writes are there and
        returns ``result`` if they are, or raises. Without it such an error is a StoreError.
        """
        self._ensure_open()
        if self._in_doubt and self.dialect == "postgresql":
            self._settle_in_doubt()
        lost_commit: Optional[BaseException] = None
        try:
            with self._serialized(), self._engine.connect() as conn:
                transaction = conn.begin()
                try:
                    result = body(conn)
                except BaseException:
                    if transaction.is_active:
                        # The connection may be gone: the server then rolls back by itself.
                        with suppress(SQLAlchemyError):
                            transaction.rollback()
                    raise
                try:
                    transaction.commit()
                except sa.exc.DBAPIError as exc:
                    # Only a broken connection leaves the outcome unknown; an error the server
                    # reported means the transaction rolled back.
                    if resolve is None or self.dialect != "postgresql" or not exc.connection_invalidated:
                        raise
                    lost_commit = exc
        except _Abort:
            return None
        except SQLAlchemyError as exc:
            raise self._error(exc) from exc
        if lost_commit is not None:
            assert resolve is not None
            logger.warning(
                "sqlalchemy store %s: the reply to a COMMIT was lost (%s); reading back what was written",
                self._shown_url,
                str(getattr(lost_commit, "orig", None) or lost_commit).strip(),
            )
            return resolve(result, lost_commit)
        return result

    def _read_back(self, body: Callable[[Connection], T], error: BaseException) -> T:
        """``body`` in a read transaction on a fresh connection, tried for about ``connect_timeout``."""
        deadline = time.monotonic() + max(self.connect_timeout, 1.0)
        while True:
            try:
                return self._read(body)
            except StoreError:
                if time.monotonic() > deadline:
                    raise self._error(error) from None
                time.sleep(0.2)

    def _settle_in_doubt(self) -> None:
        """Make final the runs of claims that committed after all although their caller got an error.

        Their caller was told the claim failed, so nobody runs them: they become ``missed`` with the
        reason, instead of staying ``running`` under a live node forever.
        """
        keys = sorted(self._in_doubt)
        reason = (
            "claimed, but the reply to the claim's COMMIT was lost and the store could not be reached "
            "to confirm it, so it was not run"
        )
        statement = (
            sa.update(RUNS)
            .where(RUNS.c.run_key == sa.any_(sa.bindparam("keys", keys, type_=_TEXT_ARRAY)), _ACTIVE)
            .values(status=MISSED, reason=reason, completed_at=_SERVER_NOW_US)
        )
        try:
            with self._serialized(), self._engine.begin() as conn:
                settled = conn.execute(statement).rowcount
        except SQLAlchemyError:
            return  # still unreachable: the caller's own transaction will report it
        for key in keys:
            self._in_doubt.pop(key, None)
        if settled:
            logger.warning(
                "sqlalchemy store %s: %d run(s) of claims whose COMMIT reply was lost had committed after "
                "all; recorded them missed (not run)",
                self._shown_url,
                settled,
            )

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
        # Stamped by the store's clock (PostgreSQL: the server's), like every updated_at.
        updated: Any = opt_to_us(record.updated_at, f"{where}: updated_at") or self._now_sql(now)
        values = {
            "name": record.name,
            **definition,
            "enabled": int(bool(record.enabled)),
            "next_fire": next_fire,
            "last_fire": opt_to_us(record.last_fire, f"{where}: last_fire"),
            "created_at": opt_to_us(record.created_at, f"{where}: created_at") or self._now_sql(now),
            "updated_at": updated,
            "declared_by": record.declared_by,
            "declared_at": opt_to_us(record.declared_at, f"{where}: declared_at"),
        }
        select_row = sa.select(SCHEDULES).where(SCHEDULES.c.name == record.name)
        insert = self._insert_if_absent(SCHEDULES, "name").values(**values)
        if self.dialect == "postgresql":
            insert = insert.returning(*SCHEDULES.c)

        def body(conn: Connection) -> ScheduleRecord:
            # Insert-if-absent, then read: concurrent first declarations all end on the winner's row.
            if self.dialect == "postgresql":
                new_row = conn.execute(insert).mappings().first()
                if new_row is not None:
                    return _schedule(new_row)
            elif conn.execute(insert).rowcount == 1:
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
        query = sa.select(*(SCHEDULES.c[column] for column in STATE_COLUMNS))
        return states_of(self._read(lambda conn: conn.execute(query).all()))

    def changed_since(self, since: datetime) -> List[ScheduleRecord]:
        """Schedules whose row changed (declare, redefine, enable, disable) at or after ``since``."""
        query = sa.select(SCHEDULES).where(SCHEDULES.c.updated_at >= to_us(since, "since"))
        return [_schedule(row) for row in self._read(lambda conn: conn.execute(query).mappings().all())]

    def schedule_versions(self, since: datetime) -> Dict[str, Optional[datetime]]:
        """``name -> updated_at`` of rows changed at or after ``since``: two columns, no JSON decoded.

        The last answer is kept. When it was large (a deploy declared many schedules within the
        sync's clock-skew margin, so every heartbeat would read them all again) and the rows at or
        after ``since`` are still exactly its rows (same count, same sum of versions: one
        aggregate row), the answer comes from there.
        """
        low = to_us(since, "since")
        c = SCHEDULES.c
        cached = self._versions
        if cached is not None and cached[0] <= low and len(cached[1]) >= _VERSIONS_KEPT_FROM:
            kept = [entry for entry in cached[1] if entry[1] >= low]
            digest = sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(c.updated_at), 0)).where(
                c.updated_at >= low
            )
            row: Any = self._read(lambda conn: conn.execute(digest).one())
            if int(row[0]) == len(kept) and int(row[1]) == sum(entry[1] for entry in kept):
                return {name: version for name, _, version in kept}
        query = sa.select(c.name, c.updated_at).where(c.updated_at >= low)
        rows: Sequence[Any] = self._read(lambda conn: conn.execute(query).all())
        entries = [(name, int(updated), from_us(updated)) for name, updated in rows]
        self._versions = (low, entries)
        return {name: version for name, _, version in entries}

    def _now_sql(self, local: int) -> Any:
        """The store's clock for a stamp: the server's on PostgreSQL, ``local`` (this host's) on SQLite."""
        return _SERVER_NOW_US if self.dialect == "postgresql" else local

    def set_enabled(self, name: str, enabled: bool, next_fire: Optional[datetime]) -> bool:
        """Set the enabled flag and next fire; False if the schedule does not exist."""
        statement = (
            sa.update(SCHEDULES)
            .where(SCHEDULES.c.name == name)
            .values(
                enabled=int(bool(enabled)),
                next_fire=opt_to_us(next_fire, "next_fire"),
                updated_at=self._now_sql(_now_us()),
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
        """Compare-and-set ``next_fire`` and insert ``runs`` in one transaction (see Store.claim).

        On PostgreSQL a schedule row another transaction holds is skipped (None), never waited for.
        """
        return self.claim_many([Claim(name, expected_next, new_next, runs, max_instances)])[0]

    def claim_many(
        self, claims: Sequence[Claim], outcomes: Sequence[Outcome] = ()
    ) -> List[Optional[List[RunRecord]]]:
        """Write ``outcomes``, then make every claim, in one transaction (see Store.claim_many).

        PostgreSQL: one statement for the outcomes and all the claims, in autocommit, so one round
        trip (see ``_claim_group_sql``): the schedule rows are locked ``FOR UPDATE SKIP LOCKED``
        with the compare-and-set in the same condition, so a row another worker is claiming is
        refused at once. If a run breaks the unique fire key, the group is redone claim by claim
        under savepoints in one transaction (also when a group names a schedule twice or a run in
        two outcomes, which must apply in order). SQLite: one ``BEGIN IMMEDIATE`` transaction, one
        savepoint per claim.
        """
        prepared = [self._prepare_claim(c) for c in claims]
        written = [self._prepare_outcome(o) for o in outcomes]
        if not prepared and not written:
            return []
        stored: Optional[List[Optional[List[Dict[str, Any]]]]] = None
        if (
            self.dialect == "postgresql"
            and prepared
            and len({c.name for c in prepared}) == len(prepared)
            and len({o["run_key"] for o in written}) == len(written)
        ):
            try:
                stored = self._single(
                    lambda conn: self._claim_group(conn, prepared, written),
                    lambda error: self._resolve_group(prepared, written, error),
                )
            except _Redo:
                stored = None
        if stored is None:

            def body(conn: Connection) -> List[Optional[List[Dict[str, Any]]]]:
                if written:
                    self._finish_in(conn, written)
                return self._claim_each(conn, prepared)

            def resolve(
                result: List[Optional[List[Dict[str, Any]]]], error: BaseException
            ) -> List[Optional[List[Dict[str, Any]]]]:
                return self._resolve_claims(result, written, error)

            stored = self._write(body, resolve)
        if stored is None:  # a claim alone in its transaction was refused (_Abort rolled it back)
            return [None]
        out: List[Optional[List[RunRecord]]] = []
        for rows in stored:
            if rows is None:
                out.append(None)
                continue
            records = [row if isinstance(row, RunRecord) else _run(row) for row in rows]
            if self._in_doubt:
                for record in records:
                    self._in_doubt.pop(record.run_key, None)
            out.append(records)
        return out

    def _single(self, body: Callable[[Connection], T], lost: Callable[[BaseException], T]) -> T:
        """``body``'s one statement in autocommit (PostgreSQL): BEGIN, statement and COMMIT in one trip.

        ``lost(error)`` decides a statement whose reply never came (the connection broke: it may
        have committed or not).
        """
        self._ensure_open()
        if self._in_doubt:
            self._settle_in_doubt()
        broken: Optional[BaseException] = None
        try:
            with self._engine.connect() as conn:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                try:
                    return body(conn)
                except sa.exc.DBAPIError as exc:
                    if not exc.connection_invalidated:
                        raise
                    broken = exc
        except SQLAlchemyError as exc:
            raise self._error(exc) from exc
        logger.warning(
            "sqlalchemy store %s: the connection broke before a write's reply came (%s); "
            "reading back what was written",
            self._shown_url,
            str(getattr(broken, "orig", None) or broken).strip(),
        )
        return lost(broken)

    def _prepare_claim(self, claim: Claim) -> _PreparedClaim:
        name = claim.name
        rows: List[Dict[str, Any]] = []
        for run in claim.runs:
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
                    "error": clip_text(_text(run.error)),
                    "run_id": clip_text(_text(run.run_id)),
                    "reason": clip_text(_text(run.reason)),
                    "attempt": run.attempt,
                    "traceback": clip_text(_text(run.traceback)),
                    "output": clip_text(_text(run.output)),
                    "next_attempt_at": opt_to_us(run.next_attempt_at, "next_attempt_at"),
                }
            )
        records: List[Optional[RunRecord]] = [
            run
            if row["error"] is run.error
            and row["run_id"] is run.run_id
            and row["reason"] is run.reason
            and row["traceback"] is run.traceback
            and row["output"] is run.output
            and _in_utc(run)
            else None
            for run, row in zip(claim.runs, rows)
        ]
        return _PreparedClaim(
            name,
            to_us(claim.expected_next, "expected_next"),
            opt_to_us(claim.new_next, "new_next"),
            rows,
            int(claim.max_instances),
            records,
            bool(claim.ahead),
        )

    @staticmethod
    def _prepare_outcome(outcome: Outcome) -> Dict[str, Any]:
        check_outcome(outcome.status)
        retry = outcome.status == QUEUED
        if not retry and outcome.completed_at is None:
            raise ValueError(
                f"finish_runs: the final outcome {outcome.status!r} of run {outcome.run_key!r} "
                "has no completed_at"
            )
        return {
            "run_key": outcome.run_key,
            "status": outcome.status,
            "completed_at": None if retry else opt_to_us(outcome.completed_at, "completed_at"),
            "duration_seconds": outcome.duration_seconds,
            "error": clip_text(_text(outcome.error)),
            "run_id": clip_text(_text(outcome.run_id)),
            "started_at": opt_to_us(outcome.started_at, "started_at"),
            "reason": clip_text(_text(outcome.reason)),
            "attempt": int(outcome.attempt),
            "traceback": clip_text(_text(outcome.traceback)),
            "output": clip_text(_text(outcome.output)),
            "next_attempt_at": opt_to_us(outcome.next_attempt_at, "next_attempt_at") if retry else None,
            "node_id": outcome.node_id,
        }

    def _claim_each(
        self, conn: Connection, prepared: Sequence[_PreparedClaim]
    ) -> List[Optional[List[Dict[str, Any]]]]:
        """Each claim as its own statements, under a savepoint when it shares the transaction."""
        results: List[Optional[List[Dict[str, Any]]]] = []
        alone = len(prepared) == 1
        for claim in prepared:
            rows = [dict(row) for row in claim.rows]
            for row in rows:
                row.pop("idx", None)  # left by a group statement that was redone
            try:
                if alone:
                    self._claim_one(conn, claim, rows)
                else:
                    with conn.begin_nested():
                        self._claim_one(conn, claim, rows)
            except _Abort:
                if alone:
                    raise
                results.append(None)
            else:
                results.append(rows)
        return results

    def _claim_one(self, conn: Connection, claim: _PreparedClaim, rows: List[Dict[str, Any]]) -> None:
        lock_row = sa.select(SCHEDULES.c.enabled, SCHEDULES.c.next_fire).where(SCHEDULES.c.name == claim.name)
        if self.dialect == "postgresql":
            # A row another transaction holds is its claim in progress: refuse, never wait.
            lock_row = lock_row.with_for_update(skip_locked=True)
        # SQLite: BEGIN IMMEDIATE already holds the database's write lock.
        current = conn.execute(lock_row).first()
        if current is None or not current.enabled or current.next_fire != claim.expected:
            raise _Abort
        any_active = any(row["status"] in ACTIVE_STATUSES for row in rows)
        if any_active:
            count_active = (
                sa.select(sa.func.count()).select_from(RUNS).where(RUNS.c.schedule == claim.name, _ACTIVE)
            )
            if conn.execute(count_active).scalar_one() >= claim.max_instances:
                if claim.ahead:
                    raise _Abort  # made again at its instant (Claim.ahead)
                for row in rows:
                    if row["status"] in ACTIVE_STATUSES:
                        row["status"], row["reason"] = SKIPPED, "overlap"
        if rows:
            try:
                conn.execute(sa.insert(RUNS), rows)
            except IntegrityError:
                raise _Abort from None
        last = max((row["fire_time"] for row in rows if row["status"] in ACTIVE_STATUSES), default=None)
        advance: Dict[str, Any] = {"next_fire": claim.new}
        if last is not None:
            advance["last_fire"] = sa.case(
                (sa.or_(SCHEDULES.c.last_fire.is_(None), SCHEDULES.c.last_fire < last), last),
                else_=SCHEDULES.c.last_fire,
            )
        conn.execute(sa.update(SCHEDULES).where(SCHEDULES.c.name == claim.name).values(**advance))

    def _claim_group(
        self, conn: Connection, prepared: Sequence[_PreparedClaim], written: Sequence[Dict[str, Any]]
    ) -> List[Optional[List[Dict[str, Any]]]]:
        """Every claim (and the outcomes) in one PostgreSQL statement; _Redo on a unique violation."""
        # Two JSON texts rather than an array per column: json.dumps is C code, and the driver
        # escapes every element of a text array with a regular expression.
        claims = [
            {
                "idx": index,
                "name": c.name,
                "expected": c.expected,
                "new_next": c.new,
                "max_instances": c.max_instances,
                "last": max((r["fire_time"] for r in c.rows if r["status"] in ACTIVE_STATUSES), default=None),
                "ahead": c.ahead,
            }
            for index, c in enumerate(prepared)
        ]
        runs = []
        for index, claim in enumerate(prepared):
            for row in claim.rows:
                row["idx"] = index
                runs.append(row)
        params = {"claims": _json(claims), "runs": _json(runs)}
        statement = _CLAIM_GROUP
        if written:
            for i, o in enumerate(written):
                o["ord"] = i
            params["outcomes"] = _json(list(written))
            statement = _CLAIM_GROUP_WITH_OUTCOMES
        try:
            returned: Sequence[Any] = conn.execute(statement, params).all()
        except IntegrityError:
            raise _Redo from None
        granted = {int(index): bool(full) for kind, index, full, _ in returned if kind == "c"}
        results: List[Optional[List[Any]]] = []
        for index, claim in enumerate(prepared):
            if index not in granted:
                results.append(None)
                continue
            if not granted[index]:  # stored as given
                results.append([r if r is not None else row for r, row in zip(claim.records, claim.rows)])
                continue
            rows = [dict(row) for row in claim.rows]
            for row in rows:
                if row["status"] in ACTIVE_STATUSES:
                    row["status"], row["reason"] = SKIPPED, "overlap"
            results.append(rows)
        return results

    def _resolve_group(
        self, prepared: Sequence[_PreparedClaim], written: Sequence[Dict[str, Any]], error: BaseException
    ) -> List[Optional[List[Dict[str, Any]]]]:
        """Decide a group claim statement whose reply was lost: read its run keys back.

        Rows found: it committed; each claim whose runs are all there was granted, and gets them as
        stored. None found: if the outcomes are there, it committed with every claim refused;
        otherwise StoreError (nothing was written, the caller retries). Unreachable: the run keys
        are kept in doubt (settled by the next write that reaches the server) and StoreError.
        """
        keys = [row["run_key"] for claim in prepared for row in claim.rows]
        query = sa.select(RUNS).where(
            RUNS.c.run_key == sa.any_(sa.bindparam("keys", keys, type_=_TEXT_ARRAY))
        )
        try:
            found = {
                row["run_key"]: dict(row)
                for row in self._read_back(lambda c: c.execute(query).mappings().all(), error)
            }
        except StoreError:
            for key in keys:
                self._in_doubt[key] = "claim"
            raise
        if found:
            logger.warning("sqlalchemy store %s: the group claim had committed", self._shown_url)
            return [
                [found[row["run_key"]] for row in claim.rows]
                if claim.rows and all(row["run_key"] in found for row in claim.rows)
                else None
                for claim in prepared
            ]
        if written and self._outcomes_stored(written, error):
            return [None] * len(prepared)
        raise self._error(error)

    def _outcomes_stored(self, written: Sequence[Dict[str, Any]], error: BaseException) -> bool:
        """True if any of ``written`` is stored as given (status and attempt): their write committed."""
        keys = [o["run_key"] for o in written]
        query = sa.select(RUNS.c.run_key, RUNS.c.status, RUNS.c.attempt).where(
            RUNS.c.run_key == sa.any_(sa.bindparam("keys", keys, type_=_TEXT_ARRAY))
        )
        rows = {r[0]: (r[1], r[2]) for r in self._read_back(lambda c: c.execute(query).all(), error)}
        return any(rows.get(o["run_key"]) == (o["status"], o["attempt"]) for o in written)

    def _resolve_claims(
        self,
        result: List[Optional[List[Dict[str, Any]]]],
        written: Sequence[Dict[str, Any]],
        error: BaseException,
    ) -> List[Optional[List[Dict[str, Any]]]]:
        """Decide a claim transaction whose COMMIT reply was lost: read back its run keys.

        Found: it committed, ``result`` stands. Not found: it did not; StoreError (nothing was
        written, the caller retries). Unreachable: its run keys are kept in doubt (settled by the
        next write that reaches the server) and StoreError.
        """
        keys = [row["run_key"] for rows in result if rows is not None for row in rows]
        if not keys:
            # Nothing claimed: only the outcomes tell. Written ones carry their attempt and status.
            if not written or self._outcomes_stored(written, error):
                return result
            raise self._error(error)
        query = sa.select(sa.func.count()).where(
            RUNS.c.run_key == sa.any_(sa.bindparam("keys", keys, type_=_TEXT_ARRAY))
        )
        try:
            found = self._read_back(lambda c: int(c.execute(query).scalar_one()), error)
        except StoreError:
            for key in keys:
                self._in_doubt[key] = "claim"
            raise
        if found:
            logger.warning("sqlalchemy store %s: the claim had committed; its runs go on", self._shown_url)
            return result
        raise self._error(error)

    def finish_runs(self, outcomes: Sequence[Outcome]) -> List[bool]:
        """Record many outcomes in one transaction (see Store.finish_runs).

        PostgreSQL: one ``UPDATE ... FROM json_to_recordset(...)`` statement for the whole group,
        in autocommit (one round trip) unless one run has several outcomes (they apply in order).
        """
        written = [self._prepare_outcome(o) for o in outcomes]
        if not written:
            return []
        if self.dialect == "postgresql" and len({o["run_key"] for o in written}) == len(written):

            def lost(error: BaseException) -> List[bool]:
                keys = [o["run_key"] for o in written]
                query = sa.select(RUNS.c.run_key, RUNS.c.status, RUNS.c.attempt).where(
                    RUNS.c.run_key == sa.any_(sa.bindparam("keys", keys, type_=_TEXT_ARRAY))
                )
                rows = {r[0]: (r[1], r[2]) for r in self._read_back(lambda c: c.execute(query).all(), error)}
                accepted = [rows.get(o["run_key"]) == (o["status"], o["attempt"]) for o in written]
                if any(accepted):
                    return accepted
                raise self._error(error)

            return self._single(lambda conn: self._finish_in(conn, written), lost)

        def resolve(result: List[bool], error: BaseException) -> List[bool]:
            if not any(result) or self._outcomes_stored([o for o, ok in zip(written, result) if ok], error):
                return result
            raise self._error(error)

        stored = self._write(lambda conn: self._finish_in(conn, written), resolve)
        assert stored is not None
        return stored

    def _finish_in(self, conn: Connection, written: Sequence[Dict[str, Any]]) -> List[bool]:
        if self.dialect == "postgresql":
            # One statement per round; a run with several outcomes (a retry, then its end) gets its
            # n-th in round n, so they apply in order. Usually a single round.
            rounds: List[List[int]] = []
            seen: Dict[str, int] = {}
            for index, o in enumerate(written):
                depth = seen.get(o["run_key"], 0)
                seen[o["run_key"]] = depth + 1
                if depth == len(rounds):
                    rounds.append([])
                rounds[depth].append(index)
            accepted: set[int] = set()
            for i, o in enumerate(written):
                o["ord"] = i
            for members in rounds:
                rows = _json([written[i] for i in members])
                accepted.update(int(row[0]) for row in conn.execute(_FINISH_GROUP, {"outcomes": rows}))
            return [index in accepted for index in range(len(written))]
        results = []
        for o in written:
            values = {k: o[k] for k in _OUTCOME_VALUES}
            values["started_at"] = sa.func.coalesce(o["started_at"], RUNS.c.started_at)
            own_lost = (
                sa.and_(RUNS.c.status == LOST, RUNS.c.node_id == o["node_id"]) if o["node_id"] else None
            )
            # Over a "lost" verdict the owner's outcome is the truth: its reason replaces the verdict's.
            values["reason"] = sa.case(
                (RUNS.c.status == LOST, o["reason"]), else_=sa.func.coalesce(o["reason"], RUNS.c.reason)
            )
            where = _ACTIVE if own_lost is None else sa.or_(_ACTIVE, own_lost)
            statement = sa.update(RUNS).where(RUNS.c.run_key == o["run_key"], where).values(**values)
            results.append(bool(conn.execute(statement).rowcount))
        return results

    def start_run(self, run_key: str, started_at: datetime) -> bool:
        """Mark a queued (or running) run running; False if it is no longer active."""
        statement = (
            sa.update(RUNS)
            .where(RUNS.c.run_key == run_key, _ACTIVE)
            .values(status="running", started_at=to_us(started_at, "started_at"), next_attempt_at=None)
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
            "error": clip_text(_text(error)),
            "run_id": clip_text(_text(run_id)),
        }
        if started_at is not None:
            values["started_at"] = to_us(started_at, "started_at")
        if reason is not None:
            values["reason"] = clip_text(_text(reason))
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

    def run_at(self, name: str, fire_time: datetime) -> Optional[RunRecord]:
        """The run of ``name`` for ``fire_time``, if any (see Store.run_at)."""
        instant = to_us(fire_time, "fire_time")
        query = sa.select(RUNS).where(RUNS.c.schedule == name, RUNS.c.fire_time == instant)
        rows = self._read(lambda conn: conn.execute(query).mappings().all())
        return _run(rows[0]) if rows else None

    def recent_runs(self, names: Sequence[str], limit: int = 10) -> Dict[str, List[RunRecord]]:
        """The newest ``limit`` runs of each schedule (see Store.recent_runs): on PostgreSQL one
        query per RECENT_RUNS_CHUNK names, each schedule's runs read from its index (LATERAL)."""
        names = list(dict.fromkeys(names))  # a name given twice is read once
        if self.dialect != "postgresql":
            return super().recent_runs(names, limit)
        found: Dict[str, List[RunRecord]] = {}
        for start in range(0, len(names), RECENT_RUNS_CHUNK):
            chunk = list(names[start : start + RECENT_RUNS_CHUNK])
            array = sa.literal(chunk, pg_dialect.ARRAY(sa.Text))
            wanted = sa.func.unnest(array).table_valued("wanted").render_derived()  # AS anon(wanted)
            newest = (
                sa.select(RUNS)
                .where(RUNS.c.schedule == wanted.c.wanted)
                .order_by(RUNS.c.fire_time.desc())
                .limit(max(limit, 0))
                .lateral()
            )
            query = sa.select(newest).select_from(wanted).join(newest, sa.true())
            for row in self._read(lambda conn, q=query: conn.execute(q).mappings().all()):  # type: ignore[misc]
                found.setdefault(row["schedule"], []).append(_run(row))
        for runs in found.values():
            runs.sort(key=lambda run: run.fire_time, reverse=True)
        return found

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
        names = self._prune_pass if limit is not None else None
        if not names:  # a new pass: the schedules that may have runs to prune, in order
            names = self._read(partial(self._prune_candidates, cutoff=cutoff, keep_last=keep_last))
            names.reverse()
        deleted = 0
        ends = time.monotonic() + PRUNE_SECONDS_PER_CALL
        while names and (limit is None or deleted < limit):
            name = names[-1]
            prunable = self._read(partial(self._prunable, name=name, cutoff=cutoff, keep_last=keep_last))
            finished = True
            while prunable is not None:
                if limit is not None and deleted >= limit:
                    finished = False  # the limit came inside this schedule: it goes on next time
                    break
                batch = PRUNE_BATCH_ROWS if limit is None else min(PRUNE_BATCH_ROWS, limit - deleted)
                count = self._prune_batch(name, prunable, batch)
                deleted += count
                if count < batch:
                    break
            if finished:
                names.pop()
            if limit is not None and time.monotonic() >= ends:
                break
        # A limited call keeps what is left of its pass for the next: the housekeeping thread
        # prunes a bounded time a tick, and its heartbeats never wait for a whole pass.
        self._prune_pass = names if limit is not None else None
        self.pruning_left = bool(names) and limit is not None
        return deleted

    def _prune_candidates(
        self, conn: Connection, cutoff: Optional[int], keep_last: Optional[int]
    ) -> List[str]:
        """The schedules that may have runs to prune, in two queries (not two for every schedule:
        20,000 schedules took 19 s a pass on a local PostgreSQL): more than ``keep_last`` runs, or
        a run fired before ``cutoff``. ``_prunable`` then decides for each."""
        found: Set[str] = set()
        if keep_last is not None:
            crowded = sa.select(RUNS.c.schedule).group_by(RUNS.c.schedule).having(sa.func.count() > keep_last)
            found.update(conn.execute(crowded).scalars())
        if cutoff is not None:
            aged = sa.select(RUNS.c.schedule).where(RUNS.c.fire_time < cutoff).distinct()
            found.update(conn.execute(aged).scalars())
        return sorted(found)

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

    def active_run_nodes(self) -> List[str]:
        """The nodes with active runs: one index read of the active runs' node ids, no run decoded."""
        query = sa.select(RUNS.c.node_id).where(_ACTIVE).distinct().order_by(RUNS.c.node_id)
        return [str(row[0]) for row in self._read(lambda conn: conn.execute(query).all())]

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
        """Insert or refresh this node's row; PostgreSQL stamps the beat with its own clock."""
        values = {
            "hostname": node.hostname,
            "pid": node.pid,
            "started_at": to_us(node.started_at, "started_at"),
            "heartbeat": self._now_sql(to_us(node.heartbeat, "heartbeat")),
            "serves": node.serves,
        }

        def body(conn: Connection) -> None:
            statement = sa.update(NODES).where(NODES.c.node_id == node.node_id).values(**values)
            if not conn.execute(statement).rowcount:
                conn.execute(self._insert_if_absent(NODES, "node_id").values(node_id=node.node_id, **values))

        self._write(body)

    def expired_nodes(self, timeout_seconds: float, now: datetime) -> List[NodeRecord]:
        """Nodes whose last beat is more than ``timeout_seconds`` old (PostgreSQL: on the server's clock).

        On PostgreSQL ``now`` is ignored: the server stamps every heartbeat and judges them by its
        own clock, so a host whose clock runs ahead never declares the others dead.
        """
        limit = int(timeout_seconds * 1_000_000)
        query = sa.select(NODES).order_by(NODES.c.node_id)
        if self.dialect == "postgresql":
            query = query.where(NODES.c.heartbeat < _SERVER_NOW_US - limit)
        else:
            query = query.where(NODES.c.heartbeat < to_us(now, "now") - limit)
        return [_node(r) for r in self._read(lambda conn: conn.execute(query).mappings().all())]

    def mark_declared(self, node_id: str, names: Sequence[str]) -> None:
        """Set ``declared_by``/``declared_at`` (the store's clock) of the schedules ``names``."""
        if not names:
            return
        wanted = list(dict.fromkeys(names))
        values = {"declared_by": node_id, "declared_at": self._now_sql(_now_us())}
        if self.dialect == "postgresql":
            listed = sa.bindparam("names", wanted, type_=_TEXT_ARRAY)
            self._write(
                lambda conn: conn.execute(
                    sa.update(SCHEDULES).where(SCHEDULES.c.name == sa.any_(listed)).values(**values)
                )
            )
            return

        def body(conn: Connection) -> None:
            for start in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
                chunk = wanted[start : start + 500]
                conn.execute(sa.update(SCHEDULES).where(SCHEDULES.c.name.in_(chunk)).values(**values))

        self._write(body)

    def list_nodes(self) -> List[NodeRecord]:
        """Every node row, ordered by node id."""
        query = sa.select(NODES).order_by(NODES.c.node_id)
        return [_node(r) for r in self._read(lambda conn: conn.execute(query).mappings().all())]

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
