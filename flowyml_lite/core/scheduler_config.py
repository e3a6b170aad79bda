"""``SchedulerConfig``: every setting of the scheduler, validated when made, readable from the environment."""

from __future__ import annotations

import difflib
import logging
import math
import os
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from ..errors import ConfigurationError

logger = logging.getLogger("flowyml_lite.config")

__all__ = ["ENV_PREFIX", "SchedulerConfig"]

ENV_PREFIX = "FLOWYML_SCHEDULER_"
# The user guide spells the prefix in lower case; the upper-case spelling wins when both are set.
_GUIDE_PREFIX = "flowyml_SCHEDULER_"
#: Variables of the prefix read elsewhere than SchedulerConfig (the HTTP API's token).
_OTHER_VARIABLES = ("API_TOKEN",)
# Other names the same setting goes by: the guide's and flowyml 2.2.1's.
_ALIASES: Dict[str, Tuple[str, ...]] = {
    "persist_schedules": ("PERSIST",),
    "max_concurrent_runs": ("MAX_CONCURRENT",),
}
_CATCHUP_POLICIES = ("latest", "skip", "all")
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


@dataclass
class SchedulerConfig:
    """Settings of a ``PipelineScheduler``; invalid values raise ``ConfigurationError`` at once.

    Named backends are checked here too: an unknown ``timezone``, ``cron_engine`` or
    ``timezone_provider`` fails when the config is made (a known one whose extra is missing raises
    ``PluginNotInstalledError`` with its pip command), not at the first schedule.

    Run defaults, for schedules declared without the option: ``default_timeout_seconds`` (None = no
    limit; ``FLOWYML_SCHEDULER_DEFAULT_TIMEOUT_SECONDS``, where an empty value or ``none`` means None)
    and ``default_executor`` ("thread"; ``FLOWYML_SCHEDULER_DEFAULT_EXECUTOR``). Whether the executor
    exists is checked when a schedule uses it.
    """

    persist_schedules: bool = True
    db_path: str = ".flowyml_scheduler.db"
    #: The SQLite store's fsync policy: "normal" (at checkpoints; the last second of commits may be
    #: undone by a power loss) or "full" (at every commit: power-loss durable, one fsync per write).
    sqlite_synchronous: str = "normal"
    distributed: bool = False
    lock_backend: str = "file"
    redis_url: Optional[str] = None
    #: Zone of schedules declared with ``timezone=None``; an unknown name fails here, with close names.
    timezone: str = "UTC"
    max_concurrent_runs: int = 10
    #: A store backend name ("memory", "sqlite", "sqlalchemy"...) or instance; None = sqlite if
    #: persist_schedules else memory.
    store: Any = None
    store_url: Optional[str] = None
    #: The cron engine ("native", "croniter" or a registered plugin) and the zone provider
    #: ("zoneinfo", "pytz"...): checked here, so a typo or a missing extra fails at once.
    cron_engine: str = "native"
    timezone_provider: str = "zoneinfo"
    misfire_grace_seconds: float = 60.0
    catchup: str = "latest"
    max_catchup: int = 100
    heartbeat_seconds: float = 5.0
    node_timeout_seconds: float = 30.0
    shutdown_timeout_seconds: float = 30.0
    #: Lifetime of the lock an expiring backend (Redis) holds around each run; renewed every third
    #: of it while the run goes on, so it only runs out when the holder dies or loses the backend.
    lock_ttl_seconds: float = 60.0
    #: Call ``gc.collect(); gc.freeze()`` in ``start()``: the objects alive then (schedules, their
    #: triggers) are never scanned again, which cuts the loop's worst pauses. Affects the whole process.
    gc_freeze: bool = False
    #: Put off Python's automatic garbage collection while the loop claims and starts a burst of
    #: 100 fires or more (one second at most; collection resumes right after), and its full
    #: collections while schedules are declared in bulk (until start()). Affects the whole process.
    gc_pause_in_bursts: bool = True
    #: Claim each instant's fires in the half second before it, so that at the instant only their
    #: start is left (the store's transaction is done). A pause or removal in this process always
    #: stops a fire claimed so; one made by another process stops it if this one has seen it (it
    #: looks every second) by the instant. False: claim each fire at its instant.
    claim_ahead: bool = True
    #: Directory of the file lock's files; None = ``<db_path>.locks`` next to the database.
    lock_dir: Optional[str] = None
    #: This process's name in the store's node table; None = generated from host and pid.
    node_id: Optional[str] = None
    #: Finished runs that fired (and finished) longer ago than this are deleted from history; the
    #: newest run of each schedule always stays. None or 0 = keep runs whatever their age.
    history_retention_days: Optional[float] = 90.0
    #: Most runs kept in each schedule's history (older finished ones are deleted). None or 0 = no cap.
    history_max_runs: Optional[int] = 10_000
    #: Timeout of schedules declared without ``timeout_seconds=``: a finite number of seconds > 0,
    #: or None (no limit). A run past it is recorded ``timed_out``; a process run is killed, a
    #: thread run cannot be (it is abandoned and stops counting toward ``max_instances``).
    default_timeout_seconds: Optional[float] = None
    #: Executor of schedules declared without ``executor=``: "thread" (a pool in this process),
    #: "process" (a child process per run) or a plugin's name; ``async def`` jobs use the event loop.
    default_executor: str = "thread"

    def __post_init__(self) -> None:
        for name in ("db_path", "lock_dir"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
            if isinstance(value, str) and value.startswith("~"):
                value = os.path.expanduser(value)  # "~/jobs.db" means the home directory, as in a shell
            setattr(self, name, value)
        for f in fields(self):
            value = getattr(self, f.name)
            problem = _VALIDATORS[f.name](value)
            if problem:
                raise ConfigurationError(f"SchedulerConfig.{f.name}={value!r}: {problem}")
            if f.name in _FLOAT_FIELDS:
                setattr(self, f.name, float(value))
        # One spelling for "off", so code and display can test for None.
        if not self.history_max_runs:
            self.history_max_runs = None
        days = self.history_retention_days
        self.history_retention_days = float(days) if days and not math.isinf(days) else None
        if self.store_url and isinstance(self.store, str) and self.store in ("sqlite", "memory"):
            raise ConfigurationError(
                f"SchedulerConfig.store_url is set but store={self.store!r} does not read it: "
                "set store='sqlalchemy' (or leave store unset) to use that database, or drop store_url"
            )
        if self.store_url and self.resolved_store() in _SQLALCHEMY_STORES:
            problem = _sqlalchemy_url_problem(self.store_url)
            if problem:
                shown = _mask_password(self.store_url)
                raise ConfigurationError(f"SchedulerConfig.store_url={shown!r}: {problem}")
        if self.lock_backend not in ("file", "redis"):  # a plugin's name: said now, not once distributed
            from ..plugins import available

            known = sorted(available("locks"))
            if self.lock_backend not in known:
                close = difflib.get_close_matches(str(self.lock_backend), known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigurationError(
                    f"SchedulerConfig.lock_backend={self.lock_backend!r} names no lock backend{hint}; "
                    f"available: {', '.join(known)}"
                )
        if self.lock_backend == "redis" and not self.redis_url:
            raise ConfigurationError(
                "SchedulerConfig.lock_backend='redis' needs a Redis URL: set redis_url "
                f"(or the {ENV_PREFIX}REDIS_URL environment variable), e.g. redis://localhost:6379/0"
            )
        if self.default_timeout_seconds is not None:
            self.default_timeout_seconds = float(self.default_timeout_seconds)
        for name in _BACKEND_FIELDS:
            found = _backend_problem(self, name)
            if found:
                raise found[0](f"SchedulerConfig.{name}={getattr(self, name)!r}: {found[1]}")
        if self.node_timeout_seconds <= self.heartbeat_seconds:
            raise ConfigurationError(
                f"SchedulerConfig.node_timeout_seconds={self.node_timeout_seconds!r} must be greater "
                f"than heartbeat_seconds={self.heartbeat_seconds!r} (3 heartbeats or more is safe), "
                "or live nodes are taken for dead between two heartbeats"
            )

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **overrides: Any) -> SchedulerConfig:
        """A config from ``FLOWYML_SCHEDULER_<FIELD>`` variables (default ``os.environ``), then ``overrides``.

        Also read: the guide's lower-case ``flowyml_SCHEDULER_*`` spelling and ``..._PERSIST``
        (persist_schedules). Booleans take true/false/1/0/yes/no/on/off; empty values count as unset,
        except for the history limits, where an empty value or ``none`` turns the limit off.
        """
        env = os.environ if environ is None else environ
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigurationError(
                f"SchedulerConfig has no field {', '.join(unknown)}; "
                f"the fields are {', '.join(sorted(known))}"
            )
        values: Dict[str, Any] = {}
        variables: Dict[str, Tuple[str, str]] = {}
        for name in sorted(known - set(overrides)):
            found = _lookup(env, name)
            if found is None:
                continue
            variable, raw = found
            value = _parse(name, variable, raw)
            problem = _VALIDATORS[name](value)
            if problem:
                raise ConfigurationError(f"environment variable {variable}={raw!r}: {problem}")
            values[name] = value
            if name in _BACKEND_FIELDS:
                variables[name] = (variable, raw)
        values.update(overrides)
        _warn_unread(env, values)
        for name, (variable, raw) in variables.items():
            # Named by the variable, not the field: that is what the user has to fix.
            bad = _backend_problem(_Backends(**{**_BACKEND_DEFAULTS, **values}), name)
            if bad:
                raise bad[0](f"environment variable {variable}={raw!r}: {bad[1]}")
        return cls(**values)

    def resolved_store(self) -> Any:
        """The store to use: ``store`` if set; else "sqlalchemy" when ``store_url`` is set (a URL
        given alone names the database to use), "sqlite" when persisting, else "memory"."""
        if self.store is not None:
            return self.store
        if self.store_url:
            return "sqlalchemy"
        return "sqlite" if self.persist_schedules else "memory"

    def resolved_lock_dir(self) -> str:
        """The file lock's directory: ``lock_dir`` if set, else ``<db_path>.locks`` beside the database."""
        return self.lock_dir if self.lock_dir is not None else self.db_path + ".locks"

    def to_dict(self) -> Dict[str, Any]:
        """The settings for display: passwords in URLs masked, a store instance shown by its class name."""
        out: Dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("redis_url", "store_url") and value is not None:
                value = _mask_password(value)
            elif f.name == "store" and value is not None and not isinstance(value, str):
                value = type(value).__name__
            out[f.name] = value
        return out

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"SchedulerConfig({settings})"


# -- environment -------------------------------------------------------------------------


def _env_names(name: str) -> List[str]:
    suffixes = (name.upper(), *_ALIASES.get(name, ()))
    return [prefix + suffix for prefix in (ENV_PREFIX, _GUIDE_PREFIX) for suffix in suffixes]


def _warn_unread(env: Mapping[str, str], values: Mapping[str, Any]) -> None:
    """Warn of ``FLOWYML_SCHEDULER_*`` variables no setting reads (a typo leaves a setting at its
    default without a word otherwise), of settings set to an empty value (a secret that did not
    render: ``STORE_URL=`` would quietly mean a local SQLite file), and of a Redis URL that no
    Redis lock uses."""
    fields_of = {variable.upper(): f.name for f in fields(SchedulerConfig) for variable in _env_names(f.name)}
    read = set(fields_of) | {ENV_PREFIX + name for name in _OTHER_VARIABLES}
    for variable in sorted(env):
        upper = variable.upper()
        field = fields_of.get(upper)
        if field is not None and field not in _OPTIONAL_LIMITS and not env[variable].strip():
            logger.warning(
                "environment variable %s is set but empty: ignored (%s keeps its default)", variable, field
            )
        if upper.startswith(ENV_PREFIX) and upper not in read:
            close = difflib.get_close_matches(upper, sorted(read), 1, 0.8)
            hint = f"; did you mean {close[0]}?" if close else ""
            logger.warning("environment variable %s is not a scheduler setting: ignored%s", variable, hint)
    if values.get("redis_url") and values.get("lock_backend", "file") != "redis":
        logger.warning(
            "%sREDIS_URL is set but the lock backend is %r: Redis is not used; set %sLOCK_BACKEND=redis "
            "to use it",
            ENV_PREFIX,
            values.get("lock_backend", "file"),
            ENV_PREFIX,
        )


def _lookup(env: Mapping[str, str], name: str) -> Optional[Tuple[str, str]]:
    for variable in _env_names(name):
        raw = env.get(variable)
        if raw is not None and (raw.strip() or name in _OPTIONAL_LIMITS):
            return variable, raw.strip()
    return None


def _parse(name: str, variable: str, raw: str) -> Any:
    if name in _OPTIONAL_LIMITS and raw.lower() in ("", "none"):
        return None
    try:
        if name in _BOOL_FIELDS:
            lowered = raw.lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError(f"expected one of {'/'.join(_TRUE + _FALSE)}")
        if name in _INT_FIELDS:
            return int(raw)
        if name in _FLOAT_FIELDS or name in ("history_retention_days", "default_timeout_seconds"):
            return float(raw)
    except ValueError as exc:
        kind = "a boolean" if name in _BOOL_FIELDS else "an integer" if name in _INT_FIELDS else "a number"
        raise ConfigurationError(
            f"environment variable {variable}={raw!r} is not {kind} ({exc}); fix or unset it"
        ) from None
    return raw


# -- validation: each returns a problem description, or "" when the value is fine ---------------


def _bool(value: Any) -> str:
    return "" if isinstance(value, bool) else "must be True or False"


def _text(value: Any) -> str:
    return "" if isinstance(value, str) and value.strip() else "must be a non-empty string"


#: The built-in store names served by the SQLAlchemy store, and the databases it takes.
_SQLALCHEMY_STORES = ("sqlalchemy", "postgresql")
_SQLALCHEMY_SCHEMES = ("postgresql", "postgres", "sqlite")


def _sqlalchemy_url_problem(url: str) -> str:
    """What is wrong with ``url`` for the built-in SQLAlchemy store ("" if nothing), said before
    the extra is imported: installing it would not help a URL of another database."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        return "is not a database URL: e.g. postgresql+psycopg://user:password@host:5432/db"
    if scheme.split("+")[0].lower() not in _SQLALCHEMY_SCHEMES:
        return (
            f"the built-in store takes PostgreSQL or SQLite URLs, not {scheme!r}: "
            "e.g. postgresql+psycopg://user:password@host:5432/db (another database needs a store "
            "plugin)"
        )
    return ""


def _optional_text(value: Any) -> str:
    return "" if value is None else _text(value)


def _int_at_least(minimum: int) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            return f"must be an integer >= {minimum}"
        return ""

    return check


def _seconds(positive: bool, hint: str = "") -> Callable[[Any], str]:
    def check(value: Any) -> str:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value < 0 or (positive and value == 0):
            return f"must be a finite number of seconds {'> 0' if positive else '>= 0'}{hint}"
        return ""

    return check


def _sqlite_synchronous(value: Any) -> str:
    if isinstance(value, str) and value.lower() in ("normal", "full"):
        return ""
    return "must be 'normal' (fsync at checkpoints) or 'full' (fsync at every commit)"


def _lock_ttl(value: Any) -> str:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return "" if ok and value > 0 else "must be a finite number of seconds > 0 (renewed every third of it)"


def _retention_days(value: Any) -> str:
    if value is None:
        return ""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    if not ok or value < 0:
        return "must be a number of days >= 0, or None (None and 0 keep runs whatever their age)"
    return ""


def _max_runs(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return "must be an integer >= 0, or None (None and 0 keep every run)"
    return ""


def _timeout(value: Any) -> str:
    if value is None:
        return ""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return "" if ok and value > 0 else "must be a finite number of seconds > 0, or None (no limit)"


def _catchup(value: Any) -> str:
    if value in _CATCHUP_POLICIES:
        return ""
    return f"must be one of {', '.join(repr(p) for p in _CATCHUP_POLICIES)}"


def _store(value: Any) -> str:
    return "" if value is None or not isinstance(value, str) else _text(value)


_VALIDATORS: Dict[str, Callable[[Any], str]] = {
    "persist_schedules": _bool,
    "db_path": _text,
    "sqlite_synchronous": _sqlite_synchronous,
    "distributed": _bool,
    "lock_backend": _text,
    "redis_url": _optional_text,
    "timezone": _text,
    "max_concurrent_runs": _int_at_least(1),
    "store": _store,
    "store_url": _optional_text,
    "cron_engine": _text,
    "timezone_provider": _text,
    "misfire_grace_seconds": _seconds(False, " (for no limit, a large one: 31536000 is a year)"),
    "catchup": _catchup,
    "max_catchup": _int_at_least(1),
    "heartbeat_seconds": _seconds(positive=True),
    "node_timeout_seconds": _seconds(positive=True),
    "shutdown_timeout_seconds": _seconds(positive=False),
    "lock_ttl_seconds": _lock_ttl,
    "gc_freeze": _bool,
    "gc_pause_in_bursts": _bool,
    "claim_ahead": _bool,
    "lock_dir": _optional_text,
    "node_id": _optional_text,
    "history_retention_days": _retention_days,
    "history_max_runs": _max_runs,
    "default_timeout_seconds": _timeout,
    "default_executor": _text,
}
_BOOL_FIELDS = frozenset(
    ("persist_schedules", "distributed", "gc_freeze", "gc_pause_in_bursts", "claim_ahead")
)
_INT_FIELDS = frozenset(("max_concurrent_runs", "max_catchup", "history_max_runs"))
_FLOAT_FIELDS = frozenset(
    (
        "misfire_grace_seconds",
        "heartbeat_seconds",
        "node_timeout_seconds",
        "shutdown_timeout_seconds",
        "lock_ttl_seconds",
    )
)
# Limits that None turns off: from the environment, an empty value or "none" means None.
_OPTIONAL_LIMITS = frozenset(("history_retention_days", "history_max_runs", "default_timeout_seconds"))


# -- backends: named settings that must resolve to something installed -----------------------------

# In the order they are checked: the zone is looked up with the provider, so the provider comes first.
_BACKEND_FIELDS = ("timezone_provider", "cron_engine", "timezone")
_BACKEND_DEFAULTS = {"timezone_provider": "zoneinfo", "cron_engine": "native", "timezone": "UTC"}


class _Backends:
    """The backend settings alone (checked before the whole config is built from the environment)."""

    def __init__(self, **values: Any) -> None:
        for name in _BACKEND_FIELDS:
            setattr(self, name, values[name])


def _backend_problem(config: Any, name: str) -> Optional[Tuple[type, str]]:
    """(error class, problem) when the backend setting ``name`` names nothing usable, else None.

    A known backend whose optional package is missing stays an ImportError (PluginNotInstalledError)
    with its pip command; an unknown name, zone or a broken plugin is a ConfigurationError.
    """
    from ..errors import PluginError, PluginNotInstalledError, TimezoneError

    value = getattr(config, name)
    try:
        if name == "timezone_provider":
            from ..timezones import get_provider

            get_provider(value)
        elif name == "cron_engine":
            from ..cron.expression import get_engine

            get_engine(value)
        elif _backend_problem(config, "timezone_provider") is None:
            from ..timezones import get_zone

            get_zone(value, config.timezone_provider)
    except PluginNotInstalledError as exc:
        return PluginNotInstalledError, str(exc)
    except (PluginError, TimezoneError) as exc:
        return ConfigurationError, str(exc)
    return None


def _mask_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if not sep or "@" not in authority:
        return url
    userinfo, _, host = authority.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}{slash}{path}"
