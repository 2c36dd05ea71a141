"""ember.handlers' Checkpoint, ModelCheckpoint and DiskSaver on both loops, with real files.

File names follow ignite's rules; n_saved prunes, scores keep the best; load_objects resumes a
run to the same weights as an uninterrupted one; a failed save deletes nothing; bad inputs
raise errors that name the file.
"""

from __future__ import annotations

import decimal
import math
import os
import pickle
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from conftest import collect_garbage
from ember.distributed import GroupNotInitializedError
from ember.engine import Engine, Events
from ember.engine.supervised import supervised_training_step
from ember.handlers import (
    Checkpoint,
    CheckpointEvents,
    DiskSaver,
    LRScheduler,
    ModelCheckpoint,
    global_step_from_engine,
)
from ember.handlers.checkpoint import TEMPORARY_SUFFIX

MakeEngine = Callable[..., Any]


def names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def linear(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Linear(3, 2)


# ---------------------------------------------------------------------------- naming
def test_default_names_use_the_iteration(make_engine: MakeEngine, tmp_path: Path) -> None:
    model = linear()
    trainer = make_engine()
    checkpoint = Checkpoint({"model": model}, DiskSaver(tmp_path), n_saved=None)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=2), checkpoint)
    trainer.run([0, 1, 2], max_epochs=2)
    assert names(tmp_path) == ["model_2.pt", "model_4.pt", "model_6.pt"]
    assert checkpoint.last_checkpoint == tmp_path / "model_6.pt"
    state = torch.load(tmp_path / "model_6.pt", weights_only=True)
    assert torch.equal(state["weight"], model.weight)


def test_names_with_prefix_several_objects_and_epoch_step(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    trainer = make_engine()
    checkpoint = Checkpoint(
        {"model": linear(), "trainer": trainer},
        str(tmp_path),  # a directory: a DiskSaver is made
        filename_prefix="run",
        global_step_transform=lambda engine, event: engine.state.epoch,
        n_saved=2,
    )
    trainer.add_event_handler(Events.EPOCH_COMPLETED, checkpoint)
    trainer.run([0, 1], max_epochs=3)
    assert names(tmp_path) == ["run_checkpoint_2.pt", "run_checkpoint_3.pt"]
    saved = torch.load(tmp_path / "run_checkpoint_3.pt", weights_only=True)
    assert set(saved) == {"model", "trainer"}
    assert saved["trainer"]["iteration"] == 6


def test_names_with_score(make_engine: MakeEngine, tmp_path: Path) -> None:
    trainer = make_engine()
    evaluator = make_engine()
    accuracies = iter([0.5, 0.25, 0.75])

    @evaluator.on(Events.COMPLETED)
    def compute(engine: Engine) -> None:
        engine.state.metrics["acc"] = next(accuracies)

    checkpoint = Checkpoint(
        {"model": linear()},
        DiskSaver(tmp_path),
        filename_prefix="best",
        score_name="acc",  # alone: scores with evaluator.state.metrics["acc"]
        n_saved=2,
        global_step_transform=global_step_from_engine(trainer),
    )
    evaluator.add_event_handler(Events.COMPLETED, checkpoint)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: evaluator.run([0]))
    trainer.run([0, 1], max_epochs=3)
    # global_step_from_engine reads the trainer's counter for the evaluator's COMPLETED: epoch
    assert names(tmp_path) == ["best_model_1_acc=0.5000.pt", "best_model_3_acc=0.7500.pt"]
    assert checkpoint.last_checkpoint == tmp_path / "best_model_3_acc=0.7500.pt"

    plain = tmp_path / "plain"
    scored = Checkpoint({"m": linear()}, DiskSaver(plain), score_function=lambda e: 3)
    scored(trainer)
    assert names(plain) == ["m_3.pt"]  # an integral score is written as is


