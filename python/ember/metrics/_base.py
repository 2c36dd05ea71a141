"""The ``Metric`` base class, its usages (when it resets, updates and computes) and ``MetricsLambda``."""

from __future__ import annotations

import functools
import itertools
import operator
import weakref
from abc import ABCMeta, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, TypeVar

import torch

from ember.distributed import _context
from ember.distributed._reduce import sum_over_ranks, summed_as_integers
from ember.engine.events import Events
from ember.metrics._checks import (
    ValueChecks,
    collected_checks,
    read_collected,
    read_number,
    shape_of,
)
from ember.metrics._deferred import as_stored

__all__ = [
    "BatchFiltered",
    "BatchWise",
    "EpochWise",
    "Metric",
    "MetricUsage",
    "MetricsLambda",
    "NotComputableError",
    "RunningBatchWise",
    "RunningEpochWise",
    "SingleEpochRunningBatchWise",
]


class NotComputableError(RuntimeError):
    """A metric was asked for its value before it saw anything it could compute one from."""


# --------------------------------------------------------------------------------------- usages
class MetricUsage:
    """When an attached metric resets (``STARTED``), takes a batch (``ITERATION_COMPLETED``) and
    writes its value to ``engine.state.metrics`` (``COMPLETED``)."""

    usage_name: str = ""

    def __init__(self, started: Any, completed: Any, iteration_completed: Any) -> None:
        self._started = started
        self._completed = completed
        self._iteration_completed = iteration_completed

    @property
    def STARTED(self) -> Any:  # noqa: N802 - ignite's names
        return self._started

    @property
    def COMPLETED(self) -> Any:  # noqa: N802
        return self._completed

    @property
    def ITERATION_COMPLETED(self) -> Any:  # noqa: N802
        return self._iteration_completed

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(started={self.STARTED!r}, "
            f"iteration_completed={self.ITERATION_COMPLETED!r}, completed={self.COMPLETED!r})"
        )


class EpochWise(MetricUsage):
    """Reset when an epoch starts, take every batch, compute when the epoch completes (default)."""

    usage_name = "epoch_wise"

    def __init__(self) -> None:
        super().__init__(Events.EPOCH_STARTED, Events.EPOCH_COMPLETED, Events.ITERATION_COMPLETED)


class RunningEpochWise(EpochWise):
    """Reset once when the run starts, take every batch, compute at the end of every epoch: the
    value covers everything seen since the run started. (``RunningAverage`` instead takes one
    value per epoch, its source's epoch value, and averages those.)"""

    usage_name = "running_epoch_wise"

    def __init__(self) -> None:
        MetricUsage.__init__(
            self, Events.STARTED, Events.EPOCH_COMPLETED, Events.ITERATION_COMPLETED
        )


class BatchWise(MetricUsage):
    """Reset, take the batch and compute at every iteration: the value of the last batch alone."""

    usage_name = "batch_wise"

    def __init__(self) -> None:
        super().__init__(
            Events.ITERATION_STARTED, Events.ITERATION_COMPLETED, Events.ITERATION_COMPLETED
        )


class RunningBatchWise(BatchWise):
    """Reset once when the run starts; take and compute at every iteration (since the start)."""

    usage_name = "running_batch_wise"

    def __init__(self) -> None:
        MetricUsage.__init__(
            self, Events.STARTED, Events.ITERATION_COMPLETED, Events.ITERATION_COMPLETED
        )


class SingleEpochRunningBatchWise(BatchWise):
    """Reset when an epoch starts; take and compute at every iteration (since the epoch began)."""

    usage_name = "single_epoch_running_batch_wise"

    def __init__(self) -> None:
        MetricUsage.__init__(
            self, Events.EPOCH_STARTED, Events.ITERATION_COMPLETED, Events.ITERATION_COMPLETED
        )


class BatchFiltered(MetricUsage):
    """Epoch-wise, but taking only the iterations an ``ITERATION_COMPLETED`` filter accepts:
    ``BatchFiltered(every=4)`` takes iterations 4, 8, 12, ... (``once=``, ``before=``/``after=``
    and ``event_filter=`` work as for events)."""

    usage_name = "batch_filtered"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(
            Events.EPOCH_STARTED,
            Events.EPOCH_COMPLETED,
            Events.ITERATION_COMPLETED(*args, **kwargs),
        )


_USAGES_BY_NAME: dict[str, type[MetricUsage]] = {
    cls.usage_name: cls
    for cls in (
        EpochWise,
        RunningEpochWise,
        BatchWise,
        RunningBatchWise,
        SingleEpochRunningBatchWise,
    )
}


