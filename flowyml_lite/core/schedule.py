"""Schedules as users see them, and the validation of a definition before anything is stored."""

from __future__ import annotations

import hashlib
import inspect
import json
import json.encoder
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

from ..errors import ScheduleError
from ..stores.base import ScheduleRecord
from ..timezones import ZoneProvider, get_zone
from .options import (
    CATCHUP_POLICIES,
    MAX_RETRY_DELAY_SECONDS,
    OPTION_NAMES,
    Options,
    matches_retry_on,
    options_json,
    parse_options,
    qualified_name,
    retry_delay,
    retry_on_names,
    shared_options_dict,
    should_retry,
    validate_options,
)
from .triggers import jitter_delay, once_value

__all__ = [
    "CATCHUP_POLICIES",
    "MAX_RETRY_DELAY_SECONDS",
    "OPTION_NAMES",
    "SCHEDULE_TYPES",
    "Options",
    "Schedule",
    "as_stored",
    "definition_hash",
    "interval_seconds",
    "jitter_delay",
    "matches_retry_on",
    "once_value",
    "parse_options",
    "qualified_name",
    "retry_delay",
    "retry_on_names",
    "shared_options_dict",
    "should_retry",
    "to_schedule",
    "validate_context",
    "validate_name",
    "validate_options",
    "validate_timezone",
]

if TYPE_CHECKING:
    pass

SCHEDULE_TYPES = ("cron", "daily", "hourly", "interval", "once")
MAX_NAME_LENGTH = 200
MAX_INTERVAL_SECONDS = 36500 * 86400.0  # longer intervals overflow datetime arithmetic near year 9999
_encode_str: Callable[[str], str] = json.encoder.encode_basestring_ascii  # json.dumps of a str, faster


