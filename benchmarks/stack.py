"""Training-stack benchmark: the stack of ignite's tutorials, on ember, on ignite and by hand.

The stack, on a small MLP (64 -> 256 -> 10, batches of 64, 100 training iterations and 20
evaluation batches per epoch, one torch thread): ``create_supervised_trainer``, a
``RunningAverage`` of the loss shown by a ``ProgressBar``, ``TerminateOnNan``, an ``LRScheduler``
stepping every iteration, ``create_supervised_evaluator`` with ``Accuracy`` and ``Loss`` run at
every EPOCH_COMPLETED and a ``ModelCheckpoint`` every epoch. The hand-written loop does the same
work: same model, optimizer and scheduler, a float running average of the loss, a NaN check, the
same evaluation and a ``torch.save`` each epoch. Writes benchmark-stack.md, benchmark-stack.json
and benchmark-stack.png into --out-dir (default docs/).

    python benchmarks/stack.py [--quick] [--device cpu|cuda] [--out-dir DIR]

It only reports: the goal checks print PASS/FAIL, the exit status is 0 either way.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import inspect
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from loop_overhead import REPO_ROOT, devnull_stream, machine_info

import ember.engine
import ember.handlers
import ember.metrics

sys.path.insert(0, str(REPO_ROOT / "tests"))  # the tests' host-sync counter, shared
from syncs import HostSyncCounter

try:
    import ignite.engine
    import ignite.handlers
    import ignite.metrics
except ImportError:
    ignite = None

HAND_WRITTEN, HAND_WRITTEN_DURABLE = "hand-written", "hand-written-durable"
EMBER, EMBER_ASYNC, IGNITE = "ember", "ember-async-ckpt", "ignite"
IMPLS = (HAND_WRITTEN, HAND_WRITTEN_DURABLE, EMBER, EMBER_ASYNC, IGNITE)
INPUTS, HIDDEN, CLASSES, BATCH = 64, 256, 10, 64
ALPHA = 0.98  # RunningAverage's default smoothing, also the hand-written loop's
GOAL_RATIO, GOAL_SYNCS_PER_ITERATION = 1.05, 0.05
TIMES_ONLY = "--times-only"  # a child of measure_in_processes: print measure_times as JSON


@dataclass(frozen=True)
class Sizes:
    train_batches: int
    eval_batches: int
    epochs: int  # per timed run
    repeats: int  # per process
    eval_repeats: int
    processes: int = 1  # fresh processes the repeats run in, one after another


FULL = Sizes(train_batches=100, eval_batches=20, epochs=4, repeats=11, eval_repeats=20, processes=3)
QUICK = Sizes(train_batches=10, eval_batches=4, epochs=3, repeats=1, eval_repeats=2, processes=2)


# ----------------------------------------------------------------------------- the work
@dataclass
class Work:
    """What every implementation trains and evaluates: fresh model, optimizer and scheduler."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: torch.nn.Module
    train_data: list[tuple[torch.Tensor, torch.Tensor]]
    eval_data: list[tuple[torch.Tensor, torch.Tensor]]
    device: torch.device
    checkpoint_dir: Path


def make_data(batches: int, device: torch.device, seed: int) -> list[tuple[torch.Tensor, ...]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(BATCH, INPUTS, generator=generator).to(device),
            torch.randint(0, CLASSES, (BATCH,), generator=generator).to(device),
        )
        for _ in range(batches)
    ]


def make_work(sizes: Sizes, device: torch.device, checkpoint_dir: Path) -> Work:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(INPUTS, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, CLASSES)
    ).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return Work(
        model=model,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.999),
        loss_fn=torch.nn.CrossEntropyLoss(),
        train_data=make_data(sizes.train_batches, device, seed=1),  # type: ignore[arg-type]
        eval_data=make_data(sizes.eval_batches, device, seed=2),  # type: ignore[arg-type]
        device=device,
        checkpoint_dir=checkpoint_dir,
    )


