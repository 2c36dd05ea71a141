"""``resume_from`` and ``Preemption`` in one process: exact resume, bad directories, SIGTERM.

The same features under torchrun, with processes killed and preempted: tests/test_elastic.py.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import struct
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from ember.engine import DeterministicEngine, Engine, Events
from ember.handlers import Checkpoint, DiskSaver, Preempted, Preemption, resume_from

EPOCHS = 3  # of 5 batches


class Training:
    """A small model trained on a DeterministicEngine, checkpointed every ``every`` iterations;
    ``act(engine)`` runs in the step of every iteration (to stop, to send a signal)."""

    def __init__(
        self,
        backend: str,
        directory: Path,
        every: int = 3,
        act: Callable[[Engine], None] | None = None,
        model: torch.nn.Module | None = None,
    ) -> None:
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(1)
        dataset = torch.utils.data.TensorDataset(
            torch.randn(20, 4, generator=generator), torch.randint(0, 2, (20,), generator=generator)
        )
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=True)
        self.model = model or torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 2)
        )
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)

        def step(engine: Engine, batch: list[torch.Tensor]) -> float:
            if act is not None:
                act(engine)
            x, y = batch
            self.optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(self.model(x), y)
            loss.backward()
            self.optimizer.step()
            return loss.item()

        self.trainer = DeterministicEngine(step, backend=backend)
        self.to_save = {"trainer": self.trainer, "model": self.model, "optimizer": self.optimizer}
        self.checkpointer = Checkpoint(
            self.to_save, DiskSaver(directory, require_empty=False), n_saved=2
        )
        self.trainer.add_event_handler(Events.ITERATION_COMPLETED(every=every), self.checkpointer)

    def run(self) -> dict[str, torch.Tensor]:
        self.trainer.run(self.loader, max_epochs=EPOCHS)
        return {key: value.clone() for key, value in self.model.state_dict().items()}


def stop_at(iteration: int) -> Callable[[Engine], None]:
    def act(engine: Engine) -> None:
        if engine.state.iteration == iteration:
            engine.terminate()

    return act


def assert_same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for key, value in first.items():
        assert torch.equal(value, second[key]), key


# ------------------------------------------------------------------------------ resume_from
def test_resume_from_the_newest_checkpoint_is_exact(backend: str, tmp_path: Path) -> None:
    reference = Training(backend, tmp_path / "reference").run()
    Training(backend, tmp_path / "run", act=stop_at(8)).run()  # stopped; checkpoints at 3, 6
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "checkpoint_3.pt",
        "checkpoint_6.pt",
    ]
    again = Training(backend, tmp_path / "run")
    assert resume_from(tmp_path / "run", again.to_save) == tmp_path / "run" / "checkpoint_6.pt"
    assert again.trainer.state.iteration == 6
    assert_same_weights(again.run(), reference)


def test_the_newest_is_the_last_written(backend: str, tmp_path: Path) -> None:
    Training(backend, tmp_path, act=stop_at(8)).run()
    # checkpoint_3.pt made the newer: the file names do not decide, the writing time does.
    newest = (tmp_path / "checkpoint_6.pt").stat().st_mtime_ns
    os.utime(tmp_path / "checkpoint_3.pt", ns=(newest + 10**9, newest + 10**9))
    again = Training(backend, tmp_path)
    assert resume_from(tmp_path, again.to_save) == tmp_path / "checkpoint_3.pt"
    assert again.trainer.state.iteration == 3


@pytest.mark.parametrize("exists", [False, True])
def test_nothing_to_resume_raises_unless_asked_to_start_fresh(
    backend: str, tmp_path: Path, exists: bool
) -> None:
    directory = tmp_path / "checkpoints"
    if exists:
        directory.mkdir()
        (directory / "notes.txt").write_text("not a checkpoint")
        # What a writer killed mid-write leaves: hidden, never taken for a checkpoint.
        (directory / ".checkpoint_3.pt.x1y2.ember-tmp").write_bytes(b"\x80partial")
        (directory / ".hidden.pt").write_bytes(b"\x80partial")
    training = Training(backend, tmp_path / "unused")
    message = "does not exist" if not exists else "no checkpoint matching '*.pt'"
    with pytest.raises(FileNotFoundError, match=re.escape(message)) as info:
        resume_from(directory, training.to_save)
    assert str(directory) in str(info.value) and "start_fresh_if_empty=True" in str(info.value)
    before = {key: value.clone() for key, value in training.model.state_dict().items()}
    assert resume_from(directory, training.to_save, start_fresh_if_empty=True) is None
    assert training.trainer.state.iteration == 0
    assert_same_weights(training.model.state_dict(), before)


def test_only_partial_or_corrupt_checkpoints_raise_naming_each_file(
    backend: str, tmp_path: Path
) -> None:
    Training(backend, tmp_path, act=stop_at(4)).run()
    whole = (tmp_path / "checkpoint_3.pt").read_bytes()
    (tmp_path / "checkpoint_3.pt").write_bytes(whole[: len(whole) // 2])  # truncated
    (tmp_path / "checkpoint_9.pt").write_bytes(b"garbage, not a torch.save file")
    training = Training(backend, tmp_path / "unused")
    # Asking for a fresh start does not cover files that exist but do not load.
    with pytest.raises(ValueError, match="none of the 2 checkpoint file") as info:
        resume_from(tmp_path, training.to_save, start_fresh_if_empty=True)
    message = str(info.value)
    for name in ("checkpoint_3.pt", "checkpoint_9.pt"):
        assert f"'{tmp_path / name}' could not be loaded: it is truncated, corrupted" in message
    assert training.trainer.state.iteration == 0


def test_a_newer_corrupt_checkpoint_is_skipped_with_a_warning(backend: str, tmp_path: Path) -> None:
    Training(backend, tmp_path, act=stop_at(4)).run()
    corrupt = tmp_path / "checkpoint_6.pt"
    corrupt.write_bytes(b"garbage")
    training = Training(backend, tmp_path / "unused")
    with pytest.warns(UserWarning, match="skipped a newer checkpoint that does not load") as info:
        assert resume_from(tmp_path, training.to_save) == tmp_path / "checkpoint_3.pt"
    assert str(corrupt) in str(info[0].message)
    assert training.trainer.state.iteration == 3


def test_a_checkpoint_of_another_model_raises_naming_the_file_and_the_object(
    backend: str, tmp_path: Path
) -> None:
    Training(backend, tmp_path, act=stop_at(4)).run()
    other = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Dropout(0.3), torch.nn.Linear(5, 2))
    training = Training(backend, tmp_path / "unused", model=other)
    with pytest.raises(ValueError, match="does not fit the objects to resume") as info:
        resume_from(tmp_path, training.to_save)
    message = str(info.value)
    assert f"'{tmp_path / 'checkpoint_3.pt'}'" in message
    assert "'model'" in message and "size mismatch" in message


def test_a_checkpoint_without_an_object_raises_naming_it(backend: str, tmp_path: Path) -> None:
    Training(backend, tmp_path, act=stop_at(4)).run()
    training = Training(backend, tmp_path / "unused")
    scheduler = torch.optim.lr_scheduler.StepLR(training.optimizer, step_size=2)
    with pytest.raises(ValueError, match="'scheduler' is not found") as info:
        resume_from(tmp_path, {**training.to_save, "scheduler": scheduler})
    assert f"'{tmp_path / 'checkpoint_3.pt'}'" in str(info.value)


def test_a_checkpoint_of_another_world_size_raises(backend: str, tmp_path: Path) -> None:
    Training(backend, tmp_path, act=stop_at(4)).run()
    checkpoint = torch.load(tmp_path / "checkpoint_3.pt", weights_only=True)
    assert checkpoint["trainer"]["world_size"] == 1
    checkpoint["trainer"]["world_size"] = 2
    torch.save(checkpoint, tmp_path / "checkpoint_3.pt")
    training = Training(backend, tmp_path / "unused")
    with pytest.raises(ValueError, match="run of 2 process") as info:
        resume_from(tmp_path, training.to_save)
    message = str(info.value)
    assert f"'{tmp_path / 'checkpoint_3.pt'}'" in message and "'trainer'" in message
    assert "this run has 1" in message


def test_resume_from_refuses_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="to_load should be a dictionary"):
        resume_from(tmp_path, [torch.nn.Linear(1, 1)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="should have `load_state_dict`"):
        resume_from(tmp_path, {"model": object()})
    (tmp_path / "file.pt").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        resume_from(tmp_path / "file.pt", {"model": torch.nn.Linear(1, 1)})
    for pattern in ("", None, "sub/*.pt", str(tmp_path / "*.pt")):
        with pytest.raises(ValueError, match="pattern should be a glob pattern of names"):
            resume_from(tmp_path, {"model": torch.nn.Linear(1, 1)}, pattern=pattern)  # type: ignore[arg-type]


def flip_a_byte_of_the_largest_entry(path: Path) -> str:
    """Change one byte in the middle of the data of ``path``'s largest zip entry (a block a
    power loss or a bad disk left wrong); return the entry's name."""
    with zipfile.ZipFile(path) as archive:
        entry = max(archive.infolist(), key=lambda info: info.compress_size)
    data = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack(
        "<HH", data[entry.header_offset + 26 : entry.header_offset + 30]
    )
    start = entry.header_offset + 30 + name_length + extra_length
    data[start + entry.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return entry.filename


def test_a_newest_checkpoint_with_a_damaged_block_is_skipped_with_a_warning(
    backend: str, tmp_path: Path
) -> None:
    """torch.load does not check the CRC-32s its files record: a file with a wrong block would
    load with wrong weights. It is refused, naming the entry, and the previous file is loaded."""
    Training(backend, tmp_path, act=stop_at(7)).run()
    damaged = tmp_path / "checkpoint_6.pt"
    entry = flip_a_byte_of_the_largest_entry(damaged)
    training = Training(backend, tmp_path / "unused")
    with pytest.warns(UserWarning, match="skipped a newer checkpoint that does not load") as info:
        assert resume_from(tmp_path, training.to_save) == tmp_path / "checkpoint_3.pt"
    assert f"'{damaged}' is corrupted: the data of its entry '{entry}'" in str(info[0].message)
    assert training.trainer.state.iteration == 3
    with pytest.raises(ValueError, match="is corrupted"):
        Checkpoint.load_objects(training.to_save, damaged)


def test_a_newest_checkpoint_whose_zip_directory_is_damaged_is_skipped(
    backend: str, tmp_path: Path
) -> None:
    """A damaged entry header (here its compression method) makes zipfile raise something else
    than a bad CRC: still a file that does not load, skipped with a warning."""
    Training(backend, tmp_path, act=stop_at(7)).run()
    damaged = tmp_path / "checkpoint_6.pt"
    data = bytearray(damaged.read_bytes())
    central = data.index(b"PK\x01\x02")
    data[central + 10] = 99  # the first entry's compression method: one zipfile does not know
    damaged.write_bytes(bytes(data))
    training = Training(backend, tmp_path / "unused")
    with pytest.warns(UserWarning, match="skipped a newer checkpoint that does not load") as info:
        assert resume_from(tmp_path, training.to_save) == tmp_path / "checkpoint_3.pt"
    assert str(damaged) in str(info[0].message)


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch.distributed.checkpoint without a group
def test_a_sharded_checkpoint_is_resumed_from(tmp_path: Path) -> None:
    dcp = pytest.importorskip("torch.distributed.checkpoint")
    torch.manual_seed(0)
    saved = torch.nn.Linear(3, 2)
    dcp.save({"model": saved.state_dict()}, checkpoint_id=tmp_path / "checkpoint_4.dcp")
    (tmp_path / "checkpoint_6.dcp").mkdir()  # a newer sharded save that died before .metadata
    model = torch.nn.Linear(3, 2)
    with pytest.warns(
        UserWarning, match=r"checkpoint_6\.dcp' is not a complete sharded checkpoint"
    ):
        chosen = resume_from(tmp_path, {"model": model}, pattern="*.dcp")
    assert chosen == tmp_path / "checkpoint_4.dcp"
    assert torch.equal(model.weight, saved.weight) and torch.equal(model.bias, saved.bias)


@pytest.mark.parametrize("entry", ["a link to nothing", "a directory"])
def test_what_matches_but_is_no_checkpoint_is_reported_not_taken_for_nothing(
    tmp_path: Path, entry: str
) -> None:
    """Something matching the pattern that does not load is never taken for an empty directory:
    asked to start fresh only when there is nothing to resume, resume_from raises instead."""
    name = "checkpoint_9.pt"
    if entry == "a link to nothing":
        (tmp_path / name).symlink_to(tmp_path / "not there")
    else:
        (tmp_path / name).mkdir()
    with pytest.raises(ValueError, match="none of the 1 checkpoint file") as info:
        resume_from(tmp_path, {"model": torch.nn.Linear(1, 1)}, start_fresh_if_empty=True)
    problem = "is a link to nothing" if entry == "a link to nothing" else "not a complete sharded"
    assert str(tmp_path / name) in str(info.value) and problem in str(info.value)


def test_a_fifo_is_refused_not_read_forever(tmp_path: Path) -> None:
    fifo = tmp_path / "checkpoint_1.pt"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="is not a regular file"):
        Checkpoint.load_objects({"model": torch.nn.Linear(1, 1)}, fifo)


