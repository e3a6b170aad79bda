"""Fixtures of the executor tests (the helpers are in executor_helpers.py)."""

from __future__ import annotations

from typing import Iterator

import pytest


@pytest.fixture(autouse=True, scope="module")
def _logging_as_before() -> Iterator[None]:
    """Each module's runs install output capture; leave logging and the streams as they were after."""
    yield
    from flowyml_lite.executors import capture

    capture.uninstall()
