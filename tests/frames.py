"""Counting the Python frames of chosen functions while a block runs (the compiled loop's fast
paths promise none per iteration)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import CodeType
from typing import Any


@contextmanager
def python_calls(*functions: Callable[..., Any]) -> Iterator[dict[str, int]]:
    """Counts the Python frames of ``functions`` while the block runs, by qualified name."""
    codes: dict[CodeType, str] = {f.__code__: f.__qualname__ for f in functions}
    counts = dict.fromkeys(codes.values(), 0)

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code in codes:
            counts[codes[frame.f_code]] += 1

    sys.setprofile(profile)
    try:
        yield counts
    finally:
        sys.setprofile(None)
