"""Loss, Average and RunningAverage: averages of values rather than of predictions."""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ember.distributed import _context
from ember.engine.engine import Engine
from ember.engine.events import Events
from ember.engine.sink import OutputSink
from ember.metrics._base import (
    Metric,
    MetricUsage,
    RunningBatchWise,
    RunningEpochWise,
    SingleEpochRunningBatchWise,
    _check_usage,
    _identity,
    _passes_exact_tuples,
)
from ember.metrics._checks import shape_of
from ember.metrics._deferred import DeferredMetrics, DeferredValue, LiveValue, deferred_metrics

__all__ = ["Average", "Loss", "RunningAverage"]


def _single_process() -> bool:
    """No torch.distributed group of several processes (where compute() is a collective), and
    not a launched rank missing its group (where compute() raises)."""
    if _context.is_initialized():
        return _context.get_world_size() == 1
    _context.refuse_launched_process("RunningAverage.compute()")
    return True


def _is_value(value: Any) -> bool:
    return isinstance(value, (numbers.Real, torch.Tensor)) and not isinstance(value, bool)


def _loss_arguments(output: Any) -> tuple[Any, Any, Mapping[str, Any]]:
    """``(y_pred, y, loss_fn kwargs)`` of a ``Loss`` update's ``(y_pred, y)`` or
    ``(y_pred, y, kwargs)``."""
    if not isinstance(output, (tuple, list)) or len(output) not in (2, 3):
        raise TypeError(
            "Loss.update expects (y_pred, y) or (y_pred, y, kwargs), got "
            f"{type(output).__name__}"
            + (f" of length {len(output)}" if isinstance(output, (tuple, list)) else "")
        )
    kwargs = output[2] if len(output) == 3 else {}
    if not isinstance(kwargs, Mapping):
        raise TypeError(
            f"Loss: the third item (loss_fn kwargs) should be a mapping, got {type(kwargs)}"
        )
    return output[0], output[1], kwargs


class Loss(Metric):
    """The average of ``loss_fn(y_pred, y, **kwargs)`` over samples.

    Each update takes ``(y_pred, y)`` or ``(y_pred, y, kwargs)`` (a mapping output may carry
    ``"y_pred"``, ``"y"`` and optionally ``"criterion_kwargs"``). ``loss_fn`` must return the
    batch's *average* loss (a one-element tensor or a number); it is weighted by
    ``batch_size(y)`` (``len`` by default).
    """

    required_output_keys = ("y_pred", "y", "criterion_kwargs")
    _state_attrs = ("_sum", "_num_examples")
    _accumulator_attrs = ("_sum",)

    def __init__(
        self,
        loss_fn: Callable[..., Any],
        output_transform: Callable[[Any], Any] = _identity,
        batch_size: Callable[[Any], int] = len,
        device: str | torch.device = "cpu",
    ) -> None:
        if not callable(loss_fn):
            raise TypeError(f"Loss: loss_fn should be callable, got {type(loss_fn)}")
        if not callable(batch_size):
            raise TypeError(f"Loss: batch_size should be callable, got {type(batch_size)}")
        self._loss_fn = loss_fn
        self._batch_size = batch_size
        super().__init__(output_transform=output_transform, device=device)

    @_passes_exact_tuples
    def _transformed_output(self, engine: Any) -> Any:
        output = engine.state.output
        if self._output_transform is not _identity:
            output = self._output_transform(output)
        if type(output) is not tuple and isinstance(output, Mapping):
            missing = [key for key in ("y_pred", "y") if key not in output]
            if missing:
                raise ValueError(
                    "Loss: when the transformed engine output is a mapping it should contain "
                    f"the keys ['y_pred', 'y'] (and optionally 'criterion_kwargs'), but it has "
                    f"{list(output.keys())}"
                )
            return (output["y_pred"], output["y"], output.get("criterion_kwargs", {}))
        return output

    def reset(self) -> None:
        self._sum = torch.zeros((), dtype=self._double_dtype, device=self._device)
        self._num_examples = 0

    def update(self, output: Any) -> None:
        if type(output) is tuple and len(output) == 2:  # the usual (y_pred, y)
            y_pred, y = output
            loss = self._loss_fn(y_pred, y)
        else:
            y_pred, y, kwargs = _loss_arguments(output)
            loss = self._loss_fn(y_pred, y, **kwargs)
        if self._batch_size is len and type(y) is torch.Tensor and y.ndim:
            n = y.shape[0]  # len(y) without Tensor.__len__'s Python frame
        else:
            n = self._batch_size(y)
            if (
                type(n) is not int and (isinstance(n, bool) or not isinstance(n, numbers.Integral))
            ) or n < 0:
                raise ValueError(f"Loss: batch_size(y) should be a non-negative int, got {n!r}")
            n = int(n)
        if n == 0:
            # An empty batch's mean loss is NaN, and NaN * 0 would make the sum NaN for good.
            return
        if isinstance(loss, torch.Tensor):
            if loss.numel() != 1:
                raise ValueError(
                    "Loss: loss_fn did not return the average loss: expected one value, got a "
                    f"tensor of shape {shape_of(loss)} (use reduction='mean')"
                )
            if loss.requires_grad:
                loss = loss.detach()
            if loss.dim():
                loss = loss.reshape(())
            if loss.device != self._device:
                loss = loss.to(self._device)
            self._sum.add_(loss, alpha=n)  # on the device: nothing read on the host
        elif _is_value(loss):
            self._sum += float(loss) * n
        else:
            raise TypeError(
                f"Loss: loss_fn should return a tensor or a number, got {type(loss).__name__}"
            )
        self._num_examples += n

    def compute(self) -> float:
        return self._ratio_over_ranks(self._sum, self._num_examples)


