"""Triggers: the one place that computes fire instants, from a schedule's definition alone.

America/New_York in 2024 (the DESIGN §3 table):
  2024-03-10 02:00 EST -> 03:00 EDT (07:00 UTC): wall times 02:00-02:59 do not exist.
  2024-11-03 02:00 EDT -> 01:00 EST (06:00 UTC): wall times 01:00-01:59 happen twice.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from typing import List, Optional, Tuple
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowyml_lite.core.schedule import SCHEDULE_TYPES
from flowyml_lite.core.triggers import (
    BoundedTrigger,
    CronTrigger,
    IntervalTrigger,
    OnceTrigger,
    Trigger,
    bounded,
    build_trigger,
    cron_text,
    jitter_delay,
    once_value,
)
from flowyml_lite.errors import CronError, ScheduleError, UnknownTimezoneError

UTC = timezone.utc


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def take(trigger: Trigger, after: datetime, count: int) -> List[datetime]:
    out: List[datetime] = []
    for _ in range(count):
        nxt = trigger.next_after(after)
        assert nxt is not None
        out.append(nxt)
        after = nxt
    return out


class TestIntervalGrid:
    def test_fires_are_multiples_of_the_period_from_the_unix_epoch(self) -> None:
        t = IntervalTrigger(60)
        assert take(t, utc(2024, 1, 1, 0, 0, 30), 3) == [
            utc(2024, 1, 1, 0, 1),
            utc(2024, 1, 1, 0, 2),
            utc(2024, 1, 1, 0, 3),
        ]

    def test_next_after_is_strictly_after_a_grid_instant(self) -> None:
        assert IntervalTrigger(60).next_after(utc(2024, 1, 1, 0, 1)) == utc(2024, 1, 1, 0, 2)

    def test_the_grid_does_not_depend_on_when_it_is_asked(self) -> None:
        t = IntervalTrigger(3600)
        starts = [utc(2024, 5, 1, 10, 0, 1), utc(2024, 5, 1, 10, 59, 59), utc(2024, 5, 1, 10, 30)]
        assert {t.next_after(s) for s in starts} == {utc(2024, 5, 1, 11)}

    def test_sub_second_periods_keep_microsecond_precision(self) -> None:
        t = IntervalTrigger(0.2)
        fires = take(t, utc(2024, 1, 1), 5)
        assert [f - utc(2024, 1, 1) for f in fires] == [timedelta(milliseconds=200 * i) for i in range(1, 6)]

    def test_an_explicit_anchor_shifts_the_grid(self) -> None:
        t = IntervalTrigger(60, anchor=utc(2024, 1, 1, 0, 0, 15))
        assert t.next_after(utc(2024, 1, 1, 0, 0, 30)) == utc(2024, 1, 1, 0, 1, 15)

    def test_elapsed_time_ignores_dst(self) -> None:
        t = build_trigger("interval", "3600", "America/New_York", "hourly")
        fires = take(t, utc(2024, 11, 3, 4, 30), 4)
        assert [b - a for a, b in zip(fires, fires[1:])] == [timedelta(hours=1)] * 3

    @pytest.mark.parametrize("seconds", [0, -5, 1e-9])
    def test_a_non_positive_period_is_rejected(self, seconds: float) -> None:
        with pytest.raises(ScheduleError):
            IntervalTrigger(seconds)


class TestFiresUntil:
    def test_counts_every_instant_in_the_half_open_window_and_keeps_the_last_ones(self) -> None:
        t = IntervalTrigger(3600)
        kept, count = t.fires_until(utc(2024, 1, 1), utc(2024, 1, 4), 5)
        assert count == 72
        assert kept == [
            utc(2024, 1, 3, 20),
            utc(2024, 1, 3, 21),
            utc(2024, 1, 3, 22),
            utc(2024, 1, 3, 23),
            utc(2024, 1, 4),
        ]

    def test_an_empty_window_has_no_instants(self) -> None:
        assert IntervalTrigger(3600).fires_until(utc(2024, 1, 1, 0, 1), utc(2024, 1, 1, 0, 59), 5) == ([], 0)

    def test_cron_and_interval_agree_on_the_same_grid(self) -> None:
        cron = build_trigger("hourly", "0", "UTC", "h")
        interval = IntervalTrigger(3600)
        window = (utc(2024, 1, 1, 0, 30), utc(2024, 1, 3, 12))
        assert cron.fires_until(*window, 10) == interval.fires_until(*window, 10)

    def test_fewer_instants_than_the_limit_are_all_kept_in_order(self) -> None:
        t = build_trigger("daily", "09:00", "UTC", "d")
        kept, count = t.fires_until(utc(2024, 1, 1), utc(2024, 1, 4), 100)
        assert (kept, count) == ([utc(2024, 1, 1, 9), utc(2024, 1, 2, 9), utc(2024, 1, 3, 9)], 3)


class TestScheduleTypes:
    @pytest.mark.parametrize(
        "schedule_type, value, expression",
        [
            ("daily", "02:30", "30 2 * * *"),
            ("daily", "00:00", "0 0 * * *"),
            ("hourly", "15", "15 * * * *"),
            ("cron", "0 9 * * 1-5", "0 9 * * 1-5"),
        ],
    )
    def test_daily_and_hourly_values_are_cron_expressions(
        self, schedule_type: str, value: str, expression: str
    ) -> None:
        assert cron_text(schedule_type, value) == expression

    def test_daily_fires_at_the_wall_time_of_its_zone(self) -> None:
        t = build_trigger("daily", "09:30", "Asia/Tokyo", "morning_report")
        assert t.next_after(utc(2024, 1, 1)) == utc(2024, 1, 1, 0, 30)  # 09:30 JST = 00:30 UTC

    def test_hourly_fires_at_its_minute_every_hour(self) -> None:
        t = build_trigger("hourly", "15", "UTC", "hourly_sync")
        assert take(t, utc(2024, 1, 1, 1, 15), 2) == [utc(2024, 1, 1, 2, 15), utc(2024, 1, 1, 3, 15)]

    def test_hourly_minute_is_read_in_a_half_hour_offset_zone(self) -> None:
        t = build_trigger("hourly", "0", "Asia/Kolkata", "india")  # UTC+05:30
        assert take(t, utc(2024, 1, 1), 2) == [utc(2024, 1, 1, 0, 30), utc(2024, 1, 1, 1, 30)]

    def test_weekday_cron_skips_the_weekend(self) -> None:
        t = build_trigger("cron", "0 9 * * 1-5", "Europe/London", "weekday_report")
        fires = take(t, utc(2024, 1, 5, 10), 2)  # Friday 2024-01-05, after 09:00
        assert fires == [utc(2024, 1, 8, 9), utc(2024, 1, 9, 9)]  # Monday, Tuesday (GMT = UTC)

    def test_a_cron_trigger_is_a_cron_trigger(self) -> None:
        assert isinstance(build_trigger("daily", "09:00", "UTC", "d"), CronTrigger)
        assert isinstance(build_trigger("interval", "60", "UTC", "i"), IntervalTrigger)

    def test_h_fields_hash_on_the_schedule_name(self) -> None:
        a1 = build_trigger("cron", "H * * * *", "UTC", "alpha").next_after(utc(2024, 1, 1))
        a2 = build_trigger("cron", "H * * * *", "UTC", "alpha").next_after(utc(2024, 1, 1))
        names = [f"job{i}" for i in range(20)]
        minutes = {build_trigger("cron", "H * * * *", "UTC", n).next_after(utc(2024, 1, 1)) for n in names}
        assert a1 == a2
        assert len(minutes) > 1


class TestDaylightSaving:
    """DESIGN §3: fixed-time fires once (after a gap, at the first of a repeat); frequent ones follow time."""

    NY = "America/New_York"

    def test_daily_0230_on_spring_forward_day_fires_at_0300_edt(self) -> None:
        t = build_trigger("daily", "02:30", self.NY, "d")
        fires = take(t, utc(2024, 3, 9, 12), 3)
        assert fires == [utc(2024, 3, 10, 7, 0), utc(2024, 3, 11, 6, 30), utc(2024, 3, 12, 6, 30)]

    def test_daily_0130_on_fall_back_day_fires_once_at_the_first_pass(self) -> None:
        t = build_trigger("daily", "01:30", self.NY, "d")
        fires = take(t, utc(2024, 11, 2, 12), 2)
        assert fires == [utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 30)]  # 01:30 EDT, then 01:30 EST

    def test_a_start_inside_the_repeated_hour_does_not_fire_that_day_again(self) -> None:
        t = build_trigger("daily", "01:30", self.NY, "d")
        assert t.next_after(utc(2024, 11, 3, 6, 10)) == utc(2024, 11, 4, 6, 30)  # from 01:10 EST

    def test_daily_0900_stays_at_0900_local_across_both_transitions(self) -> None:
        t = build_trigger("daily", "09:00", self.NY, "d")
        assert take(t, utc(2024, 3, 9, 15), 2) == [utc(2024, 3, 10, 13), utc(2024, 3, 11, 13)]
        assert take(t, utc(2024, 11, 2, 12), 2) == [utc(2024, 11, 2, 13), utc(2024, 11, 3, 14)]

    def test_every_quarter_hour_fires_in_both_passes_of_the_repeated_hour(self) -> None:
        t = build_trigger("cron", "*/15 * * * *", self.NY, "q")
        fires = take(t, utc(2024, 11, 3, 5, 20), 4)  # from 01:20 EDT
        assert fires == [
            utc(2024, 11, 3, 5, 30),
            utc(2024, 11, 3, 5, 45),
            utc(2024, 11, 3, 6, 0),
            utc(2024, 11, 3, 6, 15),
        ]  # 01:30 EDT, 01:45 EDT, 01:00 EST, 01:15 EST

    def test_a_frequent_expression_in_the_skipped_hour_does_not_fire_that_day(self) -> None:
        t = build_trigger("cron", "*/30 2 * * *", self.NY, "gap")
        assert t.next_after(utc(2024, 3, 10, 5)) == utc(2024, 3, 11, 6)  # 02:00 EDT on 03-11

    def test_hourly_fires_every_real_hour_on_fall_back_day(self) -> None:
        t = build_trigger("hourly", "0", self.NY, "h")
        fires = take(t, utc(2024, 11, 3, 4, 30), 4)
        assert [b - a for a, b in zip(fires, fires[1:])] == [timedelta(hours=1)] * 3


class TestBadDefinitions:
    def test_a_bad_cron_expression_is_a_cron_error_naming_the_field(self) -> None:
        with pytest.raises(CronError, match="day-of-week"):
            build_trigger("cron", "0 9 * * 8", "UTC", "x")

    def test_a_never_matching_expression_fails_at_once(self) -> None:
        with pytest.raises(CronError, match="never"):
            build_trigger("cron", "0 0 30 2 *", "UTC", "x")

    def test_an_unknown_zone_is_rejected_even_for_an_interval(self) -> None:
        with pytest.raises(UnknownTimezoneError):
            build_trigger("interval", "60", "Mars/Olympus", "x")

    def test_an_unknown_schedule_type_is_rejected(self) -> None:
        with pytest.raises(ScheduleError, match="unknown schedule type"):
            build_trigger("weekly", "1", "UTC", "x")

    def test_a_non_numeric_interval_value_is_rejected(self) -> None:
        with pytest.raises(ScheduleError, match="not a number"):
            build_trigger("interval", "soon", "UTC", "x")


class TestOnce:
    """A one-off (``schedule_once``): fires at its instant, then never again."""

    AT = utc(2025, 1, 1, 9)

    def test_it_fires_at_its_instant_and_then_never(self) -> None:
        t = OnceTrigger(self.AT)
        assert t.next_after(utc(2024, 6, 1)) == self.AT
        assert t.next_after(self.AT - timedelta(microseconds=1)) == self.AT
        assert t.next_after(self.AT) is None
        assert t.next_after(utc(2030, 1, 1)) is None

    def test_fires_until_counts_it_once_inside_the_window(self) -> None:
        t = OnceTrigger(self.AT)
        assert t.fires_until(utc(2024, 12, 31), utc(2025, 1, 2), 10) == ([self.AT], 1)
        assert t.fires_until(self.AT, utc(2025, 1, 2), 10) == ([], 0)
        assert t.fires_until(utc(2024, 12, 31), self.AT - timedelta(seconds=1), 10) == ([], 0)

    def test_its_value_is_the_instant_as_utc_iso_text_whatever_zone_it_was_given_in(self) -> None:
        given = datetime(2025, 1, 1, 10, tzinfo=ZoneInfo("Europe/Paris"))
        assert once_value(given) == once_value("2025-01-01T09:00:00Z") == "2025-01-01T09:00:00+00:00"
        t = build_trigger("once", once_value(given), "Europe/Paris", "new-year")
        assert isinstance(t, OnceTrigger) and t.next_after(utc(2024, 1, 1)) == self.AT

    def test_once_is_a_schedule_type(self) -> None:
        assert "once" in SCHEDULE_TYPES

    @pytest.mark.parametrize("at", ["2025-01-01T09:00:00", datetime(2025, 1, 1, 9)])
    def test_a_one_off_without_a_zone_is_refused(self, at: object) -> None:
        with pytest.raises(ScheduleError, match="has no time zone"):
            once_value(at)  # type: ignore[arg-type]
        with pytest.raises(ScheduleError, match="has no time zone"):
            build_trigger("once", str(at), "UTC", "x")

    def test_a_one_off_that_is_not_a_date_is_refused_with_an_example(self) -> None:
        with pytest.raises(ScheduleError, match=r"ISO 8601 date and time with an offset, e\.g\. "):
            build_trigger("once", "tomorrow", "UTC", "x")

    def test_an_unknown_zone_is_rejected_for_a_one_off_too(self) -> None:
        with pytest.raises(UnknownTimezoneError):
            build_trigger("once", "2025-01-01T09:00:00Z", "Mars/Olympus", "x")


class TestStartAndEndDates:
    """``start_date``/``end_date`` bound every schedule type: no fire before the start, none after the end."""

    def test_a_cron_schedule_fires_first_at_or_after_its_start(self) -> None:
        t = build_trigger("daily", "09:00", "UTC", "d", start_date=utc(2025, 3, 1, 9))
        assert t.next_after(utc(2024, 1, 1)) == utc(2025, 3, 1, 9)  # a fire exactly at the start counts
        t = build_trigger("daily", "09:00", "UTC", "d", start_date=utc(2025, 3, 1, 9, 0, 1))
        assert t.next_after(utc(2024, 1, 1)) == utc(2025, 3, 2, 9)

    def test_no_fire_after_the_end_which_is_inclusive(self) -> None:
        t = build_trigger("daily", "09:00", "UTC", "d", end_date=utc(2025, 1, 3, 9))
        assert take(t, utc(2025, 1, 1), 3) == [utc(2025, 1, 1, 9), utc(2025, 1, 2, 9), utc(2025, 1, 3, 9)]
        assert t.next_after(utc(2025, 1, 3, 9)) is None
        assert t.next_after(utc(2026, 1, 1)) is None

    def test_bounds_do_not_move_the_fires_in_between(self) -> None:
        plain = build_trigger("cron", "*/15 * * * *", "America/New_York", "q")
        bounds = {"start_date": utc(2024, 11, 3), "end_date": utc(2024, 11, 4)}
        bound = build_trigger("cron", "*/15 * * * *", "America/New_York", "q", **bounds)
        assert take(bound, utc(2024, 11, 3, 5), 8) == take(plain, utc(2024, 11, 3, 5), 8)

    def test_fires_until_respects_both_bounds(self) -> None:
        t = build_trigger(
            "hourly", "0", "UTC", "h", start_date=utc(2025, 1, 1, 5), end_date=utc(2025, 1, 1, 8)
        )
        assert t.fires_until(utc(2025, 1, 1), utc(2025, 1, 2), 10) == (
            [utc(2025, 1, 1, 5), utc(2025, 1, 1, 6), utc(2025, 1, 1, 7), utc(2025, 1, 1, 8)],
            4,
        )
        assert t.fires_until(utc(2025, 1, 1, 8), utc(2025, 1, 2), 10) == ([], 0)
        assert t.fires_until(utc(2024, 1, 1), utc(2025, 1, 1, 4), 10) == ([], 0)

    def test_an_interval_grid_is_anchored_at_its_start(self) -> None:
        start = datetime(2025, 1, 6, 9, 30, tzinfo=ZoneInfo("Europe/Paris"))  # 08:30 UTC
        t = build_trigger("interval", "86400", "Europe/Paris", "daily-ish", start_date=start)
        assert take(t, utc(2024, 1, 1), 3) == [
            utc(2025, 1, 6, 8, 30),
            utc(2025, 1, 7, 8, 30),
            utc(2025, 1, 8, 8, 30),
        ]

    def test_an_interval_without_a_start_keeps_the_epoch_grid_up_to_its_end(self) -> None:
        t = build_trigger("interval", "60", "UTC", "i", end_date=utc(2025, 1, 1, 0, 2, 30))
        assert t.next_after(utc(2025, 1, 1, 0, 0, 30)) == utc(2025, 1, 1, 0, 1)
        assert t.next_after(utc(2025, 1, 1, 0, 2)) is None

    def test_a_one_off_outside_its_bounds_never_fires(self) -> None:
        t = build_trigger("once", "2025-01-01T00:00:00Z", "UTC", "o", end_date=utc(2024, 12, 31))
        assert t.next_after(utc(2024, 1, 1)) is None

    def test_a_trigger_without_bounds_is_returned_as_it_is(self) -> None:
        inner = IntervalTrigger(60)
        assert bounded(inner) is inner
        assert isinstance(build_trigger("cron", "* * * * *", "UTC", "c"), CronTrigger)
        bound = build_trigger("cron", "* * * * *", "UTC", "c", end_date=utc(2030, 1, 1))
        assert isinstance(bound, BoundedTrigger) and isinstance(bound.trigger, CronTrigger)

    def test_an_end_not_after_the_start_is_refused(self) -> None:
        with pytest.raises(ScheduleError, match="end_date must be after start_date"):
            bounded(IntervalTrigger(60), utc(2025, 1, 2), utc(2025, 1, 1))


class TestBoundsAgainstFiltering:
    """A bounded trigger's fires are exactly the unbounded trigger's fires in [start, end]."""

    @settings(max_examples=150, deadline=None)
    @given(
        definition=st.sampled_from(
            [
                ("cron", "*/7 1-3 * * *", "America/New_York"),
                ("cron", "30 1 * * *", "America/New_York"),
                ("daily", "09:00", "Europe/London"),
                ("hourly", "15", "Australia/Lord_Howe"),
                ("cron", "0 0 L * *", "UTC"),
            ]
        ),
        origin=st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2024, 12, 1)),
        start_after=st.one_of(st.none(), st.integers(0, 10 * 86400)),
        length=st.one_of(st.none(), st.integers(1, 20 * 86400)),
        probe=st.integers(-2 * 86400, 30 * 86400),
    )
    def test_bounded_fires_are_the_filtered_fires(
        self,
        definition: Tuple[str, str, str],
        origin: datetime,
        start_after: Optional[int],
        length: Optional[int],
        probe: int,
    ) -> None:
        kind, value, zone = definition
        base = origin.replace(tzinfo=UTC)
        start = base + timedelta(seconds=start_after) if start_after is not None else None
        end = (start or base) + timedelta(seconds=length) if length is not None else None
        plain = build_trigger(kind, value, zone, "b")
        bound = build_trigger(kind, value, zone, "b", start_date=start, end_date=end)
        after = base + timedelta(seconds=probe)
        expected: List[datetime] = []
        fire = plain.next_after(after)
        horizon = (end or base + timedelta(days=40)) + timedelta(days=1)
        while fire is not None and fire <= horizon and len(expected) < 60:
            if (start is None or fire >= start) and (end is None or fire <= end):
                expected.append(fire)
            fire = plain.next_after(fire)
        got: List[datetime] = []
        moment = bound.next_after(after)
        while moment is not None and moment <= horizon and len(got) < len(expected):
            got.append(moment)
            moment = bound.next_after(moment)
        assert got == expected
        until = horizon - timedelta(days=1)
        kept, count = bound.fires_until(after, until, 3)
        inside = [f for f in expected if f <= until]
        if len(expected) < 60:
            assert (kept, count) == (inside[-3:], len(inside))


class TestJitter:
    """A delay in [0, jitter) from a hash of (schedule, fire): the same in every process."""

    def test_the_delay_lies_in_the_window(self) -> None:
        fire = utc(2025, 1, 1, 9)
        delays = [jitter_delay(f"job{i}", fire, 30.0) for i in range(2000)]
        assert all(0.0 <= d < 30.0 for d in delays)
        assert min(delays) < 1.0 and max(delays) > 29.0  # spread over the whole window

    def test_the_same_schedule_and_fire_always_wait_the_same(self) -> None:
        fire = utc(2025, 1, 1, 9)
        assert jitter_delay("etl", fire, 60) == jitter_delay("etl", fire, 60)
        in_tokyo = fire.astimezone(ZoneInfo("Asia/Tokyo"))
        assert jitter_delay("etl", fire, 60) == jitter_delay("etl", in_tokyo, 60)

    def test_other_schedules_and_other_fires_wait_differently(self) -> None:
        fire = utc(2025, 1, 1, 9)
        assert jitter_delay("etl", fire, 60) != jitter_delay("report", fire, 60)
        assert jitter_delay("etl", fire, 60) != jitter_delay("etl", fire + timedelta(minutes=1), 60)

    def test_no_jitter_means_no_delay(self) -> None:
        assert jitter_delay("etl", utc(2025, 1, 1), 0) == 0.0
        assert jitter_delay("etl", utc(2025, 1, 1), 0.0) == 0.0

    def test_a_tiny_window_still_gives_a_delay_below_it(self) -> None:
        assert all(0.0 <= jitter_delay(f"j{i}", utc(2025, 1, 1), 1e-300) < 1e-300 for i in range(100))

    def test_another_process_with_another_hash_seed_computes_the_same_delay(self) -> None:
        code = (
            "from datetime import datetime, timezone;"
            "from flowyml_lite.core.triggers import jitter_delay;"
            "print(repr(jitter_delay('etl', datetime(2025, 1, 1, 9, tzinfo=timezone.utc), 60.0)))"
        )
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": root},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert float(out) == jitter_delay("etl", utc(2025, 1, 1, 9), 60.0)
