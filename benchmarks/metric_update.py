"""What one ``update()`` of each ember metric costs, against the bare torch ops that compute the
same thing, and how many host syncs an evaluation pass costs per metric.

Each metric is timed side by side with its bare ops (a hand-written accumulation: argmax, eq and
sum for Accuracy, the loss times n for Loss, bincount for ConfusionMatrix, ...) on the same batch,
interleaved in rounds; the ratio of the minimums (and of the medians) is printed. The goal: every
ratio <= 1.5. Syncs are counted by dispatch (``tests/syncs.py``'s ``HostSyncCounter``) over a pass of
``--batches`` updates and one ``compute()``; the goal: at most one per metric.

    python benchmarks/metric_update.py               # writes docs/benchmark-metrics.{md,json}
    python benchmarks/metric_update.py --quick --out-dir /tmp/x

CPU only (1 torch thread by default); GPU figures are not measured by this script.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))
sys.path.insert(0, str(ROOT / "tests"))  # the tests' host-sync counter, shared

from ember import metrics as M  # noqa: E402, N812 - short, as in the table of cases
from syncs import HostSyncCounter  # noqa: E402

GOAL = 1.5
BATCH, CLASSES, LABELS = 64, 10, 5


@dataclass
class Case:
    """A metric on one kind of input, and the bare ops that accumulate the same value."""

    name: str
    make: Callable[[], Any]
    data: Callable[[torch.Generator], tuple[Any, ...]]
    bare: Callable[[], Callable[[Any], None]]


def _multiclass(g: torch.Generator) -> tuple[Any, ...]:
    return torch.randn(BATCH, CLASSES, generator=g), torch.randint(
        0, CLASSES, (BATCH,), generator=g
    )


def _binary(g: torch.Generator) -> tuple[Any, ...]:
    return torch.randint(0, 2, (BATCH,), generator=g), torch.randint(0, 2, (BATCH,), generator=g)


def _multilabel(g: torch.Generator) -> tuple[Any, ...]:
    shape = (BATCH, LABELS)
    return torch.randint(0, 2, shape, generator=g), torch.randint(0, 2, shape, generator=g)


def _regression(g: torch.Generator) -> tuple[Any, ...]:
    return torch.randn(BATCH, generator=g), torch.randn(BATCH, generator=g)


class _Sum:
    """A device accumulator and a host count, as a hand-written evaluation loop keeps them."""

    def __init__(self, *shape: int, dtype: torch.dtype = torch.int64) -> None:
        self.total = torch.zeros(shape, dtype=dtype)
        self.count = 0


def _bare_accuracy_multiclass() -> Callable[[Any], None]:
    acc = _Sum()

    def bare(output: Any) -> None:
        y_pred, y = output
        acc.total += (y_pred.argmax(dim=1) == y).sum()
        acc.count += y.shape[0]

    return bare


def _bare_accuracy_binary() -> Callable[[Any], None]:
    acc = _Sum()

    def bare(output: Any) -> None:
        y_pred, y = output
        acc.total += (y_pred == y).sum()
        acc.count += y.shape[0]

    return bare


def _bare_accuracy_multilabel() -> Callable[[Any], None]:
    acc = _Sum()

    def bare(output: Any) -> None:
        y_pred, y = output
        acc.total += (y_pred == y).all(dim=1).sum()
        acc.count += y.shape[0]

    return bare


def _bare_counts_multiclass() -> Callable[[Any], None]:
    """Per-class true, predicted and actual positives: a bincount of (true, predicted) pairs."""
    acc = _Sum(CLASSES * CLASSES)

    def bare(output: Any) -> None:
        y_pred, y = output
        acc.total += torch.bincount(y * CLASSES + y_pred.argmax(dim=1), minlength=CLASSES**2)
        acc.count += y.shape[0]

    return bare


def _bare_counts_binary() -> Callable[[Any], None]:
    acc = _Sum(4)

    def bare(output: Any) -> None:
        y_pred, y = output
        acc.total += torch.bincount(y * 2 + y_pred, minlength=4)
        acc.count += y.shape[0]

    return bare


def _bare_counts_multilabel() -> Callable[[Any], None]:
    acc = _Sum(3, LABELS)

    def bare(output: Any) -> None:
        y_pred, y = output
        acc.total += torch.stack((y_pred * y, y_pred, y)).sum(dim=1)
        acc.count += y.shape[0]

    return bare


def _bare_topk() -> Callable[[Any], None]:
    acc = _Sum()

    def bare(output: Any) -> None:
        y_pred, y = output
        acc.total += (y_pred.topk(3, dim=1).indices == y[:, None]).any(dim=1).sum()
        acc.count += y.shape[0]

    return bare


def _bare_error(error: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], Any]:
    def make() -> Callable[[Any], None]:
        acc = _Sum(dtype=torch.float64)

        def bare(output: Any) -> None:
            y_pred, y = output
            acc.total += error(y_pred - y).sum()
            acc.count += y.shape[0]

        return bare

    return make


def _bare_loss() -> Callable[[Any], None]:
    acc = _Sum(dtype=torch.float64)

    def bare(output: Any) -> None:
        y_pred, y = output
        acc.total += torch.nn.functional.cross_entropy(y_pred, y) * y.shape[0]
        acc.count += y.shape[0]

    return bare


def _bare_average() -> Callable[[Any], None]:
    acc = _Sum(dtype=torch.float64)

    def bare(output: Any) -> None:
        acc.total += output
        acc.count += 1

    return bare


def _bare_running() -> Callable[[Any], None]:
    state: dict[str, Any] = {"value": torch.zeros(())}

    def bare(output: Any) -> None:
        state["value"] = torch.lerp(output, state["value"], 0.98)

    return bare


def _loss_value(g: torch.Generator) -> Any:
    """A float32 0-d tensor, as a loss."""
    return torch.rand((), generator=g)


def _cases() -> list[Case]:
    ce = torch.nn.functional.cross_entropy
    return [
        Case("Accuracy multiclass", M.Accuracy, _multiclass, _bare_accuracy_multiclass),
        Case("Accuracy binary", M.Accuracy, _binary, _bare_accuracy_binary),
        Case(
            "Accuracy multilabel",
            lambda: M.Accuracy(is_multilabel=True),
            _multilabel,
            _bare_accuracy_multilabel,
        ),
        Case("Precision multiclass", M.Precision, _multiclass, _bare_counts_multiclass),
        Case(
            "Precision macro multiclass",
            lambda: M.Precision(average=True),
            _multiclass,
            _bare_counts_multiclass,
        ),
        Case("Precision binary", M.Precision, _binary, _bare_counts_binary),
        Case("Recall multiclass", M.Recall, _multiclass, _bare_counts_multiclass),
        Case(
            "Recall multilabel",
            lambda: M.Recall(is_multilabel=True),
            _multilabel,
            _bare_counts_multilabel,
        ),
        Case(
            "ConfusionMatrix",
            lambda: M.ConfusionMatrix(CLASSES),
            _multiclass,
            _bare_counts_multiclass,
        ),
        Case(
            "TopKCategoricalAccuracy k=3",
            lambda: M.TopKCategoricalAccuracy(3),
            _multiclass,
            _bare_topk,
        ),
        Case("MeanSquaredError", M.MeanSquaredError, _regression, _bare_error(torch.square)),
        Case("MeanAbsoluteError", M.MeanAbsoluteError, _regression, _bare_error(torch.abs)),
        Case("Loss (cross entropy)", lambda: M.Loss(ce), _multiclass, _bare_loss),
        Case("Average", M.Average, _loss_value, _bare_average),
        Case(
            "RunningAverage",
            lambda: M.RunningAverage(output_transform=lambda loss: loss),
            _loss_value,
            _bare_running,
        ),
    ]


def _time_calls(function: Callable[[Any], None], output: Any, calls: int) -> float:
    """Seconds per call over ``calls`` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        function(output)
    return (time.perf_counter() - start) / calls


