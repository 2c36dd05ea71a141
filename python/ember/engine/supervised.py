"""``create_supervised_trainer`` and ``create_supervised_evaluator``: engines for a torch model.

Imported lazily by ``ember.engine`` (``ember.engine.create_supervised_trainer``), so that
``import ember.engine`` does not import torch.

The trainer's default output is the loss as a detached 0-d tensor, not ignite's
``loss.item()``: reading the value would make the host wait for the device at every iteration.
Handlers read it when they need it (``float(engine.state.output)``); pass
``output_transform=loss_as_float`` for ignite's Python float.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ember.data._prefetch import map_tensors
from ember.engine.deterministic import DeterministicEngine
from ember.engine.engine import Engine

__all__ = [
    "create_supervised_evaluator",
    "create_supervised_trainer",
    "detached_loss",
    "loss_as_float",
    "prepare_batch",
    "supervised_evaluation_step",
    "supervised_training_step",
]


def _moved(device: torch.device, non_blocking: bool, tensor: torch.Tensor) -> torch.Tensor:
    # Already there: .to() would return the tensor itself, after ~1 us in the dispatcher.
    if tensor.device == device:
        return tensor
    return tensor.to(device=device, non_blocking=non_blocking)


def _to_device(value: Any, device: torch.device, non_blocking: bool) -> Any:
    """``value`` with its tensors (in tuples, named ones too, lists and mappings, each kept as
    its type) moved to ``device``."""
    # A tensor, the usual x and y, allocates no function object; a container walks its items
    # with one partial.
    if isinstance(value, torch.Tensor):
        return _moved(device, non_blocking, value)
    return map_tensors(value, functools.partial(_moved, device, non_blocking))


def prepare_batch(
    batch: Sequence[Any], device: str | torch.device | None = None, non_blocking: bool = False
) -> tuple[Any, Any]:
    """Split ``(x, y)`` and move both to ``device``."""
    # type() first: a tuple or a list skips the slower abstract-class check.
    is_sequence = type(batch) in (tuple, list) or isinstance(batch, Sequence)
    if not is_sequence or len(batch) != 2:
        raise ValueError(
            "prepare_batch expects batches of (x, y); pass prepare_batch= for other layouts, "
            f"got {type(batch).__name__}"
        )
    x, y = batch
    if device is None:
        return x, y
    if type(device) is not torch.device:
        device = torch.device(device)
    return _to_device(x, device, non_blocking), _to_device(y, device, non_blocking)


def _check_options(
    device: str | torch.device | None,
    amp_mode: str | None,
    scaler: bool | Any,
    gradient_accumulation_steps: int,
) -> None:
    if amp_mode not in (None, "amp"):
        raise ValueError(f"amp_mode should be None or 'amp', got {amp_mode!r}")
    if scaler is not False and scaler is not None and amp_mode != "amp":
        raise ValueError("scaler= needs amp_mode='amp'")
    if device is not None and torch.device(device).type == "mps" and amp_mode is not None:
        raise ValueError("amp_mode is not supported on mps devices")
    if (
        not isinstance(gradient_accumulation_steps, int)
        or isinstance(gradient_accumulation_steps, bool)
        or gradient_accumulation_steps < 1
    ):
        raise ValueError(
            "gradient_accumulation_steps should be a positive integer, "
            f"got {gradient_accumulation_steps!r}"
        )


def _autocast_device(device: str | torch.device | None) -> str:
    """The device type autocast (and a GradScaler) works for: the batches' device, or with
    ``device=None`` CUDA where there is one (as ignite, whose autocast is CUDA's)."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device).type


def _autocast_or_nothing(device: str | torch.device | None, amp_mode: str | None) -> Any:
    """A factory of the context the forward pass runs in: ``torch.autocast`` for
    ``amp_mode="amp"``, otherwise a no-op context (entering a disabled autocast still costs
    microseconds per step)."""
    if amp_mode == "amp":
        autocast_device = _autocast_device(device)
        return lambda: torch.autocast(autocast_device)
    return lambda: _NO_CONTEXT


_NO_CONTEXT = contextlib.nullcontext()  # reusable: entering it does nothing


def detached_loss(x: Any, y: Any, y_pred: Any, loss: torch.Tensor) -> torch.Tensor:
    """The trainer's default ``output_transform``: the loss as a 0-d tensor without autograd
    history, left on its device (no host sync)."""
    return loss.detach()


def loss_as_float(x: Any, y: Any, y_pred: Any, loss: torch.Tensor) -> float:
    """ignite's default ``output_transform``: the loss as a Python float (``loss.item()``, a host
    sync at every iteration)."""
    return loss.item()


def _same_output(output: Any) -> Any:
    """The trainer's default ``model_transform``."""
    return output


def _call_model(model: torch.nn.Module, x: Any) -> Any:
    """The trainer's and the evaluator's default ``model_fn``."""
    return model(x)


def _prediction_and_target(x: Any, y: Any, y_pred: Any) -> tuple[Any, Any]:
    """The evaluator's default ``output_transform``."""
    return y_pred, y


# The module's prepare_batch, under a name the steps' parameter of that name does not hide.
_default_prepare_batch = prepare_batch


class _LastGraph:
    """The previous step's loss, with its autograd graph, kept until the next step's forward
    pass has built its own graph, which then holds what the old one held for it.

    Each parameter's gradient accumulator (the graph node that adds into ``.grad``) is cached by
    torch only while a graph holds it. A loss that dies at the end of the step takes them along,
    and every forward pass builds them anew: about 7k instructions per step on a 3-layer MLP,
    which a hand-written loop does not pay, because its ``loss`` variable lives on until the
    next ``loss = ...``. After ``backward()`` the graph has released the tensors it saved, so
    keeping it costs a few small nodes; replaced right after the new loss is computed, as that
    variable is, rather than after the new backward pass and optimizer step, its nodes are
    freed before the new backward pass allocates (about half a percent of an iteration of
    benchmarks/stack.py's trainer, side by side). A step whose backward pass or optimizer step
    raises keeps nothing: its graph still holds the forward pass's activations, which a run
    retried after an out-of-memory error needs freed.
    """

    __slots__ = ("loss",)

    def __init__(self) -> None:
        self.loss: Any = None


def supervised_training_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[..., torch.Tensor],
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable[..., tuple[Any, Any]] = prepare_batch,
    model_transform: Callable[[Any], Any] = _same_output,
    output_transform: Callable[..., Any] = detached_loss,
    gradient_accumulation_steps: int = 1,
    model_fn: Callable[[torch.nn.Module, Any], Any] = _call_model,
    amp_mode: str | None = None,
    scaler: Any = None,
) -> Callable[[Engine, Any], Any]:
    """The process function of a trainer: forward, loss, backward and (every N) step.

    ``model.train()`` is called only when the model is not already in training mode, so once
    per run unless a handler (an evaluator run, say) switched it to evaluation mode. The output
    is ``output_transform(x, y, y_pred, loss)``, by default the detached loss tensor.
    """
    if isinstance(scaler, bool):  # create_supervised_trainer makes one of True; this takes it
        raise TypeError(f"scaler should be a GradScaler or None here, got {scaler!r}")
    _check_options(device, amp_mode, scaler, gradient_accumulation_steps)
    if (
        prepare_batch is _default_prepare_batch
        and model_transform is _same_output
        and model_fn is _call_model
        and gradient_accumulation_steps == 1
        and amp_mode is None
        and scaler is None
    ):
        return _plain_training_step(
            model, optimizer, loss_fn, device, non_blocking, output_transform
        )
    forward_context = _autocast_or_nothing(device, amp_mode)
    accumulating = gradient_accumulation_steps > 1
    last_graph = _LastGraph()

    def step(engine: Engine, batch: Any) -> Any:
        if not model.training:
            model.train()
        if not accumulating or (engine.state.iteration - 1) % gradient_accumulation_steps == 0:
            optimizer.zero_grad()
        x, y = prepare_batch(batch, device=device, non_blocking=non_blocking)
        with forward_context():
            y_pred = model_transform(model_fn(model, x))
            loss = loss_fn(y_pred, y)
        last_graph.loss = loss
        try:
            backward_loss = loss / gradient_accumulation_steps if accumulating else loss
            if scaler is not None:
                scaler.scale(backward_loss).backward()
            else:
                backward_loss.backward()  # type: ignore[no-untyped-call]
            if not accumulating or engine.state.iteration % gradient_accumulation_steps == 0:
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
        except BaseException:
            last_graph.loss = None  # see _LastGraph
            raise
        return output_transform(x, y, y_pred, loss)

    return step


