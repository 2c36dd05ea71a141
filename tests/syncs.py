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
Each read counts once: while the mode handles an operation, the operations inside it do not
reach it. The count is deterministic: it depends on what the code does, not on timing. It
slows every operation, so never time code while counting.

Used by the tests (``from syncs import HostSyncCounter``) and by ``benchmarks/stack.py``.
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
        sites: with ``record_sites=True``, how many syncs each line of code outside torch caused
            (``"file:line in function"``), to find where they come from.
    """

    def __init__(self, record_sites: bool = False) -> None:
        super().__init__()
        self.count = 0
        self.record_sites = record_sites
        self.sites: Counter[str] = Counter()

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func in _READS or _copies_to_host(func, args, kwargs):
            self.count += 1
            if self.record_sites:
                self.sites[_caller_outside_torch()] += 1
        return func(*args, **kwargs)


def _caller_outside_torch() -> str:
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "/torch/" not in frame.filename and not frame.filename.endswith("syncs.py"):
            return f"{frame.filename}:{frame.lineno} in {frame.name}"
    return "<torch>"
