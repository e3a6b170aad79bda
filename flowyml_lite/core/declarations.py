"""A ``schedule_*`` call made a definition: its arguments checked, its trigger built, its row drafted.

Nothing here reads or writes the store or the schedule table: ``PipelineScheduler`` hands the
``Definition`` to ``runtime/sync.py``, which keeps the stored row or writes the new one.
"""

from __future__ import annotations

import inspect
import logging
import types
from datetime import datetime, timedelta
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

from ..errors import ScheduleError
from ..stores.base import ScheduleRecord
from .options import options_json
from .schedule import (
    Options,
    definition_hash,
    interval_seconds,
    parse_options,
    shared_options_dict,
    validate_context,
    validate_name,
    validate_timezone,
)
from .scheduler_config import SchedulerConfig
from .triggers import Trigger, build_trigger

logger = logging.getLogger("flowyml_lite.scheduler")

_US = timedelta(microseconds=1)


def function_name(func: object) -> str:
    """``module.qualname`` of a declared function (its type's name for other callables): how a
    re-declaration that swaps the function is told apart from one that declares it again."""
    func = getattr(func, "__func__", func)  # a bound method: its function
    qualname = getattr(func, "__qualname__", None)
    if not isinstance(qualname, str):
        return type(func).__qualname__
    module = getattr(func, "__module__", None)
    return f"{module}.{qualname}" if isinstance(module, str) else qualname


def cron_value(expression: object) -> str:
    """``schedule_cron``'s stored value: the expression itself, which must be text."""
    if not isinstance(expression, str):
        what = getattr(expression, "__qualname__", None) or type(expression).__name__
        hint = ""
        if callable(expression):
            hint = " (the function comes before the expression: name, function, expression)"
        raise ScheduleError(f"cron_expression must be text such as '0 9 * * *', got {what}{hint}")
    return expression


def daily_value(hour: int, minute: int) -> str:
    """``schedule_daily``'s stored value, ``HH:MM``."""
    _check_int("hour", hour, 0, 23)
    _check_int("minute", minute, 0, 59)
    return f"{hour:02d}:{minute:02d}"


def hourly_value(minute: int) -> str:
    """``schedule_hourly``'s stored value, the minute past the hour."""
    _check_int("minute", minute, 0, 59)
    return str(minute)


def interval_value(days: float, hours: float, minutes: float, seconds: float) -> str:
    """``schedule_interval``'s stored value: the total in seconds, written as an integer when it is one."""
    total = interval_seconds(days, hours, minutes, seconds)
    return str(int(total)) if float(total).is_integer() else repr(float(total))


