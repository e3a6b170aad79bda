"""The zone layer: transitions found by probing, and the DST rules of DESIGN §3.

The rules are tested here with a tiny stand-in engine (a set of wall hours and minutes), so a
failure points at the zone layer, not at the cron parser. Transition instants used below:

| zone                | date       | UTC         | change                    |
|---------------------|------------|-------------|---------------------------|
| America/New_York    | 2024-03-10 | 07:00       | EST -5 -> EDT -4 (gap 02:00-03:00) |
| America/New_York    | 2024-11-03 | 06:00       | EDT -4 -> EST -5 (01:00-02:00 twice) |
| Australia/Lord_Howe | 2024-04-07 | 2024-04-06 15:00 | +11 -> +10:30 (01:30-02:00 twice) |
| Australia/Lord_Howe | 2024-10-06 | 2024-10-05 15:30 | +10:30 -> +11 (02:00-02:30 skipped) |
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import FrozenSet, List, Optional

import pytest

from flowyml_lite.errors import UnknownTimezoneError
from flowyml_lite.timezones import get_zone, iter_fires, iter_fires_utc, suggest_zone_names


@dataclass
class DailyWalls:
    """A stand-in engine: fires at every listed (hour, minute) wall time of every day."""

    hours: FrozenSet[int]
    minutes: FrozenSet[int]
    is_fixed_time: bool
    expression: str = "stand-in"

    def matches(self, wall: datetime) -> bool:
        return wall.second == 0 and wall.hour in self.hours and wall.minute in self.minutes

    def next_wall(self, after: datetime) -> Optional[datetime]:
        wall = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
        for _ in range(3 * 24 * 60):
            if self.matches(wall):
                return wall
            wall += timedelta(minutes=1)
        return None


def fixed(hour: int, minute: int) -> DailyWalls:
    return DailyWalls(frozenset({hour}), frozenset({minute}), True)


def frequent(hours: range, minutes: range) -> DailyWalls:
    return DailyWalls(frozenset(hours), frozenset(minutes), False)


def fires(engine: DailyWalls, zone_name: str, after_utc: datetime, count: int) -> List[str]:
    """The first ``count`` fires as ISO text in the zone; the UTC path must give the same instants."""
    zone = get_zone(zone_name)
    out = []
    for instant, in_utc in zip(iter_fires(engine, zone, after_utc), iter_fires_utc(engine, zone, after_utc)):
        assert in_utc == instant.replace(tzinfo=timezone.utc) and in_utc.tzinfo is timezone.utc
        out.append(zone.localize(instant).isoformat())
        if len(out) == count:
            break
    return out


NY = "America/New_York"


class TestTransitionsFoundByProbing:
    def test_new_york_2024_has_its_two_transitions_to_the_second(self) -> None:
        zone = get_zone(NY)
        seg = zone.segment(datetime(2024, 6, 1))
        assert seg.start == datetime(2024, 3, 10, 7, 0)
        assert seg.end == datetime(2024, 11, 3, 6, 0)
        assert seg.offset == timedelta(hours=-4)
        assert seg.prev_offset == timedelta(hours=-5)

    def test_utc_has_one_segment_per_year(self) -> None:
        seg = get_zone("UTC").segment(datetime(2030, 5, 5))
        assert (seg.start, seg.end, seg.offset) == (datetime(2030, 1, 1), datetime(2031, 1, 1), timedelta(0))

    def test_wall_and_localize_agree_with_zoneinfo(self) -> None:
        zone = get_zone("Australia/Lord_Howe")
        instant = datetime(2024, 4, 6, 15, 10)
        assert zone.wall(instant) == datetime(2024, 4, 7, 1, 40)
        assert zone.localize(instant).utcoffset() == timedelta(hours=10, minutes=30)


class TestFixedTimeRules:
    def test_a_skipped_wall_time_fires_once_at_the_end_of_the_gap(self) -> None:
        got = fires(fixed(2, 30), NY, datetime(2024, 3, 9, 12), 3)
        assert got == ["2024-03-10T03:00:00-04:00", "2024-03-11T02:30:00-04:00", "2024-03-12T02:30:00-04:00"]

    def test_a_repeated_wall_time_fires_once_at_its_first_occurrence(self) -> None:
        got = fires(fixed(1, 30), NY, datetime(2024, 11, 2, 12), 3)
        assert got == ["2024-11-03T01:30:00-04:00", "2024-11-04T01:30:00-05:00", "2024-11-05T01:30:00-05:00"]

    def test_starting_inside_the_second_pass_does_not_fire_that_wall_again(self) -> None:
        after = datetime(2024, 11, 3, 6, 10)  # 01:10 EST, after 01:30 EDT already fired
        assert fires(fixed(1, 30), NY, after, 1) == ["2024-11-04T01:30:00-05:00"]

    def test_the_fire_set_does_not_depend_on_where_the_search_starts(self) -> None:
        engine = fixed(1, 30)
        full = fires(engine, NY, datetime(2024, 11, 1), 6)
        for minutes in range(0, 72 * 60, 17):
            start = datetime(2024, 11, 1) + timedelta(minutes=minutes)
            later = [
                f
                for f in full
                if datetime.fromisoformat(f).astimezone(timezone.utc).replace(tzinfo=None) > start
            ]
            assert fires(engine, NY, start, 2) == later[:2]

    def test_a_gap_fire_that_coincides_with_a_real_fire_is_one_fire(self) -> None:
        engine = DailyWalls(frozenset({2, 3}), frozenset({0}), True)
        got = fires(engine, NY, datetime(2024, 3, 10, 5), 3)
        assert got == ["2024-03-10T03:00:00-04:00", "2024-03-11T02:00:00-04:00", "2024-03-11T03:00:00-04:00"]

    def test_daily_9am_stays_at_9am_local_across_both_transitions(self) -> None:
        got = fires(fixed(9, 0), NY, datetime(2024, 3, 9), 2) + fires(
            fixed(9, 0), NY, datetime(2024, 11, 2), 2
        )
        assert got == [
            "2024-03-09T09:00:00-05:00",
            "2024-03-10T09:00:00-04:00",
            "2024-11-02T09:00:00-04:00",
            "2024-11-03T09:00:00-05:00",
        ]


class TestFrequentRules:
    def test_repeated_wall_times_fire_in_both_passes(self) -> None:
        got = fires(frequent(range(1, 2), range(0, 60, 15)), NY, datetime(2024, 11, 3, 5, 20), 6)
        assert got == [
            "2024-11-03T01:30:00-04:00",
            "2024-11-03T01:45:00-04:00",
            "2024-11-03T01:00:00-05:00",
            "2024-11-03T01:15:00-05:00",
            "2024-11-03T01:30:00-05:00",
            "2024-11-03T01:45:00-05:00",
        ]

    def test_skipped_wall_times_do_not_fire(self) -> None:
        got = fires(frequent(range(2, 3), range(0, 60, 30)), NY, datetime(2024, 3, 8, 12), 2)
        assert got == ["2024-03-09T02:00:00-05:00", "2024-03-09T02:30:00-05:00"]
        got = fires(frequent(range(2, 3), range(0, 60, 30)), NY, datetime(2024, 3, 10, 5), 1)
        assert got == ["2024-03-11T02:00:00-04:00"]

    def test_half_hour_zone_fires_at_nine_every_minute(self) -> None:
        got = fires(frequent(range(9, 10), range(0, 60)), "Australia/Lord_Howe", datetime(2024, 10, 5, 0), 2)
        assert got == ["2024-10-06T09:00:00+11:00", "2024-10-06T09:01:00+11:00"]

    def test_half_hour_gap_skips_thirty_minutes(self) -> None:
        engine = frequent(range(1, 4), range(0, 60, 15))
        got = fires(engine, "Australia/Lord_Howe", datetime(2024, 10, 5, 15, 5), 4)
        assert got == [
            "2024-10-06T01:45:00+10:30",
            "2024-10-06T02:30:00+11:00",
            "2024-10-06T02:45:00+11:00",
            "2024-10-06T03:00:00+11:00",
        ]

    def test_localized_second_pass_of_a_fold_carries_fold_1(self) -> None:
        # An engine without iter_walls (this stand-in) goes through next_wall; both paths agree.
        zone = get_zone(NY)
        engine = frequent(range(1, 2), range(0, 60, 30))
        out = []
        for fire in iter_fires(engine, zone, datetime(2024, 11, 3, 4), zone.localize):
            out.append((fire.isoformat(), fire.fold))
            if len(out) == 4:
                break
        assert out == [
            ("2024-11-03T01:00:00-04:00", 0),
            ("2024-11-03T01:30:00-04:00", 0),
            ("2024-11-03T01:00:00-05:00", 1),
            ("2024-11-03T01:30:00-05:00", 1),
        ]


class TestOffsetChangesWithoutDst:
    def test_samoa_skipped_a_whole_day_and_a_fixed_time_fires_once_after_it(self) -> None:
        # Pacific/Apia jumped from 2011-12-29 24:00 (-10) to 2011-12-31 00:00 (+14).
        got = fires(fixed(12, 0), "Pacific/Apia", datetime(2011, 12, 29, 0), 3)
        assert got == ["2011-12-29T12:00:00-10:00", "2011-12-31T00:00:00+14:00", "2011-12-31T12:00:00+14:00"]

    def test_moscow_2014_fold_fires_a_fixed_time_once(self) -> None:
        # Europe/Moscow went from +4 to +3 at 2014-10-26 02:00 local (01:00-02:00 repeated).
        got = fires(fixed(1, 30), "Europe/Moscow", datetime(2014, 10, 25, 12), 2)
        assert got == ["2014-10-26T01:30:00+04:00", "2014-10-27T01:30:00+03:00"]


class TestZoneLookup:
    def test_unknown_zone_suggests_close_names(self) -> None:
        with pytest.raises(UnknownTimezoneError) as info:
            get_zone("America/New_Yrok")
        assert "America/New_York" in str(info.value)

    def test_wrong_case_suggests_the_right_spelling(self) -> None:
        assert suggest_zone_names("europe/london", ["Europe/London", "Europe/Lisbon"]) == ["Europe/London"]

    def test_utc_works_without_a_tz_database(self) -> None:
        assert get_zone("UTC").tzinfo is timezone.utc


def _oracle(expression: str, zone_name: str, start: datetime, stop: datetime) -> List[datetime]:
    """The fire set by definition: each matching wall time resolved through zoneinfo's fold rules."""
    from zoneinfo import ZoneInfo

    from flowyml_lite.cron.native import NativeEngine

    cron = NativeEngine().compile(expression)
    tz = ZoneInfo(zone_name)
    fires = set()
    wall = cron.next_wall(start - timedelta(days=2))
    while wall is not None and wall < stop + timedelta(days=2):
        first = wall.replace(tzinfo=tz, fold=0).astimezone(timezone.utc).replace(tzinfo=None)
        second = wall.replace(tzinfo=tz, fold=1).astimezone(timezone.utc).replace(tzinfo=None)
        exists = first.replace(tzinfo=timezone.utc).astimezone(tz).replace(tzinfo=None) == wall
        if not exists:  # in a gap: fold=1 lands before the transition, fold=0 after it
            if cron.is_fixed_time:
                lo, hi = second, first
                while hi - lo > timedelta(seconds=1):
                    mid = lo + (hi - lo) / 2
                    if mid.replace(tzinfo=timezone.utc).astimezone(tz).utcoffset() == (
                        second.replace(tzinfo=timezone.utc).astimezone(tz).utcoffset()
                    ):
                        lo = mid
                    else:
                        hi = mid
                fires.add(hi.replace(microsecond=0))
        elif first != second and not cron.is_fixed_time:
            fires.update({first, second})
        else:
            fires.add(min(first, second))
        wall = cron.next_wall(wall)
    return sorted(f for f in fires if start < f <= stop)


