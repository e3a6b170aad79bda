"""Schedules as users see them, and the validation of a definition before anything is stored."""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import date, datetime, timezone
from typing import Any, Dict
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowyml_lite.core.schedule import (
    MAX_RETRY_DELAY_SECONDS,
    OPTION_NAMES,
    Options,
    Schedule,
    definition_hash,
    interval_seconds,
    matches_retry_on,
    parse_options,
    qualified_name,
    retry_delay,
    shared_options_dict,
    should_retry,
    to_schedule,
    validate_context,
    validate_name,
    validate_options,
    validate_timezone,
)
from flowyml_lite.core.scheduler_config import SchedulerConfig
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


class FlakyError(ConnectionError):
    """A user's exception class: retry_on names it ``tests.core.test_schedule.FlakyError``."""


FLAKY = f"{__name__}.FlakyError"
LONDON = ZoneInfo("Europe/London")


def parse(**given: Any) -> Options:
    return parse_options(given, SchedulerConfig(persist_schedules=False))


class TestParseOptions:
    """``parse_options``: what the scheduler calls with a ``schedule_*`` call's keyword arguments."""

    def test_no_options_give_the_defaults(self) -> None:
        opts = parse()
        assert opts == Options()
        assert (opts.timeout_seconds, opts.retries, opts.retry_delay_seconds, opts.retry_backoff) == (
            None,
            0,
            10.0,
            2.0,
        )
        assert (opts.retry_on, opts.executor, opts.jitter_seconds) == (None, "thread", 0.0)
        assert (opts.start_date, opts.end_date) == (None, None)

    def test_every_option_is_popped_and_context_is_left_for_the_caller(self) -> None:
        given: Dict[str, Any] = {
            "misfire_grace_seconds": 5,
            "catchup": "all",
            "max_catchup": 3,
            "max_instances": 2,
            "timeout_seconds": 30,
            "retries": 3,
            "retry_delay_seconds": 1,
            "retry_backoff": 3,
            "retry_on": (TimeoutError, FlakyError),
            "executor": "process",
            "jitter_seconds": 15,
            "start_date": "2025-01-01T09:00:00+01:00",
            "end_date": datetime(2025, 6, 1, tzinfo=LONDON),
            "context": {"region": "eu"},
        }
        opts = parse_options(given, SchedulerConfig(persist_schedules=False))
        assert given == {"context": {"region": "eu"}}
        assert opts == Options(
            5.0,
            "all",
            3,
            2,
            timeout_seconds=30.0,
            retries=3,
            retry_delay_seconds=1.0,
            retry_backoff=3.0,
            retry_on=("builtins.TimeoutError", FLAKY),
            executor="process",
            jitter_seconds=15.0,
            start_date=datetime(2025, 1, 1, 8, tzinfo=timezone.utc),
            end_date=datetime(2025, 5, 31, 23, tzinfo=timezone.utc),
        )

    def test_missing_options_take_the_config_defaults(self) -> None:
        config = SchedulerConfig(
            persist_schedules=False,
            misfire_grace_seconds=5,
            catchup="skip",
            max_catchup=9,
            default_timeout_seconds=120,
            default_executor="process",
        )
        opts = parse_options({}, config)
        assert (opts.misfire_grace_seconds, opts.catchup, opts.max_catchup) == (5.0, "skip", 9)
        assert (opts.timeout_seconds, opts.executor) == (120.0, "process")
        assert parse_options({"retries": 1}, config).timeout_seconds == 120.0

    def test_an_explicit_option_wins_over_the_config_default(self) -> None:
        config = SchedulerConfig(persist_schedules=False, default_timeout_seconds=120)
        assert parse_options({"timeout_seconds": None}, config).timeout_seconds is None
        assert parse_options({"timeout_seconds": 5}, config).timeout_seconds == 5.0

    def test_unknown_options_are_named_beside_every_known_one(self) -> None:
        given = {"timeout": 5, "retry": 2, "context": {}}
        with pytest.raises(ScheduleError) as info:
            parse_options(given, SchedulerConfig(persist_schedules=False), name="etl")
        message = str(info.value)
        assert message.startswith(
            "unknown option(s) retry, timeout for 'etl' (for retry use retries=; for timeout use "
            "timeout_seconds=); the options are "
        )
        assert all(known in message for known in (*OPTION_NAMES, "context"))
        assert given == {"timeout": 5, "retry": 2, "context": {}}  # nothing popped from a refused call

    @pytest.mark.parametrize(
        ("given", "hint"),
        [
            ("misfire_grace_time", "for misfire_grace_time use misfire_grace_seconds="),
            ("coalesce", 'for coalesce use catchup= (coalesce with a misfire_grace_time is catchup="skip"'),
            ("args", "for args use functools.partial(func, *args, **kwargs) as the function"),
            ("max_instance", "did you mean max_instances?"),
            ("retry_delay", "did you mean retry_delay_seconds?"),
        ],
    )
    def test_a_peers_option_or_a_near_miss_says_what_was_meant(self, given: str, hint: str) -> None:
        with pytest.raises(ScheduleError, match=re.escape(hint)):
            parse_options({given: 1}, SchedulerConfig(persist_schedules=False))

    @pytest.mark.parametrize(
        ("option", "value", "message"),
        [
            ("timeout_seconds", 0, "timeout_seconds must be a finite number of seconds > 0, or None"),
            ("timeout_seconds", -1, "timeout_seconds must be a finite number of seconds > 0"),
            ("timeout_seconds", math.inf, "timeout_seconds must be a finite number of seconds > 0"),
            ("timeout_seconds", "30", "timeout_seconds must be a finite number"),
            ("timeout_seconds", True, "timeout_seconds must be a finite number"),
            ("retries", -1, "retries must be an integer >= 0"),
            ("retries", 1.0, "retries must be an integer >= 0"),
            ("retries", True, "retries must be an integer >= 0"),
            ("retry_delay_seconds", -1, "retry_delay_seconds must be a finite number of seconds >= 0"),
            ("retry_delay_seconds", math.nan, "retry_delay_seconds must be a finite number"),
            ("retry_delay_seconds", 31 * 86400, "retry_delay_seconds must be at most 2592000 (30 days)"),
            ("retry_backoff", 0.5, "retry_backoff must be a finite number >= 1"),
            ("retry_backoff", math.inf, "retry_backoff must be a finite number"),
            ("retry_backoff", None, "retry_backoff must be a finite number"),
            ("retry_on", (), "retry_on=() would retry no error"),
            ("retry_on", ValueError(), "retry_on must be an exception class"),
            ("retry_on", int, "retry_on must be an exception class"),
            ("retry_on", "NotABuiltinError", "retry_on: 'NotABuiltinError' is not a built-in exception"),
            ("retry_on", "my mod.Error", "is not a qualified class name"),
            ("retry_on", [ValueError, 3], "retry_on must be an exception class"),
            ("executor", "", "executor must be an executor's name such as 'thread' or 'process'"),
            ("executor", None, "executor must be an executor's name"),
            ("jitter_seconds", -0.5, "jitter_seconds must be a finite number of seconds >= 0"),
            ("jitter_seconds", math.inf, "jitter_seconds must be a finite number of seconds >= 0"),
            ("jitter_seconds", 1e300, "jitter_seconds must be at most 2592000 (30 days)"),
            ("max_catchup", 10**9, "max_catchup must be at most 10,000"),
            ("start_date", datetime(2025, 1, 1), "datetime(2025, 1, 1, 0, 0) has no time zone"),
            ("start_date", "2025-01-01T09:00", "'2025-01-01T09:00' has no time zone: pass an aware"),
            ("end_date", "next tuesday", "end_date must be an ISO 8601 date and time with an offset"),
            ("end_date", date(2025, 1, 1), "end_date must be an aware datetime or ISO 8601 text"),
            ("end_date", 1735689600, "end_date must be an aware datetime or ISO 8601 text"),
        ],
    )
    def test_a_bad_value_is_refused_with_a_message_naming_the_option(
        self, option: str, value: Any, message: str
    ) -> None:
        with pytest.raises(ScheduleError) as info:
            parse(**{option: value})
        assert message in str(info.value)

    def test_the_end_must_come_after_the_start(self) -> None:
        with pytest.raises(ScheduleError, match="end_date must be after start_date"):
            parse(start_date="2025-01-02T00:00:00Z", end_date="2025-01-01T00:00:00Z")
        with pytest.raises(ScheduleError, match="end_date must be after start_date"):
            parse(start_date="2025-01-01T00:00:00Z", end_date="2025-01-01T01:00:00+01:00")

    @pytest.mark.parametrize(
        "text",
        [
            "2025-01-01T08:00:00Z",
            "2025-01-01T08:00:00z",
            "2025-01-01T09:00:00+01:00",
            "2025-01-01 03:00-05:00",
        ],
    )
    def test_dates_are_instants_in_utc_from_iso_text_with_any_offset(self, text: str) -> None:
        assert parse(start_date=text).start_date == datetime(2025, 1, 1, 8, tzinfo=timezone.utc)

    def test_an_aware_datetime_in_any_zone_is_kept_as_the_same_instant_in_utc(self) -> None:
        start = datetime(2025, 7, 1, 9, tzinfo=LONDON)
        got = parse(start_date=start).start_date
        assert got == start and got is not None and got.tzinfo is timezone.utc

    def test_retry_on_takes_classes_or_qualified_names_and_stores_sorted_names(self) -> None:
        assert parse(retry_on=FlakyError).retry_on == (FLAKY,)
        assert parse(retry_on=[TimeoutError, FlakyError, "TimeoutError"]).retry_on == (
            "builtins.TimeoutError",
            FLAKY,
        )
        assert parse(retry_on=FLAKY) == parse(retry_on=(FlakyError,))
        assert parse(retry_on="requests.exceptions.ConnectionError").retry_on == (
            "requests.exceptions.ConnectionError",
        )
        assert parse(retry_on="app.jobs.run.<locals>.Boom").retry_on == ("app.jobs.run.<locals>.Boom",)

    def test_qualified_names_are_module_and_qualname(self) -> None:
        class Inner(Exception):
            pass

        assert qualified_name(ValueError) == "builtins.ValueError"
        assert qualified_name(Inner) == f"{__name__}.{Inner.__qualname__}"
        assert Inner.__qualname__.endswith(".<locals>.Inner")

    def test_numbers_are_stored_as_floats_and_minus_zero_as_zero(self) -> None:
        opts = parse(timeout_seconds=5, retry_delay_seconds=-0.0, retry_backoff=1, jitter_seconds=-0.0)
        assert (opts.timeout_seconds, opts.retry_delay_seconds, opts.retry_backoff) == (5.0, 0.0, 1.0)
        numbers = (opts.timeout_seconds, opts.retry_delay_seconds, opts.retry_backoff)
        assert all(type(v) is float for v in numbers)
        assert math.copysign(1, opts.retry_delay_seconds) == 1 and math.copysign(1, opts.jitter_seconds) == 1

    def test_equal_options_are_one_shared_frozen_instance(self) -> None:
        a = parse(timeout_seconds=30, retries=2, retry_on=FlakyError, start_date="2025-01-01T00:00:00Z")
        start = datetime(2025, 1, 1, tzinfo=LONDON)  # the same instant: London is on UTC in winter
        b = parse(timeout_seconds=30.0, retries=2, retry_on=FLAKY, start_date=start)
        assert a is b
        with pytest.raises(AttributeError):
            a.retries = 3  # type: ignore[misc]


