"""The floor under benchmarks/stack.py's ratio: what the hand-written training loop itself pays,
on this machine, for each thing that ember's training stack does differently.

benchmarks/stack.py compares ember's whole stack with a hand-written loop. Some of the
difference is not ember's code but what the stack must do instead of ``loss.item()`` at every
iteration: keep the losses as tensors until somebody reads them (``RunningAverage``,
``TerminateOnNan``), or add them up on their device; and run the step from a compiled loop
rather than inline. And some is where the code runs: the same loop run a C call deeper
(nothing more done per iteration) moves by a percent or two on some machines. This script times the hand-written training loop (training only: no
evaluation, no checkpoint; MLP, data and sizes of stack.py) with one such change at a time,
next to ember's Engine and trainer, all interleaved in one process (fresh model per repeat,
4 epochs timed, the order rotating each repeat), and prints each row's median time per epoch
and its median ratio to the hand-written loop of the same repeat.

A second table splits each iteration of ember's trainer in two, part by part: the time inside
the step (``zero_grad`` to ``optimizer.step``, the same work in every row) and the time between
two steps (the loop, the handlers; for the hand-written loop its scheduler step, ``loss.item()``
and running average). A row of the hand-written loop that also calls ``json.dumps`` on a small
dict between two steps shows what work of no use to the step does to the step's own time. These
rows share one model, optimizer and data set and take one epoch each in turn, so that nothing
but the row differs; times are the thread's CPU time.

    python benchmarks/stack_floor.py [--repeats N] [--part-epochs N] [--out-dir DIR]

Writes benchmark-stack-floor.md into --out-dir (default docs/). It only reports; times move by
about 1% between runs on a shared machine.
"""

from __future__ import annotations

import argparse
import collections
import functools
import gc
import itertools
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from loop_overhead import REPO_ROOT, devnull_stream, machine_info
from stack import (
    ALL_PARTS,
    ALPHA,
    EMBER_LIBRARY,
    FULL,
    HandWrittenStack,
    Work,
    attach_parts,
    make_work,
)

import ember.engine
import ember.handlers
import ember.metrics
from ember.engine.supervised import supervised_training_step

EPOCHS = 4


def optimizer_step(work: Work) -> Callable[[Any, Any], torch.Tensor]:
    """``zero_grad``, forward, loss, backward and ``optimizer.step`` of stack.py's hand-written
    loop, as ``step(engine, batch) -> loss`` (``engine`` unused)."""
    model, optimizer, loss_fn = work.model, work.optimizer, work.loss_fn

    def step(engine: Any, batch: Any) -> torch.Tensor:
        x, y = batch
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    return step


def averaged(running: float, value: float) -> float:
    """The hand-written running average after ``value`` (NaN: none yet)."""
    return value if math.isnan(running) else ALPHA * running + (1 - ALPHA) * value


def hand_step(work: Work, keep: int = 0, device_op: bool = False) -> Callable[[Any, Any], None]:
    """The step of stack.py's hand-written loop as a function ``step(engine, batch)`` (``engine``
    unused), keeping its last ``keep`` losses as tensors or adding each loss into a tensor on
    its device (``device_op``) besides."""
    optimize, scheduler = optimizer_step(work), work.scheduler
    kept: list[torch.Tensor] = []
    total = torch.zeros((), dtype=torch.float64, device=work.device)
    running = [math.nan]

    def step(engine: Any, batch: Any) -> None:
        loss = optimize(engine, batch)
        scheduler.step()
        if keep:
            kept.append(loss.detach())
            if len(kept) == keep:
                kept.clear()
        if device_op:
            total.add_(loss.detach())
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(value)
        running[0] = averaged(running[0], value)

    return step


def inline_loop(work: Work) -> Callable[[], None]:
    """stack.py's hand-written training loop: the step written inside the loop."""
    return HandWrittenStack(work).train_epoch


def python_loop(**options: Any) -> Callable[[Work], Callable[[], None]]:
    def build(work: Work) -> Callable[[], None]:
        step = hand_step(work, **options)

        def train() -> None:
            work.model.train()
            for batch in work.train_data:
                step(None, batch)

        return train

    return build


