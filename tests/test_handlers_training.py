"""ember.handlers' EarlyStopping, Timer and TerminateOnNan on both loops, on a tiny torch model."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from conftest import collect_garbage
from ember.engine import Engine, Events
from ember.engine.supervised import supervised_training_step
from ember.handlers import EarlyStopping, TerminateOnNan, Timer

MakeEngine = Callable[..., Any]


def regression(
    lr: float, seed: int = 0
) -> tuple[Callable[[Engine, Any], Any], torch.nn.Module, list[Any]]:
    """A linear regression step function, its model, and 4 batches of data."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    true_weight = torch.tensor([[1.0, -2.0, 0.5]])
    data = []
    for _ in range(4):
        x = torch.randn(8, 3, generator=generator)
        data.append((x, x @ true_weight.T))
    step = supervised_training_step(model, optimizer, torch.nn.functional.mse_loss)
    return step, model, data


def validation_loss(model: torch.nn.Module, data: list[Any]) -> float:
    with torch.no_grad():
        return sum(torch.nn.functional.mse_loss(model(x), y).item() for x, y in data) / len(data)


# ---------------------------------------------------------------------------- EarlyStopping
def test_early_stopping_stops_a_stalled_trainer(make_engine: MakeEngine) -> None:
    step, model, data = regression(lr=0.0)  # nothing learns: the score never improves
    trainer = make_engine(step)
    evaluator = make_engine(lambda engine, batch: None)

    @evaluator.on(Events.COMPLETED)
    def score(engine: Engine) -> None:
        engine.state.metrics["loss"] = validation_loss(model, data)

    handler = EarlyStopping(
        patience=2, score_function=lambda e: -e.state.metrics["loss"], trainer=trainer
    )
    evaluator.add_event_handler(Events.COMPLETED, handler)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: evaluator.run([0]))
    trainer.run(data, max_epochs=10)
    assert trainer.state.epoch == 3  # best at 1, no improvement at 2 and 3
    assert handler.counter == 2


def test_early_stopping_lets_a_learning_trainer_finish(make_engine: MakeEngine) -> None:
    step, model, data = regression(lr=0.05)
    trainer = make_engine(step)
    losses: list[float] = []

    def score(engine: Engine) -> float:
        losses.append(validation_loss(model, data))
        return -losses[-1]

    handler = EarlyStopping(patience=1, score_function=score, trainer=trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, handler)
    trainer.run(data, max_epochs=6)
    assert trainer.state.epoch == 6
    assert losses == sorted(losses, reverse=True)
    assert handler.counter == 0
    assert handler.best_score == -losses[-1]


def _drive(handler: Any, scores: list[float]) -> list[tuple[int, Any]]:
    trace = []
    iterator = iter(scores)
    handler.score_function = lambda engine: next(iterator)
    for _ in scores:
        handler(None)
        trace.append((handler.counter, handler.best_score))
    return trace


SEQUENCES = [
    ([1.0, 1.05, 1.08, 1.2, 1.19, 1.3], 0.1, False),
    ([1.0, 1.05, 1.08, 1.2, 1.19, 1.3], 0.1, True),
    ([0.5, 0.4, 0.6, 0.6, 0.61, 0.7, 0.9], 0.0, False),
    ([0.5, 0.4, 0.6, 0.6, 0.61, 0.7, 0.9], 0.05, True),
]


@pytest.mark.ignite
@pytest.mark.parametrize(("scores", "min_delta", "cumulative"), SEQUENCES)
def test_early_stopping_counts_like_ignite(
    make_engine: MakeEngine, scores: list[float], min_delta: float, cumulative: bool
) -> None:
    pytest.importorskip("ignite")
    from ignite.engine import Engine as IgniteEngine
    from ignite.handlers import EarlyStopping as IgniteEarlyStopping

    trainer = make_engine()
    ours = EarlyStopping(
        10, lambda e: 0.0, trainer, min_delta=min_delta, cumulative_delta=cumulative
    )
    theirs = IgniteEarlyStopping(
        10,
        lambda e: 0.0,
        IgniteEngine(lambda e, b: None),
        threshold=min_delta,
        cumulative=cumulative,
    )
    assert _drive(ours, scores) == _drive(theirs, scores)


def epochs_before_stopping(make_engine: MakeEngine, scores: list[float], **kwargs: Any) -> int:
    """Train with EarlyStopping(patience=3) scoring each epoch by the next of ``scores``."""
    trainer = make_engine()
    remaining = iter(scores)
    handler = EarlyStopping(3, lambda e: next(remaining), trainer, **kwargs)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, handler)
    trainer.run([0, 1], max_epochs=len(scores))
    return trainer.state.epoch


def test_early_stopping_terminates_after_patience(make_engine: MakeEngine) -> None:
    assert epochs_before_stopping(make_engine, [0.5, 0.4, 0.45, 0.3, 0.9, 0.9, 0.9, 0.9]) == 4
    scores = [0.5, 0.4, 0.45, 0.6, 0.5, 0.5, 0.5, 0.5]
    assert epochs_before_stopping(make_engine, scores, mode="max") == 7


