"""Audit of State, state dicts, the Profiler and its host-sync counting, and Timer: each test
here failed before the fix next to it."""

from __future__ import annotations

import fractions
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from ignite.engine import State as IgniteState
from torch.utils import _python_dispatch

from ember.engine import Engine, Events, State, _syncs
from ember.engine.profile import Profiler

ONE = torch.tensor(1.0)


def row(profiler: Profiler, event: str, name: str) -> tuple[int, int]:
    """(calls, syncs) of the handler row of the local function ``name`` on ``event``."""
    (timing,) = [
        timing
        for key, timing in profiler.handlers.items()
        if key.startswith(f"{event}:") and key.endswith(f".{name}")
    ]
    return timing.calls, timing.syncs


def test_state_repr_is_ignites() -> None:
    """ignite shows every ``numbers.Number`` (NumPy scalars, fractions, complex) as its value,
    and ends each line, the last included, with a newline."""
    fields = {"alpha": np.float32(1.5), "beta": fractions.Fraction(1, 3), "gamma": 1 + 2j}
    ours, theirs = repr(State(**fields)), repr(IgniteState(**fields))
    assert ours.endswith("\n")
    assert "\talpha: 1.5\n" in ours
    assert "\tbeta: 1/3\n" in ours
    assert "\tgamma: (1+2j)\n" in ours
    # The same lines; only the order differs (slots first: docs/migration.md).
    assert sorted(ours.splitlines()) == sorted(theirs.splitlines())


def test_syncs_of_an_event_filter_are_its_handlers(
    make_engine: Callable[..., Engine],
) -> None:
    """A filtered handler is timed with its filter (docs/training.md); its filter's host
    syncs are the handler's too, not "outside"."""
    engine = make_engine()

    def reads_a_tensor(_: Engine, epoch: int) -> bool:
        return bool(ONE > 0)  # a sync

    def on_epoch(_: Engine) -> None:
        pass

    engine.add_event_handler(Events.EPOCH_COMPLETED(event_filter=reads_a_tensor), on_epoch)
    profiler = Profiler().attach(engine)
    engine.run([1, 2], max_epochs=3)
    assert row(profiler, "EPOCH_COMPLETED", "on_epoch") == (3, 3)
    assert profiler.events["EPOCH_COMPLETED"].syncs == 3
    assert profiler.outside_syncs == 0


def test_syncs_of_a_handler_removed_during_its_pass_are_its_own(
    make_engine: Callable[..., Engine],
) -> None:
    """A handler that is removed while its event fires still runs in that pass (docs/migration.md);
    its syncs there are its row's, not "outside"."""
    engine = make_engine()

    def once(engine: Engine) -> None:
        engine.remove_event_handler(once, Events.ITERATION_COMPLETED)
        ONE.item()

    def late(_: Engine) -> None:
        ONE.item()

    def edits(engine: Engine) -> None:
        if engine.state.iteration == 1:
            engine.add_event_handler(Events.ITERATION_COMPLETED, late)
        if engine.state.iteration == 3:
            engine.remove_event_handler(late, Events.ITERATION_COMPLETED)

    engine.add_event_handler(Events.ITERATION_COMPLETED, once)
    engine.add_event_handler(Events.ITERATION_COMPLETED, edits)
    profiler = Profiler().attach(engine)
    engine.run([1, 2, 3, 4])
    assert row(profiler, "ITERATION_COMPLETED", "once") == (1, 1)
    # Added at iteration 1 to the list that once's removal rebound (not the one that pass
    # walks), so it runs at iterations 2 and 3, the last after its removal.
    assert row(profiler, "ITERATION_COMPLETED", "late") == (2, 2)
    assert profiler.outside_syncs == 0


class _FiresThroughItself(Engine):
    def _fire_event(self, event_name: Any, *args: Any, **kwargs: Any) -> None:
        super()._fire_event(event_name, *args, **kwargs)


@pytest.mark.parametrize("how", ["override", "instance attribute", "debug logging"])
def test_syncs_of_handlers_fired_through_fire_event_are_their_events(
    make_engine: Callable[..., Engine], how: str
) -> None:
    """When the handlers are called through the engine's ``_fire_event``, the table has event
    rows and no handler rows, "and the syncs of the handlers are charged to their event"
    (docs/training.md): not to "outside" (an override) nor to a handler row of 0 calls."""
    engine = make_engine(cls=_FiresThroughItself) if how == "override" else make_engine()
    if how == "instance attribute":
        fire = engine._fire_event

        def fire_through(*args: Any, **kwargs: Any) -> None:  # a function of the user's
            fire(*args, **kwargs)

        engine._fire_event = fire_through  # type: ignore[method-assign]
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda _: ONE.item())
    profiler = Profiler().attach(engine)
    logger = engine.logger
    level, propagate = logger.level, logger.propagate
    if how == "debug logging":
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    try:
        engine.run([1, 2, 3])
    finally:
        logger.setLevel(level)
        logger.propagate = propagate
    assert profiler.events["ITERATION_COMPLETED"].syncs == 3
    assert profiler.handlers == {}
    assert profiler.outside_syncs == 0


def test_counting_leaves_nothing_behind_after_an_exception(
    make_engine: Callable[..., Engine],
) -> None:
    engine = make_engine(lambda e, b: ONE.item())

    @engine.on(Events.ITERATION_COMPLETED)
    def boom(_: Engine) -> None:
        raise KeyError("boom")

    profiler = Profiler().attach(engine)
    with torch.inference_mode(), pytest.raises(KeyError):
        engine.run([1, 2])
    assert profiler.step.syncs == 1
    assert _syncs._watches == []
    assert _syncs._hooks.library is None
    assert _python_dispatch._get_current_dispatch_mode_stack() == []
    assert torch.is_inference_mode_enabled() is False
    # The original kernel is back: a read outside a run is counted by nobody.
    assert torch.tensor(2.5).item() == 2.5
    assert profiler.step.syncs == 1


def test_numpy_integer_counters_load_and_run(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    engine.load_state_dict(
        {"iteration": np.int64(5), "epoch_length": np.int64(2), "max_epochs": np.int64(4)}
    )
    state = engine.run([1, 2])
    assert (state.iteration, state.epoch) == (8, 4)
    assert all(type(getattr(state, key)) is int for key in ("iteration", "epoch", "epoch_length"))


@pytest.mark.parametrize(
    "refused",
    [
        {"iteration": 100, "epoch_length": 10, "max_epochs": 5},  # past the limit
        {"iteration": 100, "epoch_length": 10, "max_iters": 50},
        {"iteration": 4, "epoch_length": 2, "max_epochs": "many"},
        {"iteration": 4, "epoch_length": 2, "max_iters": 0},
    ],
)
def test_a_refused_state_dict_leaves_the_engine_as_it_was(
    make_engine: Callable[..., Engine], refused: dict[str, object]
) -> None:
    # ignite (and ember before) set the counters, then refused the limit: the next run()
    # started afresh from a half-loaded state.
    engine = make_engine()
    engine.run([1, 2, 3], max_epochs=2)
    before = engine.state_dict()
    with pytest.raises((ValueError, TypeError)):
        engine.load_state_dict(refused)
    assert engine.state_dict() == before
