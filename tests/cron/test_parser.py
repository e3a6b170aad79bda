"""The cron parser: every syntax row of DESIGN §3 as values, every error message, H values."""

from __future__ import annotations

import contextlib
from typing import Dict, List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowyml_lite.cron.parser import CronValues, parse, resolve
from flowyml_lite.errors import CronError


def values(expression: str, hash_key: Optional[str] = None) -> CronValues:
    return resolve(parse(expression), hash_key)


class TestFieldOrder:
    def test_five_fields_are_minute_hour_day_month_weekday(self) -> None:
        v = values("1 2 3 4 5")
        assert (v.minutes, v.hours, v.months) == ((1,), (2,), (4,))
        assert (v.days, v.weekdays) == (frozenset({3}), frozenset({5}))

    def test_five_fields_fire_at_second_zero_in_any_year(self) -> None:
        v = values("* * * * *")
        assert v.seconds == (0,)
        assert v.years is None

    def test_the_sixth_field_is_seconds_as_in_croniter(self) -> None:
        assert values("0 0 * * * 30").seconds == (30,)

    def test_the_seventh_field_is_the_year_from_1970_to_2099(self) -> None:
        assert values("0 0 * * * 0 2025,2030").years == (2025, 2030)
        assert values("0 0 * * * 0 1970-1972").years == (1970, 1971, 1972)
        assert values("0 0 * * * 0 2099").years == (2099,)

    def test_a_star_year_is_any_year(self) -> None:
        assert values("0 0 * * * 0 *").years is None

    def test_fields_may_be_separated_by_tabs_and_padded(self) -> None:
        assert values("  5\t4 * * *  ").minutes == (5,)


class TestValues:
    @pytest.mark.parametrize(
        ("expression", "minutes"),
        [
            ("*", tuple(range(60))),
            ("7", (7,)),
            ("07", (7,)),
            ("5-8", (5, 6, 7, 8)),
            ("1,5,3", (1, 3, 5)),
            ("*/15", (0, 15, 30, 45)),
            ("10-30/10", (10, 20, 30)),
            ("50/4", (50, 54, 58)),
            ("59/15", (59,)),
            ("*/61", (0,)),
            ("5-5", (5,)),
            ("5-5/3", (5,)),
            ("58-2", (0, 1, 2, 58, 59)),
            ("0-10/5,30", (0, 5, 10, 30)),
        ],
    )
    def test_minute_syntax(self, expression: str, minutes: Tuple[int, ...]) -> None:
        assert values(f"{expression} * * * *").minutes == minutes

    def test_a_wrapping_range_continues_its_step_through_the_wrap(self) -> None:
        assert values("0 22-2/2 * * *").hours == (0, 2, 22)
        assert values("0 21-3/3 * * *").hours == (0, 3, 21)
        assert values("0 0 * 11-2/2 *").months == (1, 11)

    def test_a_wrapping_day_of_month_range_runs_to_the_31st(self) -> None:
        assert values("0 0 28-3 * *").days == {28, 29, 30, 31, 1, 2, 3}

    def test_a_day_of_month_range_may_end_at_l(self) -> None:
        assert values("0 0 1-L/10 * *").days == {1, 11, 21, 31}

    @pytest.mark.parametrize(
        ("month", "months"),
        [
            ("JAN", (1,)),
            ("dec", (12,)),
            ("Jun-Aug", (6, 7, 8)),
            ("NOV-FEB", (1, 2, 11, 12)),
            ("JAN/4", (1, 5, 9)),
        ],
    )
    def test_month_names_in_any_case(self, month: str, months: Tuple[int, ...]) -> None:
        assert values(f"0 0 1 {month} *").months == months

    @pytest.mark.parametrize(
        ("weekday", "weekdays"),
        [
            ("0", {0}),
            ("7", {0}),
            ("SUN", {0}),
            ("sat", {6}),
            ("MON-FRI", {1, 2, 3, 4, 5}),
            ("FRI-MON", {5, 6, 0, 1}),
            ("5-7", {5, 6, 0}),
            ("7-2", {0, 1, 2}),
            ("0-7", {0, 1, 2, 3, 4, 5, 6}),
            ("*/2", {0, 2, 4, 6}),
            ("1/2", {1, 3, 5}),
            ("1-7/2", {1, 3, 5, 0}),
            ("Mon,wed,FRI", {1, 3, 5}),
        ],
    )
    def test_weekday_names_and_both_sundays(self, weekday: str, weekdays: set) -> None:  # type: ignore[type-arg]
        assert values(f"0 0 * * {weekday}").weekdays == weekdays

    def test_question_mark_means_star_in_day_fields(self) -> None:
        v = values("0 0 ? * ?")
        assert v.days == set(range(1, 32))
        assert v.weekdays == set(range(7))

    @pytest.mark.parametrize(
        ("macro", "expansion"),
        [
            ("@yearly", "0 0 1 1 *"),
            ("@annually", "0 0 1 1 *"),
            ("@monthly", "0 0 1 * *"),
            ("@weekly", "0 0 * * 0"),
            ("@daily", "0 0 * * *"),
            ("@midnight", "0 0 * * *"),
            ("@hourly", "0 * * * *"),
            ("@DAILY", "0 0 * * *"),
        ],
    )
    def test_macros_expand_to_their_five_fields(self, macro: str, expansion: str) -> None:
        assert values(macro) == values(expansion)
        assert parse(macro).macro == macro.lower()


