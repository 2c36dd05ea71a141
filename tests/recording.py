"""Recorders: an engine that records every event it fires, as ignite's tests record them; a
state that counts the reads of its ``metrics``."""

from __future__ import annotations

from typing import Any


def recording(engine_cls: type) -> type:
    """A subclass of ``engine_cls`` whose ``trace`` lists ``(event, epoch, iteration)``."""

    class Recording(engine_cls):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.trace: list[tuple[str, int, int]] = []
            super().__init__(*args, **kwargs)

        def _fire_event(self, event_name: Any, *args: Any, **kwargs: Any) -> None:
            name = getattr(event_name, "name", str(event_name))
            self.trace.append((name, self.state.epoch, self.state.iteration))
            super()._fire_event(event_name, *args, **kwargs)

    return Recording


def event_names(engine: Any) -> list[str]:
    """The names of the events in ``engine.trace``, in firing order."""
    return [name for name, _, _ in engine.trace]


def metrics_counting_state(replace_at_read: int = 0, replacement: Any = None) -> type:
    """A ``State`` subclass whose ``metrics`` is a property counting its reads in the class
    attribute ``reads``; read number ``replace_at_read`` (if any) returns ``replacement`` instead
    of the stored mapping."""
    from ember.engine import State

    class MetricsCounting(State):
        __slots__ = ()
        reads = 0

        @property
        def metrics(self) -> Any:
            MetricsCounting.reads += 1
            if MetricsCounting.reads == replace_at_read:
                return replacement
            return self.__dict__["metrics"]

        @metrics.setter
        def metrics(self, value: Any) -> None:
            self.__dict__["metrics"] = value

    return MetricsCounting
