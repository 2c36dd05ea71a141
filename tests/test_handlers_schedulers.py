"""ember.handlers' parameter schedulers on both loops: the learning rates each iteration sees."""

from __future__ import annotations

import math
from collections.abc import Callable
from copy import deepcopy
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from ember import handlers as ember_handlers
from ember.engine import Engine, Events
from ember.handlers import (
    ConcatScheduler,
    CosineAnnealingScheduler,
    LinearCyclicalScheduler,
    LRScheduler,
    ParamGroupScheduler,
    PiecewiseLinear,
    create_lr_scheduler_with_warmup,
)

MakeEngine = Callable[..., Any]


def model_and_optimizer(lr: float = 0.1, groups: int = 1) -> tuple[torch.nn.Module, Any]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(groups)])
    params = [{"params": layer.parameters(), "lr": lr * (i + 1)} for i, layer in enumerate(model)]
    return model, torch.optim.SGD(params, lr=lr)


def lrs_seen(
    make_engine: MakeEngine, optimizer: Any, scheduler: Any, iterations: int, model: Any = None
) -> list[float]:
    """Train for ``iterations`` and return the lr of group 0 each iteration trained with."""
    seen: list[float] = []

    def step(engine: Engine, batch: Any) -> None:
        if model is not None:
            optimizer.zero_grad()
            model(torch.ones(1, 2)).sum().backward()
            optimizer.step()
        seen.append(optimizer.param_groups[0]["lr"])

    trainer = make_engine(step)
    scheduler.attach(trainer)
    trainer.run([0] * iterations)
    return seen


def test_lr_scheduler_steps_like_torch(make_engine: MakeEngine) -> None:
    model, optimizer = model_and_optimizer()
    scheduler = LRScheduler(
        torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.1), save_history=True
    )
    trainer_lrs = lrs_seen(make_engine, optimizer, scheduler, 8, model)
    assert trainer_lrs == pytest.approx([0.1] * 3 + [0.01] * 3 + [0.001] * 2)

    # the same as a plain torch loop that steps the scheduler after the optimizer
    model, optimizer = model_and_optimizer()
    torch_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=5)
    plain = []
    for _ in range(8):
        plain.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        torch_scheduler.step()
    model, optimizer = model_and_optimizer()
    wrapped = LRScheduler(torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=5))
    assert lrs_seen(make_engine, optimizer, wrapped, 8, model) == pytest.approx(plain)


def test_lr_scheduler_history_and_state(make_engine: MakeEngine) -> None:
    _model, optimizer = model_and_optimizer(groups=2)
    scheduler = LRScheduler(
        torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.5), save_history=True
    )
    trainer = make_engine(lambda engine, batch: optimizer.step())
    trainer.add_event_handler(Events.ITERATION_STARTED, scheduler)
    trainer.run([0] * 3)
    assert trainer.state.param_history["lr"] == [
        pytest.approx([0.1, 0.2]),
        pytest.approx([0.05, 0.1]),
        pytest.approx([0.025, 0.05]),
    ]
    assert scheduler.get_param() == pytest.approx([0.025, 0.05])
    state = scheduler.state_dict()
    assert state["event_index"] == 3
    assert state["lr_scheduler"]["last_epoch"] == 2

    # a new wrapper loaded from the state goes on where the first stopped
    _, optimizer2 = model_and_optimizer(groups=2)
    resumed = LRScheduler(torch.optim.lr_scheduler.ExponentialLR(optimizer2, gamma=0.5))
    optimizer2.load_state_dict(optimizer.state_dict())
    resumed.load_state_dict(state)
    resumed(None)
    assert optimizer2.param_groups[0]["lr"] == pytest.approx(0.0125)


@pytest.mark.parametrize("terminate_at", [2, 5])
def test_lr_scheduler_resumes_from_the_torch_schedulers_state_alone(
    make_engine: MakeEngine, terminate_at: int
) -> None:
    """A checkpoint of trainer, optimizer and torch scheduler (not the wrapper) resumes the
    schedule where it stopped: a fresh wrapper takes the torch scheduler's steps as they are."""

    def build() -> tuple[Any, Any, Any, list[float]]:
        model, optimizer = model_and_optimizer()
        torch_scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
        seen: list[float] = []

        def step(engine: Engine, batch: Any) -> None:
            optimizer.zero_grad()
            model(torch.ones(1, 2)).sum().backward()
            optimizer.step()
            seen.append(optimizer.param_groups[0]["lr"])

        trainer = make_engine(step)
        LRScheduler(torch_scheduler).attach(trainer)
        return trainer, optimizer, torch_scheduler, seen

    trainer, _, _, uninterrupted = build()
    trainer.run([0] * 8)
    assert uninterrupted == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.0125, 0.0125])

    trainer, optimizer, torch_scheduler, before = build()
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED(once=terminate_at), lambda engine: engine.terminate()
    )
    trainer.run([0] * 8)
    saved = [deepcopy(o.state_dict()) for o in (trainer, optimizer, torch_scheduler)]

    trainer, optimizer, torch_scheduler, after = build()
    for target, state in zip((trainer, optimizer, torch_scheduler), saved, strict=True):
        target.load_state_dict(state)
    trainer.run([0] * 8)
    assert before + after == pytest.approx(uninterrupted)


