"""SchedulerConfig: defaults, validation with fixable messages, the environment, display."""

from __future__ import annotations

import dataclasses
import pathlib
import subprocess
import sys
from typing import Any, Dict

import pytest

from flowyml_lite import plugins
from flowyml_lite.core.scheduler_config import SchedulerConfig
from flowyml_lite.cron.native import NativeEngine
from flowyml_lite.errors import ConfigurationError
from flowyml_lite.timezones import ZoneinfoProvider


@pytest.fixture
def extras_stand_ins(monkeypatch: pytest.MonkeyPatch) -> None:
    """"croniter" and "pytz" as installed, whether or not their extras are (the no-extras CI run)."""
    monkeypatch.setitem(plugins._registry["cron"], "croniter", NativeEngine)
    monkeypatch.setitem(plugins._registry["timezones"], "pytz", ZoneinfoProvider)


class TestDefaults:
    def test_defaults_match_the_documented_values(self) -> None:
        c = SchedulerConfig()
        assert (c.persist_schedules, c.db_path, c.distributed, c.lock_backend) == (
            True,
            ".flowyml_scheduler.db",
            False,
            "file",
        )
        assert (c.redis_url, c.timezone, c.max_concurrent_runs, c.store, c.store_url) == (
            None,
            "UTC",
            10,
            None,
            None,
        )
        assert (c.cron_engine, c.timezone_provider) == ("native", "zoneinfo")
        assert (c.catchup, c.max_catchup) == ("latest", 100)
        assert (c.misfire_grace_seconds, c.heartbeat_seconds, c.node_timeout_seconds) == (60.0, 5.0, 30.0)
        assert (c.shutdown_timeout_seconds, c.lock_dir, c.node_id) == (30.0, None, None)
        assert c.lock_ttl_seconds == 60.0
        assert c.sqlite_synchronous == "normal"
        assert (c.default_timeout_seconds, c.default_executor) == (None, "thread")

    def test_history_is_kept_90_days_and_at_most_10000_runs_per_schedule(self) -> None:
        c = SchedulerConfig()
        assert (c.history_retention_days, c.history_max_runs) == (90.0, 10_000)

    @pytest.mark.parametrize(("days", "runs"), [(None, None), (0, 0), (0.0, 0)])
    def test_none_or_zero_turns_each_history_limit_off(self, days: Any, runs: Any) -> None:
        c = SchedulerConfig(history_retention_days=days, history_max_runs=runs)
        assert (c.history_retention_days, c.history_max_runs) == (None, None)

    def test_an_infinite_retention_keeps_runs_whatever_their_age(self) -> None:
        assert SchedulerConfig(history_retention_days=float("inf")).history_retention_days is None

    def test_integral_retention_days_are_stored_as_floats(self) -> None:
        c = SchedulerConfig(history_retention_days=7)
        assert isinstance(c.history_retention_days, float) and c.history_retention_days == 7.0

    def test_the_guide_examples_construct(self) -> None:
        persisted = SchedulerConfig(persist_schedules=True, db_path="/path/to/scheduler.db")
        assert persisted.db_path == "/path/to/scheduler.db"
        distributed = SchedulerConfig(distributed=True, lock_backend="redis", redis_url="redis://localhost:6379/0")
        assert distributed.redis_url == "redis://localhost:6379/0"

    def test_the_store_defaults_to_sqlite_when_persisting_and_memory_otherwise(self) -> None:
        assert SchedulerConfig().resolved_store() == "sqlite"
        assert SchedulerConfig(persist_schedules=False).resolved_store() == "memory"
        instance = object()
        assert SchedulerConfig(store=instance).resolved_store() is instance
        assert SchedulerConfig(persist_schedules=False, store="sqlalchemy").resolved_store() == "sqlalchemy"

    def test_the_lock_directory_defaults_to_one_beside_the_database(self) -> None:
        assert SchedulerConfig(db_path="/var/lib/x.db").resolved_lock_dir() == "/var/lib/x.db.locks"
        assert SchedulerConfig(lock_dir="/run/locks").resolved_lock_dir() == "/run/locks"

    def test_paths_may_be_given_as_path_objects(self) -> None:
        c = SchedulerConfig(db_path=pathlib.Path("/tmp/s.db"), lock_dir=pathlib.Path("/tmp/l"))  # type: ignore[arg-type]
        assert c.db_path == "/tmp/s.db" and c.lock_dir == "/tmp/l"

    def test_integral_seconds_are_stored_as_floats(self) -> None:
        c = SchedulerConfig(misfire_grace_seconds=5)
        assert isinstance(c.misfire_grace_seconds, float) and c.misfire_grace_seconds == 5.0

    def test_replace_revalidates(self) -> None:
        with pytest.raises(ConfigurationError):
            dataclasses.replace(SchedulerConfig(), max_concurrent_runs=0)