# An accumulator made in inference mode (an evaluator's step) is an inference tensor, which
# refuses the in-place adds of updates made outside it: accumulators are made outside.
_NOT_INFERENCE = functools.partial(torch.inference_mode, False)


class Average(Metric):
    """The mean of the values seen: a number, or a tensor, per update.

    A tensor of shape ``(B, ...)`` with two or more dimensions counts as a batch of ``B`` values
    of shape ``(...)``; a number, a 0-d or a 1-d tensor counts as one value. The result is a
    float64 tensor of the shape of one value (0-d for numbers), as ignite's; ``attach`` stores a
    one-element result as a number.
    """

    required_output_keys = None
    _state_attrs = ("_accumulator", "_num_examples")

    def reset(self) -> None:
        self._accumulator: torch.Tensor | None = None
        self._num_examples = 0

    def update(self, output: Any) -> None:
        accumulator = self._accumulator
        if (
            type(output) is torch.Tensor
            and accumulator is not None
            and output.dim() < 2
            and not output.requires_grad
            and output.shape == accumulator.shape
        ):
            try:  # in place, on the device: nothing read on the host
                accumulator += output
            except RuntimeError:
                pass  # another device, a complex dtype: the checked way below says which
            else:
                self._num_examples += 1
                return
        self._update_checked(output, accumulator)

    def _update_checked(self, output: Any, accumulator: torch.Tensor | None) -> None:
        if isinstance(output, torch.Tensor):
            if output.is_complex():
                raise TypeError(f"{self._name}: values should be real, got dtype {output.dtype}")
            value = output.detach() if output.requires_grad else output
            count = 1
            if value.dim() > 1:
                count = value.shape[0]
                value = value.sum(dim=0, dtype=self._double_dtype)
            if accumulator is None:
                with _NOT_INFERENCE():  # else later updates outside inference mode could not add
                    self._accumulator = value.to(self._device, self._double_dtype, copy=True)
            elif value.shape != accumulator.shape:
                raise ValueError(
                    f"{self._name}: value shape changed from {shape_of(accumulator)} to "
                    f"{shape_of(value)} between updates"
                )
            else:  # in place, on the device: nothing read on the host
                accumulator += (
                    value if value.device == accumulator.device else value.to(self._device)
                )
        elif _is_value(output):
            count = 1
            if accumulator is None:
                with _NOT_INFERENCE():
                    self._accumulator = torch.tensor(
                        float(output), dtype=self._double_dtype, device=self._device
                    )
            elif accumulator.dim():
                raise ValueError(
                    f"{self._name}: value shape changed from {shape_of(accumulator)} to () "
                    "between updates"
                )
            else:
                accumulator += float(output)
        else:
            raise TypeError(
                f"{self._name}.update expects a number or a torch.Tensor, got {type(output).__name__}"
            )
        self._num_examples += count

    def _check_loaded_state(self, state: Mapping[str, Any]) -> None:
        super()._check_loaded_state(state)
        accumulator = state["_accumulator"]
        if accumulator is None:
            if state["_num_examples"]:
                raise ValueError(
                    self._loaded_state_error(
                        "_num_examples", "0 (as '_accumulator' is None)", state["_num_examples"]
                    )
                )
        elif not isinstance(accumulator, torch.Tensor):
            raise TypeError(
                self._loaded_state_error("_accumulator", "None or a tensor", accumulator)
            )
        elif accumulator.dtype != self._double_dtype:
            raise ValueError(
                self._loaded_state_error(
                    "_accumulator", f"None or a tensor of dtype {self._double_dtype}", accumulator
                )
            )

    def compute(self) -> torch.Tensor:
        accumulator, count = self._sum_over_ranks(self._accumulator, self._num_examples)
        if accumulator is None or count == 0:
            raise self._not_computable()
        mean: torch.Tensor = accumulator / int(count)
        return mean


