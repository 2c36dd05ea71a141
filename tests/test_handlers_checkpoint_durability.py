"""``DiskSaver(durability=...)`` on both loops: where the ``fsync``\\ s run and in which order.

With ``durability="background"`` (the default) a save renames its file into place in the call
and the durability thread ``fsync``\\ s it, then its directory, and only then removes the file
the rotation drops; ``"inline"`` does it all in the call, ``fsync`` before the rename. The tests
record the ``fsync``, ``os.replace`` and ``os.unlink`` calls in order (a trace, not times),
check that a failing background ``fsync`` or removal is raised naming the file, that the end
of a run (however it ends) waits for the work, that quick saves never queue more than one work
per saver, and that nothing keeps an engine, a checkpointer or a saver alive.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from conftest import collect_garbage
from ember.engine import Engine, Events
from ember.handlers import Checkpoint, DiskSaver, ModelCheckpoint
from ember.handlers import checkpoint as checkpoint_module
from ember.handlers.checkpoint import DURABILITY_THREAD_NAME

MakeEngine = Callable[..., Any]


def names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


class Trace:
    """Records ``fsync``/``replace``/``unlink`` in ``directory`` as (operation, name); a
    ``fsync`` of the directory is ("fsync", "<dir>"). ``fail`` maps a final file name to the
    error its ``fsync`` raises; ``slow`` makes every file ``fsync`` take that many seconds (so
    that a missing wait would be seen)."""

    def __init__(self, directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.directory = directory
        self.events: list[tuple[str, str]] = []
        self.inodes: dict[int, str] = {}  # inode -> final name (known from the rename)
        self.fail: dict[str, OSError] = {}
        self.slow = 0.0
        self.real_fsync, self.real_replace, self.real_unlink = os.fsync, os.replace, os.unlink
        monkeypatch.setattr(os, "fsync", self.fsync)
        monkeypatch.setattr(os, "replace", self.replace)
        monkeypatch.setattr(os, "unlink", self.unlink)

    def fsync(self, fd: int) -> None:
        status = os.fstat(fd)
        if stat.S_ISDIR(status.st_mode):
            self.events.append(("fsync", "<dir>"))
        else:
            name = self.inodes.get(status.st_ino, "")
            if not (name and self._inode_of(name) == status.st_ino):  # a temporary file
                name = f"inode {status.st_ino}"
            self.events.append(("fsync", name))
            if name in self.fail:
                raise self.fail[name]
            time.sleep(self.slow)
            self.events.append(("fsynced", name))
        self.real_fsync(fd)

    def _inode_of(self, name: str) -> int | None:
        try:
            return (self.directory / name).stat().st_ino
        except FileNotFoundError:
            return None

    def replace(self, source: Any, target: Any) -> None:
        if Path(target).parent == self.directory:
            inode, name = Path(source).stat().st_ino, Path(target).name
            self.inodes[inode] = name  # inodes are reused: this one is the file's from now on
            for index, (operation, before) in enumerate(self.events):
                if before == f"inode {inode}":  # the temporary file's fsync, before the rename
                    self.events[index] = (operation, name)
            self.events.append(("replace", name))
        self.real_replace(source, target)

    def unlink(self, path: Any, *args: Any, **kwargs: Any) -> None:
        if Path(path).parent == self.directory:
            self.events.append(("unlink", Path(path).name))
        self.real_unlink(path, *args, **kwargs)

    def index(self, event: tuple[str, str], after: int = -1) -> int:
        return self.events.index(event, after + 1)


@pytest.fixture
def trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Trace:
    return Trace(tmp_path, monkeypatch)


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2)


def saving_trainer(
    make_engine: MakeEngine, directory: Path, durability: str = "background", **options: Any
) -> tuple[Engine, Checkpoint]:
    """A trainer saving its model at every iteration, keeping one file."""
    trainer = make_engine(lambda engine, batch: None)
    saver = DiskSaver(directory, durability=durability)
    checkpoint = Checkpoint({"model": model()}, saver, n_saved=1, **options)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, checkpoint)
    return trainer, checkpoint


# ----------------------------------------------------------------------------------- order
@pytest.mark.parametrize("mode", ["background", "inline", "async"])
def test_each_file_is_durable_before_the_previous_one_is_removed(
    make_engine: MakeEngine, tmp_path: Path, trace: Trace, mode: str
) -> None:
    durability = "inline" if mode == "inline" else "background"
    trainer, checkpoint = saving_trainer(
        make_engine, tmp_path, durability, async_save=mode == "async"
    )
    trace.slow = 0.01
    trainer.run([0, 1, 2])
    # run() returned: every file it saved is durable and the rotation done
    assert names(tmp_path) == ["model_3.pt"]
    for step in (1, 2, 3):
        name = f"model_{step}.pt"
        renamed = trace.index(("replace", name))
        synced = trace.index(("fsynced", name))
        if mode == "inline":
            assert synced < renamed  # the final name only ever holds a durable file
        else:
            assert renamed < synced  # renamed in the call: a killed process keeps the file
        directory_synced = trace.index(("fsync", "<dir>"), after=max(renamed, synced))
        if step > 1:
            assert directory_synced < trace.index(("unlink", f"model_{step - 1}.pt"))
    assert checkpoint.last_checkpoint == tmp_path / "model_3.pt"


def test_a_file_replacing_one_of_the_same_name_is_fsynced_before_the_rename(
    tmp_path: Path, trace: Trace
) -> None:
    saver = DiskSaver(tmp_path)  # background
    saver({"x": torch.arange(3)}, "a.pt")
    saver({"x": torch.arange(4)}, "a.pt")
    saver.wait()
    events = trace.events
    first, second = (i for i, event in enumerate(events) if event == ("replace", "a.pt"))
    assert ("fsynced", "a.pt") not in events[:first]  # a new name: renamed, then fsynced
    assert ("fsynced", "a.pt") in events[first + 1 : second]  # replacing: fsynced first
    assert torch.equal(torch.load(tmp_path / "a.pt", weights_only=True)["x"], torch.arange(4))


def test_without_atomic_the_file_is_fsynced_in_the_background(tmp_path: Path, trace: Trace) -> None:
    saver = DiskSaver(tmp_path, atomic=False)
    saver({"x": torch.arange(3)}, "a.pt")
    saver.wait()
    assert ("fsync", "<dir>") in trace.events
    assert len([event for event in trace.events if event[0] == "fsynced"]) == 1


# ----------------------------------------------------------------------------------- errors
def test_a_failing_background_fsync_is_raised_by_the_next_save_and_keeps_the_previous_file(
    make_engine: MakeEngine, tmp_path: Path, trace: Trace
) -> None:
    trainer, checkpoint = saving_trainer(make_engine, tmp_path)
    trace.fail["model_2.pt"] = OSError(errno.EIO, "Input/output error")
    with pytest.raises(OSError, match="Input/output error") as info:
        trainer.run([0, 1, 2, 3])
    assert trainer.state.iteration == 3  # raised by the save of iteration 3
    notes = "\n".join(info.value.__notes__)
    assert f"'{tmp_path / 'model_2.pt'}'" in notes
    assert f"'{tmp_path / 'model_1.pt'}' kept" in notes
    assert names(tmp_path) == ["model_1.pt", "model_2.pt"]  # model_1.pt was not removed
    checkpoint.wait()  # raised once: nothing left


def test_a_failing_fsync_of_the_last_save_is_raised_by_run(
    make_engine: MakeEngine, tmp_path: Path, trace: Trace
) -> None:
    trainer, _ = saving_trainer(make_engine, tmp_path)
    trace.fail["model_2.pt"] = OSError(errno.EIO, "Input/output error")
    with pytest.raises(OSError, match="Input/output error") as info:
        trainer.run([0, 1])
    assert any("model_2.pt' durable in the background" in note for note in info.value.__notes__)
    assert names(tmp_path) == ["model_1.pt", "model_2.pt"]


def test_a_failing_fsync_is_noted_on_the_exception_the_run_raises(
    make_engine: MakeEngine, tmp_path: Path, trace: Trace, caplog: pytest.LogCaptureFixture
) -> None:
    def step(engine: Engine, batch: Any) -> None:
        if engine.state.iteration == 3:
            raise ValueError("step 3 fails")

    trainer = make_engine(step)
    checkpoint = Checkpoint({"model": model()}, DiskSaver(tmp_path), n_saved=1)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, checkpoint)
    trace.fail["model_2.pt"] = OSError(errno.EIO, "Input/output error")
    caplog.set_level("CRITICAL", logger="ember")  # the engine logs the step's error
    with pytest.raises(ValueError, match="step 3 fails") as info:
        trainer.run([0, 1, 2])
    assert any("model_2.pt" in note and "failed too" in note for note in info.value.__notes__)


def test_a_failing_background_removal_is_raised_naming_the_file(
    make_engine: MakeEngine, tmp_path: Path, trace: Trace, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer, _ = saving_trainer(make_engine, tmp_path)
    unlink = os.unlink

    def refusing_unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        if Path(path).name == "model_1.pt":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", refusing_unlink)
    with pytest.raises(PermissionError) as info:
        trainer.run([0, 1, 2])
    assert trainer.state.iteration == 3
    assert any(
        f"removing checkpoint '{tmp_path / 'model_1.pt'}'" in n for n in info.value.__notes__
    )


def test_bad_durability_argument() -> None:
    with pytest.raises(ValueError, match="durability should be one of"):
        DiskSaver("/nonexistent/never/created", durability="never")
    with pytest.raises(ValueError, match="durability should be one of"):
        ModelCheckpoint("/nonexistent/never/created", "x", durability=True)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------- run end
@pytest.mark.parametrize("ending", ["completed", "terminate", "interrupt", "exception"])
def test_the_end_of_the_run_waits_however_the_run_ends(
    make_engine: MakeEngine,
    tmp_path: Path,
    trace: Trace,
    ending: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def step(engine: Engine, batch: Any) -> None:
        if ending == "exception" and engine.state.iteration == 3:
            raise ValueError("fails")

    trainer = make_engine(step)
    checkpoint = ModelCheckpoint(tmp_path, "run", n_saved=1)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, checkpoint, {"model": model()})
    if ending in ("terminate", "interrupt"):
        trainer.add_event_handler(Events.ITERATION_COMPLETED(once=2), getattr(Engine, ending))
    trace.slow = 0.02
    caplog.set_level("CRITICAL", logger="ember")
    try:
        trainer.run([0, 1, 2, 3])
    except ValueError:
        assert ending == "exception"
    last = 4 if ending == "completed" else 2
    events = trace.events
    assert events[-1] == ("unlink", f"run_model_{last - 1}.pt")  # after the file's fsyncs
    assert ("fsynced", f"run_model_{last}.pt") in events
    assert names(tmp_path) == [f"run_model_{last}.pt"]


def test_an_evaluator_inside_the_epoch_leaves_the_wait_to_the_trainer(
    make_engine: MakeEngine, tmp_path: Path, trace: Trace
) -> None:
    trainer = make_engine(lambda engine, batch: None)
    evaluator = make_engine(lambda engine, batch: None)
    saver = DiskSaver(tmp_path)
    checkpoint = Checkpoint({"model": model()}, saver, n_saved=1)
    evaluator.add_event_handler(Events.COMPLETED, checkpoint)
    pending_after_evaluation: list[bool] = []

    @trainer.on(Events.EPOCH_COMPLETED)
    def evaluate(engine: Engine) -> None:
        trace.slow = 0.02
        evaluator.run([0], max_epochs=engine.state.epoch)
        # the evaluator's run returned without waiting for the fsync
        pending_after_evaluation.append(saver._durability_work is not None)

    trainer.run([0], max_epochs=2)
    assert pending_after_evaluation == [True, True]
    assert saver._durability_work is None  # the trainer's end waited
    assert names(tmp_path) == ["model_2.pt"]


# ----------------------------------------------------------------------------------- bounds
def test_quick_saves_keep_one_work_in_flight_on_one_thread(
    make_engine: MakeEngine, tmp_path: Path, trace: Trace
) -> None:
    trainer = make_engine(lambda engine, batch: None)
    savers = [DiskSaver(tmp_path / name) for name in "ab"]
    for saver in savers:
        trace_directory = Checkpoint({"model": model()}, saver, n_saved=2)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, trace_directory)
    queued: list[int] = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda: queued.append(checkpoint_module._durability_thread.queue.qsize()),
    )
    trace.slow = 0.002  # the files of tmp_path/a and /b are not traced, but slowed
    trainer.run(range(30))
    assert max(queued) <= len(savers)  # one work per saver at most, never a growing queue
    assert [t.name for t in threading.enumerate()].count(DURABILITY_THREAD_NAME) == 1
    for saver in savers:
        assert names(saver.dirname) == ["model_29.pt", "model_30.pt"]


# ----------------------------------------------------------------------------------- lifetime
def test_nothing_keeps_the_engine_the_checkpointer_or_the_saver_alive(
    make_engine: MakeEngine, tmp_path: Path
) -> None:
    trainer, checkpoint = saving_trainer(make_engine, tmp_path)
    trainer.run([0, 1])
    references = [
        weakref.ref(trainer),
        weakref.ref(checkpoint),
        weakref.ref(checkpoint.save_handler),
    ]
    del trainer, checkpoint
    collect_garbage()
    assert [reference() for reference in references] == [None, None, None]


@pytest.fixture
def fsync_gate(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """os.fsync waits until the returned event is set."""
    gate = threading.Event()
    fsync = os.fsync

    def gated_fsync(fd: int) -> None:
        assert gate.wait(timeout=60)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", gated_fsync)
    return gate


def test_a_saver_with_work_in_flight_can_be_collected(
    tmp_path: Path, fsync_gate: threading.Event
) -> None:
    gate = fsync_gate
    saver = DiskSaver(tmp_path)
    saver({"x": torch.arange(3)}, "a.pt")  # outside a run: nothing waits for it
    work = saver._durability_work
    assert work is not None and work.done.locked()
    reference = weakref.ref(saver)
    del saver
    collect_garbage()
    assert reference() is None  # the thread holds the work, not the saver
    gate.set()
    work.wait()
    assert work.error is None
    assert names(tmp_path) == ["a.pt"]


EXIT_SCRIPT = """
import errno, os, sys, torch
from ember.handlers import DiskSaver

