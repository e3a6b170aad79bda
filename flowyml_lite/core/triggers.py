"""Triggers: the one place that computes fire instants (DESIGN §2).

A trigger is built from a schedule's definition alone (type, value, zone), so every process
sharing a store computes the same instants, and orphans can be handled without their function.
All instants in and out are aware UTC datetimes.
"""

from __future__ import annotations

import abc
from datetime import datetime, timedelta
from typing import List, Optional, Tuple, Union

from ..cron.contract import CronEngine
from ..cron.expression import CronExpression
from ..errors import ScheduleError
from ..timezones import UTC, ZoneProvider, get_zone

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


class Trigger(abc.ABC):
    """Computes the fire instants of one schedule."""

    @abc.abstractmethod
    def next_after(self, after: datetime) -> Optional[datetime]:
        """The first fire instant strictly after the aware ``after`` (aware UTC), or None."""

    def fires_until(self, after: datetime, until: datetime, limit: int) -> Tuple[List[datetime], int]:
        """Fire instants in (after, until]: the last ``limit`` of them and how many there are in all."""
        kept: List[datetime] = []
        count = 0
        fire = self.next_after(after)
        while fire is not None and fire <= until:
            count += 1
            kept.append(fire)
            if len(kept) > limit:
                del kept[0]
            fire = self.next_after(fire)
        return kept, count


class CronTrigger(Trigger):
    """Fires on a cron expression in a zone; ``H`` fields hash on the schedule name."""

    def __init__(
        self,
        expression: str,
        timezone: str,
        hash_key: Optional[str] = None,
        engine: Union[str, CronEngine] = "native",
        zone_provider: Union[str, ZoneProvider] = "zoneinfo",
    ) -> None:
        self.cron = CronExpression(
            expression, timezone=timezone, hash_key=hash_key, engine=engine, zone_provider=zone_provider
        )

    def next_after(self, after: datetime) -> Optional[datetime]:
        return self.cron.next_utc(after)


class IntervalTrigger(Trigger):
    """Fires every ``seconds`` on a fixed grid anchored at ``anchor`` (the Unix epoch by default).

    The grid depends only on the definition, so replicas declaring the same interval at
    different moments agree on every instant, and a slow run never shifts later fires.
    """

    def __init__(self, seconds: float, anchor: Optional[datetime] = None) -> None:
        period = round(seconds * 1_000_000)
        if period <= 0:
            raise ScheduleError(f"an interval must be positive, got {seconds!r} seconds")
        self.period_us = period
        self.anchor = anchor.astimezone(UTC) if anchor is not None else _EPOCH

    def next_after(self, after: datetime) -> Optional[datetime]:
        elapsed = (after - self.anchor) // _US
        steps = elapsed // self.period_us + 1
        return self.anchor + timedelta(microseconds=steps * self.period_us)

    def fires_until(self, after: datetime, until: datetime, limit: int) -> Tuple[List[datetime], int]:
        first = self.next_after(after)
        assert first is not None
        if first > until:
            return [], 0
        count = ((until - first) // _US) // self.period_us + 1
        last = first + timedelta(microseconds=(count - 1) * self.period_us)
        kept = [last - timedelta(microseconds=i * self.period_us) for i in range(min(limit, count))]
        kept.reverse()
        return kept, count


def build_trigger(
    schedule_type: str,
    schedule_value: str,
    timezone: str,
    name: str,
    engine: Union[str, CronEngine] = "native",
    zone_provider: Union[str, ZoneProvider] = "zoneinfo",
) -> Trigger:
    """The trigger for a stored definition; raises ScheduleError/CronError/TimezoneError if invalid."""
    if schedule_type == "interval":
        get_zone(timezone, zone_provider)  # validated even though elapsed time ignores it
        try:
            seconds = float(schedule_value)
        except ValueError:
            raise ScheduleError(f"interval value {schedule_value!r} is not a number of seconds") from None
        return IntervalTrigger(seconds)
    if schedule_type in ("cron", "daily", "hourly"):
        return CronTrigger(cron_text(schedule_type, schedule_value), timezone, name, engine, zone_provider)
    raise ScheduleError(f"unknown schedule type {schedule_type!r}; expected cron, daily, hourly or interval")


def cron_text(schedule_type: str, schedule_value: str) -> str:
    """The cron expression behind a cron, daily ("HH:MM") or hourly ("M") schedule value."""
    if schedule_type == "daily":
        hour, _, minute = schedule_value.partition(":")
        return f"{int(minute)} {int(hour)} * * *"
    if schedule_type == "hourly":
        return f"{int(schedule_value)} * * * *"
    return schedule_value
