"""The executor contract: how a run's function is run, and the outcome rules.

An executor receives a ``Job`` (what to run), runs it somewhere (a thread, an event loop, a
child process) and reports a ``JobResult`` through the ``done`` callback it was given. The
runner never knows which executor ran a job: the semantics below hold for every one of them.

Executors are plugins of kind ``executors`` (entry-point group ``flowyml_lite.executors``);
the runner builds one with ``factory(max_workers=N)``.
"""

from __future__ import annotations

import abc
import inspect
import os
import sys
import traceback as _traceback
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

from ..runtime.context import RunContext
from ..stores.schema import clip_text


@dataclass(frozen=True)
class Job:
    """What to run: a pipeline function and the run it belongs to."""

    func: Callable[[], Any]  # the pipeline function (sync, or ``async def``)
    ref: Optional[str]  # "module:qualname" (the process executor imports it), None if not importable
    context: RunContext  # what ``current_run()`` returns inside the run
    timeout: Optional[float] = None  # seconds; enforced by the runner through ``Handle.cancel()``
    #: Called, on the run's thread, just before the function starts, by an executor whose runs may
    #: wait for a free worker first (``Executor.reports_start``): the run's timeout and start lag
    #: count from then, not from the hand-over. It must not raise (an executor logs what it does).
    on_start: Optional[Callable[[], None]] = None


@dataclass
class JobResult:
    """What happened to a run, by the outcome rules (``interpret``, ``from_exception``)."""

    value: Any = None  # the function's return value (thread, async); always None from a process
    success: bool = True
    run_id: Optional[str] = None
    error: Optional[str] = None  # "Type: message" of an exception, or the result's own error text
    exception_type: Optional[str] = None  # the exception class's name, e.g. "ValueError"
    #: Qualified names of the exception class's MRO ("builtins.ValueError", "builtins.Exception",
    #: ...), so ``retry_on`` can match a parent class by name, even across a process boundary.
    exception_types: Tuple[str, ...] = ()
    traceback: Optional[str] = None  # bounded (``clip_text``), tail kept
    output: Optional[str] = None  # captured logging records (and prints, stdout/stderr), bounded
    exit_code: Optional[int] = None  # process executor: the exit code of a child that exited badly
    signal: Optional[int] = None  # process executor: the signal that killed the child
    #: The run was stopped by ``Handle.cancel()`` (or abandoned, for a thread) before it finished.
    cancelled: bool = False


#: Called with the result of a run, exactly once per ``submit``.
Done = Callable[[JobResult], None]


class Handle(abc.ABC):
    """One submitted job, as its submitter holds it."""

    @abc.abstractmethod
    def cancel(self) -> bool:
        """Stop the work where the executor can; return True if it was stopped (or never started).

        After ``cancel()`` the job's ``done`` is called (once, as always) with a result whose
        ``cancelled`` is True, unless the job had already finished. The process executor kills
        the run's whole process group (True); the async executor cancels the task (True); a
        thread cannot be stopped (False): the thread is abandoned, its result will be discarded,
        and its place in the pool is given to a new thread. ``done`` is never called from inside
        ``cancel()`` or ``submit()``, so a caller may hold its own lock around them.
        """


class Executor(abc.ABC):
    """Runs jobs. Built as ``factory(max_workers=N)``: at most N jobs run at once, more wait.

    - ``submit`` never blocks for long (no process start, no waiting for a free worker) and never
      runs the job in the caller's thread.
    - ``done`` is called exactly once per ``submit``, from any thread of the executor's, with the
      job's result, including when the job raised, crashed, was cancelled or was abandoned.
      An exception raised by ``done`` is logged and does not harm the executor.
    - ``shutdown`` stops accepting jobs (``submit`` then raises RuntimeError).
    """

    name: str = ""

    def check(self, func: Callable[..., Any], ref: Optional[str]) -> None:
        """Raise ScheduleError if this executor cannot run ``func``; called at declaration."""

    #: How long a cancelled run's answer (its result: output, where it hangs) may take to come;
    #: past it the run is recorded without it. A process executor waits out its kill grace.
    cancel_answer_seconds: float = 1.0
    #: Whether this executor calls ``Job.on_start`` as each run starts (runs may wait for a worker);
    #: otherwise a run counts as started when it is handed over.
    reports_start: bool = False

    def problem(self) -> Optional[str]:
        """What keeps this executor from running jobs right now, for health (None: nothing).
        Called often: it must not block."""
        return None

    def waiting(self) -> int:
        """How many runs handed over wait for a worker to start (0 if it cannot tell). Called at
        every pass of the loop after a burst: it must be cheap and must not block."""
        return 0

    @abc.abstractmethod
    def submit(self, job: Job, done: Done) -> Handle:
        """Start ``job`` (or queue it behind the running ones); ``done(result)`` follows once."""

    def submit_many(self, items: Sequence[Tuple[Job, Done]]) -> List[Handle]:
        """``submit`` each (job, done) pair, in order; an executor may hand them over at once
        (one lock, one wake-up) for a burst of fires. Default: one ``submit`` each."""
        return [self.submit(job, done) for job, done in items]

    @abc.abstractmethod
    def shutdown(self, wait: bool = True, timeout: Optional[float] = None) -> None:
        """Stop: with ``wait``, let queued and running jobs finish for up to ``timeout`` seconds,
        then cancel what is left; without it, cancel queued and running jobs now (threads are
        abandoned). Every job's ``done`` is still called once."""