@dataclass
class Schedule:
    """A schedule and its state (what ``list_schedules()`` returns), as in flowyml's guide.

    ``next_run`` and ``last_run`` are aware datetimes in the schedule's zone.
    """

    pipeline_name: str
    schedule_type: str
    schedule_value: str
    pipeline_func: Optional[Callable[[], Any]] = field(default=None, repr=False, compare=False)
    context: Dict[str, Any] = field(default_factory=dict)
    enabled: bool = True
    last_run: Optional[datetime] = None
    next_run: Optional[datetime] = None
    timezone: str = "UTC"
    misfire_grace_seconds: float = 60.0
    catchup: str = "latest"
    max_catchup: int = 100
    max_instances: int = 1
    is_orphan: bool = False
    #: Seconds a run may take before it is recorded ``timed_out`` (None: no limit).
    timeout_seconds: Optional[float] = None
    #: Attempts after a failed one (0: none), waiting ``retry_delay_seconds`` times
    #: ``retry_backoff`` to the power of the attempts before; only for ``retry_on`` errors if set.
    retries: int = 0
    retry_delay_seconds: float = 10.0
    retry_backoff: float = 2.0
    #: Qualified names of the exception classes worth a retry ("builtins.ValueError"); None: any.
    retry_on: Optional[Tuple[str, ...]] = None
    executor: str = "thread"
    #: Each run starts up to this many seconds after its fire instant (the same delay in every process).
    jitter_seconds: float = 0.0
    #: No fire before ``start_date``, none after ``end_date`` (aware datetimes in the schedule's zone).
    start_date: Optional[datetime] = None
    end_date: Optional[datetime] = None

    @property
    def name(self) -> str:
        return self.pipeline_name

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready form (instants as ISO 8601 with their offsets)."""
        return {
            "pipeline_name": self.pipeline_name,
            "schedule_type": self.schedule_type,
            "schedule_value": self.schedule_value,
            "context": self.context,
            "enabled": self.enabled,
            "last_run": self.last_run.isoformat() if self.last_run else None,
            "next_run": self.next_run.isoformat() if self.next_run else None,
            "timezone": self.timezone,
            "misfire_grace_seconds": self.misfire_grace_seconds,
            "catchup": self.catchup,
            "max_catchup": self.max_catchup,
            "max_instances": self.max_instances,
            "is_orphan": self.is_orphan,
            "timeout_seconds": self.timeout_seconds,
            "retries": self.retries,
            "retry_delay_seconds": self.retry_delay_seconds,
            "retry_backoff": self.retry_backoff,
            "retry_on": list(self.retry_on) if self.retry_on is not None else None,
            "executor": self.executor,
            "jitter_seconds": self.jitter_seconds,
            "start_date": self.start_date.isoformat() if self.start_date else None,
            "end_date": self.end_date.isoformat() if self.end_date else None,
        }


def validate_name(name: object) -> str:
    """A schedule name: a non-empty string of printable characters, at most 200 long."""
    if not isinstance(name, str) or not name.strip():
        raise ScheduleError(f"a schedule name must be a non-empty string, got {name!r}")
    if len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise ScheduleError(
            f"schedule name {name[:40]!r}... must be printable and at most {MAX_NAME_LENGTH} characters"
        )
    return name


def validate_context(context: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """A context dict that the store can keep (JSON-serializable)."""
    if context is None:
        return {}
    if not isinstance(context, dict):
        raise ScheduleError(f"context must be a dict, got {type(context).__name__}")
    try:
        json.dumps(context, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        hint = " (NaN and infinity have no JSON form)" if isinstance(exc, ValueError) else ""
        raise ScheduleError(f"context must be JSON-serializable to be stored: {exc}{hint}") from None
    return dict(context)


def as_stored(context: Dict[str, Any]) -> Dict[str, Any]:
    """A validated context as a store gives it back: a JSON round trip (tuples become lists, a copy)."""
    return json.loads(json.dumps(context)) if context else {}


def validate_timezone(timezone: object, provider: str | ZoneProvider) -> str:
    """The IANA name of ``timezone``: a name, or a zone object that carries one (``ZoneInfo``'s
    ``key``, pytz's ``zone``); a fixed offset or a local zone without a name is refused."""
    if not isinstance(timezone, str):
        named = getattr(timezone, "key", None) or getattr(timezone, "zone", None)
        if not isinstance(named, str):
            raise ScheduleError(
                f"timezone must be an IANA name such as 'Europe/London' (or a ZoneInfo of one), "
                f"got {timezone!r}"
            )
        timezone = named
    get_zone(timezone, provider)  # raises UnknownTimezoneError with suggestions
    return timezone


_PLAIN_NUMBERS = (int, float)


def interval_seconds(days: float, hours: float, minutes: float, seconds: float) -> float:
    """The total of an interval's parts; each must be a finite number >= 0 and the total > 0."""
    # The common case at once (an exact int or float: never a bool); anything else is checked below.
    if (
        type(days) in _PLAIN_NUMBERS
        and type(hours) in _PLAIN_NUMBERS
        and type(minutes) in _PLAIN_NUMBERS
        and type(seconds) in _PLAIN_NUMBERS
        and days >= 0
        and hours >= 0
        and minutes >= 0
        and seconds >= 0
    ):
        total = days * 86400 + hours * 3600 + minutes * 60 + seconds
        if 0.001 <= total <= MAX_INTERVAL_SECONDS:  # False for nan, and inf is over the maximum
            return total
    for arg, value in (("days", days), ("hours", hours), ("minutes", minutes), ("seconds", seconds)):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            raise ScheduleError(f"interval {arg} must be a finite number >= 0, got {value!r}")
    total = days * 86400 + hours * 3600 + minutes * 60 + seconds
    if total < 0.001:
        raise ScheduleError(
            f"an interval must be at least 1 ms, got {total!r} s: "
            "pass hours=, minutes= or seconds= (e.g. minutes=30)"
        )
    if total > MAX_INTERVAL_SECONDS:
        raise ScheduleError(
            f"an interval must be at most 100 years ({MAX_INTERVAL_SECONDS:.0f} s), got {total!r} s: "
            "for something that rare, use a cron expression with a year field"
        )
    return total


def definition_hash(
    schedule_type: str, value: str, timezone: str, options: Options, context: Dict[str, Any]
) -> str:
    """What identifies a definition: re-declaring with the same hash keeps the stored state.

    The sha256 of ``json.dumps([type, value, zone, options, context], sort_keys=True)`` (compact);
    the JSON of options and of an empty context is reused, not rebuilt for every declaration.
    """
    opts = options_json(options)
    ctx = json.dumps(context, sort_keys=True, separators=(",", ":")) if context else "{}"
    payload = f"[{_json_str(schedule_type)},{_json_str(value)},{_json_str(timezone)},{opts},{ctx}]"
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _json_str(text: str) -> str:
    return _encode_str(text) if type(text) is str else json.dumps(text)


def to_schedule(
    record: ScheduleRecord,
    func: Optional[Callable[[], Any]],
    localize: Callable[[datetime], datetime],
    options: Optional[Options] = None,
    executor: Optional[str] = None,
) -> Schedule:
    """The user-facing Schedule for a stored record (instants shown in the schedule's zone).

    ``options``, when the caller already has them, saves parsing ``record.options`` again;
    ``executor``, the executor its runs go to, if the caller knows (else worked out here).
    """
    o = Options.from_dict(record.options) if options is None else options
    # Positional, in field order: a third of the cost of keywords, for 100,000 declarations at a start.
    return Schedule(
        record.name,
        record.schedule_type,
        record.schedule_value,
        func,
        dict(record.context),
        record.enabled,
        localize(record.last_fire) if record.last_fire else None,
        localize(record.next_fire) if record.next_fire else None,
        record.timezone,
        o.misfire_grace_seconds,
        o.catchup,
        o.max_catchup,
        o.max_instances,
        func is None,
        o.timeout_seconds,
        o.retries,
        o.retry_delay_seconds,
        o.retry_backoff,
        o.retry_on,
        executor if executor is not None else _executor_of(func, o.executor),
        o.jitter_seconds,
        localize(o.start_date) if o.start_date else None,
        localize(o.end_date) if o.end_date else None,
    )


def _executor_of(func: Optional[Callable[[], Any]], executor: str) -> str:
    """The executor runs of ``func`` go to: an ``async def`` on the default one runs on ``async``."""
    if executor == "thread" and func is not None and inspect.iscoroutinefunction(func):
        return "async"
    return executor
