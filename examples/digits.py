"""Train a small network on scikit-learn's digits (bundled, no download) with ember alone.

    python examples/digits.py [--epochs 40] [--out-dir checkpoints] [--backend cpp|python]
    python examples/digits.py --nproc 2      # 2 processes on the CPU (torch.distributed, gloo)
    torchrun --nproc-per-node 2 examples/digits.py   # the same, processes started by torchrun

Trainer and evaluator from ember.engine, metrics from ember.metrics, checkpointing of the best
model, early stopping and a progress bar from ember.handlers. Prints the validation accuracy
of each epoch and the best one; exits with status 1 if it stays below --target. With --nproc N
the same script trains with N processes: the data is sharded, gradients are averaged (DDP),
metrics are computed over the whole validation set, and rank 0 alone writes and prints. Under
torchrun, the launcher's processes train (no --nproc: torchrun's --nproc-per-node says how many)
and every rank exits with the same status.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import ember.distributed as edist
from ember.engine import Engine, Events, create_supervised_evaluator, create_supervised_trainer
from ember.handlers import Checkpoint, DiskSaver, EarlyStopping, ProgressBar
from ember.metrics import Accuracy, Loss


def datasets() -> tuple[torch.utils.data.TensorDataset, torch.utils.data.TensorDataset]:
    digits: Any = load_digits()  # a Bunch; scikit-learn ships no types
    split: Any = train_test_split(
        digits.data, digits.target, test_size=0.25, random_state=0, stratify=digits.target
    )
    x_train, x_val, y_train, y_val = split
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std[std == 0] = 1.0  # pixels that are blank in every training image

    def dataset(x: Any, y: Any) -> torch.utils.data.TensorDataset:
        features = torch.tensor((x - mean) / std, dtype=torch.float32)
        return torch.utils.data.TensorDataset(features, torch.tensor(y))

    return dataset(x_train, y_train), dataset(x_val, y_val)


def train(local_rank: int, args: argparse.Namespace) -> float:
    """One process's training (all of it in a single process); returns the best accuracy."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    if args.out_dir is None:  # one folder for all ranks: rank 0's, made once the group is up
        made = tempfile.mkdtemp(prefix="ember-digits-") if edist.get_rank() == 0 else None
        args.out_dir = Path(edist.broadcast(made, src=0))
    train_set, val_set = datasets()
    # Global batch sizes: each of N processes loads 1/N of them.
    train_loader = edist.auto_dataloader(train_set, batch_size=args.batch_size, shuffle=True)
    val_loader = edist.auto_dataloader(val_set, batch_size=256)
    model = edist.auto_model(
        torch.nn.Sequential(
            torch.nn.Linear(64, 128),
            torch.nn.ReLU(),
            torch.nn.Dropout(0.1),
            torch.nn.Linear(128, 10),
        )
    )
    optimizer = edist.auto_optim(torch.optim.Adam(model.parameters(), lr=1e-3))
    loss_fn = torch.nn.functional.cross_entropy

    trainer = create_supervised_trainer(model, optimizer, loss_fn, backend=args.backend)
    evaluator = create_supervised_evaluator(
        model, metrics={"accuracy": Accuracy(), "loss": Loss(loss_fn)}, backend=args.backend
    )
    best = {"accuracy": 0.0}
    progress = None if args.no_progress else ProgressBar(persist=False)

    @trainer.on(Events.EPOCH_COMPLETED)
    def validate(engine: Engine) -> None:
        metrics = evaluator.run(val_loader).metrics  # over all ranks' shards
        best["accuracy"] = max(best["accuracy"], metrics["accuracy"])
        message = (
            f"epoch {engine.state.epoch:3d}  val accuracy {metrics['accuracy']:.4f}  "
            f"val loss {metrics['loss']:.4f}"
        )
        if progress is not None:
            progress.log_message(message)
        elif edist.get_rank() == 0:
            print(message)

    def accuracy(engine: Engine) -> float:
        return float(engine.state.metrics["accuracy"])

    checkpoint = Checkpoint(
        {"model": model, "optimizer": optimizer, "trainer": trainer},
        DiskSaver(args.out_dir, require_empty=False),
        n_saved=2,
        score_function=accuracy,
        score_name="accuracy",
        global_step_transform=lambda engine, event: trainer.state.epoch,
    )
    evaluator.add_event_handler(Events.COMPLETED, checkpoint)
    evaluator.add_event_handler(
        Events.COMPLETED, EarlyStopping(patience=8, score_function=accuracy, trainer=trainer)
    )
    if progress is not None:
        progress.attach(trainer, output_transform=lambda loss: {"loss": loss})

    trainer.run(train_loader, max_epochs=args.epochs)
    if edist.get_rank() == 0:
        print(f"best val accuracy {best['accuracy']:.4f}; checkpoints in {args.out_dir}")
        print(f"last checkpoint: {checkpoint.last_checkpoint}")
    return best["accuracy"]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--backend", choices=("cpp", "python"), default=None)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--nproc", type=int, default=1, help="processes (gloo on the CPU)")
    args = parser.parse_args()
    launched = "WORLD_SIZE" in os.environ  # torchrun started this process as one of several
    if launched:  # torchrun's processes; its --nproc-per-node says how many
        with edist.Parallel(backend="gloo") as parallel:
            best = parallel.run(train, args)  # the same on every rank: metrics are over all
    elif args.nproc > 1:
        args.out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="ember-digits-"))
        with edist.Parallel(backend="gloo", nproc_per_node=args.nproc) as parallel:
            parallel.run(train, args)
        best = _best_from_checkpoints(args.out_dir)
    else:
        best = train(0, args)
    return 0 if best >= args.target else 1


def _best_from_checkpoints(out_dir: Path) -> float:
    """The best accuracy of a multi-process run, read back from the checkpoints' names."""
    scores = [float(path.stem.split("=")[-1]) for path in out_dir.glob("*accuracy=*.pt")]
    return max(scores, default=0.0)


if __name__ == "__main__":
    raise SystemExit(main())
