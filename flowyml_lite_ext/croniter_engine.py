"""The ``croniter`` cron engine (extra: ``pip install 'flowyml-lite[croniter]'``).

croniter runs on naive wall-clock datetimes only, with ``implement_cron_bug=True`` so the
day-of-month/day-of-week rule is Vixie cron's, like the native engine's; the zone layer applies
the DST rules, so both engines give the same instants (DESIGN §3).
"""

from __future__ import annotations

import re
import threading
from datetime import datetime, timedelta
from typing import Optional

from croniter import CroniterBadDateError, croniter  # ImportError here: the registry names the extra

from flowyml_lite.cron.parser import MACROS
from flowyml_lite.errors import CronError

_SECOND = timedelta(seconds=1)
# croniter gives up after this many years without a match. The longest gap of a satisfiable
# expression without a year field is ~40 years (Feb 29 on one weekday across 2100); with a year
# field (1970-2099) it is 129 years.
_MAX_YEARS = 200
_COMPILE_START = datetime(1970, 1, 1)
# H with a step is '*/n' in another phase: frequent, as in the native engine (contract.py).
_HASH_STEP = re.compile(r"[Hh](?:\([0-9]+-[0-9]+\))?/")


def is_fixed_time(expression: str) -> bool:
    """DESIGN §3: true when neither the minute nor the hour field starts with ``*`` (or ``H/n``)."""
    fields = expression.split()
    if len(fields) < 2:
        return False
    return not any(f.startswith("*") or _HASH_STEP.match(f) for f in fields[:2])


class CroniterCron:
    """One expression compiled by croniter; searches naive wall-clock time."""

    def __init__(self, expression: str, text: str, hash_key: Optional[str]) -> None:
        self.expression = expression
        self.is_fixed_time = is_fixed_time(text)
        self._text = text
        self._six_fields = len(text.split()) > 5
        try:
            self._iter = croniter(
                text,
                _COMPILE_START,
                ret_type=datetime,
                implement_cron_bug=True,
                hash_id=hash_key,
                max_years_between_matches=_MAX_YEARS,
            )
        except Exception as exc:  # croniter's parser raises assorted types on malformed text
            raise CronError(f"croniter rejects '{expression}': {exc}", expression=expression) from exc
        # A croniter instance keeps its position in mutable state; the scheduler shares one
        # compiled expression between threads.
        self._mutex = threading.Lock()
        if self.next_wall(_COMPILE_START - _SECOND) is None:
            raise CronError(
                f"'{expression}' never matches: croniter finds no date in {_MAX_YEARS} years from 1970",
                expression=expression,
            )

    def __repr__(self) -> str:
        return f"CroniterCron({self.expression!r})"

    def next_wall(self, after: datetime) -> Optional[datetime]:
        """The first matching wall time strictly after the naive ``after``, or None."""
        # croniter floors its start to the minute (the second with 6 fields) and adds one unit,
        # so dropping microseconds here gives the same answer and keeps its float timestamps exact.
        start = after.replace(microsecond=0)
        with self._mutex:
            try:
                found = self._iter.get_next(datetime, start_time=start)
            except CroniterBadDateError:
                return None
            except (OverflowError, ValueError):  # past year 9999
                return None
        assert isinstance(found, datetime)
        return found

    def matches(self, wall: datetime) -> bool:
        """True when the naive ``wall`` (to the second) is one of this expression's times."""
        # Not croniter.match: it has no hash_id nor implement_cron_bug and a minute's tolerance
        # for 5 fields. Asking the same search that next_wall uses keeps the two consistent.
        wall = wall.replace(microsecond=0)
        if wall == datetime.min:
            return False  # there is no earlier second to search from
        return self.next_wall(wall - _SECOND) == wall


class CroniterEngine:
    """The croniter engine (registered as ``croniter``): same instants as ``native`` via the zone layer."""

    name = "croniter"

    def compile(self, expression: str, hash_key: Optional[str] = None) -> CroniterCron:
        """Compile with croniter; raises ``CronError`` for text croniter rejects or that never matches."""
        if not isinstance(expression, str):
            raise TypeError(f"a cron expression must be a str, not {type(expression).__name__}")
        if hash_key is not None and not isinstance(hash_key, str):
            raise TypeError(f"hash_key must be a str or None, not {type(hash_key).__name__}")
        # croniter turns macros into hashed expressions when given a hash_id ('@hourly' becomes
        # 'h * * * * h'); native macros are fixed, so expand them first.
        text = MACROS.get(expression.strip().lower(), expression)
        if not text.strip():
            raise CronError(
                f"empty expression: expected 5 to 7 fields in '{expression}'", expression=expression
            )
        return CroniterCron(expression, text, hash_key)


__all__ = ["CroniterCron", "CroniterEngine", "is_fixed_time"]
