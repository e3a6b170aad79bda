"""Cron expressions in plain English: ``"0 9 * * 1-5"`` is ``"At 09:00, Monday through Friday"``.

Built on the parser's view of the text as written, so ``*/5`` reads "every 5 minutes" rather
than a list of twelve minutes. Time units count ("every 5 minutes"), calendar units take
ordinals ("every 2nd day of the month").
"""

from __future__ import annotations

import calendar
from typing import Callable, List, Optional, Sequence

from .parser import Element, Field, hash_crc, hashed_values, parse

_WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_NTH = ("", "first", "second", "third", "fourth", "fifth")
_Namer = Callable[[int], str]


def explain(expression: str, hash_key: Optional[str] = None) -> str:
    """Describe ``expression`` in English; raises ``CronError`` when it does not parse.

    ``H`` fields show their values when ``hash_key`` is given, else read "a hashed minute".
    """
    parsed = parse(expression)
    crc = hash_crc(hash_key)
    second = _resolve(parsed.second, crc) if parsed.second is not None else None
    minute = _resolve(parsed.minute, crc)
    hour = _resolve(parsed.hour, crc)
    parts = [_time(second, minute, hour)]
    day_and = parsed.day.star or parsed.weekday.star
    days = _days(_resolve(parsed.day, crc), _resolve(parsed.weekday, crc), day_and)
    if days:
        parts.append(days)
    month = _resolve(parsed.month, crc)
    if not _is_every(month):
        parts.append(_calendar_phrase(month, "month", _month_name, "in ", "from "))
    if parsed.year is not None:
        year = _resolve(parsed.year, crc)
        if not _is_every(year):
            parts.append(_calendar_phrase(year, "year", str, "in ", "from "))
    text = ", ".join(parts)
    return text[0].upper() + text[1:]


def _resolve(field: Field, crc: Optional[int]) -> Field:
    """``field`` with each ``H`` item replaced by the plain item it stands for, given a key."""
    if crc is None:
        return field
    elements = []
    for el in field.elements:
        if el.kind == "hash":
            first = hashed_values(field.spec, el, crc).start
            if el.step == 0:
                el = Element("value", el.text, el.position, first, first)
            elif el.ranged:
                el = Element("range", el.text, el.position, first, el.stop, el.step)
            else:
                el = Element("from", el.text, el.position, first, el.stop, el.step)
        elements.append(el)
    return field._replace(elements=tuple(elements))


def _join(words: Sequence[str], last: str = "and") -> str:
    if not words:
        return ""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {last} {words[-1]}"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _month_name(n: int) -> str:
    return calendar.month_name[n]


def _weekday_name(n: int) -> str:
    return _WEEKDAYS[n % 7]


def _is_every(field: Field) -> bool:
    return all(el.kind == "every" and el.step == 1 for el in field.elements)


def _singles(field: Field) -> Optional[List[int]]:
    """The field's values when every item is one plain value, else None."""
    if all(el.kind == "value" for el in field.elements):
        return [el.start for el in field.elements]
    return None


def _time(second: Optional[Field], minute: Field, hour: Field) -> str:
    seconds = [0] if second is None else _singles(second)
    minutes, hours = _singles(minute), _singles(hour)
    if seconds and minutes and hours and len(seconds) * len(minutes) * len(hours) <= 6:
        times = [
            f"{h:02d}:{m:02d}" + (f":{s:02d}" if seconds != [0] else "")
            for h in hours
            for m in minutes
            for s in seconds
        ]
        return "at " + _join(times)
    parts = []
    if second is not None and seconds != [0]:
        parts.append(_time_phrase(second, "second"))
    if not (parts and _is_every(minute) and _is_every(hour)):
        parts.append(_time_phrase(minute, "minute"))
    elif seconds is not None:
        parts[0] += " of every minute"
    text = ", ".join(parts)
    if not _is_every(hour):
        text += " past " + _hour_phrase(hour)
    elif minutes is not None:
        text += " past every hour"
    return text


def _time_phrase(field: Field, unit: str) -> str:
    """Minute or second items: "every 5 minutes", "at minutes 0 and 30"."""
    values = _singles(field)
    if values is not None:
        return f"at {unit}{'s' if len(values) > 1 else ''} {_join([str(v) for v in values])}"
    phrases = []
    for el in field.elements:
        every = f"every {el.step} {unit}s" if el.step > 1 else f"every {unit}"
        if el.kind == "every":
            phrases.append(every)
        elif el.kind == "value":
            phrases.append(f"{unit} {el.start}")
        elif el.kind == "range":
            phrases.append(f"{every} from {el.start} through {el.stop}")
        elif el.kind == "from":
            phrases.append(f"{every} from {unit} {el.start}")
        else:
            phrases.append(_hash_phrase(el, unit, "at "))
    return _join(phrases)


