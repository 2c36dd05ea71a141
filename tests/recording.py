"""An engine that records every event it fires, as ignite's tests record them."""

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
