"""The compiled loop: ``ember._core``, configured once with the classes and helpers it uses.

``configured_loop(Engine)`` configures it the first time: when ``ember/engine/__init__.py`` is
imported (unless ``EMBER_BACKEND=python``), so that a helper renamed on the Python side fails
there, not on a rare path of a run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ember.engine import _loop_support, _pyloop
from ember.engine._plan import RunPlan
from ember.engine._registry import FilteredHandler, HandlerRegistry, call_handlers
from ember.engine.events import CountFilter, Events
from ember.engine.state import State

try:
    from ember import _core
except ImportError as exc:
    exc.add_note(
        "ember._core, the compiled loop, is missing: did you forget to build? Install with "
        "`pip install .` from the source tree, or select the pure-Python loop with "
        "EMBER_BACKEND=python."
    )
    raise

# Order of csrc/config.hpp's EventId.
_EVENT_ORDER = (
    Events.STARTED,
    Events.EPOCH_STARTED,
    Events.GET_BATCH_STARTED,
    Events.GET_BATCH_COMPLETED,
    Events.DATALOADER_STOP_ITERATION,
    Events.ITERATION_STARTED,
    Events.ITERATION_COMPLETED,
    Events.EPOCH_COMPLETED,
    Events.COMPLETED,
    Events.EXCEPTION_RAISED,
    Events.TERMINATE,
    Events.TERMINATE_SINGLE_EPOCH,
    Events.INTERRUPT,
)


_configured_for: list[type[Any]] = []


def configured_loop(engine_cls: type[Any]) -> Callable[[Any, RunPlan], None]:
    """``_core.run_loop``, once ``_core`` knows the classes and helpers it works with."""
    if not _configured_for:
        _configure(engine_cls)
        _configured_for.append(engine_cls)
    return _core.run_loop


def _configure(engine_cls: type[Any]) -> None:
    _core.configure(
        _EVENT_ORDER,
        engine_cls,
        State,
        HandlerRegistry,
        FilteredHandler,
        CountFilter,
        RunPlan,
        _loop_support,
        call_handlers,
        _pyloop.run_loop,
    )
