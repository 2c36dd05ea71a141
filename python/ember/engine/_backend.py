"""Chooses the loop that runs ``Engine.run``: the compiled one or the pure-Python specification."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

BACKENDS = ("cpp", "python")


def backend_name(requested: str | None) -> str:
    """The constructor argument, else ``EMBER_BACKEND``, else ``"cpp"``."""
    name = requested if requested is not None else os.environ.get("EMBER_BACKEND", "cpp")
    if name not in BACKENDS:
        source = "backend" if requested is not None else "EMBER_BACKEND"
        raise ValueError(f"{source} should be one of {BACKENDS}, got {name!r}")
    return name


def select_loop(requested: str | None, engine_cls: type[Any]) -> Callable[[Any, Any], None]:
    """The loop function for ``Engine(backend=requested)``: ``run_loop(engine, plan)``.
    Imported here, on first use, so that the loops never import the engine module."""
    if backend_name(requested) == "python":
        from ember.engine._pyloop import run_loop

        return run_loop
    from ember.engine._compiled import configured_loop

    return configured_loop(engine_cls)
