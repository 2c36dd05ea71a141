"""create_supervised_trainer / create_supervised_evaluator."""

from __future__ import annotations

import gc
import inspect
import traceback
import weakref
from typing import Any, NamedTuple

import pytest

torch = pytest.importorskip("torch")

from ember.engine import (
    DeterministicEngine,
    Engine,
    Events,
    create_supervised_evaluator,
    create_supervised_trainer,
)
from ember.engine.supervised import (
    _to_device,
    supervised_evaluation_step,
    supervised_training_step,
)


def regression_data(batches: int = 6) -> list[tuple[Any, Any]]:
    torch.manual_seed(0)
    weight = torch.tensor([[2.0], [-1.0]])
    data = []
    for _ in range(batches):
        x = torch.randn(8, 2)
        data.append((x, x @ weight + 0.5))
    return data


def sgd_trainer(model: torch.nn.Module, **kwargs: Any) -> Engine:
    """A supervised trainer of ``model`` by SGD on the mean squared error."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return create_supervised_trainer(model, optimizer, torch.nn.functional.mse_loss, **kwargs)


def test_trainer_matches_a_hand_written_loop(backend: str) -> None:
    data = regression_data()
    torch.manual_seed(1)
    model = torch.nn.Linear(2, 1)
    reference = torch.nn.Linear(2, 1)
    reference.load_state_dict(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    reference_optimizer = torch.optim.SGD(reference.parameters(), lr=0.05)

    trainer = create_supervised_trainer(
        model, optimizer, torch.nn.functional.mse_loss, backend=backend
    )
    trainer.run(data, max_epochs=3)

    for _ in range(3):
        for x, y in data:
            reference_optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(reference(x), y)
            loss.backward()
            reference_optimizer.step()
    assert torch.equal(model.weight, reference.weight)
    assert trainer.state.output == pytest.approx(loss.item())


def test_gradient_accumulation_steps_every_n_iterations(backend: str) -> None:
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    steps: list[int] = []
    original = optimizer.step

    def counted_step(*args: Any, **kwargs: Any) -> Any:
        steps.append(1)
        return original(*args, **kwargs)

    optimizer.step = counted_step  # type: ignore[method-assign]
    trainer = create_supervised_trainer(
        model,
        optimizer,
        torch.nn.functional.mse_loss,
        gradient_accumulation_steps=3,
        backend=backend,
    )
    trainer.run(regression_data(6), max_epochs=1)
    assert len(steps) == 2


def test_train_mode_is_set_once_per_run_not_every_iteration(backend: str) -> None:
    model = torch.nn.Linear(2, 1)
    calls: list[bool] = []
    original = model.train

    def train(mode: bool = True) -> Any:
        calls.append(mode)
        return original(mode)

    model.train = train  # type: ignore[method-assign]
    model.eval()
    calls.clear()
    trainer = sgd_trainer(model, backend=backend)
    trainer.run(regression_data(6), max_epochs=2)
    assert calls == [True]

    @trainer.on(Events.EPOCH_COMPLETED)
    def evaluate(engine: Engine) -> None:
        model.eval()  # what an evaluator run does

    calls.clear()
    trainer.run(regression_data(6), max_epochs=2)
    # back to training once after the evaluation that ended epoch 1, not every iteration
    assert calls == [False, True, False]


def test_evaluator_runs_in_inference_mode_and_attaches_metrics(backend: str) -> None:
    model = torch.nn.Linear(2, 1)
    seen: dict[str, Any] = {}

    class Recorder:
        def attach(self, engine: Engine, name: str) -> None:
            @engine.on(Events.ITERATION_COMPLETED)
            def record(e: Engine) -> None:
                y_pred, _ = e.state.output
                seen["inference"] = y_pred.is_inference()
                seen["requires_grad"] = y_pred.requires_grad
                e.state.metrics[name] = float(y_pred.sum())

    evaluator = create_supervised_evaluator(model, metrics={"total": Recorder()}, backend=backend)
    state = evaluator.run(regression_data(2))
    assert seen == {"inference": True, "requires_grad": False}
    assert "total" in state.metrics
    assert not model.training


def test_evaluator_with_no_grad_instead_of_inference_mode(backend: str) -> None:
    model = torch.nn.Linear(2, 1)
    evaluator = create_supervised_evaluator(model, inference_mode=False, backend=backend)
    evaluator.run(regression_data(1))
    y_pred, _ = evaluator.state.output
    assert not y_pred.is_inference()


def test_amp_with_a_scaler_on_cpu(backend: str) -> None:
    model = torch.nn.Linear(2, 1)
    trainer = sgd_trainer(model, amp_mode="amp", scaler=True, backend=backend)
    trainer.run(regression_data(2))
    assert isinstance(trainer.state.scaler, torch.amp.GradScaler)
    assert torch.isfinite(trainer.state.output)


def test_trainer_output_is_the_detached_loss_without_a_host_sync(backend: str) -> None:
    from syncs import HostSyncCounter

    trainer = sgd_trainer(torch.nn.Linear(2, 1), backend=backend)
    with HostSyncCounter() as counter:
        trainer.run(regression_data(4))
    output = trainer.state.output
    assert counter.count == 0
    assert isinstance(output, torch.Tensor)
    assert output.ndim == 0 and not output.requires_grad
    assert f"{output:.3f}" == f"{float(output):.3f}"  # formats as the float it holds


def test_loss_as_float_gives_ignites_float_output(backend: str) -> None:
    from ember.engine.supervised import loss_as_float

    data = regression_data(4)
    torch.manual_seed(3)  # the same seed before each model: the same initial weights
    trainer = sgd_trainer(torch.nn.Linear(2, 1), output_transform=loss_as_float, backend=backend)
    torch.manual_seed(3)
    default = sgd_trainer(torch.nn.Linear(2, 1), backend=backend)
    trainer.run(data)
    default.run(data)
    assert isinstance(trainer.state.output, float)
    assert trainer.state.output == float(default.state.output)


def test_deterministic_option_returns_a_deterministic_engine(backend: str) -> None:
    trainer = sgd_trainer(torch.nn.Linear(2, 1), deterministic=True, backend=backend)
    assert isinstance(trainer, DeterministicEngine)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"amp_mode": "apex"}, "amp_mode should be None or 'amp'"),
        ({"scaler": True}, "scaler= needs amp_mode='amp'"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps should be a positive"),
        ({"gradient_accumulation_steps": True}, "gradient_accumulation_steps should be a positive"),
    ],
)
def test_bad_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sgd_trainer(torch.nn.Linear(2, 1), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"amp_mode": "bf16"}, "amp_mode should be None or 'amp'"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps should be a positive"),
        ({"gradient_accumulation_steps": -1}, "gradient_accumulation_steps should be a positive"),
        ({"gradient_accumulation_steps": 2.5}, "gradient_accumulation_steps should be a positive"),
    ],
)
def test_the_step_factories_check_their_options(kwargs: dict, message: str) -> None:
    """The steps are public: they check what create_supervised_* checks (they ran as if the
    option were the default)."""
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=message):
        supervised_training_step(model, optimizer, torch.nn.functional.mse_loss, **kwargs)
    if "amp_mode" in kwargs:
        with pytest.raises(ValueError, match=message):
            supervised_evaluation_step(model, **kwargs)


def test_the_training_step_wants_a_scaler_not_a_flag() -> None:
    """scaler=True (create_supervised_trainer's way to ask for one) failed at the first step."""
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="scaler should be a GradScaler or None here, got True"):
        supervised_training_step(
            model, optimizer, torch.nn.functional.mse_loss, amp_mode="amp", scaler=True
        )