def test_filename_pattern(make_engine: MakeEngine, tmp_path: Path) -> None:
    trainer = make_engine()
    checkpoint = Checkpoint(
        {"model": linear()},
        DiskSaver(tmp_path),
        filename_pattern="{global_step}-{name}.{ext}",
        n_saved=None,
    )
    trainer.add_event_handler(Events.EPOCH_COMPLETED, checkpoint)
    trainer.run([0, 1, 2], max_epochs=2)
    assert names(tmp_path) == ["3-model.pt", "6-model.pt"]
    assert Checkpoint.setup_filename_pattern() == (
        "{filename_prefix}_{name}_{global_step}_{score_name}={score}.{ext}"
    )


# ---------------------------------------------------------------------------- keeping
@pytest.mark.parametrize("durability", ["background", "inline"])
def test_n_saved_prunes_the_oldest_and_fires_saved_checkpoint(
    make_engine: MakeEngine, tmp_path: Path, durability: str
) -> None:
    trainer = make_engine()
    saver = DiskSaver(tmp_path, durability=durability)
    checkpoint = Checkpoint({"model": linear()}, saver, n_saved=2)
    trainer.register_events(*CheckpointEvents)
    seen: list[tuple[int, list[str]]] = []

    @trainer.on(Checkpoint.SAVED_CHECKPOINT)
    def on_saved(engine: Engine) -> None:
        seen.append((engine.state.iteration, names(tmp_path)))

    trainer.add_event_handler(Events.EPOCH_COMPLETED, checkpoint)
    trainer.run([0, 1], max_epochs=4)
    assert names(tmp_path) == ["model_6.pt", "model_8.pt"]
    assert [iteration for iteration, _ in seen] == [2, 4, 6, 8]
    if durability == "inline":  # fired after the save and the pruning: n_saved files
        assert seen[-1][1] == ["model_6.pt", "model_8.pt"]
    else:  # the pruned file goes once the new one is durable, perhaps after the event
        assert set(seen[-1][1]) - {"model_4.pt"} == {"model_6.pt", "model_8.pt"}
    assert checkpoint.state_dict() == {"_saved": [(6, "model_6.pt"), (8, "model_8.pt")]}


def test_saved_checkpoint_event_is_registered_lazily(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    trainer = make_engine()
    checkpoint = Checkpoint({"model": linear()}, DiskSaver(tmp_path))
    assert not trainer.has_registered_events(CheckpointEvents.SAVED_CHECKPOINT)
    trainer.add_event_handler(Events.COMPLETED, checkpoint)
    trainer.run([0])
    assert trainer.has_registered_events(CheckpointEvents.SAVED_CHECKPOINT)


def scored_run(
    make_engine: MakeEngine, tmp_path: Path, scores: list[float], **kwargs: Any
) -> Checkpoint:
    """Run an evaluator for one epoch per score, keeping the 2 best checkpoints by "acc"."""
    remaining = iter(scores)
    evaluator = make_engine()
    checkpoint = Checkpoint(
        {"model": linear()},
        DiskSaver(tmp_path),
        score_function=lambda engine: next(remaining),
        score_name="acc",
        n_saved=2,
        **kwargs,
    )
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, checkpoint)
    evaluator.run([0], max_epochs=len(scores))
    return checkpoint


def test_score_keeps_the_best(make_engine: MakeEngine, tmp_path: Path) -> None:
    checkpoint = scored_run(make_engine, tmp_path, [0.1, 0.5, 0.3, 0.7, 0.2, 0.5])
    assert names(tmp_path) == ["model_acc=0.5000.pt", "model_acc=0.7000.pt"]
    assert checkpoint.last_checkpoint == tmp_path / "model_acc=0.7000.pt"  # the best
    assert [priority for priority, _ in checkpoint._saved] == [0.5, 0.7]


@pytest.mark.parametrize(
    ("greater_or_equal", "expected"),
    [
        (False, ["model_1_acc=0.5000.pt", "model_2_acc=0.7000.pt"]),
        (True, ["model_2_acc=0.7000.pt", "model_3_acc=0.5000.pt"]),
    ],
)
def test_greater_or_equal_replaces_on_ties(
    make_engine: MakeEngine, tmp_path: Path, greater_or_equal: bool, expected: list[str]
) -> None:
    scored_run(
        make_engine,
        tmp_path,
        [0.5, 0.7, 0.5, 0.2],
        global_step_transform=lambda engine, event: engine.state.epoch,
        greater_or_equal=greater_or_equal,
    )
    assert names(tmp_path) == expected


