"""ember.handlers.ProgressBar on both loops: what it shows, how often it draws, how it closes.

The bar draws to a StringIO; tqdm separates redraws with ``\\r`` and ends a closed persistent
bar with ``\\n``, so the text shows every state that was drawn.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("tqdm")
torch = pytest.importorskip("torch")

from ember.engine import Engine, Events
from ember.engine.supervised import supervised_training_step
from ember.handlers import ProgressBar

MakeEngine = Callable[..., Any]


def drawn(stream: io.StringIO) -> list[str]:
    """Every state drawn, in order (tqdm's ``\\r`` and ``\\n`` separate them)."""
    return [part for part in re.split(r"[\r\n]", stream.getvalue()) if part.strip()]


def finished_lines(stream: io.StringIO) -> list[str]:
    """The last state of each closed persistent bar."""
    lines = stream.getvalue().split("\n")[:-1]
    return [line.rsplit("\r", 1)[-1] for line in lines]


def tiny_training() -> tuple[Callable[[Engine, Any], Any], list[Any]]:
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = [(torch.randn(4, 2), torch.randn(4, 1)) for _ in range(5)]
    return supervised_training_step(model, optimizer, torch.nn.functional.mse_loss), data


# ---------------------------------------------------------------------------- what it shows
def test_shows_epochs_counts_output_and_metrics(make_engine: MakeEngine) -> None:
    step, data = tiny_training()
    trainer = make_engine(step)
    losses: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output))

    @trainer.on(Events.ITERATION_COMPLETED)
    def metric(engine: Engine) -> None:
        engine.state.metrics["seen"] = engine.state.iteration

    stream = io.StringIO()
    pbar = ProgressBar(persist=True, file=stream)
    pbar.attach(trainer, metric_names=["seen"], output_transform=lambda loss: {"loss": loss})
    trainer.run(data, max_epochs=3)
    lines = finished_lines(stream)
    assert len(lines) == 3
    for epoch, line in enumerate(lines, 1):
        assert line.startswith(f"Epoch [{epoch}/3]: [5/5] 100%|")
        assert f"seen={epoch * 5}" in line
        assert f"loss={losses[epoch * 5 - 1]:.3g}" in line
    assert pbar.pbar is None


def test_single_epoch_says_iteration_and_shows_a_value_as_output(make_engine: MakeEngine) -> None:
    trainer = make_engine(lambda engine, batch: torch.tensor(batch * 1.5))
    stream = io.StringIO()
    ProgressBar(persist=True, file=stream).attach(trainer, output_transform=lambda x: x)
    trainer.run([1, 2, 3, 4])
    lines = finished_lines(stream)
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith("Iteration: [4/4] 100%|")
    assert "output=6" in line


def test_all_metrics_nested_values_and_state_attributes(make_engine: MakeEngine) -> None:
    trainer = make_engine()

    @trainer.on(Events.ITERATION_COMPLETED)
    def metrics(engine: Engine) -> None:
        engine.state.metrics = {
            "acc": 0.5,
            "per_class": torch.tensor([0.25, 0.75]),
            "nested": {"a": 1},
            "note": "ok",
            "skipped": object(),
        }
        engine.state.alpha = 3

    stream = io.StringIO()
    ProgressBar(persist=True, file=stream, desc="Train").attach(
        trainer, metric_names="all", state_attributes=["alpha"]
    )
    # A value it cannot show is named once (as ignite warns), not at every redraw.
    with pytest.warns(
        UserWarning, match="can not show 'skipped': a value of type object"
    ) as record:
        trainer.run([0, 1], max_epochs=2)
    assert len(record) == 1
    last = finished_lines(stream)[-1]
    assert last.startswith("Train [2/2]: [2/2] 100%|")
    for text in (
        "acc=0.5",
        "per_class_0=0.25",
        "per_class_1=0.75",
        "nested_a=1",
        "note=ok",
        "alpha=3",
    ):
        assert text in last
    assert "skipped" not in last


def test_missing_metric_warns_once(make_engine: MakeEngine) -> None:
    trainer = make_engine()
    ProgressBar(file=io.StringIO()).attach(trainer, metric_names=["absent"])
    with pytest.warns(UserWarning, match="'absent' is missing") as record:
        trainer.run([0, 1, 2], max_epochs=2)
    assert len(record) == 1


