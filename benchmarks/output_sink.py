"""What an ``OutputSink`` saves: the compiled loop appends the output itself, where a Python
handler doing the same work costs a frame per iteration.

Side by side, interleaved, on each loop: an ``Engine`` with a no-op step and 1) a Python handler
on ITERATION_COMPLETED that appends ``engine.state.output`` and the iteration to two lists and
empties them every ``LIMIT`` calls, 2) an ``OutputSink`` with the same limit. Prints ns per
iteration and the ratio. torch is not needed.

    python benchmarks/output_sink.py [--repeats N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from ember.engine import Engine, Events
from ember.engine.sink import OutputSink

ITERATIONS = 20_000
LIMIT = 100


def python_handler(engine: Engine) -> None:
    values: list[Any] = []
    iterations: list[Any] = []

    def keep(engine: Engine) -> None:
        state = engine.state
        values.append(state.output)
        iterations.append(state.iteration)
        if len(values) >= LIMIT:
            values.clear()
            iterations.clear()

    engine.add_event_handler(Events.ITERATION_COMPLETED, keep)


def output_sink(engine: Engine) -> None:
    sink = OutputSink(lambda engine: sink.take(), LIMIT)
    engine.add_event_handler(Events.ITERATION_COMPLETED, sink)


VARIANTS: dict[str, Callable[[Engine], None]] = {
    "python handler": python_handler,
    "OutputSink": output_sink,
}


def ns_per_iteration(backend: str, attach: Callable[[Engine], None]) -> float:
    engine = Engine(lambda engine, batch: batch, backend=backend)
    attach(engine)
    data = list(range(ITERATIONS))
    start = time.perf_counter()
    engine.run(data)
    return (time.perf_counter() - start) / ITERATIONS * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    for backend in ("cpp", "python"):
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for _ in range(args.repeats):
            for name, attach in VARIANTS.items():
                times[name].append(ns_per_iteration(backend, attach))
        medians = {name: statistics.median(values) for name, values in times.items()}
        cells = "  ".join(f"{name} {value:7.1f} ns" for name, value in medians.items())
        ratio = medians["OutputSink"] / medians["python handler"]
        print(f"{backend:6s} per iteration (median): {cells}  sink/handler {ratio:.3f}")


if __name__ == "__main__":
    main()
