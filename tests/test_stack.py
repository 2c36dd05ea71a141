"""The training stack of ignite's tutorials on ember, as benchmarks/stack.py runs it: what the
user sees (the bar's running loss, the metrics at epoch end, a NaN stopping the run) is the same
with ember's deferred reads as with the exact, ignite-like modes, and the host syncs are counted
so that a new per-iteration read fails a test."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tqdm")

from ember.engine import Events, create_supervised_evaluator, create_supervised_trainer
from ember.engine.supervised import loss_as_float
from ember.handlers import LRScheduler, ModelCheckpoint, ProgressBar, TerminateOnNan
from ember.metrics import Accuracy, Loss, RunningAverage
from syncs import HostSyncCounter

BATCHES, BATCH, FEATURES, CLASSES = 10, 4, 8, 3
# The bar without times, so that its text depends only on counts and values; a mininterval of
# an hour: it draws when the run starts and when each epoch's bar closes, whatever the speed.
BAR_FORMAT = "{desc}[{n_fmt}/{total_fmt}]{postfix}"
NO_TIMED_REDRAW = 3600.0


def batches(count: int, seed: int) -> list[tuple[Any, Any]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(BATCH, FEATURES, generator=generator),
            torch.randint(0, CLASSES, (BATCH,), generator=generator),
        )
        for _ in range(count)
    ]


@dataclass
class Stack:
    trainer: Any
    evaluator: Any
    bar_text: io.StringIO
    validation: list[dict[str, float]]
    checkpoints: ModelCheckpoint


def build_stack(
    backend: str,
    directory: Path,
    exact: bool = False,
    loss_fn: Callable[..., Any] = torch.nn.functional.cross_entropy,
) -> Stack:
    """The tutorial stack; ``exact=True`` picks the ignite-like modes (a float output, eager
    RunningAverage, TerminateOnNan at every iteration)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 16), torch.nn.ReLU(), torch.nn.Linear(16, CLASSES)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.95)
    exact_output = {"output_transform": loss_as_float} if exact else {}
    trainer = create_supervised_trainer(model, optimizer, loss_fn, backend=backend, **exact_output)
    RunningAverage(output_transform=lambda loss: loss, deferred=not exact).attach(trainer, "loss")
    bar_text = io.StringIO()
    ProgressBar(
        persist=True, file=bar_text, bar_format=BAR_FORMAT, mininterval=NO_TIMED_REDRAW
    ).attach(trainer, metric_names=["loss"])
    trainer.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan(exact=exact))
    trainer.add_event_handler(Events.ITERATION_STARTED, LRScheduler(scheduler))
    evaluator = create_supervised_evaluator(
        model,
        metrics={"accuracy": Accuracy(), "loss": Loss(torch.nn.functional.cross_entropy)},
        backend=backend,
    )
    validation: list[dict[str, float]] = []
    eval_data = batches(3, seed=2)
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED, lambda _: validation.append(dict(evaluator.run(eval_data).metrics))
    )
    checkpoints = ModelCheckpoint(str(directory), "stack", n_saved=1, require_empty=False)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, checkpoints, {"model": model})
    return Stack(trainer, evaluator, bar_text, validation, checkpoints)


def bar_lines(stack: Stack) -> list[str]:
    return [line.strip() for line in stack.bar_text.getvalue().split("\r") if line.strip()]


def test_users_see_the_same_values_as_with_the_exact_modes(backend: str, tmp_path: Path) -> None:
    deferred = build_stack(backend, tmp_path / "deferred")
    exact = build_stack(backend, tmp_path / "exact", exact=True)
    data = batches(BATCHES, seed=1)
    deferred.trainer.run(data, max_epochs=3)
    exact.trainer.run(data, max_epochs=3)

    assert isinstance(deferred.trainer.state.output, torch.Tensor)
    assert isinstance(exact.trainer.state.output, float)
    assert float(deferred.trainer.state.output) == exact.trainer.state.output
    running_loss = deferred.trainer.state.metrics["loss"]
    assert isinstance(running_loss, float)
    # within float32 rounding: the deferred average runs in the loss's dtype on its device
    assert running_loss == pytest.approx(exact.trainer.state.metrics["loss"], rel=1e-6)
    assert deferred.validation == exact.validation
    assert len(deferred.validation) == 3
    # The bar shows the running loss, drawn at the same moments with the same values.
    lines = bar_lines(deferred)
    assert lines == bar_lines(exact)
    assert lines[-1] == f"Epoch [3/3]: [10/10], loss={running_loss:.3g}"


def test_the_default_stack_reads_values_only_when_somebody_looks(
    backend: str, tmp_path: Path
) -> None:
    stack = build_stack(backend, tmp_path)
    data = batches(BATCHES, seed=1)
    with HostSyncCounter() as counter:
        stack.trainer.run(data, max_epochs=2)
    with HostSyncCounter() as one_pass:
        stack.evaluator.run(batches(3, seed=2))
    assert one_pass.count == 2  # one per metric, at compute() (Accuracy, Loss)
    training_syncs = counter.count - 2 * one_pass.count
    # The bar's first draw and its close at each epoch's end (it reads the running loss), and
    # TerminateOnNan's read at each epoch's last iteration: nothing per iteration, so over the
    # benchmark's epochs of 100 iterations (1 + 2 + 2) / 200 = 0.025 per iteration.
    assert training_syncs == 1 + 2 + 2
    # The same stack in the exact modes reads the loss at every iteration (loss.item()).
    exact = build_stack(backend, tmp_path / "exact", exact=True)
    with HostSyncCounter() as exact_counter:
        exact.trainer.run(data, max_epochs=2)
    assert exact_counter.count - 2 * one_pass.count == 2 * BATCHES


def nan_loss_at(bad_iteration: int) -> Callable[..., Any]:
    calls = []

    def loss_fn(y_pred: Any, y: Any) -> Any:
        calls.append(1)
        loss = torch.nn.functional.cross_entropy(y_pred, y)
        return loss * math.nan if len(calls) == bad_iteration else loss

    return loss_fn


@pytest.mark.parametrize(("exact", "stop"), [(True, 14), (False, 20)])
def test_a_nan_loss_stops_the_run_before_its_epoch_completes(
    backend: str, tmp_path: Path, exact: bool, stop: int
) -> None:
    stack = build_stack(backend, tmp_path, exact=exact, loss_fn=nan_loss_at(14))
    stack.trainer.run(batches(BATCHES, seed=1), max_epochs=5)
    # exact: at the NaN iteration; deferred: at the epoch's last iteration (check_every=100)
    assert stack.trainer.state.iteration == stop
    assert len(stack.validation) == 1  # the epoch of the NaN was neither evaluated ...
    last = stack.checkpoints.last_checkpoint
    assert last is not None and last.name == "stack_model_10.pt"  # ... nor saved
