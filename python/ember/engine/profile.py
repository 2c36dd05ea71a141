"""Where a run's time goes, measured by the loop itself: data wait, step, each event, each handler.

    profiler = Profiler()
    profiler.attach(trainer)
    trainer.run(data, max_epochs=2)
    print(profiler.table())

The loop that runs the engine (compiled or Python) times each ``next()`` on the data, each call
of the process function, each firing of an event and each handler call, and adds the totals to
the profiler when ``run()`` returns, also after an interrupt or an exception. Without a
profiler attached the loops do not read the clock per iteration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ember.engine.engine import Engine

__all__ = ["Profiler", "Timing"]


@dataclass
class Timing:
    """Total seconds and number of calls of one thing the loop timed."""

    seconds: float = 0.0
    calls: int = 0

    @property
    def mean(self) -> float:
        return self.seconds / self.calls if self.calls else 0.0


def handler_name(handler: Any) -> str:
    inner = getattr(handler, "handler", None)  # a filtered handler: name what it wraps
    target = inner if inner is not None and hasattr(handler, "event_filter") else handler
    return getattr(target, "__qualname__", None) or type(target).__qualname__


class Profiler:
    """Collects the loop's timings over one or more runs of the engines it is attached to."""

    def __init__(self) -> None:
        self.data = Timing()
        self.step = Timing()
        self.events: dict[str, Timing] = {}
        self.handlers: dict[str, Timing] = {}

    def attach(self, engine: Engine) -> Profiler:
        engine._profiler = self
        return self

    @staticmethod
    def detach(engine: Engine) -> None:
        engine._profiler = None

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def add(self, kind: str, name: str, seconds: float, calls: int) -> None:
        """Called by the loops at the end of a run. ``kind``: data, step, event or handler."""
        if kind == "data":
            timing = self.data
        elif kind == "step":
            timing = self.step
        else:
            table = self.events if kind == "event" else self.handlers
            timing = table.setdefault(name, Timing())
        timing.seconds += seconds
        timing.calls += calls

    def results(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "step": self.step,
            "events": dict(self.events),
            "handlers": dict(self.handlers),
        }

    def table(self) -> str:
        """A text table: total, calls and mean per row, the largest totals first."""
        rows = [("data (next)", self.data), ("step (process_function)", self.step)]
        rows += sorted(
            ((f"event {name}", t) for name, t in self.events.items()),
            key=lambda row: -row[1].seconds,
        )
        rows += sorted(
            ((f"handler {name}", t) for name, t in self.handlers.items()),
            key=lambda row: -row[1].seconds,
        )
        width = max(len(name) for name, _ in rows)
        lines = [f"{'where':<{width}}  {'total s':>10}  {'calls':>9}  {'mean us':>10}"]
        for name, timing in rows:
            lines.append(
                f"{name:<{width}}  {timing.seconds:>10.4f}  {timing.calls:>9d}  "
                f"{timing.mean * 1e6:>10.2f}"
            )
        return "\n".join(lines)