class Stack:
    """One implementation's stack, built on a ``Work``: ``train(epochs)`` and ``evaluate()``.

    Each epoch, once its checkpoint is written, calls :meth:`epoch_ended`, which stamps
    ``epoch_ends`` with ``clock``."""

    def __init__(self, work: Work) -> None:
        self.work = work
        self.clock: Callable[[], float] = time.perf_counter
        self.epoch_ends: list[float] = []

    def epoch_ended(self) -> None:
        self.epoch_ends.append(self.clock())

    def train(self, epochs: int) -> None:
        raise NotImplementedError

    def evaluate(self) -> Any:
        raise NotImplementedError


class HandWrittenStack(Stack):
    """The loop a user writes without a library, doing the stack's work."""

    def __init__(self, work: Work) -> None:
        super().__init__(work)
        self.running_loss: float | None = None
        self.metrics: dict[str, float] = {}
        self.epoch = 0

    def train(self, epochs: int) -> None:
        work = self.work
        previous: Path | None = None
        for _ in range(epochs):
            self.epoch += 1
            if not self.train_epoch():
                return
            self.metrics = self.evaluate()
            path = work.checkpoint_dir / f"model_{self.epoch}.pt"
            self.save({"model": work.model.state_dict()}, path)
            if previous is not None:
                previous.unlink()
            previous = path
            self.epoch_ended()

    def save(self, checkpoint: dict[str, Any], path: Path) -> None:
        torch.save(checkpoint, path)

    def train_epoch(self) -> bool:
        """One epoch of training; False if a loss was not finite."""
        work = self.work
        model, optimizer, scheduler, loss_fn = (
            work.model,
            work.optimizer,
            work.scheduler,
            work.loss_fn,
        )
        model.train()
        for x, y in work.train_data:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            scheduler.step()
            value = loss.item()
            if not math.isfinite(value):
                return False
            self.running_loss = (
                value
                if self.running_loss is None
                else ALPHA * self.running_loss + (1 - ALPHA) * value
            )
        return True

    def evaluate(self) -> dict[str, float]:
        work = self.work
        work.model.eval()
        correct = torch.zeros((), dtype=torch.long, device=work.device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=work.device)
        count = 0
        with torch.inference_mode():
            for x, y in work.eval_data:
                y_pred = work.model(x)
                correct += (y_pred.argmax(dim=1) == y).sum()
                loss_sum += work.loss_fn(y_pred, y) * len(y)
                count += len(y)
        return {"accuracy": correct.item() / count, "loss": loss_sum.item() / count}


