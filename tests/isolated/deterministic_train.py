"""Trains a tiny model on a DeterministicEngine; optionally dies by SIGKILL mid-epoch or resumes.

    python deterministic_train.py OUT_DIR full
    python deterministic_train.py OUT_DIR kill ITERATION   # checkpoint each iteration, SIGKILL at one
    python deterministic_train.py OUT_DIR resume           # Checkpoint.load_objects, newest file

Writes OUT_DIR/<mode>.pt: the batches each iteration saw and the final weights.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch

from ember.engine import DeterministicEngine, Events
from ember.handlers import Checkpoint, DiskSaver

MAX_EPOCHS = 3


def build() -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.utils.data.DataLoader]:
    torch.manual_seed(0)
    features = torch.randn(40, 6)
    targets = torch.randint(0, 3, (40,))
    dataset = torch.utils.data.TensorDataset(features, targets)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=True)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.Dropout(0.3), torch.nn.Linear(16, 3)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return model, optimizer, loader


def main() -> None:
    out_dir, mode = Path(sys.argv[1]), sys.argv[2]
    model, optimizer, loader = build()
    seen: dict[int, list[int]] = {}

    def step(engine: DeterministicEngine, batch: list[torch.Tensor]) -> float:
        x, y = batch
        seen[engine.state.iteration] = y.tolist()
        model.train()
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    trainer = DeterministicEngine(step)
    to_save = {"model": model, "optimizer": optimizer, "trainer": trainer}

    if mode == "kill":
        kill_at = int(sys.argv[3])
        saver = DiskSaver(out_dir / "checkpoints", require_empty=False)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, Checkpoint(to_save, saver))

        @trainer.on(Events.ITERATION_COMPLETED(once=kill_at))
        def die(engine: DeterministicEngine) -> None:
            os.kill(os.getpid(), signal.SIGKILL)

    if mode == "resume":
        newest = max((out_dir / "checkpoints").glob("checkpoint_*.pt"), key=os.path.getmtime)
        Checkpoint.load_objects(to_save, newest)

    trainer.run(loader, max_epochs=MAX_EPOCHS)
    torch.save({"seen": seen, "weights": model.state_dict()}, out_dir / f"{mode}.pt")


if __name__ == "__main__":
    main()