# ------------------------------------------------------------------------------- Preemption
def sigterm_at(iteration: int, times: int = 1) -> Callable[[Engine], None]:
    def act(engine: Engine) -> None:
        if engine.state.iteration == iteration:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGTERM)

    return act


def test_sigterm_finishes_the_iteration_checkpoints_and_exits(
    backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = signal.getsignal(signal.SIGTERM)
    training = Training(backend, tmp_path, every=100, act=sigterm_at(7))
    Preemption(training.checkpointer).attach(training.trainer)
    with caplog.at_level(logging.WARNING, "ember"), pytest.raises(Preempted) as info:
        training.run()
    assert info.value.code == 143 and isinstance(info.value, SystemExit)
    expected = (
        "ember: preempted by SIGTERM at iteration 7 (epoch 2): checkpoint "
        f"'{tmp_path / 'checkpoint_7.pt'}' written, exiting with code 143"
    )
    assert str(info.value) == expected
    assert expected in caplog.messages
    assert signal.getsignal(signal.SIGTERM) is before
    # The checkpoint holds the state after the whole iteration 7: a resume goes on exactly.
    reference = Training(backend, tmp_path / "reference").run()
    again = Training(backend, tmp_path / "again")
    resume_from(tmp_path, again.to_save)
    assert again.trainer.state.iteration == 7
    assert_same_weights(again.run(), reference)


def test_without_an_exit_code_the_run_terminates(backend: str, tmp_path: Path) -> None:
    training = Training(backend, tmp_path, every=100, act=sigterm_at(4))
    preemption = Preemption(training.checkpointer, exit_code=None).attach(training.trainer)
    completed: list[int] = []
    training.trainer.add_event_handler(Events.COMPLETED, lambda e: completed.append(1))
    training.run()
    assert preemption.preempted and preemption.received is signal.SIGTERM
    assert training.trainer.state.iteration == 4 and completed == [1]
    assert (tmp_path / "checkpoint_4.pt").exists()


def sigterm_once(seen: list[int]) -> Callable[[Engine], None]:
    """A handler that sends SIGTERM to the process the first time it runs, as a scheduler does
    while a slow evaluation or a final save runs."""

    def act(engine: Engine) -> None:
        if not seen:
            os.kill(os.getpid(), signal.SIGTERM)
        seen.append(engine.state.iteration)

    return act


class PreviousHandler:
    """A SIGTERM handler installed before the run, as a program's own: it notes each signal."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, signum: int, frame: Any) -> None:
        self.calls.append(signum)


@pytest.fixture
def previous() -> Iterator[PreviousHandler]:
    """SIGTERM's handler is a :class:`PreviousHandler` during the test, the original after."""
    handler = PreviousHandler()
    original = signal.signal(signal.SIGTERM, handler)
    try:
        yield handler
    finally:
        signal.signal(signal.SIGTERM, original)


@pytest.mark.parametrize(
    "where",
    [
        "last EPOCH_COMPLETED",
        "last EPOCH_COMPLETED, before attach",
        "COMPLETED",
        "COMPLETED, before attach",
        "TERMINATE(skip_completed)",
    ],
)
@pytest.mark.parametrize("exit_code", [143, None])
def test_a_sigterm_after_the_last_check_is_reported_not_dropped(
    backend: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    where: str,
    exit_code: int | None,
    previous: PreviousHandler,
) -> None:
    """A SIGTERM during the last epoch's EPOCH_COMPLETED handlers (a final evaluation) or the
    COMPLETED handlers came after the last check: it was dropped without a word, or (a
    COMPLETED handler registered after attach()) went to the handler from before the run. The
    run completes as at the run's last iteration (no checkpoint of a finished run), says so,
    and ``received`` keeps the signal."""
    training = Training(backend, tmp_path, every=100)
    trainer = training.trainer
    seen: list[int] = []
    act = sigterm_once(seen)
    event = Events.EPOCH_COMPLETED(once=EPOCHS) if "EPOCH" in where else Events.COMPLETED
    if "TERMINATE" in where:
        trainer.add_event_handler(
            Events.EPOCH_COMPLETED(once=2), lambda e: e.terminate(skip_completed=True)
        )
        event = Events.TERMINATE
    if "before attach" in where:
        trainer.add_event_handler(event, act)
    preemption = Preemption(training.checkpointer, exit_code=exit_code).attach(trainer)
    if "before attach" not in where:
        trainer.add_event_handler(event, act)
    completed: list[int] = []
    trainer.add_event_handler(Events.COMPLETED, lambda e: completed.append(e.state.epoch))
    with caplog.at_level(logging.WARNING, "ember"):
        training.run()  # no Preempted: the run did all its work
    epochs = 2 if "TERMINATE" in where else EPOCHS
    assert seen == [epochs * 5]
    assert trainer.state.epoch == epochs
    assert completed == ([] if "TERMINATE" in where else [epochs])
    assert previous.calls == []  # not handed to the handler from before the run
    assert preemption.received is signal.SIGTERM and not preemption.preempted
    expected = (
        f"ember: SIGTERM received after the run's last check, at iteration {epochs * 5} "
        f"(epoch {epochs}): the run completes"
    )
    assert [m for m in caplog.messages if "SIGTERM" in m] == [expected]
    assert signal.getsignal(signal.SIGTERM) is previous
    assert not list(tmp_path.glob("*.pt"))  # no checkpoint of a finished run
    # The next run of the engine starts clean: no leftover end-of-run handler, no report.
    caplog.clear()
    with caplog.at_level(logging.WARNING, "ember"):
        training.run()
    assert preemption.received is None and not caplog.messages
    assert signal.getsignal(signal.SIGTERM) is previous


def test_a_sigterm_at_the_last_iteration_is_reported_once(
    backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    training = Training(backend, tmp_path, every=100, act=sigterm_at(EPOCHS * 5))
    preemption = Preemption(training.checkpointer).attach(training.trainer)
    with caplog.at_level(logging.WARNING, "ember"):
        training.run()
    assert preemption.received is signal.SIGTERM and not preemption.preempted
    assert [m for m in caplog.messages if "SIGTERM" in m] == [
        f"ember: SIGTERM at the last iteration ({EPOCHS * 5}) of the run: the run completes"
    ]


def test_a_run_without_signal_restores_the_previous_handler(
    backend: str, tmp_path: Path, previous: PreviousHandler
) -> None:
    training = Training(backend, tmp_path, every=100)
    preemption = Preemption(training.checkpointer).attach(training.trainer)
    training.run()
    assert not preemption.preempted and not list(tmp_path.iterdir())
    assert signal.getsignal(signal.SIGTERM) is previous
    # A second signal before the engine looked goes to the previous handler.
    again = Training(backend, tmp_path, every=100, act=sigterm_at(2, times=2))
    Preemption(again.checkpointer, exit_code=None).attach(again.trainer)
    again.run()
    assert previous.calls == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is previous


@pytest.mark.parametrize("ending", ["an exception", "interrupt() then a resume"])
def test_the_previous_handler_is_back_however_the_run_ends(
    backend: str, tmp_path: Path, ending: str, previous: PreviousHandler
) -> None:
    """Not only at COMPLETED or TERMINATE: after a run that raised, or that interrupt() ended,
    a SIGTERM goes to the handler before the run's, not to a flag nobody reads. A run resumed
    after interrupt() takes the signal again (STARTED does not fire again)."""
    seen: list[Any] = []

    def act(engine: Engine) -> None:
        seen.append(signal.getsignal(signal.SIGTERM))
        if engine.state.iteration == 2:
            if ending == "an exception":
                raise RuntimeError("the step failed")
            engine.interrupt()

    training = Training(backend, tmp_path, every=100, act=act)
    preemption = Preemption(training.checkpointer).attach(training.trainer)
    if ending == "an exception":
        with pytest.raises(RuntimeError, match="the step failed"):
            training.run()
        assert signal.getsignal(signal.SIGTERM) is previous
    else:
        training.run()  # interrupted at iteration 2
        assert signal.getsignal(signal.SIGTERM) is previous
        training.run()  # resumed: iterations 3 to 15
        assert signal.getsignal(signal.SIGTERM) is previous
        # in the resumed run, from its second iteration (the first check takes it back)
        assert seen[3] == preemption._on_signal
    assert seen[1] == preemption._on_signal


def test_preemption_refuses_bad_arguments(tmp_path: Path) -> None:
    checkpointer = Checkpoint({"model": torch.nn.Linear(1, 1)}, DiskSaver(tmp_path))
    with pytest.raises(TypeError, match="checkpoint should be callable"):
        Preemption(None)  # type: ignore[arg-type]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="check_every should be an int >= 1"):
            Preemption(checkpointer, check_every=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"signals should be signal\.Signals"):
        Preemption(checkpointer, signals=[15])  # type: ignore[list-item]
    for uncatchable in ([signal.SIGTERM, signal.SIGKILL], [signal.SIGSTOP]):
        with pytest.raises(ValueError, match="cannot be caught by a process"):
            Preemption(checkpointer, signals=uncatchable)
    assert Preemption(checkpointer, signals=signal.SIGUSR1).signals == (signal.SIGUSR1,)
    with pytest.raises(TypeError, match="exit_code should be an int or None"):
        Preemption(checkpointer, exit_code="143")  # type: ignore[arg-type]


class _NotAWeight:
    """An object torch.load(weights_only=True) refuses to build."""


def test_load_errors_say_what_the_file_is_not_only_that_it_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = {"model": torch.nn.Linear(1, 1)}
    whole = tmp_path / "checkpoint_1.pt"
    torch.save({"model": objects["model"].state_dict(), "extra": _NotAWeight()}, whole)
    with pytest.raises(
        ValueError, match=r"holds objects that torch\.load\(weights_only=True\)"
    ) as info:
        Checkpoint.load_objects(objects, whole)
    assert "_NotAWeight" in str(info.value) and "corrupted" not in str(info.value)

    def saved_on_a_gpu(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            "Attempting to deserialize object on a CUDA device but torch.cuda.is_available() "
            "is False. If you are running on a CPU-only machine, ..."
        )

    monkeypatch.setattr(torch, "load", saved_on_a_gpu)
    with pytest.raises(ValueError, match="saved from tensors on a device this machine does not"):
        Checkpoint.load_objects(objects, whole)
