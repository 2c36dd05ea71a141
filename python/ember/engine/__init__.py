"""ember's Engine: ``from ember.engine import Engine, Events, State`` in place of ignite's."""

from __future__ import annotations

import contextlib
import os

from ember.engine.engine import Engine
from ember.engine.events import (
    CallableEventWithFilter,
    EventEnum,
    Events,
    EventsList,
    RemovableEventHandle,
)
from ember.engine.state import State

# Load the compiled loop now, so the first Engine costs nothing extra. If it is missing, the
# first Engine on the "cpp" backend raises the ImportError with a build note.
if os.environ.get("EMBER_BACKEND") != "python":
    with contextlib.suppress(ImportError):
        import ember.engine._compiled  # noqa: F401

__all__ = [
    "CallableEventWithFilter",
    "Engine",
    "EventEnum",
    "Events",
    "EventsList",
    "RemovableEventHandle",
    "State",
]
