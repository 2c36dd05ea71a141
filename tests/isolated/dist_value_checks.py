"""Bad input on one rank only: every rank must raise, none wait for the others.

Value checks that fail on one rank raise at ``compute()`` on every rank; a ``broadcast`` whose
source rank has nothing it can send raises on every rank.

    python dist_value_checks.py OUT_DIR      # Parallel(nproc_per_node=2), gloo, 20 s timeout

Rank 1 alone feeds bad input to each case's metric (rank 0's input is valid; one case has bad
input on both), then both ranks compute it. Every rank catches what each case raises and rewrites OUT_DIR/rank<R>.json after
each case: ``{case: {"value": ...} | {"error": type name, "message": ...}}``, so a rank that
waited in a collective until the group's timeout still reports (a collective error), and a
launch that ends before the test's limit did not hang. ``collectives`` holds how many
collectives one ``compute()`` of a valid ``Accuracy`` and ``Precision`` started.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

import ember.distributed as edist
from ember.metrics import Accuracy, Fbeta, MetricsLambda, Precision

# Short, so that a case where one rank waits for the other fails the case instead of the test's
# limit on the launch.
TIMEOUT = timedelta(seconds=20)
BAD_RANK = 1


def _scores(labels: list[int], num_classes: int = 3) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(labels), num_classes).double()


def _binary(rank: int, bad_value: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    y_pred = torch.tensor([0, 1, 1, 0])
    if rank == BAD_RANK:
        y_pred = torch.tensor([0, 1, bad_value, 0])
    return y_pred, torch.tensor([0, 1, 0, 0])


def accuracy_class_indices(rank: int) -> Any:
    """Multiclass Accuracy, a class index out of range on rank 1 (read_count's path)."""
    metric = Accuracy()
    y = [0, 1, 5, 1] if rank == BAD_RANK else [0, 1, 2, 1]
    metric.update((_scores([0, 1, 2, 0]), torch.tensor(y)))
    return metric.compute()


def accuracy_nothing_on_rank_0(rank: int) -> Any:
    """Rank 0 saw no update at all (no checks of its own); rank 1 saw a class index of -1."""
    metric = Accuracy()
    if rank == BAD_RANK:
        metric.update((_scores([0, 1]), torch.tensor([0, -1])))
    return metric.compute()


def precision_binary(rank: int) -> Any:
    """Binary Precision (the positive class), a 2 in y_pred on rank 1 (read()'s path)."""
    metric = Precision(average=False)
    metric.update(_binary(rank))
    return float(metric.compute())


def lambda_of_two_accuracies(rank: int) -> Any:
    """A MetricsLambda whose first argument fails on rank 1: a rank that raised at the first
    argument would leave the other waiting in the second argument's collective."""
    failing, valid = Accuracy(), Accuracy()
    metric = MetricsLambda(lambda a, b: a + b, failing, valid)  # resets its arguments
    failing.update(_binary(rank, bad_value=3))
    valid.update(_binary(0))
    return metric.compute()


def fbeta_binary(rank: int) -> Any:
    """Fbeta: its Precision's and Recall's checks are collected and read with its value."""
    metric = Fbeta(1.0)
    metric.update(_binary(rank))
    return metric.compute()


def accuracy_on_every_rank(rank: int) -> Any:
    """Both ranks saw a bad class index: each raises its own error."""
    metric = Accuracy()
    metric.update((_scores([0, 1]), torch.tensor([0, 7 + rank])))
    return metric.compute()


def broadcast_none_from_src(rank: int) -> Any:
    """Rank 1, the source, passes None."""
    return edist.broadcast(None if rank == BAD_RANK else "ignored", src=BAD_RANK)


def broadcast_unpicklable_from_src(rank: int) -> Any:
    """Rank 1, the source, passes an object that cannot be pickled (a lambda)."""
    return edist.broadcast((lambda: None) if rank == BAD_RANK else None, src=BAD_RANK)


def still_in_step(rank: int) -> Any:
    """After the failures, the ranks still meet in the same collectives: a valid metric."""
    metric = Accuracy()
    metric.update((_scores([0, 1, 2, 0]), torch.tensor([0, 1, 2, 1 + rank])))
    return [metric.compute(), edist.all_reduce(rank + 1)]


CASES: list[Callable[[int], Any]] = [
    accuracy_class_indices,
    accuracy_nothing_on_rank_0,
    precision_binary,
    lambda_of_two_accuracies,
    fbeta_binary,
    accuracy_on_every_rank,
    broadcast_none_from_src,
    broadcast_unpicklable_from_src,
    still_in_step,
]


def _count_collectives(compute: Callable[[], Any]) -> int:
    """How many all_reduce / all_gather_object calls ``compute`` made."""
    count = 0
    originals = {name: getattr(dist, name) for name in ("all_reduce", "all_gather_object")}

    def counting(original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            nonlocal count
            count += 1
            return original(*args, **kwargs)

        return call

    for name, original in originals.items():
        setattr(dist, name, counting(original))
    try:
        compute()
    finally:
        for name, original in originals.items():
            setattr(dist, name, original)
    return count


def collectives() -> dict[str, int]:
    accuracy = Accuracy()
    accuracy.update((_scores([0, 1, 2]), torch.tensor([0, 1, 1])))
    precision = Precision(average=False)
    precision.update(_binary(0))
    return {
        "Accuracy": _count_collectives(accuracy.compute),
        "Precision": _count_collectives(precision.compute),
    }


def main(local_rank: int, out_dir: str) -> None:
    rank = edist.get_rank()
    out = Path(out_dir) / f"rank{rank}.json"
    results: dict[str, Any] = {}
    for case in CASES:
        try:
            results[case.__name__] = {"value": case(rank)}
        except Exception as error:  # noqa: BLE001 - recorded for the test to judge
            results[case.__name__] = {"error": type(error).__name__, "message": str(error)}
        out.write_text(json.dumps(results))
    results["collectives"] = collectives()
    out.write_text(json.dumps(results))


if __name__ == "__main__":
    with edist.Parallel(backend="gloo", nproc_per_node=2, timeout=TIMEOUT) as parallel:
        parallel.run(main, sys.argv[1])
    print("done", flush=True)