def test_warmup_then_torch_scheduler(make_engine: MakeEngine) -> None:
    model, optimizer = model_and_optimizer()
    scheduler = create_lr_scheduler_with_warmup(
        torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.98),
        warmup_start_value=0.0,
        warmup_end_value=0.1,
        warmup_duration=3,
    )
    seen = lrs_seen(make_engine, optimizer, scheduler, 8, model)
    # ignite's documented values
    assert seen == pytest.approx(
        [0.0, 0.05, 0.1, 0.098, 0.09604, 0.0941192, 0.092236816, 0.09039207968], rel=1e-9
    )


def test_warmup_to_another_value_then_torch_scheduler(make_engine: MakeEngine) -> None:
    model, optimizer = model_and_optimizer()
    simulated = [None] * 7
    scheduler = create_lr_scheduler_with_warmup(
        torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5),
        warmup_start_value=0.0,
        warmup_end_value=0.2,
        warmup_duration=3,
        output_simulated_values=simulated,
    )
    seen = lrs_seen(make_engine, optimizer, scheduler, 7, model)
    # 0 -> 0.2 in 3 events, one event at the initial lr 0.1, then StepLR from 0.1
    assert seen == pytest.approx([0.0, 0.1, 0.2, 0.1, 0.1, 0.05, 0.05])
    assert [value for _, value in simulated] == pytest.approx(seen)


def test_cosine_warmup_with_param_scheduler(make_engine: MakeEngine) -> None:
    model, optimizer = model_and_optimizer()
    cosine = CosineAnnealingScheduler(optimizer, "lr", start_value=0.1, end_value=0.0, cycle_size=4)
    scheduler = create_lr_scheduler_with_warmup(cosine, warmup_start_value=0.0, warmup_duration=3)
    seen = lrs_seen(make_engine, optimizer, scheduler, 8, model)
    cos = [0.1 + (0.0 - 0.1) / 2 * (1 - math.cos(math.pi * i / 4)) for i in range(4)]
    # the warm-up stops one step short of 0.1, which the cosine starts with
    assert seen == pytest.approx([0.0, 0.05, *cos, *cos[:2]])


def test_cyclical_schedulers_values(make_engine: MakeEngine) -> None:
    _model, optimizer = model_and_optimizer()
    linear = LinearCyclicalScheduler(optimizer, "lr", 0.0, 1.0, cycle_size=4)
    assert lrs_seen(make_engine, optimizer, linear, 9) == pytest.approx(
        [0.0, 0.5, 1.0, 0.5, 0.0, 0.5, 1.0, 0.5, 0.0]
    )
    _, optimizer = model_and_optimizer()
    cosine = CosineAnnealingScheduler(
        optimizer, "lr", 1.0, 0.0, cycle_size=2, cycle_mult=2, save_history=True
    )
    values = lrs_seen(make_engine, optimizer, cosine, 6)
    assert values == pytest.approx(
        [
            1.0,
            0.5,
            1.0,
            1 - (1 - math.cos(math.pi / 4)) / 2,
            0.5,
            1 - (1 - math.cos(3 * math.pi / 4)) / 2,
        ]
    )


def test_piecewise_concat_and_param_groups(make_engine: MakeEngine) -> None:
    _model, optimizer = model_and_optimizer(groups=2)
    first = PiecewiseLinear(optimizer, "lr", [(0, 0.0), (2, 0.2)], param_group_index=0)
    second = PiecewiseLinear(optimizer, "lr", [(0, 1.0), (2, 0.0)], param_group_index=1)
    grouped = ParamGroupScheduler([first, second], names=["lr_a", "lr_b"], save_history=True)
    trainer = make_engine(lambda engine, batch: [g["lr"] for g in optimizer.param_groups])
    outputs: list[Any] = []
    trainer.add_event_handler(Events.ITERATION_STARTED, grouped)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(e.state.output))
    trainer.run([0] * 4)
    assert outputs == [pytest.approx(v) for v in ([0.0, 1.0], [0.1, 0.5], [0.2, 0.0], [0.2, 0.0])]
    assert trainer.state.param_history["lr_b"] == [[1.0], [0.5], [0.0], [0.0]]

    _, optimizer = model_and_optimizer()
    concat = ConcatScheduler(
        [
            LinearCyclicalScheduler(optimizer, "lr", 0.0, 1.0, 8),
            CosineAnnealingScheduler(optimizer, "lr", 1.0, 0.2, 4),
        ],
        durations=[4],
    )
    assert lrs_seen(make_engine, optimizer, concat, 8) == pytest.approx(
        [0.0, 0.25, 0.5, 0.75, 1.0, 0.8828427, 0.6, 0.3171573]
    )  # ignite's documented values


