"""Cron text to fields: ``parse`` keeps what was written (for errors and ``explain``),
``resolve`` turns it into the sets of allowed values the native engine searches.

Field order is croniter's: ``minute hour day-of-month month day-of-week [second [year]]``.
Every error is a ``CronError`` naming the field, the offending text and its 0-based position.
"""

from __future__ import annotations

import re
import zlib
from typing import Dict, FrozenSet, List, NamedTuple, Optional, Set, Tuple

from ..errors import CronError

_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


class FieldSpec(NamedTuple):
    """The bounds of one field: ``hi`` may be written, the cycle runs ``lo``..``top``."""

    name: str
    lo: int
    hi: int
    top: int  # '*', 'a/n' and H end here; only day-of-week differs (7 may be written, 6 ends the week)
    hash_index: int  # croniter's index of the field: it shifts the hash bits, so H values match
    names: Dict[str, int]


MINUTE = FieldSpec("minute", 0, 59, 59, 0, {})
HOUR = FieldSpec("hour", 0, 23, 23, 1, {})
DAY = FieldSpec("day-of-month", 1, 31, 31, 2, {})
MONTH = FieldSpec("month", 1, 12, 12, 3, {n: i + 1 for i, n in enumerate(_MONTH_NAMES)})
WEEKDAY = FieldSpec("day-of-week", 0, 7, 6, 4, {n: i for i, n in enumerate(_DAY_NAMES)})
SECOND = FieldSpec("second", 0, 59, 59, 5, {})
YEAR = FieldSpec("year", 1970, 2099, 2099, 6, {})
_SPECS = (MINUTE, HOUR, DAY, MONTH, WEEKDAY, SECOND, YEAR)

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


class Element(NamedTuple):
    """One item of a field's comma-separated list, as written.

    ``kind`` is one of: ``every`` (``*``, ``*/n``, ``?``), ``value``, ``range`` (``a-b``,
    ``a-b/n``), ``from`` (``a/n``), ``hash`` (``H`` forms; ``ranged`` when written ``H(a-b)``,
    ``step`` 0 without ``/n``), ``last`` (``L``/``L-n``: ``start`` is n), ``nearest`` (``nW``),
    ``last_weekday`` (``LW``), ``last_of`` (``5L``/``L5``) and ``nth`` (``5#2``: ``stop`` is k).
    """

    kind: str
    text: str
    position: int
    start: int = 0
    stop: int = 0
    step: int = 1
    ranged: bool = False


class Field(NamedTuple):
    """One field as written, with its parsed list items."""

    spec: FieldSpec
    text: str
    position: int
    elements: Tuple[Element, ...]

    @property
    def star(self) -> bool:
        """Vixie cron's test: the field text starts with ``*`` (``?`` counts as ``*``)."""
        return self.text.startswith("*") or self.text == "?"


class ParsedCron(NamedTuple):
    """A whole expression as written; ``second``/``year`` are None when absent."""

    expression: str
    macro: Optional[str]
    minute: Field
    hour: Field
    day: Field
    month: Field
    weekday: Field
    second: Optional[Field]
    year: Optional[Field]


class CronValues(NamedTuple):
    """The allowed values of each field, ready for a search (day specials kept apart)."""

    seconds: Tuple[int, ...]
    minutes: Tuple[int, ...]
    hours: Tuple[int, ...]
    months: Tuple[int, ...]
    years: Optional[Tuple[int, ...]]
    days: FrozenSet[int]
    last_offsets: FrozenSet[int]  # L is 0, L-3 is 3
    nearest: FrozenSet[int]  # nW
    last_weekday: bool  # LW
    weekdays: FrozenSet[int]  # 0 (Sunday) to 6
    last_of: FrozenSet[int]  # 5L: the last Friday
    nth: FrozenSet[Tuple[int, int]]  # 5#2: (5, 2)
    day_and: bool  # Vixie: AND the two day fields when either starts with '*', else OR
    is_fixed_time: bool


_TOKEN = re.compile(r"[^ \t\r\n\f\v]+")
_WORD = r"[0-9]+|[A-Za-z]+"
_RANGE = re.compile(rf"(?:(\*)|({_WORD})(?:-({_WORD}))?)(?:/([0-9]+))?")
_HASH = re.compile(r"[Hh](?:\(([0-9]+)-([0-9]+)\))?(?:/([0-9]+))?")
_DOM_LAST = re.compile(r"[Ll](?:-([0-9]+))?")
_DOM_NEAREST = re.compile(r"([0-9]+)[Ww]")
_DOM_LAST_WEEKDAY = re.compile(r"[Ll][Ww]")
_DOW_LAST = re.compile(r"([0-9]+|[A-Za-z]{3})[Ll]|[Ll]([0-9]+|[A-Za-z]{3})")
_DOW_NTH = re.compile(r"([0-9]+|[A-Za-z]+)#([0-9]+)")
_LOOKS_L = re.compile(r"[0-9]*[Ll](?:-[0-9]*)?|[Ll][0-9]+")
_LOOKS_W = re.compile(r"[0-9]*[Ww]|[Ll][Ww]|[Ww][0-9]+")
_MAX_DIGITS = 6  # longer numbers are out of range in every field; int() never sees a huge string


