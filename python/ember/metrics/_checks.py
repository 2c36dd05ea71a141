"""Input checks shared by the metrics: every failure names the metric and what is wrong.

Shape and dtype checks read only a tensor's metadata and run at every update. Checks of the
data's *values* (0s and 1s for binary input, class indices in range) would read the data on the
host: they run on the device instead (:class:`ValueChecks`), on the first update after each
``reset()`` (``check_values="first"``, the default) or on every update (``"every"``), and their
outcome is read together with the metric's value at ``compute()``, in the same host read.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "CHECK_VALUES",
    "ValueChecks",
    "as_pair",
    "check_values_mode",
    "collected_checks",
    "is_integer_dtype",
    "read_collected",
    "read_number",
    "shape_of",
]

CHECK_VALUES = ("first", "every")


def shape_of(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(tensor.shape)


def is_integer_dtype(dtype: torch.dtype) -> bool:
    return not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool


def check_values_mode(name: str, mode: Any) -> str:
    if not isinstance(mode, str) or mode not in CHECK_VALUES:
        raise ValueError(f"{name}: check_values should be 'first' or 'every', got {mode!r}")
    return mode


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


@dataclass
class _Check:
    """One value check run on the device: ``failed`` (a 0-d bool tensor) and what to say.
    ``ranks``: the outcome of every rank's checks, from :meth:`ValueChecks.rank_flags` summed
    over the ranks (:meth:`ValueChecks.note_ranks`), not a check of this rank's data."""

    failed: torch.Tensor
    message: Callable[[], str]
    ranks: bool = False


