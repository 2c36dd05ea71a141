"""The evaluation-pass benchmark runs, checks ember's values against the hand-written pass and
prints its lines (speed itself is judged by the benchmark, not here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "eval_pass.py"


@pytest.mark.parametrize("backend", ["cpp", "python"])
def test_quick_eval_pass_benchmark_prints_both_batch_counts(backend: str) -> None:
    pytest.importorskip("torch")
    if backend == "cpp":
        pytest.importorskip("ember._core")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--repeats", "3", "--backend", backend],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"{backend}  1 batches: hand-written" in result.stdout
    assert f"{backend} 20 batches: hand-written" in result.stdout
