"""Every error flowyml_lite raises, in one place.

Each message says what was wrong and, where there is one, how to fix it.
"""

from __future__ import annotations

from typing import Optional, Sequence


class FlowymlLiteError(Exception):
    """Base class of every error raised on purpose by flowyml_lite."""


class ConfigurationError(FlowymlLiteError, ValueError):
    """A configuration value (argument or environment variable) is invalid."""


class CronError(FlowymlLiteError, ValueError):
    """A cron expression is invalid or can never match.

    ``field`` names the field (``minute``, ``day-of-week``...), ``position`` is the
    0-based character offset of the offending text in ``expression`` (or None).
    """

    def __init__(
        self,
        message: str,
        *,
        expression: str = "",
        field: Optional[str] = None,
        position: Optional[int] = None,
    ) -> None:
        super().__init__(message)
        self.expression = expression
        self.field = field
        self.position = position


class TimezoneError(FlowymlLiteError, ValueError):
    """A time zone name is unknown, or no time zone database is available."""


class UnknownTimezoneError(TimezoneError):
    """The zone name is not in the tz database; the message suggests close names."""

    def __init__(self, name: str, suggestions: Sequence[str] = ()) -> None:
        hint = f" Did you mean: {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"unknown time zone {name!r}.{hint}")
        self.name = name
        self.suggestions = list(suggestions)


class MissingTimezoneDatabaseError(TimezoneError):
    """The machine has no IANA tz database that zoneinfo can read."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"no time zone database is available to look up {name!r}: "
            "install one with `pip install 'flowyml-lite[tzdata]'` "
            "(or the operating system's tzdata package)"
        )
        self.name = name


class PluginError(FlowymlLiteError, LookupError):
    """A backend (cron engine, zone provider, store, lock) could not be found or loaded."""


class PluginNotInstalledError(PluginError, ImportError):
    """A known backend is named but its optional dependencies are not installed (also an ImportError)."""


class ScheduleError(FlowymlLiteError, ValueError):
    """A schedule definition is invalid (bad name, interval, hour, options...)."""


class ScheduleNotFoundError(FlowymlLiteError, KeyError):
    """No schedule with this name exists."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"no schedule named {self.name!r}"


class StoreError(FlowymlLiteError):
    """The store failed (I/O, corruption, incompatible schema)."""


class SchemaVersionError(StoreError):
    """The store's schema is newer than this version of flowyml_lite understands."""


class StoreFileReplacedError(StoreError):
    """The store's database file was deleted or replaced under the running process.

    The process still holds the old file open; writing on would record fires nobody else sees.
    The store refuses every further call until it is closed and opened again (a restart).
    """


class LockError(FlowymlLiteError):
    """A lock could not be acquired or released as requested."""


class EventLoopStoppedError(FlowymlLiteError, RuntimeError):
    """The async executor's event loop stopped under a run (a job called ``loop.stop()``, or the
    loop's thread failed): the run was ended, and a new loop takes the next runs. A job must not
    stop or close the running event loop."""


class PipelineError(FlowymlLiteError):
    """A pipeline is malformed (unknown input, duplicate output, cycle)."""


class ServerUnreachableError(FlowymlLiteError):
    """A command sent to a running ``serve`` (``--url``) could not reach it."""


class ApiError(FlowymlLiteError):
    """An HTTP API request was refused; ``status`` and ``code`` go into the JSON error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