def test_epoch_level_bar(make_engine: MakeEngine) -> None:
    trainer = make_engine()
    stream = io.StringIO()
    ProgressBar(persist=True, file=stream).attach(
        trainer, event_name=Events.EPOCH_COMPLETED, closing_event_name=Events.COMPLETED
    )
    trainer.run([0, 1], max_epochs=4)
    assert len(finished_lines(stream)) == 1
    assert finished_lines(stream)[0].startswith("Epoch: [4/4] 100%|")


def test_data_of_unknown_length(make_engine: MakeEngine) -> None:
    def numbers() -> Iterator[int]:
        yield from range(6)

    trainer = make_engine()
    stream = io.StringIO()
    ProgressBar(persist=True, file=stream, bar_format=None).attach(trainer)
    trainer.run(numbers())
    assert "6it" in finished_lines(stream)[0]


def test_log_message_and_context_manager(make_engine: MakeEngine) -> None:
    trainer = make_engine()
    stream = io.StringIO()
    with ProgressBar(persist=True, file=stream) as pbar:
        pbar.attach(trainer, closing_event_name=Events.COMPLETED)

        @trainer.on(Events.ITERATION_COMPLETED(once=2))
        def say(engine: Engine) -> None:
            pbar.log_message("half way")
            engine.interrupt()

        trainer.run([0, 1, 2, 3])
        assert trainer.state.iteration == 2
        assert "half way\n" in stream.getvalue()
    assert pbar.pbar is None  # closed at INTERRUPT (and by the with block anyway)
    assert finished_lines(stream)[-1].startswith("Iteration: [2/4]")


# ---------------------------------------------------------------------------- how often
class CountingBar:
    """Wraps the tqdm class and counts the draws it is asked for (tqdm's ``update`` refreshes by
    itself: that refresh is part of the same draw)."""

    def __init__(self, cls: Any) -> None:
        self.cls = cls
        self.created = 0
        self.draws = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.created += 1
        bar = self.cls(*args, **kwargs)
        original_update, original_refresh = bar.update, bar.refresh
        in_update = False

        def update(n: int = 1) -> Any:
            nonlocal in_update
            self.draws += 1
            in_update = True
            try:
                return original_update(n)
            finally:
                in_update = False

        def refresh(*a: Any, **k: Any) -> Any:
            if not in_update:
                self.draws += 1
            return original_refresh(*a, **k)

        bar.update, bar.refresh = update, refresh
        return bar


SECONDS_PER_ITERATION = 1e-5


def test_fast_loop_draws_rarely_and_ends_with_exact_counts(
    make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = make_engine()
    # The bar's clock says the loop takes 10 us per iteration, however busy the machine is.
    monkeypatch.setattr(
        "ember.handlers.tqdm_logger.perf_counter",
        lambda: trainer.state.iteration * SECONDS_PER_ITERATION,
    )
    stream = io.StringIO()
    pbar = ProgressBar(persist=True, file=stream, mininterval=0.1)
    counting = CountingBar(pbar.pbar_cls)
    pbar.pbar_cls = counting
    pbar.attach(trainer)
    trainer.run(data=None, max_epochs=2, epoch_length=60_000)
    elapsed = trainer.state.iteration * SECONDS_PER_ITERATION  # 1.2 s on the bar's clock
    assert counting.created == 2
    assert counting.draws <= elapsed / 0.1 + 2 * 2  # a draw per 0.1 s, plus one per epoch end
    assert counting.draws >= elapsed / 0.1 - 2 * 2  # and it does draw as time passes
    assert [line[:30] for line in finished_lines(stream)] == [
        "Epoch [1/2]: [60000/60000] 100",
        "Epoch [2/2]: [60000/60000] 100",
    ]


def _slow_loop_bar(
    make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch, removed_at: int | None = None
) -> tuple[Any, Any, io.StringIO, list[int]]:
    """A bar on a loop whose clock says 400 us per iteration (a real training step), with the
    iterations at which the bar's handler ran; the user removes it at ``removed_at``."""
    trainer = make_engine()
    monkeypatch.setattr(
        "ember.handlers.tqdm_logger.perf_counter", lambda: trainer.state.iteration * 4e-4
    )
    stream = io.StringIO()
    pbar = ProgressBar(persist=True, file=stream, mininterval=0.1)
    pbar.attach(trainer)
    tracker = pbar._trackers[0]
    ticks: list[int] = []
    tick = tracker.tick

    def counted_tick() -> None:
        ticks.append(trainer.state.iteration)
        tick()

    monkeypatch.setattr(tracker, "tick", counted_tick)
    trainer.remove_event_handler(tick, Events.ITERATION_COMPLETED)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, tracker.tick)
    if removed_at is not None:
        trainer.add_event_handler(
            Events.ITERATION_COMPLETED(once=removed_at),
            lambda e: e.remove_event_handler(tracker.tick, tracker.registered_event),
        )
    return trainer, tracker, stream, ticks