def test_early_stopping_min_mode_nan_state_and_reset(make_engine: MakeEngine) -> None:
    trainer = make_engine()
    handler = EarlyStopping(2, lambda e: 0.0, trainer, mode="min", min_delta=0.1)
    assert _drive(handler, [1.0, 0.95, 0.8]) == [(0, 1.0), (1, 0.95), (0, 0.8)]
    nan_handler = EarlyStopping(2, lambda e: 0.0, trainer)
    # a NaN never improves (ignite would make it the best, after which nothing compares)
    assert _drive(nan_handler, [1.0, math.nan, 2.0, math.nan]) == [
        (0, 1.0),
        (1, 1.0),
        (0, 2.0),
        (1, 2.0),
    ]
    state = nan_handler.state_dict()
    other = EarlyStopping(2, lambda e: 0.0, trainer)
    other.load_state_dict(state)
    assert (other.counter, other.best_score) == (1, 2.0)
    other.reset()
    assert (other.counter, other.best_score) == (0, None)
    with pytest.raises(ValueError, match="best_score"):
        other.load_state_dict({"counter": 0})
    assert not trainer.should_terminate
    _drive(other, [1.0, 0.5, 0.5])
    assert trainer.should_terminate


NEGATIVE_SCORES = [-1.0, -1.05, -1.08, -1.09]  # each worse than the one before


def test_early_stopping_relative_threshold_with_negative_scores(make_engine: MakeEngine) -> None:
    """``threshold_mode="rel"`` asks for ``best + |best| * threshold``: worse negative scores
    are no improvement (ignite's ``best * (1 + threshold)`` lies below a negative best)."""
    trainer = make_engine()
    handler = EarlyStopping(2, lambda e: 0.0, trainer, threshold=0.1, threshold_mode="rel")
    assert _drive(handler, NEGATIVE_SCORES[:3]) == [(0, -1.0), (1, -1.0), (2, -1.0)]
    assert trainer.should_terminate


@pytest.mark.ignite
def test_ignite_counts_a_worse_negative_score_as_a_relative_improvement() -> None:
    pytest.importorskip("ignite")
    from ignite.engine import Engine as IgniteEngine
    from ignite.handlers import EarlyStopping as IgniteEarlyStopping

    trainer = IgniteEngine(lambda e, b: None)
    theirs = IgniteEarlyStopping(2, lambda e: 0.0, trainer, threshold=0.1, threshold_mode="rel")
    assert _drive(theirs, NEGATIVE_SCORES) == [(0, score) for score in NEGATIVE_SCORES]
    assert not trainer.should_terminate


def test_early_stopping_attach_resets_on_the_trainer(make_engine: MakeEngine) -> None:
    trainer, evaluator = make_engine(), make_engine()
    handler = EarlyStopping(5, lambda e: 1.0, trainer)
    handler.attach(evaluator, reset_engine=trainer)
    evaluator.run([0], max_epochs=1)
    evaluator.run([0], max_epochs=1)
    assert handler.counter == 1
    trainer.run([0])
    assert (handler.counter, handler.best_score) == (0, None)


def test_early_stopping_bad_arguments(make_engine: MakeEngine) -> None:
    trainer = make_engine()
    with pytest.raises(TypeError, match="terminate"):
        EarlyStopping(2, lambda e: 0.0, trainer=object())
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(0, lambda e: 0.0, trainer)
    with pytest.raises(ValueError, match="min_delta"):
        EarlyStopping(1, lambda e: 0.0, trainer, min_delta=-0.1)
    with pytest.raises(TypeError, match="score_function"):
        EarlyStopping(1, 0.5, trainer)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(1, lambda e: 0.0, trainer, mode="up")


# ---------------------------------------------------------------------------- Timer
class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr("ember.handlers.timing.perf_counter", fake)
    return fake


def test_timer_average_time_of_the_process_function(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    step, _model, data = regression(lr=0.01)

    def timed_step(engine: Engine, batch: Any) -> float:
        clock.now += 2.0  # the step takes 2 s
        return step(engine, batch)

    trainer = make_engine(timed_step)
    process = Timer(average=True).attach(
        trainer,
        start=Events.EPOCH_STARTED,
        resume=Events.ITERATION_STARTED,
        pause=Events.ITERATION_COMPLETED,
        step=Events.ITERATION_COMPLETED,
    )
    total = Timer().attach(trainer)  # STARTED to COMPLETED

    @trainer.on(Events.ITERATION_COMPLETED)
    def idle() -> None:  # 1 s between iterations, after the timer paused
        clock.now += 1.0

    trainer.run(data, max_epochs=2)
    assert process.value() == 2.0
    assert process.step_count == 4.0
    assert total.value() == 24.0
    assert not total.running
    assert process.total == 8.0


def test_timer_by_hand(clock: FakeClock) -> None:
    timer = Timer()
    clock.now += 3.0
    assert timer.value() == 3.0
    timer.pause()
    clock.now += 10.0
    assert timer.value() == 3.0
    timer.resume()
    timer.resume()  # no effect while running
    clock.now += 1.0
    assert timer.value() == 4.0
    average = Timer(average=True)
    clock.now += 6.0
    assert average.value() == 6.0  # no step yet: divided by 1
    average.step()
    average.step()
    assert average.value() == 3.0
    average.reset()
    assert average.value() == 0.0


def test_timer_real_clock(make_engine: MakeEngine) -> None:
    trainer = make_engine(lambda engine, batch: sum(range(20000)))
    timer = Timer(average=True).attach(
        trainer, start=Events.STARTED, pause=Events.COMPLETED, step=Events.ITERATION_COMPLETED
    )
    trainer.run(range(10))
    assert 0 < timer.value() < 1.0
    assert timer.step_count == 10


# ---------------------------------------------------------------------------- TerminateOnNan
def test_terminate_on_nan_stops_a_diverging_model(make_engine: MakeEngine) -> None:
    step, _model, data = regression(lr=10.0)  # diverges: inf, then nan
    losses: list[float] = []

    def recording_step(engine: Engine, batch: Any) -> float:
        losses.append(step(engine, batch))
        return losses[-1]

    trainer = make_engine(recording_step)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan())
    trainer.run(data, max_epochs=50)
    first_bad = next(i for i, loss in enumerate(losses, 1) if not math.isfinite(loss))
    assert trainer.state.iteration == first_bad == len(losses)
    assert all(math.isfinite(loss) for loss in losses[:-1])


