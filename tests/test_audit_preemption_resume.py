"""Audit of ``Preemption`` and ``resume_from``: a preemption at an epoch's end, the run's last
iteration, and checkpoints written within one clock tick."""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import ember

torch = pytest.importorskip("torch")

from ember.engine import DeterministicEngine, Engine, Events
from ember.handlers import Checkpoint, DiskSaver, Preempted, Preemption, resume_from

EPOCHS = 3  # of 5 batches


def training(
    backend: str, directory: Path, act: Callable[[Engine], None]
) -> tuple[DeterministicEngine, Any, dict[str, Any], list[Any]]:
    """A model trained with a scheduler stepped at EPOCH_COMPLETED, and Preemption attached."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    dataset = torch.utils.data.TensorDataset(
        torch.randn(20, 4, generator=generator), torch.randint(0, 2, (20,), generator=generator)
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=True)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    seen: list[Any] = []

    def step(engine: Engine, batch: list[torch.Tensor]) -> float:
        act(engine)
        seen.append((engine.state.iteration, batch[1].tolist()))
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(batch[0]), batch[1])
        loss.backward()
        optimizer.step()
        return loss.item()

    trainer = DeterministicEngine(step, backend=backend)

    @trainer.on(Events.EPOCH_COMPLETED)
    def step_the_scheduler() -> None:  # a handler without the engine: step() takes no epoch
        scheduler.step()

    to_save = {"trainer": trainer, "model": model, "optimizer": optimizer, "scheduler": scheduler}
    checkpointer = Checkpoint(to_save, DiskSaver(directory, require_empty=False), n_saved=2)
    Preemption(checkpointer).attach(trainer)
    return trainer, loader, to_save, seen


def sigterm_at(iteration: int) -> Callable[[Engine], None]:
    def act(engine: Engine) -> None:
        if engine.state.iteration == iteration:
            os.kill(os.getpid(), signal.SIGTERM)

    return act


@pytest.mark.parametrize("at", [4, 5, 10])
def test_a_preemption_at_an_epoch_end_resumes_exactly(
    backend: str, tmp_path: Path, at: int
) -> None:
    """At an epoch's last iteration, the checkpoint used to be written before that epoch's
    EPOCH_COMPLETED handlers ran: the resumed run starts the next epoch and never runs them (a
    scheduler misses a step, the weights differ)."""
    trainer, loader, to_save, reference_batches = training(
        backend, tmp_path / "ref", lambda e: None
    )
    trainer.run(loader, max_epochs=EPOCHS)
    reference = to_save["model"].state_dict()

    trainer, loader, _, before = training(backend, tmp_path / "run", sigterm_at(at))
    with pytest.raises(Preempted, match=f"at iteration {at} "):
        trainer.run(loader, max_epochs=EPOCHS)
    trainer, loader, to_save, after = training(backend, tmp_path / "run", lambda e: None)
    assert resume_from(tmp_path / "run", to_save) == tmp_path / "run" / f"checkpoint_{at}.pt"
    trainer.run(loader, max_epochs=EPOCHS)
    assert before + after == reference_batches
    assert to_save["optimizer"].param_groups[0]["lr"] == 0.1 * 0.5**EPOCHS
    for key, value in reference.items():
        assert torch.equal(to_save["model"].state_dict()[key], value), key


def test_a_preemption_at_the_last_iteration_lets_the_run_complete(
    backend: str, tmp_path: Path
) -> None:
    """A checkpoint of a finished run made the next launch start a new run from iteration 0
    (run() on a done state starts afresh): the whole training again, silently."""
    last = EPOCHS * 5
    trainer, loader, _, _ = training(backend, tmp_path, sigterm_at(last))
    completed: list[int] = []
    trainer.add_event_handler(Events.COMPLETED, lambda e: completed.append(e.state.iteration))
    before = signal.getsignal(signal.SIGTERM)
    trainer.run(loader, max_epochs=EPOCHS)  # no Preempted
    assert completed == [last] and trainer.state.epoch == EPOCHS
    assert signal.getsignal(signal.SIGTERM) is before
    assert not list(tmp_path.glob("*.pt"))


def test_a_stop_deferred_to_an_epoch_end_does_not_outlive_its_run(
    backend: str, tmp_path: Path
) -> None:
    """A run that raises between the signal at an epoch's last iteration and EPOCH_COMPLETED
    leaves no stop pending for the next run of the engine."""
    first = [True]

    def act(engine: Engine) -> None:
        if first[0]:
            sigterm_at(5)(engine)

    trainer, loader, _, _ = training(backend, tmp_path, act)

    def fail(engine: Engine) -> None:
        if first[0] and engine.state.iteration == 5:
            raise RuntimeError("failed at the end of the iteration")

    trainer.add_event_handler(Events.ITERATION_COMPLETED, fail)
    with pytest.raises(RuntimeError, match="failed at the end"):
        trainer.run(loader, max_epochs=EPOCHS)
    first[0] = False
    trainer.run(loader, max_epochs=EPOCHS)  # goes on, without a signal: not preempted
    assert trainer.state.iteration == EPOCHS * 5
    assert not list(tmp_path.glob("*.pt"))


def test_checkpoints_of_one_clock_tick_are_ordered_by_their_numbers(
    backend: str, tmp_path: Path
) -> None:
    """Checkpoints written within one tick of the file system's clock have the same time; the
    names then decided as text: checkpoint_9.pt was taken for newer than checkpoint_10.pt."""
    trainer = Engine(lambda engine, batch: None, backend=backend)
    model = torch.nn.Linear(2, 2)
    checkpointer = Checkpoint(
        {"trainer": trainer, "model": model}, DiskSaver(tmp_path, require_empty=False), n_saved=3
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED, checkpointer)
    # Stopped at iteration 10 of 20: a run to go on with (a finished one warns, below).
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=10), lambda e: e.terminate())
    trainer.run(range(10), max_epochs=2)
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["checkpoint_10.pt", "checkpoint_8.pt", "checkpoint_9.pt"]
    same = (tmp_path / "checkpoint_10.pt").stat().st_mtime_ns
    for name in names:
        os.utime(tmp_path / name, ns=(same, same))
    again = Engine(lambda engine, batch: None, backend=backend)
    chosen = resume_from(tmp_path, {"trainer": again, "model": torch.nn.Linear(2, 2)})
    assert chosen == tmp_path / "checkpoint_10.pt" and again.state.iteration == 10


def test_preempted_travels_from_a_spawned_worker() -> None:
    """Parallel sends a worker's exception to the parent pickled; Preempted did not unpickle
    (its __init__ takes two arguments), so the parent raised a WorkerError (exit code 1, a
    traceback) instead of Preempted (143)."""
    stop = Preempted("ember: preempted by SIGTERM at iteration 4", 143)
    stop.add_note("a note")
    again = pickle.loads(pickle.dumps(stop))
    assert type(again) is Preempted and again.code == 143 and str(again) == str(stop)
    assert again.__notes__ == ["a note"]


SPAWNED = """
import os, sys, time
from pathlib import Path
from ember.distributed import Parallel
from ember.engine import Engine, Events
from ember.handlers import Preemption

