"""SIGKILL a process while it writes a large checkpoint: the previous one must survive intact.

``tests/isolated/checkpoint_writer.py`` imports torch once and forks one writer per round. A
writer resumes from the newest checkpoint (model, trainer and the checkpointer's list, n_saved=1)
and saves a checkpoint of a large tensor at every iteration. The test kills it with SIGKILL
right after it announces a write, or at a random moment of the write, and then checks the
directory:

* every ``.pt`` file in it loads completely, and every byte of its tensor holds its step;
* the newest complete checkpoint is at least the last one announced as saved: the write in
  progress never cost the previous checkpoint (ignite deletes the old file first);
* temporary files of the killed write are there (the kill landed mid-write) until a new
  ``DiskSaver`` is constructed on the directory, and gone afterwards.

With synchronous saves (``DiskSaver``'s default ``durability="background"``: the file is renamed
into place in the call and ``fsync``\\ ed by a background thread, which then prunes; and
``durability="inline"``), and with ``async_save=True``, where the write runs in a background
thread while the training thread overwrites the tensor in place. CI kills 4 times per case; the
long count, with the counts logged::

    EMBER_KILL_ROUNDS=20 python -m pytest tests/test_handlers_checkpoint_kill.py -o log_cli=true --log-cli-level=INFO
"""

from __future__ import annotations

import logging
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fcntl")

from ember.handlers import Checkpoint, DiskSaver
from ember.handlers.checkpoint import TEMPORARY_SUFFIX

WRITER = Path(__file__).resolve().parent / "isolated" / "checkpoint_writer.py"
MEGABYTES = 24
ROUNDS = int(os.environ.get("EMBER_KILL_ROUNDS", "4"))
NAME = re.compile(r"^blob_checkpoint_(\d+)\.pt$")
TIMEOUT = 60.0


class WriterServer:
    """The fork server and a thread that queues its output lines."""

    def __init__(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [sys.executable, str(WRITER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def next_line(self) -> str:
        try:
            line = self.lines.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError("the checkpoint writer said nothing for a minute") from None
        if line is None:
            raise AssertionError(f"the writer server ended (status {self.process.poll()})")
        if line.startswith("error"):
            raise AssertionError(f"the writer failed: {line}")
        return line

    def close(self) -> None:
        try:
            self.send("quit")
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.reader.join(timeout=30)
            assert self.process.stdout is not None
            self.process.stdout.close()


@pytest.fixture(scope="module")
def writer_server() -> Iterator[WriterServer]:
    server = WriterServer()
    try:
        yield server
    finally:
        server.close()


class Holder:
    def __init__(self) -> None:
        self.state: dict[str, Any] = {}

    def state_dict(self) -> dict[str, Any]:
        return self.state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = state


def check_checkpoints(directory: Path) -> list[int]:
    """Load every checkpoint completely; return their steps."""
    steps = []
    for path in sorted(directory.iterdir()):
        match = NAME.match(path.name)
        if not match:
            continue
        step = int(match.group(1))
        blob, trainer, checkpointer = Holder(), Holder(), Holder()
        Checkpoint.load_objects(
            {"blob": blob, "trainer": trainer, "checkpointer": checkpointer}, path
        )
        data = blob.state["data"]
        assert blob.state["step"] == step
        assert data.numel() == MEGABYTES << 20
        assert bool((data == step % 256).all()), f"{path.name} holds bytes of another step"
        assert trainer.state["iteration"] == step
        assert checkpointer.state["_saved"][-1] == (step, path.name)
        steps.append(step)
    return steps


def temporary_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(TEMPORARY_SUFFIX)]


def wait_for_temporary_file(directory: Path, server: WriterServer) -> None:
    """Until the write in progress has created its temporary file (or has finished)."""
    deadline = time.monotonic() + TIMEOUT
    while not temporary_files(directory) and server.lines.empty():
        assert time.monotonic() < deadline, "the writer never started its write"
        time.sleep(0.0005)


@pytest.mark.parametrize("mode", ["sync", "inline", "async"])
def test_sigkill_while_writing_keeps_the_previous_checkpoint(
    backend: str, writer_server: WriterServer, tmp_path: Path, mode: str
) -> None:
    rng = random.Random(f"kill-{backend}-{mode}")
    killed_mid_write = 0
    write_time = 0.05
    last_saved = 0
    for round_index in range(ROUNDS):
        writer_server.send(f"write {tmp_path} {backend} {MEGABYTES} {mode}")
        pid = int(writer_server.next_line().split()[1])
        # Let it save at least one checkpoint in this round, then catch the start of the next.
        began: dict[int, float] = {}
        saves_this_round = 0
        while True:
            word, number = writer_server.next_line().split()
            step = int(number)
            if word == "begin":
                began[step] = time.perf_counter()
                if saves_this_round >= 1:
                    break
            elif word == "saved":
                saves_this_round += 1
                last_saved = step
                write_time = max(write_time, time.perf_counter() - began[step])
        # The first rounds kill as soon as the temporary file exists, the others at a random
        # moment after "begin" (perhaps before the file exists, or after the rename).
        if round_index < 2:
            wait_for_temporary_file(tmp_path, writer_server)
        else:
            time.sleep(rng.uniform(0.0, 1.2 * write_time))
        os.kill(pid, signal.SIGKILL)
        while True:
            line = writer_server.next_line()
            if line.startswith("exit"):
                status = int(line.split()[1])
                break
            word, number = line.split()
            if word == "saved":  # the write finished before the kill
                last_saved = int(number)
        assert os.WIFSIGNALED(status)
        assert os.WTERMSIG(status) == signal.SIGKILL

        leftovers = temporary_files(tmp_path)
        killed_mid_write += bool(leftovers)
        steps = check_checkpoints(tmp_path)
        assert steps, "no checkpoint survived the kill"
        assert max(steps) >= last_saved
        # n_saved=1, plus at most one file per kill that fell between the rename and the pruning
        assert len(steps) <= 2 + round_index
        DiskSaver(tmp_path, require_empty=False)  # removes what the killed write left
        assert temporary_files(tmp_path) == []
        assert check_checkpoints(tmp_path) == steps
    logging.getLogger(__name__).info(
        "%s %s: %d SIGKILLs, %d mid-write, 0 checkpoints lost",
        mode,
        backend,
        ROUNDS,
        killed_mid_write,
    )
    assert killed_mid_write >= 1, "no kill landed during a write; make the checkpoint bigger"