# In a 3-iteration epoch: where the exact handler stops, and where the lazy one does (it reads
# tensors at the epoch's last iteration, Python numbers at once); None: it never stops.
@pytest.mark.parametrize(
    ("output", "exact_stop", "lazy_stop"),
    [
        (1.0, None, None),
        (float("inf"), 1, 1),
        (float("-inf"), 1, 1),
        (math.nan, 1, 1),
        (3, None, None),
        (complex(1, math.inf), 1, 1),
        ("nan", None, None),
        (None, None, None),
        (torch.tensor([1.0, 2.0]), None, None),
        (torch.tensor([1.0, math.nan]), 1, 3),
        (torch.tensor(math.inf, dtype=torch.float64), 1, 3),
        (torch.tensor([1, 2]), None, None),
        ((1.0, [2.0, {"loss": torch.tensor(math.nan)}]), 1, 3),
        ({"a": 1.0, "b": (torch.ones(3), 2.0)}, None, None),
        ([1.0, "text", None, {"x": [float("nan")]}], 1, 1),
        ((torch.tensor(math.nan), math.inf), 1, 1),
    ],
)
@pytest.mark.parametrize("exact", [True, False], ids=["exact", "lazy"])
def test_terminate_on_nan_outputs(
    make_engine: MakeEngine, output: Any, exact_stop: int | None, lazy_stop: int | None, exact: bool
) -> None:
    trainer = make_engine(lambda engine, batch: output)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan(exact=exact))
    trainer.run([0, 1, 2])
    stop = exact_stop if exact else lazy_stop
    assert trainer.state.iteration == (3 if stop is None else stop)
    assert trainer.should_terminate == (stop is not None)


def nan_at(bad_iteration: int) -> Callable[[Engine, Any], torch.Tensor]:
    """A step whose output is a 0-d loss tensor, NaN at ``bad_iteration``."""

    def step(engine: Engine, batch: Any) -> torch.Tensor:
        return torch.tensor(math.nan if engine.state.iteration == bad_iteration else 0.5)

    return step


@pytest.mark.parametrize(
    ("exact", "check_every", "epoch_length", "bad", "stop"),
    [
        (True, 100, 50, 7, 7),
        (False, 100, 50, 7, 50),  # read at the epoch's last iteration
        (False, 100, 50, 57, 100),
        (False, 16, 50, 7, 16),  # read every 16 iterations
        (False, 16, 50, 49, 50),  # ... and at the epoch's last one
        (False, 16, 50, 50, 50),
        (False, 1, 50, 7, 7),  # check_every=1: as exact, in groups of one
    ],
)
def test_terminate_on_nan_stops_within_the_documented_bound(
    make_engine: MakeEngine,
    caplog: pytest.LogCaptureFixture,
    exact: bool,
    check_every: int,
    epoch_length: int,
    bad: int,
    stop: int,
) -> None:
    trainer = make_engine(nan_at(bad))
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, TerminateOnNan(exact=exact, check_every=check_every)
    )
    epochs_completed: list[int] = []
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED, lambda e: epochs_completed.append(e.state.epoch)
    )
    trainer.run(range(epoch_length), max_epochs=3)
    assert trainer.state.iteration == stop
    assert stop - bad < check_every
    # the epoch of the NaN never completes: no evaluation or checkpoint runs on it
    assert epochs_completed == list(range(1, (bad - 1) // epoch_length + 1))
    assert f"of iteration {bad} contains NaN or Inf" in caplog.text


def test_terminate_on_nan_data_of_unknown_length_is_read_every_check_every(
    make_engine: MakeEngine,
) -> None:
    trainer = make_engine(nan_at(3))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan(check_every=8))
    trainer.run(iter(range(20)))  # no len(): the epoch's end is not known in advance
    assert trainer.state.iteration == 8


@pytest.mark.parametrize(("exact", "syncs"), [(True, 40), (False, 2)])
def test_terminate_on_nan_host_syncs(make_engine: MakeEngine, exact: bool, syncs: int) -> None:
    from syncs import HostSyncCounter

    trainer = make_engine(lambda engine, batch: torch.tensor(0.5))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan(exact=exact))
    with HostSyncCounter() as counter:
        trainer.run(range(20), max_epochs=2)
    assert counter.count == syncs  # exact: one per iteration; lazy: one per epoch


