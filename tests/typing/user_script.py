"""A typed user script: what mypy and pyright must see through ember's lazy modules.

`.ci/run` type-checks it with both (`mypy examples tests/typing`, `basedpyright`); each
``assert_type`` fails if a name were typed ``Any`` or ``object``. It also runs (tests/test_typing.py).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any, assert_type

import torch

import ember
import ember.engine
from ember.engine import (
    DeterministicEngine,
    Engine,
    Events,
    EventsList,
    RemovableEventHandle,
    State,
    create_supervised_evaluator,
    create_supervised_trainer,
)
from ember.handlers import (
    Checkpoint,
    DiskSaver,
    EarlyStopping,
    LRScheduler,
    ModelCheckpoint,
    Profiler,
    ProgressBar,
    TerminateOnNan,
    Timer,
)
from ember.metrics import Accuracy, Loss


def main() -> float:
    folder = tempfile.mkdtemp(prefix="ember-typing-")
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(4)]

    trainer = create_supervised_trainer(model, optimizer, torch.nn.functional.cross_entropy)
    assert_type(trainer, Engine)
    evaluator = create_supervised_evaluator(model, metrics={"accuracy": Accuracy()})
    assert_type(evaluator, Engine)
    assert_type(ember.engine.Engine, type[Engine])
    assert_type(DeterministicEngine(lambda engine, batch: None), DeterministicEngine)

    events = Events.EPOCH_COMPLETED | Events.COMPLETED
    assert_type(events, EventsList)
    seen: list[int] = []

    @trainer.on(Events.EPOCH_COMPLETED)
    def validate(engine: Engine) -> None:
        seen.append(engine.state.epoch)
        evaluator.run(data)

    assert_type(validate(trainer), None)  # the decorator kept the function's type
    handle = trainer.add_event_handler(Events.COMPLETED, lambda engine: None)
    assert_type(handle, RemovableEventHandle)

    Loss(torch.nn.functional.cross_entropy).attach(evaluator, "loss")
    checkpoint = Checkpoint({"model": model}, DiskSaver(folder, require_empty=False))
    assert_type(checkpoint, Checkpoint)
    assert_type(ModelCheckpoint(folder, "net", require_empty=False), ModelCheckpoint)
    stopper = EarlyStopping(3, lambda engine: float(engine.state.metrics["accuracy"]), trainer)
    assert_type(stopper, EarlyStopping)
    evaluator.add_event_handler(Events.COMPLETED, stopper)
    assert_type(Timer(average=True), Timer)
    assert_type(TerminateOnNan(), TerminateOnNan)
    assert_type(ProgressBar, type[ProgressBar])
    scheduler = LRScheduler(torch.optim.lr_scheduler.StepLR(optimizer, step_size=2))
    assert_type(scheduler, LRScheduler)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, scheduler)
    profiler = Profiler()
    assert_type(profiler, Profiler)

    state = trainer.run(data, max_epochs=2)
    assert_type(state, State)
    transform: Callable[[Any], Any] = lambda output: output  # noqa: E731
    assert transform(state) is state
    assert seen == [0, 1, 2]  # the direct call above, then epochs 1 and 2
    assert ember.ignite_patched() in (True, False)
    return float(evaluator.state.metrics["accuracy"])


if __name__ == "__main__":
    main()
