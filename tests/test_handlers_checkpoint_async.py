"""``Checkpoint(async_save=True)`` on both loops: the file holds the state at the call although
training changes it during the write; the synchronous path's promises hold (rotation only after
the write, state_dict round trip, one writer rank); one write in flight; writer errors raised
at the next save or at the run's end; the run's end waits for the write; no thread is left.

The writes are held back by a gate (a ``DiskSaver`` that waits for an event before writing), so
what happens during a write is decided by the test, not by timing.
"""

from __future__ import annotations

import gc
import logging
import signal
import subprocess
import sys
import textwrap
import threading
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from ember.engine import Engine, Events
from ember.engine.profile import Profiler
from ember.handlers import Checkpoint, CheckpointEvents, DiskSaver, ModelCheckpoint
from ember.handlers.checkpoint import PROFILER_WAIT_ROW, WRITER_THREAD_NAME

MakeEngine = Callable[..., Any]


class GatedSaver(DiskSaver):
    """A DiskSaver whose writes wait for ``gate``; ``fail`` names files whose write raises."""

    def __init__(self, dirname: Path) -> None:
        super().__init__(dirname, require_empty=False)
        self.gate = threading.Event()
        self.gate.set()
        self.writing = threading.Event()
        self.fail: set[str] = set()
        self.threads: list[str] = []

    def __call__(
        self,
        checkpoint: Mapping[str, Any],
        filename: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.threads.append(threading.current_thread().name)
        self.writing.set()
        assert self.gate.wait(timeout=60), "the test never opened the gate"
        if filename in self.fail:
            raise OSError(f"disk full while writing {filename}")
        super().__call__(checkpoint, filename, metadata)


def names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def writer_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == WRITER_THREAD_NAME]


def model_and_step(seed: int = 0) -> tuple[torch.nn.Module, Callable[[Engine, Any], None]]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Linear(16, 4))

    def step(engine: Engine, batch: Any) -> None:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(1.0)  # in place: the snapshot must not see it

    return model, step


def load(path: Path | str | None) -> Any:
    assert path is not None
    return torch.load(path, weights_only=True)