def deeper(levels: int) -> Callable[[Work], Callable[[], None]]:
    """The Python-function loop run ``levels`` C calls deeper (``functools.reduce``): the same
    work per iteration, with the C stack somewhere else."""

    def build(work: Work) -> Callable[[], None]:
        train = python_loop()(work)
        for _ in range(levels):
            train = functools.partial(functools.reduce, lambda _, __, inner=train: inner(), [0, 0])
        return train

    return build


def c_loop(work: Work) -> Callable[[], None]:
    """The step called by a C function (``map``), as a compiled loop calls it."""
    step = functools.partial(hand_step(work), None)

    def train() -> None:
        work.model.train()
        collections.deque(map(step, work.train_data), 0)

    return train


def epochs_of(engine: Any, work: Work) -> Callable[[], None]:
    """``train()``: one more epoch of ``engine`` on the work's data."""
    engine.add_event_handler(ember.engine.Events.EPOCH_STARTED, lambda _: work.model.train())
    done = [0]

    def train() -> None:
        done[0] += 1
        engine.run(work.train_data, max_epochs=done[0])

    return train


def engine_with_hand_step(work: Work) -> Callable[[], None]:
    return epochs_of(ember.engine.Engine(hand_step(work)), work)


def trainer_with_hand_handlers(work: Work) -> Callable[[], None]:
    """``create_supervised_trainer``, the running loss, NaN check and scheduler in handlers
    written by hand (a float read of the output at every iteration)."""
    trainer = ember.engine.create_supervised_trainer(
        work.model, work.optimizer, work.loss_fn, device=work.device
    )
    running = [math.nan]

    def read_loss(engine: Any) -> None:
        value = float(engine.state.output)
        if not math.isfinite(value):
            engine.terminate()
        running[0] = averaged(running[0], value)

    events = ember.engine.Events
    trainer.add_event_handler(events.ITERATION_COMPLETED, read_loss)
    trainer.add_event_handler(events.ITERATION_COMPLETED, lambda _: work.scheduler.step())
    return epochs_of(trainer, work)


def ember_training_stack(work: Work) -> Callable[[], None]:
    """stack.py's ember stack without its evaluator and checkpoint."""
    trainer = ember.engine.create_supervised_trainer(
        work.model, work.optimizer, work.loss_fn, device=work.device
    )
    attach_parts(trainer, work, ALL_PARTS, devnull_stream(), EMBER_LIBRARY)
    return epochs_of(trainer, work)


ROWS: dict[str, tuple[str, Callable[[Work], Callable[[], None]]]] = {
    "inline": ("hand-written loop, step inline (stack.py's)", inline_loop),
    "function": ("hand-written, the step a Python function", python_loop()),
    "deeper1": ("hand-written, the step a Python function, 1 C call deeper", deeper(1)),
    "deeper2": ("hand-written, the step a Python function, 2 C calls deeper", deeper(2)),
    "keep8": ("hand-written, keeping its last 8 losses as tensors", python_loop(keep=8)),
    "keep256": ("hand-written, keeping its last 256 losses as tensors", python_loop(keep=256)),
    "device_op": ("hand-written, adding each loss into a tensor", python_loop(device_op=True)),
    "from_c": ("hand-written, the step called from C (map)", c_loop),
    "engine": ("ember's Engine running the hand-written step", engine_with_hand_step),
    "trainer": ("ember's trainer, hand-written handlers", trainer_with_hand_handlers),
    "ember": (
        "ember's trainer, RunningAverage, bar, TerminateOnNan, LRScheduler",
        ember_training_stack,
    ),
}


def measure(repeats: int) -> dict[str, list[float]]:
    """Milliseconds per epoch of each row, per repeat (the first round warms up, not kept)."""
    names = list(ROWS)
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats + 1):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            with tempfile.TemporaryDirectory() as directory:
                work = make_work(FULL, torch.device("cpu"), Path(directory))
                train = ROWS[name][1](work)
                train()  # an epoch of warm-up
                gc.collect()
                started = time.perf_counter()
                for _ in range(EPOCHS):
                    train()
                if repeat:
                    times[name].append((time.perf_counter() - started) / EPOCHS * 1e3)
    return times