def _plain_training_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[..., torch.Tensor],
    device: str | torch.device | None,
    non_blocking: bool,
    output_transform: Callable[..., Any],
) -> Callable[[Engine, Any], Any]:
    """:func:`supervised_training_step` with the default batch preparation, model call and
    transform, no autocast, no scaler and no accumulation: the same work without the calls
    that do nothing (about a third of the step's Python cost on a small model)."""
    target = None if device is None else torch.device(device)
    detached = output_transform is detached_loss
    last_graph = _LastGraph()

    tensor = torch.Tensor

    def step(engine: Engine, batch: Any) -> Any:
        if not model.training:
            model.train()
        optimizer.zero_grad()
        # prepare_batch's common case inline (three calls less per step): an (x, y) tuple or
        # list of plain tensors already on the target device.
        if (
            (type(batch) is tuple or type(batch) is list)
            and len(batch) == 2
            and type(batch[0]) is tensor
            and type(batch[1]) is tensor
            and (target is None or (batch[0].device == target and batch[1].device == target))
        ):
            x, y = batch
        else:
            x, y = _default_prepare_batch(batch, device=target, non_blocking=non_blocking)
        y_pred = model(x)
        loss = loss_fn(y_pred, y)
        last_graph.loss = loss
        try:
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
        except BaseException:
            last_graph.loss = None  # see _LastGraph
            raise
        if detached:
            return loss.detach()
        return output_transform(x, y, y_pred, loss)

    return step


