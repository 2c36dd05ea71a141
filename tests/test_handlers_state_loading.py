"""Loading a bad state into a scheduler or EarlyStopping raises, naming the key, and changes
nothing: not the scheduler, not its children."""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from ember.engine import Engine
from ember.handlers import (
    ConcatScheduler,
    CosineAnnealingScheduler,
    EarlyStopping,
    LinearCyclicalScheduler,
    LRScheduler,
    ParamGroupScheduler,
    PiecewiseLinear,
)


def optimizer(groups: int = 1) -> Any:
    params = [{"params": [torch.zeros(1, requires_grad=True)]} for _ in range(groups)]
    return torch.optim.SGD(params, lr=0.1)


def concat(opt: Any) -> ConcatScheduler:
    return ConcatScheduler(
        [
            LinearCyclicalScheduler(opt, "lr", 0.0, 1.0, cycle_size=8),
            CosineAnnealingScheduler(opt, "lr", 1.0, 0.2, cycle_size=4),
        ],
        durations=[4],
    )


def param_groups(opt: Any) -> ParamGroupScheduler:
    return ParamGroupScheduler(
        [
            PiecewiseLinear(opt, "lr", [(0, 0.0), (4, 0.4)], param_group_index=0),
            PiecewiseLinear(opt, "lr", [(0, 1.0), (4, 0.0)], param_group_index=1),
        ],
        names=["a", "b"],
    )


def step_lr(opt: Any) -> LRScheduler:
    return LRScheduler(torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5))


def piecewise(opt: Any) -> PiecewiseLinear:
    return PiecewiseLinear(opt, "lr", [(0, 0.0), (4, 0.4)])


def cosine(opt: Any) -> CosineAnnealingScheduler:
    return CosineAnnealingScheduler(opt, "lr", 1.0, 0.0, cycle_size=4)


Mutation = Callable[[dict[str, Any]], Any]


def without(key: str) -> Mutation:
    return lambda state: {name: value for name, value in state.items() if name != key}


def setting(key: str, value: Any) -> Mutation:
    return lambda state: {**state, key: value}


def replaced(value: Any) -> Mutation:
    return lambda state: value


def set_in_second_child(key: str, value: Any) -> Mutation:
    def mutate(state: dict[str, Any]) -> dict[str, Any]:
        state = deepcopy(state)
        child = state["schedulers"][1]
        child_state = child[1] if isinstance(child, tuple) else child
        child_state[key] = value
        return state

    return mutate


BAD_STATES = [
    # ConcatScheduler: its own keys, checked before any child is loaded
    (concat, 1, without("_current_duration"), ValueError, "_current_duration"),
    (concat, 1, setting("_scheduler_index", 5), ValueError, "_scheduler_index"),
    (concat, 1, setting("_current_duration", 9), ValueError, "_current_duration"),
    (concat, 1, setting("durations", [4, 2]), ValueError, "durations"),
    (concat, 1, set_in_second_child("cycle_size", 0), ValueError, r"\['schedulers'\]\[1\]"),
    # ParamGroupScheduler: every entry, checked before the first is loaded
    (param_groups, 2, setting("schedulers", [1, 2]), TypeError, r"\['schedulers'\]\[0\]"),
    (param_groups, 2, setting("schedulers", None), TypeError, "'schedulers'"),
    (param_groups, 2, replaced(None), TypeError, "state_dict"),
    (param_groups, 2, set_in_second_child("event_index", "x"), TypeError, "event_index"),
    (param_groups, 2, set_in_second_child("milestones", []), ValueError, "milestones"),
    # a single scheduler's values
    (step_lr, 1, setting("lr_scheduler", None), TypeError, "lr_scheduler"),
    (step_lr, 1, setting("event_index", "x"), TypeError, "event_index"),
    (step_lr, 1, setting("event_index", -1), ValueError, "event_index"),
    (step_lr, 1, setting("save_history", "yes"), TypeError, "save_history"),
    (piecewise, 1, setting("milestones", []), ValueError, "milestones"),
    (piecewise, 1, setting("milestones", [0, 2, 4]), ValueError, "values"),
    (piecewise, 1, setting("milestones", [4, 0]), ValueError, "milestones"),
    (piecewise, 1, setting("param_group_index", 3), ValueError, "param_group_index"),
    (cosine, 1, setting("cycle_size", 0), ValueError, "cycle_size"),
    (cosine, 1, setting("total_cycle_size", 7), ValueError, "total_cycle_size"),
]