class DurableHandWrittenStack(HandWrittenStack):
    """The hand-written loop with the guarantee ember's ``ModelCheckpoint`` gives by default,
    written the plain way: a temporary file ``fsync``\\ ed, renamed onto the final name, the
    directory ``fsync``\\ ed, then the previous file removed (all in the loop; ember does the
    ``fsync``\\ s in a background thread)."""

    def save(self, checkpoint: dict[str, Any], path: Path) -> None:
        temporary = path.with_name(f".{path.name}.tmp")
        with temporary.open("wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


# The handlers of the stack's trainer, by name.
ALL_PARTS = frozenset({"running_average", "terminate_on_nan", "progress_bar", "lr_scheduler"})


def attach_parts(
    trainer: Any, work: Work, parts: frozenset[str], bar_stream: Any, lib: SimpleNamespace
) -> Any:
    """Attach ``parts`` of the stack's trainer handlers, from ``lib``'s modules (a bar writes to
    ``bar_stream``; without the ``LRScheduler``, a lambda steps the scheduler); return the bar,
    if any. The running average accumulates on the training device, as a GPU user would set it
    up."""
    events, handlers = lib.engine.Events, lib.handlers
    if "running_average" in parts:
        lib.metrics.RunningAverage(output_transform=lambda loss: loss, device=work.device).attach(
            trainer, "loss"
        )
    bar = None
    if "progress_bar" in parts:
        bar = handlers.ProgressBar(file=bar_stream)
        bar.attach(trainer, metric_names=["loss"] if "running_average" in parts else None)
    if "terminate_on_nan" in parts:
        trainer.add_event_handler(events.ITERATION_COMPLETED, handlers.TerminateOnNan())
    if "lr_scheduler" in parts:
        trainer.add_event_handler(events.ITERATION_STARTED, handlers.LRScheduler(work.scheduler))
    else:
        trainer.add_event_handler(events.ITERATION_COMPLETED, lambda _: work.scheduler.step())
    return bar


class EngineStack(Stack):
    """The tutorial stack on a library's engine (``lib`` names its modules)."""

    def __init__(
        self,
        work: Work,
        lib: SimpleNamespace,
        bar_stream: Any,
        checkpoint_options: dict[str, Any],
    ) -> None:
        super().__init__(work)
        engine, handlers, metrics = lib.engine, lib.handlers, lib.metrics
        events = engine.Events
        trainer = engine.create_supervised_trainer(
            work.model, work.optimizer, work.loss_fn, device=work.device
        )
        self.progress_bar = attach_parts(trainer, work, ALL_PARTS, bar_stream, lib)
        # The metrics accumulate on the training device, as a GPU user would set them up.
        device = work.device
        self.evaluator = engine.create_supervised_evaluator(
            work.model,
            metrics={
                "accuracy": metrics.Accuracy(device=device),
                "loss": metrics.Loss(work.loss_fn, device=device),
            },
            device=work.device,
        )
        trainer.add_event_handler(events.EPOCH_COMPLETED, lambda _: self.evaluate())
        checkpoint = handlers.ModelCheckpoint(
            str(work.checkpoint_dir), "stack", n_saved=1, require_empty=False, **checkpoint_options
        )
        trainer.add_event_handler(events.EPOCH_COMPLETED, checkpoint, {"model": work.model})
        trainer.add_event_handler(events.EPOCH_COMPLETED, lambda _: self.epoch_ended())
        self.trainer = trainer
        self.epochs_done = 0

    def train(self, epochs: int) -> None:
        self.epochs_done += epochs
        self.trainer.run(self.work.train_data, max_epochs=self.epochs_done)

    def evaluate(self) -> Any:
        return self.evaluator.run(self.work.eval_data).metrics


EMBER_LIBRARY = SimpleNamespace(engine=ember.engine, handlers=ember.handlers, metrics=ember.metrics)
# implementation -> (library, ModelCheckpoint's extra options)
LIBRARIES: dict[str, tuple[SimpleNamespace, dict[str, Any]]] = {EMBER: (EMBER_LIBRARY, {})}
if "async_save" in inspect.signature(ember.handlers.ModelCheckpoint).parameters:
    LIBRARIES[EMBER_ASYNC] = (EMBER_LIBRARY, {"async_save": True})
if ignite is not None:
    LIBRARIES[IGNITE] = (
        SimpleNamespace(engine=ignite.engine, handlers=ignite.handlers, metrics=ignite.metrics),
        {},
    )


@contextlib.contextmanager
def built_stack(impl: str, sizes: Sizes, device: torch.device) -> Iterator[Stack]:
    with tempfile.TemporaryDirectory() as directory:
        work = make_work(sizes, device, Path(directory))
        if impl == HAND_WRITTEN:
            yield HandWrittenStack(work)
        elif impl == HAND_WRITTEN_DURABLE:
            yield DurableHandWrittenStack(work)
        else:
            library, checkpoint_options = LIBRARIES[impl]
            yield EngineStack(work, library, devnull_stream(), checkpoint_options)


# ----------------------------------------------------------------------------- measuring
def synchronized_clock(device: torch.device) -> Callable[[], float]:
    """A clock that first waits for the device, so that a time covers the work queued on it."""
    if device.type == "cuda":

        def clock() -> float:
            torch.cuda.synchronize(device)
            return time.perf_counter()

        return clock
    return time.perf_counter


def split_run(start: float, epoch_ends: list[float], end: float) -> tuple[float, float]:
    """``(seconds per epoch inside the run, seconds once per run)`` of a run timed from ``start``
    to ``end`` whose epochs ended at ``epoch_ends``: the mean epoch from the first epoch's end
    to the last but one's (the run's start and its end fall outside), then the rest of the
    run's time. Needs three epochs or more."""
    epochs = len(epoch_ends)
    if epochs < 3:
        raise ValueError(f"a run of {epochs} epochs has no epoch inside it")
    inside = (epoch_ends[-2] - epoch_ends[0]) / (epochs - 2)
    return inside, (end - start) - epochs * inside


def measure_times(
    impls: list[str], sizes: Sizes, device: torch.device
) -> dict[str, dict[str, list[float]]]:
    """Seconds per epoch (over the run, and inside it), once per run and per evaluation pass,
    interleaved: ``for repeat: for impl``."""
    clock = synchronized_clock(device)
    times: dict[str, dict[str, list[float]]] = {
        impl: {"epoch": [], "epoch_inside": [], "per_run": [], "epoch_cpu": [], "eval": []}
        for impl in impls
    }
    for repeat in range(sizes.repeats + 1):  # repeat 0 warms up and is not kept
        order = impls[repeat % len(impls) :] + impls[: repeat % len(impls)]
        for impl in order:
            with built_stack(impl, sizes, device) as stack:
                stack.clock = clock
                gc.collect()
                start, start_cpu = clock(), time.process_time()
                stack.train(sizes.epochs)
                end = clock()
                epoch_seconds = (end - start) / sizes.epochs
                epoch_cpu_seconds = (time.process_time() - start_cpu) / sizes.epochs
                epoch_inside, per_run = split_run(start, stack.epoch_ends, end)
                eval_seconds = []
                for _ in range(sizes.eval_repeats):
                    start = clock()
                    stack.evaluate()
                    eval_seconds.append(clock() - start)
            if repeat:
                times[impl]["epoch"].append(epoch_seconds)
                times[impl]["epoch_inside"].append(epoch_inside)
                times[impl]["per_run"].append(per_run)
                times[impl]["epoch_cpu"].append(epoch_cpu_seconds)
                times[impl]["eval"].append(min(eval_seconds))
    return times


def measure_in_processes(
    impls: list[str], sizes: Sizes, device: torch.device, quick: bool
) -> dict[str, dict[str, list[float]]]:
    """:func:`measure_times` in ``sizes.processes`` fresh processes, one after another, their
    repeats pooled (each repeat's times stay together, so that the paired ratios pair them).

    Each process lays out its heap and its dicts its own way (its own string hash seed), and on
    this machine the ratio moves by a few percent from one process to the next: pooled, no one
    process decides the median."""
    pooled: dict[str, dict[str, list[float]]] = {}
    for seed in range(sizes.processes):
        command = [sys.executable, __file__, "--device", device.type, TIMES_ONLY]
        command += ["--quick"] if quick else []
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        child = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env, check=True)
        for impl, measured in json.loads(child.stdout).items():
            for key, values in measured.items():
                pooled.setdefault(impl, {}).setdefault(key, []).extend(values)
    return pooled


