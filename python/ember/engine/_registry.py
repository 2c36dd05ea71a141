"""The handler registry (ignite's ``_event_handlers``) and the wrapper of filtered handlers."""

from __future__ import annotations

import functools
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from ember.engine.engine import Engine

__all__ = ["FilteredHandler", "HandlerRegistry", "call_handlers"]


def call_handlers(
    handlers: Iterable[Any], event_args: tuple[Any, ...], event_kwargs: dict[str, Any]
) -> None:
    """Call each ``(handler, args, kwargs)`` of the live list, engine first where stored.

    The one place handlers are called from Python: ``Engine._fire_event``, the Python loop, and
    the compiled loop for any entry it does not decode itself (csrc/dispatch.hpp).
    """
    for handler, args, kwargs in handlers:
        if event_kwargs:
            kwargs = {**kwargs, **event_kwargs}  # noqa: PLW2901 (for this call only)
        if args and isinstance(args[0], weakref.ref):
            engine = args[0]()
            if engine is None:
                raise RuntimeError("Engine reference not resolved. Cannot execute event handler.")
            handler(engine, *event_args, *args[1:], **kwargs)
        else:
            handler(*event_args, *args, **kwargs)


class HandlerRegistry(defaultdict):  # type: ignore[type-arg]
    """``event -> [(handler, args, kwargs), ...]``, ignite's shape, read live by both loops.

    ``version`` changes whenever a key is bound, rebound or removed, so a loop may keep the list
    objects it looked up until the version moves. Edits inside a list need no bump: the loops
    walk the live list.
    """

    __slots__ = ("version",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(list, *args, **kwargs)
        self.version = 0

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self.version += 1

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self.version += 1

    def pop(self, *args: Any) -> Any:
        self.version += 1
        return super().pop(*args)

    def popitem(self) -> Any:
        self.version += 1
        return super().popitem()

    def clear(self) -> None:
        self.version += 1
        super().clear()

    def update(self, *args: Any, **kwargs: Any) -> None:
        self.version += 1
        super().update(*args, **kwargs)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        self.version += 1
        return super().setdefault(key, default)

    def __ior__(self, other: Any) -> Self:  # type: ignore[misc]  # typeshed's dict.__or__
        self.update(other)
        return self

    def __reduce__(self) -> Any:
        return (type(self), (), None, None, iter(self.items()))


class FilteredHandler:
    """Runs ``handler`` only when ``event_filter(engine, counter)`` accepts the event's counter.

    It holds its engine weakly (ignite's closure holds it strongly, which keeps an engine alive
    until the cycle collector runs). ``_parent`` lets ``has_event_handler`` and
    ``remove_event_handler`` find the original handler, as in ignite.
    """

    def __init__(
        self,
        handler: Callable[..., Any],
        event: Any,
        event_filter: Callable[[Any, int], bool],
        engine: Engine,
    ) -> None:
        functools.update_wrapper(self, handler)
        self.handler = handler
        self.event = event
        self.event_filter = event_filter
        self.engine_ref = weakref.ref(engine)
        self._parent = weakref.ref(handler)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        engine = self.engine_ref()
        if engine is None:
            raise RuntimeError("Engine reference not resolved. Cannot execute event handler.")
        counter = engine.state.get_event_attrib_value(self.event)
        if self.event_filter(engine, counter):
            return self.handler(*args, **kwargs)
        return None

    def __repr__(self) -> str:
        return f"FilteredHandler({self.handler!r}, {self.event_filter!r})"
