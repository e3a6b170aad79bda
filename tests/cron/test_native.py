"""The native engine: next_wall sequences for every syntax row, never-matching detection,
matches(), the cache, and agreement with croniter where both accept the syntax."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import List, Optional
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowyml_lite.cron.native import NativeCron, NativeEngine
from flowyml_lite.errors import CronError

ENGINE = NativeEngine()
JAN_1 = datetime(2024, 1, 1)  # a Monday


def walk(
    expression: str, start: datetime = JAN_1, count: int = 5, hash_key: Optional[str] = None
) -> List[str]:
    """The next ``count`` wall times after ``start``, as ISO strings (stops at None)."""
    cron = ENGINE.compile(expression, hash_key)
    out: List[str] = []
    current: Optional[datetime] = start
    for _ in range(count):
        assert current is not None
        current = cron.next_wall(current)
        if current is None:
            break
        out.append(current.isoformat(sep=" "))
    return out


class TestSyntaxRows:
    @pytest.mark.parametrize(
        ("expression", "expected"),
        [
            ("* * * * *", ["2024-01-01 00:01:00", "2024-01-01 00:02:00", "2024-01-01 00:03:00"]),
            ("*/20 * * * *", ["2024-01-01 00:20:00", "2024-01-01 00:40:00", "2024-01-01 01:00:00"]),
            ("10-30/10 3 * * *", ["2024-01-01 03:10:00", "2024-01-01 03:20:00", "2024-01-01 03:30:00",
                                  "2024-01-02 03:10:00"]),
            ("50/4 0 * * *", ["2024-01-01 00:50:00", "2024-01-01 00:54:00", "2024-01-01 00:58:00",
                              "2024-01-02 00:50:00"]),
            ("0 9,17 * * *", ["2024-01-01 09:00:00", "2024-01-01 17:00:00", "2024-01-02 09:00:00"]),
            ("0 9 * * 1-5", ["2024-01-01 09:00:00", "2024-01-02 09:00:00", "2024-01-03 09:00:00",
                             "2024-01-04 09:00:00", "2024-01-05 09:00:00", "2024-01-08 09:00:00"]),
            ("0 9 * * mon-FRI", ["2024-01-01 09:00:00", "2024-01-02 09:00:00", "2024-01-03 09:00:00",
                                 "2024-01-04 09:00:00", "2024-01-05 09:00:00", "2024-01-08 09:00:00"]),
            ("0 0 * * 7", ["2024-01-07 00:00:00", "2024-01-14 00:00:00"]),
            ("0 0 * * 0", ["2024-01-07 00:00:00", "2024-01-14 00:00:00"]),
            ("0 0 1 JAN,jul *", ["2024-07-01 00:00:00", "2025-01-01 00:00:00", "2025-07-01 00:00:00"]),
            ("0 0 * * FRI-MON", ["2024-01-05 00:00:00", "2024-01-06 00:00:00", "2024-01-07 00:00:00",
                                 "2024-01-08 00:00:00", "2024-01-12 00:00:00"]),
            ("0 22-2 * * *", ["2024-01-01 01:00:00", "2024-01-01 02:00:00", "2024-01-01 22:00:00",
                              "2024-01-01 23:00:00", "2024-01-02 00:00:00"]),
            ("0 22-2/2 * * *", ["2024-01-01 02:00:00", "2024-01-01 22:00:00", "2024-01-02 00:00:00",
                                "2024-01-02 02:00:00", "2024-01-02 22:00:00"]),
            ("5-5 * * * *", ["2024-01-01 00:05:00", "2024-01-01 01:05:00"]),
            ("0 0 1 * *", ["2024-02-01 00:00:00", "2024-03-01 00:00:00"]),
            ("0 0 29 2 *", ["2024-02-29 00:00:00", "2028-02-29 00:00:00", "2032-02-29 00:00:00"]),
            ("0 0 31 * *", ["2024-01-31 00:00:00", "2024-03-31 00:00:00", "2024-05-31 00:00:00",
                            "2024-07-31 00:00:00", "2024-08-31 00:00:00"]),
            ("@yearly", ["2025-01-01 00:00:00", "2026-01-01 00:00:00"]),
            ("@annually", ["2025-01-01 00:00:00", "2026-01-01 00:00:00"]),
            ("@monthly", ["2024-02-01 00:00:00", "2024-03-01 00:00:00"]),
            ("@weekly", ["2024-01-07 00:00:00", "2024-01-14 00:00:00"]),
            ("@daily", ["2024-01-02 00:00:00", "2024-01-03 00:00:00"]),
            ("@midnight", ["2024-01-02 00:00:00", "2024-01-03 00:00:00"]),
            ("@hourly", ["2024-01-01 01:00:00", "2024-01-01 02:00:00"]),
            ("0 12 L * *", ["2024-01-31 12:00:00", "2024-02-29 12:00:00", "2024-03-31 12:00:00",
                            "2024-04-30 12:00:00"]),
            ("0 0 L-3 * *", ["2024-01-28 00:00:00", "2024-02-26 00:00:00", "2024-03-28 00:00:00",
                             "2024-04-27 00:00:00"]),
            # 2024: Jun 1 and Sep 1 are weekend days; 1W never leaves the month.
            ("0 0 1W * *", ["2024-02-01 00:00:00", "2024-03-01 00:00:00", "2024-04-01 00:00:00",
                            "2024-05-01 00:00:00", "2024-06-03 00:00:00", "2024-07-01 00:00:00"]),
            # 2024-06-15 is a Saturday -> Friday 14th; 2024-09-15 is a Sunday -> Monday 16th.
            ("0 0 15W 6,9 *", ["2024-06-14 00:00:00", "2024-09-16 00:00:00"]),
            # 2024-03-31 is a Sunday: the nearest weekday in March is Friday the 29th.
            ("0 0 31W 3 *", ["2024-03-29 00:00:00", "2025-03-31 00:00:00"]),
            # Past the month's end there is no match that month (Quartz): no 31W in April.
            ("0 0 31W 3,4 *", ["2024-03-29 00:00:00", "2025-03-31 00:00:00"]),
            ("0 0 LW * *", ["2024-01-31 00:00:00", "2024-02-29 00:00:00", "2024-03-29 00:00:00",
                            "2024-04-30 00:00:00"]),
            ("0 0 * * 5L", ["2024-01-26 00:00:00", "2024-02-23 00:00:00", "2024-03-29 00:00:00"]),
            ("0 0 * * L5", ["2024-01-26 00:00:00", "2024-02-23 00:00:00", "2024-03-29 00:00:00"]),
            ("0 0 * * 0L", ["2024-01-28 00:00:00", "2024-02-25 00:00:00", "2024-03-31 00:00:00"]),
            ("0 0 * * 5#2", ["2024-01-12 00:00:00", "2024-02-09 00:00:00", "2024-03-08 00:00:00"]),
            ("0 0 * * 1#1,1#3", ["2024-01-15 00:00:00", "2024-02-05 00:00:00", "2024-02-19 00:00:00"]),
            # Months with five Thursdays only: Feb and Mar 2024 have four.
            ("0 0 * * 4#5", ["2024-02-29 00:00:00", "2024-05-30 00:00:00", "2024-08-29 00:00:00"]),
            ("0 0 ? * 1", ["2024-01-08 00:00:00", "2024-01-15 00:00:00"]),
            ("0 0 1 * ?", ["2024-02-01 00:00:00", "2024-03-01 00:00:00"]),
            ("0 0 * * * 30", ["2024-01-01 00:00:30", "2024-01-02 00:00:30"]),
            ("* * * * * */20", ["2024-01-01 00:00:20", "2024-01-01 00:00:40", "2024-01-01 00:01:00"]),
            ("0 0 1 1 * 0 2030,2040", ["2030-01-01 00:00:00", "2040-01-01 00:00:00"]),
            ("0 0 1 1 * 0 */10", ["2030-01-01 00:00:00", "2040-01-01 00:00:00"]),
        ],
    )
    def test_sequence(self, expression: str, expected: List[str]) -> None:
        assert walk(expression, count=len(expected)) == expected

    def test_h_fields_use_the_hash_key(self) -> None:
        # croniter 7 gives minute 18, hour 9 for the key "abc".
        assert walk("H H * * *", count=2, hash_key="abc") == ["2024-01-01 09:18:00", "2024-01-02 09:18:00"]

    def test_h_with_a_step_keeps_the_step(self) -> None:
        times = walk("H/15 * * * *", count=4, hash_key="abc")
        minutes = [int(t[14:16]) for t in times]
        assert [b - a for a, b in zip(minutes, minutes[1:])] in ([15, 15, 15], [15, 15, -45], [15, -45, 15],
                                                                  [-45, 15, 15])


def days(expression: str, count: int = 6) -> List[str]:
    """``walk`` as "Fri 01-05" labels: the weekday matters in these rows."""
    cron = ENGINE.compile(expression)
    out: List[str] = []
    current: Optional[datetime] = JAN_1
    for _ in range(count):
        assert current is not None
        current = cron.next_wall(current)
        assert current is not None
        out.append(current.strftime("%a %m-%d"))
    return out


class TestUnionsThePeersReadDifferently:
    """Lists that mix plain values with ``#``, ``L`` or ``W`` entries: each entry adds its days
    (docs/cron.md, "Lists that mix special entries"). croniter refuses most of them, and reads
    ``*,sat#3`` as the third Saturday alone; cronsim refuses ``L6`` and ``15W,16``.
    These tests pin the peers' behaviour too, so the table in the docs stays true."""

    ROWS = (
        ("0 0 * * 5,6#3", ["Fri 01-05", "Fri 01-12", "Fri 01-19", "Sat 01-20", "Fri 01-26", "Fri 02-02"]),
        ("0 0 * * 5,L6", ["Fri 01-05", "Fri 01-12", "Fri 01-19", "Fri 01-26", "Sat 01-27", "Fri 02-02"]),
        ("0 0 * * 5,6L", ["Fri 01-05", "Fri 01-12", "Fri 01-19", "Fri 01-26", "Sat 01-27", "Fri 02-02"]),
        ("0 0 * * *,sat#3", ["Tue 01-02", "Wed 01-03", "Thu 01-04", "Fri 01-05", "Sat 01-06", "Sun 01-07"]),
        ("0 0 15W,16 * *", ["Mon 01-15", "Tue 01-16", "Thu 02-15", "Fri 02-16", "Fri 03-15", "Sat 03-16"]),
        ("0 0 * * MONL", ["Mon 01-29", "Mon 02-26", "Mon 03-25", "Mon 04-29", "Mon 05-27", "Mon 06-24"]),
    )

    @pytest.mark.parametrize(("expression", "expected"), ROWS)
    def test_each_entry_of_the_list_adds_its_days(self, expression: str, expected: List[str]) -> None:
        assert days(expression) == expected

    def test_a_named_weekday_with_l_is_its_last_one_in_any_case(self) -> None:
        assert days("0 0 * * MONL") == days("0 0 * * monL") == days("0 0 * * 1L") == days("0 0 * * L1")

    @pytest.mark.parametrize(
        ("expression", "refusal"),
        [
            ("0 0 * * 5,6#3", "mixing literal values and nth day of week"),
            ("0 0 * * 5,L6", "mixing literal values and nth day of week"),
            ("0 0 15W,16 * *", "'W' can only be used with a single day value"),
            ("0 0 * * MONL", "is not acceptable"),
        ],
    )
    def test_croniter_refuses_them(self, expression: str, refusal: str) -> None:
        croniter = pytest.importorskip("croniter").croniter
        with pytest.raises(Exception, match=refusal):
            croniter(expression, JAN_1).get_next(datetime)

    def test_croniter_reads_star_or_third_saturday_as_the_third_saturday_alone(self) -> None:
        croniter = pytest.importorskip("croniter").croniter
        it = croniter("0 0 * * *,sat#3", JAN_1)
        assert [it.get_next(datetime).strftime("%a %m-%d") for _ in range(3)] == [
            "Sat 01-20",
            "Sat 02-17",
            "Sat 03-16",
        ]

    @pytest.mark.parametrize("expression", ["0 0 * * 5,6#3", "0 0 * * 5,6L", "0 0 * * *,sat#3"])
    def test_cronsim_agrees_where_it_reads_the_syntax(self, expression: str) -> None:
        cronsim = pytest.importorskip("cronsim")
        it = cronsim.CronSim(expression, JAN_1)
        assert [next(it).strftime("%a %m-%d") for _ in range(6)] == days(expression)

    @pytest.mark.parametrize("expression", ["0 0 * * 5,L6", "0 0 15W,16 * *", "0 0 * * MONL"])
    def test_cronsim_refuses_the_others(self, expression: str) -> None:
        cronsim = pytest.importorskip("cronsim")
        with pytest.raises(cronsim.CronSimError):
            cronsim.CronSim(expression, JAN_1)


