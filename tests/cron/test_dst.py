"""DST and offset changes: every rule of DESIGN §3 in five kinds of zone, on both engines.

Every case runs on the native engine and on the croniter plugin: the zone layer applies the
rules for both, so they must give the same instants. The transitions used (from the tz database):

| zone                | local date | UTC instant      | change                                            |
|---------------------|------------|------------------|---------------------------------------------------|
| America/New_York    | 2024-03-10 | 03-10 07:00      | EST -05 -> EDT -04: 02:00-03:00 skipped            |
| America/New_York    | 2024-11-03 | 11-03 06:00      | EDT -04 -> EST -05: 01:00-02:00 twice              |
| Europe/London       | 2024-03-31 | 03-31 01:00      | GMT +00 -> BST +01: 01:00-02:00 skipped            |
| Europe/London       | 2024-10-27 | 10-27 01:00      | BST +01 -> GMT +00: 01:00-02:00 twice              |
| Australia/Sydney    | 2024-04-07 | 04-06 16:00      | AEDT +11 -> AEST +10: 02:00-03:00 twice (autumn)   |
| Australia/Sydney    | 2024-10-06 | 10-05 16:00      | AEST +10 -> AEDT +11: 02:00-03:00 skipped (spring) |
| Australia/Lord_Howe | 2024-04-07 | 04-06 15:00      | +11 -> +10:30: 01:30-02:00 twice                   |
| Australia/Lord_Howe | 2024-10-06 | 10-05 15:30      | +10:30 -> +11: 02:00-02:30 skipped                 |
| Europe/Moscow       | 2011-03-27 | 03-26 23:00      | +03 -> +04 for good, no DST: 02:00-03:00 skipped   |
| Europe/Moscow       | 2014-10-26 | 10-25 22:00      | +04 -> +03 for good: 01:00-02:00 twice             |
| Asia/Pyongyang      | 2015-08-15 | 08-14 15:00      | +09 -> +08:30: 23:30-24:00 of 08-14 twice          |
| Asia/Pyongyang      | 2018-05-05 | 05-04 15:00      | +08:30 -> +09: 23:30-24:00 of 05-04 skipped        |
| Pacific/Apia        | 2011-12-30 | 12-30 10:00      | -10 -> +14: the whole of 2011-12-30 skipped        |
"""

from __future__ import annotations

import importlib.util
import itertools
from datetime import datetime, timedelta, timezone
from typing import List, Optional

import pytest

from flowyml_lite.core.triggers import CronTrigger
from flowyml_lite.cron import CronExpression

ENGINES = [
    "native",
    pytest.param(
        "croniter",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("croniter") is None, reason="croniter is not installed"
        ),
    ),
]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def fires(engine: str, expression: str, zone: str, after: str, count: int) -> List[str]:
    """The first ``count`` fires strictly after the ISO instant ``after``, as ISO strings.

    Every case is also asked of the scheduler's path, a ``CronTrigger`` chained fire to fire
    (which resumes its search from its previous answer), and of the stateless ``next_utc``.
    """
    expr = CronExpression(expression, zone, engine=engine)
    start = datetime.fromisoformat(after)
    found = list(itertools.islice(expr.iter(start), count))
    trigger = CronTrigger(expression, zone, engine=engine)
    chained: List[datetime] = []
    moment: Optional[datetime] = start
    while moment is not None and len(chained) < count:
        assert trigger.next_after(moment) == expr.next_utc(moment)
        moment = trigger.next_after(moment)
        if moment is not None:
            chained.append(moment)
    assert chained == [t.astimezone(timezone.utc) for t in found]
    return [t.isoformat() for t in found]


