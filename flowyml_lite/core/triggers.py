"""Triggers: the one place that computes fire instants (DESIGN §2).

A trigger is built from a schedule's definition alone (type, value, zone, start and end dates),
so every process sharing a store computes the same instants, and orphans can be handled without
their function. All instants in and out are aware UTC datetimes.
"""

from __future__ import annotations

import abc
import hashlib
import math
from datetime import datetime, timedelta
from typing import Any, Callable, Generator, Iterator, List, Optional, Tuple, Union

from ..cron.contract import CronEngine
from ..cron.expression import CronExpression
from ..errors import ScheduleError
from ..timezones import UTC, ZoneProvider, get_zone, iter_fires_utc, to_utc_naive

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


class Trigger(abc.ABC):
    """Computes the fire instants of one schedule."""

    __slots__ = ()

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
    """Fires on a cron expression in a zone; ``H`` fields hash on the schedule name.

    ``next_after`` is what ``CronExpression.next_utc`` returns, but a call that continues from the
    previous result (``next_after(fire)`` after ``fire = next_after(...)``, what a scheduler does
    fire after fire) resumes a search kept from that call instead of starting over: it costs about
    what iterating costs. Every other call searches from scratch. The fire instants form a fixed set
    that does not depend on where a search starts (DESIGN §3), so both give the same instants.
    """

    __slots__ = ("_errors", "_last", "_send", "cron")

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
        # The ``send`` of a kept search, once this trigger was asked again from its own last answer;
        # until then the last answer, to recognize that call. Nothing else per trigger: a scheduler
        # may hold 100,000 of them.
        self._send: Optional[Callable[[datetime], Any]] = None
        self._last: Optional[datetime] = None
        self._errors: Optional[List[Exception]] = None  # what the kept search met, to raise here

    def next_after(self, after: datetime) -> Optional[datetime]:
        send = self._send
        if send is None:
            # No search kept yet: only a schedule asked again from its own last fire is worth one
            # (each kept search holds 1-2 KB, so a schedule that never fires twice keeps none).
            last = self._last
            if last is not None and (after is last or after == last):
                errors: List[Exception] = []
                send = _start_search(self.cron, errors)
                if send is not None:
                    self._send, self._errors = send, errors
            if send is None:
                found = self._last = self.cron.next_utc(after)
                return found
        try:
            got = send(after)
        except ValueError:  # "generator already executing": another thread is in it; search alone
            return self.cron.next_utc(after)
        except StopIteration:  # the kept search ended (an interrupt inside it): start over
            self._send = self._last = None
            return self.cron.next_utc(after)
        if got is _FAILED:
            raise self._errors.pop()  # type: ignore[union-attr]
        return got  # type: ignore[no-any-return]


#: What a kept search yields when ``after`` raised; the exception waits in the trigger's
#: ``_errors`` (raising it inside would end the search, which must outlive a bad argument).
_FAILED = object()


#: At most this many kept searches at once in the process (about 1-2 KB each); past it,
#: further triggers search from scratch on every call.
MAX_RESUMABLE = 20_000
_resumable = [0]


def _start_search(cron: CronExpression, errors: List[Exception]) -> Optional[Callable[[datetime], Any]]:
    if _resumable[0] >= MAX_RESUMABLE:
        return None
    search = _resume_search(cron, errors)
    next(search)
    return search.send


def _resume_search(cron: CronExpression, errors: List[Exception]) -> Generator[Any, datetime, None]:
    """Receives ``after``, yields the first fire strictly after it, keeping its place between calls.

    It holds ``lo <= ... < nxt`` such that no fire lies in ``(lo, nxt)``: an ``after`` in
    ``[lo, nxt)`` is answered with ``nxt``, an ``after`` equal to ``nxt`` with the fire after it,
    and any other ``after`` starts a new search there. Errors are not raised (that would end the
    generator) but put in ``errors`` and announced by yielding ``_FAILED``. It references only the
    expression and that list, not the trigger, so a trigger that goes away takes it along.
    """
    _resumable[0] += 1
    try:
        after: datetime = yield None
        while True:
            try:
                fires = _utc_fires(cron, after)
                if fires is None:  # next_utc answers None there; nothing is known about later instants
                    after = yield None
                    continue
                step = fires.__next__
                lo = after
                try:
                    nxt: Optional[datetime] = step()
                except StopIteration:
                    nxt = None
                while True:
                    after = yield nxt
                    if after is nxt or after == nxt:
                        lo = after
                        try:
                            nxt = step()
                        except StopIteration:
                            nxt = None
                        continue
                    try:
                        inside = lo <= after and (nxt is None or after < nxt)
                    except TypeError:  # a naive ``after``: the new search refuses it as next_utc does
                        inside = False
                    if not inside:
                        break  # elsewhere: search again from there
            except Exception as exc:  # handed to the caller by next_after
                errors.append(exc)
                after = yield _FAILED
    finally:
        _resumable[0] -= 1