class TestValidation:
    @pytest.mark.parametrize(
        ("field", "value", "fix"),
        [
            ("max_concurrent_runs", 0, "integer >= 1"),
            ("max_concurrent_runs", 2.5, "integer >= 1"),
            ("max_concurrent_runs", True, "integer >= 1"),
            ("max_catchup", 0, "integer >= 1"),
            ("catchup", "sometimes", "'latest', 'skip', 'all'"),
            ("persist_schedules", "yes", "True or False"),
            ("distributed", 1, "True or False"),
            ("db_path", "", "non-empty string"),
            ("timezone", "  ", "non-empty string"),
            ("lock_backend", None, "non-empty string"),
            ("redis_url", 5, "non-empty string"),
            ("store", "", "non-empty string"),
            ("misfire_grace_seconds", -1, "seconds >= 0"),
            ("misfire_grace_seconds", float("nan"), "seconds >= 0"),
            ("shutdown_timeout_seconds", float("inf"), "finite number of seconds >= 0"),
            ("heartbeat_seconds", float("inf"), "finite number of seconds > 0"),
            ("heartbeat_seconds", 0, "seconds > 0"),
            ("shutdown_timeout_seconds", "10", "seconds >= 0"),
            ("node_id", "", "non-empty string"),
            ("sqlite_synchronous", "off", "'normal'"),
            ("sqlite_synchronous", None, "'full'"),
            ("lock_ttl_seconds", 0, "finite number of seconds > 0"),
            ("lock_ttl_seconds", float("inf"), "finite number of seconds > 0"),
            ("lock_ttl_seconds", "60", "finite number of seconds > 0"),
            ("history_retention_days", -1, "days >= 0, or None"),
            ("history_retention_days", "30", "days >= 0, or None"),
            ("history_retention_days", float("nan"), "days >= 0, or None"),
            ("history_retention_days", True, "days >= 0, or None"),
            ("history_max_runs", -1, "integer >= 0, or None"),
            ("history_max_runs", 2.5, "integer >= 0, or None"),
            ("history_max_runs", True, "integer >= 0, or None"),
            ("default_timeout_seconds", 0, "finite number of seconds > 0, or None"),
            ("default_timeout_seconds", -5, "finite number of seconds > 0, or None"),
            ("default_timeout_seconds", float("inf"), "finite number of seconds > 0, or None"),
            ("default_timeout_seconds", float("nan"), "finite number of seconds > 0, or None"),
            ("default_timeout_seconds", "30", "finite number of seconds > 0, or None"),
            ("default_timeout_seconds", True, "finite number of seconds > 0, or None"),
            ("default_executor", "", "non-empty string"),
            ("default_executor", None, "non-empty string"),
        ],
    )
    def test_a_bad_value_names_the_field_and_the_fix(self, field: str, value: Any, fix: str) -> None:
        with pytest.raises(ConfigurationError) as info:
            SchedulerConfig(**{field: value})
        assert f"SchedulerConfig.{field}=" in str(info.value)
        assert fix in str(info.value)

    def test_redis_locks_without_a_url_say_how_to_give_one(self) -> None:
        with pytest.raises(ConfigurationError, match=r"redis_url.*FLOWYML_SCHEDULER_REDIS_URL"):
            SchedulerConfig(distributed=True, lock_backend="redis")

    @pytest.mark.parametrize("distributed", [True, False])
    def test_a_misspelt_lock_backend_is_refused_at_once_naming_the_close_one(self, distributed: bool) -> None:
        with pytest.raises(ConfigurationError, match=r"lock_backend='reddis'.*did you mean 'redis'"):
            SchedulerConfig(distributed=distributed, lock_backend="reddis")

    def test_a_node_timeout_not_longer_than_the_heartbeat_is_rejected(self) -> None:
        with pytest.raises(ConfigurationError, match=r"node_timeout_seconds.*greater than heartbeat_seconds"):
            SchedulerConfig(heartbeat_seconds=10, node_timeout_seconds=10)

    def test_an_infinite_misfire_grace_is_refused_as_every_declaration_would_refuse_it(self) -> None:
        with pytest.raises(ConfigurationError, match=r"misfire_grace_seconds=inf.*finite.*a year"):
            SchedulerConfig(misfire_grace_seconds=float("inf"))

    @pytest.mark.parametrize(
        ("url", "said"),
        [
            ("redis://localhost:6379/0", "PostgreSQL or SQLite URLs, not 'redis'"),
            ("mysql://u:secret@h/db", "PostgreSQL or SQLite URLs, not 'mysql'"),
            ("jobs.db", "is not a database URL"),
        ],
    )
    def test_a_store_url_the_built_in_store_cannot_use_is_refused_before_any_install_hint(
        self, url: str, said: str
    ) -> None:
        with pytest.raises(ConfigurationError, match=said) as info:
            SchedulerConfig(store_url=url)
        assert "secret" not in str(info.value)

    def test_a_store_plugin_reads_its_own_urls(self) -> None:
        config = SchedulerConfig(store="mystore", store_url="redis://localhost/0")
        assert config.store_url == "redis://localhost/0"

    def test_a_store_instance_is_accepted_as_is(self) -> None:
        store = object()
        assert SchedulerConfig(store=store).store is store

    def test_configuration_errors_are_value_errors(self) -> None:
        with pytest.raises(ValueError):
            SchedulerConfig(catchup="never")