class TestVixieRule:
    def test_both_restricted_day_fields_match_either(self) -> None:
        # Day 13 or any Friday (2024-01-05, 12, 19 are Fridays).
        assert walk("0 0 13 * 5", count=4) == [
            "2024-01-05 00:00:00", "2024-01-12 00:00:00", "2024-01-13 00:00:00", "2024-01-19 00:00:00"]

    def test_a_star_day_field_means_both_must_match(self) -> None:
        # Odd days (*/2 starts with '*') that are also Mondays: Jan 15, Jan 29, Feb 5.
        assert walk("0 0 */2 * 1", count=3) == ["2024-01-15 00:00:00", "2024-01-29 00:00:00",
                                                 "2024-02-05 00:00:00"]

    def test_a_stepped_star_weekday_ands_with_the_day_of_month(self) -> None:
        # Day 1 that falls on an even weekday (Sun, Tue, Thu, Sat).
        assert walk("0 0 1 * */2", count=3) == ["2024-02-01 00:00:00", "2024-06-01 00:00:00",
                                                 "2024-08-01 00:00:00"]

    def test_day_specials_join_by_or_when_both_restricted(self) -> None:
        # The last day of the month or the last Friday.
        assert walk("0 0 L * 5L", count=3) == ["2024-01-26 00:00:00", "2024-01-31 00:00:00",
                                                "2024-02-23 00:00:00"]