class TestAgainstTheDefinition:
    """iter_fires equals the fire set built wall by wall from zoneinfo, over decades of transitions."""

    @pytest.mark.parametrize(
        "expression",
        [
            "30 2 10 3 *",
            "30 1 3 11 *",
            "*/30 1 3 11 *",
            "*/20 2 * 3 0",
            "0 0 29 2 *",
            "15 2,3 * 3,4,10,11 0",
            "0 1 1 1 *",
            "* 1 1-7 11 0",
            "*/15 2 8-14 3 0",
            "0 9 * * 1-5",
            "30 0-3 * 4,10 6,0",
            "59 23 31 12 *",
        ],
    )
    @pytest.mark.parametrize(
        "zone_name",
        [
            "America/New_York",
            "Australia/Sydney",
            "Australia/Lord_Howe",
            "Europe/London",
            "America/Santiago",
            "Africa/Casablanca",
            "Europe/Moscow",
            "Pacific/Apia",
            "Asia/Kolkata",
            "America/St_Johns",
        ],
    )
    def test_every_fire_over_twenty_years(self, expression: str, zone_name: str) -> None:
        from flowyml_lite.cron.native import NativeEngine

        start, stop = datetime(2010, 1, 1), datetime(2030, 1, 1)
        cron = NativeEngine().compile(expression)
        got = []
        for instant in iter_fires(cron, get_zone(zone_name), start):
            if instant > stop:
                break
            got.append(instant)
        assert got == _oracle(expression, zone_name, start, stop)

    @pytest.mark.parametrize(
        "expression", ["30 1 3 11 *", "*/30 1 3 11 *", "*/15 2 8-14 3 0", "30 0-3 * 4,10 6,0"]
    )
    @pytest.mark.parametrize(
        "zone_name", ["America/New_York", "Australia/Lord_Howe", "Europe/London", "Pacific/Apia"]
    )
    def test_localized_fires_are_the_same_instants_with_the_fold_set(
        self, expression: str, zone_name: str
    ) -> None:
        # The localized path attaches the zone to each wall time instead of converting each instant.
        from flowyml_lite.cron.native import NativeEngine

        start, stop = datetime(2010, 1, 1), datetime(2030, 1, 1)
        zone = get_zone(zone_name)
        cron = NativeEngine().compile(expression)
        got = []
        for fire in iter_fires(cron, zone, start, zone.localize):
            instant = fire.astimezone(timezone.utc).replace(tzinfo=None)
            if instant > stop:
                break
            assert fire.tzinfo is zone.tzinfo
            expected = zone.localize(instant)
            assert (fire.replace(tzinfo=None), fire.fold) == (expected.replace(tzinfo=None), expected.fold)
            got.append(instant)
        assert got == _oracle(expression, zone_name, start, stop)