def lrs_of_calls(scheduler: Any, optimizer: Any, calls: int) -> list[float]:
    """Call ``scheduler`` by hand ``calls`` times; the lr of group 0 after each call."""
    lrs = []
    for _ in range(calls):
        scheduler(None)
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def test_scheduler_state_dict_resumes_mid_schedule() -> None:
    _, optimizer = model_and_optimizer()
    make = lambda opt: create_lr_scheduler_with_warmup(  # noqa: E731
        CosineAnnealingScheduler(opt, "lr", 0.1, 0.0, cycle_size=5), 0.0, warmup_duration=4
    )
    values = lrs_of_calls(make(optimizer), optimizer, 10)

    _, optimizer = model_and_optimizer()
    first = make(optimizer)
    lrs_of_calls(first, optimizer, 6)
    state = first.state_dict()
    _, optimizer = model_and_optimizer()
    second = make(optimizer)
    second.load_state_dict(state)
    assert lrs_of_calls(second, optimizer, 4) == pytest.approx(values[6:])


@pytest.mark.ignite
def test_simulated_values_match_ignite() -> None:
    pytest.importorskip("ignite")
    from ignite import handlers as ignite_handlers

    for name, kwargs in [
        (
            "CosineAnnealingScheduler",
            {
                "param_name": "lr",
                "start_value": 0.5,
                "end_value": 0.1,
                "cycle_size": 6,
                "cycle_mult": 1.5,
                "start_value_mult": 0.9,
                "end_value_mult": 0.5,
            },
        ),
        (
            "LinearCyclicalScheduler",
            {
                "param_name": "lr",
                "start_value": 0.0,
                "end_value": 1.0,
                "cycle_size": 5,
                "warmup_duration": 3,
                "monotonic": True,
            },
        ),
        (
            "PiecewiseLinear",
            {"param_name": "lr", "milestones_values": [(2, 0.5), (5, 1.0), (9, 0.0)]},
        ),
    ]:
        ours = getattr(ember_handlers, name)
        theirs = getattr(ignite_handlers, name)
        expected = [value for _, value in theirs.simulate_values(30, **kwargs)]
        assert [value for _, value in ours.simulate_values(30, **kwargs)] == pytest.approx(
            expected
        ), name


def test_bad_arguments() -> None:
    _, optimizer = model_and_optimizer()
    with pytest.raises(TypeError, match="lr_scheduler"):
        LRScheduler(optimizer)
    with pytest.raises(TypeError, match="lr_scheduler"):
        LRScheduler(torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer))
    with pytest.raises(ValueError, match="at least 2 events"):
        create_lr_scheduler_with_warmup(
            torch.optim.lr_scheduler.StepLR(optimizer, 2), 0.0, warmup_duration=1
        )
    with pytest.raises(ValueError, match="cycle_size"):
        CosineAnnealingScheduler(optimizer, "lr", 1.0, 0.0, cycle_size=1)
    with pytest.raises(TypeError, match="optimizer"):
        PiecewiseLinear(object(), "lr", [(0, 1.0)])
    with pytest.raises(ValueError, match="increasing"):
        PiecewiseLinear(optimizer, "lr", [(3, 1.0), (1, 0.0)])
    with pytest.raises(ValueError, match="warmup_duration > 0 and monotonic=False"):
        LinearCyclicalScheduler(optimizer, "lr", 0.0, 1.0, 4, warmup_duration=2)


def chained(optimizer: Any) -> Any:
    """torch's ChainedScheduler, which has no ``last_epoch`` of its own."""
    return torch.optim.lr_scheduler.ChainedScheduler(
        [
            torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5),
            torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9),
        ]
    )


def sequential(optimizer: Any) -> Any:
    return torch.optim.lr_scheduler.SequentialLR(
        optimizer,
        [
            torch.optim.lr_scheduler.ConstantLR(optimizer, factor=0.5, total_iters=2),
            torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9),
        ],
        milestones=[3],
    )