class TestTheDesignExamples:
    """DESIGN §3's America/New_York examples, verbatim."""

    def test_a_fixed_time_in_the_spring_gap_fires_at_the_first_instant_after_it(self, engine: str) -> None:
        # `30 2 * * *` on 2024-03-10 -> 03:00 EDT
        assert fires(engine, "30 2 * * *", "America/New_York", "2024-03-10T00:00:00-05:00", 1) == [
            "2024-03-10T03:00:00-04:00"
        ]

    def test_a_fixed_time_in_the_autumn_fold_fires_at_the_first_occurrence_only(self, engine: str) -> None:
        # `30 1 * * *` on 2024-11-03 -> 01:30 EDT only
        assert fires(engine, "30 1 * * *", "America/New_York", "2024-11-03T00:00:00-04:00", 2) == [
            "2024-11-03T01:30:00-04:00",
            "2024-11-04T01:30:00-05:00",
        ]

    def test_a_frequent_expression_fires_in_both_passes_of_the_fold(self, engine: str) -> None:
        # `*/15 * * * *` on 2024-11-03: 01:30 EDT, 01:45 EDT, 01:00 EST, 01:15 EST
        assert fires(engine, "*/15 * * * *", "America/New_York", "2024-11-03T01:20:00-04:00", 4) == [
            "2024-11-03T01:30:00-04:00",
            "2024-11-03T01:45:00-04:00",
            "2024-11-03T01:00:00-05:00",
            "2024-11-03T01:15:00-05:00",
        ]

    def test_a_frequent_expression_does_not_fire_in_the_spring_gap(self, engine: str) -> None:
        # `*/30 2 * * *` does not fire on 2024-03-10
        assert fires(engine, "*/30 2 * * *", "America/New_York", "2024-03-09T12:00:00-05:00", 2) == [
            "2024-03-11T02:00:00-04:00",
            "2024-03-11T02:30:00-04:00",
        ]

    def test_a_start_after_the_first_occurrence_waits_for_the_next_day(self, engine: str) -> None:
        # `30 1 * * *` from 01:10 EST on 2024-11-03 (that day's fire was 01:30 EDT) -> 2024-11-04 01:30 EST
        assert fires(engine, "30 1 * * *", "America/New_York", "2024-11-03T01:10:00-05:00", 1) == [
            "2024-11-04T01:30:00-05:00"
        ]

    def test_a_minute_in_the_hour_after_the_lord_howe_shift_fires_on_the_hour(self, engine: str) -> None:
        # Australia/Lord_Howe: `* 9 * * *` fires at 09:00 (cronsim skips to 09:30)
        assert fires(engine, "* 9 * * *", "Australia/Lord_Howe", "2024-04-06T08:58:00+11:00", 2) == [
            "2024-04-06T09:00:00+11:00",
            "2024-04-06T09:01:00+11:00",
        ]


