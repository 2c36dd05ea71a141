"""Count host syncs by dispatch: deterministic, for tests and benchmarks.

A host sync is a read of a tensor's value on the host (``aten._local_scalar_dense``: ``.item()``,
``float(t)``, ``bool(t)``, ``if t:``), or an op whose output size depends on the data
(``nonzero``, ``masked_select``, ``unique``, indexing with a boolean mask, ``bincount`` on a
device other than the CPU), which makes the host wait for a CUDA device. They are counted on
any device, so a CPU run counts what a GPU run would pay (except a copy to the CPU, which is
free there). ``bincount`` counts only off the CPU: the metrics use it on the CPU alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["SyncCounter"]

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


def _has_boolean_index(args: tuple[Any, ...]) -> bool:
    indices = args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else ()
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices)


class SyncCounter(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """``with SyncCounter() as syncs: ...`` then ``syncs.count`` and ``syncs.names``."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.names: list[str] = []

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
        name = func._schema.name
        off_cpu_bincount = name == "aten::bincount" and args[0].device.type != "cpu"
        if name == "aten::_local_scalar_dense" or name in _SIZE_FROM_DATA or off_cpu_bincount:
            self.names.append(name)
        elif name in _INDEXING and _has_boolean_index(args):
            self.names.append(f"{name} (boolean mask)")
        return func(*args, **(kwargs or {}))