def failing_fsync(fd):
    raise OSError(errno.EIO, "Input/output error")

os.fsync = failing_fsync
DiskSaver(sys.argv[1])({"x": torch.arange(3)}, "a.pt")  # outside a run, never waited for
print("exiting", flush=True)
"""


def test_an_error_nobody_raised_is_logged_at_exit(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(EXIT_SCRIPT), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "exiting" in result.stdout
    assert f"'{tmp_path / 'a.pt'}' was not made durable" in result.stderr
    assert "Input/output error" in result.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_finishes_the_work_its_parent_had_in_flight(
    tmp_path: Path, fsync_gate: threading.Event
) -> None:
    gate = fsync_gate
    saver = DiskSaver(tmp_path)
    saver({"x": torch.arange(3)}, "a.pt")
    saver.remove("b.pt")  # waits for the work: the child must not wait forever for it
    pid = os.fork()
    if pid == 0:  # the child: its own durability thread does the work
        status = 1
        try:
            gate.set()
            work = saver._durability_work
            assert work is not None
            if work.done.acquire(timeout=30):  # not a hang if nothing runs the work
                work.done.release()
                saver.wait()
                status = 0
        finally:
            os._exit(status)
    gate.set()
    saver.wait()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert names(tmp_path) == ["a.pt"]
