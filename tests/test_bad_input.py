"""Invalid arguments get a clear Python exception before the loop starts (docs/migration.md)."""

from __future__ import annotations

from typing import Any

import pytest

from ember.engine import Engine, Events


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"data": 3}, TypeError, "Argument data should be iterable"),
        ({"data": [1], "max_epochs": 0}, ValueError, "Argument max_epochs is invalid"),
        ({"data": [1], "max_epochs": -2}, ValueError, "Argument max_epochs is invalid"),
        ({"data": [1], "max_iters": 0}, ValueError, "Argument max_iters is invalid"),
        ({"data": [1], "max_epochs": 1.5}, TypeError, "Argument max_epochs should be an integer"),
        ({"data": [1], "epoch_length": 0}, ValueError, "Input data has zero size"),
        ({"data": [1], "epoch_length": "2"}, TypeError, "epoch_length should be an integer"),
        ({"data": [], "max_epochs": 1}, ValueError, "Input data has zero size"),
        ({"data": [], "epoch_length": 3}, ValueError, "Input data has zero size"),
        (
            {"data": [1], "max_epochs": 1, "max_iters": 1},
            ValueError,
            "Arguments max_iters and max_epochs are mutually exclusive",
        ),
        ({"data": None}, ValueError, "epoch_length should be provided if data is None"),
    ],
)
def test_run_arguments(make_engine: Any, kwargs: dict, error: type, message: str) -> None:
    engine = make_engine()
    with pytest.raises(error, match=message):
        engine.run(**kwargs)
    assert engine.state.iteration == 0


def test_switching_termination_mode_on_resume_needs_a_reset(make_engine: Any) -> None:
    engine = make_engine()
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=1), lambda e: e.interrupt())
    engine.run([1, 2], max_epochs=2)
    with pytest.raises(ValueError, match="To switch from max_epochs to max_iters mode"):
        engine.run([1, 2], max_iters=3)


def test_epoch_length_must_match_on_resume(make_engine: Any) -> None:
    engine = make_engine()
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=1), lambda e: e.interrupt())
    engine.run([1, 2], max_epochs=2)
    with pytest.raises(ValueError, match="Argument epoch_length should be same as in the state"):
        engine.run([1, 2], epoch_length=5)


def test_unknown_backend_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="backend should be one of"):
        Engine(lambda e, b: b, backend="fortran")
    monkeypatch.setenv("EMBER_BACKEND", "java")
    with pytest.raises(ValueError, match="EMBER_BACKEND should be one of"):
        Engine(lambda e, b: b)


def test_non_callable_handler_is_refused(make_engine: Any) -> None:
    with pytest.raises(TypeError, match="Argument handler should be callable"):
        make_engine().add_event_handler(Events.STARTED, 42)


def test_non_iterator_from_iter_is_a_type_error(make_engine: Any) -> None:
    class BrokenIterable:
        def __iter__(self) -> Any:
            return 5

    with pytest.raises(TypeError):
        make_engine().run(BrokenIterable(), max_epochs=1, epoch_length=1)


def test_replaced_state_must_be_a_state(make_engine: Any) -> None:
    engine = make_engine()
    engine.add_event_handler(Events.STARTED, lambda e: setattr(e, "state", object()))
    with pytest.raises((TypeError, AttributeError)):
        engine.run([1, 2])
