"""The croniter engine plugin: the CronEngine contract on top of croniter's naive search."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import datetime, timezone
from typing import List, Optional

import pytest

pytest.importorskip("croniter")

from flowyml_lite import plugins
from flowyml_lite.cron import CronError, CronExpression
from flowyml_lite.cron.native import NativeEngine
from flowyml_lite_ext.croniter_engine import CroniterEngine, is_fixed_time

ENGINE = CroniterEngine()
NATIVE = NativeEngine()


def walls(expression: str, after: datetime, count: int, hash_key: Optional[str] = None) -> List[datetime]:
    cron = ENGINE.compile(expression, hash_key)
    out: List[datetime] = []
    wall: Optional[datetime] = after
    for _ in range(count):
        assert wall is not None
        wall = cron.next_wall(wall)
        if wall is None:
            break
        out.append(wall)
    return out


class TestSelection:
    def test_the_registry_finds_the_engine_by_name(self) -> None:
        found = plugins.get("cron", "croniter")
        engine = found() if isinstance(found, type) else found
        assert engine.name == "croniter"
        assert isinstance(engine.compile("* * * * *").is_fixed_time, bool)

    def test_cron_expression_runs_on_croniter_when_asked(self) -> None:
        expr = CronExpression("0 9 * * 1-5", "Europe/London", engine="croniter")
        fire = expr.next(datetime(2024, 3, 29, 12, 0, tzinfo=timezone.utc))
        assert fire is not None
        assert fire.isoformat() == "2024-04-01T09:00:00+01:00"

    def test_an_engine_instance_may_be_passed_instead_of_a_name(self) -> None:
        expr = CronExpression("*/5 * * * *", engine=ENGINE)
        fire = expr.next(datetime(2024, 1, 1, 0, 1, tzinfo=timezone.utc))
        assert fire == datetime(2024, 1, 1, 0, 5, tzinfo=timezone.utc)

    def test_without_croniter_the_error_names_the_pip_extra(self) -> None:
        code = (
            "import sys; sys.modules['croniter'] = None\n"
            "from flowyml_lite.cron import CronExpression\n"
            "CronExpression('* * * * *', engine='croniter')\n"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert result.returncode != 0
        assert "PluginNotInstalledError" in result.stderr
        assert "pip install 'flowyml-lite[croniter]'" in result.stderr


class TestNextWall:
    def test_the_result_is_strictly_after_the_start(self) -> None:
        assert walls("0 9 * * *", datetime(2024, 1, 1, 9, 0), 1) == [datetime(2024, 1, 2, 9, 0)]

    def test_a_start_one_microsecond_before_a_match_finds_it(self) -> None:
        start = datetime(2024, 1, 1, 8, 59, 59, 999999)
        assert walls("0 9 * * *", start, 1) == [datetime(2024, 1, 1, 9, 0)]

    def test_microseconds_past_a_match_skip_it(self) -> None:
        start = datetime(2024, 1, 1, 9, 0, 0, 1)
        assert walls("* * * * *", start, 2) == [datetime(2024, 1, 1, 9, 1), datetime(2024, 1, 1, 9, 2)]

    def test_microseconds_are_exact_in_far_years_too(self) -> None:
        # Float timestamps of year 9000 cannot hold microseconds; the engine never sends them.
        start = datetime(9000, 1, 1, 8, 59, 59, 999999)
        assert walls("0 9 * * *", start, 1) == [datetime(9000, 1, 1, 9, 0)]

    def test_a_sixth_field_searches_seconds(self) -> None:
        start = datetime(2024, 1, 1, 0, 0, 10)
        assert walls("* * * * * 10,40", start, 3) == [
            datetime(2024, 1, 1, 0, 0, 40),
            datetime(2024, 1, 1, 0, 1, 10),
            datetime(2024, 1, 1, 0, 1, 40),
        ]

    def test_a_year_field_in_the_past_gives_none(self) -> None:
        assert walls("0 0 1 1 * 0 2020", datetime(2021, 1, 1), 1) == []

    def test_a_year_field_ends_the_sequence(self) -> None:
        assert walls("0 0 1 1 * 0 2030-2031", datetime(2029, 6, 1), 5) == [
            datetime(2030, 1, 1),
            datetime(2031, 1, 1),
        ]

    def test_the_search_stops_at_the_end_of_year_9999(self) -> None:
        assert walls("* * * * *", datetime(9999, 12, 31, 23, 59), 1) == []

    def test_the_day_fields_follow_vixie_cron_and_when_one_starts_with_a_star(self) -> None:
        # 2024-01: Mondays are 1, 8, 15...; '*/2' days are odd. Vixie: both must hold.
        assert walls("0 0 */2 * 1", datetime(2024, 1, 1), 3) == [
            datetime(2024, 1, 15),
            datetime(2024, 1, 29),
            datetime(2024, 2, 5),
        ]

    def test_the_day_fields_or_when_both_are_restricted(self) -> None:
        assert walls("0 0 10 * 1", datetime(2024, 1, 1), 3) == [
            datetime(2024, 1, 8),
            datetime(2024, 1, 10),
            datetime(2024, 1, 15),
        ]

    def test_macros_stay_unhashed_when_a_hash_key_is_given(self) -> None:
        # croniter alone would turn '@hourly' into 'h * * * * h' for a hash_id.
        assert walls("@hourly", datetime(2024, 1, 1), 2, hash_key="etl") == [
            datetime(2024, 1, 1, 1, 0),
            datetime(2024, 1, 1, 2, 0),
        ]

    @pytest.mark.parametrize(
        "expression", ["H * * * *", "H H * * *", "H/15 * * * *", "H(0-29) H(8-10) * * *"]
    )
    def test_h_fields_take_the_same_values_as_the_native_engine(self, expression: str) -> None:
        native = NATIVE.compile(expression, "nightly-etl")
        wall: Optional[datetime] = datetime(2024, 1, 1)
        expected = []
        for _ in range(5):
            assert wall is not None
            wall = native.next_wall(wall)
            expected.append(wall)
        assert walls(expression, datetime(2024, 1, 1), 5, hash_key="nightly-etl") == expected

    def test_threads_sharing_one_compiled_expression_get_their_own_answers(self) -> None:
        cron = ENGINE.compile("*/7 * * * *")
        starts = [datetime(2024, 1, 1, h, m) for h in range(24) for m in (0, 13, 29, 44)]
        expected = {start: cron.next_wall(start) for start in starts}
        wrong: List[datetime] = []

        def work() -> None:
            for _ in range(5):
                for start in starts:
                    if cron.next_wall(start) != expected[start]:
                        wrong.append(start)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert wrong == []


class TestMatches:
    def test_a_matching_wall_time_matches(self) -> None:
        assert ENGINE.compile("0 9 * * 1-5").matches(datetime(2024, 1, 1, 9, 0))

    def test_seconds_past_the_minute_do_not_match_a_five_field_expression(self) -> None:
        assert not ENGINE.compile("0 9 * * *").matches(datetime(2024, 1, 1, 9, 0, 30))

    def test_a_weekend_does_not_match_a_weekday_expression(self) -> None:
        assert not ENGINE.compile("0 9 * * 1-5").matches(datetime(2024, 1, 6, 9, 0))

    def test_matching_uses_the_vixie_day_rule(self) -> None:
        cron = ENGINE.compile("0 0 */2 * 1")
        assert cron.matches(datetime(2024, 1, 15))  # odd and a Monday
        assert not cron.matches(datetime(2024, 1, 8))  # a Monday but even (OR would match)
        assert not cron.matches(datetime(2024, 1, 3))  # odd but a Wednesday (OR would match)

    def test_matching_uses_the_hash_key(self) -> None:
        cron = ENGINE.compile("H 9 * * *", "etl")
        first = cron.next_wall(datetime(2024, 1, 1))
        assert first is not None
        assert cron.matches(first)
        assert not cron.matches(first.replace(minute=(first.minute + 1) % 60))

    def test_seconds_fields_match_to_the_second(self) -> None:
        cron = ENGINE.compile("0 9 * * * 30")
        assert cron.matches(datetime(2024, 1, 1, 9, 0, 30))
        assert not cron.matches(datetime(2024, 1, 1, 9, 0, 31))

    def test_the_first_representable_second_can_be_asked(self) -> None:
        assert ENGINE.compile("0 0 * * *").matches(datetime.min) is False


class TestFixedTime:
    @pytest.mark.parametrize(
        "expression, fixed",
        [
            ("0 9 * * *", True),
            ("30 2 * * *", True),
            ("0,30 9-17 * * *", True),
            ("H H * * *", True),
            ("H(0-29) 3 * * *", True),
            ("@daily", True),
            ("*/15 * * * *", False),
            ("30 * * * *", False),
            ("*/30 2 * * *", False),
            ("0 */2 * * *", False),
            ("H/15 9 * * *", False),
            ("@hourly", False),
        ],
    )
    def test_the_dst_rule_follows_the_minute_and_hour_fields(self, expression: str, fixed: bool) -> None:
        assert ENGINE.compile(expression, "key").is_fixed_time is fixed

    @pytest.mark.parametrize(
        "expression", ["0 9 * * *", "*/5 * * * *", "H/5 H * * *", "30 * * * *", "0 H/3 * * *"]
    )
    def test_the_rule_agrees_with_the_native_engine(self, expression: str) -> None:
        assert is_fixed_time(expression) is NATIVE.compile(expression, "key").is_fixed_time


class TestErrors:
    @pytest.mark.parametrize(
        "expression, words",
        [
            ("0 0 30 2 *", "never matches"),
            ("0 0 31 4,6 *", "never matches"),
            ("61 * * * *", "out of range"),
            ("* * * *", "5, 6 or 7"),
            ("H * * * *", "hash_id"),
            ("", "empty expression"),
            ("0 0 1 1 * 0 1969", "out of range"),
        ],
    )
    def test_croniter_failures_become_cron_errors_that_quote_the_expression(
        self, expression: str, words: str
    ) -> None:
        with pytest.raises(CronError) as raised:
            ENGINE.compile(expression)
        assert words in str(raised.value)
        assert raised.value.expression == expression

    def test_a_non_string_expression_is_a_type_error(self) -> None:
        with pytest.raises(TypeError):
            ENGINE.compile(5)  # type: ignore[arg-type]

    def test_cron_expression_reports_croniter_errors_as_cron_errors(self) -> None:
        with pytest.raises(CronError, match="never matches"):
            CronExpression("0 0 30 2 *", engine="croniter")