class TestFixedTimeInAGap:
    @pytest.mark.parametrize(
        "zone, expression, after, expected",
        [
            (
                "America/New_York",
                "30 2 * * *",
                "2024-03-09T12:00:00-05:00",
                ["2024-03-10T03:00:00-04:00", "2024-03-11T02:30:00-04:00"],
            ),
            (
                "Europe/London",
                "30 1 * * *",
                "2024-03-30T12:00:00+00:00",
                ["2024-03-31T02:00:00+01:00", "2024-04-01T01:30:00+01:00"],
            ),
            (
                "Australia/Sydney",
                "30 2 * * *",
                "2024-10-05T12:00:00+10:00",
                ["2024-10-06T03:00:00+11:00", "2024-10-07T02:30:00+11:00"],
            ),
            (
                "Australia/Lord_Howe",
                "15 2 * * *",
                "2024-10-05T12:00:00+10:30",
                ["2024-10-06T02:30:00+11:00", "2024-10-07T02:15:00+11:00"],
            ),
            (
                "Europe/Moscow",
                "30 2 * * *",
                "2011-03-26T12:00:00+03:00",
                ["2011-03-27T03:00:00+04:00", "2011-03-28T02:30:00+04:00"],
            ),
            (
                "Asia/Pyongyang",
                "45 23 * * *",
                "2018-05-03T12:00:00+08:30",
                ["2018-05-03T23:45:00+08:30", "2018-05-05T00:00:00+09:00", "2018-05-05T23:45:00+09:00"],
            ),
            (
                "Pacific/Apia",
                "0 9 * * *",
                "2011-12-28T12:00:00-10:00",
                ["2011-12-29T09:00:00-10:00", "2011-12-31T00:00:00+14:00", "2011-12-31T09:00:00+14:00"],
            ),
        ],
        ids=["new-york", "london", "sydney-october", "lord-howe", "moscow-2011", "pyongyang-2018", "apia"],
    )
    def test_a_skipped_wall_time_fires_once_at_the_end_of_the_gap(
        self, engine: str, zone: str, expression: str, after: str, expected: List[str]
    ) -> None:
        assert fires(engine, expression, zone, after, len(expected)) == expected

    def test_two_times_in_one_gap_fire_once_together(self, engine: str) -> None:
        # 09:00 and 12:00 of Apia's missing 2011-12-30 both map to the first instant after it.
        assert fires(engine, "0 9,12 * * *", "Pacific/Apia", "2011-12-29T12:00:00-10:00", 3) == [
            "2011-12-31T00:00:00+14:00",
            "2011-12-31T09:00:00+14:00",
            "2011-12-31T12:00:00+14:00",
        ]

    def test_a_gap_time_and_the_real_time_after_the_gap_fire_once_together(self, engine: str) -> None:
        assert fires(engine, "0 2,3 * * *", "America/New_York", "2024-03-09T12:00:00-05:00", 3) == [
            "2024-03-10T03:00:00-04:00",
            "2024-03-11T02:00:00-04:00",
            "2024-03-11T03:00:00-04:00",
        ]

    def test_a_date_that_only_exists_in_the_gap_still_fires(self, engine: str) -> None:
        assert fires(engine, "0 12 30 12 *", "Pacific/Apia", "2011-01-01T00:00:00+00:00", 2) == [
            "2011-12-31T00:00:00+14:00",
            "2012-12-30T12:00:00+14:00",
        ]


class TestFixedTimeInAFold:
    @pytest.mark.parametrize(
        "zone, expression, after, expected",
        [
            (
                "America/New_York",
                "30 1 * * *",
                "2024-11-02T12:00:00-04:00",
                ["2024-11-03T01:30:00-04:00", "2024-11-04T01:30:00-05:00"],
            ),
            (
                "Europe/London",
                "30 1 * * *",
                "2024-10-26T12:00:00+01:00",
                ["2024-10-27T01:30:00+01:00", "2024-10-28T01:30:00+00:00"],
            ),
            (
                "Australia/Sydney",
                "30 2 * * *",
                "2024-04-06T12:00:00+11:00",
                ["2024-04-07T02:30:00+11:00", "2024-04-08T02:30:00+10:00"],
            ),
            (
                "Australia/Lord_Howe",
                "45 1 * * *",
                "2024-04-06T12:00:00+11:00",
                ["2024-04-07T01:45:00+11:00", "2024-04-08T01:45:00+10:30"],
            ),
            (
                "Europe/Moscow",
                "30 1 * * *",
                "2014-10-25T12:00:00+04:00",
                ["2014-10-26T01:30:00+04:00", "2014-10-27T01:30:00+03:00"],
            ),
            (
                "Asia/Pyongyang",
                "45 23 * * *",
                "2015-08-13T12:00:00+09:00",
                ["2015-08-13T23:45:00+09:00", "2015-08-14T23:45:00+09:00", "2015-08-15T23:45:00+08:30"],
            ),
        ],
        ids=["new-york", "london", "sydney-april", "lord-howe", "moscow-2014", "pyongyang-2015"],
    )
    def test_a_repeated_wall_time_fires_at_its_first_occurrence_only(
        self, engine: str, zone: str, expression: str, after: str, expected: List[str]
    ) -> None:
        assert fires(engine, expression, zone, after, len(expected)) == expected

    def test_a_fixed_time_just_before_the_fold_is_not_repeated(self, engine: str) -> None:
        # 00:59 EDT is followed by 01:00 EDT: that wall exists once, and so fires once.
        assert fires(engine, "59 0 * * *", "America/New_York", "2024-11-02T12:00:00-04:00", 2) == [
            "2024-11-03T00:59:00-04:00",
            "2024-11-04T00:59:00-05:00",
        ]


