"""The "Small" promise: flowyml_lite needs only the standard library and works from a copied folder.

Each check runs the package in a fresh interpreter started with ``-I -S`` (no site-packages,
no user site, no PYTHON* variables), from a copy of ``flowyml_lite/`` in an empty folder, so
nothing installed in the test environment can hide a third-party import.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "flowyml_lite"

# Runs in the child interpreter: argv = [folder holding the copy, package name, JSON list of modules].
CHILD = r"""
import importlib, json, sys
folder, pkg, modules = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sys.path.insert(0, folder)
from datetime import datetime, timezone

root = importlib.import_module(pkg)
assert isinstance(root.__version__, str), root.__version__
for name in modules:
    importlib.import_module(pkg + name)

if ".plugins" in modules:
    plugins = sys.modules[pkg + ".plugins"]
    for kind in plugins.KINDS:
        plugins.available(kind)
    if ".cron.native" in modules:
        engine = plugins.get("cron", "native")
        assert engine.__module__ == pkg + ".cron.native", engine.__module__
    if ".timezones" in modules:
        provider = plugins.get("timezones", "zoneinfo")
        assert provider.__module__ == pkg + ".timezones", provider.__module__

if ".cron.native" in modules and ".cron.expression" in modules:
    cron = importlib.import_module(pkg + ".cron")
    expr = cron.CronExpression("0 9 * * 1-5", timezone="America/New_York")
    # Thursday 19:00 New York; the next weekday 09:00 EST is Friday 2024-03-08 14:00 UTC.
    fire = expr.next(datetime(2024, 3, 8, 0, 0, tzinfo=timezone.utc))
    assert fire.astimezone(timezone.utc) == datetime(2024, 3, 8, 14, 0, tzinfo=timezone.utc), fire
    try:
        cron.CronExpression("0 9 * * 8")
    except cron.CronError:
        pass
    else:
        raise AssertionError("day-of-week 8 was accepted")

if ".core.scheduler_config" in modules:
    config = importlib.import_module(pkg + ".core.scheduler_config")
    config.SchedulerConfig()

if ".core.scheduler" in modules and ".stores.sqlite" in modules:
    import os
    db_path = os.path.join(folder, "probe.db")
    scheduler = root.PipelineScheduler(config=root.SchedulerConfig(db_path=db_path))
    scheduler.schedule_interval("probe", lambda: None, seconds=60)
    names = [schedule.pipeline_name for schedule in scheduler.list_schedules()]
    assert names == ["probe"], names
    assert os.path.exists(db_path)

if sys.version_info >= (3, 10):
    import os, sysconfig
    stdlib_dirs = tuple(
        os.path.join(os.path.realpath(sysconfig.get_path(key)), "") for key in ("stdlib", "platstdlib")
    )

    def foreign(name, module):
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top in (pkg, "__main__"):
            return False
        where = getattr(module, "__file__", None)  # private stdlib modules such as _sysconfigdata_*
        if not where:
            return True
        where = os.path.realpath(where)
        parts = where.split(os.sep)
        in_stdlib = where.startswith(stdlib_dirs)
        return not in_stdlib or "site-packages" in parts or "dist-packages" in parts

    outside = sorted(name for name, module in list(sys.modules.items()) if foreign(name, module))
    assert not outside, outside
print("ok", len(modules))
"""


def package_modules(package: Path) -> List[str]:
    """Dotted names, relative to the package (".cron.native"), of every module except ``__main__``."""
    names = []
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package).with_suffix("").parts)
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts.pop()
        if parts:
            names.append("." + ".".join(parts))
    return names


def copy_package(destination: Path, name: str) -> Path:
    """Copy flowyml_lite/ (sources only) into ``destination`` under the package name ``name``."""
    target = destination / name
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def run_isolated(folder: Path, package: str, modules: List[str]) -> subprocess.CompletedProcess[str]:
    """Run CHILD in ``python -I -S`` with ``folder`` as the only addition to sys.path."""
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", CHILD, str(folder), package, json.dumps(modules)],
        cwd=str(folder),
        capture_output=True,
        text=True,
        timeout=120,
    )


class TestCopiedFolder:
    def test_every_module_imports_and_works_without_site_packages(self, tmp_path: Path) -> None:
        copy_package(tmp_path, "flowyml_lite")
        modules = package_modules(PACKAGE)
        result = run_isolated(tmp_path, "flowyml_lite", modules)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"ok {len(modules)}"

    def test_the_package_works_vendored_under_another_name(self, tmp_path: Path) -> None:
        copy_package(tmp_path, "vendored_scheduler")
        modules = package_modules(PACKAGE)
        result = run_isolated(tmp_path, "vendored_scheduler", modules)
        # The child asserts that no module outside the standard library and the copy was imported,
        # so an absolute "flowyml_lite.x" import anywhere fails here (flowyml_lite is not on the path).
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"ok {len(modules)}"

    def test_the_command_line_answers_help_without_site_packages(self, tmp_path: Path) -> None:
        if not (PACKAGE / "__main__.py").exists():
            pytest.skip("flowyml_lite/__main__.py does not exist yet")
        copy_package(tmp_path, "flowyml_lite")
        code = (
            "import runpy, sys; sys.path.insert(0, sys.argv[1]); sys.argv = ['flowyml-lite', '--help'];"
            " runpy.run_module('flowyml_lite', run_name='__main__', alter_sys=True)"
        )
        result = subprocess.run(
            [sys.executable, "-I", "-S", "-c", code, str(tmp_path)],
            cwd=str(tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert "usage" in result.stdout.lower()


def imported_top_level_names(tree: ast.AST) -> List[Tuple[int, str]]:
    """(line, top-level module) for every absolute import, including ``importlib.import_module("x")``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name.partition(".")[0]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.partition(".")[0]))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            if (
                called in ("import_module", "__import__")
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and not first.value.startswith(".")
            ):
                found.append((node.lineno, first.value.partition(".")[0]))
    return found


@pytest.mark.skipif(sys.version_info < (3, 10), reason="sys.stdlib_module_names exists from Python 3.10")
class TestImportStatements:
    # Names only a type checker resolves; at run time they would fail the copied-folder tests above.
    TYPE_CHECKING_ONLY = frozenset({"_typeshed"})

    def test_every_import_in_the_package_is_standard_library_or_relative(self) -> None:
        allowed = set(sys.stdlib_module_names) | self.TYPE_CHECKING_ONLY
        offenders = []
        for path in sorted(PACKAGE.rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for line, name in imported_top_level_names(tree):
                if name not in allowed:
                    offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}: imports {name!r}")
        assert not offenders, (
            "not standard library (use a relative import inside the package):\n" + "\n".join(offenders)
        )

    def test_the_checker_sees_imports_hidden_inside_functions(self) -> None:
        source = "def f():\n    import croniter\n    from . import x\n    importlib.import_module('redis')\n"
        names = [name for _, name in imported_top_level_names(ast.parse(source))]
        assert sorted(names) == ["croniter", "redis"]