def count_syncs(
    impl: str, sizes: Sizes, device: torch.device, epoch_seconds: float, epochs: int = 2
) -> dict[str, float]:
    """Host syncs over ``epochs`` epochs of training (evaluation and checkpoint included) and
    over one evaluation pass; per training iteration excludes the evaluation passes.

    Counting slows every operation down, and ember's progress bar reads the running loss when it
    redraws, every ``mininterval`` seconds: a first counted epoch measures the slowdown, and the
    bar's ``mininterval`` is stretched by it, so that the bar redraws as often per iteration as
    in the timed runs (``epoch_seconds`` per epoch)."""
    with built_stack(impl, sizes, device) as stack:
        bar = getattr(stack, "progress_bar", None)
        if bar is not None and hasattr(bar, "mininterval"):
            start = time.perf_counter()
            with HostSyncCounter():
                stack.train(1)
            slowdown = (time.perf_counter() - start) / epoch_seconds
            bar.mininterval *= max(slowdown, 1.0)
        with HostSyncCounter() as run_counter:
            stack.train(epochs)
        with HostSyncCounter() as eval_counter:
            stack.evaluate()
    iterations = epochs * sizes.train_batches
    return {
        "per_epoch": run_counter.count / epochs,
        "per_eval_pass": eval_counter.count,
        "per_training_iteration": (run_counter.count - epochs * eval_counter.count) / iterations,
    }