def reference(func: Callable[..., Any]) -> Optional[str]:
    """``"module:qualname"`` of a module-level function (or class, method of a class), else None."""
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    if "<" in qualname or inspect.ismethod(func):  # <lambda>, <locals>; a bound method needs its object
        return None
    return f"{module}:{qualname}"


# The job's own objects are read with ``except BaseException``: a ``__str__`` or a property may
# raise anything (even a BaseException of its own), and its run must still get an outcome.


def _text(value: Any) -> str:
    """``str(value)``, or a fallback when its ``__str__`` itself fails."""
    try:
        return str(value)
    except BaseException:
        try:
            return repr(value)
        except BaseException:
            return f"<{type(value).__name__} object>"


def _attribute(value: Any, name: str) -> Any:
    """``value.name``, or None when it is missing or its property raises."""
    try:
        return getattr(value, name, None)
    except BaseException:
        return None


def interpret(value: Any) -> Tuple[bool, Optional[str], Optional[str]]:
    """(success, run_id, error) of a job's return value, by the outcome rules.

    - A ``.success`` that is a real ``bool`` decides success; anything else (None, a dict, a
      string, a mock, a numpy bool) is not a verdict, and the run succeeds: returning
      normally is success.
    - ``.run_id`` is recorded as ``str()`` whatever its type (a UUID, an int, a mock); None stays None.
    - A failed result's error is its ``.error`` as text when it has one.
    """
    if value is None:
        return True, None, None
    verdict = _attribute(value, "success")
    success = verdict if isinstance(verdict, bool) else True
    raw_id = _attribute(value, "run_id")
    run_id = None if raw_id is None else clip_text(_text(raw_id), 1024)
    error: Optional[str] = None
    if not success:
        raw_error = _attribute(value, "error")
        if raw_error is None or (isinstance(raw_error, str) and not raw_error):
            error = "the job returned success=False"
        else:
            error = clip_text(_text(raw_error))
    return success, run_id, error


def exception_names(exc_type: type) -> Tuple[str, ...]:
    """Qualified names of ``exc_type``'s MRO without ``object``: ("builtins.KeyError", ...)."""
    return tuple(f"{c.__module__}.{c.__qualname__}" for c in exc_type.__mro__ if c is not object)


def describe(exc: BaseException) -> str:
    """``"Type: message"`` (just ``"Type"`` when the message is empty)."""
    message = _text(exc)
    name = type(exc).__name__
    return clip_text(f"{name}: {message}" if message else name) or name


def from_exception(exc: BaseException) -> JobResult:
    """The failed result of a run that raised ``exc``: its description, full traceback and MRO names."""
    try:
        text = "".join(_traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException:  # a broken __str__ deep in a chain must not lose the run's outcome
        text = f"{type(exc).__name__} (the traceback could not be formatted)\n"
    return JobResult(
        success=False,
        error=describe(exc),
        exception_type=type(exc).__name__,
        exception_types=exception_names(type(exc)),
        traceback=clip_text(text),
    )


def drained(value: Any) -> Any:
    """A job written as a generator (``yield`` in its body) is run to its end: calling it only
    made the generator, and its body would otherwise never run. Its value is then None."""
    if inspect.isgenerator(value):
        for _ in value:
            pass
        return None
    return value


def result_of(value: Any) -> JobResult:
    """The result of a run that returned ``value``."""
    if value is None:  # most jobs
        return JobResult()
    success, run_id, error = interpret(value)
    return JobResult(value=value, success=success, run_id=run_id, error=error)


def leave_forked_child(schedule: Optional[str], success: bool) -> None:
    """The job forked and its child came back into the executor (it returned from the job): the
    child ends here, as if it had called ``os._exit``. Its parent's run goes on; a child must not
    record runs, serve others, or hold the parent's sockets open."""
    note = (
        f"flowyml_lite: {'a run' if schedule is None else f'the run of {schedule!r}'} forked, and the "
        f"child process {os.getpid()} went back to the scheduler: it exits here (end a child with os._exit)\n"
    )
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        os.write(2, note.encode("utf-8", "replace"))
    finally:
        os._exit(0 if success else 1)
