"""A schedule's options: how its fires behave (misfires, overlap, timeouts, retries, executor, bounds).

Validated once at declaration (``parse_options``); equal options share one frozen instance, and
their JSON and dict forms are worked out once per distinct value (declaring 100,000 schedules with
the same options parses and encodes them once).
"""

from __future__ import annotations

import builtins
import json
import math
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Dict, Iterable, NamedTuple, Optional, Tuple, Union

from ..errors import ScheduleError
from .triggers import parse_instant

if TYPE_CHECKING:
    from .scheduler_config import SchedulerConfig

CATCHUP_POLICIES = ("latest", "skip", "all")
#: Every option a ``schedule_*`` call accepts besides ``context`` (validated by ``parse_options``).
OPTION_NAMES = (
    "misfire_grace_seconds",
    "catchup",
    "max_catchup",
    "max_instances",
    "timeout_seconds",
    "retries",
    "retry_delay_seconds",
    "retry_backoff",
    "retry_on",
    "executor",
    "jitter_seconds",
    "start_date",
    "end_date",
)
#: The longest wait between two attempts of a run (a backoff never grows past it).
MAX_RETRY_DELAY_SECONDS = 30 * 86400.0
#: The most catch-up runs one fire may queue (``catchup="all"``): each is a row and a run.
MAX_CATCHUP = 10_000


