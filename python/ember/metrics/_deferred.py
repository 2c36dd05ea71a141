"""Metric values that stay on the device until somebody reads them.

A metric stored at every iteration (``RunningAverage``) would make the host wait for the device
at every iteration if it converted its tensor to a Python number there. Instead it stores a
:class:`DeferredValue` (the tensor, a snapshot) in ``engine.state.metrics``, which is then a
:class:`DeferredMetrics`: a ``dict`` whose reads (``[]``, ``get``, iteration over values and
items, ``copy``, ``==``, ``repr``, pickling, ``dict(...)``, ``{**...}``) turn a deferred entry
into the number (or CPU tensor) that an eager metric would have stored. Nobody reads: no sync.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, Sized, ValuesView
from types import MappingProxyType
from typing import Any, Protocol

import torch

__all__ = [
    "DeferredMetrics",
    "DeferredValue",
    "GrowingLazyTensor",
    "LazyTensor",
    "LiveValue",
    "as_stored",
    "deferred_metrics",
]


class LazyTensor(Protocol):
    """A value computed on the device only when asked for: ``tensor_at(count)``."""

    def tensor_at(self, count: int) -> torch.Tensor: ...


def as_stored(tensor: torch.Tensor) -> Any:
    """What ``Metric.completed`` stores for ``tensor``: a number for one element, else the tensor
    on the CPU (the host read a placeholder defers)."""
    return tensor.item() if tensor.numel() == 1 else tensor.cpu()


def _read(source: torch.Tensor | LazyTensor, count: int) -> Any:
    """``as_stored`` of ``source`` (its ``tensor_at(count)`` for a :class:`LazyTensor`), computed
    outside ``torch.inference_mode`` whoever reads: a read from a handler under inference mode
    would otherwise make the value (remembered, returned to every later read) and the lazy
    average's remembered partial sum inference tensors, which in-place ops and autograd refuse
    outside inference mode, where the eager metric stored an ordinary tensor."""
    if torch.is_inference_mode_enabled():
        with torch.inference_mode(False):
            return _read(source, count)
    tensor = source if isinstance(source, torch.Tensor) else source.tensor_at(count)
    return as_stored(tensor)


class DeferredValue:
    """A device tensor read on the host at the first request, then remembered.

    ``source`` is the tensor, or a :class:`LazyTensor` whose ``tensor_at(count)`` computes it
    at the first request (a running average whose latest values are not folded in yet). The
    tensor must not be modified in place afterwards: it is the value at the time it was stored
    (metrics build a new tensor at each update).
    """

    __slots__ = ("_count", "_source", "_value")

    def __init__(self, source: torch.Tensor | LazyTensor, count: int = 0) -> None:
        self._source: torch.Tensor | LazyTensor | None = source
        self._count = count
        self._value: Any = None

    def get(self) -> Any:
        """The value as ``Metric.completed`` stores it: a number for one element, else on CPU."""
        source = self._source
        if source is not None:
            self._value = _read(source, self._count)
            self._source = None
        return self._value

    def __repr__(self) -> str:
        return f"DeferredValue({self.get()!r})"


class GrowingLazyTensor(LazyTensor, Protocol):
    """A :class:`LazyTensor` whose ``values`` only grow: ``tensor_at(len(values))`` is the
    value after all of them (a running average fed by the compiled loop)."""

    @property
    def values(self) -> Sized: ...


class LiveValue:
    """The value of a :class:`GrowingLazyTensor` after the values it holds when read.

    Stored once, it follows the values appended since (by ``OutputSink``'s compiled path,
    without a Python call): a read sees the average through the latest one. A read of an
    unchanged count is remembered (one host sync per new count, none for a repeated read).
    :meth:`freeze` makes it a snapshot of the count it has then.
    """

    __slots__ = ("_count", "_frozen", "_source", "_value")

    def __init__(self, source: GrowingLazyTensor) -> None:
        self._source = source
        self._frozen: int | None = None
        self._count = -1  # the count _value was read at
        self._value: Any = None

    def get(self) -> Any:
        """The value as ``Metric.completed`` stores it: a number for one element, else on CPU."""
        count = len(self._source.values) if self._frozen is None else self._frozen
        if count != self._count:
            self._value = _read(self._source, count)
            self._count = count
        return self._value

    def freeze(self) -> None:
        """Keep the value of the values held now, whatever comes later."""
        if self._frozen is None:
            self._frozen = len(self._source.values)

    def __repr__(self) -> str:
        return f"LiveValue({self.get()!r})"


_PLACEHOLDERS = (DeferredValue, LiveValue)


def _resolved(value: Any) -> Any:
    return value.get() if type(value) in _PLACEHOLDERS else value


# The views of a DeferredMetrics read its values through __getitem__ (collections.abc's views);
# dict's own views are also reversible, have ``mapping`` and print as ``dict_values([...])``,
# which code that logs or walks ``state.metrics.items()`` relies on: these do the same.
class _DictViewExtras:
    __slots__ = ()
    _mapping: dict[str, Any]
    _printed_as: str

    @property
    def mapping(self) -> MappingProxyType[str, Any]:
        return MappingProxyType(self._mapping)

    def __repr__(self) -> str:
        return f"{self._printed_as}({list(self)!r})"  # type: ignore[call-overload]


class _ValuesView(_DictViewExtras, ValuesView[Any]):
    __slots__ = ()
    _printed_as = "dict_values"

    def __reversed__(self) -> Iterator[Any]:
        return (self._mapping[key] for key in reversed(self._mapping))


class _ItemsView(_DictViewExtras, ItemsView[str, Any]):
    __slots__ = ()
    _printed_as = "dict_items"

    def __reversed__(self) -> Iterator[tuple[str, Any]]:
        return ((key, self._mapping[key]) for key in reversed(self._mapping))


class DeferredMetrics(dict[str, Any]):
    """``engine.state.metrics`` holding some :class:`DeferredValue` or :class:`LiveValue`
    entries, read on access.

    Every public way of reading a value resolves it; only ``dict``'s own C functions called
    directly (``dict.__getitem__(metrics, key)``) see the placeholder.
    """

    def __getitem__(self, key: str) -> Any:
        return _resolved(dict.__getitem__(self, key))

    def get(self, key: str, default: Any = None) -> Any:
        return _resolved(dict.get(self, key, default))

    # Defining __iter__ makes dict(...), {**...} and dict.update(...) go through keys() and
    # __getitem__ instead of copying the raw entries.
    def __iter__(self) -> Iterator[str]:
        return dict.__iter__(self)

    def values(self) -> ValuesView[Any]:  # type: ignore[override]
        return _ValuesView(self)

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]
        return _ItemsView(self)

    def pop(self, key: str, *default: Any) -> Any:
        return _resolved(dict.pop(self, key, *default))

    def popitem(self) -> tuple[str, Any]:
        key, value = dict.popitem(self)
        return key, _resolved(value)

    def setdefault(self, key: str, default: Any = None) -> Any:
        return _resolved(dict.setdefault(self, key, default))

    def copy(self) -> dict[str, Any]:
        """A plain ``dict`` of the values."""
        return {key: self[key] for key in self}

    def __eq__(self, other: object) -> bool:
        return self.copy() == other

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None

    def __repr__(self) -> str:
        return repr(self.copy())

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled (torch.save of a state, copy.copy) as the plain dict of values.
        return (dict, (self.copy(),))


def deferred_metrics(state: Any) -> DeferredMetrics | None:
    """``state.metrics`` as a :class:`DeferredMetrics` (a plain ``dict`` is replaced by one with
    the same entries); ``None`` when the user put another mapping type there."""
    metrics = state.metrics
    if type(metrics) is DeferredMetrics:
        return metrics
    if type(metrics) is dict:
        deferred = DeferredMetrics(metrics)
        state.metrics = deferred
        return deferred
    return None
