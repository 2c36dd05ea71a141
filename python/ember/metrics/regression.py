"""Regression metrics: mean squared error, its root, mean absolute error.

As in ignite, errors are summed over every element of a sample and averaged over samples (the
batch dimension): for targets of shape ``(N,)`` or ``(N, 1)`` this is the usual mean; for
``(N, D)`` it is the mean over samples of each sample's summed error (``D`` times
scikit-learn's ``multioutput="uniform_average"`` value).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ember.metrics._base import Kernel, _PairMetric
from ember.metrics._checks import as_pair, shape_of

__all__ = ["MeanAbsoluteError", "MeanSquaredError", "RootMeanSquaredError"]


class _ErrorSum(_PairMetric):
    """Mean over samples of the elementwise error of ``y_pred - y`` summed over a sample."""

    _state_attrs = ("_sum_of_errors", "_num_examples")
    _accumulator_attrs = ("_sum_of_errors",)
    _summed_error: Callable[[torch.Tensor], torch.Tensor]  # 1-d differences -> summed error

    def reset(self) -> None:
        self._sum_of_errors = torch.tensor(0.0, dtype=self._double_dtype, device=self._device)
        self._num_examples = 0
        super().reset()

    def _prepare(self, output: Any) -> Kernel:
        name = self._name
        y_pred, y = as_pair(name, output)
        for label, value in (("y_pred", y_pred), ("y", y)):
            if value.dtype == torch.bool:
                raise TypeError(f"{name}: {label} should hold numbers, got dtype bool")
        reshape = y_pred.shape != y.shape
        # (N, 1) against (N,), either way round, is a common and harmless mismatch.
        if reshape and not (
            shape_of(y_pred) == (*shape_of(y), 1) or shape_of(y) == (*shape_of(y_pred), 1)
        ):
            raise ValueError(
                f"{name}: y_pred and y must have the same shape, got y_pred of shape "
                f"{shape_of(y_pred)} and y of shape {shape_of(y)}"
            )
        # The difference in float64 (as the accumulator): float32 data's errors come out
        # exact; one fused op then reduces it (a dot product, a 1-norm).
        summed_error, move = type(self)._summed_error, y_pred.device != self._device
        convert = y_pred.dtype != self._double_dtype
        # .double() / .float(): the quickest call for the conversion
        widen = torch.Tensor.double if self._double_dtype == torch.float64 else torch.Tensor.float

        def accumulate(y_pred: torch.Tensor, y: torch.Tensor) -> None:
            if reshape:
                y = y.reshape(y_pred.shape)
            difference = (widen(y_pred) if convert else y_pred) - y
            if difference.dim() != 1:
                difference = difference.reshape(-1)
            errors = summed_error(difference)
            self._sum_of_errors += errors.to(self._device) if move else errors
            self._num_examples += y.shape[0]

        return accumulate

    def compute(self) -> float:
        return self._ratio_over_ranks(self._sum_of_errors, self._num_examples)


class MeanSquaredError(_ErrorSum):
    """Mean over samples of ``sum((y_pred - y) ** 2)``."""

    @staticmethod
    def _summed_error(difference: torch.Tensor) -> torch.Tensor:
        return torch.dot(difference, difference)


class RootMeanSquaredError(MeanSquaredError):
    """Square root of :class:`MeanSquaredError`."""

    def compute(self) -> float:
        return math.sqrt(super().compute())


class MeanAbsoluteError(_ErrorSum):
    """Mean over samples of ``sum(abs(y_pred - y))``."""

    @staticmethod
    def _summed_error(difference: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(difference, 1)