class TestLocalizedPathInEveryZone:
    """Around every transition of 2020-2027 in every zone of the tz database, the localized fires
    (zone attached to wall times) are the naive path's instants with the fold zoneinfo gives them,
    and the UTC fires (``iter_fires_utc``, what the scheduler's triggers use) are those instants.

    A wider run of the same comparison (599 zones, 8 expressions, 2000-2030: 163 million fires, 0
    mismatches) is recorded in docs/cron.md; this is its fast form, about two days per transition.
    """

    @pytest.mark.parametrize("expression", ["*/30 * * * *", "30 1 * * *", "0 2 * * *", "0 0 * * *"])
    def test_every_zone_every_transition(self, expression: str) -> None:
        import zoneinfo

        from flowyml_lite.cron.native import NativeEngine

        cron = NativeEngine().compile(expression)
        names = sorted(zoneinfo.available_timezones())
        if not names:
            pytest.skip("no tz database on this machine")
        compared = 0
        for name in names:
            zone = get_zone(name)
            edges = [datetime(2020, 1, 1)]
            for year in range(2020, 2028):
                edges += [seg.start for seg in zone._year(year)[1][1:]]
            for edge in edges:
                start, stop = edge - timedelta(days=1), edge + timedelta(days=1)
                naive = iter_fires(cron, zone, start)
                local = iter_fires(cron, zone, start, zone.localize)
                utc = iter_fires_utc(cron, zone, start)
                for instant, fire, in_utc in zip(naive, local, utc):
                    if instant > stop:
                        break
                    expected = zone.localize(instant)
                    assert fire.astimezone(timezone.utc).replace(tzinfo=None) == instant, (name, fire)
                    wall, expected_wall = fire.replace(tzinfo=None), expected.replace(tzinfo=None)
                    assert (wall, fire.fold) == (expected_wall, expected.fold), name
                    assert in_utc.tzinfo is timezone.utc and in_utc.replace(tzinfo=None) == instant, name
                    compared += 1
        assert compared > 1000