def test_scaler_none_is_no_scaler(backend: str) -> None:
    """``scaler=GradScaler() if amp else None``: None means no scaler, as in ignite."""
    trainer = sgd_trainer(torch.nn.Linear(2, 1), scaler=None, backend=backend)
    assert trainer.run(regression_data(2)).iteration == 2


class Inputs(NamedTuple):
    first: Any
    second: Any


def test_batches_keep_their_containers_when_moved(backend: str) -> None:
    """A namedtuple x (it crashed: rebuilt from a generator) and mappings keep their type, as
    ignite's convert_tensor keeps them, with every tensor moved."""
    from collections import OrderedDict

    seen: list[Any] = []

    def model_fn(model: Any, x: Any) -> Any:
        seen.append(x)
        return torch.zeros(1, 1, device="meta", requires_grad=True)

    model = torch.nn.Linear(2, 1, device="meta")
    trainer = create_supervised_trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        lambda y_pred, y: y_pred.sum(),
        device="meta",
        model_fn=model_fn,
        backend=backend,
    )
    y = torch.zeros(1)
    trainer.run(
        [
            (Inputs(torch.ones(1), [torch.ones(1)]), y),
            (OrderedDict(a=torch.ones(1), b=(torch.ones(1), "text")), y),
        ]
    )
    pair, mapping = seen
    assert type(pair) is Inputs and pair.first.is_meta and pair.second[0].is_meta
    assert type(mapping) is OrderedDict and list(mapping) == ["a", "b"]
    assert mapping["a"].is_meta and mapping["b"][0].is_meta and mapping["b"][1] == "text"