class TestNeverMatching:
    @pytest.mark.parametrize(
        "expression",
        ["0 0 30 2 *", "0 0 31 4,6 *", "0 0 31 2,4,6,9,11 *", "0 0 29 2 * * 2025", "0 0 29 2 * * 2097-2099",
         "0 0 30W 2 *", "0 0 31 2-4/2 * * 2025"],
    )
    def test_is_an_error_at_compile_time(self, expression: str) -> None:
        with pytest.raises(CronError, match="never matches") as info:
            ENGINE.compile(expression)
        assert info.value.field == "day-of-month"

    def test_message_names_the_day_and_month_fields(self) -> None:
        with pytest.raises(CronError) as info:
            ENGINE.compile("0 0 30 2 *")
        assert str(info.value) == (
            "'0 0 30 2 *' never matches: no date has day-of-month '30' and day-of-week '*' in month '2'")
        assert info.value.position == 4

    @pytest.mark.parametrize(
        "expression",
        ["0 0 29 2 *", "0 0 31 2,4,5 *", "0 0 30 2 1", "0 0 29 2 * * 2028", "0 0 * 2 1#5", "0 0 */31 2 1",
         "0 0 L-27 2 *", "0 0 L-28 2 * * 2028"],
    )
    def test_rare_but_possible_dates_compile(self, expression: str) -> None:
        cron = ENGINE.compile(expression)
        assert cron.next_wall(JAN_1) is not None

    @pytest.mark.parametrize(
        ("expression", "message"),
        [
            ("0 0 L-28 * *", "day-of-month: 'L-28' falls before the 1st of February in '0 0 L-28 * *'"),
            ("0 0 L-30 4 *", "day-of-month: 'L-30' falls before the 1st of April in '0 0 L-30 4 *'"),
        ],
    )
    def test_l_minus_n_that_leaves_an_allowed_month_is_an_error(self, expression: str, message: str) -> None:
        with pytest.raises(CronError) as info:
            ENGINE.compile(expression)
        assert str(info.value) == message
        assert info.value.position == 4

    def test_l_minus_n_is_checked_only_against_the_allowed_months(self) -> None:
        # January has 31 days, so L-30 is January 1st.
        assert walk("0 0 L-30 1 *", count=2) == ["2025-01-01 00:00:00", "2026-01-01 00:00:00"]


