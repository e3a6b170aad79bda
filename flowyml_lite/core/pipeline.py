"""``Pipeline`` and ``@step``: a small sequential runner whose steps take earlier outputs by parameter name.

A step declares the names of its outputs; a later step receives them through parameters of the
same name (or from the inputs given to ``run``). ``run`` records what each step did and returns a
``PipelineResult`` whose ``run_id`` the scheduler's history links to.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, Union, overload

from ..errors import PipelineError

__all__ = ["Pipeline", "PipelineResult", "Step", "StepResult", "step"]

logger = logging.getLogger("flowyml_lite.pipeline")

_EMPTY = inspect.Parameter.empty


class Step:
    """A function with a name and the names of its outputs; calling it calls the function."""

    __name__: str  # copied from the function, with its __doc__, __module__ and __qualname__

    def __init__(
        self,
        func: Callable[..., Any],
        outputs: Union[str, Sequence[str], None] = None,
        name: Optional[str] = None,
    ) -> None:
        if not callable(func):
            raise TypeError(f"a step must be a callable, got {func!r}")
        functools.update_wrapper(self, func)  # first: it copies func.__dict__
        self.func = func
        self.name = name if name is not None else getattr(func, "__name__", type(func).__name__)
        if not isinstance(self.name, str) or not self.name:
            raise PipelineError(f"a step name must be a non-empty string, got {self.name!r}")
        if "__name__" not in self.__dict__:  # e.g. a functools.partial
            self.__name__ = self.name
        names = [outputs] if isinstance(outputs, str) else list(outputs or ())
        for out in names:
            if not isinstance(out, str) or not out.isidentifier():
                raise PipelineError(
                    f"step {self.name!r}: output {out!r} must be a valid parameter name "
                    "(later steps receive it through a parameter of that name)"
                )
        duplicates = sorted({out for out in names if names.count(out) > 1})
        if duplicates:
            raise PipelineError(f"step {self.name!r} declares output {duplicates[0]!r} twice")
        self.outputs: Tuple[str, ...] = tuple(names)
        try:
            signature = inspect.signature(func)
        except (TypeError, ValueError):  # some builtins have none: call them without arguments
            signature = inspect.Signature()
        # *args and **kwargs receive nothing: values are bound by name to named parameters only.
        self.parameters = [
            p
            for p in signature.parameters.values()
            if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        ]

    @property
    def required(self) -> List[str]:
        """Parameters without a default: each must come from an earlier output or a run input."""
        return [p.name for p in self.parameters if p.default is _EMPTY]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def call_with(self, available: Dict[str, Any]) -> Any:
        """Call the function with the parameters found in ``available``; missing ones take their defaults."""
        args: List[Any] = []
        kwargs: Dict[str, Any] = {}
        for p in self.parameters:
            if p.name not in available:
                continue  # validated beforehand: it has a default
            if p.kind is inspect.Parameter.POSITIONAL_ONLY:
                args.append(available[p.name])
            else:
                kwargs[p.name] = available[p.name]
        return self.func(*args, **kwargs)

    def split_outputs(self, value: Any) -> Dict[str, Any]:
        """Map a return value onto the declared output names (one name: the value itself)."""
        if not self.outputs:
            return {}
        if len(self.outputs) == 1:
            return {self.outputs[0]: value}
        if isinstance(value, dict):
            missing = [out for out in self.outputs if out not in value]
            if not missing:
                return {out: value[out] for out in self.outputs}
            problem = f"the returned dict lacks {', '.join(repr(m) for m in missing)}"
        elif isinstance(value, (tuple, list)):
            if len(value) == len(self.outputs):
                return dict(zip(self.outputs, value))
            problem = f"it returned {len(value)} values"
        else:
            problem = f"it returned {type(value).__name__}"
        raise PipelineError(
            f"step {self.name!r} declares outputs {list(self.outputs)} and must return a tuple or list "
            f"of {len(self.outputs)} values or a dict with those keys; {problem}"
        )

    def __repr__(self) -> str:
        return f"<Step {self.name!r} outputs={list(self.outputs)}>"


@overload
def step(func: Callable[..., Any]) -> Step: ...


@overload
def step(
    func: None = None, *, outputs: Union[str, Sequence[str], None] = None, name: Optional[str] = None
) -> Callable[[Callable[..., Any]], Step]: ...


def step(
    func: Optional[Callable[..., Any]] = None,
    *,
    outputs: Union[str, Sequence[str], None] = None,
    name: Optional[str] = None,
) -> Union[Step, Callable[[Callable[..., Any]], Step]]:
    """Make a function a pipeline step: ``@step``, or ``@step(outputs=["data"], name=None)``."""
    if func is not None:
        return Step(func, outputs=outputs, name=name)

    def decorate(f: Callable[..., Any]) -> Step:
        return Step(f, outputs=outputs, name=name)

    return decorate


@dataclass
class StepResult:
    """What one step did: its return value, or the error that stopped the run."""

    name: str
    success: bool
    duration_seconds: float
    output: Any = None
    error: Optional[str] = None


@dataclass
class PipelineResult:
    """The outcome of ``Pipeline.run``; true when every step succeeded."""

    run_id: str
    pipeline_name: str
    success: bool
    outputs: Dict[str, Any]
    steps: List[StepResult]
    started_at: datetime
    completed_at: datetime
    duration_seconds: float
    error: Optional[str] = None

    def __bool__(self) -> bool:
        return self.success

    def step(self, name: str) -> StepResult:
        """The result of the step called ``name`` (KeyError if it did not run)."""
        for result in self.steps:
            if result.name == name:
                return result
        raise KeyError(name)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-friendly summary (outputs by name only: their values may not serialize)."""
        return {
            "run_id": self.run_id,
            "pipeline_name": self.pipeline_name,
            "success": self.success,
            "outputs": sorted(self.outputs),
            "steps": [
                {
                    "name": s.name,
                    "success": s.success,
                    "duration_seconds": s.duration_seconds,
                    "error": s.error,
                }
                for s in self.steps
            ],
            "started_at": self.started_at.isoformat(),
            "completed_at": self.completed_at.isoformat(),
            "duration_seconds": self.duration_seconds,
            "error": self.error,
        }