# Each builds the handler to attach around an optimizer; the key names the case.
RESUMABLE_SCHEDULERS: dict[str, Callable[[Any], Any]] = {
    "ConcatScheduler": lambda o: ConcatScheduler(
        [
            LinearCyclicalScheduler(o, "lr", 0.0, 1.0, cycle_size=8),
            CosineAnnealingScheduler(o, "lr", 1.0, 0.0, cycle_size=6),
        ],
        durations=[4],
    ),
    "warmup+CosineAnnealingScheduler": lambda o: create_lr_scheduler_with_warmup(
        CosineAnnealingScheduler(o, "lr", 0.1, 0.0, cycle_size=5), 0.0, warmup_duration=4
    ),
    "warmup+ChainedScheduler": lambda o: create_lr_scheduler_with_warmup(
        chained(o), 0.0, warmup_end_value=0.2, warmup_duration=3
    ),
    "PiecewiseLinear": lambda o: PiecewiseLinear(o, "lr", [(0, 0.0), (3, 1.0), (7, 0.2)]),
    "LinearCyclicalScheduler": lambda o: LinearCyclicalScheduler(o, "lr", 0.0, 1.0, 4),
    "CosineAnnealingScheduler": lambda o: CosineAnnealingScheduler(
        o, "lr", 0.0, 1.0, cycle_size=3, cycle_mult=2
    ),
    "ParamGroupScheduler": lambda o: ParamGroupScheduler(
        [PiecewiseLinear(o, "lr", [(0, 0.0), (5, 1.0)], param_group_index=0)]
    ),
    "LRScheduler(StepLR)": lambda o: LRScheduler(
        torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5)
    ),
    "LRScheduler(ChainedScheduler)": lambda o: LRScheduler(chained(o)),
    "LRScheduler(SequentialLR)": lambda o: LRScheduler(sequential(o)),
}


def interrupted_and_resumed(
    make_engine: MakeEngine,
    build: Callable[[Any], Any],
    stop_after: int | None,
    saved: Callable[[Any], Any] = lambda scheduler: scheduler,
) -> list[float]:
    """The lr of each iteration of 3 epochs of 4 iterations; with ``stop_after``, the run is
    interrupted after that iteration and a new trainer, optimizer and scheduler resume it from
    the state_dicts of the first (``saved(scheduler)`` picks the scheduler object saved)."""
    seen: list[float] = []

    def setup() -> tuple[Any, Any, Any]:
        _, optimizer = model_and_optimizer()

        def step(engine: Engine, batch: Any) -> None:
            optimizer.step()  # no gradients: no change, but torch's order warning stays quiet
            seen.append(optimizer.param_groups[0]["lr"])

        trainer = make_engine(step)
        scheduler = build(optimizer)
        scheduler.attach(trainer)
        return trainer, optimizer, scheduler

    trainer, optimizer, scheduler = setup()
    if stop_after is None:
        trainer.run([0] * 4, max_epochs=3)
        return seen
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED(once=stop_after), lambda engine: engine.interrupt()
    )
    trainer.run([0] * 4, max_epochs=3)
    assert len(seen) == stop_after
    states = [deepcopy(o.state_dict()) for o in (trainer, optimizer, saved(scheduler))]
    trainer, optimizer, scheduler = setup()
    for target, state in zip((trainer, optimizer, saved(scheduler)), states, strict=True):
        target.load_state_dict(state)
    trainer.run([0] * 4, max_epochs=3)
    return seen


@pytest.mark.parametrize("stop_after", [2, 4, 7])
@pytest.mark.parametrize("name", list(RESUMABLE_SCHEDULERS))
def test_interrupted_run_resumes_the_schedule(
    make_engine: MakeEngine, name: str, stop_after: int
) -> None:
    """Interrupting a run, saving trainer, optimizer and scheduler, and resuming in new objects
    gives each iteration the lr of the uninterrupted run, on both loops."""
    build = RESUMABLE_SCHEDULERS[name]
    uninterrupted = interrupted_and_resumed(make_engine, build, None)
    assert len(set(uninterrupted)) > 2  # the schedule moves
    resumed = interrupted_and_resumed(make_engine, build, stop_after)
    assert resumed == pytest.approx(uninterrupted)


@pytest.mark.parametrize("stop_after", [2, 4, 7])
@pytest.mark.parametrize("torch_scheduler", [chained, sequential])
def test_resume_from_the_state_of_a_composite_torch_scheduler_alone(
    make_engine: MakeEngine, torch_scheduler: Callable[[Any], Any], stop_after: int
) -> None:
    """A checkpoint of trainer, optimizer and the torch scheduler inside ``LRScheduler`` (not
    the wrapper) resumes where it stopped, ChainedScheduler included: it has no last_epoch of its
    own, its children count the steps (it resumed one step late, repeating one lr)."""

    def build(optimizer: Any) -> LRScheduler:
        return LRScheduler(torch_scheduler(optimizer))

    uninterrupted = interrupted_and_resumed(make_engine, build, None)
    resumed = interrupted_and_resumed(
        make_engine, build, stop_after, saved=lambda scheduler: scheduler.lr_scheduler
    )
    assert resumed == pytest.approx(uninterrupted)
