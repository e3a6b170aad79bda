"""The ``store`` fixture: every store implementation, so the contract suite runs against each.

Add a backend with one line in ``STORE_FACTORIES`` (a factory of a fresh, empty store).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Callable, Dict, Iterator

import pytest

from flowyml_lite.stores.base import Store
from flowyml_lite.stores.memory import MemoryStore
from flowyml_lite.stores.sqlite import SQLiteStore

STORE_FACTORIES: Dict[str, Callable[[pytest.FixtureRequest, Path], Store]] = {
    "memory": lambda request, tmp_path: MemoryStore(),
    "sqlite": lambda request, tmp_path: SQLiteStore(tmp_path / "store.db"),
    "sqlalchemy-sqlite": lambda request, tmp_path: _sqlalchemy(f"sqlite:///{tmp_path / 'store.db'}"),
    "sqlalchemy-postgresql": lambda request, tmp_path: _sqlalchemy_postgresql(request),
}


def _sqlalchemy(url: str, **options: object) -> Store:
    pytest.importorskip("sqlalchemy", reason="the sqlalchemy extra is not installed")
    from flowyml_lite_ext.sqlalchemy_store import SQLAlchemyStore

    return SQLAlchemyStore(url, **options)  # type: ignore[arg-type]


def _sqlalchemy_postgresql(request: pytest.FixtureRequest) -> Store:
    """A store in a new PostgreSQL schema of its own, dropped after the test."""
    url = request.getfixturevalue("postgres_url")
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    schema = f"test_{uuid.uuid4().hex[:16]}"
    store = _sqlalchemy(url, schema=schema)

    def drop() -> None:
        import sqlalchemy

        store.close()
        engine = sqlalchemy.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()

    request.addfinalizer(drop)
    return store


@pytest.fixture(params=sorted(STORE_FACTORIES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh, opened store of each implementation."""
    instance = STORE_FACTORIES[request.param](request, tmp_path)
    instance.open()
    yield instance
    instance.close()