def work(local_rank, directory):
    trainer = Engine(lambda engine, batch: time.sleep(0.01))
    save = lambda engine: Path(directory, f"saved-{local_rank}-{engine.state.iteration}").touch()
    Preemption(save, check_every=2).attach(trainer)
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED(once=1), lambda: Path(directory, f"ready-{local_rank}").touch()
    )
    trainer.run(range(2000))

if __name__ == "__main__":
    Parallel(backend="gloo", nproc_per_node=2, timeout=30).run(work, sys.argv[1])
"""


def test_sigterm_to_the_parallel_parent_preempts_its_workers(tmp_path: Path) -> None:
    """A scheduler that signals only the main process (Kubernetes) killed Parallel's parent at
    once and left its spawned workers training, unaware: no checkpoint, orphans. The parent now
    forwards SIGTERM to them, as torchrun's agent does."""
    script = tmp_path / "spawned.py"
    script.write_text(textwrap.dedent(SPAWNED))
    python = str(Path(ember.__file__).resolve().parents[1])  # this ember, for the script
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([python, os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"ready-{rank}").exists() for rank in (0, 1)):
            assert parent.poll() is None and time.monotonic() < deadline, parent.communicate()[0]
            time.sleep(0.05)
        parent.send_signal(signal.SIGTERM)
        output, _ = parent.communicate(timeout=60)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.communicate()
    assert parent.returncode == 143, output
    saved = sorted(path.name for path in tmp_path.glob("saved-*"))
    assert len(saved) == 2, output
    assert saved[0].split("-")[2] == saved[1].split("-")[2]  # the same iteration
    assert "preempted by SIGTERM at iteration" in output


def test_resuming_a_finished_run_says_that_run_starts_a_new_one(
    backend: str, tmp_path: Path
) -> None:
    """A relaunch after the run finished (a crash in the evaluation after run()) retrained the
    whole run from the final weights without a word."""
    model = torch.nn.Linear(2, 1)
    trainer = Engine(lambda e, b: None, backend=backend)
    checkpoint = Checkpoint({"trainer": trainer, "model": model}, DiskSaver(tmp_path))
    trainer.add_event_handler(Events.COMPLETED, checkpoint)
    trainer.run([0, 1], max_epochs=2)
    again = Engine(lambda e, b: None, backend=backend)
    with pytest.warns(UserWarning, match="holds a finished run .*starts a new run"):
        resume_from(tmp_path, {"trainer": again, "model": model})
    assert again.state.iteration == 4


def test_a_preemption_is_logged_as_a_stop_not_an_error(
    backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The engine logged a preemption, a clean stop after its checkpoint, as "Engine run is
    terminating due to exception" at ERROR, which log monitors take for a crash."""
    caplog.set_level(logging.INFO)
    trainer, loader, _, _ = training(backend, tmp_path, sigterm_at(3))
    with pytest.raises(Preempted):
        trainer.run(loader, max_epochs=EPOCHS)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any("Engine run stopped: ember: preempted" in r.getMessage() for r in caplog.records)


def test_a_best_model_file_newest_in_the_directory_names_the_pattern_to_give(
    backend: str, tmp_path: Path
) -> None:
    model = torch.nn.Linear(2, 1)
    trainer = Engine(lambda e, b: None, backend=backend)
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED(once=2),
        Checkpoint({"trainer": trainer, "model": model}, DiskSaver(tmp_path)),
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda e: e.terminate())
    trainer.run([0, 1, 2], max_epochs=2)
    time.sleep(0.01)
    torch.save({"model": model.state_dict()}, tmp_path / "best_model_0.95.pt")
    again = Engine(lambda e, b: None, backend=backend)
    with pytest.raises(ValueError, match=r"best_model_0\.95\.pt.*pattern='checkpoint_\*\.pt'"):
        resume_from(tmp_path, {"trainer": again, "model": model})
    assert resume_from(tmp_path, {"trainer": again, "model": model}, pattern="checkpoint_*.pt")
    assert again.state.iteration == 2
