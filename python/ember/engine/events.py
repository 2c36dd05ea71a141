"""Events, event filters, event lists and handler handles (the names of ``ignite.engine.events``)."""

from __future__ import annotations

import numbers
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from enum import Enum
from types import DynamicClassAttribute
from typing import TYPE_CHECKING, Any, Self, TypeGuard, cast

from ember.engine._signature import check_signature

if TYPE_CHECKING:
    from ember.engine.engine import Engine

__all__ = [
    "CallableEventWithFilter",
    "CountFilter",
    "EventEnum",
    "Events",
    "EventsList",
    "RemovableEventHandle",
    "is_event",
    "is_events_list",
]


class CountFilter:
    """A filter on the event's counter (``state.iteration`` or ``state.epoch``).

    It fires when the counter is in ``once``, or, without ``once``, when it lies strictly between
    ``after`` and ``before`` (each optional) and on the ``every`` grid. The grid starts at 0 for a
    plain ``every`` and at ``after + 1`` once ``before`` or ``after`` is given, as in ignite. The compiled loop reads
    these fields and evaluates the filter without calling Python.
    """

    __slots__ = ("after", "before", "every", "grid_origin", "once")

    def __init__(
        self,
        every: int = 1,
        after: int | None = None,
        before: int | None = None,
        once: Sequence[int] | None = None,
    ) -> None:
        self.every = int(every)
        self.after = None if after is None else int(after)
        self.before = None if before is None else int(before)
        self.once = None if once is None else tuple(sorted({int(v) for v in once}))
        self.grid_origin = 0 if self.after is None else self.after + 1

    def __call__(self, engine: Any, event: int) -> bool:
        if self.once is not None:
            return event in self.once
        if self.after is not None and event <= self.after:
            return False
        if self.before is not None and event >= self.before:
            return False
        return (event - self.grid_origin) % self.every == 0

    def __repr__(self) -> str:
        if self.once is not None:
            return f"CountFilter(once={list(self.once)})"
        return (
            f"CountFilter(every={self.every}, after={self.after}, before={self.before}, "
            f"grid_origin={self.grid_origin})"
        )


def is_event(value: object) -> TypeGuard[CallableEventWithFilter]:
    """An event object: ours, or another library's built the same way (ignite's, for its
    handlers), recognised by its ``name`` and ``filter`` attributes."""
    return isinstance(value, CallableEventWithFilter) or (
        hasattr(value, "filter") and isinstance(getattr(value, "name", None), str)
    )


def is_events_list(value: Any) -> bool:
    """An ``EventsList``: ours, or ignite's (``Events.A | Events.B`` built by ignite code)."""
    return isinstance(value, EventsList) or (
        type(value).__name__ == "EventsList" and hasattr(value, "_events")
    )


def _is_positive_int(value: Any) -> bool:
    return (
        isinstance(value, numbers.Integral) and not isinstance(value, bool) and cast(int, value) > 0
    )


def _is_non_negative_int(value: Any) -> bool:
    return (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool)
        and cast(int, value) >= 0
    )


def _count_filter(
    every: int | None, once: int | Sequence[int] | None, before: int | None, after: int | None
) -> CountFilter | None:
    # As ints: validated as integers, which NumPy's are too (the compiled loop reads ints).
    if once is not None:
        if isinstance(once, numbers.Integral):
            return CountFilter(once=[int(once)])
        return CountFilter(once=[int(count) for count in cast(Sequence[int], once)])
    every = int(every or 1)
    if before is None and after is None:
        return None if every == 1 else CountFilter(every=every)
    return CountFilter(
        every=every, after=int(after or 0), before=None if before is None else int(before)
    )