class TestDaySpecials:
    def test_l_and_l_minus_n_are_offsets_from_the_last_day(self) -> None:
        v = values("0 0 L,L-3 * *")
        assert v.last_offsets == {0, 3}
        assert v.days == frozenset()

    def test_n_w_is_the_nearest_weekday(self) -> None:
        assert values("0 0 15W * *").nearest == {15}

    def test_lw_is_the_last_weekday(self) -> None:
        assert values("0 0 LW * *").last_weekday

    @pytest.mark.parametrize("text", ["5L", "L5", "FRIL", "fril", "l5"])
    def test_last_weekday_of_month_in_both_spellings(self, text: str) -> None:
        assert values(f"0 0 * * {text}").last_of == {5}

    def test_nth_weekday(self) -> None:
        assert values("0 0 * * 5#2,MON#1,7#5").nth == {(5, 2), (1, 1), (0, 5)}

    def test_specials_mix_with_plain_values_in_a_list(self) -> None:
        v = values("0 0 1,15,L * *")
        assert v.days == {1, 15}
        assert v.last_offsets == {0}


class TestVixieRuleInput:
    @pytest.mark.parametrize(
        ("expression", "day_and"),
        [
            ("0 0 * * *", True),
            ("0 0 1 * 1", False),
            ("0 0 */2 * 1", True),
            ("0 0 1 * */2", True),
            ("0 0 ? * 1", True),
            ("0 0 1 * ?", True),
            ("0 0 1-31 * 0-6", False),
            ("0 0 L * 5L", False),
        ],
    )
    def test_day_fields_are_anded_when_either_starts_with_a_star(
        self, expression: str, day_and: bool
    ) -> None:
        assert values(expression).day_and is day_and


class TestIsFixedTime:
    @pytest.mark.parametrize(
        ("expression", "fixed"),
        [
            ("0 9 * * *", True),
            ("30 2 * * *", True),
            ("0,30 1-3 * * *", True),
            ("0-59 * * * *", False),
            ("* 9 * * *", False),
            ("*/15 * * * *", False),
            ("0 */2 * * *", False),
            ("15 * * * *", False),
            ("H H * * *", True),
            ("H(0-29) 3 * * *", True),
            ("H/5 3 * * *", False),
            ("0 H(0-5)/2 * * *", False),
            ("@daily", True),
            ("@weekly", True),
            ("@hourly", False),
            ("0 9 * * * *", True),
        ],
    )
    def test_fixed_time_means_neither_minute_nor_hour_starts_with_a_star(
        self, expression: str, fixed: bool
    ) -> None:
        assert values(expression, "key").is_fixed_time is fixed


def croniter_expanded(expression: str, key: str) -> List[List[int]]:
    croniter = pytest.importorskip("croniter").croniter

    fields, _ = croniter.expand(expression, hash_id=key.encode("utf-8"))
    out = []
    for i, field in enumerate(fields):
        ranges = {0: 60, 1: 24, 2: 31, 3: 12, 4: 7, 5: 60}
        if field == ["*"]:
            lo = 1 if i in (2, 3) else 0
            out.append(list(range(lo, lo + ranges[i])))
        else:
            out.append(sorted(int(x) for x in field))
    return out