class ValueChecks:
    """Value checks of one metric since its last reset, run on the device, read at compute."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._pending: list[_Check] = []

    def clear(self) -> None:
        self._pending.clear()

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def binary(self, label: str, tensor: torch.Tensor, kind: str) -> None:
        """``tensor`` holds only 0s and 1s (any dtype)."""
        if tensor.dtype == torch.bool or tensor.numel() == 0:
            return
        flat = tensor.reshape(-1)
        bad = (flat != 0) & (flat != 1)
        # The first bad value, found on the device (indexing with a tensor would read it).
        example = flat.index_select(0, bad.to(torch.uint8).argmax().reshape(1))
        hint = " (threshold or round scores first, e.g. (y_pred > 0.5).long())"

        def message() -> str:
            value = example.item()
            return (
                f"{self._name}: for {kind} input, {label} must contain only 0s and 1s, got the "
                f"value {value!r}{hint if label == 'y_pred' else ''}"
            )

        self._pending.append(_Check(bad.any(), message))

    def class_indices(self, y: torch.Tensor, num_classes: int) -> None:
        """``y`` holds class indices in ``[0, num_classes)``."""
        if y.numel() == 0:
            return
        low, high = torch.aminmax(y)

        def message() -> str:
            return (
                f"{self._name}: y holds class indices outside [0, {num_classes}): min "
                f"{low.item()}, max {high.item()}"
            )

        self._pending.append(_Check((low < 0) | (high >= num_classes), message))

    def rank_flags(
        self, rank: int, world_size: int, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """This rank's outcome for the sum over the ranks at compute(), without a host read:
        ``world_size`` zeros, 1 at ``rank`` when one of its pending checks failed.

        Under torch.distributed a check that fails on one rank must fail ``compute()`` on every
        rank, at the same point: a rank that raised alone would leave the others with a value
        without its data, or waiting for it in the next collective until the group's timeout.
        The flags travel in the all_reduce of the accumulators (no collective of their own);
        :meth:`note_ranks` queues their sum as one more check.
        """
        own = [check for check in self._pending if not check.ranks]
        self._pending[:] = own  # the outcome of an earlier compute's sum is replaced
        if not own:
            return torch.zeros(world_size, dtype=dtype, device=device)
        flags = torch.zeros(world_size, dtype=dtype, device=own[0].failed.device)
        flags[rank] = _any_failed(own)
        return flags

    def note_ranks(self, summed: torch.Tensor) -> None:
        """Queue :meth:`rank_flags` summed over the ranks as a check, after this rank's own:
        a rank whose check failed raises its own error, the others one that names it."""

        def message() -> str:
            failed = [str(rank) for rank, flag in enumerate(summed.tolist()) if flag]
            ranks = f"rank {failed[0]}" if len(failed) == 1 else f"ranks {', '.join(failed)}"
            return f"{self._name}: the value check failed on {ranks}"

        self._pending.append(_Check(summed.any(), message, ranks=True))

    def count(self, failures: torch.Tensor, message: str) -> None:
        """``failures`` (a device count) is 0."""
        self._pending.append(_Check(failures > 0, lambda: message))

    def read(self, value: torch.Tensor | None = None) -> Any:
        """``value.item()`` (``None`` without a value) after the pending checks, in one host
        read; raises the first failed check's ``ValueError``.

        Without a value, inside :func:`collected_checks`, the checks are left to the collector
        (and stay pending here too): its read comes with the value computed from this one.
        """
        if value is None and _collectors:
            _collectors[-1].extend(self._pending)
            return None
        result = _read(self._pending, value)
        self._pending.clear()
        return result

    def read_count(self, count: torch.Tensor) -> Any:
        """:meth:`read` of a count, a tensor that is never negative: a failed check comes back
        as -1 in the same host read, one device op where a NaN marker takes two (the count
        converted to float64, then selected)."""
        checks = self._pending
        if not checks:
            return count.item()
        packed = torch.where(_any_failed(checks), -1, count).item()
        if packed < 0:
            _raise_first_failure(checks)  # returns when none failed: the count itself is < 0
            packed = count.item()
        checks.clear()
        return packed


_collectors: list[list[_Check]] = []


@contextmanager
def collected_checks() -> Iterator[list[_Check]]:
    """Within, :meth:`ValueChecks.read` without a value hands its checks to the yielded list,
    for :func:`read_number` or :func:`read_collected` (``MetricsLambda.compute``)."""
    collector: list[_Check] = []
    _collectors.append(collector)
    try:
        yield collector
    finally:
        _collectors.pop()


def read_number(value: torch.Tensor) -> float:
    """``value.item()``, with the checks collected so far (in one host read)."""
    collector = _collectors[-1] if _collectors else []
    result: float = _read(collector, value)
    collector.clear()
    return result


def read_collected(collector: list[_Check]) -> None:
    """Read the checks collected and not read yet with a value; inside an outer collection
    (a MetricsLambda of MetricsLambdas), hand them to it instead."""
    if len(_collectors) > 1 and _collectors[-1] is collector:
        _collectors[-2].extend(collector)
    else:
        _read(collector, None)
    collector.clear()


def _read(checks: list[_Check], value: torch.Tensor | None) -> Any:
    if not checks:
        return None if value is None else value.item()
    failed = _any_failed(checks)
    if value is None:
        if bool(failed):
            _raise_first_failure(checks)
        return None
    packed = torch.where(failed, math.nan, value.to(torch.float64)).item()
    if math.isnan(packed):
        _raise_first_failure(checks)  # returns when none failed: the value itself is NaN
        return value.item()
    # The value's own type, as value.item() gives it (a count or an index below 2**53, which
    # float64 holds exactly).
    if value.dtype == torch.bool:
        return bool(packed)
    if not (value.dtype.is_floating_point or value.dtype.is_complex):
        return int(packed)
    return packed


def _any_failed(checks: list[_Check]) -> torch.Tensor:
    """Whether any of ``checks`` (not empty) failed, as a 0-d bool tensor on the device."""
    if len(checks) == 1:
        return checks[0].failed
    return torch.stack([check.failed for check in checks]).any()


def _raise_first_failure(checks: list[_Check]) -> None:
    for check in checks:
        if bool(check.failed):
            raise ValueError(check.message())
