"""Parameter schedulers: ``LRScheduler`` around torch's schedulers, ``PiecewiseLinear``,
``LinearCyclicalScheduler``, ``CosineAnnealingScheduler``, ``ConcatScheduler``,
``ParamGroupScheduler`` and ``create_lr_scheduler_with_warmup`` (ignite's names and values).

A scheduler is a handler, normally on ITERATION_STARTED (``scheduler.attach(trainer)`` does
that): the ``n``-th call (``event_index = n - 1``) sets the parameter for the ``n``-th iteration.
With ``save_history=True`` each call appends the values of the param groups to
``engine.state.param_history[name]``.

``LRScheduler`` differs from ignite in how it drives the torch scheduler: it calls the torch
scheduler's public ``step()`` from the second call on (ignite sets ``last_epoch`` and calls
``get_lr()`` under a private flag). Iteration ``n`` runs with the learning rate after ``n - 1``
steps, as in a plain torch loop that steps after each ``optimizer.step()``; the values are
ignite's, except where ignite's differ from that torch loop, where they are torch's: the schedulers
whose ``get_lr()`` scales the current learning rate (``ExponentialLR``, ``PolynomialLR``,
``LinearLR``, ``ConstantLR``, ``MultiplicativeLR``), ``CosineAnnealingLR``'s first value and
``CosineAnnealingWarmRestarts`` (shifted by one). The torch scheduler's own ``state_dict`` stays
the truth, so saving either the torch scheduler or the wrapper resumes correctly, except for a
torch scheduler saved after exactly one call (see :class:`LRScheduler`).

``load_state_dict`` checks the whole state, a composite scheduler's children included, before it
changes anything: a bad state raises ``TypeError`` or ``ValueError`` naming the key, and leaves
the scheduler as it was.
"""

from __future__ import annotations

import itertools
import math
import numbers
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from copy import copy, deepcopy
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler as _TorchLRScheduler
from torch.optim.lr_scheduler import ReduceLROnPlateau

from ember.engine import Events
from ember.engine._state_dict import check_state_dict
from ember.engine.engine import _is_integer

__all__ = [
    "BaseParamScheduler",
    "ConcatScheduler",
    "CosineAnnealingScheduler",
    "CyclicalScheduler",
    "LRScheduler",
    "LinearCyclicalScheduler",
    "ParamGroupScheduler",
    "ParamScheduler",
    "PiecewiseLinear",
    "create_lr_scheduler_with_warmup",
]


def _record_history(engine: Any, name: str, values: list[Any]) -> None:
    if engine is None:
        return
    history = getattr(engine.state, "param_history", None)
    if history is None:
        history = {}
        engine.state.param_history = history
    history.setdefault(name, []).append(values)


def _simulated_values(
    scheduler: Any, num_events: int, param_names: Sequence[str] | None = None
) -> list[list[Any]]:
    """Call ``scheduler`` ``num_events`` times: ``[[event_index, value of each group...], ...]``,
    the groups' values of each of ``param_names`` in turn (default: the scheduler's parameter)."""
    names = [scheduler.param_name] if param_names is None else list(param_names)
    values = []
    for index in range(num_events):
        scheduler(None)
        row = [index]
        for param_name in names:
            row += [g[param_name] for g in scheduler.optimizer_param_groups]
        values.append(row)
    return values


def _fake_optimizer() -> Optimizer:
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)


def _check_keys(state_dict: Any, keys: Sequence[str], where: str) -> None:
    """ignite's checks and messages, prefixed with ``where`` for a child's state."""
    try:
        check_state_dict(state_dict, keys)
    except (TypeError, ValueError) as exc:
        if where == "state_dict":
            raise
        raise type(exc)(f"{where}: {exc}") from None


def _check_int(state_dict: Mapping[str, Any], key: str, where: str, minimum: int | None = 0) -> int:
    value = state_dict[key]
    if not _is_integer(value):
        raise TypeError(f"{where}['{key}'] should be an integer, but given {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{where}['{key}'] should be >= {minimum}, but given {value}")
    return int(value)


def _check_list(state_dict: Mapping[str, Any], key: str, where: str, length: int) -> list[Any]:
    value = state_dict[key]
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{where}['{key}'] should be a list, but given {type(value).__name__}")
    if len(value) != length:
        raise ValueError(f"{where}['{key}'] should hold {length} values, but given {len(value)}")
    return list(value)


