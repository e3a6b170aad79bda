"""The zone layer: time zone lookup and the DST rules of DESIGN §3, applied once for every engine.

A ``Zone`` cuts time into *segments*: spans of real time with one UTC offset, bounded by the
zone's transitions (and by the start of each UTC year, which keeps the tables small and lazy).
Inside a segment wall time = instant + offset, so a cron engine's naive wall-clock search maps
straight to instants; the rules below decide what happens where two segments meet.

Rules (cronie's ``cron.8``; DESIGN §3). An expression is fixed-time when neither its minute nor
its hour field starts with ``*``:
- fixed-time, wall time skipped by a forward jump: fires once, at the first instant after the gap;
- fixed-time, wall time repeated by a backward jump: fires once, at the first occurrence;
- frequent: fires at every real instant whose wall time matches (skipped walls never, repeated twice);
- the fire instants form a fixed set that does not depend on where a search starts.
"""

from __future__ import annotations

import bisect
import difflib
import sys
import threading
from datetime import datetime, timedelta, timezone, tzinfo
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Protocol,
    Tuple,
    Union,
)

from .errors import MissingTimezoneDatabaseError, UnknownTimezoneError

if TYPE_CHECKING:  # the cron package imports this module; only the type is needed here
    from .cron.contract import CompiledCron


UTC = timezone.utc
_US = timedelta(microseconds=1)
_DAY = timedelta(days=1)
_SECOND = timedelta(seconds=1)
_END_OF_TIME = datetime.max
# Every UTC offset in the tz database, local mean times included, is below +16:00.
_MAX_OFFSET = timedelta(hours=17)
_MIN_WALL = datetime(1, 1, 2)
_ANCHOR = datetime(2000, 1, 1)
_UTC_ANCHOR = datetime(2000, 1, 1, tzinfo=UTC)
_UTC_NAMES = frozenset({"UTC", "Etc/UTC", "Z", "Etc/Zulu", "Zulu", "Universal", "Etc/Universal"})


class ZoneProvider(Protocol):
    """Finds a ``tzinfo`` by IANA name; registered under ``flowyml_lite.timezones``.

    ``get`` raises UnknownTimezoneError (with close names) or MissingTimezoneDatabaseError.
    The zone layer only ever calls ``instant.astimezone(tz)`` on what it returns, which
    zoneinfo and pytz both implement correctly.
    """

    name: str

    def get(self, key: str) -> tzinfo: ...


class ZoneinfoProvider:
    """Zones from the standard library's ``zoneinfo`` (system tz database or the tzdata package)."""

    name = "zoneinfo"

    def get(self, key: str) -> tzinfo:
        if not isinstance(key, str) or not key.strip():
            raise UnknownTimezoneError(str(key))
        if key in _UTC_NAMES:
            return UTC  # works even on a machine without any tz database
        import zoneinfo

        try:
            return zoneinfo.ZoneInfo(key)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            pass
        names = _available_zone_names()
        if not names:
            raise MissingTimezoneDatabaseError(key) from None
        raise UnknownTimezoneError(key, suggest_zone_names(key, names)) from None


_zone_names: Optional[List[str]] = None


def _available_zone_names() -> List[str]:
    global _zone_names
    if _zone_names is None:
        import zoneinfo

        try:
            _zone_names = sorted(zoneinfo.available_timezones())
        except Exception:  # a broken tzdata install must not hide the real error
            _zone_names = []
    return _zone_names


def suggest_zone_names(key: str, names: List[str], limit: int = 3) -> List[str]:
    """Close IANA names for a mistyped ``key`` (case-insensitive, also by the city part alone)."""
    lowered = {name.lower(): name for name in names}
    exact = lowered.get(key.lower())
    if exact:
        return [exact]
    found = [lowered[m] for m in difflib.get_close_matches(key.lower(), list(lowered), n=limit, cutoff=0.6)]
    city = key.replace(" ", "_").lower()
    for name in names:
        if len(found) >= limit:
            break
        if name.lower().rsplit("/", 1)[-1] == city and name not in found:
            found.append(name)
    return found