class TestMachineWithoutATzDatabase:
    def test_naming_a_zone_says_to_install_tzdata_and_utc_still_works(self, tmp_path: Path) -> None:
        import shutil
        import subprocess
        import sys

        shutil.copytree(Path(__file__).resolve().parents[1] / "flowyml_lite", tmp_path / "flowyml_lite")
        code = (
            "from flowyml_lite.errors import MissingTimezoneDatabaseError\n"
            "from flowyml_lite import CronExpression\n"
            "from datetime import datetime, timezone\n"
            "print(CronExpression('0 9 * * *', 'UTC').next(datetime(2024, 1, 1, tzinfo=timezone.utc)))\n"
            "try:\n"
            "    CronExpression('0 9 * * *', 'Europe/London')\n"
            "except MissingTimezoneDatabaseError as exc:\n"
            "    print(exc)\n"
        )
        env = {"PYTHONTZPATH": str(tmp_path / "no-zoneinfo-here"), "PATH": "/usr/bin:/bin"}
        # -S: no site-packages, so no tzdata package either; the system database is hidden by PYTHONTZPATH.
        result = subprocess.run(
            [sys.executable, "-S", "-c", code],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert "2024-01-01 09:00:00+00:00" in result.stdout
        assert "pip install 'flowyml-lite[tzdata]'" in result.stdout