class TestNextWall:
    def test_is_strictly_after_the_start(self) -> None:
        cron = ENGINE.compile("0 9 * * *")
        assert cron.next_wall(datetime(2024, 1, 1, 9, 0)) == datetime(2024, 1, 2, 9, 0)

    def test_microseconds_of_the_start_are_dropped_but_the_result_stays_later(self) -> None:
        cron = ENGINE.compile("* * * * * *")
        assert cron.next_wall(datetime(2024, 1, 1, 9, 0, 0, 999999)) == datetime(2024, 1, 1, 9, 0, 1)
        cron = ENGINE.compile("* * * * *")
        assert cron.next_wall(datetime(2024, 1, 1, 9, 0, 59, 500000)) == datetime(2024, 1, 1, 9, 1)

    def test_results_have_no_microseconds(self) -> None:
        result = ENGINE.compile("*/7 * * * *").next_wall(datetime(2024, 5, 5, 5, 5, 5, 5))
        assert result is not None and result.microsecond == 0

    @pytest.mark.parametrize(
        ("start", "expected"),
        [
            (datetime(2024, 12, 31, 23, 59, 59), datetime(2025, 1, 1, 0, 0)),
            (datetime(2024, 2, 28, 23, 59), datetime(2024, 2, 29, 0, 0)),
            (datetime(2023, 2, 28, 23, 59), datetime(2023, 3, 1, 0, 0)),
            (datetime(2024, 4, 30, 23, 59, 30), datetime(2024, 5, 1, 0, 0)),
        ],
    )
    def test_carries_across_day_month_and_year_ends(self, start: datetime, expected: datetime) -> None:
        assert ENGINE.compile("* * * * *").next_wall(start) == expected

    def test_seconds_carry_into_minutes(self) -> None:
        cron = ENGINE.compile("* * * * * 10,50")
        assert cron.next_wall(datetime(2024, 1, 1, 0, 0, 50)) == datetime(2024, 1, 1, 0, 1, 10)

    def test_returns_none_when_the_year_field_is_exhausted(self) -> None:
        cron = ENGINE.compile("0 0 1 1 * 0 2025")
        assert cron.next_wall(datetime(2024, 6, 1)) == datetime(2025, 1, 1)
        assert cron.next_wall(datetime(2025, 1, 1)) is None
        assert cron.next_wall(datetime(2150, 1, 1)) is None

    def test_a_start_before_1970_jumps_to_the_first_allowed_year(self) -> None:
        assert ENGINE.compile("0 0 1 1 * 0 1970-1980").next_wall(datetime(1900, 1, 1)) == datetime(1970, 1, 1)

    def test_returns_none_past_year_9999(self) -> None:
        cron = ENGINE.compile("0 0 1 1 *")
        assert cron.next_wall(datetime(9998, 6, 1)) == datetime(9999, 1, 1)
        assert cron.next_wall(datetime(9999, 1, 1)) is None

    def test_works_far_from_the_present(self) -> None:
        assert ENGINE.compile("0 0 29 2 *").next_wall(datetime(2097, 1, 1)) == datetime(2104, 2, 29)
        assert ENGINE.compile("30 6 * * 1").next_wall(datetime(1, 1, 1)) == datetime(1, 1, 1, 6, 30)

    def test_every_result_matches_and_nothing_between_results_does(self) -> None:
        for expression in ["*/7 9-10 * * 1-5", "0 0 L * *", "15 * 1W * *", "* * * * * */13", "0 0 * * 5#2"]:
            cron = ENGINE.compile(expression)
            previous = datetime(2024, 3, 30, 8, 59, 3)
            with_seconds = expression.count(" ") == 5
            step = timedelta(seconds=1) if with_seconds else timedelta(minutes=1)
            for _ in range(20):
                result = cron.next_wall(previous)
                assert result is not None and cron.matches(result)
                probe = previous.replace(microsecond=0) + step
                if not with_seconds:
                    probe = previous.replace(second=0, microsecond=0) + step
                if result - previous < timedelta(days=2):
                    while probe < result:
                        assert not cron.matches(probe), (expression, probe)
                        probe += step
                previous = result