def test_file_holds_the_state_of_the_call_while_training_changes_it(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    model, step = model_and_step()
    saver = GatedSaver(tmp_path)
    checkpoint = Checkpoint({"model": model}, saver, n_saved=None, async_save=True)
    trainer = make_engine(step)
    expected: dict[int, dict[str, torch.Tensor]] = {}

    @trainer.on(Events.ITERATION_COMPLETED)
    def save(engine: Engine) -> None:
        expected[engine.state.iteration] = {k: v.clone() for k, v in model.state_dict().items()}
        saver.gate.clear()
        saver.writing.clear()
        checkpoint(engine)
        assert saver.writing.wait(timeout=60)  # the writer holds the snapshot now
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.mul_(-3.0)  # changed in place while the file is being written
        saver.gate.set()

    trainer.run([0, 1, 2])
    assert names(tmp_path) == ["model_1.pt", "model_2.pt", "model_3.pt"]
    for iteration, state in expected.items():
        stored = load(tmp_path / f"model_{iteration}.pt")
        assert stored.keys() == state.keys()
        for key, value in state.items():
            assert torch.equal(stored[key], value), (iteration, key)
    assert set(saver.threads) == {WRITER_THREAD_NAME}


def test_host_buffers_are_allocated_once_and_reused(tmp_path: Path) -> None:
    model, _ = model_and_step()
    checkpoint = Checkpoint({"model": model}, DiskSaver(tmp_path), async_save=True)
    trainer = Engine(lambda engine, batch: None)

    def buffer_addresses() -> dict[Any, int]:
        return {
            path: buffer.data_ptr()
            for path, (buffer, _) in checkpoint._host_snapshot._buffers.items()
        }

    checkpoint(trainer)
    first = buffer_addresses()
    assert len(first) == 4
    trainer.state.iteration = 1
    checkpoint(trainer)
    checkpoint.wait()
    assert buffer_addresses() == first


def test_snapshot_copies_every_kind_of_entry_and_keeps_the_structure() -> None:
    from ember.handlers.checkpoint import _HostSnapshot

    base = torch.arange(100.0)
    module = torch.nn.Linear(3, 2)
    shared = torch.ones(4)
    state: dict[str, Any] = {
        "model": module.state_dict(),  # an OrderedDict with _metadata
        "offset_view": base[10:20],
        "transposed": base.view(10, 10).t(),
        "bfloat16": torch.arange(5, dtype=torch.bfloat16),
        "conjugate": torch.tensor([1 + 2j, 3 - 1j]).conj(),  # a lazy view: not its raw bytes
        "parameter": torch.nn.Parameter(torch.ones(2)),
        "nested": {"pair": (shared, shared), "step": 3, "betas": (0.9, 0.99), "names": ["a"]},
    }
    weight = module.weight.detach().clone()
    snapshot, events = _HostSnapshot().take(state)
    assert events == []
    assert type(snapshot["model"]) is type(state["model"])
    assert snapshot["model"]._metadata == state["model"]._metadata
    assert isinstance(snapshot["parameter"], torch.nn.Parameter)
    assert isinstance(snapshot["nested"]["pair"], tuple)
    assert snapshot["nested"]["pair"][0] is snapshot["nested"]["pair"][1]  # shared stays shared
    assert snapshot["nested"]["betas"] == (0.9, 0.99)
    expected = {k: v for k, v in state.items() if k not in ("model", "nested", "conjugate")}
    with torch.no_grad():
        for value in (base, state["bfloat16"], state["parameter"], shared, *module.parameters()):
            value.add_(100)  # training changes everything in place
    for key, value in expected.items():
        assert not torch.equal(snapshot[key], value), key
    assert torch.equal(snapshot["offset_view"], torch.arange(10.0, 20.0))
    assert torch.equal(snapshot["transposed"], torch.arange(100.0).view(10, 10).t())
    assert torch.equal(snapshot["bfloat16"], torch.arange(5, dtype=torch.bfloat16))
    assert torch.equal(snapshot["conjugate"], torch.tensor([1 - 2j, 3 + 1j]))
    assert torch.equal(snapshot["nested"]["pair"][0], torch.ones(4))
    assert torch.equal(snapshot["model"]["weight"], weight)


def test_rotation_and_last_checkpoint_change_only_once_the_file_is_written(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    model, step = model_and_step()
    saver = GatedSaver(tmp_path)
    checkpoint = Checkpoint({"model": model}, saver, n_saved=1, async_save=True, include_self=True)
    trainer = make_engine(step)
    trainer.register_events(*CheckpointEvents)
    fired: list[tuple[int, list[str]]] = []
    trainer.add_event_handler(
        CheckpointEvents.SAVED_CHECKPOINT,
        lambda engine: fired.append((engine.state.iteration, names(tmp_path))),
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED, checkpoint)

    @trainer.on(Events.ITERATION_STARTED(once=2))
    def hold_the_second_write(engine: Engine) -> None:
        saver.gate.clear()
        saver.writing.clear()

    @trainer.on(Events.ITERATION_STARTED(once=3))
    def during_the_second_write(engine: Engine) -> None:
        assert saver.writing.wait(timeout=60)
        assert names(tmp_path) == ["model_1.pt"]  # the old file stays until the new one is on disk
        assert checkpoint.last_checkpoint == tmp_path / "model_1.pt"
        assert checkpoint.state_dict() == {"_saved": [(1, "model_1.pt")]}
        assert checkpoint.write_in_progress
        saver.gate.set()

    trainer.run([0, 1, 2])
    assert names(tmp_path) == ["model_3.pt"]
    assert not checkpoint.write_in_progress
    # SAVED_CHECKPOINT fires in the training thread when the write is seen done: the next call
    assert [iteration for iteration, _ in fired] == [2, 3, 3]
    stored = load(checkpoint.last_checkpoint)
    assert stored["checkpointer"] == checkpoint.state_dict() == {"_saved": [(3, "model_3.pt")]}

    # the checkpointer's own state round trip: a fresh one goes on pruning the files
    resumed = Checkpoint(
        {"model": model}, DiskSaver(tmp_path, require_empty=False), async_save=True
    )
    Checkpoint.load_objects({"checkpointer": resumed}, stored)
    trainer.state.iteration = 9
    resumed(trainer)
    resumed.wait()
    assert names(tmp_path) == ["model_9.pt"]


def test_score_retention_in_async_mode(make_engine: MakeEngine, tmp_path: Path) -> None:
    scores = iter([0.1, 0.5, 0.3, 0.7, 0.2])
    evaluator = make_engine()
    checkpoint = Checkpoint(
        {"model": torch.nn.Linear(2, 2)},
        DiskSaver(tmp_path),
        score_function=lambda engine: next(scores),
        score_name="acc",
        n_saved=2,
        async_save=True,
    )
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, checkpoint)
    evaluator.run([0], max_epochs=5)
    assert names(tmp_path) == ["model_acc=0.5000.pt", "model_acc=0.7000.pt"]


def test_one_write_in_flight_and_the_wait_is_reported(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    model, step = model_and_step()
    saver = GatedSaver(tmp_path)
    checkpoint = Checkpoint({"model": model}, saver, n_saved=2, async_save=True)
    trainer = make_engine(step)
    profiler = Profiler().attach(trainer)
    in_flight: list[int] = []

    @trainer.on(Events.ITERATION_COMPLETED)
    def save(engine: Engine) -> None:
        if engine.state.iteration == 2:
            saver.gate.clear()  # the write of iteration 2 is held...
        elif engine.state.iteration == 3:
            threading.Timer(0.05, saver.gate.set).start()  # ...until after the next call waits
        checkpoint(engine)
        in_flight.append(len(writer_threads()))

    trainer.run([0, 1, 2, 3])
    assert max(in_flight) == 1
    assert names(tmp_path) == ["model_3.pt", "model_4.pt"]
    assert checkpoint.wait_seconds > 0
    waits = profiler.results()["handlers"][PROFILER_WAIT_ROW]
    assert waits.calls >= 1
    assert waits.seconds <= checkpoint.wait_seconds


def trainer_failing_to_write_model_2(
    make_engine: MakeEngine, tmp_path: Path
) -> tuple[Any, Checkpoint]:
    """A trainer saving every iteration, keeping one file, whose write of model_2.pt fails."""
    model, step = model_and_step()
    saver = GatedSaver(tmp_path)
    saver.fail.add("model_2.pt")
    checkpoint = Checkpoint({"model": model}, saver, n_saved=1, async_save=True)
    trainer = make_engine(step)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, checkpoint)
    return trainer, checkpoint


def test_writer_error_is_raised_at_the_next_save_and_deletes_nothing(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    trainer, checkpoint = trainer_failing_to_write_model_2(make_engine, tmp_path)
    with pytest.raises(OSError, match=r"disk full while writing model_2\.pt") as info:
        trainer.run([0, 1, 2, 3])
    assert any("model_2.pt' in the background" in note for note in info.value.__notes__)
    assert trainer.state.iteration == 3  # raised by the save of iteration 3
    assert names(tmp_path) == ["model_1.pt"]
    assert checkpoint.last_checkpoint == tmp_path / "model_1.pt"
    assert writer_threads() == []


def test_writer_error_of_the_last_save_is_raised_by_run(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    trainer, checkpoint = trainer_failing_to_write_model_2(make_engine, tmp_path)
    with pytest.raises(OSError, match="disk full"):
        trainer.run([0, 1])
    assert names(tmp_path) == ["model_1.pt"]
    assert not checkpoint.write_in_progress
    checkpoint.wait()  # reported once: nothing left


class Stop(BaseException):
    pass


@pytest.mark.parametrize("ending", ["exception", "keyboard_interrupt", "terminate", "interrupt"])
def test_every_end_of_the_run_waits_for_the_write(
    make_engine: MakeEngine, tmp_path: Path, ending: str
) -> None:
    model, _ = model_and_step()
    saver = GatedSaver(tmp_path)
    checkpoint = Checkpoint({"model": model}, saver, n_saved=None, async_save=True)

    def step(engine: Engine, batch: Any) -> None:
        if engine.state.iteration == 2:
            saver.gate.clear()
            checkpoint(engine)
            threading.Timer(0.05, saver.gate.set).start()
            if ending == "exception":
                raise RuntimeError("step failed")
            if ending == "keyboard_interrupt":
                raise KeyboardInterrupt
            if ending == "terminate":
                engine.terminate()
            else:
                engine.interrupt()

    trainer = make_engine(step)
    expected: type[BaseException] | None = {
        "exception": RuntimeError,
        "keyboard_interrupt": KeyboardInterrupt,
    }.get(ending)
    if expected is None:
        trainer.run([0, 1, 2])
    else:
        with pytest.raises(expected):
            trainer.run([0, 1, 2])
    assert writer_threads() == []
    assert not checkpoint.write_in_progress
    assert names(tmp_path) == ["model_2.pt"]


def test_failed_write_is_noted_on_the_exception_of_the_run(
    make_engine: MakeEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    saver = GatedSaver(tmp_path)
    saver.fail.add("model_1.pt")
    checkpoint = Checkpoint({"model": torch.nn.Linear(2, 2)}, saver, async_save=True)

    def step(engine: Engine, batch: Any) -> None:
        checkpoint(engine)
        raise RuntimeError("step failed")

    with (
        caplog.at_level(logging.ERROR, logger="ember.handlers.checkpoint"),
        pytest.raises(RuntimeError, match="step failed") as info,
    ):
        make_engine(step).run([0])
    assert any("model_1.pt' failed too: OSError" in note for note in info.value.__notes__)
    assert "failed too" in caplog.text


def test_a_nested_run_does_not_wait_the_outer_run_does(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    model, step = model_and_step()
    saver = GatedSaver(tmp_path)
    checkpoint = Checkpoint({"model": model}, saver, n_saved=None, async_save=True)
    evaluator = make_engine()
    evaluator.add_event_handler(Events.COMPLETED, checkpoint)
    trainer = make_engine(step)
    pending_after_evaluation: list[bool] = []

    @trainer.on(Events.EPOCH_COMPLETED)
    def evaluate(engine: Engine) -> None:
        saver.gate.clear()
        evaluator.run([0, 1])
        pending_after_evaluation.append(checkpoint.write_in_progress)
        saver.gate.set()
        if engine.state.epoch == 1:
            # the writer passes the gate before the next epoch closes it again (else the next
            # save waits for a write that waits for the gate); epoch 2's write is left to the
            # trainer's end
            checkpoint.wait()

    trainer.run([0], max_epochs=2)
    # the write went on while the trainer went on; the trainer's end waited for it
    assert pending_after_evaluation == [True, True]
    assert not checkpoint.write_in_progress
    assert names(tmp_path) == ["model_2.pt"]  # the evaluator's iteration: the same name twice


def test_no_thread_outlives_the_write_and_the_checkpoint_is_collected(tmp_path: Path) -> None:
    saver = GatedSaver(tmp_path)
    checkpoint = Checkpoint({"model": torch.nn.Linear(2, 2)}, saver, async_save=True)
    saver.gate.clear()
    checkpoint(Engine(lambda engine, batch: None))  # outside a run: nothing waits for it
    assert len(writer_threads()) == 1
    reference = weakref.ref(checkpoint)
    del checkpoint
    gc.collect()
    assert reference() is not None  # the write in progress keeps it
    saver.gate.set()
    for thread in writer_threads():
        thread.join(timeout=60)
    gc.collect()
    assert reference() is None
    assert writer_threads() == []
    assert names(tmp_path) == ["model_0.pt"]


def test_an_async_run_keeps_no_reference_to_the_engine(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    model, step = model_and_step()
    checkpoint = Checkpoint({"model": model}, DiskSaver(tmp_path), async_save=True)
    trainer = make_engine(step)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, checkpoint)
    trainer.run([0, 1])
    reference = weakref.ref(trainer)
    del trainer
    gc.collect()
    assert reference() is None
    assert names(tmp_path) == ["model_2.pt"]


def test_only_the_writing_rank_copies_and_writes(tmp_path: Path) -> None:
    checkpoint = Checkpoint(
        {"model": torch.nn.Linear(2, 2)},
        DiskSaver(tmp_path, save_on_rank=1),  # this process is rank 0: it does not write
        async_save=True,
    )
    checkpoint(Engine(lambda engine, batch: None))
    assert not checkpoint.write_in_progress
    assert checkpoint._host_snapshot._buffers == {}
    assert names(tmp_path) == []
    assert checkpoint.state_dict() == {"_saved": [(0, "model_0.pt")]}


def test_model_checkpoint_async_and_bad_argument(make_engine: MakeEngine, tmp_path: Path) -> None:
    model, step = model_and_step()
    handler = ModelCheckpoint(tmp_path, "run", n_saved=2, async_save=True)
    trainer = make_engine(step)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, handler, {"model": model})
    trainer.run([0, 1], max_epochs=3)
    assert names(tmp_path) == ["run_model_4.pt", "run_model_6.pt"]
    assert torch.equal(load(handler.last_checkpoint)["0.weight"], model[0].weight)
    with pytest.raises(TypeError, match="async_save should be a bool"):
        Checkpoint({"model": model}, DiskSaver(tmp_path / "b"), async_save="yes")  # type: ignore[arg-type]


EXIT_SCRIPT = """
import os, signal, sys, threading, torch
from ember.engine import Engine
from ember.handlers import Checkpoint, DiskSaver

class Slow(DiskSaver):
    def __call__(self, checkpoint, filename, metadata=None):
        threading.Event().wait(20 if sys.argv[2] == "interrupted" else 0.3)
        if sys.argv[2] == "fail":
            raise OSError("disk full")
        super().__call__(checkpoint, filename, metadata)

checkpoint = Checkpoint({"model": torch.nn.Linear(2, 2)}, Slow(sys.argv[1]), async_save=True)
checkpoint(Engine(lambda engine, batch: None))
if sys.argv[2] == "interrupted":  # Ctrl-C while the exit waits for the write
    ctrl_c = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    ctrl_c.daemon = True  # the exit does not wait for it: it fires during the atexit wait
    ctrl_c.start()
print("exiting", flush=True)
"""


@pytest.mark.parametrize("outcome", ["ok", "fail", "interrupted"])
def test_interpreter_exit_waits_for_the_write(tmp_path: Path, outcome: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(EXIT_SCRIPT), str(tmp_path), outcome],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "exiting\n"
    if outcome == "ok":
        assert names(tmp_path) == ["model_0.pt"]
        load(tmp_path / "model_0.pt")
    elif outcome == "fail":
        assert names(tmp_path) == []
        assert "model_0.pt' failed: OSError: disk full" in result.stderr
    else:
        assert names(tmp_path) == []
        assert "checkpoint 'model_0.pt' did not finish" in result.stderr


def test_a_wait_that_ctrl_c_interrupted_does_not_hide_the_write_still_running(
    tmp_path: Path,
) -> None:
    """CPython before 3.13 marks a thread whose join() a KeyboardInterrupt interrupted as
    stopped while it still runs (bpo-45274): the next wait, and the one at exit, must still
    wait for the write."""
    model, _ = model_and_step()
    saver = GatedSaver(tmp_path)
    checkpoint = Checkpoint({"model": model}, saver, n_saved=None, async_save=True)
    trainer = Engine(lambda e, b: None)
    trainer.state.iteration = 1
    saver.gate.clear()
    checkpoint(trainer)
    assert saver.writing.wait(timeout=60)
    pending = checkpoint._pending
    assert pending is not None
    main = threading.get_ident()
    threading.Timer(0.2, lambda: signal.pthread_kill(main, signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        pending.join()
    assert checkpoint.write_in_progress and not pending.finished.is_set()
    threading.Timer(0.2, saver.gate.set).start()
    checkpoint.wait()  # waits for the write the interrupted wait left running
    assert names(tmp_path) == ["model_1.pt"]


def test_global_step_from_engine_names_asynchronous_saves(tmp_path: Path, backend: str) -> None:
    """The best model on the evaluator, named by the trainer's epoch: finishing the previous
    asynchronous write fired SAVED_CHECKPOINT first, and global_step_from_engine was then asked
    for the counter of that event (RuntimeError at the second save)."""
    from ember.handlers import global_step_from_engine

    model = torch.nn.Linear(2, 1)
    trainer = Engine(lambda e, b: None, backend=backend)
    evaluator = Engine(lambda e, b: None, backend=backend)
    evaluator.add_event_handler(
        Events.COMPLETED, lambda e: e.state.metrics.update(acc=0.1 * trainer.state.epoch)
    )
    checkpoint = Checkpoint(
        {"model": model},
        DiskSaver(tmp_path),
        score_name="acc",
        n_saved=2,
        global_step_transform=global_step_from_engine(trainer),
        async_save=True,
    )
    evaluator.add_event_handler(Events.COMPLETED, checkpoint)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: evaluator.run([0]))
    trainer.run([0, 1], max_epochs=3)
    checkpoint.wait()
    assert sorted(path.name for path in tmp_path.glob("*.pt")) == [
        "model_2_acc=0.2000.pt",
        "model_3_acc=0.3000.pt",
    ]