class Segment(NamedTuple):
    """A span [start, end) of real time (naive UTC) during which the zone's offset is constant."""

    start: datetime
    end: datetime
    offset: timedelta
    prev_offset: timedelta  # the offset just before ``start``: tells a gap or a fold at ``start``


class Zone:
    """A time zone with its transitions, found by probing ``tzinfo`` and cached per UTC year.

    Works with any tzinfo that implements ``fromutc`` (zoneinfo, pytz, fixed offsets).
    """

    def __init__(self, key: str, tz: tzinfo) -> None:
        self.key = key
        self.tzinfo = tz
        self._years: Dict[int, Tuple[List[datetime], List[Segment]]] = {}
        #: The offset of a zone that never changes it (UTC, fixed offsets), else None.
        self.fixed_offset: Optional[timedelta] = tz.utcoffset(None) if isinstance(tz, timezone) else None
        #: True when a wall time with this tzinfo attached (and ``fold`` set) is a correct local
        #: datetime: PEP 495 zones such as zoneinfo's, unlike pytz's, which need ``localize``.
        zoneinfo = sys.modules.get("zoneinfo")
        #: A fixed local datetime: ``aware - anchor + naive_anchor`` strips the zone without ``replace``.
        self.anchor = datetime(2000, 1, 1, tzinfo=tz)
        self.attachable = isinstance(tz, timezone) or (
            zoneinfo is not None and isinstance(tz, zoneinfo.ZoneInfo)
        )
        self._mutex = threading.Lock()

    def __repr__(self) -> str:
        return f"Zone({self.key!r})"

    def offset_at(self, instant: datetime) -> timedelta:
        """UTC offset in force at the naive UTC ``instant``."""
        return self.segment(instant).offset

    def wall(self, instant: datetime) -> datetime:
        """Naive wall-clock time at the naive UTC ``instant``."""
        return instant + self.segment(instant).offset

    def localize(self, instant: datetime) -> datetime:
        """The naive UTC ``instant`` as an aware datetime in this zone (fold set where needed)."""
        tz = self.tzinfo
        if tz is UTC:
            return instant.replace(tzinfo=UTC)
        return tz.fromutc(instant.replace(tzinfo=tz))  # astimezone without its UTC round trip

    def segment(self, instant: datetime) -> Segment:
        """The segment containing the naive UTC ``instant``."""
        starts, segments = self._year(instant.year)
        return segments[bisect.bisect_right(starts, instant) - 1]

    def next_segment(self, seg: Segment) -> Optional[Segment]:
        """The segment that starts where ``seg`` ends, or None at the end of representable time."""
        if seg.end == _END_OF_TIME:
            return None
        starts, segments = self._year(seg.end.year)
        return segments[bisect.bisect_right(starts, seg.end) - 1]

    def _probe(self, instant: datetime) -> timedelta:
        try:
            offset = instant.replace(tzinfo=UTC).astimezone(self.tzinfo).utcoffset()
        except OverflowError:  # hours from datetime.min/max: the offset of the nearest day in range
            nearer = instant + _DAY if instant.year == 1 else instant - _DAY
            offset = nearer.replace(tzinfo=UTC).astimezone(self.tzinfo).utcoffset()
        return offset if offset is not None else timedelta(0)

    def _year(self, year: int) -> Tuple[List[datetime], List[Segment]]:
        table = self._years.get(year)
        if table is None:
            with self._mutex:
                table = self._years.get(year)
                if table is None:
                    table = self._build_year(year)
                    self._years[year] = table
        return table

    def _build_year(self, year: int) -> Tuple[List[datetime], List[Segment]]:
        start = datetime(year, 1, 1)
        end = datetime(year + 1, 1, 1) if year < 9999 else _END_OF_TIME
        transitions: List[Tuple[datetime, timedelta]] = []  # (instant, offset from then on)
        if isinstance(self.tzinfo, timezone):
            first = prev = self._probe(start)
        else:
            first = self._probe(start - _SECOND) if year > 1 else self._probe(start)
            prev = first
            if self._probe(start) != first:
                prev = self._probe(start)
                transitions.append((start, prev))
            # Daily samples find every transition that does not revert within a day; a bisection
            # to the second then pins it down (transitions fall on whole seconds).
            day = start
            last_day = datetime(year, 12, 31) if year < 9999 else datetime(year, 12, 30)
            while day <= last_day:
                nxt = day + _DAY
                offset = self._probe(nxt)
                if offset != prev:
                    lo, hi = day, nxt  # offset(lo) == prev, offset(hi) != prev
                    while hi - lo > _SECOND:
                        mid = lo + (hi - lo) // 2
                        mid = mid.replace(microsecond=0)
                        if mid <= lo:
                            mid = lo + _SECOND
                        if self._probe(mid) == prev:
                            lo = mid
                        else:
                            hi = mid
                    if hi < end:
                        transitions.append((hi, self._probe(hi)))
                    prev = offset
                day = nxt
        segments: List[Segment] = []
        seg_start, seg_offset, before = start, first, first
        if transitions and transitions[0][0] == start:
            seg_offset = transitions.pop(0)[1]
        for instant, offset in transitions:
            segments.append(Segment(seg_start, instant, seg_offset, before))
            before, seg_start, seg_offset = seg_offset, instant, offset
        segments.append(Segment(seg_start, end, seg_offset, before))
        return [s.start for s in segments], segments


