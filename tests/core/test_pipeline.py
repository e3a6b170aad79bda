"""Pipeline, @step and PipelineResult: binding by parameter name, outcomes, malformed pipelines."""

from __future__ import annotations

import logging
import re
from datetime import timezone
from typing import Any, Callable, Dict, List, Tuple

import pytest

from flowyml_lite.core.pipeline import Pipeline, PipelineResult, Step, StepResult, step
from flowyml_lite.errors import PipelineError


class TestGuideQuickStart:
    def test_the_quick_start_pipeline_runs_and_exposes_its_output(self) -> None:
        @step(outputs=["data"])
        def fetch_data() -> Dict[str, int]:
            return {"rows": 3}

        pipeline = Pipeline("daily_etl")
        pipeline.add_step(fetch_data)
        result = pipeline.run()

        assert result.success and bool(result)
        assert result.pipeline_name == "daily_etl"
        assert result.outputs == {"data": {"rows": 3}}
        assert [s.name for s in result.steps] == ["fetch_data"]
        assert result.error is None

    def test_the_guide_lambda_form_returns_a_result_the_scheduler_can_judge(self) -> None:
        pipeline = Pipeline("daily_etl").add_step(step(outputs=["data"])(lambda: 1))
        pipeline_func: Callable[[], PipelineResult] = lambda: pipeline.run()  # noqa: E731 - the guide's
        assert isinstance(pipeline_func(), PipelineResult)


class TestStepDecorator:
    def test_bare_decorator_names_the_step_after_the_function_and_declares_no_outputs(self) -> None:
        @step
        def clean() -> int:
            return 1

        assert isinstance(clean, Step)
        assert clean.name == "clean" and clean.outputs == ()

    def test_decorated_function_stays_callable_and_keeps_its_metadata(self) -> None:
        @step(outputs=["total"])
        def add(a: int, b: int = 2) -> int:
            """Add two numbers."""
            return a + b

        assert add(1) == 3
        assert add.__name__ == "add" and add.__doc__ == "Add two numbers."

    def test_empty_call_form_works_like_the_bare_form(self) -> None:
        @step()
        def noop() -> None:
            return None

        assert noop.name == "noop"

    def test_name_option_overrides_the_function_name(self) -> None:
        @step(outputs=["x"], name="load")
        def f() -> int:
            return 1

        assert f.name == "load"
        assert Pipeline("p").add_step(f).run().steps[0].name == "load"

    def test_a_single_string_is_accepted_as_one_output(self) -> None:
        s = step(outputs="data")(lambda: 1)
        assert s.outputs == ("data",)

    @pytest.mark.parametrize("outputs", [["a b"], [""], ["1x"], [3]])
    def test_an_output_that_cannot_be_a_parameter_name_is_rejected(self, outputs: List[Any]) -> None:
        with pytest.raises(PipelineError, match="valid parameter name"):
            step(outputs=outputs)(lambda: 1)

    def test_an_output_declared_twice_by_one_step_is_rejected(self) -> None:
        with pytest.raises(PipelineError, match="declares output 'a' twice"):
            step(outputs=["a", "a"])(lambda: (1, 2))

    def test_a_non_callable_is_not_a_step(self) -> None:
        with pytest.raises(TypeError, match="callable"):
            Step(42)  # type: ignore[arg-type]


class TestBinding:
    def test_parameters_receive_earlier_outputs_by_name(self) -> None:
        @step(outputs=["raw"])
        def extract() -> List[int]:
            return [1, 2, 3]

        @step(outputs=["doubled"])
        def transform(raw: List[int]) -> List[int]:
            return [x * 2 for x in raw]

        @step(outputs=["total"])
        def load(doubled: List[int], raw: List[int]) -> int:
            return sum(doubled) + len(raw)

        result = Pipeline("etl").add_step(extract).add_step(transform).add_step(load).run()
        assert result.outputs == {"raw": [1, 2, 3], "doubled": [2, 4, 6], "total": 15}

    def test_run_inputs_bind_parameters_too(self) -> None:
        @step(outputs=["greeting"])
        def greet(who: str) -> str:
            return f"hello {who}"

        assert Pipeline("p").add_step(greet).run(who="ada").outputs["greeting"] == "hello ada"

    def test_an_unbound_parameter_with_a_default_takes_the_default(self) -> None:
        @step(outputs=["n"])
        def count(start: int = 10) -> int:
            return start + 1

        assert Pipeline("p").add_step(count).run().outputs["n"] == 11
        assert Pipeline("p").add_step(count).run(start=1).outputs["n"] == 2

    def test_positional_only_and_keyword_only_parameters_are_bound(self) -> None:
        def first() -> Tuple[int, int]:
            return 2, 5

        def combine(a: int, /, *, b: int) -> int:
            return a * b

        pipeline = Pipeline("p").add_step(Step(first, outputs=["a", "b"]))
        pipeline.add_step(Step(combine, outputs=["c"]))
        assert pipeline.run().outputs["c"] == 10

    def test_star_args_and_star_kwargs_receive_nothing(self) -> None:
        seen: List[Any] = []

        @step(outputs=["x"])
        def make() -> int:
            return 1

        @step
        def collect(x: int, *args: Any, **kwargs: Any) -> None:
            seen.append((x, args, kwargs))

        Pipeline("p").add_step(make).add_step(collect).run()
        assert seen == [(1, (), {})]

    def test_a_plain_function_can_be_added_as_a_step_without_outputs(self) -> None:
        calls: List[str] = []
        result = Pipeline("p").add_step(lambda: calls.append("ran")).run()
        assert calls == ["ran"] and result.success and result.outputs == {}