def summary(values: list[float]) -> dict[str, float]:
    return {"min_ms": 1e3 * min(values), "median_ms": 1e3 * statistics.median(values)}


def paired_ratios(values: list[float], base: list[float]) -> dict[str, float]:
    """The ratios of the repeats (``values[i] / base[i]``, measured in the same repeat):
    median and quartiles, which show how far one repeat's ratio moves on this machine."""
    if len(values) < 2:
        ratio = values[0] / base[0]
        return {"median": ratio, "q1": ratio, "q3": ratio}
    ratios = [value / reference for value, reference in zip(values, base, strict=True)]
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return {"median": median, "q1": q1, "q3": q3}


def build_results(
    times: dict[str, dict[str, list[float]]], syncs: dict[str, dict[str, float]]
) -> dict[str, dict[str, Any]]:
    base = summary(times[HAND_WRITTEN]["epoch"])
    base_inside = summary(times[HAND_WRITTEN]["epoch_inside"])
    base_cpu = summary(times[HAND_WRITTEN]["epoch_cpu"])
    results = {}
    for impl, measured in times.items():
        epoch, epoch_cpu = summary(measured["epoch"]), summary(measured["epoch_cpu"])
        epoch_inside = summary(measured["epoch_inside"])
        results[impl] = {
            "repeats": len(measured["epoch"]),  # pooled over the processes
            "epoch": epoch,
            "epoch_inside": epoch_inside,
            "inside_ratio_median": epoch_inside["median_ms"] / base_inside["median_ms"],
            "per_run": summary(measured["per_run"]),
            "epoch_cpu": epoch_cpu,
            "eval_pass": summary(measured["eval"]),
            "ratio_min": epoch["min_ms"] / base["min_ms"],
            "ratio_median": epoch["median_ms"] / base["median_ms"],
            "ratio_paired": paired_ratios(measured["epoch"], times[HAND_WRITTEN]["epoch"]),
            "cpu_ratio_min": epoch_cpu["min_ms"] / base_cpu["min_ms"],
            "cpu_ratio_median": epoch_cpu["median_ms"] / base_cpu["median_ms"],
            "syncs": syncs[impl],
        }
        if HAND_WRITTEN_DURABLE in times:
            durable = summary(times[HAND_WRITTEN_DURABLE]["epoch"])
            results[impl]["ratio_to_durable_median"] = epoch["median_ms"] / durable["median_ms"]
    return results


# ----------------------------------------------------------------------------- reporting
def goal_lines(results: dict[str, dict[str, Any]]) -> list[str]:
    checks = []
    for impl in (EMBER, EMBER_ASYNC):
        if impl not in results:
            continue
        ours = results[impl]
        checks.append(
            (
                f"{impl} stack <= {GOAL_RATIO}x the hand-written loop (median)",
                (
                    f"{ours['ratio_median']:.3f} (on minimums {ours['ratio_min']:.3f}; CPU time "
                    f"{ours['cpu_ratio_median']:.3f}, on minimums {ours['cpu_ratio_min']:.3f})"
                ),
                ours["ratio_median"] <= GOAL_RATIO,
            )
        )
    ours = results[EMBER]
    facts = []
    facts.append(
        f"INFO ember per epoch inside a run vs the hand-written loop (median): "
        f"{ours['inside_ratio_median']:.3f}; once per run: ember "
        f"{ours['per_run']['median_ms']:.2f} ms, the hand-written loop "
        f"{results[HAND_WRITTEN]['per_run']['median_ms']:.2f} ms"
    )
    if "ratio_to_durable_median" in ours:
        facts.append(
            f"INFO ember stack vs the hand-written loop with durable saves (median): "
            f"{ours['ratio_to_durable_median']:.3f}; that loop vs the plain one: "
            f"{results[HAND_WRITTEN_DURABLE]['ratio_median']:.3f}"
        )
    checks += [
        (
            f"ember <= {GOAL_SYNCS_PER_ITERATION} host syncs per training iteration",
            f"{ours['syncs']['per_training_iteration']:.3f}",
            ours["syncs"]["per_training_iteration"] <= GOAL_SYNCS_PER_ITERATION,
        ),
        (
            "ember <= 1 host sync per metric per evaluation pass (2 metrics)",
            f"{ours['syncs']['per_eval_pass']:.0f}",
            ours["syncs"]["per_eval_pass"] <= 2,
        ),
    ]
    return [f"{'PASS' if ok else 'FAIL'} {text}: {value}" for text, value, ok in checks] + facts


