"""``CronExpression``: the public face of the time engine (engine + zone layer)."""

from __future__ import annotations

import importlib.util
import itertools
from datetime import date, datetime, timedelta, timezone
from typing import Optional

import pytest

from flowyml_lite.cron import CronError, CronExpression
from flowyml_lite.cron.expression import get_engine, utc_offset_text
from flowyml_lite.cron.native import NativeEngine
from flowyml_lite.errors import PluginError, UnknownTimezoneError

UTC = timezone.utc
HAVE_CRONITER = importlib.util.find_spec("croniter") is not None
HAVE_PYTZ = importlib.util.find_spec("pytz") is not None


class TestNext:
    def test_the_seed_example(self) -> None:
        expr = CronExpression("0 9 * * 1-5", timezone="Europe/London")
        fire = expr.next(datetime(2024, 3, 29, 12, 0, tzinfo=UTC))
        assert fire is not None
        assert fire.isoformat() == "2024-04-01T09:00:00+01:00"

    def test_the_result_is_in_the_expressions_zone_whatever_the_start_zone(self) -> None:
        expr = CronExpression("0 9 * * *", "Asia/Kolkata")
        pacific = timezone(timedelta(hours=-8))
        fire = expr.next(datetime(2024, 1, 1, tzinfo=pacific))
        assert fire is not None
        assert fire.isoformat() == "2024-01-02T09:00:00+05:30"

    def test_the_result_is_strictly_after_the_start(self) -> None:
        expr = CronExpression("0 9 * * *", "UTC")
        assert expr.next(datetime(2024, 1, 1, 9, 0, tzinfo=UTC)) == datetime(2024, 1, 2, 9, 0, tzinfo=UTC)

    def test_a_start_with_microseconds_just_before_a_fire_finds_it(self) -> None:
        expr = CronExpression("0 9 * * *", "UTC")
        start = datetime(2024, 1, 1, 8, 59, 59, 999999, tzinfo=UTC)
        assert expr.next(start) == datetime(2024, 1, 1, 9, 0, tzinfo=UTC)

    def test_the_utc_variant_gives_the_same_instant_in_utc(self) -> None:
        expr = CronExpression("0 9 * * *", "Asia/Kolkata")
        start = datetime(2024, 1, 1, tzinfo=UTC)
        fire = expr.next_utc(start)
        assert fire is not None
        assert fire.tzinfo is UTC
        assert fire == expr.next(start)
        assert fire.isoformat() == "2024-01-01T03:30:00+00:00"

    @pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Australia/Lord_Howe"])
    @pytest.mark.parametrize("expression", ["*/30 1-2 * * *", "30 2 * * *", "0 0 29 2 *", "59 23 31 12 *"])
    def test_the_utc_variant_agrees_with_next_and_iter_everywhere(self, zone: str, expression: str) -> None:
        expr = CronExpression(expression, zone)
        start = datetime(2024, 3, 1, tzinfo=UTC)
        fires = list(itertools.islice(expr.iter(start), 40))
        previous = start
        for fire in fires:
            at = expr.next_utc(previous)
            assert at is not None and at.tzinfo is UTC
            assert at == fire == expr.next(previous)
            assert (at.utcoffset(), at.astimezone(expr.zone.tzinfo).fold) == (timedelta(0), fire.fold)
            previous = fire

    def test_the_utc_variant_ends_with_datetime(self) -> None:
        assert CronExpression("0 0 * * *").next_utc(datetime.max.replace(tzinfo=UTC)) is None
        last_eve = CronExpression("59 23 31 12 *", "America/New_York")
        assert last_eve.next_utc(datetime(9999, 12, 31, tzinfo=UTC)) is None

    def test_a_naive_start_is_refused_rather_than_guessed(self) -> None:
        with pytest.raises(ValueError, match="no time zone"):
            CronExpression("* * * * *").next(datetime(2024, 1, 1))

    def test_a_start_that_is_not_a_datetime_is_refused_by_name(self) -> None:
        with pytest.raises(TypeError, match=r"got str .*datetime\.fromisoformat"):
            CronExpression("* * * * *").next("2024-01-01T00:00:00+00:00")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="expected an aware datetime, got date"):
            CronExpression("* * * * *").next_utc(date(2024, 1, 1))  # type: ignore[arg-type]

    def test_a_year_field_in_the_past_has_no_next_fire(self) -> None:
        expr = CronExpression("0 0 1 1 * 0 2020")
        assert expr.next(datetime(2024, 1, 1, tzinfo=UTC)) is None
        assert expr.next_utc(datetime(2024, 1, 1, tzinfo=UTC)) is None
        assert list(expr.iter(datetime(2024, 1, 1, tzinfo=UTC))) == []

    def test_the_last_fire_of_year_9999_ends_the_sequence(self) -> None:
        expr = CronExpression("0 0 31 12 *")
        assert expr.next(datetime(9999, 12, 31, tzinfo=UTC)) is None