def test_model_checkpoint_is_called_with_to_save(make_engine: MakeEngine, tmp_path: Path) -> None:
    model = linear()
    trainer = make_engine()
    handler = ModelCheckpoint(tmp_path, "myprefix", n_saved=2, create_dir=True)
    trainer.add_event_handler(Events.EPOCH_COMPLETED(every=2), handler, {"mymodel": model})
    trainer.run([0, 1, 2, 3, 4], max_epochs=6)
    assert names(tmp_path) == ["myprefix_mymodel_20.pt", "myprefix_mymodel_30.pt"]
    assert handler.last_checkpoint == tmp_path / "myprefix_mymodel_30.pt"
    with pytest.raises(RuntimeError, match="No objects to checkpoint"):
        handler(trainer, {})


def test_checkpointer_state_dict_round_trip_and_include_self(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    trainer = make_engine()
    to_save = {"model": linear()}
    checkpoint = Checkpoint(to_save, DiskSaver(tmp_path), n_saved=2, include_self=True)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, checkpoint)
    trainer.run([0, 1], max_epochs=3)
    stored = torch.load(checkpoint.last_checkpoint, weights_only=True)
    assert set(stored) == {"model", "checkpointer"}
    assert stored["checkpointer"] == checkpoint.state_dict()
    assert stored["checkpointer"]["_saved"] == [(4, "model_4.pt"), (6, "model_6.pt")]

    # a fresh checkpointer that loads the list goes on pruning the files it did not write
    resumed = Checkpoint(to_save, DiskSaver(tmp_path, require_empty=False), n_saved=2)
    Checkpoint.load_objects({"checkpointer": resumed}, stored)
    assert resumed.last_checkpoint == tmp_path / "model_6.pt"
    trainer.state.iteration = 8
    resumed(trainer)  # outside a run: the pruning is finished by wait() (or the next save)
    resumed.wait()
    assert names(tmp_path) == ["model_6.pt", "model_8.pt"]
    with pytest.raises(ValueError, match="_saved"):
        resumed.load_state_dict({"saved": []})
    resumed.reset()
    assert resumed.last_checkpoint is None


# ---------------------------------------------------------------------------- resuming
def _training(backend: str, seed: int = 0) -> tuple[Engine, dict[str, Any]]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = LRScheduler(torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5))
    step = supervised_training_step(model, optimizer, torch.nn.functional.mse_loss)
    trainer = Engine(step, backend=backend)
    trainer.add_event_handler(Events.ITERATION_STARTED, scheduler)
    objects = {
        "model": model,
        "optimizer": optimizer,
        "lr_scheduler": scheduler,
        "trainer": trainer,
    }
    return trainer, objects


def _data() -> list[tuple[Any, Any]]:
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn(5, 4, generator=generator), torch.randn(5, 1, generator=generator))
        for _ in range(4)
    ]


def test_resume_from_checkpoint_reaches_the_same_weights(backend: str, tmp_path: Path) -> None:
    data = _data()
    straight, expected = _training(backend)
    straight.run(data, max_epochs=4)

    first, objects = _training(backend)
    checkpoint = Checkpoint(objects, DiskSaver(tmp_path), n_saved=1)
    first.add_event_handler(Events.EPOCH_COMPLETED, checkpoint)
    first.run(data, max_epochs=2)
    assert names(tmp_path) == ["checkpoint_8.pt"]

    second, fresh = _training(backend, seed=123)  # other initial weights
    Checkpoint.load_objects(fresh, checkpoint.last_checkpoint)
    assert (second.state.iteration, second.state.epoch) == (8, 2)
    second.run(data, max_epochs=4)
    assert second.state.iteration == 16
    reference = expected["model"].state_dict()
    for name, value in fresh["model"].state_dict().items():
        assert torch.equal(value, reference[name]), name
    assert fresh["optimizer"].param_groups[0]["lr"] == expected["optimizer"].param_groups[0]["lr"]
    assert fresh["optimizer"].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**5)  # 15 steps


