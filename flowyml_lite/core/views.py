"""Runs and instants as users see them: history entries, and instants in a schedule's zone."""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any, Dict, Optional, Tuple, Union

from ..stores.base import SKIPPED, SUCCEEDED, RunRecord
from ..timezones import ZoneProvider, get_zone


def iso(moment: Optional[datetime]) -> Optional[str]:
    return moment.isoformat() if moment is not None else None


def history_entry(run: RunRecord) -> Dict[str, Any]:
    """A history entry as ``get_history`` returns it (flowyml's keys plus ours)."""
    started = run.started_at if run.status != SKIPPED else None
    return {
        "schedule_name": run.schedule,
        "fire_time": iso(run.fire_time),
        "started_at": iso(started),
        "completed_at": iso(run.completed_at),
        "success": run.status == SUCCEEDED,
        "status": run.status,
        "duration_seconds": run.duration_seconds if run.duration_seconds is not None else 0.0,
        "error": run.error,
        "run_id": run.run_id,
        "run_key": run.run_key,
        "node": run.node_id,
        "reason": run.reason,
        "attempt": run.attempt,
        "next_attempt_at": iso(run.next_attempt_at),
        "traceback": run.traceback,
        "output": run.output,
        "start_lag_seconds": start_lag(run, started),
    }


def start_lag(run: RunRecord, started: Optional[datetime]) -> Optional[float]:
    """Seconds from the fire to its start, for a first attempt: a retried run's row keeps only its
    last attempt's start, whose lag would count the retry delays."""
    return (started - run.fire_time).total_seconds() if started is not None and run.attempt == 1 else None


#: How many recent answers a Localizer keeps.
_SHOWN = 4096


class Localizer:
    """Instants shown in a zone, with the zones looked up once; an unknown zone shows UTC."""

    def __init__(self, provider: Union[str, ZoneProvider]) -> None:
        self._provider = provider
        self._zones: Dict[str, Optional[tzinfo]] = {}  # zone name -> tzinfo (None: unknown here)
        # Recent answers: schedules of one timetable and zone share their instants, and 100,000
        # declarations at a start each show theirs.
        self._shown: Dict[Tuple[str, datetime], datetime] = {}

    def __call__(self, zone_name: str, moment: Optional[datetime]) -> Optional[datetime]:
        if moment is None:
            return None
        key = (zone_name, moment)
        shown = self._shown.get(key)
        if shown is None:
            shown = self._shown[key] = self._show(zone_name, moment)
            if len(self._shown) > _SHOWN:
                self._shown.clear()
        return shown

    def _show(self, zone_name: str, moment: datetime) -> datetime:
        try:
            zone = self._zones[zone_name]
        except KeyError:
            try:
                zone = get_zone(zone_name, self._provider).tzinfo
            except Exception:  # an orphan from a machine with zones we lack: show UTC
                zone = None
            self._zones[zone_name] = zone
        if zone is None:
            return moment
        try:
            return moment.astimezone(zone)
        except Exception:  # e.g. an instant near year 9999 that the zone's offset pushes past it
            return moment