def _check_usage(usage: Any) -> MetricUsage:
    if isinstance(usage, str):
        if usage not in _USAGES_BY_NAME:
            raise ValueError(
                f"Argument usage should be a MetricUsage or one of {sorted(_USAGES_BY_NAME)}, "
                f"got {usage!r}"
            )
        return _USAGES_BY_NAME[usage]()
    if isinstance(usage, type) and issubclass(usage, MetricUsage):
        raise TypeError(
            f"Argument usage should be a MetricUsage instance: {usage.__name__}(), "
            f"not the class {usage.__name__}"
        )
    if not isinstance(usage, MetricUsage):
        raise TypeError(f"Argument usage should be a MetricUsage or a str, got {type(usage)}")
    return usage


# ---------------------------------------------------------------------------------------- helpers
def _identity(output: Any) -> Any:
    """The default ``output_transform``: the engine's output as it is."""
    return output


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _passes_exact_tuples(method: _Method) -> _Method:
    """Marks a ``_transformed_output`` that returns the engine's output unchanged when it is an
    exact tuple and the transform is the identity (see ``Metric.iteration_completed``)."""
    method._passes_exact_tuples = True  # type: ignore[attr-defined]
    return method


_STATE_TYPES = (type(None), bool, int, float, str, torch.Tensor)

# What torch.no_grad() calls on entry and exit.
_grad_enabled = torch.is_grad_enabled
_set_grad_enabled = torch._C._set_grad_enabled
# torch.inference_mode()'s C++ guard, made without a Python frame.
_inference_mode = functools.partial(torch._C._InferenceMode, True)


def _require_mapping(state_dict: Any) -> None:
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            f"Argument state_dict should be a mapping from state_dict(), got {type(state_dict)}"
        )


def _export_state(value: Any) -> Any:
    if isinstance(value, Metric):
        return value.state_dict()
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return [_export_state(item) for item in value]
    if isinstance(value, _STATE_TYPES):
        return value
    raise TypeError(f"Cannot put a {type(value).__name__} into a metric's state_dict")


