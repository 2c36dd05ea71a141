"""One evaluation pass: ``create_supervised_evaluator`` with Accuracy and Loss against the
hand-written evaluation of benchmarks/stack.py, timed side by side and counted by callgrind.

A pass over 1 batch and over 20 batches tells ember's fixed cost per ``run()`` from its cost per
batch. Before each pass the model is put back in training mode, as the training epochs of the
stack leave it, so both evaluations switch it to evaluation mode.

    python benchmarks/eval_pass.py [--repeats N] [--callgrind] [--backend cpp|python]

Times: medians of interleaved passes (the order alternating), in microseconds. With
``--callgrind`` (needs valgrind) it also counts the user-space instructions of 10 passes of
each (``--toggle-collect=functools_reduce``), repeatable to about 0.1%. It only reports.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from loop_overhead import count_reduce_instructions
from stack import FULL, HandWrittenStack, make_work

import ember.engine
import ember.metrics

BATCH_COUNTS = (1, 20)
CALLGRIND_PASSES = 10


def build(backend: str) -> tuple[Callable[[int], Any], Callable[[int], Any]]:
    """``(hand_written(batches), ember(batches))``: one evaluation pass over the first
    ``batches`` evaluation batches, on the same model and data."""
    torch.set_num_threads(1)
    work = make_work(FULL, torch.device("cpu"), Path(tempfile.gettempdir()))
    hand = HandWrittenStack(work)
    evaluator = ember.engine.create_supervised_evaluator(
        work.model,
        metrics={
            "accuracy": ember.metrics.Accuracy(device=work.device),
            "loss": ember.metrics.Loss(work.loss_fn, device=work.device),
        },
        device=work.device,
        backend=backend,
    )
    all_data = work.eval_data

    def hand_pass(batches: int) -> Any:
        work.model.train()
        work.eval_data = all_data[:batches]
        return hand.evaluate()

    def ember_pass(batches: int) -> Any:
        work.model.train()
        return evaluator.run(all_data[:batches]).metrics

    for batches in BATCH_COUNTS:  # the same values, and a warm-up
        expected, got = hand_pass(batches), ember_pass(batches)
        for name, value in expected.items():
            if abs(got[name] - value) > 1e-9 * max(1.0, abs(value)):
                raise AssertionError(f"{name}: ember {got[name]} vs hand-written {value}")
    return hand_pass, ember_pass


def measure_times(backend: str, repeats: int) -> None:
    hand_pass, ember_pass = build(backend)
    for batches in BATCH_COUNTS:
        times: dict[str, list[float]] = {"hand": [], "ember": []}
        for repeat in range(repeats):
            order = (("hand", hand_pass), ("ember", ember_pass))
            for name, run_pass in order if repeat % 2 else order[::-1]:
                start = time.perf_counter()
                run_pass(batches)
                times[name].append(time.perf_counter() - start)
        hand_us, ember_us = (1e6 * statistics.median(times[name]) for name in ("hand", "ember"))
        print(
            f"{backend} {batches:2d} batches: hand-written {hand_us:7.1f} us  ember "
            f"{ember_us:7.1f} us  ember - hand {ember_us - hand_us:6.1f} us  "
            f"ratio {ember_us / hand_us:.3f}"
        )


def count_instructions(backend: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        counts = {}
        for variant in ("hand", "ember"):
            for batches in BATCH_COUNTS:
                counts[variant, batches] = count_reduce_instructions(
                    Path(directory) / f"{variant}-{batches}.callgrind",
                    __file__,
                    "--backend",
                    backend,
                    "--one-variant",
                    f"{variant}:{batches}",
                )
    for batches in BATCH_COUNTS:
        hand, ours = (counts[v, batches] / CALLGRIND_PASSES for v in ("hand", "ember"))
        print(
            f"{backend} {batches:2d} batches, instructions per pass: hand-written {hand:,.0f}  "
            f"ember {ours:,.0f}  ember - hand {ours - hand:,.0f}"
        )


def run_one_variant(backend: str, spec: str) -> None:
    """The process callgrind counts: ``CALLGRIND_PASSES`` passes inside ``functools.reduce``."""
    variant, batches = spec.split(":")
    hand_pass, ember_pass = build(backend)
    run_pass = hand_pass if variant == "hand" else ember_pass
    functools.reduce(lambda _, __: run_pass(int(batches)), range(CALLGRIND_PASSES + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1000)
    parser.add_argument("--backend", choices=("cpp", "python"), default="cpp")
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--one-variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_variant:
        run_one_variant(args.backend, args.one_variant)
        return
    measure_times(args.backend, args.repeats)
    if args.callgrind:
        count_instructions(args.backend)


if __name__ == "__main__":
    main()
