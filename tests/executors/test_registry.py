"""The executors plugin kind: built-ins found by name without package metadata."""

from __future__ import annotations

import pytest

from flowyml_lite import plugins


@pytest.mark.parametrize(
    "name,cls",
    [("thread", "ThreadExecutor"), ("process", "ProcessExecutor"), ("async", "AsyncExecutor")],
)
def test_each_builtin_executor_loads_by_name(name: str, cls: str) -> None:
    factory = plugins.get("executors", name)
    assert factory.__name__ == cls
    executor = factory(max_workers=2)
    assert executor.name == name
    executor.shutdown()


def test_executors_is_a_plugin_kind() -> None:
    assert "executors" in plugins.KINDS
    assert {"thread", "process", "async"} <= set(plugins.available("executors"))
