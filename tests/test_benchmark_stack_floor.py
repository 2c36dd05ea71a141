"""stack_floor.py's split of each iteration into the step and what lies between two steps: the
clocks see every iteration and every step of each row (times themselves are not checked)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_each_row_times_every_iteration_and_the_step_inside_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("tqdm")
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    stack_floor = importlib.import_module("stack_floor")
    iterations = stack_floor.FULL.train_batches
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        clocks = stack_floor.measure_parts(1)
    finally:
        torch.set_num_threads(threads)

    assert list(clocks) == [*stack_floor.HAND_ROWS, *stack_floor.PART_ROWS]
    for clock in clocks.values():
        assert len(clock.iterations) == len(clock.steps) == 1  # the warm-up epoch dropped
        epoch_iterations, epoch_steps = clock.iterations[0], clock.steps[0]
        assert len(epoch_iterations) == len(epoch_steps) == iterations
        assert all(step <= whole for step, whole in zip(epoch_steps, epoch_iterations, strict=True))
    table = [line for line in stack_floor.parts_report(clocks, 1) if line.startswith("|")]
    assert len(table) == 2 + len(clocks)  # a header, its rule and a line per row
