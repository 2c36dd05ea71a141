"""tests/typing/user_script.py, which .ci/run type-checks with mypy and basedpyright, also runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "typing" / "user_script.py"


def test_typed_user_script_runs() -> None:
    pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("user_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert 0.0 <= module.main() <= 1.0