class TestRetries:
    def test_the_delay_grows_by_the_backoff_after_each_failed_attempt(self) -> None:
        opts = parse(retries=4, retry_delay_seconds=10, retry_backoff=2)
        assert [retry_delay(opts, attempt) for attempt in (1, 2, 3, 4)] == [10.0, 20.0, 40.0, 80.0]

    def test_a_backoff_of_one_waits_the_same_every_time_and_zero_delay_never_waits(self) -> None:
        assert retry_delay(parse(retry_delay_seconds=3, retry_backoff=1), 50) == 3.0
        assert retry_delay(parse(retry_delay_seconds=0, retry_backoff=5), 50) == 0.0

    def test_the_delay_never_grows_past_thirty_days_even_after_many_attempts(self) -> None:
        opts = parse(retry_delay_seconds=60, retry_backoff=10)
        assert retry_delay(opts, 5) == 60 * 10**4
        assert retry_delay(opts, 20) == MAX_RETRY_DELAY_SECONDS == 30 * 86400
        assert retry_delay(opts, 10**6) == MAX_RETRY_DELAY_SECONDS

    @pytest.mark.parametrize("attempt", [0, -1, 1.0, True])
    def test_attempts_are_counted_from_one(self, attempt: Any) -> None:
        with pytest.raises(ValueError, match="attempt must be an integer >= 1"):
            retry_delay(Options(), attempt)

    def test_without_retry_on_every_error_is_worth_a_retry(self) -> None:
        assert matches_retry_on(parse(retries=1), ("builtins.KeyError", "builtins.LookupError"))

    def test_retry_on_matches_the_class_or_any_class_in_its_mro(self) -> None:
        opts = parse(retries=1, retry_on=ConnectionError)
        mro = tuple(qualified_name(c) for c in FlakyError.__mro__)
        assert matches_retry_on(opts, mro)  # FlakyError is a ConnectionError
        assert matches_retry_on(opts, ("builtins.ConnectionRefusedError", "builtins.ConnectionError"))
        assert not matches_retry_on(opts, ("builtins.ValueError", "builtins.Exception"))
        assert not matches_retry_on(opts, ())

    def test_should_retry_while_attempts_are_left_and_the_error_matches(self) -> None:
        opts = parse(retries=2, retry_on=FlakyError)
        assert should_retry(opts, 1, (FLAKY,)) and should_retry(opts, 2, (FLAKY,))
        assert not should_retry(opts, 3, (FLAKY,))  # the third attempt was the last
        assert not should_retry(opts, 1, ("builtins.ValueError",))
        assert not should_retry(Options(), 1, (FLAKY,))  # retries=0


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

    def test_a_zone_object_without_an_iana_name_is_a_schedule_error(self) -> None:
        with pytest.raises((ScheduleError, TimezoneError)):
            validate_timezone(timezone.utc, "zoneinfo")
        with pytest.raises(ScheduleError):
            validate_timezone(3, "zoneinfo")

    def test_a_zoneinfo_is_taken_by_its_name(self) -> None:
        assert validate_timezone(ZoneInfo("UTC"), "zoneinfo") == "UTC"


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

    def test_a_schedule_with_only_the_original_options_keeps_its_stored_hash(self) -> None:
        # The newer options at their defaults leave the stored form, and so the hash, as it was.
        config = SchedulerConfig(persist_schedules=False)
        for opts in (parse(), parse(timeout_seconds=None, retries=0, executor="thread", jitter_seconds=0)):
            assert opts.to_dict() == Options().to_dict() == {
                "misfire_grace_seconds": 60.0,
                "catchup": "latest",
                "max_catchup": 100,
                "max_instances": 1,
            }
            assert definition_hash("interval", "60", "UTC", opts, {}) == "431478376a8f059d8efa2a1d2001840c"
        assert parse_options({}, config) is validate_options(60, "latest", 100, 1)

    @pytest.mark.parametrize(
        "option",
        [
            {"timeout_seconds": 30},
            {"timeout_seconds": 31},
            {"retries": 1},
            {"retry_delay_seconds": 5},
            {"retry_backoff": 1},
            {"retry_on": TimeoutError},
            {"executor": "process"},
            {"jitter_seconds": 2},
            {"start_date": "2025-01-01T00:00:00Z"},
            {"end_date": "2030-01-01T00:00:00Z"},
        ],
    )
    def test_each_newer_option_is_part_of_the_definition(self, option: Dict[str, Any]) -> None:
        base = definition_hash("cron", "0 9 * * *", "UTC", parse(), {})
        assert definition_hash("cron", "0 9 * * *", "UTC", parse(**option), {}) != base

    def test_options_survive_a_json_round_trip_through_the_store(self) -> None:
        opts = parse(
            timeout_seconds=30,
            retries=3,
            retry_delay_seconds=1.5,
            retry_backoff=3,
            retry_on=(FlakyError, TimeoutError),
            executor="process",
            jitter_seconds=15,
            start_date="2025-01-01T09:00:00+01:00",
            end_date="2026-01-01T00:00:00Z",
        )
        stored = json.loads(json.dumps(opts.to_dict()))
        assert stored["start_date"] == "2025-01-01T08:00:00+00:00"
        assert stored["retry_on"] == ["builtins.TimeoutError", FLAKY]
        assert Options.from_dict(stored) == opts

    def test_equal_stored_dicts_give_one_shared_instance_but_types_and_signs_are_kept(self) -> None:
        stored = {"misfire_grace_seconds": 30.0, "catchup": "all", "max_catchup": 5, "max_instances": 2}
        assert Options.from_dict(stored) is Options.from_dict(dict(stored))
        as_int = Options.from_dict({**stored, "misfire_grace_seconds": 30})
        assert type(as_int.misfire_grace_seconds) is int
        assert type(Options.from_dict(stored).misfire_grace_seconds) is float
        zero, minus_zero = ({**stored, "misfire_grace_seconds": g} for g in (0.0, -0.0))
        assert math.copysign(1, Options.from_dict(zero).misfire_grace_seconds) == 1
        assert math.copysign(1, Options.from_dict(minus_zero).misfire_grace_seconds) == -1
        with_list = {**stored, "retry_on": ["builtins.TimeoutError"], "retries": 1}
        assert Options.from_dict(with_list).retry_on == ("builtins.TimeoutError",)

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

    def test_the_newer_options_appear_in_the_schedule_and_its_dict(self) -> None:
        opts = parse(
            timeout_seconds=30,
            retries=2,
            retry_delay_seconds=3,
            retry_backoff=1.5,
            retry_on=FlakyError,
            executor="process",
            jitter_seconds=5,
            start_date="2024-03-01T00:00:00Z",
            end_date="2024-12-01T00:00:00Z",
        )
        s = to_schedule(self.record(options=opts.to_dict()), None, self.localize)
        assert (s.timeout_seconds, s.retries, s.retry_delay_seconds, s.retry_backoff) == (30.0, 2, 3.0, 1.5)
        assert (s.retry_on, s.executor, s.jitter_seconds) == ((FLAKY,), "process", 5.0)
        d = s.to_dict()
        assert json.loads(json.dumps(d)) == d
        assert d["start_date"] == "2024-02-29T19:00:00-05:00"  # in the schedule's zone, like next_run
        assert d["end_date"] == "2024-11-30T19:00:00-05:00"
        assert (d["timeout_seconds"], d["retries"], d["retry_on"]) == (30.0, 2, [FLAKY])
        assert d["executor"] == "process"

    def test_a_schedule_stored_before_the_newer_options_shows_their_defaults(self) -> None:
        d = to_schedule(self.record(), None, self.localize).to_dict()
        assert (d["timeout_seconds"], d["retries"], d["retry_delay_seconds"], d["retry_backoff"]) == (
            None,
            0,
            10.0,
            2.0,
        )
        assert (d["retry_on"], d["executor"], d["jitter_seconds"], d["start_date"], d["end_date"]) == (
            None,
            "thread",
            0.0,
            None,
            None,
        )

    def test_the_function_is_not_part_of_equality_or_repr(self) -> None:
        a = Schedule("etl", "interval", "60", pipeline_func=print)
        b = Schedule("etl", "interval", "60", pipeline_func=len)
        assert a == b
        assert "print" not in repr(a)