def test_batches_that_are_not_pairs_are_refused(backend: str) -> None:
    trainer = sgd_trainer(torch.nn.Linear(2, 1), backend=backend)
    with pytest.raises(ValueError, match="prepare_batch expects batches of \\(x, y\\)"):
        trainer.run([torch.randn(3, 2)])


# ---------------------------------------------------------------------------- the plain step
# With the default prepare_batch, model_fn and model_transform, and without amp, scaler and
# accumulation, the trainer runs a specialised step; any other argument takes the general one.
def _call_model_by_hand(model: torch.nn.Module, x: Any) -> Any:
    return model(x)  # not the default model_fn: forces the general step


def linear_trainer(loss_fn: Any, backend: str, general: bool) -> Engine:
    """A trainer of a ``Linear(2, 1)`` by SGD on ``loss_fn``, through the general step or the
    plain one."""
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    options = {"model_fn": _call_model_by_hand} if general else {}
    return create_supervised_trainer(model, optimizer, loss_fn, backend=backend, **options)


class Pair(NamedTuple):
    x: Any
    y: Any


@pytest.mark.parametrize("device", [None, "cpu", torch.device("cpu")])
@pytest.mark.parametrize("layout", ["tuple", "list", "namedtuple", "dict-x", "tensor-subclass"])
def test_the_plain_step_trains_as_the_general_one(backend: str, device: Any, layout: str) -> None:
    def batches() -> list[Any]:
        data = regression_data(4)
        if layout == "list":
            return [[x, y] for x, y in data]
        if layout == "namedtuple":
            return [Pair(x, y) for x, y in data]
        if layout == "dict-x":
            return [({"input": x}, y) for x, y in data]
        if layout == "tensor-subclass":
            return [(torch.nn.Parameter(x, requires_grad=False), y) for x, y in data]
        return data

    class DictInput(torch.nn.Linear):
        def forward(self, x: Any) -> Any:
            return super().forward(x["input"] if isinstance(x, dict) else x)

    outputs = []
    weights = []
    for model_fn in ({}, {"model_fn": _call_model_by_hand}):
        torch.manual_seed(3)
        model = DictInput(2, 1)
        seen: list[Any] = []

        def output_transform(x: Any, y: Any, y_pred: Any, loss: Any, seen: list[Any] = seen) -> Any:
            seen.append((type(x), type(y)))
            return loss.detach()

        trainer = sgd_trainer(
            model, device=device, output_transform=output_transform, backend=backend, **model_fn
        )
        trainer.run(batches(), max_epochs=2)
        outputs.append((trainer.state.output, seen))
        weights.append(model.weight.detach().clone())
    assert torch.equal(weights[0], weights[1])
    assert outputs[0][0] == outputs[1][0]
    assert outputs[0][1] == outputs[1][1]


def test_the_plain_step_returns_the_detached_loss_or_ignites_float(backend: str) -> None:
    from ember.engine.supervised import loss_as_float

    trainer = sgd_trainer(torch.nn.Linear(2, 1), device="cpu", backend=backend)
    trainer.run(regression_data(2))
    assert isinstance(trainer.state.output, torch.Tensor)
    assert not trainer.state.output.requires_grad
    trainer = sgd_trainer(
        torch.nn.Linear(2, 1), output_transform=loss_as_float, device="cpu", backend=backend
    )
    trainer.run(regression_data(2))
    assert isinstance(trainer.state.output, float)


def test_non_default_arguments_take_the_general_step(backend: str) -> None:
    calls: list[str] = []

    def prepare(batch: Any, device: Any = None, non_blocking: bool = False) -> Any:
        calls.append("prepare_batch")
        return batch

    def model_transform(output: Any) -> Any:
        calls.append("model_transform")
        return output

    trainer = sgd_trainer(
        torch.nn.Linear(2, 1),
        prepare_batch=prepare,
        model_transform=model_transform,
        backend=backend,
    )
    trainer.run(regression_data(1))
    assert calls == ["prepare_batch", "model_transform"]