def _fail(expr: str, spec: Optional[FieldSpec], text: str, position: int, problem: str) -> CronError:
    prefix = f"{spec.name}: " if spec is not None else ""
    return CronError(
        f"{prefix}'{text}' {problem} in '{expr}'",
        expression=expr,
        field=spec.name if spec is not None else None,
        position=position,
    )


def parse(expression: str) -> ParsedCron:
    """Split and parse ``expression`` (a macro or 5 to 7 fields); raises ``CronError``."""
    if not isinstance(expression, str):
        raise TypeError(f"a cron expression must be a str, not {type(expression).__name__}")
    stripped = expression.strip()
    if not stripped:
        raise CronError(
            f"empty expression: expected 5 to 7 fields such as '* * * * *' in '{expression}'",
            expression=expression,
            position=0,
        )
    macro: Optional[str] = None
    if stripped.startswith("@"):
        macro = stripped.lower()
        if macro not in MACROS:
            names = ", ".join(MACROS)
            raise _fail(
                expression, None, stripped, expression.index(stripped),
                f"is not a known macro (use one of {names})",
            )
        tokens = [(m.group(), 0) for m in _TOKEN.finditer(MACROS[macro])]
    else:
        tokens = [(m.group(), m.start()) for m in _TOKEN.finditer(expression)]
    if not 5 <= len(tokens) <= 7:
        position = tokens[7][1] if len(tokens) > 7 else len(expression.rstrip())
        raise CronError(
            f"expected 5 to 7 fields, got {len(tokens)} in '{expression}'",
            expression=expression,
            position=position,
        )
    fields = [_parse_field(expression, spec, text, pos) for spec, (text, pos) in zip(_SPECS, tokens)]
    return ParsedCron(
        expression,
        macro,
        fields[0],
        fields[1],
        fields[2],
        fields[3],
        fields[4],
        fields[5] if len(fields) > 5 else None,
        fields[6] if len(fields) > 6 else None,
    )


def _parse_field(expr: str, spec: FieldSpec, text: str, position: int) -> Field:
    if "?" in text:
        if spec not in (DAY, WEEKDAY):
            problem = "is not allowed here (? is for day-of-month and day-of-week)"
            raise _fail(expr, spec, text, position, problem)
        if text != "?":
            raise _fail(expr, spec, text, position, "must be the whole field ('?' means '*')")
        return Field(spec, text, position, (Element("every", "?", position, spec.lo, spec.top),))
    elements: List[Element] = []
    offset = 0
    for item in text.split(","):
        if not item:
            raise CronError(
                f"{spec.name}: empty item in the list '{text}' in '{expr}'",
                expression=expr,
                field=spec.name,
                position=position + offset,
            )
        elements.append(_parse_element(expr, spec, item, position + offset))
        offset += len(item) + 1
    return Field(spec, text, position, tuple(elements))


def _parse_element(expr: str, spec: FieldSpec, item: str, pos: int) -> Element:
    element: Optional[Element] = None
    if spec is DAY:
        element = _day_special(expr, item, pos)
    elif spec is WEEKDAY:
        if item in ("L", "l"):
            raise _fail(expr, spec, item, pos, "needs a day, such as '5L' for the last Friday")
        element = _weekday_special(expr, item, pos)
    elif _LOOKS_L.fullmatch(item) or _LOOKS_W.fullmatch(item):
        raise _diagnose(expr, spec, item, pos)
    if element is not None:
        return element
    m = _HASH.fullmatch(item)
    if m is not None:
        return _hash_element(expr, spec, item, pos, m)
    m = _RANGE.fullmatch(item)
    if m is not None:
        return _range_element(expr, spec, item, pos, m)
    raise _diagnose(expr, spec, item, pos)