def _validate_filter_arguments(
    event_filter: Callable[..., bool] | None,
    every: int | None,
    once: int | Sequence[int] | None,
    before: int | None,
    after: int | None,
) -> None:
    kinds_given = (
        (event_filter is not None)
        + (once is not None)
        + (every is not None or before is not None or after is not None)
    )
    if kinds_given != 1:
        raise ValueError(
            "Only one of the input arguments should be specified, except before, after and every"
        )
    if event_filter is not None and not callable(event_filter):
        raise TypeError("Argument event_filter should be a callable")
    if every is not None and not _is_positive_int(every):
        raise ValueError("Argument every should be integer and greater than zero")
    if once is not None:
        single = _is_positive_int(once)
        several = (
            isinstance(once, Sequence)
            and not isinstance(once, str)
            and len(once) > 0
            and all(_is_positive_int(v) for v in once)
        )
        if not (single or several):
            raise ValueError(
                "Argument once should either be a positive integer or a list of positive "
                f"integers, got {once}"
            )
    if before is not None and not _is_non_negative_int(before):
        raise ValueError("Argument before should be integer and greater or equal to zero")
    if after is not None and not _is_non_negative_int(after):
        raise ValueError("Argument after should be integer and greater or equal to zero")


class CallableEventWithFilter:
    """An event, optionally carrying a filter that decides at fire time whether handlers run.

    Events compare and hash by name, so ``Events.X == Events.X(every=3) == "X"``.
    """

    def __init__(
        self, value: str, event_filter: Callable[..., bool] | None = None, name: str | None = None
    ) -> None:
        self.filter = event_filter
        if not hasattr(self, "_value_"):
            self._value_ = value
        if not hasattr(self, "_name_") and name is not None:
            self._name_ = name

    @DynamicClassAttribute
    def name(self) -> str:
        return self._name_

    @DynamicClassAttribute
    def value(self) -> str:
        return self._value_

    def __call__(
        self,
        event_filter: Callable[..., bool] | None = None,
        every: int | None = None,
        once: int | Sequence[int] | None = None,
        before: int | None = None,
        after: int | None = None,
    ) -> CallableEventWithFilter:
        """Return this event with a filter: ``every``, ``once``, ``before``/``after`` or a callable."""
        _validate_filter_arguments(event_filter, every, once, before, after)
        if event_filter is None:
            event_filter = _count_filter(every, once, before, after)
        else:
            check_signature(event_filter, "event_filter", "engine", "event")
        return CallableEventWithFilter(self.value, event_filter, self.name)

    # ignite's filter factories, as count filters (which the compiled loop evaluates itself).
    @staticmethod
    def every_event_filter(every: int) -> CountFilter:
        """Fires when the counter is a multiple of ``every``."""
        return CountFilter(every=every)

    @staticmethod
    def once_event_filter(once: Sequence[int]) -> CountFilter:
        """Fires when the counter is one of ``once``."""
        return CountFilter(once=once)

    @staticmethod
    def before_and_after_event_filter(
        before: int | None = None, after: int | None = None
    ) -> CountFilter:
        """Fires when ``after < counter < before`` (each bound optional)."""
        return CountFilter(after=after or 0, before=before)

    @staticmethod
    def every_before_and_after_event_filter(
        every: int, before: int | None = None, after: int | None = None
    ) -> CountFilter:
        """Fires every ``every`` counts from ``after + 1``, while ``after < counter < before``."""
        return CountFilter(every=every, after=after or 0, before=before)

    @staticmethod
    def default_event_filter(engine: Engine, event: int) -> bool:
        """Deprecated, as in ignite: warns (a ``UserWarning``, ignite's category) and returns True."""
        warnings.warn(
            "Events.default_event_filter is deprecated and will be removed. Please, use None instead",
            UserWarning,
            stacklevel=2,
        )
        return True

    def __repr__(self) -> str:
        text = f"Events.{self.name}"
        return text if self.filter is None else f"{text}(filter={self.filter})"

    def __eq__(self, other: object) -> bool:
        # _name_ rather than the ``name`` property: the registry's membership tests compare an
        # event with every registered one, and the property's descriptor costs ~0.1 us a read.
        if isinstance(other, CallableEventWithFilter):
            return self._name_ == other._name_
        if isinstance(other, str):
            return self._name_ == other
        if is_event(other):
            return self._name_ == other.name
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._name_)

    def __or__(self, other: CallableEventWithFilter) -> EventsList:
        return EventsList() | self | other