def _utc_fires(cron: CronExpression, after: datetime) -> Optional[Iterator[datetime]]:
    """The fire instants strictly after ``after`` as aware UTC datetimes (what ``next_utc`` gives),
    or None when ``after`` in UTC lies outside what datetime can represent."""
    try:
        start = to_utc_naive(after)
    except OverflowError:  # beyond what datetime represents in UTC
        return None
    return iter_fires_utc(cron.compiled, cron.zone, start)


class IntervalTrigger(Trigger):
    """Fires every ``seconds`` on a fixed grid anchored at ``anchor`` (the Unix epoch by default).

    The grid depends only on the definition, so replicas declaring the same interval at
    different moments agree on every instant, and a slow run never shifts later fires.
    """

    __slots__ = ("anchor", "period_us")

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


class OnceTrigger(Trigger):
    """Fires once, at ``at`` (a one-off: ``schedule_type`` "once"), then never again."""

    __slots__ = ("at",)

    def __init__(self, at: datetime) -> None:
        if at.utcoffset() is None:
            raise ScheduleError(f"a one-off needs an aware instant, got {at.isoformat()} without a zone")
        self.at = at.astimezone(UTC)

    def next_after(self, after: datetime) -> Optional[datetime]:
        return self.at if after < self.at else None

    def fires_until(self, after: datetime, until: datetime, limit: int) -> Tuple[List[datetime], int]:
        if after < self.at <= until:
            return ([self.at] if limit > 0 else []), 1
        return [], 0


class BoundedTrigger(Trigger):
    """Another trigger's fires from ``start`` on (inclusive) and up to ``end`` (inclusive) only."""

    __slots__ = ("_before_start", "end", "start", "trigger")

    def __init__(self, trigger: Trigger, start: Optional[datetime], end: Optional[datetime]) -> None:
        if start is not None and end is not None and end <= start:
            raise ScheduleError(
                f"end_date must be after start_date, got start_date={start.isoformat()} "
                f"and end_date={end.isoformat()}"
            )
        self.trigger = trigger
        self.start = start.astimezone(UTC) if start is not None else None
        self.end = end.astimezone(UTC) if end is not None else None
        # A search from here finds the first fire at or after ``start``.
        self._before_start = self.start - _US if self.start is not None else None

    def next_after(self, after: datetime) -> Optional[datetime]:
        if self._before_start is not None and after < self._before_start:
            after = self._before_start
        end = self.end
        if end is not None and after >= end:
            return None
        fire = self.trigger.next_after(after)
        if fire is None or (end is not None and fire > end):
            return None
        return fire

    def fires_until(self, after: datetime, until: datetime, limit: int) -> Tuple[List[datetime], int]:
        if self._before_start is not None and after < self._before_start:
            after = self._before_start
        if self.end is not None and until > self.end:
            until = self.end
        if until <= after:
            return [], 0
        return self.trigger.fires_until(after, until, limit)


def bounded(trigger: Trigger, start: Optional[datetime] = None, end: Optional[datetime] = None) -> Trigger:
    """``trigger`` limited to fires in [start, end] (either may be None); itself when both are None."""
    if start is None and end is None:
        return trigger
    return BoundedTrigger(trigger, start, end)


