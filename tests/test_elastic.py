"""Runs that survive lost processes and preemption, under real torchrun (2 processes, gloo).

``tests/isolated/elastic_train.py`` is the user's script: DDP training on a DeterministicEngine
with ``resume_from``, a ``Checkpoint`` every 4 iterations and ``Preemption``. Five torchrun jobs
run at once (module-scoped, ~30-45 s together on 2 loaded cores):

* ``reference``: uninterrupted;
* ``killed``: a rank (chosen at random) SIGKILLs itself at a random iteration, and again (a
  rank chosen at random) at a later random iteration of the restarted group, under
  ``--max-restarts 3``; set ``EMBER_ELASTIC_SEED`` to replay a draw;
* ``preempted``: rank 1 receives SIGTERM, under ``--max-restarts 1``: both ranks stop at the
  same iteration with a checkpoint, torch elastic restarts them, the run finishes;
* ``agent``: torchrun's agent receives SIGTERM (forwarded to both workers): both stop at the
  same iteration with a checkpoint, and torchrun exits;
* ``corrupt``: the checkpoint directory holds only a corrupt file: both ranks raise rank 0's
  error naming it, instead of starting afresh.

Every job runs in its own session under a timeout; the whole session is SIGKILLed at the end,
so no worker outlives the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

from launch import engine_backends, launch_env

SCRIPT = Path(__file__).resolve().parent / "isolated" / "elastic_train.py"
TIMEOUT = 240  # seconds for the jobs together: a run takes ~15 s alone, a hang never ends
ITERATIONS = 30  # elastic_train.py: 5 epochs of 6 iterations
INTERVAL = 4  # elastic_train.py's checkpoint interval
CHECK_EVERY = 2  # elastic_train.py's Preemption(check_every=...)
SEED = int(os.environ.get("EMBER_ELASTIC_SEED", random.randrange(2**32)))


ENGINE_BACKENDS = engine_backends()


def kill_plan(seed: int) -> list[tuple[int, int, int]]:
    """Two ``(restart, rank, iteration)`` kills: the second in the restarted group, later."""
    draw = random.Random(seed)
    first = draw.randint(1, ITERATIONS // 2)
    second = draw.randint(first + 1, ITERATIONS)
    return [(0, draw.randrange(2), first), (1, draw.randrange(2), second)]


PLANS: dict[str, tuple[str, int, str]] = {  # name: (plan, --max-restarts, engine loop)
    "reference": ("", 0, ENGINE_BACKENDS[0]),
    "killed": (
        ",".join(f"kill:{restart}:{rank}:{it}" for restart, rank, it in kill_plan(SEED)),
        3,
        ENGINE_BACKENDS[0],
    ),
    "preempted": ("term:0:1:9", 1, ENGINE_BACKENDS[-1]),
    "agent": ("termagent:0:0:13", 3, ENGINE_BACKENDS[0]),
    "corrupt": ("", 0, ENGINE_BACKENDS[0]),  # its directory holds only a corrupt checkpoint
}


class Job:
    def __init__(self, out_dir: Path, code: int, output: str) -> None:
        self.out_dir = out_dir
        self.code = code
        self.output = output
        log = out_dir / "events.jsonl"
        lines = log.read_text().splitlines() if log.exists() else []
        self.events = [json.loads(line) for line in lines]

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]

    def weights(self, rank: int) -> dict[str, Any]:
        return torch.load(self.out_dir / f"weights_rank{rank}.pt", weights_only=True)

    def describe(self) -> str:
        return f"seed {SEED}, events {self.events}\n{self.output[-6000:]}"


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Job]:
    started = {}
    try:
        for name, (plan, max_restarts, backend) in PLANS.items():
            out_dir = tmp_path_factory.mktemp(name)
            if name == "corrupt":
                (out_dir / "checkpoints").mkdir()
                (out_dir / "checkpoints" / "checkpoint_8.pt").write_bytes(b"not a checkpoint")
            command = [
                sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", "2", "--max-restarts", str(max_restarts),
                "--monitor-interval", "0.1", str(SCRIPT), str(out_dir), plan,
            ]  # fmt: skip
            process = subprocess.Popen(
                command,
                env=launch_env(EMBER_BACKEND=backend),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,  # its own process group: the workers go with it
            )
            started[name] = (out_dir, process)
        finished = {}
        for name, (out_dir, process) in started.items():
            try:
                output, _ = process.communicate(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                pytest.fail(f"torchrun job {name!r} did not end within {TIMEOUT} s (seed {SEED})")
            finished[name] = Job(out_dir, process.returncode, output)
        return finished
    finally:
        for _, process in started.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def assert_bit_identical(job: Job, reference: Job) -> None:
    for rank in range(2):
        expected, weights = reference.weights(rank), job.weights(rank)
        assert weights.keys() == expected.keys()
        for key, value in expected.items():
            assert torch.equal(weights[key], value), f"rank {rank}, {key}: {job.describe()}"


def test_the_reference_run_is_not_interrupted(jobs: dict[str, Job]) -> None:
    reference = jobs["reference"]
    assert reference.code == 0, reference.describe()
    assert [e["iteration"] for e in reference.of("finished")] == [ITERATIONS] * 2


def test_two_sigkilled_ranks_resume_bit_identical_losing_at_most_one_interval(
    jobs: dict[str, Job],
) -> None:
    killed = jobs["killed"]
    assert killed.code == 0, killed.describe()
    kills = killed.of("acted")
    assert [(e["restart"], e["rank"], e["iteration"]) for e in kills] == kill_plan(SEED)
    resumed = killed.of("resumed")
    for kill in kills:
        restart = kill["restart"] + 1
        # Every rank of the restarted group loaded the same, newest checkpoint.
        again = [e for e in resumed if e["restart"] == restart]
        assert len(again) == 2 and again[0]["file"] == again[1]["file"], killed.describe()
        iteration = again[0]["iteration"]
        # Killed before the first checkpoint: the group starts afresh.
        assert again[0]["file"] == (f"checkpoint_{iteration}.pt" if iteration else None)
        # The step of the killed iteration never finished: the work lost is the iterations
        # completed since the checkpoint, fewer than its interval.
        lost = kill["iteration"] - 1 - iteration
        assert 0 <= lost < INTERVAL, killed.describe()
    finished = killed.of("finished")
    assert [(e["restart"], e["iteration"]) for e in finished] == [(2, ITERATIONS)] * 2
    assert_bit_identical(killed, jobs["reference"])


def test_sigterm_to_one_rank_stops_every_rank_at_one_iteration_with_a_checkpoint(
    jobs: dict[str, Job],
) -> None:
    preempted = jobs["preempted"]
    # Rank 1 got SIGTERM in iteration 9; the ranks agree every 2 iterations: both stop at 10.
    stop = 10
    assert [(e["rank"], e["iteration"]) for e in preempted.of("acted")] == [(1, 9)]
    assert sorted((e["rank"], e["iteration"]) for e in preempted.of("preempted")) == [
        (0, stop),
        (1, stop),
    ], preempted.describe()
    output = preempted.output
    assert (
        f"ember: preempted by SIGTERM at iteration {stop} (epoch 2) on rank 1 of 2: "
        "checkpoint '" in output
    ), preempted.describe()
    assert (
        f"ember: preempted by a signal on another rank at iteration {stop} (epoch 2) on rank 0 "
        "of 2" in output
    )
    assert f"checkpoint_{stop}.pt' written, exiting with code 143" in output
    assert "exitcode  : 143" in output or "exitcode: 143" in output
    # torch elastic restarted the group (exit code 143 is a failure): it went on from there.
    assert [(e["restart"], e["file"]) for e in preempted.of("resumed") if e["restart"] == 1] == [
        (1, f"checkpoint_{stop}.pt")
    ] * 2
    assert preempted.code == 0, preempted.describe()
    assert_bit_identical(preempted, jobs["reference"])


def test_sigterm_to_torchrun_stops_both_workers_at_one_iteration_with_a_checkpoint(
    jobs: dict[str, Job],
) -> None:
    agent = jobs["agent"]
    stop = 14  # SIGTERM to the agent in iteration 13, forwarded; agreement at even iterations
    assert "Received 15 death signal, shutting down workers" in agent.output, agent.describe()
    assert sorted((e["rank"], e["iteration"]) for e in agent.of("preempted")) == [
        (0, stop),
        (1, stop),
    ], agent.describe()
    # Rank 0 waited for the forwarded signal; rank 1's may come after the agreement.
    assert f"ember: preempted by SIGTERM at iteration {stop} (epoch 3) on rank 0 of 2" in (
        agent.output
    )
    assert f"at iteration {stop} (epoch 3) on rank 1 of 2: checkpoint '" in agent.output
    assert not agent.of("finished") and agent.code != 0  # the agent shut down: no restart
    checkpoint = torch.load(
        agent.out_dir / "checkpoints" / f"checkpoint_{stop}.pt", weights_only=True
    )
    assert checkpoint["trainer"]["iteration"] == stop


def test_a_directory_of_corrupt_checkpoints_stops_every_rank_with_the_file_named(
    jobs: dict[str, Job],
) -> None:
    corrupt = jobs["corrupt"]
    assert corrupt.code != 0 and not corrupt.of("resumed"), corrupt.describe()
    path = corrupt.out_dir / "checkpoints" / "checkpoint_8.pt"
    for rank in range(2):
        assert (
            f"[rank{rank}]: ValueError: resume_from: none of the 1 checkpoint file(s) in "
            f"'{path.parent}' can be loaded" in corrupt.output
        ), corrupt.describe()
    assert f"Checkpoint file '{path}' could not be loaded: it is truncated, corrupted" in (
        corrupt.output
    )
