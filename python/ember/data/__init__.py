"""Data helpers for ember engines: ``prefetch`` moves the next batches to the device early."""

from __future__ import annotations

from ember.data._prefetch import Prefetcher, prefetch

__all__ = ["Prefetcher", "prefetch"]
