"""Every ```python block of the README and docs/ runs as written (each in a fresh namespace)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks() -> List[Tuple[str, str]]:
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        if path.exists():
            for i, match in enumerate(BLOCK.finditer(path.read_text(encoding="utf-8"))):
                found.append((f"{path.name}#{i + 1}", match.group(1)))
    return found


BLOCKS = _blocks()


def test_the_docs_have_runnable_examples() -> None:
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("where,code", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_example_runs(where: str, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(__import__("os").environ):
        if name.upper().startswith("FLOWYML_SCHEDULER_"):
            monkeypatch.delenv(name)
    namespace = {"__name__": "__main__"}  # as a script: blocks guarded by __main__ run too
    try:
        exec(compile(code, where, "exec"), namespace)
    finally:
        from flowyml_lite import PipelineScheduler

        for value in namespace.values():
            if isinstance(value, PipelineScheduler) and value.running:
                value.stop(timeout=5)