def test_terminate_on_nan_reads_the_last_outputs_when_the_run_ends(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """Data without len(): the run ends before the handler's next read. What it kept is read
    when the run ends (it was dropped, unread, at the next run's first iteration); the run
    completed, so it is not terminated. NaN at the second call of the first run and of the
    third."""
    values = iter([1.0, math.nan, 1.0, 1.0, 1.0, 1.0, 1.0, math.nan, 1.0])
    trainer = make_engine(lambda engine, batch: torch.tensor(next(values)))
    handler = TerminateOnNan(check_every=100)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, handler)
    trainer.run(iter(range(3)))
    assert trainer.state.iteration == 3 and not trainer.should_terminate
    assert caplog.text.count("NaN") == 1
    assert "Output 'tensor(nan)' of iteration 2 contains NaN or Inf, found at iteration 3" in (
        caplog.text
    )
    caplog.clear()
    trainer.run(iter(range(3)))
    assert "NaN" not in caplog.text
    # handler.check on COMPLETED reads what is left first; then nothing is left at the end.
    trainer.add_event_handler(Events.COMPLETED, handler.check)
    trainer.run(iter(range(3)))
    assert trainer.should_terminate  # check() terminates, as at any check
    assert caplog.text.count("NaN") == 1
    assert "Output 'tensor(nan)' of iteration 2 contains NaN or Inf, found at iteration 3" in (
        caplog.text
    )


def test_terminate_on_nan_arguments() -> None:
    with pytest.raises(TypeError, match="exact"):
        TerminateOnNan(exact=1)  # type: ignore[arg-type]
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="check_every"):
            TerminateOnNan(check_every=bad)  # type: ignore[arg-type]


def test_terminate_on_nan_output_transform(make_engine: MakeEngine) -> None:
    outputs = [(1.0, math.nan), (math.nan, 1.0)]
    trainer = make_engine(lambda engine, batch: outputs[batch])
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, TerminateOnNan(output_transform=lambda out: out[0])
    )
    trainer.run([0, 1, 0])
    assert trainer.state.iteration == 2
    with pytest.raises(TypeError, match="callable"):
        TerminateOnNan(output_transform=3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("outputs", "bad"),
    [
        # a plain loss NaN before a walked output: found among the plain ones
        ([0.5, math.nan, (0.5, [1.0]), 0.5], 2),
        # a walked tensor not finite before a plain NaN
        ([0.5, (0.5, [1.0, math.inf]), math.nan, 0.5], 2),
        ([(0.5,), 0.5, (math.nan,), math.nan], 3),
    ],
)
def test_terminate_on_nan_plain_and_walked_outputs_name_the_first_bad_iteration(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture, outputs: list[Any], bad: int
) -> None:
    def as_tensors(value: Any) -> Any:
        if isinstance(value, tuple):
            return tuple(torch.tensor(item) for item in value)
        return torch.tensor(value)

    trainer = make_engine(lambda engine, batch: as_tensors(outputs[batch]))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan())
    trainer.run(range(len(outputs)), max_epochs=2)
    assert trainer.state.iteration == len(outputs)  # read at the epoch's end
    assert f"of iteration {bad} contains NaN or Inf" in caplog.text


def test_terminate_on_nan_plain_losses_of_several_dtypes(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    from syncs import HostSyncCounter

    dtypes = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
    values = [1e30, 1e300, 6e4, 1e38]  # finite, each near its dtype's largest
    trainer = make_engine(lambda engine, batch: torch.tensor(values[batch], dtype=dtypes[batch]))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan())
    with HostSyncCounter() as counter:
        trainer.run(range(4), max_epochs=2)
    assert not trainer.should_terminate and counter.count == 2  # one read per epoch
    values[2] = 1e5  # inf in float16
    trainer.run(range(4), max_epochs=2)
    assert trainer.state.iteration == 4
    assert "of iteration 3 contains NaN or Inf" in caplog.text


def test_terminate_on_nan_finite_losses_whose_sum_overflows(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """A group's read sums the kept losses (in double precision) and looks at each one only when
    the sum is not finite: losses near double's largest, whose sum overflows, do not stop the
    run; a NaN among them still does, named by its iteration."""
    values = [1e308] * 8
    make = lambda: make_engine(  # noqa: E731
        lambda engine, batch: torch.tensor(values[batch], dtype=torch.float64)
    )
    trainer = make()
    trainer.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan())
    trainer.run(range(8))
    assert not trainer.should_terminate and trainer.state.iteration == 8
    values[5] = math.nan
    trainer = make()
    trainer.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan())
    trainer.run(range(8), max_epochs=2)
    assert trainer.should_terminate and trainer.state.iteration == 8
    assert "of iteration 6 contains NaN or Inf" in caplog.text


def test_terminate_on_nan_outputs_that_change_kind(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    class Marked(torch.Tensor):
        pass

    outputs = [
        lambda: "text",
        lambda: torch.tensor(0.5),
        lambda: torch.tensor(1, dtype=torch.int64),
        lambda: torch.tensor([0.5, 1.0]),
        lambda: torch.tensor(math.inf).as_subclass(Marked),  # not the plain kind: walked
        lambda: torch.tensor(math.nan, requires_grad=True),
        lambda: torch.tensor(0.5),
    ]
    trainer = make_engine(lambda engine, batch: outputs[batch]())
    trainer.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan())
    trainer.run(range(len(outputs)))
    assert trainer.state.iteration == len(outputs)
    assert "of iteration 5 contains NaN or Inf" in caplog.text


