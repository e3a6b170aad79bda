"""Schedules as users see them, and the validation of a definition before anything is stored."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime, timezone
from typing import Any, Dict
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowyml_lite.core.schedule import (
    Options,
    Schedule,
    definition_hash,
    interval_seconds,
    shared_options_dict,
    to_schedule,
    validate_context,
    validate_name,
    validate_options,
    validate_timezone,
)
from flowyml_lite.errors import ScheduleError, TimezoneError, UnknownTimezoneError
from flowyml_lite.stores.base import ScheduleRecord


class TestNames:
    @pytest.mark.parametrize("name", ["etl", "daily_etl_job", "report: EU (09:00)", "x" * 200, "été"])
    def test_printable_names_up_to_200_characters_are_accepted_as_given(self, name: str) -> None:
        assert validate_name(name) == name

    @pytest.mark.parametrize("name", ["", "   ", "\t", None, 3, b"etl"])
    def test_empty_blank_and_non_string_names_are_rejected(self, name: Any) -> None:
        with pytest.raises(ScheduleError, match="non-empty string"):
            validate_name(name)

    @pytest.mark.parametrize("name", ["x" * 201, "line\nbreak", "nul\x00"])
    def test_overlong_and_unprintable_names_are_rejected(self, name: str) -> None:
        with pytest.raises(ScheduleError, match="printable and at most 200"):
            validate_name(name)


class TestOptions:
    def test_defaults_are_a_minute_of_grace_latest_catch_up_and_one_instance(self) -> None:
        assert Options() == Options(60.0, "latest", 100, 1)

    def test_valid_options_are_returned_with_grace_as_a_float(self) -> None:
        opts = validate_options(30, "all", 5, 2)
        assert opts == Options(30.0, "all", 5, 2)
        assert isinstance(opts.misfire_grace_seconds, float)

    @pytest.mark.parametrize("grace", [-1, math.inf, math.nan, "60", True, None])
    def test_a_bad_misfire_grace_names_the_argument(self, grace: Any) -> None:
        with pytest.raises(ScheduleError, match="misfire_grace_seconds"):
            validate_options(grace, "latest", 100, 1)

    @pytest.mark.parametrize("catchup", ["", "LATEST", "none", None])
    def test_an_unknown_catchup_policy_lists_the_policies(self, catchup: Any) -> None:
        with pytest.raises(ScheduleError, match="latest, skip, all"):
            validate_options(60, catchup, 100, 1)

    @pytest.mark.parametrize("arg", ["max_catchup", "max_instances"])
    @pytest.mark.parametrize("value", [0, -1, 1.5, True, "2"])
    def test_counts_must_be_integers_of_at_least_one(self, arg: str, value: Any) -> None:
        values: Dict[str, Any] = {"max_catchup": 100, "max_instances": 1, arg: value}
        with pytest.raises(ScheduleError, match=arg):
            validate_options(60, "latest", values["max_catchup"], values["max_instances"])

    def test_equal_valid_options_are_one_shared_frozen_instance_but_minus_zero_is_its_own(self) -> None:
        assert validate_options(30, "all", 5, 2) is validate_options(30.0, "all", 5, 2)
        zero, minus_zero = validate_options(0.0, "skip", 1, 1), validate_options(-0.0, "skip", 1, 1)
        assert zero is not minus_zero and math.copysign(1, minus_zero.misfire_grace_seconds) == -1
        with pytest.raises(AttributeError):
            zero.catchup = "all"  # type: ignore[misc]

    def test_the_shared_options_dict_is_the_options_as_a_dict(self) -> None:
        opts = validate_options(30, "all", 5, 2)
        assert shared_options_dict(opts) == opts.to_dict()
        assert shared_options_dict(opts) is shared_options_dict(Options(30.0, "all", 5, 2))

    def test_options_round_trip_through_a_dict_and_ignore_unknown_keys(self) -> None:
        opts = Options(5.0, "skip", 3, 4)
        assert Options.from_dict({**opts.to_dict(), "future_option": 1}) == opts
        assert Options.from_dict({}) == Options()


class TestContext:
    def test_none_is_an_empty_context(self) -> None:
        assert validate_context(None) == {}

    def test_a_json_context_is_copied(self) -> None:
        given = {"region": "eu", "batch": [1, 2], "nested": {"ok": True}}
        got = validate_context(given)
        assert got == given and got is not given

    @pytest.mark.parametrize("context", [{"when": datetime(2024, 1, 1)}, {"f": print}, {1j: 1}])
    def test_a_context_that_cannot_be_stored_as_json_is_rejected(self, context: Dict[Any, Any]) -> None:
        with pytest.raises(ScheduleError, match="JSON"):
            validate_context(context)

    def test_a_context_must_be_a_dict(self) -> None:
        with pytest.raises(ScheduleError, match="must be a dict"):
            validate_context([("a", 1)])  # type: ignore[arg-type]


class TestTimezones:
    def test_an_iana_name_is_accepted(self) -> None:
        assert validate_timezone("Asia/Tokyo", "zoneinfo") == "Asia/Tokyo"

    def test_an_unknown_zone_raises_unknown_timezone_error(self) -> None:
        with pytest.raises(UnknownTimezoneError, match="Mars/Olympus"):
            validate_timezone("Mars/Olympus", "zoneinfo")

    def test_a_close_misspelling_is_answered_with_a_suggestion(self) -> None:
        with pytest.raises(UnknownTimezoneError) as info:
            validate_timezone("America/New_Yrok", "zoneinfo")
        assert "America/New_York" in info.value.suggestions

    def test_a_non_string_zone_is_a_schedule_error(self) -> None:
        with pytest.raises((ScheduleError, TimezoneError)):
            validate_timezone(ZoneInfo("UTC"), "zoneinfo")


class TestIntervals:
    def test_parts_add_up_to_seconds(self) -> None:
        assert interval_seconds(1, 2, 3, 4.5) == 86400 + 7200 + 180 + 4.5

    def test_the_guide_s_thirty_minutes_is_1800_seconds(self) -> None:
        assert interval_seconds(0, 0, 30, 0) == 1800

    @pytest.mark.parametrize("parts", [(0, 0, 0, 0), (0, 0, 0, 0.0001)])
    def test_a_zero_or_sub_millisecond_interval_is_rejected_with_an_example(self, parts: Any) -> None:
        with pytest.raises(ScheduleError, match="minutes=30"):
            interval_seconds(*parts)

    @pytest.mark.parametrize("bad", [-1, math.inf, math.nan, "5", True])
    def test_each_part_must_be_a_finite_number_at_least_zero(self, bad: Any) -> None:
        with pytest.raises(ScheduleError, match="seconds"):
            interval_seconds(0, 0, 0, bad)

    def test_a_negative_part_cannot_be_offset_by_a_positive_one(self) -> None:
        with pytest.raises(ScheduleError, match="hours"):
            interval_seconds(0, -1, 120, 0)


class TestDefinitionHash:
    BASE = ("cron", "0 9 * * 1-5", "Europe/London", Options(), {"a": 1})

    def test_the_same_definition_always_hashes_the_same(self) -> None:
        assert definition_hash(*self.BASE) == definition_hash(*self.BASE)
        assert definition_hash(
            "cron", "0 9 * * 1-5", "Europe/London", Options(), {"a": 1}
        ) == definition_hash(*self.BASE)

    def test_context_key_order_does_not_matter(self) -> None:
        a = definition_hash("interval", "60", "UTC", Options(), {"x": 1, "y": 2})
        b = definition_hash("interval", "60", "UTC", Options(), {"y": 2, "x": 1})
        assert a == b

    @pytest.mark.parametrize(
        "changed",
        [
            ("daily", "0 9 * * 1-5", "Europe/London", Options(), {"a": 1}),
            ("cron", "0 10 * * 1-5", "Europe/London", Options(), {"a": 1}),
            ("cron", "0 9 * * 1-5", "Europe/Paris", Options(), {"a": 1}),
            ("cron", "0 9 * * 1-5", "Europe/London", Options(max_instances=2), {"a": 1}),
            ("cron", "0 9 * * 1-5", "Europe/London", Options(catchup="skip"), {"a": 1}),
            ("cron", "0 9 * * 1-5", "Europe/London", Options(), {"a": 2}),
        ],
    )
    def test_every_part_of_the_definition_changes_the_hash(self, changed: Any) -> None:
        assert definition_hash(*changed) != definition_hash(*self.BASE)

    def test_hashes_stored_by_earlier_releases_are_still_the_same(self) -> None:
        # A different hash for the same definition would rewrite every stored schedule on upgrade.
        assert definition_hash("interval", "60", "UTC", Options(), {}) == "431478376a8f059d8efa2a1d2001840c"
        assert (
            definition_hash(
                "cron",
                "0 9 * * 1-5",
                "Europe/London",
                Options(30.0, "all", 7, 2),
                {"region": "eu", "n": [1, 2]},
            )
            == "446d58126de7d4f50a474c09aeade5f2"
        )

    @settings(max_examples=200, deadline=None)
    @given(
        kind=st.sampled_from(["cron", "daily", "hourly", "interval"]),
        value=st.text(max_size=30),
        zone=st.text(max_size=30),
        grace=st.one_of(st.floats(allow_nan=False), st.integers(0, 10**6), st.just(-0.0)),
        catchup=st.sampled_from(["latest", "skip", "all", 'é"\n']),
        most=st.integers(1, 10**9),
        instances=st.integers(1, 10**9),
        context=st.dictionaries(
            st.text(max_size=8),
            st.recursive(st.none() | st.integers() | st.text(), lambda c: st.lists(c, max_size=3)),
            max_size=4,
        ),
    )
    def test_the_hash_is_the_sha256_of_the_definition_as_sorted_compact_json(
        self,
        kind: str,
        value: str,
        zone: str,
        grace: float,
        catchup: str,
        most: int,
        instances: int,
        context: Dict[str, Any],
    ) -> None:
        options = Options(grace, catchup, most, instances)
        expected = [kind, value, zone, options.to_dict(), context]
        text = json.dumps(expected, sort_keys=True, separators=(",", ":"))
        assert (
            definition_hash(kind, value, zone, options, context)
            == hashlib.sha256(text.encode()).hexdigest()[:32]
        )
        assert definition_hash(kind, value, zone, options, context) == definition_hash(
            kind, value, zone, options, context
        )

    def test_zero_and_minus_zero_grace_and_int_and_float_grace_are_different_definitions(self) -> None:
        hashes = {definition_hash("interval", "60", "UTC", Options(g), {}) for g in (0.0, -0.0, 0, 60, 60.0)}
        assert len(hashes) == 5


class TestScheduleView:
    def record(self, **changes: Any) -> ScheduleRecord:
        values: Dict[str, Any] = dict(
            name="etl",
            schedule_type="daily",
            schedule_value="09:00",
            timezone="America/New_York",
            definition_hash="h",
            options=Options(30.0, "all", 7, 2).to_dict(),
            context={"region": "us"},
            enabled=True,
            next_fire=datetime(2024, 3, 11, 13, 0, tzinfo=timezone.utc),
            last_fire=datetime(2024, 3, 8, 14, 0, tzinfo=timezone.utc),
        )
        values.update(changes)
        return ScheduleRecord(**values)

    def localize(self, moment: datetime) -> datetime:
        return moment.astimezone(ZoneInfo("America/New_York"))

    def test_a_record_becomes_the_guide_s_schedule_with_instants_in_its_zone(self) -> None:
        func = lambda: None  # noqa: E731
        s = to_schedule(self.record(), func, self.localize)
        assert (s.pipeline_name, s.name, s.schedule_type, s.schedule_value) == (
            "etl",
            "etl",
            "daily",
            "09:00",
        )
        assert (s.enabled, s.timezone, s.context, s.pipeline_func, s.is_orphan) == (
            True,
            "America/New_York",
            {"region": "us"},
            func,
            False,
        )
        assert s.next_run is not None and s.next_run.replace(tzinfo=None) == datetime(2024, 3, 11, 9, 0)
        assert s.next_run.utcoffset().total_seconds() == -4 * 3600  # type: ignore[union-attr]
        assert s.last_run is not None and s.last_run.replace(tzinfo=None) == datetime(2024, 3, 8, 9, 0)
        assert s.last_run.utcoffset().total_seconds() == -5 * 3600  # type: ignore[union-attr]
        assert (s.misfire_grace_seconds, s.catchup, s.max_catchup, s.max_instances) == (30.0, "all", 7, 2)

    def test_a_record_without_a_function_here_is_an_orphan(self) -> None:
        assert to_schedule(self.record(), None, self.localize).is_orphan

    def test_a_paused_never_run_schedule_has_no_instants(self) -> None:
        s = to_schedule(self.record(enabled=False, next_fire=None, last_fire=None), None, self.localize)
        assert (s.enabled, s.next_run, s.last_run) == (False, None, None)

    def test_to_dict_is_json_with_offsets_and_no_function(self) -> None:
        d = to_schedule(self.record(), print, self.localize).to_dict()
        assert json.loads(json.dumps(d)) == d
        assert d["next_run"] == "2024-03-11T09:00:00-04:00"
        assert d["last_run"] == "2024-03-08T09:00:00-05:00"
        assert "pipeline_func" not in d

    def test_the_function_is_not_part_of_equality_or_repr(self) -> None:
        a = Schedule("etl", "interval", "60", pipeline_func=print)
        b = Schedule("etl", "interval", "60", pipeline_func=len)
        assert a == b
        assert "print" not in repr(a)
