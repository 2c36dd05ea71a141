"""How long a checkpoint blocks the training thread: ``Checkpoint`` synchronous vs ``async_save=True``.

    python benchmarks/checkpoint_async.py [--smoke] [--saves N] [--out-dir DIR] [--dir DIR]

The state is a model of 16 ``Linear(2048, 2048)`` (269 MB of float32; ``--smoke``: 2
``Linear(64, 64)``). Each round saves it once with a synchronous ``Checkpoint`` and once with an
asynchronous one (``DiskSaver``, atomic, ``fsync``\\ ed in the saver's call:
``durability="inline"``; ``n_saved=1``, both to ``--dir``), side by side, and measures:

* **blocked**: the seconds the save call holds the training thread. Synchronous: the whole
  write. Asynchronous: the copy into the host buffers and the handoff to the writer thread (the
  previous write is always finished by then, so no wait is included).
* **durable**: from the call until the file has its final name and is ``fsync``\\ ed.
* **training during the write**: after an asynchronous save the training thread runs a small,
  Python-bound training step until the write is durable; its step rate, against the rate with no
  write running, shows what the writer thread takes from training (GIL and CPU). For reference,
  the same state is also written by a forked process (``torch.save`` and ``fsync`` of tensors in
  shared memory) while the same step runs: if a process left training clearly more, the writer
  should be a process.

The first asynchronous save also allocates the host buffers; it is reported apart, the medians
are over the others. Writes benchmark-checkpoint.md and benchmark-checkpoint.json into
``--out-dir`` (default docs/). It only reports: the goal check prints PASS/FAIL and the exit
status is 0 either way.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ember.engine import Engine
from ember.handlers import Checkpoint, DiskSaver
from ember.handlers import checkpoint as checkpoint_module

REPO_ROOT = Path(__file__).resolve().parent.parent
GOAL = 0.10  # asynchronous blocked time / synchronous save time


class TimedSaver(DiskSaver):
    """A DiskSaver that notes when its last write became durable."""

    durable_at = 0.0

    def __call__(
        self,
        checkpoint: Mapping[str, Any],
        filename: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        super().__call__(checkpoint, filename, metadata)
        self.durable_at = time.perf_counter()


class SmallTraining:
    """A training step dominated by Python and dispatch: it needs the GIL most of the time."""

    def __init__(self) -> None:
        self.model = torch.nn.Sequential(
            torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)
        )
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-3)
        self.x = torch.randn(8, 32)
        self.y = torch.randn(8, 1)

    def step(self) -> None:
        self.optimizer.zero_grad()
        torch.nn.functional.mse_loss(self.model(self.x), self.y).backward()
        self.optimizer.step()

    def rate(self, seconds: float) -> float:
        """Steps per second with nothing else running."""
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            self.step()
            steps += 1
        return steps / (time.perf_counter() - start)


def write_durably(state: Mapping[str, torch.Tensor], path: Path) -> None:
    with path.open("wb") as file:
        torch.save(dict(state), file)
        file.flush()
        os.fsync(file.fileno())


def write_in_child(state: Mapping[str, torch.Tensor], path: Path, go: Any, done: Any) -> None:
    go.wait()
    write_durably(state, path)
    done.set()


def rate_during_process_writes(
    model: torch.nn.Module, training: SmallTraining, directory: Path, writes: int
) -> float:
    """The training step rate while a forked process writes the state (no GIL shared)."""
    context = multiprocessing.get_context("fork")
    shared = {
        key: value.detach().clone().share_memory_() for key, value in model.state_dict().items()
    }
    steps, seconds = 0, 0.0
    for _ in range(writes):
        go, done = context.Event(), context.Event()
        child = context.Process(
            target=write_in_child, args=(shared, directory / "process.pt", go, done)
        )
        child.start()
        go.set()
        start = time.perf_counter()
        while not done.is_set():
            training.step()
            steps += 1
        seconds += time.perf_counter() - start
        child.join()
    return steps / seconds


def big_model(layers: int, width: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(*(torch.nn.Linear(width, width) for _ in range(layers)))


def state_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def copy_seconds(model: torch.nn.Module, rounds: int) -> dict[str, float]:
    """Median seconds to copy the state into reused host buffers, per way of copying, side by
    side: the snapshot's ``stream_copy`` (streaming stores), one ``memmove`` per tensor (what
    the snapshot did before) and torch's ``copy_``."""
    sources = [t for t in model.state_dict().values() if t.numel()]
    buffers = [torch.empty_like(t) for t in sources]
    ways = {
        "stream_copy": checkpoint_module._copy_bytes,
        "memmove": lambda b, t: ctypes.memmove(b.data_ptr(), t.data_ptr(), t.nbytes),
        "torch_copy_": lambda b, t: b.copy_(t),
    }
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, copy_one in ways.items():
            start = time.perf_counter()
            for buffer, source in zip(buffers, sources, strict=True):
                copy_one(buffer, source)
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}