class ZoneRegistry:
    """Zones by (provider, key), built once: transition tables are worth keeping."""

    def __init__(self) -> None:
        self._zones: Dict[Tuple[str, str], Zone] = {}
        self._named: Dict[Tuple[str, str], Zone] = {}  # (provider as named by the caller, key)
        self._mutex = threading.Lock()

    def get(self, key: str, provider: Union[str, ZoneProvider] = "zoneinfo") -> Zone:
        named = provider if isinstance(provider, str) else None
        if named is not None:  # the common case, without resolving the provider's name each time
            found = self._named.get((named, key))
            if found is not None:
                return found
        prov = get_provider(provider)
        cache_key = (prov.name, key)
        zone = self._zones.get(cache_key)
        if zone is None:
            tz = prov.get(key)
            with self._mutex:
                zone = self._zones.setdefault(cache_key, Zone(key, tz))
        if named is not None:
            self._named[(named, key)] = zone
        return zone


def get_provider(provider: Union[str, ZoneProvider]) -> ZoneProvider:
    """The zone provider named ``provider`` (``zoneinfo``, ``pytz``, a plugin), or ``provider`` itself."""
    if not isinstance(provider, str):
        return provider
    if provider == "zoneinfo":
        return _ZONEINFO
    from . import plugins

    found = plugins.get("timezones", provider)
    return found() if isinstance(found, type) else found  # type: ignore[no-any-return]


_ZONEINFO = ZoneinfoProvider()
_REGISTRY = ZoneRegistry()


def get_zone(key: str, provider: Union[str, ZoneProvider] = "zoneinfo") -> Zone:
    """The Zone for an IANA name, e.g. ``get_zone("America/New_York")``; cached."""
    return _REGISTRY.get(key, provider)


def to_utc_naive(moment: datetime) -> datetime:
    """An aware datetime as naive UTC; naive input is refused (a guess would shift fires)."""
    try:
        offset = moment.utcoffset()
    except (AttributeError, TypeError):  # not a datetime (a string, a date, a number)
        raise TypeError(
            f"expected an aware datetime, got {type(moment).__name__} {moment!r}"
            + (": parse it first, e.g. datetime.fromisoformat(text)" if isinstance(moment, str) else "")
        ) from None
    if offset is None:
        raise ValueError(
            f"{moment.isoformat()} has no time zone: pass an aware datetime, "
            "e.g. datetime.now(timezone.utc) or dt.replace(tzinfo=ZoneInfo('Europe/London'))"
        )
    return moment.replace(tzinfo=None) - offset