# ------------------------------------------------------- inside the step and between two steps
# The trainer's parts, each added alone to create_supervised_trainer's work, then all together.
PART_ROWS: dict[str, tuple[str, frozenset[str]]] = {
    "trainer": ("ember's trainer, the scheduler stepped by a lambda", frozenset()),
    "running_average": ("+ RunningAverage of the loss", frozenset({"running_average"})),
    "terminate_on_nan": ("+ TerminateOnNan", frozenset({"terminate_on_nan"})),
    "progress_bar": ("+ ProgressBar", frozenset({"progress_bar"})),
    "lr_scheduler": ("LRScheduler instead of the lambda", frozenset({"lr_scheduler"})),
    "all": ("+ all four (stack.py's trainer)", ALL_PARTS),
}
HAND = "hand"
# Small work of no use to the step, done by the hand-written loop between two steps: what it
# does to the step's own time, next to what ember's handlers do to it.
_STATUS = {"epoch": 3, "iteration": 250, "loss": 0.1234, "lr": [0.05, 0.01]}
HAND_ROWS: dict[str, tuple[str, Callable[[], Any] | None]] = {
    HAND: ("hand-written loop (stack.py's)", None),
    "hand_json": (
        "hand-written, + `json.dumps` of a small dict between two steps",
        functools.partial(json.dumps, _STATUS),
    ),
}


