"""DDP training on a DeterministicEngine that survives lost processes and preemption.

    torchrun --standalone --nproc-per-node 2 --max-restarts 3 elastic_train.py OUT_DIR [PLAN]
    python elastic_train.py OUT_DIR [PLAN]        # a single process

PLAN is a comma-separated list of ``ACTION:RESTART:RANK:ITERATION``: in the worker group started
for the RESTART-th time (``TORCHELASTIC_RESTART_COUNT``), rank RANK, during the step of
ITERATION, does ACTION: ``kill`` (SIGKILL itself), ``term`` (SIGTERM itself) or ``termagent``
(SIGTERM its parent, torchrun's agent, which forwards it to every worker; the rank then waits
until the forwarded signal reaches it).

The script is what a user writes: ``resume_from`` before ``run()``, a ``Checkpoint`` every
INTERVAL iterations, ``Preemption`` checking every CHECK_EVERY iterations. It appends what
happened to OUT_DIR/events.jsonl (one JSON object a line: resumed, acted, preempted, finished)
and, when the run completes, writes its weights to OUT_DIR/weights_rank<R>.pt.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

import ember.distributed as edist
from ember.engine import DeterministicEngine, Events
from ember.handlers import Checkpoint, DiskSaver, Preemption, resume_from

EPOCHS = 5
TRAIN_SIZE = 48
GLOBAL_BATCH = 8  # 2 ranks: 6 iterations an epoch, 30 in all
INTERVAL = 4  # iterations between checkpoints
CHECK_EVERY = 2  # iterations between the ranks' agreements on a stop request
TIMEOUT = 20  # seconds, for the rendezvous and every collective


def record(out_dir: Path, **event: Any) -> None:
    """Append one event, durably: the process may be killed right after."""
    with (out_dir / "events.jsonl").open("a") as log:
        log.write(json.dumps(event) + "\n")
        log.flush()
        os.fsync(log.fileno())


def parse_plan(text: str) -> dict[tuple[int, int, int], str]:
    plan = {}
    for item in filter(None, text.split(",")):
        action, restart, rank, iteration = item.split(":")
        plan[int(restart), int(rank), int(iteration)] = action
    return plan


def act(action: str) -> None:
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "term":
        os.kill(os.getpid(), signal.SIGTERM)
    elif action == "termagent":
        os.kill(os.getppid(), signal.SIGTERM)
    else:
        raise ValueError(f"unknown action {action!r}")


def wait_for_the_forwarded_signal(preemption: Preemption) -> None:
    """Hold this rank until the agent's SIGTERM comes back to it, so that the ranks stop at the
    first agreement after this iteration (the agent's delay would otherwise decide which)."""
    deadline = time.monotonic() + TIMEOUT
    while preemption.received is None and time.monotonic() < deadline:
        time.sleep(0.01)


def main(out_dir: Path, plan: dict[tuple[int, int, int], str]) -> None:
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    rank = edist.get_rank()
    torch.manual_seed(0)  # the same seed on every rank: DeterministicEngine draws its seed here
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(TRAIN_SIZE, 6, generator=generator)
    targets = torch.randint(0, 3, (TRAIN_SIZE,), generator=generator)
    loader = edist.auto_dataloader(
        TensorDataset(features, targets), batch_size=GLOBAL_BATCH, shuffle=True
    )
    model = edist.auto_model(
        torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Dropout(0.2), torch.nn.Linear(16, 3))
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.5)

    def step(engine: DeterministicEngine, batch: list[torch.Tensor]) -> float:
        action = plan.get((restart, rank, engine.state.iteration))
        if action is not None:
            record(out_dir, event="acted", action=action, restart=restart, rank=rank,
                   iteration=engine.state.iteration)  # fmt: skip
            act(action)
            if action == "termagent":
                wait_for_the_forwarded_signal(preemption)
        x, y = batch
        model.train()
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return loss.item()

    trainer = DeterministicEngine(step)
    to_save = {"trainer": trainer, "model": model, "optimizer": optimizer, "scheduler": scheduler}
    checkpointer = Checkpoint(
        to_save,
        DiskSaver(out_dir / "checkpoints", require_empty=False),
        n_saved=2,
        include_self=True,  # a resumed checkpointer goes on pruning the files of earlier runs
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=INTERVAL), checkpointer)
    preemption = Preemption(checkpointer, check_every=CHECK_EVERY).attach(trainer)

    @trainer.on(Events.TERMINATE)
    def stopped(engine: DeterministicEngine) -> None:
        record(out_dir, event="terminated", restart=restart, rank=rank,
               iteration=engine.state.iteration)  # fmt: skip

    resumed = resume_from(
        out_dir / "checkpoints", {**to_save, "checkpointer": checkpointer},
        start_fresh_if_empty=True,
    )  # fmt: skip
    record(out_dir, event="resumed", restart=restart, rank=rank, iteration=trainer.state.iteration,
           file=None if resumed is None else resumed.name)  # fmt: skip
    try:
        trainer.run(loader, max_epochs=EPOCHS)
    except SystemExit:
        record(out_dir, event="preempted", restart=restart, rank=rank,
               iteration=trainer.state.iteration)  # fmt: skip
        raise
    module = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    torch.save(module.state_dict(), out_dir / f"weights_rank{rank}.pt")
    record(out_dir, event="finished", restart=restart, rank=rank, iteration=trainer.state.iteration)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    steps = parse_plan(sys.argv[2] if len(sys.argv) > 2 else "")
    launched = "WORLD_SIZE" in os.environ
    with edist.Parallel(backend="gloo" if launched else None, timeout=TIMEOUT) as parallel:
        parallel.run(lambda local_rank: main(out, steps))