class Pipeline:
    """An ordered list of steps run one after the other, each fed by the outputs before it."""

    def __init__(self, name: str, steps: Sequence[Union[Step, Callable[..., Any]]] = ()) -> None:
        if not isinstance(name, str) or not name:
            raise PipelineError(f"a pipeline name must be a non-empty string, got {name!r}")
        self.name = name
        self.steps: List[Step] = []
        for s in steps:
            self.add_step(s)

    def add_step(self, step_or_function: Union[Step, Callable[..., Any]]) -> Pipeline:
        """Append a step (a plain function becomes a step without outputs); returns the pipeline."""
        new = step_or_function if isinstance(step_or_function, Step) else Step(step_or_function)
        if any(s.name == new.name for s in self.steps):
            raise PipelineError(
                f"pipeline {self.name!r} already has a step named {new.name!r}; "
                "give one of them another name with @step(name=...)"
            )
        for out in new.outputs:
            owner = next((s for s in self.steps if out in s.outputs), None)
            if owner is not None:
                raise PipelineError(
                    f"pipeline {self.name!r}: output {out!r} of step {new.name!r} is already "
                    f"an output of step {owner.name!r}; output names must be unique"
                )
        self.steps.append(new)
        return self

    def validate(self, inputs: Optional[Dict[str, Any]] = None) -> None:
        """Raise PipelineError if the pipeline cannot run with ``inputs``; ``run`` calls it first."""
        if not self.steps:
            raise PipelineError(f"pipeline {self.name!r} has no steps; add one with add_step()")
        given = dict(inputs or {})
        produced = {out: s.name for s in self.steps for out in s.outputs}
        clashes = sorted(set(given) & set(produced))
        if clashes:
            raise PipelineError(
                f"pipeline {self.name!r}: input {clashes[0]!r} is also the output of step "
                f"{produced[clashes[0]]!r}; rename one of them"
            )
        accepted: Set[str] = {p.name for s in self.steps for p in s.parameters}
        unused = sorted(set(given) - accepted)
        if unused:
            raise PipelineError(
                f"pipeline {self.name!r}: no step takes input {unused[0]!r}; "
                f"the steps' parameters are {', '.join(sorted(accepted)) or '(none)'}"
            )
        available = set(given)
        for s in self.steps:
            for param in s.required:
                if param not in available:
                    shown = ", ".join(repr(a) for a in sorted(available)) or "none"
                    raise PipelineError(
                        f"pipeline {self.name!r}: step {s.name!r} needs parameter {param!r}, which no "
                        f"earlier step outputs and no input provides (available: {shown}); "
                        f"add a step with outputs=[{param!r}] before it or call run({param}=...)"
                    )
            available.update(s.outputs)

    def run(self, **inputs: Any) -> PipelineResult:
        """Run the steps in order; a failing step stops the run and is recorded, not raised.

        Raises PipelineError (before running anything) if the pipeline is malformed.
        """
        self.validate(inputs)
        run_id = uuid.uuid4().hex
        started_at = datetime.now(timezone.utc)
        start = time.perf_counter()
        values: Dict[str, Any] = dict(inputs)
        outputs: Dict[str, Any] = {}
        results: List[StepResult] = []
        error: Optional[str] = None
        logger.debug("pipeline %s run %s started", self.name, run_id)
        for s in self.steps:
            logger.debug("pipeline %s run %s: step %s started", self.name, run_id, s.name)
            step_start = time.perf_counter()
            try:
                returned = s.call_with(values)
                produced = s.split_outputs(returned)
            except Exception as exc:
                elapsed = time.perf_counter() - step_start
                message = f"{type(exc).__name__}: {exc}"
                results.append(StepResult(s.name, False, elapsed, None, message))
                error = f"step {s.name!r} failed: {message}"
                logger.warning(
                    "pipeline %s run %s: step %s failed after %.3fs: %s",
                    self.name, run_id, s.name, elapsed, message, exc_info=True,
                )
                break
            elapsed = time.perf_counter() - step_start
            results.append(StepResult(s.name, True, elapsed, returned, None))
            values.update(produced)
            outputs.update(produced)
            logger.debug("pipeline %s run %s: step %s finished in %.3fs", self.name, run_id, s.name, elapsed)
        duration = time.perf_counter() - start
        result = PipelineResult(
            run_id=run_id,
            pipeline_name=self.name,
            success=error is None,
            outputs=outputs,
            steps=results,
            started_at=started_at,
            completed_at=datetime.now(timezone.utc),
            duration_seconds=duration,
            error=error,
        )
        outcome = "succeeded" if result else "failed"
        logger.debug("pipeline %s run %s %s in %.3fs", self.name, run_id, outcome, duration)
        return result

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, steps={[s.name for s in self.steps]})"