def _measure(case: Case, rounds: int, calls: int) -> dict[str, Any]:
    output = case.data(torch.Generator().manual_seed(0))
    metric = case.make()
    bare = case.bare()
    update = metric.update
    with torch.no_grad():
        for function in (update, bare):  # warm-up
            _time_calls(function, output, calls)
        ember_times, bare_times = [], []
        for round_index in range(rounds):
            pair = [(ember_times, update), (bare_times, bare)]
            if round_index % 2:  # alternate which goes first
                pair.reverse()
            for times, function in pair:
                times.append(_time_calls(function, output, calls))
    ember_min, bare_min = min(ember_times), min(bare_times)
    ember_median, bare_median = statistics.median(ember_times), statistics.median(bare_times)
    # Each round's two timings are neighbours in time: their ratio sees the same machine load.
    paired = statistics.median(e / b for e, b in zip(ember_times, bare_times, strict=True))
    return {
        "ember_us_min": ember_min * 1e6,
        "bare_us_min": bare_min * 1e6,
        "ember_us_median": ember_median * 1e6,
        "bare_us_median": bare_median * 1e6,
        "ratio_min": ember_min / bare_min,
        "ratio_median": ember_median / bare_median,
        "ratio_paired": paired,
    }


def _syncs_per_pass(case: Case, batches: int) -> int:
    """Host syncs of ``batches`` updates and one compute, on fresh batches."""
    generator = torch.Generator().manual_seed(1)
    data = [case.data(generator) for _ in range(batches)]
    metric = case.make()
    with torch.no_grad(), HostSyncCounter() as syncs:
        metric.reset()
        for output in data:
            metric.update(output)
        metric.compute()
    return syncs.count