class IterationClock:
    """Per-iteration thread CPU times of one row, an epoch at a time: ``iteration`` the
    stretch from one iteration's start to the next (or to the epoch's end), ``step`` the part of
    it inside the step."""

    def __init__(self) -> None:
        self.iterations: list[list[float]] = []
        self.steps: list[list[float]] = []
        self._starts: list[float] = []
        self._steps: list[float] = []

    def epoch_started(self) -> None:
        self._starts, self._steps = [], []

    def iteration_started(self) -> None:
        self._starts.append(time.thread_time())

    def timed_step(self, step: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def timed(engine: Any, batch: Any) -> Any:
            started = time.thread_time()
            output = step(engine, batch)
            self._steps.append(time.thread_time() - started)
            return output

        return timed

    def epoch_completed(self) -> None:
        stamps = [*self._starts, time.thread_time()]
        self.iterations.append([b - a for a, b in itertools.pairwise(stamps)])
        self.steps.append(self._steps)


def hand_epochs(
    work: Work, clock: IterationClock, between: Callable[[], Any] | None
) -> Callable[[], None]:
    """stack.py's hand-written training epoch, timed as :class:`IterationClock` says, calling
    ``between`` (if given) after each scheduler step."""
    model, scheduler = work.model, work.scheduler
    timed_step = clock.timed_step(optimizer_step(work))
    running = math.nan

    def train() -> None:
        nonlocal running
        clock.epoch_started()
        model.train()
        for batch in work.train_data:
            clock.iteration_started()
            loss = timed_step(None, batch)
            scheduler.step()
            if between is not None:
                between()
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(value)
            running = averaged(running, value)
        clock.epoch_completed()

    return train


def trainer_epochs(
    work: Work, clock: IterationClock, parts: frozenset[str], bar_stream: Any
) -> Callable[[], None]:
    """``create_supervised_trainer``'s engine (its step, timed) with ``parts`` of stack.py's
    handlers (a bar writes to ``bar_stream``); one more epoch per call."""
    step = supervised_training_step(work.model, work.optimizer, work.loss_fn, work.device)
    trainer = ember.engine.Engine(clock.timed_step(step))
    events = ember.engine.Events
    trainer.add_event_handler(events.EPOCH_STARTED, lambda _: clock.epoch_started())
    trainer.add_event_handler(events.ITERATION_STARTED, lambda _: clock.iteration_started())
    attach_parts(trainer, work, parts, bar_stream, EMBER_LIBRARY)
    trainer.add_event_handler(events.EPOCH_COMPLETED, lambda _: clock.epoch_completed())
    return epochs_of(trainer, work)


def measure_parts(epochs: int) -> dict[str, IterationClock]:
    """Each row's clock after ``epochs`` epochs per row on one shared work, the rows taking an
    epoch each in turn (the order rotating); the first round warms up and is dropped."""
    clocks = {name: IterationClock() for name in (*HAND_ROWS, *PART_ROWS)}
    with tempfile.TemporaryDirectory() as directory, devnull_stream() as bar_stream:
        work = make_work(FULL, torch.device("cpu"), Path(directory))
        trains = {
            name: hand_epochs(work, clocks[name], between)
            for name, (_, between) in HAND_ROWS.items()
        }
        for name, (_, parts) in PART_ROWS.items():
            trains[name] = trainer_epochs(work, clocks[name], parts, bar_stream)
        names = list(trains)
        for epoch in range(epochs + 1):
            shift = epoch % len(names)
            for name in names[shift:] + names[:shift]:
                trains[name]()
    for clock in clocks.values():
        del clock.iterations[0], clock.steps[0]
    return clocks


def median_us(values: list[float]) -> float:
    return statistics.median(values) * 1e6


def parts_report(clocks: dict[str, IterationClock], epochs: int) -> list[str]:
    """The second table: per row, the median ordinary iteration (neither an epoch's first nor
    its last, where the run's and the epoch's own work falls), the median step and what lies
    between, each against the hand-written loop; and the median epoch."""

    def ordinary(clock: IterationClock) -> list[float]:
        return [t for epoch in clock.iterations for t in epoch[1:-1]]

    def steps(clock: IterationClock) -> list[float]:
        return [t for epoch in clock.steps for t in epoch]

    def epochs_of_clock(clock: IterationClock) -> list[float]:
        return [sum(epoch) for epoch in clock.iterations]

    hand = clocks[HAND]
    hand_iteration, hand_step = median_us(ordinary(hand)), median_us(steps(hand))
    hand_epoch = statistics.median(epochs_of_clock(hand))
    lines = [
        "",
        "## Inside the step and between two steps",
        "",
        (
            f"One shared model, optimizer and data set; {epochs} epochs per row, the rows taking "
            "an epoch each in turn; thread CPU time. The step is `zero_grad` to `optimizer.step` "
            "(`supervised_training_step` for ember's rows, the same lines for the hand-written "
            "loop); *between* is the rest of an iteration: the loop and the handlers, or the "
            "hand-written loop's scheduler step, `loss.item()` and running average. Medians of "
            "the ordinary iterations (not an epoch's first or last); the epoch column sums them all."
        ),
        "",
        "| row | iteration | step | between | step vs hand-written | epoch vs hand-written |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    labels = {name: label for name, (label, _) in (HAND_ROWS | PART_ROWS).items()}
    for name, label in labels.items():
        clock = clocks[name]
        iteration, step = median_us(ordinary(clock)), median_us(steps(clock))
        epoch = statistics.median(epochs_of_clock(clock))
        lines.append(
            f"| {label} | {iteration:.1f} us | {step:.1f} us | {iteration - step:.1f} us | "
            f"{step / hand_step:.3f} | {epoch / hand_epoch:.3f} |"
        )
    lines.append("")
    lines.append(
        f"The hand-written loop: {hand_iteration:.1f} us per ordinary iteration, "
        f"{hand_step:.1f} us of it in the step."
    )
    return lines


def report(times: dict[str, list[float]], repeats: int) -> str:
    base = times["inline"]
    info = machine_info()
    lines = [
        "# Training stack: the floor under its ratio",
        "",
        "Generated by `python benchmarks/stack_floor.py`; the module's docstring says what each",
        (
            "row changes. Training only (100 iterations per epoch, no evaluation, no checkpoint), "
            f"{repeats} repeats of {EPOCHS} epochs per row, interleaved."
        ),
        "",
        f"- Machine: {info['cpu']}, {info['logical_cores']} logical cores, {info['platform']}",
        (
            f"- Python {info['python']}, torch {info['torch']} (1 thread), ember {info['ember']} "
            f"(commit {info['commit']}), {info['date']}"
        ),
        "",
        "| row | per epoch (median) | ratio to the inline loop (median of the repeats) |",
        "|---|---:|---:|",
    ]
    for name, (label, _) in ROWS.items():
        ratio = statistics.median(a / b for a, b in zip(times[name], base, strict=True))
        lines.append(f"| {label} | {statistics.median(times[name]):.2f} ms | {ratio:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--part-epochs", type=int, default=40)
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "docs")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    text = report(measure(args.repeats), args.repeats)
    text += "\n".join(parts_report(measure_parts(args.part_epochs), args.part_epochs)) + "\n"
    print(text)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "benchmark-stack-floor.md").write_text(text)


if __name__ == "__main__":
    sys.exit(main())