def test_slow_loop_filters_the_handler_where_filters_are_free(
    make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    trainer, tracker, stream, ticks = _slow_loop_bar(make_engine, monkeypatch)
    trainer.run(data=None, max_epochs=2, epoch_length=1000)
    if backend == "cpp":
        # 62 events per target interval (25 ms): every=32 after the first draw.
        assert tracker.every == 32
        assert len(ticks) < 2000 / 32 + 5
    else:  # the Python loop calls a filter's wrapper at every event: the bar stays unfiltered
        # After its trial of a filter, which did not make the loop faster.
        assert tracker.every == 1
        assert ticks[-100:] == list(range(1901, 2001))
    assert [line[:28] for line in finished_lines(stream)] == [
        "Epoch [1/2]: [1000/1000] 100",
        "Epoch [2/2]: [1000/1000] 100",
    ]


def test_slow_loop_bar_removed_by_the_user_stays_removed(
    make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer, tracker, stream, ticks = _slow_loop_bar(make_engine, monkeypatch, removed_at=300)
    trainer.run(data=None, max_epochs=2, epoch_length=1000)
    assert ticks and max(ticks) <= 300
    assert not trainer.has_event_handler(tracker.tick)
    # The closing handlers still draw the final counts.
    assert [line[:28] for line in finished_lines(stream)] == [
        "Epoch [1/2]: [1000/1000] 100",
        "Epoch [2/2]: [1000/1000] 100",
    ]


# ---------------------------------------------------------------------------- how it closes
def test_terminate_mid_epoch_closes_with_the_count_reached(make_engine: MakeEngine) -> None:
    trainer = make_engine()
    stream = io.StringIO()
    pbar = ProgressBar(persist=True, file=stream)
    pbar.attach(trainer)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=13), lambda e: e.terminate())
    trainer.run(range(10), max_epochs=3)
    assert pbar.pbar is None
    assert [line[:24] for line in finished_lines(stream)] == [
        "Epoch [1/3]: [10/10] 100",
        "Epoch [2/3]: [3/10]  30%",
    ]


class BoomError(Exception):
    pass


def _failing_run(
    make_engine: MakeEngine, with_bar: bool, where: str, user_handler: str | None
) -> tuple[Any, list[BaseException], io.StringIO, ProgressBar | None]:
    error = BoomError("boom")

    def step(engine: Engine, batch: int) -> int:
        if where == "iteration" and engine.state.iteration == 3:
            raise error
        return batch

    trainer = make_engine(step)
    stream = io.StringIO()
    pbar = None
    if with_bar:
        pbar = ProgressBar(persist=True, file=stream)
        pbar.attach(trainer)
    if where == "epoch":
        trainer.add_event_handler(
            Events.EPOCH_STARTED(once=2), lambda e: (_ for _ in ()).throw(error)
        )
    seen: list[BaseException] = []
    if user_handler is not None:

        @trainer.on(Events.EXCEPTION_RAISED)
        def handle(engine: Engine, exception: BaseException) -> None:
            seen.append(exception)
            if user_handler == "reraise":
                raise exception

    outcome: Any
    try:
        trainer.run(range(5), max_epochs=3)
        outcome = ("returned", trainer.state.iteration)
    except BoomError as exc:
        outcome = ("raised", exc is error, trainer.state.iteration)
    return outcome, seen, stream, pbar


@pytest.mark.parametrize("where", ["iteration", "epoch"])
@pytest.mark.parametrize("user_handler", [None, "swallow", "reraise"])
def test_exceptions_behave_as_without_the_bar(
    make_engine: MakeEngine, where: str, user_handler: str | None
) -> None:
    expected, expected_seen, _, _ = _failing_run(make_engine, False, where, user_handler)
    outcome, seen, stream, pbar = _failing_run(make_engine, True, where, user_handler)
    assert outcome == expected
    assert len(seen) == len(expected_seen)
    assert all(isinstance(e, BoomError) for e in seen)
    if user_handler is None:
        assert outcome[:2] == ("raised", True)  # the same object reaches the caller
    assert pbar is not None
    assert pbar.pbar is None
    assert stream.getvalue().endswith("\n")


