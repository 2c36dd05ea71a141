"""Checks, at registration time, that a callable can take the arguments it will be called with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def check_signature(fn: Callable[..., Any], description: str, *args: Any, **kwargs: Any) -> None:
    """Raise ``ValueError`` unless ``fn(*args, **kwargs)`` binds to ``fn``'s signature.

    A filtered handler is checked through its original function (its ``_parent``). Callables
    without an inspectable signature (some C builtins) are accepted unchecked.
    """
    import inspect  # ~4 ms: paid at the first registration, not by `import ember.engine`

    parent = getattr(fn, "_parent", None)
    target = parent() if parent is not None else fn
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise ValueError(
            f"Error adding {fn} '{description}': takes parameters {list(signature.parameters)} "
            f"but will be called with {list(args) + list(kwargs)}({exc})."
        ) from None