class TestMatches:
    @pytest.mark.parametrize(
        ("expression", "wall", "expected"),
        [
            ("0 9 * * 1-5", datetime(2024, 1, 1, 9, 0), True),
            ("0 9 * * 1-5", datetime(2024, 1, 6, 9, 0), False),
            ("0 9 * * 1-5", datetime(2024, 1, 1, 9, 0, 1), False),
            ("0 9 * * 1-5", datetime(2024, 1, 1, 9, 0, 0, 500), True),
            ("0 12 L * *", datetime(2024, 2, 29, 12, 0), True),
            ("0 12 L * *", datetime(2023, 2, 28, 12, 0), True),
            ("0 12 L * *", datetime(2024, 2, 28, 12, 0), False),
            ("0 0 1 1 * 0 2025", datetime(2025, 1, 1), True),
            ("0 0 1 1 * 0 2025", datetime(2026, 1, 1), False),
            ("0 0 1 1 * 0 2025", datetime(1900, 1, 1), False),
            ("0 0 1 1 * 0 2025", datetime(2200, 1, 1), False),
            ("0 0 13 * 5", datetime(2024, 1, 12), True),
            ("0 0 13 * 5", datetime(2024, 1, 13), True),
            ("0 0 13 * 5", datetime(2024, 1, 14), False),
        ],
    )
    def test_matches_to_the_second(self, expression: str, wall: datetime, expected: bool) -> None:
        assert ENGINE.compile(expression).matches(wall) is expected


