"""The native cron engine: standard library only, searches naive wall-clock time.

Each field becomes a "next allowed value" table, so a search is a few index lookups per
field: month, then day, hour, minute and second, resetting the lower fields whenever a
higher one moves. The days of a month that match (where ``L``, ``W``, ``#`` and the
day-of-month/day-of-week rule are evaluated) depend only on the month's length and the
weekday of its 1st, so at most 28 such patterns exist, and a year's tables depend only on
its calendar (weekday of January 1st, leap or not), of which there are 14; each is built once.
"""

from __future__ import annotations

import bisect
import calendar
import functools
from datetime import datetime, timedelta, tzinfo
from typing import Dict, Iterable, Iterator, List, Optional, Set, Tuple

from ..errors import CronError
from .parser import CronValues, ParsedCron, parse, resolve

_MAX_YEAR = 9999  # datetime's limit; without a year field a match always exists before it
_MONTH_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

# Offsets from January 1st of the first day of each month, in common and leap years.
_MONTH_START = tuple(
    tuple(sum(_MONTH_DAYS[1:m]) + (leap and m > 2) for m in range(13)) for leap in (False, True)
)
_DAY_OFFSETS = tuple(timedelta(days=n) for n in range(366))
_HOUR_OFFSETS = tuple(timedelta(hours=h) for h in range(24))

_SECOND_OFFSETS: List[timedelta] = []


def _hour_offsets() -> List[timedelta]:
    """``timedelta(seconds=i)`` for each second of an hour, built once and shared by every expression."""
    if not _SECOND_OFFSETS:
        _SECOND_OFFSETS.extend(timedelta(seconds=i) for i in range(3600))
    return _SECOND_OFFSETS


Table = Tuple[int, ...]
# (month table, day table of each month 1-12 or None until built, (length, weekday of 1st) of each)
YearInfo = Tuple[Table, List[Optional[Table]], Tuple[Tuple[int, int], ...]]


def _table(values: Iterable[int], size: int) -> Table:
    """``t[i]`` is the smallest allowed value >= i, or -1; ``size`` leaves room for overflow."""
    return _cached_table(tuple(sorted(set(values))), size)


@functools.lru_cache(maxsize=1024)  # most expressions share their fields ('*', '0', ...) with others
def _cached_table(values: Tuple[int, ...], size: int) -> Table:
    allowed = set(values)
    out = [-1] * size
    following = -1
    for i in range(size - 1, -1, -1):
        if i in allowed:
            following = i
        out[i] = following
    return tuple(out)


