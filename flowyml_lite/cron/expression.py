"""``CronExpression``: a cron engine's wall-clock search plus the zone layer's DST rules."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Callable, Dict, Iterator, Optional, Union

from ..errors import CronError
from ..timezones import UTC, Zone, ZoneProvider, get_zone, iter_fires, to_utc_naive
from .contract import CompiledCron, CronEngine

# ``aware_anchor + (naive - naive_anchor)`` attaches UTC several times faster than ``replace``.
_NAIVE_ANCHOR = datetime(2000, 1, 1)
_UTC_ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)


def get_engine(engine: Union[str, CronEngine] = "native") -> CronEngine:
    """The cron engine named ``engine`` (``native``, ``croniter``, or a registered plugin)."""
    if not isinstance(engine, str):
        return engine
    if engine == "native":
        known = _engines.get("native")  # before the import statement: 100,000 declarations ask
        if known is not None:
            return known
        from .native import NativeEngine

        return _native_engine(NativeEngine)
    from .. import plugins

    found = plugins.get("cron", engine)
    return found() if isinstance(found, type) else found  # type: ignore[no-any-return]


_engines: Dict[str, CronEngine] = {}


def _native_engine(factory: Callable[[], CronEngine]) -> CronEngine:
    engine = _engines.get("native")
    if engine is None:
        engine = _engines.setdefault("native", factory())
    return engine


class CronExpression:
    """A cron expression bound to a time zone.

    >>> from datetime import datetime, timezone
    >>> expr = CronExpression("0 9 * * 1-5", timezone="Europe/London")
    >>> expr.next(datetime(2024, 3, 29, 12, 0, tzinfo=timezone.utc)).isoformat()
    '2024-04-01T09:00:00+01:00'
    """

    __slots__ = ("_compiled", "_zone", "expression", "hash_key", "timezone")

    def __init__(
        self,
        expression: str,
        timezone: str = "UTC",
        hash_key: Optional[str] = None,
        *,
        engine: Union[str, CronEngine] = "native",
        zone_provider: Union[str, ZoneProvider] = "zoneinfo",
    ) -> None:
        if not isinstance(expression, str):
            raise CronError(
                f"a cron expression must be a string, not {type(expression).__name__}",
                expression=repr(expression),
            )
        self._compiled: CompiledCron = get_engine(engine).compile(expression, hash_key)
        self._zone: Zone = get_zone(timezone, zone_provider)
        self.expression = expression
        self.timezone = timezone
        self.hash_key = hash_key

    def __repr__(self) -> str:
        return f"CronExpression({self.expression!r}, timezone={self.timezone!r})"

    @property
    def is_fixed_time(self) -> bool:
        """True when neither minute nor hour starts with ``*``: decides the DST rule (DESIGN §3)."""
        return self._compiled.is_fixed_time

    @property
    def zone(self) -> Zone:
        return self._zone

    @property
    def compiled(self) -> CompiledCron:
        """The engine's compiled expression (searches naive wall-clock time)."""
        return self._compiled

    def next(self, after: datetime) -> Optional[datetime]:
        """The first fire instant strictly after the aware ``after``, in this expression's zone.

        None when the expression has no later fire (a year field in the past).
        """
        for fire in self.iter(after):
            return fire
        return None

    def next_utc(self, after: datetime) -> Optional[datetime]:
        """Like ``next`` but returns an aware UTC datetime (what the scheduler stores)."""
        instant: Optional[datetime] = None
        offset = self._zone.fixed_offset
        try:
            if offset is not None:  # no transitions: one search, no generator (the scheduler's hot path)
                wall = self._compiled.next_wall(to_utc_naive(after) + offset)
                instant = None if wall is None else wall - offset
            else:
                instant = next(iter_fires(self._compiled, self._zone, to_utc_naive(after)), None)
        except OverflowError:  # the next fire lies outside what datetime can represent
            return None
        return None if instant is None else _UTC_ANCHOR + (instant - _NAIVE_ANCHOR)

    def iter(self, after: datetime) -> Iterator[datetime]:
        """The fire instants strictly after ``after``, lazily, in this expression's zone."""
        # iter_fires localizes each instant itself and ends where datetime ends (year 9999).
        return iter_fires(self._compiled, self._zone, to_utc_naive(after), self._zone.localize)

    def matches(self, moment: datetime) -> bool:
        """True when the wall time of the aware ``moment`` in this zone matches the fields."""
        wall = self._zone.wall(to_utc_naive(moment))
        return self._compiled.matches(wall.replace(microsecond=0))

    def dst_note(self, fire: datetime) -> Optional[str]:
        """Why a DST transition shaped this fire instant, or None when it did not."""
        instant = to_utc_naive(fire)
        seg = self._zone.segment(instant)
        wall = instant + seg.offset
        if not self._compiled.matches(wall.replace(microsecond=0)):
            return "moved: its wall time was skipped by a DST gap"
        if seg.prev_offset > seg.offset and wall < seg.start + seg.prev_offset:
            return "repeated wall time (second pass of a DST fold)"
        nxt = self._zone.next_segment(seg)
        if nxt is not None and nxt.offset < seg.offset and wall >= nxt.start + nxt.offset:
            return "wall time occurs twice; this is the first occurrence"
        return None

    def explain(self) -> str:
        """A plain-English description, e.g. ``"At 09:00, Monday through Friday"``."""
        from .explain import explain

        return explain(self.expression, self.hash_key)


def utc_offset_text(moment: datetime) -> str:
    """``+05:30``-style offset of an aware datetime, for people."""
    offset = moment.utcoffset() or timedelta(0)
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


__all__ = ["CronExpression", "get_engine", "utc_offset_text"]