class TestFrequentInAFold:
    @pytest.mark.parametrize(
        "zone, expression, after, expected",
        [
            (
                "America/New_York",
                "30 * * * *",
                "2024-11-03T00:10:00-04:00",
                [
                    "2024-11-03T00:30:00-04:00",
                    "2024-11-03T01:30:00-04:00",
                    "2024-11-03T01:30:00-05:00",
                    "2024-11-03T02:30:00-05:00",
                ],
            ),
            (
                "Europe/London",
                "*/20 1 * * *",
                "2024-10-27T00:50:00+01:00",
                [
                    "2024-10-27T01:00:00+01:00",
                    "2024-10-27T01:20:00+01:00",
                    "2024-10-27T01:40:00+01:00",
                    "2024-10-27T01:00:00+00:00",
                    "2024-10-27T01:20:00+00:00",
                    "2024-10-27T01:40:00+00:00",
                    "2024-10-28T01:00:00+00:00",
                ],
            ),
            (
                "Australia/Sydney",
                "*/30 2 * * *",
                "2024-04-07T01:50:00+11:00",
                [
                    "2024-04-07T02:00:00+11:00",
                    "2024-04-07T02:30:00+11:00",
                    "2024-04-07T02:00:00+10:00",
                    "2024-04-07T02:30:00+10:00",
                    "2024-04-08T02:00:00+10:00",
                ],
            ),
            (
                "Australia/Lord_Howe",
                "*/15 1 * * *",
                "2024-04-07T01:20:00+11:00",
                [
                    "2024-04-07T01:30:00+11:00",
                    "2024-04-07T01:45:00+11:00",
                    "2024-04-07T01:30:00+10:30",
                    "2024-04-07T01:45:00+10:30",
                    "2024-04-08T01:00:00+10:30",
                ],
            ),
            (
                "Europe/Moscow",
                "*/30 1 * * *",
                "2014-10-25T12:00:00+04:00",
                [
                    "2014-10-26T01:00:00+04:00",
                    "2014-10-26T01:30:00+04:00",
                    "2014-10-26T01:00:00+03:00",
                    "2014-10-26T01:30:00+03:00",
                    "2014-10-27T01:00:00+03:00",
                ],
            ),
            (
                "Asia/Pyongyang",
                "*/15 23 * * *",
                "2015-08-14T22:50:00+09:00",
                [
                    "2015-08-14T23:00:00+09:00",
                    "2015-08-14T23:15:00+09:00",
                    "2015-08-14T23:30:00+09:00",
                    "2015-08-14T23:45:00+09:00",
                    "2015-08-14T23:30:00+08:30",
                    "2015-08-14T23:45:00+08:30",
                    "2015-08-15T23:00:00+08:30",
                ],
            ),
        ],
        ids=["new-york-hourly", "london", "sydney-april", "lord-howe", "moscow-2014", "pyongyang-2015"],
    )
    def test_a_repeated_wall_time_fires_in_both_passes(
        self, engine: str, zone: str, expression: str, after: str, expected: List[str]
    ) -> None:
        assert fires(engine, expression, zone, after, len(expected)) == expected


