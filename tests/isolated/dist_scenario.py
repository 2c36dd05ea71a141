"""One script, three launches: alone, spawned by ``Parallel``, or started by torchrun.

    python dist_scenario.py OUT_DIR spawn ok cpp,python      # Parallel(nproc_per_node=2)
    torchrun --nnodes 2 --nproc-per-node 1 --node-rank K --master-addr 127.0.0.1 \\
        --master-port PORT dist_scenario.py OUT_DIR torchrun ok cpp,python
    python dist_scenario.py OUT_DIR spawn fail cpp            # rank 1 raises at iteration 3
    python dist_scenario.py OUT_DIR spawn exit cpp            # rank 1 dies: os._exit(3)

Every rank writes OUT_DIR/rank<R>.json (its place in the group, collectives, and for each engine
backend: metrics of two evaluation data sets sharded by ``auto_dataloader``, which samples it
saw, what it trained on per epoch) and OUT_DIR/weights_<backend>_rank<R>.pt (its weights after
DDP training). ``one_rank_only`` writes OUT_DIR/checkpoint_<backend>.pt and appends the writing
rank to OUT_DIR/writers_<backend>.txt. The test imports this file for the single-process
reference (``evaluate``, ``train``).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

import ember.distributed as edist
from ember.engine import Engine, Events
from ember.handlers import DiskSaver
from ember.metrics import (
    Accuracy,
    Average,
    ConfusionMatrix,
    Fbeta,
    Loss,
    MeanSquaredError,
    Precision,
    Recall,
    RunningAverage,
    TopKCategoricalAccuracy,
)

# Far above the test's limit on a launch: a failing launch that ends in time was not left
# waiting for a collective to time out.
TIMEOUT = timedelta(minutes=10)
EVAL_SIZES = (12, 13)  # 13 does not divide by 2: rank 0 gets 7 samples, rank 1 gets 6
TRAIN_SIZE = 32
GLOBAL_BATCH = 8
EPOCHS = 3
FAIL_AT = 3


# ---------------------------------------------------------------------------------- data
def classification_data(size: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(size)
    scores = torch.randn(size, 3, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 3, (size,), generator=generator)
    return TensorDataset(torch.arange(size), scores, labels)


def regression_data() -> TensorDataset:
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(TRAIN_SIZE, 4, generator=generator)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(
        TRAIN_SIZE, 1, generator=generator
    )
    return TensorDataset(torch.arange(TRAIN_SIZE), x, y)


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def metrics() -> dict[str, Any]:
    """The metrics of the evaluation, fresh."""
    accuracy = Accuracy()
    return {
        "accuracy": accuracy,
        "accuracy_percent": accuracy * 100,
        "precision": Precision(average=False),
        "recall_macro": Recall(average="macro"),
        "f1_weighted": Fbeta(1.0, average="weighted"),
        "confusion": ConfusionMatrix(3),
        "loss": Loss(torch.nn.functional.cross_entropy),
        "top2": TopKCategoricalAccuracy(k=2),
        "mse_onehot": MeanSquaredError(
            output_transform=lambda out: (
                out[0],
                torch.nn.functional.one_hot(out[1], 3).to(out[0].dtype),
            )
        ),
        "mean_first_score": Average(output_transform=lambda out: out[0][:, :1]),
    }


def plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


# ------------------------------------------------------------------------------ evaluate
def evaluate(loader: Any, backend: str) -> dict[str, Any]:
    """The metrics on ``loader`` (summed over the ranks) and the sample indices this rank saw."""
    seen: list[int] = []

    def step(engine: Engine, batch: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        seen.extend(batch[0].tolist())
        return batch[1], batch[2]

    evaluator = Engine(step, backend=backend)
    for name, metric in metrics().items():
        metric.attach(evaluator, name)
    state = evaluator.run(loader)
    return {
        "metrics": {name: plain(state.metrics[name]) for name in metrics()},
        "seen": seen,
        "iterations": state.iteration,
    }


# --------------------------------------------------------------------------------- train
def train(loader: Any, backend: str, fail_rank: int | None = None) -> dict[str, Any]:
    """SGD with momentum for EPOCHS epochs; the weights, the indices of each epoch."""
    model = edist.auto_model(make_model())
    optimizer = edist.auto_optim(torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
    per_epoch: dict[int, list[int]] = {}

    def step(engine: Engine, batch: list[torch.Tensor]) -> float:
        if fail_rank == edist.get_rank() and engine.state.iteration == FAIL_AT:
            raise ValueError(f"rank {fail_rank} fails on purpose at iteration {FAIL_AT}")
        index, x, y = batch
        per_epoch.setdefault(engine.state.epoch, []).extend(index.tolist())
        model.train()
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    trainer = Engine(step, backend=backend)
    sampler_epochs: list[int] = []
    trainer.add_event_handler(
        Events.EPOCH_STARTED,
        lambda engine: sampler_epochs.append(getattr(loader.sampler, "epoch", -1)),
    )
    RunningAverage(output_transform=lambda loss: loss).attach(trainer, "running_loss")
    state = trainer.run(loader, max_epochs=EPOCHS)
    module = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    return {
        "weights": {key: value.detach().clone() for key, value in module.state_dict().items()},
        "per_epoch": per_epoch,
        "sampler_epochs": sampler_epochs,
        "running_loss": state.metrics["running_loss"],
    }


# ---------------------------------------------------------------------------------- main
def collectives() -> dict[str, Any]:
    rank = edist.get_rank()
    matrix = torch.arange(6.0).reshape(2, 3)
    return {
        "sum": edist.all_reduce(rank + 1),
        "max": edist.all_reduce(torch.tensor([1.5, float(rank)]), op="MAX").tolist(),
        "and": edist.all_reduce(rank == 0, op="AND"),
        "numbers": edist.all_gather(rank * 10),
        "strings": edist.all_gather("r" * (rank + 1)),
        "tensors": edist.all_gather(torch.arange(rank + 1)).tolist(),
        "broadcast": edist.broadcast(f"from rank {rank}" if rank == 0 else None),
        "broadcast_tensor": edist.broadcast(
            torch.full((2,), 7.0) if rank == edist.get_world_size() - 1 else None,
            src=edist.get_world_size() - 1,
        ).tolist(),
        # Strided layouts: the backends move raw memory.
        "broadcast_transposed": edist.broadcast(matrix.t() if rank == 0 else None).tolist(),
        "sum_of_layouts": edist.all_reduce(
            matrix.t() if rank == 0 else matrix.t().contiguous()
        ).tolist(),
    }


def refused(out: Path) -> dict[str, str]:
    """What each rank raises for arguments that would fit no rank or leave one without data."""
    attempts = {
        "batch_size": lambda: edist.auto_dataloader(classification_data(4), batch_size=0),
        "too_few_samples": lambda: edist.auto_dataloader(classification_data(1), batch_size=2),
        "save_on_rank": lambda: DiskSaver(out / "refused", save_on_rank=edist.get_world_size()),
    }
    errors = {}
    for name, attempt in attempts.items():
        try:
            attempt()
        except ValueError as error:
            errors[name] = str(error)
    return errors


def nothing_seen_on_other_ranks() -> Any:
    """Only rank 0 updates: every rank computes rank 0's value (the others hold None)."""
    precision = Precision(average=False)
    if edist.get_rank() == 0:
        precision.update((torch.eye(3)[[0, 1, 2, 2]], torch.tensor([0, 1, 1, 2])))
    return plain(precision.compute())


