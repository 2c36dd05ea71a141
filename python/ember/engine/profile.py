"""Where a run's time goes, measured by the loop itself: data wait, step, each event, each handler,
and the host syncs of each.

    profiler = Profiler()
    profiler.attach(trainer)
    trainer.run(data, max_epochs=2)
    print(profiler.table())
    profiler.chart("profile.png")

The loop that runs the engine (compiled or Python) times each ``next()`` on the data, each call
of the process function, each firing of an event and each handler call, and adds the totals to
the profiler when ``run()`` returns, also after an interrupt or an exception. Without a
profiler attached the loops do not read the clock per iteration. Host syncs (``.item()``,
``float(t)``, ``if t:``...) are counted while a profiled run is on (``_syncs.py`` says how).
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from ember.engine._plan import RunPlan
    from ember.engine.engine import Engine

__all__ = ["Profiler", "Timing"]


@dataclass
class Timing:
    """Total seconds, number of calls and host syncs of one thing the loop timed."""

    seconds: float = 0.0
    calls: int = 0
    syncs: int = 0

    @property
    def mean(self) -> float:
        return self.seconds / self.calls if self.calls else 0.0


def handler_name(handler: Any) -> str:
    target = handler
    while True:
        inner = getattr(target, "handler", None)  # a filtered handler: name what it wraps
        if inner is not None and hasattr(target, "event_filter"):
            target = inner
        elif isinstance(target, functools.partial):
            target = target.func
        else:
            return getattr(target, "__qualname__", None) or type(target).__qualname__


class Profiler:
    """Collects the loop's timings and host syncs over the runs of the engines it is attached to.

    Attach one profiler per engine for a table per engine: an evaluator run from a trainer's
    handler is then one row of the trainer's table (its time and syncs are the handler's).

    Args:
        count_syncs: count host syncs (reads of a tensor's value on the host) and charge each
            to the data, the step or the handler that made it. They are counted on the thread
            of the run, by a CPU kernel of ``aten::_local_scalar_dense`` that costs nothing to
            other operators, and on CUDA by ``torch.cuda.set_sync_debug_mode("warn")``.

    Attributes:
        data: ``next()`` on the data. ``step``: the process function.
        events: each built-in event's firings (its handlers included), by event name.
        handlers: each handler, by ``"EVENT:qualified name"``.
        outside_syncs: syncs of a profiled run outside data, step and handlers (``iter(data)``).
    """

    def __init__(self, count_syncs: bool = True) -> None:
        self.count_syncs = count_syncs
        self.data = Timing()
        self.step = Timing()
        self.events: dict[str, Timing] = {}
        self.handlers: dict[str, Timing] = {}
        self.outside_syncs = 0

    def attach(self, engine: Engine) -> Profiler:
        from ember.engine.engine import Engine  # which imports this module: not at the top

        if not isinstance(engine, Engine):  # another library's engine would never report
            raise TypeError(
                f"Argument engine should be an ember.engine.Engine, got {type(engine).__name__}"
            )
        engine._profiler = self
        return self

    def _profiled_run(self, engine: Engine, plan: RunPlan) -> None:
        """Run the engine's loop; ``Engine.run`` calls this when a profiler is attached."""
        if not self.count_syncs:
            engine._run_loop(engine, plan)
            return
        from ember.engine._syncs import counting_syncs  # imports this module: not at the top

        with counting_syncs(self, engine, sys._getframe()):
            engine._run_loop(engine, plan)

    @staticmethod
    def detach(engine: Engine) -> None:
        engine._profiler = None

    def reset(self) -> None:
        self.__init__(self.count_syncs)  # type: ignore[misc]

    @property
    def iterations(self) -> int:
        """Iterations profiled: calls of the process function."""
        return self.step.calls

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
            "outside_syncs": self.outside_syncs,
        }

    def rows(self) -> list[tuple[str, Timing]]:
        """``(where, timing)``: data, step, then the events and the handlers, largest first."""
        rows = [("data (next)", self.data), ("step (process_function)", self.step)]
        for kind, table in (("event", self.events), ("handler", self.handlers)):
            rows += sorted(
                ((f"{kind} {name}", timing) for name, timing in table.items()),
                key=lambda row: (-row[1].seconds, -row[1].syncs),
            )
        return rows

    def table(self) -> str:
        """A text table: total, calls and mean per row, then the time and the host syncs per
        iteration. An event's row includes its handlers' rows."""
        rows = self.rows()
        per_iteration = 1 / self.iterations if self.iterations else 0.0
        width = max(len(name) for name, _ in rows)
        header = (
            f"{'where':<{width}}  {'total s':>10}  {'calls':>9}  {'mean us':>10}  "
            f"{'us/iter':>10}  {'syncs':>7}  {'syncs/iter':>10}"
        )
        lines = [header]
        for name, timing in rows:
            lines.append(
                f"{name:<{width}}  {timing.seconds:>10.4f}  {timing.calls:>9d}  "
                f"{timing.mean * 1e6:>10.2f}  {timing.seconds * per_iteration * 1e6:>10.2f}  "
                f"{timing.syncs:>7d}  {timing.syncs * per_iteration:>10.3f}"
            )
        if self.outside_syncs:
            name = "outside (iter(data), the loop)"
            lines.append(
                f"{name:<{width}}  {'':>10}  {'':>9}  {'':>10}  {'':>10}  "
                f"{self.outside_syncs:>7d}  {self.outside_syncs * per_iteration:>10.3f}"
            )
        return "\n".join(lines)

    def chart(self, path: str | Path | None = None) -> Any:
        """A bar chart of the time per iteration of the data, the step and each handler, with
        their host syncs per iteration; saved as a PNG at ``path`` when given.

        Needs matplotlib (imported here only). Returns the ``matplotlib.figure.Figure``.
        """
        try:
            from matplotlib.figure import Figure  # optional: only where charts are made
        except ImportError as error:
            raise ImportError(
                "Profiler.chart() needs matplotlib: pip install matplotlib"
            ) from error
        rows = [(name, timing) for name, timing in self.rows() if not name.startswith("event ")]
        rows.reverse()  # matplotlib draws the first bar at the bottom
        per_iteration = 1 / self.iterations if self.iterations else 0.0
        micros = [timing.seconds * per_iteration * 1e6 for _, timing in rows]
        figure = Figure(figsize=(9, 1.2 + 0.35 * len(rows)), layout="constrained")
        axes = figure.add_subplot()
        colors = ["tab:orange" if timing.syncs else "tab:blue" for _, timing in rows]
        bars = axes.barh([name for name, _ in rows], micros, color=colors)
        labels = [
            f" {value:.1f} us, {timing.syncs * per_iteration:.2f} syncs/iter"
            for value, (_, timing) in zip(micros, rows, strict=True)
        ]
        axes.bar_label(bars, labels=labels, fontsize=8)
        axes.set_xlabel("microseconds per iteration")
        axes.set_title(
            f"Where an iteration goes ({self.iterations} iterations; orange: makes host syncs)"
        )
        axes.margins(x=0.35)
        if path is not None:
            figure.savefig(path, dpi=100)
        return figure