def create_supervised_trainer(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[..., torch.Tensor],
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable[..., tuple[Any, Any]] = prepare_batch,
    model_transform: Callable[[Any], Any] = _same_output,
    output_transform: Callable[..., Any] = detached_loss,
    deterministic: bool = False,
    amp_mode: str | None = None,
    scaler: bool | Any = False,
    gradient_accumulation_steps: int = 1,
    model_fn: Callable[[torch.nn.Module, Any], Any] = _call_model,
    backend: str | None = None,
) -> Engine:
    """An engine that trains ``model`` with ``optimizer`` on ``loss_fn``, as ignite's.

    Each iteration: ``x, y = prepare_batch(batch, device, non_blocking)``, ``y_pred =
    model_transform(model_fn(model, x))``, ``loss = loss_fn(y_pred, y)``, backward, and an
    optimizer step every ``gradient_accumulation_steps`` iterations; ``engine.state.output`` is
    ``output_transform(x, y, y_pred, loss)``: by default the loss as a detached 0-d tensor
    (ignite: ``loss.item()``, a float, at the price of a host sync per iteration; pass
    ``output_transform=loss_as_float`` for it). ``model.train()`` is called
    when the model is not in training mode (ignite: every iteration; docs/migration.md).

    Args:
        model: the model to train.
        optimizer: its optimizer.
        loss_fn: ``loss_fn(y_pred, y)``, a scalar tensor.
        device: where batches are moved (``None``: left where they are).
        non_blocking: passed to ``tensor.to()``.
        prepare_batch: ``(batch, device, non_blocking) -> (x, y)``.
        model_transform: applied to the model's output before the loss.
        output_transform: ``(x, y, y_pred, loss) -> engine.state.output``.
        deterministic: return a :class:`~ember.engine.deterministic.DeterministicEngine`
            (exact mid-epoch resume).
        amp_mode: ``"amp"`` runs the forward pass under ``torch.autocast`` for the type of
            ``device`` (``None``: CUDA where there is one, else the CPU).
        scaler: ``True`` (a new ``GradScaler``, stored in ``engine.state.scaler``) or a
            ``GradScaler`` to scale the loss; needs ``amp_mode="amp"``.
        gradient_accumulation_steps: iterations whose gradients add up before each step.
        model_fn: ``(model, x) -> output`` (``model(x)`` by default).
        backend: the loop, ``"cpp"`` or ``"python"`` (see :class:`~ember.engine.Engine`).

    Returns:
        The trainer, an :class:`~ember.engine.Engine`.

    Raises:
        ValueError: ``amp_mode`` is not ``None`` or ``"amp"``, ``scaler`` without
            ``amp_mode="amp"``, ``amp_mode`` on an mps device, or
            ``gradient_accumulation_steps`` is not a positive integer.

    Example:
        ```python
        trainer = create_supervised_trainer(model, optimizer, torch.nn.functional.mse_loss)
        trainer.run(data, max_epochs=5)
        print(trainer.state.output)  # the last loss
        ```
    """
    _check_options(device, amp_mode, scaler, gradient_accumulation_steps)
    grad_scaler = None
    if scaler is True:
        grad_scaler = torch.amp.GradScaler(_autocast_device(device))
    elif scaler is not False:
        grad_scaler = scaler
    step = supervised_training_step(
        model,
        optimizer,
        loss_fn,
        device=device,
        non_blocking=non_blocking,
        prepare_batch=prepare_batch,
        model_transform=model_transform,
        output_transform=output_transform,
        gradient_accumulation_steps=gradient_accumulation_steps,
        model_fn=model_fn,
        amp_mode=amp_mode,
        scaler=grad_scaler,
    )
    engine_cls = DeterministicEngine if deterministic else Engine
    trainer = engine_cls(step, backend=backend)
    if scaler is True:
        trainer.state.scaler = grad_scaler  # type: ignore[attr-defined]  # State is open
    return trainer