class TestHashMatchesCroniter:
    KEYS = ("abc", "etl", "nightly-report", "ü-unicode", "", "job42", "x" * 40)
    EXPRESSIONS = (
        "H H H H H",
        "H/7 H/5 H/10 H/4 H/2",
        "H(3-40) H(2-20) H(1-28) H(2-11) H(1-5)",
        "H(10-50)/7 H(1-23)/5 H(3-31)/9 H(1-12)/5 H(0-6)/3",
        "H/61 H/25 * * *",
        "H(0-1) * * * *",
        "0 0 * * * H",
        "0 0 * * * H/20",
        "h h * * *",
    )

    @pytest.mark.parametrize("key", KEYS)
    @pytest.mark.parametrize("expression", EXPRESSIONS)
    def test_h_fields_take_croniters_values_for_the_same_key(self, expression: str, key: str) -> None:
        v = values(expression, key)
        ours = [list(v.minutes), list(v.hours), sorted(v.days), list(v.months), sorted(v.weekdays)]
        if expression.count(" ") == 5:
            ours.append(list(v.seconds))
        assert ours == croniter_expanded(expression, key)

    def test_the_year_field_hashes_with_croniters_index(self) -> None:
        croniter = pytest.importorskip("croniter").croniter

        for key in self.KEYS:
            fields, _ = croniter.expand("0 0 1 1 * 0 H", hash_id=key.encode("utf-8"))
            assert values("0 0 1 1 * 0 H", key).years == (int(fields[6][0]),)

    def test_h_in_day_of_week_range_may_end_at_seven(self) -> None:
        assert all(d in range(7) for d in values("0 0 * * H(1-7)", "abc").weekdays)

    def test_different_keys_spread_schedules(self) -> None:
        minutes = {values("H * * * *", f"job{i}").minutes for i in range(40)}
        assert len(minutes) > 10


def error(expression: str, hash_key: Optional[str] = None) -> CronError:
    with pytest.raises(CronError) as info:
        resolve(parse(expression), hash_key)
    return info.value