def _hour_phrase(field: Field) -> str:
    values = _singles(field)
    if values is not None:
        return f"hour{'s' if len(values) > 1 else ''} {_join([str(v) for v in values])}"
    phrases = []
    for el in field.elements:
        every = f"every {_ordinal(el.step)} hour" if el.step > 1 else "every hour"
        if el.kind == "every":
            phrases.append(every)
        elif el.kind == "value":
            phrases.append(f"hour {el.start}")
        elif el.kind == "range":
            phrases.append(f"{every} from {el.start} through {el.stop}")
        elif el.kind == "from":
            phrases.append(f"{every} from hour {el.start}")
        else:
            phrases.append(_hash_phrase(el, "hour", "", ordinal=True))
    return _join(phrases)


def _hash_phrase(el: Element, unit: str, at: str, ordinal: bool = False) -> str:
    where = f" from {el.start} through {el.stop}" if el.ranged else ""
    if el.step:
        every = f"every {_ordinal(el.step)} {unit}" if ordinal else f"every {el.step} {unit}s"
        return f"{every}{where} (hashed offset)"
    return f"{at}a hashed {unit}{where}"


def _calendar_phrase(field: Field, unit: str, name: _Namer, on: str, span: str) -> str:
    """Day-of-week, month or year items: "every 2nd month from January through June".

    ``on`` introduces single values ("in January"), ``span`` ranges ("from 2025 through 2030").
    """
    singles = [name(el.start) for el in field.elements if el.kind == "value"]
    phrases = [on + _join(singles)] if singles else []
    for el in field.elements:
        every = f"every {_ordinal(el.step)} {unit}" if el.step > 1 else f"every {unit}"
        if el.kind == "every":
            phrases.append(every)
        elif el.kind == "range" and el.step == 1:
            phrases.append(f"{span}{name(el.start)} through {name(el.stop)}")
        elif el.kind == "range":
            phrases.append(f"{every} from {name(el.start)} through {name(el.stop)}")
        elif el.kind == "from":
            phrases.append(f"{every} from {name(el.start)}")
        elif el.kind == "hash":
            phrases.append(_hash_phrase(el, unit, on, ordinal=True))
    return _join(phrases)


def _days(dom: Field, dow: Field, day_and: bool) -> str:
    """The day-of-month and day-of-week qualifiers, joined as cron does (Vixie's AND/OR)."""
    if _is_every(dom):
        return "" if _is_every(dow) else _dow_phrase(dow)
    if _is_every(dow):
        return _dom_phrase(dom)
    if day_and:  # both restricted, one starting with '*': a day must match both
        return f"{_dom_phrase(dom)}, but only {_dow_phrase(dow)}"
    return f"{_dom_phrase(dom)} or {_dow_phrase(dow)}"


def _dom_phrase(field: Field) -> str:
    singles = [str(el.start) for el in field.elements if el.kind == "value"]
    phrases = [f"on day{'s' if len(singles) > 1 else ''} {_join(singles)} of the month"] if singles else []
    for el in field.elements:
        every = f"on every {_ordinal(el.step)} day" if el.step > 1 else "on every day"
        if el.kind == "last" and el.start == 0:
            phrases.append("on the last day of the month")
        elif el.kind == "last":
            phrases.append(f"{el.start} day{'s' if el.start > 1 else ''} before the last day of the month")
        elif el.kind == "nearest":
            phrases.append(f"on the weekday nearest day {el.start} of the month")
        elif el.kind == "last_weekday":
            phrases.append("on the last weekday of the month")
        elif el.kind == "hash":
            phrases.append(_hash_phrase(el, "day of the month", "on ", ordinal=True))
        elif el.kind == "every":
            phrases.append(f"{every} of the month")
        elif el.kind == "from":
            phrases.append(f"{every} of the month from day {el.start}")
        elif el.kind == "range" and el.step == 1:
            phrases.append(f"on days {el.start} through {el.stop} of the month")
        elif el.kind == "range":
            phrases.append(f"{every} from day {el.start} through {el.stop} of the month")
    return _join(phrases)


def _dow_phrase(field: Field) -> str:
    phrases = [_calendar_phrase(field, "day of the week", _weekday_name, "on ", "")]
    for el in field.elements:
        if el.kind == "last_of":
            phrases.append(f"on the last {_weekday_name(el.start)} of the month")
        elif el.kind == "nth":
            phrases.append(f"on the {_NTH[el.stop]} {_weekday_name(el.start)} of the month")
    return _join([p for p in phrases if p])
