"""Value parity of ember's parameter schedulers with ignite 0.5.5's (audit).

Each program runs on ignite's Engine with ignite's scheduler and on ember's Engine (both loops)
with ember's, and compares the optimizer's values at every iteration, ``state.param_history``,
``state_dict``, ``simulate_values``/``plot_values`` and the errors on bad arguments. The
differences that docs/migration.md lists (``LRScheduler`` around ``ExponentialLR`` and
``CosineAnnealingLR``, the torch scheduler's step count in the state) are left out.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

torch = pytest.importorskip("torch")
ignite_engine = pytest.importorskip("ignite.engine")
ip = pytest.importorskip("ignite.handlers.param_scheduler")

from torch.optim import lr_scheduler as T

import ember.handlers.param_scheduler as ep
from ember.engine import Events

# ignite's LRScheduler(use_legacy=True) warns at construction (ember's does not)
pytestmark = pytest.mark.filterwarnings("ignore:Please make sure to attach scheduler:UserWarning")


def make_optimizer(kind: str = "sgd", groups: int = 1) -> Any:
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 2)
    params: Any = model.parameters()
    if groups == 2:
        params = [{"params": [model.weight]}, {"params": [model.bias], "lr": 0.05}]
    if kind == "sgd":
        return torch.optim.SGD(params, lr=0.1, momentum=0.9)
    return torch.optim.Adam(params, lr=0.1)


def run_program(
    build: Callable[[Any, Any], Any],
    engine: Any,
    module: Any,
    kind: str,
    groups: int,
    keys: tuple[str, ...],
    event: str,
) -> tuple[list[Any], Any, Any]:
    optimizer = make_optimizer(kind, groups)
    scheduler = build(module, optimizer)
    seen: list[Any] = []

    def step(eng: Any, batch: Any) -> None:
        seen.append([tuple(g[k] for k in keys) for g in optimizer.param_groups])
        optimizer.step()

    trainer = engine(step)
    events = ignite_engine.Events if module is ip else Events
    trainer.add_event_handler(getattr(events, event), scheduler)
    trainer.run([0] * 5, max_epochs=3)
    return seen, getattr(trainer.state, "param_history", None), scheduler.state_dict()


def _cos(m: Any, o: Any) -> Any:
    return m.CosineAnnealingScheduler(
        o,
        "lr",
        0.1,
        0.01,
        3,
        cycle_mult=2.0,
        start_value_mult=0.5,
        end_value_mult=0.3,
        warmup_duration=2,
        save_history=True,
    )


def _concat(m: Any, o: Any) -> Any:
    first = m.LinearCyclicalScheduler(o, "lr", 0.1, 0.5, 4)
    second = m.CosineAnnealingScheduler(o, "lr", 0.5, 0.01, 5)
    return m.ConcatScheduler([first, second], [6], save_history=True)


def _groups(m: Any, o: Any) -> Any:
    first = m.CosineAnnealingScheduler(o, "lr", 0.9, 0.5, 6, param_group_index=0)
    second = m.LinearCyclicalScheduler(o, "momentum", 0.9, 0.5, 4, param_group_index=1)
    return m.ParamGroupScheduler([first, second], names=["lr0", "mom1"], save_history=True)


PROGRAMS: dict[str, tuple[Callable[[Any, Any], Any], int, tuple[str, ...], str]] = {
    "linear": (
        lambda m, o: m.LinearCyclicalScheduler(o, "lr", 0.1, 0.9, 4, save_history=True),
        1,
        ("lr",),
        "ITERATION_STARTED",
    ),
    "linear_monotonic_warmup": (
        lambda m, o: m.LinearCyclicalScheduler(
            o,
            "lr",
            0.1,
            0.9,
            4,
            monotonic=True,
            warmup_duration=3,
            cycle_mult=1.5,
            start_value_mult=0.5,
            end_value_mult=0.8,
            save_history=True,
        ),
        1,
        ("lr",),
        "ITERATION_STARTED",
    ),
    "cosine_mults_warmup": (_cos, 2, ("lr",), "ITERATION_STARTED"),
    "cosine_momentum": (
        lambda m, o: m.CosineAnnealingScheduler(o, "momentum", 0.9, 0.5, 6),
        1,
        ("lr", "momentum"),
        "ITERATION_STARTED",
    ),
    "piecewise_int_values": (
        lambda m, o: m.PiecewiseLinear(
            o, "lr", [(2, 1), (5, 2), (5, 3), (9, 0)], save_history=True
        ),
        2,
        ("lr",),
        "ITERATION_STARTED",
    ),
    "concat": (_concat, 1, ("lr",), "ITERATION_STARTED"),
    "param_groups": (_groups, 2, ("lr", "momentum"), "ITERATION_STARTED"),
    "step_lr": (
        lambda m, o: m.LRScheduler(T.StepLR(o, 3, 0.5), save_history=True),
        2,
        ("lr",),
        "ITERATION_STARTED",
    ),
    "multistep_lr_legacy": (
        lambda m, o: m.LRScheduler(
            T.MultiStepLR(o, [2, 5, 9], 0.5), save_history=True, use_legacy=True
        ),
        1,
        ("lr",),
        "ITERATION_COMPLETED",
    ),
    "lambda_lr": (
        lambda m, o: m.LRScheduler(T.LambdaLR(o, lambda e: 1 / (e + 1))),
        1,
        ("lr",),
        "ITERATION_STARTED",
    ),
    "one_cycle": (
        lambda m, o: m.LRScheduler(T.OneCycleLR(o, 1.0, total_steps=30)),
        1,
        ("lr",),
        "ITERATION_STARTED",
    ),
    "warmup_step_lr": (
        lambda m, o: m.create_lr_scheduler_with_warmup(
            T.StepLR(o, 3, 0.5), 0.01, 4, warmup_end_value=0.2, save_history=True
        ),
        1,
        ("lr",),
        "ITERATION_STARTED",
    ),
    "warmup_cosine": (
        lambda m, o: m.create_lr_scheduler_with_warmup(
            m.CosineAnnealingScheduler(o, "lr", 0.1, 0.01, 4), 0.0, 3, save_history=True
        ),
        2,
        ("lr",),
        "ITERATION_STARTED",
    ),
    "warmup_piecewise_end": (
        lambda m, o: m.create_lr_scheduler_with_warmup(
            m.PiecewiseLinear(o, "lr", [(0, 0.2), (6, 0.01)]),
            0.0,
            4,
            warmup_end_value=0.2,
            save_history=True,
        ),
        1,
        ("lr",),
        "ITERATION_STARTED",
    ),
}


def _same(ours: Any, theirs: Any) -> bool:
    """Equal, float for float (``type`` included), dicts and sequences item by item."""
    if isinstance(theirs, dict):
        return (
            isinstance(ours, dict)
            and ours.keys() == theirs.keys()
            and all(_same(ours[k], theirs[k]) for k in theirs)
        )
    if isinstance(theirs, (list, tuple)):
        return (
            isinstance(ours, (list, tuple))
            and len(ours) == len(theirs)
            and all(_same(a, b) for a, b in zip(ours, theirs, strict=True))
        )
    return type(ours) is type(theirs) and ours == theirs


@pytest.mark.parametrize("kind", ["sgd", "adam"])
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_values_history_and_state_match_ignite(
    name: str, kind: str, make_engine: Callable[..., Any]
) -> None:
    build, groups, keys, event = PROGRAMS[name]
    if "momentum" in keys and kind == "adam":
        pytest.skip("Adam has no momentum")
    theirs = run_program(build, ignite_engine.Engine, ip, kind, groups, keys, event)
    ours = run_program(build, make_engine, ep, kind, groups, keys, event)
    assert _same(ours[0], theirs[0])
    assert _same(ours[1], theirs[1])
    if not name.endswith(("_lr", "_legacy", "one_cycle")):  # LRScheduler: documented
        assert _same(ours[2], theirs[2])


def test_piecewise_linear_values_are_floats_like_ignites() -> None:
    # ignite interpolates everywhere, so int milestone values come out as floats
    theirs = ip.PiecewiseLinear.simulate_values(
        8, param_name="lr", milestones_values=[(2, 1), (5, 0)]
    )
    ours = ep.PiecewiseLinear.simulate_values(
        8, param_name="lr", milestones_values=[(2, 1), (5, 0)]
    )
    assert _same(ours, theirs)
    assert [type(v) for _, v in ours] == [float] * 8


def test_piecewise_linear_state_dict_loads_into_ignite(make_engine: Callable[..., Any]) -> None:
    """ignite's PiecewiseLinear requires "_index" in its state: ember's holds it too."""
    milestones = [(0, 0.0), (3, 1.0), (6, 0.5), (9, 0.1)]
    optimizer = make_optimizer()
    ours = ep.PiecewiseLinear(optimizer, "lr", milestones)
    trainer = make_engine(lambda e, b: None)
    ours.attach(trainer)
    trainer.run([0] * 7)
    state = copy.deepcopy(ours.state_dict())

    twin = make_optimizer()
    theirs = ip.PiecewiseLinear(twin, "lr", milestones)
    for _ in range(7):
        theirs(None)
    assert _same(state, theirs.state_dict())

    resumed = ip.PiecewiseLinear(make_optimizer(), "lr", milestones)
    resumed.load_state_dict(state)
    for _ in range(6):
        resumed(None)
        theirs(None)
        assert resumed.optimizer.param_groups[0]["lr"] == twin.param_groups[0]["lr"]

    # an ember state without "_index" (written before it was kept) still loads
    del state["_index"]
    again = ep.PiecewiseLinear(make_optimizer(), "lr", milestones)
    again.load_state_dict(state)
    again(None)
    assert again.optimizer.param_groups[0]["lr"] == pytest.approx(0.5 + (0.1 - 0.5) / 3)


def test_a_bad_piecewise_index_is_refused() -> None:
    scheduler = ep.PiecewiseLinear(make_optimizer(), "lr", [(0, 0.0), (3, 1.0)])
    state = scheduler.state_dict()
    with pytest.raises(TypeError, match="_index"):
        scheduler.load_state_dict({**state, "_index": "x"})
    with pytest.raises(ValueError, match="_index"):
        scheduler.load_state_dict({**state, "_index": 2})


def test_warmup_state_dict_loads_into_ignite() -> None:
    def build(m: Any, o: Any) -> Any:
        cosine = m.CosineAnnealingScheduler(o, "lr", 0.1, 0.01, 4)
        return m.create_lr_scheduler_with_warmup(cosine, 0.0, 3)

    ours, theirs = build(ep, make_optimizer()), build(ip, make_optimizer())
    for _ in range(5):
        ours(None)
        theirs(None)
    assert _same(ours.state_dict(), theirs.state_dict())
    fresh = build(ip, make_optimizer())
    fresh.load_state_dict(copy.deepcopy(ours.state_dict()))


def test_concat_scheduler_event_index_stays_zero_as_in_ignite() -> None:
    ours, theirs = _concat(ep, make_optimizer()), _concat(ip, make_optimizer())
    for _ in range(9):
        ours(None)
        theirs(None)
    assert ours.state_dict()["event_index"] == theirs.state_dict()["event_index"] == 0
    assert _same(ours.state_dict(), theirs.state_dict())


def _concat_pair(m: Any) -> tuple[list[Any], Any]:
    optimizer = make_optimizer()
    first = m.PiecewiseLinear(optimizer, "lr", [(0, 1.0), (3, 0.0)])
    second = m.PiecewiseLinear(optimizer, "lr", [(0, 0.5)])
    return [first, second], optimizer


def test_concat_simulate_values_takes_param_names() -> None:
    theirs_s, theirs_o = _concat_pair(ip)
    ours_s, ours_o = _concat_pair(ep)
    theirs = ip.ConcatScheduler.simulate_values(5, theirs_s, [2], param_names=["lr", "momentum"])
    ours = ep.ConcatScheduler.simulate_values(5, ours_s, [2], param_names=["lr", "momentum"])
    assert _same(ours, theirs)
    assert ours[0] == [0, 1.0, 0.9]
    assert ours_o.param_groups[0]["lr"] == theirs_o.param_groups[0]["lr"] == 0.1


@pytest.mark.parametrize("param_names", ["lr", ["lr", 1]])
def test_concat_simulate_values_refuses_bad_param_names(param_names: Any) -> None:
    errors = []
    for m in (ip, ep):
        schedulers, _ = _concat_pair(m)
        with pytest.raises((TypeError, ValueError)) as info:
            m.ConcatScheduler.simulate_values(5, schedulers, [2], param_names=param_names)
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]


def test_param_group_scheduler_simulate_values() -> None:
    results = []
    for m in (ip, ep):
        optimizer = make_optimizer(groups=2)
        schedulers = [
            m.PiecewiseLinear(optimizer, "lr", [(0, 1.0), (3, 0.0)], param_group_index=0),
            m.CosineAnnealingScheduler(optimizer, "lr", 0.5, 0.1, 4, param_group_index=1),
        ]
        results.append(m.ParamGroupScheduler.simulate_values(6, schedulers, names=["a", "b"]))
        # the schedulers and the optimizer are as they were
        assert [s.event_index for s in schedulers] == [0, 0]
        assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.05]
    assert _same(results[1], results[0])


def test_plot_values() -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kwargs = {"param_name": "lr", "start_value": 1.0, "end_value": 0.0, "cycle_size": 4}
    try:
        theirs = ip.CosineAnnealingScheduler.plot_values(10, **kwargs)
        ours = ep.CosineAnnealingScheduler.plot_values(10, **kwargs)
        assert len(ours) == len(theirs) == 1
        assert list(ours[0].get_xdata()) == list(theirs[0].get_xdata())
        assert list(ours[0].get_ydata()) == list(theirs[0].get_ydata())
        assert ours[0].get_label() == "lr"
    finally:
        plt.close("all")


@pytest.mark.parametrize("names", ["a", [1]])
def test_param_group_scheduler_bad_names_raise_ignites_errors(names: Any) -> None:
    errors = []
    for m in (ip, ep):
        scheduler = m.PiecewiseLinear(make_optimizer(), "lr", [(0, 1.0)])
        with pytest.raises((TypeError, ValueError)) as info:
            m.ParamGroupScheduler([scheduler], names=names)
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]


@pytest.mark.parametrize(
    "build",
    [
        lambda m, o: m.LinearCyclicalScheduler(o, "lr", 0.1, 0.9, 1),
        lambda m, o: m.PiecewiseLinear(o, "lr", [(5, 0.1), (2, 0.5)]),
        lambda m, o: m.PiecewiseLinear(o, "lr", [(0.5, 0.1)]),
        lambda m, o: m.PiecewiseLinear(o, "lr", []),
        lambda m, o: m.create_lr_scheduler_with_warmup(T.StepLR(o, 2), 0.0, 1),
        lambda m, o: m.create_lr_scheduler_with_warmup(T.StepLR(o, 2), 0.0, 3.0),
    ],
)
def test_bad_arguments_raise_ignites_errors(build: Callable[[Any, Any], Any]) -> None:
    errors = []
    for m in (ip, ep):
        try:
            build(m, make_optimizer())
        except (TypeError, ValueError) as exc:
            errors.append((type(exc), str(exc)))
    assert len(errors) == 2
    assert errors[0] == errors[1]


@pytest.mark.parametrize(
    "name",
    [
        "cosine_mults_warmup",
        "concat",
        "param_groups",
        "warmup_cosine",
        "piecewise_int_values",
        "step_lr",
        "one_cycle",
    ],
)
def test_resuming_mid_run_gives_the_remaining_values(
    name: str, make_engine: Callable[..., Any]
) -> None:
    build, groups, keys, _ = PROGRAMS[name]

    def run(epochs: int, state: Any = None) -> tuple[list[Any], Any, Any]:
        optimizer = make_optimizer(groups=groups)
        scheduler = build(ep, optimizer)
        if state is not None:
            optimizer.load_state_dict(state[1])
            scheduler.load_state_dict(state[0])
        seen: list[Any] = []

        def step(e: Any, b: Any) -> None:
            seen.append([tuple(g[k] for k in keys) for g in optimizer.param_groups])
            optimizer.step()

        trainer = make_engine(step)
        trainer.add_event_handler(Events.ITERATION_STARTED, scheduler)
        trainer.run([0] * 7, max_epochs=epochs)
        return seen, copy.deepcopy(scheduler.state_dict()), copy.deepcopy(optimizer.state_dict())

    whole, _, _ = run(3)
    first, state, optimizer_state = run(1)
    rest, _, _ = run(2, (state, optimizer_state))
    assert first + rest == whole