def measure(layers: int, width: int, saves: int, directory: Path) -> dict[str, Any]:
    model = big_model(layers, width)
    training = SmallTraining()
    engine = Engine(lambda engine, batch: None)
    # durability="inline": the file is durable when the saver's call returns (durable_at)
    savers = {
        mode: TimedSaver(directory / mode, require_empty=False, durability="inline")
        for mode in ("sync", "async")
    }
    checkpoints = {
        mode: Checkpoint({"model": model}, saver, n_saved=1, async_save=mode == "async")
        for mode, saver in savers.items()
    }
    training.rate(0.2)  # warm up
    alone_rate = training.rate(1.0 if saves > 2 else 0.1)
    blocked: dict[str, list[float]] = {"sync": [], "async": []}
    durable: dict[str, list[float]] = {"sync": [], "async": []}
    steps_during_write = 0
    seconds_during_write = 0.0
    for save in range(saves):
        engine.state.iteration = save + 1
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(1.0)  # the state changes between saves, as in training
        for mode in ("sync", "async"):
            checkpoint = checkpoints[mode]
            start = time.perf_counter()
            checkpoint(engine)
            returned = time.perf_counter()
            pending = checkpoint._pending
            if pending is not None:  # train until the write is durable
                while pending.thread.is_alive():
                    training.step()
                    steps_during_write += 1
                seconds_during_write += time.perf_counter() - returned
                checkpoint.wait()
            blocked[mode].append(returned - start)
            durable[mode].append(savers[mode].durable_at - start)
    process_rate = rate_during_process_writes(model, training, directory, writes=max(1, saves // 2))
    copies = copy_seconds(model, rounds=max(2, saves))
    steady = slice(1, None) if saves > 1 else slice(None)
    sync_median = statistics.median(blocked["sync"][steady])
    async_median = statistics.median(blocked["async"][steady])
    during_rate = steps_during_write / seconds_during_write if seconds_during_write else 0.0
    return {
        "state_bytes": state_bytes(model),
        "layers": layers,
        "width": width,
        "saves": saves,
        "blocked_s": blocked,
        "durable_s": durable,
        "sync_blocked_median_s": sync_median,
        "async_blocked_median_s": async_median,
        "async_first_blocked_s": blocked["async"][0],
        "async_durable_median_s": statistics.median(durable["async"][steady]),
        "ratio_async_blocked_to_sync": async_median / sync_median,
        "goal_ratio": GOAL,
        "pass": async_median / sync_median <= GOAL,
        "training_steps_per_s_alone": alone_rate,
        "training_steps_per_s_during_async_write": during_rate,
        "training_rate_during_write_fraction": during_rate / alone_rate if alone_rate else 0.0,
        "training_steps_per_s_during_process_write": process_rate,
        "snapshot_copy_median_s": copies,
    }


def machine() -> dict[str, Any]:
    return {
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1_5_15_min": list(os.getloadavg()),
        "platform": platform.platform(),
        "device": "CPU only (no GPU on this machine: the pinned-buffer path was not measured)",
    }


def process_verdict(results: dict[str, Any]) -> str:
    thread = results["training_steps_per_s_during_async_write"]
    process = results["training_steps_per_s_during_process_write"]
    if process <= 1.25 * thread:
        return (
            "a writer process does not leave training clearly more than the writer thread: what "
            "a write takes from training is CPU time on this machine's shared cores rather than "
            "the GIL, so the writer stays a thread"
        )
    return (
        f"a writer process leaves training {process / thread:.1f} times the steps of the writer "
        "thread: the GIL is contended"
    )


def markdown(record: dict[str, Any]) -> str:
    r = record["results"]
    mb = r["state_bytes"] / 1e6
    copies = r["snapshot_copy_median_s"]
    verdict = "PASS" if r["pass"] else "FAIL"
    return f"""# Benchmark: asynchronous checkpoints

`python benchmarks/checkpoint_async.py` on {record["machine"]["date_utc"]} UTC, {record["machine"]["platform"]},
{record["machine"]["cpu_count"]} CPU cores shared with other work (load average
{record["machine"]["load_average_1_5_15_min"][0]:.1f} at the end), torch {record["machine"]["torch"]}, no GPU.
State: {r["layers"]} x `Linear({r["width"]}, {r["width"]})`, {mb:.0f} MB; {r["saves"]} saves per mode,
side by side; `DiskSaver` (atomic, `fsync`, `durability="inline"`), `n_saved=1`. Medians leave out the first save.

| | synchronous | `async_save=True` |
|---|---|---|
| training thread blocked per save (median) | {r["sync_blocked_median_s"]:.3f} s | {r["async_blocked_median_s"]:.3f} s |
| first save (async: allocates the host buffers) | {r["blocked_s"]["sync"][0]:.3f} s | {r["async_first_blocked_s"]:.3f} s |
| call to durable file (median) | {r["sync_blocked_median_s"]:.3f} s | {r["async_durable_median_s"]:.3f} s |

**Blocked time, async / sync: {r["ratio_async_blocked_to_sync"]:.3f}** (goal <= {r["goal_ratio"]:.2f}: {verdict}).

While the writer thread writes, a small Python-bound training step runs at
{r["training_steps_per_s_during_async_write"]:.0f} steps/s against {r["training_steps_per_s_alone"]:.0f}
steps/s with no write running ({100 * r["training_rate_during_write_fraction"]:.0f}%), and at
{r["training_steps_per_s_during_process_write"]:.0f} steps/s while a forked process writes the same
state: {process_verdict(r)}. The asynchronous mode keeps one host copy of the state
({mb:.0f} MB) for reuse.

The snapshot's copy of the state into its host buffers (median of {r["saves"]}, side by side):
{copies["stream_copy"] * 1e3:.1f} ms with `ember._core.stream_copy` (streaming stores), against
{copies["memmove"] * 1e3:.1f} ms with one `memmove` per tensor ({copies["memmove"] / copies["stream_copy"]:.2f}x) and
{copies["torch_copy_"] * 1e3:.1f} ms with torch's `copy_` ({copies["torch_copy_"] / copies["stream_copy"]:.2f}x).

All times per save: sync {", ".join(f"{t:.3f}" for t in r["blocked_s"]["sync"])} s; async
blocked {", ".join(f"{t:.3f}" for t in r["blocked_s"]["async"])} s, durable after
{", ".join(f"{t:.3f}" for t in r["durable_s"]["async"])} s.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny state, 2 saves")
    parser.add_argument("--saves", type=int, default=None, help="saves per mode (default 12)")
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "docs")
    parser.add_argument("--dir", type=Path, default=None, help="where checkpoints are written")
    args = parser.parse_args()
    layers, width = (2, 64) if args.smoke else (16, 2048)
    saves = args.saves or (2 if args.smoke else 12)
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        results = measure(layers, width, saves, Path(directory))
    record = {"results": results, "machine": machine(), "smoke": args.smoke}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "benchmark-checkpoint.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.out_dir / "benchmark-checkpoint.md").write_text(markdown(record))
    print(
        f"state {results['state_bytes'] / 1e6:.0f} MB: blocked per save sync "
        f"{results['sync_blocked_median_s']:.3f} s, async {results['async_blocked_median_s']:.3f} s"
        f" (durable after {results['async_durable_median_s']:.3f} s); ratio "
        f"{results['ratio_async_blocked_to_sync']:.3f} (goal <= {GOAL}): "
        f"{'PASS' if results['pass'] else 'FAIL'}"
    )
    copies = results["snapshot_copy_median_s"]
    print(
        "snapshot copy: "
        + ", ".join(f"{name} {seconds * 1e3:.1f} ms" for name, seconds in copies.items())
    )
    print(
        f"training steps/s: alone {results['training_steps_per_s_alone']:.0f}, during the async "
        f"write (thread) {results['training_steps_per_s_during_async_write']:.0f}, during a "
        f"write by a process {results['training_steps_per_s_during_process_write']:.0f}"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