def test_terminate_on_nan_runs_with_another_epoch_length(make_engine: MakeEngine) -> None:
    losses = {2: [0.5] * 10, 3: [0.5, 0.5, math.nan, 0.5]}
    trainer = make_engine(lambda engine, batch: torch.tensor(batch))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan())
    trainer.run(losses[2], max_epochs=2)
    assert trainer.state.iteration == 20
    trainer.run(losses[3], max_epochs=2)  # a new run, epochs of 4: read at iteration 4
    assert trainer.state.iteration == 4 and trainer.should_terminate


def test_terminate_on_nan_on_a_filtered_event(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    # With every=3 the calls are at 3, 6, 9, ...: a NaN at 4 is never seen; a filtered handler
    # reads at each call, so a NaN is found at its own call, as ignite finds it.
    for bad, every, check_every, stop in [(4, 3, 2, None), (6, 3, 2, 6), (5, 5, 100, 5)]:
        trainer = make_engine(nan_at(bad))
        handler = TerminateOnNan(check_every=check_every)
        trainer.add_event_handler(Events.ITERATION_COMPLETED(every=every), handler)
        trainer.run(range(10), max_epochs=3)
        assert trainer.state.iteration == (30 if stop is None else stop)
        assert (f"of iteration {bad} contains NaN or Inf" in caplog.text) == (stop is not None)


def test_terminate_on_nan_settings_changed_mid_run(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    # exact and output_transform are read at every call, before the common output's fast path.
    trainer = make_engine(nan_at(6))
    handler = TerminateOnNan()
    trainer.add_event_handler(Events.ITERATION_COMPLETED, handler)

    @trainer.on(Events.ITERATION_STARTED)
    def change(engine: Engine) -> None:
        if engine.state.iteration == 3:  # the output as a vector: a flag, next to losses
            handler._output_transform = lambda loss: loss.reshape(1).repeat(2)
        if engine.state.iteration == 6:
            handler.exact = True

    trainer.run(range(10), max_epochs=2)
    assert trainer.state.iteration == 6
    assert "Output 'tensor([nan, nan])' of iteration 6 contains NaN or Inf" in caplog.text


def test_terminate_on_nan_losses_then_a_flag_in_one_read(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    outputs = [torch.tensor(0.5), torch.tensor([1.0, math.inf]), torch.tensor(0.25)]
    trainer = make_engine(lambda engine, batch: outputs[batch])
    trainer.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan())
    trainer.run(range(3), max_epochs=2)
    assert trainer.state.iteration == 3
    assert "Output 'a tensor with NaN or Inf' of iteration 2 contains NaN or Inf" in caplog.text


@pytest.mark.parametrize(
    "event",
    [
        Events.ITERATION_COMPLETED(every=3),
        Events.ITERATION_COMPLETED(once=9),
        Events.ITERATION_COMPLETED(event_filter=lambda engine, iteration: iteration in (3, 9)),
    ],
    ids=["every", "once", "event_filter"],
)
def test_terminate_on_nan_attached_with_a_filter_reads_each_call(
    make_engine: Callable[..., Engine], event: Any
) -> None:
    """A filter may skip the epoch's last iteration, where the kept outputs are read: the NaN
    of iteration 9 was never read and the run completed. Each call reads now, as ignite stops
    at that call."""
    torch = pytest.importorskip("torch")
    engine = make_engine(lambda e, batch: torch.tensor(math.nan if e.state.iteration == 9 else 1.0))
    engine.add_event_handler(event, TerminateOnNan())
    state = engine.run(range(10), max_epochs=2)
    assert state.iteration == 9


def test_terminate_on_nan_settings_changed_while_a_nan_is_kept(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """exact=True and check_every set from a handler while the NaN of iteration 3 was kept: the
    kept outputs were taken with no engine at hand (AttributeError), then never read in exact
    mode. They are read at the next call."""
    trainer = make_engine(nan_at(3))
    handler = TerminateOnNan()
    trainer.add_event_handler(Events.ITERATION_COMPLETED, handler)

    def change(engine: Engine) -> None:
        handler.check_every = 2
        handler.exact = True

    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=5), change)
    trainer.run(range(10))
    assert trainer.state.iteration == 6
    assert "of iteration 3 contains NaN or Inf" in caplog.text


def test_terminate_on_nan_shared_by_a_trainer_and_an_evaluator_inside_it(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """One instance on a trainer and on the evaluator that runs every 4 training iterations:
    the evaluator's iteration 1 looked like a new run and dropped the trainer's kept NaN of
    iteration 2, so the trainer ran on. Each call reads its output now (as ignite's does)."""
    torch = pytest.importorskip("torch")
    handler = TerminateOnNan()
    trainer = make_engine(lambda e, b: torch.tensor(math.nan if e.state.iteration == 2 else 1.0))
    evaluator = make_engine(lambda e, b: torch.tensor(1.0))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, handler)
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, handler)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=4), lambda _: evaluator.run([0, 1]))
    trainer.run(range(10), max_epochs=2)
    assert trainer.state.iteration == 2
    assert "of iteration 2 contains NaN or Inf" in caplog.text


