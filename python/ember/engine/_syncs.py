"""Host syncs during a profiled run, each one charged to the data, the step or a handler.

A host sync is a read of a tensor's value on the host (``aten::_local_scalar_dense``: ``.item()``,
``float(t)``, ``bool(t)``, ``if t:``). Two hooks see them while a profiled run is on:

- on CPU, a kernel registered for ``_local_scalar_dense`` at the CPU key, which counts and then
  reads the value with ``tolist()``. Unlike a ``TorchDispatchMode``, it costs nothing for the
  other operators, so the times of the run stay those of an unprofiled one;
- on CUDA (when the program has initialized it), ``torch.cuda.set_sync_debug_mode("warn")``,
  whose warnings are counted and not shown.

Who pays is read from the Python stack at the sync: the outermost frame inside the run that is
not the loop's own (``engine.py``, ``_pyloop.py``, ``_registry.py``, this profiler) is a handler
of the engine (of the event firing, else of any built-in event), the process function, or else
the data when a batch is being fetched (``next()``, not ``iter()``). Anything else
(``iter(data)``, the loop) is counted as outside. A handler's event filter pays as the handler,
and a handler removed during the run still pays for the calls it makes; when the engine's
``_fire_event`` (an override, or debug logging) calls the handlers, their event pays. The compiled loop calls Python directly, so the same rule serves both loops.

Only runs on the thread that reads the value count it; torch is not imported here: a program
that has not imported torch has no tensor to sync on.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import sys
import threading
import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from ember.engine._registry import FilteredHandler
from ember.engine.events import Events
from ember.engine.profile import Timing, handler_name

if TYPE_CHECKING:
    from types import FrameType

    from ember.engine.engine import Engine
    from ember.engine.profile import Profiler

# Spelled as the import system spells the modules' __file__ (and their code's co_filename).
_LOOP_FILES = frozenset(
    os.path.join(os.path.dirname(__file__), name)  # noqa: PTH118, PTH120
    for name in (
        "engine.py",
        "_pyloop.py",
        "_registry.py",
        "_loop_support.py",
        "_run_scope.py",
        "profile.py",
        "_syncs.py",
    )
)
_FETCHING = (Events.GET_BATCH_STARTED, Events.DATALOADER_STOP_ITERATION)
CUDA_SYNC_WARNING = "called a synchronizing CUDA operation"


def _code_and_owner(target: Any) -> tuple[types.CodeType, object] | None:
    """The code object a call of ``target`` runs, and the object bound as its first argument."""
    while True:
        if isinstance(target, functools.partial):
            target = target.func
        elif isinstance(target, FilteredHandler):
            target = target.handler
        else:
            break
    owner: object = None
    if isinstance(target, types.MethodType):
        owner, target = target.__self__, target.__func__
    if isinstance(target, types.FunctionType):
        return target.__code__, owner
    call = getattr(type(target), "__call__", None)  # noqa: B004 (its code, not callable())
    if isinstance(call, types.FunctionType):  # a callable object
        return call.__code__, target
    return None


def _runs(frame: FrameType, target: Any) -> bool:
    found = _code_and_owner(target)
    return found is not None and _runs_code(frame, *found)


def _runs_code(frame: FrameType, code: types.CodeType, owner: object) -> bool:
    """Whether ``frame`` runs ``code`` with ``owner`` (unless None) as its first argument."""
    if frame.f_code is not code:
        return False
    if owner is None:
        return True
    return code.co_argcount > 0 and frame.f_locals.get(code.co_varnames[0]) is owner


def _event_fired(frame: FrameType, bound: bool) -> Any:
    """The event a ``_fire_event(event_name, ...)`` frame fires: its first argument after
    ``self`` (``bound``), named or in ``*args``."""
    code = frame.f_code
    first = 1 if bound else 0
    if code.co_argcount > first:
        return frame.f_locals.get(code.co_varnames[first])
    if code.co_flags & inspect.CO_VARARGS:
        extra = frame.f_locals.get(code.co_varnames[code.co_argcount + code.co_kwonlyargcount])
        return extra[0] if extra else None
    return None


def _runs_handler(frame: FrameType, handler: Any) -> bool:
    """Whether ``frame`` runs ``handler`` or one of its event filters: a filtered handler is
    timed with its filter (docs/training.md), so the filter's syncs are the handler's too."""
    if _runs(frame, handler):
        return True
    while True:
        if isinstance(handler, functools.partial):
            handler = handler.func
        elif isinstance(handler, FilteredHandler):
            if _runs(frame, handler.event_filter):
                return True
            handler = handler.handler
        else:
            return False


def _starts_a_pass(frame: FrameType) -> bool:
    """Whether ``frame`` is the ``iter(data)`` the loop calls after DATALOADER_STOP_ITERATION
    (which the profiler does not time as data), rather than a ``next()``."""
    code = frame.f_code
    if code.co_flags & inspect.CO_GENERATOR:  # a generator runs at next(), whatever its name
        return False
    return code.co_name in ("__iter__", "_setup_dataloader_iter", "_setup_engine")


class _Watch:
    """One profiled run: where its loop's frame is, and the profiler that gets its syncs."""

    __slots__ = ("engine", "profiler", "run_frame", "seen", "thread")

    def __init__(self, profiler: Profiler, engine: Engine, run_frame: FrameType) -> None:
        self.profiler = profiler
        self.engine = engine
        self.run_frame = run_frame
        self.thread = threading.get_ident()
        # The handlers registered when the run starts, and those later found making a sync: a
        # handler removed while its event fires still runs in that pass (the loop walks the
        # list it had), and its syncs there are still its own, not "outside".
        self.seen: dict[tuple[Any, int], tuple[Events, Any]] = {}
        registry = engine._event_handlers_registry
        for event in list(registry):
            if isinstance(event, Events):
                for handler, _, _ in registry.get(event, ()):
                    self.seen[event, id(handler)] = (event, handler)

    def charge(self, frame: FrameType | None) -> None:
        entry = None
        firing = None  # the outermost frame of the engine's _fire_event, when outside entry
        fire_event = _code_and_owner(self.engine._fire_event)
        while frame is not None and frame is not self.run_frame:
            if fire_event is not None and _runs_code(frame, *fire_event):
                entry, firing = None, frame
            elif frame.f_code.co_filename not in _LOOP_FILES:
                entry = frame
            frame = frame.f_back
        if frame is None:
            return  # this run's loop is not on the stack
        profiler = self.profiler
        engine = self.engine
        if firing is not None and entry is None and fire_event is not None:
            # A built-in event fired through the engine's _fire_event (an override, or debug
            # logging): the loop times the firing and not the handlers inside, so their syncs
            # are the event's (docs/training.md), not a handler row's nor "outside".
            event = _event_fired(firing, fire_event[1] is not None)
            if isinstance(event, Events):
                profiler.events.setdefault(event.name, Timing()).syncs += 1
            else:
                profiler.outside_syncs += 1
            return
        if entry is not None:
            handler = self._handler_running(entry)
            if handler is not None:
                event, name = handler
                profiler.handlers.setdefault(name, Timing()).syncs += 1
                profiler.events.setdefault(event, Timing()).syncs += 1
                return
            if _runs(entry, engine._process_function):
                profiler.step.syncs += 1
                return
        if engine.last_event_name in _FETCHING and not (entry and _starts_a_pass(entry)):
            profiler.data.syncs += 1
        else:
            profiler.outside_syncs += 1

    def _handler_running(self, entry: FrameType) -> tuple[str, str] | None:
        """The (event, row name) of the handler ``entry`` runs, looked for first among the
        handlers of the event firing: a function may handle several events."""
        registry = self.engine._event_handlers_registry
        firing = self.engine.last_event_name
        events = [firing] if firing in registry else []
        events += [event for event in list(registry) if event is not firing]
        for event in events:
            if not isinstance(event, Events):
                continue  # custom events are fired from a step or handler: those pay
            for handler, _, _ in registry.get(event, ()):
                if _runs_handler(entry, handler):
                    self.seen[event, id(handler)] = (event, handler)
                    return event.name, f"{event.name}:{handler_name(handler)}"
        # No longer registered: removed during the run, perhaps by itself, while it runs.
        for event, handler in self.seen.values():
            if _runs_handler(entry, handler):
                return event.name, f"{event.name}:{handler_name(handler)}"
        return None


