"""What one synchronous ``ModelCheckpoint`` save costs the training loop, against the
hand-written ``torch.save(...)`` + ``unlink(previous)``.

    python benchmarks/checkpoint_call.py [--saves N] [--rounds R] [--dir DIR] [--callgrind]

The state is the MLP of ``benchmarks/stack.py`` (``make_work``). Each round saves it ``--saves``
times with every variant, interleaved (hand-written, ``ModelCheckpoint(n_saved=1,
require_empty=False)`` with the default background durability (saves of one second made
durable together), with ``durability_delay=0`` (each save made durable on its own) and with
``durability="inline"``), each save preceded by 100 training steps (an epoch of the stack: the
work between two saves, during which a background ``fsync`` runs). Printed per variant, medians over all saves:

* **call wall**: the seconds the save call holds the training thread;
* **call CPU**: the training thread's CPU seconds in the call (``time.thread_time``);
* **background CPU**: the CPU seconds of ember's durability thread per save (its ``fsync``\\ s
  and removals; Linux only, mean over the saves), which the call CPU leaves out.

With ``--callgrind`` (needs valgrind) it also counts the instructions the training thread runs
per save (hand-written and ember, saves back to back, no training between them, inside
``functools.reduce``; the difference of two numbers of saves cancels start-up), repeatable to
about 0.1%, where times move by tens of percent.

It only reports (times are noisy on a shared machine: compare the variants of one run).
"""

from __future__ import annotations

import argparse
import functools
import inspect
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loop_overhead import count_reduce_instructions
from stack import QUICK, Work, make_work

from ember.engine import Engine
from ember.handlers import ModelCheckpoint
from ember.handlers import checkpoint as checkpoint_module

# One epoch of benchmarks/stack.py between two saves: the time the background fsync has.
STEPS_BETWEEN_SAVES = 100

Save = Callable[[int], None]


def hand_written(work: Work, directory: Path) -> Save:
    previous: list[Path] = []

    def save(step: int) -> None:
        path = directory / f"model_{step}.pt"
        torch.save({"model": work.model.state_dict()}, path)
        if previous:
            previous.pop().unlink()
        previous.append(path)

    return save


def ember(work: Work, directory: Path, **options: object) -> Save:
    engine = Engine(lambda engine, batch: None)
    handler = ModelCheckpoint(directory, "stack", n_saved=1, require_empty=False, **options)
    to_save = {"model": work.model}

    def save(step: int) -> None:
        engine.state.iteration = step
        handler(engine, to_save)

    return save


def durability_thread_cpu() -> float:
    """The CPU seconds ember's durability thread has used so far (0 without it)."""
    thread = checkpoint_module._durability_thread.thread
    if thread is None or thread.ident is None or not hasattr(time, "pthread_getcpuclockid"):
        return 0.0
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def train_steps(work: Work) -> None:
    for x, y in itertools.islice(itertools.cycle(work.train_data), STEPS_BETWEEN_SAVES):
        work.optimizer.zero_grad()
        work.loss_fn(work.model(x), y).backward()
        work.optimizer.step()


def variants() -> dict[str, Callable[[Work, Path], Save]]:
    found: dict[str, Callable[[Work, Path], Save]] = {"hand-written": hand_written, "ember": ember}
    parameters = inspect.signature(ModelCheckpoint).parameters
    if "durability_delay" in parameters:  # each save made durable on its own
        found["ember durability_delay=0"] = lambda w, d: ember(w, d, durability_delay=0)
    if "durability" in parameters:
        found["ember durability=inline"] = lambda w, d: ember(w, d, durability="inline")
    return found


# Saves counted by callgrind: the difference of the two cancels start-up and the first saves.
CALLGRIND_SAVES = (10, 60)


def count_instructions(directory: Path) -> None:
    """Instructions per save of the training thread (callgrind counts only the thread that is
    inside ``functools.reduce``; the durability thread's ``fsync``\\ s are not in them)."""
    for name in ("hand-written", "ember"):
        few, many = (
            count_reduce_instructions(
                directory / f"{name}-{saves}.callgrind",
                __file__,
                "--one-variant",
                f"{name}:{saves}",
                "--dir",
                str(directory),
            )
            for saves in CALLGRIND_SAVES
        )
        per_save = (many - few) / (CALLGRIND_SAVES[1] - CALLGRIND_SAVES[0])
        print(f"{name:<26} {per_save:12,.0f} instructions per save (callgrind)")


def run_one_variant(spec: str, root: Path) -> None:
    """The process callgrind counts: ``saves`` saves of a variant inside ``functools.reduce``,
    after three saves that warm it up."""
    name, saves = spec.split(":")
    directory = root / f"one-{name}-{saves}"
    directory.mkdir()
    work = make_work(QUICK, torch.device("cpu"), directory)
    save = variants()[name](work, directory)
    for step in range(1, 4):
        save(step)
    functools.reduce(lambda _, step: save(step), range(4, 4 + int(saves)), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--saves", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp)")
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--one-variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.one_variant:
        if args.dir is None:
            parser.error("--one-variant needs --dir (count_instructions passes both)")
        run_one_variant(args.one_variant, args.dir)
        return

    variants_by_name = variants()
    wall: dict[str, list[float]] = {name: [] for name in variants_by_name}
    cpu: dict[str, list[float]] = {name: [] for name in variants_by_name}
    background: dict[str, list[float]] = {name: [] for name in variants_by_name}
    with tempfile.TemporaryDirectory(dir=args.dir) as root:
        for round_index in range(args.rounds):
            names = list(variants_by_name)
            names = names[round_index % len(names) :] + names[: round_index % len(names)]
            for name in names:
                directory = Path(root) / f"{round_index}-{name}"
                directory.mkdir()
                work = make_work(QUICK, torch.device("cpu"), directory)
                save = variants_by_name[name](work, directory)
                background_start = durability_thread_cpu()
                for step in range(1, args.saves + 1):
                    train_steps(work)
                    wall_start, cpu_start = time.perf_counter(), time.thread_time()
                    save(step)
                    wall[name].append(time.perf_counter() - wall_start)
                    cpu[name].append(time.thread_time() - cpu_start)
                checkpoint_module._durability_thread.drain()  # the pending saves, made durable
                used = durability_thread_cpu() - background_start
                background[name].append(used / args.saves)
    print(f"{args.rounds} rounds x {args.saves} saves, {STEPS_BETWEEN_SAVES} steps between saves")
    print(f"{'variant':<26} {'call wall':>12} {'call CPU':>12} {'background CPU':>16}")
    for name in variants_by_name:
        print(
            f"{name:<26} {statistics.median(wall[name]) * 1e3:9.3f} ms "
            f"{statistics.median(cpu[name]) * 1e3:9.3f} ms "
            f"{statistics.mean(background[name]) * 1e3:13.3f} ms"
        )
    if args.callgrind:
        with tempfile.TemporaryDirectory(dir=args.dir) as root:
            count_instructions(Path(root))


if __name__ == "__main__":
    main()