class NativeCron:
    """A compiled expression: ``next_wall`` and ``matches`` on naive wall-clock datetimes."""

    __slots__ = (
        "_by_year",
        "_calendars",
        "_day_plan",
        "_dense",
        "_hour",
        "_min",
        "_minute_only",
        "_mon",
        "_patterns",
        "_sec",
        "_v",
        "_weekday_free",
        "_year_t",
        "expression",
        "is_fixed_time",
    )

    def __init__(self, expression: str, values: CronValues) -> None:
        self.expression = expression
        self.is_fixed_time = values.is_fixed_time
        self._v = values
        self._sec = _table(values.seconds, 61)
        self._min = _table(values.minutes, 61)
        self._hour = _table(values.hours, 25)
        self._year_t: Optional[Table] = None
        if values.years is not None:  # indexed by year - 1970, holding year - 1970
            self._year_t = _table((y - 1970 for y in values.years), 131)
        self._mon = _table(values.months, 14)
        self._minute_only = values.seconds == (0,)
        self._dense = _every_month_matches(values)
        # When no day rule looks at weekdays, a month's days depend on its length alone.
        self._weekday_free = (
            values.day_and
            and len(values.weekdays) == 7
            and not values.nearest
            and not values.last_weekday
            and not values.last_of
            and not values.nth
        )
        self._patterns: Dict[int, Table] = {}  # length * 7 + weekday of the 1st -> day table
        self._calendars: Dict[int, YearInfo] = {}  # weekday of Jan 1 * 2 + leap -> year tables
        self._by_year: Dict[int, YearInfo] = {}
        # (allowed hours, their offsets from midnight, minute+second offsets within an hour)
        self._day_plan: Optional[Tuple[Tuple[int, ...], Tuple[timedelta, ...], Tuple[timedelta, ...]]] = None

    def __repr__(self) -> str:
        return f"NativeCron({self.expression!r})"

    def _year(self, year: int) -> YearInfo:
        """The month and day tables of ``year`` (shared by every year with the same calendar)."""
        info = self._by_year.get(year)
        if info is None:
            wd1 = (calendar.weekday(year, 1, 1) + 1) % 7  # cron numbering: 0 is Sunday
            info = self._calendar(wd1, calendar.isleap(year))
            self._by_year[year] = info  # at most 9999 entries, each a shared reference
        return info

    def _calendar(self, wd1: int, leap: bool) -> YearInfo:
        """The tables of a year whose January 1st is weekday ``wd1`` (0 = Sunday).

        Day tables are built when first needed, except for sparse expressions, whose month
        table must skip the months where no day matches (so one loop step skips a year).
        """
        key = wd1 * 2 + leap
        info = self._calendars.get(key)
        if info is not None:
            return info
        shapes: List[Tuple[int, int]] = [(0, 0)]
        for month in range(1, 13):
            length = 29 if month == 2 and leap else _MONTH_DAYS[month]
            shapes.append((length, wd1))
            wd1 = (wd1 + length) % 7
        days: List[Optional[Table]] = [None] * 13
        months = self._mon
        if not self._dense:
            built = {m: self._pattern(*shapes[m]) for m in self._v.months}
            days[1:] = [built.get(m) for m in range(1, 13)]
            months = _table((m for m, table in built.items() if table[1] > 0), 14)
        info = (months, days, tuple(shapes))
        self._calendars[key] = info
        return info

    def _month(self, info: YearInfo, month: int) -> Table:
        """The day table of ``month`` in the year described by ``info``, built on first use."""
        table = info[1][month]
        if table is None:
            table = info[1][month] = self._pattern(*info[2][month])
        return table

    def _pattern(self, length: int, wd1: int) -> Table:
        """The day table of a month of ``length`` days whose 1st is weekday ``wd1`` (0 = Sunday)."""
        key = length * 7 + (0 if self._weekday_free else wd1)
        table = self._patterns.get(key)
        if table is None:
            table = _table(self._matching_days(length, wd1), 33)
            self._patterns[key] = table
        return table

    def _matching_days(self, length: int, wd1: int) -> Set[int]:
        v = self._v
        by_dom = {d for d in v.days if d <= length}
        for n in v.last_offsets:
            if length - n >= 1:
                by_dom.add(length - n)
        for n in v.nearest:
            if n <= length:
                by_dom.add(_nearest_weekday(n, length, (wd1 + n - 1) % 7))
        if v.last_weekday:
            by_dom.add(_nearest_weekday(length, length, (wd1 + length - 1) % 7))
        by_dow = {d for d in range(1, length + 1) if (wd1 + d - 1) % 7 in v.weekdays}
        last_wd = (wd1 + length - 1) % 7
        for w in v.last_of:
            by_dow.add(length - (last_wd - w) % 7)
        for w, k in v.nth:
            d = 1 + (w - wd1) % 7 + 7 * (k - 1)
            if d <= length:
                by_dow.add(d)
        # Vixie cron (and Debian's and cronie's): when either day field starts with '*' a day
        # must match both, otherwise either. crontab(5) documents only the OR half.
        return by_dom & by_dow if v.day_and else by_dom | by_dow

    def next_wall(self, after: datetime) -> Optional[datetime]:
        """The first matching wall time strictly after ``after``, or None (year field exhausted)."""
        found = self._search(after)
        return None if found is None else datetime(*found)

    def _search(self, after: datetime) -> Optional[Tuple[int, int, int, int, int, int]]:
        """``next_wall`` as (year, month, day, hour, minute, second)."""
        year, month, day, hour = after.year, after.month, after.day, after.hour
        if self._minute_only:
            minute, second = after.minute + 1, 0
        else:
            minute, second = after.minute, after.second + 1
        hour_t, min_t, sec_t, year_t = self._hour, self._min, self._sec, self._year_t
        by_year = self._by_year
        while year <= _MAX_YEAR:
            if year_t is not None:
                y = year_t[max(year - 1970, 0)] + 1970 if year < 2100 else -1
                if y < 1970:
                    return None
                if y != year:
                    year, month, day, hour, minute, second = y, 1, 1, 0, 0, 0
            info = by_year.get(year)
            if info is None:
                info = self._year(year)
            m = info[0][month]
            if m < 0:
                year, month, day, hour, minute, second = year + 1, 1, 1, 0, 0, 0
                continue
            if m != month:
                month, day, hour, minute, second = m, 1, 0, 0, 0
            days = info[1][month]
            if days is None:
                days = self._month(info, month)
            d = days[day]
            if d < 0:
                month, day, hour, minute, second = month + 1, 1, 0, 0, 0
                continue
            if d != day:
                day, hour, minute, second = d, 0, 0, 0
            h = hour_t[hour]
            if h < 0:
                day, hour, minute, second = day + 1, 0, 0, 0
                continue
            if h != hour:
                hour, minute, second = h, 0, 0
            mi = min_t[minute]
            if mi < 0:
                hour, minute, second = hour + 1, 0, 0
                continue
            if mi != minute:
                minute, second = mi, 0
            s = sec_t[second]
            if s < 0:
                minute, second = minute + 1, 0
                continue
            return year, month, day, hour, minute, s
        return None

    def iter_walls(self, after: datetime, tz: Optional[tzinfo] = None) -> Iterator[datetime]:
        """Every matching wall time strictly after ``after``, in order, with ``tz`` attached (fold 0).

        What ``next_wall`` would give call after call, several times faster: a matching day's
        times come from offsets computed once, and the day search resumes where it stopped.
        """
        found = self._search(after)
        if found is None:
            return
        yield datetime(*found, tzinfo=tz)
        year, month, day, hour, minute, second = found
        hours, hour_offsets, within = self._plan()
        hi = bisect.bisect_left(hours, hour)
        wi = bisect.bisect_right(within, timedelta(minutes=minute, seconds=second))
        n_hours, year_t, by_year = len(hours), self._year_t, self._by_year
        info = self._year(year)
        months, days = info[0], self._month(info, month)
        year_start: Optional[datetime] = datetime(year, 1, 1, tzinfo=tz)
        month_start = _MONTH_START[info[2][2][0] == 29]
        while True:
            if year_start is None:
                year_start = datetime(year, 1, 1, tzinfo=tz)
                month_start = _MONTH_START[info[2][2][0] == 29]
            base = year_start + _DAY_OFFSETS[month_start[month] + day - 1]
            while hi < n_hours:
                at = base + hour_offsets[hi]
                for offset in within if wi == 0 else within[wi:]:
                    yield at + offset
                hi += 1
                wi = 0
            hi = 0
            day = days[day + 1]
            while day < 0:  # no later day this month: the next allowed month, year by year
                month = months[month + 1]
                if month < 0:
                    year += 1
                    if year_t is not None:
                        year = year_t[max(year - 1970, 0)] + 1970 if year < 2100 else -1
                        if year < 1970:
                            return
                    if year > _MAX_YEAR:
                        return
                    info = by_year.get(year) or self._year(year)
                    months = info[0]
                    year_start = None
                    month = 0
                    continue
                days = info[1][month] or self._month(info, month)
                day = days[1]

    def _plan(self) -> Tuple[Tuple[int, ...], Tuple[timedelta, ...], Tuple[timedelta, ...]]:
        plan = self._day_plan
        if plan is None:
            v = self._v
            hours = tuple(sorted(v.hours))
            offsets = _hour_offsets()
            within = tuple(offsets[m * 60 + s] for m in sorted(v.minutes) for s in sorted(v.seconds))
            plan = self._day_plan = (hours, tuple(_HOUR_OFFSETS[h] for h in hours), within)
        return plan

    def matches(self, wall: datetime) -> bool:
        """True when the naive ``wall`` (to the second) is one of this expression's times."""
        year, month = wall.year, wall.month
        year_t = self._year_t
        if year_t is not None and not (1970 <= year < 2100 and year_t[year - 1970] == year - 1970):
            return False
        info = self._year(year)
        return (
            info[0][month] == month
            and self._month(info, month)[wall.day] == wall.day
            and self._hour[wall.hour] == wall.hour
            and self._min[wall.minute] == wall.minute
            and self._sec[wall.second] == wall.second
        )

    def _check(self, parsed: ParsedCron) -> None:
        """Raise ``CronError`` when ``L-n`` leaves an allowed month or no date ever matches."""
        v = self._v
        expr = parsed.expression
        years = v.years
        for n in sorted(v.last_offsets, reverse=True):
            for month in v.months:
                shortest = _MONTH_DAYS[month]
                if month == 2 and years and all(calendar.isleap(y) for y in years):
                    shortest = 29
                if n >= shortest:
                    el = next(e for e in parsed.day.elements if e.kind == "last" and e.start == n)
                    raise CronError(
                        f"day-of-month: '{el.text}' falls before the 1st of "
                        f"{calendar.month_name[month]} in '{expr}'",
                        expression=expr,
                        field="day-of-month",
                        position=el.position,
                    )
        if self._dense:
            return
        if years is None:
            # All 14 calendars (7 weekdays of January 1st, leap or not) occur in every 400-year
            # Gregorian cycle, so if none of them has a match, no year ever will.
            if any(self._calendar(wd1, leap)[0][1] > 0 for wd1 in range(7) for leap in (False, True)):
                return
        elif any(self._year(year)[0][1] > 0 for year in years):
            return
        raise _never(parsed, v)