class EventEnum(CallableEventWithFilter, Enum):
    """Base class of :class:`Events` and of user-defined custom events."""

    def __new__(cls, value: str) -> Self:
        member = object.__new__(cls)
        member._value_ = value
        return member


class Events(EventEnum):
    """The events an :class:`~ember.engine.Engine` fires, in ignite's declaration order.

    =========================  =====================================================
    event                      fired
    =========================  =====================================================
    STARTED                    once at the start of a run (not when resuming)
    EPOCH_STARTED              after ``state.epoch += 1``
    GET_BATCH_STARTED          before ``next()`` on the data iterator
    GET_BATCH_COMPLETED        after ``next()`` returned a batch
    DATALOADER_STOP_ITERATION  the iterator ran dry; ``state.dataloader`` is restarted next
    ITERATION_STARTED          after ``state.iteration += 1``
    ITERATION_COMPLETED        after the process function returned
    EPOCH_COMPLETED            at the end of an epoch
    COMPLETED                  at the end of a run
    EXCEPTION_RAISED           an exception escaped; handlers receive it
    TERMINATE                  ``terminate()`` took effect, or ``max_iters`` was reached
    TERMINATE_SINGLE_EPOCH     ``terminate_epoch()`` took effect (keyword ``iter_counter``)
    INTERRUPT                  ``interrupt()`` took effect; ``run()`` returns next
    =========================  =====================================================
    """

    EPOCH_STARTED = "epoch_started"
    EPOCH_COMPLETED = "epoch_completed"
    STARTED = "started"
    COMPLETED = "completed"
    ITERATION_STARTED = "iteration_started"
    ITERATION_COMPLETED = "iteration_completed"
    EXCEPTION_RAISED = "exception_raised"
    GET_BATCH_STARTED = "get_batch_started"
    GET_BATCH_COMPLETED = "get_batch_completed"
    DATALOADER_STOP_ITERATION = "dataloader_stop_iteration"
    TERMINATE = "terminate"
    TERMINATE_SINGLE_EPOCH = "terminate_single_epoch"
    INTERRUPT = "interrupt"

    def __or__(self, other: CallableEventWithFilter) -> EventsList:
        return EventsList() | self | other


class EventsList:
    """Several events joined with ``|``; a handler added to it is added to each event."""

    def __init__(self) -> None:
        self._events: list[CallableEventWithFilter] = []

    def _append(self, event: CallableEventWithFilter) -> None:
        if not is_event(event):
            raise TypeError(
                f"Argument event should be Events or CallableEventWithFilter, got: {type(event)}"
            )
        self._events.append(event)

    def __getitem__(self, index: int) -> CallableEventWithFilter:
        return self._events[index]

    def __iter__(self) -> Iterator[CallableEventWithFilter]:
        return iter(self._events)

    def __len__(self) -> int:
        return len(self._events)

    def __or__(self, other: CallableEventWithFilter) -> EventsList:
        self._append(other)
        return self

    def __repr__(self) -> str:
        return " | ".join(map(repr, self._events)) or "EventsList()"


class RemovableEventHandle:
    """Removes a handler it refers to weakly; also a context manager that removes on exit."""

    def __init__(self, event_name: Any, handler: Callable[..., Any], engine: Engine) -> None:
        self.event_name = event_name
        self.handler = weakref.ref(handler)
        self.engine = weakref.ref(engine)

    def remove(self) -> None:
        handler = self.handler()
        engine = self.engine()
        if handler is None or engine is None:
            return
        if hasattr(handler, "_parent"):
            handler = handler._parent()
            if handler is None:
                return
        events = self.event_name if is_events_list(self.event_name) else [self.event_name]
        for event in events:
            if engine.has_event_handler(handler, event):
                engine.remove_event_handler(handler, event)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()
