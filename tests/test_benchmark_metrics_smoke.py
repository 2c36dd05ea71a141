"""The metric-update benchmark runs and writes its record (speed is judged by the benchmark)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "metric_update.py"


def test_quick_metric_benchmark_writes_table_and_json(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--batches", "3", "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "PASS" in result.stdout or "FAIL" in result.stdout
    record = json.loads((tmp_path / "benchmark-metrics.json").read_text())
    assert {"Accuracy multiclass", "Loss (cross entropy)", "ConfusionMatrix"} <= set(
        record["results"]
    )
    for row in record["results"].values():
        assert row["ratio_min"] > 0
        assert row["syncs_per_pass"] <= 1  # counts are deterministic: this one is a test
    assert "| Accuracy multiclass |" in (tmp_path / "benchmark-metrics.md").read_text()