class TestEngine:
    def test_is_named_native(self) -> None:
        assert NativeEngine.name == "native"

    def test_compiled_expressions_are_cached(self) -> None:
        assert ENGINE.compile("0 9 * * 1-5") is NativeEngine().compile("0 9 * * 1-5")

    def test_the_hash_key_is_ignored_by_expressions_without_h(self) -> None:
        assert ENGINE.compile("0 9 * * *", "a") is ENGINE.compile("0 9 * * *", "b")

    def test_the_hash_key_selects_the_values_of_h(self) -> None:
        a = ENGINE.compile("H H * * *", "alpha").next_wall(JAN_1)
        b = ENGINE.compile("H H * * *", "alpha").next_wall(JAN_1)
        c = ENGINE.compile("H H * * *", "omega").next_wall(JAN_1)
        assert a == b != c

    def test_compiled_expression_keeps_its_text_and_fixed_time_flag(self) -> None:
        cron = ENGINE.compile("30 2 * * *")
        assert isinstance(cron, NativeCron)
        assert cron.expression == "30 2 * * *"
        assert cron.is_fixed_time
        assert not ENGINE.compile("*/15 * * * *").is_fixed_time

    def test_any_string_is_a_usable_hash_key(self) -> None:
        assert ENGINE.compile("H * * * *", "\ud800 lone surrogate").next_wall(JAN_1) is not None

    def test_non_string_expressions_and_keys_are_type_errors(self) -> None:
        with pytest.raises(TypeError):
            ENGINE.compile(None)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            ENGINE.compile("H * * * *", 5)  # type: ignore[arg-type]


# Syntax both engines read alike (no a-a, no stepped wrap-around ranges, no '#'/'L'/'W' together with a
# restricted other day field, where croniter ANDs; no nW past a month's end, which croniter clamps).
CRONITER_AGREES = [
    "* * * * *",
    "*/5 * * * *",
    "0 9 * * 1-5",
    "0 0 1 * *",
    "0 0 29 2 *",
    "0 12 L * *",
    "15,45 */3 * * *",
    "0 0 13 * 5",
    "0 0 */2 * 1",
    "0 8-18/2 * jan-mar,oct *",
    "0 0 * * SAT-SUN",
    "0 22-2 * * *",
    "0 0 * * 5#2",
    "0 0 * * L5",
    "0 0 15W * *",
    "30 1 1,15 * *",
    "0 0 * * * 15",
    "*/10 * * * * */15",
    "0 0 1 1 * 0 2025-2030",
    "0 0 ? * MON",
]


class TestAgainstCroniter:
    @pytest.mark.parametrize("expression", CRONITER_AGREES)
    def test_same_naive_sequence_as_croniter_with_the_cron_bug(self, expression: str) -> None:
        pytest.importorskip("croniter")
        from croniter import CroniterBadDateError, croniter

        starts = (datetime(2024, 1, 1), datetime(2024, 2, 28, 23, 59, 59, 123), datetime(2025, 10, 31, 12, 7))
        for start in starts:
            it = croniter(expression, start, ret_type=datetime, implement_cron_bug=True)
            expected: List[Optional[datetime]] = []
            for _ in range(25):
                try:
                    expected.append(it.get_next())
                except CroniterBadDateError:  # a year field ran out
                    expected.append(None)
                    break
            cron = ENGINE.compile(expression)
            got: List[Optional[datetime]] = []
            current = start
            for _ in expected:
                nxt = cron.next_wall(current)
                got.append(nxt)
                if nxt is None:
                    break
                current = nxt
            assert got == expected, (expression, start)


