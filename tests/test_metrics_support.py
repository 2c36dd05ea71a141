"""Helpers (no tests) for the tests/test_metrics*.py files: random batches and an evaluator run."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode


def batch_sizes(count: int = 4) -> list[int]:
    """``count`` batch sizes between 1 and 16 (drawn from torch's global generator)."""
    return [int(n) for n in torch.randint(1, 17, (count,))]


def multiclass_batches(seed: int, num_classes: int = 4, count: int = 4) -> list[tuple[Any, Any]]:
    """Logits (N, C) and class indices (N,), of several batch sizes."""
    torch.manual_seed(seed)
    return [
        (torch.randn(n, num_classes), torch.randint(0, num_classes, (n,)))
        for n in batch_sizes(count)
    ]


def binary_batches(seed: int, count: int = 4) -> list[tuple[Any, Any]]:
    """0/1 predictions and targets of shape (N,)."""
    torch.manual_seed(seed)
    return [(torch.randint(0, 2, (n,)), torch.randint(0, 2, (n,))) for n in batch_sizes(count)]


def multilabel_batches(seed: int, num_labels: int = 4, count: int = 4) -> list[tuple[Any, Any]]:
    """0/1 predictions and targets of shape (N, L)."""
    torch.manual_seed(seed)
    return [
        (torch.randint(0, 2, (n, num_labels)), torch.randint(0, 2, (n, num_labels)))
        for n in batch_sizes(count)
    ]


def regression_batches(
    seed: int, shape: Sequence[int] = (), count: int = 4
) -> list[tuple[Any, Any]]:
    torch.manual_seed(seed)
    return [(torch.randn(n, *shape), torch.randn(n, *shape)) for n in batch_sizes(count)]


def joined(batches: Sequence[tuple[Any, Any]]) -> tuple[Any, Any]:
    """All ``y_pred`` and all ``y`` as two numpy arrays."""
    y_pred = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    return y_pred.numpy(), y.numpy()


def evaluate(
    make_engine: Callable[..., Any], metrics: Mapping[str, Any], data: Sequence[Any]
) -> dict[str, Any]:
    """Attach ``metrics`` (name -> metric) to an evaluator that outputs its batch, run it on
    ``data`` and return ``state.metrics``."""
    engine = make_engine(lambda engine, batch: batch)
    for name, metric in metrics.items():
        metric.attach(engine, name)
    return dict(engine.run(data).metrics)


# Ops that make the host wait for a CUDA device although they read no scalar on the CPU: their
# output size depends on the data (nonzero, masked_select, unique, bincount's length).
_SIZE_FROM_DATA = {
    "aten::nonzero",
    "aten::masked_select",
    "aten::_unique2",
    "aten::unique_dim",
    "aten::unique_consecutive",
    "aten::bincount",
    "aten::repeat_interleave",
}


class SyncCounter(TorchDispatchMode):
    """Counts host syncs while active: reads of a tensor's value on the host
    (``aten._local_scalar_dense``: ``.item()``, ``float(t)``, ``bool(t)``) and ops that would
    wait for a CUDA device (an output sized by the data, indexing with a boolean mask), on any
    device, so a CPU run counts what a GPU run would pay. ``names`` lists what was counted."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    @property
    def count(self) -> int:
        return len(self.names)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func._schema.name
        if name == "aten::_local_scalar_dense" or name in _SIZE_FROM_DATA:
            self.names.append(name)
        elif name in ("aten::index", "aten::index_put_", "aten::index_put") and any(
            isinstance(index, torch.Tensor) and index.dtype == torch.bool
            for index in (args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else ())
        ):
            self.names.append(f"{name} (boolean mask)")
        return func(*args, **(kwargs or {}))