class TestIter:
    def test_fires_come_lazily_and_in_order(self) -> None:
        expr = CronExpression("*/20 * * * *", "Europe/Paris")
        got = list(itertools.islice(expr.iter(datetime(2024, 1, 1, tzinfo=UTC)), 4))
        assert [g.isoformat() for g in got] == [
            "2024-01-01T01:20:00+01:00",
            "2024-01-01T01:40:00+01:00",
            "2024-01-01T02:00:00+01:00",
            "2024-01-01T02:20:00+01:00",
        ]

    def test_an_every_minute_iterator_can_run_for_a_long_time(self) -> None:
        expr = CronExpression("* * * * *", "America/New_York")
        fires = list(itertools.islice(expr.iter(datetime(2024, 3, 10, tzinfo=UTC)), 2000))
        assert all(b > a for a, b in zip(fires, fires[1:]))
        # A gap removes wall minutes, not instants. (Aware datetimes sharing a tzinfo subtract as
        # wall times, so compare in UTC.)
        assert fires[-1].astimezone(UTC) - fires[0].astimezone(UTC) == timedelta(minutes=1999)

    def test_each_fire_equals_next_from_the_previous_fire(self) -> None:
        expr = CronExpression("30 * * * *", "Australia/Sydney")
        start = datetime(2024, 4, 6, tzinfo=UTC)  # through the fold of 2024-04-07
        previous: Optional[datetime] = start
        for fire in itertools.islice(expr.iter(start), 48):
            assert previous is not None
            following = expr.next(previous)
            assert following is not None
            assert following.isoformat() == fire.isoformat()
            previous = fire


class TestMatches:
    def test_an_instant_whose_wall_time_matches_matches(self) -> None:
        expr = CronExpression("0 9 * * 1-5", "America/New_York")
        assert expr.matches(datetime(2024, 1, 1, 14, 0, tzinfo=UTC))  # 09:00 EST on a Monday

    def test_the_same_instant_in_another_zone_does_not(self) -> None:
        expr = CronExpression("0 9 * * 1-5", "Europe/London")
        assert not expr.matches(datetime(2024, 1, 1, 14, 0, tzinfo=UTC))

    def test_sub_second_parts_are_ignored(self) -> None:
        expr = CronExpression("0 9 * * *", "UTC")
        assert expr.matches(datetime(2024, 1, 1, 9, 0, 0, 500000, tzinfo=UTC))


class TestFixedTime:
    @pytest.mark.parametrize(
        "expression, fixed",
        [
            ("0 9 * * *", True),
            ("@daily", True),
            ("*/15 * * * *", False),
            ("30 * * * *", False),
            ("@hourly", False),
            ("H H * * *", True),
            ("H/10 3 * * *", False),
        ],
    )
    def test_fixed_time_means_neither_minute_nor_hour_starts_with_a_star(
        self, expression: str, fixed: bool
    ) -> None:
        assert CronExpression(expression, hash_key="k").is_fixed_time is fixed


class TestHashKey:
    def test_a_hash_key_picks_stable_values(self) -> None:
        start = datetime(2024, 1, 1, tzinfo=UTC)
        first = CronExpression("H H * * *", hash_key="nightly").next(start)
        again = CronExpression("H H * * *", hash_key="nightly").next(start)
        assert first == again

    def test_different_keys_spread_the_fires(self) -> None:
        start = datetime(2024, 1, 1, tzinfo=UTC)
        fires = {CronExpression("H H * * *", hash_key=f"job-{i}").next(start) for i in range(20)}
        assert len(fires) > 10

    def test_h_without_a_key_is_an_error(self) -> None:
        with pytest.raises(CronError, match="hash key"):
            CronExpression("H * * * *")