def supervised_evaluation_step(
    model: torch.nn.Module,
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable[..., tuple[Any, Any]] = prepare_batch,
    model_transform: Callable[[Any], Any] = _same_output,
    output_transform: Callable[..., Any] = _prediction_and_target,
    amp_mode: str | None = None,
    model_fn: Callable[[torch.nn.Module, Any], Any] = _call_model,
    inference_mode: bool = True,
) -> Callable[[Engine, Any], Any]:
    """The process function of an evaluator: forward pass without autograd.

    It runs under ``torch.inference_mode()`` (``torch.no_grad()`` with
    ``inference_mode=False``, for models whose outputs must take part in autograd later).
    """
    _check_options(device, amp_mode, None, 1)
    # torch.inference_mode() enters this C++ guard through a Python object of its own (2.2 us
    # a step against 0.9); a partial makes it without a Python frame.
    no_autograd = (
        functools.partial(torch._C._InferenceMode, True) if inference_mode else torch.no_grad
    )
    if (
        prepare_batch is _default_prepare_batch
        and model_transform is _same_output
        and model_fn is _call_model
        and output_transform is _prediction_and_target
        and amp_mode is None
    ):
        return _plain_evaluation_step(model, device, non_blocking, no_autograd)
    forward_context = _autocast_or_nothing(device, amp_mode)

    def step(engine: Engine, batch: Any) -> Any:
        if model.training:
            model.eval()
        with no_autograd():
            x, y = prepare_batch(batch, device=device, non_blocking=non_blocking)
            with forward_context():
                y_pred = model_transform(model_fn(model, x))
            return output_transform(x, y, y_pred)

    return step


