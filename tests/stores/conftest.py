"""The ``store`` fixture: every store implementation, so the contract suite runs against each.

Add a backend with one line in ``STORE_FACTORIES`` (a factory of a fresh, empty store).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Iterator

import pytest

from flowyml_lite.stores.base import Store
from flowyml_lite.stores.memory import MemoryStore
from flowyml_lite.stores.sqlite import SQLiteStore

STORE_FACTORIES: Dict[str, Callable[[pytest.FixtureRequest, Path], Store]] = {
    "memory": lambda request, tmp_path: MemoryStore(),
    "sqlite": lambda request, tmp_path: SQLiteStore(tmp_path / "store.db"),
}


@pytest.fixture(params=sorted(STORE_FACTORIES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh, opened store of each implementation."""
    instance = STORE_FACTORIES[request.param](request, tmp_path)
    instance.open()
    yield instance
    instance.close()