class TestFrequentInAGap:
    @pytest.mark.parametrize(
        "zone, expression, after, expected",
        [
            (
                "America/New_York",
                "30 * * * *",
                "2024-03-10T00:10:00-05:00",
                ["2024-03-10T00:30:00-05:00", "2024-03-10T01:30:00-05:00", "2024-03-10T03:30:00-04:00"],
            ),
            (
                "Europe/London",
                "*/20 1 * * *",
                "2024-03-31T00:50:00+00:00",
                ["2024-04-01T01:00:00+01:00", "2024-04-01T01:20:00+01:00"],
            ),
            (
                "Australia/Sydney",
                "*/30 2 * * *",
                "2024-10-05T12:00:00+10:00",
                ["2024-10-07T02:00:00+11:00", "2024-10-07T02:30:00+11:00"],
            ),
            (
                "Australia/Lord_Howe",
                "*/15 2 * * *",
                "2024-10-06T01:50:00+10:30",
                [
                    "2024-10-06T02:30:00+11:00",
                    "2024-10-06T02:45:00+11:00",
                    "2024-10-07T02:00:00+11:00",
                ],
            ),
            (
                "Pacific/Apia",
                "0 * * * *",
                "2011-12-29T21:30:00-10:00",
                [
                    "2011-12-29T22:00:00-10:00",
                    "2011-12-29T23:00:00-10:00",
                    "2011-12-31T00:00:00+14:00",
                    "2011-12-31T01:00:00+14:00",
                ],
            ),
            (
                "Asia/Pyongyang",
                "*/15 23 * * *",
                "2018-05-04T22:50:00+08:30",
                [
                    "2018-05-04T23:00:00+08:30",
                    "2018-05-04T23:15:00+08:30",
                    "2018-05-05T23:00:00+09:00",
                ],
            ),
        ],
        ids=["new-york-hourly", "london", "sydney-october", "lord-howe", "apia", "pyongyang-2018"],
    )
    def test_a_skipped_wall_time_does_not_fire(
        self, engine: str, zone: str, expression: str, after: str, expected: List[str]
    ) -> None:
        assert fires(engine, expression, zone, after, len(expected)) == expected


# (zone, expression, a UTC window around a transition): the fire set inside the window must not
# depend on where a search starts.
WINDOWS = [
    ("America/New_York", "30 1 * * *", "2024-11-03T03:00:00", 8),
    ("America/New_York", "30 2 * * *", "2024-03-10T05:00:00", 6),
    ("America/New_York", "*/15 * * * *", "2024-11-03T04:30:00", 4),
    ("Europe/London", "30 1 * * *", "2024-10-26T23:00:00", 5),
    ("Europe/London", "*/20 1 * * *", "2024-03-30T23:30:00", 4),
    ("Australia/Sydney", "30 2 * * *", "2024-04-06T14:00:00", 5),
    ("Australia/Sydney", "0,30 2 * * *", "2024-10-05T14:00:00", 5),
    ("Australia/Lord_Howe", "45 1 * * *", "2024-04-06T13:00:00", 5),
    ("Australia/Lord_Howe", "*/10 2 * * *", "2024-10-05T14:00:00", 4),
    ("Europe/Moscow", "30 1 * * *", "2014-10-25T20:00:00", 5),
    ("Asia/Pyongyang", "45 23 * * *", "2015-08-14T13:00:00", 5),
    ("Pacific/Apia", "0 9,12 * * *", "2011-12-29T18:00:00", 20),
]


class TestAnyStartInstant:
    @pytest.mark.parametrize(
        "zone, expression, window_start, hours", WINDOWS, ids=[f"{w[0]} {w[1]}" for w in WINDOWS]
    )
    def test_next_is_the_first_fire_of_one_fixed_set_after_the_start(
        self, engine: str, zone: str, expression: str, window_start: str, hours: int
    ) -> None:
        expr = CronExpression(expression, zone, engine=engine)
        begin = datetime.fromisoformat(window_start).replace(tzinfo=timezone.utc)
        end = begin + timedelta(hours=hours)
        reference = []
        for fire in expr.iter(begin - timedelta(hours=1)):
            reference.append(fire)
            if fire > end:
                break
        start = begin
        while start < end:
            expected = next(f for f in reference if f > start)
            got = expr.next(start)
            assert got is not None
            # isoformat: aware datetimes sharing a tzinfo compare equal across a fold's two passes.
            assert got.isoformat() == expected.isoformat(), f"from {start.isoformat()}"
            start += timedelta(minutes=7, seconds=13)

    @pytest.mark.parametrize(
        "after, expected",
        [
            ("2024-03-10T03:00:00-04:00", "2024-03-11T02:30:00-04:00"),  # exactly at the gap fire
            ("2024-03-10T01:59:59.999999-05:00", "2024-03-10T03:00:00-04:00"),  # just before the gap
            ("2024-03-10T02:59:59-04:00", "2024-03-10T03:00:00-04:00"),  # an offset that never was
        ],
    )
    def test_starts_at_the_edges_of_the_gap(self, engine: str, after: str, expected: str) -> None:
        assert fires(engine, "30 2 * * *", "America/New_York", after, 1) == [expected]

    @pytest.mark.parametrize(
        "after, expected",
        [
            ("2024-11-03T01:30:00-04:00", "2024-11-04T01:30:00-05:00"),  # exactly at the fire
            ("2024-11-03T01:29:59-04:00", "2024-11-03T01:30:00-04:00"),
            ("2024-11-03T01:29:59-05:00", "2024-11-04T01:30:00-05:00"),  # second pass, same wall
            ("2024-11-03T07:00:00+00:00", "2024-11-04T01:30:00-05:00"),  # after in another zone
        ],
    )
    def test_starts_in_either_pass_of_the_fold(self, engine: str, after: str, expected: str) -> None:
        assert fires(engine, "30 1 * * *", "America/New_York", after, 1) == [expected]


