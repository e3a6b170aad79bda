"""The SQLite store's runs once claimed: started, finished (one outcome or a group), and read back
(history, active runs, counts)."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..base import FINAL_STATUSES, LOST, Outcome, RunRecord, RunStats
from ..schema import (
    ACTIVE_CONDITION,
    as_text,
    check_final,
    check_outcome_record,
    clip_text,
    make_stats,
    opt_to_us,
    to_us,
)
from .connection import _Connections
from .rows import _RUN_COLUMNS, _run

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


class _Runs(_Connections):
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
