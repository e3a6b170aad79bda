"""English descriptions of cron expressions, one per syntax row."""

from __future__ import annotations

import pytest

from flowyml_lite.cron.explain import explain
from flowyml_lite.errors import CronError


class TestTimes:
    @pytest.mark.parametrize(
        ("expression", "text"),
        [
            ("* * * * *", "Every minute"),
            ("*/5 * * * *", "Every 5 minutes"),
            ("15 * * * *", "At minute 15 past every hour"),
            ("0,30 * * * *", "At minutes 0 and 30 past every hour"),
            ("10-20/5 * * * *", "Every 5 minutes from 10 through 20"),
            ("5/10 * * * *", "Every 10 minutes from minute 5"),
            ("0 9 * * *", "At 09:00"),
            ("0 9,17 * * *", "At 09:00 and 17:00"),
            ("0 */2 * * *", "At minute 0 past every 2nd hour"),
            ("*/15 9-17 * * *", "Every 15 minutes past every hour from 9 through 17"),
            ("0 8-18/2 * * *", "At minute 0 past every 2nd hour from 8 through 18"),
            ("0 22-2/2 * * *", "At minute 0 past every 2nd hour from 22 through 2"),
            ("* 9 * * *", "Every minute past hour 9"),
        ],
    )
    def test_minutes_and_hours(self, expression: str, text: str) -> None:
        assert explain(expression) == text

    @pytest.mark.parametrize(
        ("expression", "text"),
        [
            ("* * * * * *", "Every second"),
            ("* * * * * */10", "Every 10 seconds"),
            ("* * * * * 0,30", "At seconds 0 and 30 of every minute"),
            ("30 9 * * * 15", "At 09:30:15"),
            ("0 0 * * * 0", "At 00:00"),
        ],
    )
    def test_seconds(self, expression: str, text: str) -> None:
        assert explain(expression) == text


class TestDays:
    @pytest.mark.parametrize(
        ("expression", "text"),
        [
            ("0 9 * * 1-5", "At 09:00, Monday through Friday"),
            ("0 0 * * FRI-MON", "At 00:00, Friday through Monday"),
            ("0 0 * * 0,6", "At 00:00, on Sunday and Saturday"),
            ("0 0 * * 7", "At 00:00, on Sunday"),
            ("0 0 ? * MON", "At 00:00, on Monday"),
            ("0 0 * * 1/2", "At 00:00, every 2nd day of the week from Monday"),
            ("0 0 1 * *", "At 00:00, on day 1 of the month"),
            ("0 0 1-15 * *", "At 00:00, on days 1 through 15 of the month"),
            ("0 0 */2 * *", "At 00:00, on every 2nd day of the month"),
            ("0 0 5/10 * *", "At 00:00, on every 10th day of the month from day 5"),
            ("0 12 L * *", "At 12:00, on the last day of the month"),
            ("0 0 L-3 * *", "At 00:00, 3 days before the last day of the month"),
            ("0 0 L-1 * *", "At 00:00, 1 day before the last day of the month"),
            ("0 0 15W * *", "At 00:00, on the weekday nearest day 15 of the month"),
            ("0 0 LW * *", "At 00:00, on the last weekday of the month"),
            ("0 0 * * 5L", "At 00:00, on the last Friday of the month"),
            ("0 0 * * L5", "At 00:00, on the last Friday of the month"),
            ("0 0 * * 5#2", "At 00:00, on the second Friday of the month"),
            ("0 0 1,15,L * *", "At 00:00, on days 1 and 15 of the month and on the last day of the month"),
        ],
    )
    def test_day_of_month_and_day_of_week(self, expression: str, text: str) -> None:
        assert explain(expression) == text

    def test_restricted_day_fields_read_as_or(self) -> None:
        assert explain("0 0 13 * 5") == "At 00:00, on day 13 of the month or on Friday"

    def test_a_star_day_field_reads_as_and(self) -> None:
        assert explain("0 0 */2 * 1") == "At 00:00, on every 2nd day of the month, but only on Monday"
        assert explain("0 0 1-7 * */2") == (
            "At 00:00, on days 1 through 7 of the month, but only every 2nd day of the week")


class TestMonthsAndYears:
    @pytest.mark.parametrize(
        ("expression", "text"),
        [
            ("0 0 1 1 *", "At 00:00, on day 1 of the month, in January"),
            ("0 0 1 jan,JUL *", "At 00:00, on day 1 of the month, in January and July"),
            ("0 0 * JAN-MAR *", "At 00:00, from January through March"),
            ("0 0 * */3 *", "At 00:00, every 3rd month"),
            ("0 0 1 1 * 30 2025", "At 00:00:30, on day 1 of the month, in January, in 2025"),
            ("0 0 1 1 * 0 2025-2030", "At 00:00, on day 1 of the month, in January, from 2025 through 2030"),
            ("0 0 1 1 * 0 *", "At 00:00, on day 1 of the month, in January"),
        ],
    )
    def test_months_and_years(self, expression: str, text: str) -> None:
        assert explain(expression) == text


class TestMacrosAndHashes:
    @pytest.mark.parametrize(
        ("expression", "text"),
        [
            ("@yearly", "At 00:00, on day 1 of the month, in January"),
            ("@monthly", "At 00:00, on day 1 of the month"),
            ("@weekly", "At 00:00, on Sunday"),
            ("@daily", "At 00:00"),
            ("@midnight", "At 00:00"),
            ("@hourly", "At minute 0 past every hour"),
        ],
    )
    def test_macros_read_as_their_expansion(self, expression: str, text: str) -> None:
        assert explain(expression) == text

    def test_h_without_a_key_reads_as_hashed(self) -> None:
        assert explain("H H * * *") == "At a hashed minute past a hashed hour"
        assert explain("H/5 * * * *") == "Every 5 minutes (hashed offset)"
        assert explain("H(0-29)/10 H(1-5) * * *") == (
            "Every 10 minutes from 0 through 29 (hashed offset) past a hashed hour from 1 through 5")

    def test_h_with_a_key_shows_its_values(self) -> None:
        # croniter 7 gives minute 18, hour 9 and a minute phase of 3 for H/5 with the key "abc".
        assert explain("H H * * *", hash_key="abc") == "At 09:18"
        assert explain("H/5 * * * *", hash_key="abc") == "Every 5 minutes from minute 3"


class TestErrors:
    def test_invalid_text_raises_cron_error(self) -> None:
        with pytest.raises(CronError, match="out of range"):
            explain("0 9 * * 8")


class TestSingleValueRanges:
    def test_a_range_of_one_value_reads_as_that_value(self) -> None:
        assert explain("0 0 5-5 * *") == "At 00:00, on day 5 of the month"
        assert explain("0 0 * * FRI-FRI") == "At 00:00, on Friday"
