"""The loop-overhead benchmark runs and writes its record (speed itself is judged by the benchmark)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "loop_overhead.py"


@pytest.mark.cpp
def test_quick_benchmark_writes_table_json_and_chart(tmp_path: Path) -> None:
    pytest.importorskip("ember._core")
    pytest.importorskip("matplotlib")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "benchmark.json").read_text())
    assert (tmp_path / "benchmark.png").stat().st_size > 0
    assert "engine_no_handler" in (tmp_path / "benchmark.md").read_text()
    assert "PASS" in result.stdout or "FAIL" in result.stdout
    results = record["results_ns_per_iteration"]
    assert {"floor_while", "engine_no_handler", "short_epochs"} <= set(results)
    assert record["import_ember_engine"]


def test_quick_prefetch_benchmark_runs() -> None:
    script = SCRIPT.parent / "prefetch.py"
    result = subprocess.run(
        [sys.executable, str(script), "--quick", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "prefetch depth=2" in result.stdout and "vs plain" in result.stdout