@pytest.mark.parametrize("user_handler", [None, "swallow"])
def test_two_bars_on_one_engine_close_and_keep_the_exception_behaviour(
    make_engine: MakeEngine, user_handler: str | None
) -> None:
    error = BoomError()

    def step(engine: Engine, batch: int) -> int:
        if engine.state.iteration == 3:
            raise error
        return batch

    trainer = make_engine(step)
    bars = [ProgressBar(file=io.StringIO()), ProgressBar(file=io.StringIO())]
    bars[0].attach(trainer)
    bars[1].attach(trainer, event_name=Events.EPOCH_COMPLETED, closing_event_name=Events.COMPLETED)
    seen: list[BaseException] = []
    if user_handler:
        trainer.add_event_handler(Events.EXCEPTION_RAISED, lambda e, exc: seen.append(exc))
        trainer.run(range(5), max_epochs=2)
        assert seen == [error]
        assert trainer.state.epoch == 2
    else:
        with pytest.raises(BoomError) as info:
            trainer.run(range(5), max_epochs=2)
        assert info.value is error
    assert [bar.pbar for bar in bars] == [None, None]


def test_exception_reaches_the_caller_with_its_traceback(make_engine: MakeEngine) -> None:
    def step(engine: Engine, batch: int) -> None:
        raise KeyError("missing")

    trainer = make_engine(step)
    ProgressBar(file=io.StringIO()).attach(trainer)
    with pytest.raises(KeyError, match="missing") as info:
        trainer.run([0])
    assert any(entry.name == "step" for entry in info.traceback)


def test_a_failed_run_does_not_leave_a_bar_for_the_next(make_engine: MakeEngine) -> None:
    fail = [True]

    def step(engine: Engine, batch: int) -> int:
        if fail[0] and engine.state.iteration == 2:
            raise BoomError
        return batch

    trainer = make_engine(step)
    stream = io.StringIO()
    pbar = ProgressBar(persist=True, file=stream)
    pbar.attach(trainer)
    with pytest.raises(BoomError):
        trainer.run(range(4))
    fail[0] = False
    trainer.run(range(4))
    assert finished_lines(stream)[-1].startswith("Iteration: [4/4] 100%")
    assert pbar.pbar is None


# ---------------------------------------------------------------------------- bad input
def test_attach_rejects_bad_arguments(make_engine: MakeEngine) -> None:
    trainer = make_engine()
    pbar = ProgressBar(file=io.StringIO())
    with pytest.raises(ValueError, match="should not be a filtered event"):
        pbar.attach(trainer, closing_event_name=Events.EPOCH_COMPLETED(every=2))
    with pytest.raises(ValueError, match="should be called before closing event"):
        pbar.attach(
            trainer,
            event_name=Events.EPOCH_COMPLETED,
            closing_event_name=Events.ITERATION_COMPLETED,
        )
    with pytest.raises(ValueError, match="not in allowed events"):
        pbar.attach(trainer, event_name="no_such_event")
    with pytest.raises(TypeError, match="metric_names"):
        pbar.attach(trainer, metric_names="loss")
    with pytest.raises(TypeError, match="output_transform"):
        pbar.attach(trainer, output_transform=3)  # type: ignore[arg-type]
    for state_attributes in (5, "lr", ["lr", 3]):  # "lr" would be read letter by letter
        with pytest.raises(TypeError, match="state_attributes should be a list of str"):
            pbar.attach(trainer, state_attributes=state_attributes)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mininterval"):
        ProgressBar(mininterval=-1)


def test_user_filtered_event_is_respected(make_engine: MakeEngine) -> None:
    trainer = make_engine()
    stream = io.StringIO()
    ProgressBar(persist=True, file=stream).attach(
        trainer, event_name=Events.ITERATION_COMPLETED(every=3)
    )
    trainer.run(range(7))
    assert finished_lines(stream)[0].startswith("Iteration: [7/7] 100%")
    assert "[3/7]" in stream.getvalue()
    assert "[1/7]" not in stream.getvalue()


def test_only_rank_zero_draws(make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    trainer = make_engine()
    stream = io.StringIO()
    pbar = ProgressBar(persist=True, file=stream)
    pbar.attach(trainer)
    pbar.log_message("hello")
    trainer.run(range(4), max_epochs=1)
    assert stream.getvalue() == ""
