"""ignite's handlers that check ``isinstance(engine, ignite.engine.Engine)`` or take ``|`` event
lists, on whichever Engine ``ignite.engine`` hands out.

    python tests/isolated/ignite_handlers.py OUT_DIR                        # ignite's Engine
    python -m ember.patch_ignite tests/isolated/ignite_handlers.py OUT_DIR  # ember's

Prints one JSON line of results that do not depend on timing; tests/test_patch_ignite.py
compares the two runs.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import torch
from ignite.engine import Engine, Events, create_supervised_trainer
from ignite.handlers import (
    BasicTimeProfiler,
    EarlyStopping,
    HandlersTimeProfiler,
    ModelCheckpoint,
    TensorboardLogger,
    global_step_from_engine,
)
from ignite.handlers.tensorboard_logger import OutputHandler
from ignite.metrics import Loss


def main() -> None:
    out = Path(sys.argv[1])
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = [(torch.randn(4, 3), torch.randn(4, 1)) for _ in range(5)]
    trainer = create_supervised_trainer(model, optimizer, torch.nn.functional.mse_loss)
    evaluator = Engine(lambda engine, batch: (model(batch[0]), batch[1]))
    Loss(torch.nn.functional.mse_loss).attach(evaluator, "mse")
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: evaluator.run(data))

    # Scores that stop getting better after epoch 2: EarlyStopping(patience=2) stops at epoch 4.
    scores = iter([1.0, 2.0, 1.5, 1.9, 1.0, 3.0, 4.0])
    stopper = EarlyStopping(patience=2, score_function=lambda engine: next(scores), trainer=trainer)
    evaluator.add_event_handler(Events.COMPLETED, stopper)

    basic = BasicTimeProfiler()
    basic.attach(trainer)
    per_handler = HandlersTimeProfiler()
    per_handler.attach(trainer)

    tb_logger = TensorboardLogger(log_dir=str(out / "tb"))
    tb_logger.attach(
        trainer,
        OutputHandler(tag="train", output_transform=lambda loss: {"loss": loss}),
        event_name=Events.ITERATION_COMPLETED(every=2) | Events.COMPLETED,
    )
    tb_logger.attach_output_handler(
        evaluator,
        event_name=Events.COMPLETED,
        tag="validation",
        metric_names=["mse"],
        global_step_transform=global_step_from_engine(trainer),
    )
    checkpointer = ModelCheckpoint(out / "models", "net", n_saved=2, require_empty=False)
    trainer.add_event_handler(Events.EPOCH_COMPLETED | Events.COMPLETED, checkpointer, {"m": model})

    logging.getLogger("ignite.engine.engine.Engine").setLevel(logging.DEBUG)
    logged = trainer.logger.isEnabledFor(logging.DEBUG)
    trainer.run(data, max_epochs=10)
    tb_logger.close()

    basic_results = basic.get_results()
    handler_results = per_handler.get_results()
    print(
        json.dumps(
            {
                "engine": f"{type(trainer).__module__}.{type(trainer).__qualname__}",
                "logger": trainer.logger.name,
                "debug_enabled_by_ignite_logger_name": logged,
                "stopped_at": [trainer.state.epoch, trainer.state.iteration],
                "loss": round(float(trainer.state.output), 6),
                "mse": round(float(evaluator.state.metrics["mse"]), 6),
                "basic_profiler_keys": sorted(basic_results),
                "basic_profiler_iterations": int(basic_results["processing_stats"]["total"] > 0),
                "handler_profiler_rows": sorted({row[0] for row in handler_results[:-2]}),
                "tensorboard_files": len(list((out / "tb").iterdir())),
                "checkpoints": sorted(path.name for path in (out / "models").iterdir()),
            },
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
