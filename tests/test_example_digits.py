"""examples/digits.py trains to at least 95 % validation accuracy with ember alone."""

from __future__ import annotations

import os
import re
import socket
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


LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR")


def torchrun(*arguments: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``torchrun --nproc-per-node 2 arguments...`` on 127.0.0.1 and a free port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",  # what the torchrun command runs
            "--nproc-per-node",
            "2",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(port),
            "--monitor-interval",
            "0.1",
            *arguments,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


def test_digits_example_under_torchrun_as_the_readme_says(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    # README: torchrun --nproc-per-node 2 examples/digits.py (a few epochs here, to stay fast)
    result = torchrun(str(EXAMPLE), "--no-progress", "--epochs", "3", "--target", "0.5")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("best val accuracy") == 1  # rank 0 alone prints
    folder = Path(re.search(r"checkpoints in (\S+)", result.stdout).group(1))
    assert len(list(folder.glob("checkpoint_*_accuracy=*.pt"))) == 2  # one folder, all ranks


def test_patch_ignite_runner_as_the_program_torchrun_launches(tmp_path: Path) -> None:
    pytest.importorskip("ignite")
    script = tmp_path / "ranks.py"
    script.write_text(
        "import os, sys\n"
        "import ignite.engine\n"
        "import ember\n"
        "line = f\"rank {os.environ['RANK']} {ember.ignite_patched()} \"\n"
        'line += f"{ignite.engine.Engine.__module__} {sys.argv[1:]}\\n"\n'
        "os.write(1, line.encode())  # one write: the ranks share the pipe\n"
    )
    result = torchrun("-m", "ember.patch_ignite", str(script), "--flag", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = sorted(line for line in result.stdout.splitlines() if line.startswith("rank"))
    assert lines == [f"rank {rank} True ember.engine.engine ['--flag']" for rank in (0, 1)]