class TestOutputs:
    def test_a_step_without_outputs_has_its_return_value_kept_in_its_step_result_only(self) -> None:
        @step
        def report() -> str:
            return "done"

        result = Pipeline("p").add_step(report).run()
        assert result.outputs == {}
        assert result.steps[0].output == "done"

    def test_several_outputs_come_from_a_tuple_or_list_in_order(self) -> None:
        @step(outputs=["train", "test"])
        def split() -> List[str]:
            return ["T", "t"]

        assert Pipeline("p").add_step(split).run().outputs == {"train": "T", "test": "t"}

    def test_several_outputs_come_from_a_dict_by_key(self) -> None:
        @step(outputs=["a", "b"])
        def both() -> Dict[str, int]:
            return {"b": 2, "a": 1, "extra": 3}

        assert Pipeline("p").add_step(both).run().outputs == {"a": 1, "b": 2}

    def test_a_single_output_takes_a_tuple_return_value_whole(self) -> None:
        @step(outputs=["pair"])
        def pair() -> Tuple[int, int]:
            return 1, 2

        assert Pipeline("p").add_step(pair).run().outputs == {"pair": (1, 2)}

    @pytest.mark.parametrize(
        ("value", "problem"),
        [((1, 2, 3), "it returned 3 values"), (5, "it returned int"), ({"a": 1}, "lacks 'b'")],
    )
    def test_a_return_value_that_does_not_fit_several_outputs_fails_the_step(
        self, value: Any, problem: str
    ) -> None:
        result = Pipeline("p").add_step(step(outputs=["a", "b"], name="two")(lambda: value)).run()
        assert not result.success
        assert result.error is not None and problem in result.error
        assert "'two'" in result.error


class TestResult:
    def test_a_result_carries_a_fresh_uuid4_hex_run_id_per_run(self) -> None:
        pipeline = Pipeline("p").add_step(lambda: None)
        first, second = pipeline.run(), pipeline.run()
        assert re.fullmatch(r"[0-9a-f]{32}", first.run_id)
        assert first.run_id[12] == "4"  # uuid version 4
        assert first.run_id != second.run_id

    def test_times_are_aware_utc_and_ordered(self) -> None:
        result = Pipeline("p").add_step(lambda: None).run()
        assert result.started_at.tzinfo is timezone.utc
        assert result.completed_at.tzinfo is timezone.utc
        assert result.started_at <= result.completed_at
        assert result.duration_seconds >= 0
        assert all(isinstance(s, StepResult) and s.duration_seconds >= 0 for s in result.steps)

    def test_step_lookup_by_name(self) -> None:
        result = Pipeline("p").add_step(step(name="only")(lambda: 7)).run()
        assert result.step("only").output == 7
        with pytest.raises(KeyError):
            result.step("absent")

    def test_to_dict_is_json_friendly(self) -> None:
        import json

        result = Pipeline("p").add_step(step(outputs=["obj"])(lambda: object())).run()
        data = result.to_dict()
        json.dumps(data)
        assert data["outputs"] == ["obj"] and data["run_id"] == result.run_id