def test_load_objects_single_object_and_strict(tmp_path: Path) -> None:
    model = linear()
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    other = linear(seed=5)
    Checkpoint.load_objects({"model": other}, tmp_path / "weights.pt")  # a bare state_dict
    assert torch.equal(other.weight, model.weight)

    bigger = torch.nn.Sequential(torch.nn.Linear(3, 2))
    partial = {"0.weight": model.weight.detach().clone()}
    with pytest.raises(RuntimeError, match="bias") as info:
        Checkpoint.load_objects({"model": bigger}, {"model": partial})
    assert "while loading 'model' from the checkpoint dictionary" in info.value.__notes__
    Checkpoint.load_objects({"model": bigger}, {"model": partial}, strict=False)
    assert torch.equal(bigger[0].weight, model.weight)


# ---------------------------------------------------------------------------- failures
class Unpicklable:
    """Its state_dict holds a local function once ``broken`` is set: torch.save fails midway."""

    def __init__(self) -> None:
        self.broken = False

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"big": torch.zeros(1 << 16)}
        if self.broken:
            state["oops"] = lambda: None
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@pytest.mark.parametrize("n_saved", [1, 2])
def test_failed_save_deletes_nothing(make_engine: MakeEngine, tmp_path: Path, n_saved: int) -> None:
    payload = Unpicklable()
    trainer = make_engine()
    checkpoint = Checkpoint({"payload": payload}, DiskSaver(tmp_path), n_saved=n_saved)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, checkpoint)

    @trainer.on(Events.EPOCH_COMPLETED(once=n_saved))
    def break_it() -> None:
        payload.broken = True

    with pytest.raises(Exception, match=r"[Pp]ickle|lambda|local object"):
        trainer.run([0], max_epochs=n_saved + 1)
    kept = [f"payload_{i}.pt" for i in range(1, n_saved + 1)]
    assert names(tmp_path) == kept  # no temporary file either
    assert checkpoint.last_checkpoint == tmp_path / kept[-1]
    assert [filename for _, filename in checkpoint._saved] == kept
    torch.load(tmp_path / kept[-1], weights_only=True)


def test_bad_arguments(tmp_path: Path) -> None:
    model = linear()
    for n_saved in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="n_saved must be a positive integer"):
            Checkpoint({"model": model}, DiskSaver(tmp_path / "a"), n_saved=n_saved)
    with pytest.raises(TypeError, match="to_save"):
        Checkpoint([model], DiskSaver(tmp_path / "b"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="state_dict"):
        Checkpoint({"x": object()}, DiskSaver(tmp_path / "c"))
    with pytest.raises(TypeError, match="save_handler"):
        Checkpoint({"model": model}, 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="checkpointer"):
        Checkpoint({"checkpointer": model}, DiskSaver(tmp_path / "d"), include_self=True)


def test_score_function_returning_nan(make_engine: MakeEngine, tmp_path: Path) -> None:
    trainer = make_engine()
    checkpoint = Checkpoint(
        {"model": linear()},
        DiskSaver(tmp_path),
        score_function=lambda e: math.nan,
        score_name="acc",
    )
    trainer.add_event_handler(Events.COMPLETED, checkpoint)
    with pytest.raises(ValueError, match="score_function 'acc' returned NaN"):
        trainer.run([0, 1])
    assert names(tmp_path) == []
    not_a_number = Checkpoint(
        {"model": linear()}, DiskSaver(tmp_path / "b"), score_function=lambda e: "high"
    )
    with pytest.raises(ValueError, match="should be a number"):
        not_a_number(trainer)


def test_load_objects_errors_name_the_file(tmp_path: Path) -> None:
    model = linear()
    good = tmp_path / "good.pt"
    torch.save({"model": model.state_dict(), "extra": torch.zeros(1000)}, good)
    content = good.read_bytes()

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match=r"truncated\.pt' could not be loaded: it is truncated"):
        Checkpoint.load_objects({"model": model}, truncated)

    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pt' could not be loaded"):
        Checkpoint.load_objects({"model": model}, str(empty))

    text = tmp_path / "notes.pt"
    text.write_text("this is not a checkpoint\n")
    with pytest.raises(ValueError, match=r"notes\.pt' could not be loaded"):
        Checkpoint.load_objects({"model": model}, text)

    a_list = tmp_path / "list.pt"
    torch.save([1, 2, 3], a_list)
    with pytest.raises(TypeError, match=r"list\.pt' holds a list, not a dictionary"):
        Checkpoint.load_objects({"model": model}, a_list)

    with pytest.raises(FileNotFoundError, match=r"missing\.pt' does not exist"):
        Checkpoint.load_objects({"model": model}, tmp_path / "missing.pt")

    with pytest.raises(
        ValueError, match=r"'optimizer' is not found in checkpoint file '.*good.pt'"
    ):
        Checkpoint.load_objects({"model": model, "optimizer": model}, good)

    with pytest.raises(TypeError, match="checkpoint should be a string or a dictionary"):
        Checkpoint.load_objects({"model": model}, 3)  # type: ignore[arg-type]


