"""The relational schema of the SQL stores, its migrations, and the value checks every store shares.

Shared by the sqlite store and the SQLAlchemy store (SQLite or PostgreSQL), so a database
written by one opens in the other. The SQL is portable: instants are BIGINT microseconds since
the Unix epoch (UTC), JSON is TEXT, booleans are INTEGER 0/1, no engine-specific types or clauses.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from ..errors import SchemaVersionError
from .base import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    MAX_RUN_TEXT,
    QUEUED,
    Outcome,
    RunRecord,
    RunStats,
    ScheduleState,
)

#: Holds one row (id = 1) with the version of the schema the database is at.
VERSION_TABLE_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_version (id INTEGER PRIMARY KEY, version INTEGER NOT NULL)"
)

#: The SQL test for "running or queued", written the same way in the index definitions and queries.
ACTIVE_CONDITION = "status IN (" + ", ".join(f"'{s}'" for s in ACTIVE_STATUSES) + ")"
#: The SQL test for a finished run (the only rows ``prune_runs`` may delete).
FINAL_CONDITION = "status IN (" + ", ".join(f"'{s}'" for s in FINAL_STATUSES) + ")"
#: Most rows ``prune_runs`` deletes in one transaction, so it never holds the write lock for long.
PRUNE_BATCH_ROWS = 5000

_V1 = (
    """CREATE TABLE schedules (
        name TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        value TEXT NOT NULL,
        timezone TEXT NOT NULL,
        definition_hash TEXT NOT NULL,
        options TEXT NOT NULL,
        context TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        next_fire BIGINT,
        last_fire BIGINT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    )""",
    # UNIQUE (schedule, fire_time) is what makes a fire run once; its index also serves history().
    """CREATE TABLE runs (
        run_key TEXT PRIMARY KEY,
        schedule TEXT NOT NULL REFERENCES schedules (name) ON DELETE CASCADE,
        fire_time BIGINT NOT NULL,
        status TEXT NOT NULL,
        node_id TEXT NOT NULL,
        started_at BIGINT,
        completed_at BIGINT,
        duration_seconds DOUBLE PRECISION,
        error TEXT,
        run_id TEXT,
        reason TEXT,
        UNIQUE (schedule, fire_time)
    )""",
    # Partial indexes (SQLite >= 3.8, PostgreSQL) hold only active runs: small, and a run leaves them
    # when it finishes. Queries must spell the condition as ACTIVE_CONDITION for SQLite to use them.
    f"CREATE INDEX runs_schedule_status ON runs (schedule, status) WHERE {ACTIVE_CONDITION}",
    f"CREATE INDEX runs_node_status ON runs (node_id, status) WHERE {ACTIVE_CONDITION}",
    """CREATE TABLE nodes (
        node_id TEXT PRIMARY KEY,
        hostname TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at BIGINT NOT NULL,
        heartbeat BIGINT NOT NULL
    )""",
)

# Version 2: retries (the attempt counter and the next attempt's instant on the fire's one row),
# a failed run's traceback and captured output, and which node last declared each schedule.
_V2 = (
    "ALTER TABLE runs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1",
    "ALTER TABLE runs ADD COLUMN traceback TEXT",
    "ALTER TABLE runs ADD COLUMN output TEXT",
    "ALTER TABLE runs ADD COLUMN next_attempt_at BIGINT",
    "ALTER TABLE schedules ADD COLUMN declared_by TEXT",
    "ALTER TABLE schedules ADD COLUMN declared_at BIGINT",
    "ALTER TABLE nodes ADD COLUMN serves TEXT",
)

# Version 3: the sync of every worker asks at each heartbeat which schedules changed since a moment
# (updated_at >= ...); without an index that reads the whole table (11 ms at 100,000 schedules on
# PostgreSQL, 0.1 ms with it). Claims never change updated_at, so they stay HOT updates.
_V3 = ("CREATE INDEX schedules_updated_at ON schedules (updated_at)",)

#: (version, statements) in order; a database at version v needs every migration after v.
MIGRATIONS: Tuple[Tuple[int, Tuple[str, ...]], ...] = ((1, _V1), (2, _V2), (3, _V3))
SCHEMA_VERSION = MIGRATIONS[-1][0]


def migrations_after(version: int, where: str) -> List[Tuple[int, Tuple[str, ...]]]:
    """The migrations a database at ``version`` needs; SchemaVersionError if it is newer than this code."""
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the store {where} has schema version {version}, newer than the version {SCHEMA_VERSION} "
            "this flowyml_lite understands: upgrade flowyml-lite, or use another database"
        )
    return [m for m in MIGRATIONS if m[0] > version]


# -- value encoding -----------------------------------------------------------------

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_US = timedelta(microseconds=1)


def check_aware(value: datetime, what: str) -> datetime:
    """``value`` converted to UTC; ValueError if it is naive (stores keep instants, not wall times)."""
    if value.tzinfo is timezone.utc:
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{what} is a naive datetime ({value.isoformat()}): pass an aware one, "
            "e.g. datetime.now(timezone.utc)"
        )
    return value.astimezone(timezone.utc)


def to_us(value: datetime, what: str) -> int:
    """An aware datetime as integer microseconds since the Unix epoch (exact)."""
    if value.tzinfo is None or value.utcoffset() is None:
        check_aware(value, what)
    return (value - EPOCH) // _ONE_US


def opt_to_us(value: Optional[datetime], what: str) -> Optional[int]:
    """Like ``to_us``, passing None through."""
    return None if value is None else to_us(value, what)


def from_us(value: Optional[int]) -> Optional[datetime]:
    """Integer microseconds since the epoch as an aware UTC datetime (None stays None)."""
    return None if value is None else EPOCH + timedelta(0, 0, value)  # positional: faster


#: The columns ``states_of`` reads, in its order.
STATE_COLUMNS = ("name", "definition_hash", "enabled", "next_fire", "last_fire", "created_at", "updated_at")


def states_of(rows: Iterable[Sequence[Any]]) -> Dict[str, ScheduleState]:
    """``name -> ScheduleState`` of rows of ``STATE_COLUMNS`` (instants as integer microseconds).

    Written for 100,000 rows at a start: tuples made directly, and each fire instant converted once
    (schedules of one timetable share their next fire; datetimes are immutable, so they share one
    object), as is a row's creation stamp when it was never updated.
    """
    epoch, delta, make, state = EPOCH, timedelta, tuple.__new__, ScheduleState
    out: Dict[str, ScheduleState] = {}
    instants: Dict[Optional[int], Optional[datetime]] = {None: None}
    for name, digest, enabled, next_fire, last_fire, created, updated in rows:
        made = None if created is None else epoch + delta(0, 0, created)
        upcoming = instants.get(next_fire)
        if upcoming is None and next_fire is not None:
            upcoming = instants[next_fire] = epoch + delta(0, 0, next_fire)
        latest = instants.get(last_fire)
        if latest is None and last_fire is not None:
            latest = instants[last_fire] = epoch + delta(0, 0, last_fire)
        out[name] = make(
            state,
            (
                digest,
                bool(enabled),
                upcoming,
                latest,
                made,
                made if updated == created else None if updated is None else epoch + delta(0, 0, updated),
            ),
        )
    return out


def to_json(value: Dict[str, Any], what: str) -> str:
    """A dict as compact JSON text; ValueError naming ``what`` if it is not a JSON-serializable dict."""
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a dict, not {type(value).__name__}")
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON-serializable: {exc}") from exc


def from_json(text: str) -> Dict[str, Any]:
    """JSON text back to a dict (a new one each call: callers may change it).

    Texts of flat dicts (scalar values only, such as every schedule's options) are decoded once
    and copied: the copies share the key strings, and a copy is several times faster than a parse.
    """
    if text == "{}":
        return {}
    flat = _FLAT_JSON.get(text)
    if flat is not None:
        return dict(flat)
    result: Dict[str, Any] = json.loads(text)
    if (
        len(_FLAT_JSON) < _FLAT_JSON_SIZE
        and len(text) <= _FLAT_JSON_TEXT
        and type(result) is dict
        and all(value is None or type(value) in _SCALARS for value in result.values())
    ):
        _FLAT_JSON[text] = result
        return dict(result)
    return result


_FLAT_JSON: Dict[str, Dict[str, Any]] = {}  # never handed out: from_json returns copies
_FLAT_JSON_SIZE = 1024
_FLAT_JSON_TEXT = 512
_SCALARS = (str, int, float, bool)


# -- checks and aggregates shared by every store ------------------------------------

_STATUSES = frozenset(ACTIVE_STATUSES + FINAL_STATUSES)


def check_run(name: str, run: RunRecord) -> None:
    """Reject a run record that cannot belong to a claim of ``name``."""
    if run.schedule != name:
        raise ValueError(f"run {run.run_key!r} belongs to schedule {run.schedule!r}, not {name!r}")
    if run.status not in _STATUSES:
        raise ValueError(f"run {run.run_key!r} has unknown status {run.status!r}")


def check_final(status: str) -> None:
    """Reject an outcome that is not a final status (finish_run cannot leave a run active)."""
    if status not in FINAL_STATUSES:
        raise ValueError(f"finish_run: {status!r} is not a final status ({', '.join(FINAL_STATUSES)})")


def check_outcome(status: str) -> None:
    """Reject an outcome that is neither final nor a retry (``queued``)."""
    if status != "queued" and status not in FINAL_STATUSES:
        raise ValueError(
            f"finish_runs: {status!r} is neither a final status ({', '.join(FINAL_STATUSES)}) "
            "nor 'queued' (a retry)"
        )


def check_outcome_record(outcome: Outcome) -> bool:
    """Reject an outcome no store could record (see ``Store.finish_runs``); True if it is a retry."""
    check_outcome(outcome.status)
    if outcome.status == QUEUED:
        return True
    if outcome.completed_at is None:
        raise ValueError(
            f"finish_runs: run {outcome.run_key!r} has the final status {outcome.status!r} "
            "but no completed_at: give the instant the run ended"
        )
    return False


def clip_text(text: Optional[str], limit: int = MAX_RUN_TEXT) -> Optional[str]:
    """``text`` cut to its last ``limit`` characters (with a marker), so a run row stays bounded,
    and made text every store can keep (``storable_text``)."""
    if text is None:
        return text
    text = storable_text(text)  # first: its escapes are longer than what they replace
    if len(text) > limit:
        marker = f"[... {len(text) - limit + 40} characters cut ...]\n"
        text = marker + text[-(limit - len(marker)) :]
    return text


def storable_text(text: str) -> str:
    """``text`` with what no store can keep written out as escapes: a NUL character as ``\\x00``
    (PostgreSQL's text refuses it) and a lone surrogate as ``\\udcxx`` (not UTF-8: no driver can
    send it; ``os.fsdecode`` makes them of a file name that is not UTF-8, and an exception's
    message may carry one). A job's error text must never make its outcome, and with it every
    later claim that carries it, refused by the store for good."""
    if text.isascii():
        if "\x00" not in text:
            return text
    else:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00")


def as_text(value: object, limit: int = MAX_RUN_TEXT) -> Optional[str]:
    """``value`` as text a store can keep: None stays None, anything else is ``str()``-ed and clipped.

    A run's ``run_id`` or ``error`` may come from user code as any type (a UUID, a mock): a store
    that refused to bind it would leave the run active forever, so every store stores its text.
    """
    if value is None:
        return None
    return clip_text(value if isinstance(value, str) else str(value), limit)


def check_prune(older_than: Optional[datetime], keep_last: Optional[int], limit: Optional[int]) -> None:
    """Reject ``prune_runs`` arguments that no store could honour (naive instant, counts below 1)."""
    if older_than is not None:
        check_aware(older_than, "prune_runs: older_than")
    for what, value in (("keep_last", keep_last), ("limit", limit)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"prune_runs: {what} must be an integer >= 1 or None, got {value!r}")


def make_stats(counts: Dict[str, int], duration_sum: float, duration_count: int) -> RunStats:
    """RunStats from run counts by status and the sum and count of finished runs' durations."""
    return RunStats(
        total=sum(counts.values()),
        succeeded=counts.get("succeeded", 0),
        failed=counts.get("failed", 0),
        missed=counts.get("missed", 0),
        skipped=counts.get("skipped", 0),
        lost=counts.get("lost", 0),
        timed_out=counts.get("timed_out", 0),
        running=counts.get("running", 0),
        avg_duration_seconds=duration_sum / duration_count if duration_count else None,
    )
