"""The outcome rules: what a job's return value or exception means for its run."""

from __future__ import annotations

import uuid
from typing import Any
from unittest.mock import MagicMock

from flowyml_lite.executors.base import describe, from_exception, interpret, reference, result_of
from flowyml_lite.stores.base import MAX_RUN_TEXT


class Result:
    def __init__(self, success: Any, run_id: Any = None, error: Any = None) -> None:
        self.success = success
        self.run_id = run_id
        self.error = error


class CustomError(LookupError):
    pass


def module_level() -> None:
    pass


class TestReturnValues:
    def test_none_succeeds(self) -> None:
        assert interpret(None) == (True, None, None)

    def test_a_real_bool_success_decides(self) -> None:
        assert interpret(Result(True, "r1")) == (True, "r1", None)
        assert interpret(Result(False, "r2", "bad input")) == (False, "r2", "bad input")

    def test_a_failed_result_without_error_text_says_so(self) -> None:
        assert interpret(Result(False)) == (False, None, "the job returned success=False")

    def test_a_uuid_run_id_is_recorded_as_text(self) -> None:
        run_id = uuid.uuid4()
        assert interpret(Result(True, run_id)) == (True, str(run_id), None)

    def test_an_int_run_id_is_recorded_as_text(self) -> None:
        assert interpret(Result(True, 42))[1] == "42"

    def test_a_mock_succeeds_and_its_run_id_is_text(self) -> None:
        success, run_id, error = interpret(MagicMock())
        assert success is True and error is None
        assert isinstance(run_id, str) and "MagicMock" in run_id

    def test_a_success_that_is_not_a_bool_is_no_verdict(self) -> None:
        assert interpret(Result("yes"))[0] is True
        assert interpret(Result("no"))[0] is True  # a string is not a verdict, whatever it says
        assert interpret(Result(0))[0] is True
        assert interpret(Result(None))[0] is True

    def test_dicts_strings_and_objects_succeed(self) -> None:
        assert interpret({"success": False, "run_id": "x"}) == (True, None, None)
        assert interpret("failed") == (True, None, None)
        assert interpret(object()) == (True, None, None)

    def test_a_property_that_raises_counts_as_missing(self) -> None:
        class Broken:
            @property
            def success(self) -> bool:
                raise RuntimeError("no")

            run_id = "r"

        assert interpret(Broken()) == (True, "r", None)

    def test_a_run_id_whose_str_raises_falls_back_to_repr(self) -> None:
        class Odd:
            def __str__(self) -> str:
                raise ValueError("no str")

            def __repr__(self) -> str:
                return "<odd>"

        assert interpret(Result(True, Odd()))[1] == "<odd>"

    def test_attributes_and_texts_that_raise_a_base_exception_are_read_as_missing(self) -> None:
        class Hostile:
            @property
            def success(self) -> bool:
                raise KeyboardInterrupt

            @property
            def run_id(self) -> str:
                raise SystemExit(3)

        assert interpret(Hostile()) == (True, None, None)

    def test_result_of_keeps_the_value(self) -> None:
        value = Result(True, uuid.UUID(int=1))
        result = result_of(value)
        assert result.value is value and result.success and result.run_id == str(uuid.UUID(int=1))


class TestExceptions:
    def _raised(self, exc: BaseException) -> BaseException:
        try:
            raise exc
        except BaseException as caught:
            return caught

    def test_type_and_message(self) -> None:
        result = from_exception(self._raised(ValueError("bad value")))
        assert result.success is False
        assert result.error == "ValueError: bad value"
        assert result.exception_type == "ValueError"

    def test_an_empty_message_gives_the_type_alone(self) -> None:
        assert describe(TimeoutError()) == "TimeoutError"

    def test_the_full_traceback_is_kept(self) -> None:
        result = from_exception(self._raised(KeyError("k")))
        assert result.traceback is not None
        assert "Traceback (most recent call last)" in result.traceback
        assert "in _raised" in result.traceback and "KeyError: 'k'" in result.traceback

    def test_the_mro_names_allow_matching_a_parent_class(self) -> None:
        result = from_exception(self._raised(CustomError("x")))
        assert result.exception_types[0].endswith("CustomError")
        assert "builtins.LookupError" in result.exception_types
        assert "builtins.Exception" in result.exception_types
        assert "builtins.object" not in result.exception_types

    def test_an_exception_whose_texts_raise_still_gives_a_failed_result(self) -> None:
        class Unprintable(BaseException):
            def __str__(self) -> str:
                raise Unprintable()

            __repr__ = __str__

        result = from_exception(self._raised(Unprintable()))
        assert result.success is False
        assert result.error is not None and result.error.startswith("Unprintable")
        assert result.exception_type == "Unprintable"

    def test_a_huge_traceback_is_bounded(self) -> None:
        result = from_exception(self._raised(RuntimeError("m" * (3 * MAX_RUN_TEXT))))
        assert result.traceback is not None and len(result.traceback) <= MAX_RUN_TEXT
        assert result.error is not None and len(result.error) <= MAX_RUN_TEXT

    def test_a_chained_exception_shows_both(self) -> None:
        try:
            try:
                raise OSError("disk")
            except OSError as inner:
                raise RuntimeError("write failed") from inner
        except RuntimeError as exc:
            result = from_exception(exc)
        assert result.traceback is not None
        assert "OSError: disk" in result.traceback and "RuntimeError: write failed" in result.traceback


class TestReference:
    def test_a_module_level_function_has_one(self) -> None:
        assert reference(module_level) == f"{__name__}:module_level"

    def test_lambdas_nested_functions_and_bound_methods_have_none(self) -> None:
        def nested() -> None:
            pass

        assert reference(lambda: None) is None
        assert reference(nested) is None
        assert reference(Result(True).__init__) is None