def iter_fires(
    cron: CompiledCron, zone: Zone, after: datetime, convert: Optional[Callable[[datetime], Any]] = None
) -> Iterator[Any]:
    """Fire instants (naive UTC) strictly after naive UTC ``after``, in order, by the DST rules.

    ``convert`` (e.g. ``zone.localize``) is applied to each instant before it is yielded.
    """
    # Localizing means attaching the zone to the wall time (fold set in a fold's second pass).
    # Engines that can attach it while they build each wall save a conversion per fire.
    local = zone.tzinfo if convert == zone.localize and zone.attachable else None
    if zone.fixed_offset is not None:  # no transitions: wall time is the instant shifted
        try:
            wall_from = after + zone.fixed_offset
        except OverflowError:  # the next fire lies outside what datetime can represent
            return iter(())
        if local is not None:
            return _walls(cron, wall_from, local)
        return _iter_fixed_offset(cron, zone.fixed_offset, wall_from, convert)
    if local is not None:
        return _iter_zone_fires(cron, zone, after, None, local)
    return _iter_zone_fires(cron, zone, after, convert, None)


def iter_fires_utc(cron: CompiledCron, zone: Zone, after: datetime) -> Iterator[datetime]:
    """The instants of ``iter_fires`` as aware UTC datetimes, made as cheaply as localized ones.

    The engine attaches UTC to each wall time as it builds it (a stand-in zone: wall and instant
    differ by the segment's offset, which one subtraction removes), so no per-fire conversion.
    """
    offset = zone.fixed_offset
    if offset is not None:
        try:
            wall_from = after + offset
        except OverflowError:
            return iter(())
        if not offset:
            return _walls(cron, wall_from, UTC)
        return _shifted(cron, wall_from, offset)
    return _iter_zone_fires(cron, zone, after, None, UTC, utc=True)


def _shifted(cron: CompiledCron, wall_from: datetime, offset: timedelta) -> Iterator[datetime]:
    try:
        for wall in _walls(cron, wall_from, UTC):
            yield wall - offset
    except OverflowError:  # the next fire lies outside what datetime can represent
        return


def walls(cron: CompiledCron, after: datetime, tz: Optional[tzinfo] = None) -> Iterator[datetime]:
    """The engine's matching wall times strictly after naive ``after``, with ``tz`` attached if given."""
    fast = getattr(cron, "iter_walls", None)  # optional: the native engine has it
    if fast is not None:
        return fast(after, tz)  # type: ignore[no-any-return]
    return _walls_by_next(cron.next_wall, after, tz)


_walls = walls


def _walls_by_next(
    next_wall: Callable[[datetime], Optional[datetime]], after: datetime, tz: Optional[tzinfo]
) -> Iterator[datetime]:
    wall = next_wall(after)
    while wall is not None:
        yield wall if tz is None else wall.replace(tzinfo=tz)
        wall = next_wall(wall)


