"""The run state: an open object whose counters the compiled loop reads and writes directly."""

from __future__ import annotations

from typing import Any, ClassVar

from ember.engine.events import Events

__all__ = ["State"]


class State:
    """What an engine knows about its run: counters, current batch and output, metrics, timings.

    Any attribute may be added. The fields the loop touches every iteration are slots, so the
    compiled loop reads and writes them without a dictionary lookup; everything else lives in
    the instance ``__dict__`` as usual.
    """

    __slots__ = (
        "__dict__",
        "__weakref__",
        "batch",
        "dataloader",
        "epoch",
        "epoch_length",
        "iteration",
        "max_epochs",
        "max_iters",
        "output",
        "times",
    )

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

    def _fields(self) -> dict[str, Any]:
        slots = {name: getattr(self, name) for name in State.__slots__ if not name.startswith("__")}
        return {**slots, **self.__dict__}

    def __repr__(self) -> str:
        lines = ["State:"]
        for name, value in self._fields().items():
            shown = value if isinstance(value, (int, float, str)) else type(value)
            lines.append(f"\t{name}: {shown}")
        return "\n".join(lines)

    def __getstate__(self) -> dict[str, Any]:
        return self._fields()

    def __setstate__(self, fields: dict[str, Any]) -> None:
        for name, value in fields.items():
            setattr(self, name, value)