def results_table(results: dict[str, dict[str, Any]]) -> str:
    rows = [
        ("wall time per epoch, median (min)", lambda r: _ms(r["epoch"])),
        (
            "ratio vs hand-written, median (min)",
            lambda r: f"{r['ratio_median']:.2f}x ({r['ratio_min']:.2f}x)",
        ),
        (
            "ratio of each repeat vs its hand-written run: median [quartiles]",
            lambda r: (
                f"{r['ratio_paired']['median']:.3f} "
                f"[{r['ratio_paired']['q1']:.3f}, {r['ratio_paired']['q3']:.3f}]"
            ),
        ),
        ("per epoch inside a run, median (min)", lambda r: _ms(r["epoch_inside"])),
        ("its ratio vs hand-written, median", lambda r: f"{r['inside_ratio_median']:.2f}x"),
        ("once per run, median", lambda r: f"{r['per_run']['median_ms']:.2f} ms"),
        ("CPU time per epoch (this process), median (min)", lambda r: _ms(r["epoch_cpu"])),
        (
            "CPU-time ratio vs hand-written, median (min)",
            lambda r: f"{r['cpu_ratio_median']:.2f}x ({r['cpu_ratio_min']:.2f}x)",
        ),
        ("one evaluation pass, median (min)", lambda r: _ms(r["eval_pass"])),
        ("host syncs per evaluation pass", lambda r: f"{r['syncs']['per_eval_pass']:.0f}"),
        (
            "host syncs per training iteration",
            lambda r: f"{r['syncs']['per_training_iteration']:.2f}",
        ),
    ]
    impls = [impl for impl in IMPLS if impl in results]
    lines = [
        "| per epoch | " + " | ".join(impls) + " |",
        "|---|" + "---:|" * len(impls),
    ]
    lines += [
        f"| {label} | " + " | ".join(cell(results[impl]) for impl in impls) + " |"
        for label, cell in rows
    ]
    return "\n".join(lines)


def _ms(stats: dict[str, float]) -> str:
    return f"{stats['median_ms']:.2f} ms ({stats['min_ms']:.2f})"