def _diagnose(expr: str, spec: FieldSpec, item: str, pos: int) -> CronError:
    """The most helpful error for an item no rule accepts."""
    if "#" in item and spec is not WEEKDAY:
        return _fail(expr, spec, item, pos, "is not allowed here (# is for day-of-week)")
    if _LOOKS_W.fullmatch(item) and spec is not DAY:
        return _fail(expr, spec, item, pos, "is not allowed here (W is for day-of-month)")
    if _LOOKS_L.fullmatch(item) and spec not in (DAY, WEEKDAY):
        return _fail(expr, spec, item, pos, "is not allowed here (L is for day-of-month and day-of-week)")
    if item.isascii() and item.isalpha():
        return _fail(expr, spec, item, pos, "is not a number")
    return _fail(expr, spec, item, pos, "is not valid cron syntax")


def _number(expr: str, spec: FieldSpec, text: str, pos: int, lo: int, hi: int) -> int:
    """The value of a number or a name, checked against ``lo``..``hi``."""
    if text.isdigit():
        digits = text.lstrip("0") or "0"
        if len(digits) > _MAX_DIGITS:
            raise _fail(expr, spec, text, pos, f"is out of range {lo}-{hi}")
        value = int(digits)
    elif spec.names:
        found = spec.names.get(text.lower())
        if found is None:
            kind = "month name (JAN-DEC)" if spec is MONTH else "day name (SUN-SAT)"
            raise _fail(expr, spec, text, pos, f"is not a {kind}")
        value = found
    else:
        raise _fail(expr, spec, text, pos, "is not a number")
    if not lo <= value <= hi:
        raise _fail(expr, spec, text, pos, f"is out of range {lo}-{hi}")
    return value


def _step(expr: str, spec: FieldSpec, item: str, pos: int, text: str) -> int:
    digits = text.lstrip("0")
    if not digits:
        raise _fail(expr, spec, item, pos, "has a step of 0 (use 1 or more)")
    span = spec.top - spec.lo + 1
    # A step longer than the field's cycle keeps only the first value; clamping keeps int() small.
    return span if len(digits) > _MAX_DIGITS else min(int(digits), span)


def _range_element(expr: str, spec: FieldSpec, item: str, pos: int, m: re.Match[str]) -> Element:
    step = _step(expr, spec, item, pos, m.group(4)) if m.group(4) is not None else 1
    if m.group(1):
        return Element("every", item, pos, spec.lo, spec.top, step)
    start = _number(expr, spec, m.group(2), pos + m.start(2), spec.lo, spec.hi)
    end_text = m.group(3)
    if end_text is None:
        if m.group(4) is None:
            return Element("value", item, pos, start, start)
        return Element("from", item, pos, start, spec.top, step)
    if spec is DAY and end_text in ("L", "l"):
        stop = spec.top  # 'a-L': to the month's last day (days a month lacks never match)
    else:
        stop = _number(expr, spec, end_text, pos + m.start(3), spec.lo, spec.hi)
    if start == stop and step == 1:
        return Element("value", item, pos, start, start)  # 'a-a' is the single value a
    return Element("range", item, pos, start, stop, step)


def _hash_element(expr: str, spec: FieldSpec, item: str, pos: int, m: re.Match[str]) -> Element:
    step = _step(expr, spec, item, pos, m.group(3)) if m.group(3) is not None else 0
    if m.group(1) is None:
        return Element("hash", item, pos, spec.lo, spec.top, step)
    start = _number(expr, spec, m.group(1), pos + m.start(1), spec.lo, spec.hi)
    stop = _number(expr, spec, m.group(2), pos + m.start(2), spec.lo, spec.hi)
    if start >= stop:
        raise _fail(expr, spec, item, pos, "needs a range whose start is below its end")
    return Element("hash", item, pos, start, stop, step, True)


def _day_special(expr: str, item: str, pos: int) -> Optional[Element]:
    m = _DOM_LAST.fullmatch(item)
    if m is not None:
        n = 0
        if m.group(1) is not None:
            n = _number(expr, DAY, m.group(1), pos + m.start(1), 0, 30)
        return Element("last", item, pos, n, n)
    m = _DOM_NEAREST.fullmatch(item)
    if m is not None:
        n = _number(expr, DAY, m.group(1), pos, 1, 31)
        return Element("nearest", item, pos, n, n)
    if _DOM_LAST_WEEKDAY.fullmatch(item):
        return Element("last_weekday", item, pos)
    return None