_FOLD_EVERY = 256  # pending values of a running average folded in by one weighted sum
# Read at every update: module globals, not attributes of torch, dict and sys.
_Tensor = torch.Tensor
_dict_get = dict.get
_dict_set = dict.__setitem__
_reference_count = sys.getrefcount


def _sole_holder_count() -> int:
    """What ``sys.getrefcount`` says of a dict's value read into a local variable when the dict
    is its only other holder (measured, not assumed: the interpreter decides what it counts)."""
    holder = {"": DeferredValue(torch.zeros(()))}
    value = _dict_get(holder, "")
    return _reference_count(value)


_SOLE_HOLDER = _sole_holder_count()
_RETURNS_ARGUMENT = (lambda value: value).__code__.co_code


def _returns_its_argument(function: Any) -> bool:
    """Whether ``function`` is a plain Python function of one parameter whose body only returns
    it (``lambda loss: loss``, the usual ``output_transform``): calling it can be skipped."""
    code = getattr(function, "__code__", None)
    return (
        type(function) is types.FunctionType
        and code is not None
        and code.co_code == _RETURNS_ARGUMENT
        and code.co_argcount == 1
        and code.co_kwonlyargcount == 0
        and not code.co_flags & (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS)
    )


# Products of powers of alpha that round to 0 are kept at the least positive double: an infinite
# value stays infinite however many steps it is folded over, as in the step-by-step average
# (where ``0 * inf`` would be NaN). Finite values lose nothing that counts.
def _decay(alpha: float, steps: int) -> float:
    """``alpha ** steps`` (alpha in (0, 1])."""
    return max(alpha**steps, math.ulp(0.0))


def _weight(alpha: float, age: int) -> float:
    """The weight of a value ``age`` steps older than the newest: ``(1 - alpha) * alpha**age``."""
    return 0.0 if alpha == 1.0 else max((1.0 - alpha) * alpha**age, math.ulp(0.0))


# The weights of a fold for one alpha, computed once per process rather than by each new
# average (256 Python calls, ~50 us of a run's first iteration).
@functools.lru_cache(maxsize=16)
def _fold_powers(alpha: float) -> tuple[float, ...]:
    """The weights of the ``_FOLD_EVERY`` newest values, oldest first."""
    return tuple(_weight(alpha, age) for age in range(_FOLD_EVERY - 1, -1, -1))