def _check_takes_no_arguments(name: str, func: Callable[..., Any]) -> None:
    """A job is called with no arguments: one that needs some would fail at every run, so it is
    refused now (bind it first: ``functools.partial(job, path)`` or ``lambda: job(path)``)."""
    if type(func) is types.FunctionType:  # the common case, without inspect (bulk declarations)
        code = func.__code__
        positional = code.co_argcount - len(func.__defaults__ or ())
        if positional <= 0 and code.co_kwonlyargcount <= len(func.__kwdefaults__ or ()):
            return
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # a builtin or an object that does not say: it is tried at run time
        return
    try:
        signature.bind()
    except TypeError:
        needed = [
            p.name
            for p in signature.parameters.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        raise ScheduleError(
            f"pipeline_func of {name!r} ({function_name(func)}) needs argument(s) {', '.join(needed)}: "
            "a job is called with none; bind them first, e.g. functools.partial(job, ...) or "
            "lambda: job(...)"
        ) from None


class Definition(NamedTuple):
    """A checked declaration: the row to store (its state is the store's to decide), its trigger
    and its parsed options."""

    record: ScheduleRecord
    trigger: Trigger
    options: Options


def define(
    config: SchedulerConfig,
    name: str,
    func: Callable[[], Any],
    schedule_type: str,
    value: str,
    timezone: Optional[str],
    options: Dict[str, Any],
    check: Callable[[Callable[[], Any], Options], None],
) -> Definition:
    """Check a declaration and build what storing and serving it need; raises ScheduleError (or a
    cron or zone error) saying what is wrong. ``options`` are the call's keyword arguments (popped);
    ``check`` raises if the schedule's executor cannot run ``func``."""
    name = validate_name(name)
    if not callable(func):
        raise ScheduleError(f"pipeline_func of {name!r} must be callable, got {type(func).__name__}")
    _check_takes_no_arguments(name, func)
    opts = parse_options(options, config, name)
    context = validate_context(options.pop("context", None))
    check(func, opts)
    zone = validate_timezone(timezone if timezone is not None else config.timezone, config.timezone_provider)
    trigger = _trigger(config, name, schedule_type, value, zone, opts)
    if schedule_type == "cron":
        _warn_every_second(name, value)
    digest = _digest(schedule_type, value, zone, opts, context)
    # created_at/updated_at come from the store's own clock: other processes sync on them
    record = ScheduleRecord(name, schedule_type, value, zone, digest, shared_options_dict(opts), context)
    return Definition(record, trigger, opts)


# Definitions many schedules share (the hash leaves the name out): (type, value, zone, options as
# JSON) -> hash. Bounded: emptied when full.
_DIGESTS: Dict[Tuple[str, str, str, str], str] = {}
_DIGESTS_KEPT = 4096


def _digest(schedule_type: str, value: str, zone: str, opts: Options, context: Dict[str, Any]) -> str:
    """``definition_hash``, remembered for definitions without a context."""
    if context:
        return definition_hash(schedule_type, value, zone, opts, context)
    key = (schedule_type, value, zone, options_json(opts))
    digest = _DIGESTS.get(key)
    if digest is None:
        digest = definition_hash(schedule_type, value, zone, opts, context)
        if len(_DIGESTS) >= _DIGESTS_KEPT:
            _DIGESTS.clear()
        _DIGESTS[key] = digest
    return digest


def first_fire(definition: Definition, now: datetime) -> Optional[datetime]:
    """The first fire of a new definition: after ``now``; a one-off whose instant passed less than
    ``misfire_grace_seconds`` ago still fires (at once), like a fire picked up late, and one whose
    instant passed longer ago is refused (ScheduleError): it would never run."""
    if definition.record.schedule_type == "once":
        grace = timedelta(seconds=definition.options.misfire_grace_seconds)
        first = definition.trigger.next_after(now - grace - _US)
        if first is None:
            raise ScheduleError(
                f"the one-off {definition.record.name!r} at {definition.record.schedule_value} is more "
                f"than misfire_grace_seconds ({grace.total_seconds():g} s) in the past, so it would never "
                "run: pick a later instant (or raise misfire_grace_seconds)"
            )
        return first
    return definition.trigger.next_after(now)


def stored_trigger(config: SchedulerConfig, record: ScheduleRecord) -> Trigger:
    """The trigger of a stored row, declared in this process or in another."""
    options = Options.from_dict(record.options)
    return _trigger(
        config, record.name, record.schedule_type, record.schedule_value, record.timezone, options
    )


def _trigger(
    config: SchedulerConfig, name: str, schedule_type: str, value: str, zone: str, opts: Options
) -> Trigger:
    return build_trigger(
        schedule_type,
        value,
        zone,
        name,
        config.cron_engine,
        config.timezone_provider,
        start_date=opts.start_date,
        end_date=opts.end_date,
    )


def every_second_note(expression: str) -> Optional[str]:
    """What is wrong with a six-field expression whose sixth field, the second, is ``*``: in this
    (croniter's) order seconds come last, so Quartz's or Spring's hourly ``0 0 * * * *`` fires every
    second. None for any other expression."""
    fields = expression.split()
    if len(fields) >= 6 and fields[5] in ("*", "*/1"):
        return (
            f"cron {expression!r} fires every second of each matching minute: its sixth field is the second "
            "(croniter's order; Quartz and Spring put seconds first). To fire once per match, drop the "
            "sixth field or make it 0"
        )
    return None


def _warn_every_second(name: str, expression: str) -> None:
    note = every_second_note(expression)
    if note is not None:
        logger.warning("%r: %s", name, note)


def _check_int(arg: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ScheduleError(f"{arg} must be an integer from {low} to {high}, got {value!r}")
