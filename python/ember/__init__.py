"""ember: PyTorch-Ignite's Engine with its run loop compiled in C++."""

from __future__ import annotations

try:
    from ember._version import __version__
except ImportError:  # a source tree that was never built
    __version__ = "0+unknown"

__all__ = ["__version__"]
