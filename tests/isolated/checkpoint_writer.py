"""Writes large checkpoints with ember.handlers until killed; a fork server for the SIGKILL test.

Importing torch costs seconds, so this process imports it once and then forks one writer per
command read from stdin::

    write DIRNAME BACKEND MEGABYTES MODE   # fork a writer; prints "exit STATUS" once reaped
    quit

MODE is ``sync`` (``DiskSaver(durability="background")``, the default), ``inline``
(``durability="inline"``) or ``async`` (``Checkpoint(async_save=True)``).

A writer resumes from the newest checkpoint in DIRNAME (model, trainer and the checkpointer's
own list of files, so it goes on pruning them with n_saved=1), then trains on an engine of the
given backend, saving a checkpoint of a MEGABYTES tensor filled with the byte
``step % 256`` at every iteration. In async mode the tensor is overwritten in place with another
byte right after the save call, while the background thread writes: a file holding that byte
would be an inconsistent snapshot. It prints (one line each, unbuffered):

    pid PID        once started
    begin STEP     just before the save call of STEP
    saved STEP     after SAVED_CHECKPOINT fired for STEP (in async mode: at the next save call)

The parent test kills the writer with SIGKILL at chosen moments and checks the directory.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from ember.engine import Engine, Events
from ember.handlers import Checkpoint, CheckpointEvents, DiskSaver

torch.set_num_threads(1)

PATTERN = re.compile(r"^blob_checkpoint_(\d+)\.pt$")


def say(text: str) -> None:
    os.write(1, (text + "\n").encode())


class Blob:
    """A big payload whose every byte tells the step that wrote it."""

    def __init__(self, megabytes: int) -> None:
        self.size = megabytes << 20
        self.step = 0
        # Filled from Python, seen by torch without a copy: no torch kernel, hence no thread pool
        # after fork.
        self.memory = bytearray(self.size)
        self.data = torch.frombuffer(self.memory, dtype=torch.uint8)

    def fill(self, byte: int) -> None:
        self.memory[:] = bytes([byte]) * self.size

    def prepare(self, step: int) -> None:
        """Make the payload of ``step`` now, so that saving it starts with the file write."""
        self.step = step
        self.fill(step % 256)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "data": self.data}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])


def latest(dirname: Path) -> Path | None:
    steps = [(int(m.group(1)), p) for p in dirname.iterdir() if (m := PATTERN.match(p.name))]
    return max(steps)[1] if steps else None


def write(dirname: Path, backend: str, megabytes: int, mode: str) -> None:
    say(f"pid {os.getpid()}")
    blob = Blob(megabytes)
    trainer = Engine(lambda engine, batch: None, backend=backend)
    # removes stale temporary files
    saver = DiskSaver(
        dirname, require_empty=False, durability="inline" if mode == "inline" else "background"
    )
    checkpointer = Checkpoint(
        {"blob": blob, "trainer": trainer},
        saver,
        filename_prefix="blob",
        n_saved=1,
        include_self=True,
        async_save=mode == "async",
    )
    previous = latest(dirname)
    if previous is not None:
        to_load = {"blob": blob, "trainer": trainer, "checkpointer": checkpointer}
        Checkpoint.load_objects(to_load, previous)

    @trainer.on(Events.ITERATION_COMPLETED)
    def save(engine: Engine) -> None:
        blob.prepare(engine.state.iteration)
        say(f"begin {blob.step}")
        checkpointer(engine)
        if checkpointer.async_save:
            blob.fill((blob.step + 128) % 256)  # training goes on changing the weights

    trainer.register_events(*CheckpointEvents)

    @trainer.on(CheckpointEvents.SAVED_CHECKPOINT)
    def saved(engine: Engine) -> None:
        last = checkpointer.last_checkpoint
        assert last is not None
        match = PATTERN.match(Path(last).name)
        assert match is not None
        say(f"saved {match.group(1)}")

    trainer.run(data=None, max_epochs=10**6, epoch_length=1)


def main() -> None:
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            return
        if words[0] != "write":
            raise SystemExit(f"unknown command {line!r}")
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            status = 0
            try:
                write(Path(words[1]), words[2], int(words[3]), words[4])
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                say(f"error {type(exc).__name__}: {exc}")
                status = 1
            os._exit(status)
        _, status = os.waitpid(pid, 0)
        say(f"exit {status}")


if __name__ == "__main__":
    main()
