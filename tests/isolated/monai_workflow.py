"""MONAI's SupervisedTrainer and SupervisedEvaluator with MONAI's handlers, on whichever Engine
``ignite.engine`` hands out (ignite's, or ember's under ``python -m ember.patch_ignite``).

    python tests/isolated/monai_workflow.py OUT_DIR

Prints one JSON line: the engine class, every iteration's loss, the validation metrics, the best
metric and its epoch, where early stopping ended the run, the learning rates, the log lines of
MONAI's StatsHandler and a digest of each checkpoint's tensors. Run twice, with and without the
switch, the lines must be equal but for the engine class (tests/test_patch_ignite.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import sys
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import (
    CheckpointLoader,
    CheckpointSaver,
    EarlyStopHandler,
    LrScheduleHandler,
    MeanDice,
    StatsHandler,
    ValidationHandler,
    from_engine,
)
from monai.losses import DiceLoss
from monai.transforms import Activationsd, AsDiscreted, Compose


def segmentation_data(seed: int, count: int) -> list[dict[str, torch.Tensor]]:
    """Batches of 1-channel 8x8 images whose label is the bright square in each."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        label = torch.zeros(2, 1, 8, 8)
        for item in range(2):
            row, col = torch.randint(0, 5, (2,), generator=generator).tolist()
            label[item, 0, row : row + 3, col : col + 3] = 1.0
        image = label + 0.3 * torch.randn(2, 1, 8, 8, generator=generator)
        batches.append({"image": image, "label": label})
    return batches


def digest(path: Path) -> dict[str, str]:
    """A hash of every tensor in a checkpoint, by its key path."""
    found: dict[str, str] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, torch.Tensor):
            data = value.detach().contiguous().numpy().tobytes()
            found[prefix] = hashlib.sha256(data).hexdigest()[:16]
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}/{key}", item)
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                walk(f"{prefix}/{index}", item)
        elif isinstance(value, (int, float, str, bool)) or value is None:
            found[prefix] = repr(value)

    walk("", torch.load(path, weights_only=False))
    return found


def build(out: Path, max_epochs: int) -> tuple[SupervisedTrainer, SupervisedEvaluator, dict]:
    torch.manual_seed(0)
    network = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 1)
    )
    optimizer = torch.optim.Adam(network.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    post = Compose(
        [
            Activationsd(keys="pred", sigmoid=True),
            AsDiscreted(keys="pred", threshold=0.5),
        ]
    )
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=segmentation_data(1, 3),
        network=network,
        postprocessing=post,
        key_val_metric={"val_dice": MeanDice(output_transform=from_engine(["pred", "label"]))},
        val_handlers=[
            StatsHandler(name="monai_run", output_transform=lambda x: None),
            CheckpointSaver(
                save_dir=str(out),
                save_dict={"network": network},
                save_key_metric=True,
                key_metric_n_saved=1,
            ),
        ],
    )
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=max_epochs,
        train_data_loader=segmentation_data(0, 4),
        network=network,
        optimizer=optimizer,
        loss_function=DiceLoss(sigmoid=True),
        train_handlers=[
            LrScheduleHandler(lr_scheduler=scheduler, print_lr=True, name="monai_run"),
            ValidationHandler(validator=evaluator, interval=1, epoch_level=True),
            StatsHandler(
                name="monai_run",
                tag_name="train_loss",
                output_transform=from_engine(["loss"], first=True),
            ),
        ],
    )
    # The trainer's checkpoints hold the trainer itself (its state_dict), so the saver comes after.
    CheckpointSaver(
        save_dir=str(out),
        save_dict={"network": network, "optimizer": optimizer, "trainer": trainer},
        save_final=True,
        save_interval=2,
        epoch_level=True,
    ).attach(trainer)
    # ignite's EarlyStopping inside: it checks that the trainer is an ignite Engine.
    EarlyStopHandler(
        patience=2,
        score_function=lambda engine: engine.state.metrics["val_dice"],
        trainer=trainer,
        min_delta=0.02,
    ).attach(evaluator)
    return trainer, evaluator, {"network": network, "optimizer": optimizer}


def main() -> None:
    out = Path(sys.argv[1])
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("monai_run")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    trainer, evaluator, objects = build(out / "first", max_epochs=8)
    losses: list[float] = []
    lrs: list[float] = []
    metrics: list[dict[str, float]] = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda engine: losses.append(round(float(engine.state.output[0]["loss"]), 6)),
    )
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED,
        lambda engine: lrs.append(round(objects["optimizer"].param_groups[0]["lr"], 6)),
    )
    evaluator.add_event_handler(
        Events.EPOCH_COMPLETED,
        lambda engine: metrics.append({k: round(v, 6) for k, v in engine.state.metrics.items()}),
    )
    trainer.run()

    # Resume: a fresh trainer loads the final checkpoint with MONAI's CheckpointLoader.
    checkpoints = sorted(path.name for path in (out / "first").iterdir())
    final = out / "first" / next(name for name in checkpoints if "final" in name)
    resumed, _, resumed_objects = build(out / "second", max_epochs=6)
    CheckpointLoader(
        load_path=str(final),
        load_dict={**resumed_objects, "trainer": resumed},
    ).attach(resumed)
    resumed_losses: list[float] = []
    resumed.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda engine: resumed_losses.append(round(float(engine.state.output[0]["loss"]), 6)),
    )
    resumed.run()

    print(
        json.dumps(
            {
                "engine": f"{Engine.__module__}.{Engine.__qualname__}",
                "is_engine": isinstance(trainer, Engine) and isinstance(evaluator, Engine),
                "losses": losses,
                "iterations": trainer.state.iteration,
                "epochs": trainer.state.epoch,
                "lrs": lrs,
                "metrics": metrics,
                "best_metric": round(float(evaluator.state.best_metric), 6),
                "best_metric_epoch": evaluator.state.best_metric_epoch,
                "log": log.getvalue().splitlines(),
                "checkpoints": checkpoints,
                "digests": {name: digest(out / "first" / name) for name in checkpoints},
                "resumed_losses": resumed_losses,
            },
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
