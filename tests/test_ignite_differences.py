"""The remaining differences from ignite 0.5.5 that docs/migration.md lists, one test each, and
ember's handlers on ignite's Engine. (docs/check_migration.py shows the same side by side.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ember.engine import Events


def test_zero_epochs_raise_where_ignite_returns(make_engine: Any) -> None:
    engine = make_engine()
    with pytest.raises(ValueError, match="Argument max_epochs is invalid"):
        engine.run([0, 1], max_epochs=0)


def test_evaluator_outputs_are_inference_tensors(backend: str) -> None:
    torch = pytest.importorskip("torch")
    from ember.engine import create_supervised_evaluator

    data = [(torch.ones(3, 2), torch.ones(3, 1))]
    evaluator = create_supervised_evaluator(torch.nn.Linear(2, 1), backend=backend)
    evaluator.add_event_handler(
        Events.ITERATION_COMPLETED, lambda engine: engine.state.output[0].add_(1.0)
    )
    with pytest.raises(RuntimeError, match="Inplace update to inference tensor"):
        evaluator.run(data)
    # inference_mode=False: torch.no_grad(), as ignite, and the edit works.
    evaluator = create_supervised_evaluator(
        torch.nn.Linear(2, 1), inference_mode=False, backend=backend
    )
    evaluator.add_event_handler(
        Events.ITERATION_COMPLETED, lambda engine: engine.state.output[0].add_(1.0)
    )
    evaluator.run(data)


def test_trainer_leaves_a_submodule_in_eval_mode(backend: str) -> None:
    torch = pytest.importorskip("torch")
    from ember.engine import create_supervised_trainer

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    seen: list[bool] = []
    model[1].register_forward_hook(lambda module, args, output: seen.append(module.training))
    trainer = create_supervised_trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        torch.nn.functional.mse_loss,
        backend=backend,
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=1), model[1].eval)
    trainer.run([(torch.ones(1, 2), torch.ones(1, 2))] * 3)
    assert seen == [True, False, False]  # ignite: [True, True, True] (train() every iteration)


@pytest.mark.ignite
def test_filter_factories_fire_as_ignites(make_engine: Any) -> None:
    ignite_engine = pytest.importorskip("ignite.engine")
    factories = [
        ("every_event_filter", (3,)),
        ("once_event_filter", ([2, 5],)),
        ("before_and_after_event_filter", (7, 2)),
        ("before_and_after_event_filter", (None, 4)),
        ("every_before_and_after_event_filter", (2, 9, 1)),
        ("every_before_and_after_event_filter", (3, None, None)),
    ]
    for name, args in factories:
        fired: dict[str, list[int]] = {"ember": [], "ignite": []}
        for label, module, engine in (
            ("ember", Events, make_engine()),
            ("ignite", ignite_engine.Events, ignite_engine.Engine(lambda e, b: b)),
        ):
            event = module.ITERATION_COMPLETED(event_filter=getattr(module, name)(*args))
            engine.add_event_handler(
                event, lambda engine, seen=fired[label]: seen.append(engine.state.iteration)
            )
            engine.run(range(12))
        assert fired["ember"] == fired["ignite"], name


@pytest.mark.ignite
def test_ember_checkpoint_on_an_ignite_engine(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    ignite_engine = pytest.importorskip("ignite.engine")
    from ember.handlers import Checkpoint, CheckpointEvents, DiskSaver, ModelCheckpoint

    engine = ignite_engine.Engine(lambda e, b: b)
    model = torch.nn.Linear(2, 1)
    models = ModelCheckpoint(tmp_path / "models", "net", n_saved=2, create_dir=True)
    engine.add_event_handler(ignite_engine.Events.EPOCH_COMPLETED, models, {"m": model})
    checkpoint = Checkpoint({"m": model, "trainer": engine}, DiskSaver(tmp_path / "all"))
    engine.add_event_handler(ignite_engine.Events.EPOCH_COMPLETED, checkpoint)
    saved: list[int] = []
    engine.add_event_handler(
        ignite_engine.Events.EPOCH_COMPLETED(once=1),
        lambda: engine.add_event_handler(
            CheckpointEvents.SAVED_CHECKPOINT, lambda e: saved.append(e.state.epoch)
        ),
    )
    engine.run([0, 1], max_epochs=3)
    assert sorted(path.name for path in (tmp_path / "models").iterdir()) == [
        "net_m_4.pt",
        "net_m_6.pt",
    ]
    assert [path.name for path in (tmp_path / "all").iterdir()] == ["checkpoint_6.pt"]
    assert saved == [2, 2, 3, 3]  # two checkpointers fire SAVED_CHECKPOINT, from epoch 2 on
    restored = ignite_engine.Engine(lambda e, b: b)
    Checkpoint.load_objects({"m": model, "trainer": restored}, checkpoint.last_checkpoint)
    assert restored.state.iteration == 6


@pytest.mark.parametrize("name", ["TensorboardLogger", "BasicTimeProfiler", "WandBLogger"])
def test_ignite_only_handler_names_point_to_ignite_and_the_switch(name: str) -> None:
    import ember.handlers

    with pytest.raises(ImportError, match=f"from ignite.handlers import {name}") as caught:
        exec(f"from ember.handlers import {name}", {})  # noqa: S102 - the statement users write
    assert "pytorch-ignite 0.5.5" in str(caught.value)
    assert "ember.patch_ignite()" in str(caught.value)
    assert name not in dir(ember.handlers)
