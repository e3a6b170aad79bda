"""flowyml_lite: a pipeline scheduler that keeps its promises, on the standard library alone.

>>> from flowyml_lite import Pipeline, PipelineScheduler, SchedulerConfig, step
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# Public names resolve lazily so `import flowyml_lite` stays cheap (no threading pools,
# no sqlite3) until a scheduler is actually used.
_EXPORTS = {
    "Pipeline": ".core.pipeline",
    "PipelineResult": ".core.pipeline",
    "StepResult": ".core.pipeline",
    "step": ".core.pipeline",
    "PipelineScheduler": ".core.scheduler",
    "RunContext": ".core.scheduler",
    "current_run": ".core.scheduler",
    "Schedule": ".core.schedule",
    "SchedulerConfig": ".core.scheduler_config",
    "CronExpression": ".cron.expression",
    "CronError": ".errors",
    "FlowymlLiteError": ".errors",
    "ScheduleError": ".errors",
    "ScheduleNotFoundError": ".errors",
    "ConfigurationError": ".errors",
    "TimezoneError": ".errors",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flowyml_lite' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
