"""``DiskSaver(durability=..., durability_delay=...)`` on both loops: where the ``fsync``\\ s run,
how many, and in which order.

With ``durability="background"`` (the default) a save renames its file into place in the call
and the durability thread ``fsync``\\ s it, then its directory, and only then removes the durable
file the rotation drops; the saves of ``durability_delay`` seconds are made durable together
(one ``fsync`` per file still there, one of the directory), and a file dropped before it was made
durable is unlinked at once, never ``fsync``\\ ed. ``durability_delay=0`` makes each save durable
on its own; ``"inline"`` does it all in the call, ``fsync`` before the rename. The tests record
the ``fsync``, ``os.replace`` and ``os.unlink`` calls in order (a trace, not times) and drive
the delay with a fake clock; they check the number of ``fsync``\\ s and of files on disk, that a
failing background ``fsync`` or removal is raised naming the file, that the end of a run
(however it ends), ``wait()`` and the interpreter's exit do the pending work at once, that quick
saves never queue more than one batch per saver, and that nothing keeps an engine, a
checkpointer or a saver alive.
"""

from __future__ import annotations

import errno
import itertools
import os
import signal
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
from ember.engine._run_scope import at_run_end
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


class FakeClock:
    """The clock of the durability deadlines, set by the test (frozen unless moved)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(checkpoint_module, "_clock", fake)
    return fake


def saving_trainer(
    make_engine: MakeEngine,
    directory: Path,
    durability: str = "background",
    durability_delay: float = 0.0,
    **options: Any,
) -> tuple[Engine, Checkpoint]:
    """A trainer saving its model at every iteration, keeping one file (by default each save
    made durable on its own)."""
    trainer = make_engine(lambda engine, batch: None)
    saver = DiskSaver(directory, durability=durability, durability_delay=durability_delay)
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
    saver = DiskSaver(tmp_path, durability_delay=0)  # background
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


# ----------------------------------------------------------------------------------- coalesced
def operations(trace: Trace, operation: str) -> list[str]:
    return [name for done, name in trace.events if done == operation]


def clocked_trainer(
    make_engine: MakeEngine,
    directory: Path,
    clock: FakeClock,
    seconds_between_saves: float,
    n_saved: int = 1,
) -> tuple[Engine, ModelCheckpoint, list[list[str]]]:
    """A trainer whose fake clock moves ``seconds_between_saves`` before each save (the first
    at 0), saving at every iteration with a ModelCheckpoint of delay 10 s; also returns the
    files on disk after each save (lists filled by the run)."""
    trainer = make_engine(lambda engine, batch: None)

    @trainer.on(Events.ITERATION_COMPLETED)
    def move_clock(engine: Engine) -> None:
        clock.now = (engine.state.iteration - 1) * seconds_between_saves

    handler = ModelCheckpoint(directory, "run", n_saved=n_saved, durability_delay=10)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, handler, {"model": model()})
    on_disk: list[list[str]] = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda: on_disk.append([name for name in names(directory) if name.endswith(".pt")]),
    )
    return trainer, handler, on_disk


def test_saves_within_the_delay_are_made_durable_together_at_the_end_of_the_run(
    make_engine: MakeEngine, tmp_path: Path, trace: Trace, clock: FakeClock
) -> None:
    trainer, handler, on_disk = clocked_trainer(make_engine, tmp_path, clock, 0.0)
    trainer.run(range(10))
    # one file fsync and one directory fsync for the ten saves, at the run's end
    assert operations(trace, "fsynced") == ["run_model_10.pt"]
    assert operations(trace, "fsync").count("<dir>") == 1
    assert trace.index(("fsynced", "run_model_10.pt")) < trace.index(("fsync", "<dir>"))
    # the nine files the rotation dropped before they were durable: unlinked, never fsynced
    assert operations(trace, "unlink") == [f"run_model_{step}.pt" for step in range(1, 10)]
    # between saves: the newest file only (the one before it was never durable: unlinked)
    assert on_disk == [["run_model_1.pt"]] + [[f"run_model_{step}.pt"] for step in range(2, 11)]
    assert names(tmp_path) == ["run_model_10.pt"]
    assert handler.last_checkpoint == tmp_path / "run_model_10.pt"


def test_saves_further_apart_than_the_delay_are_made_durable_one_by_one(
    make_engine: MakeEngine, tmp_path: Path, trace: Trace, clock: FakeClock
) -> None:
    trainer, _, on_disk = clocked_trainer(make_engine, tmp_path, clock, 20.0)
    trainer.run(range(5))
    saved = [f"run_model_{step}.pt" for step in range(1, 6)]
    assert operations(trace, "fsynced") == saved  # one pair per save
    assert operations(trace, "fsync").count("<dir>") == 5
    assert operations(trace, "unlink") == saved[:-1]
    for older, newer in itertools.pairwise(saved):
        # the durable file is deleted only once the newer one and the directory are durable
        directory_synced = trace.index(("fsync", "<dir>"), after=trace.index(("fsynced", newer)))
        assert directory_synced < trace.index(("unlink", older))
    assert on_disk == [saved[:1]] + [list(pair) for pair in itertools.pairwise(saved)]


def test_one_fsync_pair_per_delay_and_the_last_durable_file_kept_until_a_newer_one_is(
    make_engine: MakeEngine, tmp_path: Path, trace: Trace, clock: FakeClock
) -> None:
    # saves at 0, 3, ..., 27 s with a delay of 10 s: batches {1-4} {5-8} {9, 10}
    trainer, _, on_disk = clocked_trainer(make_engine, tmp_path, clock, 3.0)
    trainer.run(range(10))
    assert operations(trace, "fsynced") == ["run_model_4.pt", "run_model_8.pt", "run_model_10.pt"]
    assert operations(trace, "fsync").count("<dir>") == 3
    unlinked = [int(name[len("run_model_") : -len(".pt")]) for name in operations(trace, "unlink")]
    assert unlinked == [1, 2, 3, 5, 6, 7, 4, 9, 8]  # 4 and 8 wait for a newer durable file
    assert trace.index(("fsynced", "run_model_8.pt")) < trace.index(("unlink", "run_model_4.pt"))
    durable = {"run_model_4.pt", "run_model_8.pt", "run_model_10.pt"}
    for step, files in enumerate(on_disk, start=1):
        # at most the last durable checkpoint and the newest, pending one
        assert f"run_model_{step}.pt" in files
        assert len(files) <= 2
        assert all(name in durable for name in files if name != f"run_model_{step}.pt")


@pytest.mark.parametrize("n_saved", [1, 2, 3])
@pytest.mark.parametrize("timing", ["fake clock", "real clock"])
def test_a_rotating_checkpoint_keeps_at_most_n_saved_plus_one_files(
    make_engine: MakeEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    n_saved: int,
    timing: str,
) -> None:
    if timing == "fake clock":  # batches end at known saves: 0, 3, 6, ... s, delay 10 s
        clock = FakeClock()
        monkeypatch.setattr(checkpoint_module, "_clock", clock)
        trainer, _, on_disk = clocked_trainer(make_engine, tmp_path, clock, 3.0, n_saved)
    else:  # the thread takes batches whenever it gets there (a delay of 1 ms)
        trainer = make_engine(lambda engine, batch: None)
        handler = ModelCheckpoint(tmp_path, "run", n_saved=n_saved, durability_delay=0.001)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, handler, {"model": model()})
        on_disk = []
        trainer.add_event_handler(
            Events.ITERATION_COMPLETED, lambda: on_disk.append(names(tmp_path))
        )
    trainer.run(range(25))
    assert max(len(files) for files in on_disk) <= n_saved + 1
    assert len(on_disk[-1]) >= n_saved
    assert names(tmp_path) == [f"run_model_{step}.pt" for step in range(26 - n_saved, 26)]


def test_a_name_saved_again_before_it_is_durable_is_not_fsynced_first(
    tmp_path: Path, trace: Trace, clock: FakeClock
) -> None:
    saver = DiskSaver(tmp_path, durability_delay=10)
    for size in (3, 4, 5):
        saver({"x": torch.arange(size)}, "a.pt")
    saver.wait()
    assert trace.events == [("replace", "a.pt")] * 3 + [
        ("fsync", "a.pt"),
        ("fsynced", "a.pt"),
        ("fsync", "<dir>"),
    ]
    # a.pt is durable now: fsynced before the rename, and so is the file that replaces that
    # one (its data is durable, only its name is not yet)
    saver({"x": torch.arange(6)}, "a.pt")
    saver({"x": torch.arange(7)}, "a.pt")
    saver.wait()
    replaced_durably = [("fsync", "a.pt"), ("fsynced", "a.pt"), ("replace", "a.pt")]
    assert trace.events[6:] == [*replaced_durably, *replaced_durably, ("fsync", "<dir>")]
    assert torch.equal(torch.load(tmp_path / "a.pt", weights_only=True)["x"], torch.arange(7))


def test_a_name_saved_again_after_its_removal_was_asked_stays(
    tmp_path: Path, clock: FakeClock
) -> None:
    # The removal of a durable a.pt waits in the batch for b.pt to be durable; a new a.pt
    # saved meanwhile is what the name holds now, and the removal must not take it.
    saver = DiskSaver(tmp_path, durability_delay=10)
    saver({"x": torch.arange(3)}, "a.pt")
    saver.wait()
    saver({"x": torch.arange(4)}, "b.pt")
    saver.remove("a.pt")
    saver({"x": torch.arange(5)}, "a.pt")
    saver.wait()
    assert names(tmp_path) == ["a.pt", "b.pt"]
    assert torch.equal(torch.load(tmp_path / "a.pt", weights_only=True)["x"], torch.arange(5))


def test_wait_makes_the_pending_saves_durable_at_once(
    tmp_path: Path, trace: Trace, clock: FakeClock
) -> None:
    saver = DiskSaver(tmp_path, durability_delay=3600)  # the fake clock never gets there
    saver({"x": torch.arange(3)}, "a.pt")
    saver({"x": torch.arange(3)}, "b.pt")
    waiting = threading.Thread(target=saver.wait)
    waiting.start()
    waiting.join(timeout=60)
    assert not waiting.is_alive()
    assert operations(trace, "fsynced") == ["a.pt", "b.pt"]
    assert operations(trace, "fsync").count("<dir>") == 1


@pytest.mark.parametrize("due_during_the_write", [False, True])
def test_the_thread_takes_a_batch_at_its_deadline_after_it_looked_during_a_write(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, due_during_the_write: bool
) -> None:
    # The thread looks while a save writes into the batch, before its deadline, or after it
    # (due, but being written: the save's end must wake the thread, which waits without a
    # timeout).
    saver = DiskSaver(tmp_path, durability_delay=0.05)
    saver({"x": torch.arange(3)}, "a.pt")
    replace = os.replace
    condition = checkpoint_module._durability_thread.condition

    def replace_while_the_thread_looks(source: Any, target: Any) -> None:
        if due_during_the_write:
            clock.now = 20.0
        with condition:
            condition.notify()  # the thread looks at the batch while a save writes into it
        time.sleep(0.05)
        replace(source, target)

    monkeypatch.setattr(os, "replace", replace_while_the_thread_looks)
    clock.now = 0.01
    saver({"x": torch.arange(3)}, "b.pt")
    clock.now = 20.0  # past the deadline; nobody waits: the thread must see it by itself
    batch = saver._durability_batch
    assert batch is not None
    assert batch.done.acquire(timeout=30)
    batch.done.release()
    saver.wait()
    assert names(tmp_path) == ["a.pt", "b.pt"]


def test_a_batch_holds_a_bounded_number_of_open_files(
    tmp_path: Path, trace: Trace, clock: FakeClock
) -> None:
    saver = DiskSaver(tmp_path, durability_delay=3600)  # every file stays: no rotation
    count = checkpoint_module.MAX_BATCH_FILES + 6
    for index in range(count):
        saver({"x": torch.arange(3)}, f"{index:03d}.pt")
        batch = saver._durability_batch
        assert batch is not None and len(batch.files) <= checkpoint_module.MAX_BATCH_FILES
    saver.wait()
    assert len(operations(trace, "fsynced")) == count
    assert operations(trace, "fsync").count("<dir>") == 2  # a full batch went at once


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


@pytest.mark.parametrize("durability_delay", [0.0, 1.0])
def test_a_failing_fsync_is_noted_on_the_exception_the_run_raises(
    make_engine: MakeEngine,
    tmp_path: Path,
    trace: Trace,
    caplog: pytest.LogCaptureFixture,
    clock: FakeClock,
    durability_delay: float,
) -> None:
    def step(engine: Engine, batch: Any) -> None:
        if engine.state.iteration == 3:
            raise ValueError("step 3 fails")

    trainer = make_engine(step)
    saver = DiskSaver(tmp_path, durability_delay=durability_delay)
    checkpoint = Checkpoint({"model": model()}, saver, n_saved=1)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, checkpoint)
    trace.fail["model_2.pt"] = OSError(errno.EIO, "Input/output error")
    caplog.set_level("CRITICAL", logger="ember")  # the engine logs the step's error
    with pytest.raises(ValueError, match="step 3 fails") as info:
        trainer.run([0, 1, 2])
    assert any("model_2.pt" in note and "failed too" in note for note in info.value.__notes__)


def test_a_failing_fsync_of_coalesced_saves_is_raised_and_keeps_the_last_durable_file(
    make_engine: MakeEngine, tmp_path: Path, trace: Trace, clock: FakeClock
) -> None:
    # saves at 0 s (made durable alone when the save at 20 s comes), 20 s and 21 s
    trainer = make_engine(lambda engine, batch: None)
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda e: setattr(clock, "now", [0, 20, 21][e.state.iteration - 1]),
    )
    handler = ModelCheckpoint(tmp_path, "run", n_saved=1, durability_delay=10)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, handler, {"model": model()})
    trace.fail["run_model_3.pt"] = OSError(errno.EIO, "Input/output error")
    with pytest.raises(OSError, match="Input/output error") as info:
        trainer.run([0, 1, 2])
    notes = "\n".join(info.value.__notes__)
    assert f"'{tmp_path / 'run_model_3.pt'}' durable in the background" in notes
    assert f"'{tmp_path / 'run_model_1.pt'}' kept" in notes
    # run_model_2.pt was dropped before it was durable; run_model_1.pt, durable, stays
    assert names(tmp_path) == ["run_model_1.pt", "run_model_3.pt"]


def test_a_failing_fsync_is_raised_by_the_first_save_after_the_delay(
    make_engine: MakeEngine, tmp_path: Path, trace: Trace, clock: FakeClock
) -> None:
    trainer, _, _ = clocked_trainer(make_engine, tmp_path, clock, 20.0)
    trace.fail["run_model_1.pt"] = OSError(errno.EIO, "Input/output error")
    with pytest.raises(OSError, match="Input/output error") as info:
        trainer.run([0, 1, 2])
    assert trainer.state.iteration == 2
    assert any("run_model_1.pt' durable in the background" in n for n in info.value.__notes__)
    assert names(tmp_path) == ["run_model_1.pt"]


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


@pytest.mark.parametrize(
    ("delay", "error"),
    [
        ("1", TypeError),
        (True, TypeError),
        (None, TypeError),
        (-0.5, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
    ],
)
def test_bad_durability_delay(delay: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="Argument durability_delay should be"):
        DiskSaver("/nonexistent/never/created", durability_delay=delay)
    with pytest.raises(error, match="Argument durability_delay should be"):
        ModelCheckpoint("/nonexistent/never/created", "x", durability_delay=delay)


def test_durability_delay_takes_ints_and_reaches_the_saver(tmp_path: Path) -> None:
    assert DiskSaver(tmp_path).durability_delay == 1.0
    assert DiskSaver(tmp_path, require_empty=False, durability_delay=0).durability_delay == 0.0
    handler = ModelCheckpoint(tmp_path, "x", require_empty=False, durability_delay=3)
    assert handler.save_handler.durability_delay == 3.0


# ----------------------------------------------------------------------------------- run end
@pytest.mark.parametrize("durability_delay", [0.0, 1.0])
@pytest.mark.parametrize("ending", ["completed", "terminate", "interrupt", "exception"])
def test_the_end_of_the_run_waits_however_the_run_ends(
    make_engine: MakeEngine,
    tmp_path: Path,
    trace: Trace,
    ending: str,
    caplog: pytest.LogCaptureFixture,
    clock: FakeClock,
    durability_delay: float,
) -> None:
    def step(engine: Engine, batch: Any) -> None:
        if ending == "exception" and engine.state.iteration == 3:
            raise ValueError("fails")

    trainer = make_engine(step)
    checkpoint = ModelCheckpoint(tmp_path, "run", n_saved=1, durability_delay=durability_delay)
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
    if durability_delay:  # the clock stands still: every save joined the first batch
        synced = [event for event in events if event[0] == "fsynced"]
        assert synced == [("fsynced", f"run_model_{last}.pt")]
        assert events[-1] == ("fsync", "<dir>")  # the run's end did it at once
    else:
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
        pending_after_evaluation.append(saver._durability_batch is not None)

    trainer.run([0], max_epochs=2)
    assert pending_after_evaluation == [True, True]
    assert saver._durability_batch is None  # the trainer's end waited
    assert names(tmp_path) == ["model_2.pt"]


# ----------------------------------------------------------------------------------- bounds
@pytest.mark.parametrize("durability_delay", [0.0, 0.001, 1.0])
def test_quick_saves_keep_one_batch_in_flight_on_one_thread(
    make_engine: MakeEngine, tmp_path: Path, trace: Trace, durability_delay: float
) -> None:
    trainer = make_engine(lambda engine, batch: None)
    savers = [DiskSaver(tmp_path / name, durability_delay=durability_delay) for name in "ab"]
    for saver in savers:
        trace_directory = Checkpoint({"model": model()}, saver, n_saved=2)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, trace_directory)
    queued: list[int] = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda: queued.append(len(checkpoint_module._durability_thread.scheduled)),
    )
    trace.slow = 0.002  # the files of tmp_path/a and /b are not traced, but slowed
    trainer.run(range(30))
    assert max(queued) <= len(savers)  # one batch per saver at most, never a growing queue
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
    work = saver._durability_batch
    assert work is not None and work.done.locked()
    reference = weakref.ref(saver)
    del saver
    collect_garbage()
    assert reference() is None  # the thread holds the work, not the saver
    gate.set()
    work.hurry()
    work.wait()
    assert work.error is None
    assert names(tmp_path) == ["a.pt"]


def run_script(script: str, directory: Path) -> subprocess.CompletedProcess[str]:
    """``script`` in a fresh interpreter, with ``directory`` as its argument; at most 2 minutes."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


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
    result = run_script(EXIT_SCRIPT, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "exiting" in result.stdout
    assert f"'{tmp_path / 'a.pt'}' was not made durable" in result.stderr
    assert "Input/output error" in result.stderr


EXIT_FLUSH_SCRIPT = """
import os, stat, sys, torch
from ember.handlers import DiskSaver

fsync = os.fsync

def printing_fsync(fd):
    print("fsync", "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file", flush=True)
    fsync(fd)

os.fsync = printing_fsync
saver = DiskSaver(sys.argv[1], durability_delay=3600)
for name in ("a.pt", "b.pt", "c.pt"):
    saver({"x": torch.arange(3)}, name)
saver.remove("a.pt")  # not durable yet: unlinked at once
print("exiting", flush=True)
"""


def test_the_interpreter_exit_makes_pending_saves_durable_at_once(tmp_path: Path) -> None:
    result = run_script(EXIT_FLUSH_SCRIPT, tmp_path)  # an exit waiting for the delay: an hour
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n") == [
        "exiting",
        "fsync file",
        "fsync file",
        "fsync dir",
        "",
    ]
    assert names(tmp_path) == ["b.pt", "c.pt"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("durability_delay", [0.0, 1.0])  # taken by the thread, or waiting
def test_a_forked_child_finishes_the_work_its_parent_had_in_flight(
    tmp_path: Path, fsync_gate: threading.Event, durability_delay: float
) -> None:
    gate = fsync_gate
    saver = DiskSaver(tmp_path, durability_delay=durability_delay)
    saver({"x": torch.arange(3)}, "a.pt")
    saver.remove("b.pt")  # waits for the work: the child must not wait forever for it
    pid = os.fork()
    if pid == 0:  # the child: its own durability thread does the work
        status = 1
        try:
            gate.set()
            work = saver._durability_batch
            assert work is not None
            work.hurry()
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


def test_a_forked_child_leaves_the_parent_s_deletions_to_the_parent(tmp_path: Path) -> None:
    """A child forked while a deletion waits in a batch (a DataLoader worker, say) makes the
    batch's files durable, but does not delete: the parent deletes, and may save that name
    again before the child gets there."""
    saver = DiskSaver(tmp_path, durability_delay=0.5)
    saver({"v": torch.tensor(1)}, "last.pt")
    saver.wait()  # last.pt is durable
    saver({"v": torch.tensor(2)}, "new.pt")
    saver.remove("last.pt")  # waits in the batch for new.pt to be durable
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child lives on until the parent saved last.pt again
        status = 1
        try:
            os.close(write)
            os.read(read, 1)
            saver.wait()  # runs the parent's batch in the child
            status = 0
        finally:
            os._exit(status)
    os.close(read)
    saver.wait()
    assert names(tmp_path) == ["new.pt"]
    saver({"v": torch.tensor(3)}, "last.pt")
    saver.wait()
    os.write(write, b"x")
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert names(tmp_path) == ["last.pt", "new.pt"]
    assert torch.load(tmp_path / "last.pt", weights_only=True)["v"] == 3


@pytest.mark.parametrize("where", ["add", "join"])
def test_a_ctrl_c_inside_a_save_does_not_leave_the_batch_waiting_for_ever(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A KeyboardInterrupt may come between any two steps of a save: after it joined the
    batch, or before its file is added. The save's share of the batch's writing is given back
    in a finally, so the thread still takes the batch and a wait returns."""
    saver = DiskSaver(tmp_path, durability_delay=10)
    saver({"x": torch.arange(3)}, "a.pt")  # the batch, open for 10 s
    real = getattr(checkpoint_module._DurabilityBatch, where)

    def interrupted(self: Any, *args: Any) -> None:
        real(self, *args)  # the step is done, then the Ctrl-C arrives
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module._DurabilityBatch, where, interrupted)
    with pytest.raises(KeyboardInterrupt):
        saver({"x": torch.arange(4)}, "b.pt")
    monkeypatch.undo()
    batch = saver._durability_batch
    assert batch is not None and not batch.writers
    batch.hurry()
    assert batch.done.acquire(timeout=30)  # taken and run, not waited for for ever
    batch.done.release()
    saver.wait()


def test_a_save_where_no_thread_can_start_does_its_durability_work_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trace: Trace
) -> None:
    """At interpreter shutdown (or past the system's limits) no new thread starts: the batch
    is then made durable in the save, not queued for a thread that never comes (a hang at
    exit, and at every wait)."""
    durability = checkpoint_module._durability_thread
    monkeypatch.setattr(durability, "thread", None)

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    saver = DiskSaver(tmp_path)
    saver({"x": torch.arange(3)}, "a.pt")
    monkeypatch.undo()
    assert ("fsynced", "a.pt") in trace.events and ("fsync", "<dir>") in trace.events
    saver.wait()  # returns at once: the work is done
    assert durability.scheduled == []


def test_a_wait_from_inside_a_save_of_the_same_thread_raises_instead_of_hanging(
    tmp_path: Path,
) -> None:
    """A signal handler (or a __del__) that interrupts a save and waits for the saver's work
    would wait for the save it interrupted, which cannot go on until the handler returns."""
    saver = DiskSaver(tmp_path, durability_delay=10)
    saver({"x": torch.arange(3)}, "a.pt")
    batch = saver._durability_batch
    assert batch is not None and batch.join()  # as a save of this thread that is writing
    try:
        with pytest.raises(RuntimeError, match="would wait for ever"):
            saver.wait()
    finally:
        batch.leave()
    saver.wait()
    assert names(tmp_path) == ["a.pt"]


def test_a_nested_save_that_cannot_join_leaves_the_outer_save_s_share(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A save from a signal handler, past the batch's delay while a save of its thread writes
    into the batch, raises (it would wait for that save) and leaves the batch as it was: the
    outer save still counts, so the thread does not take the batch from under it."""
    saver = DiskSaver(tmp_path, durability_delay=10)
    saver({"x": torch.arange(3)}, "a.pt")
    batch = saver._durability_batch
    assert batch is not None and batch.join()  # the outer save, writing
    try:
        clock.now = 20.0  # past the delay: the nested save cannot join
        with pytest.raises(RuntimeError, match="would wait for ever"):
            saver({"x": torch.arange(4)}, "b.pt")
        assert sum(batch.writers.values()) == 1 and not batch.taken
    finally:
        batch.leave()
    saver.wait()


def test_a_ctrl_c_during_the_end_of_run_waits_of_a_failing_run_stops_them_all(
    make_engine: MakeEngine, tmp_path: Path, trace: Trace
) -> None:
    """Ctrl-C while a failing run's end waits for slow fsyncs means "stop waiting": one is
    enough (not one per saver), it is not reported as a failed fsync, and the run's own error
    is raised, with a note that says what was skipped."""
    trace.slow = 1.0  # every file fsync
    savers = [DiskSaver(tmp_path / name, durability_delay=10) for name in ("a", "b")]

    after_the_waits: list[Any] = []

    def step(engine: Engine, batch: int) -> None:
        if batch == 1:
            raise RuntimeError("the step failed")
        for saver in savers:
            saver({"x": torch.arange(3)}, "model.pt")
        # A callback that is no wait (Preemption puts signal handlers back so) still runs.
        at_run_end(id(after_the_waits), after_the_waits.append)

    engine = make_engine(step)
    main = threading.get_ident()
    timer = threading.Timer(0.3, lambda: signal.pthread_kill(main, signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(RuntimeError, match="the step failed") as info:
            engine.run([0, 1])
    finally:
        timer.cancel()
        checkpoint_module._durability_thread.drain()
    notes = getattr(info.value, "__notes__", [])
    assert any("a wait at the end of the run was interrupted" in note for note in notes), notes
    assert any("1 more end-of-run wait(s) skipped" in note for note in notes), notes
    assert not any("failed too" in note for note in notes), notes
    assert after_the_waits == [info.value]