class TestBackendsAreCheckedWhenTheConfigIsMade:
    """A typo in a zone or engine name fails at ``SchedulerConfig``, not at the first schedule."""

    def test_an_unknown_default_zone_is_refused_with_close_names(self) -> None:
        with pytest.raises(ConfigurationError) as info:
            SchedulerConfig(timezone="Europe/Londn")
        assert "SchedulerConfig.timezone='Europe/Londn'" in str(info.value)
        assert "Europe/London" in str(info.value)

    def test_an_unknown_cron_engine_is_refused_with_the_available_ones(self) -> None:
        with pytest.raises(ConfigurationError) as info:
            SchedulerConfig(cron_engine="cronitre")
        assert "SchedulerConfig.cron_engine='cronitre'" in str(info.value)
        assert "native" in str(info.value)

    def test_an_unknown_zone_provider_is_refused(self) -> None:
        with pytest.raises(ConfigurationError, match=r"timezone_provider='tzlocal'.*zoneinfo"):
            SchedulerConfig(timezone_provider="tzlocal")

    def test_a_known_engine_whose_extra_is_missing_stays_an_import_error_with_the_pip_command(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from flowyml_lite import plugins

        monkeypatch.setitem(plugins._registry["cron"], "croniter", "flowyml_lite_ext.no_such_module:X")
        with pytest.raises(ImportError) as info:
            SchedulerConfig(cron_engine="croniter")
        assert "SchedulerConfig.cron_engine='croniter'" in str(info.value)
        assert "pip install 'flowyml-lite[croniter]'" in str(info.value)

    @pytest.mark.usefixtures("extras_stand_ins")
    def test_installed_engines_providers_and_zones_are_accepted(self) -> None:
        c = SchedulerConfig(cron_engine="croniter", timezone_provider="pytz", timezone="Asia/Kolkata")
        assert (c.cron_engine, c.timezone_provider, c.timezone) == ("croniter", "pytz", "Asia/Kolkata")

    def test_from_the_environment_the_error_names_the_variable(self) -> None:
        with pytest.raises(ConfigurationError) as info:
            SchedulerConfig.from_env({"FLOWYML_SCHEDULER_TIMEZONE": "Mars/Olympus"})
        assert "environment variable FLOWYML_SCHEDULER_TIMEZONE='Mars/Olympus'" in str(info.value)
        with pytest.raises(ConfigurationError, match="FLOWYML_SCHEDULER_CRON_ENGINE='nope'"):
            SchedulerConfig.from_env({"FLOWYML_SCHEDULER_CRON_ENGINE": "nope"})

    def test_the_real_extras_are_accepted_where_installed(self) -> None:
        pytest.importorskip("croniter")
        pytest.importorskip("pytz")
        c = SchedulerConfig(cron_engine="croniter", timezone_provider="pytz", timezone="Asia/Kolkata")
        assert (c.cron_engine, c.timezone_provider) == ("croniter", "pytz")

    @pytest.mark.usefixtures("extras_stand_ins")
    def test_a_zone_from_the_environment_is_looked_up_with_the_provider_given_as_an_argument(self) -> None:
        c = SchedulerConfig.from_env({"FLOWYML_SCHEDULER_TIMEZONE": "Europe/Paris"}, timezone_provider="pytz")
        assert (c.timezone, c.timezone_provider) == ("Europe/Paris", "pytz")


class TestRunDefaults:
    def test_a_default_timeout_is_stored_as_float_seconds(self) -> None:
        c = SchedulerConfig(default_timeout_seconds=90)
        assert c.default_timeout_seconds == 90.0 and isinstance(c.default_timeout_seconds, float)

    def test_the_default_timeout_and_executor_are_read_from_the_environment(self) -> None:
        env = {
            "FLOWYML_SCHEDULER_DEFAULT_TIMEOUT_SECONDS": "2.5",
            "FLOWYML_SCHEDULER_DEFAULT_EXECUTOR": "process",
        }
        c = SchedulerConfig.from_env(env)
        assert (c.default_timeout_seconds, c.default_executor) == (2.5, "process")

    @pytest.mark.parametrize("raw", ["", "none", "None"])
    def test_an_empty_or_none_default_timeout_means_no_limit(self, raw: str) -> None:
        env = {"FLOWYML_SCHEDULER_DEFAULT_TIMEOUT_SECONDS": raw}
        assert SchedulerConfig.from_env(env).default_timeout_seconds is None

    @pytest.mark.parametrize(("raw", "message"), [("0", "> 0, or None"), ("soon", "is not a number")])
    def test_a_bad_default_timeout_in_the_environment_names_it(self, raw: str, message: str) -> None:
        with pytest.raises(ConfigurationError) as info:
            SchedulerConfig.from_env({"FLOWYML_SCHEDULER_DEFAULT_TIMEOUT_SECONDS": raw})
        assert "FLOWYML_SCHEDULER_DEFAULT_TIMEOUT_SECONDS" in str(info.value) and message in str(info.value)


class TestFromEnv:
    def test_an_empty_environment_gives_the_defaults(self) -> None:
        assert SchedulerConfig.from_env({}) == SchedulerConfig()

    @pytest.mark.usefixtures("extras_stand_ins")
    def test_every_field_is_read_from_its_upper_case_variable(self) -> None:
        env = {
            "FLOWYML_SCHEDULER_PERSIST_SCHEDULES": "false",
            "FLOWYML_SCHEDULER_DB_PATH": "/data/s.db",
            "FLOWYML_SCHEDULER_DISTRIBUTED": "on",
            "FLOWYML_SCHEDULER_LOCK_BACKEND": "redis",
            "FLOWYML_SCHEDULER_REDIS_URL": "redis://r:6379/1",
            "FLOWYML_SCHEDULER_TIMEZONE": "Europe/Paris",
            "FLOWYML_SCHEDULER_MAX_CONCURRENT_RUNS": "4",
            "FLOWYML_SCHEDULER_STORE": "sqlalchemy",
            "FLOWYML_SCHEDULER_STORE_URL": "postgresql://u@h/db",
            "FLOWYML_SCHEDULER_CRON_ENGINE": "croniter",
            "FLOWYML_SCHEDULER_TIMEZONE_PROVIDER": "pytz",
            "FLOWYML_SCHEDULER_MISFIRE_GRACE_SECONDS": "1.5",
            "FLOWYML_SCHEDULER_CATCHUP": "all",
            "FLOWYML_SCHEDULER_MAX_CATCHUP": "7",
            "FLOWYML_SCHEDULER_HEARTBEAT_SECONDS": "2",
            "FLOWYML_SCHEDULER_NODE_TIMEOUT_SECONDS": "9",
            "FLOWYML_SCHEDULER_SHUTDOWN_TIMEOUT_SECONDS": "3",
            "FLOWYML_SCHEDULER_LOCK_DIR": "/run/l",
            "FLOWYML_SCHEDULER_NODE_ID": "node-a",
            "FLOWYML_SCHEDULER_HISTORY_RETENTION_DAYS": "7.5",
            "FLOWYML_SCHEDULER_HISTORY_MAX_RUNS": "250",
            "FLOWYML_SCHEDULER_LOCK_TTL_SECONDS": "12.5",
            "FLOWYML_SCHEDULER_SQLITE_SYNCHRONOUS": "full",
            "FLOWYML_SCHEDULER_DEFAULT_TIMEOUT_SECONDS": "600",
            "FLOWYML_SCHEDULER_DEFAULT_EXECUTOR": "process",
        }
        c = SchedulerConfig.from_env(env)
        assert c == SchedulerConfig(
            persist_schedules=False,
            db_path="/data/s.db",
            distributed=True,
            lock_backend="redis",
            redis_url="redis://r:6379/1",
            timezone="Europe/Paris",
            max_concurrent_runs=4,
            store="sqlalchemy",
            store_url="postgresql://u@h/db",
            cron_engine="croniter",
            timezone_provider="pytz",
            misfire_grace_seconds=1.5,
            catchup="all",
            max_catchup=7,
            heartbeat_seconds=2.0,
            node_timeout_seconds=9.0,
            shutdown_timeout_seconds=3.0,
            lock_dir="/run/l",
            node_id="node-a",
            history_retention_days=7.5,
            history_max_runs=250,
            lock_ttl_seconds=12.5,
            sqlite_synchronous="full",
            default_timeout_seconds=600.0,
            default_executor="process",
        )

    def test_the_guides_lower_case_names_are_read(self) -> None:
        env = {
            "flowyml_SCHEDULER_PERSIST": "false",
            "flowyml_SCHEDULER_DB_PATH": "/tmp/guide.db",
            "flowyml_SCHEDULER_DISTRIBUTED": "true",
            "flowyml_SCHEDULER_REDIS_URL": "redis://localhost:6379/0",
            "flowyml_SCHEDULER_TIMEZONE": "Asia/Tokyo",
        }
        c = SchedulerConfig.from_env(env)
        assert not c.persist_schedules and c.distributed
        assert (c.db_path, c.timezone) == ("/tmp/guide.db", "Asia/Tokyo")
        assert c.redis_url == "redis://localhost:6379/0"

    @pytest.mark.parametrize("raw", ["", "  ", "none", "None", "NONE", "0"])
    def test_an_empty_none_or_zero_history_limit_turns_it_off(self, raw: str) -> None:
        env = {"FLOWYML_SCHEDULER_HISTORY_RETENTION_DAYS": raw, "FLOWYML_SCHEDULER_HISTORY_MAX_RUNS": raw}
        c = SchedulerConfig.from_env(env)
        assert (c.history_retention_days, c.history_max_runs) == (None, None)

    def test_the_history_limits_are_read_from_the_lower_case_spelling_too(self) -> None:
        env = {"flowyml_SCHEDULER_HISTORY_RETENTION_DAYS": "30", "flowyml_SCHEDULER_HISTORY_MAX_RUNS": "none"}
        c = SchedulerConfig.from_env(env)
        assert (c.history_retention_days, c.history_max_runs) == (30.0, None)

    def test_an_empty_upper_case_history_limit_wins_over_a_lower_case_value(self) -> None:
        env = {"FLOWYML_SCHEDULER_HISTORY_MAX_RUNS": "", "flowyml_SCHEDULER_HISTORY_MAX_RUNS": "50"}
        assert SchedulerConfig.from_env(env).history_max_runs is None

    @pytest.mark.parametrize(
        ("variable", "raw", "message"),
        [
            ("FLOWYML_SCHEDULER_HISTORY_MAX_RUNS", "lots", "is not an integer"),
            ("FLOWYML_SCHEDULER_HISTORY_MAX_RUNS", "-5", "integer >= 0, or None"),
            ("FLOWYML_SCHEDULER_HISTORY_RETENTION_DAYS", "90d", "is not a number"),
            ("flowyml_SCHEDULER_HISTORY_RETENTION_DAYS", "-1", "days >= 0, or None"),
        ],
    )
    def test_a_bad_history_limit_names_the_variable_and_the_fix(
        self, variable: str, raw: str, message: str
    ) -> None:
        with pytest.raises(ConfigurationError) as info:
            SchedulerConfig.from_env({variable: raw})
        assert f"{variable}={raw!r}" in str(info.value) and message in str(info.value)

    def test_upper_case_wins_over_the_lower_case_spelling(self) -> None:
        env = {"flowyml_SCHEDULER_DB_PATH": "/lower.db", "FLOWYML_SCHEDULER_DB_PATH": "/upper.db"}
        assert SchedulerConfig.from_env(env).db_path == "/upper.db"

    def test_flowyml_persist_and_max_concurrent_spellings_are_aliases(self) -> None:
        env = {"FLOWYML_SCHEDULER_PERSIST": "0", "FLOWYML_SCHEDULER_MAX_CONCURRENT": "3"}
        c = SchedulerConfig.from_env(env)
        assert c.persist_schedules is False and c.max_concurrent_runs == 3

    @pytest.mark.parametrize(
        ("raw", "expected"),
        [("true", True), ("TRUE", True), ("1", True), ("Yes", True), ("on", True),
         ("false", False), ("False", False), ("0", False), ("NO", False), ("off", False)],
    )
    def test_booleans_accept_the_usual_spellings_in_any_case(self, raw: str, expected: bool) -> None:
        assert SchedulerConfig.from_env({"FLOWYML_SCHEDULER_DISTRIBUTED": raw}).distributed is expected

    @pytest.mark.parametrize(
        ("variable", "raw"),
        [
            ("FLOWYML_SCHEDULER_DISTRIBUTED", "maybe"),
            ("FLOWYML_SCHEDULER_MAX_CONCURRENT_RUNS", "ten"),
            ("FLOWYML_SCHEDULER_MISFIRE_GRACE_SECONDS", "1m"),
            ("flowyml_SCHEDULER_PERSIST", "y"),
        ],
    )
    def test_an_unparsable_value_names_the_variable_and_the_value(self, variable: str, raw: str) -> None:
        with pytest.raises(ConfigurationError) as info:
            SchedulerConfig.from_env({variable: raw})
        assert variable in str(info.value) and repr(raw) in str(info.value)

    def test_an_out_of_range_value_names_the_variable_too(self) -> None:
        with pytest.raises(ConfigurationError, match=r"FLOWYML_SCHEDULER_MAX_CONCURRENT_RUNS='0'.*>= 1"):
            SchedulerConfig.from_env({"FLOWYML_SCHEDULER_MAX_CONCURRENT_RUNS": "0"})

    def test_empty_values_count_as_unset(self) -> None:
        env = {"FLOWYML_SCHEDULER_DB_PATH": "", "FLOWYML_SCHEDULER_REDIS_URL": "  "}
        assert SchedulerConfig.from_env(env) == SchedulerConfig()

    def test_overrides_win_over_the_environment(self) -> None:
        c = SchedulerConfig.from_env({"FLOWYML_SCHEDULER_DB_PATH": "/env.db"}, db_path="/arg.db")
        assert c.db_path == "/arg.db"

    def test_an_override_of_an_unknown_field_is_an_error(self) -> None:
        with pytest.raises(ConfigurationError, match="no field check_interval"):
            SchedulerConfig.from_env({}, check_interval=10)

    def test_an_override_skips_parsing_of_a_broken_variable_for_that_field(self) -> None:
        c = SchedulerConfig.from_env({"FLOWYML_SCHEDULER_MAX_CONCURRENT_RUNS": "x"}, max_concurrent_runs=2)
        assert c.max_concurrent_runs == 2

    def test_the_process_environment_is_the_default_source(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FLOWYML_SCHEDULER_TIMEZONE", "America/New_York")
        assert SchedulerConfig.from_env().timezone == "America/New_York"

    def test_a_redis_backend_from_the_environment_needs_a_url_from_it_too(self) -> None:
        with pytest.raises(ConfigurationError, match="REDIS_URL"):
            SchedulerConfig.from_env({"FLOWYML_SCHEDULER_LOCK_BACKEND": "redis"})

    def test_an_empty_setting_is_ignored_with_a_warning(self, caplog: pytest.LogCaptureFixture) -> None:
        """A secret that did not render: an empty store URL must not pass unnoticed as a local file."""
        env = {"FLOWYML_SCHEDULER_STORE_URL": "", "FLOWYML_SCHEDULER_HISTORY_MAX_RUNS": ""}
        c = SchedulerConfig.from_env(env)
        assert c.store_url is None and c.history_max_runs is None
        said = "FLOWYML_SCHEDULER_STORE_URL is set but empty: ignored (store_url keeps its default)"
        assert said in caplog.text
        assert "HISTORY_MAX_RUNS is set but empty" not in caplog.text  # empty turns that limit off

    def test_a_misspelled_variable_is_warned_of(self, caplog: pytest.LogCaptureFixture) -> None:
        env = {"FLOWYML_SCHEDULER_LOCK_BACKEN": "redis", "FLOWYML_SCHEDULER_API_TOKEN": "t"}
        c = SchedulerConfig.from_env(env)
        assert c.lock_backend == "file"
        assert "FLOWYML_SCHEDULER_LOCK_BACKEN is not a scheduler setting" in caplog.text
        assert "did you mean FLOWYML_SCHEDULER_LOCK_BACKEND?" in caplog.text
        assert "API_TOKEN" not in caplog.text  # read by the HTTP server: not a typo

    def test_a_redis_url_without_the_redis_lock_is_warned_of(self, caplog: pytest.LogCaptureFixture) -> None:
        SchedulerConfig.from_env({"FLOWYML_SCHEDULER_REDIS_URL": "redis://r:6379/0"})
        assert "Redis is not used" in caplog.text and "LOCK_BACKEND=redis" in caplog.text

    def test_a_store_url_alone_names_the_database_to_use(self) -> None:
        c = SchedulerConfig.from_env({"FLOWYML_SCHEDULER_STORE_URL": "postgresql://u@h/db"})
        assert c.resolved_store() == "sqlalchemy"
        assert SchedulerConfig().resolved_store() == "sqlite"

    def test_a_store_url_with_a_store_that_does_not_read_it_is_refused(self) -> None:
        with pytest.raises(ConfigurationError, match="store='sqlalchemy'"):
            SchedulerConfig(store="sqlite", store_url="postgresql://u@h/db")


class TestDisplay:
    def test_to_dict_lists_every_field(self) -> None:
        data = SchedulerConfig().to_dict()
        assert list(data) == [f.name for f in dataclasses.fields(SchedulerConfig)]
        assert data["db_path"] == ".flowyml_scheduler.db"

    @pytest.mark.parametrize(
        ("url", "shown"),
        [
            ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
            ("redis://user:p@ss@host/0", "redis://user:***@host/0"),
            ("redis://host:6379/0", "redis://host:6379/0"),
            ("rediss://user@host", "rediss://user@host"),
        ],
    )
    def test_passwords_in_urls_are_masked(self, url: str, shown: str) -> None:
        c = SchedulerConfig(lock_backend="redis", redis_url=url, store="mystore", store_url=url)
        data: Dict[str, Any] = c.to_dict()
        assert data["redis_url"] == shown and data["store_url"] == shown
        assert ("s3cret" not in repr(c)) and ("p@ss" not in repr(c))

    def test_a_store_instance_is_shown_by_its_class_name(self) -> None:
        class MyStore:
            pass

        assert SchedulerConfig(store=MyStore()).to_dict()["store"] == "MyStore"


class TestLightImport:
    def test_importing_the_config_loads_neither_sqlite3_nor_threading(self) -> None:
        code = (
            "import sys; import flowyml_lite.core.scheduler_config; "
            "print(sorted(m for m in ('sqlite3', 'threading', 'http.server') if m in sys.modules))"
        )
        out = subprocess.run(
            [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(_ROOT)!r}); {code}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert "sqlite3" not in out and "http.server" not in out


_ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_a_db_path_in_the_home_directory_is_expanded_as_a_shell_would(
    monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert SchedulerConfig(db_path="~/jobs.db").db_path == str(tmp_path / "jobs.db")
    assert SchedulerConfig(db_path="jobs~1.db").db_path == "jobs~1.db"