def _plain_evaluation_step(
    model: torch.nn.Module,
    device: str | torch.device | None,
    non_blocking: bool,
    no_autograd: Callable[[], Any],
) -> Callable[[Engine, Any], Any]:
    """:func:`supervised_evaluation_step` with the default batch preparation, model call and
    transforms and no autocast: the same work without the calls that do nothing (six Python
    frames a batch)."""
    target = None if device is None else torch.device(device)

    def step(engine: Engine, batch: Any) -> Any:
        if model.training:
            model.eval()
        with no_autograd():
            # Two tensors already in place: what prepare_batch would return, three Python
            # frames sooner.
            if (
                type(batch) is tuple
                and len(batch) == 2
                and (
                    target is None
                    or (
                        type(batch[0]) is torch.Tensor
                        and type(batch[1]) is torch.Tensor
                        and batch[0].device == target
                        and batch[1].device == target
                    )
                )
            ):
                x, y = batch
            else:
                x, y = _default_prepare_batch(batch, device=target, non_blocking=non_blocking)
            return model(x), y

    return step


def create_supervised_evaluator(
    model: torch.nn.Module,
    metrics: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    non_blocking: bool = False,
    prepare_batch: Callable[..., tuple[Any, Any]] = prepare_batch,
    model_transform: Callable[[Any], Any] = _same_output,
    output_transform: Callable[..., Any] = _prediction_and_target,
    amp_mode: str | None = None,
    model_fn: Callable[[torch.nn.Module, Any], Any] = _call_model,
    inference_mode: bool = True,
    backend: str | None = None,
) -> Engine:
    """An engine that evaluates ``model`` and computes ``metrics`` (attached by name).

    Each iteration runs ``model`` in eval mode under ``torch.inference_mode()`` (ignite:
    ``torch.no_grad()``; ``inference_mode=False`` gives that) and sets ``engine.state.output``
    to ``output_transform(x, y, y_pred)``, ``(y_pred, y)`` by default, which the metrics read.

    Args:
        model: the model to evaluate.
        metrics: ``{name: metric}``; each is attached under its name, so its value is in
            ``engine.state.metrics[name]`` after a run.
        device: where batches are moved (``None``: left where they are).
        non_blocking: passed to ``tensor.to()``.
        prepare_batch: ``(batch, device, non_blocking) -> (x, y)``.
        model_transform: applied to the model's output.
        output_transform: ``(x, y, y_pred) -> engine.state.output``.
        amp_mode: ``"amp"`` runs the forward pass under ``torch.autocast`` for the type of
            ``device`` (``None``: CUDA where there is one, else the CPU).
        model_fn: ``(model, x) -> output`` (``model(x)`` by default).
        inference_mode: ``False`` runs under ``torch.no_grad()``: outputs that a handler edits
            in place, or that take part in autograd later, need it.
        backend: the loop, ``"cpp"`` or ``"python"`` (see :class:`~ember.engine.Engine`).

    Returns:
        The evaluator, an :class:`~ember.engine.Engine`.

    Raises:
        ValueError: ``amp_mode`` is not ``None`` or ``"amp"``, or ``amp_mode`` on an mps
            device.

    Example:
        ```python
        from ember.metrics import Loss

        evaluator = create_supervised_evaluator(model, metrics={"mse": Loss(loss_fn)})
        print(evaluator.run(data).metrics["mse"])
        ```
    """
    step = supervised_evaluation_step(
        model,
        device=device,
        non_blocking=non_blocking,
        prepare_batch=prepare_batch,
        model_transform=model_transform,
        output_transform=output_transform,
        amp_mode=amp_mode,
        model_fn=model_fn,
        inference_mode=inference_mode,
    )
    evaluator = Engine(step, backend=backend)
    for name, metric in (metrics or {}).items():
        metric.attach(evaluator, name)
    return evaluator
