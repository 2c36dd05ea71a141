"""Regression metrics: mean squared error, its root, mean absolute error.

As in ignite, errors are summed over every element of a sample and averaged over samples (the
batch dimension): for targets of shape ``(N,)`` or ``(N, 1)`` this is the usual mean; for
``(N, D)`` it is the mean over samples of each sample's summed error (``D`` times
scikit-learn's ``multioutput="uniform_average"`` value).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any

import torch

from ember.metrics._base import Metric
from ember.metrics._checks import as_pair, shape_of

__all__ = ["MeanAbsoluteError", "MeanSquaredError", "RootMeanSquaredError"]


class _ErrorSum(Metric):
    """Mean over samples of the summed elementwise ``_error(y_pred - y)``."""

    _state_attrs = ("_sum_of_errors", "_num_examples")

    def reset(self) -> None:
        self._sum_of_errors = torch.tensor(0.0, dtype=self._double_dtype, device=self._device)
        self._num_examples = 0

    @abstractmethod
    def _error(self, difference: torch.Tensor) -> torch.Tensor:
        """The elementwise error of ``y_pred - y``."""

    def update(self, output: Any) -> None:
        name = self._name
        y_pred, y = as_pair(name, output)
        for label, value in (("y_pred", y_pred), ("y", y)):
            if value.dtype == torch.bool:
                raise TypeError(f"{name}: {label} should hold numbers, got dtype bool")
        if y_pred.shape != y.shape:
            # (N, 1) against (N,), either way round, is a common and harmless mismatch.
            if shape_of(y_pred) == (*shape_of(y), 1) or shape_of(y) == (*shape_of(y_pred), 1):
                y = y.reshape(y_pred.shape)
            else:
                raise ValueError(
                    f"{name}: y_pred and y must have the same shape, got y_pred of shape "
                    f"{shape_of(y_pred)} and y of shape {shape_of(y)}"
                )
        difference = y_pred.to(self._device, self._double_dtype) - y.to(
            self._device, self._double_dtype
        )
        self._sum_of_errors = self._sum_of_errors + self._error(difference).sum()
        self._num_examples += y.shape[0]

    def compute(self) -> float:
        return self._ratio_over_ranks(self._sum_of_errors, self._num_examples)


class MeanSquaredError(_ErrorSum):
    """Mean over samples of ``sum((y_pred - y) ** 2)``."""

    def _error(self, difference: torch.Tensor) -> torch.Tensor:
        return difference.square()


class RootMeanSquaredError(MeanSquaredError):
    """Square root of :class:`MeanSquaredError`."""

    def compute(self) -> float:
        return math.sqrt(super().compute())


class MeanAbsoluteError(_ErrorSum):
    """Mean over samples of ``sum(abs(y_pred - y))``."""

    def _error(self, difference: torch.Tensor) -> torch.Tensor:
        return difference.abs()
