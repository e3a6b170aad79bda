"""Fixtures of the extras' backends on real servers: a Redis lock and PostgreSQL schemas of their own.

No fakes: without ``FLOWYML_TEST_REDIS_URL`` / ``FLOWYML_TEST_POSTGRES_URL`` these tests skip with
the reason, except in CI (``CI`` true, or ``FLOWYML_TEST_REQUIRE_SERVICES=1``), where a missing
server fails them. Each test gets its own Redis key prefix and its own PostgreSQL schema, so runs
sharing a server do not see each other.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Iterator, Tuple

import pytest

_TRUE = ("1", "true", "yes", "on")


def _service_url(variable: str, what: str) -> str:
    url = os.environ.get(variable, "")
    if url:
        return url
    message = f"{variable} is not set: no {what} server (scripts/test.sh starts one when it can)"
    required = os.environ.get("FLOWYML_TEST_REQUIRE_SERVICES") == "1"
    if required or os.environ.get("CI", "").lower() in _TRUE:
        pytest.fail(f"{message}; CI must not skip it", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The URL of the test Redis server (overrides the root fixture to fail under CI=true too)."""
    pytest.importorskip("redis", reason="the redis extra is not installed")
    return _service_url("FLOWYML_TEST_REDIS_URL", "Redis")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The SQLAlchemy URL of the test PostgreSQL database (fails under CI=true when missing)."""
    pytest.importorskip("sqlalchemy", reason="the sqlalchemy extra is not installed")
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    return _service_url("FLOWYML_TEST_POSTGRES_URL", "PostgreSQL")


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    import redis

    prefix = f"flowyml_lite_test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Any]:
    """A plain redis-py client, to look at the keys the lock writes."""
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def redis_lock(redis_url: str, redis_prefix: str) -> Iterator[Any]:
    """A RedisLock on the test server, under this test's prefix."""
    from flowyml_lite_ext.redis_lock import RedisLock

    lock = RedisLock(redis_url, prefix=redis_prefix)
    yield lock
    lock.close()


def drop_schema(url: str, schema: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        engine.dispose()


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[Tuple[str, str]]:
    """(url, schema): a PostgreSQL schema name of this test's own, dropped afterwards."""
    schema = f"test_{uuid.uuid4().hex[:16]}"
    yield postgres_url, schema
    drop_schema(postgres_url, schema)


@pytest.fixture
def pg_store(pg_schema: Tuple[str, str]) -> Iterator[Any]:
    """An opened SQLAlchemyStore in this test's PostgreSQL schema."""
    from flowyml_lite_ext.sqlalchemy_store import SQLAlchemyStore

    store = SQLAlchemyStore(pg_schema[0], schema=pg_schema[1])
    store.open()
    yield store
    store.close()
