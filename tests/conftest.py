"""Shared test setup: Hypothesis profiles and the addresses of the test servers.

scripts/test.sh starts Redis and PostgreSQL and exports FLOWYML_TEST_REDIS_URL and
FLOWYML_TEST_POSTGRES_URL. Without them the tests that need a server skip with the reason,
except when FLOWYML_TEST_REQUIRE_SERVICES=1 (set in CI), where a missing server is an error.
"""

from __future__ import annotations

import os

import pytest

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # Hypothesis is a test dependency, but a bare run of the other tests still works.
    pass
else:
    # Two shared cores: a slow example is not a failure, so no per-example deadline in CI.
    settings.register_profile(
        "ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
    )
    settings.register_profile("dev", deadline=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def _service_url(variable: str, what: str) -> str:
    url = os.environ.get(variable, "")
    if url:
        return url
    message = f"{variable} is not set: no {what} server (scripts/test.sh starts one when it can)"
    if os.environ.get("FLOWYML_TEST_REQUIRE_SERVICES") == "1" or os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The URL of a Redis server that tests may use (and flush), or skip without one."""
    return _service_url("FLOWYML_TEST_REDIS_URL", "Redis")


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The SQLAlchemy URL of an empty PostgreSQL database for tests, or skip without one."""
    return _service_url("FLOWYML_TEST_POSTGRES_URL", "PostgreSQL")