# ------------------------------------------------------------------------------------------ Metric
class Metric(metaclass=ABCMeta):
    """Base class of ember's metrics.

    A metric accumulates over batches: :meth:`reset` clears it, :meth:`update` takes one batch's
    (transformed) output and :meth:`compute` returns the value of what it saw. :meth:`attach`
    wires these to an engine's events (see the usages) and stores the value in
    ``engine.state.metrics[name]``.

    Under torch.distributed (a group of more than one process), :meth:`compute` sums the
    accumulators of every rank first (:meth:`_sum_over_ranks`), so every rank gets the value of
    the whole data set, as one process would over all of it; ``update`` and ``state_dict`` stay
    per rank. ``compute`` is then a collective: every rank must call it.

    Subclasses set ``_state_attrs`` (the names of their accumulators, saved by
    :meth:`state_dict`) and may set ``required_output_keys``: when the transformed output is a
    mapping, these keys are picked out of it, in order (``None``: pass the mapping as it is).
    """

    required_output_keys: tuple[str, ...] | None = ("y_pred", "y")
    _state_attrs: tuple[str, ...] = ()
    # The accumulators (of _state_attrs) whose dtype and shape reset() fixes: a loaded state
    # must match them.
    _accumulator_attrs: tuple[str, ...] = ()
    # Whether the class's _transformed_output returns an exact tuple as it is under the identity
    # transform (set for each subclass): iteration_completed then skips calling it.
    _passes_tuples: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._passes_tuples = getattr(cls._transformed_output, "_passes_exact_tuples", False)

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = _identity,
        device: str | torch.device = "cpu",
    ) -> None:
        if not callable(output_transform):
            raise TypeError(
                f"Argument output_transform should be callable, got {type(output_transform)}"
            )
        self._output_transform = output_transform
        self._device = torch.device(device)
        # float64 accumulators, except where the device has none (Apple's MPS).
        self._double_dtype = torch.float32 if self._device.type == "mps" else torch.float64
        self.reset()

    # -------------------------------------------------------------------- the three operations
    @abstractmethod
    def reset(self) -> None:
        """Forget everything seen; called when the usage's period starts."""

    @abstractmethod
    def update(self, output: Any) -> None:
        """Take one batch's transformed output, typically ``(y_pred, y)``."""

    @abstractmethod
    def compute(self) -> Any:
        """The value of everything seen since :meth:`reset`.

        Raises :class:`NotComputableError` when nothing was seen.
        """

    def _compute_for_state(self) -> Any:
        """The value :meth:`completed` stores (before its conversions): :meth:`compute`'s, or
        the same read as a number in the same host read where compute() returns a tensor."""
        return self.compute()

    @property
    def device(self) -> torch.device:
        """Where the accumulators live."""
        return self._device

    def _sum_over_ranks(self, *values: Any) -> tuple[Any, ...]:
        """The accumulators ``values`` summed over the ranks of torch.distributed's group, for
        :meth:`compute` (copies: the metric's own state stays this rank's). In a single process
        they come back as they are. ``None`` (nothing seen on a rank) counts as zeros.

        Every rank must call it, in the same order: check for emptiness on the sums, after.
        With value checks (:meth:`_value_checks`), every rank's outcome is summed with the
        values, in the same all_reduce, and queued as one more check: where a check failed on
        any rank, the read after this raises ``ValueError`` on every rank.
        """
        checks = self._value_checks()
        world_size = _context.get_world_size()
        if checks is None or world_size == 1:
            return sum_over_ranks(self._name, values, self._device)
        # In a buffer the values fill already: the int64 one where any value is an integer.
        integer = any(summed_as_integers(value) for value in values)
        dtype = torch.int64 if integer else self._double_dtype
        flags = checks.rank_flags(_context.get_rank(), world_size, dtype, self._device)
        *sums, summed_flags = sum_over_ranks(self._name, (*values, flags), self._device)
        checks.note_ranks(summed_flags)
        return tuple(sums)

    def _value_checks(self) -> ValueChecks | None:
        """The checks of the data's values that :meth:`compute` reads (none here)."""
        return None

    def _ratio_over_ranks(self, total: torch.Tensor, count: int) -> float:
        """``total / count`` for :meth:`compute`, both summed over the ranks first; not computable
        while ``count`` is 0 on every rank."""
        total, count = self._sum_over_ranks(total, count)
        if count == 0:
            raise self._not_computable()
        return float(total.item()) / int(count)

    @property
    def _name(self) -> str:
        return type(self).__name__

    def _not_computable(self) -> NotComputableError:
        return NotComputableError(
            f"{self._name} must have at least one example before it can be computed "
            "(compute() was called before any update())."
        )

    # ------------------------------------------------------------------------- engine handlers
    def started(self, engine: Any) -> None:
        """Handler: reset."""
        self.reset()

    @_passes_exact_tuples
    def _transformed_output(self, engine: Any) -> Any:
        output = engine.state.output
        if self._output_transform is not _identity:
            output = self._output_transform(output)
        if type(output) is tuple:  # the usual (y_pred, y): no abstract-class check
            return output
        if isinstance(output, Mapping) and self.required_output_keys is not None:
            missing = [key for key in self.required_output_keys if key not in output]
            if missing:
                raise ValueError(
                    f"{self._name}: when the transformed engine output is a mapping it should "
                    f"contain the keys {list(self.required_output_keys)}, but it has "
                    f"{list(output.keys())} (missing {missing})"
                )
            output = tuple(output[key] for key in self.required_output_keys)
        return output

    def iteration_completed(self, engine: Any) -> None:
        """Handler: update with ``output_transform(engine.state.output)``, without autograd."""
        output = engine.state.output
        # An exact tuple under the identity transform comes out of _transformed_output as it
        # is, where the class's method is marked so: one Python frame less a batch.
        if (
            type(output) is not tuple
            or self._output_transform is not _identity
            or not self._passes_tuples
            or "_transformed_output" in self.__dict__
        ):
            output = self._transformed_output(engine)
        # What torch.no_grad() does, without its context object (1.3 us a batch per metric,
        # 0.2 here).
        enabled = _grad_enabled()
        _set_grad_enabled(False)
        try:
            self.update(output)
        finally:
            _set_grad_enabled(enabled)

    def completed(self, engine: Any, name: str) -> None:
        """Handler: compute and store the value in ``engine.state.metrics[name]``.

        A tensor holding one element is stored as a Python number, other tensors are moved to
        the CPU. A mapping result is also spread into ``state.metrics``, key by key.
        """
        result = self._compute_for_state()
        if type(result) is float:  # the usual value: no abstract-class check
            engine.state.metrics[name] = result
            return
        if isinstance(result, Mapping):
            if name in result:
                raise ValueError(
                    f"Argument name '{name}' is conflicting with mapping keys: {list(result.keys())}"
                )
            for key, value in result.items():
                engine.state.metrics[key] = value
            engine.state.metrics[name] = result
            return
        if isinstance(result, torch.Tensor):
            result = as_stored(result)
        engine.state.metrics[name] = result

    # ------------------------------------------------------------------------------- attaching
    def _usage_events(self, usage: MetricUsage) -> tuple[Any, Any, Any]:
        """``(reset, update, compute)`` events of ``usage`` for this metric."""
        return usage.STARTED, usage.ITERATION_COMPLETED, usage.COMPLETED

    def _attach_accumulation(self, engine: Any, usage: MetricUsage) -> None:
        """Add the reset and update handlers (once) without the compute one."""
        started, iteration, _ = self._usage_events(usage)
        if not engine.has_event_handler(self.started, started):
            engine.add_event_handler(started, self.started)
        if not engine.has_event_handler(self.iteration_completed, iteration):
            engine.add_event_handler(iteration, self.iteration_completed)

    def _accumulation_attached(self, engine: Any, usage: MetricUsage) -> bool:
        started, iteration, _ = self._usage_events(usage)
        return engine.has_event_handler(self.started, started) and engine.has_event_handler(
            self.iteration_completed, iteration
        )

    def attach(self, engine: Any, name: str, usage: str | MetricUsage = "epoch_wise") -> None:
        """Compute this metric on ``engine`` and store it as ``engine.state.metrics[name]``.

        ``usage`` (a :class:`MetricUsage` or its ``usage_name``) says when: ``EpochWise()``
        (default), ``RunningEpochWise()``, ``BatchWise()``, ``RunningBatchWise()``,
        ``SingleEpochRunningBatchWise()`` or ``BatchFiltered(every=n)``.
        """
        usage = _check_usage(usage)
        if not isinstance(name, str):
            raise TypeError(f"Argument name should be a str, got {type(name)}")
        self._attach_accumulation(engine, usage)
        engine.add_event_handler(self._usage_events(usage)[2], self.completed, name)

    def detach(self, engine: Any, usage: str | MetricUsage = "epoch_wise") -> None:
        """Remove the handlers :meth:`attach` added for ``usage`` (all names)."""
        usage = _check_usage(usage)
        started, iteration, completed = self._usage_events(usage)
        for handler, event in (
            (self.completed, completed),
            (self.started, started),
            (self.iteration_completed, iteration),
        ):
            if engine.has_event_handler(handler, event):
                engine.remove_event_handler(handler, event)

    def is_attached(self, engine: Any, usage: str | MetricUsage = "epoch_wise") -> bool:
        """Whether the metric stores its value on ``engine`` with ``usage``."""
        usage = _check_usage(usage)
        return bool(engine.has_event_handler(self.completed, self._usage_events(usage)[2]))

    # ------------------------------------------------------------------------------ state dict
    def state_dict(self) -> OrderedDict[str, Any]:
        """The accumulators (copies), by attribute name; nested metrics give nested dicts."""
        return OrderedDict((attr, _export_state(getattr(self, attr))) for attr in self._state_attrs)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore accumulators saved by :meth:`state_dict` (tensors go to this metric's device).

        Everything is imported and checked before anything changes, the states of the metrics
        this one holds included: a refused state leaves them all as they were."""
        self._prepared_load(state_dict)()

    def _prepared_load(self, state_dict: Any) -> Callable[[], None]:
        """Check and import ``state_dict``; return what sets it. A metric holding this one calls
        it before it changes anything itself."""
        _require_mapping(state_dict)
        expected, given = set(self._state_attrs), set(state_dict)
        if expected != given:
            raise ValueError(
                f"{self._name}.load_state_dict: expected the keys {sorted(expected)}, got "
                f"{sorted(given)} (missing {sorted(expected - given)}, "
                f"unexpected {sorted(given - expected)})"
            )
        held = {
            attr: metric._prepared_load(state_dict[attr])
            for attr in self._state_attrs
            if isinstance(metric := getattr(self, attr), Metric)
        }
        imported = {
            attr: self._import_state(getattr(self, attr), state_dict[attr], attr)
            for attr in self._state_attrs
            if attr not in held
        }
        self._check_loaded_state(imported)

        def load() -> None:
            for load_held in held.values():
                load_held()
            for attr, value in imported.items():
                setattr(self, attr, value)
            self._after_load()

        return load

    def _after_load(self) -> None:  # noqa: B027 - a hook: most metrics need nothing here
        """Bring what depends on the accumulators in line with those just loaded."""

    def _check_loaded_state(self, state: Mapping[str, Any]) -> None:
        """Refuse a state (imported by :meth:`load_state_dict`, not yet set) that this metric
        could not have saved: counts that are not ints >= 0, accumulators of
        ``_accumulator_attrs`` not of the dtype and shape :meth:`reset` gives them, or holding
        negative counts. Subclasses add their own rules."""
        for attr in ("_num_examples", "_num_samples"):
            if attr in state:
                self._require_loaded_count(attr, state[attr])
        for attr in self._accumulator_attrs:
            expected = getattr(self, attr)
            self._require_loaded_tensor(attr, state[attr], expected.dtype, shape_of(expected))

    def _loaded_state_error(self, attr: str, expected: str, value: Any) -> str:
        shown = (
            f"a tensor of dtype {value.dtype} and shape {shape_of(value)}"
            if isinstance(value, torch.Tensor)
            else repr(value)
        )
        return f"{self._name}.load_state_dict: '{attr}' should be {expected}, got {shown}"

    def _require_loaded_count(self, attr: str, value: Any) -> None:
        if type(value) is not int:
            raise TypeError(self._loaded_state_error(attr, "an int >= 0", value))
        if value < 0:
            raise ValueError(self._loaded_state_error(attr, "an int >= 0", value))

    def _require_loaded_tensor(
        self, attr: str, value: Any, dtype: torch.dtype, shape: tuple[int, ...]
    ) -> None:
        """``value`` is a tensor of ``dtype`` and ``shape``; of counts (an integer dtype), none
        negative (read on the host: once per load, not per batch)."""
        expected = f"a tensor of dtype {dtype} and shape {shape}"
        if not isinstance(value, torch.Tensor):
            raise TypeError(self._loaded_state_error(attr, expected, value))
        if value.dtype != dtype or shape_of(value) != shape:
            raise ValueError(self._loaded_state_error(attr, expected, value))
        if not (dtype.is_floating_point or dtype.is_complex) and bool((value < 0).any()):
            raise ValueError(
                self._loaded_state_error(attr, f"{expected} of counts >= 0", value)
                + " holding a negative count"
            )

    def _import_state(self, current: Any, value: Any, attr: str) -> Any:
        if isinstance(current, list) and isinstance(value, (list, tuple)):
            if len(current) != len(value):
                raise ValueError(
                    f"{self._name}.load_state_dict: '{attr}' should have {len(current)} items, "
                    f"got {len(value)}"
                )
            return [self._import_state(c, v, attr) for c, v in zip(current, value, strict=True)]
        if isinstance(value, torch.Tensor):
            return value.detach().to(self._device).clone()
        if not isinstance(value, _STATE_TYPES):
            raise TypeError(
                f"{self._name}.load_state_dict: unsupported value of type {type(value).__name__} "
                f"for '{attr}'"
            )
        return value

    # ------------------------------------------------------------------------------ arithmetic
    def __add__(self, other: Any) -> MetricsLambda:
        return MetricsLambda(operator.add, self, other)

    def __radd__(self, other: Any) -> MetricsLambda:
        return MetricsLambda(operator.add, other, self)

    def __sub__(self, other: Any) -> MetricsLambda:
        return MetricsLambda(operator.sub, self, other)

    def __rsub__(self, other: Any) -> MetricsLambda:
        return MetricsLambda(operator.sub, other, self)

    def __mul__(self, other: Any) -> MetricsLambda:
        return MetricsLambda(operator.mul, self, other)

    def __rmul__(self, other: Any) -> MetricsLambda:
        return MetricsLambda(operator.mul, other, self)

    def __truediv__(self, other: Any) -> MetricsLambda:
        return MetricsLambda(operator.truediv, self, other)

    def __rtruediv__(self, other: Any) -> MetricsLambda:
        return MetricsLambda(operator.truediv, other, self)

    def __floordiv__(self, other: Any) -> MetricsLambda:
        return MetricsLambda(operator.floordiv, self, other)

    def __rfloordiv__(self, other: Any) -> MetricsLambda:
        return MetricsLambda(operator.floordiv, other, self)

    def __mod__(self, other: Any) -> MetricsLambda:
        return MetricsLambda(operator.mod, self, other)

    def __rmod__(self, other: Any) -> MetricsLambda:
        return MetricsLambda(operator.mod, other, self)

    def __pow__(self, other: Any) -> MetricsLambda:
        return MetricsLambda(operator.pow, self, other)

    def __rpow__(self, other: Any) -> MetricsLambda:
        return MetricsLambda(operator.pow, other, self)

    def __neg__(self) -> MetricsLambda:
        return MetricsLambda(operator.neg, self)

    def __pos__(self) -> MetricsLambda:
        return MetricsLambda(operator.pos, self)

    def __abs__(self) -> MetricsLambda:
        return MetricsLambda(abs, self)

    def __getitem__(self, index: Any) -> MetricsLambda:
        return MetricsLambda(lambda value: value[index], self)

    def __iter__(self) -> Iterator[Any]:
        # Without this, __getitem__ would make every metric an endless iterable.
        raise TypeError(f"'{self._name}' object is not iterable")

    def __getattr__(self, attr: str) -> Callable[..., MetricsLambda]:
        """``metric.mean()``, ``cm.diag()``, ``cm.to(torch.double)``: a public ``torch.Tensor``
        method applied to the computed value, as a new metric."""
        if attr.startswith("_") or not callable(getattr(torch.Tensor, attr, None)):
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{attr}'")

        def apply(value: Any, *args: Any, **kwargs: Any) -> Any:
            method = getattr(value, attr, None)
            if method is None:
                raise AttributeError(
                    f"The value of a metric, of type {type(value).__name__}, has no method "
                    f"'{attr}' (used as metric.{attr}(...))"
                )
            return method(*args, **kwargs)

        def wrapper(*args: Any, **kwargs: Any) -> MetricsLambda:
            return MetricsLambda(apply, self, *args, **kwargs)

        return wrapper


# ------------------------------------------------------------------------------- (y_pred, y) metrics
Kernel = Callable[[torch.Tensor, torch.Tensor], None]
_Layout = tuple[torch.Size, torch.Size, torch.dtype, torch.dtype, int, bool, bool]


def _layout(y_pred: torch.Tensor, y: torch.Tensor) -> _Layout:
    """What an update's checks and kernel depend on: shapes, dtypes, device, autograd."""
    return (
        y_pred.shape,
        y.shape,
        y_pred.dtype,
        y.dtype,
        y_pred.get_device(),
        y_pred.requires_grad,
        y.requires_grad,
    )


def _detaching(kernel: Kernel) -> Kernel:
    def detached(y_pred: torch.Tensor, y: torch.Tensor) -> None:
        kernel(y_pred.detach(), y.detach())

    return detached


class _PairMetric(Metric):
    """A metric updated with ``(y_pred, y)`` whose checks run once per layout.

    The first update of a layout (shapes, dtypes, device, ``requires_grad``) after a reset runs
    every check and picks a kernel, the bare tensor ops that accumulate the batch; later
    updates with the same layout call the kernel directly. Subclasses implement
    :meth:`_prepare`; value checks that need the data run there (see ``_checks.ValueChecks``).
    """

    # Whether iteration_completed may call the planned kernel itself (set for each subclass):
    # update() is this class's and the output reaches it untransformed.
    _updates_by_plan: ClassVar[bool] = True

    # Whether the kernels of _prepare are self-contained: they depend only on the layout and
    # the metric's settings, read the accumulators from the metric when they run, add to them
    # in place and keep no tensor they make. Then a plan may serve again after a reset (see
    # _resumed_plan), and iteration_completed runs the kernel in inference mode (no autograd
    # layer in front of each op: about a third of a small op's dispatch). A subclass that
    # defines its own _prepare says so itself.
    _self_contained_kernels: ClassVar[bool] = False
    # The last plan, kept across resets where _self_contained_kernels: (layout, kernel, what
    # _redo_reset_work needs).
    _kept_plan: tuple[_Layout, Kernel, Any] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._updates_by_plan = cls.update is _PairMetric.update and cls._passes_tuples
        if "_prepare" in cls.__dict__ and "_self_contained_kernels" not in cls.__dict__:
            cls._self_contained_kernels = False

    def reset(self) -> None:
        self._plan: tuple[_Layout, Kernel] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The kernels are closures over this metric: a copy (copy.deepcopy, pickle) plans its
        # own, else its updates would add to this metric's accumulators.
        state = self.__dict__.copy()
        state["_plan"] = None
        state.pop("_kept_plan", None)
        return state

    def iteration_completed(self, engine: Any) -> None:
        """Handler: as :meth:`Metric.iteration_completed`; an exact ``(y_pred, y)`` of the
        planned layout goes to the kernel directly (two Python frames less a batch)."""
        plan = self._plan
        output = engine.state.output
        if (
            plan is not None
            and type(output) is tuple
            and len(output) == 2
            and self._output_transform is _identity
            and self._updates_by_plan
            and "update" not in self.__dict__
            and "_transformed_output" not in self.__dict__
        ):
            y_pred, y = output
            if (
                type(y_pred) is torch.Tensor
                and type(y) is torch.Tensor
                and plan[0] == _layout(y_pred, y)
            ):
                if self._self_contained_kernels:
                    with _inference_mode():
                        plan[1](y_pred, y)
                    return
                enabled = _grad_enabled()
                _set_grad_enabled(False)
                try:
                    plan[1](y_pred, y)
                finally:
                    _set_grad_enabled(enabled)
                return
        super().iteration_completed(engine)

    @abstractmethod
    def _prepare(self, output: Any) -> Kernel:
        """Check ``output`` (anything: it may not be a pair) and return the kernel to apply
        to its raw ``(y_pred, y)``."""

    def _after_load(self) -> None:
        # Their kernels add to the accumulators just replaced, and the restored state (an
        # input kind) is not a reset's.
        self._plan = self._kept_plan = None

    def _reuse_plans(self) -> bool:
        """Whether later updates of the same layout may skip :meth:`_prepare`."""
        return True

    def _reset_work_state(self) -> Any:
        """What :meth:`_redo_reset_work` needs, taken when a plan is made (after _prepare)."""
        return None

    def _redo_reset_work(self, y_pred: torch.Tensor, y: torch.Tensor, saved: Any) -> None:
        """What _prepare does for a reset metric beyond the checks that the layout decides
        (the value checks, the input kind), for the first update of a kept plan's layout."""

    def _resumed_plan(self, output: Any) -> tuple[_Layout, Kernel] | None:
        """The kept plan, when ``output`` is a pair of tensors of its layout, made this
        reset's: the checks of shapes and dtypes passed for that layout, and the kernels read
        the accumulators from the metric when they run."""
        kept = self._kept_plan
        if kept is None or not (type(output) is tuple or type(output) is list) or len(output) != 2:
            return None
        y_pred, y = output
        if type(y_pred) is not torch.Tensor or type(y) is not torch.Tensor:
            return None
        if kept[0] != _layout(y_pred, y):
            return None
        self._redo_reset_work(y_pred, y, kept[2])
        self._plan = (kept[0], kept[1])
        return self._plan

    def update(self, output: Any) -> None:
        plan = self._plan
        if plan is None and self._kept_plan is not None:
            plan = self._resumed_plan(output)
        if (
            plan is not None
            and (type(output) is tuple or type(output) is list)
            and len(output) == 2
        ):
            y_pred, y = output
            if (
                type(y_pred) is torch.Tensor
                and type(y) is torch.Tensor
                and plan[0] == _layout(y_pred, y)
            ):
                plan[1](y_pred, y)
                return
        kernel = self._prepare(output)
        y_pred, y = output
        if y_pred.requires_grad or y.requires_grad:
            kernel = _detaching(kernel)
        kernel(y_pred, y)
        if self._reuse_plans() and type(y_pred) is torch.Tensor and type(y) is torch.Tensor:
            layout = _layout(y_pred, y)
            self._plan = (layout, kernel)
            if self._self_contained_kernels:
                self._kept_plan = (layout, kernel, self._reset_work_state())


# ------------------------------------------------------------------------------------ MetricsLambda
def _materialize(value: Any) -> Any:
    if isinstance(value, Metric):
        value = value.compute()
    if isinstance(value, torch.Tensor):
        value = value.cpu()
    return value


class MetricsLambda(Metric):
    """``f`` applied to the values of other metrics (and plain arguments), itself a metric.

    Attaching it attaches its metric arguments' reset and update handlers with the same usage
    (once each, so a metric that is also attached under its own name is not updated twice);
    at compute time every metric argument is computed and ``f(*values, **kwvalues)`` returned.
    Arithmetic on metrics builds these: ``2 * p * r / (p + r)``.
    """

    required_output_keys = None

    def __init__(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if not callable(f):
            raise TypeError(f"Argument f should be callable, got {type(f)}")
        self.function = f
        self.args = list(args)
        self.kwargs = dict(kwargs)
        self._engine: weakref.ref[Any] | None = None
        self._updated = False
        super().__init__(device="cpu")

    @property
    def _name(self) -> str:
        name = getattr(self.function, "__name__", type(self.function).__name__)
        return f"MetricsLambda({name})"

    def _metrics(self) -> list[Metric]:
        return [
            m for m in itertools.chain(self.args, self.kwargs.values()) if isinstance(m, Metric)
        ]

    @property
    def engine(self) -> Any:
        """The engine this lambda is attached to, if any."""
        return None if self._engine is None else self._engine()

    def reset(self) -> None:
        for metric in self._metrics():
            metric.reset()
        self._updated = False

    def update(self, output: Any) -> None:
        if self.engine is not None:
            raise ValueError(
                "MetricsLambda is already attached to an engine, and MetricsLambda can't use "
                "the update API while it's attached."
            )
        self._forward_update(output)

    def _forward_update(self, output: Any) -> None:
        # Each metric under this lambda once, however often the expression uses it
        # (``cm[0, 0] + cm[1, 1]``), as attaching the lambda updates it once; ignite updates it
        # at every use. Nested lambdas are updated through here: attaching the outer one marked
        # them attached too, and only the outer one's state decides whether update() is allowed.
        lambdas: list[MetricsLambda] = []
        leaves: list[Metric] = []
        self._collect(lambdas, leaves, set())
        for metric in leaves:
            metric.update(output)
        for nested in lambdas:
            nested._updated = True

    def _collect(self, lambdas: list[MetricsLambda], leaves: list[Metric], seen: set[int]) -> None:
        """This lambda and those under it into ``lambdas``, the other metrics under it into
        ``leaves``: each once, in order."""
        lambdas.append(self)
        for metric in self._metrics():
            if id(metric) in seen:
                continue
            seen.add(id(metric))
            if isinstance(metric, MetricsLambda):
                metric._collect(lambdas, leaves, seen)
            else:
                leaves.append(metric)

    def compute(self) -> Any:
        return self._evaluate(as_number=False)

    def _compute_for_state(self) -> Any:
        return self._evaluate(as_number=True)

    def _evaluate(self, as_number: bool) -> Any:
        """``f`` of the computed arguments. The value checks of the arguments' tensor results
        are read once: with the function's own read (``read_number``), with a one-element
        result ``as_number``, or after it."""
        with collected_checks() as pending:
            values = [_materialize(arg) for arg in self.args]
            kwvalues = {key: _materialize(value) for key, value in self.kwargs.items()}
            result = self.function(*values, **kwvalues)
            if as_number and isinstance(result, torch.Tensor) and result.numel() == 1:
                return read_number(result)
            read_collected(pending)
        return result

    def _attach_accumulation(self, engine: Any, usage: MetricUsage) -> None:
        self._engine = weakref.ref(engine)
        for metric in self._metrics():
            metric._attach_accumulation(engine, usage)

    def _accumulation_attached(self, engine: Any, usage: MetricUsage) -> bool:
        return all(metric._accumulation_attached(engine, usage) for metric in self._metrics())

    def attach(self, engine: Any, name: str, usage: str | MetricUsage = "epoch_wise") -> None:
        if self._updated:
            raise ValueError(
                "The underlying metrics are already updated, can't attach while using "
                "reset/update/compute API."
            )
        super().attach(engine, name, usage)

    def detach(self, engine: Any, usage: str | MetricUsage = "epoch_wise") -> None:
        """Stop storing the value; the metric arguments stay attached (they may be shared)."""
        usage = _check_usage(usage)
        completed = self._usage_events(usage)[2]
        if engine.has_event_handler(self.completed, completed):
            engine.remove_event_handler(self.completed, completed)
        if self.engine is engine:
            self._engine = None

    def is_attached(self, engine: Any, usage: str | MetricUsage = "epoch_wise") -> bool:
        usage = _check_usage(usage)
        return super().is_attached(engine, usage) and self._accumulation_attached(engine, usage)

    def state_dict(self) -> OrderedDict[str, Any]:
        """``{"metrics": [state_dict of each metric argument, in order], "_updated": bool}``."""
        return OrderedDict(
            [
                ("metrics", [metric.state_dict() for metric in self._metrics()]),
                ("_updated", self._updated),
            ]
        )

    def _prepared_load(self, state_dict: Any) -> Callable[[], None]:
        _require_mapping(state_dict)
        if set(state_dict) != {"metrics", "_updated"}:
            raise ValueError(
                f"{self._name}.load_state_dict: expected the keys ['_updated', 'metrics'], got "
                f"{sorted(state_dict)}"
            )
        metrics = self._metrics()
        states = state_dict["metrics"]
        if not isinstance(states, (list, tuple)) or len(states) != len(metrics):
            raise ValueError(
                f"{self._name}.load_state_dict: 'metrics' should hold {len(metrics)} state dicts, "
                f"got {states!r}"
            )
        updated = state_dict["_updated"]
        if not isinstance(updated, bool):
            raise TypeError(self._loaded_state_error("_updated", "a bool", updated))
        loads = [
            metric._prepared_load(state) for metric, state in zip(metrics, states, strict=True)
        ]

        def load() -> None:
            for load_metric in loads:
                load_metric()
            self._updated = updated

        return load