def _every_month_matches(v: CronValues) -> bool:
    """A cheap sufficient test that every allowed month of every allowed year has a match.

    True for almost every expression; false for sparse ones such as ``0 0 29 2 *``.
    """
    feb = 29 if v.years and all(calendar.isleap(y) for y in v.years) else 28
    every_dow = len(v.weekdays) == 7
    # Each weekday occurs at least 4 times in every month, and has a last occurrence.
    by_dow = bool(v.weekdays or v.last_of) or any(k <= 4 for _, k in v.nth)
    always_by_dom = bool(v.last_offsets or v.last_weekday)
    first_day = min(v.days | v.nearest, default=32)
    for month in v.months:
        by_dom = always_by_dom or first_day <= (feb if month == 2 else _MONTH_DAYS[month])
        if v.day_and and not ((len(v.days) == 31 and by_dow) or (every_dow and by_dom)):
            return False
        if not v.day_and and not (by_dom or by_dow):
            return False
    return True


def _nearest_weekday(n: int, length: int, weekday: int) -> int:
    """The weekday nearest day ``n`` (weekday 0 = Sunday) without leaving the month (Quartz's W)."""
    if weekday == 6:  # Saturday: the Friday before, or Monday the 3rd when n is the 1st
        return n - 1 if n > 1 else n + 2
    if weekday == 0:  # Sunday: the Monday after, or the Friday before when n is the last day
        return n + 1 if n < length else n - 2
    return n