class TestHalfHourZone:
    def test_a_daily_time_keeps_its_wall_time_across_both_lord_howe_shifts(self, engine: str) -> None:
        expected = [
            "2024-04-06T09:00:00+11:00",
            "2024-04-07T09:00:00+10:30",
            "2024-10-05T09:00:00+10:30",
            "2024-10-06T09:00:00+11:00",
        ]
        got = fires(engine, "0 9 * * *", "Australia/Lord_Howe", "2024-04-05T12:00:00+11:00", 200)
        assert [got[0], got[1], got[182], got[183]] == expected

    def test_the_half_hour_that_lord_howe_repeats_fires_twice_when_frequent(self, engine: str) -> None:
        got = fires(engine, "*/10 * * * *", "Australia/Lord_Howe", "2024-04-07T01:25:00+11:00", 8)
        assert got == [
            "2024-04-07T01:30:00+11:00",
            "2024-04-07T01:40:00+11:00",
            "2024-04-07T01:50:00+11:00",
            "2024-04-07T01:30:00+10:30",
            "2024-04-07T01:40:00+10:30",
            "2024-04-07T01:50:00+10:30",
            "2024-04-07T02:00:00+10:30",
            "2024-04-07T02:10:00+10:30",
        ]

    def test_the_wall_clock_hour_of_the_lord_howe_gap_loses_only_half_an_hour(self, engine: str) -> None:
        got = fires(engine, "*/10 2 * * *", "Australia/Lord_Howe", "2024-10-06T01:55:00+10:30", 3)
        assert got == ["2024-10-06T02:30:00+11:00", "2024-10-06T02:40:00+11:00", "2024-10-06T02:50:00+11:00"]


class TestDstNotes:
    """``dst_note`` tells people why a fire landed where it did."""

    def test_a_gap_fire_says_its_wall_time_was_skipped(self, engine: str) -> None:
        expr = CronExpression("30 2 * * *", "America/New_York", engine=engine)
        fire = datetime.fromisoformat("2024-03-10T03:00:00-04:00")
        assert "skipped" in (expr.dst_note(fire) or "")

    def test_a_first_pass_fire_says_its_wall_time_occurs_twice(self, engine: str) -> None:
        expr = CronExpression("30 1 * * *", "America/New_York", engine=engine)
        assert "first occurrence" in (
            expr.dst_note(datetime.fromisoformat("2024-11-03T01:30:00-04:00")) or ""
        )

    def test_a_second_pass_fire_says_it_repeats(self, engine: str) -> None:
        expr = CronExpression("*/15 * * * *", "America/New_York", engine=engine)
        assert "repeated" in (expr.dst_note(datetime.fromisoformat("2024-11-03T01:15:00-05:00")) or "")

    def test_an_ordinary_fire_has_no_note(self, engine: str) -> None:
        expr = CronExpression("30 1 * * *", "America/New_York", engine=engine)
        assert expr.dst_note(datetime.fromisoformat("2024-11-04T01:30:00-05:00")) is None
