"""Checkpoints of an FSDP2 (DTensor) model on 2 spawned gloo processes, synchronous and async.

    python sharded_checkpoint.py OUT_DIR

Each rank trains a model sharded with ``fully_shard`` for 3 iterations, changing the weights in
place every iteration, with a ``Checkpoint`` (n_saved=2) at every iteration, once per mode. It
notes the full weights at each save (``full_tensor``, a collective), loads the last checkpoint
into a fresh sharded model and engine, and writes ``OUT_DIR/rank{R}.json``: the directory's
listing, the files of the last checkpoint, and whether the loaded weights and iteration equal
those of the save; and, for a model that is not sharded, what each rank wrote and copied.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import ember.distributed as edist
from ember.engine import Engine, Events
from ember.handlers import Checkpoint, DiskSaver

torch.set_num_threads(1)


def sharded_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    mesh = init_device_mesh("cpu", (edist.get_world_size(),))
    for layer in model:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def full_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.full_tensor().clone() for key, value in model.state_dict().items()}


def run_mode(out: Path, mode: str) -> dict[str, Any]:
    directory = out / mode
    model = sharded_model(seed=0)

    def step(engine: Engine, batch: Any) -> None:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(1.0)

    trainer = Engine(step)
    checkpoint = Checkpoint(
        {"model": model, "trainer": trainer},
        str(directory),
        n_saved=2,
        include_self=True,
        async_save=mode == "async",
    )
    expected: dict[int, dict[str, torch.Tensor]] = {}

    @trainer.on(Events.ITERATION_COMPLETED)
    def save(engine: Engine) -> None:
        expected[engine.state.iteration] = full_weights(model)
        checkpoint(engine)
        with torch.no_grad():  # changed in place while the asynchronous write runs
            for parameter in model.parameters():
                parameter.mul_(-2.0)

    trainer.run([0, 1, 2])
    edist.barrier()
    last = checkpoint.last_checkpoint
    assert last is not None
    fresh_model = sharded_model(seed=1)
    fresh_trainer = Engine(step)
    resumed = Checkpoint({"model": fresh_model}, DiskSaver(directory, require_empty=False))
    to_load = {"model": fresh_model, "trainer": fresh_trainer, "checkpointer": resumed}
    Checkpoint.load_objects(to_load, last)
    loaded = full_weights(fresh_model)
    return {
        "listing": sorted(path.name for path in directory.iterdir()),
        "last": Path(last).name,
        "last_files": sorted(path.name for path in Path(last).iterdir()),
        "saved": checkpoint.state_dict()["_saved"],
        "resumed_saved": resumed.state_dict()["_saved"],
        "weights_equal": all(torch.equal(loaded[k], v) for k, v in expected[3].items()),
        "iteration": fresh_trainer.state.iteration,
        "local_shard_rows": next(iter(fresh_model.state_dict().values())).to_local().shape[0],
    }


def run_replicated(out: Path) -> dict[str, Any]:
    """A model that is not sharded: only rank 0 copies and writes, as with synchronous saves."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    trainer = Engine(lambda engine, batch: None)
    checkpoint = Checkpoint({"model": model}, str(out / "replicated"), n_saved=1, async_save=True)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, checkpoint)
    trainer.run([0, 1])
    edist.barrier()
    return {
        "listing": sorted(path.name for path in (out / "replicated").iterdir()),
        "host_buffers": len(checkpoint._host_snapshot._buffers),
        "saved": checkpoint.state_dict()["_saved"],
    }


def main(local_rank: int, out_dir: str) -> None:
    out = Path(out_dir)
    result = {mode: run_mode(out, mode) for mode in ("sync", "async")}
    result["replicated"] = run_replicated(out)
    (out / f"rank{edist.get_rank()}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    with edist.Parallel(backend="gloo", nproc_per_node=2, timeout=60) as parallel:
        parallel.run(main, sys.argv[1])
