"""The ```python examples of docs/metrics.md run, on both loops, and import only ember and torch."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytest.importorskip("torch")

PAGE = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"
BLOCKS = re.findall(
    r"^```python\n(.*?)^```", PAGE.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL
)


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_imports_only_ember_and_torch(index: int) -> None:
    for node in ast.walk(ast.parse(BLOCKS[index])):
        if isinstance(node, ast.Import):
            roots = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots = {(node.module or "").split(".")[0]}
        else:
            continue
        assert roots <= {"ember", "torch"}, roots


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(backend: str, index: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBER_BACKEND", backend)  # the examples build Engine(...) without backend=
    code = compile(BLOCKS[index], f"{PAGE.name}:example{index}", "exec")
    exec(code, {"__name__": f"metrics_md_example_{index}"})  # noqa: S102