def _weekday_special(expr: str, item: str, pos: int) -> Optional[Element]:
    m = _DOW_LAST.fullmatch(item)
    if m is not None:
        group = 1 if m.group(1) is not None else 2
        day = _number(expr, WEEKDAY, m.group(group), pos + m.start(group), 0, 7) % 7
        return Element("last_of", item, pos, day, day)
    m = _DOW_NTH.fullmatch(item)
    if m is not None:
        day = _number(expr, WEEKDAY, m.group(1), pos, 0, 7) % 7
        k_digits = m.group(2).lstrip("0")
        if not k_digits or len(k_digits) > 1 or not 1 <= int(k_digits) <= 5:
            raise _fail(expr, WEEKDAY, item, pos, "is not a valid occurrence (use #1 to #5)")
        return Element("nth", item, pos, day, int(k_digits))
    return None


def field_values(field: Field, crc: Optional[int], expr: str) -> Set[int]:
    """The values the plain items of ``field`` allow (L/W/# items contribute none).

    ``crc`` is the CRC-32 of the hash key, needed only by ``H`` items.
    """
    spec = field.spec
    out: Set[int] = set()
    for el in field.elements:
        if el.kind == "value":
            out.add(el.start)
        elif el.kind in ("every", "from", "range"):
            out.update(_stepped(spec, el.start, el.stop, el.step))
        elif el.kind == "hash":
            if crc is None:
                raise _fail(expr, spec, el.text, el.position,
                            "needs a hash key (the scheduler passes the schedule name)")
            out.update(hashed_values(spec, el, crc))
    if max(out, default=0) > spec.top:  # a wrapped range, or 7 for Sunday
        span = spec.top - spec.lo + 1
        return {(v - spec.lo) % span + spec.lo for v in out}
    return out


def _stepped(spec: FieldSpec, start: int, stop: int, step: int) -> range:
    """``start`` to ``stop`` by ``step``; past ``top`` the values wrap (``22-2/2``: 22, 0, 2)."""
    if start == stop:
        return range(start, start + 1)
    if start > stop:
        if spec is WEEKDAY and start == 7:
            start = 0  # '7-2' is Sunday to Tuesday
        else:
            stop += spec.top - spec.lo + 1
    return range(start, stop + 1, step)


def hash_crc(hash_key: Optional[str]) -> Optional[int]:
    """croniter's hash of a key: the CRC-32 of its UTF-8 bytes (any str works, even lone surrogates)."""
    return None if hash_key is None else zlib.crc32(hash_key.encode("utf-8", "surrogatepass"))


def hashed_values(spec: FieldSpec, el: Element, crc: int) -> range:
    """croniter 7's values for an H item: ``((crc >> field index) % span) + start``.

    With a step, the hashed value is the phase, drawn from the first period only.
    """
    bits = crc >> spec.hash_index
    if el.step == 0:
        value = bits % (el.stop - el.start + 1) + el.start
        return range(value, value + 1)
    first = bits % (min(el.start + el.step - 1, el.stop) - el.start + 1) + el.start
    return range(first, el.stop + 1, el.step)


def _is_frequent(field: Field) -> bool:
    # cronie's rule is a leading '*'. An H with a step (H/5) is '*/5' in another phase, so it is
    # frequent too (the contract's choice); a lone H or H(a-b) is one fixed value.
    first = field.elements[0]
    return field.star or (first.kind == "hash" and first.step > 0)


def resolve(parsed: ParsedCron, hash_key: Optional[str] = None) -> CronValues:
    """The allowed values of every field of ``parsed``; ``hash_key`` feeds ``H`` items."""
    crc = hash_crc(hash_key)
    expr = parsed.expression

    def values(field: Field) -> Tuple[int, ...]:
        return tuple(sorted(field_values(field, crc, expr)))

    years: Optional[Tuple[int, ...]] = None
    if parsed.year is not None and parsed.year.text not in ("*", "*/1"):
        years = values(parsed.year)  # a '*' year is any year, as in croniter
    day_els = parsed.day.elements
    dow_els = parsed.weekday.elements
    return CronValues(
        seconds=values(parsed.second) if parsed.second is not None else (0,),
        minutes=values(parsed.minute),
        hours=values(parsed.hour),
        months=values(parsed.month),
        years=years,
        days=frozenset(values(parsed.day)),
        last_offsets=frozenset(e.start for e in day_els if e.kind == "last"),
        nearest=frozenset(e.start for e in day_els if e.kind == "nearest"),
        last_weekday=any(e.kind == "last_weekday" for e in day_els),
        weekdays=frozenset(values(parsed.weekday)),
        last_of=frozenset(e.start for e in dow_els if e.kind == "last_of"),
        nth=frozenset((e.start, e.stop) for e in dow_els if e.kind == "nth"),
        day_and=parsed.day.star or parsed.weekday.star,
        is_fixed_time=not (_is_frequent(parsed.minute) or _is_frequent(parsed.hour)),
    )
