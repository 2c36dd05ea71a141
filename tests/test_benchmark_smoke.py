"""The loop-overhead benchmark runs and writes its record (speed itself is judged by the benchmark)."""

from __future__ import annotations

import importlib
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


@pytest.mark.cpp
def test_quick_stack_benchmark_writes_table_json_and_chart(tmp_path: Path) -> None:
    pytest.importorskip("ember._core")
    pytest.importorskip("matplotlib")
    pytest.importorskip("tqdm")
    result = subprocess.run(
        [sys.executable, str(SCRIPT.with_name("stack.py")), "--quick", "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "benchmark-stack.json").read_text())
    assert (tmp_path / "benchmark-stack.png").stat().st_size > 0
    page = (tmp_path / "benchmark-stack.md").read_text()
    assert "host syncs per training iteration" in page
    assert "per epoch inside a run" in page
    results = record["results"]
    assert {"hand-written", "ember"} <= set(results)
    for measured in results.values():
        # One repeat in each of the quick run's two processes, pooled.
        assert measured["repeats"] == record["settings"]["processes"] == 2
        # Every stack stamped each of its epochs' ends.
        assert measured["epoch_inside"]["median_ms"] > 0
        assert "median_ms" in measured["per_run"]
    # The counts are fixed by the code (the stack's deferred reads): the hand-written loop reads
    # its loss at every iteration, ember's stack does not.
    assert results["hand-written"]["syncs"]["per_training_iteration"] == 1.0
    assert results["ember"]["syncs"]["per_training_iteration"] < 1.0


def test_stack_benchmark_splits_a_run_into_its_inside_epochs_and_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("torch")
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    split_run = importlib.import_module("stack").split_run
    # A run from 0 to 100 whose four epochs end at 30, 50, 70 and 95: the epochs inside it (the
    # second and the third) take 20 each; the run's start and end take 100 - 4 * 20.
    assert split_run(0.0, [30.0, 50.0, 70.0, 95.0], 100.0) == (20.0, 20.0)
    with pytest.raises(ValueError, match="no epoch inside"):
        split_run(0.0, [30.0, 50.0], 60.0)


def test_stack_benchmark_refuses_cuda_without_a_device(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    result = subprocess.run(
        [sys.executable, str(SCRIPT.with_name("stack.py")), "--device", "cuda"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "no CUDA device" in result.stderr


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


def test_a_fail_that_the_minimums_pass_says_the_machine_was_busy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("ember._core")
    import importlib.util

    spec = importlib.util.spec_from_file_location("loop_overhead", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "loop_overhead", bench)  # its dataclasses look it up
    spec.loader.exec_module(bench)
    on_medians = [bench.Target("check", "2.5x", False), bench.Target("other", "3.0x", False)]
    on_minimums = [bench.Target("check", "1.5x", True), bench.Target("other", "2.9x", False)]
    busy, failing = bench.target_lines(on_medians, on_minimums)
    assert busy.startswith("FAIL check") and busy.endswith(f"({bench.BUSY})")
    assert "busy" not in failing  # fails on both statistics: a real failure
