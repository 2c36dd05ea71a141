"""ember: PyTorch-Ignite's Engine with its run loop compiled in C++.

``import ember`` imports nothing else: ``ember.engine``, ``ember.handlers``, ``ember.metrics`` and
``ember.distributed`` are imported when first used as attributes, so ``import ember`` then
``ember.engine.Engine`` works and does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

try:
    from ember._version import __version__
except ImportError:  # a source tree that was never built
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from ember import distributed, engine, handlers, metrics
    from ember._ignite_patch import ignite_patched, patch_ignite

__all__ = [
    "__version__",
    "distributed",
    "engine",
    "handlers",
    "ignite_patched",
    "metrics",
    "patch_ignite",
]

_SUBMODULES = frozenset({"distributed", "engine", "handlers", "metrics"})
# The switch's module loads importlib's machinery (~14 ms): only when the switch is used.
_SWITCH = frozenset({"ignite_patched", "patch_ignite"})


def __getattr__(name: str) -> object:
    if name in _SUBMODULES:
        return importlib.import_module(f"ember.{name}")
    if name in _SWITCH:
        return getattr(importlib.import_module("ember._ignite_patch"), name)
    raise AttributeError(f"module 'ember' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
