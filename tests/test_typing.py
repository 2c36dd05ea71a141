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


def test_import_ember_reaches_its_submodules_without_importing_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, ember\n"
        "assert ember.engine.Engine.__name__ == 'Engine'\n"
        "assert ember.handlers.__name__ == 'ember.handlers'\n"
        "assert 'torch' not in sys.modules, 'ember.engine imported torch'\n"
        "assert {'engine', 'handlers', 'metrics', 'distributed', 'patch_ignite'} <= set(dir(ember))\n"
        "try:\n"
        "    ember.nothing\n"
        "except AttributeError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "module 'ember' has no attribute 'nothing'"