def test_terminate_on_nan_on_one_engine_keeps_reading_in_groups(make_engine: MakeEngine) -> None:
    """Attached twice to the same engine, or to an engine after another was dropped, it still
    reads its outputs in groups (no sync per iteration)."""
    handler = TerminateOnNan()
    engine = make_engine(lambda e, b: b)
    engine.add_event_handler(Events.ITERATION_COMPLETED, handler)
    engine.remove_event_handler(handler, Events.ITERATION_COMPLETED)
    engine.add_event_handler(Events.ITERATION_COMPLETED, handler)
    # (limit 1 until a run's first call: it registers the read at the run's end)
    assert handler._sinks_outputs and not handler._read_each_call
    del engine
    collect_garbage()
    make_engine(lambda e, b: b).add_event_handler(Events.ITERATION_COMPLETED, handler)
    assert handler._sinks_outputs and not handler._read_each_call


# ------------------------------------------------ TerminateOnNan: a run another handler ends
def stopped_by_another_handler(
    make_engine: MakeEngine, step: Callable[[Engine, Any], Any], handler: TerminateOnNan, how: str
) -> tuple[Engine, list[tuple[str, int]]]:
    """An engine with ``handler`` on ITERATION_COMPLETED and, after it, a handler that ends the
    run at iteration 10 (``how``: an Engine method, or ``raise``); epochs of 50. Returns the
    engine and the TERMINATE, INTERRUPT, EPOCH_COMPLETED and COMPLETED events fired."""
    trainer = make_engine(step)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, handler)

    def stop(engine: Engine) -> None:
        if how == "raise":
            raise ValueError("another handler failed")
        if how == "terminate(skip_completed=True)":
            engine.terminate(skip_completed=True)
        else:
            getattr(engine, how)()

    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=10), stop)
    fired: list[tuple[str, int]] = []
    for event in (Events.TERMINATE, Events.INTERRUPT, Events.EPOCH_COMPLETED, Events.COMPLETED):
        trainer.add_event_handler(
            event, lambda e, name=event.name: fired.append((name, e.state.iteration))
        )
    return trainer, fired


