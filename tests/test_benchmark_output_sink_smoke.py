"""The output-sink benchmark runs on both loops and prints its lines (speed itself is judged by
the benchmark, not here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "output_sink.py"


def test_quick_output_sink_benchmark_prints_both_loops() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for backend in ("cpp", "python"):
        assert f"{backend:6s} per iteration (median): python handler" in result.stdout
