"""``Timer``: measure (average) time between events."""

from __future__ import annotations

from time import perf_counter
from typing import Any

from ember.engine import Events

__all__ = ["Timer"]


class Timer:
    """A stopwatch that engine events start, pause, resume and step.

    Args:
        average: if true, :meth:`value` is the total time divided by the number of
            :meth:`step` calls (at least 1).

    Attributes:
        total: seconds measured while running, up to the last pause.
        step_count: number of :meth:`step` calls.
        running: whether the timer is measuring.

    Example, average time of the process function::

        timer = Timer(average=True).attach(
            trainer, start=Events.STARTED, resume=Events.ITERATION_STARTED,
            pause=Events.ITERATION_COMPLETED, step=Events.ITERATION_COMPLETED)
    """

    def __init__(self, average: bool = False) -> None:
        self._average = average
        self.reset()

    def attach(
        self,
        engine: Any,
        start: Any = Events.STARTED,
        pause: Any = Events.COMPLETED,
        resume: Any = None,
        step: Any = None,
    ) -> Timer:
        """Reset on ``start``, pause on ``pause``, resume on ``resume`` and step on ``step``."""
        engine.add_event_handler(start, self.reset)
        engine.add_event_handler(pause, self.pause)
        if resume is not None:
            engine.add_event_handler(resume, self.resume)
        if step is not None:
            engine.add_event_handler(step, self.step)
        return self

    def reset(self, *args: Any) -> Timer:
        """Zero the timer and start it."""
        self._t0 = perf_counter()
        self.total = 0.0
        self.step_count = 0.0
        self.running = True
        return self

    def pause(self, *args: Any) -> None:
        """Stop measuring; the elapsed time is added to ``total``."""
        if self.running:
            self.total += perf_counter() - self._t0
            self.running = False

    def resume(self, *args: Any) -> None:
        """Measure again after a pause."""
        if not self.running:
            self.running = True
            self._t0 = perf_counter()

    def value(self) -> float:
        """Seconds measured (including the running interval), averaged per step if asked."""
        total = self.total
        if self.running:
            total += perf_counter() - self._t0
        if self._average:
            return total / max(self.step_count, 1.0)
        return total

    def step(self, *args: Any) -> None:
        """Count one step, for the average."""
        self.step_count += 1.0
