"""Sums of metric accumulators over the ranks, for ``Metric.compute()``.

A metric's value over the whole data set is its formula applied to the *sums* of every rank's
accumulators (counts, sums, confusion matrices): never an average of per-rank values.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from ember.distributed import _context
from ember.distributed._collectives import collective

__all__ = ["sum_over_ranks", "summed_as_integers"]


def summed_as_integers(value: Any) -> bool:
    """Whether ``value`` is summed in the integer buffer: an int (bools too) or a tensor of a
    dtype that is not floating."""
    return isinstance(value, int) or (
        isinstance(value, torch.Tensor) and not value.dtype.is_floating_point
    )


def _kind(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ("none",)
    if isinstance(value, torch.Tensor):
        integers = summed_as_integers(value)
        dtype_name = str(value.dtype).removeprefix("torch.")
        return ("tensor", tuple(value.shape), "int" if integers else "float", dtype_name)
    if isinstance(value, int):  # bools too
        return ("int",)
    if isinstance(value, float):
        return ("float",)
    raise TypeError(f"cannot sum a {type(value).__name__} over ranks")


def sum_over_ranks(
    name: str, values: Sequence[Any], device: torch.device | str = "cpu"
) -> tuple[Any, ...]:
    """``values`` (ints, floats, tensors or ``None``) summed over the ranks of the group.

    Returns new objects; the inputs are not modified. ``None`` stands for "nothing seen yet":
    it counts as zeros when other ranks hold a value, and stays ``None`` when no rank does.
    Tensors keep their dtype and device (a ``None`` that became a tensor is on ``device``).
    In a single process (no group, or a group of one) the values are returned as they are;
    in a process a launcher started as one of several, without a group, this raises
    :class:`~ember.distributed.GroupNotInitializedError`.
    """
    if not _context.is_initialized():
        _context.refuse_launched_process(f"{name}.compute()")
        return tuple(values)
    if dist.get_world_size() == 1:
        return tuple(values)
    kinds = [_kind(value) for value in values]
    everyone: list[Any] = [None] * dist.get_world_size()
    with collective(f"{name}.compute()"):
        dist.all_gather_object(everyone, kinds)

    # What each position is, agreed by every rank (they all see the same lists).
    # (plan, shape, the dtype of a tensor result where this rank holds None)
    plans: list[tuple[str, tuple[int, ...], torch.dtype | None]] = []
    for position in range(len(values)):
        seen = [rank_kinds[position] for rank_kinds in everyone]
        present = [kind for kind in seen if kind[0] != "none"]
        if not present:
            plans.append(("none", (), None))
            continue
        tensors = [kind for kind in present if kind[0] == "tensor"]
        shapes = {kind[1] for kind in tensors}
        if tensors:
            if len(shapes) > 1 or len(tensors) != len(present):
                shown = ", ".join(
                    f"rank {rank}: " + (f"shape {kind[1]}" if kind[0] == "tensor" else kind[0])
                    for rank, kind in enumerate(seen)
                )
                raise ValueError(
                    f"{name}: the ranks hold accumulators of different shapes ({shown}): they "
                    "saw different kinds of input (number of classes, value shape)"
                )
            floating = any(kind[2] == "float" for kind in tensors)
            # The other ranks' dtype: a rank that saw nothing answers like them.
            result_dtype = functools.reduce(
                torch.promote_types, (getattr(torch, kind[3]) for kind in tensors)
            )
            plans.append(
                ("tensor-float" if floating else "tensor-int", next(iter(shapes)), result_dtype)
            )
        else:
            floating = any(kind[0] == "float" for kind in present)
            plans.append(("float" if floating else "int", (), None))

    # One flat buffer per dtype: two collectives at most.
    target = _context.device()
    buffers: dict[torch.dtype, list[torch.Tensor]] = {torch.float64: [], torch.int64: []}
    slots: list[tuple[torch.dtype, int, int] | None] = []
    for value, (plan, shape, _) in zip(values, plans, strict=True):
        if plan == "none":
            slots.append(None)
            continue
        dtype = torch.float64 if plan in ("float", "tensor-float") else torch.int64
        if value is None:
            flat = torch.zeros(int(torch.Size(shape).numel()), dtype=dtype, device=target)
        else:
            flat = torch.as_tensor(value).detach().to(target, dtype).reshape(-1)
        start = sum(piece.numel() for piece in buffers[dtype])
        buffers[dtype].append(flat)
        slots.append((dtype, start, flat.numel()))
    totals: dict[torch.dtype, torch.Tensor] = {}
    for dtype, pieces in buffers.items():
        if pieces:
            buffer = torch.cat(pieces)
            with collective(f"{name}.compute()"):
                dist.all_reduce(buffer)
            totals[dtype] = buffer

    results: list[Any] = []
    for value, (plan, shape, result_dtype), slot in zip(values, plans, slots, strict=True):
        if slot is None:
            results.append(None)
            continue
        dtype, start, length = slot
        total = totals[dtype][start : start + length]
        if plan == "int":
            results.append(int(total.item()))
        elif plan == "float":
            results.append(float(total.item()))
        else:
            home_dtype = value.dtype if isinstance(value, torch.Tensor) else result_dtype
            home = value.device if isinstance(value, torch.Tensor) else torch.device(device)
            results.append(total.reshape(shape).to(device=home, dtype=home_dtype))
    return tuple(results)