def _wide_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype a fold sums in: double precision (so that folding k values at once rounds no
    worse than k steps in the values' dtype), except on mps, which has none."""
    if tensor.device.type == "mps":
        return tensor.dtype
    return torch.complex128 if tensor.is_complex() else torch.float64


class _PendingAverage:
    """A running average of floating tensors whose latest values are not folded in yet.

    ``base`` is the average after the values before ``values``; ``values`` only grows (a fold
    makes a new ``_PendingAverage``), so ``tensor_at(count)``, the average after the first
    ``count`` pending values, stays valid for a :class:`DeferredValue` stored earlier. Folding
    ``k`` values in is one weighted sum, equal to ``k`` steps of ``v = a * v + (1 - a) * x``:
    ``a**k * base + sum_i (1 - a) * a**(k - i) * x_i``. The last ``tensor_at`` is remembered
    (``read``): a later count (the progress bar's next read, the fold) sums only the values
    after it.
    """

    __slots__ = (
        "accepted",
        "alpha",
        "base",
        "device",
        "dtype",
        "followed",
        "on_cpu",
        "read",
        "scalar",
        "shape",
        "values",
        "weights",
    )
    accepted: tuple[tuple[str, tuple[Any, ...]], ...]

    def __init__(
        self,
        base: torch.Tensor,
        alpha: float,
        weights: torch.Tensor | None,
        like: _PendingAverage | None = None,
    ) -> None:
        self.base = base
        self.alpha = alpha
        self.values: list[torch.Tensor] = []
        self.read = (0, base)
        # Whether a sink's LiveValue stored in a run's metrics follows these values: then only
        # that sink may append to them (see RunningAverage._appended).
        self.followed = False
        if like is not None:  # a fold: base is like's average (its dtype, shape and device)
            self.dtype, self.shape, self.device = like.dtype, like.shape, like.device
            self.on_cpu, self.scalar, self.weights = like.on_cpu, like.scalar, like.weights
            self.accepted = like.accepted
            return
        # base's, read once: a tensor's attributes cost ~0.05 us per access.
        self.dtype, self.shape, self.device = base.dtype, base.shape, base.device
        # What an update checks instead of the shape and the device, where that is cheaper.
        self.on_cpu, self.scalar = self.device.type == "cpu", base.ndim == 0
        # The values appended: plain tensors (their type is checked apart) whose attributes
        # hold these values: no autograd history, base's dtype, shape and device. The sink
        # accepts exactly these; RunningAverage._appended and _UpdateAndStore check the same
        # as code (a loop over this tuple costs more than the attribute reads).
        self.accepted = (
            ("requires_grad", (False,)),
            ("dtype", (self.dtype,)),
            ("ndim", (0,)) if self.scalar else ("shape", (self.shape,)),
            ("is_cpu", (True,)) if self.on_cpu else ("device", (self.device,)),
        )
        wide = _wide_dtype(base)
        if weights is None or weights.dtype != wide or weights.device != base.device:
            # weights[-k:] are the k newest values' weights, oldest first.
            weights = torch.tensor(_fold_powers(alpha), dtype=wide, device=base.device)
        self.weights = weights

    def tensor_at(self, count: int) -> torch.Tensor:
        done, average = self.read
        if count < done:  # an older DeferredValue read after a newer one
            done, average = 0, self.base
        if count == done:
            return average
        weights = self.weights
        newest = torch.stack(self.values[done:count]).to(weights.dtype)
        newest_weights = weights[_FOLD_EVERY - (count - done) :]
        weighted = (  # dot is the cheaper call for the common 0-d values (losses)
            torch.dot(newest_weights, newest)
            if newest.ndim == 1
            else torch.tensordot(newest_weights, newest, dims=1)
        )
        # weighted is a new tensor: added to in place, in the wide dtype.
        average = weighted.add_(average, alpha=_decay(self.alpha, count - done)).to(self.dtype)
        self.read = (count, average)
        return average

    def folded(self) -> _PendingAverage:
        """A ``_PendingAverage`` with every pending value folded into its base."""
        if not self.values:
            return self
        return self.apart()

    def apart(self) -> _PendingAverage:
        """A new ``_PendingAverage`` of the same average: values appended to it leave this one,
        and whatever follows it, as they are."""
        return _PendingAverage(self.tensor_at(len(self.values)), self.alpha, None, like=self)


class RunningAverage(Metric):
    """Exponential moving average ``v = alpha * v + (1 - alpha) * x`` (the first ``x`` as is).

    ``x`` is either a metric's value (``src``: at each update the metric is computed, then reset,
    so ``x`` is its value over the batches since the previous update) or a value taken from the
    engine's output (``output_transform``, e.g. ``lambda loss: loss``).

    A tensor ``x`` (a loss on the device) is averaged on the device, in its dtype: updating
    never reads it on the host. Without ``src`` and ``device``, the average stays on the device
    of the values (``device="cpu"`` copies each value to the CPU, as ignite's default does). With ``deferred=True`` (default) the value stored in ``engine.state.metrics[name]``
    is read on the host only when somebody reads that entry (a progress bar's refresh, a
    handler, the end of the run), and then it is the number an eager metric would have stored;
    ``state.metrics`` becomes a ``dict`` subclass that does this (see docs/metrics.md).
    ``deferred=False`` stores the number at every iteration, as ignite (one host sync each).

    Under torch.distributed, ``src`` is computed over all ranks at each update (a collective per
    iteration); with ``output_transform``, ``compute()`` gives the mean over the ranks of their
    averages (the average of the ranks' mean outputs), eagerly at each store (a collective on
    every rank). Every rank must run as many iterations.

    Default usage ``RunningBatchWise()``: updated and stored at every iteration, reset when the
    run starts. ``SingleEpochRunningBatchWise()`` restarts every epoch; ``RunningEpochWise()``
    takes one ``x`` per epoch (the ``src`` value over the epoch). ``epoch_bound=True``/``False``
    picks ``SingleEpochRunningBatchWise``/``RunningBatchWise`` whatever ``usage`` says.
    """

    required_output_keys = None
    _state_attrs = ("_value", "src")
    _pending: _PendingAverage | None
    _other: float | torch.Tensor | None

    def __init__(
        self,
        src: Metric | None = None,
        alpha: float = 0.98,
        output_transform: Callable[[Any], Any] | None = None,
        epoch_bound: bool | None = None,
        device: str | torch.device | None = None,
        *,
        deferred: bool = True,
    ) -> None:
        if not (src is None or isinstance(src, Metric)):
            raise TypeError(f"RunningAverage: src should be a Metric or None, got {type(src)}")
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 < alpha <= 1.0:
            raise ValueError(f"RunningAverage: alpha should be a number in (0, 1], got {alpha!r}")
        if epoch_bound is not None and not isinstance(epoch_bound, bool):
            raise TypeError(
                f"RunningAverage: epoch_bound should be a bool or None, got {epoch_bound!r}"
            )
        if not isinstance(deferred, bool):
            raise TypeError(f"RunningAverage: deferred should be a bool, got {deferred!r}")
        if src is not None:
            if output_transform is not None:
                raise ValueError(
                    "RunningAverage: output_transform should be None when src is a Metric "
                    "(the metric has its own)"
                )
            if device is not None:
                raise ValueError(
                    "RunningAverage: device should be None when src is a Metric (its device is used)"
                )
            device = src.device
            output_transform = _identity
        elif output_transform is None:
            raise ValueError(
                "RunningAverage: give src (a Metric) or output_transform (to take the value "
                "from the engine's output)"
            )
        # Without src or device, the average stays where the values are: a loss on a GPU is not
        # copied to the CPU (which would make the host wait) at each iteration.
        self._follow_values = src is None and device is None
        self.src = src
        self.alpha = float(alpha)
        self.epoch_bound = epoch_bound
        self.deferred = deferred
        self._fold_weights: torch.Tensor | None = None  # kept across resets
        super().__init__(output_transform=output_transform, device=device or "cpu")

    # The value is either a floating tensor with values not folded in yet (``_pending``: an
    # update is a list append, the fold one weighted sum every _FOLD_EVERY updates or when read)
    # or anything else (``_other``: a float, a tensor of another dtype, None before the first).
    @property
    def _value(self) -> float | torch.Tensor | None:
        pending = self._pending
        if pending is None:
            return self._other
        if pending.values:
            pending = self._pending = pending.folded()
        return pending.base

    @_value.setter
    def _value(self, value: float | torch.Tensor | None) -> None:
        if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex()):
            self._pending = _PendingAverage(value, self.alpha, self._fold_weights)
            self._fold_weights = self._pending.weights
            self._other = None
        else:
            self._pending = None
            self._other = value

    def _check_loaded_state(self, state: Mapping[str, Any]) -> None:
        super()._check_loaded_state(state)
        value = state["_value"]
        if isinstance(value, torch.Tensor):
            if not (value.is_floating_point() or value.is_complex()):
                raise TypeError(
                    self._loaded_state_error("_value", "a floating or complex tensor", value)
                )
        elif value is not None and not _is_value(value):
            raise TypeError(self._loaded_state_error("_value", "None, a number or a tensor", value))

    def reset(self) -> None:
        self._value = None
        self._single_process_run: bool | None = None  # asked once per reset, not per store
        if self.src is not None:
            self.src.reset()

    def update(self, output: Any) -> None:
        if not self._appended(output):
            self._update_checked(output, self._value)

    def _appended(self, output: Any) -> bool:
        """The per-iteration fast path: a tensor without autograd history, like the pending
        average's base (``_PendingAverage.accepted``), is appended (and folded in every
        ``_FOLD_EVERY`` values). False when it needs the checked update."""
        pending = self._pending
        if (
            pending is None
            or self.src is not None
            or type(output) is not _Tensor
            or output.requires_grad
            or output.dtype is not pending.dtype
            or (output.ndim != 0 if pending.scalar else output.shape != pending.shape)
            or not (output.is_cpu if pending.on_cpu else output.device == pending.device)
        ):
            return False
        if pending.followed:
            # Not the sink's append (an update() after the run, or from a handler): the run's
            # stored live value keeps what it shows, as a stored number would.
            pending = self._pending = pending.apart()
        values = pending.values
        values.append(output)
        if len(values) >= _FOLD_EVERY:
            self._pending = pending.folded()
        return True

    def _update_checked(self, output: Any, previous: float | torch.Tensor | None) -> None:
        if self.src is not None:
            value = self.src.compute()
            self.src.reset()
            if not _is_value(value):
                raise TypeError(
                    "RunningAverage: src should compute a number or a tensor, got "
                    f"{type(value).__name__}"
                )
        elif _is_value(output):
            value = output
        else:
            raise TypeError(
                "RunningAverage.update expects a number or a torch.Tensor (the output "
                f"selected by output_transform), got {type(output).__name__}"
            )
        # Floating tensors keep their dtype (as ignite's): a float32 loss is averaged in float32.
        if isinstance(value, torch.Tensor):
            if value.requires_grad:
                value = value.detach()
            if not (value.is_floating_point() or value.is_complex()):
                # A count (``(pred == y).sum()``) or a flag: its average is a fraction, and
                # ignite's becomes one from the second value on.
                value = value.to(torch.get_default_dtype())
            if not self._follow_values and value.device != self._device:
                value = value.to(self._device)
            if previous is None:
                self._value = value.clone()
            elif isinstance(previous, torch.Tensor) and previous.dtype == value.dtype:
                # Not torch.lerp: its ``previous - (previous - value) * weight`` is inf - inf
                # (NaN) once the average is infinite; this form keeps it infinite, as ignite's.
                self._value = torch.add(previous * self.alpha, value, alpha=1.0 - self.alpha)
            else:
                self._value = previous * self.alpha + (1.0 - self.alpha) * value
        elif previous is None:
            self._value = float(value)
        else:
            self._value = previous * self.alpha + (1.0 - self.alpha) * float(value)

    def compute(self) -> float | torch.Tensor:
        # With src, the value is already over all ranks (src.compute() summed them). Otherwise
        # each rank averaged its own outputs: the average is linear in them, so the mean over
        # the ranks is the running average of the ranks' mean output (ignite's meaning).
        value = self._value
        if self.src is None:
            total, count = self._sum_over_ranks(value, 0 if value is None else 1)
            value = None if total is None else total / count
        if value is None:
            raise self._not_computable()
        return value  # a tensor stays one (as ignite's); attach stores a number

    def completed(self, engine: Any, name: str) -> None:
        """Handler: store the value in ``engine.state.metrics[name]``; a device value is stored
        as a :class:`~ember.metrics._deferred.DeferredValue`, read when the entry is read."""
        pending = self._pending
        if pending is not None and self.deferred:
            metrics = engine.state.metrics
            # Once the run has a DeferredMetrics and knows it is one process: no call.
            if type(metrics) is not DeferredMetrics or self._single_process_run is not True:
                metrics = deferred_metrics(engine.state) if self._in_single_process() else None
            if metrics is not None:
                dict.__setitem__(metrics, name, DeferredValue(pending, len(pending.values)))
                return
        super().completed(engine, name)

    def _in_single_process(self) -> bool:
        single = self._single_process_run
        if single is None:
            single = self._single_process_run = _single_process()
        return single

    def iteration_completed(self, engine: Any) -> None:
        output = None
        if self.src is None:
            output = self._output_transform(engine.state.output)
            # The common case, a detached loss tensor, is appended without entering no_grad.
            if self._appended(output):
                return
        self._update_without_grad(output)

    def _update_without_grad(self, output: Any) -> None:
        with torch.no_grad():
            self._update_checked(output, self._value)

    # ------------------------------------------------------------------------------ attaching
    def _usage_events(self, usage: MetricUsage) -> tuple[Any, Any, Any]:
        if self.epoch_bound is not None:
            usage = SingleEpochRunningBatchWise() if self.epoch_bound else RunningBatchWise()
        if isinstance(usage, RunningEpochWise):
            return Events.STARTED, Events.EPOCH_COMPLETED, Events.EPOCH_COMPLETED
        return usage.STARTED, usage.ITERATION_COMPLETED, usage.COMPLETED

    def _attach_accumulation(self, engine: Any, usage: MetricUsage) -> None:
        if self.src is not None and not engine.has_event_handler(
            self.src.iteration_completed, Events.ITERATION_COMPLETED
        ):
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.src.iteration_completed)
        super()._attach_accumulation(engine, usage)

    def _accumulation_attached(self, engine: Any, usage: MetricUsage) -> bool:
        source_ok = self.src is None or engine.has_event_handler(
            self.src.iteration_completed, Events.ITERATION_COMPLETED
        )
        return source_ok and super()._accumulation_attached(engine, usage)

    def attach(
        self, engine: Any, name: str, usage: str | MetricUsage = "running_batch_wise"
    ) -> None:
        """As :meth:`Metric.attach`. Where the value is taken from the output and stored at the
        event that updates it (the default usage), on ember's Engine, the update and the store
        are one handler, which ``has_event_handler``, ``remove_event_handler``, :meth:`detach`
        and :meth:`is_attached` see as both ``iteration_completed`` and ``completed``: with an
        ``output_transform`` that returns its argument and ``deferred=True``, an
        :class:`~ember.engine.sink.OutputSink` that the compiled loop runs without a Python
        call (:class:`_SinkUpdateAndStore`), else :class:`_UpdateAndStore`."""
        usage = _check_usage(usage)
        started, iteration, completed = self._usage_events(usage)
        if (
            self.src is None
            and not any(hasattr(type(self), field) for field in _UpdateAndStore.metric_fields)
            and iteration is completed
            and getattr(iteration, "filter", None) is None
            and isinstance(name, str)
            and isinstance(engine, Engine)
            and not engine.has_event_handler(self.iteration_completed, iteration)
        ):
            if not engine.has_event_handler(self.started, started):
                engine.add_event_handler(started, self.started)
            sinks = self.deferred is True and _returns_its_argument(self._output_transform)
            handler = (_SinkUpdateAndStore if sinks else _UpdateAndStore)(self, name)
            engine.add_event_handler(iteration, handler)
            return
        super().attach(engine, name, usage)

    def detach(self, engine: Any, usage: str | MetricUsage = "running_batch_wise") -> None:
        usage = _check_usage(usage)
        if self.src is not None and engine.has_event_handler(
            self.src.iteration_completed, Events.ITERATION_COMPLETED
        ):
            engine.remove_event_handler(self.src.iteration_completed, Events.ITERATION_COMPLETED)
        super().detach(engine, usage)

    def is_attached(self, engine: Any, usage: str | MetricUsage = "running_batch_wise") -> bool:
        return super().is_attached(engine, usage)


