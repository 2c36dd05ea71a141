"""The asynchronous-checkpoint benchmark runs in its smoke mode and writes its record (the speed
itself is judged by the benchmark's full run, not here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "checkpoint_async.py"


def test_smoke_mode_writes_table_and_json(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--smoke",
            "--out-dir",
            str(tmp_path),
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "ratio" in result.stdout
    assert "PASS" in result.stdout or "FAIL" in result.stdout
    record = json.loads((tmp_path / "benchmark-checkpoint.json").read_text())
    results = record["results"]
    assert record["smoke"] is True
    assert len(results["blocked_s"]["sync"]) == len(results["blocked_s"]["async"]) == 2
    assert results["ratio_async_blocked_to_sync"] > 0
    assert "Blocked time, async / sync" in (tmp_path / "benchmark-checkpoint.md").read_text()
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []  # checkpoints cleaned up