def render_markdown(report: dict[str, Any], table: str, goals: list[str]) -> str:
    machine, settings = report["machine"], report["settings"]
    command = "python benchmarks/stack.py" + (" --quick" if settings["quick"] else "")
    command += f" --device {settings['device']}" if settings["device"] != "cpu" else ""
    kind = "quick smoke run, not representative" if settings["quick"] else "full run"
    return f"""# Training-stack benchmark

Generated by `{command}` ({kind}); every run overwrites this file, `benchmark-stack.json`
and `benchmark-stack.png`.

- Machine: {machine["cpu"]}, {machine["logical_cores"]} logical cores, {machine["platform"]}
- Device: {settings["device"]}; Python {machine["python"]}, torch {machine["torch"]}
  ({machine["torch_threads"]} thread), pytorch-ignite {machine["ignite"] or "not installed"},
  ember {machine["ember"]} (commit {machine["commit"]})
- Date: {machine["date"]}

## What runs

The stack of ignite's tutorials on an MLP {INPUTS} → {HIDDEN} → {CLASSES}, batches of {BATCH},
{settings["train_batches"]} training iterations and {settings["eval_batches"]} evaluation
batches per epoch: `create_supervised_trainer`, `RunningAverage` of the loss shown by a
`ProgressBar`, `TerminateOnNan`, an `LRScheduler` (torch's `ExponentialLR`) stepping every
iteration, `create_supervised_evaluator` with `Accuracy` and `Loss` run at every
`EPOCH_COMPLETED`, and a `ModelCheckpoint` every epoch. ember's stack uses ember's classes,
ignite's uses ignite's, with the same code. The **hand-written** loop does the same work:
same model, SGD optimizer and scheduler, a float running average of the loss (`loss.item()`),
a NaN check, the same evaluation and a `torch.save` of the model each epoch (the previous
file removed, as `ModelCheckpoint(n_saved=1)` does).

ember's `ModelCheckpoint` writes durably: it `fsync`s the file and its directory (in a
background thread, after the file is renamed into place; the previous file is deleted once the
new one is durable), so that a crash never leaves a partial or missing checkpoint; ignite and
the hand-written loop do not. The **hand-written-durable** column is the hand-written loop
with that guarantee, written the plain way: a temporary file `fsync`ed, renamed onto the final
name, the directory `fsync`ed, then the previous file removed, in the loop. The goal is checked
against the plain hand-written loop; the INFO line gives ember against the durable one.
Where ember's `ModelCheckpoint` has `async_save`, the **ember-async-ckpt** column runs the same
stack with `ModelCheckpoint(..., async_save=True)`: the state is copied in the loop and written
(and `fsync`ed) by a background thread.

## Results

{table}

```
{chr(10).join(goals)}
```

## How it is measured

All implementations run in one process, interleaved (`for repeat: for implementation`, the
order rotating each repeat) so that a busy phase of the machine hits all alike;
{settings["repeats"]} repeats after one warm-up round. {settings["processes"]} such processes run
one after another, each with its own string hash seed (`PYTHONHASHSEED`), and their repeats are
pooled: each process lays out its memory its own way, and on this machine the ratio moves by a
few percent from one process to the next, so no one process decides the medians. Each repeat
builds a fresh stack (not
timed), trains {settings["epochs"]} epochs (timed, divided by the number of epochs: the
evaluation and checkpoint of each epoch included), then times
{settings["eval_repeats"]} evaluation passes alone and keeps the fastest. `gc.collect()` runs
before each measurement. On a GPU each time waits for the device first.

Host syncs (the host waiting for a tensor's value: `.item()`, `float(t)`, `bool(t)`, a copy to
the CPU) are counted in a separate run, with the tests' `TorchDispatchMode` counter
(`tests/syncs.py`: scalar reads, device-to-CPU copies, operations whose output size depends on
the data): per evaluation pass, and
per training iteration over two epochs with the evaluation passes taken out (the handlers'
epoch-end reads included). ember's progress bar reads the running loss when it redraws (every
0.1 s and when it closes at the end of each epoch), so its share depends on time; counting slows
every operation down, so a first counted epoch measures the slowdown and the bar's `mininterval`
is stretched by it: the bar then redraws as often per iteration as in the timed runs. All other
counts are fixed by the code.

The ratio of each repeat is that repeat's epoch time over the hand-written loop's in the same
repeat; its quartiles show how far the ratio moves from one repeat to the next on this machine.

Each stack also stamps the end of each epoch, once its checkpoint is written (a handler added
last to ember's and ignite's trainers, a line after the save in the hand-written loops). The
time from the first epoch's end to the last but one's, divided by the epochs between, is the
**epoch inside a run**: neither the run's start (the engine's setup, the handlers' first calls,
the first optimizer step's state) nor its end falls in it. What is left of the run's time is
**once per run**. A run's end is where ember's `ModelCheckpoint` waits for the `fsync`s its
durability thread has not done yet (saves of the last second are made durable together), so
that the checkpoints are durable when `run()` returns; a longer run pays it over more epochs.

The CPU time row is this process's CPU time (`time.process_time`, all threads): on a machine
shared with other work it varies less than the wall time, but it leaves out waits (an `fsync`,
the GPU).

How much of the ratio the hand-written loop itself pays when it keeps its losses as tensors,
adds them up on their device, or runs its step from C, and how far its time moves with nothing
more than where its code runs, and how much of ember's extra time per iteration is spent inside
the step itself rather than between two steps: [the floor under the ratio](benchmark-stack-floor.md).
Where the extra instructions go, part by part: [instructions per part](benchmark-stack-parts.md).
"""


