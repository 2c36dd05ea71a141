"""``TerminateOnNan``: stop training when the output holds a NaN or an infinity."""

from __future__ import annotations

import logging
import math
import numbers
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["TerminateOnNan"]


def _has_non_finite(value: Any) -> bool:
    """Whether ``value`` (a number, tensor, array, or nested tuple/list/dict of them) holds a NaN
    or an infinity. torch and numpy are only consulted if already imported."""
    if isinstance(value, (bool, numbers.Integral)):
        return False
    if isinstance(value, numbers.Real):
        return not math.isfinite(value)
    if isinstance(value, numbers.Complex):
        return not (math.isfinite(value.real) and math.isfinite(value.imag))
    if isinstance(value, (str, bytes)):
        return False
    if isinstance(value, Mapping):
        return any(_has_non_finite(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_non_finite(item) for item in value)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex():
            return not bool(torch.isfinite(value).all())
        return False
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, (numpy.ndarray, numpy.generic)):
        if numpy.issubdtype(value.dtype, numpy.inexact):
            return not bool(numpy.isfinite(value).all())
        return False
    return False


class TerminateOnNan:
    """Calls ``engine.terminate()`` when the output has a NaN or infinite value.

    Attach it to ITERATION_COMPLETED: ``trainer.add_event_handler(Events.ITERATION_COMPLETED,
    TerminateOnNan())``. The output may be a number, a tensor (or numpy array), or nested
    tuples, lists and dicts of them; strings and other objects are ignored.

    Args:
        output_transform: selects what to check from ``engine.state.output``.
    """

    def __init__(self, output_transform: Callable[[Any], Any] = lambda x: x) -> None:
        if not callable(output_transform):
            raise TypeError(f"output_transform should be callable, got {type(output_transform)}")
        self._output_transform = output_transform
        self.logger = logging.getLogger(f"{__name__}.{type(self).__name__}")

    def __call__(self, engine: Any) -> None:
        output = self._output_transform(engine.state.output)
        if _has_non_finite(output):
            self.logger.warning(
                "%s: Output '%s' contains NaN or Inf. Stop training", type(self).__name__, output
            )
            engine.terminate()