@pytest.mark.parametrize("how", ["terminate", "terminate(skip_completed=True)"])
def test_terminate_on_nan_reads_what_it_kept_when_another_handler_terminates(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    """NaN at iteration 5, the next read due at 50; another handler terminates at 10. The kept
    NaN was never read (no warning). It is read once when the run ends; the run's outcome is
    the one the other handler asked for (terminate() is not called again)."""
    caplog.set_level(logging.INFO, logger="ember.engine.engine.Engine")
    handler = TerminateOnNan(check_every=100)
    trainer, fired = stopped_by_another_handler(make_engine, nan_at(5), handler, how)
    trainer.run(range(50), max_epochs=3)
    assert trainer.state.iteration == 10
    skip = how != "terminate"
    assert trainer.should_terminate == ("skip_completed" if skip else True)
    assert fired == [("TERMINATE", 10)] + ([] if skip else [("COMPLETED", 10)])
    assert caplog.text.count("contains NaN or Inf") == 1
    assert "Output 'tensor(nan)' of iteration 5 contains NaN or Inf, found at iteration 10" in (
        caplog.text
    )
    assert caplog.text.count("Terminate signaled") == 1  # the other handler's call only
    assert handler.values == [] and handler._pending == []


def test_terminate_on_nan_reads_what_it_kept_at_an_interrupt(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """interrupt() at 10 after a NaN at 5: the warning comes at the interrupt, and the handler
    terminates the engine, so that the run() that resumes it ends at once (TERMINATE,
    COMPLETED), as a terminate() called between the two run() calls does in ignite."""
    trainer, fired = stopped_by_another_handler(
        make_engine, nan_at(5), TerminateOnNan(check_every=100), "interrupt"
    )
    trainer.run(range(50), max_epochs=3)
    assert fired == [("INTERRUPT", 10)]
    assert "Output 'tensor(nan)' of iteration 5 contains NaN or Inf, found at iteration 10" in (
        caplog.text
    )
    assert trainer.should_terminate is True
    fired.clear()
    trainer.run()
    assert trainer.state.iteration == 10
    assert fired == [("TERMINATE", 10), ("COMPLETED", 10)]
    assert caplog.text.count("contains NaN or Inf") == 1


@pytest.mark.parametrize("how", ["terminate", "interrupt"])
def test_terminate_on_nan_run_ended_early_without_a_nan_costs_one_host_sync(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    """No NaN: the read at the stop is the one host sync of the run (none before it, none per
    iteration), nothing is logged, and an interrupted run resumes and completes."""
    from syncs import HostSyncCounter

    handler = TerminateOnNan(check_every=100)
    trainer, fired = stopped_by_another_handler(
        make_engine, lambda engine, batch: torch.tensor(0.5), handler, how
    )
    with HostSyncCounter() as counter:
        trainer.run(range(50), max_epochs=3)
    assert counter.count == 1
    assert "NaN" not in caplog.text
    if how == "interrupt":
        assert not trainer.should_terminate
        with HostSyncCounter() as counter:
            trainer.run()
        assert trainer.state.iteration == 150
        assert counter.count == 3  # at the three epochs' last iterations, as before
        assert fired[-1] == ("COMPLETED", 150)


def test_terminate_on_nan_run_ended_by_an_exception(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """Another handler raises at 10 after a NaN at 5: the run raises that error, and the kept
    NaN is reported (it may be the error's cause) rather than dropped. The engine is not
    terminated: a later run() resumes as it would have."""
    trainer, _ = stopped_by_another_handler(
        make_engine, nan_at(5), TerminateOnNan(check_every=100), "raise"
    )
    with pytest.raises(ValueError, match="another handler failed"):
        trainer.run(range(50), max_epochs=3)
    assert "Output 'tensor(nan)' of iteration 5 contains NaN or Inf, found at iteration 10" in (
        caplog.text
    )
    assert not trainer.should_terminate


def test_terminate_on_nan_read_failing_after_an_exception_keeps_the_run_error(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read at the end of a failed run fails too (a device error, say): the run still
    raises its own error; the failed read is logged."""
    handler = TerminateOnNan(check_every=100)
    trainer, _ = stopped_by_another_handler(make_engine, nan_at(5), handler, "raise")

    def unreadable(tensors: list[Any], only_values: bool) -> bool:
        raise RuntimeError("device lost")

    monkeypatch.setattr(handler, "_all_finite", unreadable)
    with pytest.raises(ValueError, match="another handler failed"):
        trainer.run(range(50), max_epochs=3)
    assert "could not be read after the run failed" in caplog.text
    assert "device lost" in caplog.text


def test_terminate_on_nan_exact_with_another_handler_stopping_later(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """exact=True: stopped at the NaN's own iteration, one warning, one host sync per
    iteration and nothing read at the run's end."""
    from syncs import HostSyncCounter

    trainer, fired = stopped_by_another_handler(
        make_engine, nan_at(5), TerminateOnNan(exact=True), "terminate"
    )
    with HostSyncCounter() as counter:
        trainer.run(range(50), max_epochs=3)
    assert trainer.state.iteration == 5
    assert fired == [("TERMINATE", 5), ("COMPLETED", 5)]
    assert counter.count == 5
    assert caplog.text.count("contains NaN or Inf") == 1
    assert "Output 'tensor(nan)' of iteration 5 contains NaN or Inf. Stop training" in caplog.text


def test_terminate_on_nan_after_terminate_epoch(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """terminate_epoch() at 10 after a NaN at 5: the cut epoch's EPOCH_COMPLETED runs (the
    handler is not called where the epoch was cut), and the NaN is read where the next epoch
    ends (iteration 60, counted from the cut through engine._iterations_before_epoch): late
    but never lost. exact=True stops at 5."""
    trainer, fired = stopped_by_another_handler(
        make_engine, nan_at(5), TerminateOnNan(check_every=100), "terminate_epoch"
    )
    trainer.run(range(50), max_epochs=3)
    assert fired == [("EPOCH_COMPLETED", 10), ("TERMINATE", 60), ("COMPLETED", 60)]
    assert "Output 'tensor(nan)' of iteration 5 contains NaN or Inf, found at iteration 60" in (
        caplog.text
    )


def test_terminate_on_nan_next_run_after_an_early_stop_still_reads_in_groups(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """After the read at a run's end, the next run's first call comes to Python (to register
    that run's read) and then the outputs are kept in groups again: two syncs for two epochs.
    check_every set between runs does not skip that first call."""
    from syncs import HostSyncCounter

    handler = TerminateOnNan(check_every=100)
    trainer = make_engine(lambda engine, batch: torch.tensor(batch))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, handler)
    stop = trainer.add_event_handler(Events.ITERATION_COMPLETED(once=10), lambda e: e.terminate())
    trainer.run([0.5] * 50, max_epochs=3)
    assert trainer.state.iteration == 10 and handler.limit == 1
    stop.remove()
    trainer.state.max_epochs = None  # a new run
    with HostSyncCounter() as counter:
        trainer.run([0.5] * 20, max_epochs=2)
    assert trainer.state.iteration == 40 and counter.count == 2
    assert handler.limit == 1  # armed again for the next run
    handler.check_every = 50
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=7), lambda e: e.terminate())
    trainer.state.max_epochs = None
    trainer.run([0.5, 0.5, math.nan, 0.5] * 25)
    assert trainer.state.iteration == 7
    assert "of iteration 3 contains NaN or Inf, found at iteration 7" in caplog.text


# ------------------------------------------------------- TerminateOnNan on ignite's Engine
@pytest.fixture
def ignite_engine() -> Any:
    """ignite's ``ignite.engine`` module (the test is skipped without ignite)."""
    pytest.importorskip("ignite")
    import ignite.engine

    return ignite.engine


@pytest.mark.ignite
def test_terminate_on_nan_on_ignite_engine_shared_by_a_trainer_and_an_evaluator(
    caplog: pytest.LogCaptureFixture, ignite_engine: Any
) -> None:
    """ignite's add_event_handler does not call _attached_to: the handler compares the
    calling engine at each call and reads at each call once a second engine calls it. Before,
    the evaluator's outputs mixed with the trainer's and the trainer's NaN was dropped."""

    handler = TerminateOnNan()
    trainer = ignite_engine.Engine(
        lambda e, b: torch.tensor(math.nan if e.state.iteration == 2 else 1.0)
    )
    evaluator = ignite_engine.Engine(lambda e, b: torch.tensor(1.0))
    trainer.add_event_handler(ignite_engine.Events.ITERATION_COMPLETED, handler)
    evaluator.add_event_handler(ignite_engine.Events.ITERATION_COMPLETED, handler)
    trainer.add_event_handler(
        ignite_engine.Events.ITERATION_COMPLETED(every=4), lambda _: evaluator.run([0, 1])
    )
    trainer.run(range(10), max_epochs=2)
    # read for the trainer at the evaluator's first call, during the trainer's iteration 4
    assert trainer.state.iteration == 4
    assert "of iteration 2 contains NaN or Inf, found at iteration 4" in caplog.text


@pytest.mark.ignite
def test_terminate_on_nan_on_ignite_engine_with_a_filter(
    caplog: pytest.LogCaptureFixture, ignite_engine: Any
) -> None:
    """every=3 on ignite's Engine: the calls (3, 6, 9, 12, ...) miss the epochs' last
    iterations (10, 20), where kept outputs are read. The filter is found in the engine's
    registry at the first call, and each call reads: the NaN of 9 stops the run at 9."""

    engine = ignite_engine.Engine(
        lambda e, b: torch.tensor(math.nan if e.state.iteration == 9 else 1.0)
    )
    engine.add_event_handler(ignite_engine.Events.ITERATION_COMPLETED(every=3), TerminateOnNan())
    engine.run(range(10), max_epochs=2)
    assert engine.state.iteration == 9
    assert "of iteration 9 contains NaN or Inf. Stop training" in caplog.text


@pytest.mark.ignite
def test_terminate_on_nan_on_ignite_engine_trusts_only_weak_references_as_parents(
    ignite_engine: Any,
) -> None:
    """Looking for its own filter, the handler reads only weak references named ``_parent``
    (what ignite's filtered entries hold): another handler's ``_parent`` method, here one that
    names the handler, does not make it take itself for filtered."""
    handler = TerminateOnNan()

    class Stranger:
        def _parent(self) -> Any:
            return handler

        def __call__(self, engine: Any) -> None:
            pass

    engine = ignite_engine.Engine(lambda e, b: torch.tensor(1.0))
    engine.add_event_handler(ignite_engine.Events.ITERATION_COMPLETED, handler)
    engine.add_event_handler(ignite_engine.Events.ITERATION_COMPLETED, Stranger())
    engine.run(range(4), max_epochs=1)
    assert engine.state.iteration == 4 and not handler._read_each_call


@pytest.mark.ignite
def test_terminate_on_nan_on_ignite_engine_reads_in_groups(
    caplog: pytest.LogCaptureFixture, ignite_engine: Any
) -> None:
    """On one ignite Engine, unfiltered: one host sync per epoch, and a NaN is found at the
    epoch's end, as on ember's Engine."""

    from syncs import HostSyncCounter

    engine = ignite_engine.Engine(lambda e, b: torch.tensor(0.5))
    engine.add_event_handler(ignite_engine.Events.ITERATION_COMPLETED, TerminateOnNan())
    with HostSyncCounter() as counter:
        engine.run(range(20), max_epochs=2)
    assert counter.count == 2
    engine = ignite_engine.Engine(nan_at(7))
    engine.add_event_handler(ignite_engine.Events.ITERATION_COMPLETED, TerminateOnNan())
    engine.run(range(20), max_epochs=2)
    assert engine.state.iteration == 20
    assert "of iteration 7 contains NaN or Inf, found at iteration 20" in caplog.text


def test_terminate_on_nan_evaluator_stopped_early_inside_a_trainer(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """An evaluator with its own handler, run by the trainer and terminated by another of its
    handlers at its iteration 3 after a NaN at 2: the read at the end of the outermost run (the
    trainer's) comes after the evaluator's next run starts, which used to drop the NaN unread.
    It is read there and reported (nothing is terminated: that run is over)."""
    evaluator = make_engine(
        lambda e, b: torch.tensor(math.nan if e.state.iteration == 2 and not reported else 1.0)
    )
    reported: list[int] = []
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan())
    evaluator.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda e: e.terminate())
    evaluator.add_event_handler(Events.COMPLETED, lambda e: reported.append(e.state.iteration))
    trainer = make_engine(lambda e, b: b)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: evaluator.run(range(5)))
    trainer.run(range(4), max_epochs=2)
    assert reported == [3, 3]
    assert caplog.text.count("contains NaN or Inf") == 1
    assert "Output 'tensor(nan)' of iteration 2 of an earlier run contains NaN or Inf" in (
        caplog.text
    )


@pytest.mark.ignite
def test_terminate_on_nan_on_ignite_engine_run_stopped_early(
    caplog: pytest.LogCaptureFixture, ignite_engine: Any
) -> None:
    """ignite's run() has no end-of-run callback: the NaN of iteration 5, kept when another
    handler terminated at 10, is reported at the next run's first read, not dropped."""

    first_run = [True]
    engine = ignite_engine.Engine(
        lambda e, b: torch.tensor(math.nan if e.state.iteration == 5 and first_run[0] else 1.0)
    )
    engine.add_event_handler(ignite_engine.Events.ITERATION_COMPLETED, TerminateOnNan())
    stop = engine.add_event_handler(
        ignite_engine.Events.ITERATION_COMPLETED(once=10), lambda e: e.terminate()
    )
    engine.run(range(50), max_epochs=3)
    assert engine.state.iteration == 10 and "NaN" not in caplog.text
    stop.remove()
    first_run[0] = False
    engine.state.max_epochs = None
    engine.run(range(50), max_epochs=1)
    assert engine.state.iteration == 50
    assert caplog.text.count("contains NaN or Inf") == 1
    assert "Output 'tensor(nan)' of iteration 5 of an earlier run contains NaN or Inf" in (
        caplog.text
    )