def plot(results: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {
        HAND_WRITTEN: "#7f7f7f",
        HAND_WRITTEN_DURABLE: "#b5b5b5",
        EMBER: "#d62728",
        EMBER_ASYNC: "#ff9f40",
        IGNITE: "#1f77b4",
    }
    impls = [impl for impl in IMPLS if impl in results]
    panels = (
        ("wall time per epoch (ms)", lambda r: r["epoch"]["median_ms"], lambda r: r["epoch"]),
        (
            "CPU time per epoch (ms)",
            lambda r: r["epoch_cpu"]["median_ms"],
            lambda r: r["epoch_cpu"],
        ),
        (
            "one evaluation pass (ms)",
            lambda r: r["eval_pass"]["median_ms"],
            lambda r: r["eval_pass"],
        ),
        ("host syncs per training iteration", lambda r: r["syncs"]["per_training_iteration"], None),
        ("host syncs per evaluation pass", lambda r: r["syncs"]["per_eval_pass"], None),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(19, 5))
    for ax, (label, value_of, stats_of) in zip(axes, panels, strict=True):
        values = [value_of(results[impl]) for impl in impls]
        ax.bar(impls, values, color=[colors[impl] for impl in impls])
        for x, (impl, value) in enumerate(zip(impls, values, strict=True)):
            ax.annotate(
                f"{value:.2f}",
                (x, value),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 2),
                textcoords="offset points",
            )
            if stats_of is not None:
                ax.plot(x, stats_of(results[impl])["min_ms"], marker="_", color="black", ms=14)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
        ax.set_title(label, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.15)
    fig.suptitle(title + " (bars: median; ticks: minimum)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: tiny epochs, one repeat in each of two processes (seconds)",
    )
    parser.add_argument(
        "--device", default="cpu", choices=("cpu", "cuda"), help="where to train (default: cpu)"
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=REPO_ROOT / "docs",
        help="where benchmark-stack.{md,json,png} go (default: docs/)",
    )
    parser.add_argument(TIMES_ONLY, action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "--device cuda: torch sees no CUDA device here; run on CPU (the default)",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(1)
    device = torch.device(args.device)
    sizes = QUICK if args.quick else FULL
    impls = [
        impl for impl in IMPLS if impl in (HAND_WRITTEN, HAND_WRITTEN_DURABLE) or impl in LIBRARIES
    ]
    if args.times_only:
        print(json.dumps(measure_times(impls, sizes, device)))
        return 0
    print(
        f"stack on {device}: {len(impls)} implementations, {sizes.processes} processes of "
        f"{sizes.repeats} repeats of {sizes.epochs} epochs ...",
        file=sys.stderr,
        flush=True,
    )
    times = measure_in_processes(impls, sizes, device, args.quick)
    syncs = {
        impl: count_syncs(impl, sizes, device, statistics.median(times[impl]["epoch"]))
        for impl in impls
    }
    results = build_results(times, syncs)
    goals = goal_lines(results)
    report = {
        "machine": machine_info(),
        "settings": {
            "quick": args.quick,
            "device": args.device,
            "train_batches": sizes.train_batches,
            "eval_batches": sizes.eval_batches,
            "epochs": sizes.epochs,
            "repeats": sizes.repeats,
            "processes": sizes.processes,
            "eval_repeats": sizes.eval_repeats,
        },
        "results": results,
        "goals": goals,
        "notes": [] if ignite is not None else ["pytorch-ignite is not importable: skipped."],
    }
    table = results_table(results)
    print("\n" + table + "\n\n" + "\n".join(goals))

    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "benchmark-stack.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out_dir / "benchmark-stack.md").write_text(render_markdown(report, table, goals))
    plot(
        results,
        args.out_dir / "benchmark-stack.png",
        f"Training stack per epoch on {args.device} — {report['machine']['cpu']}",
    )
    print(
        f"\nwrote benchmark-stack.md, benchmark-stack.json, benchmark-stack.png to {args.out_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