class BaseParamScheduler:
    """Common state handling: ``event_index``, ``param_name``, ``save_history``."""

    def __init__(self, param_name: str, save_history: bool = False) -> None:
        self.param_name: Any = param_name
        self.event_index: int = 0
        self._save_history: bool = save_history
        self._state_attrs: list[str] = ["event_index", "param_name", "save_history"]

    @property
    def save_history(self) -> bool:
        return self._save_history

    @save_history.setter
    def save_history(self, value: bool) -> None:
        self._save_history = value

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = OrderedDict()
        for name in self._state_attrs:
            if hasattr(self, name):
                value = getattr(self, name)
                if hasattr(value, "state_dict"):
                    value = value.state_dict()
                state[name] = copy(value)
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load ``state_dict`` after checking all of it: a bad one raises ``TypeError`` or
        ``ValueError`` naming the key, and changes nothing."""
        self._check_state(state_dict)
        self._assign_state(state_dict)

    def _check_state(self, state_dict: Any, where: str = "state_dict") -> None:
        """Raise unless ``state_dict`` loads into this scheduler; ``where`` names it in the
        messages (a composite's child: ``state_dict['schedulers'][1]``)."""
        _check_keys(state_dict, self._state_attrs, where)
        _check_int(state_dict, "event_index", where)
        if not isinstance(state_dict["save_history"], bool):
            raise TypeError(
                f"{where}['save_history'] should be a bool, "
                f"but given {state_dict['save_history']!r}"
            )

    def _assign_state(self, state_dict: Mapping[str, Any]) -> None:
        for name in self._state_attrs:
            value = state_dict[name]
            current = getattr(self, name)
            if isinstance(value, Mapping) and hasattr(current, "load_state_dict"):
                current.load_state_dict(value)
            else:
                setattr(self, name, value)

    def get_param(self) -> Any:
        raise NotImplementedError

    @classmethod
    def plot_values(cls, num_events: int, **scheduler_kwargs: Any) -> Any:
        """Plot :meth:`simulate_values` with matplotlib (ignite's ``plot_values``); returns the
        ``Line2D`` list of ``plt.plot``."""
        try:
            import matplotlib.pyplot as plt
        except ImportError:
            raise ModuleNotFoundError(
                "This method requires matplotlib to be installed. "
                "Please install it with command: \n pip install matplotlib"
            ) from None
        values = cls.simulate_values(num_events=num_events, **scheduler_kwargs)  # type: ignore[attr-defined]
        label = scheduler_kwargs.get("param_name", "learning rate")
        ax = plt.plot([e for e, _ in values], [v for _, v in values], label=label)
        plt.legend()
        plt.grid(which="both")
        return ax


class ParamScheduler(BaseParamScheduler):
    """Sets ``param_name`` of the optimizer's param groups (or of group ``param_group_index``)
    to :meth:`get_param` at each call. Subclasses implement ``get_param``."""

    def __init__(
        self,
        optimizer: Any,
        param_name: str,
        save_history: bool = False,
        param_group_index: int | None = None,
    ) -> None:
        super().__init__(param_name, save_history)
        if not (
            isinstance(optimizer, Optimizer)
            or isinstance(getattr(optimizer, "param_groups", None), Sequence)
        ):
            raise TypeError(
                "Argument optimizer should be torch.optim.Optimizer or has attribute "
                f"'param_groups' as list/tuple, but given {type(optimizer)}"
            )
        self.optimizer: Any = optimizer
        self.param_group_index: int | None = param_group_index
        self._state_attrs += ["param_group_index"]

    def _check_state(self, state_dict: Any, where: str = "state_dict") -> None:
        super()._check_state(state_dict, where)
        if not isinstance(state_dict["param_name"], str):
            raise TypeError(
                f"{where}['param_name'] should be a str, but given {state_dict['param_name']!r}"
            )
        index = state_dict["param_group_index"]
        if index is not None:
            groups = len(self.optimizer.param_groups)
            if not _is_integer(index):
                raise TypeError(
                    f"{where}['param_group_index'] should be None or an integer, "
                    f"but given {index!r}"
                )
            if not 0 <= index < groups:
                raise ValueError(
                    f"{where}['param_group_index'] should index one of the optimizer's "
                    f"{groups} param groups, but given {index}"
                )

    def attach(self, engine: Any, event: Any = Events.ITERATION_STARTED) -> None:
        """Call this scheduler on ``event`` (default ITERATION_STARTED)."""
        engine.add_event_handler(event, self)

    @property
    def optimizer_param_groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self.optimizer.param_groups
        if self.param_group_index is None:
            return groups
        return [groups[self.param_group_index]]

    def _get_param(self) -> Any:
        return self.get_param()

    def __call__(self, engine: Any = None, name: str | None = None) -> None:
        value = self._get_param()
        groups = self.optimizer_param_groups
        if isinstance(value, list):
            if len(value) != len(groups):
                raise ValueError(
                    "size of value is different than optimizer_param_groups "
                    f"{len(value)} != {len(groups)}"
                )
            for group, item in zip(groups, value, strict=True):
                group[self.param_name] = item
        else:
            for group in groups:
                group[self.param_name] = value
        if self.save_history:
            _record_history(
                engine, name or self.param_name, [group[self.param_name] for group in groups]
            )
        self.event_index += 1

    @classmethod
    def simulate_values(cls, num_events: int, **scheduler_kwargs: Any) -> list[list[Any]]:
        """``[[event_index, value], ...]`` for ``num_events`` calls on a throwaway optimizer."""
        scheduler_kwargs.pop("optimizer", None)
        scheduler_kwargs.pop("save_history", None)
        scheduler = cls(optimizer=_fake_optimizer(), save_history=False, **scheduler_kwargs)
        values = []
        for index in range(num_events):
            scheduler(None)
            values.append([index, scheduler.optimizer_param_groups[0][scheduler.param_name]])
        return values


class PiecewiseLinear(ParamScheduler):
    """Linear interpolation between ``(event_index, value)`` milestones; constant before the
    first and after the last."""

    def __init__(
        self,
        optimizer: Any,
        param_name: str,
        milestones_values: list[tuple[int, float]],
        save_history: bool = False,
        param_group_index: int | None = None,
    ) -> None:
        super().__init__(optimizer, param_name, save_history, param_group_index)
        if not isinstance(milestones_values, Sequence):
            raise TypeError(
                "Argument milestones_values should be a list or tuple, "
                f"but given {type(milestones_values)}"
            )
        if len(milestones_values) < 1:
            raise ValueError(
                "Argument milestones_values should be with at least one value, "
                f"but given {milestones_values}"
            )
        milestones: list[int] = []
        values: list[float] = []
        for pair in milestones_values:
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise ValueError(
                    "Argument milestones_values should be a list of pairs (milestone, param_value)"
                )
            if not isinstance(pair[0], numbers.Integral):
                raise TypeError(
                    f"Value of a milestone should be integer, but given {type(pair[0])}"
                )
            if milestones and pair[0] < milestones[-1]:
                raise ValueError(
                    f"Milestones should be increasing integers, but given {pair[0]} is smaller "
                    f"than the previous milestone {milestones[-1]}"
                )
            milestones.append(int(pair[0]))
            values.append(pair[1])
        self.milestones: list[int] = milestones
        self.values: list[float] = values
        # ignite keeps the index of the current segment in its state ("_index"); ember computes
        # the segment from event_index but keeps _index too, so that its state_dict loads into
        # ignite's PiecewiseLinear (which requires the key). It is not in _state_attrs: a state
        # without it (an older ember checkpoint) still loads.
        self._index: int = 0
        self._state_attrs += ["values", "milestones"]

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["_index"] = self._index
        return state

    def _check_state(self, state_dict: Any, where: str = "state_dict") -> None:
        super()._check_state(state_dict, where)
        milestones = state_dict["milestones"]
        if not isinstance(milestones, (list, tuple)) or not all(_is_integer(m) for m in milestones):
            raise TypeError(
                f"{where}['milestones'] should be a list of integers, but given {milestones!r}"
            )
        if not milestones:
            raise ValueError(f"{where}['milestones'] should hold at least one milestone")
        if any(later < earlier for earlier, later in itertools.pairwise(milestones)):
            raise ValueError(f"{where}['milestones'] should be increasing, but given {milestones}")
        _check_list(state_dict, "values", where, len(milestones))
        if "_index" in state_dict:
            index = _check_int(state_dict, "_index", where)
            if index >= len(milestones):
                raise ValueError(
                    f"{where}['_index'] should be below the number of milestones "
                    f"({len(milestones)}), but given {index}"
                )

    def _assign_state(self, state_dict: Mapping[str, Any]) -> None:
        super()._assign_state(state_dict)
        self._index = int(state_dict.get("_index", 0))

    def get_param(self) -> float:
        # ignite's segments and formula, also before the first and after the last milestone
        # (a flat segment of length 1), so the value is the same object type as ignite's: a
        # float for int milestone values, 0.0 for -0.0.
        index = self.event_index
        milestones, values = self.milestones, self.values
        if index < milestones[0]:
            start, end, start_value, end_value = index - 1, index, values[0], values[0]
        elif index >= milestones[-1]:
            start, end, start_value, end_value = index, index + 1, values[-1], values[-1]
        else:
            k = next(
                k for k in range(len(milestones) - 1) if milestones[k] <= index < milestones[k + 1]
            )
            self._index = k  # the segment ignite's state records
            start, end, start_value, end_value = (
                milestones[k],
                milestones[k + 1],
                values[k],
                values[k + 1],
            )
        return start_value + (end_value - start_value) * (index - start) / (end - start)


class CyclicalScheduler(ParamScheduler):
    """Base of cyclical schedulers: a cycle of ``cycle_size`` events from ``start_value`` to
    ``end_value`` and (for the linear one) back, optionally with a linear warm-up of
    ``warmup_duration`` events from the previous ``end_value`` to the next ``start_value``
    before each new cycle; ``*_mult`` scale the cycle and the values after each cycle."""

    def __init__(
        self,
        optimizer: Any,
        param_name: str,
        start_value: float,
        end_value: float,
        cycle_size: int,
        cycle_mult: float = 1.0,
        start_value_mult: float = 1.0,
        end_value_mult: float = 1.0,
        warmup_duration: int = 0,
        save_history: bool = False,
        param_group_index: int | None = None,
    ) -> None:
        super().__init__(optimizer, param_name, save_history, param_group_index)
        if not isinstance(cycle_size, numbers.Integral) or cycle_size < 2:
            raise ValueError(
                f"Argument cycle_size should be positive and larger than 1, but given {cycle_size}"
            )
        if not isinstance(warmup_duration, numbers.Integral) or warmup_duration < 0:
            raise ValueError(f"Argument warmup_duration should be >= 0, got {warmup_duration}")
        self.start_value: float = start_value
        self.end_value: float = end_value
        self.cycle_size: int = int(cycle_size)
        self.cycle_mult: float = cycle_mult
        self.cycle: int = 0
        self.start_value_mult: float = start_value_mult
        self.end_value_mult: float = end_value_mult
        self.warmup_duration: int = int(warmup_duration)
        self.total_cycle_size: int = self.warmup_duration + self.cycle_size
        self._state_attrs += [
            "start_value",
            "end_value",
            "cycle_size",
            "cycle_mult",
            "cycle",
            "start_value_mult",
            "end_value_mult",
            "warmup_duration",
            "total_cycle_size",
        ]

    def _check_state(self, state_dict: Any, where: str = "state_dict") -> None:
        super()._check_state(state_dict, where)
        # A cycle of 1 event can follow from a cycle_mult < 1; 0 would divide by zero.
        cycle_size = _check_int(state_dict, "cycle_size", where, minimum=1)
        _check_int(state_dict, "cycle", where)
        warmup_duration = _check_int(state_dict, "warmup_duration", where)
        total = _check_int(state_dict, "total_cycle_size", where)
        if total != warmup_duration + cycle_size:
            raise ValueError(
                f"{where}['total_cycle_size'] should be warmup_duration + cycle_size "
                f"({warmup_duration + cycle_size}), but given {total}"
            )

    def __call__(self, engine: Any = None, name: str | None = None) -> None:
        if self.event_index != 0 and self.event_index == self.cycle_size:
            self.start_value *= self.start_value_mult
        if self.event_index != 0 and self.event_index == self.total_cycle_size:
            self.event_index = 0
            self.cycle_size = int(self.cycle_size * self.cycle_mult)
            self.warmup_duration = int(self.warmup_duration * self.cycle_mult)
            self.total_cycle_size = self.warmup_duration + self.cycle_size
            self.cycle += 1
            self.end_value *= self.end_value_mult
        super().__call__(engine, name)

    def _get_param(self) -> Any:
        if self.event_index > self.cycle_size:  # the warm-up before the next cycle
            progress = (self.event_index - self.cycle_size) / self.warmup_duration
            return self.end_value + (self.start_value - self.end_value) * progress
        return self.get_param()


class LinearCyclicalScheduler(CyclicalScheduler):
    """Linear from ``start_value`` to ``end_value`` over half a cycle and back over the other
    half; with ``monotonic=True``, from ``start_value`` to ``end_value`` over the whole cycle."""

    def __init__(self, *args: Any, monotonic: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.monotonic: bool = monotonic
        if self.warmup_duration > 0 and not self.monotonic:
            raise ValueError(
                "Invalid combination when warmup_duration > 0 and monotonic=False, "
                "please use either set warmup_duration=0 or monotonic=True"
            )

    def get_param(self) -> float:
        progress = self.event_index / self.cycle_size
        if self.monotonic:
            return self.start_value + (self.end_value - self.start_value) * progress
        return self.end_value + (self.start_value - self.end_value) * abs(progress - 0.5) * 2


class CosineAnnealingScheduler(CyclicalScheduler):
    """Half a cosine from ``start_value`` to ``end_value`` over each cycle (SGDR-style)."""

    def get_param(self) -> float:
        progress = self.event_index / self.cycle_size
        return self.start_value + (self.end_value - self.start_value) / 2 * (
            1 - math.cos(math.pi * progress)
        )


def _torch_steps(lr_scheduler: Any) -> int:
    """How many times a torch scheduler has stepped: its ``last_epoch``, or, for one without it
    (``ChainedScheduler``), the most its children have."""
    last_epoch = getattr(lr_scheduler, "last_epoch", None)
    if last_epoch is not None:
        return int(last_epoch)
    children = getattr(lr_scheduler, "_schedulers", ())
    return max((_torch_steps(child) for child in children), default=0)


class LRScheduler(ParamScheduler):
    """A ``torch.optim.lr_scheduler`` scheduler as a handler, stepped at each call after the first.

    Attach it to ITERATION_STARTED (``scheduler.attach(trainer)``): iteration ``n`` then uses the
    learning rate after ``n - 1`` steps, as ignite does. With ``use_legacy=True`` (for
    ITERATION_COMPLETED) it steps at every call, the first included.

    A new wrapper around a torch scheduler that has stepped (restored from a checkpoint of the
    torch scheduler alone; its ``last_epoch`` says so, or for a ``ChainedScheduler`` its
    children's) steps at its first call too, so the run goes on where it stopped. A
    torch scheduler saved after exactly one call has not stepped yet and resumes one step late:
    save the wrapper's ``state_dict`` as well, or save after more than one iteration.

    Args:
        lr_scheduler: any ``torch.optim.lr_scheduler.LRScheduler`` except ``ReduceLROnPlateau``
            (which needs a metric).
        save_history: record the learning rates in ``engine.state.param_history["lr"]``.
        use_legacy: step at every call.
    """

    def __init__(
        self, lr_scheduler: Any, save_history: bool = False, use_legacy: bool = False
    ) -> None:
        if not isinstance(lr_scheduler, _TorchLRScheduler) or isinstance(
            lr_scheduler, ReduceLROnPlateau
        ):
            raise TypeError(
                "Argument lr_scheduler should be a subclass of "
                f"torch.optim.lr_scheduler.LRScheduler (not ReduceLROnPlateau), "
                f"but given {type(lr_scheduler)}"
            )
        self.lr_scheduler: Any = lr_scheduler
        self._stepped: bool = False
        super().__init__(lr_scheduler.optimizer, "lr", save_history=save_history)
        if use_legacy:
            self.event_index = 1
        self._state_attrs += ["lr_scheduler"]

    def _check_state(self, state_dict: Any, where: str = "state_dict") -> None:
        super()._check_state(state_dict, where)
        # ignite's state may hold its own wrapper object here (CosineAnnealingWarmRestarts).
        if not isinstance(state_dict["lr_scheduler"], Mapping):
            raise TypeError(
                f"{where}['lr_scheduler'] should be the torch scheduler's state_dict, "
                f"but given {type(state_dict['lr_scheduler']).__name__}"
            )

    def __call__(self, engine: Any = None, name: str | None = None) -> None:
        # Called at every iteration: the attributes themselves, not the save_history property.
        # A fresh wrapper around a torch scheduler that has stepped already (restored from a
        # checkpoint of the torch scheduler alone) goes on from that step: the first call then
        # steps too, else the resumed run would repeat one learning rate.
        if self.event_index > 0 or _torch_steps(self.lr_scheduler) > 0:
            if self._stepped:
                self.lr_scheduler.step()
            else:
                with warnings.catch_warnings():
                    # Our first step comes before any optimizer.step() only when nothing trains
                    # (a dry run, simulate_values); torch's warning about the order is moot then.
                    warnings.filterwarnings(
                        "ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before"
                    )
                    self.lr_scheduler.step()
                self._stepped = True
        if self._save_history:
            _record_history(
                engine,
                name or self.param_name,
                [group["lr"] for group in self.optimizer_param_groups],
            )
        self.event_index += 1

    def get_param(self) -> Any:
        """The current learning rate(s) of the optimizer (one value per group)."""
        lrs = [group["lr"] for group in self.optimizer_param_groups]
        return lrs[0] if len(lrs) == 1 else lrs

    @classmethod
    def simulate_values(  # type: ignore[override]
        cls, num_events: int, lr_scheduler: Any, **kwargs: Any
    ) -> list[list[Any]]:
        """``[[event_index, lr of each group...], ...]``; ``lr_scheduler`` and its optimizer are
        restored afterwards."""
        if not isinstance(lr_scheduler, _TorchLRScheduler):
            raise TypeError(
                "Argument lr_scheduler should be a subclass of torch.optim.lr_scheduler.LRScheduler, "
                f"but given {type(lr_scheduler)}"
            )
        saved_scheduler = deepcopy(lr_scheduler.state_dict())
        saved_optimizer = deepcopy(lr_scheduler.optimizer.state_dict())
        try:
            return _simulated_values(cls(lr_scheduler, save_history=False, **kwargs), num_events)
        finally:
            lr_scheduler.load_state_dict(saved_scheduler)
            lr_scheduler.optimizer.load_state_dict(saved_optimizer)


class ParamGroupScheduler:
    """Several schedulers (typically one per param group) called as one."""

    def __init__(
        self,
        schedulers: list[ParamScheduler],
        names: list[str] | None = None,
        save_history: bool = False,
    ) -> None:
        if not isinstance(schedulers, Sequence):
            raise TypeError(f"Argument schedulers should be a list/tuple, but given {schedulers}")
        if not all(isinstance(s, ParamScheduler) for s in schedulers):
            raise ValueError(
                "Argument schedulers should be a list/tuple of parameter schedulers, "
                f"but given {schedulers}"
            )
        if names is None:
            names = [s.param_name for s in schedulers]
        # ignite's checks: TypeError for a names that is not a list/tuple, ValueError for one
        # that holds a non-str.
        if not isinstance(names, (list, tuple)):
            raise TypeError(f"Argument names should be a list/tuple, but given {names}")
        if not all(isinstance(n, str) for n in names):
            raise ValueError(
                "Argument names should be a list/tuple of parameter scheduler's names, "
                f"but given {names}"
            )
        if len(names) != len(schedulers):
            raise ValueError(f"{len(schedulers)} should be equal {len(names)}")
        self.schedulers: list[ParamScheduler] = list(schedulers)
        self.names: list[str] = list(names)
        for scheduler in self.schedulers:
            scheduler.save_history = save_history
        self.optimizer: list[Any] = [s.optimizer for s in self.schedulers]
        self.param_name: list[Any] = [s.param_name for s in self.schedulers]

    def attach(self, engine: Any, event: Any = Events.ITERATION_STARTED) -> None:
        engine.add_event_handler(event, self)

    def __call__(self, engine: Any = None, name: str | None = None) -> None:
        for scheduler, scheduler_name in zip(self.schedulers, self.names, strict=True):
            scheduler(engine, scheduler_name)

    @property
    def optimizer_param_groups(self) -> list[dict[str, Any]]:
        return [group for s in self.schedulers for group in s.optimizer_param_groups]

    @property
    def save_history(self) -> bool:
        return self.schedulers[0].save_history

    @save_history.setter
    def save_history(self, value: bool) -> None:
        for scheduler in self.schedulers:
            scheduler.save_history = value

    def get_param(self) -> list[Any]:
        return [s.get_param() for s in self.schedulers]

    @classmethod
    def simulate_values(
        cls, num_events: int, schedulers: list[ParamScheduler], **kwargs: Any
    ) -> list[list[Any]]:
        """``[[event_index, value of scheduler 0, value of scheduler 1, ...], ...]`` as ignite's:
        each row holds the schedulers' ``get_param()`` before the event's call. The schedulers
        and their optimizers are restored afterwards; ``kwargs`` go to the constructor."""
        saved = [deepcopy(s.state_dict()) for s in schedulers]
        optimizers = list({id(s.optimizer): s.optimizer for s in schedulers}.values())
        saved_optimizers = [deepcopy(o.state_dict()) for o in optimizers]
        history = [s.save_history for s in schedulers]
        try:
            scheduler = cls(schedulers=schedulers, **kwargs)
            values = []
            for index in range(num_events):
                values.append([index] + [s.get_param() for s in schedulers])
                scheduler(None)
            return values
        finally:
            for s, state, flag in zip(schedulers, saved, history, strict=True):
                s.load_state_dict(state)
                s.save_history = flag
            for o, o_state in zip(optimizers, saved_optimizers, strict=True):
                o.load_state_dict(o_state)

    def state_dict(self) -> dict[str, Any]:
        return OrderedDict(
            [
                (
                    "schedulers",
                    [(n, s.state_dict()) for n, s in zip(self.names, self.schedulers, strict=True)],
                )
            ]
        )

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load ``state_dict`` after checking all of it, every scheduler's state included: a bad
        one raises ``TypeError`` or ``ValueError`` naming the key, and changes nothing."""
        self._check_state(state_dict)
        self._assign_state(state_dict)

    def _check_state(self, state_dict: Any, where: str = "state_dict") -> None:
        _check_keys(state_dict, ["schedulers"], where)
        entries = state_dict["schedulers"]
        if not isinstance(entries, (list, tuple)):
            raise TypeError(
                f"{where}['schedulers'] should be a list of (name, state_dict) pairs, "
                f"but given {type(entries).__name__}"
            )
        if len(entries) != len(self.schedulers):
            raise ValueError(
                f"Input state_dict contains {len(entries)} state_dicts of param group "
                f"schedulers, but {len(self.schedulers)} needed ({where}['schedulers'])"
            )
        for index, (required, scheduler, entry) in enumerate(
            zip(self.names, self.schedulers, entries, strict=True)
        ):
            entry_where = f"{where}['schedulers'][{index}]"
            if not isinstance(entry, (list, tuple)) or len(entry) != 2:
                raise TypeError(
                    f"{entry_where} should be a (name, state_dict) pair, but given {entry!r}"
                )
            name, sub_state = entry
            if required != name:
                raise ValueError(
                    "Name of scheduler from input state dict does not correspond to required "
                    f"one, {name} vs {required} ({entry_where})"
                )
            scheduler._check_state(sub_state, f"{entry_where}[1]")

    def _assign_state(self, state_dict: Mapping[str, Any]) -> None:
        for scheduler, (_name, sub_state) in zip(
            self.schedulers, state_dict["schedulers"], strict=True
        ):
            scheduler._assign_state(sub_state)


class ConcatScheduler(ParamScheduler):
    """Runs ``schedulers[0]`` for ``durations[0]`` events, then ``schedulers[1]``, ...; the last
    one runs for ever. All must drive the same optimizer and parameter."""

    def __init__(
        self, schedulers: list[Any], durations: list[int], save_history: bool = False
    ) -> None:
        if not isinstance(schedulers, Sequence):
            raise TypeError(f"Argument schedulers should be a sequence, but given {schedulers}")
        if len(schedulers) < 2:
            raise ValueError(
                "Argument schedulers should be of more than one parameter schedulers, "
                f"but given {schedulers}"
            )
        if not isinstance(durations, (list, tuple)):
            raise TypeError(f"Argument durations should be list/tuple, but given {durations}")
        if not all(isinstance(t, numbers.Integral) and t >= 0 for t in durations):
            raise ValueError(
                f"Argument durations should be list/tuple of integers >= 0, but given {durations}"
            )
        if len(schedulers) != len(durations) + 1:
            raise ValueError(
                "Incorrect number schedulers or duration values, "
                f"given {len(schedulers)} and {len(durations)}"
            )
        for index, scheduler in enumerate(schedulers):
            if not isinstance(scheduler, (ParamScheduler, ParamGroupScheduler)):
                raise TypeError(
                    f"Value at index {index} of schedulers should be a parameter scheduler, "
                    f"but given {type(scheduler)}"
                )
        optimizers = {
            id(o)
            for s in schedulers
            for o in (s.optimizer if isinstance(s.optimizer, list) else [s.optimizer])
        }
        if len(optimizers) != 1:
            raise ValueError("schedulers should be related to same optimizer")
        names = {
            n
            for s in schedulers
            for n in (s.param_name if isinstance(s.param_name, list) else [s.param_name])
        }
        if len(names) != 1:
            raise ValueError("schedulers should be related to same param_name")
        first = schedulers[0]
        optimizer = first.optimizer[0] if isinstance(first.optimizer, list) else first.optimizer
        self.schedulers: list[Any] = list(schedulers)
        self.durations: list[int] = list(durations)
        for scheduler in self.schedulers:
            scheduler.save_history = save_history
        super().__init__(optimizer, names.pop(), save_history=save_history)
        self._scheduler_index: int = 0
        self._current_scheduler: Any = None
        self._current_duration: int = 0
        self._setup_scheduler()
        self._state_attrs += ["_current_duration", "durations", "_scheduler_index"]

    def _setup_scheduler(self) -> None:
        self._current_scheduler = self.schedulers[self._scheduler_index]
        if self._scheduler_index < len(self.durations):
            self._current_duration = self.durations[self._scheduler_index]
        else:
            self._current_duration = -1

    def __call__(self, engine: Any = None, name: str | None = None) -> None:
        while self._current_duration == 0:
            self._scheduler_index += 1
            self._setup_scheduler()
        self._current_scheduler(engine, name)
        self._current_duration -= 1
        # No event_index += 1: ignite's ConcatScheduler leaves its own event_index at 0 (the
        # children count the events), so the state_dicts are the same.

    @property
    def optimizer_param_groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self._current_scheduler.optimizer_param_groups
        return groups

    @property
    def save_history(self) -> bool:
        return self._save_history

    @save_history.setter
    def save_history(self, value: bool) -> None:
        self._save_history = value
        for scheduler in getattr(self, "schedulers", []):
            scheduler.save_history = value

    def get_param(self) -> Any:
        return self._current_scheduler.get_param()

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["schedulers"] = [s.state_dict() for s in self.schedulers]
        return state

    def _check_state(self, state_dict: Any, where: str = "state_dict") -> None:
        _check_keys(state_dict, ["schedulers"], where)
        super()._check_state(state_dict, where)
        sub_states = state_dict["schedulers"]
        if not isinstance(sub_states, (list, tuple)):
            raise TypeError(
                f"{where}['schedulers'] should be a list of state_dicts, "
                f"but given {type(sub_states).__name__}"
            )
        if len(sub_states) != len(self.schedulers):
            raise ValueError(
                f"Input state_dict contains {len(sub_states)} state_dicts of concatenated "
                f"schedulers, but {len(self.schedulers)} needed ({where}['schedulers'])"
            )
        for index, (scheduler, sub_state) in enumerate(
            zip(self.schedulers, sub_states, strict=True)
        ):
            scheduler._check_state(sub_state, f"{where}['schedulers'][{index}]")
        durations = _check_list(state_dict, "durations", where, len(self.durations))
        if not all(_is_integer(d) and d >= 0 for d in durations):
            raise ValueError(
                f"{where}['durations'] should be integers >= 0, but given {durations!r}"
            )
        index = _check_int(state_dict, "_scheduler_index", where)
        if index >= len(self.schedulers):
            raise ValueError(
                f"{where}['_scheduler_index'] should be below the number of schedulers "
                f"({len(self.schedulers)}), but given {index}"
            )
        # The last scheduler counts down from -1 for ever; the others from their duration to 0.
        current = _check_int(state_dict, "_current_duration", where, minimum=None)
        if index == len(durations) and current >= 0:
            raise ValueError(
                f"{where}['_current_duration'] should be negative while the last scheduler "
                f"runs, but given {current}"
            )
        if index < len(durations) and not 0 <= current <= durations[index]:
            raise ValueError(
                f"{where}['_current_duration'] should be between 0 and the duration "
                f"{durations[index]} of scheduler {index}, but given {current}"
            )

    def _assign_state(self, state_dict: Mapping[str, Any]) -> None:
        for scheduler, sub_state in zip(self.schedulers, state_dict["schedulers"], strict=True):
            scheduler._assign_state(sub_state)
        super()._assign_state(state_dict)
        self._current_scheduler = self.schedulers[self._scheduler_index]

    @classmethod
    def simulate_values(  # type: ignore[override]
        cls,
        num_events: int,
        schedulers: list[Any],
        durations: list[int],
        param_names: list[str] | tuple[str, ...] | None = None,
    ) -> list[list[Any]]:
        """``[[event_index, value of each group...], ...]``, the values of each of
        ``param_names`` (default: the schedulers' parameter) in turn; schedulers and optimizer
        are restored afterwards."""
        if param_names is not None:
            if not isinstance(param_names, (list, tuple)):
                raise TypeError(
                    f"Argument param_names should be list or tuple, but given {type(param_names)}"
                )
            if not all(isinstance(item, str) for item in param_names):
                raise ValueError(
                    "Argument param_names should be list or tuple of strings, "
                    f"but given {param_names}"
                )
        saved = [deepcopy(s.state_dict()) for s in schedulers]
        first = schedulers[0]
        optimizer = first.optimizer[0] if isinstance(first.optimizer, list) else first.optimizer
        saved_optimizer = deepcopy(optimizer.state_dict())
        history = [s.save_history for s in schedulers]
        try:
            scheduler = cls(schedulers=schedulers, durations=durations, save_history=False)
            return _simulated_values(scheduler, num_events, param_names)
        finally:
            for s, state, flag in zip(schedulers, saved, history, strict=True):
                s.load_state_dict(state)
                s.save_history = flag
            optimizer.load_state_dict(saved_optimizer)


def create_lr_scheduler_with_warmup(
    lr_scheduler: Any,
    warmup_start_value: float,
    warmup_duration: int,
    warmup_end_value: float | None = None,
    save_history: bool = False,
    output_simulated_values: list[Any] | None = None,
) -> ConcatScheduler:
    """A linear warm-up from ``warmup_start_value`` to ``warmup_end_value`` (default: each
    group's current lr) over ``warmup_duration`` events, then ``lr_scheduler`` (a torch scheduler
    or an ember :class:`ParamScheduler`, e.g. :class:`CosineAnnealingScheduler`).

    The values are ignite's: if the scheduler's first value differs from ``warmup_end_value``,
    one more event sets it before the scheduler goes on; if it equals it, the warm-up is one
    event shorter so the value is not repeated.
    """
    if not isinstance(lr_scheduler, (ParamScheduler, _TorchLRScheduler)):
        raise TypeError(
            "Argument lr_scheduler should be a subclass of torch.optim.lr_scheduler.LRScheduler "
            f"or ParamScheduler, but given {type(lr_scheduler)}"
        )
    if not isinstance(warmup_duration, numbers.Integral) or isinstance(warmup_duration, bool):
        raise TypeError(f"Argument warmup_duration should be integer, but given {warmup_duration}")
    if warmup_duration < 2:
        raise ValueError(
            f"Argument warmup_duration should be at least 2 events, but given {warmup_duration}"
        )
    if isinstance(lr_scheduler, _TorchLRScheduler):
        # After the warm-up the torch scheduler's first call steps: its initial value is the
        # warm-up's last (or the extra event's) value.
        after: ParamScheduler = LRScheduler(
            lr_scheduler, save_history=save_history, use_legacy=True
        )
        is_torch = True
    else:
        after = lr_scheduler
        is_torch = False
    optimizer = lr_scheduler.optimizer
    warmups: list[ParamScheduler] = []
    milestones: list[tuple[int, float]] = []
    for index, group in enumerate(optimizer.param_groups):
        end_value = group["lr"] if warmup_end_value is None else warmup_end_value
        milestones = [(0, warmup_start_value), (warmup_duration - 1, end_value)]
        if is_torch:
            initial = group["lr"]
            if initial != end_value:
                milestones.append((warmup_duration, initial))
        else:
            initial = after.get_param()
            if isinstance(initial, list):
                initial = initial[index]
            if initial == end_value:
                if warmup_duration > 2:
                    step = (end_value - warmup_start_value) / (warmup_duration - 1)
                    milestones[-1] = (warmup_duration - 2, end_value - step)
                else:
                    milestones.pop(-1)
        warmups.append(
            PiecewiseLinear(
                optimizer,
                "lr",
                milestones_values=milestones,
                param_group_index=index,
                save_history=save_history,
            )
        )
    warmup = ParamGroupScheduler(warmups, save_history=save_history)
    schedulers: list[Any] = [warmup, after]
    durations = [milestones[-1][0] + 1]
    combined = ConcatScheduler(schedulers, durations=durations, save_history=save_history)
    if output_simulated_values is not None:
        if not isinstance(output_simulated_values, list):
            raise TypeError(
                "Argument output_simulated_values should be a list of None, e.g. `[None] * 100`, "
                f"but given {type(output_simulated_values)}."
            )
        simulated = ConcatScheduler.simulate_values(
            len(output_simulated_values), schedulers=schedulers, durations=durations
        )
        output_simulated_values[:] = simulated
    return combined
