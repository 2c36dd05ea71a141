"""Input checks shared by the metrics: every failure names the metric and what is wrong."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["as_pair", "is_integer_dtype", "require_binary", "shape_of"]


def shape_of(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(tensor.shape)


def is_integer_dtype(dtype: torch.dtype) -> bool:
    return not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool


def as_pair(name: str, output: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y_pred, y)`` from a metric's transformed output, both tensors with a batch dimension."""
    if not isinstance(output, (tuple, list)) or len(output) != 2:
        shown = (
            f"a {type(output).__name__} of length {len(output)}"
            if isinstance(output, (tuple, list))
            else f"{type(output).__name__}"
        )
        raise TypeError(
            f"{name}.update expects the output (y_pred, y) (use output_transform to select them "
            f"from the engine's output), got {shown}"
        )
    y_pred, y = output
    for label, value in (("y_pred", y_pred), ("y", y)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name}: {label} should be a torch.Tensor, got {type(value).__name__}")
        if value.is_complex():
            raise TypeError(f"{name}: {label} should hold real numbers, got dtype {value.dtype}")
        if value.ndim == 0:
            raise ValueError(
                f"{name}: {label} should have a batch dimension (shape (batch_size, ...)), "
                "got a 0-dimensional tensor"
            )
    if y_pred.shape[0] != y.shape[0]:
        raise ValueError(
            f"{name}: y_pred and y should have the same batch size, got y_pred of shape "
            f"{shape_of(y_pred)} and y of shape {shape_of(y)}"
        )
    return y_pred.detach(), y.detach()


def require_binary(name: str, label: str, tensor: torch.Tensor, kind: str) -> None:
    """Refuse anything but 0s and 1s (any dtype) in ``tensor``."""
    if tensor.dtype == torch.bool or tensor.numel() == 0:
        return
    bad = (tensor != 0) & (tensor != 1)
    if bool(bad.any()):
        example = tensor[bad].flatten()[0].item()
        hint = (
            " (threshold or round scores first, e.g. (y_pred > 0.5).long())"
            if (label == "y_pred")
            else ""
        )
        raise ValueError(
            f"{name}: for {kind} input, {label} must contain only 0s and 1s, got the value "
            f"{example!r}{hint}"
        )