def dtype_seen_by_a_rank_that_saw_nothing() -> str:
    """Only rank 0 averages float32 values: every rank's result is float32."""
    average = RunningAverage(output_transform=lambda value: value)
    if edist.get_rank() == 0:
        average.update(torch.tensor(2.0))
    return str(average.compute().dtype)


def main(local_rank: int, out_dir: str, mode: str, engine_backends: str) -> None:
    out = Path(out_dir)
    rank = edist.get_rank()
    result: dict[str, Any] = {
        "rank": rank,
        "local_rank": local_rank,
        "world_size": edist.get_world_size(),
        "node_rank": edist.get_node_rank(),
        "nnodes": edist.get_nnodes(),
        "nproc_per_node": edist.get_nproc_per_node(),
        "backend": edist.backend(),
        "device": str(edist.device()),
        "collectives": collectives(),
        "refused": refused(out),
        "nothing_seen": nothing_seen_on_other_ranks(),
        "nothing_seen_dtype": dtype_seen_by_a_rank_that_saw_nothing(),
        "engines": {},
    }
    if mode == "exit":
        if rank == 1:
            os._exit(3)  # dies without a Python exception while rank 0 waits
        edist.barrier()  # fails on rank 0: rank 1 is gone
        return
    for backend in engine_backends.split(","):
        if mode == "fail":
            train(
                edist.auto_dataloader(regression_data(), batch_size=GLOBAL_BATCH, shuffle=True),
                backend,
                fail_rank=1,
            )
            continue
        evaluations = {
            str(size): evaluate(
                edist.auto_dataloader(classification_data(size), batch_size=4), backend
            )
            for size in EVAL_SIZES
        }
        loader = edist.auto_dataloader(regression_data(), batch_size=GLOBAL_BATCH, shuffle=True)
        trained = train(loader, backend)
        torch.save(trained["weights"], out / f"weights_{backend}_rank{rank}.pt")

        @edist.one_rank_only(with_barrier=True)
        def save_checkpoint(weights: dict[str, torch.Tensor], backend: str = backend) -> None:
            torch.save({"model": weights, "epoch": EPOCHS}, out / f"checkpoint_{backend}.pt")
            with (out / f"writers_{backend}.txt").open("a") as log:
                log.write(f"{edist.get_rank()}\n")

        save_checkpoint(trained["weights"])
        result["engines"][backend] = {
            "evaluations": evaluations,
            "per_epoch": {str(epoch): seen for epoch, seen in trained["per_epoch"].items()},
            "sampler_epochs": trained["sampler_epochs"],
            "running_loss": trained["running_loss"],
            "batch_size": loader.batch_size,
            "sampler": type(loader.sampler).__name__,
        }
    (out / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    out_dir, launch, mode, engine_backends = sys.argv[1:5]
    nproc_per_node = 2 if launch == "spawn" else None  # torchrun starts the processes itself
    backend = None if launch == "single" else "gloo"
    with edist.Parallel(
        backend=backend, nproc_per_node=nproc_per_node, timeout=TIMEOUT
    ) as parallel:
        parallel.run(main, out_dir, mode, engine_backends)
    print(f"{launch} {mode}: done", flush=True)
