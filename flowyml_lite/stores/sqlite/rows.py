"""The SQLite store's rows: the column lists of schedules and runs, and records made from rows and back."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, List, Sequence, TypeVar

from ..base import RunRecord, ScheduleRecord
from ..schema import as_text, check_run, clip_text, from_json, from_us, to_us

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


def _now_us() -> int:
    return to_us(datetime.now(timezone.utc), "now")


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