class TestErrors:
    def test_a_non_string_expression_is_a_cron_error(self) -> None:
        with pytest.raises(CronError, match="must be a string"):
            CronExpression(5)  # type: ignore[arg-type]

    def test_a_never_matching_expression_fails_at_construction(self) -> None:
        with pytest.raises(CronError, match="never matches"):
            CronExpression("0 0 30 2 *")

    def test_an_error_names_the_field_and_the_text(self) -> None:
        with pytest.raises(CronError) as raised:
            CronExpression("0 9 * * 8")
        assert str(raised.value) == "day-of-week: '8' is out of range 0-7 in '0 9 * * 8'"
        assert raised.value.field == "day-of-week"

    def test_an_unknown_zone_suggests_names(self) -> None:
        with pytest.raises(UnknownTimezoneError, match="America/New_York"):
            CronExpression("* * * * *", "America/New_Yrok")

    def test_an_unknown_engine_lists_the_known_ones(self) -> None:
        with pytest.raises(PluginError, match="native"):
            CronExpression("* * * * *", engine="no-such-engine")


class TestEnginesAndProviders:
    def test_the_native_engine_is_shared(self) -> None:
        assert get_engine("native") is get_engine("native")
        assert isinstance(get_engine("native"), NativeEngine)

    def test_an_engine_instance_is_used_as_given(self) -> None:
        engine = NativeEngine()
        assert get_engine(engine) is engine

    @pytest.mark.skipif(not HAVE_CRONITER, reason="croniter is not installed")
    def test_the_croniter_engine_gives_the_same_fires(self) -> None:
        start = datetime(2024, 10, 1, tzinfo=UTC)
        native = CronExpression("30 2 * * *", "Australia/Sydney")
        plugin = CronExpression("30 2 * * *", "Australia/Sydney", engine="croniter")
        left = [t.isoformat() for t in itertools.islice(native.iter(start), 10)]
        right = [t.isoformat() for t in itertools.islice(plugin.iter(start), 10)]
        assert left == right

    @pytest.mark.skipif(not HAVE_PYTZ, reason="pytz is not installed")
    def test_the_pytz_provider_gives_the_same_fires(self) -> None:
        start = datetime(2024, 10, 20, tzinfo=UTC)
        native = CronExpression("*/30 1 * * *", "Europe/London")
        plugin = CronExpression("*/30 1 * * *", "Europe/London", zone_provider="pytz")
        left = [t.isoformat() for t in itertools.islice(native.iter(start), 20)]
        right = [t.isoformat() for t in itertools.islice(plugin.iter(start), 20)]
        assert left == right


class TestForPeople:
    def test_explain_describes_the_expression(self) -> None:
        assert CronExpression("0 9 * * 1-5").explain() == "At 09:00, Monday through Friday"

    def test_repr_shows_the_expression_and_zone(self) -> None:
        expr = CronExpression("0 9 * * *", "Europe/London")
        assert repr(expr) == "CronExpression('0 9 * * *', timezone='Europe/London')"

    @pytest.mark.parametrize(
        "offset, text",
        [
            (timedelta(hours=5, minutes=30), "+05:30"),
            (timedelta(hours=-4), "-04:00"),
            (timedelta(0), "+00:00"),
            (timedelta(hours=-9, minutes=-30), "-09:30"),
        ],
    )
    def test_offsets_are_written_for_people(self, offset: timedelta, text: str) -> None:
        assert utc_offset_text(datetime(2024, 1, 1, tzinfo=timezone(offset))) == text


class TestTheEdgesOfRepresentableTime:
    """Searches that run into datetime's limits end the sequence rather than raising."""

    def test_a_fire_past_year_9999_in_a_zone_east_of_utc_is_none(self) -> None:
        expr = CronExpression("* * * * *", "Asia/Tokyo")
        assert expr.next(datetime(9999, 12, 31, 14, 59, 59, tzinfo=UTC)) is None

    @pytest.mark.parametrize("zone", ["Asia/Tokyo", "Asia/Kolkata", "Pacific/Kiritimati"])
    def test_a_start_whose_wall_time_is_past_year_9999_has_no_fire_not_one_in_year_1(self, zone: str) -> None:
        # 23:59:59 UTC on the last day is already year 10000 in a zone east of UTC.
        expr = CronExpression("0 0 * * *", zone)
        assert expr.next_utc(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)) is None
        assert expr.next(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)) is None

    def test_a_fire_past_year_9999_in_a_zone_west_of_utc_is_none(self) -> None:
        # Wall 9999-12-31 19:00 in New York is 10000-01-01 00:00 UTC: not representable.
        expr = CronExpression("* * * * *", "America/New_York")
        assert expr.next(datetime(9999, 12, 31, 23, 59, 30, tzinfo=UTC)) is None

    def test_a_start_at_the_first_representable_instant_finds_the_next_minute(self) -> None:
        expr = CronExpression("* * * * *", "America/New_York")
        fire = expr.next(datetime(1, 1, 1, tzinfo=UTC))
        assert fire is not None
        assert fire > datetime(1, 1, 1, tzinfo=UTC)
