"""state_dict() and load_state_dict(): keys, derived counters, validation, resume."""

from __future__ import annotations

from typing import Any

import pytest


def test_state_dict_keys_and_user_keys(make_engine: Any) -> None:
    engine = make_engine()
    engine.state_dict_user_keys.append("alpha")
    engine.state.alpha = 0.1
    engine.run([0, 1, 2], max_epochs=2)
    assert list(engine.state_dict().items()) == [
        ("epoch_length", 3),
        ("iteration", 6),
        ("max_epochs", 2),
        ("alpha", 0.1),
    ]
    engine.state.max_epochs = None
    engine.run([0, 1, 2], max_iters=4)
    assert "max_iters" in engine.state_dict() and "max_epochs" not in engine.state_dict()


def test_load_then_run_continues_from_the_saved_iteration(make_engine: Any) -> None:
    seen: list[int] = []
    engine = make_engine(lambda e, b: seen.append(b))
    engine.load_state_dict({"epoch_length": 5, "iteration": 7, "max_epochs": 3})
    assert (engine.state.epoch, engine.state.iteration) == (1, 7)
    engine.run(range(5))
    # ignite never skips data: the rest of epoch 2 starts from the beginning of the data
    assert seen[:3] == [0, 1, 2]
    assert engine.state.iteration == 15


def test_load_from_epoch(make_engine: Any) -> None:
    engine = make_engine()
    engine.load_state_dict({"epoch_length": 4, "epoch": 2, "max_iters": 20})
    assert (engine.state.iteration, engine.state.epoch) == (8, 2)
    assert engine.state.max_epochs is None
    engine.run(range(4))
    assert engine.state.iteration == 20


def test_round_trip_restores_a_fresh_engine(make_engine: Any) -> None:
    first = make_engine()
    first.run(range(3), max_epochs=2)
    second = make_engine()
    second.load_state_dict(first.state_dict())
    assert second.state_dict() == first.state_dict()


@pytest.mark.parametrize(
    ("state_dict", "error", "message"),
    [
        ([1, 2], TypeError, "Argument state_dict should be a dictionary"),
        (
            {"epoch_length": 2, "iteration": 1, "epoch": 1, "max_epochs": 2},
            ValueError,
            "should contain only one of 'iteration' or 'epoch' keys",
        ),
        ({"iteration": 1, "max_epochs": 2}, ValueError, "epoch_length must be a positive integer"),
        ({"epoch_length": 2, "max_epochs": 2}, ValueError, "Required state attribute 'iteration'"),
        ({"iteration": 0, "max_epochs": 2}, ValueError, "Required state attribute 'epoch_length'"),
        (
            {"epoch_length": 2, "iteration": 0},
            ValueError,
            "should contain exactly one of '\\('max_epochs', 'max_iters'\\)'",
        ),
        (
            {"epoch_length": 2, "iteration": 0, "max_epochs": 2, "max_iters": 3},
            ValueError,
            "should contain exactly one of",
        ),
        (
            {"epoch_length": 2, "iteration": 8, "max_epochs": 2},
            ValueError,
            "greater than or equal to the start epoch",
        ),
        ({"epoch_length": 2, "iteration": 0, "max_epochs": 0}, ValueError, "is invalid"),
        ({"epoch_length": "2", "iteration": 0, "max_epochs": 1}, ValueError, "epoch_length"),
        ({"epoch_length": 2, "iteration": -3, "max_epochs": 1}, ValueError, "iteration"),
        # The counter given is named, not the one derived from it.
        *(
            (
                {"epoch_length": 2, key: value, "max_epochs": 5},
                ValueError,
                rf"state_dict\['{key}'\] should be an integer >= 0, got {value!r}",
            )
            for key, value in [
                ("epoch", "3"),
                ("epoch", -1),
                ("epoch", 2.5),
                ("epoch", True),
                ("iteration", "8"),
            ]
        ),
    ],
)
def test_malformed_state_dicts_are_refused(
    make_engine: Any, state_dict: Any, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        make_engine().load_state_dict(state_dict)


def test_user_keys_are_required(make_engine: Any) -> None:
    engine = make_engine()
    engine.state_dict_user_keys.append("alpha")
    with pytest.raises(ValueError, match="Required user state attribute 'alpha'"):
        engine.load_state_dict({"epoch_length": 2, "iteration": 0, "max_epochs": 1})