class TestFailures:
    def _pipeline(self, calls: List[str]) -> Pipeline:
        @step(outputs=["a"])
        def first() -> int:
            calls.append("first")
            return 1

        @step(outputs=["b"])
        def second(a: int) -> int:
            calls.append("second")
            raise RuntimeError("boom")

        @step
        def third(b: int) -> None:
            calls.append("third")

        return Pipeline("p").add_step(first).add_step(second).add_step(third)

    def test_a_failing_step_stops_the_run_without_raising(self) -> None:
        calls: List[str] = []
        result = self._pipeline(calls).run()
        assert calls == ["first", "second"]
        assert not result.success and not result
        assert [(s.name, s.success) for s in result.steps] == [("first", True), ("second", False)]
        assert result.outputs == {"a": 1}

    def test_the_error_names_the_step_and_the_exception(self) -> None:
        result = self._pipeline([]).run()
        assert result.error == "step 'second' failed: RuntimeError: boom"
        assert result.steps[1].error == "RuntimeError: boom"

    def test_failures_are_logged_at_warning_with_the_traceback(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.DEBUG, logger="flowyml_lite.pipeline"):
            self._pipeline([]).run()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and warnings[0].exc_info is not None
        assert "second" in warnings[0].getMessage()
        assert any(r.levelno == logging.DEBUG and "first" in r.getMessage() for r in caplog.records)

    def test_keyboard_interrupt_is_not_swallowed(self) -> None:
        def interrupted() -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            Pipeline("p").add_step(interrupted).run()


class TestMalformedPipelines:
    def test_an_empty_pipeline_cannot_run(self) -> None:
        with pytest.raises(PipelineError, match="has no steps"):
            Pipeline("empty").run()

    def test_a_missing_parameter_names_the_step_the_parameter_and_what_is_available(self) -> None:
        @step(outputs=["raw"])
        def extract() -> int:
            return 1

        @step
        def train(data: int) -> None:
            raise AssertionError("must not run")

        pipeline = Pipeline("p").add_step(extract).add_step(train)
        with pytest.raises(PipelineError) as info:
            pipeline.run()
        message = str(info.value)
        assert "'train'" in message and "'data'" in message and "'raw'" in message

    def test_a_malformed_pipeline_runs_no_step_at_all(self) -> None:
        calls: List[str] = []

        @step
        def first() -> None:
            calls.append("first")

        @step
        def needs(missing: int) -> None:
            calls.append("needs")

        with pytest.raises(PipelineError):
            Pipeline("p").add_step(first).add_step(needs).run()
        assert calls == []

    def test_an_output_of_a_later_step_does_not_satisfy_an_earlier_parameter(self) -> None:
        @step
        def consumer(x: int) -> None:
            return None

        @step(outputs=["x"])
        def producer() -> int:
            return 1

        with pytest.raises(PipelineError, match="'consumer' needs parameter 'x'"):
            Pipeline("p").add_step(consumer).add_step(producer).run()

    def test_a_duplicate_output_is_rejected_when_the_step_is_added(self) -> None:
        pipeline = Pipeline("p").add_step(step(outputs=["data"], name="a")(lambda: 1))
        with pytest.raises(PipelineError, match="'data' of step 'b' is already an output of step 'a'"):
            pipeline.add_step(step(outputs=["data"], name="b")(lambda: 2))
        assert [s.name for s in pipeline.steps] == ["a"]

    def test_a_duplicate_step_name_is_rejected_when_added(self) -> None:
        @step
        def same() -> None:
            return None

        with pytest.raises(PipelineError, match="already has a step named 'same'"):
            Pipeline("p").add_step(same).add_step(same)

    def test_an_input_that_is_also_an_output_is_ambiguous(self) -> None:
        pipeline = Pipeline("p").add_step(step(outputs=["data"], name="a")(lambda: 1))
        with pytest.raises(PipelineError, match="input 'data' is also the output of step 'a'"):
            pipeline.run(data=5)

    def test_an_input_no_step_takes_is_reported_as_a_likely_typo(self) -> None:
        @step
        def greet(who: str) -> None:
            return None

        with pytest.raises(PipelineError, match=r"no step takes input 'whom'.*who"):
            Pipeline("p").add_step(greet).run(whom="x")

    @pytest.mark.parametrize("name", ["", None, 3])
    def test_a_pipeline_needs_a_non_empty_name(self, name: Any) -> None:
        with pytest.raises(PipelineError, match="non-empty string"):
            Pipeline(name)

    def test_steps_given_to_the_constructor_are_validated_like_added_ones(self) -> None:
        a = step(outputs=["x"], name="a")(lambda: 1)
        b = step(outputs=["x"], name="b")(lambda: 2)
        with pytest.raises(PipelineError, match="already an output"):
            Pipeline("p", [a, b])
