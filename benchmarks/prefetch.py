"""Device prefetch benchmark: a small CNN trained on synthetic images, with and without
``ember.data.prefetch``, side by side in one run.

    python benchmarks/prefetch.py [--device cuda] [--quick]

Rows: the plain loader (the trainer copies each batch with ``non_blocking=False``), the plain
loader with ``non_blocking=True`` (pinned batches, copies on the step's stream), and
``prefetch(loader, device, depth)`` for depths 1 and 2 (copies on a side stream while the step
runs). It prints milliseconds per epoch (the minimum over the repeats) and the ratio to the plain
row; on CUDA the epoch ends with ``torch.cuda.synchronize()``, so the time includes the device's
work. On CPU there is nothing to overlap and the ratios stay near 1: the script runs there so
that it is known to work; the GPU figures are to be measured where a GPU is available.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ember.data import prefetch
from ember.engine import create_supervised_trainer


def make_loader(device: torch.device, batches: int, batch_size: int, side: int) -> Any:
    images = torch.randn(batches * batch_size, 3, side, side)
    labels = torch.randint(0, 10, (batches * batch_size,))
    return torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(images, labels),
        batch_size=batch_size,
        pin_memory=device.type == "cuda",
    )


def make_model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 10),
    )


def epoch_seconds(
    device: torch.device, data: Iterable[Any], non_blocking: bool, repeats: int
) -> float:
    torch.manual_seed(0)
    model = make_model().to(device)
    trainer = create_supervised_trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.01),
        torch.nn.functional.cross_entropy,
        device=device,
        non_blocking=non_blocking,
        output_transform=lambda x, y, y_pred, loss: loss.detach(),  # no host sync per step
    )
    best = float("inf")
    for repeat in range(repeats + 1):  # the first epoch warms up and is not counted
        started = time.perf_counter()
        trainer.run(data)  # one epoch; a finished engine starts a new run
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if repeat:
            best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default_device)
    parser.add_argument("--quick", action="store_true", help="a few batches: checks it runs")
    arguments = parser.parse_args()
    device = torch.device(arguments.device)
    torch.set_num_threads(1 if device.type == "cpu" else torch.get_num_threads())
    batches, batch_size, side, repeats = (2, 4, 16, 1) if arguments.quick else (50, 256, 64, 5)
    loader = make_loader(device, batches, batch_size, side)
    rows: list[tuple[str, Callable[[], float]]] = [
        ("plain loader", lambda: epoch_seconds(device, loader, False, repeats)),
        ("plain, non_blocking=True", lambda: epoch_seconds(device, loader, True, repeats)),
    ]
    for depth in (1, 2):
        data = prefetch(loader, device, depth=depth)
        rows.append(
            (f"prefetch depth={depth}", lambda d=data: epoch_seconds(device, d, True, repeats))
        )
    print(f"device {device}, {batches} batches of {batch_size} images 3x{side}x{side} per epoch")
    print(f"{'data':<26}  {'ms/epoch':>10}  {'vs plain':>8}")
    baseline = None
    for name, measure in rows:
        seconds = measure()
        baseline = baseline or seconds
        print(f"{name:<26}  {seconds * 1e3:>10.1f}  {seconds / baseline:>7.2f}x")


if __name__ == "__main__":
    main()