def build_trigger(
    schedule_type: str,
    schedule_value: str,
    timezone: str,
    name: str,
    engine: Union[str, CronEngine] = "native",
    zone_provider: Union[str, ZoneProvider] = "zoneinfo",
    *,
    start_date: Optional[datetime] = None,
    end_date: Optional[datetime] = None,
) -> Trigger:
    """The trigger for a stored definition; raises ScheduleError/CronError/TimezoneError if invalid.

    ``start_date``/``end_date`` (aware; ``Options.start_date``/``end_date``) bound every type: the
    first fire is at or after the start, none is after the end. An interval's grid is anchored at
    its start date when it has one (else at the Unix epoch), so ``hours=24`` from a 09:00 start fires
    at 09:00.
    """
    if schedule_type == "interval":
        get_zone(timezone, zone_provider)  # validated even though elapsed time ignores it
        try:
            seconds = float(schedule_value)
        except ValueError:
            raise ScheduleError(f"interval value {schedule_value!r} is not a number of seconds") from None
        return bounded(IntervalTrigger(seconds, anchor=start_date), start_date, end_date)
    if schedule_type in ("cron", "daily", "hourly"):
        trigger: Trigger = CronTrigger(
            cron_text(schedule_type, schedule_value), timezone, name, engine, zone_provider
        )
        return bounded(trigger, start_date, end_date)
    if schedule_type == "once":
        get_zone(timezone, zone_provider)  # the zone its instants are shown in
        at = parse_instant(schedule_value, "a one-off's instant")
        return bounded(OnceTrigger(at), start_date, end_date)
    raise ScheduleError(
        f"unknown schedule type {schedule_type!r}; expected cron, daily, hourly, interval or once"
    )


def parse_instant(value: Union[str, datetime], what: str = "at") -> datetime:
    """An aware datetime, or ISO 8601 text with an offset (``Z`` too), as an aware UTC datetime."""
    moment: Any = value
    if isinstance(value, str):
        text = value.strip()
        if text[-1:] in ("Z", "z"):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ScheduleError(
                f"{what} must be an ISO 8601 date and time with an offset, "
                f"e.g. '2025-01-01T09:00:00+01:00' or '2025-01-01T08:00:00Z', got {value!r}"
            ) from None
    if not isinstance(moment, datetime):
        raise ScheduleError(
            f"{what} must be an aware datetime or ISO 8601 text with an offset, "
            f"got {type(value).__name__}: {value!r}"
        )
    if moment.utcoffset() is None:
        raise ScheduleError(
            f"{what} {value!r} has no time zone: pass an aware datetime "
            "(e.g. datetime(2025, 1, 1, 9, tzinfo=ZoneInfo('Europe/London'))) or ISO text with an offset "
            "('2025-01-01T09:00:00+00:00')"
        )
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ScheduleError(f"{what} {value!r} is outside the range of datetime in UTC") from None


def once_value(at: Union[str, datetime, None]) -> str:
    """The ``schedule_value`` of a one-off at ``at``: the instant as ISO 8601 text in UTC.

    One text for one instant, whatever zone ``at`` was given in, so re-declaring the same one-off
    is the same definition.
    """
    if at is None:
        raise ScheduleError("schedule_once needs at=: an aware datetime or ISO 8601 text with an offset")
    return parse_instant(at).isoformat()


def jitter_delay(name: str, fire: datetime, jitter_seconds: float) -> float:
    """Seconds in [0, jitter_seconds) to wait before starting ``name``'s run of ``fire``.

    Derived from a hash of (name, fire instant), so every process computes the same delay for the
    same fire (a start spread over the window, not a random one); the claim key stays ``fire``.
    """
    if not jitter_seconds > 0:
        return 0.0
    micros = (fire - _EPOCH) // _US
    digest = hashlib.blake2b(f"{micros}:{name}".encode(), digest_size=8).digest()
    fraction = (int.from_bytes(digest, "big") >> 11) / 9007199254740992.0  # 53 bits: [0, 1)
    delay = fraction * jitter_seconds
    return delay if delay < jitter_seconds else math.nextafter(jitter_seconds, 0.0)


def cron_text(schedule_type: str, schedule_value: str) -> str:
    """The cron expression behind a cron, daily ("HH:MM") or hourly ("M") schedule value."""
    if schedule_type == "daily":
        hour, _, minute = schedule_value.partition(":")
        return f"{int(minute)} {int(hour)} * * *"
    if schedule_type == "hourly":
        return f"{int(schedule_value)} * * * *"
    return schedule_value