def test_a_missing_entry_leaves_every_object_as_it_was(tmp_path: Path) -> None:
    """The entries are all found before the first object loads: a checkpoint without the
    optimizer (or without a nested entry) does not leave the model or the trainer loaded."""
    saved_model, model = linear(), linear()
    trainer = Engine(lambda engine, batch: None)
    trainer.run([0, 1], max_epochs=3)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    path = tmp_path / "without_optimizer.pt"
    torch.save(
        {
            "trainer": {"epoch_length": 2, "iteration": 2, "max_epochs": 5},
            "model": saved_model.state_dict(),
        },
        path,
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"'optimizer' is not found"):
        Checkpoint.load_objects({"trainer": trainer, "model": model, "optimizer": optimizer}, path)
    with pytest.raises(ValueError, match=r"'nested.optimizer' is not found"):
        Checkpoint.load_objects(
            {"model": model, "nested": {"trainer": trainer, "optimizer": optimizer}},
            {"model": saved_model.state_dict(), "nested": {"trainer": trainer.state_dict()}},
        )
    assert trainer.state.iteration == 6
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())


def test_objects_saved_as_a_list_load_as_a_list(tmp_path: Path) -> None:
    """to_save may hold a list of objects (saved as a list of states): load_objects pairs the
    items, as ignite does (the list itself was asked for load_state_dict)."""
    first, second = linear(), linear()
    trainer = Engine(lambda e, b: None)
    checkpoint = Checkpoint({"models": [first, second], "trainer": trainer}, DiskSaver(tmp_path))
    trainer.add_event_handler(Events.COMPLETED, checkpoint)
    trainer.run([0], max_epochs=1)
    loaded = [linear(), linear()]
    Checkpoint.load_objects({"models": loaded}, checkpoint.last_checkpoint)
    for original, copy_ in zip((first, second), loaded, strict=True):
        assert torch.equal(original.weight, copy_.weight)
    with pytest.raises(ValueError, match=r"Entry 'models' of .* should be a list of 3 states"):
        Checkpoint.load_objects({"models": [*loaded, linear()]}, checkpoint.last_checkpoint)


