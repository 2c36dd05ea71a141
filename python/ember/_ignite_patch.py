"""The switch that makes ``ignite.engine`` hand out ember's engine objects (``ember.patch_ignite``).

A finder at the front of ``sys.meta_path`` wraps the loaders of ignite's engine modules: each
module runs its own code first, then its public engine names are rebound to ember's objects,
before any other module can import them. Every ``from ignite.engine import Engine`` that runs
afterwards (in ignite's handlers, metrics and contrib modules, in MONAI, in a user's script)
binds ember's class, so ignite's ``isinstance`` checks and its ``EventsList`` tests accept ember's
engines and event lists.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
import types
from collections.abc import Sequence
from typing import Any

__all__ = ["ignite_patched", "patch_ignite"]

_EVENT_NAMES = (
    "CallableEventWithFilter",
    "EventEnum",
    "Events",
    "EventsList",
    "RemovableEventHandle",
    "State",
)
# Which names each of ignite's engine modules gets from ember, once its own code has run.
_REBOUND: dict[str, tuple[str, ...]] = {
    "ignite.engine.events": _EVENT_NAMES,
    "ignite.engine.engine": ("Engine", *_EVENT_NAMES),
    "ignite.engine": ("Engine", *_EVENT_NAMES),
}
# ember's Engine names its logger after this module, as ignite's does, under the switch.
IGNITE_ENGINE_MODULE = "ignite.engine.engine"

_lock = threading.Lock()


def _ember_objects() -> dict[str, Any]:
    import ember.engine

    return {name: getattr(ember.engine, name) for name in ("Engine", *_EVENT_NAMES)}


class _RebindingLoader(importlib.abc.Loader):
    """Runs the original loader, then rebinds the module's engine names to ember's objects."""

    def __init__(self, original: importlib.abc.Loader, names: tuple[str, ...]) -> None:
        self._original = original
        self._names = names

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._original.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self._original.exec_module(module)
        objects = _ember_objects()
        for name in self._names:
            setattr(module, name, objects[name])

    def __getattr__(self, name: str) -> Any:
        # get_source, get_resource_reader, is_package...: what the original loader offers.
        return getattr(self._original, name)


class _IgniteEngineFinder(importlib.abc.MetaPathFinder):
    """Finds ignite's engine modules with the finders after it and wraps their loaders."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        names = _REBOUND.get(fullname)
        if names is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _RebindingLoader(spec.loader, names)
                return spec
        return None


def _installed_finder() -> _IgniteEngineFinder | None:
    return next((f for f in sys.meta_path if isinstance(f, _IgniteEngineFinder)), None)


def ignite_patched() -> bool:
    """Whether :func:`patch_ignite` is in effect in this process."""
    return _installed_finder() is not None


def patch_ignite() -> None:
    """Make ``ignite.engine``'s ``Engine``, ``Events``, ``State``, ``EventEnum``,
    ``CallableEventWithFilter``, ``EventsList`` and ``RemovableEventHandle`` ember's objects,
    in every module of this process, including ignite's own handlers and libraries built on
    ignite (MONAI, ...).

    Call it before ignite, or anything that imports ignite, is imported; calling it again is a
    no-op. Without editing a script: ``python -m ember.patch_ignite script.py args...``.

    Raises:
        RuntimeError: ignite's engine modules were imported already (they would keep ignite's
            classes, and modules that imported them too); nothing is changed.

    Example:
        >>> import ember
        >>> ember.patch_ignite()
        >>> import ignite.engine
        >>> ignite.engine.Engine is ember.engine.Engine
        True
    """
    with _lock:
        if ignite_patched():
            return
        imported = sorted(name for name in _REBOUND if name in sys.modules)
        if imported:
            raise RuntimeError(
                "ember.patch_ignite() must run before ignite's engine is imported, but "
                f"{', '.join(imported)} {'is' if len(imported) == 1 else 'are'} imported already "
                "(by `import ignite` or a library built on it); nothing was patched. Call it "
                "first thing in the program, or run it as `python -m ember.patch_ignite "
                "script.py ...`."
            )
        import ember.engine.engine

        _ember_objects()  # import ember's engine before any ignite module needs it
        ember.engine.engine._set_logger_module(IGNITE_ENGINE_MODULE)
        sys.meta_path.insert(0, _IgniteEngineFinder())