class _StandsForBothMethods:
    """A handler doing ``RunningAverage.iteration_completed`` then ``completed(engine, name)``.

    It compares equal to both bound methods, so that ``engine.has_event_handler(metric.completed,
    event)`` and the rest of ignite's API find them; ember's ``Engine.remove_event_handler`` asks
    :meth:`_entry_without` for what remains when only one of them is removed.
    """

    __slots__ = ()
    metric: RunningAverage
    name: str

    def __eq__(self, other: object) -> bool:
        metric = self.metric
        return other is self or other in (metric.iteration_completed, metric.completed)

    # Equal to the bound methods, hashed as itself: it is never a key (events are).
    __hash__ = object.__hash__

    def _entry_without(
        self, handler: Any, entry: tuple[Any, tuple[Any, ...], dict[str, Any]]
    ) -> tuple[Any, tuple[Any, ...], dict[str, Any]] | None:
        """The registry entry (``(handler, args, kwargs)`` as ``add_event_handler`` stores it)
        that remains once ``handler`` is removed from ``entry``, which holds this object."""
        metric = self.metric
        _, args, kwargs = entry
        if handler is self:
            return None
        if handler == metric.completed:
            return (metric.iteration_completed, args, kwargs)
        return (metric.completed, (*args, self.name), kwargs)

    def __repr__(self) -> str:
        return f"RunningAverage update and store of {self.name!r}"


