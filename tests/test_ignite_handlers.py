"""pytorch-ignite 0.5.5's own handlers and metrics on ember's Engine, on both loops.

Each test attaches an ignite handler or metric the way ignite's documentation does and checks
real values (file names, weights, counters, metric values computed by hand with torch), so a
handler that attaches but misbehaves fails. User code passes ember's ``Events``; ignite's handlers
use ignite's own ``Events`` internally (``Metric.attach``, ``ProgressBar.attach``, ``Checkpoint``'s
default global step, ``Timer.attach``'s defaults), which ember must therefore accept as well.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ignite")

import torch.nn.functional as F
from ignite.engine import Engine as IgniteEngine
from ignite.engine import Events as IgniteEvents
from ignite.handlers import (
    BasicTimeProfiler,
    Checkpoint,
    DiskSaver,
    EarlyStopping,
    HandlersTimeProfiler,
    LRScheduler,
    ModelCheckpoint,
    PiecewiseLinear,
    ProgressBar,
    TerminateOnNan,
    Timer,
    global_step_from_engine,
)
from ignite.handlers.checkpoint import CheckpointEvents
from ignite.metrics import Accuracy, Loss, RunningAverage
from ignite.metrics.metric import BatchFiltered
from torch import nn

from ember.engine import Engine, Events

MakeEngine = Callable[..., Any]


# ---------------------------------------------------------------------------- helpers
def _classification_data(
    seed: int = 0, sizes: tuple[int, ...] = (4, 4, 4, 4)
) -> list[tuple[Any, Any]]:
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for size in sizes:
        x = torch.randn(size, 4, generator=generator)
        y = torch.randint(0, 3, (size,), generator=generator)
        batches.append((x, y))
    return batches


def _model(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(4, 3)


def _train_step(model: nn.Module, optimizer: torch.optim.Optimizer) -> Callable[[Any, Any], float]:
    def step(engine: Any, batch: tuple[Any, Any]) -> float:
        x, y = batch
        model.train()
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def _eval_step(model: nn.Module) -> Callable[[Any, Any], tuple[Any, Any]]:
    def step(engine: Any, batch: tuple[Any, Any]) -> tuple[Any, Any]:
        x, y = batch
        model.eval()
        with torch.no_grad():
            return model(x), y

    return step


def _weights(model: nn.Module) -> dict[str, Any]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _assert_same_weights(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, rtol=0, atol=0)


def _by_hand(model: nn.Module, data: list[tuple[Any, Any]]) -> dict[str, float]:
    """Accuracy, cross-entropy and NLL over the whole of ``data``, computed with torch."""
    with torch.no_grad():
        logits = torch.cat([model(x) for x, _ in data])
        targets = torch.cat([y for _, y in data])
        return {
            "acc": (logits.argmax(dim=1) == targets).double().mean().item(),
            "ce": F.cross_entropy(logits, targets).item(),
            "nll": F.nll_loss(F.log_softmax(logits, dim=1), targets).item(),
        }


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ---------------------------------------------------------------------------- Checkpoint
def test_model_checkpoint_names_files_by_global_step_and_prunes(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    data = _classification_data(sizes=(4, 4))
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = make_engine(_train_step(model, optimizer))
    handler = ModelCheckpoint(
        tmp_path,
        filename_prefix="",
        n_saved=2,
        require_empty=False,
        global_step_transform=lambda engine, event: engine.state.iteration,
    )
    trainer.add_event_handler(Events.EPOCH_COMPLETED, handler, {"model": model})

    trainer.run(data, max_epochs=3)

    # Saved at iterations 2, 4 and 6; n_saved=2 removed model_2.pt.
    assert _files(tmp_path) == ["model_4.pt", "model_6.pt"]
    assert handler.last_checkpoint == tmp_path / "model_6.pt"
    saved = torch.load(tmp_path / "model_6.pt", weights_only=True)
    _assert_same_weights(saved, _weights(model))


def test_checkpoint_names_files_by_iteration_and_keeps_n_saved(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    data = _classification_data(sizes=(4, 4, 4))
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = make_engine(_train_step(model, optimizer))
    checkpoint = Checkpoint(
        {"model": model, "optimizer": optimizer, "trainer": trainer},
        DiskSaver(tmp_path, require_empty=False),
        filename_prefix="run",
        n_saved=2,
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=2), checkpoint)

    trainer.run(data, max_epochs=3)  # 9 iterations: saves at 2, 4, 6, 8

    # No global_step_transform: the global step is trainer.state.iteration.
    assert _files(tmp_path) == ["run_checkpoint_6.pt", "run_checkpoint_8.pt"]
    saved = torch.load(tmp_path / "run_checkpoint_8.pt", weights_only=True)
    assert set(saved) == {"model", "optimizer", "trainer"}
    assert saved["trainer"] == {"epoch_length": 3, "iteration": 8, "max_epochs": 3}


def test_checkpoint_load_objects_resumes_the_run(make_engine: MakeEngine, tmp_path: Path) -> None:
    data = _classification_data()  # 4 iterations an epoch

    model = _model(seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = make_engine(_train_step(model, optimizer))
    checkpoint = Checkpoint(
        {"model": model, "optimizer": optimizer, "trainer": trainer},
        DiskSaver(tmp_path, require_empty=False),
        n_saved=None,
    )
    trainer.add_event_handler(Events.EPOCH_COMPLETED, checkpoint)
    at_epoch_2: dict[str, Any] = {}
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED(once=2), lambda: at_epoch_2.update(_weights(model))
    )
    trainer.run(data, max_epochs=3)
    uninterrupted = _weights(model)
    assert _files(tmp_path) == ["checkpoint_12.pt", "checkpoint_4.pt", "checkpoint_8.pt"]

    fresh_model = _model(seed=1)
    fresh_optimizer = torch.optim.SGD(fresh_model.parameters(), lr=0.1, momentum=0.9)
    resumed = make_engine(_train_step(fresh_model, fresh_optimizer))
    Checkpoint.load_objects(
        {"model": fresh_model, "optimizer": fresh_optimizer, "trainer": resumed},
        str(tmp_path / "checkpoint_8.pt"),
    )
    assert (resumed.state.iteration, resumed.state.epoch) == (8, 2)
    assert (resumed.state.epoch_length, resumed.state.max_epochs) == (4, 3)
    _assert_same_weights(_weights(fresh_model), at_epoch_2)

    seen: list[int] = []
    resumed.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.iteration))
    started: list[int] = []
    resumed.add_event_handler(Events.STARTED, lambda: started.append(1))
    state = resumed.run(data)

    assert seen == [9, 10, 11, 12]
    # A run from a loaded state_dict starts a new run loop: STARTED fires, as in ignite.
    assert started == [1]
    assert (state.iteration, state.epoch) == (12, 3)
    # The momentum buffers came back too: the resumed run ends on the same weights.
    _assert_same_weights(_weights(fresh_model), uninterrupted)


def test_checkpoint_written_by_ignite_engine_loads_into_ember(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    data = _classification_data()
    model = _model(seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ignite_trainer = IgniteEngine(_train_step(model, optimizer))
    ignite_trainer.add_event_handler(
        IgniteEvents.EPOCH_COMPLETED(once=1),
        Checkpoint(
            {"model": model, "trainer": ignite_trainer}, DiskSaver(tmp_path, require_empty=False)
        ),
    )
    ignite_trainer.run(data, max_epochs=2)
    assert _files(tmp_path) == ["checkpoint_4.pt"]

    fresh_model = _model(seed=1)
    fresh_optimizer = torch.optim.SGD(fresh_model.parameters(), lr=0.1)
    trainer = make_engine(_train_step(fresh_model, fresh_optimizer))
    Checkpoint.load_objects(
        {"model": fresh_model, "trainer": trainer},
        torch.load(tmp_path / "checkpoint_4.pt", weights_only=True),
    )
    seen: list[tuple[int, int]] = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: seen.append((e.state.epoch, e.state.iteration))
    )
    state = trainer.run(data)

    assert seen == [(2, 5), (2, 6), (2, 7), (2, 8)]
    assert (state.iteration, state.epoch, state.max_epochs) == (8, 2, 2)
    # Plain SGD, same data, same starting point: the same weights as ignite's full run.
    _assert_same_weights(_weights(fresh_model), _weights(model))


def test_checkpoint_fires_saved_checkpoint_after_registering_it_mid_run(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    data = _classification_data(sizes=(4, 4))
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = make_engine(_train_step(model, optimizer))
    checkpoint = Checkpoint(
        {"model": model}, DiskSaver(tmp_path, require_empty=False), n_saved=None
    )
    trainer.add_event_handler(Events.EPOCH_COMPLETED, checkpoint)
    assert not trainer.has_registered_events(CheckpointEvents.SAVED_CHECKPOINT)

    saved: list[tuple[int, str | None]] = []

    def on_saved(engine: Any) -> None:
        last = checkpoint.last_checkpoint
        saved.append((engine.state.iteration, None if last is None else Path(last).name))

    def attach_once_registered(engine: Any) -> None:
        # Checkpoint registered CheckpointEvents during its first call, earlier in this event.
        if engine.has_registered_events(
            Checkpoint.SAVED_CHECKPOINT
        ) and not engine.has_event_handler(on_saved, Checkpoint.SAVED_CHECKPOINT):
            engine.add_event_handler(Checkpoint.SAVED_CHECKPOINT, on_saved)

    trainer.add_event_handler(Events.EPOCH_COMPLETED, attach_once_registered)
    trainer.run(data, max_epochs=3)

    assert trainer.has_registered_events(CheckpointEvents.SAVED_CHECKPOINT)
    # The first save (iteration 2) came before on_saved was attached.
    assert saved == [(4, "model_4.pt"), (6, "model_6.pt")]
    assert _files(tmp_path) == ["model_2.pt", "model_4.pt", "model_6.pt"]


# ---------------------------------------------------------------------------- Timer
def test_timer_average_counts_steps(make_engine: MakeEngine) -> None:
    pause_s = 0.002

    def step(engine: Any, batch: Any) -> None:
        time.sleep(pause_s)

    trainer = make_engine(step)
    timer = Timer(average=True)
    timer.attach(
        trainer,
        start=Events.EPOCH_STARTED,
        resume=Events.ITERATION_STARTED,
        pause=Events.ITERATION_COMPLETED,
        step=Events.ITERATION_COMPLETED,
    )
    per_epoch: list[tuple[float, float, float]] = []
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED,
        lambda: per_epoch.append((timer.value(), timer.step_count, timer.total)),
    )
    trainer.run(range(5), max_epochs=2)

    assert len(per_epoch) == 2
    for value, steps, total in per_epoch:
        assert steps == 5  # reset at every EPOCH_STARTED
        assert pause_s <= value < 1.0
        assert total >= 5 * pause_s
        assert value == pytest.approx(total / 5)


def test_timer_default_events_time_the_whole_run(make_engine: MakeEngine) -> None:
    pause_s = 0.002

    def step(engine: Any, batch: Any) -> None:
        time.sleep(pause_s)

    trainer = make_engine(step)
    timer = Timer().attach(trainer)  # ignite's defaults: start=STARTED, pause=COMPLETED
    trainer.run(range(4), max_epochs=2)

    assert not timer.running  # paused on COMPLETED
    assert 8 * pause_s <= timer.value() < 5.0


# ---------------------------------------------------------------------------- TerminateOnNan
def test_terminate_on_nan_stops_at_the_nan_iteration(make_engine: MakeEngine) -> None:
    def step(engine: Any, batch: Any) -> float:
        return float("nan") if engine.state.iteration == 3 else 1.0

    trainer = make_engine(step)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan())
    fired: list[tuple[str, int]] = []
    for event in (Events.TERMINATE, Events.EPOCH_COMPLETED, Events.COMPLETED):
        trainer.add_event_handler(
            event, lambda e, name=event.name: fired.append((name, e.state.iteration))
        )

    state = trainer.run(range(5), max_epochs=3)

    assert state.iteration == 3
    assert state.epoch == 1
    assert math.isnan(state.output)
    assert fired == [("TERMINATE", 3), ("COMPLETED", 3)]


def test_terminate_on_nan_checks_tensor_outputs(make_engine: MakeEngine) -> None:
    def step(engine: Any, batch: Any) -> Any:
        value = float("inf") if engine.state.iteration == 4 else 0.5
        return {"loss": torch.tensor([0.1, value])}

    trainer = make_engine(step)
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, TerminateOnNan(output_transform=lambda out: out["loss"])
    )
    completed: list[int] = []
    trainer.add_event_handler(Events.COMPLETED, lambda e: completed.append(e.state.iteration))
    trainer.run(range(3), max_epochs=3)

    assert trainer.state.iteration == 4
    assert trainer.state.epoch == 2
    assert completed == [4]


# ---------------------------------------------------------------------------- ProgressBar
def _progress_bar(stream: io.StringIO) -> ProgressBar:
    # mininterval=0 and miniters=1: every update is written, so the output is deterministic.
    return ProgressBar(persist=True, file=stream, mininterval=0, miniters=1, ncols=100)


def test_progress_bar_shows_epochs_iterations_and_output(make_engine: MakeEngine) -> None:
    stream = io.StringIO()
    trainer = make_engine(lambda engine, batch: batch * 0.5)
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: e.state.metrics.__setitem__("seen", e.state.iteration)
    )
    pbar = _progress_bar(stream)
    pbar.attach(trainer, metric_names=["seen"], output_transform=lambda out: {"half": out})

    state = trainer.run([1.0, 2.0, 3.0, 4.0], max_epochs=2)

    assert state.iteration == 8
    text = stream.getvalue()
    assert "Epoch [1/2]" in text
    assert "Epoch [2/2]" in text
    assert "[4/4]" in text
    assert "half=2" in text  # 4.0 * 0.5 at the last iteration
    assert "seen=8" in text
    assert pbar.pbar is None  # closed on the last EPOCH_COMPLETED


def test_progress_bar_after_terminate(make_engine: MakeEngine) -> None:
    stream = io.StringIO()
    trainer = make_engine(lambda engine, batch: float(batch))
    pbar = _progress_bar(stream)
    pbar.attach(trainer, output_transform=lambda out: {"out": out})
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=6), lambda e: e.terminate())
    completed: list[int] = []
    trainer.add_event_handler(Events.COMPLETED, lambda e: completed.append(e.state.iteration))

    state = trainer.run([10, 20, 30, 40], max_epochs=3)

    assert (state.iteration, state.epoch) == (6, 2)
    assert completed == [6]
    text = stream.getvalue()
    assert "Epoch [1/3]" in text
    assert "[4/4]" in text
    assert "Epoch [2/3]" in text
    assert "[2/4]" in text
    assert "out=20" in text
    assert "Epoch [3/3]" not in text
    # EPOCH_COMPLETED never came for epoch 2, so its bar is still open: close it by hand.
    assert pbar.pbar is not None
    assert pbar.pbar.n == 2
    pbar._close(trainer)


# ---------------------------------------------------------------------------- metrics
def test_accuracy_and_loss_match_torch(make_engine: MakeEngine) -> None:
    data = _classification_data(seed=3, sizes=(5, 4, 3))  # unequal batches: a weighted mean
    model = _model(seed=2)
    evaluator = make_engine(_eval_step(model))
    Accuracy().attach(evaluator, "acc")
    Loss(F.cross_entropy).attach(evaluator, "ce")
    Loss(F.nll_loss, output_transform=lambda out: (F.log_softmax(out[0], dim=1), out[1])).attach(
        evaluator, "nll"
    )

    metrics = evaluator.run(data).metrics

    expected = _by_hand(model, data)
    assert metrics["acc"] == pytest.approx(expected["acc"], abs=1e-12)
    assert metrics["ce"] == pytest.approx(expected["ce"], rel=1e-6)
    assert metrics["nll"] == pytest.approx(expected["nll"], rel=1e-6)
    assert metrics["ce"] == pytest.approx(metrics["nll"], rel=1e-6)


def test_metrics_are_reset_between_evaluator_runs(make_engine: MakeEngine) -> None:
    first = _classification_data(seed=4, sizes=(6,))
    second = _classification_data(seed=5, sizes=(2, 2))
    model = _model(seed=2)
    evaluator = make_engine(_eval_step(model))
    Accuracy().attach(evaluator, "acc")
    Loss(F.cross_entropy).attach(evaluator, "ce")

    first_metrics = dict(evaluator.run(first).metrics)
    second_metrics = dict(evaluator.run(second).metrics)

    assert first_metrics["ce"] == pytest.approx(_by_hand(model, first)["ce"], rel=1e-6)
    assert second_metrics["ce"] == pytest.approx(_by_hand(model, second)["ce"], rel=1e-6)
    assert second_metrics["acc"] == pytest.approx(_by_hand(model, second)["acc"], abs=1e-12)


def test_batch_filtered_metric_follows_ignites_filtered_event(make_engine: MakeEngine) -> None:
    # BatchFiltered(every=2) attaches at ignite's Events.ITERATION_COMPLETED(every=2): a filtered
    # event built by ignite, so ember must honour ignite's filter, not just its name.
    data = _classification_data(seed=9, sizes=(3, 5, 2, 6))
    model = _model(seed=9)
    evaluator = make_engine(_eval_step(model))
    accuracy = Accuracy()
    usage = BatchFiltered(every=2)
    accuracy.attach(evaluator, "acc_even", usage=usage)
    Loss(F.cross_entropy).attach(evaluator, "ce_even", usage=BatchFiltered(every=2))

    metrics = evaluator.run(data).metrics

    even_batches = data[1::2]
    assert accuracy.is_attached(evaluator, usage=usage)
    assert metrics["acc_even"] == pytest.approx(_by_hand(model, even_batches)["acc"], abs=1e-12)
    assert metrics["ce_even"] == pytest.approx(_by_hand(model, even_batches)["ce"], rel=1e-6)
    assert metrics["ce_even"] != pytest.approx(_by_hand(model, data)["ce"], rel=1e-6)


def test_metric_detach_removes_its_handlers(make_engine: MakeEngine) -> None:
    data = _classification_data(seed=10, sizes=(4, 4))
    model = _model(seed=10)
    evaluator = make_engine(_eval_step(model))
    accuracy = Accuracy()
    accuracy.attach(evaluator, "acc")
    Loss(F.cross_entropy).attach(evaluator, "ce")
    assert accuracy.is_attached(evaluator)
    assert "acc" in evaluator.run(data).metrics

    accuracy.detach(evaluator)

    assert not accuracy.is_attached(evaluator)
    evaluator.state.metrics.clear()
    metrics = evaluator.run(data).metrics
    assert "acc" not in metrics
    assert metrics["ce"] == pytest.approx(_by_hand(model, data)["ce"], rel=1e-6)


def test_running_average_of_the_output(make_engine: MakeEngine) -> None:
    outputs = [1.0, 3.0, 2.0, 8.0]
    trainer = make_engine(lambda engine, batch: {"loss": batch})
    RunningAverage(output_transform=lambda out: out["loss"], alpha=0.5).attach(trainer, "avg")
    history: list[float] = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: history.append(e.state.metrics["avg"])
    )

    trainer.run(outputs, max_epochs=2)

    expected, value = [], None
    for loss in outputs * 2:  # RunningBatchWise: not reset between epochs
        value = loss if value is None else 0.5 * value + 0.5 * loss
        expected.append(value)
    assert history == pytest.approx(expected)
    assert trainer.state.metrics["avg"] == pytest.approx(5.25)


def test_running_average_of_a_torch_loss(make_engine: MakeEngine) -> None:
    data = _classification_data(seed=6)
    model = _model(seed=6)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    losses: list[float] = []
    step = _train_step(model, optimizer)

    def recorded_step(engine: Any, batch: Any) -> float:
        loss = step(engine, batch)
        losses.append(loss)
        return loss

    trainer = make_engine(recorded_step)
    RunningAverage(output_transform=lambda loss: loss, alpha=0.9).attach(trainer, "loss")
    trainer.run(data, max_epochs=1)

    expected = losses[0]
    for loss in losses[1:]:
        expected = 0.9 * expected + 0.1 * loss
    assert len(losses) == 4
    assert trainer.state.metrics["loss"] == pytest.approx(expected)


# ---------------------------------------------------------------------------- LR schedules
def test_lr_scheduler_wraps_step_lr(make_engine: MakeEngine) -> None:
    data = _classification_data(sizes=(2, 2, 2, 2, 2))
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = LRScheduler(torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5))
    trainer = make_engine(_train_step(model, optimizer))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, scheduler)
    used: list[float] = []
    trainer.add_event_handler(
        Events.ITERATION_STARTED, lambda: used.append(optimizer.param_groups[0]["lr"])
    )

    trainer.run(data, max_epochs=2)  # 10 iterations, 10 scheduler steps

    # ignite's LRScheduler applies StepLR's initial lr on its first call, then steps it: after
    # k calls the lr is 0.1 * 0.5 ** ((k - 1) // 3).
    assert used == pytest.approx([0.1] * 4 + [0.05] * 3 + [0.025] * 3)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)


def test_piecewise_linear_schedule(make_engine: MakeEngine) -> None:
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = PiecewiseLinear(
        optimizer, "lr", milestones_values=[(0, 0.1), (10, 0.0)], save_history=True
    )
    trainer = make_engine(lambda engine, batch: None)
    trainer.add_event_handler(Events.ITERATION_STARTED, scheduler)
    used: list[float] = []
    trainer.add_event_handler(
        Events.ITERATION_STARTED, lambda: used.append(optimizer.param_groups[0]["lr"])
    )

    trainer.run(range(3), max_epochs=2)  # 6 iterations

    expected = [0.1 * (1 - i / 10) for i in range(6)]
    assert used == pytest.approx(expected)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    assert [h[0] for h in trainer.state.param_history["lr"]] == pytest.approx(expected)


# ---------------------------------------------------------------------------- isinstance checks
def test_handlers_that_demand_ignites_engine_class_refuse_ember(make_engine: MakeEngine) -> None:
    """EarlyStopping and the time profilers test ``isinstance(engine, ignite.engine.Engine)``.

    ember's Engine is a drop-in replacement, not a subclass of ignite's, so these three refuse
    it with a TypeError (use ember's own early stopping logic, or ``engine.terminate()`` from a
    handler, instead).
    """
    trainer = make_engine(lambda engine, batch: None)
    assert isinstance(trainer, Engine)
    assert not isinstance(trainer, IgniteEngine)

    with pytest.raises(TypeError, match="Argument trainer should be an instance of Engine"):
        EarlyStopping(patience=2, score_function=lambda engine: 0.0, trainer=trainer)
    with pytest.raises(TypeError, match=r"Argument engine should be ignite\.engine\.Engine"):
        BasicTimeProfiler().attach(trainer)
    with pytest.raises(TypeError, match=r"Argument engine should be ignite\.engine\.Engine"):
        HandlersTimeProfiler().attach(trainer)

    # Nothing was attached on the way to the error: the engine still runs cleanly.
    assert trainer.run(range(3)).iteration == 3


# ---------------------------------------------------------------------------- trainer + evaluator
def test_trainer_runs_evaluator_every_epoch(make_engine: MakeEngine, tmp_path: Path) -> None:
    train_data = _classification_data(seed=7, sizes=(4, 4, 4))
    val_data = _classification_data(seed=8, sizes=(5, 3))
    model = _model(seed=7)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    trainer = make_engine(_train_step(model, optimizer))
    evaluator = make_engine(_eval_step(model))
    Accuracy().attach(evaluator, "acc")
    Loss(F.cross_entropy).attach(evaluator, "ce")
    best = ModelCheckpoint(
        tmp_path,
        n_saved=1,
        require_empty=False,
        score_function=lambda engine: -engine.state.metrics["ce"],
        score_name="neg_ce",
        global_step_transform=global_step_from_engine(trainer),
    )
    evaluator.add_event_handler(Events.COMPLETED, best, {"model": model})

    reported: list[tuple[int, int, dict[str, float]]] = []
    by_hand: list[dict[str, float]] = []

    @trainer.on(Events.EPOCH_COMPLETED)
    def validate(engine: Any) -> None:
        state = evaluator.run(val_data)
        reported.append((engine.state.epoch, state.iteration, dict(state.metrics)))
        by_hand.append(_by_hand(model, val_data))

    state = trainer.run(train_data, max_epochs=3)

    assert (state.iteration, state.epoch) == (9, 3)
    assert [(epoch, iterations) for epoch, iterations, _ in reported] == [(1, 2), (2, 2), (3, 2)]
    for (_, _, metrics), expected in zip(reported, by_hand, strict=True):
        assert metrics["acc"] == pytest.approx(expected["acc"], abs=1e-12)
        assert metrics["ce"] == pytest.approx(expected["ce"], rel=1e-6)
    # Training changed the model between evaluations.
    assert len({metrics["ce"] for _, _, metrics in reported}) == 3
    # The best model by validation loss, named after the trainer's epoch.
    best_epoch = min(range(3), key=lambda i: reported[i][2]["ce"]) + 1
    best_score = -reported[best_epoch - 1][2]["ce"]
    assert _files(tmp_path) == [f"model_{best_epoch}_neg_ce={best_score:.4f}.pt"]
