"""Counting host syncs: the moments the host waits for a tensor's value.

A host sync is a read of a tensor's value on the host: ``.item()``, ``float(t)``, ``bool(t)``,
``if t:``, ``t.tolist()`` on an accelerator, a copy from an accelerator to the CPU. On a GPU
each one stalls the host until the device has caught up. On the CPU nothing waits, but the
same reads happen, so counting them here tells what a GPU run would pay.

:class:`HostSyncCounter` is a ``TorchDispatchMode``: every aten operation passes through it while
it is active, and it counts the operations that hand a tensor's value to Python
(``aten._local_scalar_dense``, what every scalar read ends in; under ``torch.inference_mode``
the mode sees the composite ``aten.item``, ``aten.is_nonzero`` for ``bool()``, instead;
``aten.equal``, which returns a Python bool) and the copies from a non-CPU tensor to the CPU.
It also counts the operations whose output size depends on the data (``nonzero``,
``masked_select``, ``unique``, ``repeat_interleave``, indexing with a boolean mask, ``bincount``
off the CPU), which make the host wait for a CUDA device to know the size; they are counted on
any device (except ``bincount``: the metrics use it on the CPU alone), so a CPU run counts what
a GPU run would pay. Each read counts once: while the mode handles an operation, the operations inside it do not
reach it. The count is deterministic: it depends on what the code does, not on timing. It
slows every operation, so never time code while counting.

The one counter of the tests (``from syncs import HostSyncCounter``) and of the benchmarks
(``benchmarks/stack.py``, ``benchmarks/metric_update.py``). ember's ``Profiler`` counts in a
run by a cheaper kernel override (``ember.engine._syncs``).
"""

from __future__ import annotations

import traceback
from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["HostSyncCounter"]

_READS = frozenset(
    {
        torch.ops.aten._local_scalar_dense.default,
        torch.ops.aten.item.default,
        torch.ops.aten.is_nonzero.default,
        torch.ops.aten.equal.default,
    }
)
_COPIES = (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default)
_SIZE_FROM_DATA = frozenset(
    {
        "aten::nonzero",
        "aten::masked_select",
        "aten::_unique2",
        "aten::unique_dim",
        "aten::unique_consecutive",
        "aten::repeat_interleave",
    }
)
_INDEXING = frozenset({"aten::index", "aten::index_put", "aten::index_put_"})


def _sync_name(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The name the counter records when ``func(*args, **kwargs)`` makes the host wait."""
    if func in _READS:
        return str(func._schema.name)
    name = func._schema.name
    if name in _SIZE_FROM_DATA:
        return str(name)
    if name == "aten::bincount" and args[0].device.type != "cpu":
        return "aten::bincount"
    if name in _INDEXING and _has_boolean_index(args):
        return f"{name} (boolean mask)"
    if _copies_to_host(func, args, kwargs):
        return f"{name} (to the CPU)"
    return None


def _has_boolean_index(args: tuple[Any, ...]) -> bool:
    indices = args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else ()
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)


def _copies_to_host(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether ``func(*args, **kwargs)`` copies a non-CPU tensor into CPU memory."""
    if func not in _COPIES or not args:
        return False
    if func is torch.ops.aten.copy_.default:  # copy_(destination, source)
        destination, source = args[0], args[1]
        return destination.device.type == "cpu" and source.device.type != "cpu"
    source = args[0]
    target = kwargs.get("device")
    return source.device.type != "cpu" and target is not None and torch.device(target).type == "cpu"


class HostSyncCounter(TorchDispatchMode):
    """Counts host syncs while active (``with HostSyncCounter() as counter: ...``).

    Attributes:
        count: the number of syncs counted so far.
        names: the operations counted, in order (``"aten::_local_scalar_dense"``, ...).
        sites: with ``record_sites=True``, how many syncs each line of code outside torch caused
            (``"file:line in function"``), to find where they come from.
    """

    def __init__(self, record_sites: bool = False) -> None:
        super().__init__()
        self.names: list[str] = []
        self.record_sites = record_sites
        self.sites: Counter[str] = Counter()

    @property
    def count(self) -> int:
        """How many host syncs happened while the counter was active."""
        return len(self.names)

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        name = _sync_name(func, args, kwargs)
        if name is not None:
            self.names.append(name)
            if self.record_sites:
                self.sites[_caller_outside_torch()] += 1
        return func(*args, **kwargs)


def _caller_outside_torch() -> str:
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "/torch/" not in frame.filename and not frame.filename.endswith("syncs.py"):
            return f"{frame.filename}:{frame.lineno} in {frame.name}"
    return "<torch>"