ITEMS = [
    "*", "*", "*/7", "1-5", "5-1", "22-2/2", "3/4", "L", "LW", "15W", "L-3", "5L", "L5", "5#2", "H", "H/5",
    "H(1-9)/2", "?", "FRI-MON", "JAN-MAR", "0", "1", "7", "12", "29", "30", "31", "2030", "1970-1975/2", "%",
]


class TestAnyCompiledExpression:
    @settings(max_examples=300)
    @given(
        st.lists(st.lists(st.sampled_from(ITEMS), min_size=1, max_size=2), min_size=5, max_size=7),
        st.datetimes(min_value=datetime(1960, 1, 1), max_value=datetime(2200, 1, 1)),
    )
    def test_compiles_or_raises_cron_error_and_results_are_later_matches(
        self, fields: List[List[str]], start: datetime
    ) -> None:
        expression = " ".join(",".join(items) for items in fields)
        try:
            cron = ENGINE.compile(expression, "key")
        except CronError:
            return
        current = start
        for _ in range(3):
            nxt = cron.next_wall(current)
            if nxt is None:
                break
            assert nxt > current and nxt.microsecond == 0 and cron.matches(nxt)
            current = nxt


class TestIterWalls:
    """``iter_walls`` is ``next_wall`` called again and again, only faster."""

    @settings(max_examples=300)
    @given(
        st.lists(st.lists(st.sampled_from(ITEMS), min_size=1, max_size=2), min_size=5, max_size=7),
        st.datetimes(min_value=datetime(1960, 1, 1), max_value=datetime(2200, 1, 1)),
    )
    def test_yields_what_repeated_next_wall_returns(self, fields: List[List[str]], start: datetime) -> None:
        expression = " ".join(",".join(items) for items in fields)
        try:
            cron = ENGINE.compile(expression, "key")
        except CronError:
            return
        expected: List[datetime] = []
        current: Optional[datetime] = start
        while current is not None and len(expected) < 200:
            current = cron.next_wall(current)
            if current is not None:
                expected.append(current)
        got = list(itertools.islice(cron.iter_walls(start), 200))
        assert got == expected

    def test_attaches_the_zone_without_changing_the_wall(self) -> None:
        tz = ZoneInfo("America/New_York")
        cron = ENGINE.compile("*/30 1-2 * * *")
        walls = list(itertools.islice(cron.iter_walls(datetime(2024, 3, 9, 23), tz), 6))
        assert [w.tzinfo for w in walls] == [tz] * 6
        assert [w.fold for w in walls] == [0] * 6
        assert [w.isoformat() for w in walls[:4]] == [
            "2024-03-10T01:00:00-05:00",
            "2024-03-10T01:30:00-05:00",
            "2024-03-10T02:00:00-05:00",  # walls in the gap: the zone layer, not the engine, skips them
            "2024-03-10T02:30:00-05:00",
        ]

    def test_ends_where_the_year_field_or_datetime_ends(self) -> None:
        assert list(ENGINE.compile("0 0 1 1 * 0 2030-2032").iter_walls(datetime(2024, 1, 1))) == [
            datetime(2030, 1, 1),
            datetime(2031, 1, 1),
            datetime(2032, 1, 1),
        ]
        assert list(ENGINE.compile("59 23 31 12 *").iter_walls(datetime(9998, 1, 1))) == [
            datetime(9998, 12, 31, 23, 59),
            datetime(9999, 12, 31, 23, 59),
        ]
        assert list(ENGINE.compile("0 0 29 2 *").iter_walls(datetime(9996, 3, 1))) == []

    def test_seconds_field_walks_every_second_of_the_day(self) -> None:
        cron = ENGINE.compile("* * * * * *")
        walls = list(itertools.islice(cron.iter_walls(datetime(2024, 12, 31, 23, 59, 58)), 3))
        assert walls == [
            datetime(2024, 12, 31, 23, 59, 59),
            datetime(2025, 1, 1),
            datetime(2025, 1, 1, 0, 0, 1),
        ]
