"""The user's objects named on the command line (``module:attribute``), found without side effects
a typo could cause: a name the module's source does not bind is refused before the module runs
(importing it runs its declarations, which would change a shared store's schedules), and a
function is called only when it says it builds a scheduler (any other may be a job).
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import inspect
import os
import sys
from typing import Any, Iterable, List, Optional, Set

from .errors import ConfigurationError, FlowymlLiteError

#: Calls through which a module can bind names its statements do not show.
_DYNAMIC_BINDERS = frozenset(("globals", "setattr", "exec", "vars", "__import__"))


def load_attribute(spec: str, what: str) -> Any:
    """``module:attr.sub`` imported from the current directory (as ``python -m`` would); a
    ConfigurationError naming ``what`` if it is not there (refused before importing, when the
    module's source shows that)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(f"{what} {spec!r}: write module:attribute, e.g. myjobs:scheduler")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    top = attr.split(".")[0]
    defined = None if module_name in sys.modules else names_defined_by(module_name)
    if defined is not None and top not in defined:
        close = difflib.get_close_matches(top, sorted(defined), n=1)
        hint = f" (did you mean {module_name}:{close[0]}?)" if close else ""
        raise ConfigurationError(
            f"{what} {spec!r}: {module_name!r} defines no {top!r}{hint}; it was not imported"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"{what} {spec!r}: cannot import {module_name!r}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(f"{what} {spec!r}: {module_name!r} has no attribute {attr!r}") from None
    return obj


def load_scheduler(app: str, factory: bool) -> Any:
    """The PipelineScheduler ``app`` names: the object itself, or what a factory returns (called
    only when annotated ``-> PipelineScheduler``, or with ``factory``)."""
    from .core.scheduler import PipelineScheduler

    obj = load_attribute(app, "APP")
    if not isinstance(obj, PipelineScheduler) and callable(obj):
        if not (factory or says_it_returns_a_scheduler(obj)):
            kind = "class" if inspect.isclass(obj) else "function" if inspect.isroutine(obj) else "callable"
            raise ConfigurationError(
                f"APP {app!r} is a {kind}, not a PipelineScheduler: name the scheduler itself "
                "(module:variable), or, if it builds and returns one, annotate it '-> PipelineScheduler' "
                "or pass --factory (it was not called: it may be a job)"
            )
        try:
            obj = obj()
        except FlowymlLiteError:
            raise  # the library's own error (a store down, a bad setting) says what it is
        except Exception as exc:
            raise ConfigurationError(f"APP {app!r}: calling it raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, PipelineScheduler):
        raise ConfigurationError(f"APP {app!r} is a {type(obj).__name__}, not a PipelineScheduler")
    return obj


def says_it_returns_a_scheduler(obj: Any) -> bool:
    """Whether ``obj``'s return annotation is ``PipelineScheduler`` (text or class)."""
    try:
        annotation = inspect.signature(obj).return_annotation
    except (TypeError, ValueError):
        return False
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return isinstance(text, str) and text.split(".")[-1].strip("'\"") == "PipelineScheduler"


def names_defined_by(module_name: str) -> Optional[Set[str]]:
    """The names a module's source binds at its top level, read without running anything; None when
    that cannot be known: no source file, a syntax error, a package (its submodules are attributes
    too), a module in a package not imported yet (finding it would import the package), or a
    module that binds names dynamically (``from x import *``, ``globals()``, ``setattr``, ``exec``,
    a module ``__getattr__``, ``sys.modules[...] = ...``)."""
    parent = module_name.rpartition(".")[0]
    if parent and parent not in sys.modules:
        return None
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None  # the import says what is wrong
    if spec is None or spec.submodule_search_locations is not None:
        return None
    if not spec.origin or not spec.origin.endswith(".py"):
        return None
    try:
        with open(spec.origin, "rb") as source:
            tree = ast.parse(source.read(), spec.origin)
    except (OSError, SyntaxError, ValueError):
        return None
    if _binds_dynamically(tree):
        return None
    names: Set[str] = set()
    _bound_by(tree.body, names)
    for node in ast.walk(tree):  # `global x` in a function binds x in the module
        if isinstance(node, ast.Global):
            names.update(node.names)
    return None if "__getattr__" in names or "*" in names else names


def _binds_dynamically(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        func = node.func if isinstance(node, ast.Call) else None
        if isinstance(func, ast.Name) and func.id in _DYNAMIC_BINDERS:
            return True
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store):
            value = node.value
            if isinstance(value, ast.Attribute) and value.attr == "modules":  # sys.modules[...] = ...
                return True
    return False


def _bound_by(statements: Iterable[ast.stmt], names: Set[str]) -> None:
    """Add the names ``statements`` bind in their own scope: not inside the functions, classes and
    lambdas they define (whose own names they bind). Comprehension variables are counted too: a
    name too many only lets a typo through to the import, as before this check."""
    stack: List[ast.AST] = list(statements)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            continue
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(alias.asname or alias.name.split(".")[0] for alias in node.names)
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif type(node).__name__ in ("MatchAs", "MatchStar", "MatchMapping"):  # match captures (3.10+)
            captured = getattr(node, "name", None) or getattr(node, "rest", None)
            if isinstance(captured, str):
                names.add(captured)
        stack.extend(ast.iter_child_nodes(node))
