"""Train a small network on scikit-learn's digits (bundled, no download) with ember alone.

    python examples/digits.py [--epochs 40] [--out-dir checkpoints] [--backend cpp|python]

Trainer and evaluator from ember.engine, metrics from ember.metrics, checkpointing of the best
model, early stopping and a progress bar from ember.handlers. Prints the validation accuracy
of each epoch and the best one; exits with status 1 if it stays below --target.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from ember.engine import Engine, Events, create_supervised_evaluator, create_supervised_trainer
from ember.handlers import Checkpoint, DiskSaver, EarlyStopping, ProgressBar
from ember.metrics import Accuracy, Loss


def loaders(batch_size: int) -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    digits = load_digits()
    x_train, x_val, y_train, y_val = train_test_split(
        digits.data, digits.target, test_size=0.25, random_state=0, stratify=digits.target
    )
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std[std == 0] = 1.0  # pixels that are blank in every training image

    def dataset(x: object, y: object) -> torch.utils.data.TensorDataset:
        features = torch.tensor((x - mean) / std, dtype=torch.float32)  # type: ignore[operator]
        return torch.utils.data.TensorDataset(features, torch.tensor(y))

    train = torch.utils.data.DataLoader(
        dataset(x_train, y_train), batch_size=batch_size, shuffle=True
    )
    val = torch.utils.data.DataLoader(dataset(x_val, y_val), batch_size=256)
    return train, val


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--backend", choices=("cpp", "python"), default=None)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(1)
    train_loader, val_loader = loaders(args.batch_size)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(128, 10)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.functional.cross_entropy

    trainer = create_supervised_trainer(model, optimizer, loss_fn, backend=args.backend)
    evaluator = create_supervised_evaluator(
        model, metrics={"accuracy": Accuracy(), "loss": Loss(loss_fn)}, backend=args.backend
    )
    best = {"accuracy": 0.0}

    @trainer.on(Events.EPOCH_COMPLETED)
    def validate(engine: Engine) -> None:
        metrics = evaluator.run(val_loader).metrics
        best["accuracy"] = max(best["accuracy"], metrics["accuracy"])
        message = (
            f"epoch {engine.state.epoch:3d}  val accuracy {metrics['accuracy']:.4f}  "
            f"val loss {metrics['loss']:.4f}"
        )
        if args.no_progress:
            print(message)
        else:
            progress.log_message(message)

    def accuracy(engine: Engine) -> float:
        return float(engine.state.metrics["accuracy"])

    out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="ember-digits-"))
    checkpoint = Checkpoint(
        {"model": model, "optimizer": optimizer, "trainer": trainer},
        DiskSaver(out_dir, require_empty=False),
        n_saved=2,
        score_function=accuracy,
        score_name="accuracy",
        global_step_transform=lambda engine, event: trainer.state.epoch,
    )
    evaluator.add_event_handler(Events.COMPLETED, checkpoint)
    evaluator.add_event_handler(
        Events.COMPLETED, EarlyStopping(patience=8, score_function=accuracy, trainer=trainer)
    )
    if not args.no_progress:
        progress = ProgressBar(persist=False)
        progress.attach(trainer, output_transform=lambda loss: {"loss": loss})

    trainer.run(train_loader, max_epochs=args.epochs)
    print(f"best val accuracy {best['accuracy']:.4f}; checkpoints in {out_dir}")
    print(f"last checkpoint: {checkpoint.last_checkpoint}")
    return 0 if best["accuracy"] >= args.target else 1


if __name__ == "__main__":
    raise SystemExit(main())