def test_the_plain_step_leaves_a_model_in_train_mode_once(backend: str) -> None:
    model = torch.nn.Linear(2, 1)
    trainer = sgd_trainer(model, backend=backend)
    model.eval()
    trainer.run(regression_data(2))
    assert model.training


@pytest.mark.parametrize("general", [False, True])
def test_the_step_keeps_the_previous_loss_until_the_next_step(backend: str, general: bool) -> None:
    """As the loss variable of a hand-written loop: the graph of the previous step (its tensors
    released by backward) lives until the next step has built its own, so that torch reuses the
    parameters' gradient accumulators instead of building them anew; no longer: it is gone by
    the time the next backward pass runs."""
    losses: list[weakref.ref[Any]] = []
    previous_alive_at_forward: list[bool] = []
    previous_alive_at_backward: list[bool] = []

    def loss_fn(y_pred: Any, y: Any) -> Any:
        loss = torch.nn.functional.mse_loss(y_pred, y)
        if losses:
            previous = losses[-1]
            previous_alive_at_forward.append(previous() is not None)
            loss.register_hook(
                lambda grad: previous_alive_at_backward.append(previous() is not None)
            )
        losses.append(weakref.ref(loss))
        return loss

    trainer = linear_trainer(loss_fn, backend, general)
    alive: list[list[bool]] = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda _: alive.append([ref() is not None for ref in losses])
    )
    trainer.run(regression_data(3))
    assert alive == [[True], [False, True], [False, False, True]]
    assert previous_alive_at_forward == [True, True]
    assert previous_alive_at_backward == [False, False]
    del trainer
    gc.collect()
    assert losses[-1]() is None  # the engine, its step and the last graph are collected


@pytest.mark.parametrize("general", [False, True])
def test_a_step_whose_backward_pass_fails_keeps_no_graph(backend: str, general: bool) -> None:
    """The failed step's graph still holds its activations: the trainer, still referenced (a
    run retried with smaller batches after running out of memory), must not keep it."""
    losses: list[weakref.ref[Any]] = []

    def fail(grad: Any) -> Any:
        raise RuntimeError("backward failed")

    def loss_fn(y_pred: Any, y: Any) -> Any:
        loss = torch.nn.functional.mse_loss(y_pred, y)
        if losses:  # the second step's backward pass fails
            loss.register_hook(fail)
        losses.append(weakref.ref(loss))
        return loss

    trainer = linear_trainer(loss_fn, backend, general)
    with pytest.raises(RuntimeError, match="backward failed") as failure:
        trainer.run(regression_data(3))
    # The frames of the traceback (which the log of the failure keeps too) hold the loss.
    traceback.clear_frames(failure.value.__traceback__)
    gc.collect()
    assert len(losses) == 2
    assert [ref() is None for ref in losses] == [True, True]
    assert trainer.state.iteration == 2


@pytest.mark.parametrize("general", [False, True])
@pytest.mark.parametrize("batch_device", ["cpu", "meta"])
def test_the_step_moves_batches_that_are_not_on_its_device(
    backend: str, general: bool, batch_device: str
) -> None:
    # The meta device runs the whole step on shapes alone: a second device on any machine.
    model = torch.nn.Linear(2, 1, device="meta")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    seen: list[tuple[str, str]] = []

    def output_transform(x: Any, y: Any, y_pred: Any, loss: Any) -> Any:
        seen.append((x.device.type, y.device.type))
        return loss.detach()

    options = {"model_fn": _call_model_by_hand} if general else {}
    trainer = create_supervised_trainer(
        model,
        optimizer,
        torch.nn.functional.mse_loss,
        device="meta",
        output_transform=output_transform,
        backend=backend,
        **options,
    )
    batch = (torch.randn(4, 2, device=batch_device), torch.randn(4, 1, device=batch_device))
    trainer.run([batch, list(batch)])
    assert seen == [("meta", "meta")] * 2


def test_moving_a_batch_builds_no_function_per_call() -> None:
    """``_to_device`` runs at every iteration: it defines no nested function (a closure per
    call), a tensor already on the device comes back as itself, and containers still move."""
    assert not any(inspect.iscode(const) for const in _to_device.__code__.co_consts)
    cpu = torch.device("cpu")
    tensor = torch.ones(2)
    assert _to_device(tensor, cpu, False) is tensor
    moved = _to_device({"a": [tensor, 3]}, torch.device("meta"), True)
    assert moved["a"][0].is_meta and moved["a"][1] == 3
    assert _to_device("text", cpu, False) == "text"