# ---------------------------------------------------------------------------- DiskSaver
def test_disk_saver_require_empty(tmp_path: Path) -> None:
    (tmp_path / "old_model_1.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"\['old_model_1.pt'\].*require_empty=False"):
        DiskSaver(tmp_path)
    DiskSaver(tmp_path, require_empty=False)
    (tmp_path / "notes.txt").write_text("only .pt files count")
    DiskSaver(tmp_path / "sub")  # created
    assert (tmp_path / "sub").is_dir()
    with pytest.raises(ValueError, match="is not found"):
        DiskSaver(tmp_path / "absent", create_dir=False)
    with pytest.raises(ValueError, match="is not found"):
        DiskSaver(tmp_path / "notes.txt", create_dir=False)


@pytest.mark.parametrize("atomic", [True, False])
def test_disk_saver_writes_and_removes(tmp_path: Path, atomic: bool) -> None:
    saver = DiskSaver(tmp_path, atomic=atomic)
    saver({"x": torch.arange(3)}, "a.pt")
    saver({"x": torch.arange(4)}, "a.pt")  # replaces
    assert names(tmp_path) == ["a.pt"]
    assert torch.equal(torch.load(tmp_path / "a.pt", weights_only=True)["x"], torch.arange(4))
    assert (tmp_path / "a.pt").stat().st_mode & 0o044 == 0o044
    saver.remove("a.pt")
    saver.remove("a.pt")  # already gone: fine
    saver.wait()  # the removals wait for the last save to be durable
    assert names(tmp_path) == []


def test_stale_temporary_files_are_removed_but_not_live_ones(tmp_path: Path) -> None:
    fcntl = pytest.importorskip("fcntl")
    stale = tmp_path / f".model_3.pt.abc123{TEMPORARY_SUFFIX}"
    stale.write_bytes(b"half a checkpoint")
    live = tmp_path / f".model_4.pt.def456{TEMPORARY_SUFFIX}"
    live.write_bytes(b"being written")
    keep = tmp_path / ".hidden"
    keep.write_text("not ours")
    with live.open("rb") as writer:
        fcntl.flock(writer.fileno(), fcntl.LOCK_EX)  # what a live DiskSaver holds
        DiskSaver(tmp_path, require_empty=False)
        assert names(tmp_path) == [".hidden", live.name]
    saver = DiskSaver(tmp_path, require_empty=False)  # the writer is gone: stale
    assert names(tmp_path) == [".hidden"]
    assert saver.remove_stale_temporary_files() == []


# ---------------------------------------------------------------------------- the save's shortcuts
# A save skips work that does not change between saves (docs: the events' registration check,
# mkstemp, a stat before unlink). Each test below is the case where skipping would be wrong.
def test_one_checkpoint_on_two_engines_registers_and_fires_on_each(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    checkpoint = Checkpoint({"model": linear()}, DiskSaver(tmp_path), n_saved=None)
    first, second = make_engine(), make_engine()
    fired: list[str] = []
    for name, engine in (("first", first), ("second", second)):
        engine.register_events(*CheckpointEvents)
        engine.add_event_handler(
            CheckpointEvents.SAVED_CHECKPOINT, lambda _, name=name: fired.append(name)
        )
    for index, engine in enumerate((first, second, first, second)):
        engine.state.iteration = index + 1
        checkpoint(engine)
    assert fired == ["first", "second", "first", "second"]


def test_a_new_engine_after_the_old_one_died_gets_the_events(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    # A new engine may take the address of one collected: it is remembered weakly, not by id.
    checkpoint = Checkpoint({"model": linear()}, DiskSaver(tmp_path), n_saved=None)
    for iteration in range(1, 4):
        engine = make_engine()
        engine.state.iteration = iteration
        checkpoint(engine)
        assert engine.has_registered_events(CheckpointEvents.SAVED_CHECKPOINT)
        del engine
        collect_garbage()
    assert names(tmp_path) == ["model_1.pt", "model_2.pt", "model_3.pt"]


def test_an_engine_overriding_fire_event_sees_every_saved_checkpoint(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    fired: list[Any] = []

    class Recording(Engine):
        def fire_event(self, event_name: Any) -> None:
            fired.append(event_name)
            super().fire_event(event_name)

    engine = make_engine(cls=Recording)
    checkpoint = Checkpoint({"model": linear()}, DiskSaver(tmp_path), n_saved=1)
    for iteration in (1, 2):
        engine.state.iteration = iteration
        checkpoint(engine)
    assert fired == [CheckpointEvents.SAVED_CHECKPOINT] * 2


def test_a_checkpoint_pickles_after_a_save(make_engine: MakeEngine, tmp_path: Path) -> None:
    engine = make_engine()
    checkpoint = Checkpoint({"model": linear()}, DiskSaver(tmp_path), n_saved=2)
    engine.state.iteration = 1
    checkpoint(engine)
    copy = pickle.loads(pickle.dumps(checkpoint))
    assert copy.state_dict() == checkpoint.state_dict()
    other = make_engine()
    other.state.iteration = 2
    copy(other)
    assert other.has_registered_events(CheckpointEvents.SAVED_CHECKPOINT)
    assert names(tmp_path) == ["model_1.pt", "model_2.pt"]


@pytest.mark.parametrize(("umask", "chmods"), [(0o077, 1), (0o022, 0), (0o002, 0)])
def test_files_are_readable_by_all_whatever_the_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, umask: int, chmods: int
) -> None:
    calls: list[int] = []
    fchmod = os.fchmod
    monkeypatch.setattr(os, "fchmod", lambda fd, mode: (calls.append(mode), fchmod(fd, mode)))
    previous = os.umask(umask)
    try:
        DiskSaver(tmp_path)({"x": torch.arange(3)}, "a.pt")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a.pt").stat().st_mode) == 0o644  # as ignite's
    assert len(calls) == chmods  # a chmod only where the umask took read access away


def test_a_temporary_name_taken_already_is_not_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = iter([b"\x01" * 6, b"\x01" * 6, b"\x02" * 6])
    monkeypatch.setattr(os, "urandom", lambda size: next(tokens))
    taken = tmp_path / f".a.pt.{'01' * 6}{TEMPORARY_SUFFIX}"
    taken.write_bytes(b"another writer's")
    saver = DiskSaver(tmp_path, require_empty=False, create_dir=False)
    taken.write_bytes(b"another writer's")  # the constructor took it for stale
    saver({"x": torch.arange(3)}, "a.pt")
    assert taken.read_bytes() == b"another writer's"
    assert names(tmp_path) == [taken.name, "a.pt"]


def test_a_temporary_file_a_cleaner_removed_before_the_lock_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fcntl = pytest.importorskip("fcntl")
    real_flock = fcntl.flock
    saver = DiskSaver(tmp_path)
    cleaned: list[str] = []

    def flock_after_a_cleaner(fd: int, operation: int) -> None:
        if operation == fcntl.LOCK_EX and not cleaned:
            # Before the writer's lock, a cleaner took the unlocked file for stale.
            monkeypatch.setattr(fcntl, "flock", real_flock)
            cleaned.extend(saver.remove_stale_temporary_files())
            monkeypatch.setattr(fcntl, "flock", flock_after_a_cleaner)
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_a_cleaner)
    saver({"x": torch.arange(5)}, "a.pt")
    assert len(cleaned) == 1
    assert names(tmp_path) == ["a.pt"]
    assert torch.equal(torch.load(tmp_path / "a.pt", weights_only=True)["x"], torch.arange(5))


def test_remove_takes_files_symlinks_and_sharded_directories(tmp_path: Path) -> None:
    saver = DiskSaver(tmp_path)
    (tmp_path / "a.pt").write_bytes(b"x")
    sharded = tmp_path / "b.dcp"
    sharded.mkdir()
    (sharded / ".metadata").write_bytes(b"x")
    elsewhere = tmp_path / "kept"
    elsewhere.mkdir()
    (tmp_path / "c.dcp").symlink_to(elsewhere, target_is_directory=True)
    for name in ("a.pt", "b.dcp", "c.dcp", "never-there.pt"):
        saver.remove(name)
    assert names(tmp_path) == ["kept"]  # the link went, not what it points to


def test_an_object_without_state_dict_added_to_the_same_mapping_is_refused(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    # ModelCheckpoint checks a mapping when it is new; an object put into it later is refused
    # when the state is gathered, with the same message.
    engine = make_engine()
    handler = ModelCheckpoint(tmp_path, "run", n_saved=None)
    to_save: dict[str, Any] = {"model": linear()}
    engine.state.iteration = 1
    handler(engine, to_save)
    to_save["other"] = object()
    engine.state.iteration = 2
    with pytest.raises(TypeError, match="should have `state_dict` method"):
        handler(engine, to_save)
    with pytest.raises(TypeError, match="should have `state_dict` method"):
        handler(engine, {"x": object()})
    handler.wait()
    assert names(tmp_path) == ["run_model_1.pt"]


def test_a_launched_rank_without_its_group_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(GroupNotInitializedError, match="Checkpoint was called"):
        DiskSaver(tmp_path)
    assert names(tmp_path) == []


@pytest.mark.parametrize(
    ("saved", "error", "message"),
    [
        (5, TypeError, r"should be a list of \(priority, filename\) pairs, got int"),
        (None, TypeError, r"should be a list of \(priority, filename\) pairs, got NoneType"),
        ([(0, "victim.txt", 1)], TypeError, r"should hold \(priority, filename\) pairs"),
        ([(0, "ABSOLUTE")], ValueError, "should name files inside the checkpoint's directory"),
        ([(0, "../victim.txt")], ValueError, "should name files inside the checkpoint's directory"),
        ([(0, "")], ValueError, "should name files inside the checkpoint's directory"),
        ([(0, 7)], ValueError, "should name files inside the checkpoint's directory"),
        ([("high", "model_1.pt")], ValueError, "should hold numbers as priorities, got 'high'"),
        ([(math.nan, "model_1.pt")], ValueError, "should hold numbers as priorities, got nan"),
    ],
)
def test_a_loaded_list_of_saved_files_that_would_delete_elsewhere_or_not_order_is_refused(
    make_engine: MakeEngine, tmp_path: Path, saved: Any, error: type[Exception], message: str
) -> None:
    """The rotation deletes the files of ``_saved``: a name outside the directory would delete
    a file elsewhere at the next save; a priority that is not a number fails inside the loop."""
    victim = tmp_path / "victim.txt"
    victim.write_text("not a checkpoint")
    if saved == [(0, "ABSOLUTE")]:
        saved = [(0, str(victim))]
    checkpointer = Checkpoint({"model": torch.nn.Linear(2, 1)}, DiskSaver(tmp_path / "ckpt"))
    with pytest.raises(error, match=message):
        checkpointer.load_state_dict({"_saved": saved})
    engine = make_engine()
    engine.add_event_handler(Events.ITERATION_COMPLETED, checkpointer)
    engine.run([0])
    assert victim.read_text() == "not a checkpoint"
    assert names(tmp_path / "ckpt") == ["model_1.pt"]


def test_a_loaded_list_of_saved_files_as_saves_store_them_is_kept(tmp_path: Path) -> None:
    """Names in a subdirectory, and every priority a save may store: a score of any real number
    type, a global step a transform gave as a tensor."""
    checkpointer = Checkpoint({"model": torch.nn.Linear(2, 1)}, DiskSaver(tmp_path))
    saved = [
        (1, "runs/model_1.pt"),
        [2.5, "model_2.pt"],
        (decimal.Decimal("3.5"), "model_3.pt"),
        (torch.tensor(4), "model_4.pt"),
    ]
    checkpointer.load_state_dict({"_saved": saved})
    assert [tuple(item) for item in checkpointer.state_dict()["_saved"]] == [
        tuple(item) for item in saved
    ]
    with pytest.raises(ValueError, match="should hold numbers as priorities"):
        checkpointer.load_state_dict({"_saved": [(1j, "model_1.pt")]})


@pytest.mark.parametrize(
    ("rank", "error"), [("0", TypeError), (True, TypeError), (1.0, TypeError), (-1, ValueError)]
)
def test_a_save_on_rank_that_matches_no_rank_is_refused(
    tmp_path: Path, rank: Any, error: type[Exception]
) -> None:
    """Such a rank would silently never write (and last_checkpoint would name a missing file)."""
    for build in (
        lambda: DiskSaver(tmp_path, save_on_rank=rank),
        lambda: Checkpoint({"model": torch.nn.Linear(2, 1)}, tmp_path, save_on_rank=rank),
        lambda: ModelCheckpoint(tmp_path, "m", save_on_rank=rank, require_empty=False),
    ):
        with pytest.raises(error, match="save_on_rank should be"):
            build()
