"""Helpers (no tests) for the tests/test_metrics*.py files: random batches and an evaluator run."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch


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