@pytest.mark.parametrize(("make", "groups", "mutate", "error", "match"), BAD_STATES)
def test_a_bad_scheduler_state_is_refused_and_changes_nothing(
    make: Callable[[Any], Any],
    groups: int,
    mutate: Mutation,
    error: type[Exception],
    match: str,
) -> None:
    source_optimizer = optimizer(groups)
    source = make(source_optimizer)
    for _ in range(6):
        source(None)
    state = mutate(source.state_dict())
    target = make(optimizer(groups))
    target(None)
    before = deepcopy(target.state_dict())
    with pytest.raises(error, match=match):
        target.load_state_dict(state)
    assert target.state_dict() == before


@pytest.mark.ignite
def test_an_ignite_lr_scheduler_state_holding_its_wrapper_object_is_refused() -> None:
    pytest.importorskip("ignite")
    from ignite.handlers import LRScheduler as IgniteLRScheduler

    def restarts(opt: Any) -> Any:
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=3)

    # ignite wraps CosineAnnealingWarmRestarts in an object of its own, stored as it is
    ignite_state = IgniteLRScheduler(restarts(optimizer())).state_dict()
    ours = LRScheduler(restarts(optimizer()))
    ours(None)
    ours(None)
    before = deepcopy(ours.state_dict())
    with pytest.raises(TypeError, match="lr_scheduler"):
        ours.load_state_dict(ignite_state)
    assert ours.state_dict() == before


def early_stopping(**kwargs: Any) -> EarlyStopping:
    return EarlyStopping(
        3, lambda engine: 0.0, Engine(lambda engine, batch: None, backend="python"), **kwargs
    )


def test_early_stopping_state_restores_the_threshold_mode() -> None:
    relative = early_stopping(threshold=0.1, threshold_mode="rel")
    relative.counter, relative.best_score = 2, 1.5
    state = relative.state_dict()
    assert list(state) == ["counter", "best_score", "threshold_mode"]  # ignite 0.5.5's keys

    resumed = early_stopping(threshold=0.1)
    resumed.load_state_dict(state)
    assert (resumed.counter, resumed.best_score, resumed.threshold_mode) == (2, 1.5, "rel")
    assert resumed.min_delta_mode == "rel"

    # a state saved before ember kept the mode: the handler keeps its own
    resumed.load_state_dict({"counter": 1, "best_score": 2.0})
    assert (resumed.counter, resumed.best_score, resumed.threshold_mode) == (1, 2.0, "rel")


@pytest.mark.ignite
def test_early_stopping_state_loads_into_ignite_and_back() -> None:
    pytest.importorskip("ignite")
    from ignite.engine import Engine as IgniteEngine
    from ignite.handlers import EarlyStopping as IgniteEarlyStopping

    theirs = IgniteEarlyStopping(3, lambda engine: 0.0, IgniteEngine(lambda engine, batch: None))
    theirs.load_state_dict(early_stopping(threshold_mode="rel").state_dict())
    assert theirs.threshold_mode == "rel"
    theirs.counter, theirs.best_score, theirs.threshold_mode = 2, 0.5, "abs"
    ours = early_stopping(threshold_mode="rel")
    ours.load_state_dict(theirs.state_dict())
    assert (ours.counter, ours.best_score, ours.threshold_mode) == (2, 0.5, "abs")


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        ("counter", "3", TypeError),
        ("counter", True, TypeError),
        ("counter", 1.0, TypeError),
        ("counter", -5, ValueError),
        ("best_score", "x", TypeError),
        ("best_score", [1.0], TypeError),
        ("threshold_mode", "up", ValueError),
    ],
)
def test_a_bad_early_stopping_state_is_refused_and_changes_nothing(
    key: str, value: Any, error: type[Exception]
) -> None:
    handler = early_stopping()
    handler.counter, handler.best_score = 1, 0.25
    state = {"counter": 2, "best_score": 0.5, "threshold_mode": "rel", key: value}
    with pytest.raises(error, match=key):
        handler.load_state_dict(state)
    assert (handler.counter, handler.best_score, handler.threshold_mode) == (1, 0.25, "abs")


def test_early_stopping_accepts_a_tensor_best_score() -> None:
    handler = early_stopping()
    handler.load_state_dict({"counter": 0, "best_score": torch.tensor(0.5)})
    assert float(handler.best_score) == 0.5
