"""examples/digits.py trains to at least 95 % validation accuracy with ember alone."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "digits.py"


def test_digits_example_reaches_its_accuracy(backend: str, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            "--no-progress",
            "--backend",
            backend,
            "--out-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    best = float(re.search(r"best val accuracy (\d\.\d+)", result.stdout).group(1))
    assert best >= 0.95
    assert list(tmp_path.glob("checkpoint_*_accuracy=*.pt"))


def test_digits_example_trains_with_two_processes(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--no-progress", "--nproc", "2", "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("best val accuracy") == 1  # rank 0 alone prints
    assert len(list(tmp_path.glob("checkpoint_*_accuracy=*.pt"))) == 2  # n_saved, written once
