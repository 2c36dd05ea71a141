"""The compiled loop: ``ember._core`` configured with the Python classes it works with."""

from __future__ import annotations

from ember.engine import _loop_support
from ember.engine._registry import FilteredHandler, HandlerRegistry
from ember.engine.engine import Engine
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

_core.configure(
    _EVENT_ORDER, Engine, State, HandlerRegistry, FilteredHandler, CountFilter, _loop_support
)

run_loop = _core.run_loop