def _never(parsed: ParsedCron, v: CronValues) -> CronError:
    join = "and" if v.day_and else "or"
    year = f" in year '{parsed.year.text}'" if parsed.year is not None else ""
    expr = parsed.expression
    return CronError(
        f"'{expr}' never matches: no date has day-of-month '{parsed.day.text}' "
        f"{join} day-of-week '{parsed.weekday.text}' in month '{parsed.month.text}'{year}",
        expression=expr,
        field="day-of-month",
        position=parsed.day.position,
    )


@functools.lru_cache(maxsize=4096)
def _compile(expression: str, hash_key: Optional[str]) -> NativeCron:
    parsed = parse(expression)
    cron = NativeCron(expression, resolve(parsed, hash_key))
    cron._check(parsed)
    return cron


class NativeEngine:
    """The built-in engine (registered as ``native``); compiled expressions are cached."""

    name = "native"

    def compile(self, expression: str, hash_key: Optional[str] = None) -> NativeCron:
        """Parse and check ``expression``; raises ``CronError`` if invalid or never matching."""
        if not isinstance(expression, str):
            raise TypeError(f"a cron expression must be a str, not {type(expression).__name__}")
        if hash_key is not None and not isinstance(hash_key, str):
            raise TypeError(f"hash_key must be a str or None, not {type(hash_key).__name__}")
        if hash_key is not None and "h" not in expression.lower():
            hash_key = None  # one cache entry for an expression without H, whatever the key
        return _compile(expression, hash_key)