_watches: list[_Watch] = []
_hooks_lock = threading.Lock()


def _charge_sync(frame: FrameType | None) -> None:
    thread = threading.get_ident()
    for watch in tuple(_watches):
        if watch.thread == thread:
            try:
                watch.charge(frame)
            except Exception:  # noqa: BLE001 (a read of a value must not fail for the profiler)
                watch.profiler.outside_syncs += 1


def _count_cpu_sync(tensor: Any) -> Any:
    """The CPU kernel of ``_local_scalar_dense`` while a profiled run is on."""
    if tensor.numel() != 1:
        raise RuntimeError(f"a Tensor with {tensor.numel()} elements cannot be converted to Scalar")
    _charge_sync(sys._getframe(1))
    return tensor.reshape(-1).tolist()[0]  # reads the value without _local_scalar_dense


class _Hooks:
    """The process-wide hooks, installed while at least one profiled run is on."""

    def __init__(self) -> None:
        self.library: Any = None
        # What _catch_cuda_warnings put in: its entry of warnings.filters, its showwarning and
        # the one it replaced. Only these are taken out at the end: a filter or a showwarning
        # that the program set during the run (in a handler) stays.
        self.warning_filter: Any = None
        self.showwarning: Any = None
        self.showwarning_before: Any = None
        self.cuda_mode_before: int | None = None

    def install(self, torch: Any) -> None:
        library = torch.library.Library("aten", "IMPL")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "overriding a previously registered kernel"
            library.impl("_local_scalar_dense", _count_cpu_sync, "CPU")
        self.library = library
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            self.cuda_mode_before = torch.cuda.get_sync_debug_mode()
            self._catch_cuda_warnings()
            torch.cuda.set_sync_debug_mode("warn")

    def _catch_cuda_warnings(self) -> None:
        show = warnings.showwarning

        def count_or_show(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
            if CUDA_SYNC_WARNING in str(message):
                _charge_sync(sys._getframe(1))
            else:
                show(message, category, *args, **kwargs)

        # Inserted as filterwarnings("always", message=CUDA_SYNC_WARNING) would, without its
        # removal of an equal entry the program has: this entry is the one taken out.
        entry = ("always", re.compile(CUDA_SYNC_WARNING, re.IGNORECASE), Warning, None, 0)
        _filters().insert(0, entry)
        _filters_mutated()
        self.warning_filter = entry
        self.showwarning_before, self.showwarning = show, count_or_show
        warnings.showwarning = count_or_show

    def _release_cuda_warnings(self) -> None:
        entry, self.warning_filter = self.warning_filter, None
        if entry is not None:
            filters = _filters()
            for index, item in enumerate(filters):
                if item is entry:  # not an equal entry the program added
                    del filters[index]
                    _filters_mutated()
                    break
        if self.showwarning is not None and warnings.showwarning is self.showwarning:
            warnings.showwarning = self.showwarning_before  # else the program replaced it
        self.showwarning = self.showwarning_before = None

    def uninstall(self, torch: Any) -> None:
        if self.cuda_mode_before is not None:
            torch.cuda.set_sync_debug_mode(self.cuda_mode_before)
            self.cuda_mode_before = None
        self._release_cuda_warnings()
        if self.library is not None:
            self.library._destroy()  # the original kernel is back
            self.library = None


def _filters() -> list[Any]:
    """``warnings.filters``: a list (typeshed says a Sequence, read-only)."""
    return cast("list[Any]", warnings.filters)


def _filters_mutated() -> None:
    """Tell the warnings machinery that ``warnings.filters`` changed (what ``filterwarnings``
    does), so that no decision cached under the old filters is used."""
    mutated = getattr(warnings, "_filters_mutated", None) or getattr(
        warnings, "_filters_mutated_lock_held", None
    )
    if mutated is not None:
        mutated()


_hooks = _Hooks()


@contextmanager
def counting_syncs(profiler: Profiler, engine: Engine, run_frame: FrameType) -> Iterator[None]:
    """Charge the host syncs of the run whose loop runs below ``run_frame`` to ``profiler``."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    watch = _Watch(profiler, engine, run_frame)
    with _hooks_lock:
        if not _watches:
            try:
                _hooks.install(torch)
            except BaseException:
                _hooks.uninstall(torch)
                raise
        _watches.append(watch)
    try:
        yield
    finally:
        with _hooks_lock:
            _watches.remove(watch)
            if not _watches:
                _hooks.uninstall(torch)
