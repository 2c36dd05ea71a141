"""The run state: an open object whose counters the compiled loop reads and writes directly."""

from __future__ import annotations

import contextlib
import copy
import numbers
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, ClassVar

from ember.engine.events import Events

__all__ = ["State"]

# The fields the loop touches every iteration: slots, so that the compiled loop reads and writes
# them at a fixed offset instead of looking them up in a dictionary.
_SLOT_FIELDS = (
    "iteration",
    "epoch",
    "epoch_length",
    "max_epochs",
    "max_iters",
    "output",
    "batch",
    "dataloader",
    "times",
)


class _StateSlots:
    """The storage of a State: the slots, and an instance dictionary for everything else."""

    __slots__ = (*_SLOT_FIELDS, "__dict__", "__weakref__")


_MEMBERS = {name: _StateSlots.__dict__[name] for name in _SLOT_FIELDS}
_instance_dict = _StateSlots.__dict__["__dict__"].__get__


class StateFields(MutableMapping[str, Any]):
    """``vars(state)`` and ``state.__dict__``: every field of a State, the slots first, read and
    written live, so that ``fmt.format(**vars(state))`` and ``vars(state).update(snapshot)``
    work as on ignite's State, whose fields all live in its ``__dict__``.

    Copies (``dict(...)``, ``copy.copy``, ``copy.deepcopy``, pickling) are plain dicts: a
    snapshot, not another view of the same state.
    """

    __slots__ = ("_state",)

    def __init__(self, state: State) -> None:
        self._state = state

    def __getitem__(self, name: str) -> Any:
        member = _MEMBERS.get(name)
        if member is None:
            return _instance_dict(self._state)[name]
        try:
            return member.__get__(self._state)
        except AttributeError:  # a slot that was deleted
            raise KeyError(name) from None

    def __setitem__(self, name: str, value: Any) -> None:
        member = _MEMBERS.get(name)
        if member is None:
            _instance_dict(self._state)[name] = value
        else:
            member.__set__(self._state, value)

    def __delitem__(self, name: str) -> None:
        member = _MEMBERS.get(name)
        if member is None:
            del _instance_dict(self._state)[name]
            return
        try:
            member.__delete__(self._state)
        except AttributeError:
            raise KeyError(name) from None

    def __iter__(self) -> Iterator[str]:
        state = self._state
        for name, member in _MEMBERS.items():
            try:
                member.__get__(state)
            except AttributeError:
                continue
            yield name
        yield from _instance_dict(state)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return repr(dict(self))

    def copy(self) -> dict[str, Any]:
        return dict(self)

    __copy__ = copy

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return copy.deepcopy(dict(self), memo)

    def __reduce__(self) -> tuple[Any, ...]:
        return (dict, (dict(self),))


class State(_StateSlots):
    """What an engine knows about its run: counters, current batch and output, metrics, timings.

    Any attribute may be added. The fields the loop touches every iteration are slots (see
    ``_StateSlots``); everything else lives in the instance dictionary. ``vars(state)`` and
    ``state.__dict__`` show all of them, as a live mapping (:class:`StateFields`).
    """

    __slots__ = ()

    # Process-wide, as in ignite: register_events(event_to_attr=...) adds to it.
    event_to_attr: ClassVar[dict[Any, str]] = {
        Events.GET_BATCH_STARTED: "iteration",
        Events.GET_BATCH_COMPLETED: "iteration",
        Events.ITERATION_STARTED: "iteration",
        Events.ITERATION_COMPLETED: "iteration",
        Events.EPOCH_STARTED: "epoch",
        Events.EPOCH_COMPLETED: "epoch",
        Events.STARTED: "epoch",
        Events.COMPLETED: "epoch",
    }

    def __init__(self, **kwargs: Any) -> None:
        self.iteration = 0
        self.epoch = 0
        self.epoch_length: int | None = None
        self.max_epochs: int | None = None
        self.max_iters: int | None = None
        self.output: Any = None
        self.batch: Any = None
        self.dataloader: Any = None
        self.metrics: dict[str, Any] = {}
        self.seed: int | None = None
        self.times: dict[str, float | None] = {
            Events.EPOCH_COMPLETED.name: None,
            Events.COMPLETED.name: None,
        }
        for name, value in kwargs.items():
            setattr(self, name, value)
        self._update_attrs()

    def _update_attrs(self) -> None:
        for name in self.event_to_attr.values():
            if not hasattr(self, name):
                setattr(self, name, 0)

    def get_event_attrib_value(self, event_name: Any) -> int:
        """The counter an event filter sees for ``event_name``."""
        try:
            name = State.event_to_attr[event_name]
        except KeyError:
            raise RuntimeError(f"Unknown event name '{event_name}'") from None
        value: int = getattr(self, name)
        return value

    @property  # type: ignore[override]  # shadows object.__dict__ on purpose
    def __dict__(self) -> StateFields:
        return StateFields(self)

    @__dict__.setter
    def __dict__(self, fields: Mapping[str, Any]) -> None:
        """Replace every field, as assigning an object's ``__dict__`` does: a slot missing from
        ``fields`` is deleted."""
        if not isinstance(fields, Mapping):
            raise TypeError(f"__dict__ must be set to a mapping, not a '{type(fields).__name__}'")
        rest = dict(fields)
        for name, member in _MEMBERS.items():
            if name in rest:
                member.__set__(self, rest.pop(name))
            else:
                with contextlib.suppress(AttributeError):  # already unassigned
                    member.__delete__(self)
        _instance_dict(self).clear()
        _instance_dict(self).update(rest)

    def _fields(self) -> dict[str, Any]:
        return dict(StateFields(self))

    def __repr__(self) -> str:
        # As ignite's: any numbers.Number (NumPy scalars, Fraction, complex) shows its value,
        # and every line ends with a newline, the last one included.
        lines = ["State:\n"]
        for name, value in self._fields().items():
            shown = value if isinstance(value, (numbers.Number, str)) else type(value)
            lines.append(f"\t{name}: {shown}\n")
        return "".join(lines)

    def __getstate__(self) -> dict[str, Any]:
        return self._fields()

    def __setstate__(self, fields: dict[str, Any]) -> None:
        for name, value in fields.items():
            setattr(self, name, value)
