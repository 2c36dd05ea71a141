"""After ``finalize()``, no worker thread of the gloo group is left, even when DDP was used.

    python dist_teardown.py

Prints the number of the group's worker threads ("pt_gloo_runloop") alive after training a DDP
model held in a reference cycle (as an engine's handlers hold it) and calling ``finalize()``.
Threads left there outlive the interpreter: one that drops a finished collective while the
interpreter shuts down aborts the process ("terminate called without an active exception").
Run in a fresh interpreter, as what pins the group is an import made while it exists.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

import ember.distributed as edist


def gloo_workers() -> int:
    names = [(task / "comm").read_text().strip() for task in Path("/proc/self/task").iterdir()]
    return names.count("pt_gloo_runloop")


def train() -> None:
    model = DistributedDataParallel(torch.nn.Linear(4, 2))
    model.cycle = [model]  # freed only by the garbage collector
    model(torch.ones(3, 4)).sum().backward()


if __name__ == "__main__":
    edist.initialize("gloo")
    train()
    workers_during = gloo_workers()
    edist.finalize()
    print(f"gloo workers during {workers_during} after {gloo_workers()}", flush=True)
