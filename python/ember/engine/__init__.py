"""ember's Engine: ``from ember.engine import Engine, Events, State`` in place of ignite's."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ember.engine.engine import Engine
from ember.engine.events import (
    CallableEventWithFilter,
    EventEnum,
    Events,
    EventsList,
    RemovableEventHandle,
)
from ember.engine.state import State

if TYPE_CHECKING:  # what type checkers see; at run time these load on first use (torch)
    from ember.engine.deterministic import DeterministicEngine
    from ember.engine.supervised import create_supervised_evaluator, create_supervised_trainer

# Load and configure the compiled loop now, so the first Engine costs nothing extra and a
# helper the compiled loop calls that was renamed fails here. If the compiled module is
# missing, the first Engine on the "cpp" backend raises the ImportError with a build note.
if os.environ.get("EMBER_BACKEND") != "python":
    try:
        from ember.engine import _compiled
    except ImportError:
        pass
    else:
        _compiled.configured_loop(Engine)

__all__ = [
    "CallableEventWithFilter",
    "DeterministicEngine",
    "Engine",
    "EventEnum",
    "Events",
    "EventsList",
    "RemovableEventHandle",
    "State",
    "create_supervised_evaluator",
    "create_supervised_trainer",
]

# These need torch, which `import ember.engine` must not import: loaded on first use.
_NEEDS_TORCH = {
    "DeterministicEngine": "ember.engine.deterministic",
    "create_supervised_evaluator": "ember.engine.supervised",
    "create_supervised_trainer": "ember.engine.supervised",
}


def __getattr__(name: str) -> object:
    if name in _NEEDS_TORCH:
        import importlib

        return getattr(importlib.import_module(_NEEDS_TORCH[name]), name)
    raise AttributeError(f"module 'ember.engine' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