class _UpdateAndStore(_StandsForBothMethods):
    """``RunningAverage.iteration_completed`` then ``completed(engine, name)`` in one handler
    call (one Python frame at every iteration instead of two, and of the dispatch between).

    At each call, a stored :class:`DeferredValue` that nobody read and that nothing but
    ``state.metrics`` holds is moved to the new count instead of replaced: no one can tell.
    """

    __slots__ = ("__weakref__", "metric", "name", "skipped_code", "skipped_transform")
    metric: RunningAverage
    name: str
    # Read from the metric's instance dict at each call.
    metric_fields = ("_output_transform", "_pending", "_single_process_run", "deferred")

    def __init__(self, metric: RunningAverage, name: str) -> None:
        self.metric = metric
        self.name = name
        # The output transform not called (a Python frame fewer): one that returns its argument.
        transform = metric._output_transform
        self.skipped_transform = transform if _returns_its_argument(transform) else _identity
        # Compared at each call too: a program may give the function another body.
        self.skipped_code = self.skipped_transform.__code__

    def __call__(self, engine: Any) -> None:
        metric = self.metric
        # Metric.__getattr__ (metric.mean() and the like) makes each attribute read of a metric
        # the interpreter's slow lookup: the instance dict is read once instead (attach checked
        # that no class attribute stands for these fields).
        fields = metric.__dict__
        state = engine.state
        output = state.output
        transform = fields["_output_transform"]
        if transform is not self.skipped_transform or transform.__code__ is not self.skipped_code:
            output = transform(output)
        pending = fields["_pending"]
        # RunningAverage._appended (the rule of _PendingAverage.accepted), inlined: a frame
        # fewer at every iteration.
        if (
            pending is None
            or type(output) is not _Tensor
            or output.requires_grad
            or output.dtype is not pending.dtype
            or (output.ndim != 0 if pending.scalar else output.shape != pending.shape)
            or not (output.is_cpu if pending.on_cpu else output.device == pending.device)
        ):
            metric._update_without_grad(output)
            metric.completed(engine, self.name)
            return
        values = pending.values
        values.append(output)
        count = len(values)
        if count >= _FOLD_EVERY:
            pending = metric._pending = pending.folded()
            count = 0
        metrics = state.metrics
        if (
            type(metrics) is not DeferredMetrics
            or fields["_single_process_run"] is not True
            or not fields["deferred"]
        ):
            metric.completed(engine, self.name)
            return
        name = self.name
        stored = _dict_get(metrics, name)
        if (
            type(stored) is DeferredValue
            and stored._source is pending
            and _reference_count(stored) == _SOLE_HOLDER
        ):
            stored._count = count
        else:
            _dict_set(metrics, name, DeferredValue(pending, count))


