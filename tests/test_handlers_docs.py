"""The ```python blocks of docs/handlers.md run, on both loops, importing only ember, torch and
tempfile. (tests/test_doc_snippets.py runs them too, block by block, on the default loop.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("tqdm")

PAGE = Path(__file__).resolve().parent.parent / "docs" / "handlers.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
ALLOWED = {"ember", "torch", "tempfile"}


def blocks() -> list[str]:
    return BLOCK.findall(PAGE.read_text(encoding="utf-8"))


def test_one_block_per_handler_group_importing_only_ember_torch_tempfile() -> None:
    found = blocks()
    assert len(found) >= 6
    text = "\n".join(found)
    for name in (
        "Checkpoint",
        "ModelCheckpoint",
        "EarlyStopping",
        "TerminateOnNan",
        "Timer",
        "ProgressBar",
        "LRScheduler",
        "create_lr_scheduler_with_warmup",
        "CosineAnnealingScheduler",
    ):
        assert name in text, name
    for code in found:
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                assert module.split(".")[0] in ALLOWED, module


def test_blocks_run(
    backend: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EMBER_BACKEND", backend)  # Engine() without backend= reads it
    namespace: dict[str, object] = {"__name__": "__handlers_doc__"}
    for code in blocks():
        exec(compile(code, str(PAGE), "exec"), namespace)  # noqa: S102
    engine = namespace["trainer"]
    assert ("_pyloop" in engine._run_loop.__module__) == (backend == "python")  # type: ignore[attr-defined]
    out = capsys.readouterr()
    assert "checkpoint_12.pt" in out.out
    assert "myprefix_mymodel_30.pt" in out.out
    assert "[0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001]" in out.out
    assert "Epoch [2/2]: [8/8] 100%" in out.err
