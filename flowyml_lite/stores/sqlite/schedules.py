"""The SQLite store's schedules: declared, read, enabled or disabled, deleted."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Dict, List, Optional

from ..base import ScheduleRecord, ScheduleState
from ..schema import STATE_COLUMNS, from_us, opt_to_us, states_of, to_json, to_us
from .connection import _Connections
from .rows import _SCHEDULE_COLUMNS, _now_us, _schedule

_SELECT_SCHEDULE = f"SELECT {_SCHEDULE_COLUMNS} FROM schedules WHERE name = ?"
_INSERT_SCHEDULE = f"INSERT INTO schedules ({_SCHEDULE_COLUMNS}) VALUES ({', '.join('?' * 14)})"
_REDEFINE_SCHEDULE = (
    "UPDATE schedules SET type = ?, value = ?, timezone = ?, definition_hash = ?, options = ?, "
    "context = ?, next_fire = ?, updated_at = ? WHERE name = ?"
)


class _Schedules(_Connections):
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