class _NoOutput:
    """The accepted type of a sink that has no average to append to: no output is of it."""


class _SinkUpdateAndStore(_StandsForBothMethods, OutputSink):
    """:class:`_UpdateAndStore` as an :class:`~ember.engine.sink.OutputSink`: the compiled loop
    runs its common iteration without a Python call.

    Its ``values`` list is the pending average's (``_PendingAverage.values``), so the compiled
    loop appends a loss straight into it; ``accepted_type`` and ``accepted_attributes`` accept
    exactly the outputs that ``_UpdateAndStore`` appends; ``state.metrics[name]`` holds a
    :class:`~ember.metrics._deferred.LiveValue` of the pending average, which a read resolves
    through the latest value appended. Its ``on_full`` (:meth:`_process`) runs when that is not
    enough: an output of another kind, a fold every ``_FOLD_EVERY`` values, the metric's
    average, transform or ``deferred`` changed (``kept_attributes``: a reset, a ``compute()``
    that folded), ``state.metrics[name]`` no longer the live value (``kept_entry``: the dict
    replaced, the key deleted or overwritten). It takes this iteration's output back and runs
    ``_UpdateAndStore`` on it, then sets the sink up from what that left; where the value it
    stored cannot be live (another mapping type, ``deferred=False``, several processes, a
    number average, a transform of another body), no output is accepted and every iteration
    goes through ``_UpdateAndStore``.
    """

    __slots__ = ("_live", "_update_and_store", "metric", "name")

    def __init__(self, metric: RunningAverage, name: str) -> None:
        super().__init__(self._process, _FOLD_EVERY, accepted_type=_NoOutput)
        self.metric = metric
        self.name = name
        self._update_and_store = _UpdateAndStore(metric, name)
        self._live: LiveValue | None = None

    def _process(self, engine: Any) -> None:
        values = self.values
        self.iterations.clear()
        if values:  # this iteration's output, which _UpdateAndStore reads from the state
            values.pop()
        self._update_and_store(engine)
        self._follow(engine.state)

    def _follow(self, state: Any) -> None:
        """Accept the outputs that ``_UpdateAndStore`` would append to the metric's pending
        average, and store a live value of it, when nothing else is needed at each iteration;
        else accept none."""
        metric = self.metric
        fields = metric.__dict__
        pending = fields["_pending"]
        transform = fields["_output_transform"]
        update_and_store = self._update_and_store
        metrics = state.metrics
        if (
            pending is None
            or transform is not update_and_store.skipped_transform
            or transform.__code__ is not update_and_store.skipped_code
            or type(metrics) is not DeferredMetrics
            or fields["_single_process_run"] is not True
            or fields["deferred"] is not True
        ):
            if self.accepted_type is not _NoOutput:  # else it follows nothing already
                self._follow_nothing()
            return
        live = self._live
        if live is None or live._source is not pending:
            live = self._live = LiveValue(pending)
        pending.followed = True
        name = self.name
        _dict_set(metrics, name, live)
        self.values = pending.values
        self.accepted_type = _Tensor
        self.accepted_attributes = pending.accepted
        self.kept_attributes = (
            (metric, "_pending", pending),
            (metric, "_output_transform", transform),
            (transform, "__code__", update_and_store.skipped_code),
            (metric, "deferred", True),
        )
        self.kept_entry = (DeferredMetrics, name, live)

    def _follow_nothing(self) -> None:
        self.values = []
        self.accepted_type = _NoOutput
        self.accepted_attributes = ()
        self.kept_attributes = ()
        self.kept_entry = None

    def _entry_without(
        self, handler: Any, entry: tuple[Any, tuple[Any, ...], dict[str, Any]]
    ) -> tuple[Any, tuple[Any, ...], dict[str, Any]] | None:
        # No longer stored by this sink: the live value keeps what it shows now, as a stored
        # number would.
        live, self._live = self._live, None
        if live is not None:
            live.freeze()
        self._follow_nothing()
        return super()._entry_without(handler, entry)
