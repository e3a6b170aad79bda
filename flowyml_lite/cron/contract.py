"""The contract every cron engine implements (native, croniter, third-party).

Engines know nothing of time zones: they work on naive wall-clock datetimes only. The zone
layer (``flowyml_lite.timezones``) turns wall times into instants with the DST rules of
DESIGN §3, once, for every engine, so two engines cannot disagree about DST.
"""

from __future__ import annotations

from datetime import datetime
from typing import Optional, Protocol


class CompiledCron(Protocol):
    """One parsed expression, ready to search.

    ``next_wall(after)`` returns the earliest wall time (``microsecond == 0``) that matches and
    is strictly later than the naive datetime ``after`` (which may carry microseconds), or None
    when the expression has no later match (only possible with a year field). It never searches
    without bound: engines give up with None past year 9999 or their own maximum year.
    ``matches(wall)`` says whether the naive wall time (to the second) matches.
    ``is_fixed_time`` is true when neither the minute nor the hour field starts with ``*``
    (after ``H`` substitution: ``H`` alone is fixed, ``H/5`` and ``*/5`` are not), and
    decides which DST rule the zone layer applies.

    Optional: ``iter_walls(after, tz=None)``, an iterator of what repeated ``next_wall`` calls
    would return, each with ``tz`` attached (``fold`` 0) when given. The zone layer uses it when
    present (the native engine has it) and falls back to ``next_wall`` otherwise.
    """

    expression: str
    is_fixed_time: bool

    def next_wall(self, after: datetime) -> Optional[datetime]: ...

    def matches(self, wall: datetime) -> bool: ...


class CronEngine(Protocol):
    """A factory of compiled expressions; registered under ``flowyml_lite.cron``.

    ``compile`` raises ``flowyml_lite.errors.CronError`` for invalid or never-matching text.
    ``hash_key`` feeds ``H`` fields (the scheduler passes the schedule name).
    """

    name: str

    def compile(self, expression: str, hash_key: Optional[str] = None) -> CompiledCron: ...