def _iter_zone_fires(
    cron: CompiledCron,
    zone: Zone,
    after: datetime,
    convert: Optional[Callable[[datetime], Any]],
    local: Optional[tzinfo],
    utc: bool = False,
) -> Iterator[Any]:
    """Fires in a zone with transitions: naive UTC instants, or aware walls when ``local`` is set.

    With ``utc`` (and ``local`` = UTC as a stand-in for the zone), aware UTC instants instead.
    """
    fixed = cron.is_fixed_time
    seg = zone.segment(after)
    try:
        wall_from = after + seg.offset
    except OverflowError:
        if after.year > 1:  # within hours of datetime.max: no later wall time can be represented
            return
        wall_from = datetime.min  # within hours of datetime.min: search from the first wall time
    # ``walls`` yields (aware with ``local``, else naive) the matches after the wall time
    # ``searched``; ``wall`` (naive) is the first of them not yet used. It also answers any search
    # that starts in [searched, wall), so crossing into a new segment rarely searches again.
    # aware - anchor + _ANCHOR is the naive wall; the reverse attaches the zone
    anchor = _UTC_ANCHOR if utc else zone.anchor
    walls: Iterator[datetime] = iter(())
    w: Optional[datetime] = None
    wall: Optional[datetime] = None
    searched = wall_from
    try:
        while True:
            offset = seg.offset
            if fixed and seg.prev_offset > offset:
                # Second pass of a fold: these walls already fired at their first occurrence.
                first_new_wall = seg.start + seg.prev_offset - _US
                if first_new_wall > wall_from:
                    wall_from = first_new_wall
            if wall is None or not searched <= wall_from < wall:
                walls = _walls(cron, wall_from, local)
                w = next(walls, None)
                if w is None:
                    return
                wall = w if local is None else w - anchor + _ANCHOR
                searched = wall_from
            try:
                wall_end = seg.end + offset  # walls before it lie in this segment
            except OverflowError:
                wall_end = _END_OF_TIME
            if wall < wall_end:
                last = wall
                if local is None:
                    yield wall - offset if convert is None else convert(wall - offset)
                    for w in walls:
                        if w >= wall_end:
                            break
                        yield w - offset if convert is None else convert(w - offset)
                        last = w
                    else:
                        return
                    wall = w
                else:
                    if w is None:  # not reached: ``wall`` was taken from ``w``
                        return
                    aware_end = anchor + (wall_end - _ANCHOR)
                    shown = w  # the last aware wall yielded (one always is: w < aware_end here)
                    if seg.prev_offset > offset and wall < seg.start + seg.prev_offset:
                        # A frequent expression's walls in the second pass of a fold.
                        fold_end = anchor + (seg.start + seg.prev_offset - _ANCHOR)
                        while w < fold_end and w < aware_end:
                            yield w - offset if utc else w.replace(fold=1)
                            shown = w
                            following = next(walls, None)
                            if following is None:
                                return
                            w = following
                    if w < aware_end:
                        yield w - offset if utc else w
                        shown = w
                        for w in walls:
                            if w >= aware_end:
                                break
                            yield w - offset if utc else w
                            shown = w
                        else:
                            return
                    last = shown - anchor + _ANCHOR
                    wall = w - anchor + _ANCHOR
                wall_from = searched = last  # from here on, no wall matches until ``wall``
            # ``wall`` lies past this segment: cross into the next one.
            nxt = zone.next_segment(seg)
            if nxt is None:
                return
            target = wall - _MAX_OFFSET if wall > _MIN_WALL else nxt.start
            if target > nxt.end and (fixed or nxt.offset >= offset or nxt.start + nxt.offset > wall_from):
                # No wall in (wall_from, wall) matches, so no fire lies before ``wall``'s earliest
                # possible instant: gaps on the way only skip non-matching walls, folds only repeat
                # them (this boundary's fold, if any, repeats walls already searched), and any gap or
                # fold that holds ``wall`` itself comes after ``target``. Resume the search there.
                seg = zone.segment(target)
                wall_from = target + seg.offset - _US
                continue
            seg = nxt
            wall_from = seg.start + seg.offset - _US
            if fixed and seg.offset > offset and wall < wall_from + _US:
                # A fixed-time wall inside the gap fires once, at the first instant after it; that
                # instant's own wall is then done, so the search resumes strictly after it.
                if utc:
                    yield _UTC_ANCHOR + (seg.start - _ANCHOR)
                elif local is not None:
                    yield local.fromutc(seg.start.replace(tzinfo=local))
                else:
                    yield seg.start if convert is None else convert(seg.start)
                wall_from += _US
    except OverflowError:  # the next fire lies outside what datetime can represent
        return


def _iter_fixed_offset(
    cron: CompiledCron, offset: timedelta, wall_from: datetime, convert: Optional[Callable[[datetime], Any]]
) -> Iterator[Any]:
    try:
        for wall in _walls(cron, wall_from, None):
            instant = wall - offset
            yield instant if convert is None else convert(instant)
    except OverflowError:  # the next fire lies outside what datetime can represent
        return
