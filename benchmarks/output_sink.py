"""What an ``OutputSink`` saves: the compiled loop appends the output itself, where a Python
handler doing the same work costs a frame per iteration.

Side by side, interleaved, on each loop: an ``Engine`` with a no-op step and 1) a Python handler
on ITERATION_COMPLETED that appends ``engine.state.output`` and the iteration to two lists and
empties them every ``LIMIT`` calls, 2) an ``OutputSink`` with the same limit. Prints ns per
iteration and the ratio. torch is not needed for these.

When torch is installed, the same for ``RunningAverage`` of a loss (a 0-d tensor output) in its
default usage: 1) the Python handler it had before (``_UpdateAndStore``: one call an iteration),
2) the ``OutputSink`` it attaches now; and the same for losses that are Python floats, which the
sink does not take (every one goes through the handler). Each line also gives the step alone
(no handler), and the ratio of what the handler costs over the step alone.

    python benchmarks/output_sink.py [--repeats N]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Callable
from typing import Any

from ember.engine import Engine, Events
from ember.engine.sink import OutputSink

ITERATIONS = 20_000
LIMIT = 100

Attach = Callable[[Engine], None]


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


def no_handler(engine: Engine) -> None:
    pass


def running_average_handler(engine: Engine) -> None:
    from ember.metrics import RunningAverage
    from ember.metrics.aggregate import _UpdateAndStore

    metric = RunningAverage(output_transform=lambda loss: loss)
    engine.add_event_handler(Events.STARTED, metric.started)
    engine.add_event_handler(Events.ITERATION_COMPLETED, _UpdateAndStore(metric, "loss"))


def running_average_sink(engine: Engine) -> None:
    from ember.metrics import RunningAverage

    RunningAverage(output_transform=lambda loss: loss).attach(engine, "loss")


def float_losses(count: int) -> list[Any]:
    return [float(i % 13) / 3.0 for i in range(count)]


def integers(count: int) -> list[Any]:
    return list(range(count))


def losses(count: int) -> list[Any]:
    import torch

    distinct = [torch.tensor(float(i) / 3.0) for i in range(13)]
    return [distinct[i % 13] for i in range(count)]


# (title, data, variants, (handler, sink) names for the ratio)
SCENARIOS: list[tuple[str, Callable[[int], list[Any]], dict[str, Attach], tuple[str, str]]] = [
    (
        "",
        integers,
        {"python handler": python_handler, "OutputSink": output_sink},
        ("python handler", "OutputSink"),
    ),
]
if importlib.util.find_spec("torch") is not None:
    SCENARIOS.append(
        (
            "RunningAverage ",
            losses,
            {
                "no handler": no_handler,
                "handler": running_average_handler,
                "sink": running_average_sink,
            },
            ("handler", "sink"),
        )
    )
    # Python floats: the sink accepts none of them and hands each to the handler (its cost
    # when nothing can go the fast way).
    SCENARIOS.append(
        (
            "RunningAverage of floats ",
            float_losses,
            {
                "no handler": no_handler,
                "handler": running_average_handler,
                "sink": running_average_sink,
            },
            ("handler", "sink"),
        )
    )


def ns_per_iteration(backend: str, attach: Attach, data: list[Any]) -> float:
    engine = Engine(lambda engine, batch: batch, backend=backend)
    attach(engine)
    start = time.perf_counter()
    engine.run(data)
    return (time.perf_counter() - start) / len(data) * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    for title, make_data, variants, (handler, sink) in SCENARIOS:
        data = make_data(ITERATIONS)
        for backend in ("cpp", "python"):
            times: dict[str, list[float]] = {name: [] for name in variants}
            for _ in range(args.repeats):
                for name, attach in variants.items():
                    times[name].append(ns_per_iteration(backend, attach, data))
            medians = {name: statistics.median(values) for name, values in times.items()}
            cells = "  ".join(f"{name} {value:7.1f} ns" for name, value in medians.items())
            ratio = medians[sink] / medians[handler]
            line = f"{backend:6s} {title}per iteration (median): {cells}  sink/handler {ratio:.3f}"
            if "no handler" in medians:
                step = medians["no handler"]
                own = (medians[sink] - step) / (medians[handler] - step)
                line += f"  (over the step alone: {own:.3f})"
            print(line)


if __name__ == "__main__":
    main()
