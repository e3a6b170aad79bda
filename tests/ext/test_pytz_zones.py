"""The pytz zone provider: same instants as zoneinfo, same errors."""

from __future__ import annotations

import itertools
from datetime import datetime, timezone

import pytest

pytest.importorskip("pytz")

import pytz

from flowyml_lite import plugins
from flowyml_lite.cron import CronExpression
from flowyml_lite.errors import UnknownTimezoneError
from flowyml_lite_ext.pytz_zones import PytzProvider

PROVIDER = PytzProvider()


class TestLookup:
    def test_a_known_name_gives_a_pytz_zone(self) -> None:
        tz = PROVIDER.get("Europe/London")
        assert tz is pytz.timezone("Europe/London")

    def test_the_registry_finds_the_provider_by_name(self) -> None:
        found = plugins.get("timezones", "pytz")
        provider = found() if isinstance(found, type) else found
        assert provider.name == "pytz"

    def test_an_unknown_name_suggests_close_names(self) -> None:
        with pytest.raises(UnknownTimezoneError) as raised:
            PROVIDER.get("Europe/Londn")
        assert "Europe/London" in raised.value.suggestions
        assert "Did you mean" in str(raised.value)

    def test_a_bare_city_suggests_its_zone(self) -> None:
        with pytest.raises(UnknownTimezoneError) as raised:
            PROVIDER.get("New_York")
        assert raised.value.suggestions[0] == "America/New_York"

    @pytest.mark.parametrize("key", ["", "   "])
    def test_an_empty_name_is_unknown(self, key: str) -> None:
        with pytest.raises(UnknownTimezoneError):
            PROVIDER.get(key)

    def test_cron_expression_reports_an_unknown_pytz_zone(self) -> None:
        with pytest.raises(UnknownTimezoneError, match="Mars/Olympus"):
            CronExpression("* * * * *", "Mars/Olympus", zone_provider="pytz")


# Zones with every kind of transition: northern and southern DST, 30-minute DST, a skipped day,
# offset changes without DST, a zone whose DST offset is negative in the tz database.
ZONES = [
    "America/New_York",
    "Europe/London",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Pacific/Apia",
    "Europe/Moscow",
    "Asia/Pyongyang",
    "Europe/Dublin",
    "America/Santiago",
    "Asia/Kolkata",
]


class TestSameInstantsAsZoneinfo:
    @pytest.mark.parametrize("zone", ZONES)
    @pytest.mark.parametrize("expression", ["30 1 * * *", "*/20 * * * *", "15 2 * * *"])
    def test_fires_over_years_of_transitions_are_identical(self, zone: str, expression: str) -> None:
        after = datetime(2010, 12, 1, tzinfo=timezone.utc)
        on_zoneinfo = CronExpression(expression, zone)
        on_pytz = CronExpression(expression, zone, zone_provider="pytz")
        count = 400 if expression.startswith("*") else 1600  # a few transitions either way
        left = [t.isoformat() for t in itertools.islice(on_zoneinfo.iter(after), count)]
        right = [t.isoformat() for t in itertools.islice(on_pytz.iter(after), count)]
        assert left == right

    def test_fires_carry_pytz_offsets_around_a_fold(self) -> None:
        expr = CronExpression("*/30 1 * * *", "America/New_York", zone_provider="pytz")
        fires = list(itertools.islice(expr.iter(datetime(2024, 11, 3, 4, 50, tzinfo=timezone.utc)), 4))
        assert [f.isoformat() for f in fires] == [
            "2024-11-03T01:00:00-04:00",
            "2024-11-03T01:30:00-04:00",
            "2024-11-03T01:00:00-05:00",
            "2024-11-03T01:30:00-05:00",
        ]