@dataclass(frozen=True)
class Options:
    """How a schedule's fires behave (DESIGN §4): misfires, overlap, timeouts, retries, executor, bounds.

    Validated by ``parse_options`` / ``validate_options``; frozen, so equal options share one instance.
    ``start_date`` and ``end_date`` are aware UTC datetimes; ``retry_on`` holds qualified class names.
    """

    misfire_grace_seconds: float = 60.0
    catchup: str = "latest"
    max_catchup: int = 100
    max_instances: int = 1
    timeout_seconds: Optional[float] = None
    retries: int = 0
    retry_delay_seconds: float = 10.0
    retry_backoff: float = 2.0
    retry_on: Optional[Tuple[str, ...]] = None
    executor: str = "thread"
    jitter_seconds: float = 0.0
    start_date: Optional[datetime] = None
    end_date: Optional[datetime] = None

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready: the four original options always, each newer one only when not its default.

        So a schedule declared with only the original options keeps the stored form, and the
        definition hash, that it had before the newer options existed. Instants are ISO 8601 text.
        """
        out: Dict[str, Any] = {
            "misfire_grace_seconds": self.misfire_grace_seconds,
            "catchup": self.catchup,
            "max_catchup": self.max_catchup,
            "max_instances": self.max_instances,
        }
        for name, default in _NEWER_DEFAULTS:
            value = getattr(self, name)
            if value != default:
                if isinstance(value, datetime):
                    value = value.isoformat()
                elif isinstance(value, tuple):
                    value = list(value)
                out[name] = value
        return out

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> Options:
        """Options from a stored ``to_dict()``: missing keys take their defaults, unknown are ignored.

        Equal dicts (values of the same types) give one shared instance: a scheduler reads a
        schedule's options at every fire.
        """
        try:  # the types are part of the key: 60 == 60.0, but they are not the same JSON
            key: Any = (tuple(data.items()), tuple(map(type, data.values())))
            found = _FROM_DICT.get(key)
        except TypeError:  # an unhashable value (retry_on's list): build it
            key = found = None
        if found is not None:
            return found
        options = cls._build(data)
        # 0.0 == -0.0 too, and the sign is kept in JSON: such options are never shared.
        if key is not None and options.misfire_grace_seconds != 0 and len(_FROM_DICT) < _OPTIONS_MEMO_SIZE:
            _FROM_DICT[key] = options
        return options

    @classmethod
    def _build(cls, data: Dict[str, Any]) -> Options:
        known = {k: data[k] for k in _ORIGINAL if k in data}
        if len(data) > len(known):
            for name, _ in _NEWER_DEFAULTS:
                value = data.get(name)
                if value is None:
                    continue
                if name in ("start_date", "end_date"):
                    value = _utc_instant(value, name)
                elif name == "retry_on":
                    value = tuple(value)
                known[name] = value
        return cls(**known)


_ORIGINAL = ("misfire_grace_seconds", "catchup", "max_catchup", "max_instances")
_NEWER_DEFAULTS: Tuple[Tuple[str, Any], ...] = tuple(
    (f.name, f.default) for f in Options.__dataclass_fields__.values() if f.name not in _ORIGINAL
)


def validate_options(
    misfire_grace_seconds: float,
    catchup: str,
    max_catchup: int,
    max_instances: int,
    *,
    timeout_seconds: Optional[float] = None,
    retries: int = 0,
    retry_delay_seconds: float = 10.0,
    retry_backoff: float = 2.0,
    retry_on: Any = None,
    executor: str = "thread",
    jitter_seconds: float = 0.0,
    start_date: Union[datetime, str, None] = None,
    end_date: Union[datetime, str, None] = None,
) -> Options:
    """Options checked for type and range, with a message naming the argument."""
    if (
        isinstance(misfire_grace_seconds, bool)
        or not isinstance(misfire_grace_seconds, (int, float))
        or not (misfire_grace_seconds >= 0 and math.isfinite(misfire_grace_seconds))
    ):
        raise ScheduleError(
            f"misfire_grace_seconds must be a finite number >= 0, got {misfire_grace_seconds!r}"
        )
    if catchup not in CATCHUP_POLICIES:
        raise ScheduleError(f"catchup must be one of {', '.join(CATCHUP_POLICIES)}, got {catchup!r}")
    for arg, value in (("max_catchup", max_catchup), ("max_instances", max_instances)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ScheduleError(f"{arg} must be an integer >= 1, got {value!r}")
    if max_catchup > MAX_CATCHUP:
        raise ScheduleError(
            f"max_catchup must be at most {MAX_CATCHUP:,} (the catch-up runs one fire may queue), "
            f"got {max_catchup!r}"
        )
    grace = float(misfire_grace_seconds)
    if (
        timeout_seconds is None
        and retries == 0
        and retry_on is None
        and executor == "thread"
        and jitter_seconds == 0
        and start_date is None
        and end_date is None
        and retry_delay_seconds == 10
        and retry_backoff == 2
        and type(retries) is int
        and type(retry_delay_seconds) in (int, float)
        and type(retry_backoff) in (int, float)
        and type(jitter_seconds) in (int, float)
    ):  # only the original options: the common case, answered from the memo without building tuples
        found = _OPTIONS_MEMO.get(_memo_key(grace, catchup, max_catchup, max_instances, _NO_NEWER))
        if found is not None:
            return found.options  # frozen, so one instance serves every equal declaration
        return _options_memo(Options(grace, catchup, max_catchup, max_instances)).options
    timeout = None if timeout_seconds is None else _seconds("timeout_seconds", timeout_seconds, positive=True)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ScheduleError(
            f"retries must be an integer >= 0 (the attempts after a failed one), got {retries!r}"
        )
    delay = _seconds("retry_delay_seconds", retry_delay_seconds, positive=False)
    if delay > MAX_RETRY_DELAY_SECONDS:
        raise ScheduleError(
            f"retry_delay_seconds must be at most {MAX_RETRY_DELAY_SECONDS:.0f} (30 days), "
            f"got {retry_delay_seconds!r}"
        )
    backoff = _number("retry_backoff", retry_backoff)
    if backoff < 1:
        raise ScheduleError(
            f"retry_backoff must be a finite number >= 1 (1: the same delay every time; 2: doubling), "
            f"got {retry_backoff!r}"
        )
    start = None if start_date is None else _utc_instant(start_date, "start_date")
    end = None if end_date is None else _utc_instant(end_date, "end_date")
    if start is not None and end is not None and end <= start:
        raise ScheduleError(
            f"end_date must be after start_date, got start_date={start.isoformat()} "
            f"and end_date={end.isoformat()}"
        )
    newer = (
        timeout,
        retries,
        delay,
        backoff,
        retry_on_names(retry_on),
        _executor(executor),
        _jitter(jitter_seconds),
        start,
        end,
    )
    found = _OPTIONS_MEMO.get(_memo_key(grace, catchup, max_catchup, max_instances, newer))
    if found is not None:
        return found.options
    return _options_memo(Options(grace, catchup, max_catchup, max_instances, *newer)).options


#: What an option of APScheduler or Celery beat is here, for the error that names it.
_PEERS_OPTIONS = {
    "misfire_grace_time": "misfire_grace_seconds=",
    "coalesce": 'catchup= (coalesce with a misfire_grace_time is catchup="skip", without one "latest")',
    "args": "functools.partial(func, *args, **kwargs) as the function",
    "kwargs": "functools.partial(func, *args, **kwargs) as the function",
    "jitter": "jitter_seconds=",
    "next_run_time": "start_date=",
    "id": "the name, the first argument",
    "replace_existing": "nothing: declaring a name again replaces its definition",
    "expires": "misfire_grace_seconds=",
    "timeout": "timeout_seconds=",
    "max_retries": "retries=",
    "retry": "retries=",
}


def check_option_names(options: Dict[str, Any], name: Optional[str] = None) -> None:
    """ScheduleError naming any keyword of a ``schedule_*`` call that is not an option (a typo, or
    another scheduler's option), with what was probably meant."""
    if options.keys() - _KNOWN:
        unknown = sorted(options.keys() - _KNOWN)
        whose = f" for {name!r}" if name is not None else ""
        hints = []
        for option in unknown:
            import difflib  # only for this error

            # e.g. retry_delay for retry_delay_seconds; else the nearest spelling
            close = [known for known in OPTION_NAMES if known.startswith(option + "_")] or (
                difflib.get_close_matches(option, [*OPTION_NAMES, "context"], n=1, cutoff=0.75)
            )
            if option in _PEERS_OPTIONS:
                hints.append(f"for {option} use {_PEERS_OPTIONS[option]}")
            elif close:
                hints.append(f"did you mean {close[0]}?")
        hint = f" ({'; '.join(hints)})" if hints else ""
        raise ScheduleError(
            f"unknown option(s) {', '.join(unknown)}{whose}{hint}; the options are "
            f"{', '.join(OPTION_NAMES)}, context"
        )


def parse_options(options: Dict[str, Any], config: SchedulerConfig, name: Optional[str] = None) -> Options:
    """Pop every option from a ``schedule_*`` call's keyword arguments and validate them.

    Missing options take the config's defaults (``misfire_grace_seconds``, ``catchup``,
    ``max_catchup``, ``default_timeout_seconds``, ``default_executor``) or their own. ``context`` is
    left in ``options`` for the caller; anything else left over raises ScheduleError naming it
    (and the schedule ``name`` when given) beside the options there are.
    """
    if options:
        check_option_names(options, name)
    pop = options.pop
    if not options or (len(options) == 1 and "context" in options):  # no options given: the defaults
        grace = config.misfire_grace_seconds
        key = (grace, math.copysign(1.0, grace), config.catchup, config.max_catchup,
               config.default_timeout_seconds, config.default_executor)  # fmt: skip
        found = _DEFAULTS.get(key)
        if found is None:
            found = validate_options(
                grace,
                config.catchup,
                config.max_catchup,
                1,
                timeout_seconds=config.default_timeout_seconds,
                executor=config.default_executor,
            )
            if len(_DEFAULTS) < 16:
                _DEFAULTS[key] = found
        return found
    return validate_options(
        pop("misfire_grace_seconds", config.misfire_grace_seconds),
        pop("catchup", config.catchup),
        pop("max_catchup", config.max_catchup),
        pop("max_instances", 1),
        timeout_seconds=pop("timeout_seconds", config.default_timeout_seconds),
        retries=pop("retries", 0),
        retry_delay_seconds=pop("retry_delay_seconds", 10.0),
        retry_backoff=pop("retry_backoff", 2.0),
        retry_on=pop("retry_on", None),
        executor=pop("executor", config.default_executor),
        jitter_seconds=pop("jitter_seconds", 0.0),
        start_date=pop("start_date", None),
        end_date=pop("end_date", None),
    )


_KNOWN = frozenset((*OPTION_NAMES, "context"))
_DEFAULTS: Dict[Tuple[Any, ...], Options] = {}  # the options of a call without any, by config defaults


def retry_delay(options: Options, attempt: int) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based) before the next one starts.

    ``retry_delay_seconds * retry_backoff ** (attempt - 1)``, at most ``MAX_RETRY_DELAY_SECONDS``.
    """
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValueError(f"attempt must be an integer >= 1 (the attempt that failed), got {attempt!r}")
    delay = options.retry_delay_seconds
    backoff = options.retry_backoff
    if delay == 0:
        return 0.0
    if backoff == 1:
        return delay
    # log-space comparison first: backoff ** 10000 would overflow a float
    if math.log(delay) + (attempt - 1) * math.log(backoff) >= math.log(MAX_RETRY_DELAY_SECONDS):
        return MAX_RETRY_DELAY_SECONDS
    return float(min(delay * backoff ** (attempt - 1), MAX_RETRY_DELAY_SECONDS))


def matches_retry_on(options: Options, exception_type_names: Tuple[str, ...]) -> bool:
    """Whether an error whose class MRO has these qualified names is worth a retry.

    ``exception_type_names`` is what an executor reports, e.g. ``("mymod.Flaky", "builtins.Exception",
    "builtins.BaseException", "builtins.object")``: a subclass of a ``retry_on`` class matches through
    its MRO. With no ``retry_on`` every error matches.
    """
    wanted = options.retry_on
    if wanted is None:
        return True
    return any(name in wanted for name in exception_type_names)


def should_retry(options: Options, attempt: int, exception_type_names: Tuple[str, ...]) -> bool:
    """Whether failed attempt ``attempt`` (1-based) gets another: retries left and a matching error."""
    return attempt <= options.retries and matches_retry_on(options, exception_type_names)


def qualified_name(cls: type) -> str:
    """``module.QualName`` of a class, as ``retry_on`` stores it and executors report it."""
    return f"{cls.__module__}.{cls.__qualname__}"


_NAME_PART = re.compile(r"(?:[^\W\d]\w*|<locals>)\Z")


def retry_on_names(retry_on: Any) -> Optional[Tuple[str, ...]]:
    """``retry_on`` as sorted qualified names: None, an exception class, or a tuple/list of classes or
    names (``"mymod.FlakyError"``; a bare builtin such as ``"TimeoutError"`` means ``builtins.``)."""
    if retry_on is None:
        return None
    items: Iterable[Any] = retry_on if isinstance(retry_on, (tuple, list)) else (retry_on,)
    names = set()
    for item in items:
        if isinstance(item, type) and issubclass(item, BaseException):
            names.add(qualified_name(item))
        elif isinstance(item, str) and item.strip():
            text = item.strip()
            if "." not in text:
                found = getattr(builtins, text, None)
                if not (isinstance(found, type) and issubclass(found, BaseException)):
                    raise ScheduleError(
                        f"retry_on: {item!r} is not a built-in exception; name a class with its module, "
                        "e.g. 'requests.exceptions.ConnectionError', or pass the class itself"
                    )
                text = "builtins." + text
            elif not all(_NAME_PART.match(part) for part in text.split(".")):
                raise ScheduleError(
                    f"retry_on: {item!r} is not a qualified class name such as 'mymod.MyError'"
                )
            names.add(text)
        else:
            raise ScheduleError(
                "retry_on must be an exception class, a tuple of them, or their qualified names "
                f"('mymod.MyError'), got {item!r}"
            )
    if not names:
        raise ScheduleError(
            "retry_on=() would retry no error: pass retries=0 for no retries, or None to retry on any error"
        )
    return tuple(sorted(names))


def _number(arg: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ScheduleError(f"{arg} must be a finite number, got {value!r}")
    return float(value) + 0.0  # + 0.0: -0.0 becomes 0.0, one spelling in JSON and the hash


def _jitter(value: object) -> float:
    """``jitter_seconds``: a finite number of seconds from 0 to 30 days (a run waits that long at most)."""
    jitter = _seconds("jitter_seconds", value, positive=False)
    if jitter > MAX_RETRY_DELAY_SECONDS:
        raise ScheduleError(
            f"jitter_seconds must be at most {MAX_RETRY_DELAY_SECONDS:.0f} (30 days), got {value!r}"
        )
    return jitter


def _seconds(arg: str, value: Any, positive: bool) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (positive and value == 0)
    ):
        bound = "> 0" if positive else ">= 0"
        extra = ", or None for no limit" if arg == "timeout_seconds" else ""
        raise ScheduleError(f"{arg} must be a finite number of seconds {bound}{extra}, got {value!r}")
    return float(value) + 0.0


def _executor(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or not value.isprintable():
        raise ScheduleError(
            f"executor must be an executor's name such as 'thread' or 'process', got {value!r}"
        )
    return value


def _utc_instant(value: Any, arg: str) -> datetime:
    """An aware datetime or ISO 8601 text with an offset (``Z`` too) as an aware UTC datetime."""
    if isinstance(value, date) and not isinstance(value, datetime):
        raise ScheduleError(
            f"{arg} must be an aware datetime or ISO 8601 text with an offset, got a date without a "
            f"time: {value!r}; pass e.g. datetime({value.year}, {value.month}, {value.day}, tzinfo=...)"
        )
    return parse_instant(value, arg)


class _Memo(NamedTuple):
    options: Options
    json: str
    as_dict: Dict[str, Any]


# Options of exact types by value; the sign is part of the key since 0.0 == -0.0 but not in JSON.
# The newer options are normalized (floats, sorted names, UTC instants) before they get here.
_MemoKey = Tuple[float, float, str, int, int, Tuple[Any, ...]]
_OPTIONS_MEMO: Dict[Optional[_MemoKey], _Memo] = {}
_FROM_DICT: Dict[Any, Options] = {}  # Options.from_dict's, by the dict's items and their types
_OPTIONS_MEMO_SIZE = 256
_BY_IDENTITY: Dict[int, Tuple[Options, _Memo]] = {}
_NO_NEWER: Tuple[Any, ...] = tuple(default for _, default in _NEWER_DEFAULTS)


def _memo_key(
    grace: float, catchup: str, most: int, instances: int, newer: Tuple[Any, ...]
) -> Optional[_MemoKey]:
    if type(grace) is float and type(catchup) is str and type(most) is int and type(instances) is int:
        return (grace, math.copysign(1.0, grace), catchup, most, instances, newer)
    return None


def _options_memo(options: Options) -> _Memo:
    same = _BY_IDENTITY.get(id(options))
    if same is not None and same[0] is options:  # parse_options hands out shared instances
        return same[1]
    found = _options_memo_by_value(options)
    if len(_BY_IDENTITY) < _OPTIONS_MEMO_SIZE:
        _BY_IDENTITY[id(options)] = (options, found)  # the reference kept: its id stays its own
    return found


def _options_memo_by_value(options: Options) -> _Memo:
    o = options
    newer = tuple(getattr(o, name) for name, _ in _NEWER_DEFAULTS)
    if newer == _NO_NEWER:
        newer = _NO_NEWER
    key = _memo_key(o.misfire_grace_seconds, o.catchup, o.max_catchup, o.max_instances, newer)
    found = _OPTIONS_MEMO.get(key) if key is not None else None
    if found is None:
        as_dict = options.to_dict()
        found = _Memo(options, json.dumps(as_dict, sort_keys=True, separators=(",", ":")), as_dict)
        if key is not None and len(_OPTIONS_MEMO) < _OPTIONS_MEMO_SIZE:
            _OPTIONS_MEMO[key] = found
    return found


def options_json(options: Options) -> str:
    """``options`` as compact JSON with sorted keys (what definition_hash covers), made once per value."""
    return _options_memo(options).json


def shared_options_dict(options: Options) -> Dict[str, Any]:
    """``options.to_dict()``, one dict shared by every caller with equal options: never mutate it."""
    return _options_memo(options).as_dict