def _table(results: dict[str, dict[str, Any]], batches: int) -> list[str]:
    lines = [
        (
            f"| metric (batch {BATCH}) | update, µs (min) | bare ops, µs (min) | ratio of mins | "
            f"ratio of medians | median of paired ratios | syncs per pass of {batches} batches |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in results.items():
        lines.append(
            f"| {name} | {row['ember_us_min']:.2f} | {row['bare_us_min']:.2f} | "
            f"{row['ratio_min']:.2f} | {row['ratio_median']:.2f} | {row['ratio_paired']:.2f} | "
            f"{row['syncs_per_pass']} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few rounds (a smoke run)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", type=int, default=20, help="updates per counted pass")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rounds, calls = (3, 20) if args.quick else (101, 50)

    results: dict[str, dict[str, Any]] = {}
    for case in _cases():
        row = _measure(case, rounds, calls)
        row["syncs_per_pass"] = _syncs_per_pass(case, args.batches)
        results[case.name] = row
        print(
            f"{case.name:28s} update {row['ember_us_min']:6.2f} us  bare {row['bare_us_min']:6.2f} us"
            f"  ratio min {row['ratio_min']:.2f} median {row['ratio_median']:.2f}"
            f" paired {row['ratio_paired']:.2f}  syncs/pass {row['syncs_per_pass']}",
            flush=True,
        )
    # The verdict reads the paired ratios (robust to a busy machine); the minimums are shown.
    worst = max(row["ratio_paired"] for row in results.values())
    worst_min = max(row["ratio_min"] for row in results.values())
    most_syncs = max(row["syncs_per_pass"] for row in results.values())
    verdict = "PASS" if worst <= GOAL and most_syncs <= 1 else "FAIL"
    print(
        f"{verdict}: worst paired ratio {worst:.2f}, worst ratio of minimums {worst_min:.2f} "
        f"(goal <= {GOAL}), most syncs per pass {most_syncs} (goal <= 1)"
    )
    if (worst <= GOAL) != (worst_min <= GOAL):
        print("(the paired ratios and the minimums disagree: the machine was busy)")

    environment = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": platform.machine(),
        "quick": args.quick,
        "rounds": rounds,
        "calls_per_round": calls,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "benchmark-metrics.json").write_text(
        json.dumps({"environment": environment, "goal_ratio": GOAL, "results": results}, indent=2)
        + "\n",
        encoding="utf-8",
    )
    page = [
        "# Metric update cost",
        "",
        "Generated by `python benchmarks/metric_update.py` (do not edit by hand). One `update()` of",
        "each metric against the bare torch ops that accumulate the same thing, timed side by side",
        f"({rounds} interleaved rounds of {calls} calls, CPU, {args.threads} torch thread(s), torch",
        f"{torch.__version__}); ratios of the minimums, of the medians, and the median of each",
        "round's ratio (its two timings are neighbours in time, so a busy machine slows both: the",
        f"verdict reads this one); goal: <= {GOAL}. Host syncs are counted by dispatch over",
        f"{args.batches} updates and one `compute()`; goal: <= 1. GPU figures are not measured here.",
        "",
        *_table(results, args.batches),
        "",
        (
            f"Verdict: **{verdict}** (worst paired ratio {worst:.2f}, worst ratio of minimums "
            f"{worst_min:.2f}, most syncs per pass {most_syncs})."
        ),
        "",
    ]
    (args.out_dir / "benchmark-metrics.md").write_text("\n".join(page), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
