"""Declarations: a checked definition's hash is the same whether worked out or remembered."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict

import pytest

from flowyml_lite import PipelineScheduler
from flowyml_lite.core import declarations
from flowyml_lite.core.declarations import define
from flowyml_lite.core.schedule import definition_hash
from flowyml_lite.core.scheduler_config import SchedulerConfig


def job() -> None:
    pass


def accept(func: Any, opts: Any) -> None:
    pass


def declared(value: str, name: str = "etl", **options: Any) -> Any:
    return define(SchedulerConfig(), name, job, "interval", value, "UTC", dict(options), accept)


def expected(definition: Any, context: Dict[str, Any]) -> str:
    record = definition.record
    return definition_hash(
        record.schedule_type, record.schedule_value, record.timezone, definition.options, context
    )


class TestDefinitionHash:
    def test_schedules_sharing_a_definition_share_its_hash_whatever_their_names(self) -> None:
        a, b = declared("60", "a"), declared("60", "b")
        assert a.record.definition_hash == b.record.definition_hash == expected(a, {})

    def test_other_options_other_value_or_a_context_give_another_hash(self) -> None:
        plain = declared("60")
        retried = declared("60", retries=2)
        other = declared("61")
        with_context = declared("60", context={"region": "eu"})
        hashes = {d.record.definition_hash for d in (plain, retried, other, with_context)}
        assert len(hashes) == 4
        assert retried.record.definition_hash == expected(retried, {})
        assert with_context.record.definition_hash == expected(with_context, {"region": "eu"})

    def test_the_remembered_hashes_stay_bounded_and_right(self) -> None:
        for i in range(declarations._DIGESTS_KEPT + 10):
            d = declared(str(60 + i))
            assert d.record.definition_hash == expected(d, {})
        assert len(declarations._DIGESTS) <= declarations._DIGESTS_KEPT

    def test_equal_options_given_in_two_calls_share_one_remembered_hash(self) -> None:
        declarations._DIGESTS.clear()
        first, second = declared("60", "a", retries=2), declared("60", "b", retries=2)
        assert first.record.definition_hash == second.record.definition_hash == expected(first, {})
        assert len(declarations._DIGESTS) == 1


class TestOptionsShared:
    """New schedules with equal options keep one options dict, so each fire finds it parsed."""

    @pytest.mark.parametrize("persist", [False, True], ids=["memory", "sqlite"])
    def test_new_schedules_with_equal_options_share_one_dict(self, tmp_path: Path, persist: bool) -> None:
        config = SchedulerConfig(persist_schedules=persist, db_path=str(tmp_path / "s.db"))
        scheduler = PipelineScheduler(config)
        at = datetime.now(timezone.utc) + timedelta(hours=1)
        for i in range(3):
            scheduler.schedule_once(f"same{i}", job, at=at, retries=2)
        scheduler.schedule_once("other", job, at=at, retries=3)
        records = scheduler._table.records  # private: the records the claims read at each fire
        assert len({id(records[f"same{i}"].options) for i in range(3)}) == 1
        assert records["other"].options is not records["same0"].options
        assert records["same0"].options["retries"] == 2 and records["other"].options["retries"] == 3
        assert scheduler.store.get_schedule("same1").options == records["same1"].options


class TestSixFieldCron:
    @pytest.mark.parametrize("expression", ["0 0 * * * *", "30 9 * * 1-5 */1"])
    def test_a_sixth_field_matching_every_second_is_warned_of(
        self, expression: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        define(SchedulerConfig(), "hourly-in-quartz", job, "cron", expression, "UTC", {}, accept)
        assert "fires every second of each matching minute" in caplog.text
        assert "Quartz and Spring put seconds first" in caplog.text

    @pytest.mark.parametrize("expression", ["0 0 * * *", "0 0 * * * 0", "0 0 * * * 0,30", "* * * * *"])
    def test_other_expressions_are_not(self, expression: str, caplog: pytest.LogCaptureFixture) -> None:
        define(SchedulerConfig(), "etl", job, "cron", expression, "UTC", {}, accept)
        assert "every second" not in caplog.text
