"""Finding the user's scheduler named on the command line: a typo is refused before the module runs,
and only a function that says it builds a scheduler is called."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Iterator, Optional, Set

import pytest

from flowyml_lite import PipelineScheduler
from flowyml_lite.apps import load_attribute, load_scheduler, names_defined_by, says_it_returns_a_scheduler
from flowyml_lite.errors import ConfigurationError, StoreError


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path for test modules; they are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def module(where: Path, name: str, source: str) -> str:
    (where / f"{name}.py").write_text(textwrap.dedent(source))
    return name


def defined(where: Path, source: str, name: str = "m") -> Optional[Set[str]]:
    return names_defined_by(module(where, name, source))


class TestNamesAModuleDefines:
    def test_every_top_level_binding_counts(self, modules: Path) -> None:
        names = defined(
            modules,
            """
            import os.path as osp, json
            from typing import Any as A
            a = b = 1
            c, (d, *e) = 1, (2, 3)
            f: int = 1
            g += 1
            for h in []: pass
            with open(__file__) as i: pass
            try:
                j = 1
            except Exception as k:
                pass
            if (l := 1):
                def m(): pass
            class N: pass
            async def o(): pass
            def p():
                global q
                q = 1
            """,
        )
        assert names is not None
        assert set("abcdefghijklmNopq") | {"osp", "json", "A"} <= names

    def test_names_local_to_functions_classes_and_lambdas_do_not(self, modules: Path) -> None:
        names = defined(
            modules,
            """
            def f():
                local = 1
            class C:
                attribute = 1
                def method(self):
                    inner = 1
            g = lambda x: x
            """,
        )
        assert names is not None and not {"local", "attribute", "inner", "x"} & names

    @pytest.mark.parametrize(
        "source",
        [
            "from os import *",
            "globals()['scheduler'] = 1",
            "setattr(__import__('sys').modules[__name__], 'scheduler', 1)",
            "exec('scheduler = 1')",
            "def __getattr__(name): return 1",
            "import sys\nsys.modules[__name__] = object()",
            "def broken(:",  # a syntax error
        ],
    )
    def test_unknown_when_the_source_cannot_tell(self, modules: Path, source: str) -> None:
        assert defined(modules, source) is None

    def test_unknown_for_a_package_and_a_module_of_a_package_not_imported_yet(self, modules: Path) -> None:
        package = modules / "pkg"
        package.mkdir()
        (package / "__init__.py").write_text("raise RuntimeError('the package must not run')\n")
        (package / "jobs.py").write_text("scheduler = 1\n")
        assert names_defined_by("pkg") is None
        assert names_defined_by("pkg.jobs") is None
        assert "pkg" not in sys.modules


class TestLoadAttribute:
    def test_a_name_the_module_does_not_define_is_refused_before_it_runs(self, modules: Path) -> None:
        module(modules, "ran", "open(__file__ + '.ran', 'w').close()\nscheduler = 1\n")
        said = r"defines no 'shceduler' \(did you mean ran:scheduler\?\)"
        with pytest.raises(ConfigurationError, match=said):
            load_attribute("ran:shceduler", "APP")
        assert not (modules / "ran.py.ran").exists()
        assert load_attribute("ran:scheduler", "APP") == 1

    def test_a_bad_spec_says_how_to_write_one(self) -> None:
        with pytest.raises(ConfigurationError, match="write module:attribute"):
            load_attribute("myjobs", "APP")


class TestLoadScheduler:
    def test_a_function_without_its_return_type_is_not_called(self, modules: Path) -> None:
        module(modules, "jobs", "calls = []\ndef job():\n    calls.append(1)\n")
        with pytest.raises(ConfigurationError, match=r"is a function, not a PipelineScheduler.*--factory"):
            load_scheduler("jobs:job", factory=False)
        assert sys.modules["jobs"].calls == []

    def test_a_factory_is_called_when_it_says_so_or_when_told(self, modules: Path) -> None:
        module(
            modules,
            "factories",
            """
            from flowyml_lite import PipelineScheduler, SchedulerConfig
            def typed() -> PipelineScheduler:
                return PipelineScheduler(SchedulerConfig(persist_schedules=False))
            def untyped():
                return typed()
            """,
        )
        assert isinstance(load_scheduler("factories:typed", factory=False), PipelineScheduler)
        assert isinstance(load_scheduler("factories:untyped", factory=True), PipelineScheduler)

    def test_a_factory_failing_on_the_store_keeps_its_error_and_any_other_is_named(
        self, modules: Path
    ) -> None:
        module(
            modules,
            "failing",
            """
            from flowyml_lite import PipelineScheduler
            from flowyml_lite.errors import StoreError
            def store_down() -> PipelineScheduler:
                raise StoreError("database is locked")
            def broken() -> PipelineScheduler:
                raise KeyError("SETTINGS")
            """,
        )
        with pytest.raises(StoreError, match="database is locked"):
            load_scheduler("failing:store_down", factory=False)
        with pytest.raises(ConfigurationError, match="calling it raised KeyError: 'SETTINGS'") as info:
            load_scheduler("failing:broken", factory=False)
        assert isinstance(info.value.__cause__, KeyError)

    @pytest.mark.parametrize(
        ("annotation", "says"),
        [("PipelineScheduler", True), ("'PipelineScheduler'", True), ("int", False), ("", False)],
    )
    def test_the_return_annotation_decides(self, annotation: str, says: bool) -> None:
        namespace: dict = {"PipelineScheduler": PipelineScheduler}
        arrow = f" -> {annotation}" if annotation else ""
        exec(f"def f(){arrow}: pass", namespace)
        assert says_it_returns_a_scheduler(namespace["f"]) is says