# expression -> (message, field, position)
ERROR_CASES: Dict[str, Tuple[str, Optional[str], Optional[int]]] = {
    "0 9 * * 8": ("day-of-week: '8' is out of range 0-7 in '0 9 * * 8'", "day-of-week", 8),
    "60 * * * *": ("minute: '60' is out of range 0-59 in '60 * * * *'", "minute", 0),
    "0 24 * * *": ("hour: '24' is out of range 0-23 in '0 24 * * *'", "hour", 2),
    "0 0 0 * *": ("day-of-month: '0' is out of range 1-31 in '0 0 0 * *'", "day-of-month", 4),
    "0 0 32 * *": ("day-of-month: '32' is out of range 1-31 in '0 0 32 * *'", "day-of-month", 4),
    "0 0 1 13 *": ("month: '13' is out of range 1-12 in '0 0 1 13 *'", "month", 6),
    "0 0 1 1-13 *": ("month: '13' is out of range 1-12 in '0 0 1 1-13 *'", "month", 8),
    "0 0 * * * 60": ("second: '60' is out of range 0-59 in '0 0 * * * 60'", "second", 10),
    "0 0 * * * 0 1969": ("year: '1969' is out of range 1970-2099 in '0 0 * * * 0 1969'", "year", 12),
    "0 0 * * * 0 2100": ("year: '2100' is out of range 1970-2099 in '0 0 * * * 0 2100'", "year", 12),
    "99999999999999 * * * *": (
        "minute: '99999999999999' is out of range 0-59 in '99999999999999 * * * *'", "minute", 0),
    "* * *": ("expected 5 to 7 fields, got 3 in '* * *'", None, 5),
    "* * * * * * * *": ("expected 5 to 7 fields, got 8 in '* * * * * * * *'", None, 14),
    "": ("empty expression: expected 5 to 7 fields such as '* * * * *' in ''", None, 0),
    "   ": ("empty expression: expected 5 to 7 fields such as '* * * * *' in '   '", None, 0),
    "*/0 * * * *": ("minute: '*/0' has a step of 0 (use 1 or more) in '*/0 * * * *'", "minute", 0),
    "0 1-5/00 * * *": ("hour: '1-5/00' has a step of 0 (use 1 or more) in '0 1-5/00 * * *'", "hour", 2),
    "0 0 1 MOX *": ("month: 'MOX' is not a month name (JAN-DEC) in '0 0 1 MOX *'", "month", 6),
    "0 0 * * MON-FRX": (
        "day-of-week: 'FRX' is not a day name (SUN-SAT) in '0 0 * * MON-FRX'", "day-of-week", 12),
    "0 0 JAN * *": ("day-of-month: 'JAN' is not a number in '0 0 JAN * *'", "day-of-month", 4),
    "x * * * *": ("minute: 'x' is not a number in 'x * * * *'", "minute", 0),
    "0 L * * *": (
        "hour: 'L' is not allowed here (L is for day-of-month and day-of-week) in '0 L * * *'", "hour", 2),
    "0 0 1 5L *": (
        "month: '5L' is not allowed here (L is for day-of-month and day-of-week) in '0 0 1 5L *'",
        "month",
        6,
    ),
    "0 0 * * 5W": ("day-of-week: '5W' is not allowed here (W is for day-of-month) in '0 0 * * 5W'",
                   "day-of-week", 8),
    "0 0 1#2 * *": ("day-of-month: '1#2' is not allowed here (# is for day-of-week) in '0 0 1#2 * *'",
                    "day-of-month", 4),
    "0 0 * * 5#6": ("day-of-week: '5#6' is not a valid occurrence (use #1 to #5) in '0 0 * * 5#6'",
                    "day-of-week", 8),
    "0 0 * * 5#0": ("day-of-week: '5#0' is not a valid occurrence (use #1 to #5) in '0 0 * * 5#0'",
                    "day-of-week", 8),
    "0 0 * * L": ("day-of-week: 'L' needs a day, such as '5L' for the last Friday in '0 0 * * L'",
                  "day-of-week", 8),
    "0 0 * * 8L": ("day-of-week: '8' is out of range 0-7 in '0 0 * * 8L'", "day-of-week", 8),
    "0 0 32W * *": ("day-of-month: '32' is out of range 1-31 in '0 0 32W * *'", "day-of-month", 4),
    "0 0 L-31 * *": ("day-of-month: '31' is out of range 0-30 in '0 0 L-31 * *'", "day-of-month", 6),
    "0 0 1-5W * *": (
        "day-of-month: '1-5W' is not valid cron syntax in '0 0 1-5W * *'", "day-of-month", 4),
    "1% * * * *": ("minute: '1%' is not valid cron syntax in '1% * * * *'", "minute", 0),
    "*-5 * * * *": ("minute: '*-5' is not valid cron syntax in '*-5 * * * *'", "minute", 0),
    "1,,2 * * * *": ("minute: empty item in the list '1,,2' in '1,,2 * * * *'", "minute", 2),
    "0 ? * * *": ("hour: '?' is not allowed here (? is for day-of-month and day-of-week) in '0 ? * * *'",
                  "hour", 2),
    "0 0 ?,1 * *": ("day-of-month: '?,1' must be the whole field ('?' means '*') in '0 0 ?,1 * *'",
                    "day-of-month", 4),
    "@reboot": ("'@reboot' is not a known macro (use one of @yearly, @annually, @monthly, @weekly, "
                "@daily, @midnight, @hourly) in '@reboot'", None, 0),
    "H * * * *": ("minute: 'H' needs a hash key (the scheduler passes the schedule name) in 'H * * * *'",
                  "minute", 0),
    "0 H(5-5) * * *": ("hour: 'H(5-5)' needs a range whose start is below its end in '0 H(5-5) * * *'",
                       "hour", 2),
    "H(0-60) * * * *": ("minute: '60' is out of range 0-59 in 'H(0-60) * * * *'", "minute", 4),
    "H/0 * * * *": ("minute: 'H/0' has a step of 0 (use 1 or more) in 'H/0 * * * *'", "minute", 0),
    "0 0 * * \u00a0": (
        "day-of-week: '\u00a0' is not valid cron syntax in '0 0 * * \u00a0'", "day-of-week", 8),
    "\u0663 * * * *": ("minute: '\u0663' is not valid cron syntax in '\u0663 * * * *'", "minute", 0),
}


class TestErrors:
    @pytest.mark.parametrize("expression", list(ERROR_CASES))
    def test_message_names_the_field_the_text_and_its_position(self, expression: str) -> None:
        message, field, position = ERROR_CASES[expression]
        exc = error(expression)
        assert str(exc) == message
        assert exc.field == field
        assert exc.position == position
        assert exc.expression == expression

    def test_the_position_points_into_the_original_text(self) -> None:
        exc = error("  0   9  *  *  8")
        assert exc.position == 15

    def test_a_non_string_is_a_type_error(self) -> None:
        with pytest.raises(TypeError):
            parse(5)  # type: ignore[arg-type]

    def test_cron_error_is_a_value_error(self) -> None:
        assert isinstance(error("0 9 * * 8"), ValueError)


class TestRobustness:
    @settings(max_examples=300)
    @given(st.text(alphabet=st.sampled_from(list("0123456789*/-,?LWH#()@ lwhJANMONFRI\t%")), max_size=30))
    def test_any_text_parses_or_raises_cron_error(self, text: str) -> None:
        with contextlib.suppress(CronError):
            resolve(parse(text), "key")

    @settings(max_examples=200)
    @given(st.text(max_size=20))
    def test_any_unicode_parses_or_raises_cron_error(self, text: str) -> None:
        with contextlib.suppress(CronError):
            resolve(parse(text + " * * * *"))
